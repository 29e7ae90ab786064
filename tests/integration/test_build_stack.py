"""``build_image`` / ``imagegate build`` against the real Docker Engine and registry.

Needs: the local stack (``python scripts/stack.py up``): the engine, the plain
registry and the busybox base image in it. What the engine was asked to do is
observed on the wire — a response hook on the docker SDK client's HTTP session
records every Engine API call (nothing of imagegate is replaced) — and what the
registry was asked is read from its access log.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from imagegate import (
    BuildResult,
    ContextError,
    DockerfileError,
    LintFailed,
    LockFile,
    Policy,
    RegistryClient,
    build_image,
    parse_reference,
)
from tests.integration.conftest import Stack, run_cli, unique

pytestmark = pytest.mark.integration

DOCKERFILE = """\
ARG BASE
FROM ${BASE} AS base
COPY app.txt /app/app.txt
USER 10001:10001
CMD ["cat", "/app/app.txt"]

FROM base AS extra
COPY extra.txt /app/extra.txt
"""
IGNORE = ".git\n**/__pycache__\n**/*.pyc\n.venv\nnode_modules\nnotes\n"


class EngineCalls:
    """A docker SDK client whose every Engine API request is recorded (method, path)."""

    def __init__(self, stack: Stack) -> None:
        import docker

        self.client = docker.DockerClient(base_url=stack.env.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
        self.calls: list[tuple[str, str]] = []
        self.client.api.hooks["response"].append(self._record)

    def _record(self, response: Any, *args: Any, **kwargs: Any) -> None:
        self.calls.append((response.request.method, response.request.path_url.split("?")[0]))

    def builds(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[1].endswith("/build")]

    def pushes(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[1].endswith("/push")]


@pytest.fixture(scope="module", autouse=True)
def remove_local_images(stack: Stack, docker_client: Any) -> Iterator[None]:
    """Untag what this module built in the local engine (the registry keeps its copies)."""
    yield
    prefix = f"{stack.registry}/it-build/"
    for image in docker_client.images.list():
        names = [*image.tags, *image.attrs.get("RepoDigests", [])]
        for name in names:
            if name.startswith(prefix):
                try:
                    docker_client.images.remove(name, noprune=False)
                except Exception:  # already gone with an earlier name of the same image
                    pass


@pytest.fixture()
def engine(stack: Stack, docker_client: Any) -> Iterator[EngineCalls]:
    calls = EngineCalls(stack)
    yield calls
    calls.client.close()


@pytest.fixture()
def base(stack: Stack) -> str:
    return stack.env["IMAGEGATE_BUSYBOX_IMAGE_DIGEST"]


def make_context(root: Path, app: str = "hello\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(DOCKERFILE)
    (root / ".dockerignore").write_text(IGNORE)
    (root / "app.txt").write_text(app)
    (root / "extra.txt").write_text("extra\n")
    (root / "notes").mkdir(exist_ok=True)
    (root / "notes" / "todo.txt").write_text("ignored\n")
    return root


def registry_lines(stack: Stack, repository: str, since: int) -> list[str]:
    lines = stack.access_log.read_text(errors="replace").splitlines()[since:]
    return [line for line in lines if f"/v2/{repository}/" in line]


def log_length(stack: Stack) -> int:
    return len(stack.access_log.read_text(errors="replace").splitlines())


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes | str]]:
    out: dict[str, tuple[int, int, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        content: bytes | str = os.readlink(path) if path.is_symlink() else (path.read_bytes() if path.is_file() else "")
        out[path.relative_to(root).as_posix()] = (st.st_mode, st.st_mtime_ns, content)
    return out


def build(stack: Stack, context: Path, repo: str, base: str, engine: EngineCalls, **kwargs: Any) -> BuildResult:
    args = {"BASE": base, **kwargs.pop("build_args", {})}
    return build_image(
        context, repository=f"{stack.registry}/{repo}", build_args=args, docker_client=engine.client, **kwargs
    )


def test_build_twice_second_is_up_to_date_without_a_build_call(
    stack: Stack, engine: EngineCalls, base: str, tmp_path: Path
) -> None:
    repo = f"it-build/{unique('twice')}"
    context = make_context(tmp_path / "ctx", app=f"hello from {repo}\n")  # a layer the registry lacks
    lines: list[str] = []
    first = build(stack, context, repo, base, engine, progress=lines.append)
    assert first.built and len(engine.builds()) == 1 and len(engine.pushes()) == 1
    assert first.tag.startswith("c-") and first.pinned.tag == first.tag and first.pinned.digest == first.digest
    assert first.lint is not None and first.lint.passed
    assert any(line.startswith("Step 1/") for line in lines)  # build steps were shown
    assert any("push" in line and "Pushed" in line for line in lines)  # and push progress per layer

    mark, calls = log_length(stack), len(engine.calls)
    second_lines: list[str] = []
    with RegistryClient() as fresh:  # no cached tag answers: prove it is one HEAD
        second = build(stack, context, repo, base, engine, progress=second_lines.append, client=fresh)
    assert not second.built and second.digest == first.digest and second.pinned == first.pinned
    assert engine.calls[calls:] == []  # not one Engine API call: no build, no push
    registry = registry_lines(stack, repo, mark)
    assert len(registry) == 1 and f'"HEAD /v2/{repo}/manifests/{first.tag} ' in registry[0], registry
    assert second_lines == [f"up to date: {first.pinned.familiar} (not rebuilt)"]
    # the digest is the registry's: the manifest it serves hashes to it
    assert first.digest == stack_digest(stack, repo, first.tag)


def stack_digest(stack: Stack, repo: str, tag: str) -> str:
    import hashlib

    import httpx

    response = httpx.get(
        f"{stack.registry_url}/v2/{repo}/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"},
    )
    response.raise_for_status()
    return "sha256:" + hashlib.sha256(response.content).hexdigest()


def test_what_changes_the_tag(stack: Stack, engine: EngineCalls, base: str, tmp_path: Path, docker_client: Any) -> None:
    repo = f"it-build/{unique('tags')}"
    context = make_context(tmp_path / "ctx")
    first = build(stack, context, repo, base, engine)

    (context / "notes" / "todo.txt").write_text("ignoreD\n")  # one byte in an ignored file
    same = build(stack, context, repo, base, engine)
    assert same.tag == first.tag and not same.built

    other = make_context(tmp_path / "elsewhere" / "checkout")  # same inputs, another directory
    os.utime(other / "app.txt", (1, 1))
    assert build(stack, other, repo, base, engine).tag == first.tag

    (context / "app.txt").write_text("hellO\n")  # one byte in a used file
    used = build(stack, context, repo, base, engine)
    assert used.tag != first.tag and used.built and used.digest != first.digest
    (context / "app.txt").write_text("hello\n")

    with_arg = build(stack, context, repo, base, engine, build_args={"EXTRA": "1"})
    assert with_arg.tag not in (first.tag, used.tag)

    target = build(stack, context, repo, base, engine, target="base")
    assert target.tag not in (first.tag, used.tag, with_arg.tag)

    # the base image's digest: build FROM a tag, then move that tag to another image
    base_repo = f"{stack.registry}/it-build/{unique('base')}"
    moved = _push_base(docker_client, stack, base_repo, label="one")
    by_tag = build(stack, context, repo, f"{base_repo}:1.0.0", engine)
    assert by_tag.bases == ((f"{base_repo}:1.0.0", moved),)
    again = build(stack, context, repo, f"{base_repo}:1.0.0", engine)
    assert again.tag == by_tag.tag and not again.built
    _push_base(docker_client, stack, base_repo, label="two")
    after_move = build(stack, context, repo, f"{base_repo}:1.0.0", engine)
    assert after_move.tag != by_tag.tag and after_move.built


def _push_base(docker_client: Any, stack: Stack, name: str, label: str) -> str:
    import io

    dockerfile = f"FROM {stack.busybox_local}\nLABEL variant={label}\n"
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{name}:1.0.0", rm=True, pull=False)
    digest = None
    for line in docker_client.images.push(name, tag="1.0.0", stream=True, decode=True):
        assert "error" not in line, line
        digest = (line.get("aux") or {}).get("Digest", digest)
    assert digest
    return str(digest)


def test_lock_file_is_written_and_read(stack: Stack, engine: EngineCalls, base: str, tmp_path: Path) -> None:
    repo = f"it-build/{unique('lock')}"
    context = make_context(tmp_path / "job")
    lock = tmp_path / "imagegate.lock.json"
    lock.write_text(json.dumps({"version": 1, "images": {}, "note": "kept"}))
    result = build(stack, context, repo, base, engine, lock=lock, name="job")
    data = json.loads(lock.read_text())
    assert data["note"] == "kept" and data["images"]["job"]["context"] == "job"
    assert LockFile.load(lock).get("job") == result.pinned


def test_lint_errors_block_the_build_unless_the_policy_says_warn(
    stack: Stack, engine: EngineCalls, base: str, tmp_path: Path
) -> None:
    repo = f"it-build/{unique('lint')}"
    context = make_context(tmp_path / "ctx")
    (context / "Dockerfile").write_text(DOCKERFILE.replace("USER 10001:10001", "USER root"))
    with pytest.raises(LintFailed) as info:
        build(stack, context, repo, base, engine)
    assert [f.rule for f in info.value.report.errors] == ["IG006"]
    assert engine.builds() == []  # nothing was built
    warned = build(stack, context, repo, base, engine, policy=Policy().with_modes(lint="warn"))
    assert warned.built and warned.lint is not None and not warned.lint.passed


@pytest.mark.parametrize("problem", ["symlink", "missing-dockerfile", "syntax", "too-big", "unresolved-base"])
def test_bad_input_is_a_clear_error_and_nothing_is_built_or_modified(
    stack: Stack, engine: EngineCalls, base: str, tmp_path: Path, problem: str
) -> None:
    context = make_context(tmp_path / "ctx")
    (tmp_path / "outside.txt").write_text("secret")
    kwargs: dict[str, Any] = {}
    if problem == "symlink":
        (context / "link.txt").symlink_to("../outside.txt")
        expected: Any = (ContextError, "symlink points outside the build context")
    elif problem == "missing-dockerfile":
        kwargs["dockerfile"] = "Dockerfile.missing"
        expected = (DockerfileError, "Dockerfile not found")
    elif problem == "syntax":
        (context / "Dockerfile").write_text(DOCKERFILE + "COPPY x y\n")
        expected = (DockerfileError, ":9: unknown instruction 'COPPY'")
    elif problem == "too-big":
        (context / "big.bin").write_bytes(b"x" * 10_000)
        kwargs["max_context_size"] = "8KiB"
        expected = (ContextError, "over the configured maximum of 8.0 KiB")
    else:
        kwargs["build_args"] = {"BASE": ""}
        expected = (DockerfileError, "BASE has no value")
    before = snapshot(context)
    with pytest.raises(expected[0], match=expected[1].replace("(", r"\(").replace(")", r"\)")):
        build(stack, context, f"it-build/{unique('bad')}", base if problem != "unresolved-base" else "", engine, **kwargs)
    assert engine.calls == []
    assert snapshot(context) == before


def test_cli_build_then_up_to_date(stack: Stack, base: str, tmp_path: Path) -> None:
    repo = f"{stack.registry}/it-build/{unique('cli')}"
    context = make_context(tmp_path / "ctx")
    lock = tmp_path / "lock.json"
    args = ["build", str(context), "--repository", repo, "--build-arg", f"BASE={base}", "--lock", str(lock), "--name", "app"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    pinned = parse_reference(first.stdout.strip())
    assert pinned.digest and pinned.tag and pinned.tag.startswith("c-")
    assert "Step 1/" in first.stderr  # plain progress lines when not on a terminal
    assert "\r" not in first.stderr
    second = run_cli(*args, "--json")
    assert second.returncode == 0, second.stderr
    data = json.loads(second.stdout)
    assert data["built"] is False and data["pinned"] == first.stdout.strip()
    assert f"up to date: {first.stdout.strip()} (not rebuilt)" in second.stderr
    assert LockFile.load(lock).get("app") == pinned


def test_cli_errors_exit_2_and_lint_failures_exit_1(stack: Stack, base: str, tmp_path: Path) -> None:
    context = make_context(tmp_path / "ctx")
    missing = run_cli("build", str(context), "-f", str(tmp_path / "nope"), "--repository", f"{stack.registry}/x/y", "--json")
    assert missing.returncode == 2
    assert json.loads(missing.stdout)["error"]["type"] == "DockerfileError"
    (context / "Dockerfile").write_text(DOCKERFILE.replace("USER 10001:10001", "USER 0"))
    blocked = run_cli("build", str(context), "--repository", f"{stack.registry}/x/y", "--build-arg", f"BASE={base}")
    assert blocked.returncode == 1 and "IG006" in blocked.stderr
    lint = run_cli("lint", str(context), "--json", "--build-arg", f"BASE={base}")
    assert lint.returncode == 1 and json.loads(lint.stdout)["errors"] == 1
    repo_with_tag = run_cli("build", str(context), "--repository", f"{stack.registry}/x/y:1.0")
    assert repo_with_tag.returncode == 2 and "without a tag" in repo_with_tag.stderr


def test_example_job_builds_and_runs(stack: Stack, engine: EngineCalls, docker_client: Any) -> None:
    python = stack.env.get("IMAGEGATE_PYTHON_IMAGE_DIGEST")
    if not python:
        pytest.skip("the python base image is not in the stack")
    job = Path(__file__).resolve().parents[2] / "example_dags" / "jobs" / "wordcount"
    result = build_image(
        job, repository=f"{stack.registry}/it-build/wordcount", build_args={"BASE": python}, docker_client=engine.client
    )
    assert result.lint is None or result.lint.findings == ()
    output = docker_client.containers.run(str(result.pinned), remove=True)
    assert json.loads(output)["file"] == "/app/job.py"


# --- .dockerignore against Docker's own code ------------------------------------------------------

ORACLE = """package main

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/moby/go-archive"
	"github.com/moby/patternmatcher/ignorefile"
)

func main() {
	dir := os.Args[1]
	var patterns []string
	if f, err := os.Open(dir + "/.dockerignore"); err == nil {
		patterns, err = ignorefile.ReadAll(f)
		if err != nil {
			panic(err)
		}
		f.Close()
	}
	rc, err := archive.TarWithOptions(dir, &archive.TarOptions{ExcludePatterns: patterns})
	if err != nil {
		panic(err)
	}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(err)
		}
		fmt.Println(strings.TrimSuffix(h.Name, "/"))
	}
}
"""


@pytest.fixture(scope="session")
def moby_walk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        pytest.skip("no Go toolchain: the moby oracle cannot be built (the unit tables hold its answers)")
    work = tmp_path_factory.mktemp("moby-oracle")
    (work / "main.go").write_text(ORACLE)
    (work / "go.mod").write_text("module oracle\n\ngo 1.23\n")
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOPATH": str(Path.home() / ".cache" / "imagegate" / "gopath")}
    for command in (
        [go, "get", "github.com/moby/go-archive@v0.1.0", "github.com/moby/patternmatcher@v0.6.0"],
        [go, "build", "-o", "oracle", "."],
    ):
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.skip(f"cannot build the moby oracle (no Go module proxy?): {done.stderr[-300:]}")
    return work / "oracle"


def test_dockerignore_walk_matches_moby(moby_walk: Path, tmp_path: Path) -> None:
    from imagegate.build._context import scan_context
    from tests.unit.test_context import PATTERNS, TREE, WALKS, make_tree

    cases = [ignore for ignore, _, _ in WALKS] + [ignore for ignore, _, _ in PATTERNS]
    started = time.monotonic()
    for index, ignore in enumerate(cases):
        context = tmp_path / f"c{index}"
        make_tree(context, TREE)
        (context / ".dockerignore").write_text(ignore + "\n")
        theirs = set(subprocess.run([str(moby_walk), str(context)], capture_output=True, text=True, check=True).stdout.split("\n"))
        theirs -= {"", ".", ".dockerignore"}
        ours = {e.path for e in scan_context(context).entries} - {".dockerignore"}
        assert ours == theirs, ignore
    assert time.monotonic() - started < 120


def test_cli_unreadable_file_is_a_clear_error(stack: Stack, base: str, tmp_path: Path) -> None:
    context = make_context(tmp_path / "ctx")
    (context / "secret.key").write_text("k")
    (context / "secret.key").chmod(0o000)
    prefix: list[str] = []
    if os.geteuid() == 0:  # root reads anything: drop the capabilities that let it
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux): cannot make a file unreadable")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    before = snapshot(context)
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "imagegate", "build", str(context), "--repository",
         f"{stack.registry}/it-build/{unique('unreadable')}", "--build-arg", f"BASE={base}", "--json", "--no-cache"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 2, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "ContextError" and error["path"].endswith("secret.key")
    assert "Permission denied" in error["message"] and ".dockerignore" in error["message"]
    assert snapshot(context) == before
