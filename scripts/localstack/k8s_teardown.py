"""Stopping the cluster and removing what it left behind: pods, processes, shims, mounts, network namespaces,
the bridge, cgroups, kernel settings, pod logs and the state directory (except ``logs/`` and the state files).
Safe to run on a half-started cluster."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import ssl
import time
from pathlib import Path

from .host import run, say
from .k8s_api import Api
from .k8s_config import BRIDGE, CGROUP_ROOT, containerd_socket
from .k8s_host import ctr, sysctl_path
from .k8s_services import cleanup_services, stop_services
from .k8s_spark import cleanup_spark_tmp, stop_operator
from .k8s_state import ENV_FILE, STATE_FILE
from .procs import proc_cmdline, proc_matches, stop_process

POD_LOGS = Path("/var/log/pods")
CONTAINER_LOGS = Path("/var/log/containers")


# ------------------------------------------------------------------------------------------ parsers


def mountinfo_points(mountinfo: str, paths: list[str]) -> list[str]:
    """Mount points of a /proc/PID/mountinfo text at or below any of *paths*, deepest first."""
    out = []
    for line in mountinfo.splitlines():
        mnt = line.split()[4].replace("\\040", " ")
        if any(mnt == p or mnt.startswith(p.rstrip("/") + "/") for p in paths):
            out.append(mnt)
    return sorted(set(out), key=lambda m: m.count("/"), reverse=True)


def is_shim_of(cmd: list[str], sock: str) -> bool:
    """True for the command line of a containerd shim started by the containerd at *sock*."""
    if cmd and os.path.basename(cmd[0]).startswith("containerd-shim") and "-address" in cmd:
        i = cmd.index("-address")
        return i + 1 < len(cmd) and cmd[i + 1] == sock
    return False


def running_tasks(ctr_tasks_ls: str) -> list[str]:
    """Lines of ``ctr tasks ls`` output (header skipped) whose task is not STOPPED."""
    return [line for line in ctr_tasks_ls.splitlines()[1:] if line.split()[2:3] != ["STOPPED"]]


def network_namespaces(container_info: str, sdir: Path) -> set[str]:
    """Paths of the network namespaces of ``ctr containers info`` output that live where containerd puts them."""
    paths: set[str] = set()
    with contextlib.suppress(ValueError, KeyError, TypeError):
        for ns in json.loads(container_info)["Spec"]["linux"]["namespaces"]:
            path = ns.get("path", "")
            if ns.get("type") == "network" and path.startswith(("/var/run/netns/", f"{sdir}/")):
                paths.add(path)
    return paths


# ---------------------------------------------------------------------------------------- the machine


def _mounts_under(paths: list[str]) -> list[str]:
    with contextlib.suppress(OSError):
        return mountinfo_points(Path("/proc/self/mountinfo").read_text(), paths)
    return []


def _umount_all(paths: list[str]) -> int:
    n = 0
    for _ in range(3):
        mounts = _mounts_under(paths)
        if not mounts:
            break
        for m in mounts:
            if run(["umount", m], check=False, timeout=60).returncode != 0:
                run(["umount", "-l", m], check=False, timeout=60)
            n += 1
    return n


def _our_shims(sdir: Path) -> list[int]:
    """PIDs of containerd shims started by *our* containerd (their cmdline names our socket)."""
    sock = containerd_socket(sdir)
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and is_shim_of(proc_cmdline(int(p.name)) or [], sock)]


def _kill_cgroup_procs(cgroups: list[str]) -> list[int]:
    """SIGKILL every process in the kubelet's cgroup root (only our pods live there); return their PIDs."""
    killed: set[int] = set()
    for _ in range(10):
        pids = set()
        for cg in cgroups:
            for procs in Path(cg).rglob("cgroup.procs") if Path(cg).is_dir() else []:
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(x) for x in procs.read_text().split())
        pids.discard(os.getpid())
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed |= pids
        time.sleep(0.3)
    return sorted(killed)


# ------------------------------------------------------------------------------------ pods, containers


def _delete_all_pods(state: dict, timeout: float = 30.0) -> None:
    """Delete every pod through the API, then wait for the kubelet to stop their sandboxes (frees netns, IPs)."""
    try:
        api = Api(state["ports"]["apiserver"], Path(state["state_dir"]) / "pki")
    except (OSError, KeyError, ssl.SSLError):
        return
    pods = api.ok("/api/v1/pods")
    if not pods or not pods.get("items"):
        return
    for pod in pods["items"]:
        md = pod["metadata"]
        with contextlib.suppress(OSError, http.client.HTTPException):
            api.request("DELETE", f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}?gracePeriodSeconds=1")
    say(f"deleted {len(pods['items'])} pod(s); waiting for the kubelet to stop them")
    sdir = Path(state["state_dir"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = api.ok("/api/v1/pods")
        tasks = ctr(sdir, "tasks", "ls", check=False, timeout=30)
        running = running_tasks(tasks.stdout)
        if left is not None and not left.get("items") and tasks.returncode == 0 and not running:
            say(f"the kubelet stopped them in {timeout - (deadline - time.monotonic()):.1f} s")
            return
        time.sleep(0.5)


def _netns_of_containers(sdir: Path) -> set[str]:
    paths: set[str] = set()
    listing = ctr(sdir, "containers", "ls", "-q", check=False, timeout=30)
    for cid in listing.stdout.split() if listing.returncode == 0 else []:
        info = ctr(sdir, "containers", "info", cid, check=False, timeout=30)
        paths |= network_namespaces(info.stdout, sdir)
    return paths


def _kill_tasks(sdir: Path) -> None:
    tasks = ctr(sdir, "tasks", "ls", "-q", check=False, timeout=30)
    for tid in tasks.stdout.split() if tasks.returncode == 0 else []:
        ctr(sdir, "tasks", "kill", "--signal", "SIGKILL", tid, check=False, timeout=30)
    for tid in tasks.stdout.split() if tasks.returncode == 0 else []:
        for _ in range(20):
            if ctr(sdir, "tasks", "delete", tid, check=False, timeout=30).returncode == 0:
                break
            time.sleep(0.25)


# -------------------------------------------------------------------------------------------- teardown


def teardown(sdir: Path, state: dict) -> None:
    """Stop everything `up` started and remove what it left behind (safe to run on a half-started cluster)."""
    stop_operator(state)  # first: nothing submits again while the pods go
    netns = _stop_components(sdir, state)
    stop_services(state)
    cleanup_services(state)
    cleanup_spark_tmp(state)
    _kill_leftovers(sdir, state)
    n = _umount_all([str(sdir), *sorted(netns)])
    if n:
        say(f"unmounted {n} mount(s) under {sdir} and pod network namespaces")
    for path in netns:
        with contextlib.suppress(OSError):
            os.unlink(path)
    _restore_machine(state)
    _clean_state_dir(sdir)


def _stop_components(sdir: Path, state: dict) -> set[str]:
    """Stop the processes in order; return the network namespaces of the containers (to unmount later)."""
    procs = state.get("procs") or {}
    containerd_ok = proc_matches(procs.get("containerd"))
    # Controllers first, so that deleted pods are not re-created (ReplicaSets, Jobs) while the kubelet stops them.
    for name in ("controller_manager", "scheduler"):
        stop_process(name, procs.get(name), 20)
    if proc_matches(procs.get("kubelet")) and proc_matches(procs.get("apiserver")) and containerd_ok:
        _delete_all_pods(state)
    for name in ("kubelet", "apiserver", "etcd"):
        stop_process(name, procs.get(name), 20)
    netns: set[str] = set()
    if containerd_ok:
        netns = _netns_of_containers(sdir)
        _kill_tasks(sdir)
    stop_process("containerd", procs.get("containerd"), 20)
    return netns


def _kill_leftovers(sdir: Path, state: dict) -> None:
    # Containers whose containerd is gone (e.g. everything killed at once): their processes are in our cgroups.
    orphans = _kill_cgroup_procs(state.get("cgroups") or [])
    if orphans:
        say(f"killed {len(orphans)} leftover container process(es) in /{CGROUP_ROOT}: {orphans}")
    shims = _our_shims(sdir)
    for pid in shims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if shims:
        say(f"containerd: killed {len(shims)} leftover shim(s) of our containerd: {shims}")


def _restore_machine(state: dict) -> None:
    """The bridge, the cgroups, the kernel settings and the pod logs, as they were before `up`."""
    if not state.get("bridge_existed") and Path(f"/sys/class/net/{BRIDGE}").exists():
        run(["ip", "link", "delete", BRIDGE], check=False, timeout=30)
        say(f"removed the bridge {BRIDGE}")
    for cg in state.get("cgroups") or []:
        for d in sorted((p for p in Path(cg).rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            Path(cg).rmdir()
    for key, value in (state.get("sysctl_before") or {}).items():
        path = sysctl_path(key)
        with contextlib.suppress(OSError):
            if path.read_text().strip() != value:
                path.write_text(value + "\n")
                say(f"restored {key}={value}")
    if state.get("preexisting_pod_logs") is not None and POD_LOGS.is_dir():
        _remove_pod_logs(set(state["preexisting_pod_logs"]))


def _remove_pod_logs(keep: set[str]) -> None:
    for entry in os.listdir(POD_LOGS):
        if entry not in keep:
            shutil.rmtree(POD_LOGS / entry, ignore_errors=True)
    with contextlib.suppress(OSError):
        for link in CONTAINER_LOGS.iterdir():
            if link.is_symlink() and not link.exists():
                link.unlink()


def _clean_state_dir(sdir: Path) -> None:
    """Remove everything in the state dir but logs/, the lock and the state files (never through a mount)."""
    for child in list(sdir.iterdir()) if sdir.is_dir() else []:
        if child.name in ("logs", ".lock", STATE_FILE, ENV_FILE):
            continue
        if _mounts_under([str(child)]):
            say(f"NOT removing {child}: something is still mounted there")
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                child.unlink()
