"""The ``imagegate`` command line: ``resolve`` and ``check``.

Exit status: 0 passed (warnings allowed), 1 a check failed under enforce,
2 usage, reference, policy or registry errors. With ``--json`` the answer (or
the error) is one JSON object on stdout; messages for people go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from imagegate import __version__
from imagegate._api import check, resolve
from imagegate._errors import ImagegateError, RegistryError
from imagegate._policy import Backend, Policy, merge_insecure

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagegate",
        description="Pin container images to digests and check them before anything is launched.",
    )
    parser.add_argument("--version", action="version", version=f"imagegate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("reference", metavar="REF", help="image reference, e.g. registry.example.com/team/etl:1.4.2")
        sub.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="platform image to read (default linux/amd64)")
        sub.add_argument("--json", action="store_true", help="print one JSON object instead of text")
        sub.add_argument(
            "--insecure-registry",
            action="append",
            default=[],
            metavar="HOST[:PORT]",
            help="allow plain http for this registry (loopback registries need no flag); repeatable",
        )
        sub.add_argument("--ca-file", metavar="PEM", help="extra CA certificates to trust for registry TLS")

    res = commands.add_parser("resolve", help="print REF@sha256:… (the index digest for multi-platform images)")
    common(res)
    chk = commands.add_parser("check", help="resolve REF and run the checks; exit 1 when one fails")
    common(chk)
    chk.add_argument("--backend", choices=[b.value for b in Backend], default="docker", help="where it will run (default docker)")
    chk.add_argument("--user", metavar="USER", help="runtime user override to check instead of the image's USER")
    chk.add_argument(
        "--policy",
        metavar="FILE",
        help="policy file (imagegate.toml or pyproject.toml); default: the nearest one from the current directory",
    )
    return parser


def _client(insecure: Sequence[str], ca_file: str | None) -> Any:
    from imagegate._registry import RegistryClient

    return RegistryClient(insecure_registries=insecure, ca_file=ca_file)


def _error_json(exc: ImagegateError) -> dict[str, Any]:
    data: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, RegistryError):
        data.update(registry=exc.registry, url=exc.url, status=exc.status, codes=list(exc.codes), temporary=exc.temporary)
    return {"error": data}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "resolve":
            return _resolve(args)
        return _check(args)
    except ImagegateError as exc:
        if args.json:
            print(json.dumps(_error_json(exc), indent=2))
        print(f"imagegate: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _resolve(args: argparse.Namespace) -> int:
    with _client(args.insecure_registry, args.ca_file) as client:
        pinned = resolve(args.reference, platform=args.platform, client=client)
    if args.json:
        out = {"reference": args.reference, "pinned": pinned.familiar, "digest": pinned.digest}
        if args.platform:
            out["platform"] = args.platform
        print(json.dumps(out, indent=2))
    else:
        print(pinned.familiar)
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    policy = Policy.load(args.policy) if args.policy else Policy.discover()
    insecure = merge_insecure(policy, args.insecure_registry)
    with _client(insecure, args.ca_file) as client:
        report = check(
            args.reference, backend=args.backend, user=args.user, policy=policy, platform=args.platform, client=client
        )
    print(report.to_json() if args.json else report.render_text())
    return EXIT_OK if report.passed else EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
