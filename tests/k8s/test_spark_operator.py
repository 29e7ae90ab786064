"""A minimal SparkApplication through the real kubeflow spark-operator on the test cluster: the word count baked
into imagegate's Spark image runs in cluster mode with one driver and two executors, all from the image by digest,
under the namespace's restricted Pod Security Standard. The groundwork the Spark operator tests build on.

Needs ``python scripts/stack.py up`` and ``IMAGEGATE_K8S_SPARK=1 python scripts/k8s.py up``; the first run builds
the Spark image (minutes) and pushes it to the stack's registry.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from kubernetes import client

from .conftest import K8sCluster, restricted_security_context, unique

pytestmark = [pytest.mark.k8s, pytest.mark.spark, pytest.mark.timeout(1800)]  # the first image build

ROOT = Path(__file__).resolve().parents[2]
WORDS = ROOT / "scripts" / "localstack" / "spark" / "words.txt"
GROUP, VERSION, PLURAL = "sparkoperator.k8s.io", "v1beta2", "sparkapplications"
APP_LABEL = "sparkoperator.k8s.io/app-name"
SPARK_UID = 185


def pod_template(container: str) -> dict[str, Any]:
    """A pod template meeting the restricted Pod Security Standard. The operator applies
    ``spec.driver/executor.securityContext`` only through its (optional) webhook; templates need none."""
    return {
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": SPARK_UID, "runAsGroup": SPARK_UID,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": container, "securityContext": restricted_security_context()}],
        }
    }


def word_count_app(name: str, image: str) -> dict[str, Any]:
    role = {"cores": 1, "coreRequest": "250m", "memory": "512m", "labels": {"imagegate-test": name}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SparkApplication",
        "metadata": {"name": name},
        "spec": {
            "type": "Python",
            "pythonVersion": "3",
            "mode": "cluster",
            "sparkVersion": "4.3.0",  # >= 3.0.0: the operator passes the templates as Spark pod templates
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "mainApplicationFile": "local:///opt/spark/work-dir/wordcount.py",
            "arguments": ["/opt/spark/work-dir/words.txt", "4"],
            "restartPolicy": {"type": "Never"},
            # Keep the executor pods after the job, to read which image they ran; the test deletes them.
            "sparkConf": {"spark.kubernetes.executor.deleteOnTermination": "false"},
            "driver": {**role, "serviceAccount": "spark", "template": pod_template("spark-kubernetes-driver")},
            "executor": {**role, "instances": 2, "template": pod_template("spark-kubernetes-executor")},
        },
    }


def job_counts(log: str) -> dict[str, int]:
    counts = {}
    for line in log.splitlines():
        word, sep, count = line.partition("\t")
        if sep and count.isdigit():
            counts[word] = int(count)
    return counts


@pytest.fixture
def spark_apps(k8s_services: K8sCluster) -> Iterator[list[str]]:
    """Names of SparkApplications to delete afterwards, with every pod they made."""
    names: list[str] = []
    yield names
    custom, core, ns = client.CustomObjectsApi(k8s_services.api_client), k8s_services.core(), k8s_services.namespace
    for name in names:
        try:
            custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        core.delete_collection_namespaced_pod(ns, label_selector=f"{APP_LABEL}={name}", grace_period_seconds=0)
    deadline = time.monotonic() + 120
    for name in names:
        while core.list_namespaced_pod(ns, label_selector=f"{APP_LABEL}={name}").items:
            assert time.monotonic() < deadline, f"the pods of {name} were not deleted"
            time.sleep(0.5)


def wait_app(custom: Any, ns: str, name: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        app = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        state = ((app.get("status") or {}).get("applicationState") or {}).get("state")
        if state in ("COMPLETED", "FAILED", "SUBMISSION_FAILED", "FAILING"):
            return app
        if time.monotonic() > deadline:
            raise AssertionError(f"SparkApplication {name} did not finish in {timeout:.0f} s: {app.get('status')}")
        time.sleep(1)


def test_a_word_count_runs_with_one_driver_and_two_executors_all_by_digest(
    k8s_services: K8sCluster, spark_image: str, spark_apps: list[str]
) -> None:
    custom = client.CustomObjectsApi(k8s_services.api_client)
    core, ns = k8s_services.core(), k8s_services.namespace
    name = unique("wordcount")
    spark_apps.append(name)
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, word_count_app(name, spark_image))
    app = wait_app(custom, ns, name, timeout=600)
    status = app["status"]
    driver = status["driverInfo"]["podName"]
    log = bytes(core.read_namespaced_pod_log(driver, ns, _preload_content=False).data).decode()
    assert status["applicationState"]["state"] == "COMPLETED", f"{status}\n{log[-4000:]}"

    expected = dict(collections.Counter(WORDS.read_text().lower().split()))
    assert job_counts(log) == expected
    assert f"wordcount: {len(expected)} distinct words, {sum(expected.values())} in all" in log

    pods = core.list_namespaced_pod(ns, label_selector=f"{APP_LABEL}={name}").items
    roles = collections.Counter(p.metadata.labels.get("spark-role") for p in pods)
    assert roles == {"driver": 1, "executor": 2}, [p.metadata.name for p in pods]
    assert len(status.get("executorState") or {}) == 2, status
    digest = spark_image.split("@", 1)[1]
    for pod in pods:
        assert pod.spec.security_context.run_as_user == SPARK_UID
        (container,) = pod.spec.containers
        assert container.image == spark_image  # the pod asked for the digest
        assert container.security_context.allow_privilege_escalation is False
        (state,) = pod.status.container_statuses
        assert state.image_id.endswith("@" + digest), (pod.metadata.name, state.image_id)  # and ran exactly it
