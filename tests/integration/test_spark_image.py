"""The Spark image built by scripts/localstack/spark_parts.py (``imagegate/spark:4.3.0-bookworm``), run by the real
Docker Engine: the word count baked into it gives the counts Python computes from the same text, as the non-root
numeric user, through ``spark-submit`` directly and through the entrypoint's ``driver`` contract, without network.

Part of ``make test`` (scripts/test.sh sets ``IMAGEGATE_K8S_SPARK=1``, so the Spark parts are built there anyway):

    CI=true .venv/bin/python -m pytest tests/integration/test_spark_image.py -q

The image is built on first use (minutes and ~1 GB once; a cache hit afterwards); under CI=true a missing Docker
Engine or an image that cannot be built is a failure, elsewhere a skip. ``-m spark`` selects the Spark tests.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.conftest import _unavailable

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.timeout(1800)]  # the first build

ROOT = Path(__file__).resolve().parents[2]
WORDS = ROOT / "scripts" / "localstack" / "spark" / "words.txt"
JOB = "/opt/spark/work-dir/wordcount.py"


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    import docker

    try:
        client = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
        client.ping()
    except Exception as exc:  # docker raises several unrelated types here
        _unavailable(f"the Docker Engine ({exc})")
    yield client
    client.close()


@pytest.fixture(scope="module")
def image(engine: Any) -> str:
    from localstack import spark_parts
    from localstack.host import StackError

    try:
        return spark_parts.ensure_spark_image()  # the engine at $DOCKER_HOST, as the fixture above
    except StackError as exc:
        _unavailable(f"the Spark image ({exc})")
    raise AssertionError("unreachable")


def run(engine: Any, image: str, *command: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run *command* in *image* with no network (hostname localhost, so the JVM can resolve it)."""
    container = engine.containers.run(image, list(command), environment=env or {}, network_mode="none",
                                      hostname="localhost", detach=True)
    try:
        status = container.wait(timeout=300)["StatusCode"]
        out = container.logs(stdout=True, stderr=False).decode()
        err = container.logs(stdout=False, stderr=True).decode()
    finally:
        container.remove(force=True)
    return status, out, err


def expected_counts(text: str) -> dict[str, int]:
    return dict(collections.Counter(text.lower().split()))


def job_counts(stdout: str) -> dict[str, int]:
    counts = {}
    for line in stdout.splitlines():
        word, sep, count = line.partition("\t")
        if sep:
            counts[word] = int(count)
    return counts


def test_the_image_runs_as_the_numeric_non_root_user(engine, image):
    config = engine.images.get(image).attrs["Config"]
    assert config["User"] == "185:185"
    assert config["Entrypoint"] == ["/opt/entrypoint.sh"]
    status, out, _ = run(engine, image, "sh", "-c", "id -u; id -g; find / -xdev -perm /6000 -type f | wc -l")
    assert status == 0
    assert out.split() == ["185", "185", "0"]  # and no setuid/setgid file to escalate through
    status, _, err = run(engine, image, "touch", "/opt/spark/jars/x")
    assert status != 0 and "Permission denied" in err  # the Spark home is read-only for the user


def test_the_baked_in_text_is_the_repository_one(engine, image):
    status, out, _ = run(engine, image, "cat", "/opt/spark/work-dir/words.txt")
    assert status == 0 and out == WORDS.read_text()


def test_spark_submit_counts_the_words(engine, image):
    status, out, err = run(engine, image, "/opt/spark/bin/spark-submit", "--master", "local[2]", JOB)
    assert status == 0, err[-3000:]
    expected = expected_counts(WORDS.read_text())
    assert job_counts(out) == expected
    assert f"wordcount: {len(expected)} distinct words, {sum(expected.values())} in all" in out


def test_the_driver_contract_runs_spark_submit_in_client_mode(engine, image):
    status, out, err = run(engine, image, "driver", "--master", "local[2]", JOB,
                           env={"SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1"})
    assert status == 0, err[-3000:]
    assert job_counts(out) == expected_counts(WORDS.read_text())


def test_the_executor_contract_refuses_to_start_without_its_variables(engine, image):
    status, out, err = run(engine, image, "executor", env={"SPARK_EXECUTOR_MEMORY": "512m"})
    assert status == 64 and out == ""
    assert "SPARK_DRIVER_URL is not set" in err
