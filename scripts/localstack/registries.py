"""The registries (CNCF distribution): config rendering, start on a free loopback port, health, digests.

Registry 1 is plain http with deletes enabled; registry 2 (``auth-registry``) serves TLS with htpasswd basic
auth, its material made by ``registry_auth``; registry 3 (``token-registry``) serves TLS with ``auth: token``
against the stack's token issuer (``registry_token``, ``token_issuer``).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import ssl
import time
from pathlib import Path

from .host import StackError, apt_install, free_port, port_is_free, say, tail, which, write_file
from .procs import proc_matches, spawn, stop_process
from .registry_auth import auth_material
from .registry_token import PUSH_USER, token_auth_block, token_registry_healthy

MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


def registry_binary() -> str:
    override = os.environ.get("IMAGEGATE_REGISTRY_BIN")
    if override:
        if not os.access(override, os.X_OK):
            raise StackError(f"IMAGEGATE_REGISTRY_BIN={override} is not an executable file")
        return override
    for name in ("docker-registry", "registry"):
        path = which(name)
        if path:
            return path
    apt_install(["docker-registry"], "the registry binary `docker-registry` (CNCF distribution) is missing")
    path = which("docker-registry")
    if not path:
        raise StackError("`docker-registry` is still missing after installing the docker-registry package")
    return path


def yaml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar


def registry_config(
    name: str, port: int, data_dir: Path, auth: dict | None, secret: str | None = None, token: dict | None = None
) -> str:
    """distribution's config.yml: loopback ``port``, filesystem storage in ``data_dir``, deletes on, every
    request logged; with ``auth`` (server_cert, server_key, htpasswd paths) TLS and htpasswd basic auth; with
    ``token`` (server_cert, server_key, realm, service, issuer, rootcertbundle) TLS and ``auth: token``.
    ``secret`` (the http secret) is random unless given."""
    if auth and token:
        raise ValueError("a registry has either htpasswd (auth) or token auth, not both")
    q = yaml_str
    lines = [
        "version: 0.1",
        "log:",
        "  level: info",
        "  formatter: text",
        "  accesslog:",
        "    disabled: false",
        "  fields:",
        "    service: registry",
        f"    instance: {q(name)}",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {q(str(data_dir))}",
        "  delete:",
        "    enabled: true",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        f"  addr: {q(f'127.0.0.1:{port}')}",
        f"  secret: {q(secret if secret is not None else secrets.token_hex(24))}",
        "  headers:",
        "    X-Content-Type-Options: [nosniff]",
    ]
    if auth:
        lines += [
            "  tls:",
            f"    certificate: {q(auth['server_cert'])}",
            f"    key: {q(auth['server_key'])}",
            "auth:",
            "  htpasswd:",
            "    realm: imagegate-test",
            f"    path: {q(auth['htpasswd'])}",
        ]
    if token:
        lines += [
            "  tls:",
            f"    certificate: {q(token['server_cert'])}",
            f"    key: {q(token['server_key'])}",
            "auth:",
            "  token:",
            f"    realm: {q(token['realm'])}",
            f"    service: {q(token['service'])}",
            f"    issuer: {q(token['issuer'])}",
            f"    rootcertbundle: {q(token['rootcertbundle'])}",
        ]
    return "\n".join(lines) + "\n"


def basic_auth(user: str, password: str | None) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def http_status(
    url: str,
    cafile: str | None = None,
    user: str | None = None,
    password: str | None = None,
    method: str = "GET",
    path: str = "/v2/",
    headers: dict | None = None,
    timeout: float = 3.0,
) -> tuple[int, dict]:
    scheme, _, hostport = url.partition("://")
    if scheme == "https":
        ctx = ssl.create_default_context(cafile=cafile)
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(hostport, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(hostport, timeout=timeout)
    hdrs = {"User-Agent": "imagegate-stack/1", **(headers or {})}
    if user is not None:
        hdrs["Authorization"] = basic_auth(user, password)
    try:
        conn.request(method, path, headers=hdrs)
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def registry_healthy(rec: dict, timeout: float = 3.0) -> bool:
    """GET /v2/ answers 200 (plain), or 401 without and 200 with the credentials (auth registry), or 401 with
    our Bearer challenge and 200 with a token of our issuer (token registry)."""
    if rec.get("token"):
        return token_registry_healthy(rec, timeout=timeout)
    try:
        if rec.get("auth"):
            status, _ = http_status(rec["url"], cafile=rec["ca_cert"], timeout=timeout)
            if status != 401:
                return False
            status, _ = http_status(
                rec["url"], cafile=rec["ca_cert"], user=rec["user"], password=rec["password"], timeout=timeout
            )
            return status == 200
        status, _ = http_status(rec["url"], timeout=timeout)
        return status == 200
    except (OSError, http.client.HTTPException, ssl.SSLError):
        return False


def registry_digest(reg: dict, repo: str, tag: str) -> str | None:
    """The manifest digest the (plain) registry ``reg`` holds for repo:tag, or None."""
    try:
        status, headers = http_status(
            reg["url"],
            method="HEAD",
            path=f"/v2/{repo}/manifests/{tag}",
            headers={"Accept": MANIFEST_ACCEPT},
            timeout=10,
        )
    except (OSError, http.client.HTTPException):
        return None
    return headers.get("docker-content-digest") if status == 200 else None


def registry_record(
    port: int, auth: dict | None, config: Path, data_dir: Path, access_log: Path, token: dict | None = None
) -> dict:
    """The fields of a registry's state record besides its process (pid, cmdline, starttime, log)."""
    scheme = "https" if auth or token else "http"
    rec: dict = {
        "port": port,
        "addr": f"127.0.0.1:{port}",
        "url": f"{scheme}://127.0.0.1:{port}",
        "config": str(config),
        "data_dir": str(data_dir),
        "access_log": str(access_log),
    }
    if auth:
        rec.update(auth=True, **auth)
    if token:
        rec.update(token=True, **token)
    return rec


def start_registry(name: str, state_dir: Path, old: dict | None, auth: dict | None, token: dict | None = None) -> dict:
    """Start ``name`` on its old port when free (else any free one; up to 3 tries when the port is taken).
    ``token``: the fields of :func:`registry_token.token_auth_block` plus what the record should carry."""
    binary = registry_binary()
    rdir = state_dir / name
    data_dir = rdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / f"{name}.log"
    access_log = state_dir / f"{name}-access.log"
    preferred = int(old["port"]) if old and old.get("port") else None
    last_error = ""
    for attempt in range(3):
        port = preferred if (attempt == 0 and preferred and port_is_free(preferred)) else free_port()
        config = rdir / "config.yml"
        write_file(config, registry_config(name, port, data_dir, auth, token=token), 0o600)
        proc, rec = spawn([binary, "serve", str(config)], access_log, log)
        rec.update(registry_record(port, auth, config, data_dir, access_log, token))
        if _wait_healthy(name, proc, rec, auth, log):
            return rec
        last_error = tail(log)
        if "address already in use" not in last_error:
            break
        if attempt < 2:
            say(f"{name}: port {port} was taken, retrying on another port")
    raise StackError(f"{name} exited while starting (exit {proc.returncode}). Log {log}:\n{last_error}")


def _wait_healthy(name: str, proc, rec: dict, auth: dict | None, log: Path) -> bool:  # type: ignore[no-untyped-def]
    """True once healthy, False when the process exited; stop it and raise when it hangs for 30 s."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if registry_healthy(rec, timeout=1.0):
            return True
        time.sleep(0.2)
    stop_process(name, rec, 5)
    raise StackError(
        f"{name} (pid {proc.pid}) on port {rec['port']} did not become healthy within 30 s "
        f"(expected GET /v2/ -> {_expected(rec)}). "
        f"Log {log}:\n{tail(log)}"
    )


def ensure_registry(state_dir: Path, old: dict | None) -> dict:
    name = "registry"
    if old and proc_matches(old) and registry_healthy(old):
        say(f"{name}: reusing pid {old['pid']} at {old['url']}")
        return old
    rec = start_registry(name, state_dir, old, None)
    say(f"{name}: started pid {rec['pid']} at {rec['url']} (plain http, deletes enabled, log {rec['log']})")
    return rec


def ensure_auth_registry(state_dir: Path, old: dict | None) -> dict:
    name = "auth-registry"
    if old and proc_matches(old) and registry_healthy(old):
        say(f"{name}: reusing pid {old['pid']} at {old['url']} (user {old['user']})")
        return old
    auth = auth_material(state_dir / name / "auth", old)
    rec = start_registry(name, state_dir, old, auth)
    say(
        f"{name}: started pid {rec['pid']} at {rec['url']} (TLS with CA {rec['ca_cert']}, htpasswd user "
        f"{rec['user']}, log {rec['log']})"
    )
    return rec


def _expected(rec: dict) -> str:
    if rec.get("token"):
        return f"401 with a Bearer challenge for {rec['realm']}, then 200 with a token from it"
    return "401 then 200 with credentials" if rec.get("auth") else "200"


def ensure_token_registry(state_dir: Path, old: dict | None, issuer: dict) -> dict:
    """The token registry, trusting ``issuer`` (a record of ``registry_token.ensure_token_issuer``); restarted
    when the issuer moved (another realm) or signs with other material."""
    name = "token-registry"
    token = token_auth_block(issuer["realm"], issuer)
    extra = {k: issuer[k] for k in ("ca_cert", "signing_cert", "accounts", "request_log")}
    extra["user"] = PUSH_USER  # the account that may push everything (its password: the accounts file)
    same = old and all(old.get(k) == v for k, v in {**token, **extra}.items())
    if old and same and proc_matches(old) and registry_healthy(old):
        say(f"{name}: reusing pid {old['pid']} at {old['url']} (realm {old['realm']})")
        return old
    if old and proc_matches(old):
        stop_process(name, old, 15)  # ours, but unhealthy or trusting an issuer that moved
    rec = start_registry(name, state_dir, old, None, {**token, **extra})
    say(f"{name}: started pid {rec['pid']} at {rec['url']} (TLS, token auth via {rec['realm']}, log {rec['log']})")
    return rec
