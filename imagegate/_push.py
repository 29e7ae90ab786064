"""Writing to a registry: blobs and manifests, over the transport's hardened request path.

Everything :mod:`imagegate._transport` does for reads holds here too (one deadline, capped bodies, scheme rules,
scrubbed errors), plus what writes need:

* **auth**: a token for ``repository:NAME:pull,push`` (the transport asks for it on a write);
* **blobs**: ``HEAD`` first (an existing blob is not sent again), then ``POST /blobs/uploads/`` and one ``PUT
  <Location>?digest=…`` with the whole blob (a monolithic upload; what imagegate pushes is a few KiB). The
  ``Location`` may be relative or absolute, but it must stay on the registry's own origin (scheme, host and port)
  and under ``/v2/``: a registry that sends the upload elsewhere is refused (stricter than Docker, which follows
  it). No write follows a redirect;
* **manifests**: ``PUT`` with the manifest's media type; the ``Docker-Content-Digest`` the registry answers, when it
  sends one, must be the digest of the bytes sent;
* **reads** of what is about to be changed (an existing signature manifest, a fallback index) are capped and their
  digests checked.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from imagegate._errors import DigestMismatch, ManifestUnknown, RegistryError, redact_url
from imagegate._reference import Reference

if TYPE_CHECKING:
    from imagegate._transport import Reply, Transport

__all__ = ["Pusher", "digest_of"]

MAX_PUSH_REPLY = 64 << 10
MAX_READ = 1 << 20  # a signature manifest or a fallback index: cosign's are a few KiB
MAX_LOCATION = 4096


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Pusher:
    """Blob and manifest writes (and the few reads that go with them) to one repository."""

    def __init__(self, http: Transport, repository: Reference) -> None:
        self._http = http
        self.repo = Reference(repository.registry, repository.repository)

    # -- reads -----------------------------------------------------------------------------------------------------

    def manifest(self, target: str, accept: str, *, limit: int = MAX_READ) -> tuple[bytes, str | None] | None:
        """The manifest at *target* (tag or digest) and its Content-Type, or None when there is none (404). By
        digest, the bytes must hash to it; by tag, to the ``Docker-Content-Digest`` the registry claims."""
        try:
            reply = self._http.request(self.repo, "GET", f"manifests/{target}", accept=accept, limit=limit)
        except ManifestUnknown:
            return None
        expected = target if target.startswith("sha256:") else reply.header("Docker-Content-Digest")
        actual = digest_of(reply.content)
        if expected and expected != actual:
            raise DigestMismatch(registry=self.repo.registry, url=reply.url, expected=expected[:100], actual=actual)
        return reply.content, reply.header("Content-Type")

    def blob(self, digest: str, *, limit: int = MAX_READ) -> bytes:
        reply = self._http.request(self.repo, "GET", f"blobs/{digest}", limit=limit)
        actual = digest_of(reply.content)
        if actual != digest:
            raise DigestMismatch(registry=self.repo.registry, url=reply.url, expected=digest, actual=actual)
        return reply.content

    def referrers(self, digest: str, accept: str) -> bytes | None:
        """The OCI 1.1 referrers index of *digest*, or None when the registry has no referrers API (as
        go-containerregistry decides it: 404 or 400; also 405 and 501)."""
        try:
            reply = self._http.request(self.repo, "GET", f"referrers/{digest}", accept=accept, limit=MAX_READ)
        except ManifestUnknown:
            return None
        except RegistryError as exc:
            if exc.status in (400, 405, 501):
                return None
            raise
        return reply.content

    # -- writes ----------------------------------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        try:
            self._http.request(self.repo, "HEAD", f"blobs/{digest}", limit=0)
        except ManifestUnknown:
            return False
        return True

    def push_blob(self, data: bytes) -> str:
        """Upload *data* unless the repository has it; returns its digest."""
        digest = digest_of(data)
        if self.has_blob(digest):
            return digest
        started = self._http.send(self.repo, "POST", "blobs/uploads/", limit=MAX_PUSH_REPLY)
        target = self._upload_url(started, digest)
        done = self._http.send(self.repo, "PUT", "", body=data, content_type="application/octet-stream", url=target,
                               limit=MAX_PUSH_REPLY)
        self._check_claim(done, digest)
        return digest

    def push_manifest(self, target: str, media_type: str, data: bytes) -> str:
        """PUT *data* at *target* (a tag, or its own digest); returns its digest."""
        digest = digest_of(data)
        if target.startswith("sha256:") and target != digest:
            raise ValueError(f"a manifest pushed by digest goes to its own digest {digest}, not {target}")
        reply = self._http.send(self.repo, "PUT", f"manifests/{target}", body=data, content_type=media_type,
                                limit=MAX_PUSH_REPLY)
        self._check_claim(reply, digest)
        return digest

    def _check_claim(self, reply: Reply, digest: str) -> None:
        claimed = reply.header("Docker-Content-Digest")
        if claimed is not None and claimed.strip() != digest:
            raise RegistryError(
                f"{self.repo.registry} stored what imagegate sent as {_shown(claimed)}, not its digest {digest}: "
                "the registry (or a proxy) changed it; nothing that refers to it was written",
                registry=self.repo.registry, url=reply.url,
            )

    def _upload_url(self, reply: Reply, digest: str) -> str:
        """The upload session's URL from the ``Location`` of the POST's answer, with ``digest=`` added; refused
        unless it stays on the registry's own origin, under ``/v2/``."""
        location = reply.header("Location") or ""
        if not location or len(location) > MAX_LOCATION or not location.isprintable():
            raise RegistryError(f"{self.repo.registry} started an upload without a usable Location header",
                                registry=self.repo.registry, url=reply.url)
        target = urljoin(reply.url, location)
        try:
            parts, base = urlsplit(target), urlsplit(reply.url)
            same = (parts.scheme, _host_port(parts)) == (base.scheme, _host_port(base))
        except ValueError:
            same, parts = False, None
        if not same or parts is None or not parts.path.startswith("/v2/") or parts.fragment:
            raise RegistryError(
                f"{self.repo.registry} asked for the upload to go to {_shown(redact_url(target))}, which is not on the registry "
                "itself (another scheme, host or port, or outside /v2/); imagegate sends pushes to the registry only",
                registry=self.repo.registry, url=reply.url,
            )
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "digest"]
        return urlunsplit(parts._replace(query=urlencode(query + [("digest", digest)])))


def _host_port(parts: object) -> tuple[str, int | None]:
    host = (getattr(parts, "hostname", None) or "").lower()
    port = getattr(parts, "port", None)
    scheme = getattr(parts, "scheme", "")
    default = {"http": 80, "https": 443}.get(scheme)
    return host, (None if port == default else port)


def _shown(text: str) -> str:
    cleaned = "".join(c if c.isprintable() else "?" for c in text)
    return repr(cleaned[:120] + ("…" if len(cleaned) > 120 else ""))
