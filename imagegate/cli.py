"""The ``imagegate`` command line: ``resolve``, ``check``, ``build``, ``lint``, ``run``, ``cache`` and ``audit``.

The contract, in every outcome:

- exit status **0** passed (warnings allowed), **1** a check (or lint under enforce) refused it,
  **2** anything else: usage, reference, policy, registry, an interrupt, or an unexpected error;
  never any other status — except ``run`` once its container ran: then the container's exit
  status, and 128+N when signal N (Ctrl-C: 130, SIGTERM: 143) stopped the run, as a shell reports;
- with ``--json``, exactly one JSON object on stdout — the answer, or ``{"error": {"type",
  "message", …}}`` — including for usage errors and unexpected ones;
- messages for people on stderr; no traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, NoReturn, Sequence

from imagegate import __version__
from imagegate._errors import ImagegateError, UnexpectedError

# Start-up is part of every command's cost (`imagegate resolve` is ~50 ms whole): what only some
# commands need (the policy and checks, the registry client and httpx, docker, the build wing,
# signal handling) is imported where it is used.

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


class UsageError(ImagegateError, ValueError):
    """A command line that cannot be used (unknown option, missing argument, bad value)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of printing and exiting, so the contract holds."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse makes a formatter for every add_argument, each asking shutil for the terminal's width:
        # the same width, asked once, without importing shutil (~2 ms of `imagegate resolve`'s start-up).
        return self.formatter_class(prog=self.prog, width=_help_width())


_WIDTH: list[int] = []


def _help_width() -> int:
    """What argparse's HelpFormatter uses: shutil.get_terminal_size()'s columns (COLUMNS, then the
    terminal of stdout, else 80), less 2."""
    if not _WIDTH:
        try:
            columns = int(os.environ.get("COLUMNS", "0"))
        except ValueError:
            columns = 0
        if columns <= 0:
            try:
                columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
            except (AttributeError, ValueError, OSError):
                columns = 0
        _WIDTH.append((columns if columns > 0 else 80) - 2)
    return _WIDTH[0]


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
    chk.add_argument("--backend", type=_backend, default="docker", metavar="{docker,kubernetes}",
                     help="where it will run (default docker)")
    chk.add_argument("--user", metavar="USER", help="runtime user override to check instead of the image's USER")
    chk.add_argument(
        "--policy",
        metavar="FILE",
        help="policy file (imagegate.toml or pyproject.toml); default: the nearest one from the current directory",
    )
    _build_parsers(commands)
    _run_parser(commands)
    _audit_parser(commands)
    _gc_parser(commands)
    _verify_parser(commands)
    _sign_parsers(commands)
    cache = commands.add_parser("cache", help="show or empty this host's registry cache (content by digest)")
    cache.add_argument("action", choices=["info", "clear"], help="info: where it is and how big; clear: delete its entries")
    cache.add_argument("--json", action="store_true", help="print one JSON object instead of text")
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
    from imagegate._sign_cli import add_build_options  # argparse only

    add_build_options(bld)
    lnt = commands.add_parser("lint", help="check a Dockerfile against the checklist (IG001-IG009) and hadolint; exit 1 on errors")
    lnt.add_argument("path", metavar="PATH", nargs="?", default=".", help="a build context directory or a Dockerfile (default .)")
    lnt.add_argument("--build-arg", action="append", default=[], metavar="K=V", help="a build argument used in FROM; repeatable")
    lnt.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _timeout_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--timeout", type=_seconds, default=None, metavar="SECONDS",
        help="each registry operation ends within this many seconds, whatever the registry does (default 60)",
    )


def _backend(text: str) -> str:
    from imagegate._policy import Backend  # the check's own parser, loaded only for `check`

    try:
        return Backend(text).value
    except ValueError:
        choices = ", ".join(repr(b.value) for b in Backend)
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {choices})") from None


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
                import shutil

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
    from imagegate._policy import Policy, merge_insecure
    from imagegate.build._builder import build_image
    from imagegate.build._context import parse_size

    if (args.lock is None) != (args.name is None):
        raise UsageError("--lock FILE and --name NAME go together")
    policy = Policy.load(args.policy) if args.policy else Policy.discover(args.context)
    insecure = merge_insecure(policy, args.insecure_registry)
    dockerfile = os.path.realpath(args.file) if args.file else None
    try:
        limit = parse_size(args.max_context_size) if args.max_context_size else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    from imagegate._sign_cli import BuildSigning

    signing = BuildSigning(args)  # the key (and report) read before anything is built
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
        signed = signing.apply(client, result.pinned, _printer()) if signing.wanted else []
    out = dict(result.to_dict(), **({"signed": [w.to_dict() for w in signed]} if signed else {}))
    print(json.dumps(out, indent=2) if args.json else result.pinned.familiar)
    return EXIT_OK


def _lint(args: argparse.Namespace) -> int:
    from pathlib import Path

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
    head, command = split_command(argv)
    wants_json = "--json" in head
    debug = "--debug" in head
    try:
        args = _parse(head, command)
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
        import traceback

        traceback.print_exception(cause or exc, file=sys.stderr)
    return exc.exit_status if exc.exit_status in (EXIT_OK, EXIT_FAILED, EXIT_ERROR) else EXIT_ERROR


def _resolve(args: argparse.Namespace) -> int:
    from imagegate._api import resolve

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
    from imagegate._api import check
    from imagegate._policy import Policy, merge_insecure

    policy = Policy.load(args.policy) if args.policy else Policy.discover()
    insecure = merge_insecure(policy, args.insecure_registry)
    with _client(insecure, args.ca_file, args.timeout) as client:
        report = check(
            args.reference, backend=args.backend, user=args.user, policy=policy, platform=args.platform, client=client
        )
    print(report.to_json() if args.json else report.render_text())
    return EXIT_OK if report.passed else EXIT_FAILED


def _parse(head: Sequence[str], command: list[str] | None) -> argparse.Namespace:
    try:
        args = _parser().parse_args(head)
    except UsageError as exc:
        if _subcommand(head) == "run" and "unrecognized arguments" in str(exc):
            raise UsageError(f"{exc}; a command for the container goes after --: imagegate run REF -- CMD ARG…") from None
        raise
    args.container_command = command
    return args


# -- run ---------------------------------------------------------------------------------------------


def _run_parser(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="check and run an image locally on Docker, as a task would launch it; exit with its status",
        description="Resolve (or build) the image, check it under the policy, and run exactly that digest on the "
        "local Docker Engine with imagegate's hardening; the container's stdout and stderr stream here and its exit "
        "status is the command's. A refused image creates nothing (exit 1).",
    )
    source = run.add_argument_group("image source (exactly one)")
    source.add_argument("reference", metavar="REF", nargs="?", help="image reference (tag or digest)")
    source.add_argument("--lock-name", metavar="NAME", help="the image named NAME in the lock file")
    source.add_argument("--lock-file", metavar="FILE", help="lock file for --lock-name (default $IMAGEGATE_LOCK_FILE, "
                        "else the nearest imagegate.lock.json from the current directory)")
    source.add_argument("--job-dir", metavar="DIR", help="build this job directory (Dockerfile + code) first, as the doors do")
    build = run.add_argument_group("building --job-dir")
    build.add_argument("--repository", metavar="REPO", help="where --job-dir is pushed, e.g. registry.example.com/team/etl")
    build.add_argument("-f", "--file", metavar="DOCKERFILE", help="Dockerfile (relative to the current directory; default DIR/Dockerfile)")
    build.add_argument("--target", metavar="STAGE", help="build this stage of a multi-stage Dockerfile")
    build.add_argument("--build-arg", action="append", default=[], metavar="K=V", help="a build argument; repeatable")
    build.add_argument("--tag-policy", choices=["content", "git", "both"], default=None, help="how the tag is made (default content)")
    gate = run.add_argument_group("the gate")
    gate.add_argument("--policy", metavar="FILE", help="policy file; default: the nearest one from the current directory")
    gate.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]", help="allow plain http for this registry; repeatable")
    gate.add_argument("--ca-file", metavar="PEM", help="extra CA certificates to trust for registry TLS")
    _timeout_option(gate)
    box = run.add_argument_group("the container (docker run's options)")
    box.add_argument("-e", "--env", action="append", default=[], metavar="KEY[=VALUE]", help="set a variable (bare KEY: copied from here); repeatable")
    box.add_argument("--env-file", action="append", default=[], metavar="FILE", help="read KEY=VALUE lines (before -e); repeatable")
    box.add_argument("-v", "--volume", action="append", default=[], metavar="HOST:CONTAINER[:ro]", help="bind-mount a host path; repeatable")
    box.add_argument("--mount", action="append", default=[], metavar="type=bind,source=…,target=…[,readonly]", help="bind-mount, --mount syntax; repeatable")
    box.add_argument("-u", "--user", metavar="USER[:GROUP]", help="run as this user instead of the image's USER (checked, too)")
    box.add_argument("--entrypoint", metavar="EXECUTABLE", help="replace the image's ENTRYPOINT (\"\" clears it)")
    box.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside the container (absolute)")
    box.add_argument("--network", metavar="NETWORK", help="network to connect to (e.g. host, none, a user network)")
    box.add_argument("--name", metavar="NAME", help="container name")
    box.add_argument("-l", "--label", action="append", default=[], metavar="KEY=VALUE", help="an extra container label; repeatable")
    box.add_argument("--cap-add", action="append", default=[], metavar="CAP", help="add a capability back (only if the policy's allowed-capabilities lists it)")
    box.add_argument("--security-opt", action="append", default=[], metavar="OPT", help="an extra security option (none that weakens the confinement)")
    box.add_argument("--privileged", action="store_true", help="refused: it undoes every other protection")
    box.add_argument("--read-only", action="store_true", help="mount the container's root filesystem read-only")
    removal = box.add_mutually_exclusive_group()
    removal.add_argument("--rm", dest="keep", action="store_false", default=False, help="remove the container after it exits (the default)")
    removal.add_argument("--keep", dest="keep", action="store_true", help="keep the container after it exits (docker inspect / logs it)")
    box.add_argument("--stop-timeout", type=int, default=10, metavar="SECONDS", help="on Ctrl-C/SIGTERM: seconds between SIGTERM and SIGKILL to the container (default 10)")
    out = run.add_argument_group("output")
    out.add_argument("--dry-run", action="store_true", help="check and print what would run; create nothing")
    out.add_argument("--json", action="store_true", help="print one JSON object at the end; the container's output then goes to stderr")
    out.add_argument("-q", "--quiet", action="store_true", help="no report or pull/build progress on stderr")


def _subcommand(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """``imagegate … run [OPTIONS] [REF] -- CMD…`` -> (everything before ``--``, the container's command).

    Only for ``run``: the first ``--`` after it ends imagegate's options, so nothing of the
    container's command (``--json`` included) is ever read as one. No ``--``: ``None`` (the image's CMD).
    """
    argv = list(argv)
    if _subcommand(argv) != "run" or "--" not in argv:
        return argv, None
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


@dataclass(frozen=True)
class RunRequest:
    """A parsed ``imagegate run``: the image source, the container spec, and the command's own options."""

    source: Any  # ImageSource
    spec: Any  # RunSpec
    options: argparse.Namespace

    @property
    def task(self) -> str:
        """The ``imagegate.dev/task`` label: the source as the user named it."""
        source = self.source
        if source.lock_name:
            return f"lock:{source.lock_name}"
        if source.job_dir:
            return f"job:{source.job_dir}"
        return str(source.image)


def parse_run(argv: Sequence[str], *, environ: Mapping[str, str] | None = None,
              cwd: str | os.PathLike[str] | None = None) -> RunRequest:
    """``imagegate run``'s arguments (those after ``run``) as a :class:`RunRequest`; nothing is asked of a registry.

    Raises:
        UsageError: options that do not go together, or not exactly one image source.
        RunOptionError: a ``-e``/``--env-file``/``-v``/``--mount``/``--label`` value that cannot be used.
    """
    head, command = split_command(["run", *argv])
    return _run_request(_parse(head, command), environ=environ, cwd=cwd)


def _run_request(args: argparse.Namespace, *, environ: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None) -> RunRequest:
    from pathlib import Path

    from imagegate._gate import BuildOptions, ImageSource
    from imagegate._runspec import Bind, RunSpec, parse_env, parse_labels

    given = [flag for flag, value in (("REF", args.reference), ("--lock-name", args.lock_name), ("--job-dir", args.job_dir)) if value]
    if len(given) != 1:
        raise UsageError(
            f"name exactly one image: REF, --lock-name NAME or --job-dir DIR (got {', '.join(given) or 'none'}); "
            "e.g. imagegate run registry.example.com/team/etl:1.4.2"
        )
    build_flags = [flag for flag, value in (("--repository", args.repository), ("-f", args.file), ("--target", args.target),
                                            ("--build-arg", args.build_arg), ("--tag-policy", args.tag_policy)) if value]
    if build_flags and not args.job_dir:
        raise UsageError(f"{', '.join(build_flags)} only go with --job-dir")
    if args.job_dir and not args.repository:
        raise UsageError(f"--job-dir {args.job_dir} needs --repository REPO (where the image is pushed), e.g. registry.example.com/jobs/etl")
    if args.lock_file and not args.lock_name:
        raise UsageError("--lock-file goes with --lock-name")
    if args.container_command is not None and not args.container_command:
        raise UsageError("nothing after --: give the container's command (imagegate run REF -- CMD ARG…), or leave -- out to run the image's CMD")
    base = Path(cwd) if cwd else Path.cwd()
    source = ImageSource(
        image=args.reference.strip() if args.reference else None,
        lock_name=args.lock_name,
        job_dir=args.job_dir,
        lock_file=args.lock_file,
        repository=args.repository,
        build=BuildOptions(
            dockerfile=str((base / args.file).resolve()) if args.file else None,
            build_args=_build_args(args.build_arg),
            target=args.target,
            tag_policy=args.tag_policy or "content",
        ),
        start=base,
    )
    binds = tuple(Bind.parse_volume(v, cwd=base) for v in args.volume) + tuple(Bind.parse_mount(m, cwd=base) for m in args.mount)
    spec = RunSpec(
        command=tuple(args.container_command) if args.container_command is not None else None,
        entrypoint=args.entrypoint,
        env=parse_env(args.env, files=[base / f for f in args.env_file], environ=environ),
        binds=binds,
        user=args.user if args.user else None,
        workdir=args.workdir,
        network=args.network,
        name=args.name,
        labels=parse_labels(args.label),
        cap_add=tuple(args.cap_add),
        security_opt=tuple(args.security_opt),
        privileged=args.privileged,
        read_only=args.read_only,
        remove=not args.keep,
        stop_timeout=args.stop_timeout,
    )
    return RunRequest(source, spec, args)


class Signalled(BaseException):
    """A signal (SIGINT, SIGTERM, SIGHUP) arrived during ``run``: like KeyboardInterrupt, not an error."""

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = signum
        super().__init__(signal.Signals(signum).name)


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """While running, SIGINT/SIGTERM/SIGHUP raise :class:`Signalled` (so the container is stopped and
    removed on the way out); a signal the shell set to be ignored stays ignored."""
    import signal
    import threading

    previous: dict[int, Any] = {}

    def raise_signalled(signum: int, frame: Any) -> None:
        raise Signalled(signum)

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        current = signal.getsignal(signum)
        if current is not signal.SIG_IGN:
            previous[signum] = current
            signal.signal(signum, raise_signalled)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler set outside Python, which cannot be put back
                signal.signal(signum, handler)


def _run(args: argparse.Namespace) -> int:
    import signal
    import uuid

    from imagegate._errors import CheckFailed
    from imagegate._gate import plan_launch
    from imagegate._policy import Policy, merge_insecure
    from imagegate._run import run_container
    from imagegate._runspec import docker_launch

    request = _run_request(args)
    policy = Policy.load(args.policy) if args.policy else Policy.discover()
    request.spec.validate(policy)  # a weakening option is refused before the registry is asked anything
    say = (lambda line: None) if args.quiet else _printer()
    state: dict[str, Any] = {"plan": None, "launch": None, "container": None}
    try:
        with _signals_raise():
            try:
                with _client(merge_insecure(policy, args.insecure_registry), args.ca_file, args.timeout) as client:
                    plan = plan_launch(request.source, backend="docker", user=request.spec.user, policy=policy,
                                       client=client, progress=say)
            except CheckFailed as exc:
                return _run_refused(exc, args)
            launch_id = uuid.uuid4().hex
            launch = docker_launch(plan, request.spec, policy, launch_id=launch_id, task=request.task)
            state.update(plan=plan, launch=launch)
            if args.dry_run:
                return _run_dry(plan, launch, args)
            if not args.quiet and not args.json:
                say(plan.report.render_text())
            sys.stdout.flush()
            sys.stderr.flush()
            result = run_container(
                plan, request.spec, policy=policy,
                stdout=sys.stderr.buffer if args.json else sys.stdout.buffer, stderr=sys.stderr.buffer,
                progress=say, launch_id=launch_id, task=request.task,
                on_created=lambda container: state.update(container=container),
            )
    except Signalled as exc:
        container = state["container"]
        what = f"; container {container[:12]} {'stopped' if args.keep else 'stopped and removed'}" if container else "; nothing was left running"
        print(f"imagegate: interrupted by {signal.Signals(exc.signum).name}{what}", file=sys.stderr)
        if args.json:
            print(json.dumps(_run_record(state["plan"], state["launch"], container={"id": container, "removed": not args.keep} if container else None,
                                         signal_name=signal.Signals(exc.signum).name), indent=2))
        return 128 + exc.signum
    if args.json:
        print(json.dumps(_run_record(plan, launch, container=result.to_dict(), exit_code=result.exit_code), indent=2))
    elif not result.removed:
        say(f"imagegate: kept container {result.container_id[:12]} (exit status {result.exit_code})")
    return result.exit_code


def _run_record(plan: Any, launch: Any, *, report: Any = None, container: Mapping[str, Any] | None = None,
                exit_code: int | None = None, signal_name: str | None = None, dry_run: bool = False) -> dict[str, Any]:
    """The one JSON object of ``run --json``: the gate's answer, what ran, how it ended."""
    # passed: the gate's answer (None when interrupted before it answered)
    record: dict[str, Any] = {"passed": True if plan is not None else (False if report is not None else None)}
    if plan is not None:
        record.update(plan.to_dict())
    else:
        record.update({"pinned": report.pinned if report else None, "launch": None,
                       "report": report.to_dict() if report else None})
    record.update({
        "dry_run": dry_run,
        "run": launch.describe() if launch is not None else None,
        "container": dict(container) if container else None,
        "exit_code": exit_code,
        "signal": signal_name,
    })
    return record


def _run_refused(exc: Any, args: argparse.Namespace) -> int:
    if args.json:
        record = _run_record(None, None, report=exc.report)
        if exc.lint is not None:
            record["lint"] = exc.lint.to_dict()
        print(json.dumps(record, indent=2))
    else:
        print(exc.report.render_text(), file=sys.stderr)
    print(f"imagegate: refused {exc.report.reference} ({', '.join(r.check for r in exc.report.failures) or 'not pinned'}); "
          "nothing was created", file=sys.stderr)
    return EXIT_FAILED


def _run_dry(plan: Any, launch: Any, args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(_run_record(plan, launch, dry_run=True), indent=2))
        return EXIT_OK
    print(plan.report.render_text())
    print("would run (dry run: nothing was created):")
    described = launch.describe()
    described["remove"] = not args.keep
    for key, value in described.items():
        note = "  (names only; values not shown)" if key == "env" else ""
        print(f"  {key:<12} {value if isinstance(value, str) else json.dumps(value)}{note}")
    return EXIT_OK


def _cache(args: argparse.Namespace) -> int:
    from imagegate._diskcache import DiskCache, default_directory

    cache = DiskCache.from_environment()
    if cache is None:
        record: dict[str, Any] = {"directory": default_directory(), "enabled": False, "refused": None,
                                  "reason": "IMAGEGATE_REGISTRY_CACHE turns it off"}
        print(json.dumps(record, indent=2) if args.json else f"registry cache: off ({record['reason']})")
        return EXIT_OK
    if args.action == "clear":
        removed = cache.clear()
        if cache.refused:
            raise CacheRefused(f"registry cache {cache.directory} is not used: {cache.refused}; nothing was removed")
        print(json.dumps({"directory": cache.directory, "removed": removed}, indent=2) if args.json
              else f"registry cache {cache.directory}: removed {removed} entries")
        return EXIT_OK
    stats = cache.stats()
    record = {**stats.to_dict(), "enabled": cache.refused is None, "refused": cache.refused}
    if args.json:
        print(json.dumps(record, indent=2))
    elif cache.refused:
        print(f"registry cache {cache.directory}: not used ({cache.refused})")
    else:
        print(f"registry cache {cache.directory}: {stats.entries} entries, {stats.bytes / 2**20:.1f} MiB of at most "
              f"{stats.max_bytes / 2**20:.0f} MiB (IMAGEGATE_REGISTRY_CACHE_SIZE)")
    return EXIT_OK


class CacheRefused(ImagegateError):
    """The registry cache's directory is not safe to use (another owner, or writable by others)."""


def _audit_parser(commands: Any) -> None:
    from imagegate._audit_cli import add_parser  # its options only; the audit itself loads when it runs

    add_parser(commands)


def _audit(args: argparse.Namespace) -> int:
    """``imagegate audit``: 0 when runs matched, 1 when none did (imagegate/_audit_cli.py)."""
    from imagegate._audit_cli import run

    return run(args)


def _gc_parser(commands: Any) -> None:
    sub = commands.add_parser(
        "gc", help="remove containers imagegate launched on this host whose launching process is gone",
        description="Remove, on this host, the containers imagegate launched (Airflow, Dagster, imagegate run) that "
                    "still run (or were created) although the process that launched them is gone; with --older-than, "
                    "also those that exited longer ago. Containers without imagegate's labels are never touched.",
    )
    sub.add_argument("--dry-run", action="store_true", help="print what would be removed; change nothing")
    sub.add_argument("--older-than", metavar="DURATION",
                     help="also remove exited containers that finished longer ago than this: 90s, 30m, 12h, 7d, 1h30m")
    sub.add_argument("--label", action="append", default=[], metavar="KEY[=VALUE]",
                     help="only containers that also carry this label, e.g. imagegate.dev/dag-id=etl; repeatable")
    sub.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _gc(args: argparse.Namespace) -> int:
    """``imagegate gc``: 0 whatever it found (see imagegate/_gc.py); 2 when the engine cannot be reached."""
    from imagegate._gc import gc

    report = gc(dry_run=args.dry_run, older_than=args.older_than, labels=args.label)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render_text())
    return EXIT_OK


def _verify_parser(commands: Any) -> None:
    from imagegate._cosign_cli import add_parser  # argparse only; cryptography loads when the command runs

    add_parser(commands)


def _sign_parsers(commands: Any) -> None:
    from imagegate._sign_cli import add_parsers  # argparse only; keys and cryptography load when a command runs

    add_parsers(commands)


def _signing(name: str) -> Callable[[argparse.Namespace], int]:
    """``imagegate sign`` / ``attest`` / ``generate-key-pair`` (imagegate/_sign_cli.py): 0 done, 2 an error."""

    def run(args: argparse.Namespace) -> int:
        from imagegate import _sign_cli

        return int(getattr(_sign_cli, name)(args))

    return run


def _verify(args: argparse.Namespace) -> int:
    """``imagegate verify``: 0 verified, 1 not verified (see imagegate/_cosign_cli.py)."""
    from imagegate._cosign_cli import run

    return run(args)


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "resolve": _resolve, "check": _check, "build": _build, "lint": _lint, "run": _run, "cache": _cache,
    "audit": _audit, "gc": _gc, "verify": _verify, "verify-attestation": _verify,
    "sign": _signing("run_sign"), "attest": _signing("run_attest"), "generate-key-pair": _signing("run_generate"),
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
