"""RegistryClient against the in-process fake registry (tests/support/fakeregistry.py)."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from pathlib import Path

import httpx
import pytest

from imagegate import (
    AuthenticationError,
    CredentialError,
    DigestMismatch,
    DockerConfig,
    InsecureRegistry,
    ManifestUnknown,
    Platform,
    PlatformNotFound,
    RegistryClient,
    RegistryError,
    UnsupportedManifest,
    parse_reference,
)
from tests.support.fakeregistry import FakeRegistry
from tests.support.oci import OCI_MANIFEST, make_image, make_index, make_schema1, platform_of

AMD64 = platform_of("linux", "amd64")
ARM64 = platform_of("linux", "arm64", "v8")


def client_for(registry: FakeRegistry, config: dict | None = None, **kwargs) -> RegistryClient:
    sleeps: list[float] = []
    client = RegistryClient(
        transport=registry.transport, docker_config=DockerConfig(config or {}), sleep=sleeps.append, **kwargs
    )
    client.sleeps = sleeps  # type: ignore[attr-defined]
    return client


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry(negotiation="distribution")  # serves what distribution 2.8 serves for our Accept list


@pytest.mark.parametrize("oci", [True, False], ids=["oci", "docker-schema2"])
def test_inspect_single_image_reads_config_and_pins_manifest_digest(registry: FakeRegistry, oci: bool) -> None:
    image = make_image(user="1000", env={"SECRET_TOKEN": "hunter2"}, cmd=["python", "-m", "job"], labels={"a": "b"}, oci=oci)
    digest = registry.put_image("team/etl", image, tag="1.4.2")
    facts = client_for(registry).inspect(parse_reference("registry.test/team/etl:1.4.2"))
    assert facts.digest == digest == facts.manifest_digest
    assert facts.config_digest == image.config.digest
    assert facts.user == "1000"
    assert facts.cmd == ("python", "-m", "job")
    assert facts.labels == {"a": "b"}
    assert facts.env_names == ("SECRET_TOKEN",)
    assert "hunter2" not in json.dumps(facts.to_dict())
    assert str(facts.pinned) == f"registry.test/team/etl:1.4.2@{digest}"
    assert registry.count("GET", "manifests") == 1
    assert registry.count("GET", "blobs") == 1


def test_index_pins_index_digest_and_reads_requested_platform(registry: FakeRegistry) -> None:
    index = make_index([(AMD64, make_image(user="1000")), (ARM64, make_image(user="2000", architecture="arm64", variant="v8"))], attest=True)
    index_digest = registry.put_index("team/etl", index, tag="1.0.0")
    client = client_for(registry)
    amd = client.inspect(parse_reference("registry.test/team/etl:1.0.0"))
    arm = client.inspect(parse_reference("registry.test/team/etl:1.0.0"), Platform.parse("linux/arm64"))
    assert amd.digest == arm.digest == index_digest
    assert amd.user == "1000" and arm.user == "2000"
    assert amd.manifest_digest == index.image_for("linux", "amd64").digest
    assert arm.manifest_digest == index.image_for("linux", "arm64", "v8").digest
    assert [str(p) for p in amd.platforms] == ["linux/amd64", "linux/arm64/v8"]  # attestations skipped


def test_missing_platform_names_the_available_ones(registry: FakeRegistry) -> None:
    registry.put_index("team/etl", make_index([(AMD64, make_image(user="1"))]), tag="1.0.0")
    with pytest.raises(PlatformNotFound) as info:
        client_for(registry).inspect(parse_reference("registry.test/team/etl:1.0.0"), Platform.parse("linux/s390x"))
    assert info.value.available == ("linux/amd64",)
    assert "linux/s390x" in str(info.value)


def test_single_image_of_another_architecture_is_refused(registry: FakeRegistry) -> None:
    registry.put_image("team/etl", make_image(user="1", architecture="arm64"), tag="1.0.0")
    with pytest.raises(PlatformNotFound):
        client_for(registry).inspect(parse_reference("registry.test/team/etl:1.0.0"))


def test_thousand_checks_cost_one_manifest_and_one_config_request(registry: FakeRegistry) -> None:
    registry.put_image("team/etl", make_image(user="1000"), tag="1.4.2")
    client = client_for(registry)
    ref = parse_reference("registry.test/team/etl:1.4.2")
    for _ in range(1000):
        client.inspect(ref)
    assert (registry.count(kind="manifests"), registry.count(kind="blobs")) == (1, 1)


def test_concurrent_resolutions_share_one_request(registry: FakeRegistry) -> None:
    registry.put_image("team/etl", make_image(user="1000"), tag="1.4.2")
    registry.delay = 0.05  # keep the first request in flight while the others arrive
    client = client_for(registry)
    ref = parse_reference("registry.test/team/etl:1.4.2")
    barrier = threading.Barrier(16)
    results = []

    def work() -> None:
        barrier.wait()
        results.append(client.inspect(ref).digest)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 16
    assert (registry.count(kind="manifests"), registry.count(kind="blobs")) == (1, 1)


def test_resolve_is_one_head_request(registry: FakeRegistry) -> None:
    digest = registry.put_image("team/etl", make_image(user="1000"), tag="1.4.2")
    client = client_for(registry)
    assert client.resolve(parse_reference("registry.test/team/etl:1.4.2")).digest == digest
    assert registry.count() == 1 and registry.count("HEAD", "manifests") == 1


def test_moved_tag_is_seen_after_ttl_with_a_head(registry: FakeRegistry) -> None:
    first = registry.put_image("team/etl", make_image(user="1000"), tag="stable")
    second = registry.put_image("team/etl", make_image(user="2000"))
    client = client_for(registry, tag_ttl=0)
    ref = parse_reference("registry.test/team/etl:stable")
    assert client.inspect(ref).digest == first
    registry.move_tag("team/etl", "stable", second)
    registry.reset_requests()
    moved = client.inspect(ref)
    assert moved.digest == second and moved.user == "2000"
    assert registry.count("HEAD", "manifests") == 1


def test_digest_reference_is_fetched_by_digest(registry: FakeRegistry) -> None:
    digest = registry.put_image("team/etl", make_image(user="1000"))
    facts = client_for(registry).inspect(parse_reference(f"registry.test/team/etl@{digest}"))
    assert facts.digest == digest
    assert all(digest in r.path or "/blobs/" in r.path for r in registry.requests)


@pytest.mark.parametrize("what", ["manifest", "config"])
def test_bytes_that_do_not_match_their_digest_are_refused(registry: FakeRegistry, what: str) -> None:
    image = make_image(user="1000")
    registry.put_image("team/etl", image, tag="1.0.0")
    registry.corrupt(image.digest if what == "manifest" else image.config.digest)
    with pytest.raises(DigestMismatch) as info:
        client_for(registry).inspect(parse_reference("registry.test/team/etl:1.0.0"))
    assert info.value.expected == (image.digest if what == "manifest" else image.config.digest)
    assert info.value.actual != info.value.expected


def test_retries_honour_retry_after(registry: FakeRegistry) -> None:
    registry.put_image("team/etl", make_image(user="1000"), tag="1.0.0")
    registry.fail_next(2, 429, {"Retry-After": "7"})
    client = client_for(registry)
    assert client.inspect(parse_reference("registry.test/team/etl:1.0.0")).user == "1000"
    assert client.sleeps == [7.0, 7.0]  # type: ignore[attr-defined]


def test_persistent_5xx_is_a_temporary_registry_error(registry: FakeRegistry) -> None:
    registry.put_image("team/etl", make_image(user="1000"), tag="1.0.0")
    registry.fail_next(10, 503)
    client = client_for(registry, retries=2)
    with pytest.raises(RegistryError) as info:
        client.inspect(parse_reference("registry.test/team/etl:1.0.0"))
    assert info.value.status == 503 and info.value.temporary
    assert len(client.sleeps) == 2  # type: ignore[attr-defined]
    assert registry.count(kind="manifests") == 3


def test_unknown_tag_is_manifest_unknown_with_codes(registry: FakeRegistry) -> None:
    registry.put_image("team/etl", make_image(user="1000"), tag="1.0.0")
    with pytest.raises(ManifestUnknown) as info:
        client_for(registry).inspect(parse_reference("registry.test/team/etl:9.9.9"))
    assert info.value.status == 404 and "MANIFEST_UNKNOWN" in info.value.codes


def test_schema1_is_unsupported(registry: FakeRegistry) -> None:
    # a registry that labels a schema 1 body with a type we asked for
    manifest = make_schema1("team/old")
    registry.put_manifest("team/old", OCI_MANIFEST, manifest.data, tag="1.0.0")
    with pytest.raises(UnsupportedManifest):
        client_for(registry).inspect(parse_reference("registry.test/team/old:1.0.0"))


def _auths(user: str, password: str, host: str = "registry.test") -> dict:
    return {"auths": {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}


def test_basic_auth_from_docker_config(registry: FakeRegistry) -> None:
    registry.auth = ("basic", "alice", "s3cret")
    registry.put_image("team/etl", make_image(user="1000"), tag="1.0.0")
    client = client_for(registry, _auths("alice", "s3cret"))
    ref = parse_reference("registry.test/team/etl:1.0.0")
    assert client.inspect(ref).user == "1000"
    before = registry.count()
    client.forget()
    client.inspect(ref)
    assert registry.count() - before == 2  # credentials sent up front once the scheme is known


def test_wrong_password_is_an_auth_error_without_the_secret(registry: FakeRegistry) -> None:
    registry.auth = ("basic", "alice", "s3cret")
    registry.put_image("team/etl", make_image(user="1000"), tag="1.0.0")
    with pytest.raises(AuthenticationError) as info:
        client_for(registry, _auths("alice", "wrong-pass")).inspect(parse_reference("registry.test/team/etl:1.0.0"))
    assert info.value.status == 401
    assert "wrong-pass" not in str(info.value) and "alice" in str(info.value)


def test_no_credentials_for_a_basic_registry(registry: FakeRegistry) -> None:
    registry.auth = ("basic", "alice", "s3cret")
    registry.put_image("team/etl", make_image(user="1000"), tag="1.0.0")
    with pytest.raises(AuthenticationError, match="docker login registry.test"):
        client_for(registry).inspect(parse_reference("registry.test/team/etl:1.0.0"))


def test_bearer_token_fetched_once_and_reused(registry: FakeRegistry) -> None:
    registry.auth = ("bearer", "alice", "s3cret")
    registry.put_image("team/etl", make_image(user="1000"), tag="1.0.0")
    registry.put_image("team/etl", make_image(user="1001"), tag="1.0.1")
    client = client_for(registry, _auths("alice", "s3cret"))
    client.inspect(parse_reference("registry.test/team/etl:1.0.0"))
    client.inspect(parse_reference("registry.test/team/etl:1.0.1"))
    assert registry.count(kind="token") == 1
    assert registry.token_queries[0]["scope"] == ["repository:team/etl:pull"]


def test_anonymous_bearer_pull(registry: FakeRegistry) -> None:
    registry.auth = ("bearer", "alice", "s3cret")
    registry.anonymous_pull = True
    registry.put_image("library/busybox", make_image(user="65534"), tag="1.36.1")
    assert client_for(registry).inspect(parse_reference("registry.test/library/busybox:1.36.1")).user == "65534"


def test_blob_redirects_are_followed(registry: FakeRegistry) -> None:
    registry.redirect_blobs = True
    registry.put_image("team/etl", make_image(user="1000"), tag="1.0.0")
    assert client_for(registry).inspect(parse_reference("registry.test/team/etl:1.0.0")).user == "1000"


def _helper(tmp_path: Path, name: str, body: str) -> None:
    script = tmp_path / f"docker-credential-{name}"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_credential_helper_wins_over_auths(registry: FakeRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry.auth = ("basic", "helper-user", "helper-pass")
    registry.put_image("team/etl", make_image(user="1000"), tag="1.0.0")
    _helper(tmp_path, "test", 'read server; echo "{\\"ServerURL\\":\\"$server\\",\\"Username\\":\\"helper-user\\",\\"Secret\\":\\"helper-pass\\"}"')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    config = {"credHelpers": {"registry.test": "test"}, **_auths("stale", "stale")}
    assert client_for(registry, config).inspect(parse_reference("registry.test/team/etl:1.0.0")).user == "1000"


def test_creds_store_then_auths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _helper(tmp_path, "empty", 'echo "credentials not found in native keychain"; exit 1')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    config = DockerConfig({"credsStore": "empty", **_auths("bob", "pw", "https://registry.test/v1/")})
    creds = config.credentials_for("registry.test")
    assert creds is not None and creds.username == "bob" and creds.password == "pw"
    assert "pw" not in repr(creds)


def test_missing_helper_is_a_credential_error() -> None:
    with pytest.raises(CredentialError, match="docker-credential-nonexistent-xyz"):
        DockerConfig({"credsStore": "nonexistent-xyz"}).credentials_for("registry.test")


def test_docker_hub_uses_the_legacy_server_key() -> None:
    config = DockerConfig(_auths("hubuser", "pw", "https://index.docker.io/v1/"))
    creds = config.credentials_for("docker.io")
    assert creds is not None and creds.username == "hubuser"


class _PlainHttpOnly(httpx.BaseTransport):
    """The network in front of a registry that only speaks plain http: https handshakes fail."""

    def __init__(self, registry: FakeRegistry) -> None:
        self.inner = registry.transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "https":
            raise httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)", request=request)
        return self.inner.handle_request(request)


def test_plain_http_needs_an_explicit_insecure_registry() -> None:
    registry = FakeRegistry("plain.test", negotiation="distribution")
    registry.put_image("team/etl", make_image(user="1000"), tag="1.0.0")
    ref = parse_reference("plain.test/team/etl:1.0.0")
    strict = RegistryClient(transport=_PlainHttpOnly(registry), docker_config=DockerConfig({}))
    with pytest.raises(InsecureRegistry, match="--insecure-registry plain.test"):
        strict.inspect(ref)
    assert registry.count() == 0  # nothing was sent in clear text
    allowed = RegistryClient(transport=_PlainHttpOnly(registry), docker_config=DockerConfig({}), insecure_registries=["plain.test"])
    assert allowed.inspect(ref).user == "1000"
    assert all(r.method in ("GET", "HEAD") for r in registry.requests)


def test_fresh_resolve_skips_the_tag_cache(registry: FakeRegistry) -> None:
    first = registry.put_image("team/base", make_image(user="1"), tag="1.0")
    second = registry.put_image("team/base", make_image(user="2"))
    client = client_for(registry)  # tag_ttl 30 s
    ref = parse_reference("registry.test/team/base:1.0")
    assert client.resolve(ref).digest == first
    registry.move_tag("team/base", "1.0", second)
    assert client.resolve(ref).digest == first  # cached answer
    assert client.resolve(ref, fresh=True).digest == second
    assert client.resolve(ref).digest == second  # and the cache learnt it
