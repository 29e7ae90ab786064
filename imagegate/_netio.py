"""The socket layer under every registry request: one deadline per operation, bounding everything.

A server that sends one byte every few seconds never trips a per-read timeout and would keep a
request alive for ever. Here every socket connect, read, write and TLS handshake is given at most
the time left before the operation's deadline (a thread-local set by :func:`deadline`): the sockets
are :class:`_DeadlineSocket` / :class:`_DeadlineSSLSocket`, which set their timeout to that before
each call. :class:`DeadlineTransport` speaks HTTP/1.1 over them with the standard library's
``http.client`` (kept-alive connections, proxies from the environment as httpx reads them, loopback
always direct); :class:`InjectedTransport` sends the same requests through an httpx transport
instead (tests: an in-process registry). Both answer with the same small :class:`Response` and raise
the same :class:`TransportError` tree, named as httpx names it. Also here: the shared TLS contexts.

Why the standard library and not httpx/httpcore (measured on this project's environment, whole
``import``, 2 cores): ``import httpx`` ~105 ms (its command line pulls rich, click and pygments when
they are installed), ``import httpcore`` ~15 ms alone but ~110 ms more once ``trio`` is installed
(selenium brings it; httpcore imports trio and anyio at import time for its async locks), against
~25 ms for ``http.client`` with ``ssl``. The CLI's whole budget is ~100 ms, and what a user's
environment happens to have installed should not decide it. Everything httpx's client did for us
(redirects, auth, size caps, retries, identity encoding) was already done by hand in
:mod:`imagegate._transport`; what the standard library adds over raw sockets (the HTTP/1.1 grammar,
chunked bodies, header limits of 100 lines of 64 KiB) is what httpcore's h11 did.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator
from urllib.parse import quote, urlsplit

from imagegate._reference import is_loopback_host

if TYPE_CHECKING:
    import httpx

_local = threading.local()
MAX_IDLE = 4  # kept-alive connections per origin


def _remaining() -> float | None:
    deadline = getattr(_local, "deadline", None)
    return None if deadline is None else deadline - time.monotonic()


def _bounded(timeout: float | None) -> float | None:
    left = _remaining()
    if left is None:
        return timeout
    if left <= 0:
        raise TimeoutError("the operation's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineSocket(socket.socket):
    """A TCP socket whose every call waits no longer than the per-call timeout or the operation's time left."""

    _io_timeout: float | None = None

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self.settimeout(_bounded(self._io_timeout))
        return super().recv(bufsize, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self.settimeout(_bounded(self._io_timeout))
        return super().recv_into(buffer, nbytes, flags)

    def send(self, data: Any, flags: int = 0) -> int:
        self.settimeout(_bounded(self._io_timeout))
        return super().send(data, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self.settimeout(_bounded(self._io_timeout))  # one bound for the whole call (CPython's sendall)
        super().sendall(data, flags)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """The TLS counterpart (the contexts of :func:`ssl_context` make these): every read and write bounded."""

    _io_timeout: float | None = None

    def read(self, len: int = 1024, buffer: Any = None) -> Any:  # noqa: A002 (ssl's own parameter name)
        self.settimeout(_bounded(self._io_timeout))
        return super().read(len, buffer)

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        self.settimeout(_bounded(self._io_timeout))
        return super().recv_into(buffer, nbytes, flags)  # type: ignore[arg-type]

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        self.settimeout(_bounded(self._io_timeout))
        return super().recv(buflen, flags)

    def send(self, data: Any, flags: int = 0) -> int:
        self.settimeout(_bounded(self._io_timeout))
        return super().send(data, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self.settimeout(_bounded(self._io_timeout))  # SSLSocket.sendall sends chunk by chunk through send()
        super().sendall(data, flags)


def _open_socket(host: str, port: int, timeout: float | None) -> _DeadlineSocket:
    # An ASCII host as bytes: the resolver then skips the IDNA codec (~1 ms to import); the same lookup.
    address: Any = host.encode("ascii") if host.isascii() else host
    plain = socket.create_connection((address, port), _bounded(timeout))
    sock = _DeadlineSocket(plain.family, plain.type, plain.proto, plain.detach())
    sock._io_timeout = timeout
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _Connection(http.client.HTTPConnection):
    """http.client's connection over :func:`_open_socket` (and TLS from *context*, through a CONNECT tunnel
    when there is a proxy)."""

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext | None) -> None:
        super().__init__(host, port, timeout=timeout)
        self._tls = context

    def connect(self) -> None:
        self.sock = _open_socket(self.host, self.port, self.timeout)
        if self._tunnel_host:
            self._tunnel()
        if self._tls is not None:
            self.sock.settimeout(_bounded(self.timeout))  # the whole handshake, bounded once
            tls = self._tls.wrap_socket(self.sock, server_hostname=self._tunnel_host or self.host)
            tls._io_timeout = self.timeout  # type: ignore[attr-defined]
            self.sock = tls


# -- errors ----------------------------------------------------------------------------------------


class TransportError(Exception):
    """A request failed below HTTP: connect, TLS, read, write or the protocol. Named as httpx names it."""


class TimeoutException(TransportError):
    pass


class ConnectTimeout(TimeoutException):
    pass


class ReadTimeout(TimeoutException):
    pass


class WriteTimeout(TimeoutException):
    pass


class PoolTimeout(TimeoutException):
    pass


class NetworkError(TransportError):
    pass


class ConnectError(NetworkError):
    pass


class ReadError(NetworkError):
    pass


class WriteError(NetworkError):
    pass


class CloseError(NetworkError):
    pass


class ProtocolError(TransportError):
    pass


class RemoteProtocolError(ProtocolError):
    pass


class LocalProtocolError(ProtocolError):
    pass


class ProxyError(TransportError):
    pass


class UnsupportedProtocol(TransportError):
    pass


_BY_NAME: dict[str, type[TransportError]] = {
    cls.__name__: cls
    for cls in (TimeoutException, ConnectTimeout, ReadTimeout, WriteTimeout, PoolTimeout, NetworkError, ConnectError,
                ReadError, WriteError, CloseError, ProtocolError, RemoteProtocolError, LocalProtocolError, ProxyError,
                UnsupportedProtocol)
}


def _translate(exc: BaseException) -> TransportError:
    """httpcore's (or httpx's) exception as ours, by its name; the message (e.g. the TLS error) is kept."""
    for cls in type(exc).__mro__:
        if cls.__name__ in _BY_NAME:
            return _BY_NAME[cls.__name__](str(exc))
    return TransportError(str(exc))


# -- requests and responses -------------------------------------------------------------------------


class Headers:
    """A response's headers: case-insensitive; a repeated header reads as its values joined by ", "
    (as httpx reads it). Bytes are decoded as Latin-1, so no header fails to decode."""

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self._items: dict[str, list[str]] = {}
        for key, value in raw:
            self._items.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._items.get(name.lower())
        return default if values is None else ", ".join(values)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items


class Response:
    """A response whose body is read by the caller, chunk by chunk (:meth:`iter_raw`), never decoded."""

    def __init__(self, status_code: int, headers: Headers, chunks: Iterator[bytes], close: Callable[[], None]) -> None:
        self.status_code = status_code
        self.headers = headers
        self._chunks = chunks
        self._close = close

    def iter_raw(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        self._close()


class Sender:
    """Sends one request; :class:`DeadlineTransport` (the network) or :class:`InjectedTransport`."""

    def send(self, method: str, url: str, headers: list[tuple[str, str]], *, body: bytes = b"",
             timeout: float) -> Response:
        raise NotImplementedError

    def close(self) -> None:
        pass


def split_url(url: str) -> tuple[str, str, int | None, str]:
    """``(scheme, host, port, target)`` of an http(s) URL, the path and query percent-encoded where they
    are not already; ValueError for anything else (another scheme, no host, a host that is not ASCII or
    IDNA, a bad port)."""
    parts = urlsplit(url)
    port = parts.port  # ValueError for a bad one
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"not an http(s) URL with a host: {url[:100]!r}")
    if not host.isascii():
        host = host.encode("idna").decode("ascii")  # UnicodeError is a ValueError
    if not all(c.isalnum() or c in "-._:" for c in host):
        raise ValueError(f"not a host name: {host[:100]!r}")
    target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~") + (
        "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?") if parts.query else "")
    return parts.scheme, host, port, target


def _host_header(scheme: str, host: str, port: int | None) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port is None or port == (443 if scheme == "https" else 80) else f"{name}:{port}"


class DeadlineTransport(Sender):
    """HTTP/1.1 over :class:`_Connection`, connections kept alive per origin (and proxy).

    Proxies come from the environment as they would for httpx (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``NO_PROXY``; plain-http proxy URLs: a CONNECT tunnel for https, the absolute URL for http);
    loopback registries are always reached directly. The TLS context is made by *ssl_context* on the
    first request that needs one (loading the system CAs costs ~20 ms: a plain-http registry never
    pays it), and https never uses any other context.
    """

    def __init__(self, ssl_context: Callable[[], ssl.SSLContext]) -> None:
        self._ssl_factory = ssl_context
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[tuple[str, str, int, str | None], list[_Connection]] = {}
        self._lock = threading.Lock()

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = self._ssl_factory()
        return self._ssl

    def _connection(self, key: tuple[str, str, int, str | None], timeout: float) -> tuple[_Connection, bool]:
        """An idle kept-alive connection for *key* (True), or a new one, not yet connected (False)."""
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                conn = idle.pop()
                conn.timeout = timeout
                return conn, True
        scheme, host, port, proxy = key
        context = self._context() if scheme == "https" else None
        if proxy is None:
            return _Connection(host, port, timeout, context), False
        proxy_scheme, proxy_host, proxy_port, _ = split_url(proxy)
        if proxy_scheme != "http":
            raise ProxyError(f"the proxy {proxy_host} is {proxy_scheme}://; imagegate speaks to http:// proxies only")
        conn = _Connection(proxy_host, proxy_port or 80, timeout, context)
        if scheme == "https":
            conn.set_tunnel(host, port)
        return conn, False

    def send(self, method: str, url: str, headers: list[tuple[str, str]], *, body: bytes = b"",
             timeout: float) -> Response:
        try:
            scheme, host, port, target = split_url(url)
        except ValueError as exc:
            raise UnsupportedProtocol(str(exc)) from None
        port = port or (443 if scheme == "https" else 80)
        proxy = None if is_loopback_host(host) else _proxy_for(scheme, host)
        key = (scheme, host, port, proxy)
        if proxy is not None and scheme == "http":
            target = f"http://{_host_header(scheme, host, port)}{target}"  # absolute form, to the proxy
        lines = [("Host", _host_header(scheme, host, port)), *headers]
        if body:
            lines.append(("Content-Length", str(len(body))))
        while True:  # ends: only a kept-alive connection is stale, and there are at most MAX_IDLE of them
            conn, _ = self._connection(key, timeout)
            try:
                response = self._exchange(conn, method, target, lines, body)
                break
            except _Stale:
                conn.close()  # the server had closed this kept-alive connection: again on another one
            except BaseException:
                conn.close()
                raise
        return Response(response.status, Headers((k.encode("latin-1"), v.encode("latin-1")) for k, v in response.getheaders()),
                        self._body(response), lambda: self._release(key, conn, response))

    def _exchange(self, conn: _Connection, method: str, target: str, lines: list[tuple[str, str]],
                  body: bytes) -> http.client.HTTPResponse:
        reused = conn.sock is not None
        phase = "connect" if not reused else "write"
        try:
            if not reused:
                conn.connect()
            phase = "write"
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in lines:
                conn.putheader(name, value)
            conn.endheaders(body or None)
            phase = "read"
            return conn.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
            if reused:
                raise _Stale() from exc
            raise _error(exc, phase) from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _error(exc, phase) from exc

    def _body(self, response: http.client.HTTPResponse) -> Iterator[bytes]:
        try:
            while True:
                chunk = response.read1(1 << 16)
                if not chunk:
                    break
                yield chunk
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _error(exc, "read") from exc
        if response.length:  # a Content-Length the server did not honour before closing
            raise RemoteProtocolError(f"the connection closed {response.length} bytes before the end of the body")
        response.close()  # read to the end (a HEAD's too): the connection may serve the next request

    def _release(self, key: tuple[str, str, int, str | None], conn: _Connection, response: http.client.HTTPResponse) -> None:
        """Keep *conn* for the next request when its response was read to the end; close it otherwise."""
        if response.isclosed() and not response.will_close and conn.sock is not None:
            with self._lock:
                idle = self._idle.setdefault(key, [])
                if len(idle) < MAX_IDLE:
                    idle.append(conn)
                    return
        response.close()
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = [c for conns in self._idle.values() for c in conns], {}
        for conn in idle:
            conn.close()


class _Stale(Exception):
    """A kept-alive connection that the server closed before answering."""


def _error(exc: BaseException, phase: str) -> TransportError:
    """A socket, TLS or HTTP parsing error as one of ours, by the phase it happened in (TLS errors keep
    their text: the transport reads "CERTIFICATE_VERIFY_FAILED" and "WRONG_VERSION_NUMBER" in it)."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):  # socket.timeout too
        return {"connect": ConnectTimeout, "write": WriteTimeout}.get(phase, ReadTimeout)(message)
    if isinstance(exc, OSError):  # ssl.SSLError (even the ValueError kind), resets, refusals
        return {"connect": ConnectError, "write": WriteError}.get(phase, ReadError)(message)
    if phase == "write":  # http.client refusing a header or target we made: ours, not the server's
        return LocalProtocolError(message)
    return RemoteProtocolError(message)  # the status line, headers or body broke HTTP/1.1


def _proxy_for(scheme: str, host: str) -> str | None:
    """The proxy URL the environment sets for *scheme* and *host*, as httpx reads it (None: direct)."""
    import urllib.request  # only for registries that are not on loopback: it costs ~10 ms to import

    if urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(scheme) or None


class InjectedTransport(Sender):
    """Requests through an httpx transport (``httpx.MockTransport`` in tests): the same requests, answered in-process."""

    def __init__(self, transport: httpx.BaseTransport) -> None:
        import httpx  # only here: the network path never imports it

        self._httpx = httpx
        self._transport = transport

    def send(self, method: str, url: str, headers: list[tuple[str, str]], *, body: bytes = b"",
             timeout: float) -> Response:
        httpx = self._httpx
        try:
            request = httpx.Request(method, url, headers=headers, content=body or None,
                                    extensions={"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}})
            response = self._transport.handle_request(request)
        except httpx.TransportError as exc:
            raise _translate(exc) from exc
        except httpx.InvalidURL as exc:
            raise UnsupportedProtocol(str(exc)) from exc

        def chunks() -> Iterator[bytes]:
            try:
                # iter_bytes, not iter_raw: httpx has already read a Response made from bytes. It would decode
                # a Content-Encoding, but the transport reads no body that is not identity-encoded.
                yield from response.iter_bytes()
            except httpx.TransportError as exc:
                raise _translate(exc) from exc

        return Response(response.status_code, Headers(response.headers.raw), chunks(), response.close)

    def close(self) -> None:
        self._transport.close()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound everything inside to *seconds* (an enclosing deadline wins)."""
    if getattr(_local, "deadline", None) is not None:
        yield
        return
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = None


def remaining() -> float | None:
    """Seconds left before this thread's operation deadline (None: no deadline)."""
    return _remaining()


@functools.lru_cache(maxsize=32)
def ssl_context(ca_file: str | None, extra_cas: tuple[str, ...]) -> ssl.SSLContext:
    """A verifying context trusting the system CAs plus *ca_file* and *extra_cas* (cached: loading the
    system CA store costs ~30 ms, and contexts are safe to share)."""
    context = ssl.create_default_context()
    context.sslsocket_class = _DeadlineSSLSocket  # every TLS read and write bounded by the deadline
    for cafile in (ca_file, *extra_cas):
        if cafile:
            context.load_verify_locations(cafile=cafile)
    return context


def deadline_passed() -> bool:
    left = _remaining()
    return left is not None and left <= 0
