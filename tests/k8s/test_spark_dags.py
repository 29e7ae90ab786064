"""Spark on the real test cluster through `airflow dags test`: the word count via PinnedSparkKubernetesOperator
(a SparkApplication: 1 driver, 2 executors) and via PinnedSparkSubmitOperator (spark-submit --deploy-mode cluster).

Needs the stack and the cluster with Spark (``IMAGEGATE_K8S_SPARK=1 python scripts/k8s.py up``: kube-proxy,
CoreDNS, the spark-operator) and imagegate's Spark image (``localstack.spark_parts``); without them the tests
skip, or fail under ``CI=true``. What is checked, each through the API server, not our own record:

* the job runs: the driver log's counts are Python's count of the same text, and every driver and executor pod
  the job created ran a digest (the operator reads them back; so does the test, for the spark-submit door);
* a ``:latest`` or a root executor image is refused and no SparkApplication exists afterwards;
* the tag is moved to another image right after submission: the executors still run the pinned digest.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.airflow.conftest import AirflowHome, airflow_home  # noqa: F401 - fixture
from tests.integration.conftest import unique
from tests.k8s.conftest import ROOT, K8sCluster, k8s_unavailable

pytestmark = [pytest.mark.k8s, pytest.mark.integration, pytest.mark.spark, pytest.mark.timeout(1800)]
DAGS_TEST_TIMEOUT = 900  # a Spark job's pods start in sequence (driver, then executors) on a 2-core node

WORDS = ROOT / "scripts" / "localstack" / "spark" / "words.txt"
GROUP, VERSION, PLURAL = "sparkoperator.k8s.io", "v1beta2", "sparkapplications"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")

DAG = '''
from __future__ import annotations
import datetime as dt
from airflow.sdk import dag
from airflow_plugin.spark import PinnedSparkKubernetesOperator, PinnedSparkSubmitOperator

@dag(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False)
def spark_on_cluster():
    if {door!r} == "application":
        PinnedSparkKubernetesOperator(
            task_id="spark", namespace={namespace!r}, template_spec={application!r}, config_file={kubeconfig!r},
            cluster_context={context!r}, in_cluster=False, get_logs=True, startup_timeout_seconds=240)
    else:
        PinnedSparkSubmitOperator(
            task_id="spark", conn_id="spark_k8s", application="local:///opt/spark/work-dir/wordcount.py",
            name={name!r}, deploy_mode="cluster", conf={conf!r}, kubernetes_conn_id="kubernetes_default")

spark_on_cluster()
'''


def expected_counts() -> dict[str, int]:
    return dict(Counter(WORDS.read_text().lower().split()))


def log_counts(output: str) -> dict[str, int]:
    counts = {}
    for line in output.splitlines():
        found = re.search(r"(?:^|\s)(\S+)\t(\d+)(?:\s|$)", line)  # Airflow may append "[logger] loc=…"
        if found:
            counts[found.group(1)] = int(found.group(2))
    return counts


def application(name: str, namespace: str, image: str, executor_image: str | None = None) -> dict[str, Any]:
    executor: dict[str, Any] = {"cores": 1, "coreRequest": "250m", "memory": "512m", "instances": 2}
    if executor_image:
        executor["image"] = executor_image
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SparkApplication",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": "Python", "pythonVersion": "3", "mode": "cluster", "sparkVersion": "4.3.0", "image": image,
                 "imagePullPolicy": "IfNotPresent", "mainApplicationFile": "local:///opt/spark/work-dir/wordcount.py",
                 "sparkConf": {"spark.ui.enabled": "false"}, "restartPolicy": {"type": "Never"},
                 "driver": {"cores": 1, "coreRequest": "250m", "memory": "512m", "serviceAccount": "spark"},
                 "executor": executor},
    }


def write_dag(tmp_path: Path, cluster: K8sCluster, dag_id: str, door: str, *, image: str,
              executor_image: str | None = None) -> Path:
    dags = tmp_path / "dags"
    dags.mkdir(exist_ok=True)
    name = dag_id.replace("_", "-")[:40]
    conf = {"spark.kubernetes.container.image": image, "spark.kubernetes.namespace": cluster.namespace,
            "spark.kubernetes.authenticate.driver.serviceAccountName": "spark", "spark.executor.instances": "2",
            "spark.executor.memory": "512m", "spark.driver.memory": "512m", "spark.ui.enabled": "false",
            "spark.kubernetes.driver.request.cores": "250m", "spark.kubernetes.executor.request.cores": "250m"}
    if executor_image:
        conf["spark.kubernetes.executor.container.image"] = executor_image
    (dags / f"{dag_id}.py").write_text(DAG.format(
        dag_id=dag_id, door=door, namespace=cluster.namespace, kubeconfig=str(cluster.kubeconfig),
        context=cluster.env["IMAGEGATE_K8S_CONTEXT"], name=name, conf=conf,
        application=application(name, cluster.namespace, image, executor_image)))
    return dags


def connections(cluster: K8sCluster) -> dict[str, str]:
    """kubernetes_default: the cluster's kubeconfig; spark_k8s: spark-submit against the API server, from the
    cached Spark home (SPARK_HOME) with the host's Java, authenticating with KUBECONFIG (a SEC1 key)."""
    kube = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(cluster.kubeconfig),
                                                 "cluster_context": cluster.env["IMAGEGATE_K8S_CONTEXT"],
                                                 "namespace": cluster.namespace}}
    spark = {"conn_type": "spark", "host": f"k8s://{cluster.env['IMAGEGATE_K8S_SERVER']}",
             "extra": {"deploy-mode": "cluster", "spark-binary": "spark-submit", "namespace": cluster.namespace}}
    env = {"AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(kube), "AIRFLOW_CONN_SPARK_K8S": json.dumps(spark),
           "KUBECONFIG": spark_submit_kubeconfig(cluster)}
    home = spark_home()
    env["SPARK_HOME"] = home
    env["PATH"] = f"{home}/bin:{os.environ.get('PATH', '')}"
    return env


def spark_home() -> str:
    from localstack import spark_parts

    home = str(spark_parts.ensure_spark_home()[0])
    if not home or not Path(home, "bin", "spark-submit").is_file():
        k8s_unavailable("a Spark home for spark-submit (PYTHONPATH=scripts python3 -m localstack.spark_parts all)")
    return home


def spark_submit_kubeconfig(cluster: K8sCluster) -> str:
    """spark-submit's fabric8 client reads SEC1 EC keys or tokens, not PKCS#8: the cluster writes one for it."""
    for name in ("spark-submit.kubeconfig", "spark-operator.kubeconfig"):
        path = Path(cluster.env["IMAGEGATE_K8S_DIR"]) / name
        if path.is_file():
            return str(path)
    k8s_unavailable("a kubeconfig spark-submit can read (SEC1 key): see /work/shared/facts/spark-on-the-test-cluster.md")
    raise AssertionError("unreachable")


def dags_test(home: AirflowHome, dag_id: str, dags: Path, cluster: K8sCluster) -> subprocess.CompletedProcess[str]:
    return home.run("dags", "test", dag_id, dags=dags, extra_env=connections(cluster), timeout=DAGS_TEST_TIMEOUT)


def applications(cluster: K8sCluster) -> list[str]:
    from kubernetes import client

    api = client.CustomObjectsApi(cluster.api_client)
    listed = api.list_namespaced_custom_object(GROUP, VERSION, cluster.namespace, PLURAL)
    return [item["metadata"]["name"] for item in listed.get("items", [])]


def pushed(docker_client: Any, source: str, name: str, tag: str) -> str:
    image = docker_client.images.pull(source) if "@" in source else docker_client.images.get(source)
    image.tag(name, tag)
    digest = None
    for line in docker_client.images.push(name, tag=tag, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(line["error"])
        digest = (line.get("aux") or {}).get("Digest", digest)
    assert digest
    return f"{name}@{digest}"


@pytest.fixture(scope="module")
def spark_tagged(spark_image: str, stack: Any, docker_client: Any) -> str:
    """The Spark image under an immutable-looking tag in a repository of its own: REPO:4.3.0."""
    repo = f"{stack.registry}/imagegate-test/spark-{unique('wc')}"
    pushed(docker_client, spark_image, repo, "4.3.0")
    return f"{repo}:4.3.0"


def test_the_word_count_runs_through_the_application_operator_by_digest(
    tmp_path: Path, airflow_home: AirflowHome, k8s_services: K8sCluster, spark_tagged: str
) -> None:
    dags = write_dag(tmp_path, k8s_services, "imagegate_spark_app", "application", image=spark_tagged)
    started = time.monotonic()
    result = dags_test(airflow_home, "imagegate_spark_app", dags, k8s_services)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    expected = expected_counts()
    assert log_counts(output) == expected, output[-4000:]
    assert f"wordcount: {len(expected)} distinct words, {sum(expected.values())} in all" in output
    found = re.search(r"imagegate: (\d+) pod\(s\) ran the planned digests: (.*)", output)
    assert found, output[-4000:]
    roles = re.findall(r"\((driver|executor)\)", found.group(2))
    assert roles.count("driver") == 1 and roles.count("executor") == 2, found.group(0)
    assert "verdict  passed" in output
    ours = [name for name in applications(k8s_services) if name.startswith("imagegate-spark-app")]
    assert ours == []  # deleted with its pods when the task ended
    print(f"application door: {time.monotonic() - started:.1f} s")


@pytest.mark.parametrize("case", ["latest", "root"])
def test_a_refused_executor_image_creates_no_application(
    tmp_path: Path, airflow_home: AirflowHome, k8s_services: K8sCluster, spark_tagged: str, spark_image: str,
    root_image: str, docker_client: Any, case: str
) -> None:
    if case == "latest":  # a :latest that exists (the same Spark image): refused for the tag, not for a 404
        repo = spark_tagged.rsplit(":", 1)[0]
        pushed(docker_client, spark_image, repo, "latest")
        executor, check = f"{repo}:latest", "pinned"
    else:
        executor, check = root_image, "non-root"
    pods_before = {p.metadata.name for p in k8s_services.core().list_namespaced_pod(k8s_services.namespace).items}
    dag_id = f"imagegate_spark_refused_{case}"
    dags = write_dag(tmp_path, k8s_services, dag_id, "application", image=spark_tagged, executor_image=executor)
    result = dags_test(airflow_home, dag_id, dags, k8s_services)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "REFUSED" in output and f"FAIL   {check}" in output, output[-4000:]
    assert "spec.executor.image" in output
    assert [name for name in applications(k8s_services) if name.startswith(dag_id.replace("_", "-")[:20])] == []
    new_pods = {p.metadata.name for p in k8s_services.core().list_namespaced_pod(k8s_services.namespace).items} - pods_before
    assert not [name for name in new_pods if name.startswith(dag_id.replace("_", "-")[:20])]


def test_moving_the_tag_after_submission_changes_nothing_that_runs(
    tmp_path: Path, airflow_home: AirflowHome, k8s_services: K8sCluster, spark_image: str, nonroot_image: str,
    stack: Any, docker_client: Any
) -> None:
    repo = f"{stack.registry}/imagegate-test/spark-{unique('moved')}"  # its own repository: the tag is moved
    pushed(docker_client, spark_image, repo, "4.3.0")
    dags = write_dag(tmp_path, k8s_services, "imagegate_spark_moved", "application", image=f"{repo}:4.3.0")
    before = set(applications(k8s_services))
    env = {**airflow_home.env, **connections(k8s_services)}
    process = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "airflow"), "dags", "test", "imagegate_spark_moved"],
        env={**env, "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=ROOT)
    try:
        deadline = time.monotonic() + 180
        while not [a for a in set(applications(k8s_services)) - before if a.startswith("imagegate-spark-moved")]:
            assert time.monotonic() < deadline and process.poll() is None, "no SparkApplication was created"
            time.sleep(0.5)
        moved = pushed(docker_client, nonroot_image, repo, "4.3.0")  # the tag now names busybox
        output, _ = process.communicate(timeout=DAGS_TEST_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    assert moved.split("@")[1] not in output
    assert process.returncode == 0, output[-6000:]
    assert log_counts(output) == expected_counts()
    found = re.search(r"imagegate: (\d+) pod\(s\) ran the planned digests: (.*)", output)
    assert found and re.findall(r"\((executor)\)", found.group(2)).count("executor") == 2, output[-4000:]


def test_the_same_job_through_spark_submit(
    tmp_path: Path, airflow_home: AirflowHome, k8s_services: K8sCluster, spark_tagged: str
) -> None:
    core = k8s_services.core()
    before = {p.metadata.name for p in core.list_namespaced_pod(k8s_services.namespace, label_selector="spark-role=driver").items}
    dags = write_dag(tmp_path, k8s_services, "imagegate_spark_submit", "submit", image=spark_tagged)
    result = dags_test(airflow_home, "imagegate_spark_submit", dags, k8s_services)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    found = re.search(r"imagegate: (\d+) pod\(s\) ran the planned digests: (.*)", output)
    assert found, output[-4000:]
    roles = re.findall(r"\((driver|executor)\)", found.group(2))
    assert roles.count("driver") == 1 and roles.count("executor") == 2, found.group(0)
    drivers = [p for p in core.list_namespaced_pod(k8s_services.namespace, label_selector="spark-role=driver").items
               if p.metadata.name.startswith("imagegate-spark-submit") and p.metadata.name not in before]
    try:
        assert len(drivers) == 1, [p.metadata.name for p in drivers]
        (pod,) = drivers
        log = bytes(core.read_namespaced_pod_log(pod.metadata.name, k8s_services.namespace,
                                                 _preload_content=False).data).decode()
        expected = expected_counts()
        assert log_counts(log) == expected, log[-4000:]
        assert f"wordcount: {len(expected)} distinct words, {sum(expected.values())} in all" in log
        assert all(DIGEST.search(c.image) for c in pod.spec.containers)
    finally:  # spark-submit leaves the driver pod (and the executors it owns, kept for the check)
        for pod in drivers:
            core.delete_namespaced_pod(pod.metadata.name, k8s_services.namespace)
