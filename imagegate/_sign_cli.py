"""``imagegate sign``, ``imagegate attest``, ``imagegate generate-key-pair``, and ``build --sign``'s step after the push.

    imagegate generate-key-pair [--output-key-prefix cosign]
    imagegate sign REF --key cosign.key [--format bundle|legacy] [--json]
    imagegate attest REF --key cosign.key --type vuln|trivy|grype|sarif|URI --predicate FILE [--format …] [--json]

A tag is resolved to its digest first, and the digest is what is signed (the output names ``REF@sha256:…``). The
private key's password comes from ``$COSIGN_PASSWORD`` (or the terminal), as cosign reads it. Progress goes to
stderr, the result to stdout (``--json``: one object). Exit 0 when written (or already there), 2 on an error.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, Callable

from imagegate._cosign_cli import client_options, registry_options

if TYPE_CHECKING:
    from imagegate._cosign_keys import PrivateKey
    from imagegate._cosign_write import Written
    from imagegate._predicate_files import Predicate
    from imagegate._reference import Reference
    from imagegate._registry import RegistryClient

EXIT_OK = 0
FORMATS = ("bundle", "legacy")


def add_parsers(commands: Any) -> None:
    sign = commands.add_parser(
        "sign", help="sign REF's digest with a cosign private key (cosign's formats; offline, no transparency log)",
        description="Sign the image REF names (a tag is resolved to its digest first) with a cosign private key, "
                    "writing what `cosign sign --key` writes: a Sigstore bundle referrer (default, as cosign v3) or "
                    "the legacy sha256-<hex>.sig tag. Nothing is written when the key already signed it.",
    )
    _common(sign)
    attest = commands.add_parser(
        "attest", help="attest a predicate (a vulnerability report) about REF's digest, signed with a cosign key",
        description="Sign an in-toto statement about the image REF names, with FILE as its predicate, as `cosign "
                    "attest --key` writes it. A vulnerability report must be one imagegate can judge, and must be a "
                    "report about this image.",
    )
    _common(attest)
    attest.add_argument("--type", required=True, metavar="TYPE",
                        help="vuln (cosign's vuln predicate, e.g. trivy --format cosign-vuln), trivy (Trivy JSON), "
                             "grype (Grype JSON), sarif, or a predicate type URI")
    attest.add_argument("--predicate", required=True, metavar="FILE", help="the predicate (the report) as JSON")
    generate = commands.add_parser(
        "generate-key-pair", help="write a cosign key pair (PREFIX.key, encrypted; PREFIX.pub); never overwrites",
        description="Write an ECDSA P-256 key pair as `cosign generate-key-pair` does: PREFIX.key (encrypted with "
                    "$COSIGN_PASSWORD, or a password asked twice on the terminal) and PREFIX.pub.",
    )
    generate.add_argument("--output-key-prefix", default="cosign", metavar="PREFIX",
                          help="write PREFIX.key and PREFIX.pub (default cosign)")
    generate.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def add_build_options(build: argparse.ArgumentParser) -> None:
    """``imagegate build``'s signing options."""
    build.add_argument("--sign", metavar="KEY", help="after the push, sign the built digest with this cosign private "
                                                     "key (also when the image was up to date; never twice)")
    build.add_argument("--sign-format", choices=FORMATS, default="bundle", help="signature format (default bundle)")
    build.add_argument("--attest-vulns", metavar="REPORT", help="also attest this vulnerability report (needs --sign)")
    build.add_argument("--attest-type", default="vuln", metavar="TYPE",
                       help="the report's type: vuln (default), trivy, grype, sarif or a URI")


def _common(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("reference", metavar="REF", help="image reference; a tag is resolved to its digest first")
    sub.add_argument("--key", required=True, metavar="KEY",
                     help="the private key (cosign.key; password from $COSIGN_PASSWORD)")
    sub.add_argument("--format", choices=FORMATS, default="bundle",
                     help="bundle (a Sigstore bundle referrer, cosign v3's default) or legacy (the .sig/.att tag)")
    sub.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    registry_options(sub)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _client(args: argparse.Namespace) -> RegistryClient:
    from imagegate._registry import RegistryClient

    options = client_options(args)
    return RegistryClient(**options)


def _pin(client: RegistryClient, text: str) -> tuple[Reference, str]:
    from imagegate._reference import parse_reference

    ref = parse_reference(text)
    digest = ref.digest or client.resolve(ref).digest
    return ref, digest


def _print(written: Written, args: argparse.Namespace, pinned: str) -> None:
    if args.json:
        print(json.dumps(dict(written.to_dict(), pinned=pinned), indent=2))
    else:
        print(pinned)
        _progress(written.describe())


def run_sign(args: argparse.Namespace) -> int:
    from imagegate._cosign_keys import load_private_key
    from imagegate._cosign_write import sign_image

    key = load_private_key(args.key)
    with _client(args) as client:
        ref, digest = _pin(client, args.reference)
        pinned = ref.with_digest(digest).familiar
        _progress(f"signing {pinned} with {key.source} ({key.algorithm})")
        written = sign_image(client, ref, digest, key, format=args.format, progress=_progress)
    _print(written, args, pinned)
    return EXIT_OK


def run_attest(args: argparse.Namespace) -> int:
    from imagegate._cosign_keys import load_private_key
    from imagegate._predicate_files import load_predicate

    predicate = load_predicate(args.type, args.predicate)
    key = load_private_key(args.key)
    with _client(args) as client:
        ref, digest = _pin(client, args.reference)
        pinned = ref.with_digest(digest).familiar
        _progress(f"attesting {predicate.type} about {pinned} with {key.source} ({key.algorithm})")
        written = attest(client, ref, digest, key, predicate, format=args.format, progress=_progress)
    _print(written, args, pinned)
    return EXIT_OK


def attest(client: RegistryClient, ref: Reference, digest: str, key: PrivateKey, predicate: Predicate, *,
           format: str, progress: Callable[[str], None]) -> Written:
    """Check that the report is about this image, then attest it."""
    from imagegate._cosign_write import attest_image
    from imagegate._predicate_files import check_subject

    if predicate.manifests or predicate.configs:
        facts = client.inspect(ref.with_digest(digest))
        check_subject(predicate, f"{ref.familiar}@{digest}", {digest, facts.digest, facts.manifest_digest},
                      {facts.config_digest})
    return attest_image(client, ref, digest, key, predicate.type, predicate.value, format=format, progress=progress)


def run_generate(args: argparse.Namespace) -> int:
    from imagegate._cosign_keys import read_password, write_key_pair

    password = read_password(f"{args.output_key_prefix}.key", confirm=True)
    private, public = write_key_pair(args.output_key_prefix, password)
    if args.json:
        print(json.dumps({"private_key": str(private), "public_key": str(public)}, indent=2))
    else:
        print(f"Private key written to {private}\nPublic key written to {public}")
    return EXIT_OK


# -- build --sign ------------------------------------------------------------------------------------------------------


class BuildSigning:
    """``build --sign KEY [--attest-vulns REPORT]``: the key and report read before the build (a wrong password or
    a bad report fails before anything is built), then :meth:`apply` after the push."""

    def __init__(self, args: argparse.Namespace) -> None:
        from imagegate._errors import PolicyError

        self.format = args.sign_format
        self.key = None
        self.predicate = None
        if args.attest_vulns and not args.sign:
            raise PolicyError("--attest-vulns REPORT needs --sign KEY (the attestation is signed with it)",
                              key="--attest-vulns")
        if args.sign:
            from imagegate._cosign_keys import load_private_key

            self.key = load_private_key(args.sign)
        if args.attest_vulns:
            from imagegate._predicate_files import load_predicate

            self.predicate = load_predicate(args.attest_type, args.attest_vulns)

    @property
    def wanted(self) -> bool:
        return self.key is not None

    def apply(self, client: RegistryClient, pinned: Reference, progress: Callable[[str], None]) -> list[Written]:
        from imagegate._cosign_write import sign_image

        assert self.key is not None and pinned.digest is not None
        done = [sign_image(client, pinned, pinned.digest, self.key, format=self.format, progress=progress)]
        progress(done[-1].describe())
        if self.predicate is not None:
            done.append(attest(client, pinned, pinned.digest, self.key, self.predicate, format=self.format,
                               progress=progress))
            progress(done[-1].describe())
        return done
