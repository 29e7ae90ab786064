"""``imagegate gc`` on the real engine: what a killed launcher left is removed; nothing else is touched.

The launchers are real: ``imagegate run`` processes, SIGKILLed (as the OOM killer would) while their
container runs, or alive. Containers the test creates itself stand for what gc must never take: one
without imagegate's labels, one launched on another host, one whose pid now belongs to another process.
Each test scopes gc with ``--label`` to its own containers (other tests may be running on this engine).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Iterator

import pytest

import imagegate
from tests.integration.conftest import ROOT, Stack, build_and_push, unique

pytestmark = pytest.mark.integration

SLEEP = "trap 'exit 143' TERM; sleep 300 & wait"  # a job that stops when asked (gc stops before it removes)


@pytest.fixture(scope="module")
def image(stack: Stack, docker_client: Any) -> str:
    repo = unique("gc")
    digest = build_and_push(docker_client, stack, "FROM {base}\nUSER 1000\n", repo, "1.0.0")
    return f"{stack.registry}/{repo}@{digest}"


@pytest.fixture
def scope(docker_client: Any) -> Iterator[str]:
    """A label every container of the test carries; whatever is left is removed afterwards."""
    value = unique("gc")
    yield value
    for c in docker_client.api.containers(all=True, filters={"label": f"gctest={value}"}):
        docker_client.api.remove_container(c["Id"], force=True)


def launch(image: str, scope: str, script: str, *extra: str) -> subprocess.Popen[bytes]:
    """``imagegate run`` in its own process, its container labelled for this test."""
    return subprocess.Popen([sys.executable, "-m", "imagegate", "run", "-q", "-l", f"gctest={scope}", *extra, image,
                             "--", "sh", "-c", script], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def containers(docker_client: Any, scope: str, **filters: str) -> dict[str, str]:
    """id -> state of the test's containers."""
    labels = [f"gctest={scope}", *(f"{k}={v}" for k, v in filters.items())]
    return {c["Id"]: c["State"] for c in docker_client.api.containers(all=True, filters={"label": labels})}


def wait_running(docker_client: Any, scope: str, count: int, timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while len(running := {k: v for k, v in containers(docker_client, scope).items() if v == "running"}) < count:
        assert time.monotonic() < deadline, f"expected {count} running containers, got {running}"
        time.sleep(0.1)
    return running


def gc(scope: str, *args: str) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "imagegate", "gc", "--json", "--label", f"gctest={scope}", *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_gc_removes_what_a_killed_launcher_left_running_and_leaves_the_rest(
    docker_client: Any, image: str, scope: str
) -> None:
    killed = launch(image, scope, SLEEP)
    alive = launch(image, scope, SLEEP)
    try:
        running = wait_running(docker_client, scope, 2)
        orphan = next(c for c in running if docker_client.api.inspect_container(c)["Config"]["Labels"]
                      ["imagegate.dev/pid"] == str(killed.pid))
        live = next(c for c in running if c != orphan)
        killed.send_signal(signal.SIGKILL)  # the OOM killer: no handler runs, the container runs on
        killed.wait(30)
        plain = docker_client.containers.run("imagegate/busybox:1.35.0", ["sleep", "300"], detach=True,
                                             labels={"gctest": scope})  # not imagegate's: never touched
        here = imagegate.Launcher.current()
        elsewhere = dict(imagegate.Launcher("another-host", os.getpid(), "1").labels())
        reused = dict(here.labels(), **{"imagegate.dev/pid-start": str(int(here.start) - 1)})  # my pid, not my process
        made = {}
        for name, labels in (("elsewhere", elsewhere), ("reused", reused)):
            made[name] = docker_client.containers.run(
                "imagegate/busybox:1.35.0", ["sh", "-c", SLEEP], detach=True,
                labels={"gctest": scope, "imagegate.dev/orchestrator": "cli", **labels}).id

        dry = gc(scope, "--dry-run")
        assert sorted(c["id"] for c in dry["removed"]) == sorted([orphan, made["reused"]])
        assert {c["action"] for c in dry["removed"]} == {"would remove"}
        reasons = {c["id"]: c["reason"] for c in dry["removed"] + dry["kept"]}
        assert f"pid {killed.pid}" in reasons[orphan] and "is gone" in reasons[orphan]
        assert "is alive" in reasons[live]
        assert made["elsewhere"] not in reasons and plain.id not in reasons  # another host's; not imagegate's
        assert containers(docker_client, scope)[orphan] == "running"  # a dry run changes nothing

        done = gc(scope)
        assert sorted(c["id"] for c in done["removed"]) == sorted([orphan, made["reused"]])
        assert {c["action"] for c in done["removed"]} == {"removed"}
        left = containers(docker_client, scope)
        assert orphan not in left and made["reused"] not in left
        assert left[live] == left[plain.id] == left[made["elsewhere"]] == "running"
    finally:
        alive.send_signal(signal.SIGTERM)  # imagegate run stops and removes its container on SIGTERM
        alive.wait(60)
        if killed.poll() is None:
            killed.kill()


def test_gc_older_than_removes_exited_containers_and_a_reattached_one_is_kept_while_watched(
    docker_client: Any, image: str, scope: str
) -> None:
    finished = launch(image, scope, "echo done", "--keep")
    assert finished.wait(60) == 0, finished.stderr.read() if finished.stderr else ""
    (exited,) = containers(docker_client, scope)
    watched = launch(image, scope, SLEEP)
    running = wait_running(docker_client, scope, 1)
    (orphan,) = running
    watched.send_signal(signal.SIGKILL)
    watched.wait(30)
    record = imagegate.record_adoption(docker_client, orphan, launch_id=unique("adopt"))  # this process follows it now
    try:
        report = gc(scope)
        kept = {c["id"]: c["reason"] for c in report["kept"]}
        assert report["removed"] == []
        assert "reattached" in kept[orphan] and "--older-than" in kept[exited]
        assert gc(scope, "--older-than", "1h")["removed"] == []  # it exited seconds ago
        assert [c["id"] for c in gc(scope, "--older-than", "0s")["removed"]] == [exited]
    finally:
        imagegate.drop_adoption(docker_client, record)
    assert [c["id"] for c in gc(scope)["removed"]] == [orphan]  # nobody watches it any longer
    assert containers(docker_client, scope) == {}


def test_gc_from_python_and_its_refusals(docker_client: Any) -> None:
    report = imagegate.gc(dry_run=True, labels=["gctest=nothing-has-this"])
    assert report.dry_run and report.removed == () and report.host == imagegate.Launcher.current().host
    with pytest.raises(imagegate.GcOptionError) as caught:
        imagegate.gc(older_than="10 days")
    assert caught.value.option == "--older-than"
    result = subprocess.run([sys.executable, "-m", "imagegate", "gc", "--older-than", "soon"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "is not a duration; use e.g. 90s" in result.stderr


def test_retire_keeps_what_ran_but_never_a_container_that_was_never_started(
    docker_client: Any, image: str, scope: str
) -> None:
    """``auto_remove="never"`` keeps a container's logs and exit code; one killed between create and start has
    neither, and left ``created`` anyone's ``docker start`` would run the job unwatched: it is removed."""
    api = docker_client.api
    never_started = api.create_container(image, ["sh", "-c", "echo hi"], labels={"gctest": scope})["Id"]
    ran = api.create_container(image, ["sh", "-c", SLEEP], labels={"gctest": scope})["Id"]
    api.start(ran)
    wait_running(docker_client, scope, 1)
    assert imagegate.retire_container(docker_client, never_started, remove=False, stop_timeout=5)
    assert imagegate.retire_container(docker_client, ran, remove=False, stop_timeout=5)
    assert containers(docker_client, scope) == {ran: "exited"}  # the one that ran is kept, stopped
    assert api.inspect_container(ran)["State"]["ExitCode"] == 143  # asked to stop, it stopped (not killed)
    assert imagegate.retire_container(docker_client, ran, remove=True, stop_timeout=5)
    assert containers(docker_client, scope) == {}
    assert imagegate.retire_container(docker_client, ran, remove=False)  # gone already: never raises
