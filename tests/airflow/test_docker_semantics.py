"""Docker semantics of ImagegateDockerOperator under ``airflow dags test`` on the real engine.

A non-zero exit fails the task with the container's last output in the log; ``auto_remove`` decides which
containers are left; the ``imagegate`` XCom record is read back by a downstream task and matches what the
engine ran; the "Launched image" link of a finished task is the manifest of the pinned digest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.airflow.conftest import AirflowHome, airflow_home, events, push_image  # noqa: F401 - fixtures
from tests.integration.conftest import Stack, unique

pytestmark = pytest.mark.integration

DAG = '''
from __future__ import annotations
import datetime as dt
import json
from pathlib import Path
from airflow.sdk import dag, task
from airflow_plugin import ImagegateDockerOperator

@dag(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False)
def semantics():
    run = ImagegateDockerOperator(task_id="run", image={image!r}, command=["sh", "-c", {script!r}],
                                  auto_remove={auto_remove!r}, mount_tmp_dir=False)

    @task(trigger_rule="all_done")
    def record(ti=None):
        Path({out!r}).write_text(json.dumps({{
            "imagegate": ti.xcom_pull(task_ids="run", key="imagegate"),
            "link": ti.xcom_pull(task_ids="run", key="_link_LaunchedImageLink"),
            "return_value": ti.xcom_pull(task_ids="run"),
        }}))

    run >> record()

semantics()
'''


def _run(airflow_home: AirflowHome, tmp_path: Path, image: str, script: str, auto_remove: str) -> tuple[Any, dict[str, Any], str]:
    dag_id = unique("semantics").replace("-", "_")
    dags = tmp_path / "dags"
    dags.mkdir()
    out = tmp_path / "record.json"
    (dags / "semantics.py").write_text(DAG.format(dag_id=dag_id, image=image, script=script, auto_remove=auto_remove, out=str(out)))
    result = airflow_home.dags_test(dag_id, dags)
    return result, json.loads(out.read_text()), dag_id


def _containers(docker_client: Any, dag_id: str) -> list[dict[str, Any]]:
    label = f"imagegate.dev/task={dag_id}.run"
    return list(docker_client.api.containers(all=True, filters={"label": label}))


@pytest.fixture(scope="module")
def image(stack: Stack, docker_client: Any) -> str:
    repo = unique("semantics")
    digest = push_image(docker_client, stack, repo, "1.0.0", "semantics")
    return f"{stack.registry}/{repo}@{digest}"


def test_non_zero_exit_fails_the_task_with_the_last_output_and_is_recorded(
    airflow_home: AirflowHome, tmp_path: Path, image: str, docker_client: Any
) -> None:
    script = "echo first-line; echo last-words-before-failing; echo on-stderr >&2; exit 3"
    result, seen, dag_id = _run(airflow_home, tmp_path, image, script, "never")
    output = result.stdout + result.stderr
    # The run itself succeeds (its leaf, `record`, runs on all_done); the task failed with the exit code.
    assert "DockerContainerFailedException" in output, output[-3000:]
    assert "last-words-before-failing" in output and "on-stderr" in output
    assert "'StatusCode': 3" in output  # the provider's DockerContainerFailedException names the exit code
    containers = _containers(docker_client, dag_id)
    try:
        assert len(containers) == 1 and containers[0]["State"] == "exited"  # auto_remove="never" keeps it
        assert "Exited (3)" in containers[0]["Status"]
        record = seen["imagegate"]
        # A failed run is recorded too, naming the container that ran and failed.
        assert record["launched"]["container_id"] == containers[0]["Id"]
        assert record["pinned"].endswith("@" + image.split("@")[1])
        assert seen["return_value"] is None
    finally:
        for c in containers:
            docker_client.api.remove_container(c["Id"], force=True)


@pytest.mark.parametrize(("auto_remove", "script", "succeeds"), [
    ("success", "echo ok", True),
    ("force", "echo ok", True),
    ("force", "echo failing; exit 5", False),
    # The provider removes in a `finally`: "success" removes a container that failed too (provider 4.x).
    ("success", "echo failing; exit 4", False),
])
def test_auto_remove_leaves_no_container(
    airflow_home: AirflowHome, tmp_path: Path, image: str, docker_client: Any, auto_remove: str, script: str, succeeds: bool
) -> None:
    result, seen, dag_id = _run(airflow_home, tmp_path, image, script, auto_remove)
    output = result.stdout + result.stderr
    assert ("DockerContainerFailedException" not in output) is succeeds, output[-3000:]
    assert seen["imagegate"]["launched"]["container_id"]  # a container did run
    assert _containers(docker_client, dag_id) == []


def test_the_record_and_the_link_of_a_finished_task(
    airflow_home: AirflowHome, tmp_path: Path, image: str, docker_client: Any, stack: Stack
) -> None:
    result, seen, dag_id = _run(airflow_home, tmp_path, image, "echo the-return-value", "never")
    assert result.returncode == 0 and "DockerContainerFailedException" not in result.stdout, result.stdout[-3000:]
    containers = _containers(docker_client, dag_id)
    try:
        assert len(containers) == 1
        container = docker_client.api.inspect_container(containers[0]["Id"])
        record = seen["imagegate"]
        repo, digest = image.split("@")
        assert record["pinned"] == image  # given by digest: pinned as given
        assert record["launched"] == {
            "pinned": image, "launched": image, "container_id": container["Id"], "image_id": container["Image"],
        }
        report = record["report"]
        assert report["passed"] is True and report["pinned"] == image and report["backend"] == "docker"
        assert {c["check"]: c["outcome"] for c in report["checks"]} == {"registry": "pass", "pinned": "pass", "non-root": "pass"}
        assert report["image"]["config_digest"] == container["Image"]  # the engine ran the checked config
        assert container["Config"]["Labels"]["imagegate.dev/pinned"] == image
        assert seen["return_value"] == "the-return-value"
        host, path = repo.split("/", 1)
        assert seen["link"] == f"http://{host}/v2/{path}/manifests/{digest}"
    finally:
        for c in containers:
            docker_client.api.remove_container(c["Id"], force=True)


VOLUME_DAG = '''
from __future__ import annotations
import datetime as dt
from docker.types import Mount
from airflow.sdk import dag
from airflow_plugin import ImagegateDockerOperator

@dag(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False)
def volumes():
    for task_id, volume in (("bound", {bound!r}), ("plain", {plain!r})):
        ImagegateDockerOperator(task_id=task_id, image={image!r}, command=["sh", "-c", "ls /data; echo read-the-volume"],
                                mounts=[Mount(target="/data", source=volume, type="volume", read_only=True)],
                                auto_remove="never", mount_tmp_dir=False)

volumes()
'''


def test_a_named_volume_made_with_the_local_drivers_bind_options_never_starts(
    airflow_home: AirflowHome, tmp_path: Path, image: str, docker_client: Any, events: Any
) -> None:
    """`docker volume create -o type=none -o o=bind -o device=/etc` mounts the host's /etc; the container's
    record names the volume only. The operator reads the volume's own record: removed before it starts."""
    import uuid

    bound, plain = f"ig-bind-{uuid.uuid4().hex[:12]}", f"ig-plain-{uuid.uuid4().hex[:12]}"
    docker_client.api.create_volume(bound, driver="local", driver_opts={"type": "none", "o": "bind", "device": "/etc"})
    docker_client.api.create_volume(plain, driver="local")
    dag_id = unique("volumes").replace("-", "_")
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "volumes.py").write_text(VOLUME_DAG.format(dag_id=dag_id, bound=bound, plain=plain, image=image))
    left: list[dict[str, Any]] = []
    try:
        result = airflow_home.dags_test(dag_id, dags)
        output = result.stdout + result.stderr
        assert result.returncode != 0, output[-3000:]
        assert f"volume '{bound}' was created with the local driver's" in output, output[-3000:]
        repo = image.split("@")[0]
        created = events.containers(repo, "create", task=f"{dag_id}.bound")
        assert created and events.containers(repo, "start", task=f"{dag_id}.bound") == []  # created, never started
        left = list(docker_client.api.containers(all=True, filters={"label": f"imagegate.dev/task={dag_id}.bound"}))
        assert left == []  # and removed
        (plain_run,) = left_plain = list(docker_client.api.containers(
            all=True, filters={"label": f"imagegate.dev/task={dag_id}.plain"}))
        left += left_plain
        assert "Exited (0)" in plain_run["Status"]  # a plain named volume is fine
    finally:
        for c in left:
            docker_client.api.remove_container(c["Id"], force=True)
        for volume in (bound, plain):
            docker_client.api.remove_volume(volume, force=True)
