"""The ``imagegate`` command line: ``resolve``, ``check``, ``build`` and ``lint``.

The contract, in every outcome:

- exit status **0** passed (warnings allowed), **1** a check (or lint under enforce) refused it,
  **2** anything else: usage, reference, policy, registry, an interrupt, or an unexpected error;
  never any other status;
- with ``--json``, exactly one JSON object on stdout — the answer, or ``{"error": {"type",
  "message", …}}`` — including for usage errors and unexpected ones;
- messages for people on stderr; no traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from imagegate import __version__
from imagegate._api import check, resolve
from imagegate._errors import ImagegateError, UnexpectedError
from imagegate._policy import Backend, Policy, merge_insecure

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


class UsageError(ImagegateError, ValueError):
    """A command line that cannot be used (unknown option, missing argument, bad value)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of printing and exiting, so the contract holds."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="imagegate",
        description="Pin container images to digests and check them before anything is launched.",
    )
    parser.add_argument("--version", action="version", version=f"imagegate {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

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
        _timeout_option(sub)

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
    _build_parsers(commands)
    return parser


def _build_parsers(commands: Any) -> None:
    bld = commands.add_parser("build", help="build CONTEXT into REPO:TAG (content tag) unless it exists; print REPO:TAG@sha256:…")
    bld.add_argument("context", metavar="CONTEXT", help="the build context directory")
    bld.add_argument("-f", "--file", metavar="DOCKERFILE", help="Dockerfile (relative to the current directory, like docker build; default CONTEXT/Dockerfile)")
    bld.add_argument("--repository", required=True, metavar="REPO", help="where to push, e.g. registry.example.com/team/etl (no tag)")
    bld.add_argument("--target", metavar="STAGE", help="build this stage of a multi-stage Dockerfile")
    bld.add_argument("--build-arg", action="append", default=[], metavar="K=V", help="a build argument; repeatable (counts in the tag)")
    bld.add_argument("--platform", metavar="OS/ARCH", help="target platform (counts in the tag)")
    bld.add_argument("--tag-policy", choices=["content", "git", "both"], default="content", help="how the tag is made (default content)")
    bld.add_argument("--lock", metavar="FILE", help="write the pinned reference to this lock file (with --name)")
    bld.add_argument("--name", metavar="NAME", help="the image's name in the lock file")
    bld.add_argument("--policy", metavar="FILE", help="policy file; its checks.lint mode decides whether lint errors block the build")
    bld.add_argument("--max-context-size", metavar="SIZE", help="refuse a context larger than this (e.g. 500MB; default $IMAGEGATE_MAX_CONTEXT_SIZE)")
    bld.add_argument("--no-cache", action="store_true", help="hash every file (ignore the stat cache)")
    bld.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    bld.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]", help="allow plain http for this registry; repeatable")
    bld.add_argument("--ca-file", metavar="PEM", help="extra CA certificates to trust for registry TLS")
    _timeout_option(bld)
    lnt = commands.add_parser("lint", help="check a Dockerfile against the checklist (IG001-IG009) and hadolint; exit 1 on errors")
    lnt.add_argument("path", metavar="PATH", nargs="?", default=".", help="a build context directory or a Dockerfile (default .)")
    lnt.add_argument("--build-arg", action="append", default=[], metavar="K=V", help="a build argument used in FROM; repeatable")
    lnt.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _timeout_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--timeout", type=_seconds, default=None, metavar="SECONDS",
        help="each registry operation ends within this many seconds, whatever the registry does (default 60)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 86400 seconds")
    return value


def _build_args(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--build-arg {pair!r} is not KEY=VALUE")
        out[key] = value
    return out


def _printer(stream: Any = None) -> Callable[[str], None]:
    """Progress for people on stderr: a live line on a terminal, plain lines otherwise."""
    out = stream or sys.stderr
    live = out.isatty()
    state = {"transient": False}

    def emit(line: str) -> None:
        if line.startswith("\r"):
            if live:
                out.write("\r\x1b[K" + line[1:][: shutil.get_terminal_size().columns - 1])
                out.flush()
                state["transient"] = True
            return
        if state["transient"]:
            out.write("\r\x1b[K")
            state["transient"] = False
        out.write(line + "\n")
        out.flush()

    return emit


def _build(args: argparse.Namespace) -> int:
    from imagegate.build._builder import build_image
    from imagegate.build._context import parse_size

    if (args.lock is None) != (args.name is None):
        raise UsageError("--lock FILE and --name NAME go together")
    policy = Policy.load(args.policy) if args.policy else Policy.discover(args.context)
    insecure = merge_insecure(policy, args.insecure_registry)
    dockerfile = str(Path(args.file).resolve()) if args.file else None
    try:
        limit = parse_size(args.max_context_size) if args.max_context_size else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with _client(insecure, args.ca_file, args.timeout) as client:
        result = build_image(
            args.context,
            repository=args.repository,
            dockerfile=dockerfile,
            target=args.target,
            build_args=_build_args(args.build_arg),
            platform=args.platform,
            tag_policy=args.tag_policy,
            policy=policy,
            progress=_printer(),
            client=client,
            lock=args.lock,
            name=args.name,
            max_context_size=limit,
            use_cache=not args.no_cache,
        )
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.pinned.familiar)
    return EXIT_OK


def _lint(args: argparse.Namespace) -> int:
    from imagegate.build._lint import lint_dockerfile

    path = Path(args.path)
    if path.is_file():
        report = lint_dockerfile(path.parent, dockerfile=path.name, build_args=_build_args(args.build_arg))
    else:
        report = lint_dockerfile(path, build_args=_build_args(args.build_arg))
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render_text())
    return EXIT_OK if report.passed else EXIT_FAILED


def _client(insecure: Sequence[str], ca_file: str | None, timeout: float | None) -> Any:
    from imagegate._registry import RegistryClient

    if timeout is None:
        return RegistryClient(insecure_registries=insecure, ca_file=ca_file)
    return RegistryClient(insecure_registries=insecure, ca_file=ca_file, deadline=timeout)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    wants_json = "--json" in argv
    debug = "--debug" in argv
    try:
        args = _parser().parse_args(argv)
        return _COMMANDS[args.command](args)
    except ImagegateError as exc:
        return _fail(exc, wants_json, debug)
    except KeyboardInterrupt:
        return _fail(Interrupted("interrupted"), wants_json, debug)
    except Exception as exc:  # the contract holds for bugs too: exit 2, one JSON object, no traceback
        return _fail(UnexpectedError(exc), wants_json, debug, cause=exc)


class Interrupted(ImagegateError):
    """The command was interrupted (Ctrl-C, SIGINT); nothing was launched."""


def _fail(exc: ImagegateError, wants_json: bool, debug: bool, cause: BaseException | None = None) -> int:
    if wants_json:
        print(json.dumps({"error": exc.to_dict()}, indent=2))
    kind = "error: " if exc.exit_status == EXIT_ERROR else ""
    print(f"imagegate: {kind}{exc}", file=sys.stderr)
    if debug:
        traceback.print_exception(cause or exc, file=sys.stderr)
    return exc.exit_status if exc.exit_status in (EXIT_OK, EXIT_FAILED, EXIT_ERROR) else EXIT_ERROR


def _resolve(args: argparse.Namespace) -> int:
    with _client(args.insecure_registry, args.ca_file, args.timeout) as client:
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
    with _client(insecure, args.ca_file, args.timeout) as client:
        report = check(
            args.reference, backend=args.backend, user=args.user, policy=policy, platform=args.platform, client=client
        )
    print(report.to_json() if args.json else report.render_text())
    return EXIT_OK if report.passed else EXIT_FAILED


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"resolve": _resolve, "check": _check, "build": _build, "lint": _lint}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
