"""The cluster policy on plain provider operators: off by default; warn; enforce at parse time,
before execute (templated images) and when a KubernetesPodOperator builds its pod."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.airflow.conftest import AirflowHome, Events, push_image
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

HEADER = """\
import pendulum
from airflow.sdk import dag
from airflow.providers.docker.operators.docker import DockerOperator

@dag(dag_id={dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
def d():
    DockerOperator(task_id="t", image={image!r}, mount_tmp_dir=False, auto_remove="force"{extra})
d()
"""


def dag_file(folder: Path, dag_id: str, image: str, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dag_id}.py"
    path.write_text(HEADER.format(dag_id=dag_id, image=image, extra=extra))
    return path


def bag(folder: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(folder), safe_mode=False)


@pytest.fixture
def policy_mode(monkeypatch: pytest.MonkeyPatch) -> Any:
    def set_mode(mode: str | None) -> None:
        if mode is None:
            monkeypatch.delenv("AIRFLOW__IMAGEGATE__CLUSTER_POLICY", raising=False)
        else:
            monkeypatch.setenv("AIRFLOW__IMAGEGATE__CLUSTER_POLICY", mode)

    return set_mode


def test_installed_but_off_changes_nothing(tmp_path: Path, policy_mode: Any) -> None:
    policy_mode(None)
    dag_file(tmp_path, "plain_latest", "registry.example.com/team/etl:latest")
    dags = bag(tmp_path)
    assert dags.import_errors == {}
    assert dags.dags["plain_latest"].get_task("t")._pre_execute_hook is None


@pytest.mark.parametrize(
    ("image", "extra", "check"),
    [
        ("registry.example.com/team/etl:latest", "", "pinned: tag 'latest'"),
        ("registry.example.com/team/etl", "", "pinned"),
        ("registry.example.com/team/etl:1.4.2", ', user="root"', "non-root: the runtime user override is 'root'"),
    ],
)
def test_enforce_refuses_at_parse_time_without_network(tmp_path: Path, policy_mode: Any, image: str, extra: str, check: str) -> None:
    policy_mode("enforce")
    dag_file(tmp_path, "plain", image, extra)
    dags = bag(tmp_path)  # registry.example.com is never contacted: these checks read only the text
    assert "plain" not in dags.dags
    [error] = dags.import_errors.values()
    assert "imagegate refused task 't'" in error and check in error and "fix:" in error


def test_warn_loads_the_dag_and_installs_the_gate(tmp_path: Path, policy_mode: Any) -> None:
    policy_mode("warn")
    dag_file(tmp_path, "plain_warn", "registry.example.com/team/etl:latest")
    dags = bag(tmp_path)
    assert dags.import_errors == {}
    assert dags.dags["plain_warn"].get_task("t")._pre_execute_hook is not None


def test_a_bad_mode_is_an_error_naming_the_option(tmp_path: Path, policy_mode: Any) -> None:
    from airflow_plugin import cluster_policy

    policy_mode("strict")
    with pytest.raises(Exception, match=r"\[imagegate\] cluster_policy = 'strict' is not one of off, warn, enforce"):
        cluster_policy.mode()


def test_enforce_checks_and_pins_a_templated_image_at_execute(
    airflow_home: AirflowHome, docker_client: Any, stack: Stack, repo: str, tmp_path: Path, events: Events
) -> None:
    digest = push_image(docker_client, stack, repo, "6.0.0", "templated")
    push_image(docker_client, stack, repo, "6.0.1", "rooty", user="0")
    image = f"{stack.registry}/{repo}:{{{{ params.tag }}}}"
    dag_file(tmp_path, "plain_templated", image, ', params={"tag": "6.0.0"}')
    env = {"AIRFLOW__IMAGEGATE__CLUSTER_POLICY": "enforce"}
    result = airflow_home.dags_test("plain_templated", tmp_path, env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "verdict  passed" in result.stdout + result.stderr
    created = events.containers(repo)
    assert [e["Actor"]["Attributes"]["image"] for e in created] == [f"{stack.registry}/{repo}@{digest}"]

    refused = Events(docker_client)
    (tmp_path / "plain_templated.py").write_text(
        (tmp_path / "plain_templated.py").read_text().replace('"tag": "6.0.0"', '"tag": "6.0.1"')
    )
    result = airflow_home.dags_test("plain_templated", tmp_path, env)
    output = result.stdout + result.stderr
    assert "REFUSED" in output and "would run as root" in output
    assert refused.containers(repo) == [], "the refused image must not get a container"


def test_pod_mutation_hook_pins_plain_pods_and_refuses_latest(
    docker_client: Any, stack: Stack, repo: str, policy_mode: Any
) -> None:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from airflow_plugin import ImageRefused

    digest = push_image(docker_client, stack, repo, "7.0.0", "pod")
    push_image(docker_client, stack, repo, "latest", "pod-latest")
    policy_mode("enforce")
    pod = KubernetesPodOperator(task_id="p", image=f"{stack.registry}/{repo}:7.0.0", namespace="jobs").build_pod_request_obj(dry_run=True)
    assert pod.spec.containers[0].image == f"{stack.registry}/{repo}@{digest}"
    assert pod.spec.containers[0].image_pull_policy == "IfNotPresent"
    assert pod.metadata.annotations["imagegate.dev/pinned"].endswith(digest)
    with pytest.raises(ImageRefused, match="floating default"):
        KubernetesPodOperator(task_id="q", image=f"{stack.registry}/{repo}:latest", namespace="jobs").build_pod_request_obj(dry_run=True)
    policy_mode("warn")
    pod = KubernetesPodOperator(task_id="r", image=f"{stack.registry}/{repo}:latest", namespace="jobs").build_pod_request_obj(dry_run=True)
    assert pod.spec.containers[0].image.startswith(f"{stack.registry}/{repo}@sha256:")
    policy_mode("off")
    pod = KubernetesPodOperator(task_id="s", image=f"{stack.registry}/{repo}:latest", namespace="jobs").build_pod_request_obj(dry_run=True)
    assert pod.spec.containers[0].image == f"{stack.registry}/{repo}:latest"


def test_pod_mutation_hook_checks_the_xcom_sidecar_of_plain_pods(
    docker_client: Any, stack: Stack, repo: str, policy_mode: Any, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import json
    import logging

    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from airflow_plugin import ImageRefused, ImagegateKubernetesPodOperator

    digest = push_image(docker_client, stack, repo, "7.1.0", "pod")
    push_image(docker_client, stack, repo, "latest", "sidecar-latest")

    def sidecar(image: str) -> None:
        extra = {"xcom_sidecar_container_image": image}
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps({"conn_type": "kubernetes", "extra": extra}))

    def plain() -> Any:
        return KubernetesPodOperator(task_id="x", image=f"{stack.registry}/{repo}:7.1.0", namespace="jobs",
                                     do_xcom_push=True, security_context={"runAsUser": 1000})

    policy_mode("enforce")
    sidecar(stack.env["IMAGEGATE_BUSYBOX_IMAGE"])  # by tag; runs as the pod's user 1000
    base, side = plain().build_pod_request_obj(dry_run=True).spec.containers
    assert base.image == f"{stack.registry}/{repo}@{digest}"
    assert side.image == stack.env["IMAGEGATE_BUSYBOX_IMAGE_DIGEST"] and side.image_pull_policy == "IfNotPresent"
    sidecar(f"{stack.registry}/{repo}:latest")
    with pytest.raises(ImageRefused) as caught:
        plain().build_pod_request_obj(dry_run=True)
    assert caught.value.role == "XCom sidecar" and "xcom_sidecar_container_image" in str(caught.value)
    # imagegate's own operator checks its pod itself; while it has the provider build that pod (which calls the
    # hook at the end) the hook leaves it alone (cluster_policy.gated_build: no mark on the pod, which any
    # operator's annotations= could forge), so the same images are not checked twice.
    sidecar(stack.env["IMAGEGATE_BUSYBOX_IMAGE"])
    with caplog.at_level(logging.INFO, logger="airflow_plugin.cluster_policy"):
        plain().build_pod_request_obj(dry_run=True)
        assert any("[XCom sidecar]" in r.getMessage() for r in caplog.records if r.name == "airflow_plugin.cluster_policy")
        caplog.clear()
        op = ImagegateKubernetesPodOperator(task_id="y", image=f"{stack.registry}/{repo}:7.1.0", namespace="jobs", do_xcom_push=True)
        op.build_pod_request_obj(dry_run=True)
        assert op.imagegate_sidecar_report is not None and op.imagegate_sidecar_report.passed
        assert [r.getMessage() for r in caplog.records if r.name == "airflow_plugin.cluster_policy"] == []
    policy_mode("warn")
    sidecar(f"{stack.registry}/{repo}:latest")
    base, side = plain().build_pod_request_obj(dry_run=True).spec.containers
    assert side.image.startswith(f"{stack.registry}/{repo}@sha256:")  # warn: logged, still pinned


def test_docs_example_is_current() -> None:
    text = Path(__file__).resolve().parents[2].joinpath("docs", "airflow.md").read_text()
    assert "AIRFLOW__IMAGEGATE__CLUSTER_POLICY=enforce" in text and "cluster_policy = enforce" in text
    assert "off (default) | warn | enforce" in text
