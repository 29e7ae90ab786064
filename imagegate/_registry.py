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
HTTP itself — TLS, deadlines, caps, retries, redirects, auth — is :mod:`imagegate._transport`'s.

We talk HTTP ourselves with httpx instead of using the docker SDK: the SDK's
``inspect_distribution`` goes through a Docker Engine, which a scheduler or CI host may not have,
and it neither verifies digests nor exposes the config.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Any, Callable, Iterator, TypeVar

import httpx

from imagegate._auth import DockerConfig
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
    DigestMismatch,
    InvalidReference,
    MalformedResponse,
    PlatformNotFound,
    UnsupportedManifest,
    typed_errors,
)
from imagegate._facts import DEFAULT_PLATFORM, ImageFacts, Platform
from imagegate._json import DocumentError
from imagegate._layers import LayerError, scan_layer
from imagegate._reference import Reference, parse_digest
from imagegate._secrets import redact_argv, redact_labels
from imagegate._transport import DEFAULT_DEADLINE, Transport
from imagegate._user import PasswdLookup, parse_passwd

__all__ = ["Descriptor", "PasswdLookup", "RegistryClient"]

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # containerd's limit for manifests and indexes
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_LAYER_BYTES = 8 * 1024**3
MAX_UNPACKED_BYTES = 32 * 1024**3
PASSWD = "/etc/passwd"
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
        tag_ttl: how long a tag → digest answer is trusted before a HEAD revalidates it.
        transport: an httpx transport (tests pass an in-process fake registry).
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
    ) -> None:
        if tag_ttl < 0:
            raise ValueError("tag_ttl must be >= 0")
        self._http = Transport(
            docker_config=docker_config, insecure_registries=insecure_registries, ca_file=ca_file, certs_dir=certs_dir,
            timeout=timeout, deadline=deadline, retries=retries, backoff=backoff, max_backoff=max_backoff,
            transport=transport, sleep=sleep,
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
            cached = self._manifests.get((ref.registry, ref.repository, target))
            if cached is not None:
                return cached  # type: ignore[no-any-return]
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
        return result

    def _get_config(self, ref: Reference, config: Descriptor) -> ImageConfig:
        key = (ref.registry, ref.repository, config.digest)
        cached = self._configs.get(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]

        def fetch() -> ImageConfig:
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
            return parsed

        return self._flight.do(("blob",) + key, fetch)

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
        cached = self._layers.get(key)
        if cached is not None:
            return cached
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
        return found


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
