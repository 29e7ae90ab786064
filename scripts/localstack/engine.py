"""The Docker Engine: find one that answers, or start our own ``dockerd``; ping it; run the docker CLI on it."""

from __future__ import annotations

import http.client
import os
import shlex
import socket
import subprocess
import time
from pathlib import Path

from .host import APT_PACKAGES, StackError, apt_install, is_root, run, say, tail, which
from .procs import proc_matches, spawn

DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"
DEFAULT_DOCKER_HOST = "unix://" + DEFAULT_DOCKER_SOCKET


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 5.0):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def docker_ping(host: str, timeout: float = 5.0) -> bool:
    """True when the Docker Engine at ``host`` answers ``GET /_ping``."""
    if host.startswith("unix://"):
        conn: http.client.HTTPConnection = _UnixHTTPConnection(host[len("unix://") :], timeout)
    elif (
        host.startswith("tcp://") and not os.environ.get("DOCKER_TLS_VERIFY") and not os.environ.get("DOCKER_CERT_PATH")
    ):
        hostport = host[len("tcp://") :].rstrip("/")
        conn = http.client.HTTPConnection(hostport, timeout=timeout)
    else:  # ssh://, TLS tcp://, npipe:// ... let the docker CLI speak it
        return _cli_ping(host, timeout)
    try:
        conn.request("GET", "/_ping")
        resp = conn.getresponse()
        body = resp.read(64)
        return resp.status == 200 and body.strip() == b"OK"
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _cli_ping(host: str, timeout: float) -> bool:
    if not which("docker"):
        return False
    try:
        proc = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            env=dict(os.environ, DOCKER_HOST=host),
            capture_output=True,
            text=True,
            timeout=timeout + 15,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())


def docker_context_host() -> str | None:
    if not which("docker"):
        return None
    try:
        proc = subprocess.run(
            ["docker", "context", "inspect", "--format", "{{.Endpoints.docker.Host}}"],
            capture_output=True,
            text=True,
            timeout=15,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    host = proc.stdout.strip()
    return host if proc.returncode == 0 and host else None


def docker_env(host: str) -> dict[str, str]:
    env = dict(os.environ, DOCKER_HOST=host)
    env.pop("DOCKER_CONTEXT", None)
    return env


def docker(host: str, *args: str, timeout: float = 600, what: str | None = None, check: bool = True):
    return run(["docker", *args], env=docker_env(host), timeout=timeout, what=what or f"docker {args[0]}", check=check)


# ------------------------------------------------------------------------------------ ensure_docker


def ensure_docker(old: dict | None, state_dir: Path, timeout: float) -> dict:
    """The engine to use, in this order: 1. a dockerd this script started earlier and that still runs;
    2. one that answers already ($DOCKER_HOST, the default socket, the docker CLI's context); 3. our own."""
    rec = _reuse_own_dockerd(old)
    if rec:
        return _docker_finish(rec)
    env_host = os.environ.get("DOCKER_HOST", "").strip()
    rec = _engine_at_docker_host(env_host) or _engine_at_default()
    if rec:
        return _docker_finish(rec)
    ctx_host = docker_context_host()
    if ctx_host and ctx_host != DEFAULT_DOCKER_HOST and docker_ping(ctx_host):
        say(f"docker: using the docker CLI context's engine at {ctx_host} (not started by this script)")
        return _docker_finish({"host": ctx_host, "started": False})
    if not is_root():
        raise _no_engine_error(env_host, ctx_host)
    rec = _install_docker()
    if rec:
        return _docker_finish(rec)
    return _docker_finish(_start_dockerd(state_dir, timeout))


def _reuse_own_dockerd(old: dict | None) -> dict | None:
    if old and old.get("started") and proc_matches(old) and docker_ping(old["host"]):
        say(f"docker: reusing dockerd pid {old['pid']} started earlier by this script ({old['host']})")
        return old
    if old and old.get("started") and proc_matches(old):
        raise StackError(
            f"dockerd pid {old['pid']} (started earlier by this script) runs but does not answer "
            f"{old['host']}; see {old.get('log')}:\n{tail(old.get('log', ''))}\n"
            "Run `stack.py down` and `up` again."
        )
    return None


def _engine_at_docker_host(env_host: str) -> dict | None:
    if not env_host:
        return None
    if docker_ping(env_host):
        say(f"docker: using the running Docker Engine at DOCKER_HOST={env_host} (not started by this script)")
        return {"host": env_host, "started": False}
    if env_host.rstrip("/") != DEFAULT_DOCKER_HOST:
        raise StackError(
            f"DOCKER_HOST={env_host} is set but no Docker Engine answers there (GET /_ping failed).\n"
            "Start that engine, or unset DOCKER_HOST to use/start the default one at "
            f"{DEFAULT_DOCKER_HOST}."
        )
    return None


def _engine_at_default() -> dict | None:
    if docker_ping(DEFAULT_DOCKER_HOST):
        say(f"docker: using the running Docker Engine at {DEFAULT_DOCKER_HOST} (not started by this script)")
        return {"host": DEFAULT_DOCKER_HOST, "started": False}
    return None


def _no_engine_error(env_host: str, ctx_host: str | None) -> StackError:
    tried = [env_host or DEFAULT_DOCKER_HOST] + ([ctx_host] if ctx_host and ctx_host != DEFAULT_DOCKER_HOST else [])
    hint = ""
    if os.path.exists(DEFAULT_DOCKER_SOCKET) and not os.access(DEFAULT_DOCKER_SOCKET, os.R_OK | os.W_OK):
        hint = (
            f"\n{DEFAULT_DOCKER_SOCKET} exists but this user may not use it: add the user to the `docker` "
            "group (`sudo usermod -aG docker $USER`, then log in again) or run as root."
        )
    return StackError(
        f"No Docker Engine answers (tried {', '.join(tried)}).{hint}"
        + "\nStart Docker (e.g. `sudo systemctl start docker`, or Docker Desktop), or run this script as "
        "root on Debian so it can install and start one:\n"
        f"    sudo apt-get update && sudo apt-get install -y {' '.join(APT_PACKAGES)}"
    )


def _install_docker() -> dict | None:
    """Install docker.io when dockerd/docker are missing; the engine its init script started, if any."""
    if not which("dockerd") or not which("docker"):
        apt_install(["docker.io"], "no Docker Engine is running and `dockerd`/`docker` are missing")
        if docker_ping(DEFAULT_DOCKER_HOST):  # the package's init script may have started one
            say(f"docker: the docker.io package started an engine at {DEFAULT_DOCKER_HOST}; using it")
            return {"host": DEFAULT_DOCKER_HOST, "started": False}
    return None


def _start_dockerd(state_dir: Path, timeout: float) -> dict:
    dockerd = which("dockerd")
    if not dockerd:
        raise StackError("`dockerd` is missing even after installing docker.io")
    log = state_dir / "dockerd.log"
    cmd = [dockerd, "--host", DEFAULT_DOCKER_HOST]
    say(f"docker: starting {shlex.join(cmd)} (log {log})")
    proc, rec = spawn(cmd, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"dockerd exited with code {proc.returncode} while starting; log {log}:\n{tail(log)}")
        if docker_ping(DEFAULT_DOCKER_HOST, timeout=2):
            break
        time.sleep(0.5)
    else:
        raise StackError(
            f"dockerd (pid {proc.pid}) did not answer {DEFAULT_DOCKER_HOST} /_ping within "
            f"{timeout:.0f} s; it is left running for inspection. Log {log}:\n{tail(log)}"
        )
    rec.update(host=DEFAULT_DOCKER_HOST, started=True)
    say(f"docker: started dockerd pid {proc.pid}")
    return rec


def _docker_finish(rec: dict) -> dict:
    if not which("docker"):
        apt_install(["docker.io"], "the `docker` command-line client is missing")
    proc = run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        env=docker_env(rec["host"]),
        timeout=60,
        what="docker version",
    )
    rec["server_version"] = proc.stdout.strip()
    return rec
