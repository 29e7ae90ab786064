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
blocking and without following a symlink, and must still be the regular file the walk
saw (same inode), so a FIFO or a link swapped in mid-walk is an error, not a hang or a
read outside the context. Each directory is opened the same way and checked to be the
one its parent listed (device and inode) before it is listed.

Speed: a no-op build's cost is this module's. Small files are hashed in order on one
thread through one reused buffer (open, fstat, read, close: the fewest system calls
that keep the checks); large files are shared with helper threads. The walk lstat-s
each entry once, through its directory's descriptor.

The stat cache (``~/.cache/imagegate/stat/``, or ``$IMAGEGATE_CACHE_DIR``)
remembers ``path, size, mtime_ns, ctime_ns, inode → sha256`` so an unchanged
context is not re-read. The trade-off is git's: a change that keeps size,
mtime, ctime and inode identical is not seen. ``ctime`` cannot be set from
user space, so only a filesystem that lies about it can fool the cache; files
modified within two seconds of a scan are never cached ("racily clean"). When the
whole walk is the one last cached (every entry's path, kind, mode, target and stat),
the context digest is reused as is. Pass ``use_cache=False`` (``--no-cache``) to hash
every byte.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import json
import os
import re
import stat
import struct
import threading
import time
from array import array
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

from imagegate._errors import ContextError
from imagegate.build._files import inside, read_regular

DOCKERIGNORE = ".dockerignore"
CHUNK = 1 << 20  # 1 MiB reads: memory stays flat whatever the file size
_RACY_NS = 2_000_000_000
_CACHE_VERSION = 3
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

    @property
    def fast_matcher(self) -> Callable[[str], re.Match[str] | None] | None:
        """:meth:`fast_excludes` as one bound ``re.match`` (a hit means excluded), or None."""
        return self._combined.match if self._combined is not None else None

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


class Entry(NamedTuple):
    """One entry of the context as it will be sent: a file, a directory or a symlink.

    A named tuple rather than a dataclass: a walk makes one per entry, and tens of thousands of
    them are built on every no-op build, so their construction cost is the walk's cost.
    """

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


_BY_NAME = attrgetter("name")
_BY_PATH = itemgetter(0)
_NEW = tuple.__new__  # Entry(...) without the keyword-handling __new__: the walk's hot path
_NO_INFO: list[bool] = []  # no per-pattern results to pass down (no ``!`` exceptions)
_S_IFMT, _S_IFREG, _S_IFDIR = 0o170000, stat.S_IFREG, stat.S_IFDIR


def _list(directory: str, seen: os.stat_result | None = None) -> list[os.DirEntry[str]]:
    """The entries of *directory* sorted by name, each already ``lstat``-ed.

    The directory is opened without following a symlink and, when the walk saw it in its parent
    (*seen*), checked to be that same directory (device and inode): one swapped for a symlink or
    another directory mid-walk is an error, never a listing of somewhere else. Its entries are
    listed and ``lstat``-ed through that descriptor (one path component per call, not the whole
    path), and it is closed before the walk goes deeper, so open descriptors never grow with depth.
    """
    try:
        fd = os.open(directory, _DIRECTORY)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and seen is not None:
            raise ContextError("replaced while the context was being read; run the build again", path=directory) from None
        raise ContextError(
            f"cannot list directory: {exc.strerror}; fix its permissions or add it to .dockerignore", path=directory
        ) from None
    try:
        if seen is not None:
            now = os.fstat(fd)
            if now.st_ino != seen.st_ino or now.st_dev != seen.st_dev:
                raise ContextError("replaced while the context was being read; run the build again", path=directory)
        try:
            with os.scandir(fd) as listing:
                children = sorted(listing, key=_BY_NAME)
        except OSError as exc:
            raise ContextError(
                f"cannot list directory: {exc.strerror}; fix its permissions or add it to .dockerignore", path=directory
            ) from None
        for child in children:
            try:
                child.stat(follow_symlinks=False)  # kept by the DirEntry; needs the descriptor open
            except OSError as exc:
                raise ContextError(f"cannot stat: {exc.strerror}", path=f"{directory}/{child.name}") from None
        return children
    finally:
        os.close(fd)


_DIRECTORY = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


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

    The walk is depth-first in sorted name order, with an explicit stack (a hostile context
    may nest directories deeper than Python's recursion limit). One ``lstat`` per entry,
    reused for everything the entry records.
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
    fast = rules.fast_matcher
    entries: list[Entry] = []
    append = entries.append
    kept: set[str] = set()
    excluded_bytes = excluded_entries = included = 0
    limit: float = max_bytes if max_bytes is not None else float("inf")
    # (children iterator, path prefix, parent pattern results): the directories being listed
    top = str(root)
    stack: list[tuple[Iterator[os.DirEntry[str]], str, list[bool] | None]] = [(iter(_list(top)), "", None)]
    with _gc_paused():
        while stack:
            children, prefix, parent = stack[-1]
            for child in children:
                path = prefix + child.name
                if fast is not None:
                    excluded, info = fast(path) is not None, _NO_INFO
                else:
                    excluded, info = rules.match(path, parent)
                if excluded and path in keep:
                    excluded = False
                st = child.stat(follow_symlinks=False)  # no system call: _list did it
                fmt = st.st_mode & _S_IFMT
                if excluded:
                    if fmt == _S_IFDIR:
                        if rules.may_reinclude_below(path):
                            stack.append((iter(_list(f"{top}/{path}", st)), path + "/", info))
                            break
                        if measure_excluded:
                            size, count = _measure(f"{top}/{path}")
                            excluded_bytes += size
                            excluded_entries += count
                        else:
                            excluded_entries += 1
                    else:
                        excluded_bytes += st.st_size if fmt == _S_IFREG else 0
                        excluded_entries += 1
                    continue
                if path in keep:
                    kept.add(path)
                if fmt == _S_IFREG:
                    append(_NEW(Entry, (path, "file", st.st_mode & 0o7777, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                        st.st_ino, "")))
                    included += st.st_size
                    if included > limit:
                        raise ContextError(
                            f"the context is over the configured maximum of {_human(int(limit))} "
                            f"(reached at {path}); add large files to .dockerignore or raise max-context-size",
                            path=str(root),
                        )
                elif fmt == _S_IFDIR:
                    append(_NEW(Entry, (path, "dir", st.st_mode & 0o7777, 0, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, "")))
                    stack.append((iter(_list(f"{top}/{path}", st)), path + "/", info))
                    break
                else:
                    append(_other(root, f"{top}/{path}", path, st))
            else:
                stack.pop()
    for path in sorted(keep - kept):  # e.g. a Dockerfile inside an excluded directory
        full = root / path
        if full.is_file() and not full.is_symlink():
            st = full.lstat()
            append(Entry(path, "file", stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    entries.sort(key=_BY_PATH)
    return Scan(root=root, entries=tuple(entries), excluded_bytes=excluded_bytes, excluded_entries=excluded_entries)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No automatic garbage collection while a walk allocates an object per entry.

    Each collection the allocations would trigger walks every tracked object in the process
    (an application has hundreds of thousands), and nothing a walk allocates is cyclic garbage.
    Mercurial's ``util.nogc`` does the same around its hot loops. A collector that was already
    off stays off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _measure(directory: str) -> tuple[int, int]:
    """(bytes of regular files, entries) below *directory*, itself counted; without recursion."""
    size, count, todo = 0, 1, [directory]
    while todo:
        try:
            listing = os.scandir(todo.pop())
        except OSError:
            continue
        with listing:
            for child in listing:
                count += 1
                try:
                    st = child.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    size += st.st_size
                elif stat.S_ISDIR(st.st_mode):
                    todo.append(child.path)
    return size, count


def _other(root: Path, full: str, rel: str, st: os.stat_result) -> Entry:
    """A symlink (which must stay inside the context), or an error for a socket, FIFO or device."""
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(full)
        resolved = Path(os.path.normpath(os.path.join(os.path.dirname(full), target)))
        if os.path.isabs(target) or not (resolved == root or root in resolved.parents):
            raise ContextError(
                f"symlink points outside the build context (-> {target}); the engine cannot follow it. "
                "Copy the file into the context, or add the link to .dockerignore",
                path=full,
            )
        return Entry(rel, "symlink", stat.S_IMODE(st.st_mode), 0, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, target)
    raise ContextError(
        "not a regular file, directory or symlink (a socket, fifo or device); add it to .dockerignore", path=full
    )


# --- hashing --------------------------------------------------------------------------------

# O_NONBLOCK: a FIFO swapped in after the walk opens at once instead of waiting for a writer;
# O_NOFOLLOW: a file swapped for a symlink after the walk is refused, never followed.
_OPEN = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
LARGE = 4 * CHUNK  # files this big are hashed on helper threads (hashlib drops the GIL per chunk)


def _read_error(exc: OSError, path: str) -> ContextError:
    if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink where the walk saw a regular file
        return ContextError("cannot read: replaced by a symlink while the context was being read", path=path)
    return ContextError(
        f"cannot read: {exc.strerror or exc}; fix its permissions or add it to .dockerignore", path=path
    )


class _Reader:
    """Hashes regular files through one reused buffer: open, ``fstat``, read, close.

    Why not ``hashlib.file_digest`` or a thread per file: on a context of small files the
    per-file cost *is* the cost, and this is the fewest system calls and Python objects that
    keep every check (a regular file, the inode the walk saw, never blocking on a FIFO, never
    following a symlink).
    """

    __slots__ = ("buffers", "view", "size")

    def __init__(self) -> None:
        buffer = bytearray(CHUNK)
        self.buffers = (buffer,)  # os.readv's argument, built once
        self.view = memoryview(buffer)
        self.size = CHUNK

    def _read(self, fd: int) -> int:
        try:
            return _readv(fd, self.buffers)
        except BlockingIOError:  # O_NONBLOCK is a no-op on regular files, but not on every filesystem
            os.set_blocking(fd, True)
            return _readv(fd, self.buffers)

    def hexdigest(self, path: str, inode: int | None) -> str:
        try:
            fd = os.open(path, _OPEN)
        except OSError as exc:
            raise _read_error(exc, path) from None
        try:
            st = os.fstat(fd)
            if st.st_mode & _S_IFMT != _S_IFREG:
                if stat.S_ISDIR(st.st_mode):
                    raise ContextError("cannot read: Is a directory; fix its permissions or add it to .dockerignore", path=path)
                raise ContextError("cannot read: not a regular file (a FIFO, socket or device)", path=path)
            if inode is not None and st.st_ino != inode:
                raise ContextError("cannot read: replaced by another file while the context was being read", path=path)
            view = self.view
            n = self._read(fd)
            digest = hashlib.sha256(view[:n])
            # A first read shorter than the buffer that returned all the bytes fstat counted is
            # the end of the file, as the further read (one more system call per file) would say.
            if n == self.size or n != st.st_size:
                while n := self._read(fd):
                    digest.update(view[:n])
            return digest.hexdigest()
        except OSError as exc:
            raise _read_error(exc, path) from None
        finally:
            os.close(fd)


def _read_copy(fd: int, buffers: tuple[bytearray]) -> int:  # pragma: no cover - platforms without readv
    data = os.read(fd, len(buffers[0]))
    buffers[0][: len(data)] = data
    return len(data)


_readv: Callable[[int, tuple[bytearray]], int] = getattr(os, "readv", _read_copy)


def hash_file(path: str | os.PathLike[str], *, inode: int | None = None) -> str:
    """sha256 hex of a regular file (the inode the walk saw, when given), read in 1 MiB chunks.

    Opened without blocking and without following a symlink, and checked on the descriptor, so
    a file swapped for a FIFO or a link after the walk is an error, never a hang or a read
    elsewhere; memory does not grow with the file.
    """
    return _Reader().hexdigest(os.fspath(path), inode)


def _hash_files(root: str, todo: Sequence[Entry], workers: int | None = None) -> list[str]:
    """The sha256 hex of each of *todo* (files under *root*, which ends with a separator), in order.

    Small files are hashed in order on this thread: their cost is per-file system calls and
    Python, which more threads would only add GIL hand-offs to (measured: two threads are no
    faster on 16 KB files). Files of ``LARGE`` bytes or more are shared with helper threads
    (hashlib releases the GIL while it hashes each 1 MiB chunk), so a context of a few big
    files uses every core. No future per file: each thread takes the next large file from a
    shared iterator.
    """
    digests = [""] * len(todo)
    large = [i for i, e in enumerate(todo) if e[3] >= LARGE]
    helpers = min(len(large), (workers or _cores()) - 1) if len(large) > 1 else 0
    if not helpers:
        hexdigest = _Reader().hexdigest
        for i, entry in enumerate(todo):
            digests[i] = hexdigest(root + entry[0], entry[6])
        return digests
    queue = iter(large)
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[BaseException] = []

    def drain() -> None:
        hexdigest = _Reader().hexdigest
        try:
            while not stop.is_set():
                with lock:
                    i = next(queue, None)
                if i is None:
                    return
                digests[i] = hexdigest(root + todo[i][0], todo[i][6])
        except BaseException as exc:  # re-raised on the calling thread
            failures.append(exc)
            stop.set()

    threads = [threading.Thread(target=drain, name=f"imagegate-hash-{n}", daemon=True) for n in range(helpers)]
    for thread in threads:
        thread.start()
    try:
        hexdigest = _Reader().hexdigest
        for i, entry in enumerate(todo):
            if stop.is_set():
                break
            if entry[3] < LARGE:
                digests[i] = hexdigest(root + entry[0], entry[6])
        drain()  # then help with the large files
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]
    return digests


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class StatCache:
    """``(path, size, mtime_ns, ctime_ns, inode) → sha256`` for one context, kept outside it.

    Stored as JSON ``{"files": {path: "size mtime_ns ctime_ns inode sha256"}, "tree": …}`` (the
    numbers in hex): one string per file keeps loading 10,000 entries at a few milliseconds.

    ``tree`` is ``{"fingerprint", "digest"}``: the :func:`_fingerprint` of the whole walk (every
    entry's path, kind, mode, target and stat) and the context digest it gave, written only when
    every file's sha256 was cached too (none racily clean). When the walk's fingerprint is the
    same, every file passes the per-file test above, so the digest is the one the per-file path
    would compute again: it is returned without the per-file loop or re-encoding the records.
    """

    def __init__(self, context: Path, directory: Path | None = None) -> None:
        base = directory or cache_dir() / "stat"
        self.file = base / (hashlib.sha256(str(context).encode()).hexdigest()[:24] + ".json")
        self._old: dict[str, str] = {}
        self._new: dict[str, str] = {}
        self._tree: tuple[str, str] | None = None
        self._new_tree: tuple[str, str] | None = None
        self._lock = threading.Lock()
        try:
            with open(self.file, "rb") as handle:
                data = json.loads(handle.read())
            if data.get("version") == _CACHE_VERSION and data.get("context") == str(context):
                files = data.get("files", {})
                self._old = {k: v for k, v in files.items() if isinstance(v, str)}
                tree = data.get("tree") or {}
                if isinstance(tree.get("fingerprint"), str) and _DIGEST.fullmatch(str(tree.get("digest"))):
                    self._tree = (tree["fingerprint"], tree["digest"])
        except (OSError, ValueError, AttributeError):
            self._old, self._tree = {}, None

    @staticmethod
    def _key(entry: Entry) -> str:
        return "%x %x %x %x " % entry[3:7]  # size, mtime_ns, ctime_ns, inode

    def get(self, entry: Entry) -> str | None:
        hit = self._old.get(entry.path)
        if hit is not None:
            key = self._key(entry)
            if len(hit) == len(key) + 64 and hit.startswith(key):
                return hit[len(key):]
        return None

    def tree(self, fingerprint: str | None) -> tuple[str, dict[str, str]] | None:
        """(context digest, path → sha256) when the walk is the one last cached whole; else None."""
        if fingerprint is None or self._tree is None or self._tree[0] != fingerprint:
            return None
        self._new, self._new_tree = self._old, self._tree
        return self._tree[1], {path: value[-64:] for path, value in self._old.items()}

    def lookup(self, files: Iterable[Entry]) -> tuple[dict[str, str], list[Entry]]:
        """(path → sha256 of the files whose stat is unchanged, the files to hash): :meth:`get`
        and :meth:`keep` over a whole context in one loop."""
        old, new, key_of = self._old, self._new, self._key
        known: dict[str, str] = {}
        todo: list[Entry] = []
        for entry in files:
            path = entry[0]
            hit = old.get(path)
            if hit is not None:
                key = key_of(entry)
                if len(hit) == len(key) + 64 and hit.startswith(key):
                    known[path] = hit[len(key):]
                    new[path] = hit
                    continue
            todo.append(entry)
        return known, todo

    def keep(self, entry: Entry) -> None:
        """Carry a hit over to the new cache (it was not racy when stored, and nothing changed)."""
        self._new[entry.path] = self._old[entry.path]

    def put(self, entry: Entry, digest: str, started_ns: int) -> None:
        if started_ns - entry.mtime_ns < _RACY_NS or started_ns - entry.ctime_ns < _RACY_NS:
            return  # racily clean: a write in the same tick could go unseen
        with self._lock:
            self._new[entry.path] = self._key(entry) + digest

    def complete(self, files: int, fingerprint: str | None, digest: str) -> None:
        """Remember the whole walk's digest when all of its *files* are cached (none racy)."""
        self._new_tree = (fingerprint, digest) if fingerprint is not None and len(self._new) == files else None

    def save(self, context: Path) -> None:
        if self._new == self._old and self._new_tree == self._tree:
            return
        import tempfile  # only when something changed: a no-op writes nothing

        tree = {"fingerprint": self._new_tree[0], "digest": self._new_tree[1]} if self._new_tree else None
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".stat.", dir=self.file.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"version": _CACHE_VERSION, "context": str(context), "files": self._new, "tree": tree}, handle)
            os.replace(tmp, self.file)
        except OSError:
            pass  # a cache that cannot be written only costs time


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _fingerprint(entries: Sequence[Entry]) -> str | None:
    """sha256 of everything the walk saw: each entry's path, kind, mode, size, mtime, ctime,
    inode and symlink target (each column hashed on its own, so no column can run into the next).
    None when a number does not fit 64 bits (the per-file path then does the work).

    Built from whole columns with ``map``/``join``/``array``: a Python loop over the entries
    would cost as much as the per-file cache test it replaces.
    """
    columns = hashlib.sha256(CONTEXT_HASH_VERSION)  # a new record encoding never meets an old digest
    for text in ("\0".join(map(_PATH, entries)), "\0".join(map(_KIND, entries)), "\0".join(map(_TARGET, entries))):
        columns.update(hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest())
    try:
        numbers = array("q", chain.from_iterable(map(_NUMBERS, entries)))
    except OverflowError:  # an inode number ≥ 2**63
        return None
    columns.update(hashlib.sha256(numbers).digest())
    columns.update(len(entries).to_bytes(8, "big"))
    return columns.hexdigest()


_PATH, _KIND, _TARGET = itemgetter(0), itemgetter(1), itemgetter(7)
_NUMBERS = itemgetter(2, 3, 4, 5, 6)  # mode, size, mtime_ns, ctime_ns, inode


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


def _context_digest(entries: Sequence[Entry], files: Mapping[str, str]) -> str:
    """``sha256(CONTEXT_HASH_VERSION + every record)``: the bytes of :meth:`ContextDigest.records`,
    packed in one loop and hashed in large updates (a test holds the two equal)."""
    total = hashlib.sha256(CONTEXT_HASH_VERSION)
    head, length, kinds, get = _HEAD, _LENGTH, _KIND_CODES, files.get
    parts: list[bytes] = []
    add = parts.append
    for path, kind, mode, _size, _mtime, _ctime, _inode, target in entries:
        name = path.encode("utf-8", "surrogateescape")
        data = (get(path, "") if kind == "file" else target).encode("utf-8", "surrogateescape")
        add(head(kinds[kind], mode, len(name)))
        add(name)
        add(length(len(data)))
        add(data)
        if len(parts) >= 16384:
            total.update(b"".join(parts))
            parts.clear()
    total.update(b"".join(parts))
    return "sha256:" + total.hexdigest()


_HEAD = struct.Struct(">cHI").pack  # kind code, mode, length of the path
_LENGTH = struct.Struct(">I").pack


def hash_context(
    context: str | os.PathLike[str] | Scan,
    *,
    always: Iterable[str] = (),
    max_bytes: int | None = None,
    use_cache: bool = True,
    cache_directory: Path | None = None,
    workers: int | None = None,
) -> ContextDigest:
    """Hash every included entry of *context* (a path, or a :func:`scan_context` result).

    *workers* bounds the threads that hash large files (default: one per core).
    """
    scan = context if isinstance(context, Scan) else scan_context(context, always=always, max_bytes=max_bytes)
    if not use_cache:
        todo = [e for e in scan.entries if e[1] == "file"]
        files = dict(zip(map(_PATH, todo), _hash_files(str(scan.root) + os.sep, todo, workers)))
        digest = _context_digest(scan.entries, files)
        return ContextDigest(digest=digest, scan=scan, files=files, hashed_bytes=sum(e.size for e in todo))
    cache = StatCache(scan.root, cache_directory)
    fingerprint = _fingerprint(scan.entries)
    whole = cache.tree(fingerprint)
    if whole is not None:  # nothing changed since the last walk: nothing to read, nothing to write
        return ContextDigest(digest=whole[0], scan=scan, files=whole[1], hashed_bytes=0)
    started = time.time_ns()
    regular = [e for e in scan.entries if e[1] == "file"]
    files, todo = cache.lookup(regular)
    if todo:
        for entry, sha in zip(todo, _hash_files(str(scan.root) + os.sep, todo, workers)):
            files[entry[0]] = sha
            cache.put(entry, sha, started)
    digest = _context_digest(scan.entries, files)
    cache.complete(len(regular), fingerprint, digest)
    cache.save(scan.root)
    return ContextDigest(digest=digest, scan=scan, files=files, hashed_bytes=sum(e.size for e in todo))


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
