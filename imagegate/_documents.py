"""OCI and Docker image documents, read strictly: indexes, manifests, image configs. Pure, no I/O.

Every field used is type-checked, every digest is validated (algorithm and hex length) before
anything can put it in a URL, and a document that could mean one thing to imagegate and another
to the engine is refused (:mod:`imagegate._json`). The rules for telling an index from a
manifest are containerd's (``images.validateMediaType``), made stricter: the media type the
registry sent and the one the document declares must agree, and a manifest may not carry an
index's fields or the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from imagegate._errors import InvalidReference
from imagegate._facts import Platform
from imagegate._json import DocumentError, Struct, decode, struct
from imagegate._reference import parse_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_TYPES
ACCEPT = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
CONFIG_TYPES = frozenset({"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"})
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
}


class UnsupportedDocument(DocumentError):
    """A well-formed document of a kind imagegate does not run (schema 1, nested index, artifact)."""

    def __init__(self, media_type: str, reason: str = "") -> None:
        self.media_type = media_type
        super().__init__(reason or f"unsupported media type {media_type!r}")


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A content descriptor: what a manifest or index says about another blob."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True, slots=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """The parts of an image config that checks and launches look at. Env *values* are never kept."""

    os: str
    architecture: str
    variant: str | None
    user: str | None
    entrypoint: tuple[str, ...] | None
    cmd: tuple[str, ...] | None
    healthcheck: tuple[str, ...] | None
    labels: Mapping[str, str]
    env_names: tuple[str, ...]
    created: str | None
    diff_ids: tuple[str, ...]


def media_type_of(content_type: str | None) -> str:
    """``Content-Type: application/vnd.oci.image.index.v1+json; charset=utf-8`` -> the media type."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_manifest(body: bytes, content_type: str | None = None) -> Index | Manifest:
    """An index or an image manifest from its bytes and the ``Content-Type`` it was served with."""
    top = struct(decode(body))
    if "fsLayers" in top or "signatures" in top or top.raw("schemaVersion") == 1:
        raise UnsupportedDocument(DOCKER_SCHEMA1, "Docker schema 1 manifests are not supported (they are unsigned and unverifiable)")
    version = top.integer("schemaVersion", required=True)
    if version != 2:
        raise DocumentError(f"schemaVersion {version} is not 2", "schemaVersion")
    declared = top.string("mediaType")
    served = media_type_of(content_type)
    if declared is not None and served in MANIFEST_TYPES and declared != served:
        raise DocumentError(f"the registry served it as {served!r} but it declares {declared!r}", "mediaType")
    kind = declared if declared is not None else served
    if kind in INDEX_TYPES:
        for name in ("config", "layers"):
            if name in top:
                raise DocumentError(f"an index with a manifest's {name!r} field is ambiguous", name)
        return Index(kind, top.items("manifests", _child, required=True))
    if kind in IMAGE_TYPES:
        if "manifests" in top:
            raise DocumentError("a manifest with an index's 'manifests' field is ambiguous", "manifests")
        config = descriptor(top.raw("config"), "config")
        if config.media_type not in CONFIG_TYPES:
            raise UnsupportedDocument(config.media_type, f"config media type {config.media_type!r} is not an image config (an artifact, not an image)")
        return Manifest(kind, config, top.items("layers", descriptor))
    if declared is None:
        raise DocumentError(
            f"neither the registry (Content-Type {served or 'none'!r}) nor the document says whether it is an index "
            "or a manifest",
            "mediaType",
        )
    raise UnsupportedDocument(kind)


def _child(value: Any, path: str) -> Descriptor:
    child = descriptor(value, path)
    if child.media_type not in MANIFEST_TYPES:
        raise UnsupportedDocument(child.media_type, f"{path}: {child.media_type!r} is not an image manifest")
    return child


def descriptor(value: Any, path: str) -> Descriptor:
    """A descriptor, its digest validated before anything may use it."""
    fields = struct(value, path)
    media_type = fields.string("mediaType", required=True) or ""
    digest = fields.string("digest", required=True) or ""
    try:
        parse_digest(digest)
    except InvalidReference as exc:
        raise DocumentError(exc.reason, fields.where("digest")) from None
    size = fields.integer("size", required=True) or 0
    platform = None
    spec = fields.struct("platform")
    if spec is not None:
        platform = Platform(
            spec.string("os", required=True) or "",
            spec.string("architecture", required=True) or "",
            spec.string("variant") or None,
        )
    return Descriptor(media_type, digest, size, platform, fields.strings("urls") or (), fields.mapping("annotations"))


def parse_config(body: bytes) -> ImageConfig:
    """An image config (OCI or Docker), read as moby and containerd read it."""
    top = struct(decode(body))
    inner = top.struct("config") or Struct({}, "config")
    health = inner.struct("Healthcheck")
    test = health.strings("Test") if health is not None else None
    env = inner.strings("Env") or ()
    rootfs = top.struct("rootfs")
    diff_ids: tuple[str, ...] = ()
    if rootfs is not None:
        diff_ids = rootfs.strings("diff_ids") or ()
        for index, digest in enumerate(diff_ids):
            try:
                parse_digest(digest)
            except InvalidReference as exc:
                raise DocumentError(exc.reason, f"rootfs.diff_ids[{index}]") from None
    return ImageConfig(
        os=top.string("os") or "",
        architecture=top.string("architecture") or "",
        variant=top.string("variant") or None,
        user=inner.string("User"),
        entrypoint=inner.strings("Entrypoint", allow_string=True),
        cmd=inner.strings("Cmd", allow_string=True),
        healthcheck=test if test and test != ("NONE",) else None,
        labels=inner.mapping("Labels"),
        env_names=tuple(item.split("=", 1)[0] for item in env),
        created=top.string("created"),
        diff_ids=diff_ids,
    )
