"""The pure parts of builds: tags, the inputs digest, the tar sent to the engine, progress output."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from imagegate import ContextError, TagRules
from imagegate.build._builder import _inputs_digest, _tag, content_tag, write_tar
from imagegate.build._context import hash_context
from imagegate.cli import _printer


def digest_of(tmp_path: Path, **overrides: object) -> str:
    (tmp_path / "Dockerfile").write_text("FROM busybox\n")
    content = hash_context(tmp_path, use_cache=False)
    args = dict(dockerfile="Dockerfile", target=None, args={}, platform=None, bases=[("busybox:1.36", "sha256:" + "1" * 64)])
    args.update(overrides)
    return _inputs_digest(content, **args)  # type: ignore[arg-type]


def test_every_input_changes_the_inputs_digest(tmp_path: Path) -> None:
    base = digest_of(tmp_path)
    changed = {
        digest_of(tmp_path, dockerfile="other/Dockerfile"),
        digest_of(tmp_path, target="build"),
        digest_of(tmp_path, args={"A": "1"}),
        digest_of(tmp_path, args={"A": "2"}),
        digest_of(tmp_path, platform="linux/arm64"),
        digest_of(tmp_path, bases=[("busybox:1.36", "sha256:" + "2" * 64)]),
    }
    assert base not in changed and len(changed) == 6
    assert digest_of(tmp_path, args={"A": "1", "B": "2"}) == digest_of(tmp_path, args={"B": "2", "A": "1"})


def test_content_tags_are_classified_immutable() -> None:
    rules = TagRules.default()
    for inputs, length in (("0" * 64, 20), ("0123456789abcdef" * 4, 20), ("f" * 20 + "0" * 44, 21),
                           ("a" * 25 + "1" + "0" * 38, 26)):
        tag = content_tag(inputs)
        assert tag == "c-" + inputs[:length]
        assert rules.classify(tag)[0].value == "immutable", tag


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_git_tag_policy(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "job").mkdir(parents=True)
    (repo / "job" / "Dockerfile").write_text("FROM busybox\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "x")
    sha = git(repo, "rev-parse", "HEAD")
    inputs = "9" * 64
    assert _tag("git", repo / "job", inputs) == f"g-{sha[:12]}"
    assert _tag("both", repo / "job", inputs) == f"g-{sha[:12]}-c-{'9' * 20}"
    (repo / "job" / "new.py").write_text("x")
    assert _tag("git", repo / "job", inputs) == f"g-{sha[:12]}-dirty-{'9' * 12}"
    assert TagRules.default().classify(_tag("git", repo / "job", inputs))[0].value == "immutable"
    with pytest.raises(ContextError, match="not inside a git repository"):
        _tag("git", tmp_path / "elsewhere", inputs) if (tmp_path / "elsewhere").mkdir() is None else None


def test_the_tar_holds_exactly_the_hashed_entries(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox\n")
    (tmp_path / "app.py").write_text("print(1)\n")
    (tmp_path / "app.py").chmod(0o755)
    (tmp_path / "skip.log").write_text("no")
    (tmp_path / ".dockerignore").write_text("*.log\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to("app.py")
    content = hash_context(tmp_path, use_cache=False)
    buffer = io.BytesIO()
    write_tar(content, buffer)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == [".dockerignore", "Dockerfile", "app.py", "empty", "link"]
        assert members["app.py"].mode == 0o755 and members["app.py"].uid == 0
        assert members["link"].issym() and members["link"].linkname == "app.py"
        assert tar.extractfile("app.py").read() == b"print(1)\n"  # type: ignore[union-attr]


def test_a_file_changed_after_hashing_is_refused(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox\n")
    content = hash_context(tmp_path, use_cache=False)
    (tmp_path / "Dockerfile").write_text("FROM busyboX\n")
    with pytest.raises(ContextError, match="changed while"):
        write_tar(content, io.BytesIO())


class Terminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_is_live_on_a_terminal_and_plain_lines_otherwise() -> None:
    lines = ["Step 1/2 : FROM x", "\rpush abc: Pushing [==>  ] 1MB/4MB", "\rpush abc: Pushing [====>] 4MB/4MB", "push abc: Pushed"]
    for tty in (True, False):
        out = Terminal(tty)
        emit = _printer(out)
        for line in lines:
            emit(line)
        text = out.getvalue()
        if tty:
            assert text.count("\r\x1b[K") == 3 and "4MB/4MB" in text and text.endswith("push abc: Pushed\n")
        else:
            assert text == "Step 1/2 : FROM x\npush abc: Pushed\n"
