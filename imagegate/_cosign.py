"""cosign signatures, verified offline with public keys: the legacy ``.sig`` tag and Sigstore bundles (v0.3).

No maintained Python library verifies cosign's key-based signatures (sigstore-python needs a certificate and a
transparency-log entry), so this module does, with ``cryptography`` for the arithmetic. It reads what cosign v2 and
v3 write:

* **legacy** (cosign v2's default; v3 with ``--new-bundle-format=false``): the manifest at the tag
  ``sha256-<hex>.sig`` in the image's repository; each layer ``application/vnd.dev.cosign.simplesigning.v1+json``
  is a payload ``{"critical": {"image": {"docker-manifest-digest": …}, "type": …}, …}`` and its annotation
  ``dev.cosignproject.cosign/signature`` the base64 signature over the payload's bytes.
* **bundle** (cosign v3's default): an OCI 1.1 referrer of the image (found through ``GET /v2/<repo>/referrers/
  <digest>``, or where the registry has no referrers API, the index at the tag ``sha256-<hex>``) whose one layer
  is a Sigstore bundle v0.3: a DSSE envelope over an in-toto Statement with predicate type
  ``https://sigstore.dev/cosign/sign/v1``, signed over the DSSE pre-authentication encoding.

What decides, as ``cosign verify --key`` decides it (and stricter where that is cheap): the signed digest must be
the digest being launched; the signature must verify with one of the keys (ECDSA P-256/P-384/P-521 over SHA-256, or
over SHA-384/SHA-512 for P-384/P-521 as cosign v3 signs with them, ASN.1 DER signatures; RSA PKCS #1 v1.5 over SHA-256, 2048 bits or more; Ed25519), and
``required`` distinct keys must have signed. Everything a registry sends is hostile: every manifest fetched by digest
and every blob is hashed against its digest, documents are size-capped and decoded strictly
(:mod:`imagegate._json`: one meaning for us and for Go's decoder, and for bundles, protojson's exact field names,
no unknown fields), and at most :data:`MAX_CANDIDATES` signatures of each format are looked at. A refused
candidate is kept with its reason, so ``imagegate verify`` can say why nothing verified.

Stricter than cosign, on purpose: a bundle must carry the ``sign/v1`` predicate (``cosign verify`` also accepts any
attestation), exactly one subject and one DSSE signature, and its key hint, when present, must name the key that
verified it; the referrer manifest must name the image as its subject; RSA keys under 2048 bits and RSA-PSS are
refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from imagegate._errors import ImagegateError, ManifestUnknown, RegistryError
from imagegate._json import DocumentError, Struct, decode, struct
from imagegate._reference import Reference

if TYPE_CHECKING:
    from imagegate._registry import RegistryClient
    from imagegate._transport import Reply

__all__ = [
    "BUNDLE_MEDIA_TYPE", "InvalidKey", "PublicKey", "SignatureCheck", "Verification", "load_keys", "pae",
    "signature_tag", "verify_signatures",
]

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIMPLESIGNING_TYPE = "cosign container image signature"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPES = ("https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1")
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

MAX_DOCUMENT_BYTES = 1 << 20  # a signature manifest, an index of referrers: cosign's are a few KiB
MAX_PAYLOAD_BYTES = 256 << 10  # a simplesigning payload or a bundle (a key-based one is ~2 KiB)
MAX_CANDIDATES = 32  # signatures looked at per format; more are ignored (fail closed: they cannot add trust)
MAX_KEYS = 64
MIN_RSA_BITS = 2048

_BUNDLE_KEYS = frozenset({"mediaType", "verificationMaterial", "dsseEnvelope", "messageSignature"})
_MATERIAL_KEYS = frozenset({"publicKey", "tlogEntries", "timestampVerificationData", "certificate",
                            "x509CertificateChain"})
_ENVELOPE_KEYS = frozenset({"payload", "payloadType", "signatures"})
_DSSE_SIGNATURE_KEYS = frozenset({"sig", "keyid"})
_STATEMENT_KEYS = frozenset({"_type", "subject", "predicateType", "predicate"})
_SUBJECT_KEYS = frozenset({"name", "digest", "annotations"})


class InvalidKey(ImagegateError, ValueError):
    """A public key that cannot be used: unreadable, not PEM, a private key, an unsupported algorithm or size."""

    _fields = ("source", "reason")

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"public key {source}: {reason}")


# -- keys ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublicKey:
    """A verification key as ``cosign verify --key`` takes it (a PEM ``PUBLIC KEY``), with where it came from.

    ``hint`` is what cosign puts in a key-based bundle's ``verificationMaterial.publicKey.hint``:
    base64(sha256(the key's DER SubjectPublicKeyInfo)).
    """

    key: Any = field(repr=False, compare=False, hash=False)
    source: str
    algorithm: str  # "ECDSA P-256", "RSA 4096", "Ed25519"
    hint: str

    @classmethod
    def from_pem(cls, data: bytes, source: str = "key") -> PublicKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        text = data.decode("ascii", "replace")
        if "PRIVATE KEY" in text:
            raise InvalidKey(source, "is a private key; pass the public key (cosign.pub), never the private one")
        if text.count("-----BEGIN ") != 1 or "-----BEGIN PUBLIC KEY-----" not in text:
            raise InvalidKey(source, "is not one PEM 'PUBLIC KEY' block (cosign generate-key-pair writes cosign.pub)")
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise InvalidKey(source, f"cannot be read ({exc})") from None
        if isinstance(key, ec.EllipticCurvePublicKey):
            names = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
            if key.curve.name not in names:
                raise InvalidKey(source, f"uses the curve {key.curve.name}; cosign keys are P-256, P-384 or P-521")
            algorithm = f"ECDSA {names[key.curve.name]}"
        elif isinstance(key, rsa.RSAPublicKey):
            if key.key_size < MIN_RSA_BITS:
                raise InvalidKey(source, f"is a {key.key_size}-bit RSA key; use {MIN_RSA_BITS} bits or more")
            algorithm = f"RSA {key.key_size}"
        elif isinstance(key, ed25519.Ed25519PublicKey):
            algorithm = "Ed25519"
        else:
            raise InvalidKey(source, f"is a {type(key).__name__}; cosign keys are ECDSA, RSA or Ed25519")
        der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return cls(key, source, algorithm, base64.b64encode(hashlib.sha256(der).digest()).decode())

    @classmethod
    def load(cls, path: str | Path) -> PublicKey:
        file = Path(path)
        try:
            data = file.read_bytes()[: 64 << 10]
        except OSError as exc:
            raise InvalidKey(str(file), f"cannot be read ({exc.strerror or exc}); pass the path of cosign.pub") from None
        return cls.from_pem(data, str(file))

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True when *signature* is this key's over *message*, as cosign checks it: SHA-256 (``cosign verify``'s
        default), and for P-384 / P-521 also SHA-384 / SHA-512, the hash cosign v3 signs with for those curves
        (``cosign verify --signature-digest-algorithm sha384``); ECDSA signatures ASN.1 DER; RSA PKCS #1 v1.5."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

        try:
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                return any(self._ecdsa(signature, message, algorithm) for algorithm in _ecdsa_hashes(self.key.curve.name))
            elif isinstance(self.key, rsa.RSAPublicKey):
                self.key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            elif isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(signature, message)
            else:  # pragma: no cover - from_pem admits nothing else
                return False
        except (InvalidSignature, ValueError):
            return False
        return True

    def _ecdsa(self, signature: bytes, message: bytes, algorithm: Any) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            self.key.verify(signature, message, ec.ECDSA(algorithm()))
        except (InvalidSignature, ValueError):
            return False
        return True

    def describe(self) -> str:
        return f"{self.source} ({self.algorithm})"


def _ecdsa_hashes(curve: str) -> tuple[Any, ...]:
    """SHA-256 (cosign verify's default) and the hash cosign v3 signs with for *curve*."""
    from cryptography.hazmat.primitives import hashes

    own = {"secp384r1": hashes.SHA384, "secp521r1": hashes.SHA512}.get(curve)
    return (hashes.SHA256, own) if own else (hashes.SHA256,)


def load_keys(paths: Iterable[str | Path]) -> tuple[PublicKey, ...]:
    """The keys at *paths* (PEM files); duplicates (the same key twice) are refused: they would count twice."""
    keys = tuple(PublicKey.load(path) for path in paths)
    check_keys(keys)
    return keys


def check_keys(keys: Sequence[PublicKey]) -> None:
    if not keys:
        raise InvalidKey("(none)", "no key given; pass --key cosign.pub")
    if len(keys) > MAX_KEYS:
        raise InvalidKey(keys[MAX_KEYS].source, f"more than {MAX_KEYS} keys")
    seen: dict[str, str] = {}
    for key in keys:
        if key.hint in seen:
            raise InvalidKey(key.source, f"is the same key as {seen[key.hint]}; each key counts once towards --required")
        seen[key.hint] = key.source


# -- results ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureCheck:
    """One signature found for the image: verified by ``key`` or refused for ``problem``."""

    format: str  # "legacy" | "bundle"
    where: str  # e.g. "sha256-….sig layer 0", "referrer sha256:…"
    key: str | None = None  # the key that verified it (its source)
    problem: str | None = None

    @property
    def verified(self) -> bool:
        return self.problem is None and self.key is not None

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "where": self.where, "key": self.key, "problem": self.problem}


@dataclass(frozen=True)
class Verification:
    """Which signatures of ``reference`` (at ``digest``) verified with which keys, and whether that is enough."""

    reference: str
    digest: str
    required: int
    keys: tuple[str, ...]
    signatures: tuple[SignatureCheck, ...]
    notes: tuple[str, ...] = ()

    @property
    def signed_by(self) -> tuple[str, ...]:
        """The distinct keys with a verified signature, in the order given."""
        found = {check.key for check in self.signatures if check.verified}
        return tuple(key for key in self.keys if key in found)

    @property
    def verified(self) -> bool:
        return len(self.signed_by) >= self.required

    def reason(self) -> str:
        """One sentence: what verified, or why not."""
        count = len(self.signed_by)
        if self.verified:
            return (f"signed by {count} of {len(self.keys)} key(s) ({', '.join(self.signed_by)}); "
                    f"{self.required} required")
        refused = [f"{c.format} {c.where}: {c.problem}" for c in self.signatures if c.problem]
        found = f"{count} of the {self.required} required key(s) signed it"
        if not self.signatures:
            return f"no cosign signature found for {self.digest} ({found})"
        return f"{found}; " + "; ".join(refused[:4]) + (f"; and {len(refused) - 4} more" if len(refused) > 4 else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference, "digest": self.digest, "verified": self.verified, "required": self.required,
            "keys": list(self.keys), "signed_by": list(self.signed_by), "reason": self.reason(),
            "signatures": [check.to_dict() for check in self.signatures], "notes": list(self.notes),
        }


class _Refused(Exception):
    """A candidate signature that cannot count (internal; becomes a SignatureCheck with a problem)."""


# -- verification ----------------------------------------------------------------------------------------------------


def verify_signatures(
    client: RegistryClient,
    ref: Reference,
    digest: str,
    keys: Sequence[PublicKey],
    *,
    required: int = 1,
    formats: Sequence[str] = ("legacy", "bundle"),
) -> Verification:
    """Find the cosign signatures of *ref*'s image *digest* (the digest being launched) and verify them.

    Stops looking once ``required`` distinct keys verified. Registry errors other than "not found" (unreachable,
    auth) propagate as :class:`~imagegate.RegistryError`; anything wrong with a signature itself is a refused
    :class:`SignatureCheck` in the result.
    """
    check_keys(keys)
    if not 1 <= required <= len(keys):
        raise ValueError(f"required must be between 1 and the number of keys ({len(keys)}), not {required}")
    repo = Reference(ref.registry, ref.repository)
    checks: list[SignatureCheck] = []
    notes: list[str] = []
    fetch = _Fetcher(client, repo)
    finders = {"legacy": _legacy, "bundle": _bundles}
    with client._http.operation():
        for name in formats:
            if _enough(checks, required):
                break
            finders[name](fetch, digest, keys, required, checks, notes)
    return Verification(str(ref), digest, required, tuple(k.source for k in keys), tuple(checks), tuple(notes))


def verify_rules(client: RegistryClient, pinned: Reference, rules: Sequence[Any]) -> tuple[Verification, ...]:
    """One :class:`Verification` of the image *pinned* names (by digest) per policy rule
    (:class:`~imagegate._policy.SignatureRule`: its keys and required count)."""
    assert pinned.digest is not None
    return tuple(verify_signatures(client, pinned, pinned.digest, rule.keys, required=rule.required) for rule in rules)


def _enough(checks: Sequence[SignatureCheck], required: int) -> bool:
    return len({c.key for c in checks if c.verified}) >= required


def _verify_with(keys: Sequence[PublicKey], signature: bytes, message: bytes) -> PublicKey | None:
    return next((key for key in keys if key.verify(signature, message)), None)


# -- legacy: the .sig tag ----------------------------------------------------------------------------------------------


def signature_tag(digest: str, suffix: str = "sig") -> str:
    """``sha256:ab…`` -> ``sha256-ab….sig`` (cosign's tag for an image's signatures)."""
    algorithm, _, hexdigest = digest.partition(":")
    return f"{algorithm}-{hexdigest}.{suffix}" if suffix else f"{algorithm}-{hexdigest}"


def _legacy(fetch: _Fetcher, digest: str, keys: Sequence[PublicKey], required: int,
            checks: list[SignatureCheck], notes: list[str]) -> None:
    tag = signature_tag(digest)
    try:
        body = fetch.manifest(tag, f"{OCI_MANIFEST}, {DOCKER_MANIFEST}")
    except ManifestUnknown:
        return
    except _Refused as exc:
        checks.append(SignatureCheck("legacy", tag, problem=str(exc)))
        return
    try:
        layers = _read_manifest(body).items("layers", _layer, required=True)
    except DocumentError as exc:
        checks.append(SignatureCheck("legacy", tag, problem=f"a malformed signature manifest ({exc})"))
        return
    if len(layers) > MAX_CANDIDATES:
        notes.append(f"{tag} lists {len(layers)} signatures; only the first {MAX_CANDIDATES} were looked at")
    for index, layer in enumerate(layers[:MAX_CANDIDATES]):
        if _enough(checks, required):
            return
        where = f"{tag} layer {index}"
        try:
            key = _legacy_one(fetch, layer, digest, keys)
        except _Refused as exc:
            checks.append(SignatureCheck("legacy", where, problem=str(exc)))
            continue
        checks.append(SignatureCheck("legacy", where, key=key.source))


def _layer(value: Any, path: str) -> tuple[str, str, int, dict[str, str]]:
    from imagegate._documents import descriptor

    found = descriptor(value, path)
    return found.media_type, found.digest, found.size, dict(found.annotations)


def _legacy_one(fetch: _Fetcher, layer: tuple[str, str, int, dict[str, str]], digest: str,
                keys: Sequence[PublicKey]) -> PublicKey:
    media_type, blob_digest, size, annotations = layer
    if media_type != SIMPLESIGNING:
        raise _Refused(f"media type {media_type!r} is not a cosign simple-signing payload")
    encoded = annotations.get(SIGNATURE_ANNOTATION)
    if not encoded:
        raise _Refused(f"no {SIGNATURE_ANNOTATION} annotation")
    signature = _b64(encoded, "the signature annotation")
    payload = fetch.blob(blob_digest, size)
    key = _verify_with(keys, signature, payload)
    if key is None:
        raise _Refused("the signature does not verify with any of the keys (signed by another key, or altered)")
    signed = _simplesigning_digest(payload)
    if signed != digest:
        raise _Refused(f"a valid signature by {key.source}, but for {signed[:80]!r}, not {digest} (a signature "
                       "copied from another image)")
    return key


def _simplesigning_digest(payload: bytes) -> str:
    """The ``critical.image.docker-manifest-digest`` of a simple-signing payload, read as cosign's Go reads it."""
    try:
        top = struct(decode(payload))
        critical = top.struct("critical", required=True)
        assert critical is not None
        kind = critical.string("type", required=True)
        image = critical.struct("image", required=True)
        assert image is not None
        signed = image.string("docker-manifest-digest", required=True) or ""
        critical.struct("identity")
    except DocumentError as exc:
        raise _Refused(f"the signed payload is malformed or ambiguous ({exc})") from None
    if kind != SIMPLESIGNING_TYPE:
        raise _Refused(f"the signed payload's type is {kind!r}, not {SIMPLESIGNING_TYPE!r}")
    return signed


# -- bundles: referrers --------------------------------------------------------------------------------------------


def _bundles(fetch: _Fetcher, digest: str, keys: Sequence[PublicKey], required: int,
             checks: list[SignatureCheck], notes: list[str]) -> None:
    found = fetch.referrers(digest)
    source = "referrers API"
    if found is None:
        source = f"tag {signature_tag(digest, '')}"
        try:
            found = fetch.manifest(signature_tag(digest, ""), OCI_INDEX)
        except ManifestUnknown:
            return
        except _Refused as exc:
            checks.append(SignatureCheck("bundle", source, problem=str(exc)))
            return
    try:
        entries = _read_index(found)
    except DocumentError as exc:
        checks.append(SignatureCheck("bundle", source, problem=f"a malformed index of referrers ({exc})"))
        return
    bundles = [e for e in entries if e[1] in (BUNDLE_MEDIA_TYPE, None)
               and e[2].get(PREDICATE_ANNOTATION, SIGN_PREDICATE) == SIGN_PREDICATE]
    if len(bundles) > MAX_CANDIDATES:
        notes.append(f"the {source} lists {len(bundles)} bundles; only the first {MAX_CANDIDATES} were looked at")
    for manifest_digest, _, _ in bundles[:MAX_CANDIDATES]:
        if _enough(checks, required):
            return
        where = f"referrer {manifest_digest}"
        try:
            key = _bundle_one(fetch, manifest_digest, digest, keys)
        except _Refused as exc:
            checks.append(SignatureCheck("bundle", where, problem=str(exc)))
            continue
        checks.append(SignatureCheck("bundle", where, key=key.source))


def _read_index(body: bytes) -> list[tuple[str, str | None, dict[str, str]]]:
    """(digest, artifactType, annotations) of each manifest an OCI index of referrers lists."""
    from imagegate._documents import descriptor

    top = struct(decode(body))
    if top.integer("schemaVersion", required=True) != 2:
        raise DocumentError("schemaVersion is not 2", "schemaVersion")
    kind = top.string("mediaType")
    if kind not in (None, OCI_INDEX):
        raise DocumentError(f"media type {kind!r} is not an OCI index", "mediaType")

    def entry(value: Any, path: str) -> tuple[str, str | None, dict[str, str]]:
        found = descriptor(value, path)
        return found.digest, struct(value, path).string("artifactType"), dict(found.annotations)

    return list(top.items("manifests", entry))


def _bundle_one(fetch: _Fetcher, manifest_digest: str, digest: str, keys: Sequence[PublicKey]) -> PublicKey:
    try:
        body = fetch.manifest(manifest_digest, OCI_MANIFEST, verify=True)
    except ManifestUnknown:
        raise _Refused("listed, but the registry does not have it") from None
    try:
        manifest = _read_manifest(body)
        subject = manifest.struct("subject")
        subject_digest = subject.string("digest", required=True) if subject is not None else None
        layers = manifest.items("layers", _layer, required=True)
        artifact = manifest.string("artifactType")
    except DocumentError as exc:
        raise _Refused(f"a malformed referrer manifest ({exc})") from None
    if subject_digest != digest:
        raise _Refused(f"the referrer's subject is {subject_digest!r}, not {digest}")
    if artifact not in (None, BUNDLE_MEDIA_TYPE):
        raise _Refused(f"artifact type {artifact!r} is not a Sigstore bundle v0.3")
    if len(layers) != 1 or layers[0][0] != BUNDLE_MEDIA_TYPE:
        raise _Refused(f"a bundle referrer has exactly one {BUNDLE_MEDIA_TYPE} layer; this one has "
                       f"{[layer[0] for layer in layers]}")
    bundle = fetch.blob(layers[0][1], layers[0][2])
    return _verify_bundle(bundle, digest, keys)


def _verify_bundle(bundle: bytes, digest: str, keys: Sequence[PublicKey]) -> PublicKey:
    """Verify a Sigstore bundle v0.3 (key-based, DSSE over an in-toto Statement) for the image *digest*."""
    try:
        top = _exact(decode(bundle), _BUNDLE_KEYS, "bundle")
        if top.string("mediaType", required=True) != BUNDLE_MEDIA_TYPE:
            raise DocumentError(f"media type {top.string('mediaType')!r} is not {BUNDLE_MEDIA_TYPE}", "mediaType")
        if "messageSignature" in top:
            raise DocumentError("a message signature, not a DSSE envelope: not a cosign image signature",
                                "messageSignature")
        material = _exact(top.raw("verificationMaterial"), _MATERIAL_KEYS, "verificationMaterial")
        if "certificate" in material or "x509CertificateChain" in material:
            raise DocumentError("carries a certificate (keyless signing): imagegate verifies key-based bundles only",
                                "verificationMaterial")
        hint = (material.struct("publicKey") or Struct({}, "publicKey")).string("hint")
        envelope = _exact(top.raw("dsseEnvelope"), _ENVELOPE_KEYS, "dsseEnvelope")
        payload_type = envelope.string("payloadType", required=True) or ""
        payload = _b64(envelope.string("payload", required=True) or "", "dsseEnvelope.payload")
        signatures = envelope.items("signatures", lambda v, p: _exact(v, _DSSE_SIGNATURE_KEYS, p), required=True)
    except DocumentError as exc:
        raise _Refused(f"a malformed or ambiguous bundle ({exc})") from None
    if len(signatures) != 1:
        raise _Refused(f"the DSSE envelope holds {len(signatures)} signatures; cosign writes exactly one")
    if payload_type != INTOTO_PAYLOAD_TYPE:
        raise _Refused(f"the DSSE payload type is {payload_type!r}, not {INTOTO_PAYLOAD_TYPE!r}")
    signature = _b64(signatures[0].string("sig") or "", "the DSSE signature")
    key = _verify_with(keys, signature, pae(payload_type, payload))
    if key is None:
        raise _Refused("the signature does not verify with any of the keys (signed by another key, or altered)")
    if hint is not None and hint != key.hint:
        raise _Refused(f"the bundle's key hint {hint[:64]!r} names another key than {key.source}, which verified it")
    _check_statement(payload, digest, key)
    return key


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a DSSE signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _check_statement(payload: bytes, digest: str, key: PublicKey) -> None:
    try:
        statement = _exact(decode(payload), _STATEMENT_KEYS, "statement")
        kind = statement.string("_type", required=True)
        predicate = statement.string("predicateType", required=True)
        subjects = statement.items("subject", lambda v, p: _exact(v, _SUBJECT_KEYS, p), required=True)
        digests = [s.mapping("digest") for s in subjects]
    except DocumentError as exc:
        raise _Refused(f"a valid signature by {key.source} over a malformed statement ({exc})") from None
    if kind not in STATEMENT_TYPES:
        raise _Refused(f"the statement's _type is {kind!r}, not an in-toto Statement")
    if predicate != SIGN_PREDICATE:
        raise _Refused(f"a valid signature by {key.source} of a {predicate!r} attestation, not an image signature "
                       f"({SIGN_PREDICATE})")
    if len(digests) != 1:
        raise _Refused(f"a valid signature by {key.source} of a statement with {len(digests)} subjects; cosign signs "
                       "exactly one image per statement")
    algorithm, _, hexdigest = digest.partition(":")
    if digests[0] != {algorithm: hexdigest}:
        shown = ", ".join(":".join(next(iter(d.items()), ("?", "?"))) for d in digests[:3]) or "none"
        raise _Refused(f"a valid signature by {key.source}, but its subject is {shown[:200]}, not {digest} "
                       "(a bundle for another image)")


def _exact(value: Any, allowed: frozenset[str], path: str) -> Struct:
    """An object read as protojson reads a message: known camelCase field names only, each once."""
    found = struct(value, path)
    for name in found.keys():
        if name not in allowed:
            raise DocumentError(f"unknown field {name[:40]!r} (protojson refuses unknown fields)", path)
    return found


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise _Refused(f"{what} is not standard base64") from None


def _read_manifest(body: bytes) -> Struct:
    top = struct(decode(body))
    if top.integer("schemaVersion", required=True) != 2:
        raise DocumentError("schemaVersion is not 2", "schemaVersion")
    if "manifests" in top:
        raise DocumentError("a manifest with an index's 'manifests' field is ambiguous", "manifests")
    kind = top.string("mediaType")
    if kind not in (None, OCI_MANIFEST, DOCKER_MANIFEST):
        raise DocumentError(f"media type {kind!r} is not an image manifest", "mediaType")
    return top


# -- fetching ------------------------------------------------------------------------------------------------------


class _Fetcher:
    """The few reads signatures need, through the client's request path (auth, TLS, deadline, caps, retries):
    manifests by tag or digest, blobs by digest, the referrers API. Everything by digest is hashed and compared."""

    def __init__(self, client: RegistryClient, repo: Reference) -> None:
        self._http = client._http
        self._repo = repo

    def manifest(self, target: str, accept: str, *, verify: bool = False) -> bytes:
        reply = self._http.request(self._repo, "GET", f"manifests/{target}", accept=accept, limit=MAX_DOCUMENT_BYTES)
        claimed = reply.header("Docker-Content-Digest")
        expected = target if verify else claimed
        if expected:
            self._check_digest(reply, expected, f"manifest {target[:80]}")
        return reply.content

    def blob(self, digest: str, size: int) -> bytes:
        if size > MAX_PAYLOAD_BYTES:
            raise _Refused(f"its blob {digest} is {size} bytes; at most {MAX_PAYLOAD_BYTES} are read")
        try:
            reply = self._http.request(self._repo, "GET", f"blobs/{digest}", limit=MAX_PAYLOAD_BYTES)
        except ManifestUnknown:
            raise _Refused(f"its blob {digest} is missing from the registry") from None
        if len(reply.content) != size:
            raise _Refused(f"its blob {digest} is {len(reply.content)} bytes, not the {size} the manifest says")
        self._check_digest(reply, digest, f"blob {digest}")
        return reply.content

    def referrers(self, digest: str) -> bytes | None:
        """The OCI 1.1 referrers index of *digest*, or None when the registry has no referrers API (404)."""
        try:
            reply = self._http.request(self._repo, "GET", f"referrers/{digest}", accept=OCI_INDEX,
                                       limit=MAX_DOCUMENT_BYTES)
        except ManifestUnknown:
            return None
        except RegistryError as exc:
            if exc.status in (400, 405, 501):  # no such route on this registry: the fallback tag
                return None
            raise
        return reply.content

    @staticmethod
    def _check_digest(reply: Reply, expected: str, what: str) -> None:
        algorithm = expected.partition(":")[0]
        if algorithm not in ("sha256", "sha384", "sha512"):
            raise _Refused(f"{what}: unsupported digest {expected[:80]!r}")
        actual = f"{algorithm}:{hashlib.new(algorithm, reply.content).hexdigest()}"
        if actual != expected:
            raise _Refused(f"{what}: the registry sent bytes that hash to {actual}, not {expected}")
