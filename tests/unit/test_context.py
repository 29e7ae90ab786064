"""The build context: .dockerignore semantics, the walk, hashing, the stat cache, bad input.

The expected values of both tables were produced by Docker's own code: the
pattern table by ``github.com/moby/patternmatcher`` v0.6.0 (``ignorefile.ReadAll``
+ ``MatchesOrParentMatches``), the walk table by ``github.com/moby/go-archive``
v0.1.0 ``TarWithOptions`` (what ``docker build`` sends).
``tests/integration/test_build_stack.py::test_dockerignore_matches_moby`` re-runs
that oracle when a Go toolchain is available.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from imagegate import ContextError
from imagegate.build._context import (
    CONTEXT_HASH_VERSION,
    ContextDigest,
    IgnoreRules,
    StatCache,
    go_clean,
    hash_context,
    hash_file,
    parse_size,
    scan_context,
)

# (.dockerignore text, paths it excludes, paths it keeps)
PATTERNS = [
    ('*.pyc', ['a.pyc'], ['d/a.pyc', 'a.pyco', 'pyc']),
    ('**/*.pyc', ['a.pyc', 'd/a.pyc', 'd/e/a.pyc'], ['a.py']),
    ('__pycache__', ['__pycache__', '__pycache__/x.pyc'], ['pkg/__pycache__/x.pyc']),
    ('**/__pycache__', ['__pycache__/x.pyc', 'pkg/__pycache__/x.pyc', 'a/b/__pycache__'], []),
    ('*.md\n!README.md', ['a.md'], ['README.md', 'docs/a.md']),
    ('docs\n!docs/keep.md', ['docs', 'docs/a.md', 'docs/sub/keep.md'], ['docs/keep.md']),
    ('/build', ['build', 'build/x'], ['src/build']),
    ('build/', ['build', 'build/x'], ['src/build']),
    ('./a/../b', ['b', 'b/c'], ['a/b']),
    ('a/./b//c', ['a/b/c', 'a/b/c/d'], []),
    ('# comment\n\n  spaced.txt  ', ['spaced.txt'], ['# comment']),
    (' # not a comment', ['# not a comment'], ['#', 'x']),
    ('data/**', ['data/x', 'data/x/y'], ['data', 'datax']),
    ('**', ['a', 'a/b'], []),
    ('a/**/b', ['a/b', 'a/x/b', 'a/x/y/b', 'a/x/b/c'], ['ab']),
    ('**/x/**', ['x/a', 'a/x/b'], ['x']),
    ('?.txt', ['a.txt'], ['ab.txt', 'd/a.txt']),
    ('[ab].txt', ['a.txt', 'b.txt'], ['c.txt']),
    ('[!a].txt', ['a.txt', '!.txt'], ['b.txt']),
    ('[^a].txt', ['b.txt'], ['a.txt']),
    ('a\\*b', ['a*b'], ['axb']),
    ('*', ['a', 'a/b', '.hidden'], []),
    ('*/*.log', ['d/a.log'], ['a.log', 'd/e/a.log']),
    ('*\n!src\n', ['a'], ['src', 'src/x', 'src/x/y']),
    ('*\n!src/**', ['a', 'src'], ['src/x', 'src/x/y']),
    ('src\n!src/*.py\nsrc/secret.py', ['src/secret.py', 'src/a.txt'], ['src/a.py']),
    ('!x\nx', ['x'], []),
    ('a.b+c(d)|e{f}$', ['a.b+c(d)|e{f}$'], ['aXb+c(d)|e{f}$']),
    ('\ufeff*.bom', ['x.bom'], []),
    ('! keep', [], ['keep']),
    ('*\n! keep', ['other'], ['keep']),
    ('../outside', ['../outside'], ['outside']),
    ('dir/*', ['dir/a', 'dir/a/b'], ['dir']),
    ('**/*.txt\n!**/keep.txt', ['a.txt'], ['d/keep.txt', 'keep.txt']),
    ('.git\n.venv\nnode_modules', ['.git', '.git/HEAD', '.venv/bin/python', 'node_modules/a'], ['x/.git']),
    ('a*b*c', ['abc', 'aXbYc'], ['a/b/c']),
    ('*.txt\r', ['a.txt'], []),
]

TREE = ['a.txt', 'a.pyc', 'README.md', 'docs/a.md', 'docs/keep.md', 'docs/sub/keep.md', 'docs/sub/x.txt', 'src/app.py', 'src/secret.py', 'src/pkg/__pycache__/m.pyc', 'build/out.bin', 'build/keep/k.txt', '.git/HEAD', '.git/objects/ab/cd', 'data/big.csv', 'data/small/keep.csv', 'empty/', 'nested/empty/']

# (.dockerignore text, "excluded"|"kept", the entries of TREE (dirs included) so described)
WALKS = [
    ('*.pyc\n**/__pycache__', "excluded", ['a.pyc', 'src/pkg/__pycache__', 'src/pkg/__pycache__/m.pyc']),
    ('docs\n!docs/keep.md', "excluded", ['docs', 'docs/a.md', 'docs/sub', 'docs/sub/keep.md', 'docs/sub/x.txt']),
    ('docs\n!docs/sub/keep.md', "excluded", ['docs', 'docs/a.md', 'docs/keep.md', 'docs/sub', 'docs/sub/x.txt']),
    ('docs\n!**/keep.md', "excluded", ['docs', 'docs/a.md', 'docs/keep.md', 'docs/sub', 'docs/sub/keep.md', 'docs/sub/x.txt']),
    ('*\n!src', "kept", ['src', 'src/app.py', 'src/pkg', 'src/pkg/__pycache__', 'src/pkg/__pycache__/m.pyc', 'src/secret.py']),
    ('*\n!src/**', "kept", ['src/app.py', 'src/pkg', 'src/pkg/__pycache__', 'src/pkg/__pycache__/m.pyc', 'src/secret.py']),
    ('build\n!build/keep', "excluded", ['build', 'build/out.bin']),
    ('build/**\n!build/keep/k.txt', "excluded", ['build/keep', 'build/out.bin']),
    ('.git\ndata\n!data/small', "excluded", ['.git', '.git/HEAD', '.git/objects', '.git/objects/ab', '.git/objects/ab/cd', 'data', 'data/big.csv']),
    ('**\n!README.md', "kept", ['README.md']),
    ('empty', "excluded", ['empty']),
    ('src\n!src/*.py\nsrc/secret.py', "excluded", ['src', 'src/pkg', 'src/pkg/__pycache__', 'src/pkg/__pycache__/m.pyc', 'src/secret.py']),
]


def make_tree(root: Path, paths: list[str]) -> None:
    for path in paths:
        full = root / path
        if path.endswith("/"):
            full.mkdir(parents=True, exist_ok=True)
        else:
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_text(path)


def all_entries(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} - {".dockerignore"}


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes | str]]:
    """Every entry's mode, mtime and content: proof that nothing in the context was modified."""
    out: dict[str, tuple[int, int, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            content: bytes | str = os.readlink(path)
        elif path.is_file() and os.access(path, os.R_OK) and stat.S_IMODE(st.st_mode) & 0o444:
            content = path.read_bytes()
        else:
            content = ""
        out[path.relative_to(root).as_posix()] = (st.st_mode, st.st_mtime_ns, content)
    return out


# --- patterns --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "cleaned"), [
    ("", "."), ("a/./b", "a/b"), ("a//b/", "a/b"), ("a/../b", "b"), ("../a", "../a"), ("/../a", "/a"),
    ("//a", "/a"), ("a/b/../../..", ".."), ("./", "."),
])
def test_go_clean_matches_filepath_clean(text: str, cleaned: str) -> None:
    assert go_clean(text) == cleaned


@pytest.mark.parametrize(("ignore", "excluded", "kept"), PATTERNS, ids=[repr(p[0])[:40] for p in PATTERNS])
def test_dockerignore_patterns_match_moby(ignore: str, excluded: list[str], kept: list[str]) -> None:
    rules = IgnoreRules.parse(ignore)
    assert [p for p in excluded if not rules.excludes(p)] == []
    assert [p for p in kept if rules.excludes(p)] == []


@pytest.mark.parametrize("ignore", ["[", "a[b", "!"])
def test_bad_pattern_is_a_context_error_naming_the_line(ignore: str) -> None:
    with pytest.raises(ContextError, match="line 2"):
        IgnoreRules.parse("ok\n" + ignore)


# --- the walk --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ignore", "kind", "listed"), WALKS, ids=[repr(w[0])[:40] for w in WALKS])
def test_walk_sends_what_docker_sends(tmp_path: Path, ignore: str, kind: str, listed: list[str]) -> None:
    make_tree(tmp_path, TREE)
    (tmp_path / ".dockerignore").write_text(ignore + "\n")
    everything = all_entries(tmp_path)
    expected = set(listed) if kind == "kept" else everything - set(listed)
    got = {e.path for e in scan_context(tmp_path).entries} - {".dockerignore"}
    assert got == expected


def test_dockerfile_and_dockerignore_are_always_sent(tmp_path: Path) -> None:
    make_tree(tmp_path, ["Dockerfile", "docker/Dockerfile.prod", "app.py"])
    (tmp_path / ".dockerignore").write_text("*\n")
    scan = scan_context(tmp_path, always=["Dockerfile", "docker/Dockerfile.prod"])
    assert [e.path for e in scan.entries] == [".dockerignore", "Dockerfile", "docker/Dockerfile.prod"]


def test_excluded_bytes_are_measured(tmp_path: Path) -> None:
    make_tree(tmp_path, ["app.py"])
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.bin").write_bytes(b"x" * 5000)
    (tmp_path / ".dockerignore").write_text("data\n")
    scan = scan_context(tmp_path, measure_excluded=True)
    assert scan.excluded_bytes == 5000
    assert {e.path for e in scan.entries} == {".dockerignore", "app.py"}


# --- hashing ---------------------------------------------------------------------------------------


def test_same_inputs_in_two_directories_hash_the_same(tmp_path: Path) -> None:
    for name in ("one", "two"):
        make_tree(tmp_path / name, ["app.py", "pkg/mod.py", "empty/"])
    os.utime(tmp_path / "two" / "app.py", (1, 1))  # mtimes do not count
    one = hash_context(tmp_path / "one", use_cache=False)
    two = hash_context(tmp_path / "two", use_cache=False)
    assert one.digest == two.digest


def test_ignored_byte_keeps_the_digest_used_byte_mode_and_name_change_it(tmp_path: Path) -> None:
    make_tree(tmp_path, ["app.py", "notes/todo.txt"])
    (tmp_path / ".dockerignore").write_text("notes\n")
    base = hash_context(tmp_path, use_cache=False).digest
    (tmp_path / "notes" / "todo.txt").write_text("changed")
    assert hash_context(tmp_path, use_cache=False).digest == base
    (tmp_path / "app.py").write_text("app.pY")
    changed = hash_context(tmp_path, use_cache=False).digest
    assert changed != base
    (tmp_path / "app.py").chmod(0o755)
    assert hash_context(tmp_path, use_cache=False).digest != changed
    (tmp_path / "app.py").rename(tmp_path / "main.py")
    assert hash_context(tmp_path, use_cache=False).digest not in (base, changed)


def test_symlink_inside_the_context_is_hashed_by_target(tmp_path: Path) -> None:
    make_tree(tmp_path, ["real.txt"])
    (tmp_path / "link").symlink_to("real.txt")
    before = hash_context(tmp_path, use_cache=False).digest
    (tmp_path / "link").unlink()
    (tmp_path / "link").symlink_to("./real.txt")
    assert hash_context(tmp_path, use_cache=False).digest != before


def test_hash_file_streams_in_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    (tmp_path / "f").write_bytes(data)
    assert hash_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


# --- the stat cache --------------------------------------------------------------------------------


def test_stat_cache_skips_unchanged_files_and_sees_changes(tmp_path: Path) -> None:
    ctx, cache = tmp_path / "ctx", tmp_path / "cache"
    make_tree(ctx, ["a.txt", "b.txt"])
    old = 1_600_000_000
    for name in ("a.txt", "b.txt"):
        os.utime(ctx / name, (old, old))
    cold = hash_context(ctx, cache_directory=cache)
    # ctime is "now" (can't be set), so entries are racily clean for 2 s; wait it out
    import time

    time.sleep(2.1)
    hash_context(ctx, cache_directory=cache)  # now cached
    warm = hash_context(ctx, cache_directory=cache)
    assert warm.hashed_bytes == 0 and warm.digest == cold.digest
    (ctx / "a.txt").write_text("A.txt")  # same size, new mtime/ctime
    changed = hash_context(ctx, cache_directory=cache)
    assert changed.hashed_bytes == 5 and changed.digest != cold.digest
    assert not any(p.is_relative_to(ctx) for p in cache.rglob("*")) and list(cache.rglob("*.json"))


def test_stat_cache_never_trusts_a_racily_clean_entry(tmp_path: Path) -> None:
    make_tree(tmp_path / "ctx", ["a.txt"])
    hash_context(tmp_path / "ctx", cache_directory=tmp_path / "cache")
    again = hash_context(tmp_path / "ctx", cache_directory=tmp_path / "cache")
    assert again.hashed_bytes == 5  # just written: re-read


def test_stat_cache_lives_outside_the_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGATE_CACHE_DIR", str(tmp_path / "c"))
    cache = StatCache(tmp_path / "ctx")
    assert cache.file.parent == tmp_path / "c" / "stat"


# --- bad input: a clear error, nothing modified ----------------------------------------------------


def test_symlink_outside_the_context_is_refused(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    make_tree(ctx, ["app.py"])
    (tmp_path / "secret").write_text("s")
    (ctx / "leak").symlink_to("../secret")
    (ctx / "abs").symlink_to("/etc/passwd")
    before = snapshot(ctx)
    with pytest.raises(ContextError, match="outside the build context") as info:
        hash_context(ctx, use_cache=False)
    assert info.value.path.endswith(("leak", "abs"))
    assert snapshot(ctx) == before
    (ctx / ".dockerignore").write_text("leak\nabs\n")  # ignored links are never looked at
    hash_context(ctx, use_cache=False)


def test_fifo_is_refused(tmp_path: Path) -> None:
    make_tree(tmp_path, ["app.py"])
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ContextError, match="not a regular file") as info:
        scan_context(tmp_path)
    assert info.value.path.endswith("pipe")


UNREADABLE = """
import sys
from imagegate import ContextError
from imagegate.build._context import hash_context
try:
    hash_context(sys.argv[1], use_cache=False)
except ContextError as exc:
    print("ContextError", exc.path, exc, sep="|")
"""


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    make_tree(ctx, ["app.py", "secret.key"])
    (ctx / "secret.key").chmod(0o000)
    before = snapshot(ctx)
    if os.geteuid() == 0:  # root reads anything: drop CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH for the hash
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux): cannot make a file unreadable")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        done = subprocess.run(
            [setpriv, "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-c", UNREADABLE, str(ctx)],
            capture_output=True, text=True, env=env, check=False,
        )
        kind, path, message = done.stdout.strip().split("|", 2)
    else:
        with pytest.raises(ContextError) as info:
            hash_context(ctx, use_cache=False)
        kind, path, message = "ContextError", info.value.path, str(info.value)
    assert kind == "ContextError" and path.endswith("secret.key")
    assert "Permission denied" in message and ".dockerignore" in message
    assert snapshot(ctx) == before


def test_context_over_the_configured_size_is_refused(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"x" * 3000)
    before = snapshot(tmp_path)
    with pytest.raises(ContextError, match="over the configured maximum"):
        scan_context(tmp_path, max_bytes=2048)
    assert snapshot(tmp_path) == before
    assert len(scan_context(tmp_path, max_bytes=4096).entries) == 1


def test_missing_context_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="not found"):
        scan_context(tmp_path / "nope")


@pytest.mark.parametrize(("text", "size"), [("500", 500), ("2KiB", 2048), ("1.5MB", 1572864), ("2g", 2 << 30), (7, 7)])
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


def test_parse_size_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


# --- the fast paths keep the digest and every protection -------------------------------------------

# The digest of make_fixture's context, computed by the implementation before the hashing was made
# faster (thread pool per file, per-entry records): the content tag depends on it, so it must not move.
FIXTURE_DIGEST = "sha256:f546f0d4305b0015c653a9bfc62d9d33f2c167d0ffb9b452b720fc1ec2e74e01"


def make_fixture(root: Path) -> None:
    """A context of every shape the digest covers, with deterministic bytes and modes (any umask)."""
    import random

    rng = random.Random(14)
    files = {
        "Dockerfile": b"FROM busybox\nCOPY . /app\n",
        ".dockerignore": b"ignored\n*.tmp\n!keep.tmp\nsub/**/*.log\n",
        "empty.txt": b"",
        "small.bin": rng.randbytes(100),
        "exact-chunk.bin": rng.randbytes(1 << 20),
        "big.bin": rng.randbytes(3 * (1 << 20) + 17),
        "a b\nc\t:=.txt": b"odd name",
        "keep.tmp": b"re-included",
        "drop.tmp": b"excluded",
        "ignored/x.txt": b"never hashed",
        "sub/dir/deep.log": b"excluded log",
        "sub/dir/deep.txt": b"deep",
        "sub/z.py": b"print('z')\n",
        "sub/A.py": b"print('A')\n",
        "\u00e9t\u00e9/caf\u00e9.txt": b"utf-8 name",
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, 0o644)
    os.chmod(root / "sub" / "z.py", 0o755)
    os.chmod(root / "small.bin", 0o600)
    (root / "emptydir").mkdir()
    (root / "link").symlink_to("sub/z.py")
    (root / "sub" / "dirlink").symlink_to("dir")
    for directory in ("ignored", "sub", "sub/dir", "\u00e9t\u00e9"):
        os.chmod(root / directory, 0o755)
    os.chmod(root / "emptydir", 0o700)


def record_digest(content: ContextDigest) -> str:
    """The context digest from the documented records, one by one (the reference encoding)."""
    total = hashlib.sha256(CONTEXT_HASH_VERSION)
    for record in content.records():
        total.update(record)
    return "sha256:" + total.hexdigest()


def test_the_context_digest_is_the_one_computed_before_the_fast_paths(tmp_path: Path) -> None:
    make_fixture(tmp_path / "ctx")
    cold = hash_context(tmp_path / "ctx", use_cache=False)
    assert cold.digest == FIXTURE_DIGEST == record_digest(cold)
    assert len(cold.scan.entries) == 18 and cold.hashed_bytes == 4_194_538
    assert cold.files["big.bin"] == hashlib.sha256((tmp_path / "ctx" / "big.bin").read_bytes()).hexdigest()
    # the stat cache's paths (per file, then the whole walk) give the same digest
    cache = tmp_path / "cache"
    for name in ("Dockerfile", "big.bin"):  # age two files past the racy window; the rest stay racy
        os.utime(tmp_path / "ctx" / name, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    for _ in range(3):
        warm = hash_context(tmp_path / "ctx", cache_directory=cache)
        assert warm.digest == FIXTURE_DIGEST and warm.files == cold.files


def test_large_files_are_hashed_on_helper_threads_with_the_same_digests(tmp_path: Path) -> None:
    from imagegate.build._context import LARGE

    blobs = {f"big{i}.bin": os.urandom(LARGE + i * 4099) for i in range(3)} | {"small.txt": b"s"}
    for name, data in blobs.items():
        (tmp_path / name).write_bytes(data)
    one = hash_context(tmp_path, use_cache=False, workers=1)
    three = hash_context(tmp_path, use_cache=False, workers=3)
    assert one.files == three.files == {name: hashlib.sha256(data).hexdigest() for name, data in blobs.items()}
    assert one.digest == three.digest == record_digest(three)


def test_a_large_file_swapped_after_the_walk_fails_the_hash_from_a_helper_thread(tmp_path: Path) -> None:
    from imagegate.build._context import LARGE

    for i in range(3):
        (tmp_path / f"big{i}.bin").write_bytes(b"x" * LARGE)
    scan = scan_context(tmp_path)
    (tmp_path / "big2.new").write_bytes(b"y" * LARGE)
    os.replace(tmp_path / "big2.new", tmp_path / "big2.bin")
    with pytest.raises(ContextError, match="replaced") as info:
        hash_context(scan, use_cache=False, workers=3)
    assert info.value.path.endswith("big2.bin")


def test_a_file_swapped_for_a_symlink_after_the_walk_is_never_followed(tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "secret").write_text("s3cret")
    (tmp_path / "ctx" / "data.txt").write_text("plain")
    scan = scan_context(tmp_path / "ctx")
    (tmp_path / "ctx" / "data.txt").unlink()
    (tmp_path / "ctx" / "data.txt").symlink_to(tmp_path / "secret")
    with pytest.raises(ContextError, match="replaced by a symlink"):
        hash_context(scan, use_cache=False)
    with pytest.raises(ContextError, match="replaced by a symlink"):
        hash_file(tmp_path / "ctx" / "data.txt")


def test_a_directory_swapped_while_it_is_walked_is_never_listed(tmp_path: Path) -> None:
    from imagegate.build._context import _list

    (tmp_path / "real").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "secret").write_text("s")
    seen = os.lstat(tmp_path / "real")
    with pytest.raises(ContextError, match="replaced"):  # another directory under the walked name
        _list(str(tmp_path / "other"), seen)
    (tmp_path / "real").rmdir()
    (tmp_path / "real").symlink_to(tmp_path / "other")
    with pytest.raises(ContextError, match="replaced"):  # a symlink where the walk saw a directory
        _list(str(tmp_path / "real"), seen)
    assert [c.name for c in _list(str(tmp_path / "other"), os.lstat(tmp_path / "other"))] == ["secret"]


def test_a_context_nested_deeper_than_the_recursion_limit_is_walked() -> None:
    # Outside pytest's tmp_path: its clean-up (shutil.rmtree) recurses, and would fail on this tree.
    top = Path(tempfile.mkdtemp(prefix="imagegate-deep-"))
    depth = sys.getrecursionlimit() + 50
    try:
        fd = os.open(top, os.O_RDONLY)
        try:
            for _ in range(depth):  # by descriptor: the path grows past what one call could name
                os.mkdir("d", dir_fd=fd)
                inner = os.open("d", os.O_RDONLY, dir_fd=fd)
                os.close(fd)
                fd = inner
            leaf = os.open("leaf.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(leaf, b"deep")
            os.close(leaf)
        finally:
            os.close(fd)
        content = hash_context(top, use_cache=False)
        assert len(content.scan.entries) == depth + 1
        assert content.files["/".join(["d"] * depth) + "/leaf.txt"] == hashlib.sha256(b"deep").hexdigest()
        (top / ".dockerignore").write_text("d\n")
        measured = scan_context(top, measure_excluded=True)  # the excluded subtree, measured without recursion
        assert measured.excluded_bytes == 4 and measured.excluded_entries == depth + 1
    finally:
        remove_deep(top)


def remove_deep(top: Path) -> None:
    """Remove a directory tree of any depth, one level at a time through descriptors."""
    chain, names = [os.open(top, os.O_RDONLY | os.O_DIRECTORY)], []
    while chain:
        fd, below = chain[-1], None
        for child in os.scandir(fd):
            if child.is_dir(follow_symlinks=False):
                below = child.name
                break
            os.unlink(child.name, dir_fd=fd)
        if below is not None:
            chain.append(os.open(below, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd))
            names.append(below)
            continue
        os.close(chain.pop())
        if chain:
            os.rmdir(names.pop(), dir_fd=chain[-1])
    os.rmdir(top)


def test_a_warm_walk_that_matches_the_last_one_reads_and_writes_nothing(tmp_path: Path) -> None:
    ctx, cache = tmp_path / "ctx", tmp_path / "cache"
    names = ["Dockerfile", "app.py", "pkg/mod.py"]
    make_tree(ctx, names)  # each file holds its own name
    import time

    cold = hash_context(ctx, cache_directory=cache)
    time.sleep(2.1)  # ctime is "now" and cannot be set: wait out the racy window
    again = hash_context(ctx, cache_directory=cache)  # re-read once (they were racy), now cached whole
    assert again.hashed_bytes == sum(len(n) for n in names)
    (stored,) = cache.rglob("*.json")
    before = stored.stat().st_mtime_ns, stored.read_bytes()
    warm = hash_context(ctx, cache_directory=cache)
    assert warm.hashed_bytes == 0 and warm.digest == cold.digest and warm.files == cold.files
    assert (stored.stat().st_mtime_ns, stored.read_bytes()) == before
    assert json.loads(stored.read_text())["tree"]["digest"] == cold.digest


@pytest.mark.parametrize("change", ["content", "dockerfile", "mode", "link", "new-dir", "removed", "renamed"])
def test_every_change_after_a_whole_walk_is_cached_gives_the_digest_of_a_cold_hash(tmp_path: Path, change: str) -> None:
    ctx, cache = tmp_path / "ctx", tmp_path / "cache"
    make_tree(ctx, ["Dockerfile", "app.py", "pkg/mod.py", "pkg/other.py"])
    (ctx / "link").symlink_to("app.py")
    import time

    hash_context(ctx, cache_directory=cache)
    time.sleep(2.1)
    hash_context(ctx, cache_directory=cache)
    before = hash_context(ctx, cache_directory=cache)
    assert before.hashed_bytes == 0
    if change == "content":  # same size, mtime put back: only ctime tells
        st = (ctx / "app.py").stat()
        (ctx / "app.py").write_text("APP.PY")
        os.utime(ctx / "app.py", ns=(st.st_atime_ns, st.st_mtime_ns))
    elif change == "dockerfile":
        (ctx / "Dockerfile").write_text("FROM busybox:2\n")
    elif change == "mode":
        (ctx / "pkg" / "mod.py").chmod(0o700)
    elif change == "link":
        (ctx / "link").unlink()
        (ctx / "link").symlink_to("pkg/mod.py")
    elif change == "new-dir":
        (ctx / "pkg" / "empty").mkdir()
    elif change == "removed":
        (ctx / "pkg" / "other.py").unlink()
    else:
        (ctx / "pkg" / "other.py").rename(ctx / "pkg" / "renamed.py")
    after = hash_context(ctx, cache_directory=cache)
    assert after.digest == hash_context(ctx, use_cache=False).digest != before.digest
    # only the files whose stat changed are read again (a chmod or a rename changes ctime)
    assert after.hashed_bytes == {"content": 6, "dockerfile": 15, "mode": 10, "renamed": 12}.get(change, 0)


def test_a_no_op_build_loads_neither_the_docker_sdk_nor_lint_nor_the_lock_file(tmp_path: Path) -> None:
    """The up-to-date path of build_image over the fake registry, in a fresh interpreter."""
    make_tree(tmp_path, ["app.py"])
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY app.py /\n")
    code = f"""
import sys
from imagegate import DockerConfig, RegistryClient, build_image
from imagegate.build._builder import _inputs_digest, content_tag
from imagegate.build._context import hash_context
from tests.support.fakeregistry import FakeRegistry
from tests.support.oci import make_image

context = {str(tmp_path)!r}
tag = content_tag(_inputs_digest(hash_context(context, use_cache=False), "Dockerfile", None, {{}}, None, []))
registry = FakeRegistry()
digest = registry.put_image("team/job", make_image(user="1000"), tag=tag)
client = RegistryClient(transport=registry.transport, docker_config=DockerConfig({{}}))
result = build_image(context, repository="registry.test/team/job", client=client, use_cache=False)
assert not result.built and result.digest == digest and result.tag == tag, result
print(sorted(m for m in ("docker", "imagegate.build._lint", "imagegate.build._lockfile") if m in sys.modules))
"""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)}, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
