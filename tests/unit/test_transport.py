"""HTTP rules of the registry client: redirects, token realms, tokens, echoed secrets, the deadline."""

from __future__ import annotations

import base64
import json
from typing import Callable

import httpx
import pytest

from imagegate import (
    AuthenticationError,
    DockerConfig,
    InsecureRegistry,
    RegistryClient,
    RegistryError,
    RegistryUnreachable,
    parse_reference,
)
from tests.support.oci import make_image

PASSWORD = "hunter2-very-secret"
IMAGE = make_image(user="1000")


def creds(host: str) -> DockerConfig:
    auth = base64.b64encode(f"me:{PASSWORD}".encode()).decode()
    return DockerConfig({"auths": {host: {"auth": auth}}})


def serve(image_or_handler: Callable[[httpx.Request], httpx.Response | None]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport that records requests; the handler may return None to have the image served honestly."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = image_or_handler(request)
        if answer is not None:
            return answer
        path = request.url.path
        if "/manifests/" in path:
            return httpx.Response(200, content=IMAGE.manifest.data, headers={
                "Content-Type": IMAGE.manifest.media_type, "Docker-Content-Digest": IMAGE.manifest.digest})
        for blob in IMAGE.all_blobs():
            if path.endswith(blob.digest):
                return httpx.Response(200, content=blob.data)
        return httpx.Response(404, json={"errors": [{"code": "NOT_FOUND", "message": "no"}]})

    return httpx.MockTransport(handle), seen


def client(transport: httpx.MockTransport, config: DockerConfig | None = None, **kwargs: object) -> RegistryClient:
    return RegistryClient(transport=transport, docker_config=config or DockerConfig({}), sleep=lambda s: None, **kwargs)  # type: ignore[arg-type]


def test_a_redirect_from_https_to_plain_http_elsewhere_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response | None:
        if "/blobs/" in request.url.path and request.url.host == "registry.test":
            return httpx.Response(307, headers={"Location": "http://storage.example/blob"})
        return None

    transport, _ = serve(handler)
    with pytest.raises(InsecureRegistry, match="refusing the downgrade"):
        client(transport).inspect(parse_reference("registry.test/team/etl:1.0.0"))


def test_authorization_never_follows_a_redirect_to_another_origin() -> None:
    def handler(request: httpx.Request) -> httpx.Response | None:
        if request.url.host == "registry.test" and "authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        if "/blobs/" in request.url.path and request.url.host == "registry.test":
            return httpx.Response(307, headers={"Location": f"https://storage.example{request.url.path}"})
        return None

    transport, seen = serve(handler)
    client(transport, creds("registry.test")).inspect(parse_reference("registry.test/team/etl:1.0.0"))
    storage = [r for r in seen if r.url.host == "storage.example"]
    assert storage and all("authorization" not in r.headers for r in storage)
    assert any("authorization" in r.headers for r in seen if r.url.host == "registry.test")


def test_redirects_are_bounded() -> None:
    transport, seen = serve(lambda r: httpx.Response(302, headers={"Location": r.url.path}) if "/manifests/" in r.url.path else None)
    with pytest.raises(RegistryError, match="redirected more than 5 times"):
        client(transport).inspect(parse_reference("registry.test/team/etl:1.0.0"))
    assert len(seen) == 6


def bearer(realm: str, token_answer: httpx.Response | None = None) -> Callable[[httpx.Request], httpx.Response | None]:
    def handler(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/token":
            return token_answer or httpx.Response(200, json={"token": "tok-123", "expires_in": 300})
        if request.headers.get("authorization") != "Bearer tok-123":
            return httpx.Response(401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="s"'})
        return None

    return handler


def test_a_plain_http_token_realm_on_another_host_is_refused_before_any_request() -> None:
    transport, seen = serve(bearer("http://auth.example/token"))
    with pytest.raises(InsecureRegistry, match="plain http on another host"):
        client(transport, creds("registry.test")).inspect(parse_reference("registry.test/team/etl:1.0.0"))
    assert not any(r.url.host == "auth.example" for r in seen)


def test_basic_credentials_go_to_an_https_realm() -> None:
    transport, seen = serve(bearer("https://auth.example/token"))
    client(transport, creds("registry.test")).inspect(parse_reference("registry.test/team/etl:1.0.0"))
    (token,) = [r for r in seen if r.url.path == "/token"]
    assert token.headers["authorization"].startswith("Basic ")


@pytest.mark.parametrize("realm", [
    "http://127.0.0.1:9/token", "https://localhost:9/token", "http://[::1]:9/token", "http://0.0.0.0:9/token",
    "https://auth.localhost/token", "http://localhost./token",
])
def test_a_remote_registrys_loopback_realm_is_refused_before_any_request(realm: str) -> None:
    # Following it would let a hostile registry reach this machine's local services.
    transport, seen = serve(bearer(realm))
    with pytest.raises(AuthenticationError, match="sends its token requests to this machine"):
        client(transport, creds("registry.test")).inspect(parse_reference("registry.test/team/etl:1.0.0"))
    assert not any(r.url.path == "/token" for r in seen)


def test_credentials_go_to_a_plain_realm_on_the_registrys_own_insecure_host() -> None:
    transport, seen = serve(bearer("http://registry.test/token"))
    c = client(transport, creds("registry.test"), insecure_registries=["registry.test"])
    c.inspect(parse_reference("registry.test/team/etl:1.0.0"))
    (token,) = [r for r in seen if r.url.path == "/token"]
    assert token.headers["authorization"].startswith("Basic ")


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"token": "a b"}),
        httpx.Response(200, json={"token": "a\r\nX-Evil: 1"}),
        httpx.Response(200, json={"token": 42}),
        httpx.Response(200, json={"token": ""}),
        httpx.Response(200, json={"token": "x" * 20000}),
        httpx.Response(200, content=b"not json"),
        httpx.Response(200, json=["token"]),
    ],
)
def test_unusable_tokens_are_refused(answer: httpx.Response) -> None:
    transport, _ = serve(bearer("https://auth.example/token", answer))
    with pytest.raises(AuthenticationError, match="no usable token"):
        client(transport).inspect(parse_reference("registry.test/team/etl:1.0.0"))


def test_odd_expiry_falls_back_to_a_short_lifetime() -> None:
    transport, _ = serve(bearer("https://auth.example/token", httpx.Response(200, json={"token": "tok-123", "expires_in": "soon"})))
    assert client(transport).inspect(parse_reference("registry.test/team/etl:1.0.0")).user == "1000"


def test_secrets_a_registry_echoes_back_are_blanked() -> None:
    def handler(request: httpx.Request) -> httpx.Response | None:
        auth = request.headers.get("authorization")
        if auth is None:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        decoded = base64.b64decode(auth.split()[1]).decode()
        return httpx.Response(403, json={"errors": [{"code": "DENIED", "message": f"bad {auth} {decoded}\x1b[31m"}]})

    transport, _ = serve(handler)
    with pytest.raises(AuthenticationError) as caught:
        client(transport, creds("registry.test")).inspect(parse_reference("registry.test/team/etl:1.0.0"))
    text = str(caught.value) + json.dumps(caught.value.to_dict())
    assert PASSWORD not in text and base64.b64encode(f"me:{PASSWORD}".encode()).decode() not in text
    assert "\x1b" not in text


def test_a_retry_after_past_the_deadline_ends_at_once() -> None:
    slept: list[float] = []
    transport, seen = serve(lambda r: httpx.Response(503, headers={"Retry-After": "20"}) if "/manifests/" in r.url.path else None)
    c = RegistryClient(transport=transport, docker_config=DockerConfig({}), sleep=slept.append, deadline=5, max_backoff=30)
    with pytest.raises(RegistryUnreachable, match="5 s deadline"):
        c.inspect(parse_reference("registry.test/team/etl:1.0.0"))
    assert slept == [] and len(seen) == 1


def test_encoded_bodies_are_refused_not_decompressed() -> None:
    transport, _ = serve(lambda r: httpx.Response(200, content=b"\x1f\x8b", headers={"Content-Encoding": "gzip"}) if "/manifests/" in r.url.path else None)
    with pytest.raises(RegistryError, match="encoded body"):
        client(transport).inspect(parse_reference("registry.test/team/etl:1.0.0"))


def test_a_garbled_content_length_on_head_is_not_a_crash() -> None:
    def handler(request: httpx.Request) -> httpx.Response | None:
        if request.method == "HEAD":
            return httpx.Response(200, headers={"Docker-Content-Digest": IMAGE.manifest.digest,
                                                "Content-Type": IMAGE.manifest.media_type, "Content-Length": "abc"})
        return None

    transport, _ = serve(handler)
    assert client(transport).resolve(parse_reference("registry.test/team/etl:1.0.0")).digest == IMAGE.manifest.digest
