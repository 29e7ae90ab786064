"""``imagegate verify REF --key cosign.pub [--key …] [--required N] [--json]``: cosign signatures, offline; and
``imagegate verify-attestation REF --key cosign.pub --type vuln|trivy|grype|sarif|URI [--policy FILE] [--json]``.

Exit 0: at least N of the keys signed the image REF names (its digest now, when REF is a tag) — for
``verify-attestation``: an attestation of the type verified (and, with ``--policy``, the newest verified scan passes
the thresholds of every ``[[vulnerabilities]]`` rule that covers REF); 1: not verified / not passing (the reason names
every candidate looked at and why it did not count); 2: an error (a bad key file, an unreachable registry, a bad
policy). The verification itself is :func:`imagegate._cosign.verify_signatures` / ``verify_attestations``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

EXIT_OK, EXIT_FAILED = 0, 1


def registry_options(sub: argparse.ArgumentParser, what: str = "operation") -> None:
    """``--insecure-registry``, ``--ca-file`` and ``--timeout``, as every command that talks to a registry has them."""
    sub.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                     help="allow plain http for this registry (loopback registries need no flag); repeatable")
    sub.add_argument("--ca-file", metavar="PEM", help="extra CA certificates to trust for registry TLS")
    sub.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help=f"the whole {what} ends within this many seconds (default 60)")


def client_options(args: argparse.Namespace) -> dict[str, Any]:
    """RegistryClient keyword arguments from :func:`registry_options`' flags."""
    options: dict[str, Any] = {"insecure_registries": args.insecure_registry, "ca_file": args.ca_file}
    if args.timeout is not None:
        options["deadline"] = args.timeout
    return options


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
    registry_options(sub, "verification")
    _add_attestation_parser(commands)


def _add_attestation_parser(commands: Any) -> None:
    sub = commands.add_parser(
        "verify-attestation",
        help="verify REF's cosign attestations (vulnerability scans) with public keys, offline; exit 1 when none",
        description="Find the cosign attestations of the image REF names (the legacy sha256-<hex>.att tag and "
                    "Sigstore bundles among its referrers) of the given predicate type and verify them with the "
                    "public keys, without a transparency log: the signature, the single subject (the image's "
                    "digest) and the predicate type. With --policy, the newest verified scan must also pass the "
                    "thresholds (max-severity, only-fixable, max-age, waivers) of the [[vulnerabilities]] rules "
                    "that cover REF; the keys given here stand for the rules' keys.",
    )
    sub.add_argument("reference", metavar="REF", help="image reference; a tag is resolved to its digest first")
    sub.add_argument("--key", action="append", required=True, metavar="PEM",
                     help="a public key file (cosign.pub); repeatable")
    sub.add_argument("--type", dest="predicate_type", required=True, metavar="TYPE",
                     help="vuln (cosign's vulnerability predicate), trivy, grype, sarif, or a predicate type URI")
    sub.add_argument("--required", type=int, default=1, metavar="N",
                     help="how many of the keys must have signed the same statement (default 1)")
    sub.add_argument("--policy", metavar="FILE", help="apply this policy's [[vulnerabilities]] thresholds too")
    sub.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    registry_options(sub, "verification")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "command", None) == "verify-attestation" or hasattr(args, "predicate_type"):
        return run_attestation(args)
    return _run_signatures(args)


def run_attestation(args: argparse.Namespace) -> int:
    import datetime as dt
    from dataclasses import replace

    from imagegate._cosign import load_keys, verify_attestations
    from imagegate._errors import PolicyError
    from imagegate._policy import Policy, image_names
    from imagegate._predicates import predicate_type
    from imagegate._reference import parse_reference
    from imagegate._registry import RegistryClient
    from imagegate._vulns import candidates, judge

    keys = load_keys(args.key)
    if not 1 <= args.required <= len(keys):
        raise PolicyError(f"--required {args.required} must be between 1 and the number of keys given ({len(keys)})",
                          key="--required")
    try:
        wanted = predicate_type(args.predicate_type)
    except ValueError as exc:
        raise PolicyError(str(exc), key="--type") from None
    policy = Policy.load(args.policy) if args.policy else None
    ref = parse_reference(args.reference)
    options = client_options(args)
    with RegistryClient(**options) as client:
        digest = ref.digest or client.resolve(ref).digest
        result = verify_attestations(client, ref, digest, keys, types=(wanted,), required=args.required)
        own: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
        if policy is not None:  # a report must be about this image: its manifest (and platform manifest) and config
            facts = client.inspect(ref.with_digest(digest))
            own = ((facts.digest, facts.manifest_digest), (facts.config_digest,))
    now = dt.datetime.now(dt.timezone.utc)
    verdicts = []
    if policy is not None:
        for rule in policy.vulnerability_rules_for(ref):
            rule = replace(rule, types=(wanted,))
            verdict = judge(rule, candidates(result, manifests=own[0], configs=own[1]), image_names=image_names(ref),
                            now=now, today=now.date())
            verdicts.append((rule, verdict))
    passed = result.verified and all(v.ok for _, v in verdicts)
    pinned = ref.with_digest(digest).familiar
    if args.json:
        out = result.to_dict()
        out["passed"] = passed
        if policy is not None:
            out["policy"] = [{"images": list(rule.images), "passed": v.ok, "message": v.message,
                              "details": dict(v.details)} for rule, v in verdicts]
        print(json.dumps(out, indent=2))
        return EXIT_OK if passed else EXIT_FAILED
    print(f"{'verified' if result.verified else 'NOT verified'}: {pinned}: {result.reason()}")
    for check in result.checks:
        print(f"  {'ok  ' if check.verified else 'no  '} {check.format} {check.where}: "
              f"{'signed by ' + str(check.key) if check.verified else check.problem}")
    for note in result.notes:
        print(f"  note: {note}")
    if policy is not None and not verdicts:
        print(f"policy: no [[vulnerabilities]] rule of {policy.source} covers {ref.name}")
    for rule, verdict in verdicts:
        print(f"{'passes' if verdict.ok else 'FAILS'} [[vulnerabilities]] {', '.join(rule.images)}: {verdict.message}")
        from imagegate._report import _detail_lines

        for line in _detail_lines(verdict.details):
            print(f"  {line}")
    return EXIT_OK if passed else EXIT_FAILED


def _run_signatures(args: argparse.Namespace) -> int:
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
    options = client_options(args)
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
