"""The registry client against real CNCF distribution registries and a real Docker Engine."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

import imagegate
from imagegate import DigestMismatch, DockerConfig, Platform, RegistryClient, parse_reference
from tests.integration.conftest import Stack, build_and_push, unique
from tests.support.oci import make_image, make_index, platform_of
from tests.support.push import push_image, push_index

pytestmark = pytest.mark.integration


def test_resolved_digest_equals_what_docker_push_reported(stack: Stack, docker_client: Any) -> None:
    repo = unique("etl")
    pushed = build_and_push(docker_client, stack, "FROM {base}\nUSER 1000\nCMD [\"id\"]\n", repo, "1.0.0")
    with RegistryClient() as client:
        pinned = imagegate.resolve(f"{stack.registry}/{repo}:1.0.0", client=client)
        facts = imagegate.inspect(f"{stack.registry}/{repo}:1.0.0", client=client)
    assert pinned.digest == pushed == facts.digest
    assert facts.user == "1000" and facts.cmd == ("id",)
    assert facts.media_type == "application/vnd.docker.distribution.manifest.v2+json"


def test_two_platform_index_pins_the_index_and_reads_each_platform(stack: Stack) -> None:
    repo = unique("multi")
    index = make_index(
        [
            (platform_of("linux", "amd64"), make_image(user="1000")),
            (platform_of("linux", "arm64", "v8"), make_image(user="2000", architecture="arm64", variant="v8")),
        ],
        attest=True,
    )
    index_digest = push_index(stack.registry_url, repo, index, tag="2.0.0")
    ref = parse_reference(f"{stack.registry}/{repo}:2.0.0")
    with RegistryClient() as client:
        assert client.resolve(ref).digest == index_digest
        amd = client.inspect(ref)
        arm = client.inspect(ref, Platform.parse("linux/arm64"))
    assert amd.digest == arm.digest == index_digest
    assert (amd.user, arm.user) == ("1000", "2000")
    assert arm.manifest_digest == index.image_for("linux", "arm64", "v8").digest


class _Tamper(http.server.BaseHTTPRequestHandler):
    """A proxy in front of the real registry that re-serialises JSON bodies (same meaning, other bytes)."""

    upstream = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        response = httpx.get(self.upstream + self.path, headers={k: v for k, v in self.headers.items() if k.lower() == "accept"})
        body = response.content
        if "/manifests/" in self.path and response.status_code == 200:
            body = json.dumps(json.loads(body), separators=(",", ":")).encode()
        self.send_response(response.status_code)
        for key in ("Content-Type", "Docker-Content-Digest"):
            if key in response.headers:
                self.send_header(key, response.headers[key])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tampering_proxy(stack: Stack) -> Iterator[str]:
    handler = type("Handler", (_Tamper,), {"upstream": stack.registry_url})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_bytes_altered_in_transit_are_refused(stack: Stack, tampering_proxy: str) -> None:
    repo = unique("tamper")
    digest = push_image(stack.registry_url, repo, make_image(user="1000"), tag="1.0.0")
    with RegistryClient() as client:
        with pytest.raises(DigestMismatch) as by_tag:
            client.inspect(parse_reference(f"{tampering_proxy}/{repo}:1.0.0"))
        with pytest.raises(DigestMismatch) as by_digest:
            client.inspect(parse_reference(f"{tampering_proxy}/{repo}@{digest}"))
    assert by_tag.value.expected == by_digest.value.expected == digest


def test_basic_auth_over_tls_from_docker_config(stack: Stack, tmp_path: Path) -> None:
    repo = unique("private")
    digest = push_image(
        f"https://{stack.auth_registry}", repo, make_image(user="1000"), tag="1.0.0",
        auth=(stack.auth_user, stack.auth_password), verify=str(stack.auth_ca),
    )
    import base64

    token = base64.b64encode(f"{stack.auth_user}:{stack.auth_password}".encode()).decode()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {stack.auth_registry: {"auth": token}}}))
    ref = parse_reference(f"{stack.auth_registry}/{repo}:1.0.0")
    with RegistryClient(docker_config=DockerConfig.load(config), ca_file=stack.auth_ca) as client:
        facts = client.inspect(ref)
    assert facts.digest == digest and facts.user == "1000"
    with RegistryClient(docker_config=DockerConfig({}), ca_file=stack.auth_ca) as anonymous:
        with pytest.raises(imagegate.AuthenticationError):
            anonymous.inspect(ref)


def test_docker_certs_d_directory_is_trusted(stack: Stack, tmp_path: Path) -> None:
    import base64

    repo = unique("certsd")
    push_image(f"https://{stack.auth_registry}", repo, make_image(user="7"), tag="1.0.0",
               auth=(stack.auth_user, stack.auth_password), verify=str(stack.auth_ca))
    (tmp_path / "certs.d" / stack.auth_registry).mkdir(parents=True)
    (tmp_path / "certs.d" / stack.auth_registry / "ca.crt").write_bytes(stack.auth_ca.read_bytes())
    token = base64.b64encode(f"{stack.auth_user}:{stack.auth_password}".encode()).decode()
    config = DockerConfig({"auths": {stack.auth_registry: {"auth": token}}})
    with RegistryClient(docker_config=config, certs_dir=tmp_path / "certs.d") as client:
        assert client.inspect(parse_reference(f"{stack.auth_registry}/{repo}:1.0.0")).user == "7"
