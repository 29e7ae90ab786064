"""Detached daemons: start them, recognise them later through /proc, stop only the very process started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from .host import StackError, say


def proc_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return parse_cmdline(raw)


def parse_cmdline(raw: bytes) -> list[str]:
    """The arguments of a /proc/PID/cmdline (NUL-terminated); [] for a kernel thread or a zombie."""
    return [p.decode("utf-8", "surrogateescape") for p in raw.split(b"\0")[:-1]] if raw else []


def stat_field(stat: str, index: int) -> str:
    """Field ``index`` (0-based, counted after the command name) of a /proc/PID/stat line: 0 is the state,
    19 the start time. The command name (field 2) may contain spaces and ')', so split after its last ')'."""
    return stat.rsplit(")", 1)[1].split()[index]


def proc_starttime(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat_field(stat, 19)  # field 22, starttime


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not alive for our purposes.
    try:
        state = stat_field(Path(f"/proc/{pid}/stat").read_text(), 0)
        return state != "Z"
    except (OSError, IndexError):
        return True


def proc_matches(rec: dict[str, Any] | None) -> bool:
    """True when the recorded process is still alive and is the very process that was started."""
    if not rec or not rec.get("pid"):
        return False
    pid = int(rec["pid"])
    if not pid_alive(pid):
        return False
    if not Path("/proc").is_dir():  # no procfs (not Linux): best effort
        return True
    if proc_cmdline(pid) != rec.get("cmdline"):
        return False
    if rec.get("starttime") and proc_starttime(pid) != rec["starttime"]:
        return False
    return True


def spawn(cmd: list[str], stdout_path: Path, stderr_path: Path | None = None,
          env: dict[str, str] | None = None) -> tuple[subprocess.Popen, dict]:
    """Start a detached daemon (own session, survives this script) with output to log files (and *env*, else
    this process's environment)."""
    out = open(stdout_path, "wb")
    err = open(stderr_path, "wb") if stderr_path else subprocess.STDOUT
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            close_fds=True,
            cwd="/",
            env=env,
        )
    except OSError as exc:
        raise StackError(f"cannot start {cmd[0]}: {exc}") from None
    finally:
        out.close()
        if stderr_path:
            err.close()  # type: ignore[union-attr]
    rec = {
        "pid": proc.pid,
        "cmdline": list(cmd),
        "starttime": proc_starttime(proc.pid),
        "log": str(stderr_path or stdout_path),
    }
    return proc, rec


def stop_process(name: str, rec: dict[str, Any] | None, timeout: float) -> None:
    if not rec or not rec.get("pid"):
        return
    pid = int(rec["pid"])
    if not pid_alive(pid):
        say(f"{name}: pid {pid} already gone")
        return
    if not proc_matches(rec):
        say(f"{name}: NOT stopping pid {pid}: it is no longer the process this script started")
        return
    say(f"{name}: stopping pid {pid}")
    os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout, 0.2):
        return
    say(f"{name}: pid {pid} ignored SIGTERM for {timeout:.0f} s, sending SIGKILL")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if not pid_alive(pid):
            return
        time.sleep(0.1)


def _wait_gone(pid: int, timeout: float, interval: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(interval)
    return False
