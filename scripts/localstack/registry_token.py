"""The token registry's side of the stack: material, the issuer's config and process, a small token client.

``token-registry`` is a third distribution registry with ``auth: token``; ``token-issuer`` (the process of
:mod:`localstack.token_issuer`) signs its tokens. Both serve TLS on loopback with one CA made here
(``openssl``), because a real token registry and its realm are https, and the realm is where the
credentials go: the stack should exercise that path, not the plain-http loopback exception.

Material in ``STATE/token-registry/auth`` (kept across restarts, so an earlier env stays valid):

* ``ca.crt``/``ca.key``, ``server.crt``/``server.key``: TLS for both servers (CN and SAN 127.0.0.1);
* ``signing.key``/``signing.crt``: the self-signed RS256 token-signing certificate, which is the registry's
  ``rootcertbundle`` and travels in each token's ``x5c`` header;
* ``accounts.json`` (0600): the test accounts with their passwords, grants and token lifetimes
  (``$IMAGEGATE_TOKEN_ACCOUNTS``); the issuer's own config holds only PBKDF2 hashes.

Accounts (see :data:`ACCOUNTS`): ``imagegate-token`` may pull and push everything (tokens live 300 s);
``imagegate-short`` may pull everything with tokens that live 12 s and say so (``expires_in`` 12);
``imagegate-stale`` may pull everything with tokens the registry refuses after 5 s although they claim
300 s (a token revoked or expired early). Anonymous requests may pull ``public/*`` only.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import ssl
import sys
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from .host import StackError, free_port, port_is_free, require_tool, run, say, sha256_file, tail, write_file
from .procs import proc_matches, spawn, stop_process
from .registry_auth import make_tls
from .token_issuer import hash_password

SERVICE = "imagegate-token-registry"
ISSUER = "imagegate-stack-token-issuer"
REGISTRY_LEEWAY = 60  # distribution 2.8 accepts a token until exp + 60 s (registry/auth/token/token.go Leeway)
PUSH_USER = "imagegate-token"
SHORT_USER = "imagegate-short"
STALE_USER = "imagegate-stale"
ANONYMOUS = [{"repository": "public/*", "actions": ["pull"]}]
ACCOUNTS: dict[str, dict] = {
    PUSH_USER: {"access": [{"repository": "*", "actions": ["pull", "push"]}], "lifetime": 300},
    # imagegate keeps a token until 10 s before its expires_in, and at least 1 s: 12 s tokens are kept 2 s
    SHORT_USER: {"access": [{"repository": "*", "actions": ["pull"]}], "lifetime": 12},
    STALE_USER: {"access": [{"repository": "*", "actions": ["pull"]}], "lifetime": 5, "expires_in": 300},
}
ISSUER_SCRIPT = Path(__file__).resolve().with_name("token_issuer.py")
MATERIAL_FILES = ("ca_cert", "ca_key", "server_cert", "server_key", "signing_key", "signing_cert", "accounts")


# ------------------------------------------------------------------------------------------- material


def signing_argv(openssl: str, key: Path, crt: Path) -> list[str]:
    """A self-signed RSA 2048 token-signing certificate (10 years)."""
    return [
        openssl, "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
        "-subj", "/CN=imagegate stack token signer", "-keyout", str(key), "-out", str(crt),
        "-addext", "keyUsage=critical,digitalSignature",
        "-addext", "subjectKeyIdentifier=hash",
    ]


def new_accounts() -> dict[str, dict]:
    """:data:`ACCOUNTS` with a fresh random password each."""
    return {name: {**spec, "password": secrets.token_urlsafe(18)} for name, spec in ACCOUNTS.items()}


def token_material(auth_dir: Path, old: dict | None) -> dict:
    """TLS, signing and account material in ``auth_dir``: the old one while its files are all there."""
    auth_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(auth_dir, 0o700)
    if old and all(Path(old.get(k) or "").is_file() for k in MATERIAL_FILES):
        return {k: old[k] for k in MATERIAL_FILES}
    material = make_tls(auth_dir)
    openssl = require_tool("openssl", "openssl", "to make the token registry's signing certificate")
    key, crt = auth_dir / "signing.key", auth_dir / "signing.crt"
    run(signing_argv(openssl, key, crt), what="openssl (token signing certificate)")
    os.chmod(key, 0o600)
    accounts = auth_dir / "accounts.json"
    write_file(accounts, json.dumps(new_accounts(), indent=2, sort_keys=True) + "\n", 0o600)
    material.update(signing_key=str(key), signing_cert=str(crt), accounts=str(accounts))
    return material


def load_accounts(material: dict) -> dict[str, dict]:
    return json.loads(Path(material["accounts"]).read_text())


def sync_accounts(material: dict) -> dict[str, dict]:
    """The accounts of :data:`ACCOUNTS` (grants and lifetimes as the code says now) with the passwords kept in
    the accounts file (a new one for a new account); the file is rewritten when that changes it."""
    try:
        stored = load_accounts(material)
    except (OSError, ValueError):
        stored = {}
    accounts = {
        name: {**spec, "password": (stored.get(name) or {}).get("password") or secrets.token_urlsafe(18)}
        for name, spec in ACCOUNTS.items()
    }
    if accounts != stored:
        write_file(Path(material["accounts"]), json.dumps(accounts, indent=2, sort_keys=True) + "\n", 0o600)
    return accounts


def issuer_spec() -> str:
    """What the issuer grants (accounts without passwords, anonymous) and the digest of its code: a running issuer
    with another spec is restarted by `up`."""
    code = sha256_file(ISSUER_SCRIPT)
    return json.dumps({"accounts": ACCOUNTS, "anonymous": ANONYMOUS, "leeway": REGISTRY_LEEWAY, "code": code}, sort_keys=True)


def issuer_config(port: int, material: dict, accounts: dict[str, dict], request_log: Path) -> dict:
    """The issuer's config document (:func:`localstack.token_issuer.parse_config`); passwords only as hashes."""
    return {
        "listen": {"host": "127.0.0.1", "port": port},
        "tls": {"cert": material["server_cert"], "key": material["server_key"]},
        "service": SERVICE,
        "issuer": ISSUER,
        "signing": {"key": material["signing_key"], "cert": material["signing_cert"]},
        "registry_leeway": REGISTRY_LEEWAY,
        "log": str(request_log),
        "anonymous": ANONYMOUS,
        "anonymous_lifetime": 300,
        "accounts": {
            name: {
                "password": hash_password(acc["password"]),
                **{k: acc[k] for k in ("access", "lifetime", "expires_in") if k in acc},
            }
            for name, acc in sorted(accounts.items())
        },
    }


def token_auth_block(realm: str, material: dict) -> dict:
    """What ``registries.registry_config`` needs for ``auth: token`` behind TLS."""
    return {
        "server_cert": material["server_cert"],
        "server_key": material["server_key"],
        "realm": realm,
        "service": SERVICE,
        "issuer": ISSUER,
        "rootcertbundle": material["signing_cert"],
    }


# ------------------------------------------------------------------------------------- token client


def https_request(
    url: str, cafile: str, *, method: str = "GET", headers: dict | None = None, timeout: float = 5.0
) -> tuple[int, dict, bytes]:
    """(status, lower-cased headers, body) of one https request trusting ``cafile``."""
    parts = urlsplit(url)
    ctx = ssl.create_default_context(cafile=cafile)
    conn = http.client.HTTPSConnection(parts.netloc, timeout=timeout, context=ctx)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(method, path or "/", headers={"User-Agent": "imagegate-stack/1", **(headers or {})})
        resp = conn.getresponse()
        body = resp.read(1 << 20)
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def fetch_token(
    realm: str, cafile: str, scopes: list[str], user: str | None = None, password: str | None = None
) -> str:
    """A token from ``realm`` for ``scopes`` (anonymous without ``user``); StackError when refused."""
    query = urlencode([("service", SERVICE), *(("scope", s) for s in scopes)])
    headers = {"Authorization": basic(user, password or "")} if user else {}
    status, _, body = https_request(f"{realm}?{query}", cafile, headers=headers)
    if status != 200:
        raise StackError(f"the token issuer at {realm} answered {status}: {body[:300].decode(errors='replace')}")
    return json.loads(body)["token"]


def issuer_healthy(rec: dict, timeout: float = 3.0) -> bool:
    try:
        status, _, body = https_request(f"{rec['url']}/healthz", rec["ca_cert"], timeout=timeout)
    except (OSError, http.client.HTTPException, ssl.SSLError):
        return False
    return status == 200 and body.strip() == b"ok"


def token_registry_healthy(rec: dict, timeout: float = 3.0) -> bool:
    """``GET /v2/`` answers 401 with a Bearer challenge naming our realm and service, and 200 with a token from
    the issuer (so the registry trusts the issuer's signatures)."""
    try:
        status, headers, _ = https_request(f"{rec['url']}/v2/", rec["ca_cert"], timeout=timeout)
        challenge = headers.get("www-authenticate", "")
        if status != 401 or f'realm="{rec["realm"]}"' not in challenge or f'service="{SERVICE}"' not in challenge:
            return False
        token = fetch_token(rec["realm"], rec["ca_cert"], [])
        status, _, _ = https_request(
            f"{rec['url']}/v2/", rec["ca_cert"], headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )
        return status == 200
    except (OSError, http.client.HTTPException, ssl.SSLError, StackError, ValueError, KeyError):
        return False


def token_registry_digest(rec: dict, repo: str, tag: str, accept: str) -> str | None:
    """The manifest digest ``repo:tag`` has in the token registry (asked as the push account), or None."""
    try:
        account = load_accounts(rec)[PUSH_USER]
        token = fetch_token(rec["realm"], rec["ca_cert"], [f"repository:{repo}:pull"], PUSH_USER, account["password"])
        status, headers, _ = https_request(
            f"{rec['url']}/v2/{repo}/manifests/{tag}", rec["ca_cert"], method="HEAD",
            headers={"Authorization": f"Bearer {token}", "Accept": accept}, timeout=10,
        )
    except (OSError, http.client.HTTPException, ssl.SSLError, StackError, ValueError, KeyError):
        return None
    return headers.get("docker-content-digest") if status == 200 else None


# ----------------------------------------------------------------------------------------- the issuer


def issuer_record(port: int, material: dict, config: Path, request_log: Path) -> dict:
    url = f"https://127.0.0.1:{port}"
    return {
        "port": port,
        "url": url,
        "realm": f"{url}/token",
        "service": SERVICE,
        "issuer": ISSUER,
        "config": str(config),
        "request_log": str(request_log),
        "spec": issuer_spec(),
        **{k: material[k] for k in MATERIAL_FILES},
    }


def start_issuer(state_dir: Path, old: dict | None, material: dict) -> dict:
    """Start the issuer on its old port when free (else any free one; up to 3 tries when the port is taken)."""
    idir = state_dir / "token-registry"
    log = state_dir / "token-issuer.log"
    request_log = state_dir / "token-issuer-requests.log"
    request_log.touch(mode=0o600, exist_ok=True)
    accounts = sync_accounts(material)
    preferred = int(old["port"]) if old and old.get("port") else None
    for attempt in range(3):
        port = preferred if (attempt == 0 and preferred and port_is_free(preferred)) else free_port()
        config = idir / "issuer.json"
        doc = issuer_config(port, material, accounts, request_log)
        write_file(config, json.dumps(doc, indent=2) + "\n", 0o600)
        proc, rec = spawn([sys.executable, str(ISSUER_SCRIPT), str(config)], log)
        rec.update(issuer_record(port, material, config, request_log))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            if issuer_healthy(rec, timeout=1.0):
                return rec
            time.sleep(0.1)
        if proc.poll() is None:
            stop_process("token-issuer", rec, 5)
            raise StackError(f"token-issuer (pid {proc.pid}) did not answer /healthz within 20 s. Log {log}:\n{tail(log)}")
        if "Address already in use" not in tail(log) or attempt == 2:
            break
        say(f"token-issuer: port {port} was taken, retrying on another port")
    raise StackError(f"token-issuer exited while starting (exit {proc.returncode}). Log {log}:\n{tail(log)}")


def ensure_token_issuer(state_dir: Path, old: dict | None) -> dict:
    name = "token-issuer"
    material = token_material(state_dir / "token-registry" / "auth", old)
    same = old and all(old.get(k) == material[k] for k in MATERIAL_FILES) and old.get("spec") == issuer_spec()
    if old and same and proc_matches(old) and issuer_healthy(old):
        say(f"{name}: reusing pid {old['pid']} at {old['realm']}")
        return old
    if old and proc_matches(old):
        stop_process(name, old, 10)  # ours, but unhealthy, on other material, or other grants or code
    rec = start_issuer(state_dir, old, material)
    say(f"{name}: started pid {rec['pid']} at {rec['realm']} (RS256, requests logged to {rec['request_log']})")
    return rec
