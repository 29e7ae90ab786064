"""A hostile registry: a real HTTP/1.1 server on loopback that misbehaves on purpose.

Each repository name picks a misbehaviour (``127.0.0.1:PORT/<scenario>/app:1.0.0``); anything the
scenario does not override is served honestly, from one small image, so every scenario differs
from a good registry in exactly one way. The server writes raw bytes to its sockets, so it can do
what well-behaved HTTP libraries refuse to: dribble headers, lie about lengths, loop redirects,
send gzip bombs, send endless headers.

Independent of ``imagegate``: it shares only the test-support image builders.
"""

from __future__ import annotations

import gzip
import json
import socket
import socketserver
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

from tests.support.oci import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, Blob, canonical_json, digest_of, make_image, make_layer, make_tar

Handler = Callable[["Exchange"], None]


@dataclass
class Exchange:
    """One request the server is answering, and the socket to answer it on."""

    method: str
    path: str
    headers: dict[str, str]
    sock: socket.socket
    server: HostileRegistry

    def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, *, length: bool = True) -> None:
        head = [f"HTTP/1.1 {status} X"]
        for key, value in (headers or {}).items():
            head.append(f"{key}: {value}")
        if length:
            head.append(f"Content-Length: {len(body)}")
        head.append("Connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        self.sock.sendall(data + (b"" if self.method == "HEAD" else body))

    def json(self, status: int, document: Any, media_type: str = "application/json", **headers: str) -> None:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.send(status, body, {"Content-Type": media_type, **headers})

    def dribble(self, data: bytes, every: float) -> None:
        """Send *data* one byte at a time, *every* seconds apart, until the client goes away."""
        for byte in data:
            self.sock.sendall(bytes([byte]))
            time.sleep(every)


@dataclass
class HostileRegistry:
    """``with HostileRegistry() as reg:`` — ``reg.host`` is ``127.0.0.1:PORT``; ``reg.requests`` what came in."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    scenarios: dict[str, Handler] = field(default_factory=dict)

    def __post_init__(self) -> None:
        passwd = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n"
        self.image = make_image(user="1000", layers=[{"etc/passwd": passwd}])
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HostileRegistry:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def ref(self, scenario: str, tag: str = "1.0.0") -> str:
        return f"{self.host}/{scenario}/app:{tag}"

    # -- the honest part ------------------------------------------------------------------------

    def honest(self, ex: Exchange, manifest: Blob | None = None, blobs: tuple[Blob, ...] = ()) -> None:
        """Serve *manifest* and *blobs* (default: the good image) as distribution would."""
        manifest = manifest or self.image.manifest
        known = {blob.digest: blob for blob in (*self.image.all_blobs(), *blobs)}
        if ex.path == "/v2/":
            ex.send(200, b"{}")
            return
        parts = ex.path.split("/")
        kind, target = parts[-2], parts[-1]
        if kind == "manifests":
            blob = known.get(target) if target.startswith("sha256:") else manifest
            if blob is None:
                ex.json(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]})
                return
            ex.send(200, blob.data, {"Content-Type": blob.media_type, "Docker-Content-Digest": blob.digest})
            return
        if kind == "blobs" and target in known:
            blob = known[target]
            ex.send(200, blob.data, {"Content-Type": "application/octet-stream", "Docker-Content-Digest": blob.digest})
            return
        ex.json(404, {"errors": [{"code": "BLOB_UNKNOWN", "message": "unknown"}]})

    def serving(self, manifest: Blob, *blobs: Blob) -> Handler:
        """A scenario that serves this manifest (and blobs) honestly."""
        return lambda ex: self.honest(ex, manifest, (manifest, *blobs))

    # -- plumbing -----------------------------------------------------------------------------------

    def _handler_class(self) -> type[socketserver.BaseRequestHandler]:
        registry = self

        class _Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                sock.settimeout(30)
                try:
                    while True:
                        head = _read_head(sock)
                        if head is None:
                            return
                        method, path, headers = head
                        registry.requests.append((method, path))
                        path = path.split("?", 1)[0]
                        scenario = path.split("/")[2] if path.startswith("/v2/") and path.count("/") > 2 else ""
                        if path.startswith("/token/"):
                            scenario = path.split("/")[2]
                        ex = Exchange(method, path.split("?", 1)[0], headers, sock, registry)
                        handler = registry.scenarios.get(scenario)
                        if handler is None:
                            registry.honest(ex)
                        else:
                            handler(ex)
                        return  # Connection: close after every answer
                except (OSError, ValueError):
                    return

        return _Handler


def _read_head(sock: socket.socket) -> tuple[str, str, dict[str, str]] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
        if not data[:1].isupper():  # a TLS ClientHello (clients try https first on loopback): not HTTP
            sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return None
        if len(data) > 1 << 20:
            return None
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return None
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return parts[0], parts[1], headers


# -- documents for scenarios ------------------------------------------------------------------------


def config_bytes(document: dict[str, Any] | bytes) -> Blob:
    return Blob(OCI_CONFIG, document if isinstance(document, bytes) else canonical_json(document))


def manifest_bytes(config: Blob, layers: list[Blob] | None = None, **extra: Any) -> Blob:
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in (layers or [])],
        **extra,
    }
    return Blob(OCI_MANIFEST, canonical_json(document))


def raw_json(text: str) -> bytes:
    """Hand-written JSON (duplicate keys, odd spellings) exactly as given."""
    return text.encode()


def gzip_bomb(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 20)
    out = [compressor.compress(chunk) for _ in range(size >> 20)]
    out.append(compressor.flush())
    return b"".join(out)


__all__ = [
    "Exchange",
    "HostileRegistry",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "config_bytes",
    "digest_of",
    "gzip",
    "gzip_bomb",
    "make_layer",
    "make_tar",
    "manifest_bytes",
    "raw_json",
]
