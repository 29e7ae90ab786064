"""Build or resolve by immutable tag: ``build_image``.

1. Parse the Dockerfile (``ARG`` defaults and build args substituted into ``FROM``).
2. Walk and hash the context (after ``.dockerignore``; stat cache on the warm path).
3. Resolve every ``FROM`` image to its digest (a moved base tag gives a new tag).
4. The content tag ``c-<sha256 of all of it>[:20]`` (or ``g-<commit>`` / both).
5. One ``HEAD REPO:TAG``: if it exists, return it — "up to date (not rebuilt)";
   nothing is linted, built or pushed, and no Docker client is created.
6. Otherwise lint (the policy's ``lint`` mode decides whether errors block), build
   through the Engine API (docker SDK) from exactly the files that were hashed,
   push, and read the digest back from the registry.

The docker SDK, the tar writer and the linter are imported only when something must be built
(the lock file module only when a lock is written): a no-op loads none of them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Mapping

from imagegate._api import shared_client
from imagegate.build._context import ContextDigest, hash_context, parse_size, scan_context
from imagegate.build._dockerfile import Dockerfile, parse_file
from imagegate._errors import (
    BuildError,
    ContextError,
    DockerfileError,
    InvalidReference,
    ManifestUnknown,
    PolicyError,
    typed_errors,
)
from imagegate.build._files import locate_dockerfile, open_regular
from imagegate._policy import Mode, Policy
from imagegate._reference import Reference, parse_reference

if TYPE_CHECKING:
    from imagegate._registry import RegistryClient
    from imagegate.build._lint import LintReport

TAG_POLICIES = ("content", "git", "both")
HASH_VERSION = "imagegate-build-v2"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_image` did: the pinned reference, and whether it was built."""

    pinned: Reference  # REPO:TAG@sha256:…
    tag: str
    digest: str
    built: bool  # False: the tag was already in the registry ("up to date (not rebuilt)")
    lint: LintReport | None
    seconds: float
    context_digest: str = ""
    bases: tuple[tuple[str, str], ...] = ()  # (FROM as written after substitution, digest)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pinned": self.pinned.familiar,
            "tag": self.tag,
            "digest": self.digest,
            "built": self.built,
            "up_to_date": not self.built,
            "seconds": round(self.seconds, 3),
            "context_digest": self.context_digest,
            "bases": [{"from": ref, "digest": digest} for ref, digest in self.bases],
            "lint": self.lint.to_dict() if self.lint else None,
        }


@typed_errors
def build_image(
    context: str | os.PathLike[str],
    *,
    repository: str,
    dockerfile: str | None = None,
    target: str | None = None,
    build_args: Mapping[str, str] | None = None,
    platform: str | None = None,
    tag_policy: str = "content",
    policy: Policy | None = None,
    progress: Progress | None = None,
    client: RegistryClient | None = None,
    docker_client: Any = None,
    lock: str | os.PathLike[str] | None = None,
    name: str | None = None,
    max_context_size: int | str | None = None,
    use_cache: bool = True,
    lint: str = "on-build",
) -> BuildResult:
    """Build *context* into ``REPO:TAG`` unless that tag already exists; return the pinned reference.

    ``dockerfile`` is relative to the context (default ``Dockerfile``). ``progress``
    receives lines for people; lines starting with ``\\r`` are transient progress
    (a terminal overwrites them, a log can drop them). ``max_context_size``
    (bytes, or ``"500MB"``; default ``$IMAGEGATE_MAX_CONTEXT_SIZE``) refuses a
    larger context before anything is read. With ``lock`` and ``name`` the pin is
    written to that lock file. ``lint="always"`` also lints an image that is up to date
    (from the Dockerfile and walk already made: nothing is read twice); by default lint
    runs only before a build.
    """
    started = time.monotonic()
    say = progress or (lambda line: None)
    if tag_policy not in TAG_POLICIES:
        raise PolicyError(f"tag_policy {tag_policy!r} is not one of {', '.join(TAG_POLICIES)}", key="tag_policy")
    if lint not in ("on-build", "always"):
        raise PolicyError(f"lint {lint!r} is not 'on-build' or 'always'", key="lint")
    if (lock is None) != (name is None):
        raise PolicyError("pass both lock and name (the lock file and the image's name in it), or neither", key="lock")
    repo = _repository(repository)
    policy = policy or Policy()
    args = {str(k): str(v) for k, v in (build_args or {}).items()}
    limit = max_context_size if max_context_size is not None else os.environ.get("IMAGEGATE_MAX_CONTEXT_SIZE")
    inputs = _read_inputs(context, dockerfile, target, args, parse_size(limit) if limit else None, use_cache)
    client = client or shared_client(policy.insecure_registries)
    bases = _resolve_bases(inputs.parsed, client)
    tag = _tag(tag_policy, inputs.root, _inputs_digest(inputs.content, inputs.dockerfile, target, args, platform, bases))
    ref = repo.with_tag(tag)
    try:
        existing = client.resolve(ref).digest
    except ManifestUnknown:
        existing = None
    if existing is not None:
        pinned = ref.with_digest(existing)
        say(f"up to date: {pinned.familiar} (not rebuilt)")
        report = _lint(inputs, policy, repo, say, blocking=False) if lint == "always" else None
        _write_lock(lock, name, pinned, inputs.root)
        return BuildResult(pinned, tag, existing, False, report, time.monotonic() - started, inputs.content.digest, bases)
    report = _lint(inputs, policy, repo, say)
    api = _api(docker_client)
    say(f"building {ref.familiar} from {inputs.root} ({len(inputs.content.scan.entries)} entries)")
    _build(api, inputs.content, inputs.dockerfile, ref, target, args, platform, say)
    digest = _push_and_read_back(api, ref, client, say)
    pinned = ref.with_digest(digest)
    say(f"built and pushed: {pinned.familiar}")
    _write_lock(lock, name, pinned, inputs.root)
    return BuildResult(pinned, tag, digest, True, report, time.monotonic() - started, inputs.content.digest, bases)


@dataclass(frozen=True)
class _Inputs:
    """What a build is made from, each read once: the Dockerfile (parsed) and the context (walked, hashed)."""

    root: Path
    dockerfile: str  # relative to the root
    parsed: Dockerfile
    content: ContextDigest


def _read_inputs(context: str | os.PathLike[str], dockerfile: str | None, target: str | None, args: Mapping[str, str],
                 max_bytes: int | None, use_cache: bool) -> _Inputs:
    root, df_path, df_rel = locate_dockerfile(context, dockerfile)
    parsed = parse_file(df_path, args)
    _check_target(parsed, target)
    for stage in parsed.external_bases():
        if stage.unresolved:
            missing = stage.unresolved[0]
            raise DockerfileError(
                f"FROM {stage.base_raw}: {missing} has no value; pass --build-arg {missing}=REPO@sha256:… "
                "or give the ARG a default",
                path=str(df_path),
                line=stage.line,
            )
    scan = scan_context(root, always=[df_rel], max_bytes=max_bytes)
    return _Inputs(root, df_rel, parsed, hash_context(scan, use_cache=use_cache))


# --- inputs --------------------------------------------------------------------------------------


def _repository(repository: str) -> Reference:
    ref = parse_reference(repository)
    if ref.tag is not None or ref.digest is not None:
        raise InvalidReference(repository, "--repository takes a repository without a tag or digest (the tag is computed)")
    return ref


def _check_target(parsed: Dockerfile, target: str | None) -> None:
    if target is not None and target.lower() not in parsed.stage_names():
        known = ", ".join(sorted(parsed.stage_names())) or "none (no FROM … AS NAME)"
        raise DockerfileError(f"target stage {target!r} not found; stages: {known}", path=parsed.path)


def _resolve_bases(parsed: Dockerfile, client: RegistryClient) -> tuple[tuple[str, str], ...]:
    """Each FROM image's digest now. Tags are asked afresh, past the client's short-lived
    tag cache: a moved base tag must give a new content tag."""
    out: list[tuple[str, str]] = []
    for stage in parsed.external_bases():
        ref = parse_reference(stage.base)
        digest = ref.digest or client.resolve(ref, fresh=True).digest
        out.append((stage.base, digest))
    return tuple(out)


def _inputs_digest(
    content: ContextDigest,
    dockerfile: str,
    target: str | None,
    args: Mapping[str, str],
    platform: str | None,
    bases: Iterable[tuple[str, str]],
) -> str:
    """The sha256 of everything that decides the image, as canonical JSON: its escaping makes the
    encoding injective (a build argument's value cannot pose as another argument)."""
    document = {
        "version": HASH_VERSION,
        "dockerfile": dockerfile,
        "target": target,
        "platform": platform,
        "args": dict(sorted(args.items())),
        "bases": [list(base) for base in bases],
        "context": content.digest,
    }
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(encoded.encode()).hexdigest()


def content_tag(inputs: str) -> str:
    """``c-`` + 20 hex digits of the inputs digest (longer, up to 40, until one is a decimal digit,
    so the tag always reads as a commit-like immutable tag to the ``pinned`` check)."""
    n = 20
    while n < 40 and not any(c.isdigit() for c in inputs[:n]):
        n += 1
    return f"c-{inputs[:n]}"


def _tag(tag_policy: str, root: Path, inputs: str) -> str:
    if tag_policy == "content":
        return content_tag(inputs)
    commit, dirty = _git_state(root)
    tag = f"g-{commit[:12]}"
    if tag_policy == "both":
        return f"{tag}-{content_tag(inputs)}"
    return f"{tag}-dirty-{inputs[:12]}" if dirty else tag


def _git_state(root: Path) -> tuple[str, bool]:
    import subprocess

    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=normal", "--", "."],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        raise ContextError("not inside a git repository with a commit; use --tag-policy content", path=str(root)) from None
    return commit, bool(status.strip())


# --- lint, build, push --------------------------------------------------------------------------


def _lint(inputs: _Inputs, policy: Policy, repo: Reference, say: Progress, *, blocking: bool = True) -> LintReport | None:
    """Lint the Dockerfile already parsed, over the context already walked; errors block under enforce."""
    mode = policy.mode("lint")
    if mode is Mode.OFF:
        return None
    from imagegate.build._lint import LintFailed, lint_parsed  # not loaded by a no-op

    report = lint_parsed(inputs.parsed, inputs.content.scan)
    for finding in report.findings:
        if finding.severity != "info":
            say(f"lint {finding.severity}: {finding.rule} line {finding.line or '-'}: {finding.message}")
    if not report.passed and blocking:
        if mode is Mode.ENFORCE and policy.waiver_for(repo, "lint") is None:
            raise LintFailed(report)
        say(f"lint: {len(report.errors)} errors; building anyway (checks.lint = {mode.value} or waived)")
    return report


def _api(docker_client: Any) -> Any:
    if docker_client is None:
        import docker  # only a real build needs the docker SDK

        try:
            docker_client = docker.from_env()
        except docker.errors.DockerException as exc:
            raise BuildError(f"cannot reach the Docker Engine: {exc}; start it or set DOCKER_HOST", stage="connect") from None
    return getattr(docker_client, "api", docker_client)


class _HashingReader(io.RawIOBase):
    """Reads a file for the tar and checks it still hashes to what was hashed before."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.digest.update(data)
        return data


def write_tar(content: ContextDigest, out: IO[bytes]) -> None:
    """The build context as the engine receives it: exactly the hashed entries, owned by 0:0."""
    import tarfile  # only a real build sends a context

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in content.scan.entries:
            info = tarfile.TarInfo(entry.path)
            info.mode, info.mtime, info.uid, info.gid = entry.mode, entry.mtime_ns // 1_000_000_000, 0, 0
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, entry.target
                tar.addfile(info)
            else:
                info.size = entry.size
                full = content.scan.root / entry.path
                try:
                    with open(open_regular(full, expect_inode=entry.inode), "rb") as handle:
                        reader = _HashingReader(handle)
                        tar.addfile(info, reader)  # type: ignore[arg-type]
                except (OSError, tarfile.TarError) as exc:
                    raise ContextError(f"cannot read while sending the context: {exc}", path=str(full)) from None
                if reader.digest.hexdigest() != content.files[entry.path]:
                    raise ContextError("changed while the build was being prepared; run the build again", path=str(full))


def _build(api: Any, content: ContextDigest, df_rel: str, ref: Reference, target: str | None,
           args: Mapping[str, str], platform: str | None, say: Progress) -> None:
    import tempfile

    log: list[str] = []
    with tempfile.SpooledTemporaryFile(max_size=64 << 20) as archive:
        write_tar(content, archive)  # type: ignore[arg-type]
        archive.seek(0)
        kwargs: dict[str, Any] = dict(
            fileobj=archive, custom_context=True, tag=str(ref), dockerfile=df_rel, buildargs=dict(args) or None,
            target=target, rm=True, forcerm=True, decode=True, pull=False,
        )
        if platform:
            kwargs["platform"] = platform
        try:
            stream = api.build(**kwargs)
            for item in stream:
                _relay(item, log, say, "build")
        except BuildError:
            raise
        except Exception as exc:  # the SDK raises APIError, ConnectionError, …
            raise BuildError(f"the engine refused the build of {ref.familiar}: {exc}", log=log) from None


def _push(api: Any, ref: Reference, say: Progress) -> str | None:
    log: list[str] = []
    digest: str | None = None
    repo = str(ref).rsplit(":", 1)[0]
    try:
        for item in api.push(repo, tag=ref.tag, stream=True, decode=True):
            _relay(item, log, say, "push")
            digest = (item.get("aux") or {}).get("Digest", digest)
    except BuildError:
        raise
    except Exception as exc:
        raise BuildError(f"pushing {ref.familiar} failed: {exc}", log=log, stage="push") from None
    return digest


def _push_and_read_back(api: Any, ref: Reference, client: RegistryClient, say: Progress) -> str:
    pushed = _push(api, ref, say)
    digest = client.resolve(ref).digest
    if pushed and pushed != digest:
        say(f"note: the registry reports {digest}, the push reported {pushed}")
    return digest


def _relay(item: Mapping[str, Any], log: list[str], say: Progress, stage: str) -> None:
    if "error" in item or "errorDetail" in item:
        message = item.get("error") or (item.get("errorDetail") or {}).get("message") or "unknown error"
        log.append(str(message))
        raise BuildError(f"{stage} failed: {message}", log=log, stage=stage)
    if "stream" in item:
        for line in str(item["stream"]).splitlines():
            if line.strip():
                log.append(line.rstrip())
                say(line.rstrip())
        return
    status = item.get("status")
    if not status:
        return
    ident = item.get("id")
    text = f"{stage} {ident}: {status}" if ident else f"{stage}: {status}"
    if item.get("progressDetail", {}).get("total") or item.get("progress"):
        say("\r" + f"{text} {item.get('progress', '')}".rstrip())
    else:
        log.append(text)
        say(text)


def _write_lock(lock: str | os.PathLike[str] | None, name: str | None, pinned: Reference, root: Path) -> None:
    if lock is None or name is None:
        return
    from imagegate.build._lockfile import LockFile

    lock_file = LockFile.load_or_new(lock)
    try:
        where = os.path.relpath(root, Path(lock).resolve().parent)
    except ValueError:
        where = str(root)
    lock_file.set(name, pinned, context=Path(where).as_posix())
    lock_file.save()
