"""This machine: progress output, running commands, loopback ports, atomic files and Debian packages."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

APT_PACKAGES = ["docker.io", "docker-registry", "debootstrap", "busybox-static", "openssl"]
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


class StackError(Exception):
    """A failure with a message meant for the user (printed without a traceback)."""


class K8sError(StackError):
    """A failure of the Kubernetes cluster with a message meant for the user (printed without a traceback)."""


# ------------------------------------------------------------------------------------------ output

# Who speaks: every progress line is "[PREFIX] message". stack.py detaches a closed stdout (so that a later
# print cannot fail); k8s.py only drops the line. Each command line sets its voice in main().
_voice = {"prefix": "stack", "detach_closed_stdout": True}


def set_voice(prefix: str, *, detach_closed_stdout: bool) -> None:
    _voice.update(prefix=prefix, detach_closed_stdout=detach_closed_stdout)


def say(msg: str) -> None:
    # Progress must never abort `up` half-way (e.g. `stack.py up | head`): drop output on a closed stdout.
    try:
        print(f"[{_voice['prefix']}] {msg}", flush=True)
    except (BrokenPipeError, ValueError):
        if not _voice["detach_closed_stdout"]:
            return
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())


def elapsed(t0: float) -> str:
    return f"{time.monotonic() - t0:.1f} s"


def tail(path: str | Path, lines: int = 25) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            data = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no log: {exc})"
    out = data.splitlines()[-lines:]
    return "\n".join("    " + line for line in out) if out else "    (log is empty)"


# ------------------------------------------------------------------------------------- the system


def which(name: str) -> str | None:
    return shutil.which(name, path=SBIN_PATH)


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def os_release_is_debian(text: str) -> bool:
    """True when an /etc/os-release text names Debian in ID or ID_LIKE."""
    ids = " ".join(re.findall(r"^(?:ID|ID_LIKE)=\"?([^\"\n]*)", text, re.M))
    return "debian" in ids.split()


def is_debian() -> bool:
    if Path("/etc/debian_version").exists():
        return True
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return False
    return os_release_is_debian(text)


def run(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float | None = None,
    what: str | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            cmd,
            env=env,
            text=True,
            capture_output=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise StackError(f"{what or cmd[0]}: command not found ({exc.filename})") from None
    except subprocess.TimeoutExpired:
        raise StackError(f"{what or shlex.join(cmd)} did not finish within {timeout} s") from None
    if check and proc.returncode != 0:
        out = (proc.stderr.strip() or proc.stdout.strip())[-3000:]
        raise StackError(f"{what or shlex.join(cmd)} failed (exit {proc.returncode}):\n{out}")
    return proc


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like Go's listener (SO_REUSEADDR): a port with only TIME_WAIT connections left counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------- apt / packages

_apt_updated = False


def apt_install(packages: list[str], why: str) -> None:
    """Install Debian packages when running as root on Debian; otherwise explain what to install."""
    pkgs = " ".join(packages)
    if not is_debian():
        raise StackError(
            f"{why}, and this is not a Debian system, so the script cannot install it.\n"
            f"Install the equivalent of the Debian packages `{pkgs}` (Docker Engine, the CNCF distribution "
            "registry binary `registry`/`docker-registry`, debootstrap, a static busybox, openssl) and re-run."
        )
    if not is_root():
        raise StackError(
            f"{why}. Install it as root and re-run:\n"
            f"    sudo apt-get update && sudo apt-get install -y {' '.join(APT_PACKAGES)}"
        )
    say(f"{why}: installing {pkgs} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with _no_daemon_starts():
        _apt_update_once(env)
        run(
            ["apt-get", "install", "-y", "--no-install-recommends", *packages],
            env=env,
            timeout=1200,
            what=f"apt-get install {pkgs}",
        )


def _apt_update_once(env: dict[str, str]) -> None:
    global _apt_updated
    if not _apt_updated:
        run(["apt-get", "update"], env=env, timeout=600, what="apt-get update")
        _apt_updated = True


@contextlib.contextmanager
def _no_daemon_starts():  # type: ignore[no-untyped-def]
    """Keep apt from starting daemons (docker, docker-registry on :5000) while we install: we start our own."""
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = False
    if not policy.exists():
        with contextlib.suppress(OSError):
            write_file(policy, "#!/bin/sh\n# temporary, written by imagegate scripts/stack.py\nexit 101\n", 0o755)
            made_policy = True
    try:
        yield
    finally:
        if made_policy:
            with contextlib.suppress(OSError):
                policy.unlink()


def require_tool(name: str, package: str, why: str) -> str:
    path = which(name)
    if path:
        return path
    apt_install([package], f"`{name}` is missing ({why})")
    path = which(name)
    if not path:
        raise StackError(f"`{name}` is still missing after installing {package}")
    return path
