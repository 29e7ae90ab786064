"""HTTP to registries: TLS and scheme, one deadline per operation, size caps, redirects, retries, auth.

Everything a registry sends is hostile until verified and bounded:

- **Deadline.** Each registry operation (``resolve``, ``inspect``, reading a layer) ends within
  ``deadline`` seconds (default 60), whatever the server does: every socket connect, read, write
  and TLS handshake is bounded by the time left, so a server that sends one byte every few
  seconds (which never trips a per-read timeout) cannot keep a check running (:mod:`imagegate._netio`).
- **Size.** Every body is read with a cap (manifests 4 MiB, configs 16 MiB, tokens 1 MiB, error
  bodies 64 KiB) and only ``identity`` encoding is accepted, so no response can fill memory.
- **Redirects** are followed by hand, at most 5; a redirect from https to plain http is refused
  unless the target may use plain http anyway (loopback or ``insecure_registries``), and the
  ``Authorization`` header never follows a redirect to another origin.
- **Retries**: 429, 5xx and dropped connections, at most ``retries`` times, never past the deadline.
- **Scheme.** Docker's order for loopback and ``insecure_registries``: https, then plain http. The
  answer is remembered for the process and, when it was plain http, in the host's registry cache
  (``memory``), so a new process asks http first there; a remembered scheme that no longer answers
  (a connection error, or the 400 a TLS server sends to plain http) is forgotten and Docker's order
  applies. Only hosts that may use plain http anyway are ever asked over it, and no TLS context is
  made for a registry spoken to over plain http.
- **Credentials stay home.** Basic credentials go to a token realm only over https or on the
  registry's own host; a plain-http realm on another host that is not loopback is refused, and so
  is a remote registry's realm on this machine (it would reach local services). No
  secret appears in an error: text a registry sends back is cut short, stripped of control
  characters and of anything equal to a credential we hold.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Protocol
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from imagegate._auth import Challenge, Credentials, DockerConfig, parse_challenge
from imagegate._errors import (
    AuthenticationError,
    InsecureRegistry,
    ManifestUnknown,
    RegistryError,
    RegistryUnreachable,
    redact_url,
)
from imagegate._netio import (
    ConnectError,
    DeadlineTransport,
    Headers,
    InjectedTransport,
    Response,
    Sender,
    TransportError,
    deadline,
    deadline_passed,
    remaining,
    split_url,
    ssl_context,
)
from imagegate._reference import Reference, is_loopback_host

if TYPE_CHECKING:
    import ssl

    import httpx

log = logging.getLogger("imagegate.registry")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_REDIRECTS = 5
MAX_TOKEN_BYTES = 1 << 20
MAX_ERROR_BYTES = 64 << 10
MAX_HEADER_TEXT = 4096
MAX_TOKEN_LENGTH = 16 << 10
DEFAULT_DEADLINE = 60.0


# -- replies --------------------------------------------------------------------------------------


class SchemeMemory(Protocol):
    """Where the scheme a registry speaks is remembered across processes (the disk cache)."""

    def get(self, kind: str, registry: str, repository: str, key: str, *, limit: int) -> tuple[bytes, dict[str, Any]] | None: ...

    def put(self, kind: str, registry: str, repository: str, key: str, body: bytes, meta: dict[str, Any] | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class Reply:
    """A registry's answer, read whole (within its cap)."""

    status: int
    headers: Headers
    content: bytes
    url: str

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value[:MAX_HEADER_TEXT]


class Transport:
    """Requests to registries for one set of settings; shared by every registry operation.

    Args:
        docker_config: where credentials come from; default ``~/.docker/config.json``.
        insecure_registries: hosts (``host:port``) allowed over plain http besides loopback.
        ca_file: an extra CA bundle to trust (also read: ``/etc/docker/certs.d/HOST/*.crt``).
        timeout: seconds for each connect, read or write.
        deadline: seconds for each whole operation (see :meth:`operation`).
        retries, backoff, max_backoff: retry policy for 429/5xx and dropped connections.
        transport: an httpx transport to use instead of the network (tests: an in-process registry).
        memory: where a plain-http registry's scheme is remembered for later processes (or None).
    """

    def __init__(
        self,
        *,
        docker_config: DockerConfig | None = None,
        insecure_registries: Iterable[str] = (),
        ca_file: str | os.PathLike[str] | None = None,
        certs_dir: str | os.PathLike[str] = "/etc/docker/certs.d",
        timeout: float = 10.0,
        deadline: float = DEFAULT_DEADLINE,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        memory: SchemeMemory | None = None,
    ) -> None:
        if retries < 0 or timeout <= 0 or backoff < 0 or deadline <= 0:
            raise ValueError("retries and backoff must be >= 0, timeout and deadline > 0")
        self._docker_config = docker_config
        self.insecure = frozenset(h.lower() for h in insecure_registries)
        self._ca_file = str(ca_file) if ca_file else None
        self._certs_dir = os.fspath(certs_dir)
        self._timeout = timeout
        self.deadline = deadline
        self._retries = retries
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._sleep = sleep
        self._memory = memory
        self._injected = InjectedTransport(transport) if transport is not None else None
        self._lock = threading.Lock()
        self._clients: dict[str, Sender] = {}
        self._schemes: dict[str, str] = {}
        self._creds: dict[str, Credentials | None] = {}
        self._auth: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self.round_trips = 0  # HTTP requests sent, auth, redirects and retries included

    # -- the operation deadline -----------------------------------------------------------------

    def operation(self) -> contextlib.AbstractContextManager[None]:
        """Bound everything inside to ``deadline`` seconds (an enclosing operation's deadline wins)."""
        return deadline(self.deadline)

    def time_left(self) -> float:
        """Seconds left of the current operation (its whole deadline outside one)."""
        left = remaining()
        return self.deadline if left is None else max(left, 0.0)

    def _check_time(self, ref: Reference, url: str) -> None:
        left = remaining()
        if left is not None and left <= 0:
            raise self._timed_out(ref, url)

    def _timed_out(self, ref: Reference, url: str) -> RegistryUnreachable:
        return RegistryUnreachable(
            f"{ref.registry} did not answer within the {self.deadline:g} s deadline; check the registry and the "
            "network, or raise the deadline (--timeout SECONDS, RegistryClient(deadline=...))",
            registry=ref.registry,
            url=url,
            temporary=True,
        )

    # -- requests ----------------------------------------------------------------------------------

    def request(self, ref: Reference, method: str, path: str, *, accept: str | None = None, limit: int) -> Reply:
        """``METHOD /v2/REPOSITORY/PATH`` with auth, scheme choice, retries and redirects; errors raised."""
        response, url = self._open(ref, method, path, accept)
        try:
            return Reply(response.status_code, response.headers, self._read(ref, response, url, limit), url)
        finally:
            response.close()

    def send(self, ref: Reference, method: str, path: str, *, body: bytes = b"", content_type: str | None = None,
             url: str | None = None, limit: int = MAX_ERROR_BYTES) -> Reply:
        """A write (``POST``/``PUT``/``PATCH``) to *ref*'s repository: ``/v2/REPOSITORY/PATH``, or *url* (an upload
        location the registry gave, already checked by the caller to be on the registry's own origin).

        What reads get, and: a token for ``repository:NAME:pull,push``; no redirect followed (a body is never sent on
        to another place: stricter than Docker); the reply's body capped at *limit*.
        """
        write = _Write(body, content_type)
        if url is None:
            response, final = self._open(ref, method, path, None, write)
        else:
            response, final = self._attempts(ref, urlsplit(url).scheme, method, path, None, write, url)
        try:
            return Reply(response.status_code, response.headers, self._read(ref, response, final, limit), final)
        finally:
            response.close()

    @contextlib.contextmanager
    def stream(self, ref: Reference, path: str, *, limit: int) -> Iterator[tuple[Reply, Iterator[bytes]]]:
        """``GET /v2/REPOSITORY/PATH`` with the body as chunks (at most *limit* bytes in all)."""
        response, url = self._open(ref, "GET", path, None)
        try:
            yield Reply(response.status_code, response.headers, b"", url), self._chunks(ref, response, url, limit)
        finally:
            response.close()

    def _open(self, ref: Reference, method: str, path: str, accept: str | None,
              write: _Write | None = None) -> tuple[Response, str]:
        """An open, successful response (its body unread) on the scheme the registry speaks."""
        host = ref.api_host
        if host not in self._schemes and self._remembered_http(ref):
            try:
                opened = self._attempts(ref, "http", method, path, accept, write)
            except RegistryError as exc:
                if deadline_passed() or not (isinstance(exc, RegistryUnreachable) or exc.status == 400):
                    raise
                self._remember(ref, None)  # it changed (now https?): Docker's order again
            else:
                self._schemes.setdefault(host, "http")
                return opened
        scheme = self._schemes.get(host, "https")
        try:
            opened = self._attempts(ref, scheme, method, path, accept, write)
        except RegistryUnreachable as exc:
            if _untrusted_certificate(exc):
                raise RegistryUnreachable(
                    f"the TLS certificate of {ref.registry} is not trusted ({_cause(exc)}); pass --ca-file PEM "
                    f"(ca_file=...) or put the CA in /etc/docker/certs.d/{ref.registry}/ca.crt",
                    registry=ref.registry,
                    url=exc.url,
                ) from exc
            if host in self._schemes or not self.plain_http_allowed(ref.registry) or deadline_passed():
                if _looks_like_plain_http(exc):
                    raise InsecureRegistry(
                        f"{ref.registry} answered https with plain http; if it really serves plain http, "
                        f"pass --insecure-registry {ref.registry} (insecure_registries=[{ref.registry!r}])",
                        registry=ref.registry,
                        url=exc.url,
                    ) from exc
                raise
            scheme = "http"  # Docker's rule for insecure registries: try https, fall back to http
            opened = self._attempts(ref, scheme, method, path, accept, write)
            self._remember(ref, "http")
        self._schemes.setdefault(host, scheme)
        return opened

    def _remembered_http(self, ref: Reference) -> bool:
        """Whether an earlier process found *ref*'s registry speaking plain http (only asked where allowed)."""
        if self._memory is None or not self.plain_http_allowed(ref.registry):
            return False
        found = self._memory.get("scheme", ref.api_host, "", "", limit=16)
        return found is not None and found[0] == b"http"

    def _remember(self, ref: Reference, scheme: str | None) -> None:
        if self._memory is not None:
            self._memory.put("scheme", ref.api_host, "", "", (scheme or "").encode())

    def _attempts(self, ref: Reference, scheme: str, method: str, path: str, accept: str | None,
                  write: _Write | None = None, full_url: str | None = None) -> tuple[Response, str]:
        url = full_url or f"{scheme}://{ref.api_host}/v2/{ref.repository}/{path}"
        headers = {"Accept": accept} if accept else {}
        if write is not None:
            headers.update(write.headers())
        authorized = False
        attempt = 0
        while True:
            self._check_time(ref, url)
            auth = self._auth_header(ref, push=write is not None)
            request_headers = dict(headers, **({"Authorization": auth} if auth else {}))
            try:
                response, final_url = self._send_following(ref, method, url, request_headers, write)
            except TransportError as exc:
                if deadline_passed():
                    raise self._timed_out(ref, url) from exc
                if attempt < self._retries and not isinstance(exc, ConnectError):
                    attempt += 1
                    self._pause(ref, url, self._delay(attempt, None))
                    continue
                raise RegistryUnreachable(
                    f"cannot reach {ref.registry} ({type(exc).__name__}: {_clean(str(exc), self._secrets(ref))}); "
                    "check the host and port, that the registry is running, and network/proxy settings",
                    registry=ref.registry,
                    url=url,
                    temporary=True,
                ) from exc
            status = response.status_code
            try:
                if status in (401, 403) and not authorized:
                    challenge = parse_challenge(response.headers.get("WWW-Authenticate", "")[:MAX_HEADER_TEXT])
                    if challenge is not None and status == 401:
                        response.close()
                        self._authenticate(ref, challenge)
                        authorized = True
                        continue
                if status in RETRY_STATUSES and attempt < self._retries:
                    response.close()
                    attempt += 1
                    self._pause(ref, url, self._delay(attempt, response.headers.get("Retry-After")))
                    continue
                if status >= 400:
                    body = self._read(ref, response, final_url, MAX_ERROR_BYTES, truncate=True)
                    raise self._error(ref, status, body, final_url)
                _require_identity(ref, response, final_url)
            except BaseException:
                response.close()
                raise
            return response, final_url

    def _send_following(self, ref: Reference, method: str, url: str, headers: dict[str, str],
                        write: _Write | None = None) -> tuple[Response, str]:
        """Send, following at most MAX_REDIRECTS redirects by hand (none for a write)."""
        origin = _origin(url)
        for hop in range(MAX_REDIRECTS + 1):
            client = self._client(ref.api_host)
            self._count()
            log.debug("%s %s", method, redact_url(url))
            if write is None:
                response = client.send(method, url, _headers(headers), timeout=self._timeout)
            else:
                response = client.send(method, url, _headers(headers), body=write.body, timeout=self._timeout)
            if response.status_code not in (301, 302, 303, 307, 308):
                return response, url
            if write is not None:
                response.close()
                raise RegistryError(
                    f"{ref.registry} answered a {method} with a redirect ({response.status_code}); imagegate sends "
                    "what it pushes only to the registry itself, never on to another location",
                    registry=ref.registry, url=url, status=response.status_code,
                )
            location = response.headers.get("Location", "")[:MAX_HEADER_TEXT]
            response.close()
            target = self._redirect_target(ref, url, location)
            if _origin(target) != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if response.status_code == 303:
                method = "GET" if method != "HEAD" else "HEAD"
            url = target
        raise RegistryError(
            f"{ref.registry} redirected more than {MAX_REDIRECTS} times (a redirect loop?)",
            registry=ref.registry,
            url=url,
        )

    def _redirect_target(self, ref: Reference, url: str, location: str) -> str:
        try:
            target = urljoin(url, location)
            parts = urlsplit(target)
            port = parts.port
            split_url(target)  # a URL that can be sent at all (host, port, encoding)
        except ValueError:
            parts, port = None, None
        if not location or parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryError(
                f"{ref.registry} sent a redirect to an unusable location {_clean(location, ())!r}",
                registry=ref.registry,
                url=url,
            )
        if parts.scheme == "http" and urlsplit(url).scheme == "https":
            host = parts.hostname + (f":{port}" if port else "")
            if not (is_loopback_host(parts.hostname) or host.lower() in self.insecure):
                raise InsecureRegistry(
                    f"{ref.registry} redirected from https to plain http ({redact_url(target)}); refusing the downgrade",
                    registry=ref.registry,
                    url=url,
                )
        return target

    def _read(self, ref: Reference, response: Response, url: str, limit: int, *, truncate: bool = False) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in self._raw_chunks(ref, response, url):
            size += len(chunk)
            if size > limit:
                if truncate:
                    chunks.append(chunk[: len(chunk) - (size - limit)])
                    break
                raise RegistryError(
                    f"{redact_url(url)} is larger than {limit} bytes; refusing to read it",
                    registry=ref.registry,
                    url=url,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _chunks(self, ref: Reference, response: Response, url: str, limit: int) -> Iterator[bytes]:
        size = 0
        for chunk in self._raw_chunks(ref, response, url):
            size += len(chunk)
            if size > limit:
                raise RegistryError(f"{redact_url(url)} is larger than {limit} bytes; refusing to read it",
                                    registry=ref.registry, url=url)
            yield chunk

    def _raw_chunks(self, ref: Reference, response: Response, url: str) -> Iterator[bytes]:
        if not _identity(response):
            return  # never decompress what a registry sends (a gzip bomb); callers refuse such bodies
        try:
            for chunk in response.iter_raw():  # the bytes as sent: nothing is ever decoded
                self._check_time(ref, url)
                yield chunk
        except TransportError as exc:
            if deadline_passed():
                raise self._timed_out(ref, url) from exc
            raise RegistryUnreachable(
                f"{ref.registry} broke off the response ({type(exc).__name__}); try again",
                registry=ref.registry,
                url=url,
                temporary=True,
            ) from exc

    def _pause(self, ref: Reference, url: str, seconds: float) -> None:
        left = remaining()
        if left is not None and seconds >= left:
            raise self._timed_out(ref, url)
        self._sleep(seconds)

    def _count(self) -> None:
        with self._lock:
            self.round_trips += 1

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            seconds = _retry_after_seconds(retry_after[:100])
            if seconds is not None:
                return min(seconds, self._max_backoff)
        base = self._backoff * (2 ** (attempt - 1))
        jitter = int.from_bytes(os.urandom(2), "big") / 65535  # not `random`: one import less at start-up
        return min(base * (0.5 + jitter / 2), self._max_backoff)

    def _error(self, ref: Reference, status: int, body: bytes, url: str) -> RegistryError:
        codes, message = _error_body(body)
        message = _clean(message, self._secrets(ref))
        detail = f"{status} {message or _reason(status)}".strip()
        if status in (401, 403):
            creds = self._credentials(ref)
            who = f"as {creds.username!r} ({creds.source})" if creds and creds.username else "anonymously"
            return AuthenticationError(
                f"{ref.registry} refused access to {ref.repository} {who}: {detail}; "
                f"run `docker login {ref.registry}` or fix the credentials in ~/.docker/config.json",
                registry=ref.registry, url=url, status=status, codes=codes,
            )
        if status == 404:
            return ManifestUnknown(
                f"{ref} not found in {ref.registry}: {detail}; check the repository and tag",
                registry=ref.registry, url=url, status=status, codes=codes,
            )
        return RegistryError(
            f"{ref.registry} answered {detail} for {ref}",
            registry=ref.registry, url=url, status=status, codes=codes, temporary=status in RETRY_STATUSES,
        )

    # -- clients and TLS -----------------------------------------------------------------------------

    def plain_http_allowed(self, registry: str) -> bool:
        """Docker's rule: loopback registries, and those listed as insecure, may use plain http."""
        return is_loopback_host(_host_only(registry)) or registry.lower() in self.insecure

    def _client(self, host: str) -> Sender:
        """The sender for requests to *host*'s registry (redirects are followed by hand: counted, bounded,
        no https -> http downgrade). One per registry host: its TLS context trusts that host's CAs."""
        with self._lock:
            client = self._clients.get(host)
            if client is None:
                client = self._injected or DeadlineTransport(lambda: self._ssl_context(host))
                self._clients[host] = client
            return client

    def _ssl_context(self, host: str) -> ssl.SSLContext:
        host_dir = os.path.join(self._certs_dir, host)
        try:  # what Path.glob("*.crt") lists: no hidden names
            names = sorted(n for n in os.listdir(host_dir) if n.endswith(".crt") and not n.startswith("."))
        except OSError:
            names = []
        extra = tuple(os.path.join(host_dir, n) for n in names)
        return ssl_context(self._ca_file, extra)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in {id(c): c for c in clients}.values():
            client.close()

    def forget(self) -> None:
        with self._lock:
            self._tokens.clear()

    # -- auth ------------------------------------------------------------------------------------------

    def _credentials(self, ref: Reference) -> Credentials | None:
        with self._lock:
            if ref.registry in self._creds:
                return self._creds[ref.registry]
        config = self._docker_config or DockerConfig.load()
        creds = config.credentials_for(ref.registry)
        with self._lock:
            self._creds[ref.registry] = creds
        return creds

    def _secrets(self, ref: Reference) -> tuple[str, ...]:
        """Every credential string we hold for *ref*, to blank out of anything a registry echoes back."""
        with self._lock:
            creds = self._creds.get(ref.registry)
            tokens = [token for (host, _), (token, _) in self._tokens.items() if host == ref.api_host]
        found = list(tokens)
        if creds is not None:
            found += [creds.password, creds.identity_token or "", creds.basic_header().split(" ", 1)[1]]
        return tuple(s for s in found if s and len(s) >= 4)

    def _auth_header(self, ref: Reference, *, push: bool = False) -> str | None:
        with self._lock:
            challenge = self._auth.get(ref.api_host)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = self._credentials(ref)
            return creds.basic_header() if creds and creds.username else None
        scope = f"repository:{ref.repository}:pull" + (",push" if push else "")
        with self._lock:
            token = self._tokens.get((ref.api_host, scope))
        if token and token[1] > time.monotonic():
            return f"Bearer {token[0]}"
        self._fetch_token(ref, challenge, scope)
        with self._lock:
            return f"Bearer {self._tokens[(ref.api_host, scope)][0]}"

    def _authenticate(self, ref: Reference, challenge: Challenge) -> None:
        if challenge.scheme not in ("basic", "bearer"):
            raise AuthenticationError(
                f"{ref.registry} asks for {_clean(challenge.scheme, ())!r} auth, which imagegate does not speak; "
                "use a registry token (Bearer) or basic auth",
                registry=ref.registry,
                status=401,
            )
        if challenge.scheme == "basic":
            creds = self._credentials(ref)
            if creds is None or not creds.username:
                raise AuthenticationError(
                    f"{ref.registry} needs a login and none is configured; run `docker login {ref.registry}`",
                    registry=ref.registry,
                    status=401,
                )
        with self._lock:
            self._auth[ref.api_host] = challenge
            for key in [k for k in self._tokens if k[0] == ref.api_host]:
                del self._tokens[key]  # a new challenge (e.g. a token that expired early) invalidates ours

    def _realm(self, ref: Reference, challenge: Challenge) -> tuple[str, bool]:
        """The token realm URL, and whether our credentials may be sent there."""
        realm = challenge.realm or ""
        try:
            parts = urlsplit(realm)
            hostname, port = parts.hostname, parts.port
            split_url(realm)  # a URL that can be sent at all (host, port, encoding)
        except ValueError:
            parts, hostname, port = None, None, None
        if parts is None or parts.scheme not in ("http", "https") or not hostname or len(realm) > MAX_HEADER_TEXT:
            raise AuthenticationError(
                f"{ref.registry} sent a Bearer challenge with an unusable realm {_clean(realm, ())!r}",
                registry=ref.registry,
            )
        host = hostname + (f":{port}" if port else "")
        own_host = hostname.lower() == _host_only(ref.api_host).lower()
        if _points_home(hostname) and not is_loopback_host(_host_only(ref.api_host)):
            # A remote registry's token service is never on this machine: following such a realm would let
            # a hostile registry make us send requests to local services (Docker follows it; we do not).
            raise AuthenticationError(
                f"{ref.registry} sends its token requests to this machine ({redact_url(realm)}); a remote "
                "registry's token service is never on loopback, so imagegate refuses to ask it",
                registry=ref.registry,
                url=realm,
            )
        if parts.scheme == "https":
            return realm, True
        if is_loopback_host(hostname) or (own_host and self.plain_http_allowed(ref.registry)) or host.lower() in self.insecure:
            return realm, own_host or is_loopback_host(hostname) and is_loopback_host(_host_only(ref.api_host))
        raise InsecureRegistry(
            f"{ref.registry} sends its token requests to plain http on another host ({redact_url(realm)}); "
            "refusing to send credentials there or to trust its tokens",
            registry=ref.registry,
            url=realm,
        )

    def _fetch_token(self, ref: Reference, challenge: Challenge, scope: str) -> None:
        realm, may_send_credentials = self._realm(ref, challenge)
        params = {"scope": scope}
        service = challenge.params.get("service")
        if service:
            params["service"] = service
        creds = self._credentials(ref) if may_send_credentials else None
        client = self._client(ref.api_host)
        self._check_time(ref, realm)
        self._count()
        try:
            if creds and creds.identity_token:
                data = dict(params, grant_type="refresh_token", refresh_token=creds.identity_token, client_id="imagegate")
                body = urlencode(data).encode()
                response = client.send("POST", realm, _headers({"Content-Type": "application/x-www-form-urlencoded"}),
                                       body=body, timeout=self._timeout)
            else:
                headers = {"Authorization": creds.basic_header()} if creds and creds.username else {}
                response = client.send("GET", _with_params(realm, params), _headers(headers), timeout=self._timeout)
        except TransportError as exc:
            if deadline_passed():
                raise self._timed_out(ref, realm) from exc
            raise RegistryUnreachable(
                f"cannot reach the token service of {ref.registry} ({type(exc).__name__})",
                registry=ref.registry, url=realm, temporary=True,
            ) from exc
        except ValueError as exc:
            raise AuthenticationError(
                f"cannot ask the token service of {ref.registry} ({type(exc).__name__})", registry=ref.registry, url=realm
            ) from exc
        try:
            if response.status_code != 200:
                codes, message = _error_body(self._read(ref, response, realm, MAX_ERROR_BYTES, truncate=True))
                raise AuthenticationError(
                    f"token service of {ref.registry} refused {scope} {_who(creds)}: {response.status_code} "
                    f"{_clean(message, self._secrets(ref))}; run `docker login {ref.registry}`"
                    + (" or fix those credentials" if creds else ""),
                    registry=ref.registry, url=realm, status=response.status_code, codes=codes,
                )
            body = self._read(ref, response, realm, MAX_TOKEN_BYTES)
        finally:
            response.close()
        token, ttl = _token_from(body)
        if token is None:
            raise AuthenticationError(
                f"token service of {ref.registry} returned no usable token (a JSON object with a 'token' string "
                "of printable ASCII)",
                registry=ref.registry, url=realm,
            )
        with self._lock:
            self._tokens[(ref.api_host, scope)] = (token, time.monotonic() + max(ttl - 10, 1))


# -- pure helpers -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Write:
    """What a write request sends besides the read path's headers: its body and content type."""

    body: bytes
    content_type: str | None

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": self.content_type} if self.content_type else {}
        if not self.body:
            headers["Content-Length"] = "0"  # a POST with no body still says so (proxies want it)
        return headers


def _points_home(hostname: str) -> bool:
    """A realm host that names this machine: loopback, the unspecified address (which Linux connects to
    loopback), or a ``.localhost`` name (RFC 6761; resolvers answer loopback). A DNS name that merely
    resolves to 127.0.0.1 is not caught here: that needs a resolver, and the request carries no secret."""
    host = hostname.lower().rstrip(".")
    return is_loopback_host(host) or host in ("0.0.0.0", "::", "[::]") or host.endswith(".localhost")


def _who(creds: Credentials | None) -> str:
    """Which credentials were sent, for a message (never the secret itself)."""
    if creds is None:
        return "anonymously"
    what = f"as {creds.username!r}" if creds.username else "with an identity token"
    return f"{what} (from {creds.source})" if creds.source else what


def _host_only(host_port: str) -> str:
    if host_port.startswith("["):
        return host_port[1 : host_port.find("]")] if "]" in host_port else host_port
    return host_port.rpartition(":")[0] if ":" in host_port else host_port


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def _headers(headers: dict[str, str]) -> list[tuple[str, str]]:
    """What every request sends (as httpx's client sent it, with identity encoding only), then *headers*."""
    base = {"Accept": "*/*", "Accept-Encoding": "identity", "Connection": "keep-alive", "User-Agent": "imagegate"}
    merged = {k: v for k, v in base.items() if k.lower() not in {h.lower() for h in headers}}
    return list(merged.items()) + list(headers.items())


def _with_params(url: str, params: dict[str, str]) -> str:
    """*url* with *params* set in its query (replacing same-named ones, as httpx merges them)."""
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    return urlunsplit(parts._replace(query=urlencode(kept + list(params.items()))))


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _identity(response: Response) -> bool:
    return response.headers.get("Content-Encoding", "identity").strip().lower() in ("", "identity")


def _require_identity(ref: Reference, response: Response, url: str) -> None:
    if not _identity(response):
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        raise RegistryError(
            f"{ref.registry} sent a {encoding[:20]!r}-encoded body though imagegate asked for identity; refusing it",
            registry=ref.registry,
            url=url,
        )


def _token_from(body: bytes) -> tuple[str | None, float]:
    from imagegate._json import DocumentError, decode

    try:
        value = decode(body)
    except DocumentError:
        return None, 0.0
    if not isinstance(value, dict):
        return None, 0.0
    token = value.get("token") or value.get("access_token")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        return None, 0.0
    if not all(33 <= ord(c) <= 126 for c in token):
        return None, 0.0  # it goes into a header: no spaces, no control characters, nothing else
    ttl = value.get("expires_in")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= 86400:
        ttl = 60
    return token, float(ttl)


def _error_body(body: bytes) -> tuple[tuple[str, ...], str]:
    from imagegate._json import DocumentError, decode

    try:
        value = decode(body or b"{}")
    except DocumentError:
        return (), ""
    errors = value.get("errors") if isinstance(value, dict) else None
    if not isinstance(errors, list):
        return (), ""
    items = [e for e in errors[:10] if isinstance(e, dict)]
    codes = tuple(str(e.get("code", ""))[:64] for e in items if isinstance(e.get("code", ""), str))
    message = "; ".join(e["message"] for e in items if isinstance(e.get("message"), str))
    return codes, message


def _clean(text: str, secrets: Iterable[str]) -> str:
    """Registry-provided *text* made safe to show: no secret we hold, no control characters, short."""
    for secret in secrets:
        text = text.replace(secret, "***")
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= 300 else text[:300] + "…"


def _retry_after_seconds(value: str) -> float | None:
    import email.utils  # only for a Retry-After date

    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _cause(exc: BaseException) -> str:
    return f"{exc.__cause__}" if exc.__cause__ else str(exc)


def _untrusted_certificate(exc: BaseException) -> bool:
    return "CERTIFICATE_VERIFY_FAILED" in repr(exc.__cause__ or exc).upper()


def _looks_like_plain_http(exc: BaseException) -> bool:
    text = repr(exc.__cause__ or exc).upper()
    return "WRONG_VERSION_NUMBER" in text or "RECORD_LAYER_FAILURE" in text or "PACKET_LENGTH_TOO_LONG" in text
