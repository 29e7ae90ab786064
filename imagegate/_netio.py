"""The socket layer under every registry request: one deadline per operation, bounding everything.

httpx has only per-phase timeouts: a server that sends one byte every few seconds never trips a
read timeout and keeps a request alive for ever. Here every socket connect, read, write and TLS
handshake is given at most the time left before the operation's deadline (a thread-local set by
:func:`deadline`), through an httpcore network backend; :class:`DeadlineTransport` is httpx's
default transport rebuilt on httpcore's public API over that backend (proxies from the
environment as httpx reads them; loopback always direct). Also here: the shared TLS contexts.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
import threading
import time
import urllib.request
from typing import Any, Iterable, Iterator

import httpcore
import httpx

from imagegate._reference import is_loopback_host

_local = threading.local()


def _remaining() -> float | None:
    deadline = getattr(_local, "deadline", None)
    return None if deadline is None else deadline - time.monotonic()


def _bounded(timeout: float | None) -> float | None:
    left = _remaining()
    if left is None:
        return timeout
    if left <= 0:
        raise httpcore.ReadTimeout("the operation's deadline passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    """A socket stream whose every operation waits no longer than the operation's time left."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, _bounded(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.SyncBackend):
    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _Stream(super().connect_tcp(host, port, _bounded(timeout), local_address, socket_options))


_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.TimeoutException, httpx.TimeoutException),
)


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except httpcore.TimeoutException as exc:
        raise _translate(exc) from exc
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError, httpcore.UnsupportedProtocol) as exc:
        raise _translate(exc) from exc


def _translate(exc: Exception) -> httpx.TransportError:
    for source, target in _EXCEPTIONS:
        if isinstance(exc, source):
            return target(str(exc))
    return httpx.TransportError(str(exc))  # pragma: no cover


class _Body(httpx.SyncByteStream):
    def __init__(self, response: httpcore.Response) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        with _mapped():
            yield from self._response.iter_stream()

    def close(self) -> None:
        self._response.close()


class DeadlineTransport(httpx.BaseTransport):
    """httpx's default transport, rebuilt on httpcore's public API with :class:`_Backend` under it.

    Proxies come from the environment as they would for httpx (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``NO_PROXY``); loopback registries are always reached directly.
    """

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        self._ssl = ssl_context
        self._backend = _Backend()
        self._direct = httpcore.ConnectionPool(ssl_context=ssl_context, network_backend=self._backend, keepalive_expiry=5.0)
        self._proxies: dict[str, httpcore.HTTPProxy] = {}
        self._lock = threading.Lock()

    def _pool(self, url: httpx.URL) -> httpcore.ConnectionPool | httpcore.HTTPProxy:
        host = url.host
        if is_loopback_host(host) or urllib.request.proxy_bypass(host):
            return self._direct
        proxy = urllib.request.getproxies().get(url.scheme)
        if not proxy:
            return self._direct
        with self._lock:
            pool = self._proxies.get(proxy)
            if pool is None:
                pool = self._proxies[proxy] = httpcore.HTTPProxy(
                    proxy_url=proxy, ssl_context=self._ssl, network_backend=self._backend, keepalive_expiry=5.0
                )
            return pool

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        raw = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host, port=request.url.port,
                             target=request.url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _mapped():
            response = self._pool(request.url).handle_request(raw)
        return httpx.Response(status_code=response.status, headers=response.headers, stream=_Body(response),
                              extensions=response.extensions)

    def close(self) -> None:
        self._direct.close()
        with self._lock:
            for pool in self._proxies.values():
                pool.close()


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
    for cafile in (ca_file, *extra_cas):
        if cafile:
            context.load_verify_locations(cafile=cafile)
    return context


def deadline_passed() -> bool:
    left = _remaining()
    return left is not None and left <= 0
