"""The build context: ``.dockerignore`` matching, the walk, content hashing, the stat cache.

``.dockerignore`` follows Docker's own code exactly (moby ``patternmatcher`` and
``patternmatcher/ignorefile``): lines starting with ``#`` are comments, patterns
are trimmed and cleaned like Go's ``filepath.Clean`` (so ``./a``, ``a/`` and
``/a`` all mean ``a``), ``*`` and ``?`` never cross ``/``, ``**`` matches any
number of directories, a pattern also excludes everything below a matching
directory, and a later ``!pattern`` re-includes what an earlier one excluded.
The walk mirrors the engine's tar walk: an excluded directory is not descended
into unless an exception pattern could re-include something below it. The
Dockerfile and ``.dockerignore`` are always part of the context (as with
``docker build``).

What is hashed, per included entry in sorted path order: its kind, its
permission bits, its slash-separated path and its content (the sha256 of a file,
the target of a symlink), each field length-prefixed so that two different contexts
never encode alike whatever their file names hold (spaces, newlines). No owners, no
mtimes: the same files in two checkouts hash the same. A file is opened without
blocking and must still be the regular file the walk saw, so a FIFO swapped in
mid-walk is an error, not a hang.

The stat cache (``~/.cache/imagegate/stat/``, or ``$IMAGEGATE_CACHE_DIR``)
remembers ``path, size, mtime_ns, ctime_ns, inode → sha256`` so an unchanged
context is not re-read. The trade-off is git's: a change that keeps size,
mtime, ctime and inode identical is not seen. ``ctime`` cannot be set from
user space, so only a filesystem that lies about it can fool the cache; files
modified within two seconds of a scan are never cached ("racily clean").
Pass ``use_cache=False`` (``--no-cache``) to hash every byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from imagegate._errors import ContextError
from imagegate.build._files import inside, open_regular, read_regular

DOCKERIGNORE = ".dockerignore"
CHUNK = 1 << 20  # 1 MiB reads: memory stays flat whatever the file size
_RACY_NS = 2_000_000_000
_CACHE_VERSION = 2
MAX_DOCKERIGNORE = 1 << 20
CONTEXT_HASH_VERSION = b"imagegate-context-v2\0"
_KIND_CODES = {"file": b"f", "dir": b"d", "symlink": b"l"}


# --- Go path cleaning ------------------------------------------------------------------


def go_clean(path: str) -> str:
    """Go's ``filepath.Clean`` on a slash path (unlike ``os.path.normpath``, ``//a`` → ``/a``)."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    cleaned = "/".join(out)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


# --- patterns (moby/patternmatcher) -------------------------------------------------------

_ESCAPE = set(".+()|{}$")


@dataclass(frozen=True)
class Pattern:
    """One cleaned ``.dockerignore`` pattern, compiled the way ``patternmatcher`` does."""

    text: str
    exclusion: bool
    line: int = 0
    kind: str = field(default="exact", compare=False)
    regex: re.Pattern[str] | None = field(default=None, compare=False)

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        assert self.regex is not None
        return self.regex.match(path) is not None


def compile_pattern(raw: str, *, line: int = 0, source: str = DOCKERIGNORE) -> Pattern:
    """Compile one pattern line (``!`` allowed) exactly as ``patternmatcher.New`` + ``compile``."""
    text = go_clean(raw.strip())
    exclusion = text.startswith("!")
    if exclusion:
        if len(text) == 1:
            raise ContextError(f'illegal exclusion pattern "!" on line {line}', path=source)
        text = text[1:]
    regex, kind, i, n = "^", "exact", 0, len(text)
    index = 0
    while i < n:
        ch = text[i]
        i += 1
        if ch == "*":
            if i < n and text[i] == "*":
                i += 1
                if i < n and text[i] == "/":
                    i += 1
                if i >= n:
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        regex += ".*"
                        kind = "regexp"
                else:
                    regex += "(.*/)?"
                    kind = "regexp"
                if index == 0:
                    kind = "suffix"
            else:
                regex += "[^/]*"
                kind = "regexp"
        elif ch == "?":
            regex += "[^/]"
            kind = "regexp"
        elif ch in _ESCAPE:
            regex += "\\" + ch
        elif ch == "\\":
            if i < n:
                regex += "\\" + text[i]
                i += 1
                kind = "regexp"
            else:
                regex += "\\\\"
        elif ch in "[]":
            regex += ch
            kind = "regexp"
        else:
            regex += ch
        index += 1
    compiled = None
    if kind == "regexp":
        try:
            compiled = re.compile(regex + "$", re.DOTALL)
        except re.error as exc:
            raise ContextError(f"bad pattern {raw.strip()!r} on line {line}: {exc}", path=source) from None
    return Pattern(text=text, exclusion=exclusion, line=line, kind=kind, regex=compiled)


def read_ignore_lines(text: str) -> list[tuple[int, str]]:
    """``ignorefile.ReadAll``: drop the BOM, comments and blanks; clean, strip a leading ``/``."""
    out: list[tuple[int, str]] = []
    for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append((number, "!" + pattern if invert else pattern))
    return out


class IgnoreRules:
    """The compiled patterns of one ``.dockerignore``."""

    def __init__(self, patterns: Sequence[Pattern] = ()) -> None:
        self.patterns = tuple(patterns)
        self.exclusions = any(p.exclusion for p in self.patterns)
        self._combined = None if self.exclusions else _combine(self.patterns)

    def fast_excludes(self, path: str) -> bool | None:
        """Without ``!`` exceptions a walked path is excluded iff some pattern matches it (its
        parents were not excluded, or the walk would not be here): one combined regex. None
        when there are exceptions (use :meth:`match`)."""
        if self._combined is None:
            return None
        return self._combined.match(path) is not None

    @classmethod
    def parse(cls, text: str, *, source: str = DOCKERIGNORE) -> IgnoreRules:
        return cls([compile_pattern(p, line=n, source=source) for n, p in read_ignore_lines(text) if p])

    @classmethod
    def for_context(cls, context: Path) -> IgnoreRules:
        """The context's ``.dockerignore``: a regular file inside the context, or none at all."""
        path = context / DOCKERIGNORE
        if not os.path.lexists(path):
            return cls()
        resolved = inside(context.resolve(), path)
        if resolved is None:
            raise ContextError(
                "links outside the build context; make .dockerignore a regular file in the context", path=str(path)
            )
        try:
            text = read_regular(resolved, MAX_DOCKERIGNORE).decode("utf-8")
        except UnicodeDecodeError:
            raise ContextError("is not UTF-8 text", path=str(path)) from None
        except OSError as exc:
            raise ContextError(f"cannot read: {exc.strerror or exc}; make it a regular text file", path=str(path)) from None
        return cls.parse(text, source=str(path))

    def match(self, path: str, parent: Sequence[bool] | None = None) -> tuple[bool, list[bool]]:
        """``MatchesUsingParentResults``: (excluded?, per-pattern results for the children)."""
        matched = False
        info: list[bool] = []
        for i, pattern in enumerate(self.patterns):
            hit = bool(parent[i]) if parent else False
            if not hit:
                if pattern.exclusion != matched:
                    info.append(False)
                    continue
                hit = pattern.match(path)
                if not hit and not parent:
                    parts = path.split("/")[:-1]
                    hit = any(pattern.match("/".join(parts[: k + 1])) for k in range(len(parts)))
            info.append(hit)
            if hit:
                matched = not pattern.exclusion
        return matched, info

    def excludes(self, path: str) -> bool:
        """Whether the slash path (relative to the context) is left out of the context."""
        path = go_clean(path)
        if path == ".":
            return False
        return self.match(path)[0]

    def may_reinclude_below(self, directory: str) -> bool:
        """The engine's test for descending into an excluded directory."""
        if not self.exclusions:
            return False
        prefix = directory + "/"
        return any(p.exclusion and (p.text + "/").startswith(prefix) for p in self.patterns)


def _combine(patterns: Sequence[Pattern]) -> re.Pattern[str] | None:
    parts: list[str] = []
    for p in patterns:
        if p.kind == "exact":
            parts.append(re.escape(p.text) + "$")
        elif p.kind == "prefix":
            parts.append(re.escape(p.text[:-2]))
        elif p.kind == "suffix":
            suffix = p.text[2:]
            parts.append(".*" + re.escape(suffix) + "$")
            if suffix.startswith("/"):
                parts.append(re.escape(suffix[1:]) + "$")
        else:
            assert p.regex is not None
            parts.append(p.regex.pattern.removeprefix("^"))
    if not parts:
        return re.compile(r"(?!)")
    try:
        return re.compile("|".join(f"(?:{part})" for part in parts), re.DOTALL)
    except re.error:  # pragma: no cover - each part compiled on its own
        return None


# --- the walk -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of the context as it will be sent: a file, a directory or a symlink."""

    path: str  # slash-separated, relative to the context
    kind: str  # "file" | "dir" | "symlink"
    mode: int  # permission bits (& 0o7777)
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    target: str = ""  # symlink target


@dataclass(frozen=True)
class Scan:
    """The included entries of a context, and what ``.dockerignore`` kept out."""

    root: Path
    entries: tuple[Entry, ...]
    excluded_bytes: int
    excluded_entries: int

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries if e.kind == "file")


def scan_context(
    context: str | os.PathLike[str],
    *,
    always: Iterable[str] = (),
    max_bytes: int | None = None,
    measure_excluded: bool = False,
) -> Scan:
    """Walk *context* with its ``.dockerignore``; raise :class:`ContextError` for bad input.

    *always* lists paths kept whatever ``.dockerignore`` says (the Dockerfile and
    ``.dockerignore`` itself). With *measure_excluded*, excluded directories are
    walked too, to count the bytes ``.dockerignore`` keeps out.
    """
    root = Path(context)
    try:
        root = root.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ContextError("build context directory not found; pass an existing directory", path=str(context)) from None
    if not root.is_dir():
        raise ContextError("the build context must be a directory", path=str(root))
    rules = IgnoreRules.for_context(root)
    keep = {go_clean(p) for p in (*always, DOCKERIGNORE)}
    entries: list[Entry] = []
    counters = [0, 0, 0]  # excluded bytes, excluded entries, included bytes

    def visit(directory: Path, rel: str, parent: list[bool] | None, excluded_dir: bool) -> None:
        try:
            children = sorted(os.scandir(directory), key=lambda d: d.name)
        except OSError as exc:
            raise ContextError(f"cannot list directory: {exc.strerror}; fix its permissions or add it to .dockerignore", path=str(directory)) from None
        for child in children:
            path = f"{rel}/{child.name}" if rel else child.name
            fast = rules.fast_excludes(path)
            excluded, info = (fast, []) if fast is not None else rules.match(path, parent)
            if excluded and path in keep:
                excluded = False
            try:
                st = child.stat(follow_symlinks=False)
            except OSError as exc:
                raise ContextError(f"cannot stat: {exc.strerror}", path=child.path) from None
            is_dir = stat.S_ISDIR(st.st_mode)
            if excluded:
                if is_dir:
                    if rules.may_reinclude_below(path):
                        visit(Path(child.path), path, info, True)
                    elif measure_excluded:
                        _measure(Path(child.path), counters)
                    else:
                        counters[1] += 1
                else:
                    counters[0] += st.st_size if stat.S_ISREG(st.st_mode) else 0
                    counters[1] += 1
                continue
            entries.append(_entry(root, child.path, path, st))
            if stat.S_ISREG(st.st_mode):
                counters[2] += st.st_size
                if max_bytes is not None and counters[2] > max_bytes:
                    raise ContextError(
                        f"the context is over the configured maximum of {_human(max_bytes)} "
                        f"(reached at {path}); add large files to .dockerignore or raise max-context-size",
                        path=str(root),
                    )
            if is_dir:
                visit(Path(child.path), path, info, False)

    visit(root, "", None, False)
    seen = {e.path for e in entries}
    for path in sorted(keep - seen):  # e.g. a Dockerfile inside an excluded directory
        full = root / path
        if full.is_file() and not full.is_symlink():
            entries.append(_entry(root, str(full), path, full.lstat()))
    entries.sort(key=lambda e: e.path)
    return Scan(root=root, entries=tuple(entries), excluded_bytes=counters[0], excluded_entries=counters[1])


def _measure(directory: Path, counters: list[int]) -> None:
    for base, dirs, files in os.walk(directory):
        counters[1] += len(dirs) + len(files) + 1
        for name in files:
            try:
                st = os.lstat(os.path.join(base, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                counters[0] += st.st_size


def _entry(root: Path, full: str, rel: str, st: os.stat_result) -> Entry:
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISREG(st.st_mode):
        return Entry(rel, "file", mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if stat.S_ISDIR(st.st_mode):
        return Entry(rel, "dir", mode, 0, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    common = dict(path=rel, mode=mode, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns, inode=st.st_ino)
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(full)
        resolved = Path(os.path.normpath(os.path.join(os.path.dirname(full), target)))
        if os.path.isabs(target) or not (resolved == root or root in resolved.parents):
            raise ContextError(
                f"symlink points outside the build context (-> {target}); the engine cannot follow it. "
                "Copy the file into the context, or add the link to .dockerignore",
                path=full,
            )
        return Entry(kind="symlink", size=0, target=target, **common)  # type: ignore[arg-type]
    raise ContextError(
        "not a regular file, directory or symlink (a socket, fifo or device); add it to .dockerignore", path=full
    )


# --- hashing --------------------------------------------------------------------------------


def hash_file(path: str | os.PathLike[str], *, inode: int | None = None) -> str:
    """sha256 hex of a regular file (the inode the walk saw, when given), read in 1 MiB chunks.

    Opened without blocking and checked on the descriptor, so a file swapped for a FIFO after the
    walk is an error, never a hang; memory does not grow with the file.
    """
    digest = hashlib.sha256()
    try:
        fd = open_regular(path, expect_inode=inode)
        with open(fd, "rb", buffering=0) as handle:
            buffer = bytearray(CHUNK)
            view = memoryview(buffer)
            while True:
                n = handle.readinto(buffer)
                if not n:
                    break
                digest.update(view[:n])
    except OSError as exc:
        raise ContextError(
            f"cannot read: {exc.strerror or exc}; fix its permissions or add it to .dockerignore", path=str(path)
        ) from None
    return digest.hexdigest()


class StatCache:
    """``(path, size, mtime_ns, ctime_ns, inode) → sha256`` for one context, kept outside it.

    Stored as JSON ``{"files": {path: "size mtime_ns ctime_ns inode sha256"}}``: one string per
    file keeps loading 10,000 entries at a few milliseconds.
    """

    def __init__(self, context: Path, directory: Path | None = None) -> None:
        base = directory or cache_dir() / "stat"
        self.file = base / (hashlib.sha256(str(context).encode()).hexdigest()[:24] + ".json")
        self._old: dict[str, str] = {}
        self._new: dict[str, str] = {}
        self._lock = threading.Lock()
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
            if data.get("version") == _CACHE_VERSION and data.get("context") == str(context):
                self._old = {k: v for k, v in data.get("files", {}).items() if isinstance(v, str)}
        except (OSError, ValueError, AttributeError):
            self._old = {}

    @staticmethod
    def _key(entry: Entry) -> str:
        return f"{entry.size} {entry.mtime_ns} {entry.ctime_ns} {entry.inode} "

    def get(self, entry: Entry) -> str | None:
        hit = self._old.get(entry.path)
        if hit is not None:
            key = self._key(entry)
            if hit.startswith(key) and len(hit) == len(key) + 64:
                return hit[len(key):]
        return None

    def keep(self, entry: Entry) -> None:
        """Carry a hit over to the new cache (it was not racy when stored, and nothing changed)."""
        self._new[entry.path] = self._old[entry.path]

    def put(self, entry: Entry, digest: str, started_ns: int) -> None:
        if started_ns - entry.mtime_ns < _RACY_NS or started_ns - entry.ctime_ns < _RACY_NS:
            return  # racily clean: a write in the same tick could go unseen
        with self._lock:
            self._new[entry.path] = self._key(entry) + digest

    def save(self, context: Path) -> None:
        if self._new == self._old:
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".stat.", dir=self.file.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"version": _CACHE_VERSION, "context": str(context), "files": self._new}, handle)
            os.replace(tmp, self.file)
        except OSError:
            pass  # a cache that cannot be written only costs time


def cache_dir() -> Path:
    """``$IMAGEGATE_CACHE_DIR``, else ``$XDG_CACHE_HOME/imagegate``, else ``~/.cache/imagegate``."""
    if os.environ.get("IMAGEGATE_CACHE_DIR"):
        return Path(os.environ["IMAGEGATE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imagegate"


@dataclass(frozen=True)
class ContextDigest:
    """The content digest of a context and the per-file hashes it was made from."""

    digest: str  # sha256:…
    scan: Scan
    files: dict[str, str]  # path → sha256 hex (files only)
    hashed_bytes: int  # bytes actually read (0 on a fully warm cache)

    def records(self) -> Iterator[bytes]:
        """One record per entry, length-prefixed so that no two contexts share an encoding (file names
        may hold spaces, newlines or anything but ``/`` and NUL): kind, mode, path, content."""
        for entry in self.scan.entries:
            content = self.files.get(entry.path, "") if entry.kind == "file" else entry.target
            path = entry.path.encode("utf-8", "surrogateescape")
            data = content.encode("utf-8", "surrogateescape")
            yield b"".join((
                _KIND_CODES[entry.kind], entry.mode.to_bytes(2, "big"),
                len(path).to_bytes(4, "big"), path, len(data).to_bytes(4, "big"), data,
            ))


def hash_context(
    context: str | os.PathLike[str] | Scan,
    *,
    always: Iterable[str] = (),
    max_bytes: int | None = None,
    use_cache: bool = True,
    cache_directory: Path | None = None,
    workers: int | None = None,
) -> ContextDigest:
    """Hash every included entry of *context* (a path, or a :func:`scan_context` result)."""
    scan = context if isinstance(context, Scan) else scan_context(context, always=always, max_bytes=max_bytes)
    cache = StatCache(scan.root, cache_directory) if use_cache else None
    started = time.time_ns()
    files: dict[str, str] = {}
    todo: list[Entry] = []
    for entry in scan.entries:
        if entry.kind != "file":
            continue
        known = cache.get(entry) if cache else None
        if known is None:
            todo.append(entry)
        else:
            files[entry.path] = known
            cache.keep(entry)  # type: ignore[union-attr]

    def work(entry: Entry) -> tuple[str, str]:
        digest = hash_file(scan.root / entry.path, inode=entry.inode)
        if cache:
            cache.put(entry, digest, started)
        return entry.path, digest

    if len(todo) > 1:
        with ThreadPoolExecutor(max_workers=workers or min(4, (os.cpu_count() or 1) + 1)) as pool:
            files.update(pool.map(work, todo))
    else:
        files.update(map(work, todo))
    if cache:
        cache.save(scan.root)
    total = hashlib.sha256()
    result = ContextDigest(digest="", scan=scan, files=files, hashed_bytes=sum(e.size for e in todo))
    total.update(CONTEXT_HASH_VERSION)
    for record in result.records():
        total.update(record)
    return ContextDigest(digest="sha256:" + total.hexdigest(), scan=scan, files=files, hashed_bytes=result.hashed_bytes)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def human_bytes(n: int) -> str:
    """``1536`` → ``'1.5 KiB'``."""
    return _human(n)


def parse_size(text: str | int) -> int:
    """``'500MB'``, ``'2GiB'``, ``1048576`` → bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*", text.lower())
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 500MB or 2GiB)")
    unit = (match.group(2) or "b").rstrip("b").rstrip("i") or ""
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[unit]
    return int(float(match.group(1)) * factor)
