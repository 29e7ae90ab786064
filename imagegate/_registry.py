"""All registry I/O: the OCI Distribution API, auth, retries, caching.

A :class:`RegistryClient` turns a :class:`Reference` into :class:`ImageFacts`:

* ``resolve()`` needs only the digest: one ``HEAD`` of the manifest.
* ``inspect()`` needs the config: ``GET`` the manifest (by tag or digest), the
  platform manifest when it is an index, and the config blob — three round trips
  at most once authenticated.

Every manifest and config received is hashed and must equal the digest asked
for (or the ``Docker-Content-Digest`` the registry claimed). Results are cached
in-process: content by digest for the life of the client (it cannot change),
tag → digest for ``tag_ttl`` seconds, after which a ``HEAD`` revalidates the tag.
Concurrent lookups of one key share a single request (single-flight).

We talk HTTP ourselves with httpx instead of using the docker SDK: the SDK's
``inspect_distribution`` goes through a Docker Engine, which a scheduler or CI
host may not have, and it neither verifies digests nor exposes the config.
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import json
import logging
import os
import random
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

import httpx

from imagegate._auth import Challenge, Credentials, DockerConfig, parse_challenge
from imagegate._errors import (
    AuthenticationError,
    DigestMismatch,
    InsecureRegistry,
    ManifestUnknown,
    PlatformNotFound,
    RegistryError,
    RegistryUnreachable,
    UnsupportedManifest,
)
from imagegate._facts import DEFAULT_PLATFORM, ImageFacts, Platform, facts_from_config
from imagegate._reference import Reference

log = logging.getLogger("imagegate.registry")

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPT = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
CONFIG_TYPES = frozenset({"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"})

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # containerd's limit for manifests and indexes
MAX_CONFIG_BYTES = 16 * 1024 * 1024
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Descriptor:
    """What a registry says about a manifest: its digest, media type and size."""

    digest: str
    media_type: str
    size: int


class _SingleFlight:
    """Run one call per key at a time; concurrent callers wait for its result."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Any, tuple[threading.Event, list[Any]]] = {}

    def do(self, key: Any, fn: Callable[[], T]) -> T:
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = (threading.Event(), [])
                self._calls[key] = call
        event, slot = call
        if not leader:
            event.wait()
            ok, value = slot[0]
            if ok:
                return value  # type: ignore[no-any-return]
            raise value
        try:
            value = fn()
            slot.append((True, value))
            return value
        except BaseException as exc:
            slot.append((False, exc))
            raise
        finally:
            with self._lock:
                del self._calls[key]
            event.set()


class _LRU:
    """A small thread-safe LRU mapping for content addressed by digest."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def sha_digest(data: bytes, algorithm: str = "sha256") -> str:
    """The ``algorithm:hex`` digest of *data*."""
    if algorithm not in ("sha256", "sha384", "sha512"):
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


class RegistryClient:
    """A caching, verifying client for OCI Distribution registries.

    Args:
        docker_config: where credentials come from; default ``~/.docker/config.json``.
        insecure_registries: hosts (``host:port``) allowed over plain http besides loopback.
        ca_file: an extra CA bundle to trust (also read: Docker's
            ``/etc/docker/certs.d/HOST/*.crt``).
        timeout: seconds for connect and for each read.
        retries: further attempts after a 429/5xx/connection error.
        backoff: first retry delay in seconds, doubled each time (with jitter),
            capped at ``max_backoff``; a ``Retry-After`` header wins.
        tag_ttl: how long a tag → digest answer is trusted before a HEAD revalidates it.
        transport: an httpx transport (tests pass an in-process fake registry).
    """

    def __init__(
        self,
        *,
        docker_config: DockerConfig | None = None,
        insecure_registries: Iterable[str] = (),
        ca_file: str | os.PathLike[str] | None = None,
        certs_dir: str | os.PathLike[str] = "/etc/docker/certs.d",
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        tag_ttl: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if retries < 0 or timeout <= 0 or backoff < 0 or tag_ttl < 0:
            raise ValueError("retries, backoff and tag_ttl must be >= 0 and timeout > 0")
        self._docker_config = docker_config
        self._insecure = frozenset(h.lower() for h in insecure_registries)
        self._ca_file = str(ca_file) if ca_file else None
        self._certs_dir = Path(certs_dir)
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._tag_ttl = tag_ttl
        self._transport = transport
        self._sleep = sleep
        self._lock = threading.Lock()
        self._clients: dict[str, httpx.Client] = {}
        self._schemes: dict[str, str] = {}
        self._creds: dict[str, Credentials | None] = {}
        self._auth: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._tags: dict[tuple[str, str, str], tuple[Descriptor, float]] = {}
        self._manifests = _LRU(1024)
        self._configs = _LRU(1024)
        self._facts = _LRU(1024)
        self._flight = _SingleFlight()
        self.round_trips = 0  # HTTP requests sent, auth and retries included

    # -- public API -----------------------------------------------------------------

    def resolve(self, ref: Reference, *, fresh: bool = False) -> Descriptor:
        """The digest *ref* points at (one HEAD; the index digest for an index).

        A tag's answer may come from the cache (``tag_ttl``); ``fresh=True`` always
        asks the registry, e.g. to see a base image tag that just moved.
        """
        if ref.digest is not None:
            key = (ref.registry, ref.repository, ref.digest)
            return self._flight.do(("head",) + key, lambda: self._head(ref, ref.digest))  # type: ignore[arg-type]
        return self._resolve_tag(ref, fresh=fresh)

    def inspect(self, ref: Reference, platform: Platform | None = None) -> ImageFacts:
        """Pin *ref* and read the config of its *platform* image (default linux/amd64)."""
        platform = platform or DEFAULT_PLATFORM
        if ref.digest is None:
            cached = self._fresh_tag(ref)
            if cached is None and self._has_stale_tag(ref):
                cached = self._resolve_tag(ref)
            if cached is not None:
                return self._facts_for(ref, cached.digest, platform)
            key = ("get-tag", ref.registry, ref.repository, ref.tag or "latest", str(platform))
            return self._flight.do(key, lambda: self._inspect_tag(ref, platform))
        return self._facts_for(ref, ref.digest, platform)

    def forget(self) -> None:
        """Drop every cached answer (content, tags and tokens)."""
        with self._lock:
            self._tags.clear()
            self._tokens.clear()
        self._manifests.clear()
        self._configs.clear()
        self._facts.clear()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tags ------------------------------------------------------------------------

    def _tag_key(self, ref: Reference) -> tuple[str, str, str]:
        return (ref.registry, ref.repository, ref.tag or "latest")

    def _fresh_tag(self, ref: Reference) -> Descriptor | None:
        with self._lock:
            entry = self._tags.get(self._tag_key(ref))
        if entry and entry[1] > time.monotonic():
            return entry[0]
        return None

    def _has_stale_tag(self, ref: Reference) -> bool:
        with self._lock:
            return self._tag_key(ref) in self._tags

    def _remember_tag(self, ref: Reference, descriptor: Descriptor) -> None:
        with self._lock:
            self._tags[self._tag_key(ref)] = (descriptor, time.monotonic() + self._tag_ttl)

    def _resolve_tag(self, ref: Reference, *, fresh: bool = False) -> Descriptor:
        cached = None if fresh else self._fresh_tag(ref)
        if cached is not None:
            return cached
        key = ("head",) + self._tag_key(ref)
        descriptor = self._flight.do(key, lambda: self._head(ref, ref.tag or "latest"))
        self._remember_tag(ref, descriptor)
        return descriptor

    # -- manifests and configs --------------------------------------------------------

    def _head(self, ref: Reference, target: str) -> Descriptor:
        response = self._send(ref, "HEAD", f"manifests/{target}", accept=ACCEPT)
        digest = response.headers.get("Docker-Content-Digest")
        media_type = _media_type(response.headers.get("Content-Type", ""))
        if not digest or (target.startswith("sha") and digest != target):
            # Some registries omit the header on HEAD; the body tells us instead.
            body, media_type, digest = self._get_manifest(ref, target)
        size = int(response.headers.get("Content-Length") or 0)
        return Descriptor(digest=digest, media_type=media_type, size=size)

    def _inspect_tag(self, ref: Reference, platform: Platform) -> ImageFacts:
        body, media_type, digest = self._get_manifest(ref, ref.tag or "latest")
        self._remember_tag(ref, Descriptor(digest, media_type, len(body)))
        return self._facts_for(ref, digest, platform)

    def _get_manifest(self, ref: Reference, target: str) -> tuple[bytes, str, str]:
        """GET a manifest by tag or digest, verified; cached when addressed by digest."""
        if target.startswith(("sha256:", "sha384:", "sha512:")):
            cached = self._manifests.get((ref.registry, ref.repository, target))
            if cached is not None:
                return cached  # type: ignore[no-any-return]
        response = self._send(ref, "GET", f"manifests/{target}", accept=ACCEPT, limit=MAX_MANIFEST_BYTES)
        body = response.content
        url = str(response.request.url)
        claimed = response.headers.get("Docker-Content-Digest")
        expected = target if ":" in target else claimed
        algorithm = expected.split(":", 1)[0] if expected else "sha256"
        actual = sha_digest(body, algorithm if algorithm in ("sha256", "sha384", "sha512") else "sha256")
        if expected and actual != expected:
            raise DigestMismatch(registry=ref.registry, url=url, expected=expected, actual=actual)
        media_type = _manifest_media_type(response.headers.get("Content-Type", ""), body)
        if media_type not in INDEX_TYPES | IMAGE_TYPES:
            raise UnsupportedManifest(registry=ref.registry, url=url, media_type=media_type)
        result = (body, media_type, actual)
        self._manifests.put((ref.registry, ref.repository, actual), result)
        return result

    def _get_config(self, ref: Reference, digest: str) -> Mapping[str, Any]:
        key = (ref.registry, ref.repository, digest)
        cached = self._configs.get(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]

        def fetch() -> Mapping[str, Any]:
            response = self._send(ref, "GET", f"blobs/{digest}", limit=MAX_CONFIG_BYTES)
            body = response.content
            actual = sha_digest(body, digest.split(":", 1)[0])
            if actual != digest:
                raise DigestMismatch(registry=ref.registry, url=str(response.request.url), expected=digest, actual=actual)
            config = _json(body, ref, "image config")
            self._configs.put(key, config)
            return config

        return self._flight.do(("blob",) + key, fetch)

    def _facts_for(self, ref: Reference, digest: str, platform: Platform) -> ImageFacts:
        key = (ref.registry, ref.repository, digest, str(platform))
        cached: ImageFacts | None = self._facts.get(key)
        if cached is None:
            cached = self._flight.do(("facts",) + key, lambda: self._build_facts(ref, digest, platform))
            self._facts.put(key, cached)
        if cached.reference != ref:
            cached = replace(cached, reference=ref)
        return cached

    def _build_facts(self, ref: Reference, digest: str, platform: Platform) -> ImageFacts:
        body, media_type, top = self._get_manifest(ref, digest)
        manifest = _json(body, ref, "manifest")
        available: tuple[Platform, ...] = ()
        manifest_digest = top
        if media_type in INDEX_TYPES:
            available, child = _select_platform(manifest, platform, ref)
            body, child_type, manifest_digest = self._get_manifest(ref, child)
            if child_type not in IMAGE_TYPES:
                raise UnsupportedManifest(registry=ref.registry, url=f"{ref.name}@{child}", media_type=child_type)
            manifest = _json(body, ref, "manifest")
        config_desc = manifest.get("config") or {}
        config_digest = config_desc.get("digest")
        if not isinstance(config_digest, str):
            raise UnsupportedManifest(registry=ref.registry, url=f"{ref.name}@{manifest_digest}", media_type="(no config)")
        config_type = config_desc.get("mediaType", "")
        if config_type and config_type not in CONFIG_TYPES:
            raise UnsupportedManifest(registry=ref.registry, url=f"{ref.name}@{manifest_digest}", media_type=config_type)
        config = self._get_config(ref, config_digest)
        image_platform = Platform(
            str(config.get("os") or platform.os),
            str(config.get("architecture") or platform.architecture),
            config.get("variant"),
        )
        if not available:
            available = (image_platform,)
            if not platform.matches(image_platform):
                raise PlatformNotFound(
                    registry=ref.registry, reference=str(ref), platform=str(platform), available=[str(image_platform)]
                )
        return facts_from_config(
            config,
            reference=ref,
            digest=top,
            media_type=media_type,
            manifest_digest=manifest_digest,
            config_digest=config_digest,
            platform=image_platform,
            platforms=available,
        )

    # -- HTTP -------------------------------------------------------------------------

    def _client(self, host: str) -> httpx.Client:
        with self._lock:
            client = self._clients.get(host)
            if client is None:
                client = httpx.Client(
                    timeout=httpx.Timeout(self._timeout),
                    follow_redirects=True,  # blobs redirect to storage; httpx drops Authorization cross-origin
                    transport=self._transport,
                    verify=self._ssl_context(host) if self._transport is None else True,
                    headers={"User-Agent": "imagegate"},
                )
                self._clients[host] = client
            return client

    def _ssl_context(self, host: str) -> ssl.SSLContext:
        host_dir = self._certs_dir / host
        extra = tuple(str(p) for p in sorted(host_dir.glob("*.crt"))) if host_dir.is_dir() else ()
        return _ssl_context(self._ca_file, extra)

    def _plain_http_allowed(self, ref: Reference) -> bool:
        return ref.is_loopback or ref.registry.lower() in self._insecure

    def _send(
        self, ref: Reference, method: str, path: str, *, accept: str | None = None, limit: int | None = None
    ) -> httpx.Response:
        host = ref.api_host
        scheme = self._schemes.get(host, "https")
        try:
            response = self._send_scheme(ref, scheme, method, path, accept=accept, limit=limit)
        except RegistryUnreachable as exc:
            if _untrusted_certificate(exc):
                raise RegistryUnreachable(
                    f"the TLS certificate of {ref.registry} is not trusted ({exc.__cause__}); pass --ca-file PEM "
                    f"(ca_file=...) or put the CA in /etc/docker/certs.d/{ref.registry}/ca.crt",
                    registry=ref.registry,
                    url=exc.url,
                ) from exc
            if host in self._schemes or not self._plain_http_allowed(ref):
                if _looks_like_plain_http(exc):
                    raise InsecureRegistry(
                        f"{ref.registry} answered https with plain http; if it really serves plain http, "
                        f"pass --insecure-registry {ref.registry} (insecure_registries=[{ref.registry!r}])",
                        registry=ref.registry,
                        url=exc.url,
                    ) from exc
                raise
            # Docker's rule for insecure registries: try https, fall back to http.
            response = self._send_scheme(ref, "http", method, path, accept=accept, limit=limit)
            scheme = "http"
        self._schemes.setdefault(host, scheme)
        return response

    def _send_scheme(
        self, ref: Reference, scheme: str, method: str, path: str, *, accept: str | None, limit: int | None
    ) -> httpx.Response:
        url = f"{scheme}://{ref.api_host}/v2/{ref.repository}/{path}"
        headers = {"Accept": accept} if accept else {}
        authorized = False
        attempt = 0
        while True:
            auth = self._auth_header(ref, scheme)
            request_headers = dict(headers, **({"Authorization": auth} if auth else {}))
            try:
                response = self._fetch(ref, method, url, request_headers, limit)
            except httpx.TransportError as exc:
                if attempt < self._retries and not isinstance(exc, httpx.ConnectError):
                    attempt += 1
                    self._sleep(self._delay(attempt, None))
                    continue
                raise RegistryUnreachable(
                    f"cannot reach {ref.registry} ({type(exc).__name__}: {exc}); check the host and port, "
                    "that the registry is running, and network/proxy settings",
                    registry=ref.registry,
                    url=url,
                    temporary=True,
                ) from exc
            if response.status_code in (401, 403) and not authorized:
                challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
                if challenge is not None and response.status_code == 401:
                    self._authenticate(ref, scheme, challenge)
                    authorized = True
                    continue
            if response.status_code in RETRY_STATUSES and attempt < self._retries:
                attempt += 1
                self._sleep(self._delay(attempt, response.headers.get("Retry-After")))
                continue
            if response.status_code >= 400:
                raise self._error(ref, response)
            return response

    def _fetch(self, ref: Reference, method: str, url: str, headers: dict[str, str], limit: int | None) -> httpx.Response:
        self._count()
        log.debug("%s %s", method, url)
        client = self._client(ref.api_host)
        request = client.build_request(method, url, headers=headers)
        response = client.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if limit is not None and size > limit:
                    raise RegistryError(
                        f"{url} is larger than {limit} bytes; refusing to read it",
                        registry=ref.registry,
                        url=url,
                    )
                chunks.append(chunk)
        finally:
            response.close()
        response._content = b"".join(chunks)  # read once, with a size cap
        return response

    def _count(self) -> None:
        with self._lock:
            self.round_trips += 1

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            seconds = _retry_after_seconds(retry_after)
            if seconds is not None:
                return min(seconds, self._max_backoff)
        base = self._backoff * (2 ** (attempt - 1))
        return min(base * (0.5 + random.random() / 2), self._max_backoff)

    def _error(self, ref: Reference, response: httpx.Response) -> RegistryError:
        url = str(response.request.url)
        codes, message = _error_body(response)
        status = response.status_code
        detail = f"{status} {message or response.reason_phrase}".strip()
        if status in (401, 403):
            creds = self._credentials(ref)
            who = f"as {creds.username!r} ({creds.source})" if creds and creds.username else "anonymously"
            return AuthenticationError(
                f"{ref.registry} refused access to {ref.repository} {who}: {detail}; "
                f"run `docker login {ref.registry}` or fix the credentials in ~/.docker/config.json",
                registry=ref.registry,
                url=url,
                status=status,
                codes=codes,
            )
        if status == 404:
            return ManifestUnknown(
                f"{ref} not found in {ref.registry}: {detail}; check the repository and tag",
                registry=ref.registry,
                url=url,
                status=status,
                codes=codes,
            )
        return RegistryError(
            f"{ref.registry} answered {detail} for {ref}",
            registry=ref.registry,
            url=url,
            status=status,
            codes=codes,
            temporary=status in RETRY_STATUSES,
        )

    # -- auth -------------------------------------------------------------------------

    def _credentials(self, ref: Reference) -> Credentials | None:
        with self._lock:
            if ref.registry in self._creds:
                return self._creds[ref.registry]
        config = self._docker_config or DockerConfig.load()
        creds = config.credentials_for(ref.registry)
        with self._lock:
            self._creds[ref.registry] = creds
        return creds

    def _auth_header(self, ref: Reference, scheme: str) -> str | None:
        with self._lock:
            challenge = self._auth.get(ref.api_host)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = self._credentials(ref)
            return creds.basic_header() if creds and creds.username else None
        if challenge.scheme == "bearer":
            scope = f"repository:{ref.repository}:pull"
            with self._lock:
                token = self._tokens.get((ref.api_host, scope))
            if token and token[1] > time.monotonic():
                return f"Bearer {token[0]}"
            self._fetch_token(ref, challenge, scope)
            with self._lock:
                return f"Bearer {self._tokens[(ref.api_host, scope)][0]}"
        return None

    def _authenticate(self, ref: Reference, scheme: str, challenge: Challenge) -> None:
        if challenge.scheme not in ("basic", "bearer"):
            raise AuthenticationError(
                f"{ref.registry} asks for {challenge.scheme!r} auth, which imagegate does not speak; "
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
            # a new challenge (e.g. a token that expired early) invalidates our tokens
            for key in [k for k in self._tokens if k[0] == ref.api_host]:
                del self._tokens[key]

    def _fetch_token(self, ref: Reference, challenge: Challenge, scope: str) -> None:
        realm = challenge.realm
        if not realm:
            raise AuthenticationError(f"{ref.registry} sent a Bearer challenge without a realm", registry=ref.registry)
        params = {"scope": scope}
        if challenge.params.get("service"):
            params["service"] = challenge.params["service"]
        creds = self._credentials(ref)
        client = self._client(ref.api_host)
        self._count()
        try:
            if creds and creds.identity_token:
                data = dict(params, grant_type="refresh_token", refresh_token=creds.identity_token, client_id="imagegate")
                response = client.post(realm, data=data)
            else:
                headers = {"Authorization": creds.basic_header()} if creds and creds.username else {}
                response = client.get(realm, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise RegistryUnreachable(
                f"cannot reach the token service of {ref.registry} ({type(exc).__name__})",
                registry=ref.registry,
                url=realm,
                temporary=True,
            ) from exc
        if response.status_code != 200:
            codes, message = _error_body(response)
            raise AuthenticationError(
                f"token service of {ref.registry} refused {scope}: {response.status_code} {message}; "
                f"run `docker login {ref.registry}`",
                registry=ref.registry,
                url=realm,
                status=response.status_code,
                codes=codes,
            )
        body = _json(response.content, ref, "token response")
        token = body.get("token") or body.get("access_token")
        if not token:
            raise AuthenticationError(f"token service of {ref.registry} returned no token", registry=ref.registry, url=realm)
        ttl = float(body.get("expires_in") or 60)
        with self._lock:
            self._tokens[(ref.api_host, scope)] = (token, time.monotonic() + max(ttl - 10, 1))


# -- pure helpers -----------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _ssl_context(ca_file: str | None, extra_cas: tuple[str, ...]) -> ssl.SSLContext:
    """A verifying context trusting the system CAs plus *ca_file* and *extra_cas*.

    Cached: loading the system CA store costs ~30 ms, and contexts are safe to share.
    """
    context = ssl.create_default_context()
    for cafile in (ca_file, *extra_cas):
        if cafile:
            context.load_verify_locations(cafile=cafile)
    return context


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _manifest_media_type(content_type: str, body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        document = {}
    if isinstance(document, dict):
        if document.get("schemaVersion") == 1:
            return "application/vnd.docker.distribution.manifest.v1+json"
        declared = document.get("mediaType")
        if isinstance(declared, str) and declared:
            return declared
        header = _media_type(content_type)
        if header in INDEX_TYPES | IMAGE_TYPES:
            return header
        if "manifests" in document:
            return OCI_INDEX
        if "config" in document:
            return OCI_MANIFEST
    return _media_type(content_type) or "(unknown)"


def _select_platform(index: Mapping[str, Any], wanted: Platform, ref: Reference) -> tuple[tuple[Platform, ...], str]:
    available: list[Platform] = []
    chosen: str | None = None
    for entry in index.get("manifests") or ():
        spec = entry.get("platform") or {}
        if not spec.get("os") or spec.get("os") == "unknown":
            continue  # attestation manifests and other non-images
        candidate = Platform(spec["os"], spec.get("architecture", ""), spec.get("variant"))
        available.append(candidate)
        if chosen is None and wanted.matches(candidate):
            chosen = entry.get("digest")
    if chosen is None:
        raise PlatformNotFound(registry=ref.registry, reference=str(ref), platform=str(wanted), available=[str(p) for p in available])
    return tuple(available), chosen


def _json(body: bytes, ref: Reference, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        raise RegistryError(f"{ref.registry} sent a {what} for {ref} that is not JSON", registry=ref.registry) from None
    if not isinstance(value, dict):
        raise RegistryError(f"{ref.registry} sent a {what} for {ref} that is not a JSON object", registry=ref.registry)
    return value


def _error_body(response: httpx.Response) -> tuple[tuple[str, ...], str]:
    try:
        errors = json.loads(response.content or b"{}").get("errors") or []
        codes = tuple(str(e.get("code", "")) for e in errors if isinstance(e, dict))
        message = "; ".join(str(e.get("message", "")) for e in errors if isinstance(e, dict))
        return codes, message
    except (ValueError, AttributeError):
        return (), ""


def _retry_after_seconds(value: str) -> float | None:
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _untrusted_certificate(exc: BaseException) -> bool:
    return "CERTIFICATE_VERIFY_FAILED" in repr(exc.__cause__ or exc).upper()


def _looks_like_plain_http(exc: BaseException) -> bool:
    text = repr(exc.__cause__ or exc).upper()
    return "WRONG_VERSION_NUMBER" in text or "RECORD_LAYER_FAILURE" in text or "PACKET_LENGTH_TOO_LONG" in text
