"""The host's registry cache: what is addressed by digest is fetched once per host, not once per process.

Each Airflow task process or Dagster step starts a new interpreter; without this, every one of them
fetched the same manifest and config again. Entries are files under ``~/.cache/imagegate/registry``
(``$IMAGEGATE_REGISTRY_CACHE_DIR``; else ``$IMAGEGATE_CACHE_DIR/registry``, else
``$XDG_CACHE_HOME/imagegate/registry``), one per (kind, registry, repository, digest):

- **Verified on read.** A manifest or config is re-hashed and must equal its digest; derived data
  (the ``/etc/passwd`` found in a layer, a registry's scheme) carries the SHA-256 of its body. An
  entry that fails is deleted and the caller fetches from the registry as if it were absent, so a
  torn, corrupted or altered file costs one request, never a wrong answer.
- **Namespaced by registry and repository.** Content addressed by digest would be safe to share once
  verified, but what the digest does not cover would not be: the media type the registry declared,
  and that this registry serves that digest in that repository to these credentials at all. So an
  entry answers only for the registry and repository that served it (at most one extra fetch per
  repository for the same bytes).
- **No tags.** A tag's digest is never stored here: a moved tag would go unseen. It costs one ``HEAD``
  per process (and per ``tag_ttl`` in a long-lived one).
- **Safe under concurrent processes.** A write goes to a temporary file in the entry's directory and
  is renamed over the entry (``os.replace``): readers see the old file or the new one, never a torn
  one; two writers of one entry write the same bytes. Processes that miss the same entry at once
  take turns on a lock file (``flock``) beside it, so one of them fetches and the others read its
  entry; a waiter gives up after half its time left and fetches itself (a stuck fetcher never
  blocks a check).
- **Bounded.** At most ``max_bytes`` (default 256 MiB, ``$IMAGEGATE_REGISTRY_CACHE_SIZE``): a
  writer prunes the least recently used entries (by mtime, refreshed on a hit at most hourly) once
  the total is over, checking at most every few minutes or every ``max_bytes / 16`` it wrote.
- **Only ours.** The directory is created 0700 and files 0600; a directory owned by another user or
  writable by group or others (someone could plant entries) is refused, and so is any entry that is
  not a regular file of ours. Every file operation goes through a descriptor of the checked
  directory, so swapping the path afterwards changes nothing. A refused or unusable directory turns
  the cache off for the process (a debug message on the ``imagegate.cache`` logger), never the check.

``IMAGEGATE_REGISTRY_CACHE=off`` (or ``RegistryClient(disk_cache=False)``) turns it off;
``imagegate cache info`` / ``imagegate cache clear`` show and empty it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

__all__ = ["DEFAULT_MAX_BYTES", "CacheStats", "DiskCache", "default_directory", "parse_size"]

log = logging.getLogger("imagegate.cache")

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
MAGIC = b"imagegate-cache 1\n"
MAX_HEADER = 16 * 1024
CONTENT_KINDS = frozenset({"manifest", "config"})  # the key is the digest of the body
PRUNE_EVERY = 300.0  # seconds between size checks by one host's writers
TOUCH_AFTER = 3600.0  # a hit refreshes an entry's mtime (its LRU age) at most this often
STALE_TEMP = 3600.0  # a writer's temporary file (or an idle lock file) older than this was left behind
_TEMP, _LOCK = ".tmp-", ".lock-"
_ENTRIES = "v1"
_STAMP = ".pruned"
_OFF = frozenset({"0", "off", "false", "no", "none", "disabled"})
_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2, "MIB": 1024**2,
          "G": 1024**3, "GB": 1024**3, "GIB": 1024**3}


def default_directory(environ: Any = None) -> str:
    """Where the registry cache lives (see the module's docstring for the variables)."""
    env = os.environ if environ is None else environ
    if env.get("IMAGEGATE_REGISTRY_CACHE_DIR"):
        return os.path.abspath(env["IMAGEGATE_REGISTRY_CACHE_DIR"])
    if env.get("IMAGEGATE_CACHE_DIR"):
        return os.path.join(os.path.abspath(env["IMAGEGATE_CACHE_DIR"]), "registry")
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(base), "imagegate", "registry")


def parse_size(text: str) -> int:
    """``"256MB"``, ``"1GiB"``, ``"5000000"`` → bytes (binary units)."""
    value = text.strip().upper().replace(" ", "")
    number = value.rstrip("KMGIB")
    unit = value[len(number):]
    if not number or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size; write e.g. 256MB or 1GB")
    try:
        size = int(float(number) * _UNITS[unit])
    except ValueError:
        raise ValueError(f"{text!r} is not a size; write e.g. 256MB or 1GB") from None
    if size < 0:
        raise ValueError(f"{text!r} is not a size; write e.g. 256MB or 1GB")
    return size


@dataclass(frozen=True)
class CacheStats:
    directory: str
    entries: int
    bytes: int
    max_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"directory": self.directory, "entries": self.entries, "bytes": self.bytes, "max_bytes": self.max_bytes}


class DiskCache:
    """A verified, bounded, per-user file cache of registry content (see the module's docstring).

    The directory is checked and opened on first use; :attr:`refused` then says why it was not used.
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.directory = os.path.abspath(directory)
        self.max_bytes = max_bytes
        self.refused: str | None = None
        self._fd: int | None = None
        self._opened = False
        self._lock = threading.Lock()
        self._written = 0

    @classmethod
    def from_environment(cls, environ: Any = None) -> DiskCache | None:
        """The default cache, or None when ``IMAGEGATE_REGISTRY_CACHE`` turns it off."""
        env = os.environ if environ is None else environ
        if env.get("IMAGEGATE_REGISTRY_CACHE", "").strip().lower() in _OFF:
            return None
        size = DEFAULT_MAX_BYTES
        if env.get("IMAGEGATE_REGISTRY_CACHE_SIZE"):
            try:
                size = parse_size(env["IMAGEGATE_REGISTRY_CACHE_SIZE"])
            except ValueError as exc:
                log.warning("IMAGEGATE_REGISTRY_CACHE_SIZE: %s; using %d bytes", exc, DEFAULT_MAX_BYTES)
        return cls(default_directory(env), max_bytes=size)

    # -- the directory ------------------------------------------------------------------------------

    def _root(self) -> int | None:
        """A descriptor of the checked directory (opened once), or None when it cannot be used."""
        if self._opened:
            return self._fd
        with self._lock:
            if not self._opened:
                self._fd = self._open_root()
                self._opened = True
        return self._fd

    def _open_root(self) -> int | None:
        if not hasattr(os, "geteuid") or not hasattr(os, "O_DIRECTORY"):
            return self._refuse("this platform has no POSIX ownership checks")
        try:
            if not os.path.exists(self.directory):
                os.makedirs(os.path.dirname(self.directory), exist_ok=True)
                try:
                    os.mkdir(self.directory, 0o700)
                except FileExistsError:
                    pass  # another process made it: checked below like any other
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            return self._refuse(f"cannot open it ({exc.strerror or exc})")
        st = os.fstat(fd)
        problem = None
        if st.st_uid != os.geteuid():
            problem = f"it is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
        elif st.st_mode & 0o022:
            problem = f"it is writable by {'group and others' if st.st_mode & 0o022 == 0o022 else 'group' if st.st_mode & 0o020 else 'others'} (mode {stat.S_IMODE(st.st_mode):o}); someone could plant entries"
        if problem:
            os.close(fd)
            return self._refuse(problem)
        if st.st_mode & 0o077:
            try:
                os.fchmod(fd, 0o700)  # ours, but readable by others: which images were checked is nobody else's business
            except OSError:
                pass
        return fd

    def _refuse(self, reason: str) -> None:
        self.refused = reason
        log.debug("registry cache %s not used: %s; set IMAGEGATE_REGISTRY_CACHE_DIR to a directory of your own (mode 0700)",
                  self.directory, reason)
        return None

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
            self._fd, self._opened = None, True

    # -- entries --------------------------------------------------------------------------------------

    @staticmethod
    def _name(kind: str, registry: str, repository: str, key: str) -> tuple[str, str]:
        digest = hashlib.sha256("\0".join((kind, registry, repository, key)).encode("utf-8", "surrogateescape")).hexdigest()
        return f"{_ENTRIES}/{digest[:2]}", digest

    def get(self, kind: str, registry: str, repository: str, key: str, *, limit: int) -> tuple[bytes, dict[str, Any]] | None:
        """The verified body and metadata stored for this key, or None (absent, unreadable or discarded).

        For a manifest or config *key* is the digest the body must hash to; *limit* bounds the body.
        """
        root = self._root()
        if root is None:
            return None
        folder, name = self._name(kind, registry, repository, key)
        path = f"{folder}/{name}"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root)
        except OSError:
            return None  # absent (or a symlink someone put there: O_NOFOLLOW refuses it)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_size > limit + MAX_HEADER + len(MAGIC):
                reason = "not a regular file of this user's, or too large"
                data = b""
            else:
                data = _read_all(fd, st.st_size)
                reason = None
        except OSError:
            return None
        finally:
            os.close(fd)
        found = None if reason else _decode(data, kind, registry, repository, key, limit)
        if isinstance(found, str) or found is None:
            self._discard(root, path, kind, key, found if isinstance(found, str) else reason or "unreadable")
            return None
        if time.time() - st.st_mtime > TOUCH_AFTER:
            try:
                os.utime(path, dir_fd=root)  # recently used: the last to be evicted
            except OSError:
                pass
        return found

    def put(self, kind: str, registry: str, repository: str, key: str, body: bytes, meta: dict[str, Any] | None = None) -> None:
        """Store *body* (already verified by the caller) atomically; failures only cost a later fetch."""
        root = self._root()
        if root is None or len(body) > self.max_bytes // 4:
            return
        folder, name = self._name(kind, registry, repository, key)
        header = json.dumps({"kind": kind, "registry": registry, "repository": repository, "key": key,
                             "sha256": hashlib.sha256(body).hexdigest(), "meta": meta or {}},
                            separators=(",", ":"), sort_keys=True).encode()
        if len(header) > MAX_HEADER:
            return
        temp = f"{folder}/{_TEMP}{os.getpid()}-{threading.get_ident()}-{os.urandom(4).hex()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            try:
                fd = os.open(temp, flags, 0o600, dir_fd=root)
            except FileNotFoundError:
                _mkdirs(root, folder)
                fd = os.open(temp, flags, 0o600, dir_fd=root)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(MAGIC + header + b"\n" + body)
                os.replace(temp, f"{folder}/{name}", src_dir_fd=root, dst_dir_fd=root)
            except BaseException:
                _unlink(root, temp)
                raise
        except OSError as exc:
            log.debug("registry cache: cannot write into %s (%s)", self.directory, exc)
            return
        self._written += len(body) + len(header)
        self._maybe_prune(root)

    @contextlib.contextmanager
    def locked(self, kind: str, registry: str, repository: str, key: str, *, wait: float) -> Iterator[None]:
        """Hold this entry's lock while fetching it: another process that misses the same entry waits
        (at most *wait* seconds, then goes ahead without the lock) and finds the entry written."""
        root = self._root()
        fd = None
        if root is not None:
            folder, name = self._name(kind, registry, repository, key)
            path = f"{folder}/{_LOCK}{name}"
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                try:
                    fd = os.open(path, flags, 0o600, dir_fd=root)
                except FileNotFoundError:
                    _mkdirs(root, folder)
                    fd = os.open(path, flags, 0o600, dir_fd=root)
            except OSError:
                fd = None
        try:
            if fd is not None:
                _flock(fd, wait)
            yield
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock

    def _discard(self, root: int, path: str, kind: str, key: str, reason: str) -> None:
        log.debug("registry cache: discarding the %s entry for %s (%s)", kind, key, reason)
        try:
            os.unlink(path, dir_fd=root)
        except OSError:
            pass

    # -- size -------------------------------------------------------------------------------------------

    def _maybe_prune(self, root: int) -> None:
        try:
            age = time.time() - os.stat(_STAMP, dir_fd=root).st_mtime
        except OSError:
            age = PRUNE_EVERY + 1
        if age > PRUNE_EVERY or self._written > self.max_bytes // 16:
            self.prune()

    def _entries(self, root: int) -> Iterator[tuple[str, os.stat_result]]:
        try:
            top = os.open(_ENTRIES, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root)
        except OSError:
            return
        try:
            with os.scandir(top) as folders:
                names = [f.name for f in folders if f.is_dir(follow_symlinks=False)]
        finally:
            os.close(top)
        for folder in names:
            try:
                fd = os.open(f"{_ENTRIES}/{folder}", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root)
            except OSError:
                continue
            try:
                with os.scandir(fd) as files:
                    for entry in files:
                        try:
                            yield f"{_ENTRIES}/{folder}/{entry.name}", entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
            finally:
                os.close(fd)

    def prune(self) -> CacheStats:
        """Evict least recently used entries until the total is at most 3/4 of ``max_bytes``
        (when it is over ``max_bytes``), and temporary files left by crashed writers."""
        root = self._root()
        if root is None:
            return CacheStats(self.directory, 0, 0, self.max_bytes)
        self._written = 0
        try:
            fd = os.open(_STAMP, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=root)
            os.close(fd)
            os.utime(_STAMP, dir_fd=root)
        except OSError:
            pass
        now = time.time()
        entries: list[tuple[float, int, str]] = []
        for path, st in self._entries(root):
            if path.rpartition("/")[2].startswith((_TEMP, _LOCK)):
                if now - st.st_mtime > STALE_TEMP:
                    _unlink(root, path)  # a lock file in use then costs at most one more fetch, never an answer
                continue
            entries.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in entries)
        if total > self.max_bytes:
            entries.sort()
            goal = self.max_bytes * 3 // 4
            while entries and total > goal:
                _, size, path = entries.pop(0)
                _unlink(root, path)
                total -= size
        return CacheStats(self.directory, len(entries), total, self.max_bytes)

    def stats(self) -> CacheStats:
        """Entries and bytes now (nothing is evicted)."""
        root = self._root()
        if root is None:
            return CacheStats(self.directory, 0, 0, self.max_bytes)
        sizes = [st.st_size for path, st in self._entries(root) if not path.rpartition("/")[2].startswith((_TEMP, _LOCK))]
        return CacheStats(self.directory, len(sizes), sum(sizes), self.max_bytes)

    def clear(self) -> int:
        """Delete every entry (only this cache's own files); returns how many were removed."""
        root = self._root()
        if root is None:
            return 0
        removed = 0
        for path, _ in list(self._entries(root)):
            gone = _unlink(root, path)
            removed += 0 if path.rpartition("/")[2].startswith((_TEMP, _LOCK)) else gone
        return removed


# -- helpers -------------------------------------------------------------------------------------------


def _flock(fd: int, wait: float) -> None:
    """An exclusive lock on *fd* within *wait* seconds, or none (then the caller goes ahead unlocked)."""
    import fcntl

    end = time.monotonic() + max(wait, 0.0)
    delay = 0.002
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= end:
                log.debug("registry cache: waited %.1f s for another process's fetch; fetching too", wait)
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        except OSError:
            return  # a filesystem without locks: no waiting, at worst one fetch per process


def _read_all(fd: int, size: int) -> bytes:
    chunks = []
    left = size + 1  # one byte more than the size: a file that grew is read to its new end, then refused
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _decode(data: bytes, kind: str, registry: str, repository: str, key: str, limit: int) -> tuple[bytes, dict[str, Any]] | str:
    """(body, meta) of a stored entry, or why it is refused."""
    if not data.startswith(MAGIC):
        return "no header"
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER)
    if end < 0:
        return "no header"
    try:
        header = json.loads(data[len(MAGIC):end])
    except ValueError:
        return "unreadable header"
    body = data[end + 1:]
    if not isinstance(header, dict) or (header.get("kind"), header.get("registry"), header.get("repository"), header.get("key")) != (kind, registry, repository, key):
        return "written for another key"
    if len(body) > limit:
        return "larger than allowed"
    if kind in CONTENT_KINDS:
        algorithm, _, hexdigest = key.partition(":")
        if algorithm not in ("sha256", "sha384", "sha512") or hashlib.new(algorithm, body).hexdigest() != hexdigest:
            return "its bytes do not match the digest"
    elif hashlib.sha256(body).hexdigest() != header.get("sha256"):
        return "its bytes do not match their checksum"
    meta = header.get("meta")
    return body, meta if isinstance(meta, dict) else {}


def _mkdirs(root: int, folder: str) -> None:
    path = ""
    for part in folder.split("/"):
        path = f"{path}/{part}" if path else part
        try:
            os.mkdir(path, 0o700, dir_fd=root)
        except FileExistsError:
            pass


def _unlink(root: int, path: str) -> int:
    try:
        os.unlink(path, dir_fd=root)
        return 1
    except OSError:
        return 0
