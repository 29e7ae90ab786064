"""Tests of the test-support code itself: artifact builders, the fake registry, and push's upload steps."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import tarfile

import httpx
import pytest

from tests.support.fakeregistry import FakeRegistry, parse_accept
from tests.support.oci import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1_SIGNED,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Blob,
    digest_of,
    make_config,
    make_image,
    make_index,
    make_layer,
    platform_of,
)
from tests.support.push import PushError, upload_blob, upload_manifest

BASE = "https://registry.test"
ALL_MANIFESTS = ", ".join([OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST])


def client_for(registry: FakeRegistry, **kwargs: object) -> httpx.Client:
    """A client wired to the fake registry."""
    return httpx.Client(transport=registry.transport, base_url=BASE, **kwargs)  # type: ignore[arg-type]


def error_code(response: httpx.Response) -> str:
    """The first distribution error code in a response body."""
    return response.json()["errors"][0]["code"]


def two_platform_index(oci: bool = True, attest: bool = False):
    """linux/amd64 (user 1000) and linux/arm64/v8 (user 2000)."""
    amd = make_image(user="1000", oci=oci)
    arm = make_image(user="2000", architecture="arm64", variant="v8", oci=oci)
    pairs = [(platform_of("linux", "amd64"), amd), (platform_of("linux", "arm64", "v8"), arm)]
    return make_index(pairs, oci=oci, attest=attest)


# ---------------------------------------------------------------- oci builders


def test_builders_are_deterministic() -> None:
    assert make_image(user="1000").digest == make_image(user="1000").digest
    assert make_image(user="1000").digest != make_image(user="0").digest
    assert two_platform_index().digest == two_platform_index().digest


def test_layer_is_sorted_gzip_tar_with_diff_id() -> None:
    layer = make_layer({"b.txt": b"b", "a/x.txt": b"x"})
    tar_bytes = gzip.decompress(layer.data)
    assert layer.diff_id == digest_of(tar_bytes)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        assert [(m.name, m.mtime, m.uid) for m in tar.getmembers()] == [("a/x.txt", 0, 0), ("b.txt", 0, 0)]


def test_config_fields() -> None:
    config = make_config(
        user="app", env={"A": "1"}, entrypoint=["/bin/run"], cmd=["x"], labels={"k": "v"},
        healthcheck={"Test": ["CMD", "true"]}, architecture="arm64", variant="v8", diff_ids=["sha256:" + "0" * 64],
    ).json()
    assert config["config"] == {
        "User": "app", "Env": ["A=1"], "Entrypoint": ["/bin/run"], "Cmd": ["x"], "Labels": {"k": "v"},
        "Healthcheck": {"Test": ["CMD", "true"]},
    }
    assert (config["architecture"], config["os"], config["variant"]) == ("arm64", "linux", "v8")
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}
    assert "User" not in make_config().json()["config"]


@pytest.mark.parametrize(
    ("oci", "manifest_type", "config_type", "layer_type"),
    [(True, OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP), (False, DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP)],
)
def test_image_media_types(oci: bool, manifest_type: str, config_type: str, layer_type: str) -> None:
    image = make_image(oci=oci)
    manifest = image.manifest.json()
    assert (image.manifest.media_type, manifest["mediaType"]) == (manifest_type, manifest_type)
    assert manifest["config"] == image.config.descriptor() and image.config.media_type == config_type
    assert [layer["mediaType"] for layer in manifest["layers"]] == [layer_type]
    assert image.config.json()["rootfs"]["diff_ids"] == [image.layers[0].diff_id]  # type: ignore[attr-defined]


def test_index_lists_platforms_and_attestations() -> None:
    index = two_platform_index(attest=True)
    entries = index.manifest.json()["manifests"]
    assert [e["platform"] for e in entries] == [
        {"architecture": "amd64", "os": "linux"}, {"architecture": "arm64", "os": "linux", "variant": "v8"},
        {"architecture": "unknown", "os": "unknown"}, {"architecture": "unknown", "os": "unknown"},
    ]
    assert entries[2]["annotations"] == {
        "vnd.docker.reference.digest": index.images[0][1].digest,
        "vnd.docker.reference.type": "attestation-manifest",
    }
    assert index.image_for("linux", "arm64").config.json()["config"]["User"] == "2000"
    assert len(index.all_blobs()) == len({b.digest for _, i in index.images for b in i.all_blobs()})
    assert two_platform_index(oci=False).manifest.json()["mediaType"] == DOCKER_MANIFEST_LIST


# ---------------------------------------------------------------- serving manifests and blobs


def test_get_and_head_manifest_by_tag_and_digest() -> None:
    registry, image = FakeRegistry(), make_image(user="1000")
    digest = registry.put_image("team/sub/etl", image, tag="v1")
    with client_for(registry) as client:
        for ref in ("v1", digest):
            got = client.get(f"/v2/team/sub/etl/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
            assert got.status_code == 200 and got.content == image.manifest.data
            assert got.headers["Docker-Content-Digest"] == digest and got.headers["Content-Type"] == OCI_MANIFEST
            head = client.head(f"/v2/team/sub/etl/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
            assert head.content == b"" and int(head.headers["Content-Length"]) == image.manifest.size
            assert head.headers["Docker-Content-Digest"] == digest


def test_blobs_are_served_by_digest() -> None:
    registry, image = FakeRegistry(), make_image()
    registry.put_image("etl", image)
    with client_for(registry) as client:
        got = client.get(f"/v2/etl/blobs/{image.config.digest}")
        assert got.content == image.config.data and got.headers["Docker-Content-Digest"] == image.config.digest
        assert client.head(f"/v2/etl/blobs/{image.layers[0].digest}").status_code == 200
        missing = client.get(f"/v2/etl/blobs/{digest_of(b'nope')}")
        assert (missing.status_code, error_code(missing)) == (404, "BLOB_UNKNOWN")


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        (None, 200),
        (OCI_INDEX, 200),
        (f"{OCI_MANIFEST}, {OCI_INDEX};q=0.5", 200),
        ("*/*", 200),
        (DOCKER_MANIFEST_LIST, 404),
        (OCI_MANIFEST, 404),
    ],
)
def test_simple_negotiation(accept: str | None, status: int) -> None:
    registry, index = FakeRegistry(), two_platform_index()
    registry.put_index("multi", index, tag="v1")
    headers = {"Accept": accept} if accept else {}
    with client_for(registry) as client:
        response = client.get("/v2/multi/manifests/v1", headers=headers)
    assert response.status_code == status
    if status == 404:
        assert error_code(response) == "MANIFEST_UNKNOWN"


def test_accept_may_be_split_over_several_headers() -> None:
    headers = httpx.Headers([("Accept", DOCKER_MANIFEST), ("Accept", f"{OCI_INDEX}; q=0.9")])
    assert parse_accept(headers) == {DOCKER_MANIFEST, OCI_INDEX}
    assert parse_accept(httpx.Headers()) is None


def test_distribution_negotiation_mimics_distribution_2_8() -> None:
    registry = FakeRegistry(negotiation="distribution")
    oci_index, docker_list, docker_image = two_platform_index(), two_platform_index(oci=False), make_image(oci=False)
    registry.put_index("oci", oci_index, tag="v1")
    registry.put_index("docker", docker_list, tag="v1")
    registry.put_image("single", docker_image, tag="v1")
    amd64 = docker_list.image_for("linux", "amd64")
    with client_for(registry) as client:
        def served(path: str, accept: str | None) -> tuple[int, str | None]:
            response = client.head(path, headers={"Accept": accept} if accept else {})
            return response.status_code, response.headers.get("Docker-Content-Digest")

        assert served("/v2/oci/manifests/v1", None) == (404, None)
        assert served(f"/v2/oci/manifests/{oci_index.digest}", "*/*") == (404, None)
        assert served("/v2/oci/manifests/v1", OCI_INDEX) == (200, oci_index.digest)
        assert served("/v2/docker/manifests/v1", DOCKER_MANIFEST) == (200, amd64.digest)
        assert served(f"/v2/docker/manifests/{docker_list.digest}", None) == (200, docker_list.digest)
        assert served("/v2/docker/manifests/v1", ALL_MANIFESTS) == (200, docker_list.digest)
        schema1 = client.get("/v2/single/manifests/v1")
        assert schema1.headers["Content-Type"] == DOCKER_SCHEMA1_SIGNED
        assert schema1.headers["Docker-Content-Digest"] != docker_image.digest
        assert error_code(client.get("/v2/nope/manifests/v1")) == "MANIFEST_UNKNOWN"


def test_unknown_name_tag_and_invalid_digest() -> None:
    registry = FakeRegistry()
    registry.put_image("etl", make_image(), tag="v1")
    with client_for(registry) as client:
        assert error_code(client.get("/v2/nope/manifests/v1")) == "NAME_UNKNOWN"
        assert error_code(client.get("/v2/etl/manifests/v2")) == "MANIFEST_UNKNOWN"
        assert error_code(client.get(f"/v2/etl/manifests/{digest_of(b'x')}")) == "MANIFEST_UNKNOWN"
        assert client.get("/v2/etl/manifests/sha256:zz").status_code == 400
        assert client.head("/v2/nope/manifests/v1").content == b""
        assert client.get("/v2/etl/tags/list").json() == {"name": "etl", "tags": ["v1"]}


def test_move_and_delete_tag() -> None:
    registry, old, new = FakeRegistry(), make_image(user="1"), make_image(user="2")
    registry.put_image("etl", old, tag="v1")
    registry.put_image("etl", new)
    registry.move_tag("etl", "v1", new.digest)
    with client_for(registry) as client:
        assert client.head("/v2/etl/manifests/v1").headers["Docker-Content-Digest"] == new.digest
        registry.delete_tag("etl", "v1")
        assert client.head("/v2/etl/manifests/v1").status_code == 404
        assert client.head(f"/v2/etl/manifests/{old.digest}").status_code == 200
    with pytest.raises(KeyError):
        registry.move_tag("etl", "v1", digest_of(b"unknown"))


def test_blob_redirects_need_follow_redirects() -> None:
    registry, image = FakeRegistry(redirect_blobs=True), make_image()
    registry.put_image("etl", image)
    with client_for(registry) as client:
        assert client.get(f"/v2/etl/blobs/{image.config.digest}").status_code == 307
        followed = client.get(f"/v2/etl/blobs/{image.config.digest}", follow_redirects=True)
        assert followed.content == image.config.data


def test_unknown_host_is_a_connect_error() -> None:
    with client_for(FakeRegistry()) as client, pytest.raises(httpx.ConnectError):
        client.get("https://elsewhere.test/v2/")


def test_async_client_works() -> None:
    registry = FakeRegistry()
    registry.put_image("etl", make_image(), tag="v1")

    async def fetch() -> int:
        async with httpx.AsyncClient(transport=registry.transport, base_url=BASE) as client:
            return (await client.get("/v2/etl/manifests/v1")).status_code

    assert asyncio.run(fetch()) == 200


# ---------------------------------------------------------------- auth


def test_basic_auth() -> None:
    registry = FakeRegistry(auth=("basic", "alice", "s3cret"))
    registry.put_image("etl", make_image(), tag="v1")
    with client_for(registry) as anonymous:
        challenge = anonymous.get("/v2/")
        assert challenge.status_code == 401 and challenge.headers["WWW-Authenticate"] == 'Basic realm="registry.test"'
        assert error_code(anonymous.get("/v2/etl/manifests/v1")) == "UNAUTHORIZED"
    with client_for(registry, auth=("alice", "wrong")) as wrong:
        assert wrong.get("/v2/").status_code == 401
    with client_for(registry, auth=("alice", "s3cret")) as right:
        assert right.get("/v2/").status_code == 200 and right.get("/v2/etl/manifests/v1").status_code == 200


def fetch_token(client: httpx.Client, scope: str, auth: tuple[str, str] | None) -> httpx.Response:
    """Ask the fake token server for a token."""
    params = {"service": "registry.test", "scope": scope}
    return client.get("https://auth.test/token", params=params, auth=auth)  # type: ignore[arg-type]


def test_bearer_auth_flow() -> None:
    registry = FakeRegistry(auth=("bearer", "alice", "s3cret"))
    registry.put_image("team/etl", make_image(), tag="v1")
    registry.put_image("other", make_image(), tag="v1")
    with client_for(registry) as client:
        challenge = client.get("/v2/team/etl/manifests/v1").headers["WWW-Authenticate"]
        assert challenge == (
            'Bearer realm="https://auth.test/token",service="registry.test",scope="repository:team/etl:pull"'
        )
        assert fetch_token(client, "repository:team/etl:pull", None).status_code == 401
        assert fetch_token(client, "repository:team/etl:pull", ("alice", "bad")).status_code == 401
        body = fetch_token(client, "repository:team/etl:pull", ("alice", "s3cret")).json()
        assert body["token"] == body["access_token"] and body["expires_in"] == 300
        bearer = {"Authorization": f"Bearer {body['token']}"}
        assert client.get("/v2/team/etl/manifests/v1", headers=bearer).status_code == 200
        assert client.get("/v2/", headers=bearer).status_code == 200
        other = client.get("/v2/other/manifests/v1", headers=bearer)
        assert other.status_code == 401 and 'error="insufficient_scope"' in other.headers["WWW-Authenticate"]
        bogus = client.get("/v2/team/etl/manifests/v1", headers={"Authorization": "Bearer nope"})
        assert 'error="invalid_token"' in bogus.headers["WWW-Authenticate"]
    assert registry.count(kind="token") == 3
    assert registry.token_queries[-1]["scope"] == ["repository:team/etl:pull"]


def test_bearer_anonymous_pull() -> None:
    registry = FakeRegistry(auth=("bearer", "alice", "s3cret"), anonymous_pull=True)
    registry.put_image("etl", make_image(), tag="v1")
    with client_for(registry) as client:
        token = fetch_token(client, "repository:etl:pull", None).json()["token"]
        assert client.get("/v2/etl/manifests/v1", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_denied_repository() -> None:
    registry = FakeRegistry()
    registry.put_image("secret", make_image(), tag="v1")
    registry.deny("secret")
    with client_for(registry) as client:
        response = client.get("/v2/secret/manifests/v1")
    assert (response.status_code, error_code(response)) == (403, "DENIED")


# ---------------------------------------------------------------- faults and counting


def test_fail_next_then_recover() -> None:
    registry = FakeRegistry()
    registry.put_image("etl", make_image(), tag="v1")
    registry.fail_next(1, 429, {"Retry-After": "1"})
    registry.fail_next(1, 503, kind="manifests")
    with client_for(registry) as client:
        limited = client.get("/v2/")
        assert (limited.status_code, limited.headers["Retry-After"]) == (429, "1")
        assert error_code(limited) == "TOOMANYREQUESTS"
        assert client.get("/v2/").status_code == 200
        unavailable = client.head("/v2/etl/manifests/v1")
        assert unavailable.status_code == 503 and unavailable.content == b""
        assert client.head("/v2/etl/manifests/v1").status_code == 200


def test_corrupt_serves_other_bytes_under_the_same_digest() -> None:
    registry, image = FakeRegistry(), make_image()
    registry.put_image("etl", image, tag="v1")
    registry.corrupt(image.digest)
    registry.corrupt(image.layers[0].digest)
    registry.corrupt(image.config.digest, b"{}")
    with client_for(registry) as client:
        manifest = client.get("/v2/etl/manifests/v1")
        assert manifest.headers["Docker-Content-Digest"] == image.digest
        assert digest_of(manifest.content) != image.digest and manifest.json() == image.manifest.json()
        layer = client.get(f"/v2/etl/blobs/{image.layers[0].digest}")
        assert len(layer.content) == image.layers[0].size and digest_of(layer.content) != image.layers[0].digest
        assert client.get(f"/v2/etl/blobs/{image.config.digest}").content == b"{}"


def test_requests_are_recorded_and_counted() -> None:
    registry = FakeRegistry()
    registry.put_index("multi", two_platform_index(), tag="v1")
    with client_for(registry) as client:
        client.get("/v2/")
        client.head("/v2/multi/manifests/v1", headers={"Accept": OCI_INDEX})
        client.get("/v2/multi/manifests/v1")
        client.get(f"/v2/multi/blobs/{digest_of(b'x')}")
    assert registry.requests[1].method == "HEAD" and registry.requests[1].path == "/v2/multi/manifests/v1"
    assert registry.requests[1].headers["Accept"] == OCI_INDEX
    assert (registry.count(kind="ping"), registry.count(kind="manifests")) == (1, 2)
    assert registry.count("HEAD", "manifests") == 1
    assert (registry.count(kind="blobs"), registry.count()) == (1, 4)
    registry.reset_requests()
    assert registry.count() == 0


# ---------------------------------------------------------------- push's upload steps (against a tiny upload stub)


def upload_stub(location: str, stored: dict[str, bytes]) -> httpx.MockTransport:
    """A registry that accepts monolithic uploads, answering the POST with ``location``."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(200 if request.url.path.rsplit("/", 1)[-1] in stored else 404)
        if request.method == "POST":
            return httpx.Response(202, headers={"Location": location})
        digest = request.url.params.get("digest") or request.url.path.rsplit("/", 1)[-1]
        assert request.url.params.get("_state", "s") == "s", "existing query parameters must be kept"
        stored[digest] = request.content
        return httpx.Response(201, headers={"Docker-Content-Digest": digest_of(request.content)})

    return httpx.MockTransport(handle)


@pytest.mark.parametrize(
    "location",
    ["/v2/etl/blobs/uploads/u1?_state=s", "https://registry.test/v2/etl/blobs/uploads/u1", "u1?_state=s"],
)
def test_upload_blob_follows_location(location: str) -> None:
    stored: dict[str, bytes] = {}
    blob = Blob("application/octet-stream", b"payload")
    with httpx.Client(transport=upload_stub(location, stored), base_url=BASE) as client:
        assert upload_blob(client, "etl", blob) == blob.digest
        assert upload_blob(client, "etl", blob) == blob.digest  # second time: HEAD says it exists
    assert stored == {blob.digest: b"payload"}


def test_upload_manifest_checks_reported_digest() -> None:
    image = make_image()

    def lying(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, headers={"Docker-Content-Digest": digest_of(b"other")})

    with httpx.Client(transport=httpx.MockTransport(lying), base_url=BASE) as client, pytest.raises(PushError):
        upload_manifest(client, "etl", image.manifest, "v1")
    with httpx.Client(transport=upload_stub("", {}), base_url=BASE) as client:
        assert upload_manifest(client, "etl", image.manifest, "v1") == image.digest
    assert json.loads(image.manifest.data)["mediaType"] == OCI_MANIFEST
