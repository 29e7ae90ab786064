"""Fixtures for tests against the real local stack started by ``scripts/stack.py up``.

Each test here needs the Docker Engine and/or the registries. Where they are
missing the tests skip — except under ``CI=true``, where a missing stack is a
failure that says how to start it.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
START_HINT = "start it with: python scripts/stack.py up   (or run the README's test command)"


def _unavailable(what: str) -> None:
    message = f"{what} is not available; {START_HINT}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@dataclass(frozen=True)
class Stack:
    registry: str  # 127.0.0.1:PORT, plain http
    access_log: Path
    auth_registry: str  # 127.0.0.1:PORT, https + basic auth
    auth_user: str
    auth_password: str
    auth_ca: Path
    busybox: str  # registry reference of the busybox base image
    busybox_local: str  # local engine tag of the same image
    python: str | None
    env: dict[str, str]
    token_registry: str | None = None  # 127.0.0.1:PORT, https + bearer tokens (test_token_registry.py)
    token_ca: Path | None = None
    token_issuer_log: Path | None = None  # one JSON line per token request

    @property
    def registry_url(self) -> str:
        return f"http://{self.registry}"


@pytest.fixture(scope="session")
def stack() -> Stack:
    state = Path(os.environ.get("IMAGEGATE_STACK_DIR", "/tmp/imagegate-stack")) / "stack.json"
    if not state.is_file():
        _unavailable(f"the local stack ({state})")
    env: dict[str, str] = json.loads(state.read_text())["env"]
    try:
        httpx.get(f"http://{env['IMAGEGATE_REGISTRY']}/v2/", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        _unavailable(f"the registry at {env['IMAGEGATE_REGISTRY']} ({exc})")
    return Stack(
        registry=env["IMAGEGATE_REGISTRY"],
        access_log=Path(env.get("IMAGEGATE_REGISTRY_ACCESS_LOG") or env["IMAGEGATE_REGISTRY_LOG"]),
        auth_registry=env["IMAGEGATE_AUTH_REGISTRY"],
        auth_user=env["IMAGEGATE_AUTH_USER"],
        auth_password=env["IMAGEGATE_AUTH_PASSWORD"],
        auth_ca=Path(env["IMAGEGATE_AUTH_CA"]),
        busybox=env["IMAGEGATE_BUSYBOX_IMAGE"],
        busybox_local=env["IMAGEGATE_BUSYBOX_LOCAL_IMAGE"],
        python=env.get("IMAGEGATE_PYTHON_IMAGE") or None,
        env=env,
        token_registry=env.get("IMAGEGATE_TOKEN_REGISTRY") or None,
        token_ca=Path(env["IMAGEGATE_TOKEN_CA"]) if env.get("IMAGEGATE_TOKEN_CA") else None,
        token_issuer_log=Path(env["IMAGEGATE_TOKEN_ISSUER_LOG"]) if env.get("IMAGEGATE_TOKEN_ISSUER_LOG") else None,
    )


@pytest.fixture(scope="session")
def docker_client(stack: Stack) -> Iterator[Any]:
    import docker

    try:
        client = docker.DockerClient(base_url=stack.env.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
        client.ping()
    except Exception as exc:  # docker raises several unrelated types here
        _unavailable(f"the Docker Engine ({exc})")
    yield client
    client.close()


def unique(prefix: str = "it") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def build_and_push(docker_client: Any, stack: Stack, dockerfile: str, repository: str, tag: str) -> str:
    """Build *dockerfile* (FROM the local busybox), push it, return the digest `docker push` reported."""
    fileobj = io.BytesIO(dockerfile.format(base=stack.busybox_local).encode())
    name = f"{stack.registry}/{repository}"
    docker_client.images.build(fileobj=fileobj, tag=f"{name}:{tag}", rm=True, pull=False)
    digest = None
    for line in docker_client.images.push(name, tag=tag, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(line["error"])
        digest = (line.get("aux") or {}).get("Digest", digest)
    assert digest, "docker push reported no digest"
    docker_client.images.remove(f"{name}:{tag}", noprune=True)
    return digest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imagegate", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=120,
    )
