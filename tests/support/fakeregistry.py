"""An in-process fake OCI registry (read side of the distribution API), used as an httpx transport.

    registry = FakeRegistry()
    digest = registry.put_image("team/etl", make_image(user="1000"), tag="v1")
    client = httpx.Client(transport=registry.transport)
    client.get("https://registry.test/v2/team/etl/manifests/v1", headers={"Accept": OCI_MANIFEST})

Independent of ``imagegate``. What it serves, on ``https://<host>`` (any scheme is accepted):

- ``GET /v2/`` — 200, or 401 with a challenge when auth is on;
- ``HEAD``/``GET /v2/<name>/manifests/<tag-or-digest>`` — with ``Accept`` negotiation: a manifest whose media
  type the client did not list is ``404 MANIFEST_UNKNOWN``; with no ``Accept`` header at all, anything is
  served (``negotiation="distribution"`` mimics distribution 2.8 instead, see :class:`FakeRegistry`);
- ``HEAD``/``GET /v2/<name>/blobs/<digest>`` (optionally through a 307 redirect to ``https://blobs.test``);
- ``GET /v2/<name>/tags/list``;
- ``GET https://auth.test/token?service=…&scope=…`` — the token server for ``auth=("bearer", …)``;
- with ``writable=True`` only: ``POST /v2/<name>/blobs/uploads/`` (202 and a ``Location``, absolute by default; set
  :attr:`FakeRegistry.upload_location` to serve another), ``PUT <location>?digest=…`` (a monolithic upload, checked
  against its digest) and ``PUT /v2/<name>/manifests/<tag-or-digest>``; bearer tokens then need the ``push`` action,
  which the token server grants to authenticated requests that ask for it.

Every request is recorded in :attr:`FakeRegistry.requests`. Faults: :meth:`fail_next`, :meth:`corrupt`,
:meth:`deny`, :attr:`delay`. Requests for any other host raise ``httpx.ConnectError``.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qs

import httpx

from tests.support.oci import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    Image,
    Index,
    digest_of,
    make_schema1,
)

AuthMode = tuple[str, str, str] | None

_PATH = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<ref>[^/]+)$")
_TAGS = re.compile(r"^/v2/(?P<name>.+)/tags/list$")
_UPLOAD = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<id>[^/]*)$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_STATUS_CODES = {
    400: "UNSUPPORTED", 401: "UNAUTHORIZED", 403: "DENIED", 404: "NAME_UNKNOWN",
    405: "UNSUPPORTED", 429: "TOOMANYREQUESTS", 500: "UNKNOWN", 502: "UNAVAILABLE",
    503: "UNAVAILABLE", 504: "UNAVAILABLE",
}


class RecordedRequest(NamedTuple):
    """One request the fake received: ``(method, path, headers)``; ``path`` has no query string."""

    method: str
    path: str
    headers: httpx.Headers

    @property
    def kind(self) -> str:
        """``ping``, ``manifests``, ``blobs``, ``tags``, ``token`` or ``other``."""
        if self.path == "/v2/":
            return "ping"
        if self.path == "/token":
            return "token"
        for kind in ("manifests", "blobs", "tags"):
            if f"/{kind}/" in self.path:
                return kind
        return "other"


@dataclass
class _Fault:
    """A canned response served instead of the real one for the next ``remaining`` matching requests."""

    remaining: int
    status: int
    headers: dict[str, str]
    kind: str | None


@dataclass
class _Repository:
    """Stored content of one repository."""

    manifests: dict[str, Blob] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)


def error_body(code: str, message: str, detail: Any = None) -> bytes:
    """A distribution-style error document: ``{"errors": [{"code", "message", "detail"}]}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        error["detail"] = detail
    return json.dumps({"errors": [error]}).encode()


def parse_accept(headers: httpx.Headers) -> set[str] | None:
    """Media types listed in all ``Accept`` headers (parameters dropped); ``None`` when there is none."""
    values = headers.get_list("accept")
    if not values:
        return None
    return {part.split(";")[0].strip().lower() for value in values for part in value.split(",") if part.strip()}


def _push_requests(scopes: list[str]) -> set[tuple[str, str]]:
    """The ``(name, "push")`` requests among requested scopes."""
    found = set()
    for part in (part for scope in scopes for part in scope.split()):
        parsed = _scope_of(part)
        if parsed is not None and "push" in parsed[1]:
            found.add((parsed[0], "push"))
    return found


def _basic(user: str, password: str) -> str:
    """The ``Authorization`` header value for HTTP Basic credentials."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _scope_of(scope: str) -> tuple[str, set[str]] | None:
    """Split ``repository:<name>:<actions>`` into name and actions; ``None`` for other scopes."""
    if not scope.startswith("repository:") or scope.count(":") < 2:
        return None
    name, actions = scope.removeprefix("repository:").rsplit(":", 1)
    return name, set(actions.split(","))


def _pull_grants(scopes: list[str]) -> set[tuple[str, str]]:
    """The ``(name, "pull")`` grants for requested scopes (repeated or space-separated); push is never granted."""
    grants = set()
    for part in (part for scope in scopes for part in scope.split()):
        parsed = _scope_of(part)
        if parsed is not None and "pull" in parsed[1]:
            grants.add((parsed[0], "pull"))
    return grants


class FakeRegistry:
    """An in-memory registry behind ``httpx.MockTransport``; see the module docstring.

    ``auth`` is ``None`` (anonymous), ``("basic", user, password)`` or ``("bearer", user, password)``.
    With bearer auth, ``anonymous_pull=True`` lets the token server hand out pull tokens without
    credentials. ``redirect_blobs=True`` answers blob GETs with a 307 to ``https://blobs.test`` (as
    registries backed by object storage do).

    ``negotiation`` picks how ``Accept`` is honoured for manifests:

    - ``"simple"`` (default): the stored manifest is served if its media type (or ``*/*``) is listed, or if
      the request has no ``Accept`` header at all; otherwise ``404 MANIFEST_UNKNOWN``.
    - ``"distribution"``: what CNCF distribution 2.8 does (checked against a real one). OCI index and OCI
      manifest are ``404 MANIFEST_UNKNOWN`` unless their exact type is listed — also by digest, also with
      no ``Accept`` or ``*/*``. Docker types by digest are served as-is whatever ``Accept`` says. By *tag*,
      an unaccepted Docker manifest list is replaced by its linux/amd64 entry, and an unaccepted Docker
      schema 2 manifest by a schema 1 ``prettyjws`` (here a fake one): a different digest than the tag's.
    """

    def __init__(
        self,
        host: str = "registry.test",
        *,
        auth: AuthMode = None,
        anonymous_pull: bool = False,
        auth_host: str = "auth.test",
        token_expires_in: int = 300,
        redirect_blobs: bool = False,
        negotiation: Literal["simple", "distribution"] = "simple",
        delay: float = 0.0,
        writable: bool = False,
    ) -> None:
        if auth is not None and auth[0] not in ("basic", "bearer"):
            raise ValueError(f"auth mode must be 'basic' or 'bearer', not {auth[0]!r}")
        self.host, self.auth, self.anonymous_pull, self.auth_host = host, auth, anonymous_pull, auth_host
        self.token_expires_in, self.redirect_blobs, self.delay = token_expires_in, redirect_blobs, delay
        if negotiation not in ("simple", "distribution"):
            raise ValueError(f"negotiation must be 'simple' or 'distribution', not {negotiation!r}")
        self.negotiation = negotiation
        self.writable = writable
        self.upload_location: str | None = None  # a Location to answer upload POSTs with (hostile-registry tests)
        self.uploads: dict[str, str] = {}  # upload id -> repository
        self.pushed_manifests: list[tuple[str, str, str]] = []  # (repository, reference, content type)
        self.claim_digests: dict[str, str] = {}  # a manifest PUT answers this Docker-Content-Digest instead
        self.blob_host = "blobs.test"
        self.requests: list[RecordedRequest] = []
        self.token_queries: list[dict[str, list[str]]] = []
        self.repositories: dict[str, _Repository] = {}
        self.tokens: dict[str, set[tuple[str, str]]] = {}
        self.denied: set[str] = set()
        self._faults: list[_Fault] = []
        self._corrupt: dict[str, bytes | None] = {}

    # ------------------------------------------------------------------ seeding

    @property
    def transport(self) -> httpx.MockTransport:
        """A transport for ``httpx.Client`` / ``httpx.AsyncClient`` that routes to this registry."""
        return httpx.MockTransport(self.handle)

    def _repo(self, name: str) -> _Repository:
        """The repository called ``name``, created on first use."""
        return self.repositories.setdefault(name, _Repository())

    def put_blob(self, repo: str, blob: Blob) -> str:
        """Store a blob in ``repo``; returns its digest."""
        self._repo(repo).blobs[blob.digest] = blob.data
        return blob.digest

    def put_manifest(self, repo: str, media_type: str, data: bytes, tag: str | None = None) -> str:
        """Store manifest bytes under their digest (and ``tag``); returns the digest."""
        blob = Blob(media_type, data)
        self._repo(repo).manifests[blob.digest] = blob
        if tag is not None:
            self._repo(repo).tags[tag] = blob.digest
        return blob.digest

    def put_image(self, repo: str, image: Image, tag: str | None = None) -> str:
        """Store an image's blobs and manifest; returns the manifest digest."""
        for blob in image.all_blobs():
            self.put_blob(repo, blob)
        return self.put_manifest(repo, image.manifest.media_type, image.manifest.data, tag)

    def put_index(self, repo: str, index: Index, tag: str | None = None) -> str:
        """Store every image of an index, then the index; returns the index digest."""
        for _, image in index.images:
            self.put_image(repo, image)
        return self.put_manifest(repo, index.manifest.media_type, index.manifest.data, tag)

    def move_tag(self, repo: str, tag: str, digest: str) -> None:
        """Point ``tag`` at another stored manifest (a tag moving between a check and a pull)."""
        if digest not in self._repo(repo).manifests:
            raise KeyError(f"{repo}@{digest} is not stored")
        self._repo(repo).tags[tag] = digest

    def delete_tag(self, repo: str, tag: str) -> None:
        """Remove ``tag``; the manifest stays reachable by digest."""
        del self._repo(repo).tags[tag]

    # ------------------------------------------------------------------ faults and counting

    def fail_next(self, n: int, status: int, headers: dict[str, str] | None = None, *, kind: str | None = None) -> None:
        """Answer the next ``n`` requests (of ``kind`` only, if given) with ``status`` and a matching error body.

        Example: ``fail_next(1, 429, {"Retry-After": "1"})`` or ``fail_next(2, 503, kind="blobs")``.
        """
        self._faults.append(_Fault(n, status, dict(headers or {}), kind))

    def corrupt(self, digest: str, data: bytes | None = None) -> None:
        """Serve altered bytes for ``digest`` (by digest or via a tag) while headers still claim ``digest``.

        Without ``data``, JSON is re-serialised compactly (same meaning, different bytes: only a digest check
        catches it); other bytes get their last bit flipped.
        """
        self._corrupt[digest] = data

    def deny(self, repo: str) -> None:
        """Answer every request for ``repo`` with ``403 DENIED``."""
        self.denied.add(repo)

    def count(self, method: str | None = None, kind: str | None = None) -> int:
        """How many requests matched ``method`` (``GET``, ``HEAD``…) and ``kind`` (see ``RecordedRequest.kind``)."""
        return sum(
            1 for r in self.requests
            if (method is None or r.method == method.upper()) and (kind is None or r.kind == kind)
        )

    def reset_requests(self) -> None:
        """Forget recorded requests and token queries (stored content, tokens and faults stay)."""
        self.requests.clear()
        self.token_queries.clear()

    # ------------------------------------------------------------------ request handling

    def handle(self, request: httpx.Request) -> httpx.Response:
        """The ``MockTransport`` handler: record, delay, inject faults, then route by host."""
        recorded = RecordedRequest(request.method, request.url.path, httpx.Headers(request.headers))
        self.requests.append(recorded)
        if self.delay:
            time.sleep(self.delay)
        fault = self._take_fault(recorded.kind)
        if fault is not None:
            return self._error(request, fault.status, _STATUS_CODES.get(fault.status, "UNKNOWN"), "injected fault",
                               headers=fault.headers)
        host = request.url.host
        if host == self.host:
            return self._handle_registry(request)
        if host == self.auth_host and self.auth is not None and self.auth[0] == "bearer":
            return self._handle_token(request)
        if host == self.blob_host and self.redirect_blobs:
            return self._handle_redirected_blob(request)
        raise httpx.ConnectError(f"fake registry: no route to host {host!r}", request=request)

    def _take_fault(self, kind: str) -> _Fault | None:
        """Consume one use of the first pending fault that applies to ``kind``."""
        for fault in self._faults:
            if fault.remaining > 0 and fault.kind in (None, kind):
                fault.remaining -= 1
                return fault
        return None

    def _error(
        self, request: httpx.Request, status: int, code: str, message: str,
        *, headers: dict[str, str] | None = None, detail: Any = None,
    ) -> httpx.Response:
        """A distribution-style JSON error (no body for HEAD)."""
        body = b"" if request.method == "HEAD" else error_body(code, message, detail)
        all_headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        return httpx.Response(status, headers=all_headers, content=body)

    def _handle_registry(self, request: httpx.Request) -> httpx.Response:
        """Serve a request for the registry host."""
        path = request.url.path
        name = self._name_in(path)
        denied = self._check_auth(request, name)
        if denied is not None:
            return denied
        if name is not None and name in self.denied:
            return self._error(request, 403, "DENIED", "requested access to the resource is denied")
        if request.method not in ("GET", "HEAD"):
            if self.writable:
                return self._write(request, path)
            return self._error(request, 405, "UNSUPPORTED", "the fake registry is read-only")
        if path == "/v2/":
            return httpx.Response(200, headers={"Docker-Distribution-API-Version": "registry/2.0"}, json={})
        if match := _TAGS.match(path):
            return self._tags(request, match["name"])
        if match := _PATH.match(path):
            if match["kind"] == "manifests":
                return self._manifest(request, match["name"], match["ref"])
            return self._blob(request, match["name"], match["ref"])
        return self._error(request, 404, "NOT_FOUND", f"no route for {path}")

    @staticmethod
    def _name_in(path: str) -> str | None:
        """The repository name in a registry path, or ``None`` for ``/v2/``."""
        match = _PATH.match(path) or _TAGS.match(path) or _UPLOAD.match(path)
        return match["name"] if match else None

    def _write(self, request: httpx.Request, path: str) -> httpx.Response:
        """Uploads and manifest PUTs (``writable=True``), as distribution 2.8 answers them."""
        if request.method == "POST" and (match := _UPLOAD.match(path)) and not match["id"]:
            upload = f"upload-{len(self.uploads) + 1}"
            self.uploads[upload] = match["name"]
            location = self.upload_location if self.upload_location is not None else (
                f"{request.url.scheme}://{request.url.netloc.decode()}/v2/{match['name']}/blobs/uploads/{upload}"
                "?_state=opaque")
            return httpx.Response(202, headers={"Location": location, "Docker-Upload-UUID": upload,
                                                "Range": "0-0", "Content-Length": "0"})
        if request.method == "PUT" and (match := _UPLOAD.match(path)) and match["id"]:
            if self.uploads.pop(match["id"], None) != match["name"]:
                return self._error(request, 404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry")
            digest = parse_qs(request.url.query.decode()).get("digest", [""])[0]
            if digest_of(request.content) != digest:
                return self._error(request, 400, "DIGEST_INVALID", "provided digest did not match uploaded content")
            self._repo(match["name"]).blobs[digest] = request.content
            return httpx.Response(201, headers={"Docker-Content-Digest": digest, "Content-Length": "0",
                                                "Location": f"/v2/{match['name']}/blobs/{digest}"})
        if request.method == "PUT" and (match := _PATH.match(path)) and match["kind"] == "manifests":
            media_type = request.headers.get("content-type", "")
            digest = digest_of(request.content)
            ref = match["ref"]
            if ref.startswith("sha256:") and ref != digest:
                return self._error(request, 400, "DIGEST_INVALID", "provided digest did not match uploaded content")
            self.put_manifest(match["name"], media_type, request.content, None if ref.startswith("sha256:") else ref)
            self.pushed_manifests.append((match["name"], ref, media_type))
            return httpx.Response(201, headers={"Docker-Content-Digest": self._claimed(digest), "Content-Length": "0",
                                                "Location": f"/v2/{match['name']}/manifests/{digest}"})
        return self._error(request, 405, "UNSUPPORTED", f"{request.method} {path} is not supported")

    def _claimed(self, digest: str) -> str:
        """The Docker-Content-Digest a manifest PUT answers (:meth:`corrupt` makes it lie)."""
        return self.claim_digests.get(digest, digest)

    def _repository(self, request: httpx.Request, name: str, kind: str) -> _Repository | httpx.Response:
        """The stored repository, or a 404 response.

        The code is ``NAME_UNKNOWN``, except in ``"distribution"`` mode, where (like distribution 2.8) an
        unknown repository gives ``MANIFEST_UNKNOWN``/``BLOB_UNKNOWN`` and only the tag list says ``NAME_UNKNOWN``.
        """
        if name in self.repositories:
            return self.repositories[name]
        if self.negotiation == "distribution" and kind == "manifests":
            return self._error(request, 404, "MANIFEST_UNKNOWN", "manifest unknown")
        if self.negotiation == "distribution" and kind == "blobs":
            return self._error(request, 404, "BLOB_UNKNOWN", "blob unknown to registry")
        return self._error(request, 404, "NAME_UNKNOWN", "repository name not known to registry", detail={"name": name})

    def _served_bytes(self, digest: str, data: bytes) -> bytes:
        """The bytes to send for ``digest``: altered when :meth:`corrupt` was called for it."""
        if digest not in self._corrupt:
            return data
        if self._corrupt[digest] is not None:
            return self._corrupt[digest]  # type: ignore[return-value]
        try:
            altered = json.dumps(json.loads(data), separators=(",", ":")).encode()
        except ValueError:
            altered = data
        return altered if altered != data else data[:-1] + bytes([data[-1] ^ 1])

    def _content(self, request: httpx.Request, media_type: str, digest: str, data: bytes) -> httpx.Response:
        """A 200 with the content headers; HEAD gets the headers and an empty body."""
        body = self._served_bytes(digest, data)
        headers = {
            "Content-Type": media_type, "Docker-Content-Digest": digest, "Content-Length": str(len(body)),
            "Etag": f'"{digest}"', "Docker-Distribution-API-Version": "registry/2.0",
        }
        return httpx.Response(200, headers=headers, content=b"" if request.method == "HEAD" else body)

    def _manifest(self, request: httpx.Request, name: str, ref: str) -> httpx.Response:
        """Serve a manifest by tag or digest, honouring ``Accept``."""
        repo = self._repository(request, name, "manifests")
        if isinstance(repo, httpx.Response):
            return repo
        if ref.startswith("sha256:") and not _DIGEST.match(ref):
            return self._error(request, 400, "DIGEST_INVALID", "provided digest did not match uploaded content")
        digest = ref if _DIGEST.match(ref) else repo.tags.get(ref)
        manifest = repo.manifests.get(digest or "")
        if manifest is None:
            return self._error(request, 404, "MANIFEST_UNKNOWN", "manifest unknown", detail={"Tag": ref})
        negotiate = self._negotiate_distribution if self.negotiation == "distribution" else self._negotiate_simple
        served = negotiate(name, None if _DIGEST.match(ref) else ref, manifest, parse_accept(request.headers))
        if isinstance(served, str):
            return self._error(request, 404, "MANIFEST_UNKNOWN", served)
        return self._content(request, served.media_type, served.digest, served.data)

    @staticmethod
    def _negotiate_simple(name: str, tag: str | None, manifest: Blob, accepted: set[str] | None) -> Blob | str:
        """Serve the stored manifest if its type is accepted (or there is no ``Accept``); else an error message."""
        if accepted is None or manifest.media_type in accepted or "*/*" in accepted:
            return manifest
        return f"{manifest.media_type} found, but accept header does not support it"

    def _negotiate_distribution(
        self, name: str, tag: str | None, manifest: Blob, accepted: set[str] | None
    ) -> Blob | str:
        """What distribution 2.8 serves: see the ``negotiation`` parameter of :class:`FakeRegistry`."""
        accepted = accepted or set()
        kind = manifest.media_type
        if kind == OCI_INDEX and kind not in accepted:
            return "OCI index found, but accept header does not support OCI indexes"
        if kind == OCI_MANIFEST and kind not in accepted:
            return "OCI manifest found, but accept header does not support OCI manifests"
        if tag is None or kind in accepted or kind not in (DOCKER_MANIFEST_LIST, DOCKER_MANIFEST):
            return manifest
        if kind == DOCKER_MANIFEST_LIST:
            manifest = self._default_platform_child(name, manifest) or manifest
            if manifest.media_type == DOCKER_MANIFEST_LIST:
                return "manifest list has no linux/amd64 entry"
            if manifest.media_type in accepted:
                return manifest
        return make_schema1(name, tag)

    def _default_platform_child(self, name: str, index: Blob) -> Blob | None:
        """The stored linux/amd64 entry of a manifest list (distribution's fallback for old clients)."""
        for entry in index.json().get("manifests", []):
            platform = entry.get("platform", {})
            if (platform.get("os"), platform.get("architecture")) == ("linux", "amd64"):
                return self.repositories[name].manifests.get(entry["digest"])
        return None

    def _blob(self, request: httpx.Request, name: str, digest: str) -> httpx.Response:
        """Serve a blob by digest (or redirect to the blob host)."""
        repo = self._repository(request, name, "blobs")
        if isinstance(repo, httpx.Response):
            return repo
        if not _DIGEST.match(digest):
            return self._error(request, 400, "DIGEST_INVALID", "provided digest did not match uploaded content")
        if digest not in repo.blobs:
            return self._error(request, 404, "BLOB_UNKNOWN", "blob unknown to registry", detail=digest)
        if self.redirect_blobs and request.method == "GET":
            location = f"https://{self.blob_host}/{name}/{digest}"
            return httpx.Response(307, headers={"Location": location, "Docker-Content-Digest": digest})
        return self._content(request, "application/octet-stream", digest, repo.blobs[digest])

    def _handle_redirected_blob(self, request: httpx.Request) -> httpx.Response:
        """Serve ``https://blobs.test/<name>/<digest>`` (no registry auth, like a pre-signed URL)."""
        name, _, digest = request.url.path.lstrip("/").rpartition("/")
        data = self.repositories.get(name, _Repository()).blobs.get(digest)
        if data is None:
            return httpx.Response(404, text="NoSuchKey")
        body = self._served_bytes(digest, data)
        return httpx.Response(200, headers={"Content-Type": "application/octet-stream"}, content=body)

    def _tags(self, request: httpx.Request, name: str) -> httpx.Response:
        """Serve the tag list of a repository."""
        repo = self._repository(request, name, "tags")
        if isinstance(repo, httpx.Response):
            return repo
        return httpx.Response(200, json={"name": name, "tags": sorted(repo.tags)})

    # ------------------------------------------------------------------ auth

    def _check_auth(self, request: httpx.Request, name: str | None) -> httpx.Response | None:
        """``None`` when the request may proceed, else the 401 response to send."""
        if self.auth is None:
            return None
        mode, user, password = self.auth
        given = request.headers.get("authorization", "")
        if mode == "basic":
            if given == _basic(user, password):
                return None
            challenge = f'Basic realm="{self.host}"'
            return self._error(request, 401, "UNAUTHORIZED", "authentication required",
                               headers={"WWW-Authenticate": challenge})
        return self._check_bearer(request, name, given)

    def _check_bearer(self, request: httpx.Request, name: str | None, given: str) -> httpx.Response | None:
        """Accept a bearer token granted for ``repository:<name>:pull`` (any valid token for ``/v2/``); a write
        (``writable=True``) needs ``repository:<name>:push``."""
        token = given.removeprefix("Bearer ") if given.startswith("Bearer ") else None
        grants = self.tokens.get(token or "")
        action = "pull" if request.method in ("GET", "HEAD") else "push"
        if grants is not None and (name is None or (name, action) in grants):
            return None
        challenge = f'Bearer realm="https://{self.auth_host}/token",service="{self.host}"'
        if name is not None:
            challenge += f',scope="repository:{name}:{"pull" if action == "pull" else "pull,push"}"'
        if token is not None:
            challenge += ',error="insufficient_scope"' if grants is not None else ',error="invalid_token"'
        return self._error(request, 401, "UNAUTHORIZED", "authentication required",
                           headers={"WWW-Authenticate": challenge})

    def _handle_token(self, request: httpx.Request) -> httpx.Response:
        """The token server: check Basic credentials (or allow anonymous pull) and grant pull scopes."""
        assert self.auth is not None
        _, user, password = self.auth
        if request.url.path != "/token" or request.method != "GET":
            return httpx.Response(404, json={"details": "not found"})
        params = parse_qs(request.url.query.decode())
        self.token_queries.append(params)
        if params.get("service") != [self.host]:
            return httpx.Response(400, json={"details": f"unknown service {params.get('service')}"})
        given = request.headers.get("authorization")
        if given != _basic(user, password) and not (given is None and self.anonymous_pull):
            return httpx.Response(401, json={"details": "incorrect username or password"},
                                  headers={"WWW-Authenticate": f'Basic realm="https://{self.auth_host}/token"'})
        grants = _pull_grants(params.get("scope", []))
        if self.writable and given is not None:  # an authenticated writer also gets the push it asks for
            grants |= {(name, "push") for name, _ in _push_requests(params.get("scope", []))}
        token = f"token-{len(self.tokens) + 1}-{digest_of(repr(sorted(grants)).encode())[7:19]}"
        self.tokens[token] = grants
        return httpx.Response(200, json={"token": token, "access_token": token, "expires_in": self.token_expires_in})
