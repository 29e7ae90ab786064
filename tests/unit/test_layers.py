"""Finding /etc/passwd in layers the way the engine's overlay shows it, and refusing what is unclear."""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib

import pytest

from imagegate._layers import LayerError, clean, scan_layer

LIMIT = 1 << 30


def tar(*members: tuple[str, str, bytes | str]) -> bytes:
    """(name, kind, data) with kind file | dir | symlink | link | fifo."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                payload = data if isinstance(data, bytes) else data.encode()
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "link": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("symlink", "link"):
                info.linkname = str(data)
            archive.addfile(info)
    return buffer.getvalue()


def scan(data: bytes, compression: str = "gzip", chunk: int = 7) -> object:
    body = gzip.compress(data) if compression == "gzip" else data
    chunks = iter([body[i : i + chunk] for i in range(0, len(body), chunk)])
    return scan_layer(chunks, compression=compression, path="/etc/passwd", max_unpacked=LIMIT)


def test_the_file_is_found_in_any_spelling() -> None:
    for name in ("etc/passwd", "./etc/passwd", "/etc/passwd", "etc//passwd", "etc/./passwd", "x/../etc/passwd"):
        found = scan(tar(("etc", "dir", b""), (name, "file", "app:x:1000:1000::/:/bin/sh\n")))
        assert found.content == b"app:x:1000:1000::/:/bin/sh\n", name  # type: ignore[attr-defined]


def test_plain_tar_and_multi_member_gzip() -> None:
    data = tar(("etc/passwd", "file", "a:x:1:1::/:/bin/sh\n"))
    assert scan(data, compression="").content  # type: ignore[attr-defined]
    two_members = gzip.compress(data[:1000]) + gzip.compress(data[1000:])
    found = scan_layer(iter([two_members]), compression="gzip", path="/etc/passwd", max_unpacked=LIMIT)
    assert found.content == b"a:x:1:1::/:/bin/sh\n"


@pytest.mark.parametrize(
    ("members", "hides"),
    [
        ([("etc/.wh.passwd", "file", b"")], True),
        ([("etc/.wh..wh..opq", "file", b"")], True),
        ([(".wh.etc", "file", b"")], True),
        ([("etc/.wh.group", "file", b"")], False),
        ([("usr/.wh..wh..opq", "file", b"")], False),
        ([("etc/hostname", "file", b"x")], False),
    ],
)
def test_whiteouts(members: list[tuple[str, str, bytes]], hides: bool) -> None:
    found = scan(tar(*members))
    assert found.content is None and found.hides_lower is hides  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([("etc/passwd", "symlink", "/tmp/passwd")], "symlink"),
        ([("etc/passwd", "link", "tmp/passwd")], "hard link"),
        ([("etc/passwd", "fifo", b"")], "special file"),
        ([("etc/passwd", "dir", b"")], "directory"),
        ([("etc", "symlink", "/tmp")], "/etc is a symlink"),
        ([("etc/passwd", "file", "a"), ("./etc/passwd", "file", "b")], "twice"),
        ([("etc/passwd", "file", b"x" * (2 << 20))], "bytes, more than"),
    ],
)
def test_what_cannot_be_read_safely_is_refused(members: list[tuple[str, str, bytes]], reason: str) -> None:
    with pytest.raises(LayerError, match=reason):
        scan(tar(*members))


def test_malformed_streams_are_refused() -> None:
    with pytest.raises(LayerError, match="gzip"):
        scan_layer(iter([b"\x1f\x8bnot gzip"]), compression="gzip", path="/etc/passwd", max_unpacked=LIMIT)
    truncated = gzip.compress(tar(("etc/passwd", "file", "a")))[:-20]
    with pytest.raises(LayerError):
        scan_layer(iter([truncated]), compression="gzip", path="/etc/passwd", max_unpacked=LIMIT)
    with pytest.raises(LayerError, match="not a valid tar|truncated"):
        scan_layer(iter([b"x" * 600]), compression="", path="/etc/passwd", max_unpacked=LIMIT)
    with pytest.raises(LayerError, match="zstd"):
        scan_layer(iter([b""]), compression="zstd", path="/etc/passwd", max_unpacked=LIMIT)


def test_a_gzip_bomb_stops_at_the_limit_without_filling_memory() -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(compressor.compress(b"\0" * (1 << 20)) for _ in range(256)) + compressor.flush()
    with pytest.raises(LayerError, match="unpacks to more than"):
        scan_layer(iter([bomb]), compression="gzip", path="/etc/passwd", max_unpacked=32 << 20)


def test_clean() -> None:
    assert clean("./etc/../etc/passwd") == "/etc/passwd"
    assert clean("../../etc/passwd") == "/etc/passwd"
    assert clean("") == "/"
