"""Reading files of a build context as an attacker would like us not to: regular files only, bounded.

A build context is written by whoever controls the repository. A ``Dockerfile`` or
``.dockerignore`` that is a FIFO would make a plain ``open()`` wait forever; a symlink may point
at ``/etc/shadow``; a file may be swapped for a FIFO between the walk and the hash. So every read
here opens with ``O_NONBLOCK`` (opening a FIFO for reading then returns at once), checks with
``fstat`` on the open descriptor that it is a regular file (and, when the walk saw it, the same
inode), and reads at most a given size.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from imagegate._errors import ContextError, DockerfileError


class NotRegularFile(OSError):
    """The path is not a regular file (a FIFO, socket or device), or changed since it was walked."""


def open_regular(path: str | os.PathLike[str], *, expect_inode: int | None = None) -> int:
    """A file descriptor of *path*, which must be a regular file (the inode the walk saw, if given)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "Is a directory", str(path))
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(0, "not a regular file (a FIFO, socket or device)", str(path))
        if expect_inode is not None and st.st_ino != expect_inode:
            raise NotRegularFile(0, "replaced by another file while the context was being read", str(path))
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The whole of a regular file of at most *max_bytes* bytes."""
    fd = open_regular(path)
    try:
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > max_bytes:
                raise NotRegularFile(0, f"larger than {max_bytes} bytes", str(path))
            chunks.append(chunk)
    finally:
        os.close(fd)


def inside(root: Path, path: Path) -> Path | None:
    """*path* resolved (symlinks followed), when that stays inside *root* (itself resolved); else None."""
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return resolved if resolved == root or root in resolved.parents else None


def locate_dockerfile(context: str | os.PathLike[str], dockerfile: str | os.PathLike[str] | None) -> tuple[Path, Path, str]:
    """(context root, Dockerfile path, its path relative to the root) — one rule for build and lint.

    ``dockerfile`` is relative to the context (default ``Dockerfile``) or absolute. A Dockerfile
    that is, or links to, a file outside the context is refused, naming only the path given:
    nothing of the file it points to is read or shown.
    """
    given = Path(context)
    if not given.is_dir():
        raise ContextError("build context directory not found; pass an existing directory", path=str(given))
    root = given.resolve()
    path = Path(dockerfile) if dockerfile is not None and Path(dockerfile).is_absolute() else root / (dockerfile or "Dockerfile")
    if not os.path.lexists(path):
        raise DockerfileError(
            "Dockerfile not found; pass -f PATH (dockerfile=…) or add a Dockerfile to the context", path=str(path)
        )
    resolved = inside(root, path)
    if resolved is None:
        raise ContextError(
            f"the Dockerfile {path} is outside the build context (or links out of it); move it into the context",
            path=str(root),
        )
    return root, resolved, resolved.relative_to(root).as_posix()
