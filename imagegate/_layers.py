"""Find one file in an image's layers, as the engine's overlay would show it. Pure over byte chunks.

Used to read ``/etc/passwd`` when ``USER`` is a name (the Docker Engine resolves names from the
image's own file). Layers are searched newest first; within a layer, entries are read the way
containerd and moby apply them: each path is cleaned against ``/``, ``.wh.NAME`` deletes ``NAME``
in lower layers and ``.wh..wh..opq`` hides a directory's lower contents.

Stricter than the engine where the engine's answer would depend on details we would have to
reproduce exactly (the refusal tells the user to write a numeric ``USER``):

- the file or one of its parent directories is a symlink, hard link or other non-regular entry;
- the file appears twice in one layer;
- a gzip or tar stream is malformed, or the layer is zstd-compressed (no decoder in the standard
  library).

Memory stays flat: decompression is incremental with bounded output per step, the tar is read as
a stream, and only the wanted file (at most ``max_file`` bytes) is kept.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
import zlib
from dataclasses import dataclass
from typing import Iterator

MAX_FILE = 1 << 20  # a passwd file larger than 1 MiB is refused
_STEP = 1 << 20


class LayerError(ValueError):
    """The layer cannot be read safely; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class LayerFile:
    """What one layer says about the file: its content, or that lower layers' copies are hidden."""

    content: bytes | None
    hides_lower: bool


def clean(name: str) -> str:
    """A tar member name as an absolute, cleaned path (``./etc//passwd`` -> ``/etc/passwd``)."""
    return posixpath.normpath("/" + name).replace("//", "/")


class _Stream(io.RawIOBase):
    """Decompressed bytes of a layer from its compressed chunks (gzip members concatenated, or none)."""

    def __init__(self, chunks: Iterator[bytes], compression: str, limit: int) -> None:
        self._chunks = chunks
        self._gzip = compression == "gzip"
        self._inflater = zlib.decompressobj(wbits=31) if self._gzip else None
        self._pending = b""
        self._buffer = bytearray()
        self._limit = limit
        self._produced = 0
        self._done = False
        self._member_done = False

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while not self._buffer and not self._done:
            if self._inflater is not None and self._inflater.unconsumed_tail:
                data = self._inflater.unconsumed_tail
            elif self._pending:
                data, self._pending = self._pending, b""
            else:
                try:
                    data = next(self._chunks)
                except StopIteration:
                    self._finish()
                    return
                if self._inflater is None:
                    self._emit(data)
                    continue
            self._inflate(data)

    def _inflate(self, data: bytes) -> None:
        assert self._inflater is not None
        try:
            out = self._inflater.decompress(data, _STEP)
        except zlib.error as exc:
            raise LayerError(f"the gzip stream is malformed ({exc})") from None
        self._emit(out)
        if self._inflater.eof:
            rest = self._inflater.unused_data
            self._inflater = zlib.decompressobj(wbits=31)  # Go's gzip reader reads every member
            self._pending = rest
            self._member_done = True
        else:
            self._member_done = False

    def _finish(self) -> None:
        if self._inflater is not None and not self._member_done and self._produced:
            raise LayerError("the gzip stream ends in the middle of a member")
        self._done = True

    def _emit(self, data: bytes) -> None:
        self._produced += len(data)
        if self._produced > self._limit:
            raise LayerError(f"the layer unpacks to more than {self._limit} bytes")
        self._buffer += data

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        self._fill()
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        del self._buffer[:n]
        return n


def scan_layer(
    chunks: Iterator[bytes], *, compression: str, path: str, max_unpacked: int, max_file: int = MAX_FILE
) -> LayerFile:
    """Read the whole layer (so its digest can be checked to the end) and report *path* in it."""
    if compression not in ("", "gzip"):
        raise LayerError(f"{compression}-compressed layers cannot be read here")
    target = clean(path)
    parents = _parents(target)
    content: bytes | None = None
    hides = False
    stream = _Stream(chunks, compression, max_unpacked)
    try:
        with tarfile.open(fileobj=io.BufferedReader(stream, 1 << 16), mode="r|") as tar:
            for member in tar:
                name = clean(member.name)
                if name == target:
                    if not member.isreg():
                        raise LayerError(f"{target} is a {_kind(member)} in this layer, not a regular file")
                    if content is not None:
                        raise LayerError(f"{target} appears twice in one layer")
                    if member.size > max_file:
                        raise LayerError(f"{target} is {member.size} bytes, more than {max_file}")
                    handle = tar.extractfile(member)
                    content = handle.read() if handle is not None else b""
                elif name in parents and not member.isdir():
                    raise LayerError(f"{name} is a {_kind(member)} in this layer, not a directory")
                base = posixpath.basename(name)
                if base.startswith(".wh."):
                    directory = posixpath.dirname(name)
                    if base == ".wh..wh..opq":
                        hides = hides or directory in parents
                    else:
                        deleted = clean(posixpath.join(directory, base[4:]))
                        hides = hides or deleted == target or deleted in parents
            for _ in iter(lambda: stream.read(1 << 16), b""):
                pass  # padding after the end-of-archive blocks: read so the whole blob is hashed
    except tarfile.TarError as exc:
        raise LayerError(f"the layer is not a valid tar archive ({exc})") from None
    except EOFError:
        raise LayerError("the layer's tar archive is truncated") from None
    return LayerFile(content, hides)


def _parents(path: str) -> frozenset[str]:
    out = set()
    while path != "/":
        path = posixpath.dirname(path)
        out.add(path)
    return frozenset(out - {"/"})


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hard link"
    if member.isdir():
        return "directory"
    return "special file"
