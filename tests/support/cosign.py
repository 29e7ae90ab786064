"""cosign's two signature formats, written in Python for unit tests (the integration tests use the real cosign).

    signer = Signer.ecdsa()                      # or Signer.ecdsa(ec.SECP384R1()), Signer.rsa(), Signer.ed25519()
    push_legacy(registry, "team/app", digest, [signer])          # the sha256-<hex>.sig tag, as cosign v2 writes it
    push_bundle(registry, "team/app", digest, make_bundle(signer, digest))   # a referrer + the fallback index tag

Shapes follow cosign v3.1.3's writers (pkg/oci/remote/write.go, the simple-signing payload, the Sigstore bundle
v0.3 with a DSSE envelope over an in-toto Statement). :class:`ReferrersRegistry` adds the OCI 1.1 referrers API to
the fake registry (no real registry here has it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from tests.support.fakeregistry import FakeRegistry
from tests.support.oci import OCI_INDEX, OCI_MANIFEST, Blob

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
EMPTY = Blob("application/vnd.oci.empty.v1+json", b"{}")
_REFERRERS = re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<digest>sha256:[0-9a-f]{64})$")


@dataclass
class Signer:
    private: Any

    @classmethod
    def ecdsa(cls, curve: ec.EllipticCurve | None = None) -> Signer:
        return cls(ec.generate_private_key(curve or ec.SECP256R1()))

    @classmethod
    def rsa(cls, bits: int = 2048) -> Signer:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def ed25519(cls) -> Signer:
        return cls(ed25519.Ed25519PrivateKey.generate())

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def hint(self) -> str:
        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(hashlib.sha256(der).digest()).decode()

    def sign(self, data: bytes, *, pss: bool = False, ecdsa_hash: hashes.HashAlgorithm | None = None) -> bytes:
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            return self.private.sign(data, ec.ECDSA(ecdsa_hash or hashes.SHA256()))
        if isinstance(self.private, rsa.RSAPrivateKey):
            pad = (padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH) if pss
                   else padding.PKCS1v15())
            return self.private.sign(data, pad, hashes.SHA256())
        return self.private.sign(data)


def simplesigning_payload(digest: str, reference: str = "registry.test/team/app") -> bytes:
    return json.dumps({
        "critical": {"identity": {"docker-reference": reference}, "image": {"docker-manifest-digest": digest},
                     "type": "cosign container image signature"},
        "optional": None,
    }, separators=(",", ":")).encode()


def legacy_layer(registry: FakeRegistry, repo: str, payload: bytes, signature: bytes) -> dict[str, Any]:
    blob = Blob(SIMPLESIGNING, payload)
    registry.put_blob(repo, blob)
    return blob.descriptor(annotations={"dev.cosignproject.cosign/signature": base64.b64encode(signature).decode()})


def push_legacy(registry: FakeRegistry, repo: str, digest: str, signers: Sequence[Signer], *,
                payload: bytes | None = None, layers: Sequence[dict[str, Any]] = ()) -> str:
    """The ``sha256-<hex>.sig`` manifest with one layer per signer (plus *layers*); returns its digest."""
    payload = payload if payload is not None else simplesigning_payload(digest)
    descriptors = [legacy_layer(registry, repo, payload, s.sign(payload)) for s in signers] + list(layers)
    return put_sig_manifest(registry, repo, digest, descriptors)


def put_sig_manifest(registry: FakeRegistry, repo: str, digest: str, layers: Sequence[dict[str, Any]]) -> str:
    config = Blob("application/vnd.oci.image.config.v1+json",
                  json.dumps({"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers",
                              "diff_ids": [d["digest"] for d in layers]}}).encode())
    registry.put_blob(repo, config)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(), "layers": list(layers)}
    return registry.put_manifest(repo, OCI_MANIFEST, json.dumps(manifest).encode(), tag=sig_tag(digest, "sig"))


def sig_tag(digest: str, suffix: str = "") -> str:
    return digest.replace(":", "-") + (f".{suffix}" if suffix else "")


def statement(digest: str, predicate_type: str = SIGN_PREDICATE) -> dict[str, Any]:
    algorithm, _, hexdigest = digest.partition(":")
    return {"_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "registry.test/team/app", "digest": {algorithm: hexdigest}}],
            "predicateType": predicate_type, "predicate": {}}


def pae(payload_type: str, payload: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


def make_bundle(signer: Signer, digest: str, *, statement_doc: dict[str, Any] | None = None,
                payload: bytes | None = None, hint: str | None = "auto", signature: bytes | None = None,
                extra: dict[str, Any] | None = None) -> bytes:
    """A key-based Sigstore bundle v0.3, as ``cosign sign --key`` (v3, offline) writes it."""
    payload = payload if payload is not None else json.dumps(statement_doc or statement(digest)).encode()
    payload_type = "application/vnd.in-toto+json"
    sig = signature if signature is not None else signer.sign(pae(payload_type, payload))
    material: dict[str, Any] = {"tlogEntries": [], "timestampVerificationData": {}}
    if hint is not None:
        material["publicKey"] = {"hint": signer.hint() if hint == "auto" else hint}
    bundle = {"mediaType": BUNDLE, "verificationMaterial": material,
              "dsseEnvelope": {"payload": base64.b64encode(payload).decode(), "payloadType": payload_type,
                               "signatures": [{"sig": base64.b64encode(sig).decode()}]}}
    bundle.update(extra or {})
    return json.dumps(bundle).encode()


def put_bundle_referrer(registry: FakeRegistry, repo: str, digest: str, bundle: bytes, *,
                        subject: str | None = None, predicate_type: str = SIGN_PREDICATE,
                        created: str | None = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    """The referrer manifest for *bundle* (subject: the image); returns its descriptor for an index."""
    layer = Blob(BUNDLE, bundle)
    registry.put_blob(repo, layer)
    registry.put_blob(repo, EMPTY)
    annotations = {"dev.sigstore.bundle.content": "dsse-envelope", "dev.sigstore.bundle.predicateType": predicate_type}
    if created is not None:
        annotations["org.opencontainers.image.created"] = created
    image_manifest = registry.repositories[repo].manifests[digest]
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": BUNDLE, "config": EMPTY.descriptor(),
                "layers": [layer.descriptor()], "annotations": annotations,
                "subject": {"mediaType": image_manifest.media_type, "digest": subject or digest,
                            "size": len(image_manifest.data)}}
    data = json.dumps(manifest).encode()
    registry.put_manifest(repo, OCI_MANIFEST, data)
    return {"mediaType": OCI_MANIFEST, "digest": Blob(OCI_MANIFEST, data).digest, "size": len(data),
            "artifactType": BUNDLE, "annotations": annotations}


def push_bundle(registry: FakeRegistry, repo: str, digest: str, *bundles: bytes, fallback: bool = True,
                subject: str | None = None) -> list[dict[str, Any]]:
    """Referrers for *bundles*, listed in the fallback index at the tag ``sha256-<hex>`` (cosign's way on a registry
    without the referrers API)."""
    entries = [put_bundle_referrer(registry, repo, digest, b, subject=subject) for b in bundles]
    if fallback:
        put_fallback_index(registry, repo, digest, entries)
    return entries


def put_fallback_index(registry: FakeRegistry, repo: str, digest: str, entries: Sequence[dict[str, Any]]) -> str:
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(entries)}
    return registry.put_manifest(repo, OCI_INDEX, json.dumps(index).encode(), tag=sig_tag(digest))


class ReferrersRegistry:
    """A FakeRegistry with the OCI 1.1 referrers API: ``GET /v2/<name>/referrers/<digest>`` lists the stored
    manifests whose ``subject`` is that digest (or :attr:`override` bytes, to serve something hostile)."""

    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry
        self.override: bytes | None = None
        self.calls = 0

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        match = _REFERRERS.match(request.url.path)
        if request.url.host != self.registry.host or match is None:
            return self.registry.handle(request)
        self.calls += 1
        if self.override is not None:
            return httpx.Response(200, headers={"Content-Type": OCI_INDEX}, content=self.override)
        repo = self.registry.repositories.get(match["name"])
        entries = []
        for blob in (repo.manifests.values() if repo else ()):
            doc = json.loads(blob.data)
            if isinstance(doc, dict) and (doc.get("subject") or {}).get("digest") == match["digest"]:
                entries.append({"mediaType": blob.media_type, "digest": blob.digest, "size": len(blob.data),
                                "artifactType": doc.get("artifactType"), "annotations": doc.get("annotations", {})})
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
        return httpx.Response(200, headers={"Content-Type": OCI_INDEX}, content=body)


# -- attestations (cosign attest): the legacy .att tag and bundles --------------------------------------------------

DSSE = "application/vnd.dsse.envelope.v1+json"
INTOTO = "application/vnd.in-toto+json"


def attestation_statement(digest: str, predicate_type: str, predicate: Any, *,
                          statement_type: str = "https://in-toto.io/Statement/v0.1") -> dict[str, Any]:
    """An in-toto Statement about the image *digest*, as ``cosign attest`` writes it (v0.1 for the legacy format)."""
    algorithm, _, hexdigest = digest.partition(":")
    return {"_type": statement_type, "predicateType": predicate_type,
            "subject": [{"name": "registry.test/team/app", "digest": {algorithm: hexdigest}}], "predicate": predicate}


def dsse_envelope(signer: Signer, statement_doc: dict[str, Any] | None = None, *, payload: bytes | None = None,
                  signature: bytes | None = None) -> bytes:
    """A DSSE envelope (cosign's legacy attestation layer) over *statement_doc* (or raw *payload*)."""
    payload = payload if payload is not None else json.dumps(statement_doc).encode()
    sig = signature if signature is not None else signer.sign(pae(INTOTO, payload))
    return json.dumps({"payloadType": INTOTO, "payload": base64.b64encode(payload).decode(),
                       "signatures": [{"keyid": "", "sig": base64.b64encode(sig).decode()}]}).encode()


def push_legacy_attestations(registry: FakeRegistry, repo: str, digest: str,
                             envelopes: Sequence[tuple[bytes, str]]) -> str:
    """The ``sha256-<hex>.att`` manifest: one DSSE layer per (envelope, predicate type), as cosign v2 writes it."""
    layers = []
    for envelope, predicate_type in envelopes:
        blob = Blob(DSSE, envelope)
        registry.put_blob(repo, blob)
        layers.append(blob.descriptor(annotations={"dev.cosignproject.cosign/signature": "",
                                                   "predicateType": predicate_type}))
    config = Blob("application/vnd.oci.image.config.v1+json",
                  json.dumps({"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers",
                              "diff_ids": [d["digest"] for d in layers]}}).encode())
    registry.put_blob(repo, config)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(), "layers": layers}
    return registry.put_manifest(repo, OCI_MANIFEST, json.dumps(manifest).encode(), tag=sig_tag(digest, "att"))


def make_attestation_bundle(signer: Signer, digest: str, predicate_type: str, predicate: Any, **kwargs: Any) -> bytes:
    """A key-based bundle over an attestation statement, as ``cosign attest`` (v3) writes it."""
    doc = attestation_statement(digest, predicate_type, predicate, statement_type="https://in-toto.io/Statement/v1")
    return make_bundle(signer, digest, statement_doc=kwargs.pop("statement_doc", doc), **kwargs)


def push_attestation_bundles(registry: FakeRegistry, repo: str, digest: str, predicate_type: str, *bundles: bytes,
                             fallback: bool = True, subject: str | None = None) -> list[dict[str, Any]]:
    """Referrers for attestation *bundles*, appended to the fallback index (which may list signatures already)."""
    entries = [put_bundle_referrer(registry, repo, digest, b, subject=subject, predicate_type=predicate_type)
               for b in bundles]
    if fallback:
        old: list[dict[str, Any]] = []
        existing = registry.repositories[repo].tags.get(sig_tag(digest))
        if existing:
            old = json.loads(registry.repositories[repo].manifests[existing].data)["manifests"]
        put_fallback_index(registry, repo, digest, old + entries)
    return entries


def cosign_fallback_index(registry: FakeRegistry, repo: str, digest: str, entries: Sequence[dict[str, Any]]) -> str:
    """The fallback index as cosign (go-containerregistry) really writes it: entries sorted by digest, each with its
    artifactType but none of the referrer manifest's annotations (no predicate type, no time)."""
    bare = sorted(({k: v for k, v in e.items() if k != "annotations"} for e in entries), key=lambda e: e["digest"])
    return put_fallback_index(registry, repo, digest, bare)
