"""``imagegate verify REF --key cosign.pub [--key …] [--required N] [--json]``: cosign signatures, offline.

Exit 0: at least N of the keys signed the image REF names (its digest now, when REF is a tag); 1: not verified (the
reason names every signature looked at and why it did not count); 2: an error (a bad key file, an unreachable
registry). The verification itself is :func:`imagegate._cosign.verify_signatures`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

EXIT_OK, EXIT_FAILED = 0, 1


def add_parser(commands: Any) -> None:
    sub = commands.add_parser(
        "verify", help="verify REF's cosign signatures with public keys, offline; exit 1 when not verified",
        description="Find the cosign signatures of the image REF names (the legacy sha256-<hex>.sig tag and Sigstore "
                    "bundles: OCI referrers or the sha256-<hex> fallback tag) and verify them with the given public "
                    "keys, without a transparency log. The signed digest must be the image's digest.",
    )
    sub.add_argument("reference", metavar="REF", help="image reference; a tag is resolved to its digest first")
    sub.add_argument("--key", action="append", required=True, metavar="PEM",
                     help="a public key file (cosign.pub: ECDSA P-256/P-384/P-521, RSA, Ed25519); repeatable")
    sub.add_argument("--required", type=int, default=1, metavar="N",
                     help="how many of the keys must have signed it (default 1)")
    sub.add_argument("--format", choices=["any", "legacy", "bundle"], default="any",
                     help="which signature format to look for (default any)")
    sub.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    sub.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                     help="allow plain http for this registry (loopback registries need no flag); repeatable")
    sub.add_argument("--ca-file", metavar="PEM", help="extra CA certificates to trust for registry TLS")
    sub.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="the whole verification ends within this many seconds (default 60)")


def run(args: argparse.Namespace) -> int:
    from imagegate._cosign import load_keys, verify_signatures
    from imagegate._errors import PolicyError
    from imagegate._reference import parse_reference
    from imagegate._registry import RegistryClient

    keys = load_keys(args.key)
    if not 1 <= args.required <= len(keys):
        raise PolicyError(f"--required {args.required} must be between 1 and the number of keys given ({len(keys)})",
                          key="--required")
    ref = parse_reference(args.reference)
    formats = ("legacy", "bundle") if args.format == "any" else (args.format,)
    options: dict[str, Any] = {"insecure_registries": args.insecure_registry, "ca_file": args.ca_file}
    if args.timeout is not None:
        options["deadline"] = args.timeout
    with RegistryClient(**options) as client:
        digest = ref.digest or client.resolve(ref).digest
        result = verify_signatures(client, ref, digest, keys, required=args.required, formats=formats)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        pinned = ref.with_digest(digest).familiar
        summary = result.reason() if result.verified or not result.signatures else (
            f"{len(result.signed_by)} of the {result.required} required key(s) signed it")
        print(f"{'verified' if result.verified else 'NOT verified'}: {pinned}: {summary}")
        for check in result.signatures:
            print(f"  {'ok  ' if check.verified else 'no  '} {check.format} {check.where}: "
                  f"{'signed by ' + str(check.key) if check.verified else check.problem}")
        for note in result.notes:
            print(f"  note: {note}")
    return EXIT_OK if result.verified else EXIT_FAILED
