"""`imagegate run` against the real Docker Engine and local registry: what runs, what comes back, what is left.

Every test labels its runs with a unique ``it.run`` label (or counts the engine's create events for its
own repository), so the containers it finds are its own even while other tests use the engine.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import imagegate
from imagegate import ImageSource, LaunchMismatch, Policy, RunSpec, docker_violations, plan_launch, run_container
from tests.integration.conftest import Stack, build_and_push, run_cli, unique

pytestmark = pytest.mark.integration

OK_CMD = 'FROM {base}\nUSER 10001\nCMD ["sh", "-c", "echo out-line; echo err-line >&2"]\n'


@dataclasses.dataclass(frozen=True)
class Images:
    repo: str
    good: str  # USER 10001, full-version tag
    good_digest: str
    root: str  # USER unset (root)
    mutable: str  # USER 10001, :latest
    other: str  # another good image, by digest (what a tampered launch swaps in)


@pytest.fixture(scope="module")
def images(stack: Stack, docker_client: Any) -> Images:
    repo = unique("run")
    base = f"{stack.registry}/{repo}"
    good = build_and_push(docker_client, stack, OK_CMD, repo, "1.0.0")
    build_and_push(docker_client, stack, 'FROM {base}\nCMD ["id", "-u"]\n', repo, "1.0.1")
    build_and_push(docker_client, stack, OK_CMD, repo, "latest")
    other = build_and_push(docker_client, stack, 'FROM {base}\nUSER 10001\nLABEL other=1\nCMD ["true"]\n', repo, "2.0.0")
    return Images(repo, f"{base}:1.0.0", good, f"{base}:1.0.1", f"{base}:latest", f"{base}@{other}")


def mine(docker_client: Any, tag: str) -> list[Any]:
    """Every container (running or not) of the runs labelled it.run=*tag*."""
    return docker_client.containers.list(all=True, filters={"label": f"it.run={tag}"})


def now() -> int:
    """Nanoseconds since the epoch, the engine's event clock (the same host)."""
    return time.time_ns()


def events(docker_client: Any, since: int, **filters: str) -> list[dict[str, Any]]:
    """The engine's container events since *since* (ns) matching *filters*."""
    until = math.ceil(time.time() + 0.01)  # the engine answers when *until* has passed: keep it close
    found = docker_client.events(since=since // 1_000_000_000, until=until,
                                 filters={"type": "container", **filters}, decode=True)
    return [e for e in found if e.get("timeNano", 0) >= since]


def created_from(docker_client: Any, repo: str, since: int) -> list[dict[str, Any]]:
    """The engine's container-create events since *since* (ns) for images of *repo*."""
    return [e for e in events(docker_client, since, event="create")
            if f"/{repo}" in (e.get("Actor", {}).get("Attributes", {}).get("image") or "")]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("run", *args, cwd=cwd)


def test_a_passing_image_runs_its_output_streams_apart_and_nothing_is_left(docker_client: Any, images: Images) -> None:
    tag = uuid.uuid4().hex
    result = run(images.good, "--label", f"it.run={tag}")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "out-line\n"  # the job's stdout is the command's stdout, and nothing else
    assert "err-line" in result.stderr and "out-line" not in result.stderr
    assert "verdict  passed" in result.stderr and images.good_digest in result.stderr
    assert mine(docker_client, tag) == []  # --rm is the default


@pytest.mark.parametrize("code", [0, 3, 42])
def test_the_containers_exit_status_comes_back(images: Images, code: int) -> None:
    result = run("-q", images.good, "--", "sh", "-c", f"echo overridden; exit {code}")
    assert result.returncode == code, result.stderr
    assert result.stdout == "overridden\n" and result.stderr == ""  # -q: only the job's output


def test_the_container_ran_the_checked_digest_hardened_and_labelled(docker_client: Any, images: Images) -> None:
    tag = uuid.uuid4().hex
    result = run("--json", "--keep", images.good, "--label", f"it.run={tag}", "--", "sh", "-c", "id -u; exit 5")
    assert result.returncode == 5, result.stderr
    record = json.loads(result.stdout)  # one JSON object; the job's stdout went to stderr
    assert "10001" in result.stderr and record["exit_code"] == 5 and record["passed"] is True
    [container] = mine(docker_client, tag)
    try:
        assert container.id == record["container"]["id"] and record["container"]["removed"] is False
        attrs = container.attrs
        facts = record["report"]["image"]
        assert attrs["Image"] == facts["config_digest"] == record["container"]["image_id"]
        assert attrs["Config"]["Image"] == record["launch"] == images.good.rsplit(":", 1)[0] + "@" + images.good_digest
        assert attrs["State"]["ExitCode"] == 5
        host = attrs["HostConfig"]
        assert docker_violations(host, Policy()) == []
        assert "ALL" in host["CapDrop"] and any(o.startswith("no-new-privileges") for o in host["SecurityOpt"])
        assert not host["Privileged"]
        labels = attrs["Config"]["Labels"]
        assert labels["imagegate.dev/orchestrator"] == "cli"
        assert labels["imagegate.dev/pinned"] == record["pinned"] == f"{images.good}@{images.good_digest}"
        assert labels["imagegate.dev/launch"] == record["container"]["launch_id"]
        assert labels["imagegate.dev/task"] == images.good
    finally:
        container.remove(force=True)


@pytest.mark.parametrize(("image", "failed"), [("root", "non-root"), ("mutable", "pinned")])
def test_a_refused_image_exits_1_and_creates_nothing(docker_client: Any, images: Images, tmp_path: Path, image: str, failed: str) -> None:
    (tmp_path / "imagegate.toml").write_text('[checks]\npinned = "enforce"\nnon-root = "enforce"\n')
    since = now()
    before = len(docker_client.containers.list(all=True, filters={"label": "imagegate.dev/orchestrator=cli"}))
    result = run("--json", getattr(images, image), "--", "echo", "must-not-run", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    record = json.loads(result.stdout)
    assert record["passed"] is False and record["container"] is None and record["exit_code"] is None
    assert [c["check"] for c in record["report"]["checks"] if c["outcome"] == "fail"] == [failed]
    assert "must-not-run" not in result.stdout + result.stderr and "nothing was created" in result.stderr
    assert created_from(docker_client, images.repo, since) == []
    after = len(docker_client.containers.list(all=True, filters={"label": "imagegate.dev/orchestrator=cli"}))
    assert after <= before  # nothing of ours appeared (others' runs may only have ended)


def test_a_root_user_override_is_checked_and_refused(docker_client: Any, images: Images) -> None:
    since = now()
    result = run("--user", "0", images.good)
    assert result.returncode == 1 and "runtime user override is '0'" in result.stderr
    assert created_from(docker_client, images.repo, since) == []


def test_dry_run_prints_the_plan_and_creates_nothing(docker_client: Any, images: Images) -> None:
    since = now()
    result = run("--dry-run", "--json", images.good, "-e", "TOKEN=s3cr3t", "--", "echo", "x")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["dry_run"] is True and record["container"] is None
    assert record["run"]["image"] == record["launch"] and record["run"]["command"] == ["echo", "x"]
    assert record["run"]["env"] == ["TOKEN"] and "s3cr3t" not in result.stdout + result.stderr
    assert record["run"]["host_config"]["cap_drop"] == ["ALL"]
    assert created_from(docker_client, images.repo, since) == []


def test_lock_name_runs_the_locked_digest(images: Images, tmp_path: Path) -> None:
    lock = {"version": 1, "images": {"job": {"reference": f"{images.good}@{images.good_digest}"}}}
    (tmp_path / "imagegate.lock.json").write_text(json.dumps(lock))
    found = run("--json", "--lock-name", "job", "--", "echo", "locked", cwd=tmp_path)  # the nearest lock file
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["launch"].endswith(images.good_digest) and "locked" in found.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    named = run("-q", "--lock-name", "job", "--lock-file", str(tmp_path / "imagegate.lock.json"), "--", "echo", "named", cwd=elsewhere)
    assert named.returncode == 0 and named.stdout == "named\n", named.stderr
    missing = run("--lock-name", "nope", cwd=tmp_path)
    assert missing.returncode == 2 and "no image named 'nope'" in missing.stderr


def test_job_dir_is_built_through_the_same_path_and_run(stack: Stack, docker_client: Any, tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    (job / "Dockerfile").write_text(f"FROM {stack.env['IMAGEGATE_BUSYBOX_IMAGE_DIGEST']}\nUSER 10001\nCOPY hello.txt /hello.txt\n"
                                    'CMD ["cat", "/hello.txt"]\n')
    (job / "hello.txt").write_text("hello from the job\n")
    (job / ".dockerignore").write_text(".git\n__pycache__\n*.pyc\n.venv\nnode_modules\n")
    result = run("--json", "--job-dir", str(job), "--repository", f"{stack.registry}/{unique('run-job')}")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["build"]["built"] is True and record["launch"].endswith(record["build"]["digest"])
    assert "hello from the job" in result.stderr


def test_env_and_a_read_only_bind_mount(images: Images, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "in.txt").write_text("from the host\n")
    (data / "in.txt").chmod(0o644)
    (tmp_path / "run.env").write_text("FROM_FILE=file-value\n")
    script = 'cat /data/in.txt; echo "$A $FROM_FILE"; echo x > /data/out.txt || echo read-only'
    result = run("-q", images.good, "-v", f"{data}:/data:ro", "-e", "A=flag-value", "--env-file", str(tmp_path / "run.env"),
                 "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["from the host", "flag-value file-value", "read-only"]
    assert not (data / "out.txt").exists()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_and_removes_the_running_container(docker_client: Any, images: Images, signum: int, code: int) -> None:
    tag = uuid.uuid4().hex
    process = subprocess.Popen(
        [sys.executable, "-m", "imagegate", "run", "-q", "--json", "--stop-timeout", "1", "--label", f"it.run={tag}",
         images.good, "--", "sh", "-c", "echo started >&2; sleep 300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )
    try:
        assert _wait_for_line(process.stderr, "started", timeout=60), "the container never started"
        assert [c.status for c in mine(docker_client, tag)] == ["running"]
        started = time.monotonic()
        process.send_signal(signum)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == code, err
    assert time.monotonic() - started < 30  # the grace period was 1 s, not the job's 300
    record = json.loads(out)
    assert record["signal"] == signal.Signals(signum).name and record["container"]["removed"] is True
    assert mine(docker_client, tag) == []  # no orphan, running or stopped


def test_a_tampered_launch_is_removed_without_starting(docker_client: Any, images: Images, stack: Stack) -> None:
    """The engine is asked for another image than the checked one: the create is seen, the start never happens."""
    policy = Policy()
    plan = plan_launch(ImageSource(image=images.good), policy=policy)
    tampered = dataclasses.replace(plan, launch=images.other)  # as if the image changed between the check and the launch
    tag = uuid.uuid4().hex
    since = now()
    out = io.BytesIO()
    with pytest.raises(LaunchMismatch) as caught:
        run_container(tampered, RunSpec(labels={"it.run": tag}, remove=False), policy=policy, stdout=out, stderr=out)
    assert caught.value.actual != (plan.report.facts or {})["config_digest"]
    assert mine(docker_client, tag) == []  # removed even though the spec asked to keep it
    assert events(docker_client, since, event="create", label=f"it.run={tag}") != []  # it was created…
    assert events(docker_client, since, event="start", label=f"it.run={tag}") == []  # …and never started
    assert out.getvalue() == b""


def test_the_core_run_returns_what_ran(docker_client: Any, images: Images) -> None:
    policy = Policy()
    plan = plan_launch(ImageSource(image=images.good), policy=policy)
    out, err = io.BytesIO(), io.BytesIO()
    created: list[str] = []
    result = run_container(plan, RunSpec(command=("sh", "-c", "echo o; echo e >&2; exit 7")), policy=policy,
                           stdout=out, stderr=err, on_created=created.append)
    assert (result.exit_code, out.getvalue(), err.getvalue()) == (7, b"o\n", b"e\n")
    assert result.removed and created == [result.container_id]
    assert result.image_id == (plan.report.facts or {})["config_digest"]
    assert isinstance(result, imagegate.RunResult)
    assert docker_client.containers.list(all=True, filters={"id": result.container_id}) == []


def _wait_for_line(stream: Any, text: str, *, timeout: float) -> bool:
    found = threading.Event()

    def read() -> None:
        for line in stream:
            if text in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    return found.wait(timeout)

