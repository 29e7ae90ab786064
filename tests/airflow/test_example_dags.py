"""Every example DAG: `airflow dags test` on the real engine where it can run here; the Kubernetes
DAG (no cluster here) through dry_run of each task, validated against the OpenAPI schema and PSS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from imagegate import restricted_violations
from tests.airflow.conftest import ROOT, AirflowHome, Events
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

DAGS = ROOT / "example_dags"


@pytest.fixture(scope="module")
def wordcount_run(airflow_home: AirflowHome, docker_client: Any) -> dict[str, Any]:
    events = Events(docker_client)
    result = airflow_home.dags_test("imagegate_wordcount", DAGS)
    return {"result": result, "created": events.containers("examples/wordcount", task="imagegate_wordcount.count"), "data": Path(airflow_home.env["IMAGEGATE_EXAMPLE_DATA"])}


def test_wordcount_builds_then_runs_the_built_digest_on_docker(wordcount_run: dict[str, Any], stack: Stack) -> None:
    result = wordcount_run["result"]
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    lock = json.loads((wordcount_run["data"] / "imagegate.lock.json").read_text())
    pinned = lock["images"]["wordcount"]["reference"]
    digest = lock["images"]["wordcount"]["digest"]
    assert pinned.startswith(f"{stack.registry}/examples/wordcount:") and pinned.endswith(digest)
    assert "verdict  passed" in output and f"runs image sha256:" in output
    # exactly one container for the task, created from the built digest, labelled with the pin
    [created] = wordcount_run["created"]
    assert created["Actor"]["Attributes"]["image"] == f"{stack.registry}/examples/wordcount@{digest}"
    assert created["Actor"]["Attributes"]["imagegate.dev/pinned"] == pinned
    summary = json.loads((wordcount_run["data"] / "wordcount.json").read_text())
    assert summary["file"] == "/data/input.txt" and summary["words"] == 36 and summary["top"][0] == ["it", 6]


def test_refused_dag_fails_before_any_container_exists(
    airflow_home: AirflowHome, rooty: dict[str, str], events: Events, stack: Stack
) -> None:
    result = airflow_home.dags_test("imagegate_refused", DAGS)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "DagRun failed" in output
    assert output.count("imagegate refused") >= 2, output[-6000:]
    assert "tag 'latest' is the floating default" in output and "would run as root" in output
    assert events.containers("examples/rooty") == []


def test_kubernetes_dag_pods_are_pinned_restricted_and_valid(
    wordcount_run: dict[str, Any], airflow_home: AirflowHome, monkeypatch: pytest.MonkeyPatch, stack: Stack
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator

    for key, value in airflow_home.env.items():
        if key.startswith("IMAGEGATE_"):
            monkeypatch.setenv(key, value)
    # The XCom sidecar image comes from the Kubernetes connection (the provider's default, alpine, is unreachable here).
    sidecar = {"xcom_sidecar_container_image": stack.env["IMAGEGATE_BUSYBOX_IMAGE"]}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps({"conn_type": "kubernetes", "extra": sidecar}))
    lock = json.loads((wordcount_run["data"] / "imagegate.lock.json").read_text())
    digest = lock["images"]["wordcount"]["digest"]
    monkeypatch.setenv("IMAGEGATE_BACKEND", "kubernetes")
    dags = DagBag(dag_folder=str(DAGS / "wordcount_from_lock.py"), safe_mode=False)
    assert dags.import_errors == {}
    dag = dags.dags["imagegate_wordcount_from_lock"]
    for task in dag.tasks:
        pod = PodGenerator.serialize_pod(task.build_pod_request_obj(dry_run=True))
        kubernetes_validate.validate(pod, "1.30.0", strict=True)
        assert restricted_violations(pod) == []
        base, sidecar = pod["spec"]["containers"]
        assert base["image"] == f"{stack.registry}/examples/wordcount@{digest}"
        assert base["imagePullPolicy"] == "IfNotPresent"
        assert sidecar["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert sidecar["image"] == stack.env["IMAGEGATE_BUSYBOX_IMAGE_DIGEST"]
        assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    assert dag.get_task("count_deferrable").deferrable is True


def test_the_lock_file_dag_runs_on_docker_by_default(
    wordcount_run: dict[str, Any], airflow_home: AirflowHome, events: Events, stack: Stack
) -> None:
    lock = json.loads((wordcount_run["data"] / "imagegate.lock.json").read_text())
    digest = lock["images"]["wordcount"]["digest"]
    result = airflow_home.dags_test("imagegate_wordcount_from_lock", DAGS)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    created = events.containers("examples/wordcount")
    assert sorted(e["Actor"]["Attributes"]["imagegate.dev/task"] for e in created) == [
        "imagegate_wordcount_from_lock.count", "imagegate_wordcount_from_lock.count_deferrable"]
    assert {e["Actor"]["Attributes"]["image"] for e in created} == {f"{stack.registry}/examples/wordcount@{digest}"}


def test_the_same_wordcount_dag_parses_for_kubernetes(airflow_home: AirflowHome, monkeypatch: pytest.MonkeyPatch) -> None:
    """One DAG, two backends: IMAGEGATE_BACKEND=kubernetes turns `count` into a pod operator."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("IMAGEGATE_BACKEND", "kubernetes")
    dags = DagBag(dag_folder=str(DAGS / "wordcount.py"), safe_mode=False)
    assert dags.import_errors == {}
    count = dags.dags["imagegate_wordcount"].get_task("count")
    assert type(count).__name__ == "ImagegateKubernetesPodOperator"
    assert count.volume_mounts[0].mount_path == "/data"


def test_macros_and_plugin_are_registered(airflow_home: AirflowHome, wordcount_run: dict[str, Any], tmp_path: Path) -> None:
    lock = wordcount_run["data"] / "imagegate.lock.json"
    pinned = json.loads(lock.read_text())["images"]["wordcount"]["reference"]
    (tmp_path / "macro_dag.py").write_text(
        "import pendulum\n"
        "from airflow.sdk import dag\n"
        "from airflow.providers.standard.operators.bash import BashOperator\n"
        "@dag(dag_id='imagegate_macro', schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)\n"
        "def d():\n"
        "    BashOperator(task_id='show', bash_command=\"echo PIN={{ macros.imagegate.pinned('wordcount') }} "
        "DIGEST={{ macros.imagegate.digest('wordcount') }}\")\n"
        "d()\n"
    )
    result = airflow_home.dags_test("imagegate_macro", tmp_path, {"IMAGEGATE_LOCK_FILE": str(lock)})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert f"PIN={pinned} DIGEST={pinned.split('@')[1]}" in output
    plugins = airflow_home.run("plugins", "--output", "json", dags=tmp_path)
    assert plugins.returncode == 0, plugins.stderr[-2000:]
    [entry] = [p for p in json.loads(plugins.stdout) if p["name"] == "imagegate"]
    assert "airflow_plugin.plugin.pinned" in str(entry["macros"])
    providers = airflow_home.run("providers", "get", "imagegate", "--output", "json", dags=tmp_path)
    assert providers.returncode == 0 and "imagegate" in providers.stdout, providers.stderr[-2000:]
