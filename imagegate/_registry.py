"""The registry protocol: pin a reference, read its image's config (and, when asked, its /etc/passwd).

A :class:`RegistryClient` turns a :class:`Reference` into :class:`ImageFacts`:

* ``resolve()`` needs only the digest: one ``HEAD`` of the manifest.
* ``inspect()`` needs the config: ``GET`` the manifest (by tag or digest), the platform manifest
  when it is an index, and the config blob — three round trips at most once authenticated.
* ``passwd()`` reads ``/etc/passwd`` from the platform image's layers, newest first (only needed
  when ``USER`` is a name, which the Docker Engine resolves from that file).

Every manifest, config and layer received is hashed and must equal the digest asked for (or the
``Docker-Content-Digest`` the registry claimed); every document is read strictly
(:mod:`imagegate._documents`). Results are cached in-process: content by digest for the life of
the client (it cannot change), tag → digest for ``tag_ttl`` seconds, after which a ``HEAD``
revalidates the tag. Concurrent lookups of one key share a single request (single-flight).

Across processes, content addressed by digest (manifests, configs, the ``/etc/passwd`` found in a
layer) is also kept in the host's disk cache (:mod:`imagegate._diskcache`, verified again on every
read), so a new process checking a known image costs one ``HEAD`` for the tag (a reference by
digest: none): with that cache, ``inspect`` of a tag asks ``HEAD`` first and fetches the manifest
(by tag, verified) only when the cache lacks that digest; processes that miss the same entry at
once take turns, so one fetches it. Tags are never cached on disk.

HTTP itself — TLS, deadlines, caps, retries, redirects, auth — is :mod:`imagegate._transport`'s.

We talk HTTP ourselves (:mod:`imagegate._netio`) instead of using the docker SDK: the SDK's
``inspect_distribution`` goes through a Docker Engine, which a scheduler or CI host may not have,
and it neither verifies digests nor exposes the config.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from imagegate._auth import DockerConfig
from imagegate._diskcache import DiskCache
from imagegate._documents import (
    ACCEPT,
    LAYER_TYPES,
    MANIFEST_TYPES,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    UnsupportedDocument,
    media_type_of,
    parse_config,
    parse_manifest,
)
from imagegate._errors import (
    AuthenticationError,
    DigestMismatch,
    InsecureRegistry,
    InvalidReference,
    MalformedResponse,
    ManifestUnknown,
    PlatformNotFound,
    RegistryError,
    RegistryUnreachable,
    UnsupportedManifest,
    typed_errors,
)
from imagegate._facts import DEFAULT_PLATFORM, ImageFacts, Platform
from imagegate._json import DocumentError
from imagegate._reference import Reference, parse_digest
from imagegate._transport import DEFAULT_DEADLINE, Transport

if TYPE_CHECKING:
    import httpx

    from imagegate._layers import LayerFile
    from imagegate._user import PasswdLookup

__all__ = ["Descriptor", "PasswdLookup", "RegistryClient"]


def __getattr__(name: str) -> Any:
    # What only `check` and `passwd` need loads with them, not with `resolve` (start-up time).
    if name == "PasswdLookup":
        from imagegate._user import PasswdLookup

        return PasswdLookup
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # containerd's limit for manifests and indexes
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_LAYER_BYTES = 8 * 1024**3
MAX_UNPACKED_BYTES = 32 * 1024**3
PASSWD = "/etc/passwd"
MAX_PASSWD_BYTES = 1 << 20  # _layers.MAX_FILE: a larger passwd file is refused when scanning
_SCAN_KIND = "layer-file:/etc/passwd"  # what scan_layer found for PASSWD in a layer, by the layer's digest
_FOLLOWER_WAIT = DEFAULT_DEADLINE * 3

T = TypeVar("T")


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
            if not event.wait(_FOLLOWER_WAIT) or not slot:
                return fn()  # the leader is gone or stuck: ask ourselves (bounded by our own deadline)
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
        ca_file: an extra CA bundle to trust (also read: Docker's ``/etc/docker/certs.d/HOST/*.crt``).
        timeout: seconds for each connect, read or write.
        deadline: seconds for each whole operation (``resolve``, ``inspect``, ``passwd``), whatever
            the registry does (default 60).
        retries: further attempts after a 429/5xx/connection error.
        backoff: first retry delay in seconds, doubled each time (with jitter), capped at
            ``max_backoff``; a ``Retry-After`` header wins. Never past the deadline.
        tag_ttl: how long a tag → digest answer is trusted in this process before a HEAD revalidates
            it (tags are never cached on disk).
        transport: an httpx transport (tests pass an in-process fake registry).
        disk_cache: the host's cache of content by digest (:class:`~imagegate._diskcache.DiskCache`);
            default: the one ``IMAGEGATE_REGISTRY_CACHE*`` describe (``~/.cache/imagegate/registry``)
            when talking to real registries, none with an injected *transport*; ``False``: none.
    """

    def __init__(
        self,
        *,
        docker_config: DockerConfig | None = None,
        insecure_registries: Any = (),
        ca_file: str | os.PathLike[str] | None = None,
        certs_dir: str | os.PathLike[str] = "/etc/docker/certs.d",
        timeout: float = 10.0,
        deadline: float = DEFAULT_DEADLINE,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        tag_ttl: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        disk_cache: DiskCache | bool | None = None,
    ) -> None:
        if tag_ttl < 0:
            raise ValueError("tag_ttl must be >= 0")
        if disk_cache is None:
            disk_cache = transport is None  # an injected transport is not a registry of this host
        self._disk: DiskCache | None = DiskCache.from_environment() if disk_cache is True else disk_cache or None
        self._owns_disk = disk_cache is True
        self._http = Transport(
            docker_config=docker_config, insecure_registries=insecure_registries, ca_file=ca_file, certs_dir=certs_dir,
            timeout=timeout, deadline=deadline, retries=retries, backoff=backoff, max_backoff=max_backoff,
            transport=transport, sleep=sleep, memory=self._disk,
        )
        self._tag_ttl = tag_ttl
        self._lock = threading.Lock()
        self._tags: dict[tuple[str, str, str], tuple[Descriptor, float]] = {}
        self._manifests = _LRU(1024)
        self._configs = _LRU(1024)
        self._facts = _LRU(1024)
        self._passwd = _LRU(256)
        self._layers = _LRU(1024)
        self._flight = _SingleFlight()

    @property
    def round_trips(self) -> int:
        """HTTP requests sent so far (auth, redirects and retries included)."""
        return self._http.round_trips

    @property
    def deadline(self) -> float:
        return self._http.deadline

    @property
    def disk_cache(self) -> DiskCache | None:
        """The host's cache this client reads and fills (None: in-process caching only)."""
        return self._disk

    # -- public API -----------------------------------------------------------------------------

    @typed_errors
    def resolve(self, ref: Reference, *, fresh: bool = False) -> Descriptor:
        """The digest *ref* points at (one HEAD; the index digest for an index).

        A tag's answer may come from the cache (``tag_ttl``); ``fresh=True`` always asks the
        registry, e.g. to see a base image tag that just moved.
        """
        with self._http.operation():
            if ref.digest is not None:
                key = ("head", ref.registry, ref.repository, ref.digest)
                return self._flight.do(key, lambda: self._head(ref, ref.digest))  # type: ignore[arg-type]
            return self._resolve_tag(ref, fresh=fresh)

    @typed_errors
    def inspect(self, ref: Reference, platform: Platform | None = None) -> ImageFacts:
        """Pin *ref* and read the config of its *platform* image (default linux/amd64)."""
        platform = platform or DEFAULT_PLATFORM
        with self._http.operation():
            if ref.digest is not None:
                return self._facts_for(ref, ref.digest, platform)
            cached = self._fresh_tag(ref)
            if cached is None and self._has_stale_tag(ref):
                cached = self._resolve_tag(ref)
            elif cached is None and self._disk is not None:
                head = self._probe_tag(ref)  # one HEAD; the content may be on disk already
                if head is not None:
                    return self._facts_for(ref, self._manifest_for_tag(ref, head), platform)
            if cached is not None:
                return self._facts_for(ref, cached.digest, platform)
            key = ("get-tag", ref.registry, ref.repository, ref.tag or "latest", str(platform))
            return self._flight.do(key, lambda: self._inspect_tag(ref, platform))

    @typed_errors
    def passwd(self, facts: ImageFacts) -> PasswdLookup:
        """The ``/etc/passwd`` of the image *facts* describe, read from its layers (newest first)."""
        ref = facts.reference
        key = (ref.registry, ref.repository, facts.manifest_digest)
        cached: PasswdLookup | None = self._passwd.get(key)
        if cached is None:
            with self._http.operation():
                cached = self._flight.do(("passwd",) + key, lambda: self._read_passwd(ref, facts.manifest_digest))
            self._passwd.put(key, cached)
        return cached

    def forget(self) -> None:
        """Drop every cached answer (content, tags and tokens)."""
        with self._lock:
            self._tags.clear()
        self._http.forget()
        for cache in (self._manifests, self._configs, self._facts, self._passwd, self._layers):
            cache.clear()

    def close(self) -> None:
        self._http.close()
        if self._disk is not None and self._owns_disk:
            self._disk.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tags --------------------------------------------------------------------------------------

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

    def _probe_tag(self, ref: Reference) -> Descriptor | None:
        """The tag's digest by HEAD, or None when the registry gives no usable answer to HEAD (e.g.
        405 or 501 from a proxy): then the manifest GET by tag answers, as without a disk cache."""
        try:
            return self._resolve_tag(ref)
        except (AuthenticationError, ManifestUnknown, RegistryUnreachable, InsecureRegistry):
            raise
        except RegistryError as exc:
            if exc.temporary or exc.status is None:
                raise
            return None

    def _resolve_tag(self, ref: Reference, *, fresh: bool = False) -> Descriptor:
        cached = None if fresh else self._fresh_tag(ref)
        if cached is not None:
            return cached
        key = ("head",) + self._tag_key(ref)
        descriptor = self._flight.do(key, lambda: self._head(ref, ref.tag or "latest"))
        self._remember_tag(ref, descriptor)
        return descriptor

    # -- manifests and configs ---------------------------------------------------------------------

    def _head(self, ref: Reference, target: str) -> Descriptor:
        reply = self._http.request(ref, "HEAD", f"manifests/{target}", accept=ACCEPT, limit=0)
        claimed = reply.header("Docker-Content-Digest")
        media_type = media_type_of(reply.header("Content-Type"))
        by_digest = target.startswith(("sha256:", "sha384:", "sha512:"))
        if claimed and _valid_digest(claimed) and media_type in MANIFEST_TYPES and (not by_digest or claimed == target):
            return Descriptor(media_type, claimed, _size(reply.header("Content-Length")))
        # No usable answer to HEAD (some registries omit the header): the verified body tells us.
        body, document, digest = self._get_manifest(ref, target)
        return Descriptor(document.media_type, digest, len(body))

    def _inspect_tag(self, ref: Reference, platform: Platform) -> ImageFacts:
        body, document, digest = self._get_manifest(ref, ref.tag or "latest")
        self._remember_tag(ref, Descriptor(document.media_type, digest, len(body)))
        return self._facts_for(ref, digest, platform)

    def _get_manifest(self, ref: Reference, target: str) -> tuple[bytes, Index | Manifest, str]:
        """GET a manifest by tag or digest, verified and strictly parsed; cached by digest."""
        by_digest = target.startswith(("sha256:", "sha384:", "sha512:"))
        if by_digest:
            cached = self._manifests.get((ref.registry, ref.repository, target)) or self._stored_manifest(ref, target)
            if cached is not None:
                return cached  # type: ignore[no-any-return]
            if self._disk is not None:
                with self._disk_lock("manifest", ref, target):
                    return self._stored_manifest(ref, target) or self._fetch_manifest(ref, target, by_digest)
        return self._fetch_manifest(ref, target, by_digest)

    def _fetch_manifest(self, ref: Reference, target: str, by_digest: bool) -> tuple[bytes, Index | Manifest, str]:
        reply = self._http.request(ref, "GET", f"manifests/{target}", accept=ACCEPT, limit=MAX_MANIFEST_BYTES)
        claimed = reply.header("Docker-Content-Digest")
        if claimed is not None and not _valid_digest(claimed):
            raise MalformedResponse(
                f"{ref.registry} sent Docker-Content-Digest {claimed[:80]!r}, which is not a digest",
                registry=ref.registry, url=reply.url,
            )
        expected = target if by_digest else claimed
        actual = sha_digest(reply.content, expected.split(":", 1)[0] if expected else "sha256")
        if expected and actual != expected:
            raise DigestMismatch(registry=ref.registry, url=reply.url, expected=expected, actual=actual)
        document = self._parse(ref, reply.url, "manifest", lambda: parse_manifest(reply.content, reply.header("Content-Type")))
        result = (reply.content, document, actual)
        self._manifests.put((ref.registry, ref.repository, actual), result)
        if self._disk is not None:
            self._disk.put("manifest", ref.registry, ref.repository, actual, reply.content,
                           {"content_type": (reply.header("Content-Type") or "")[:256]})
        return result

    def _manifest_for_tag(self, ref: Reference, head: Descriptor) -> str:
        """The digest to read facts for, the tag's manifest being in memory then: from the disk cache, or
        fetched by tag (verified; the digest is the one the GET returned, which is the HEAD's unless the tag
        moved in between) while other processes that want it wait for this one."""
        if self._has_manifest(ref, head.digest):
            return head.digest
        with self._disk_lock("manifest", ref, head.digest):
            if self._has_manifest(ref, head.digest):
                return head.digest  # another process fetched it meanwhile
            key = ("get-tag", ref.registry, ref.repository, ref.tag or "latest")
            body, document, digest = self._flight.do(key, lambda: self._get_manifest(ref, ref.tag or "latest"))
        self._remember_tag(ref, Descriptor(document.media_type, digest, len(body)))
        return digest

    def _disk_lock(self, kind: str, ref: Reference, key: str) -> contextlib.AbstractContextManager[None]:
        """The disk cache's lock on one entry, waiting at most half the operation's time left."""
        if self._disk is None:
            return contextlib.nullcontext()
        return self._disk.locked(kind, ref.registry, ref.repository, key, wait=self._http.time_left() / 2)

    def _has_manifest(self, ref: Reference, digest: str) -> bool:
        """Whether the manifest *digest* is known without a request (in memory or in the disk cache)."""
        key = (ref.registry, ref.repository, digest)
        return self._manifests.get(key) is not None or self._stored_manifest(ref, digest) is not None

    def _stored_manifest(self, ref: Reference, digest: str) -> tuple[bytes, Index | Manifest, str] | None:
        """A manifest from the disk cache (its bytes hash to *digest*: the cache checked), parsed as if fetched."""
        if self._disk is None:
            return None
        stored = self._disk.get("manifest", ref.registry, ref.repository, digest, limit=MAX_MANIFEST_BYTES)
        if stored is None:
            return None
        body, meta = stored
        content_type = meta.get("content_type")
        try:
            document = parse_manifest(body, content_type if isinstance(content_type, str) else None)
        except DocumentError:
            return None  # stored by another version that read it differently: ask the registry
        result = (body, document, digest)
        self._manifests.put((ref.registry, ref.repository, digest), result)
        return result

    def _get_config(self, ref: Reference, config: Descriptor) -> ImageConfig:
        key = (ref.registry, ref.repository, config.digest)
        cached = self._configs.get(key) or self._stored_config(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]

        def fetch() -> ImageConfig:
            with self._disk_lock("config", ref, config.digest):
                return self._stored_config(key) or self._fetch_config(ref, config, key)

        return self._flight.do(("blob",) + key, fetch)

    def _stored_config(self, key: tuple[str, str, str]) -> ImageConfig | None:
        """A config from the disk cache (its bytes hash to its digest: the cache checked), parsed as if fetched."""
        stored = self._disk.get("config", *key, limit=MAX_CONFIG_BYTES) if self._disk is not None else None
        if stored is None:
            return None
        try:
            parsed = parse_config(stored[0])
        except DocumentError:
            return None  # read differently by another version: ask the registry
        self._configs.put(key, parsed)
        return parsed

    def _fetch_config(self, ref: Reference, config: Descriptor, key: tuple[str, str, str]) -> ImageConfig:
        if config.size > MAX_CONFIG_BYTES:
            raise MalformedResponse(
                f"{ref.name}'s config is {config.size} bytes, more than {MAX_CONFIG_BYTES}; refusing to read it",
                registry=ref.registry,
            )
        reply = self._http.request(ref, "GET", f"blobs/{config.digest}", limit=MAX_CONFIG_BYTES)
        actual = sha_digest(reply.content, config.digest.split(":", 1)[0])
        if actual != config.digest:
            raise DigestMismatch(registry=ref.registry, url=reply.url, expected=config.digest, actual=actual)
        parsed = self._parse(ref, reply.url, "image config", lambda: parse_config(reply.content))
        self._configs.put(key, parsed)
        if self._disk is not None:
            self._disk.put("config", *key, reply.content)
        return parsed

    def _parse(self, ref: Reference, url: str, what: str, parse: Callable[[], T]) -> T:
        try:
            return parse()
        except UnsupportedDocument as exc:
            raise UnsupportedManifest(registry=ref.registry, url=url, media_type=exc.media_type, reason=exc.reason) from None
        except DocumentError as exc:
            raise MalformedResponse(
                f"{ref.registry} sent a malformed {what} for {ref}: {exc}; refusing it (it could mean one thing "
                "to imagegate and another to the engine)",
                registry=ref.registry, url=url,
            ) from None

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
        from imagegate._secrets import redact_argv, redact_labels
        body, document, top = self._get_manifest(ref, digest)
        top_media_type = document.media_type
        available: tuple[Platform, ...] = ()
        manifest_digest = top
        listed: Platform | None = None
        if isinstance(document, Index):
            available, chosen = _select_platform(document, platform, ref)
            listed = chosen.platform
            body, child, manifest_digest = self._get_manifest(ref, chosen.digest)
            if not isinstance(child, Manifest):
                raise UnsupportedManifest(
                    registry=ref.registry, url=f"{ref.name}@{chosen.digest}", media_type=child.media_type,
                    reason="an index inside an index is not supported",
                )
            if child.media_type != chosen.media_type:
                raise MalformedResponse(
                    f"{ref.name}@{chosen.digest} is listed as {chosen.media_type!r} but is {child.media_type!r}",
                    registry=ref.registry,
                )
            document = child
        config = self._get_config(ref, document.config)
        image_platform = Platform(config.os or platform.os, config.architecture or platform.architecture, config.variant)
        if listed is not None and not listed.matches(image_platform):
            raise MalformedResponse(
                f"{ref.name}@{manifest_digest} is listed for {listed} but its config says {image_platform}; "
                "refusing the ambiguity",
                registry=ref.registry,
            )
        if not available:
            available = (image_platform,)
            if not platform.matches(image_platform):
                raise PlatformNotFound(
                    registry=ref.registry, reference=str(ref), platform=str(platform), available=[str(image_platform)]
                )
        return ImageFacts(
            reference=ref,
            digest=top,
            media_type=top_media_type,
            manifest_digest=manifest_digest,
            config_digest=document.config.digest,
            platform=image_platform,
            platforms=available,
            user=config.user,
            entrypoint=redact_argv(config.entrypoint),
            cmd=redact_argv(config.cmd),
            healthcheck=redact_argv(config.healthcheck),
            labels=redact_labels(config.labels),
            env_names=config.env_names,
            created=config.created,
        )

    # -- /etc/passwd ---------------------------------------------------------------------------------

    def _read_passwd(self, ref: Reference, manifest_digest: str) -> PasswdLookup:
        from imagegate._layers import LayerError  # tarfile and zlib: only for images whose USER is a name
        from imagegate._user import PasswdLookup, parse_passwd

        _, document, _ = self._get_manifest(ref, manifest_digest)
        if not isinstance(document, Manifest):  # pragma: no cover - facts always name an image manifest
            return PasswdLookup(None, "the image has no platform manifest")
        for layer in reversed(document.layers):
            compression = LAYER_TYPES.get(layer.media_type)
            if compression is None or layer.urls:
                return PasswdLookup(None, f"layer {layer.digest[:19]}… has media type {layer.media_type!r}, "
                                          "which imagegate does not read")
            try:
                found = self._scan_layer(ref, layer, compression)
            except LayerError as exc:
                return PasswdLookup(None, f"layer {layer.digest[:19]}…: {exc.reason}")
            if found.content is not None:
                return PasswdLookup(parse_passwd(found.content.decode("utf-8", "surrogateescape")))
            if found.hides_lower:
                return PasswdLookup(None)
        return PasswdLookup(None)

    def _scan_layer(self, ref: Reference, layer: Descriptor, compression: str) -> Any:
        key = (ref.registry, ref.repository, layer.digest)
        cached = self._layers.get(key) or self._stored_scan(key)
        if cached is not None:
            return cached
        with self._disk_lock(_SCAN_KIND, ref, layer.digest):
            return self._stored_scan(key) or self._fetch_scan(ref, layer, compression, key)

    def _fetch_scan(self, ref: Reference, layer: Descriptor, compression: str, key: tuple[str, str, str]) -> Any:
        from imagegate._layers import LayerError, scan_layer

        if layer.size > MAX_LAYER_BYTES:
            raise LayerError(f"it is {layer.size} bytes, more than {MAX_LAYER_BYTES}")
        algorithm = layer.digest.split(":", 1)[0]
        hasher = hashlib.new(algorithm)
        with self._http.stream(ref, f"blobs/{layer.digest}", limit=MAX_LAYER_BYTES) as (reply, chunks):

            def hashed() -> Iterator[bytes]:
                for chunk in chunks:
                    hasher.update(chunk)
                    yield chunk

            stream = hashed()
            try:
                found = scan_layer(stream, compression=compression, path=PASSWD, max_unpacked=MAX_UNPACKED_BYTES)
            finally:
                for _ in stream:
                    pass  # hash every byte, whatever the scan did
            actual = f"{algorithm}:{hasher.hexdigest()}"
            if actual != layer.digest:
                raise DigestMismatch(registry=ref.registry, url=reply.url, expected=layer.digest, actual=actual)
        self._layers.put(key, found)
        if self._disk is not None:
            self._disk.put(_SCAN_KIND, *key, found.content or b"", {"found": found.content is not None,
                                                                    "hides_lower": found.hides_lower})
        return found

    def _stored_scan(self, key: tuple[str, str, str]) -> LayerFile | None:
        """What a verified layer said about /etc/passwd, from the disk cache (derived data: its checksum is checked)."""
        stored = self._disk.get(_SCAN_KIND, *key, limit=MAX_PASSWD_BYTES) if self._disk is not None else None
        if stored is None:
            return None
        from imagegate._layers import LayerFile

        body, meta = stored
        found, hides = meta.get("found"), meta.get("hides_lower")
        if not isinstance(found, bool) or not isinstance(hides, bool):
            return None
        result = LayerFile(body if found else None, hides)
        self._layers.put(key, result)
        return result


# -- pure helpers -----------------------------------------------------------------------------------


def _valid_digest(text: str) -> bool:
    try:
        parse_digest(text)
    except InvalidReference:
        return False
    return True


def _size(header: str | None) -> int:
    if header is None or not header.isascii() or not header.isdigit() or len(header) > 18:
        return 0
    return int(header)


def _select_platform(index: Index, wanted: Platform, ref: Reference) -> tuple[tuple[Platform, ...], Descriptor]:
    available: list[Platform] = []
    chosen: list[Descriptor] = []
    for entry in index.manifests:
        spec = entry.platform
        if spec is None or not spec.os or spec.os == "unknown":
            continue  # attestation manifests and other non-images
        available.append(spec)
        if wanted.matches(spec):
            chosen.append(entry)
    if not chosen:
        raise PlatformNotFound(registry=ref.registry, reference=str(ref), platform=str(wanted), available=[str(p) for p in available])
    if len({entry.digest for entry in chosen}) > 1:
        raise MalformedResponse(
            f"the index of {ref} lists {len(chosen)} different images for {wanted}; the engine would pick one by "
            "its own ordering, so the checked image might not be the one that runs. Refusing the ambiguity: "
            "push an index with one image per platform",
            registry=ref.registry,
        )
    return tuple(available), chosen[0]
