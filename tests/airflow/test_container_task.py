"""ContainerTask: the backend setting, the option mapping, refusals, and lazy provider imports.

No engine or registry needed: nothing here launches or resolves anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_plugin import BackendOptionError, ContainerTask, backend_setting

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "registry.example.com/jobs/etl:1.4.2"


@pytest.fixture(autouse=True)
def _clean_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGEGATE_BACKEND", raising=False)
    monkeypatch.delenv("AIRFLOW__IMAGEGATE__BACKEND", raising=False)


def test_docker_is_the_default_and_the_environment_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    assert type(ContainerTask(task_id="a", image=IMAGE)).__name__ == "ImagegateDockerOperator"
    monkeypatch.setenv("IMAGEGATE_BACKEND", "kubernetes")
    assert backend_setting() == "kubernetes"
    assert type(ContainerTask(task_id="b", image=IMAGE)).__name__ == "ImagegateKubernetesPodOperator"
    monkeypatch.setenv("AIRFLOW__IMAGEGATE__BACKEND", "kubernetes")
    monkeypatch.setenv("IMAGEGATE_BACKEND", "docker")  # the environment wins over the config
    assert backend_setting() == "docker"
    monkeypatch.setenv("IMAGEGATE_BACKEND", "podman")
    with pytest.raises(Exception, match="IMAGEGATE_BACKEND = 'podman' is not a backend"):
        ContainerTask(task_id="c", image=IMAGE)


def test_shared_options_map_to_docker() -> None:
    op = ContainerTask(task_id="d", image=IMAGE, command=["x"], entrypoint="sh", environment={"A": "1"}, user="1000", retries=2)
    assert (op.command, op.entrypoint, op.environment, op.user, op.retries) == (["x"], "sh", {"A": "1"}, "1000", 2)


@pytest.mark.parametrize(
    ("backend", "option", "value", "hint"),
    [
        ("kubernetes", "mounts", [], "volume_mounts"),
        ("kubernetes", "network_mode", "host", "pods use the cluster network"),
        ("docker", "volumes", [], "mounts"),
        ("docker", "namespace", "jobs", "Docker has no namespaces"),
        ("docker", "env_vars", {}, "environment="),
    ],
)
def test_an_option_of_the_other_backend_is_refused_by_name(backend: str, option: str, value: object, hint: str) -> None:
    with pytest.raises(BackendOptionError) as caught:
        ContainerTask(task_id="e", image=IMAGE, backend=backend, **{option: value})
    assert caught.value.option == option and caught.value.backend == backend
    assert f"{option!r} is not a {backend}-backend option" in str(caught.value) and hint in str(caught.value)


def test_backend_options_apply_only_on_their_backend() -> None:
    docker = ContainerTask(
        task_id="f", image=IMAGE, backend="docker",
        docker_options={"mounts": [{"source": "/tmp", "target": "/data", "type": "bind"}]},
        kubernetes_options={"namespace": "jobs"},
    )
    assert docker.mounts and not hasattr(docker, "namespace")
    with pytest.raises(BackendOptionError, match="'mount' is not a docker-backend option"):
        ContainerTask(task_id="g", image=IMAGE, backend="docker", docker_options={"mount": []})


def test_a_user_name_is_refused_on_kubernetes() -> None:
    with pytest.raises(BackendOptionError, match="numeric UID"):
        ContainerTask(task_id="h", image=IMAGE, backend="kubernetes", user="app")


def _imports(code: str, env: dict[str, str] | None = None) -> list[str]:
    script = code + "\nimport sys, json\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith(('airflow.providers', 'kubernetes')))))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _kubernetes(modules: list[str]) -> set[str]:
    return {m for m in modules if m.startswith(("airflow.providers.cncf", "kubernetes"))}


def test_the_docker_backend_never_imports_the_kubernetes_provider() -> None:
    # Airflow itself reads every installed provider's metadata (get_provider_info, exceptions) when it
    # loads its config; a plain DockerOperator pays that too. Nothing beyond it may load: no operator,
    # no pod generator, no kubernetes client.
    baseline = _kubernetes(_imports("from airflow.providers.docker.operators.docker import DockerOperator\n"
                                    "DockerOperator(task_id='x', image='a:1')"))
    assert "kubernetes" not in baseline and "airflow.providers.cncf.kubernetes.operators.pod" not in baseline
    modules = _imports(f"from airflow_plugin import ContainerTask\nContainerTask(task_id='x', image={IMAGE!r})")
    assert "airflow.providers.docker.operators.docker" in modules
    assert _kubernetes(modules) <= baseline, sorted(_kubernetes(modules) - baseline)
    modules = _imports("import airflow_plugin.docker, airflow_plugin.plugin, airflow_plugin.cluster_policy")
    assert _kubernetes(modules) <= baseline, sorted(_kubernetes(modules) - baseline)


def test_the_kubernetes_backend_imports_it_only_when_chosen() -> None:
    modules = _imports(f"from airflow_plugin import ContainerTask\nContainerTask(task_id='x', image={IMAGE!r})", {"IMAGEGATE_BACKEND": "kubernetes"})
    assert "airflow.providers.cncf.kubernetes.operators.pod" in modules


def test_the_configured_backend_loads_with_the_import_and_a_bad_one_fails_at_the_call() -> None:
    # Loaded while the DAG file imports ContainerTask, like a plain DAG's top-level import (see
    # task._preload_configured_backend), so the first ContainerTask(...) inside `with DAG` imports nothing.
    modules = _imports("from airflow_plugin import ContainerTask", {"IMAGEGATE_BACKEND": "docker"})
    assert "airflow.providers.docker.operators.docker" in modules and not _kubernetes(modules) & {"airflow.providers.cncf.kubernetes.operators.pod"}
    modules = _imports("from airflow_plugin import ContainerTask", {"IMAGEGATE_BACKEND": "kubernetes"})
    assert "airflow.providers.cncf.kubernetes.operators.pod" in modules
    code = (f"from airflow_plugin import ContainerTask\ntry:\n    ContainerTask(task_id='x', image={IMAGE!r})\n"
            "except Exception as exc:\n    print(exc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "IMAGEGATE_BACKEND": "podman"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "IMAGEGATE_BACKEND = 'podman' is not a backend; use 'docker' or 'kubernetes'" in out.stdout


def test_a_variable_is_read_only_when_the_config_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_plugin import task

    monkeypatch.setenv("AIRFLOW_VAR_IMAGEGATE_BACKEND", "kubernetes")
    task._variable_backend.cache_clear()
    assert backend_setting() == "docker"  # not consulted by default: no metadata-DB query at parse time
    monkeypatch.setenv("AIRFLOW__IMAGEGATE__BACKEND", "variable:imagegate_backend")
    assert backend_setting() == "kubernetes"
    task._variable_backend.cache_clear()
