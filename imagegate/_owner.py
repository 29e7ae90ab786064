"""Who launched a container or pod: the task it runs for, and (on Docker) the process that launched it.

Two values, both pure (no I/O beyond this host's ``/proc``), rendered into labels by
:func:`imagegate.container_labels` / :func:`imagegate.pod_metadata`:

- :class:`TaskIdentity` — the orchestrator's ids of the task (Airflow: DAG, task, run, map index;
  Dagster: root run and step key) and of this try (Airflow: try number; Dagster: run id and retry).
  :attr:`TaskIdentity.key` hashes the task's ids *without* the try, so a retry finds the containers
  and pods of earlier tries by one short label (``imagegate.dev/task-key``). Kubernetes label values
  are at most 63 characters of ``[A-Za-z0-9-_.]`` and an Airflow run id holds ``:`` and ``+``: the
  full ids are Docker labels (any string) and pod annotations; only the key is a pod label.
- :class:`Launcher` — the launching host, process id, the process's start time (field 22 of
  ``/proc/PID/stat``, clock ticks since boot) and where that pid means something (the boot id and
  the pid namespace). A pid is reused after its process exits; pid + start time + boot + namespace
  is not, so :meth:`Launcher.status` can say "gone" without mistaking a new process for the launcher.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from typing import Literal, Mapping

PREFIX = "imagegate.dev/"
LABEL_TASK_KEY = "imagegate.dev/task-key"  # sha256 of the task's ids without the try: a pod label too
LABEL_HOST = "imagegate.dev/host"
LABEL_PID = "imagegate.dev/pid"
LABEL_PID_START = "imagegate.dev/pid-start"  # /proc/PID/stat field 22
LABEL_BOOT_ID = "imagegate.dev/boot-id"
LABEL_PID_NS = "imagegate.dev/pid-ns"
LABEL_SPEC = "imagegate.dev/spec"  # a hash of what was asked to run (image, command, user…): reattach needs the same
KEY_LENGTH = 40  # hex characters of the sha256: a valid label value, collision-free in practice

LauncherStatus = Literal["alive", "gone", "unknown"]


@dataclass(frozen=True)
class TaskIdentity:
    """The orchestrator's names for a task (``task``) and for this try of it (``attempt``).

    Build it with :meth:`airflow` or :meth:`dagster`. Keys are label suffixes (``dag-id`` becomes
    ``imagegate.dev/dag-id``); values are any text.
    """

    orchestrator: str
    task: Mapping[str, str]
    attempt: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def airflow(cls, *, dag_id: str, task_id: str, run_id: str, map_index: int | str | None = -1,
                try_number: int | str | None = None) -> TaskIdentity:
        """A task instance; every try of it (``try_number``) has the same :attr:`key`."""
        task = {"dag-id": str(dag_id), "task-id": str(task_id), "run-id": str(run_id),
                "map-index": str(-1 if map_index is None else map_index)}
        return cls("airflow", task, {"try-number": str(try_number)} if try_number is not None else {})

    @classmethod
    def dagster(cls, *, run_id: str, step_key: str, root_run_id: str | None = None,
                retry_number: int | str | None = None) -> TaskIdentity:
        """A step; its re-executions (new runs with the same root run) and retries have the same :attr:`key`."""
        attempt = {"run-id": str(run_id)}
        if retry_number is not None:
            attempt["retry-number"] = str(retry_number)
        return cls("dagster", {"root-run-id": str(root_run_id or run_id), "step-key": str(step_key)}, attempt)

    @property
    def key(self) -> str:
        """Hex sha256 (first 40) of the orchestrator and the task's ids, without the try."""
        text = json.dumps([self.orchestrator, sorted(self.task.items())], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]

    def labels(self) -> dict[str, str]:
        """Every id as ``imagegate.dev/<name>``, plus the key (Docker labels; pod annotations)."""
        ids = {**self.task, **self.attempt}
        return {LABEL_TASK_KEY: self.key, **{PREFIX + name: value for name, value in ids.items()}}

    def describe(self) -> str:
        return " ".join(f"{name}={value}" for name, value in {**self.task, **self.attempt}.items())


def spec_key(**launch: object) -> str:
    """A hash of what a launch asked for (image, command, entrypoint, user…): a retry reattaches only to
    a container that was asked for the same. Keys are sorted; values are rendered as JSON."""
    text = json.dumps(launch, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


@dataclass(frozen=True)
class Launcher:
    """A process on a host: enough to tell, later, whether it is still the one running.

    ``start`` is the process's start time in clock ticks since boot (``/proc/PID/stat`` field 22),
    ``boot_id`` the kernel's boot id and ``pid_ns`` its pid namespace: empty where the system has
    no ``/proc`` (then only the pid is compared, and a reused pid reads as alive — never as gone).
    """

    host: str
    pid: int
    start: str = ""
    boot_id: str = ""
    pid_ns: str = ""

    @classmethod
    def current(cls) -> Launcher:
        """This process (read once per process; a forked child reads its own)."""
        pid = os.getpid()
        cached = _CURRENT.get(pid)
        if cached is None:
            cached = cls(socket.gethostname(), pid, _start_time(pid), _boot_id(), _pid_namespace())
            _CURRENT.clear()
            _CURRENT[pid] = cached
        return cached

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> Launcher | None:
        """The launcher a container's labels name, or None when they name none (or not a number)."""
        host, pid = labels.get(LABEL_HOST), labels.get(LABEL_PID, "")
        if not host or not pid.isascii() or not pid.isdigit():
            return None
        return cls(host, int(pid), labels.get(LABEL_PID_START, ""), labels.get(LABEL_BOOT_ID, ""),
                   labels.get(LABEL_PID_NS, ""))

    def labels(self) -> dict[str, str]:
        return {LABEL_HOST: self.host, LABEL_PID: str(self.pid), LABEL_PID_START: self.start,
                LABEL_BOOT_ID: self.boot_id, LABEL_PID_NS: self.pid_ns}

    def status(self) -> LauncherStatus:
        """``alive``: that very process still runs; ``gone``: it certainly does not (its pid is free or
        another process's, or the host rebooted); ``unknown``: another host or pid namespace, where
        this process cannot see it — never treated as gone."""
        here = Launcher.current()
        if self.host != here.host:
            return "unknown"
        if self.boot_id and here.boot_id and self.boot_id != here.boot_id:
            return "gone"  # every process of an earlier boot has exited
        if self.pid_ns != here.pid_ns:
            return "unknown"
        if self.start and here.start:
            now = _start_time(self.pid)
            if now:
                return "alive" if now == self.start else "gone"
        try:  # no /proc here, or the pid is hidden from us (hidepid): the pid alone
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return "gone"
        except PermissionError:
            return "unknown" if self.start else "alive"
        # the pid exists: without a start time to compare, a reused pid must read as alive, never as gone
        return "unknown" if self.start and here.start else "alive"

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}" + (f" (started at tick {self.start})" if self.start else "")


_CURRENT: dict[int, Launcher] = {}


def _start_time(pid: int) -> str:
    """Field 22 of ``/proc/PID/stat`` (starttime), or "" when the process or ``/proc`` is not there.

    The second field (the command name, in parentheses) may hold spaces and parentheses itself, so the
    fields are counted after the *last* ``)``: field 3 is the first one there.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode("ascii", "replace")
    except OSError:
        return ""
    fields = text.rpartition(")")[2].split()
    return fields[22 - 3] if len(fields) > 22 - 3 else ""


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")  # e.g. "pid:[4026531836]"
    except OSError:
        return ""
