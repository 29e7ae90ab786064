"""The in-toto predicate types imagegate writes and reads in attestations (one table, shared by writer and reader).

``vuln`` is cosign's own vulnerability predicate (``cosign attest --type vuln``; Trivy writes it with
``--format cosign-vuln``): ``{"invocation": …, "scanner": {"uri", "version", "db", "result"}, "metadata":
{"scanStartedOn", "scanFinishedOn"}}`` with the scanner's report in ``scanner.result``.

Trivy JSON, Grype JSON and SARIF have no predicate type of their own in cosign (``cosign attest --type`` takes any
URI for them); imagegate names them under its own namespace below, so ``cosign attest --type <that URI>`` and
``imagegate attest --type trivy`` write the same thing, and ``cosign verify-attestation --type <URI>`` reads it.
"""

from __future__ import annotations

__all__ = ["PREDICATE_TYPES", "SIGN", "VULN", "TRIVY", "GRYPE", "SARIF", "VULNERABILITY_TYPES", "predicate_type"]

SIGN = "https://sigstore.dev/cosign/sign/v1"  # a cosign v3 image signature (bundle format)
VULN = "https://cosign.sigstore.dev/attestation/vuln/v1"
TRIVY = "https://imagegate.dev/attestation/trivy-report/v2"  # Trivy JSON, SchemaVersion 2
GRYPE = "https://imagegate.dev/attestation/grype-report/v1"  # Grype JSON (matches[])
SARIF = "https://imagegate.dev/attestation/sarif/v2.1.0"  # SARIF 2.1.0 (Trivy --format sarif, Grype -o sarif)

PREDICATE_TYPES = {"vuln": VULN, "trivy": TRIVY, "grype": GRYPE, "sarif": SARIF}
VULNERABILITY_TYPES = frozenset(PREDICATE_TYPES.values())


def predicate_type(name: str) -> str:
    """``vuln`` / ``trivy`` / ``grype`` / ``sarif`` -> its URI; an ``https://`` URI is returned as given."""
    if name in PREDICATE_TYPES:
        return PREDICATE_TYPES[name]
    if name.startswith("https://") and len(name) <= 512 and name.isprintable() and " " not in name:
        return name
    raise ValueError(f"unknown predicate type {name!r}; use one of {', '.join(PREDICATE_TYPES)} or an https:// URI")
