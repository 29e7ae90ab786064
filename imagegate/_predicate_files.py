"""What ``imagegate attest --type T --predicate FILE`` signs: the predicate read from FILE, checked first.

As ``cosign attest`` reads it (cosign v3.1.3, ``pkg/cosign/attestation``):

* ``--type vuln``: FILE is cosign's vulnerability predicate (what ``trivy image --format cosign-vuln`` writes):
  ``{"invocation": …, "scanner": {"uri", "version", "db": {"uri", "version"}, "result": REPORT}, "metadata":
  {"scanStartedOn", "scanFinishedOn"}}``. cosign decodes it into its Go struct and writes every field back (absent
  ones empty, unknown ones dropped); so does this module.
* ``--type trivy | grype | sarif`` (or their URIs, or any ``https://`` URI): FILE is the report itself, the predicate
  as it is (a JSON object).

Stricter than cosign, because these attestations decide launches: a vulnerability report (vuln, Trivy, Grype, SARIF)
must be one :func:`imagegate._vulns.read_predicate` — the reader the ``vulnerabilities`` check uses — can judge, and a
report that names an image (Trivy ``Metadata.RepoDigests`` / ``ImageID`` / ``ArtifactName``, Grype
``source.target.manifestDigest`` / ``repoDigests`` / ``imageID`` / ``userInput``, SARIF ``runs[].properties``) must
name the one being attested: a report about another image is refused, whoever signs it. The image's own digests come
from the registry (the digest, the linux/amd64 manifest of an index, its config: ``ImageID`` is a config digest).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable

from imagegate._errors import ImagegateError
from imagegate._json import DocumentError, decode, struct
from imagegate._predicates import VULN, VULNERABILITY_TYPES, predicate_type

__all__ = ["MAX_PREDICATE_BYTES", "Predicate", "PredicateError", "check_subject", "load_predicate"]

MAX_PREDICATE_BYTES = 16 << 20  # the envelope (base64: 4/3) stays under the verifier's 32 MiB per attestation


class PredicateError(ImagegateError, ValueError):
    """A predicate file that cannot be attested: unreadable, malformed, or about another image."""

    _fields = ("source", "reason")

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"predicate {source}: {reason}")


@dataclass(frozen=True)
class Predicate:
    """A predicate ready to attest: its type URI, the JSON value, and the image digests the report names."""

    type: str
    value: Any
    source: str
    manifests: tuple[str, ...] = ()  # manifest digests the report names (repo digests, manifestDigest, REF@digest)
    configs: tuple[str, ...] = ()  # config digests it names (ImageID)


def load_predicate(kind: str, path: str | os.PathLike[str]) -> Predicate:
    """Read FILE for ``--type`` *kind* (``vuln``, ``trivy``, ``grype``, ``sarif`` or an ``https://`` URI)."""
    source = str(path)
    try:
        uri = predicate_type(kind)
    except ValueError as exc:
        raise PredicateError(source, str(exc)) from None
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PREDICATE_BYTES + 1)
    except OSError as exc:
        raise PredicateError(source, f"cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_PREDICATE_BYTES:
        raise PredicateError(source, f"is larger than {MAX_PREDICATE_BYTES >> 20} MiB")
    try:
        value = decode(data)
    except DocumentError as exc:
        raise PredicateError(source, f"is not valid, unambiguous JSON ({exc})") from None
    if not isinstance(value, dict):
        raise PredicateError(source, "is not a JSON object (a predicate is one)")
    if uri == VULN:
        value = _cosign_vuln(value, source)
    if uri in VULNERABILITY_TYPES:
        from imagegate._vulns import ReportError, claimed_digests, read_predicate

        try:
            read_predicate(uri, value)
        except ReportError as exc:
            raise PredicateError(source, f"is not a report imagegate can judge ({exc}); pass the scanner's JSON "
                                         "output unchanged (trivy --format json | cosign-vuln | sarif, grype -o json)")
        manifests, configs = claimed_digests(uri, value)
        return Predicate(uri, value, source, manifests, configs)
    return Predicate(uri, value, source)


def _cosign_vuln(value: dict[str, Any], source: str) -> dict[str, Any]:
    """cosign's ``CosignVulnPredicate`` round trip: every field, in its Go names; unknown fields dropped."""
    try:
        top = struct(value, "predicate")
        invocation = top.struct("invocation")
        scanner = top.struct("scanner", required=True)
        assert scanner is not None
        db = scanner.struct("db")
        metadata = top.struct("metadata")

        def text(parent: Any, name: str) -> str:
            return (parent.string(name) or "") if parent is not None else ""

        return {
            "invocation": {"parameters": invocation.raw("parameters") if invocation else None,
                           "uri": text(invocation, "uri"), "event_id": text(invocation, "event_id"),
                           "builder.id": text(invocation, "builder.id")},
            "scanner": {"uri": text(scanner, "uri"), "version": text(scanner, "version"),
                        "db": {"uri": text(db, "uri"), "version": text(db, "version")},
                        "result": scanner.raw("result")},
            "metadata": {"scanStartedOn": text(metadata, "scanStartedOn") or "0001-01-01T00:00:00Z",
                         "scanFinishedOn": text(metadata, "scanFinishedOn") or "0001-01-01T00:00:00Z"},
        }
    except DocumentError as exc:
        raise PredicateError(source, f"is not cosign's vuln predicate ({exc}); `trivy image --format cosign-vuln` "
                                     "writes one, or pass the report itself with --type trivy / grype / sarif") from None


def check_subject(predicate: Predicate, image: str, digests: Iterable[str], configs: Iterable[str]) -> None:
    """Refuse a report that names another image than *image*: every manifest digest it names must be one of
    *digests* (the attested digest, and for an index its platform manifest), every config digest one of *configs*."""
    own, own_configs = set(digests), set(configs)
    foreign = [d for d in predicate.manifests if d not in own]
    foreign_configs = [d for d in predicate.configs if own_configs and d not in own_configs]
    if foreign or foreign_configs:
        named = ", ".join((foreign + foreign_configs)[:3])
        raise PredicateError(predicate.source, f"is a report about another image ({named}), not {image}; scan the "
                                               "image you attest, by digest (trivy image REPO@sha256:…)")
