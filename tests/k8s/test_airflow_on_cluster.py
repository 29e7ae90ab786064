"""The Airflow Kubernetes operator on the real test cluster, through `airflow dags test`.

Needs the local stack and cluster (``python scripts/stack.py up && python scripts/k8s.py up``) and the
``airflow`` extra. The pods run in the namespace that enforces the restricted Pod Security Standard.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.airflow.conftest import AirflowHome, airflow_home  # noqa: F401 - fixture
from tests.k8s.conftest import K8sCluster

pytestmark = [pytest.mark.k8s, pytest.mark.integration]

DAG = '''
from __future__ import annotations
import datetime as dt
import json
from pathlib import Path
from airflow.sdk import dag, task
from airflow_plugin import ImagegateKubernetesPodOperator

CLUSTER = dict(config_file={kubeconfig!r}, cluster_context={context!r}, in_cluster=False, namespace={namespace!r},
               startup_timeout_seconds=120, get_logs=True)

@dag(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False)
def on_cluster():
    pod = ImagegateKubernetesPodOperator(
        task_id="pod", image={image!r}, cmds=["sh", "-c"], arguments=[{script!r}], do_xcom_push=True, **CLUSTER)

    @task
    def save(value):
        Path({out!r}).write_text(json.dumps(value))

    save(pod.output)

on_cluster()
'''


def _write_dag(tmp_path: Path, cluster: K8sCluster, dag_id: str, image: str, script: str, sidecar: str) -> Path:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / f"{dag_id}.py").write_text(DAG.format(
        kubeconfig=str(cluster.kubeconfig), context=cluster.env["IMAGEGATE_K8S_CONTEXT"], namespace=cluster.namespace,
        sidecar=sidecar, dag_id=dag_id, image=image, script=script, out=str(tmp_path / "xcom.json"),
    ))
    return dags


def _sidecar_connection(sidecar: str) -> dict[str, str]:
    """The provider takes the XCom sidecar image from the Kubernetes connection: a local image by digest
    (its default, alpine, cannot be pulled here)."""
    extra = {"xcom_sidecar_container_image": sidecar}
    return {"AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps({"conn_type": "kubernetes", "extra": extra})}


def _pods(cluster: K8sCluster) -> list[str]:
    return [p.metadata.name for p in cluster.core().list_namespaced_pod(cluster.namespace).items]


def _wait_no_pods(cluster: K8sCluster, before: list[str], timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := sorted(set(_pods(cluster)) - set(before))) and time.monotonic() < deadline:
        time.sleep(1)
    return left


def test_pod_runs_by_digest_logs_and_xcom_reach_airflow(
    tmp_path: Path, airflow_home: AirflowHome, k8s_cluster: K8sCluster, nonroot_image: str, root_image: str
) -> None:
    before = _pods(k8s_cluster)
    script = 'echo hello-from-the-pod; id -u; echo \'{"answer": 42}\' > /airflow/xcom/return.json'
    dags = _write_dag(tmp_path, k8s_cluster, "imagegate_on_cluster", nonroot_image, script, root_image)
    result = airflow_home.dags_test("imagegate_on_cluster", dags, _sidecar_connection(root_image))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "hello-from-the-pod" in output and "10001" in output  # the pod's logs reach the task log
    assert "verdict  passed" in output
    assert json.loads((tmp_path / "xcom.json").read_text()) == {"answer": 42}  # XCom through the sidecar
    assert _wait_no_pods(k8s_cluster, before) == []  # the pod is cleaned up


def test_non_zero_exit_fails_the_task_and_cleans_up(
    tmp_path: Path, airflow_home: AirflowHome, k8s_cluster: K8sCluster, nonroot_image: str, root_image: str
) -> None:
    before = _pods(k8s_cluster)
    dags = _write_dag(tmp_path, k8s_cluster, "imagegate_on_cluster_fails", nonroot_image, "echo failing-on-purpose; exit 3", root_image)
    result = airflow_home.dags_test("imagegate_on_cluster_fails", dags, _sidecar_connection(root_image))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    assert "failing-on-purpose" in output
    assert not (tmp_path / "xcom.json").exists()
    assert _wait_no_pods(k8s_cluster, before) == []


@pytest.mark.parametrize("case", ["root", "mutable-tag"])
def test_refused_images_create_no_pod(
    tmp_path: Path, airflow_home: AirflowHome, k8s_cluster: K8sCluster, root_image: str, nonroot_image: str, case: str
) -> None:
    # root: the busybox base by digest (USER unset); mutable-tag: a non-root image by its major-only tag 'v1'
    image, check = (root_image, "non-root") if case == "root" else (nonroot_image.split("@")[0] + ":v1", "pinned")
    before = _pods(k8s_cluster)
    events_before = {e.metadata.uid for e in k8s_cluster.core().list_namespaced_event(k8s_cluster.namespace).items}
    dag_id = f"imagegate_on_cluster_refused_{case.replace('-', '_')}"
    dags = _write_dag(tmp_path, k8s_cluster, dag_id, image, "id", root_image)
    result = airflow_home.dags_test(dag_id, dags, _sidecar_connection(root_image))
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "REFUSED" in output and f"FAIL   {check}" in output, output[-4000:]
    assert set(_pods(k8s_cluster)) - set(before) == set()  # no pod created (an earlier test's may still be going away)
    new_events = [e for e in k8s_cluster.core().list_namespaced_event(k8s_cluster.namespace).items
                  if e.metadata.uid not in events_before and e.involved_object.kind == "Pod"]
    assert new_events == []  # the API never saw a pod for this task
