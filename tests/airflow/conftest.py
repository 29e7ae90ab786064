"""Fixtures for the Airflow integration: a real Airflow home (SQLite, ``airflow db migrate``),
``airflow dags test`` in a subprocess, images pushed to the local stack, and engine events.

Reuses the stack fixtures of tests/integration (``stack``, ``docker_client``); without the
stack these tests skip, except under CI=true where they fail and say how to start it.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.conftest import Stack, build_and_push, docker_client, stack, unique  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = Path(sys.executable).with_name("airflow")

# Airflow reads AIRFLOW_HOME when first imported: point this process at a throw-away home (never ~/airflow).
_HOME = Path(os.environ.get("IMAGEGATE_TEST_AIRFLOW_HOME") or f"/tmp/airflow-home-tests-{os.getpid()}")
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
_HOME.mkdir(parents=True, exist_ok=True)


@dataclass
class AirflowHome:
    home: Path
    env: dict[str, str]

    def run(self, *args: str, dags: Path, extra_env: dict[str, str] | None = None, timeout: int = 240) -> subprocess.CompletedProcess[str]:
        """Run the ``airflow`` CLI with this home and DAGs folder; output is kept for assertions."""
        env = {**self.env, "AIRFLOW__CORE__DAGS_FOLDER": str(dags), **(extra_env or {})}
        return subprocess.run([str(AIRFLOW), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)

    def dags_test(self, dag_id: str, dags: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.run("dags", "test", dag_id, dags=dags, extra_env=extra_env)


@pytest.fixture(scope="session")
def airflow_home(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AirflowHome:
    """A migrated SQLite Airflow home; the stack's variables are in its environment."""
    env = {
        **os.environ,
        **stack.env,
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "IMAGEGATE_EXAMPLE_DATA": str(tmp_path_factory.mktemp("example-data")),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("IMAGEGATE_BACKEND", None)
    env.pop("AIRFLOW__IMAGEGATE__CLUSTER_POLICY", None)
    home = AirflowHome(_HOME, env)
    result = home.run("db", "migrate", dags=ROOT / "example_dags")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return home


@pytest.fixture(scope="session")
def wordcount(stack: Stack) -> str:
    """The example job built FROM the python base and pushed (``imagegate.build_image``); its pinned reference."""
    import imagegate

    if not stack.env.get("IMAGEGATE_PYTHON_IMAGE_DIGEST"):
        pytest.skip("the stack has no python base image")
    result = imagegate.build_image(
        ROOT / "example_dags" / "jobs" / "wordcount",
        repository=f"{stack.registry}/examples/wordcount",
        build_args={"BASE": stack.env["IMAGEGATE_PYTHON_IMAGE_DIGEST"]},
    )
    return str(result.pinned)


@pytest.fixture(scope="session")
def rooty(stack: Stack, docker_client: Any) -> dict[str, str]:
    """The refused images of example_dags/refused.py: a root image as ``:latest`` and as ``:1.0.0``."""
    repo = "examples/rooty"
    dockerfile = 'FROM {base}\nCMD ["id"]\n'
    return {tag: build_and_push(docker_client, stack, dockerfile, repo, tag) for tag in ("latest", "1.0.0")}


class Events:
    """Container events the engine reported between two points in time."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)

    def containers(self, image_substring: str, action: str = "create", task: str | None = None) -> list[dict[str, Any]]:
        """Events for containers whose image contains *image_substring* (and, given *task*, labelled DAG.TASK)."""
        until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
        time.sleep(1.1)  # events are reported with second resolution
        found = []
        for event in self.client.events(since=self.since, until=until, decode=True, filters={"type": "container", "event": action}):
            attributes = (event.get("Actor") or {}).get("Attributes", {})
            if image_substring in attributes.get("image", "") and (task is None or attributes.get("imagegate.dev/task") == task):
                found.append(event)
        return found


@pytest.fixture
def events(docker_client: Any) -> Events:
    return Events(docker_client)


def push_image(docker_client: Any, stack: Stack, repository: str, tag: str, marker: str, user: str = "1000") -> str:
    """Build a busybox image that prints *marker*, push it under *tag*, return its digest."""
    dockerfile = f'FROM {{base}}\nUSER {user}\nLABEL marker={marker}\nCMD ["echo", "{marker}"]\n'
    return build_and_push(docker_client, stack, dockerfile, repository, tag)


def local_build(docker_client: Any, stack: Stack, reference: str, marker: str) -> str:
    """Build a busybox image tagged *reference* in the engine only (not pushed); its image id."""
    dockerfile = f'FROM {stack.busybox_local}\nUSER 1000\nCMD ["echo", "{marker}"]\n'
    image, _ = docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=reference, rm=True, pull=False)
    return str(image.id)


@pytest.fixture
def repo() -> str:
    return unique("airflow")


@pytest.fixture
def stack_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    yield stack.env
