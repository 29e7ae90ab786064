"""cosign signatures and attestations, written as cosign writes them, so that ``cosign verify`` /
``cosign verify-attestation`` and :mod:`imagegate._cosign` read them.

Formats (shapes read off what cosign v3.1.3 writes into a distribution 2.8 registry, and its source):

* **legacy signature**: the tag ``sha256-<hex>.sig``, an OCI manifest whose layers are simple-signing payloads
  ``{"critical": {"identity": {"docker-reference": REPO}, "image": {"docker-manifest-digest": DIGEST}, "type":
  "cosign container image signature"}, "optional": null}`` (media type
  ``application/vnd.dev.cosign.simplesigning.v1+json``) with the base64 signature in the annotation
  ``dev.cosignproject.cosign/signature``; the config is go-containerregistry's empty image config with one
  ``diff_id`` and one history entry per layer. A new signature is appended to the layers already there.
* **legacy attestation**: the tag ``sha256-<hex>.att``, layers ``application/vnd.dsse.envelope.v1+json`` (a DSSE
  envelope over an in-toto Statement v0.1) with the annotations ``predicateType`` and an empty
  ``dev.cosignproject.cosign/signature``.
* **bundle** (signature and attestation alike): a Sigstore bundle v0.3 (DSSE envelope, ``publicKey.hint``) as the
  one layer of an OCI 1.1 referrer manifest of the image (empty config, ``artifactType`` the bundle media type,
  annotations ``dev.sigstore.bundle.content``, ``dev.sigstore.bundle.predicateType``,
  ``org.opencontainers.image.created``; ``subject`` the image). Where the registry has no referrers API, the referrer
  is also listed in the fallback index at the tag ``sha256-<hex>``, appended and sorted by digest as
  go-containerregistry does.

No duplicates: what this key already signed (the same payload, a signature that verifies with it) in the format
asked for is not written again — cosign's rule for legacy signatures, applied here to every kind. A signature manifest
or index that cannot be read safely is never overwritten: the write is refused, naming it.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from imagegate._cosign import (
    BUNDLE_MEDIA_TYPE,
    DOCKER_MANIFEST,
    INTOTO_PAYLOAD_TYPE,
    MAX_CANDIDATES,
    MAX_PAYLOAD_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    PREDICATE_ANNOTATION,
    SIGN_PREDICATE,
    SIGNATURE_ANNOTATION,
    SIMPLESIGNING,
    SIMPLESIGNING_TYPE,
    pae,
    signature_tag,
)
from imagegate._errors import ImagegateError
from imagegate._json import DocumentError, Struct, decode, struct
from imagegate._push import Pusher, digest_of
from imagegate._reference import Reference

if TYPE_CHECKING:
    from imagegate._cosign_keys import PrivateKey
    from imagegate._registry import RegistryClient

__all__ = ["FORMATS", "SignatureWriteError", "Written", "attest_image", "sign_image", "statement"]

FORMATS = ("bundle", "legacy")
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
STATEMENT_V01 = "https://in-toto.io/Statement/v0.1"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
ZERO_TIME = "0001-01-01T00:00:00Z"
MANIFEST_ACCEPT = f"{OCI_MANIFEST}, {DOCKER_MANIFEST}, {OCI_INDEX}, " \
                  "application/vnd.docker.distribution.manifest.list.v2+json"

Progress = Callable[[str], None]


class SignatureWriteError(ImagegateError):
    """A signature or attestation could not be written safely (nothing was overwritten)."""

    _fields = ("reference", "reason")

    def __init__(self, reference: str, reason: str) -> None:
        self.reference = reference
        self.reason = reason
        super().__init__(f"{reference}: {reason}")


@dataclass(frozen=True)
class Written:
    """What :func:`sign_image` / :func:`attest_image` did for ``reference`` (``REPO@sha256:…``)."""

    reference: str
    digest: str
    format: str  # "bundle" | "legacy"
    predicate_type: str  # SIGN_PREDICATE for a signature
    key: str  # the private key's source
    where: str  # the tag, or "referrer sha256:…"
    manifest: str  # the digest of the manifest that holds it
    written: bool  # False: this key had already signed exactly this (nothing was written)

    @property
    def kind(self) -> str:
        return "signature" if self.predicate_type == SIGN_PREDICATE else "attestation"

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "digest": self.digest, "kind": self.kind, "format": self.format,
                "predicate_type": self.predicate_type, "key": self.key, "where": self.where,
                "manifest": self.manifest, "written": self.written}

    def describe(self) -> str:
        done = "signed" if self.kind == "signature" else "attested"
        what = f"already {done} by this key, nothing written" if not self.written else f"{self.kind} written"
        return f"{what}: {self.format} {self.where} (key {self.key})"


# -- documents -----------------------------------------------------------------------------------------------------


def _json(value: Any) -> bytes:
    """Compact, key-sorted JSON: the same statement is the same bytes (dedup compares them)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def _docker_reference(ref: Reference) -> str:
    """The repository as go-containerregistry names it (``ref.Context().Name()``), cosign's docker-reference."""
    registry = "index.docker.io" if ref.registry == "docker.io" else ref.registry
    return f"{registry}/{ref.repository}"


def simplesigning_payload(ref: Reference, digest: str) -> bytes:
    """cosign's simple-signing payload, byte for byte (Go's json.Marshal of its struct)."""
    return json.dumps({"critical": {"identity": {"docker-reference": _docker_reference(ref)},
                                    "image": {"docker-manifest-digest": digest},
                                    "type": SIMPLESIGNING_TYPE},
                       "optional": None}, separators=(",", ":")).encode()


def statement(ref: Reference, digest: str, predicate_type: str, predicate: Any) -> bytes:
    """The in-toto Statement an attestation signs: v0.1 with the repository's name, as ``cosign attest`` writes."""
    algorithm, _, hexdigest = digest.partition(":")
    return _json({"_type": STATEMENT_V01,
                  "subject": [{"name": _docker_reference(ref), "digest": {algorithm: hexdigest}}],
                  "predicateType": predicate_type, "predicate": predicate})


def _sign_statement(digest: str) -> bytes:
    """The Statement a cosign v3 image signature (bundle format) signs."""
    algorithm, _, hexdigest = digest.partition(":")
    return _json({"_type": STATEMENT_V1, "subject": [{"digest": {algorithm: hexdigest}, "annotations": {}}],
                  "predicateType": SIGN_PREDICATE, "predicate": {}})


def _envelope(key: PrivateKey, payload: bytes) -> dict[str, Any]:
    signature = key.sign(pae(INTOTO_PAYLOAD_TYPE, payload))
    return {"payload": base64.b64encode(payload).decode(), "payloadType": INTOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode()}]}


def _bundle(key: PrivateKey, payload: bytes) -> bytes:
    return _json({"mediaType": BUNDLE_MEDIA_TYPE, "verificationMaterial": {"publicKey": {"hint": key.public.hint}},
                  "dsseEnvelope": _envelope(key, payload)})


def _legacy_config(layers: Sequence[dict[str, Any]]) -> bytes:
    """go-containerregistry's empty image config with *layers* appended (what cosign writes for a .sig/.att)."""
    return json.dumps({"architecture": "", "created": ZERO_TIME,
                       "history": [{"created": ZERO_TIME} for _ in layers], "os": "",
                       "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
                       "config": {}}, separators=(",", ":")).encode()


def _descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "size": len(data), "digest": digest_of(data), **extra}


# -- signing and attesting -------------------------------------------------------------------------------------------


def sign_image(client: RegistryClient, ref: Reference, digest: str, key: PrivateKey, *, format: str = "bundle",
               progress: Progress | None = None) -> Written:
    """Sign the image *digest* in *ref*'s repository with *key*, in *format* (``bundle``: cosign v3's default;
    ``legacy``: the ``.sig`` tag); nothing is written when this key already signed it in that format."""
    return _Writer(client, ref, digest, key, progress).write(format, SIGN_PREDICATE, None)


def attest_image(client: RegistryClient, ref: Reference, digest: str, key: PrivateKey, predicate_type: str,
                 predicate: Any, *, format: str = "bundle", progress: Progress | None = None) -> Written:
    """Attest *predicate* (of *predicate_type*) about the image *digest*, signed with *key*, in *format*."""
    if predicate_type == SIGN_PREDICATE:
        raise ValueError(f"{SIGN_PREDICATE} is an image signature: use sign_image")
    return _Writer(client, ref, digest, key, progress).write(format, predicate_type, predicate)


class _Writer:
    def __init__(self, client: RegistryClient, ref: Reference, digest: str, key: PrivateKey,
                 progress: Progress | None) -> None:
        if not (digest.startswith("sha256:") and len(digest) == 71):
            raise ValueError(f"{digest!r} is not a sha256 digest")
        self.client = client
        self.ref = Reference(ref.registry, ref.repository)
        self.digest = digest
        self.key = key
        self.push = Pusher(client._http, self.ref)
        self.progress = progress or (lambda line: None)
        self.name = f"{self.ref}@{digest}"

    def write(self, format: str, predicate_type: str, predicate: Any) -> Written:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
        with self.client._http.operation():
            if format == "legacy":
                return self._legacy(predicate_type, predicate)
            return self._bundle(predicate_type, predicate)

    def _done(self, format: str, predicate_type: str, where: str, manifest: str, written: bool) -> Written:
        return Written(self.name, self.digest, format, predicate_type, self.key.source, where, manifest, written)

    def _refuse(self, reason: str) -> SignatureWriteError:
        return SignatureWriteError(self.name, reason)

    # -- legacy --------------------------------------------------------------------------------------------------

    def _legacy(self, predicate_type: str, predicate: Any) -> Written:
        signing = predicate_type == SIGN_PREDICATE
        tag = signature_tag(self.digest, "sig" if signing else "att")
        if signing:
            payload = simplesigning_payload(self.ref, self.digest)
            layer_media, layer_data = SIMPLESIGNING, payload
            annotations = {SIGNATURE_ANNOTATION: base64.b64encode(self.key.sign(payload)).decode()}
        else:
            payload = statement(self.ref, self.digest, predicate_type, predicate)
            layer_media, layer_data = DSSE_MEDIA_TYPE, _json(_envelope(self.key, payload))
            annotations = {SIGNATURE_ANNOTATION: "", "predicateType": predicate_type}
        existing = self._existing_layers(tag)
        for layer in existing:
            if self._legacy_duplicate(layer, signing, payload, predicate_type):
                return self._done("legacy", predicate_type, tag, digest_of(self._last_manifest), False)
        if len(existing) >= MAX_CANDIDATES:
            raise self._refuse(f"{tag} already holds {len(existing)} layers; imagegate and its verifier look at the "
                               f"first {MAX_CANDIDATES} only, so another would never count (clean up the tag)")
        self.progress(f"pushing {'signature' if signing else 'attestation'} to {self.ref}:{tag}")
        self.push.push_blob(layer_data)
        layers = existing + [_descriptor(layer_media, layer_data, annotations=annotations)]
        config = _legacy_config(layers)
        self.push.push_blob(config)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": _descriptor(CONFIG_MEDIA_TYPE, config), "layers": layers},
                              separators=(",", ":")).encode()
        return self._done("legacy", predicate_type, tag, self.push.push_manifest(tag, OCI_MANIFEST, manifest), True)

    _last_manifest = b""

    def _existing_layers(self, tag: str) -> list[dict[str, Any]]:
        found = self.push.manifest(tag, f"{OCI_MANIFEST}, {DOCKER_MANIFEST}")
        if found is None:
            return []
        self._last_manifest = found[0]
        try:
            top = struct(decode(found[0]))
            if top.integer("schemaVersion", required=True) != 2 or "manifests" in top:
                raise DocumentError("not an image manifest (schemaVersion 2, no 'manifests')")
            layers = list(top.items("layers", _layer))
        except DocumentError as exc:
            raise self._refuse(f"the existing {tag} cannot be read safely ({exc}); imagegate does not overwrite it: "
                               "inspect it and delete the tag if it is garbage") from None
        return layers

    def _legacy_duplicate(self, layer: dict[str, Any], signing: bool, payload: bytes, predicate_type: str) -> bool:
        """cosign's duplicate rule: the same layer content, the same annotations, a signature by this key."""
        annotations = layer.get("annotations") or {}
        if signing:
            if layer["mediaType"] != SIMPLESIGNING or layer["digest"] != digest_of(payload):
                return False
            return self._verifies(annotations.get(SIGNATURE_ANNOTATION, ""), payload)
        if layer["mediaType"] != DSSE_MEDIA_TYPE or annotations.get("predicateType") != predicate_type:
            return False
        return self._envelope_is_ours(self._small_blob(layer), payload)

    # -- bundle --------------------------------------------------------------------------------------------------

    def _bundle(self, predicate_type: str, predicate: Any) -> Written:
        signing = predicate_type == SIGN_PREDICATE
        payload = _sign_statement(self.digest) if signing else statement(self.ref, self.digest, predicate_type,
                                                                          predicate)
        index_bytes = self.push.referrers(self.digest, OCI_INDEX)
        has_api = index_bytes is not None
        fallback = signature_tag(self.digest, "")
        if not has_api:
            found = self.push.manifest(fallback, OCI_INDEX)
            index_bytes = found[0] if found else None
        entries = self._index_entries(index_bytes, "the referrers API" if has_api else fallback)
        for entry in entries[:MAX_CANDIDATES]:
            if self._bundle_duplicate(entry, predicate_type, payload):
                return self._done("bundle", predicate_type, f"referrer {entry['digest']}", entry["digest"], False)
        subject = self._subject()
        self.progress(f"pushing {'signature' if signing else 'attestation'} bundle to {self.ref} "
                      f"(a referrer of {self.digest[:19]}…)")
        bundle = _bundle(self.key, payload)
        self.push.push_blob(EMPTY_CONFIG)
        self.push.push_blob(bundle)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": _descriptor(EMPTY_MEDIA_TYPE, EMPTY_CONFIG, artifactType=BUNDLE_MEDIA_TYPE),
            "layers": [_descriptor(BUNDLE_MEDIA_TYPE, bundle)],
            "annotations": {"dev.sigstore.bundle.content": "dsse-envelope", PREDICATE_ANNOTATION: predicate_type,
                            "org.opencontainers.image.created": created},
            "subject": subject, "artifactType": BUNDLE_MEDIA_TYPE,
        }, separators=(",", ":")).encode()
        manifest_digest = self.push.push_manifest(digest_of(manifest), OCI_MANIFEST, manifest)
        if not has_api:
            self._update_fallback(fallback, index_bytes, _descriptor(OCI_MANIFEST, manifest,
                                                                     artifactType=BUNDLE_MEDIA_TYPE))
        return self._done("bundle", predicate_type, f"referrer {manifest_digest}", manifest_digest, True)

    def _subject(self) -> dict[str, Any]:
        """The image's descriptor (media type, size, digest), from its manifest fetched by digest and verified."""
        found = self.push.manifest(self.digest, MANIFEST_ACCEPT, limit=4 << 20)
        if found is None:
            raise self._refuse("the registry does not have this image; push it before signing it")
        body, content_type = found
        try:
            media_type = struct(decode(body)).string("mediaType") or (content_type or "").split(";")[0].strip()
        except DocumentError as exc:
            raise self._refuse(f"the image manifest cannot be read ({exc})") from None
        if not media_type:
            raise self._refuse("the image manifest names no media type")
        return {"mediaType": media_type, "size": len(body), "digest": self.digest}

    def _index_entries(self, body: bytes | None, where: str) -> list[dict[str, Any]]:
        if body is None:
            return []
        try:
            top = struct(decode(body))
            if top.integer("schemaVersion", required=True) != 2:
                raise DocumentError("schemaVersion is not 2")
            if top.string("mediaType") not in (None, OCI_INDEX):
                raise DocumentError(f"media type {top.string('mediaType')!r} is not an OCI index")
            return list(top.items("manifests", _layer))
        except DocumentError as exc:
            raise self._refuse(f"{where} cannot be read safely ({exc}); imagegate does not overwrite it: inspect it "
                               "and delete the tag if it is garbage") from None

    def _update_fallback(self, tag: str, body: bytes | None, entry: dict[str, Any]) -> None:
        """Append *entry* to the fallback index (go-containerregistry's commitSubjectReferrers: sorted by digest)."""
        if body is None:
            index: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
        else:
            index = json.loads(body)  # already read strictly by _index_entries
            manifests = index.get("manifests") or []
            if any(isinstance(m, dict) and m.get("digest") == entry["digest"] for m in manifests):
                return
            index["manifests"] = sorted(manifests + [entry], key=lambda m: str(m.get("digest")))
        self.push.push_manifest(tag, OCI_INDEX, json.dumps(index, separators=(",", ":")).encode())

    def _bundle_duplicate(self, entry: dict[str, Any], predicate_type: str, payload: bytes) -> bool:
        if entry.get("artifactType") not in (None, BUNDLE_MEDIA_TYPE):
            return False
        annotations = entry.get("annotations") or {}
        if annotations.get(PREDICATE_ANNOTATION, predicate_type) != predicate_type:
            return False
        found = self.push.manifest(entry["digest"], OCI_MANIFEST)
        if found is None:
            return False
        try:
            top = struct(decode(found[0]))
            subject = top.struct("subject")
            annotations = top.mapping("annotations")
            layers = list(top.items("layers", _layer))
            if subject is None or subject.string("digest") != self.digest:
                return False
        except DocumentError:
            return False
        if annotations.get(PREDICATE_ANNOTATION) != predicate_type or len(layers) != 1:
            return False
        try:
            bundle = struct(decode(self._small_blob(layers[0])))
            envelope = bundle.struct("dsseEnvelope")
        except DocumentError:
            return False
        return envelope is not None and self._envelope_is_ours(envelope, payload)

    # -- reading what is there ---------------------------------------------------------------------------------------

    def _small_blob(self, layer: dict[str, Any]) -> bytes:
        if layer["size"] > MAX_PAYLOAD_BYTES:
            return b""
        try:
            return self.push.blob(layer["digest"], limit=MAX_PAYLOAD_BYTES)
        except ImagegateError:
            return b""  # unreadable: not a duplicate of ours (the verifier will judge it)

    def _envelope_is_ours(self, envelope: bytes | Struct, payload: bytes) -> bool:
        try:
            found = envelope if isinstance(envelope, Struct) else struct(decode(envelope))
            encoded = found.string("payload") or ""
            signatures = found.raw("signatures") or []
            if found.string("payloadType") != INTOTO_PAYLOAD_TYPE or not isinstance(signatures, list) \
                    or len(signatures) != 1:
                return False
            sig = struct(signatures[0]).string("sig") or ""
        except DocumentError:
            return False
        try:
            if base64.b64decode(encoded, validate=True) != payload:
                return False
        except ValueError:
            return False
        return self._verifies(sig, pae(INTOTO_PAYLOAD_TYPE, payload))

    def _verifies(self, encoded: str, message: bytes) -> bool:
        try:
            signature = base64.b64decode(encoded, validate=True)
        except ValueError:
            return False
        return bool(signature) and self.key.public.verify(signature, message)


def _layer(value: Any, path: str) -> dict[str, Any]:
    """A descriptor kept as it was written (to be written back unchanged), its digest and size validated."""
    from imagegate._documents import descriptor

    found = descriptor(value, path)
    if not isinstance(value, dict):  # pragma: no cover - descriptor() refuses it
        raise DocumentError("expected an object", path)
    kept = dict(value)
    kept["digest"], kept["size"], kept["mediaType"] = found.digest, found.size, found.media_type
    return kept
