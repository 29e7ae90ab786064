"""``deferrable=True`` on the real test cluster: through ``airflow dags test`` and through a real deployment.

A deployment runs a deferrable pod task in three processes: a worker runs the gate and creates the pod,
the triggerer waits for it, a new worker resumes the task (``trigger_reentry``) and collects logs and
XCom. These tests start api-server, scheduler, dag-processor and triggerer (tests/support/airflow_services.py)
and check that the gate ran before the pod existed, the pod ran the digest, the task resumed, logs and XCom
arrived, the ``imagegate`` record and the "Launched image" link survived the resume, and that a refused image
creates no pod and defers nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.airflow.conftest import AIRFLOW, AirflowHome, airflow_home  # noqa: F401 - fixture
from tests.integration.conftest import Stack
from tests.k8s.conftest import K8sCluster
from tests.support.airflow_services import AirflowServices

pytestmark = [pytest.mark.k8s, pytest.mark.integration]

DAG = '''
from __future__ import annotations
import datetime as dt
import json
from pathlib import Path
from airflow.sdk import dag, task
from airflow_plugin import ImagegateKubernetesPodOperator

@dag(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False)
def deferred():
    pod = ImagegateKubernetesPodOperator(
        task_id="pod", image={image!r}, cmds=["sh", "-c"], arguments=[{script!r}], do_xcom_push=True,
        config_file={kubeconfig!r}, cluster_context={context!r}, in_cluster=False, namespace={namespace!r},
        startup_timeout_seconds=120, get_logs=True, deferrable=True, poll_interval=1)

    @task
    def save(value):
        Path({out!r}).write_text(json.dumps(value))

    save(pod.output)

deferred()
'''
SCRIPT = "sleep 2; echo hello-after-deferral; echo '{\"deferred\": true}' > /airflow/xcom/return.json"


def _dag(folder: Path, cluster: K8sCluster, dag_id: str, image: str, out: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{dag_id}.py").write_text(DAG.format(
        dag_id=dag_id, image=image, script=SCRIPT, kubeconfig=str(cluster.kubeconfig),
        context=cluster.env["IMAGEGATE_K8S_CONTEXT"], namespace=cluster.namespace, out=str(out),
    ))


def _connection(sidecar: str) -> dict[str, str]:
    extra = {"xcom_sidecar_container_image": sidecar}
    return {"AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps({"conn_type": "kubernetes", "extra": extra})}


def _pod_events(cluster: K8sCluster, pod: str) -> list[Any]:
    events = cluster.core().list_namespaced_event(cluster.namespace).items
    return [e for e in events if e.involved_object.kind == "Pod" and e.involved_object.name == pod]


def _pods(cluster: K8sCluster) -> set[str]:
    return {p.metadata.name for p in cluster.core().list_namespaced_pod(cluster.namespace).items}


def _wait_gone(cluster: K8sCluster, before: set[str], timeout: float = 60) -> set[str]:
    deadline = time.monotonic() + timeout
    while (left := _pods(cluster) - before) and time.monotonic() < deadline:
        time.sleep(1)
    return left


def _manifest_url(pinned: str) -> str:
    name, digest = pinned.split("@")
    host, repository = name.split("/", 1)
    return f"http://{host}/v2/{repository.rsplit(':', 1)[0] if ':' in repository else repository}/manifests/{digest}"


def test_deferrable_pod_under_airflow_dags_test(
    tmp_path: Path, airflow_home: AirflowHome, k8s_cluster: K8sCluster, nonroot_image: str, root_image: str
) -> None:
    before = _pods(k8s_cluster)
    out = tmp_path / "xcom.json"
    _dag(tmp_path / "dags", k8s_cluster, "imagegate_deferred_dags_test", nonroot_image, out)
    result = airflow_home.dags_test("imagegate_deferred_dags_test", tmp_path / "dags", _connection(root_image))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "verdict  passed" in output and "hello-after-deferral" in output
    assert json.loads(out.read_text()) == {"deferred": True}
    assert _wait_gone(k8s_cluster, before) == set()


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, stack: Stack, k8s_cluster: K8sCluster, root_image: str
) -> Iterator[AirflowServices]:
    import os

    root = tmp_path_factory.mktemp("deployment")
    env = {**os.environ, **stack.env, **_connection(root_image), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for key in ("IMAGEGATE_BACKEND", "AIRFLOW__IMAGEGATE__CLUSTER_POLICY", "AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER"):
        env.pop(key, None)
    services = AirflowServices(airflow=AIRFLOW, home=root / "home", dags=root / "dags", env=env)
    services.dags.mkdir()
    try:
        services.start()
    except RuntimeError as exc:
        services.stop()
        pytest.fail(f"could not start a real Airflow deployment (api-server, scheduler, dag-processor, triggerer): {exc}")
    yield services
    services.stop()


def test_deferrable_pod_through_scheduler_and_triggerer(
    deployment: AirflowServices, k8s_cluster: K8sCluster, nonroot_image: str, tmp_path: Path
) -> None:
    dag_id = "imagegate_deferred_deployment"
    out = tmp_path / "xcom.json"
    before = _pods(k8s_cluster)
    _dag(deployment.dags, k8s_cluster, dag_id, nonroot_image, out)
    run_id = deployment.trigger(dag_id)
    state = deployment.wait_run(dag_id, run_id)
    log = deployment.task_log(dag_id, run_id, "pod")
    assert state == "success", (deployment.states(dag_id, run_id), log[-4000:])

    # It really deferred: the worker paused it, the triggerer ran the trigger, a new worker resumed it.
    assert "Pausing task as DEFERRED" in log
    assert deployment.trigger_logs(dag_id, run_id, "pod"), "the triggerer wrote no log for this task"
    assert log.index("imagegate: verdict  passed") < log.index("Pausing task as DEFERRED")
    assert "hello-after-deferral" in log  # the pod's logs, fetched by the resumed task
    assert json.loads(out.read_text()) == {"deferred": True}  # XCom through the sidecar, after the resume

    # The record the gate pushed before the pod existed survived the resume, and names what ran.
    record = deployment.xcom(dag_id, run_id, "pod", "imagegate")
    assert record["pinned"] == nonroot_image and record["report"]["passed"] is True
    assert record["launched"]["image"] == nonroot_image
    pod = record["launched"]["pod"]
    # The link is computed by the resumed worker, which never ran the gate itself: it reads the record.
    assert deployment.links(dag_id, run_id, "pod") == {"Launched image": _manifest_url(nonroot_image)}

    # The kubelet ran the digest (its events name the image reference it was given).
    messages = " ".join(e.message or "" for e in _pod_events(k8s_cluster, pod))
    assert nonroot_image in messages, messages
    assert _wait_gone(k8s_cluster, before) == set()


def test_refused_deferrable_task_creates_no_pod_and_defers_nothing(
    deployment: AirflowServices, k8s_cluster: K8sCluster, root_image: str, tmp_path: Path
) -> None:
    dag_id = "imagegate_deferred_refused"
    before = _pods(k8s_cluster)
    events_before = {e.metadata.uid for e in k8s_cluster.core().list_namespaced_event(k8s_cluster.namespace).items}
    _dag(deployment.dags, k8s_cluster, dag_id, root_image, tmp_path / "never.json")
    run_id = deployment.trigger(dag_id)
    assert deployment.wait_run(dag_id, run_id) == "failed"
    log = deployment.task_log(dag_id, run_id, "pod")
    assert "REFUSED" in log and "FAIL   non-root" in log, log[-4000:]
    assert "Pausing task as DEFERRED" not in log
    assert deployment.trigger_logs(dag_id, run_id, "pod") == []
    assert deployment.states(dag_id, run_id) == {"pod": "failed", "save": "upstream_failed"}
    record = deployment.xcom(dag_id, run_id, "pod", "imagegate")
    assert record["launched"] is None and record["report"]["passed"] is False
    assert _pods(k8s_cluster) - before == set()  # no pod created (an earlier test's may still be going away)
    new = [e for e in k8s_cluster.core().list_namespaced_event(k8s_cluster.namespace).items
           if e.metadata.uid not in events_before and e.involved_object.kind == "Pod"]
    assert new == []
    assert not (tmp_path / "never.json").exists()
