"""Build OCI and Docker image artifacts as bytes, deterministically, for tests.

Independent of ``imagegate``: this module implements just enough of the OCI image spec and the Docker
image manifest v2 spec to produce realistic manifests, indexes, configs and layers.

    layer = make_layer({"app/main.py": b"print('hi')\\n"})
    image = make_image(layers=[layer], user="1000", cmd=["python", "/app/main.py"])
    index = make_index([({"os": "linux", "architecture": "amd64"}, image)], attest=True)

The same inputs always give the same bytes, so digests are stable across runs.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Manifests and indexes.
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"

# Configs.
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

# Layers.
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

# BuildKit attestations (provenance / SBOM) stored as extra index entries.
IN_TOTO = "application/vnd.in-toto+json"
ATTESTATION_REFERENCE_TYPE = "attestation-manifest"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ALL_MANIFEST_TYPES = frozenset({*INDEX_TYPES, *IMAGE_MANIFEST_TYPES, DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1})

EPOCH = "1970-01-01T00:00:00Z"


def digest_of(data: bytes) -> str:
    """Return the ``sha256:<hex>`` digest of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` the way these helpers always do (indented, key order kept, UTF-8)."""
    return json.dumps(value, indent=2, ensure_ascii=False).encode()


@dataclass(frozen=True)
class Blob:
    """Content-addressed bytes with a media type: a manifest, config or layer."""

    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        """The ``sha256:`` digest of the bytes."""
        return digest_of(self.data)

    @property
    def size(self) -> int:
        """Length of the bytes."""
        return len(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        """An OCI descriptor for this blob; ``extra`` keys (``platform``, ``annotations``) are appended."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}

    def json(self) -> Any:
        """Parse the bytes as JSON (manifests and configs)."""
        return json.loads(self.data)


@dataclass(frozen=True)
class Layer(Blob):
    """A compressed filesystem layer; ``diff_id`` is the digest of the uncompressed tar."""

    diff_id: str = ""


@dataclass(frozen=True)
class Image:
    """A single-platform image: its manifest, config and layers."""

    manifest: Blob
    config: Blob
    layers: list[Blob] = field(default_factory=list)

    @property
    def digest(self) -> str:
        """The manifest digest (what ``repo@sha256:…`` names)."""
        return self.manifest.digest

    def all_blobs(self) -> list[Blob]:
        """Config and layers: every blob a registry must hold before the manifest is pushed."""
        return [self.config, *self.layers]


@dataclass(frozen=True)
class Index:
    """A multi-platform index (or Docker manifest list) and the images it lists, in index order.

    ``images`` holds ``(platform, image)`` pairs; attestation manifests appear with platform
    ``{"architecture": "unknown", "os": "unknown"}`` exactly as they do in the index.
    """

    manifest: Blob
    images: list[tuple[dict[str, Any], Image]] = field(default_factory=list)

    @property
    def digest(self) -> str:
        """The index digest."""
        return self.manifest.digest

    def image_for(self, os: str, architecture: str, variant: str | None = None) -> Image:
        """The image listed for a platform; ``KeyError`` when the index has none."""
        for platform, image in self.images:
            if (platform.get("os"), platform.get("architecture")) != (os, architecture):
                continue
            if variant is None or platform.get("variant") == variant:
                return image
        raise KeyError(f"{os}/{architecture}{'/' + variant if variant else ''}")

    def child_manifests(self) -> list[Blob]:
        """Manifests of every listed image (including attestations), in index order."""
        return [image.manifest for _, image in self.images]

    def all_blobs(self) -> list[Blob]:
        """Every config and layer of every listed image, without duplicates, in first-seen order."""
        return unique_blobs(blob for _, image in self.images for blob in image.all_blobs())


def unique_blobs(blobs: Iterable[Blob]) -> list[Blob]:
    """Drop blobs whose digest was already seen, keeping the first."""
    seen: dict[str, Blob] = {}
    for blob in blobs:
        seen.setdefault(blob.digest, blob)
    return list(seen.values())


def make_tar(files: Mapping[str, bytes], *, mode: int = 0o644) -> bytes:
    """An uncompressed tar of ``files`` (path → content), sorted, owned by root, mtime 0."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(files[path]), mode, 0
            tar.addfile(info, io.BytesIO(files[path]))
    return buffer.getvalue()


def make_layer(files: Mapping[str, bytes], *, media_type: str = OCI_LAYER_GZIP) -> Layer:
    """A gzip-compressed tar layer of ``files``; the same files always give the same digest."""
    tar = make_tar(files)
    return Layer(media_type, gzip.compress(tar, mtime=0), diff_id=digest_of(tar))


def config_section(
    *,
    user: str | None = None,
    env: Mapping[str, str] | Sequence[str] | None = None,
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    healthcheck: Mapping[str, Any] | None = None,
    working_dir: str | None = None,
    exposed_ports: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The ``config`` object of an image config; ``None`` arguments are left out (``user=""`` is kept)."""
    if isinstance(env, Mapping):
        env = [f"{key}={value}" for key, value in env.items()]
    values = {
        "User": user,
        "Env": list(env) if env is not None else None,
        "Entrypoint": list(entrypoint) if entrypoint is not None else None,
        "Cmd": list(cmd) if cmd is not None else None,
        "WorkingDir": working_dir,
        "Labels": dict(labels) if labels is not None else None,
        "Healthcheck": dict(healthcheck) if healthcheck is not None else None,
        "ExposedPorts": {port: {} for port in exposed_ports} if exposed_ports is not None else None,
    }
    return {key: value for key, value in values.items() if value is not None}


def make_config(
    *,
    user: str | None = None,
    env: Mapping[str, str] | Sequence[str] | None = None,
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    healthcheck: Mapping[str, Any] | None = None,
    working_dir: str | None = None,
    exposed_ports: Sequence[str] | None = None,
    architecture: str = "amd64",
    os: str = "linux",
    variant: str | None = None,
    diff_ids: Sequence[str] = (),
    history: Sequence[Mapping[str, Any]] | None = None,
    docker: bool = False,
) -> Blob:
    """An image config blob (OCI media type, or Docker's with ``docker=True``).

    ``env`` may be a mapping (rendered ``K=V``) or a ready list. ``history`` defaults to one entry per
    layer, like ``docker build`` writes; pass ``[]`` to leave it empty.
    """
    document: dict[str, Any] = {"created": EPOCH, "architecture": architecture, "os": os}
    if variant:
        document["variant"] = variant
    document["config"] = config_section(
        user=user, env=env, entrypoint=entrypoint, cmd=cmd, labels=labels, healthcheck=healthcheck,
        working_dir=working_dir, exposed_ports=exposed_ports,
    )
    document["rootfs"] = {"type": "layers", "diff_ids": list(diff_ids)}
    if history is None:
        history = [{"created": EPOCH, "created_by": f"test layer {n}"} for n in range(len(diff_ids))]
    document["history"] = [dict(entry) for entry in history]
    return Blob(DOCKER_CONFIG if docker else OCI_CONFIG, canonical_json(document))


def default_layers() -> list[Layer]:
    """One small layer, used when a test does not care about file contents."""
    return [make_layer({"etc/imagegate-test": b"imagegate test image\n"})]


def _diff_id(layer: Blob) -> str:
    """The diff_id of a layer: recorded for :class:`Layer`, else the digest (uncompressed layers)."""
    return layer.diff_id if isinstance(layer, Layer) and layer.diff_id else layer.digest


def _retype_layer(layer: Blob, oci: bool) -> Blob:
    """Give gzip layers the media type matching the manifest format."""
    if layer.media_type in (OCI_LAYER_GZIP, DOCKER_LAYER_GZIP):
        return dataclasses.replace(layer, media_type=OCI_LAYER_GZIP if oci else DOCKER_LAYER_GZIP)
    return layer


def manifest_for(
    config: Blob, layers: Sequence[Blob], *, oci: bool = True, annotations: Mapping[str, str] | None = None
) -> Blob:
    """An image manifest (OCI, or Docker schema 2 with ``oci=False``) referencing ``config`` and ``layers``."""
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    if annotations:
        document["annotations"] = dict(annotations)
    return Blob(media_type, canonical_json(document))


def make_image(
    *,
    layers: Sequence[Blob | Mapping[str, bytes]] | None = None,
    oci: bool = True,
    annotations: Mapping[str, str] | None = None,
    **config: Any,
) -> Image:
    """A single-platform image.

    ``layers`` are :class:`Blob` s or ``{path: bytes}`` mappings (made into layers); by default one small
    layer. Remaining keyword arguments go to :func:`make_config` (``user``, ``env``, ``architecture``, …);
    ``oci=False`` gives a Docker schema 2 manifest, Docker config and Docker layer media types.
    """
    blobs = [
        _retype_layer(layer if isinstance(layer, Blob) else make_layer(layer), oci)
        for layer in (default_layers() if layers is None else layers)
    ]
    config_blob = make_config(diff_ids=[_diff_id(layer) for layer in blobs], docker=not oci, **config)
    return Image(manifest_for(config_blob, blobs, oci=oci, annotations=annotations), config_blob, blobs)


def platform_of(os: str, architecture: str, variant: str | None = None) -> dict[str, str]:
    """A platform object in index key order: ``architecture``, ``os``, then ``variant`` if any."""
    platform = {"architecture": architecture, "os": os}
    if variant:
        platform["variant"] = variant
    return platform


UNKNOWN_PLATFORM: dict[str, str] = {"architecture": "unknown", "os": "unknown"}


def make_attestation(image: Image) -> Image:
    """A BuildKit-style attestation manifest (an in-toto provenance statement) for ``image``."""
    statement = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": "_", "digest": {"sha256": image.digest.removeprefix("sha256:")}}],
        "predicate": {"buildType": "https://mobyproject.org/buildkit@v1"},
    }
    layer = Blob(IN_TOTO, canonical_json(statement))
    config = make_config(architecture="unknown", os="unknown", diff_ids=[layer.digest], history=[])
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor(annotations={"in-toto.io/predicate-type": statement["predicateType"]})],
    }
    return Image(Blob(OCI_MANIFEST, canonical_json(document)), config, [layer])


def make_index(
    images: Sequence[tuple[Mapping[str, Any], Image]],
    *,
    oci: bool = True,
    attest: bool = False,
    annotations: Mapping[str, str] | None = None,
) -> Index:
    """An OCI image index (or a Docker manifest list with ``oci=False``) over ``(platform, image)`` pairs.

    With ``attest=True`` an attestation manifest per image is appended after the images, as ``docker buildx``
    writes by default: platform ``unknown/unknown`` and annotations
    ``vnd.docker.reference.type: attestation-manifest`` and ``vnd.docker.reference.digest: <image>``.
    """
    entries = [(dict(platform), image) for platform, image in images]
    descriptors = [image.manifest.descriptor(platform=platform) for platform, image in entries]
    for _, image in list(entries) if attest else []:
        attestation = make_attestation(image)
        refs = {"vnd.docker.reference.digest": image.digest, "vnd.docker.reference.type": ATTESTATION_REFERENCE_TYPE}
        entries.append((dict(UNKNOWN_PLATFORM), attestation))
        descriptors.append(attestation.manifest.descriptor(annotations=refs, platform=dict(UNKNOWN_PLATFORM)))
    media_type = OCI_INDEX if oci else DOCKER_MANIFEST_LIST
    document: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type, "manifests": descriptors}
    if annotations:
        document["annotations"] = dict(annotations)
    return Index(Blob(media_type, canonical_json(document)), entries)


def make_schema1(name: str = "library/test", tag: str = "latest", architecture: str = "amd64") -> Blob:
    """A (fake-signed) Docker schema 1 manifest: only for testing that clients refuse it.

    Real registries compute a schema 1 digest over the JWS payload without signatures; the fake
    registry just hashes the bytes given, so don't rely on the digest matching a real registry's.
    """
    document = {
        "schemaVersion": 1,
        "name": name,
        "tag": tag,
        "architecture": architecture,
        "fsLayers": [{"blobSum": digest_of(b"")}],
        "history": [{"v1Compatibility": json.dumps({"id": "0" * 64, "config": {"User": ""}})}],
        "signatures": [{"header": {"alg": "ES256"}, "signature": "AAAA", "protected": "e30"}],
    }
    return Blob(DOCKER_SCHEMA1_SIGNED, canonical_json(document))
