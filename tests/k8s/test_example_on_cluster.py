"""One DAG, two backends: example_dags/wordcount.py unchanged, under ``airflow dags test``, on Docker and on the cluster.

The only difference between the two runs is the setting ``IMAGEGATE_BACKEND`` (and, for Kubernetes, the
``kubernetes_default`` connection naming the cluster, and a PersistentVolumeClaim with the input, as a
deployment would have). Both build the job, check and launch the built digest, and ``save`` writes the same
summary.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.airflow.conftest import ROOT, AirflowHome, Events, airflow_home  # noqa: F401 - fixture
from tests.integration.conftest import Stack, unique
from tests.k8s.conftest import K8sCluster

pytestmark = [pytest.mark.k8s, pytest.mark.integration]

DAGS = ROOT / "example_dags"


@pytest.fixture
def input_claim(k8s_cluster: K8sCluster, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A PersistentVolume on this node's directory *data*/input, bound to a claim in the test namespace.

    hostPath is a volume of the PersistentVolume, not of the pod: the restricted Pod Security Standard
    allows the pod's persistentVolumeClaim volume.
    """
    from kubernetes import client

    data = tmp_path / "data"
    (data / "input").mkdir(parents=True)
    name = unique("wordcount-data")
    core = client.CoreV1Api(k8s_cluster.api_client)
    core.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "10Mi"}, "accessModes": ["ReadOnlyMany"], "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(data / "input"), "type": "Directory"},
            "claimRef": {"namespace": k8s_cluster.namespace, "name": name},
        },
    })
    core.create_namespaced_persistent_volume_claim(k8s_cluster.namespace, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
        "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": name,
                 "resources": {"requests": {"storage": "10Mi"}}},
    })
    deadline = time.monotonic() + 60
    while core.read_namespaced_persistent_volume_claim(name, k8s_cluster.namespace).status.phase != "Bound":
        assert time.monotonic() < deadline, f"claim {name} never bound"
        time.sleep(0.5)
    yield name, data
    core.delete_namespaced_persistent_volume_claim(name, k8s_cluster.namespace)
    core.delete_persistent_volume(name)


def _connection(cluster: K8sCluster, sidecar: str) -> str:
    extra = {"kube_config_path": str(cluster.kubeconfig), "cluster_context": cluster.env["IMAGEGATE_K8S_CONTEXT"],
             "namespace": cluster.namespace, "in_cluster": False, "xcom_sidecar_container_image": sidecar}
    return json.dumps({"conn_type": "kubernetes", "extra": extra})


def _pods(cluster: K8sCluster) -> set[str]:
    return {p.metadata.name for p in cluster.core().list_namespaced_pod(cluster.namespace).items}


def test_one_dag_runs_on_docker_and_on_kubernetes_with_the_same_result(
    airflow_home: AirflowHome, k8s_cluster: K8sCluster, stack: Stack, root_image: str, docker_client: Any,
    input_claim: tuple[str, Path],
) -> None:
    claim, data = input_claim
    shared = {"IMAGEGATE_EXAMPLE_DATA": str(data), "IMAGEGATE_EXAMPLE_CLAIM": claim}

    events = Events(docker_client)
    docker = airflow_home.dags_test("imagegate_wordcount", DAGS, {**shared, "IMAGEGATE_BACKEND": "docker"})
    assert docker.returncode == 0, (docker.stdout + docker.stderr)[-4000:]
    on_docker = json.loads((data / "wordcount.json").read_text())
    [created] = events.containers("examples/wordcount", task="imagegate_wordcount.count")
    (data / "wordcount.json").unlink()

    before = _pods(k8s_cluster)
    events_before = {e.metadata.uid for e in k8s_cluster.core().list_namespaced_event(k8s_cluster.namespace).items}
    kube = airflow_home.dags_test("imagegate_wordcount", DAGS, {
        **shared, "IMAGEGATE_BACKEND": "kubernetes", "AIRFLOW_CONN_KUBERNETES_DEFAULT": _connection(k8s_cluster, root_image),
    })
    output = kube.stdout + kube.stderr
    assert kube.returncode == 0, output[-4000:]
    on_kubernetes = json.loads((data / "wordcount.json").read_text())

    # The same downstream result, from the same built image (the content tag: nothing was rebuilt).
    assert on_kubernetes == on_docker
    assert on_docker["file"] == "/data/input.txt" and on_docker["words"] == 36 and on_docker["top"][0] == ["it", 6]
    lock = json.loads((data / "imagegate.lock.json").read_text())["images"]["wordcount"]
    launched = f"{stack.registry}/examples/wordcount@{lock['digest']}"
    assert created["Actor"]["Attributes"]["image"] == launched
    assert "up to date" in output  # the second build found the content tag and built nothing

    # The pod ran the digest: its events name the reference the kubelet was given.
    new = [e for e in k8s_cluster.core().list_namespaced_event(k8s_cluster.namespace).items
           if e.metadata.uid not in events_before and e.involved_object.kind == "Pod"]
    assert new and any(launched in (e.message or "") for e in new), [e.message for e in new]
    deadline = time.monotonic() + 60
    while _pods(k8s_cluster) - before and time.monotonic() < deadline:
        time.sleep(1)
    assert _pods(k8s_cluster) - before == set()
