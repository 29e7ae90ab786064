"""The command line against a hostile registry: every misbehaviour ends in a clear verdict.

Each case runs ``imagegate check REF --json --timeout 4`` as its own process against a real HTTP
server on loopback (tests/support/hostile.py) that misbehaves in one way, and asserts the exit
status (1: refused by a check, 2: an error — never 0, never anything else), exactly one JSON object
on stdout naming what went wrong, no traceback, the wall time and the peak memory of the process.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from tests.support.hostile import (
    OCI_INDEX,
    OCI_MANIFEST,
    Exchange,
    HostileRegistry,
    config_bytes,
    gzip_bomb,
    make_layer,
    manifest_bytes,
    raw_json,
)
from tests.support.oci import Blob, Layer, OCI_LAYER_GZIP, canonical_json, digest_of, make_config, make_image, platform_of

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 4.0  # the --timeout given to every run
MAX_SECONDS = TIMEOUT + 4.0  # the deadline, plus Python's start-up and the https attempt on a busy machine
MAX_RSS_MB = 160
BASE = '{"architecture":"amd64","os":"linux",'
PASSWORD = "s3cr3t-Pa55w0rd-do-not-print"


@dataclass(frozen=True)
class Case:
    build: Callable[[HostileRegistry], Callable[[Exchange], None]]
    status: int
    expect: str  # the error type (status 2) or the failed check (status 1)
    says: str = ""  # a phrase the message must contain
    max_seconds: float = MAX_SECONDS


# -- builders ------------------------------------------------------------------------------------


def config_case(text: str) -> Callable[[HostileRegistry], Callable[[Exchange], None]]:
    def build(reg: HostileRegistry) -> Callable[[Exchange], None]:
        config = config_bytes(raw_json(text))
        return reg.serving(manifest_bytes(config), config)

    return build


def user_case(user: str, layers: list[Blob] | None = None) -> Callable[[HostileRegistry], Callable[[Exchange], None]]:
    def build(reg: HostileRegistry) -> Callable[[Exchange], None]:
        image = make_image(user=user, layers=layers or [{"etc/hostname": b"x\n"}])
        return reg.serving(image.manifest, image.config, *image.layers)

    return build


def manifest_case(body: bytes, media_type: str = OCI_MANIFEST, **headers: str) -> Callable[[HostileRegistry], Callable[[Exchange], None]]:
    def build(reg: HostileRegistry) -> Callable[[Exchange], None]:
        def handle(ex: Exchange) -> None:
            if "/manifests/" in ex.path:
                ex.send(200, body, {"Content-Type": media_type, **headers})
            else:
                reg.honest(ex)

        return handle

    return build


def on_manifest(action: Callable[[Exchange], None]) -> Callable[[HostileRegistry], Callable[[Exchange], None]]:
    def build(reg: HostileRegistry) -> Callable[[Exchange], None]:
        return lambda ex: action(ex) if "/manifests/" in ex.path else reg.honest(ex)

    return build


def descriptor_case(**overrides: object) -> Callable[[HostileRegistry], Callable[[Exchange], None]]:
    def build(reg: HostileRegistry) -> Callable[[Exchange], None]:
        config = make_config(user="1000")
        descriptor = {**config.descriptor(), **overrides}
        manifest = Blob(OCI_MANIFEST, canonical_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor, "layers": []}))
        return reg.serving(manifest, config)

    return build


def index_case(entries: Callable[[HostileRegistry], list[dict[str, object]]], *blobs_of: Callable[[], list[Blob]]) -> Callable[[HostileRegistry], Callable[[Exchange], None]]:
    def build(reg: HostileRegistry) -> Callable[[Exchange], None]:
        extra = [blob for make in blobs_of for blob in make()]
        index = Blob(OCI_INDEX, canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries(reg)}))
        return reg.serving(index, *extra)

    return build


AMD = platform_of("linux", "amd64")
IMAGE_A = make_image(user="1000")
IMAGE_B = make_image(user="0", layers=[{"etc/b": b"b"}])
ARM_CONFIG_IMAGE = make_image(user="1000", architecture="arm64")


def _blobs(*images: object) -> Callable[[], list[Blob]]:
    return lambda: [blob for image in images for blob in (image.manifest, *image.all_blobs())]  # type: ignore[attr-defined]


def token_case(token_body: Callable[[Exchange], None], realm: str | None = None) -> Callable[[HostileRegistry], Callable[[Exchange], None]]:
    def build(reg: HostileRegistry) -> Callable[[Exchange], None]:
        def handle(ex: Exchange) -> None:
            if ex.path.startswith("/token/"):
                token_body(ex)
            elif "authorization" not in ex.headers:
                where = realm or f"http://{reg.host}/token/{ex.path.split('/')[2]}"
                ex.json(401, {"errors": [{"code": "UNAUTHORIZED"}]}, **{"WWW-Authenticate": f'Bearer realm="{where}",service="x"'})
            else:
                reg.honest(ex)

        return handle

    return build


def passwd_layer(**members: tuple[str, bytes | str]) -> list[Blob]:
    """A layer with special tar members: name -> ("file", content) | ("symlink", target)."""
    import io
    import tarfile
    import gzip as _gzip

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (kind, value) in members.items():
            info = tarfile.TarInfo(name.replace("__", "/"))
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(value)
                tar.addfile(info)
            else:
                data = value if isinstance(value, bytes) else value.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    raw = buffer.getvalue()
    return [Layer(OCI_LAYER_GZIP, _gzip.compress(raw, mtime=0), diff_id=digest_of(raw))]


def garbage_layer() -> list[Blob]:
    return [Layer(OCI_LAYER_GZIP, b"\x1f\x8bthis is not gzip at all", diff_id=digest_of(b""))]


def lying_layer(reg: HostileRegistry) -> Callable[[Exchange], None]:
    layer = make_layer({"etc/passwd": b"app:x:1000:1000::/:/bin/sh\n"})
    image = make_image(user="app", layers=[layer])

    def handle(ex: Exchange) -> None:
        if ex.path.endswith(layer.digest):
            evil = make_layer({"etc/passwd": b"app:x:0:0::/:/bin/sh\n"})
            ex.send(200, evil.data, {"Content-Type": "application/octet-stream"})
        else:
            reg.honest(ex, image.manifest, tuple(image.all_blobs()))

    return handle


def secret_echo(reg: HostileRegistry) -> Callable[[Exchange], None]:
    def handle(ex: Exchange) -> None:
        auth = ex.headers.get("authorization")
        if auth is None:
            ex.json(401, {"errors": [{"code": "UNAUTHORIZED"}]}, **{"WWW-Authenticate": 'Basic realm="x"'})
            return
        decoded = base64.b64decode(auth.split(" ", 1)[1]).decode()
        ex.json(403, {"errors": [{"code": "DENIED", "message": f"no access for {auth} ({decoded})"}]})

    return handle


def endless_headers(ex: Exchange) -> None:
    ex.sock.sendall(b"HTTP/1.1 200 OK\r\n")
    for _ in range(200_000):
        ex.sock.sendall(b"X-Padding: " + b"a" * 64 + b"\r\n")


def huge_stream(ex: Exchange, media_type: str = OCI_MANIFEST) -> None:
    size = 300 << 20
    ex.sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {media_type}\r\nContent-Length: {size}\r\n\r\n".encode())
    chunk = b" " * (1 << 20)
    for _ in range(size >> 20):
        ex.sock.sendall(chunk)


def slow_headers(ex: Exchange) -> None:
    ex.dribble(b"HTTP/1.1 200 OK\r\nContent-Type: " + OCI_MANIFEST.encode() + b"\r\n\r\n", 0.5)


def slow_body(ex: Exchange) -> None:
    body = b" " * 5000
    ex.sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {OCI_MANIFEST}\r\nContent-Length: {len(body)}\r\n\r\n".encode())
    ex.dribble(body, 0.3)


def reset_mid_body(ex: Exchange) -> None:
    ex.sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {OCI_MANIFEST}\r\nContent-Length: 1000\r\n\r\n{{\"schema".encode())
    ex.sock.close()


def bad_chunks(ex: Exchange) -> None:
    ex.sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {OCI_MANIFEST}\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nabc\r\n".encode())


GOOD_MANIFEST = make_image(user="1000").manifest

CASES: dict[str, Case] = {
    # documents that are malformed, mistyped or mean two things
    "manifests-string": Case(manifest_case(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": "oops"}).encode(), OCI_INDEX), 2, "MalformedResponse", "expected a list"),
    "config-md5": Case(descriptor_case(digest="md5:d41d8cd98f00b204e9800998ecf8427e"), 2, "MalformedResponse", "unsupported digest algorithm"),
    "config-traversal": Case(descriptor_case(digest="sha256:../../../etc/passwd"), 2, "MalformedResponse", "config.digest"),
    "index-child-tag": Case(index_case(lambda reg: [{"mediaType": OCI_MANIFEST, "digest": "latest", "size": 10, "platform": AMD}]), 2, "MalformedResponse", "manifests[0].digest"),
    "duplicate-user": Case(config_case(BASE + '"config":{"User":"1000","User":"0"}}'), 2, "MalformedResponse", "appears twice"),
    "case-variant-user": Case(config_case(BASE + '"config":{"User":"1000","user":"0"}}'), 2, "MalformedResponse", "differ only by case"),
    "second-config-object": Case(config_case(BASE + '"config":{"User":"1000"},"Config":{"User":"0"}}'), 2, "MalformedResponse", "differ only by case"),
    "unicode-folding-key": Case(config_case(BASE + '"config":{"User":"1000","U\\u017fer":"0"}}'), 2, "MalformedResponse", "not printable ASCII"),
    "nan-in-config": Case(config_case(BASE + '"config":{"User":"1000"},"x":NaN}'), 2, "MalformedResponse", "NaN"),
    "deep-nesting": Case(config_case("[" * 100_000 + "]" * 100_000), 2, "MalformedResponse", ""),
    "user-not-a-string": Case(config_case(BASE + '"config":{"User":1000}}'), 2, "MalformedResponse", "expected a string"),
    "not-json": Case(manifest_case(b"<html>gateway</html>"), 2, "MalformedResponse", "not JSON"),
    "schema1": Case(manifest_case(json.dumps({"schemaVersion": 1, "fsLayers": [], "name": "x", "tag": "y"}).encode(), "application/vnd.docker.distribution.manifest.v1+prettyjws"), 2, "UnsupportedManifest", "schema 1"),
    "type-mismatch": Case(manifest_case(GOOD_MANIFEST.data, OCI_INDEX), 2, "MalformedResponse", "served it as"),
    "digest-header-lies": Case(manifest_case(GOOD_MANIFEST.data, OCI_MANIFEST, **{"Docker-Content-Digest": "sha256:" + "0" * 64}), 2, "DigestMismatch", "hashes to"),
    "digest-header-garbage": Case(manifest_case(GOOD_MANIFEST.data, OCI_MANIFEST, **{"Docker-Content-Digest": "sha256:zz"}), 2, "MalformedResponse", "not a digest"),
    "ambiguous-index": Case(index_case(lambda reg: [IMAGE_A.manifest.descriptor(platform=AMD), IMAGE_B.manifest.descriptor(platform=AMD)], _blobs(IMAGE_A, IMAGE_B)), 2, "MalformedResponse", "different images"),
    "platform-lie": Case(index_case(lambda reg: [ARM_CONFIG_IMAGE.manifest.descriptor(platform=AMD)], _blobs(ARM_CONFIG_IMAGE)), 2, "MalformedResponse", "its config says"),
    "config-size-lie": Case(descriptor_case(size=10**12), 2, "MalformedResponse", "more than"),
    # users the engine runs as root
    "plus-zero-user": Case(user_case("+0"), 1, "non-root", "root"),
    "wrapped-uid": Case(user_case("4294967296"), 1, "non-root", "root"),
    "toor-in-passwd": Case(user_case("toor", passwd_layer(etc__passwd=("file", "toor:x:0:0::/:/bin/sh\n"))), 1, "non-root", "uid 0"),
    "passwd-uid-garbage": Case(user_case("app", passwd_layer(etc__passwd=("file", "app:x:abc:1::/:/bin/sh\n"))), 1, "non-root", "root"),
    "passwd-symlink": Case(user_case("app", passwd_layer(etc__passwd=("symlink", "/tmp/passwd"))), 1, "non-root", "symlink"),
    "layer-not-gzip": Case(user_case("app", garbage_layer()), 1, "non-root", "cannot be read safely"),
    "layer-bytes-lie": Case(lying_layer, 2, "DigestMismatch", "hashes to"),
    # unbounded time, memory, redirects
    "slow-headers": Case(on_manifest(slow_headers), 2, "RegistryUnreachable", "deadline"),
    "slow-body": Case(on_manifest(slow_body), 2, "RegistryUnreachable", "deadline"),
    "endless-headers": Case(on_manifest(endless_headers), 2, "RegistryUnreachable", ""),
    "huge-manifest": Case(on_manifest(huge_stream), 2, "RegistryError", "larger than"),
    "gzip-bomb": Case(manifest_case(gzip_bomb(1 << 30), OCI_MANIFEST, **{"Content-Encoding": "gzip"}), 2, "RegistryError", "encoded body"),
    "huge-token": Case(token_case(huge_stream), 2, "RegistryError", "larger than"),
    "retry-after-forever": Case(on_manifest(lambda ex: ex.json(503, {"errors": []}, **{"Retry-After": "100000"})), 2, "RegistryUnreachable", "deadline"),
    "redirect-loop": Case(on_manifest(lambda ex: ex.send(302, b"", {"Location": ex.path})), 2, "RegistryError", "redirected more than"),
    "redirect-elsewhere-scheme": Case(on_manifest(lambda ex: ex.send(302, b"", {"Location": "ftp://example.invalid/x"})), 2, "RegistryError", "unusable location"),
    "reset-mid-body": Case(on_manifest(reset_mid_body), 2, "RegistryUnreachable", "broke off"),
    "bad-chunked-encoding": Case(on_manifest(bad_chunks), 2, "RegistryUnreachable", ""),
    # credentials and tokens
    "realm-plain-http-elsewhere": Case(token_case(lambda ex: ex.json(200, {"token": "t"}), realm="http://registry.invalid/token"), 2, "InsecureRegistry", "plain http on another host"),
    "token-header-injection": Case(token_case(lambda ex: ex.json(200, {"token": "abc\r\nX-Evil: 1"})), 2, "AuthenticationError", "no usable token"),
    "token-not-a-string": Case(token_case(lambda ex: ex.json(200, {"token": {"a": 1}})), 2, "AuthenticationError", "no usable token"),
    "secret-echoed-back": Case(secret_echo, 2, "AuthenticationError", "refused access"),
}


@pytest.fixture(scope="module")
def registry() -> HostileRegistry:
    with HostileRegistry() as reg:
        for name, case in CASES.items():
            reg.scenarios[name] = case.build(reg)
        yield reg


@pytest.fixture(scope="module")
def docker_config(tmp_path_factory: pytest.TempPathFactory, registry: HostileRegistry) -> Path:
    directory = tmp_path_factory.mktemp("docker-config")
    auth = base64.b64encode(f"imagegate:{PASSWORD}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    return directory


def run_cli(args: list[str], env: dict[str, str]) -> tuple[int, str, str, float, float]:
    """(status, stdout, stderr, seconds, peak RSS in MB) of one imagegate process.

    The process is started from a small wrapper (tests/support/peak_rss.py), so its peak RSS is its
    own and not that of this (large) test process it would otherwise be forked from.
    """
    started = time.monotonic()
    with tempfile.NamedTemporaryFile(suffix=".rss") as rss:
        wrapper = [sys.executable, str(ROOT / "tests" / "support" / "peak_rss.py"), rss.name, "--"]
        done = subprocess.run([*wrapper, sys.executable, "-m", "imagegate", *args], stdin=subprocess.DEVNULL,
                              capture_output=True, env=env, cwd=ROOT, timeout=120)
        seconds = time.monotonic() - started
        peak_kb = int(Path(rss.name).read_text() or 0)
    return done.returncode, done.stdout.decode(), done.stderr.decode(), seconds, peak_kb / 1024


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_registry_gets_a_clear_verdict(name: str, registry: HostileRegistry, docker_config: Path, tmp_path: Path) -> None:
    case = CASES[name]
    env = {**os.environ, "DOCKER_CONFIG": str(docker_config), "PYTHONPATH": str(ROOT)}
    env.pop("HTTPS_PROXY", None)
    before = len(registry.requests)
    status, out, err, seconds, rss = run_cli(["check", registry.ref(name), "--json", "--timeout", str(TIMEOUT)], env)
    assert status == case.status, (status, out, err)
    document = json.loads(out)  # exactly one JSON object: json.loads refuses trailing data
    assert isinstance(document, dict)
    if case.status == 2:
        assert document["error"]["type"] == case.expect, document
        assert case.says in document["error"]["message"], document
    else:
        failed = [c for c in document["checks"] if c["outcome"] == "fail"]
        assert [c["check"] for c in failed] == [case.expect], document
        assert case.says in failed[0]["message"], document
    assert "Traceback" not in err
    assert PASSWORD not in out + err and base64.b64encode(f"imagegate:{PASSWORD}".encode()).decode() not in out + err
    assert seconds < case.max_seconds, f"{name} took {seconds:.1f} s"
    assert rss < MAX_RSS_MB, f"{name}: peak RSS {rss:.0f} MB"
    paths = [path for _, path in registry.requests[before:]]
    assert not any(".." in path or "/etc/passwd" in path for path in paths), paths


def test_there_are_at_least_25_misbehaviours() -> None:
    assert len(CASES) >= 25
