"""Build contexts written by an attacker: ambiguous names, FIFOs, symlinks out of the context."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagegate import ContextError, DockerfileError, lint_dockerfile
from imagegate.build._context import ContextDigest, Entry, Scan, hash_context, scan_context

ROOT = Path(__file__).resolve().parents[2]
SECRET_LINE = "root:x:0:0:do-not-print-this-line:/root:/bin/bash"


def write(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_file_names_cannot_forge_another_contexts_records(tmp_path: Path) -> None:
    """The v1 encoding ('kind mode path content' lines) let one file pose as two: v2 length-prefixes."""
    h_a = hashlib.sha256(b"A").hexdigest()
    one = write(tmp_path / "one", {f"a {h_a}\nfile 0644 b": b"B"})
    two = write(tmp_path / "two", {"a": b"A", "b": b"B"})
    for root in (one, two):
        os.chmod(root / ("a" if root == two else f"a {h_a}\nfile 0644 b"), 0o644)
    assert hash_context(one, use_cache=False).digest != hash_context(two, use_cache=False).digest


NAMES = st.text(alphabet=st.sampled_from("ab \n\t:=/."), min_size=1, max_size=6).filter(
    lambda n: not n.startswith("/") and not n.endswith("/") and "//" not in n and n not in (".", "..")
    and all(part not in ("", ".", "..") for part in n.split("/"))
)


def _digest(entries: list[tuple[str, str, str]]) -> str:
    """The context digest of hand-made entries (path, kind, content) without touching a disk."""
    scan = Scan(Path("/nowhere"), tuple(Entry(p, k, 0o644, 0, 0, 0, 0, c if k == "symlink" else "") for p, k, c in entries), 0, 0)
    files = {p: c for p, k, c in entries if k == "file"}
    total = hashlib.sha256()
    for record in ContextDigest("", scan, files, 0).records():
        total.update(record)
    return total.hexdigest()


ENTRIES = st.lists(
    st.tuples(NAMES, st.sampled_from(["file", "symlink", "dir"]), st.text(alphabet="0123abc \n", max_size=5)),
    max_size=4,
    unique_by=lambda e: e[0],
).map(lambda es: sorted([(p, k, c if k != "dir" else "") for p, k, c in es]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ENTRIES, ENTRIES)
def test_distinct_contexts_have_distinct_digests(a: list[tuple[str, str, str]], b: list[tuple[str, str, str]]) -> None:
    if a != b:
        assert _digest(a) != _digest(b)


def _run(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imagegate", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("name", ["Dockerfile", ".dockerignore"])
def test_a_fifo_is_a_clear_error_for_lint_and_build_not_a_hang(tmp_path: Path, name: str) -> None:
    write(tmp_path, {"Dockerfile": b"FROM busybox:1.36\nUSER 1000\n", "job.py": b"print(1)\n"})
    (tmp_path / name).unlink(missing_ok=True)
    os.mkfifo(tmp_path / name)
    lint = _run("lint", str(tmp_path), "--json", cwd=tmp_path)
    build = _run("build", str(tmp_path), "--repository", "127.0.0.1:9/x", "--json", cwd=tmp_path)
    for done in (lint, build):
        assert done.returncode == 2, done
        assert "not a regular file" in done.stdout and "Traceback" not in done.stderr


def test_a_dockerfile_linking_out_of_the_context_is_refused_by_lint_as_by_build(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_text(SECRET_LINE + "\n")
    context = write(tmp_path / "ctx", {"job.py": b"x"})
    (context / "Dockerfile").symlink_to(outside)
    lint = _run("lint", str(context), "--json", cwd=tmp_path)
    lint_file = _run("lint", str(context / "Dockerfile"), cwd=tmp_path)
    build = _run("build", str(context), "--repository", "127.0.0.1:9/x", "--json", cwd=tmp_path)
    for done in (lint, lint_file, build):
        assert done.returncode == 2, done
        assert "outside the build context" in done.stdout + done.stderr
        assert "do-not-print" not in done.stdout + done.stderr
    with pytest.raises(ContextError, match="outside the build context"):
        lint_dockerfile(context)


def test_a_dockerignore_linking_out_of_the_context_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_text(SECRET_LINE + "\n")
    context = write(tmp_path / "ctx", {"Dockerfile": b"FROM busybox:1.36\nUSER 1000\n"})
    (context / ".dockerignore").symlink_to(outside)
    with pytest.raises(ContextError, match="links outside the build context") as caught:
        scan_context(context)
    assert "do-not-print" not in str(caught.value)


def test_a_file_swapped_for_a_fifo_after_the_walk_never_hangs_the_hash(tmp_path: Path) -> None:
    context = write(tmp_path, {"Dockerfile": b"FROM busybox:1.36\n", "data.bin": b"x" * 100})
    scan = scan_context(context)
    (context / "data.bin").unlink()
    os.mkfifo(context / "data.bin")
    with pytest.raises(ContextError, match="not a regular file|replaced"):
        hash_context(scan, use_cache=False)


def test_a_file_swapped_for_another_after_the_walk_is_noticed(tmp_path: Path) -> None:
    context = write(tmp_path, {"Dockerfile": b"FROM busybox:1.36\n", "data.bin": b"x" * 100})
    scan = scan_context(context)
    (context / "data.new").write_bytes(b"y" * 100)
    os.replace(context / "data.new", context / "data.bin")  # another inode under the walked name
    with pytest.raises(ContextError, match="replaced"):
        hash_context(scan, use_cache=False)


def test_an_oversized_dockerfile_is_refused(tmp_path: Path) -> None:
    write(tmp_path, {"Dockerfile": b"FROM busybox:1.36\n" + b"# x\n" * (1 << 19)})
    with pytest.raises(DockerfileError, match="larger than"):
        lint_dockerfile(tmp_path)
