"""The rules for what outlived its launcher (imagegate/_gc.py) and who launched it (imagegate/_owner.py).

Pure functions over what the runtime recorded (``docker inspect`` records, stored pods), with plans from
the in-process fake registry; the launcher's liveness against real processes of this host. The engine
side is tested in tests/integration/test_gc_stack.py and the kill campaigns.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from typing import Any

import pytest

import imagegate
from imagegate import (
    DockerConfig,
    GcOptionError,
    ImageSource,
    LaunchPlan,
    Launcher,
    Policy,
    RegistryClient,
    container_verdicts,
    parse_duration,
    plan_launch,
    plan_pod,
    pod_verdicts,
)
from tests.support.fakeregistry import FakeRegistry
from tests.support.oci import make_image

HARDENED = {"CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges:true"], "Privileged": False}
SPEC = "a" * 40


@pytest.fixture(scope="module")
def client() -> RegistryClient:
    registry = FakeRegistry()
    registry.put_image("team/etl", make_image(user="10001"), tag="1.4.2")
    registry.put_image("team/etl", make_image(user="10001", cmd=["other"]), tag="1.5.0")
    return RegistryClient(transport=registry.transport, docker_config=DockerConfig({}))


@pytest.fixture(scope="module")
def plan(client: RegistryClient) -> LaunchPlan:
    return plan_launch(ImageSource(image="registry.test/team/etl:1.4.2"), client=client)


def record(plan: LaunchPlan, ident: str, status: str, created: str, *, try_number: int = 1, spec: str = SPEC,
           **changes: Any) -> dict[str, Any]:
    """A ``docker inspect`` record of a container an earlier try launched from *plan*."""
    labels = {"imagegate.dev/try-number": str(try_number), "imagegate.dev/spec": spec}
    base: dict[str, Any] = {
        "Id": ident * 8, "Name": f"/{ident}", "Created": created, "Image": (plan.report.facts or {})["config_digest"],
        "State": {"Status": status, "ExitCode": 0 if status == "running" else 137},
        "Config": {"User": "10001", "Labels": labels}, "HostConfig": dict(HARDENED), "Mounts": [],
    }
    for key, value in changes.items():
        base[key] = {**base[key], **value} if isinstance(base.get(key), dict) else value
    return base


def actions(verdicts: list[imagegate.Predecessor]) -> dict[str, str]:
    return {v.name: v.action for v in verdicts}


def test_the_newest_running_container_of_the_checked_launch_is_reattached_and_the_rest_removed(plan: LaunchPlan) -> None:
    records = [
        record(plan, "old", "running", "2026-01-01T00:00:01Z", try_number=1),
        record(plan, "new", "running", "2026-01-01T00:00:02Z", try_number=2),
        record(plan, "made", "created", "2026-01-01T00:00:03Z", try_number=3),  # killed between create and start
        record(plan, "done", "exited", "2026-01-01T00:00:00Z"),
    ]
    verdicts = container_verdicts(records, plan, Policy(), reattach=True, spec=SPEC)
    assert actions(verdicts) == {"new": "reattach", "old": "remove", "made": "remove", "done": "remove"}
    reasons = {v.name: v.reason for v in verdicts}
    assert "newer try" in reasons["old"] and "created, not running" in reasons["made"] and "exited" in reasons["done"]
    assert next(v for v in verdicts if v.name == "new").describe() == f"container {'new' * 4} (try-number 2, running)"
    # off: every one is removed; a finished one is kept only when asked (auto_remove="never")
    assert set(actions(container_verdicts(records, plan, Policy(), reattach=False)).values()) == {"remove"}
    kept = container_verdicts(records, plan, Policy(), reattach=False, keep_finished=True)
    assert actions(kept)["done"] == "keep" and actions(kept)["old"] == "remove"


@pytest.mark.parametrize(("change", "why"), [
    ({"Image": "sha256:" + "1" * 64}, "not the digest this try checked"),
    ({"HostConfig": {"Privileged": True}}, "breaks the hardening"),
    ({"HostConfig": {"CapAdd": ["SYS_ADMIN"]}}, "breaks the hardening"),
    ({"Config": {"User": "0", "Labels": {"imagegate.dev/spec": SPEC}}}, "breaks the hardening"),
    ({"spec": "b" * 40}, "another command, entrypoint or user"),
    ({"State": {"Status": "paused"}}, "paused, not running"),
])
def test_a_running_container_that_is_not_this_trys_launch_is_never_reattached(
    plan: LaunchPlan, change: dict[str, Any], why: str
) -> None:
    spec = change.pop("spec", SPEC)
    verdicts = container_verdicts([record(plan, "x", "running", "2026-01-01T00:00:00Z", spec=spec, **change)], plan,
                                  Policy(), reattach=True, spec=SPEC)
    assert [(v.action, why in v.reason) for v in verdicts] == [("remove", True)], verdicts


def test_a_running_container_with_a_host_binding_volume_is_never_reattached(plan: LaunchPlan) -> None:
    """Its record names the volume only; the volume's own record (looked up, as at create) says it binds /etc."""
    mounts = [{"Type": "volume", "Name": "data", "Destination": "/data", "Driver": "local"}]
    volumes = {"data": {"Name": "data", "Driver": "local", "Options": {"type": "none", "o": "bind", "device": "/etc"}}}
    running = [record(plan, "x", "running", "2026-01-01T00:00:00Z", Mounts=mounts)]
    verdicts = container_verdicts(running, plan, Policy(), reattach=True, spec=SPEC, inspect_volume=volumes.__getitem__)
    assert [(v.action, "volume 'data'" in v.reason) for v in verdicts] == [("remove", True)], verdicts
    volumes["data"]["Options"] = None  # a plain named volume
    assert actions(container_verdicts(running, plan, Policy(), reattach=True, spec=SPEC,
                                      inspect_volume=volumes.__getitem__)) == {"x": "reattach"}


def test_another_image_of_the_same_task_is_replaced(client: RegistryClient, plan: LaunchPlan) -> None:
    newer = plan_launch(ImageSource(image="registry.test/team/etl:1.5.0"), client=client)  # the DAG moved on
    verdicts = container_verdicts([record(plan, "x", "running", "2026-01-01T00:00:00Z")], newer, Policy(),
                                  reattach=True, spec=SPEC)
    assert verdicts[0].action == "remove" and "not the digest this try checked" in verdicts[0].reason


def pod(planned: imagegate.PodPlan, name: str, phase: str, created: str, **metadata: Any) -> dict[str, Any]:
    stored = {**planned.pod, "metadata": {**planned.pod["metadata"], "name": name, "creationTimestamp": created,
                                          **metadata}}
    stored["metadata"]["annotations"] = {**stored["metadata"]["annotations"], "imagegate.dev/try-number": "1"}
    stored["status"] = {"phase": phase}
    return stored


def test_pod_verdicts(client: RegistryClient) -> None:
    primary = plan_launch(ImageSource(image="registry.test/team/etl:1.4.2"), backend="kubernetes", client=client)
    planned = plan_pod({"spec": {"containers": [{"name": "base", "image": "x"}]}}, primary=primary,
                       primary_container="base", client=client)
    swapped = pod(planned, "swapped", "Running", "2026-01-01T00:00:05Z")
    swapped["spec"] = {**swapped["spec"], "containers": [{**swapped["spec"]["containers"][0], "image": "evil@sha256:" + "2" * 64}]}
    pods = [
        pod(planned, "running", "Running", "2026-01-01T00:00:01Z"),
        pod(planned, "pending", "Pending", "2026-01-01T00:00:02Z"),
        pod(planned, "checked", "Running", "2026-01-01T00:00:03Z", labels={"already_checked": "True"}),
        pod(planned, "deleting", "Running", "2026-01-01T00:00:04Z", deletionTimestamp="2026-01-01T00:01:00Z"),
        swapped,
        pod(planned, "done", "Succeeded", "2026-01-01T00:00:00Z"),
    ]
    verdicts = pod_verdicts(pods, planned, reattach=True, checked_label="already_checked")
    assert actions(verdicts) == {"pending": "reattach", "running": "remove", "checked": "remove", "deleting": "keep",
                                 "swapped": "remove", "done": "remove"}
    reasons = {v.name: v.reason for v in verdicts}
    assert "already processed" in reasons["checked"] and "not the image this try checked" in reasons["swapped"]
    assert next(v for v in verdicts if v.name == "pending").describe() == "pod pending (try-number 1, Pending)"
    kept = pod_verdicts(pods, planned, reattach=False, keep_finished=True)
    assert actions(kept)["done"] == "keep" and actions(kept)["pending"] == "remove"


def test_a_pod_that_breaks_the_profile_or_the_user_is_never_reattached(client: RegistryClient) -> None:
    """Same images, but changed after the plan (a provider callback gets the pod before it is created)."""
    primary = plan_launch(ImageSource(image="registry.test/team/etl:1.4.2"), backend="kubernetes", client=client)
    planned = plan_pod({"spec": {"containers": [{"name": "base", "image": "x"}]}}, primary=primary,
                       primary_container="base", client=client)
    privileged = pod(planned, "privileged", "Running", "2026-01-01T00:00:03Z")
    privileged["spec"] = {**privileged["spec"], "hostPID": True, "volumes": [{"name": "r", "hostPath": {"path": "/"}}],
                          "containers": [{**privileged["spec"]["containers"][0],
                                          "securityContext": {"privileged": True}}]}
    root = pod(planned, "root", "Running", "2026-01-01T00:00:02Z")
    root["spec"] = {**root["spec"], "securityContext": {**root["spec"]["securityContext"], "runAsUser": 0}}
    good = pod(planned, "good", "Running", "2026-01-01T00:00:01Z")
    verdicts = pod_verdicts([privileged, root, good], planned, reattach=True)
    assert actions(verdicts) == {"privileged": "remove", "root": "remove", "good": "reattach"}
    reasons = {v.name: v.reason for v in verdicts}
    assert "hostPID" in reasons["privileged"] and "privileged must be false" in reasons["privileged"]
    assert "not the user imagegate checked" in reasons["root"]


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0), ("0s", 0), ("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600),
    ("1h30m", 5400), (" 1D ", 86400),
])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10", "-5m", "1.5h", "5x", "10 days", "h", "1h 30m", "P1D"])
def test_bad_durations_name_the_option_and_the_fix(text: str) -> None:
    with pytest.raises(GcOptionError) as caught:
        parse_duration(text)
    assert caught.value.option == "--older-than" and caught.value.value == text
    assert "90s, 30m, 12h, 7d or 1h30m" in str(caught.value)


def test_gc_refuses_bad_options_before_asking_the_engine() -> None:
    with pytest.raises(GcOptionError):
        imagegate.gc(older_than="soon", client=object())  # the client is never used
    with pytest.raises(GcOptionError) as caught:
        imagegate.gc(labels=["=x"], client=object())
    assert caught.value.option == "--label"
    with pytest.raises(GcOptionError):
        imagegate.gc(older_than=dt.timedelta(seconds=-1), client=object())


def test_a_launcher_is_alive_gone_or_unknown() -> None:
    me = Launcher.current()
    assert (me.host, me.pid) and me.start.isdigit() and me.boot_id and me.pid_ns.startswith("pid:[")
    assert me.status() == "alive"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        start = open(f"/proc/{child.pid}/stat").read().rpartition(")")[2].split()[19]
        theirs = Launcher(me.host, child.pid, start, me.boot_id, me.pid_ns)
        assert theirs.status() == "alive"
        assert Launcher(me.host, child.pid, str(int(start) + 1), me.boot_id, me.pid_ns).status() == "gone"  # pid reused
    finally:
        child.kill()
        child.wait()
    assert theirs.status() == "gone"  # exited (and reaped)
    assert Launcher("another-host", me.pid, me.start, me.boot_id, me.pid_ns).status() == "unknown"
    assert Launcher(me.host, me.pid, me.start, me.boot_id, "pid:[1]").status() == "unknown"  # another pid namespace
    assert Launcher(me.host, me.pid, me.start, "an-earlier-boot", me.pid_ns).status() == "gone"  # the host rebooted
    assert Launcher.from_labels(me.labels()) == me
    assert Launcher.from_labels({"imagegate.dev/host": "h", "imagegate.dev/pid": "1; rm -rf /"}) is None
    assert Launcher.from_labels({}) is None


def test_a_forked_child_is_its_own_launcher() -> None:
    parent = Launcher.current()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, str(Launcher.current().pid).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert int(os.read(read, 64)) == pid != parent.pid
    os.close(read)
