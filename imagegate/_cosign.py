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
import json
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from imagegate._errors import ImagegateError, ManifestUnknown, RegistryError
from imagegate._json import DocumentError, Struct, decode, struct
from imagegate._reference import Reference

if TYPE_CHECKING:
    from imagegate._registry import RegistryClient
    from imagegate._transport import Reply

__all__ = [
    "BUNDLE_MEDIA_TYPE", "AttestationCheck", "Attestations", "InvalidKey", "PublicKey", "SignatureCheck", "Statement",
    "Verification", "load_keys", "pae", "signature_tag", "verify_attestations", "verify_signatures",
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
# Referrer manifests read per image: a fallback index's entries carry no predicate type (cosign writes only the
# artifactType there), so each referrer's own manifest says what it is (a signature or which attestation) and when it
# was made. More than this, and the newest attestation cannot be told: the check fails closed.
MAX_REFERRERS = 128
CREATED_ANNOTATION = "org.opencontainers.image.created"
MAX_KEYS = 64
MIN_RSA_BITS = 2048
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"  # a legacy (.att) attestation layer
LEGACY_PREDICATE_ANNOTATION = "predicateType"  # that layer's annotation naming its predicate type
# A vulnerability report in an attestation can be MBs (a Trivy JSON of a large image: 5-20 MiB, base64 in a bundle
# adds a third): one attestation blob is read up to this, streamed and hashed; all of them together up to the total.
MAX_ATTESTATION_BYTES = 32 << 20
MAX_ATTESTATION_TOTAL = 96 << 20
MAX_CACHED_EVIDENCE = 48 << 20
# A cached set of verified attestations is used for at most this long before the registry is asked again: the newest
# scan decides, and a newer (worse) one may have been attested since. Signatures have no such limit: a signature
# that verified for this digest stays valid (key-based, no revocation), and more signatures cannot make it worse.
ATTESTATION_RELOOK = 600.0
# How long "this registry has no referrers API" is remembered (then asked again: a registry may be upgraded). A
# registry that gained the API in the meantime and got signatures only through it is, at worst, refused until then.
REFERRERS_MEMO = 3600.0
_NO_REFERRERS: weakref.WeakKeyDictionary[Any, dict[str, float]] = weakref.WeakKeyDictionary()

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
    names: set[str] = set()
    for key in keys:
        if key.hint in seen:
            raise InvalidKey(key.source, f"is the same key as {seen[key.hint]}; each key counts once towards --required")
        # a verified signature is credited to its key's name: two keys of one name would count one signature twice
        if key.source in names:
            raise InvalidKey(key.source, "names two different keys; give each key its own name "
                                         "(PublicKey.from_pem(data, source=...)) so each counts once towards --required")
        seen[key.hint] = key.source
        names.add(key.source)


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
    """Which signatures of ``reference`` (at ``digest``) verified with which keys, and whether that is enough.
    ``cached``: verified again, locally, from the host's cache of verified signatures (no registry request)."""

    reference: str
    digest: str
    required: int
    keys: tuple[str, ...]
    signatures: tuple[SignatureCheck, ...]
    notes: tuple[str, ...] = ()
    cached: bool = False

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
            "cached": self.cached,
        }


@dataclass(frozen=True)
class Statement:
    """A verified attestation: an in-toto Statement about the image, of ``predicate_type``, signed by ``key``.
    ``statement_digest`` (sha256 of the signed payload) tells apart statements (the same one signed by several keys
    has one digest)."""

    format: str  # "legacy" | "bundle"
    where: str
    key: str
    predicate_type: str
    statement_digest: str
    predicate: Any = field(repr=False, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "where": self.where, "key": self.key, "predicate_type": self.predicate_type,
                "statement_digest": self.statement_digest}


@dataclass(frozen=True)
class AttestationCheck:
    """One attestation looked at: verified (then in :attr:`Attestations.statements`) or refused for ``problem``."""

    format: str
    where: str
    predicate_type: str | None = None  # what the manifest's annotation says (unsigned: a hint for looking only)
    key: str | None = None
    problem: str | None = None

    @property
    def verified(self) -> bool:
        return self.problem is None and self.key is not None

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "where": self.where, "predicate_type": self.predicate_type, "key": self.key,
                "problem": self.problem}


@dataclass(frozen=True)
class Attestations:
    """The attestations of ``reference`` (at ``digest``) of the predicate ``types`` that verified with ``keys``.

    ``statements`` are the verified ones; a statement *counts* when ``required`` distinct keys signed it (the same
    statement, several envelopes); ``checks`` lists every candidate looked at, refused ones with their reason."""

    reference: str
    digest: str
    types: tuple[str, ...]
    required: int
    keys: tuple[str, ...]
    checks: tuple[AttestationCheck, ...]
    statements: tuple[Statement, ...]
    notes: tuple[str, ...] = ()
    cached: bool = False
    incomplete: str | None = None  # why not every attestation could be looked at (then the newest is unknown)

    def counted(self) -> tuple[tuple[Statement, tuple[str, ...]], ...]:
        """(a statement, the distinct keys that signed it) for each statement signed by ``required`` keys."""
        groups: dict[str, list[Statement]] = {}
        for statement in self.statements:
            groups.setdefault(statement.statement_digest, []).append(statement)
        out = []
        for group in groups.values():
            signers = tuple(key for key in self.keys if any(s.key == key for s in group))
            if len(signers) >= self.required:
                out.append((group[0], signers))
        return tuple(out)

    @property
    def verified(self) -> bool:
        return bool(self.counted())

    def reason(self) -> str:
        counted = self.counted()
        if counted:
            kinds = sorted({s.predicate_type for s, _ in counted})
            return (f"{len(counted)} verified attestation(s) of {', '.join(kinds)} for {self.digest}"
                    + (" (from the cache of verified attestations)" if self.cached else ""))
        refused = [f"{c.format} {c.where}: {c.problem}" for c in self.checks if c.problem]
        if self.statements:
            refused.insert(0, f"no statement is signed by {self.required} of the keys")
        if not refused:
            return f"no attestation of {', '.join(self.types)} found for {self.digest}"
        return "; ".join(refused[:4]) + (f"; and {len(refused) - 4} more" if len(refused) > 4 else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference, "digest": self.digest, "verified": self.verified, "types": list(self.types),
            "required": self.required, "keys": list(self.keys), "reason": self.reason(), "cached": self.cached,
            "statements": [s.to_dict() for s in self.statements],
            "attestations": [c.to_dict() for c in self.checks], "notes": list(self.notes),
            "incomplete": self.incomplete,
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
    cache: bool = True,
) -> Verification:
    """Find the cosign signatures of *ref*'s image *digest* (the digest being launched) and verify them.

    Stops looking once ``required`` distinct keys verified. Registry errors other than "not found" (unreachable,
    auth) propagate as :class:`~imagegate.RegistryError`; anything wrong with a signature itself is a refused
    :class:`SignatureCheck` in the result.

    With the client's disk cache (and *cache*), a verified result's signatures are stored by image digest and keys, and
    the next verification verifies them again from there, locally, with the keys: no registry request. What is on
    disk is never trusted: it is verified exactly as if the registry had sent it. A result that is not verified is
    not stored (a signature may be added later).
    """
    check_keys(keys)
    if not 1 <= required <= len(keys):
        raise ValueError(f"required must be between 1 and the number of keys ({len(keys)}), not {required}")
    repo = Reference(ref.registry, ref.repository)
    store = _EvidenceCache(client, repo, "cosign-signatures", digest, keys, formats) if cache else None
    if store is not None:
        found = store.load()
        if found:
            checks = [check for check, _ in (_reverify_signature(item, digest, keys) for item in found) if check]
            result = Verification(str(ref), digest, required, tuple(k.source for k in keys), tuple(checks),
                                  ("verified again from the host's cache of verified signatures",), cached=True)
            if result.verified:
                return result
    checks: list[SignatureCheck] = []
    notes: list[str] = []
    fetch = _Fetcher(client, repo)
    finders = {"legacy": _legacy, "bundle": _bundles}
    with client._http.operation():
        for name in formats:
            if _enough(checks, required):
                break
            finders[name](fetch, digest, keys, required, checks, notes)
    result = Verification(str(ref), digest, required, tuple(k.source for k in keys), tuple(checks), tuple(notes))
    if store is not None and result.verified:
        store.save(fetch.evidence)
    return result


def verify_rules(client: RegistryClient, pinned: Reference, rules: Sequence[Any]) -> tuple[Verification, ...]:
    """One :class:`Verification` of the image *pinned* names (by digest) per policy rule
    (:class:`~imagegate._policy.SignatureRule`: its keys and required count)."""
    assert pinned.digest is not None
    return tuple(verify_signatures(client, pinned, pinned.digest, rule.keys, required=rule.required) for rule in rules)


def verify_attestations(
    client: RegistryClient,
    ref: Reference,
    digest: str,
    keys: Sequence[PublicKey],
    *,
    types: Sequence[str],
    required: int = 1,
    formats: Sequence[str] = ("legacy", "bundle"),
    cache: bool = True,
    fresh_enough: Callable[[Attestations], bool] | None = None,
) -> Attestations:
    """Find the cosign attestations of *ref*'s image *digest* whose predicate type is one of *types* (URIs,
    :mod:`imagegate._predicates`) and verify them with *keys*: the legacy ``sha256-<hex>.att`` tag (each layer a DSSE
    envelope) and Sigstore bundles among the image's referrers (the API, or the ``sha256-<hex>`` fallback tag).

    Every candidate is looked at (up to :data:`MAX_CANDIDATES` per format and :data:`MAX_ATTESTATION_TOTAL` bytes in
    all), so the caller can choose among them (the newest scan). As for signatures: a verified result is cached on
    disk by image digest, types and keys and verified again locally from there next time; *fresh_enough*, when
    given, decides whether the cached result will do (False: e.g. its newest scan is older than the policy's
    max-age, so the registry may have a newer one) — then the registry is asked again.
    """
    check_keys(keys)
    if not types:
        raise ValueError("types: at least one predicate type")
    if not 1 <= required <= len(keys):
        raise ValueError(f"required must be between 1 and the number of keys ({len(keys)}), not {required}")
    types = tuple(types)
    repo = Reference(ref.registry, ref.repository)
    names = tuple(k.source for k in keys)
    store = _EvidenceCache(client, repo, "cosign-attestations", digest, keys, formats, types) if cache else None
    if store is not None:
        found = store.load()
        if found:
            checks, statements = [], []
            for item in found:
                check, statement = _reverify_attestation(item, digest, keys, types)
                if check is not None:
                    checks.append(check)
                if statement is not None:
                    statements.append(statement)
            result = Attestations(str(ref), digest, types, required, names, tuple(checks), tuple(statements),
                                  ("verified again from the host's cache of verified attestations",), cached=True)
            if result.verified and store.looked_within(ATTESTATION_RELOOK) and (
                    fresh_enough is None or fresh_enough(result)):
                return result
    checks: list[AttestationCheck] = []
    statements: list[Statement] = []
    notes: list[str] = []
    fetch = _Fetcher(client, repo)
    with client._http.operation():
        for name in formats:
            {"legacy": _legacy_attestations, "bundle": _bundle_attestations}[name](
                fetch, digest, keys, types, checks, statements, notes)
    result = Attestations(str(ref), digest, types, required, names, tuple(checks), tuple(statements), tuple(notes),
                          incomplete=fetch.incomplete)
    if store is not None and result.verified and result.incomplete is None:
        store.save(fetch.evidence)
    return result


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
        layers = _tag_layers(fetch, tag, "signature")
    except (_Refused, DocumentError) as exc:  # a malformed document: this one does not count
        checks.append(SignatureCheck("legacy", tag, problem=str(exc)))
        return
    if len(layers) > MAX_CANDIDATES:
        notes.append(f"{tag} lists {len(layers)} signatures; only the first {MAX_CANDIDATES} were looked at")
    for index, layer in enumerate(layers[:MAX_CANDIDATES]):
        if _enough(checks, required):
            return
        where = f"{tag} layer {index}"
        try:
            key, payload, signature = _legacy_one(fetch, layer, digest, keys)
        except (_Refused, DocumentError) as exc:  # a malformed document: this one does not count
            checks.append(SignatureCheck("legacy", where, problem=str(exc)))
            continue
        checks.append(SignatureCheck("legacy", where, key=key.source))
        fetch.evidence.append({"kind": "simplesigning", "where": where, "data": base64.b64encode(payload).decode(),
                               "signature": base64.b64encode(signature).decode()})


def _tag_layers(fetch: _Fetcher, tag: str, what: str) -> tuple[tuple[str, str, int, dict[str, str]], ...]:
    """The layers of the legacy manifest at *tag* (``….sig`` / ``….att``); none when the tag does not exist. A
    manifest that cannot be used is raised as :class:`_Refused`."""
    try:
        body = fetch.manifest(tag, f"{OCI_MANIFEST}, {DOCKER_MANIFEST}")
    except ManifestUnknown:
        return ()
    try:
        return _read_manifest(body).items("layers", _layer, required=True)
    except DocumentError as exc:
        raise _Refused(f"a malformed {what} manifest ({exc})") from None


def _layer(value: Any, path: str) -> tuple[str, str, int, dict[str, str]]:
    from imagegate._documents import descriptor

    found = descriptor(value, path)
    return found.media_type, found.digest, found.size, dict(found.annotations)


def _legacy_one(fetch: _Fetcher, layer: tuple[str, str, int, dict[str, str]], digest: str,
                keys: Sequence[PublicKey]) -> tuple[PublicKey, bytes, bytes]:
    media_type, blob_digest, size, annotations = layer
    if media_type != SIMPLESIGNING:
        raise _Refused(f"media type {media_type!r} is not a cosign simple-signing payload")
    encoded = annotations.get(SIGNATURE_ANNOTATION)
    if not encoded:
        raise _Refused(f"no {SIGNATURE_ANNOTATION} annotation")
    signature = _b64(encoded, "the signature annotation")
    payload = fetch.blob(blob_digest, size)
    return _verify_simplesigning(payload, signature, digest, keys), payload, signature


def _verify_simplesigning(payload: bytes, signature: bytes, digest: str, keys: Sequence[PublicKey]) -> PublicKey:
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


# -- legacy attestations: the .att tag ---------------------------------------------------------------------------------


def _legacy_attestations(fetch: _Fetcher, digest: str, keys: Sequence[PublicKey], types: Sequence[str],
                         checks: list[AttestationCheck], statements: list[Statement], notes: list[str]) -> None:
    tag = signature_tag(digest, "att")
    try:
        layers = _tag_layers(fetch, tag, "attestation")
    except (_Refused, DocumentError) as exc:  # a malformed document: this one does not count
        checks.append(AttestationCheck("legacy", tag, problem=str(exc)))
        return
    wanted = [(i, layer) for i, layer in enumerate(layers) if layer[3].get(LEGACY_PREDICATE_ANNOTATION) in types]
    if len(wanted) > MAX_CANDIDATES:
        notes.append(f"{tag} lists {len(wanted)} attestations of these types; only the last {MAX_CANDIDATES} (the "
                     "newest cosign appended) were looked at")
    for index, layer in wanted[-MAX_CANDIDATES:]:
        where = f"{tag} layer {index}"
        annotated = layer[3].get(LEGACY_PREDICATE_ANNOTATION)
        try:
            if layer[0] != DSSE_MEDIA_TYPE:
                raise _Refused(f"media type {layer[0]!r} is not a DSSE envelope ({DSSE_MEDIA_TYPE})")
            data = fetch.attestation_blob(layer[1], layer[2])
            key, predicate_type, predicate, payload = _verify_envelope(data, digest, keys, types)
        except (_Refused, DocumentError) as exc:  # a malformed document: this one does not count
            checks.append(AttestationCheck("legacy", where, annotated, problem=str(exc)))
            continue
        checks.append(AttestationCheck("legacy", where, annotated, key=key.source))
        statements.append(Statement("legacy", where, key.source, predicate_type, _sha256(payload), predicate))
        fetch.evidence.append({"kind": "dsse", "where": where, "data": base64.b64encode(data).decode()})


# -- bundles: referrers --------------------------------------------------------------------------------------------


def _referrers(fetch: _Fetcher, digest: str) -> tuple[str, list[tuple[str, str | None, dict[str, str]]]] | None:
    """(where they were found, the entries) of the image's referrers: the API, else the fallback tag; None: none.
    A problem with the index itself is raised as :class:`_Refused`."""
    found = fetch.referrers(digest)
    source = "referrers API"
    if found is None:
        source = f"tag {signature_tag(digest, '')}"
        try:
            found = fetch.manifest(signature_tag(digest, ""), OCI_INDEX)
        except ManifestUnknown:
            return None
    try:
        return source, _read_index(found)
    except DocumentError as exc:
        raise _Refused(f"{source}: a malformed index of referrers ({exc})") from None


def _bundles(fetch: _Fetcher, digest: str, keys: Sequence[PublicKey], required: int,
             checks: list[SignatureCheck], notes: list[str]) -> None:
    try:
        listed = _referrers(fetch, digest)
    except (_Refused, DocumentError) as exc:  # a malformed document: this one does not count
        checks.append(SignatureCheck("bundle", "referrers", problem=str(exc)))
        return
    if listed is None:
        return
    source, entries = listed
    bundles = [e for e in entries if e[1] in (BUNDLE_MEDIA_TYPE, None)
               and e[2].get(PREDICATE_ANNOTATION, SIGN_PREDICATE) == SIGN_PREDICATE]
    if len(bundles) > MAX_REFERRERS:
        notes.append(f"the {source} lists {len(bundles)} bundles; only the first {MAX_REFERRERS} were looked at")
    tried = 0
    for manifest_digest, _, _ in bundles[:MAX_REFERRERS]:
        if _enough(checks, required) or tried >= MAX_CANDIDATES:
            break
        where = f"referrer {manifest_digest}"
        try:
            referrer = _referrer(fetch, manifest_digest, digest)
            if referrer.predicate_type not in (None, SIGN_PREDICATE):
                continue  # an attestation (its manifest says so): not a signature; its blob is never fetched
            tried += 1
            bundle = referrer.blob(fetch, MAX_PAYLOAD_BYTES)
            key = _verify_bundle(bundle, digest, keys)[0]
        except (_Refused, DocumentError) as exc:  # a malformed document: this one does not count
            tried += 1
            checks.append(SignatureCheck("bundle", where, problem=str(exc)))
            continue
        checks.append(SignatureCheck("bundle", where, key=key.source))
        fetch.evidence.append({"kind": "bundle", "where": where, "data": base64.b64encode(bundle).decode()})
    if tried >= MAX_CANDIDATES and not _enough(checks, required):
        notes.append(f"the {source}: only {MAX_CANDIDATES} signature bundles were looked at")


def _bundle_attestations(fetch: _Fetcher, digest: str, keys: Sequence[PublicKey], types: Sequence[str],
                         checks: list[AttestationCheck], statements: list[Statement], notes: list[str]) -> None:
    try:
        listed = _referrers(fetch, digest)
    except (_Refused, DocumentError) as exc:  # a malformed document: this one does not count
        checks.append(AttestationCheck("bundle", "referrers", problem=str(exc)))
        return
    if listed is None:
        return
    source, entries = listed
    bundles = [e for e in entries if e[1] in (BUNDLE_MEDIA_TYPE, None)
               and e[2].get(PREDICATE_ANNOTATION, types[0]) in types]
    if len(bundles) > MAX_REFERRERS:
        # The newest scan decides, and which is newest is only known from each referrer's manifest: fail closed.
        fetch.incomplete = (f"the {source} lists {len(bundles)} referrers; imagegate reads at most {MAX_REFERRERS}, so "
                            "the newest attestation cannot be told: delete old attestations of this digest")
        return
    # Each referrer's manifest says what it is (the predicate type) and when it was made; only wanted ones are
    # read, newest first (the `created` annotation: cosign's; a registry writer could hide a referrer anyway).
    wanted: list[tuple[str, _Referrer]] = []
    for manifest_digest, _, _ in bundles:
        where = f"referrer {manifest_digest}"
        try:
            referrer = _referrer(fetch, manifest_digest, digest)
        except (_Refused, DocumentError) as exc:  # a malformed document: this one does not count
            checks.append(AttestationCheck("bundle", where, None, problem=str(exc)))
            continue
        if referrer.predicate_type is None or referrer.predicate_type in types:
            wanted.append((where, referrer))
    if len(wanted) > MAX_CANDIDATES:
        if any(r.created is None for _, r in wanted):
            fetch.incomplete = (f"the {source} lists {len(wanted)} attestations of these types, some without a "
                                f"'{CREATED_ANNOTATION}' time; imagegate reads at most {MAX_CANDIDATES}, so the "
                                "newest cannot be told: delete old attestations of this digest")
            return
        notes.append(f"the {source} lists {len(wanted)} attestation bundles of these types; the newest "
                     f"{MAX_CANDIDATES} by their '{CREATED_ANNOTATION}' time were looked at")
        wanted.sort(key=lambda pair: pair[1].created or "", reverse=True)
        wanted = wanted[:MAX_CANDIDATES]
    for where, referrer in wanted:
        annotated = referrer.predicate_type
        try:
            bundle = referrer.blob(fetch, MAX_ATTESTATION_BYTES)
            key, predicate_type, predicate, payload = _verify_bundle(bundle, digest, keys, types)
        except (_Refused, DocumentError) as exc:  # a malformed document: this one does not count
            checks.append(AttestationCheck("bundle", where, annotated, problem=str(exc)))
            continue
        checks.append(AttestationCheck("bundle", where, annotated, key=key.source))
        statements.append(Statement("bundle", where, key.source, predicate_type, _sha256(payload), predicate))
        fetch.evidence.append({"kind": "bundle", "where": where, "data": base64.b64encode(bundle).decode()})


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


@dataclass(frozen=True)
class _Referrer:
    """A bundle referrer's manifest, read and checked: its one bundle layer, what its annotations say it is (the
    predicate type; None: not said) and when it was made (RFC 3339 text, compared as text: cosign writes UTC 'Z')."""

    layer: tuple[str, str, int, dict[str, str]]
    predicate_type: str | None
    created: str | None

    def blob(self, fetch: _Fetcher, cap: int) -> bytes:
        if cap > MAX_PAYLOAD_BYTES:
            return fetch.attestation_blob(self.layer[1], self.layer[2])
        return fetch.blob(self.layer[1], self.layer[2])


def _referrer(fetch: _Fetcher, manifest_digest: str, digest: str) -> _Referrer:
    """A referrer's manifest, after checking it names the image and holds exactly one Sigstore bundle."""
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
        annotations = manifest.mapping("annotations") if "annotations" in manifest else {}
    except DocumentError as exc:
        raise _Refused(f"a malformed referrer manifest ({exc})") from None
    if subject_digest != digest:
        raise _Refused(f"the referrer's subject is {subject_digest!r}, not {digest}")
    if artifact not in (None, BUNDLE_MEDIA_TYPE):
        raise _Refused(f"artifact type {artifact!r} is not a Sigstore bundle v0.3")
    if len(layers) != 1 or layers[0][0] != BUNDLE_MEDIA_TYPE:
        raise _Refused(f"a bundle referrer has exactly one {BUNDLE_MEDIA_TYPE} layer; this one has "
                       f"{[layer[0] for layer in layers]}")
    predicate = annotations.get(PREDICATE_ANNOTATION)
    created = annotations.get(CREATED_ANNOTATION)
    return _Referrer(layers[0], predicate if isinstance(predicate, str) else None,
                     created if isinstance(created, str) and len(created) <= 64 else None)


# -- the cache of verified evidence ------------------------------------------------------------------------------------


class _EvidenceCache:
    """Verified signatures / attestations of one image digest, on the host's disk cache
    (:mod:`imagegate._diskcache`: per user, 0600, checksummed, bounded), keyed by the image digest and a hash of the
    keys, formats (and predicate types) asked for. Only what verified is stored (the raw envelopes, bundles or
    payload + signature, as the registry sent them); on load everything is verified again with the keys: the disk
    is not trusted, only spared the registry round trips. ``IMAGEGATE_REGISTRY_CACHE=off`` turns it off."""

    def __init__(self, client: RegistryClient, repo: Reference, kind: str, digest: str, keys: Sequence[PublicKey],
                 formats: Sequence[str], types: Sequence[str] = ()) -> None:
        self._disk = client.disk_cache
        self._repo = repo
        self._kind = kind
        scope = "\n".join((*sorted(k.hint for k in keys), "|", *formats, "|", *sorted(types)))
        self._key = f"{digest}#{_sha256(scope.encode())}"

    def load(self) -> list[dict[str, Any]]:
        if self._disk is None:
            return []
        stored = self._disk.get(self._kind, self._repo.registry, self._repo.repository, self._key,
                                limit=MAX_CACHED_EVIDENCE)
        if stored is None:
            return []
        saved = stored[1].get("saved")
        self._saved = float(saved) if isinstance(saved, (int, float)) and not isinstance(saved, bool) else None
        try:
            items = decode(stored[0])
        except DocumentError:
            return []
        return [item for item in items if isinstance(item, dict)][:2 * MAX_CANDIDATES] if isinstance(items, list) else []

    def save(self, evidence: Sequence[dict[str, Any]]) -> None:
        if self._disk is None or not evidence:
            return
        body = json.dumps(list(evidence), separators=(",", ":")).encode()
        if len(body) <= MAX_CACHED_EVIDENCE:
            self._disk.put(self._kind, self._repo.registry, self._repo.repository, self._key, body,
                           {"saved": time.time()})

    def looked_within(self, seconds: float) -> bool:
        """Whether the stored result was looked up in the registry at most *seconds* ago (by this host's clock; an
        entry with no time, or one from the future, is not)."""
        saved = getattr(self, "_saved", None)
        return saved is not None and 0 <= time.time() - saved <= seconds


def _evidence_bytes(item: dict[str, Any], name: str) -> bytes:
    value = item.get(name)
    if not isinstance(value, str):
        raise _Refused(f"a cached entry without {name}")
    return _b64(value, f"the cached {name}")


def _reverify_signature(item: dict[str, Any], digest: str,
                        keys: Sequence[PublicKey]) -> tuple[SignatureCheck | None, None]:
    where = str(item.get("where", "?"))[:200]
    try:
        if item.get("kind") == "simplesigning":
            key = _verify_simplesigning(_evidence_bytes(item, "data"), _evidence_bytes(item, "signature"), digest, keys)
            return SignatureCheck("legacy", where + " (cached)", key=key.source), None
        if item.get("kind") == "bundle":
            key = _verify_bundle(_evidence_bytes(item, "data"), digest, keys)[0]
            return SignatureCheck("bundle", where + " (cached)", key=key.source), None
    except (_Refused, DocumentError):
        return None, None  # stale or altered on disk: it does not count; the registry is asked
    return None, None


def _reverify_attestation(item: dict[str, Any], digest: str, keys: Sequence[PublicKey],
                          types: Sequence[str]) -> tuple[AttestationCheck | None, Statement | None]:
    where = str(item.get("where", "?"))[:200] + " (cached)"
    kind = item.get("kind")
    try:
        data = _evidence_bytes(item, "data")
        if kind == "dsse":
            key, predicate_type, predicate, payload = _verify_envelope(data, digest, keys, types)
            form = "legacy"
        elif kind == "bundle":
            key, predicate_type, predicate, payload = _verify_bundle(data, digest, keys, types)
            form = "bundle"
        else:
            return None, None
    except (_Refused, DocumentError):
        return None, None
    return (AttestationCheck(form, where, predicate_type, key=key.source),
            Statement(form, where, key.source, predicate_type, _sha256(payload), predicate))


def _sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _verify_bundle(bundle: bytes, digest: str, keys: Sequence[PublicKey],
                   types: Sequence[str] = (SIGN_PREDICATE,)) -> tuple[PublicKey, str, Any, bytes]:
    """Verify a Sigstore bundle v0.3 (key-based, DSSE over an in-toto Statement) for the image *digest*, whose
    statement's predicate type is one of *types*: (the key, the predicate type, the predicate, the payload)."""
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
    except DocumentError as exc:
        raise _Refused(f"a malformed or ambiguous bundle ({exc})") from None
    key, payload = _verify_dsse(envelope, keys, "bundle")
    if hint is not None and hint != key.hint:
        raise _Refused(f"the bundle's key hint {hint[:64]!r} names another key than {key.source}, which verified it")
    predicate_type, predicate = _check_statement(payload, digest, key, types)
    return key, predicate_type, predicate, payload


def _verify_dsse(envelope: Struct, keys: Sequence[PublicKey], what: str) -> tuple[PublicKey, bytes]:
    """The key that signed a DSSE envelope (exactly one signature, over the PAE of an in-toto payload), and the
    payload."""
    try:
        payload_type = envelope.string("payloadType", required=True) or ""
        payload = _b64(envelope.string("payload", required=True) or "", "dsseEnvelope.payload")
        signatures = envelope.items("signatures", lambda v, p: _exact(v, _DSSE_SIGNATURE_KEYS, p), required=True)
        if len(signatures) != 1:
            raise _Refused(f"the DSSE envelope holds {len(signatures)} signatures; cosign writes exactly one")
        sig = signatures[0].string("sig", required=True) or ""
    except DocumentError as exc:
        raise _Refused(f"a malformed or ambiguous {what} ({exc})") from None
    if payload_type != INTOTO_PAYLOAD_TYPE:
        raise _Refused(f"the DSSE payload type is {payload_type!r}, not {INTOTO_PAYLOAD_TYPE!r}")
    signature = _b64(sig, "the DSSE signature")
    key = _verify_with(keys, signature, pae(payload_type, payload))
    if key is None:
        raise _Refused("the signature does not verify with any of the keys (signed by another key, or altered)")
    return key, payload


def _verify_envelope(data: bytes, digest: str, keys: Sequence[PublicKey],
                     types: Sequence[str]) -> tuple[PublicKey, str, Any, bytes]:
    """Verify a legacy attestation layer: a bare DSSE envelope (``application/vnd.dsse.envelope.v1+json``)."""
    try:
        envelope = _exact(decode(data), _ENVELOPE_KEYS, "envelope")
    except DocumentError as exc:
        raise _Refused(f"a malformed or ambiguous DSSE envelope ({exc})") from None
    key, payload = _verify_dsse(envelope, keys, "DSSE envelope")
    predicate_type, predicate = _check_statement(payload, digest, key, types)
    return key, predicate_type, predicate, payload


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a DSSE signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _check_statement(payload: bytes, digest: str, key: PublicKey,
                     types: Sequence[str] = (SIGN_PREDICATE,)) -> tuple[str, Any]:
    """The (predicate type, predicate) of a verified in-toto Statement about exactly the image *digest*."""
    try:
        statement = _exact(decode(payload), _STATEMENT_KEYS, "statement")
        kind = statement.string("_type", required=True)
        predicate = statement.string("predicateType", required=True) or ""
        subjects = statement.items("subject", lambda v, p: _exact(v, _SUBJECT_KEYS, p), required=True)
        digests = [s.mapping("digest") for s in subjects]
    except DocumentError as exc:
        raise _Refused(f"a valid signature by {key.source} over a malformed statement ({exc})") from None
    if kind not in STATEMENT_TYPES:
        raise _Refused(f"the statement's _type is {kind!r}, not an in-toto Statement")
    if predicate not in types:
        if tuple(types) == (SIGN_PREDICATE,):
            raise _Refused(f"a valid signature by {key.source} of a {predicate!r} attestation, not an image signature "
                           f"({SIGN_PREDICATE})")
        raise _Refused(f"a valid signature by {key.source} of a {predicate[:200]!r} statement, not one of the "
                       f"predicate types asked for ({', '.join(types)})")
    if len(digests) != 1:
        raise _Refused(f"a valid signature by {key.source} of a statement with {len(digests)} subjects; cosign signs "
                       "exactly one image per statement")
    algorithm, _, hexdigest = digest.partition(":")
    if digests[0] != {algorithm: hexdigest}:
        shown = ", ".join(":".join(next(iter(d.items()), ("?", "?"))) for d in digests[:3]) or "none"
        what = "a bundle" if tuple(types) == (SIGN_PREDICATE,) else "an attestation"
        raise _Refused(f"a valid signature by {key.source}, but its subject is {shown[:200]}, not {digest} "
                       f"({what} for another image)")
    return predicate, statement.raw("predicate")


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
        self._disk = client.disk_cache
        self._repo = repo
        self.evidence: list[dict[str, Any]] = []  # what verified, as received (for the cache of verified evidence)
        self.incomplete: str | None = None  # set when not every attestation could be looked at (fail closed)
        self._attestation_bytes = 0

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

    def attestation_blob(self, digest: str, size: int) -> bytes:
        """An attestation's blob (a DSSE envelope or a bundle: up to :data:`MAX_ATTESTATION_BYTES`), streamed and
        hashed as it arrives; all attestations of one verification together at most :data:`MAX_ATTESTATION_TOTAL`."""
        if size > MAX_ATTESTATION_BYTES:
            raise _Refused(f"its blob {digest} is {size} bytes; at most {MAX_ATTESTATION_BYTES} are read")
        if self._attestation_bytes + size > MAX_ATTESTATION_TOTAL:
            raise _Refused(f"not read: the attestations already read total {self._attestation_bytes} bytes, and at "
                           f"most {MAX_ATTESTATION_TOTAL} are read per image")
        algorithm = digest.partition(":")[0]
        if algorithm not in ("sha256", "sha384", "sha512"):
            raise _Refused(f"blob {digest[:80]!r}: unsupported digest")
        hasher = hashlib.new(algorithm)
        chunks: list[bytes] = []
        try:
            with self._http.stream(self._repo, f"blobs/{digest}", limit=size) as (_, body):
                for chunk in body:
                    hasher.update(chunk)
                    chunks.append(chunk)
        except ManifestUnknown:
            raise _Refused(f"its blob {digest} is missing from the registry") from None
        except RegistryError as exc:
            if "larger than" in str(exc):
                raise _Refused(f"its blob {digest} is larger than the {size} bytes the manifest says") from None
            raise
        data = b"".join(chunks)
        self._attestation_bytes += len(data)
        if len(data) != size:
            raise _Refused(f"its blob {digest} is {len(data)} bytes, not the {size} the manifest says")
        actual = f"{algorithm}:{hasher.hexdigest()}"
        if actual != digest:
            raise _Refused(f"blob {digest}: the registry sent bytes that hash to {actual}, not {digest}")
        return data

    def referrers(self, digest: str) -> bytes | None:
        """The OCI 1.1 referrers index of *digest*, or None when the registry has no referrers API (404).

        That a registry has none is remembered (in this client, and on the host's disk cache) for
        :data:`REFERRERS_MEMO` seconds: the next verification goes straight to the fallback tag, one request fewer.
        """
        if self._no_referrers_api():
            return None
        try:
            reply = self._http.request(self._repo, "GET", f"referrers/{digest}", accept=OCI_INDEX,
                                       limit=MAX_DOCUMENT_BYTES)
        except ManifestUnknown:
            self._remember_no_referrers_api()
            return None
        except RegistryError as exc:
            if exc.status in (400, 405, 501):  # no such route on this registry: the fallback tag
                self._remember_no_referrers_api()
                return None
            raise
        return reply.content

    def _no_referrers_api(self) -> bool:
        host = self._repo.api_host
        now = time.time()
        seen = _NO_REFERRERS.setdefault(self._http, {}).get(host)
        if seen is not None and now - seen < REFERRERS_MEMO:
            return True
        stored = self._disk.get("referrers-api", host, "", "", limit=64) if self._disk is not None else None
        if stored is None:
            return False
        at = stored[1].get("absent_since")
        if isinstance(at, (int, float)) and 0 <= now - at < REFERRERS_MEMO:
            _NO_REFERRERS[self._http][host] = float(at)
            return True
        return False

    def _remember_no_referrers_api(self) -> None:
        now = time.time()
        _NO_REFERRERS.setdefault(self._http, {})[self._repo.api_host] = now
        if self._disk is not None:
            self._disk.put("referrers-api", self._repo.api_host, "", "", b"absent", {"absent_since": now})

    @staticmethod
    def _check_digest(reply: Reply, expected: str, what: str) -> None:
        algorithm = expected.partition(":")[0]
        if algorithm not in ("sha256", "sha384", "sha512"):
            raise _Refused(f"{what}: unsupported digest {expected[:80]!r}")
        actual = f"{algorithm}:{hashlib.new(algorithm, reply.content).hexdigest()}"
        if actual != expected:
            raise _Refused(f"{what}: the registry sent bytes that hash to {actual}, not {expected}")
