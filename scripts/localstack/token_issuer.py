"""A token issuer for the local stack's ``token-registry``: the Docker registry token spec, stdlib only.

``python3 token_issuer.py CONFIG.json`` serves (https when the config names a certificate)::

    GET /token?service=SERVICE&scope=repository:NAME:pull,push[&scope=...][&account=NAME]
        Authorization: Basic ... (optional)
    -> 200 {"token": JWT, "access_token": JWT, "expires_in": N, "issued_at": RFC3339}

    GET /healthz -> 200 "ok" (not logged)

What a request gets (https://distribution.github.io/distribution/spec/auth/token/):

* no ``Authorization``: the anonymous grants of the config (``anonymous``), e.g. pull on ``public/*``;
* ``Basic`` credentials of an account: that account's grants; a wrong password or an unknown account is
  refused with 401 (one message for both, so accounts cannot be probed);
* every requested scope gets the intersection of the actions asked for and the actions granted; a scope
  with nothing granted is left out of the token (the registry then answers 401 ``insufficient_scope``,
  as Docker Hub does), so a private repository is refused by the registry, not by the issuer.

The JWT is RS256, signed by ``openssl dgst -sign`` with the key of the config (so the stack stays
stdlib-only; ``openssl`` already makes its certificates), with the signing certificate in ``x5c``:
distribution 2.8 verifies that chain against ``auth.token.rootcertbundle``. Claims: ``iss``, ``sub``
(the account, "" when anonymous), ``aud`` (the service), ``exp``, ``nbf``, ``iat``, ``jti``, ``access``.

Lifetimes: each account has a ``lifetime``, the seconds after which the *registry* refuses its token.
distribution accepts a token until ``exp`` plus a 60 s clock-skew leeway, so the issuer writes
``exp = iat + lifetime - registry_leeway``; ``expires_in`` (what the client is told) is the lifetime
unless the account sets another value (a test account that says 300 s for a token the registry refuses
after 3 s shows what a client does with a token that dies early).

Every token request (issued or refused) is one JSON line in the config's ``log``: time, remote, account,
service, scopes asked for, access granted, status, jti, lifetime, expires_in, user agent. Never a password
or a token.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import fnmatch
import hashlib
import hmac
import http.server
import json
import re
import secrets
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

ACTIONS = ("pull", "push", "delete", "*")
# distribution's repository name grammar (reference.NameRegexp, lower case components, / separated).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
MAX_SCOPES = 32
MAX_NAME = 255
MAX_LIFETIME = 86400
PBKDF2_ITERATIONS = 50_000
REQUEST_TIMEOUT = 10.0  # seconds a client may take to send its request (a slow client holds one thread only)


class ConfigError(Exception):
    """The issuer's config file is unusable."""


class RequestError(Exception):
    """A token request that cannot be answered with a token: ``status`` and a Docker-style error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# ------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Grant:
    """Actions on the repositories matching ``pattern`` (``fnmatch``: ``*`` everything, ``public/*`` a namespace)."""

    pattern: str
    actions: frozenset[str]


@dataclass(frozen=True)
class Account:
    name: str
    password_hash: str = field(repr=False)
    grants: tuple[Grant, ...]
    lifetime: int
    expires_in: int


@dataclass(frozen=True)
class IssuerConfig:
    host: str
    port: int
    service: str
    issuer: str
    signing_key: str
    signing_cert: str
    log: str
    anonymous: tuple[Grant, ...]
    accounts: dict[str, Account]
    anonymous_lifetime: int = 300
    registry_leeway: int = 60
    tls_cert: str | None = None
    tls_key: str | None = None


def _grants(raw: Any, where: str) -> tuple[Grant, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where} must be a list of {{repository, actions}}")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("repository"), str):
            raise ConfigError(f"{where}[{i}] needs a 'repository' pattern")
        actions = item.get("actions")
        if not isinstance(actions, list) or not actions or any(a not in ACTIONS for a in actions):
            raise ConfigError(f"{where}[{i}].actions must be a non-empty subset of {list(ACTIONS)}")
        out.append(Grant(item["repository"], frozenset(actions)))
    return tuple(out)


def _seconds(raw: Any, where: str, default: int | None = None) -> int:
    if raw is None and default is not None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 < raw <= MAX_LIFETIME:
        raise ConfigError(f"{where} must be whole seconds in 1..{MAX_LIFETIME}")
    return raw


def parse_config(doc: Any) -> IssuerConfig:
    """The issuer's config from its JSON document (see ``registry_token.issuer_config``)."""
    if not isinstance(doc, dict):
        raise ConfigError("the config must be a JSON object")
    try:
        accounts = {}
        for name, acc in (doc.get("accounts") or {}).items():
            where = f"accounts[{name!r}]"
            if not isinstance(acc, dict) or not str(acc.get("password", "")).startswith("pbkdf2_sha256$"):
                raise ConfigError(f"{where}.password must be a pbkdf2_sha256$ hash (see hash_password)")
            lifetime = _seconds(acc.get("lifetime"), f"{where}.lifetime", 300)
            accounts[name] = Account(
                name=name,
                password_hash=acc["password"],
                grants=_grants(acc.get("access", []), f"{where}.access"),
                lifetime=lifetime,
                expires_in=_seconds(acc.get("expires_in"), f"{where}.expires_in", lifetime),
            )
        tls = doc.get("tls") or {}
        return IssuerConfig(
            host=str(doc["listen"]["host"]),
            port=int(doc["listen"]["port"]),
            service=str(doc["service"]),
            issuer=str(doc["issuer"]),
            signing_key=str(doc["signing"]["key"]),
            signing_cert=str(doc["signing"]["cert"]),
            log=str(doc["log"]),
            anonymous=_grants(doc.get("anonymous", []), "anonymous"),
            accounts=accounts,
            anonymous_lifetime=_seconds(doc.get("anonymous_lifetime"), "anonymous_lifetime", 300),
            registry_leeway=int(doc.get("registry_leeway", 60)),
            tls_cert=tls.get("cert"),
            tls_key=tls.get("key"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"missing or bad setting: {exc!r}") from None


# ------------------------------------------------------------------------------------------ passwords


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """``pbkdf2_sha256$ITERATIONS$SALT$HASH`` (hashlib's PBKDF2: the stdlib has no bcrypt)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, iterations, salt, expected = encoded.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), expected)


# --------------------------------------------------------------------------------------------- scopes


@dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def parse_scopes(values: list[str]) -> list[Scope]:
    """The scopes of a request: every ``scope`` parameter, each possibly several scopes separated by spaces.

    ``repository:NAME:ACTIONS`` (NAME in distribution's grammar; ``repository(CLASS)`` as type too);
    other resource types (``registry:catalog:*``) are kept so they can be logged, and never granted.
    """
    scopes: list[Scope] = []
    for value in values:
        for text in value.split():
            if len(scopes) >= MAX_SCOPES:
                raise RequestError(400, "invalid_request", f"more than {MAX_SCOPES} scopes")
            kind, sep1, rest = text.partition(":")
            name, sep2, actions = rest.rpartition(":")
            if not (sep1 and sep2 and kind and name and actions) or len(name) > MAX_NAME:
                raise RequestError(400, "invalid_request", f"malformed scope {text[:100]!r} (TYPE:NAME:ACTIONS)")
            wanted = tuple(dict.fromkeys(a for a in actions.split(",") if a))
            if kind.split("(", 1)[0] == "repository" and not REPOSITORY.match(name):
                raise RequestError(400, "invalid_request", f"invalid repository name in scope {text[:100]!r}")
            scopes.append(Scope(kind, name, wanted))
    return scopes


def entitled(grants: tuple[Grant, ...], repository: str) -> frozenset[str]:
    """Every action the grants give on ``repository``."""
    actions: set[str] = set()
    for grant in grants:
        if fnmatch.fnmatchcase(repository, grant.pattern):
            actions |= grant.actions
    return frozenset(actions)


def granted_access(grants: tuple[Grant, ...], scopes: list[Scope]) -> list[dict]:
    """The ``access`` claim: for each repository scope, the actions asked for that the grants allow."""
    merged: dict[tuple[str, str], list[str]] = {}
    for scope in scopes:
        if scope.type.split("(", 1)[0] != "repository":
            continue
        allowed = entitled(grants, scope.name)
        for action in scope.actions:
            if action in allowed:
                merged.setdefault((scope.type, scope.name), [])
                if action not in merged[(scope.type, scope.name)]:
                    merged[(scope.type, scope.name)].append(action)
    return [{"type": t, "name": n, "actions": acts} for (t, n), acts in merged.items()]


# ------------------------------------------------------------------------------------------------ JWT


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pem_to_der(pem: str) -> bytes:
    """The DER bytes of the first certificate of a PEM text."""
    m = re.search(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", pem, re.S)
    if not m:
        raise ConfigError("no PEM certificate found")
    return base64.b64decode("".join(m.group(1).split()))


def openssl_signer(key_path: str) -> Callable[[bytes], bytes]:
    """RS256 with the PEM key at ``key_path``: ``openssl dgst -sha256 -sign`` writes RSASSA-PKCS1-v1_5, exactly
    what JWS RS256 is (the stdlib has no RSA; the stack already needs ``openssl``)."""

    def sign(data: bytes) -> bytes:
        proc = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", key_path], input=data, capture_output=True, timeout=10, check=False
        )
        if proc.returncode != 0 or not proc.stdout:
            raise RuntimeError(f"openssl dgst -sign failed: {proc.stderr.decode(errors='replace')[:300]}")
        return proc.stdout

    return sign


def encode_jwt(header: dict, claims: dict, sign: Callable[[bytes], bytes]) -> str:
    signing_input = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + b64url(
        json.dumps(claims, separators=(",", ":")).encode()
    )
    return signing_input + "." + b64url(sign(signing_input.encode()))


def decode_jwt_unverified(token: str) -> tuple[dict, dict]:
    """(header, claims) of a JWT, signature NOT checked (for tests and logs)."""
    head, claims, _sig = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(head))), json.loads(base64.urlsafe_b64decode(pad(claims)))


def rfc3339(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def token_claims(
    config: IssuerConfig, account: Account | None, access: list[dict], now: int, jti: str
) -> tuple[dict, int]:
    """(claims, expires_in) of a token for ``account`` (None: anonymous) issued at ``now``."""
    lifetime = account.lifetime if account else config.anonymous_lifetime
    expires_in = account.expires_in if account else lifetime
    claims = {
        "iss": config.issuer,
        "sub": account.name if account else "",
        "aud": config.service,
        "exp": now + lifetime - config.registry_leeway,
        "nbf": now,
        "iat": now,
        "jti": jti,
        "access": access,
    }
    return claims, expires_in


# ----------------------------------------------------------------------------------------- the issuer


class Issuer:
    """Answers token requests (no HTTP here: :class:`Handler` translates)."""

    def __init__(self, config: IssuerConfig, sign: Callable[[bytes], bytes], x5c: list[str]) -> None:
        self.config, self._sign, self._x5c = config, sign, x5c
        self._log_lock = threading.Lock()

    def authenticate(self, authorization: str | None) -> Account | None:
        """The account of a ``Basic`` header; None without a header; RequestError 401 for bad credentials."""
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise RequestError(401, "UNAUTHORIZED", "only Basic credentials are accepted here")
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise RequestError(401, "UNAUTHORIZED", "malformed Basic credentials") from None
        account = self.config.accounts.get(user)
        # Hash even for an unknown user, so the answer takes as long and says the same.
        encoded = account.password_hash if account else hash_password("", salt=b"\0" * 16)
        if not sep or not verify_password(password, encoded) or account is None:
            raise RequestError(401, "UNAUTHORIZED", "incorrect username or password")
        return account

    def issue(self, query: dict[str, list[str]], authorization: str | None) -> tuple[dict, dict]:
        """(response body, log fields) for a token request; RequestError when refused."""
        service = (query.get("service") or [self.config.service])[0]
        if service != self.config.service:
            raise RequestError(400, "invalid_request", f"unknown service {service[:100]!r}")
        scopes = parse_scopes(query.get("scope", []))
        account = self.authenticate(authorization)
        claimed = (query.get("account") or [None])[0]
        if account and claimed and claimed != account.name:
            raise RequestError(400, "invalid_request", "the account parameter does not match the credentials")
        grants = account.grants if account else self.config.anonymous
        access = granted_access(grants, scopes)
        now = int(time.time())
        claims, expires_in = token_claims(self.config, account, access, now, secrets.token_hex(16))
        header = {"typ": "JWT", "alg": "RS256", "x5c": self._x5c}
        token = encode_jwt(header, claims, self._sign)
        body = {"token": token, "access_token": token, "expires_in": expires_in, "issued_at": rfc3339(now)}
        fields = {
            "account": account.name if account else None,
            "anonymous": account is None,
            "scopes": [str(s) for s in scopes],
            "granted": [f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access],
            "jti": claims["jti"],
            "lifetime": account.lifetime if account else self.config.anonymous_lifetime,
            "expires_in": expires_in,
            "exp": claims["exp"],
        }
        return body, fields

    def log(self, entry: dict) -> None:
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._log_lock, open(self.config.log, "a", encoding="utf-8") as f:
            f.write(line)


class Handler(http.server.BaseHTTPRequestHandler):
    issuer: Issuer  # set on the subclass made by make_server
    protocol_version = "HTTP/1.1"
    server_version = "imagegate-token-issuer/1"
    timeout = REQUEST_TIMEOUT

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        if url.path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
            return
        if url.path != "/token":
            self._send_json(404, {"errors": [{"code": "NOT_FOUND", "message": "the token endpoint is /token"}]})
            return
        query = parse_qs(url.query, keep_blank_values=False)
        entry: dict[str, Any] = {
            "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
            "remote": self.client_address[0],
            "method": "GET",
            "service": (query.get("service") or [None])[0],
            "user_agent": (self.headers.get("User-Agent") or "")[:200],
        }
        try:
            body, fields = self.issuer.issue(query, self.headers.get("Authorization"))
        except RequestError as exc:
            user = _basic_user(self.headers.get("Authorization"))
            entry.update(status=exc.status, error=exc.code, account=user, anonymous=user is None,
                         scopes=query.get("scope", [])[:MAX_SCOPES])
            self.issuer.log(entry)
            headers = {"WWW-Authenticate": 'Basic realm="imagegate token issuer"'} if exc.status == 401 else {}
            self._send_json(exc.status, {"errors": [{"code": exc.code, "message": exc.message}]}, headers)
            return
        except Exception as exc:  # a signing failure: answer 500, never hang or die
            entry.update(status=500, error=type(exc).__name__)
            self.issuer.log(entry)
            self._send_json(500, {"errors": [{"code": "UNKNOWN", "message": "the issuer could not sign a token"}]})
            return
        entry.update(status=200, **fields)
        self.issuer.log(entry)
        self._send_json(200, body)

    def do_POST(self) -> None:  # noqa: N802
        # The OAuth2 form (grant_type=password|refresh_token) is not served: clients fall back to GET.
        try:
            length = max(0, min(int(self.headers.get("Content-Length") or 0), 1 << 16))
        except ValueError:
            length = 0
        self.rfile.read(length)
        self._send_json(400, {"error": "unsupported_grant_type", "error_description": "use GET /token with Basic"})

    def _send_json(self, status: int, doc: dict, headers: dict | None = None) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json", headers)

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        sys.stderr.write("%s - %s\n" % (self.address_string(), format % args))


def _basic_user(authorization: str | None) -> str | None:
    """The user name of a Basic header (for the log of a refused request), or None."""
    if not authorization or not authorization.lower().startswith("basic "):
        return None
    try:
        user = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")[0]
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return user[:100]


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, addr: tuple[str, int], handler: type, context: ssl.SSLContext | None) -> None:
        self._context = context
        super().__init__(addr, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self._context is None:
            return sock, addr
        sock.settimeout(REQUEST_TIMEOUT)  # bounds the handshake too; done in the handler thread
        return self._context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        sys.stderr.write(f"{client_address[0]} - connection error: {sys.exc_info()[1]!r}\n")


def make_server(config: IssuerConfig) -> http.server.ThreadingHTTPServer:
    with open(config.signing_cert, encoding="ascii") as f:
        x5c = [base64.b64encode(pem_to_der(f.read())).decode()]
    issuer = Issuer(config, openssl_signer(config.signing_key), x5c)
    handler = type("BoundHandler", (Handler,), {"issuer": issuer})
    context = None
    if config.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(config.tls_cert, config.tls_key)
    return _Server((config.host, config.port), handler, context)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: token_issuer.py CONFIG.json", file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8") as f:
            config = parse_config(json.load(f))
        server = make_server(config)
    except (OSError, ValueError, ConfigError) as exc:
        print(f"token_issuer: {exc}", file=sys.stderr)
        return 1
    scheme = "https" if config.tls_cert else "http"
    print(f"token_issuer: serving {scheme}://{config.host}:{config.port}/token for {config.service!r}", file=sys.stderr)
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.exit(main(sys.argv))
