"""Fixtures for the Dagster integration tests.

Reuses the stack fixtures of ``tests/integration/conftest.py`` (``stack``,
``docker_client``): tests marked ``integration`` need the local stack
(``python scripts/stack.py up``); under ``CI=true`` a missing stack fails.

Images: the example job (``example_dags/jobs/wordcount``) is built FROM the
digest-pinned local python base and pushed under an immutable tag; a root
busybox image is pushed under ``latest`` for the refusal tests. Each test gets
its own ``DAGSTER_HOME`` under /tmp.
"""

from __future__ import annotations

import importlib
import io
import os
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest

try:
    import dagster  # noqa: F401
except ImportError:  # the `dagster` extra is not installed: skip this folder, except under CI
    if os.environ.get("CI", "").lower() == "true":
        raise
    collect_ignore_glob = ["test_*.py"]

from tests.integration.conftest import Stack, _unavailable, build_and_push, docker_client, stack, unique  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
WORDCOUNT = ROOT / "example_dags" / "jobs" / "wordcount"


@pytest.fixture()
def dagster_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="dagster-home-") as home:
        monkeypatch.setenv("DAGSTER_HOME", home)
        Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        yield Path(home)


def load_component_defs(tmp_path: Path, attributes: str, component: str = "etl") -> Any:
    """Write a defs folder with one ``ContainerAssetComponent`` defs.yaml (*attributes*, YAML) and
    load it as dagster does; returns the ``dg.Definitions``."""
    import dagster as dg

    package = tmp_path / f"defs_{abs(hash(attributes)) % 10**8}"
    (package / component).mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / component / "defs.yaml").write_text(
        "type: dagster_integration.components.ContainerAssetComponent\nattributes:\n"
        + textwrap.indent(textwrap.dedent(attributes).strip(), "  ")
        + "\n"
    )
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module(package.name)
        return dg.ComponentTree.from_module(defs_module=module, project_root=tmp_path).build_defs()
    finally:
        sys.path.remove(str(tmp_path))


def push(docker_client: Any, stack: Stack, local: str, repository: str, tag: str) -> str:
    """Tag *local* as REGISTRY/repository:tag, push it, return REF:TAG@DIGEST."""
    name = f"{stack.registry}/{repository}"
    docker_client.images.get(local).tag(name, tag=tag)
    digest = None
    for line in docker_client.images.push(name, tag=tag, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(line["error"])
        digest = (line.get("aux") or {}).get("Digest", digest)
    assert digest, "docker push reported no digest"
    docker_client.images.remove(f"{name}:{tag}", noprune=True)  # launches pull by digest, as in production
    return f"{name}:{tag}@{digest}"


@pytest.fixture(scope="session")
def wordcount_image(stack: Stack, docker_client: Any) -> str:
    """The example job built from its directory and pushed; returns ``REPO:TAG`` (immutable tag)."""
    base = stack.env.get("IMAGEGATE_PYTHON_IMAGE_DIGEST")
    if not base:
        _unavailable("the python base image (IMAGEGATE_PYTHON_IMAGE_DIGEST)")
    tag = "0.1.0-" + unique("dg").split("-")[1]
    local = f"imagegate-test/wordcount:{tag}"
    docker_client.images.build(path=str(WORDCOUNT), tag=local, buildargs={"BASE": base}, rm=True, pull=False)
    pinned = push(docker_client, stack, local, "dagster/wordcount", tag)
    docker_client.images.remove(local, noprune=True)
    return pinned.split("@")[0]


@pytest.fixture(scope="session")
def rooty_image(stack: Stack, docker_client: Any) -> str:
    """A busybox image with no USER (root), pushed as ``:latest`` — fails pinned and non-root."""
    repository = f"dagster/{unique('rooty')}"
    build_and_push(docker_client, stack, "FROM {base}\nCMD [\"echo\", \"hello from root\"]\n", repository, "latest")
    return f"{stack.registry}/{repository}:latest"


def engine_containers(docker_client: Any, image_prefix: str) -> list[Any]:
    """Every container (running or not) whose image reference starts with *image_prefix*."""
    return [c for c in docker_client.containers.list(all=True) if (c.attrs.get("Config", {}).get("Image") or "").startswith(image_prefix)]


PIPES_JOB = '''\
"""Report through Dagster Pipes from inside the container (dagster-pipes copied in)."""
from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    pipes.log.info("hello from inside the container")
    pipes.report_asset_materialization(metadata={"rows": 3})
    pipes.report_asset_check(check_name="row_count", passed=True, metadata={"rows": 3})
'''


@pytest.fixture(scope="session")
def pipes_image(stack: Stack, docker_client: Any, wordcount_image: str) -> str:
    """The example job image plus ``dagster_pipes`` (copied from this environment: it is pure
    Python with no dependencies, so no network is needed in the build) and a Pipes job."""
    import dagster_pipes

    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        dockerfile = (
            f"FROM {wordcount_image}\n"
            "COPY dagster_pipes /usr/local/lib/python3.11/dist-packages/dagster_pipes\n"
            "COPY pipes_job.py /app/pipes_job.py\n"
            'ENTRYPOINT ["python3", "/app/pipes_job.py"]\n'
        )
        for name, data in (("Dockerfile", dockerfile.encode()), ("pipes_job.py", PIPES_JOB.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        package = Path(dagster_pipes.__file__).parent
        for file in sorted(package.glob("*.py")) + [package / "py.typed"]:
            tar.add(str(file), arcname=f"dagster_pipes/{file.name}")
    context.seek(0)
    tag = "1.13.27-" + unique("p").split("-")[1]
    local = f"imagegate-test/pipes:{tag}"
    docker_client.images.build(fileobj=context, custom_context=True, tag=local, rm=True, pull=False)
    pinned = push(docker_client, stack, local, "dagster/pipes-job", tag)
    docker_client.images.remove(local, noprune=True)
    return pinned.split("@")[0]


def job_words() -> int:
    """What the example job prints as "words" when it counts its own source (its default input).

    Computed from the file as the job computes it, so an edit to the job does not break the tests. The
    file is ASCII, so the job's unidecode folding changes nothing.
    """
    import re

    text = (ROOT / "example_dags" / "jobs" / "wordcount" / "job.py").read_text(encoding="utf-8")
    assert text.isascii(), "the example job's source must stay ASCII for this count"
    return len(re.findall(r"[a-z']+", text.lower()))
