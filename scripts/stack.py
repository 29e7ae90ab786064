#!/usr/bin/env python3
"""Local test stack for imagegate: a Docker Engine, two OCI registries and local base images.

Stdlib-only (Python 3.11+). Nothing here needs the internet or a public container registry:

* Docker Engine - reuses one that answers (``$DOCKER_HOST``, ``/var/run/docker.sock`` or the docker CLI's
  current context); otherwise, as root on Debian, installs ``docker.io`` when missing and starts ``dockerd``.
* Registry 1 - Debian ``docker-registry`` (CNCF distribution 2.8) on a free loopback port, plain http,
  deletes enabled, every request logged.
* Registry 2 - a second ``docker-registry`` with htpasswd (bcrypt) basic auth behind TLS, with a CA made at
  start-up by ``openssl``.
* Base images - a busybox-static rootfs and a Debian bookworm + python3 rootfs (``debootstrap``, cached under
  ``~/.cache/imagegate/base``), imported with ``docker import`` and pushed to registry 1.

Usage::

    python3 scripts/stack.py up [--no-python-base] [--rebuild-base]
    python3 scripts/stack.py status
    python3 scripts/stack.py env            # prints `export KEY=VALUE` lines; eval "$(... env)"
    python3 scripts/stack.py down [--keep-docker]

State lives in ``/tmp/imagegate-stack`` (``--state-dir`` or ``$IMAGEGATE_STACK_DIR``): ``stack.json`` (machine
readable, see :func:`load_state`), ``stack.env``, logs and registry storage. ``down`` stops only the processes
that ``up`` started (checked against /proc/PID/cmdline and start time) and removes registry storage; the base
image cache is kept.

Registry request logs: ``IMAGEGATE_REGISTRY_LOG`` is distribution's stderr (logrus text, one
``msg="response completed"`` line per request under /v2/ with ``http.request.method``, ``http.request.uri`` and
``http.response.status``); ``IMAGEGATE_REGISTRY_ACCESS_LOG`` is its stdout (Apache combined format, one line for
every request). :func:`registry_requests` parses the former.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as _dt
import hashlib
import http.client
import io
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any
from collections.abc import Iterator

DEFAULT_STATE_DIR = "/tmp/imagegate-stack"
STATE_FILE = "stack.json"
ENV_FILE = "stack.env"
STATE_VERSION = 1
DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"
DEFAULT_DOCKER_HOST = "unix://" + DEFAULT_DOCKER_SOCKET
APT_PACKAGES = ["docker.io", "docker-registry", "debootstrap", "busybox-static", "openssl"]
AUTH_USER = "imagegate"
STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
# Fixed mtime for generated tar members, so the busybox layer digest is the same on every machine.
TAR_MTIME = 946684800  # 2000-01-01T00:00:00Z
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


class StackError(Exception):
    """A failure with a message meant for the user (printed without a traceback)."""


# --------------------------------------------------------------------------------------------- helpers


def say(msg: str) -> None:
    # Progress must never abort `up` half-way (e.g. `stack.py up | head`): drop output on a closed stdout.
    try:
        print(f"[stack] {msg}", flush=True)
    except (BrokenPipeError, ValueError):
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())


def which(name: str) -> str | None:
    return shutil.which(name, path=SBIN_PATH)


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def is_debian() -> bool:
    if Path("/etc/debian_version").exists():
        return True
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return False
    ids = " ".join(re.findall(r"^(?:ID|ID_LIKE)=\"?([^\"\n]*)", text, re.M))
    return "debian" in ids.split()


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
    global _apt_updated
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
    # Keep apt from starting daemons (docker, docker-registry on :5000) while we install: we start our own.
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = False
    if not policy.exists():
        with contextlib.suppress(OSError):
            write_file(policy, "#!/bin/sh\n# temporary, written by imagegate scripts/stack.py\nexit 101\n", 0o755)
            made_policy = True
    try:
        if not _apt_updated:
            run(["apt-get", "update"], env=env, timeout=600, what="apt-get update")
            _apt_updated = True
        run(
            ["apt-get", "install", "-y", "--no-install-recommends", *packages],
            env=env,
            timeout=1200,
            what=f"apt-get install {pkgs}",
        )
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


# ------------------------------------------------------------------------------------- process records


def _proc_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [p.decode("utf-8", "surrogateescape") for p in raw.split(b"\0")[:-1]] if raw else []


def _proc_starttime(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name (field 2) may contain spaces, so split after its ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not alive for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def proc_matches(rec: dict[str, Any] | None) -> bool:
    """True when the recorded process is still alive and is the very process that was started."""
    if not rec or not rec.get("pid"):
        return False
    pid = int(rec["pid"])
    if not _pid_alive(pid):
        return False
    if not Path("/proc").is_dir():  # no procfs (not Linux): best effort
        return True
    if _proc_cmdline(pid) != rec.get("cmdline"):
        return False
    if rec.get("starttime") and _proc_starttime(pid) != rec["starttime"]:
        return False
    return True


def spawn(cmd: list[str], stdout_path: Path, stderr_path: Path | None = None) -> tuple[subprocess.Popen, dict]:
    """Start a detached daemon (own session, survives this script) with output to log files."""
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
        "starttime": _proc_starttime(proc.pid),
        "log": str(stderr_path or stdout_path),
    }
    return proc, rec


def stop_process(name: str, rec: dict[str, Any] | None, timeout: float) -> None:
    if not rec or not rec.get("pid"):
        return
    pid = int(rec["pid"])
    if not _pid_alive(pid):
        say(f"{name}: pid {pid} already gone")
        return
    if not proc_matches(rec):
        say(f"{name}: NOT stopping pid {pid}: it is no longer the process this script started")
        return
    say(f"{name}: stopping pid {pid}")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.2)
    say(f"{name}: pid {pid} ignored SIGTERM for {timeout:.0f} s, sending SIGKILL")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if not _pid_alive(pid):
            return
        time.sleep(0.1)


# ----------------------------------------------------------------------------------------- docker


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
    try:
        conn.request("GET", "/_ping")
        resp = conn.getresponse()
        body = resp.read(64)
        return resp.status == 200 and body.strip() == b"OK"
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _docker_context_host() -> str | None:
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


def ensure_docker(old: dict | None, state_dir: Path, timeout: float) -> dict:
    # 1. A dockerd this script started earlier and that still runs.
    if old and old.get("started") and proc_matches(old) and docker_ping(old["host"]):
        say(f"docker: reusing dockerd pid {old['pid']} started earlier by this script ({old['host']})")
        return _docker_finish(old)
    if old and old.get("started") and proc_matches(old):
        raise StackError(
            f"dockerd pid {old['pid']} (started earlier by this script) runs but does not answer "
            f"{old['host']}; see {old.get('log')}:\n{tail(old.get('log', ''))}\n"
            "Run `stack.py down` and `up` again."
        )

    # 2. One that answers already: $DOCKER_HOST, the default socket, the docker CLI's context.
    env_host = os.environ.get("DOCKER_HOST", "").strip()
    if env_host:
        if docker_ping(env_host):
            say(f"docker: using the running Docker Engine at DOCKER_HOST={env_host} (not started by this script)")
            return _docker_finish({"host": env_host, "started": False})
        if env_host.rstrip("/") != DEFAULT_DOCKER_HOST:
            raise StackError(
                f"DOCKER_HOST={env_host} is set but no Docker Engine answers there (GET /_ping failed).\n"
                "Start that engine, or unset DOCKER_HOST to use/start the default one at "
                f"{DEFAULT_DOCKER_HOST}."
            )
    if docker_ping(DEFAULT_DOCKER_HOST):
        say(f"docker: using the running Docker Engine at {DEFAULT_DOCKER_HOST} (not started by this script)")
        return _docker_finish({"host": DEFAULT_DOCKER_HOST, "started": False})
    ctx_host = _docker_context_host()
    if ctx_host and ctx_host != DEFAULT_DOCKER_HOST and docker_ping(ctx_host):
        say(f"docker: using the docker CLI context's engine at {ctx_host} (not started by this script)")
        return _docker_finish({"host": ctx_host, "started": False})

    # 3. Start our own dockerd.
    if not is_root():
        tried = [env_host or DEFAULT_DOCKER_HOST] + ([ctx_host] if ctx_host and ctx_host != DEFAULT_DOCKER_HOST else [])
        hint = ""
        if os.path.exists(DEFAULT_DOCKER_SOCKET) and not os.access(DEFAULT_DOCKER_SOCKET, os.R_OK | os.W_OK):
            hint = (
                f"\n{DEFAULT_DOCKER_SOCKET} exists but this user may not use it: add the user to the `docker` "
                "group (`sudo usermod -aG docker $USER`, then log in again) or run as root."
            )
        raise StackError(
            f"No Docker Engine answers (tried {', '.join(tried)}).{hint}"
            + "\nStart Docker (e.g. `sudo systemctl start docker`, or Docker Desktop), or run this script as "
            "root on Debian so it can install and start one:\n"
            f"    sudo apt-get update && sudo apt-get install -y {' '.join(APT_PACKAGES)}"
        )
    if not which("dockerd") or not which("docker"):
        apt_install(["docker.io"], "no Docker Engine is running and `dockerd`/`docker` are missing")
        if docker_ping(DEFAULT_DOCKER_HOST):  # the package's init script may have started one
            say(f"docker: the docker.io package started an engine at {DEFAULT_DOCKER_HOST}; using it")
            return _docker_finish({"host": DEFAULT_DOCKER_HOST, "started": False})
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
    return _docker_finish(rec)


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


def docker(host: str, *args: str, timeout: float = 600, what: str | None = None, check: bool = True):
    return run(["docker", *args], env=docker_env(host), timeout=timeout, what=what or f"docker {args[0]}", check=check)


# --------------------------------------------------------------------------------------- registries


def _registry_binary() -> str:
    override = os.environ.get("IMAGEGATE_REGISTRY_BIN")
    if override:
        if not os.access(override, os.X_OK):
            raise StackError(f"IMAGEGATE_REGISTRY_BIN={override} is not an executable file")
        return override
    for name in ("docker-registry", "registry"):
        path = which(name)
        if path:
            return path
    apt_install(["docker-registry"], "the registry binary `docker-registry` (CNCF distribution) is missing")
    path = which("docker-registry")
    if not path:
        raise StackError("`docker-registry` is still missing after installing the docker-registry package")
    return path


def _q(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar


def _registry_config(name: str, port: int, data_dir: Path, auth: dict | None) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: info",
        "  formatter: text",
        "  accesslog:",
        "    disabled: false",
        "  fields:",
        "    service: registry",
        f"    instance: {_q(name)}",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {_q(str(data_dir))}",
        "  delete:",
        "    enabled: true",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        f"  addr: {_q(f'127.0.0.1:{port}')}",
        f"  secret: {_q(secrets.token_hex(24))}",
        "  headers:",
        "    X-Content-Type-Options: [nosniff]",
    ]
    if auth:
        lines += [
            "  tls:",
            f"    certificate: {_q(auth['server_cert'])}",
            f"    key: {_q(auth['server_key'])}",
            "auth:",
            "  htpasswd:",
            "    realm: imagegate-test",
            f"    path: {_q(auth['htpasswd'])}",
        ]
    return "\n".join(lines) + "\n"


def _http_status(
    url: str,
    cafile: str | None = None,
    user: str | None = None,
    password: str | None = None,
    method: str = "GET",
    path: str = "/v2/",
    headers: dict | None = None,
    timeout: float = 3.0,
) -> tuple[int, dict]:
    scheme, _, hostport = url.partition("://")
    if scheme == "https":
        ctx = ssl.create_default_context(cafile=cafile)
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(hostport, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(hostport, timeout=timeout)
    hdrs = {"User-Agent": "imagegate-stack/1", **(headers or {})}
    if user is not None:
        hdrs["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        conn.request(method, path, headers=hdrs)
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def _registry_healthy(rec: dict, timeout: float = 3.0) -> bool:
    try:
        if rec.get("auth"):
            status, _ = _http_status(rec["url"], cafile=rec["ca_cert"], timeout=timeout)
            if status != 401:
                return False
            status, _ = _http_status(
                rec["url"], cafile=rec["ca_cert"], user=rec["user"], password=rec["password"], timeout=timeout
            )
            return status == 200
        status, _ = _http_status(rec["url"], timeout=timeout)
        return status == 200
    except (OSError, http.client.HTTPException, ssl.SSLError):
        return False


def _start_registry(name: str, state_dir: Path, old: dict | None, auth: dict | None) -> dict:
    binary = _registry_binary()
    rdir = state_dir / name
    data_dir = rdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / f"{name}.log"
    access_log = state_dir / f"{name}-access.log"
    preferred = int(old["port"]) if old and old.get("port") else None
    last_error = ""
    for attempt in range(3):
        port = preferred if (attempt == 0 and preferred and port_is_free(preferred)) else free_port()
        config = rdir / "config.yml"
        write_file(config, _registry_config(name, port, data_dir, auth), 0o600)
        cmd = [binary, "serve", str(config)]
        proc, rec = spawn(cmd, access_log, log)
        scheme = "https" if auth else "http"
        rec.update(
            port=port,
            addr=f"127.0.0.1:{port}",
            url=f"{scheme}://127.0.0.1:{port}",
            config=str(config),
            data_dir=str(data_dir),
            access_log=str(access_log),
        )
        if auth:
            rec.update(auth=True, **auth)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if _registry_healthy(rec, timeout=1.0):
                return rec
            time.sleep(0.2)
        else:
            stop_process(name, rec, 5)
            raise StackError(
                f"{name} (pid {proc.pid}) on port {port} did not become healthy within 30 s "
                f"(expected GET /v2/ -> {'401 then 200 with credentials' if auth else '200'}). "
                f"Log {log}:\n{tail(log)}"
            )
        last_error = tail(log)
        if "address already in use" not in last_error:
            break
        if attempt < 2:
            say(f"{name}: port {port} was taken, retrying on another port")
    raise StackError(f"{name} exited while starting (exit {proc.returncode}). Log {log}:\n{last_error}")


def ensure_registry(state_dir: Path, old: dict | None) -> dict:
    name = "registry"
    if old and proc_matches(old) and _registry_healthy(old):
        say(f"{name}: reusing pid {old['pid']} at {old['url']}")
        return old
    rec = _start_registry(name, state_dir, old, None)
    say(f"{name}: started pid {rec['pid']} at {rec['url']} (plain http, deletes enabled, log {rec['log']})")
    return rec


def _bcrypt_hash(password: str) -> str:
    """A bcrypt hash for htpasswd, from whatever this machine has."""
    with contextlib.suppress(ImportError):
        import bcrypt  # type: ignore[import-not-found]

        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    htpasswd = which("htpasswd")
    if htpasswd:
        out = run([htpasswd, "-nbB", "-C", "10", AUTH_USER, password], what="htpasswd").stdout.strip()
        return out.split(":", 1)[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # type: ignore[import-not-found]  # removed in 3.13

            hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 10))
            if hashed and hashed.startswith("$2"):
                return hashed
        except (ImportError, AttributeError, ValueError, OSError):
            pass
    # The project's own virtualenv has bcrypt (dev dependency): use it when present.
    venv_py = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
    if venv_py.exists():
        code = "import bcrypt,sys;print(bcrypt.hashpw(sys.stdin.read().encode(),bcrypt.gensalt(10)).decode())"
        proc = run([str(venv_py), "-c", code], check=False, input=password)
        if proc.returncode == 0 and proc.stdout.startswith("$2"):
            return proc.stdout.strip()
    apt_install(
        ["apache2-utils"],
        "no bcrypt implementation found (Python `bcrypt`, `htpasswd`) for the auth registry's htpasswd file",
    )
    out = run(["htpasswd", "-nbB", "-C", "10", AUTH_USER, password], what="htpasswd").stdout.strip()
    return out.split(":", 1)[1]


def _make_tls(auth_dir: Path) -> dict:
    openssl = require_tool("openssl", "openssl", "to make the auth registry's TLS certificates")
    ca_key, ca_crt = auth_dir / "ca.key", auth_dir / "ca.crt"
    key, csr, crt, ext = (
        auth_dir / "server.key",
        auth_dir / "server.csr",
        auth_dir / "server.crt",
        auth_dir / "server.ext",
    )
    run(
        [
            openssl,
            "req",
            "-x509",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-days",
            "3650",
            "-subj",
            "/CN=imagegate local test CA",
            "-keyout",
            str(ca_key),
            "-out",
            str(ca_crt),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "subjectKeyIdentifier=hash",
        ],
        what="openssl (CA)",
    )
    run(
        [
            openssl,
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(csr),
        ],
        what="openssl (server key)",
    )
    write_file(
        ext,
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n",
    )
    run(
        [
            openssl,
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_crt),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-days",
            "825",
            "-sha256",
            "-extfile",
            str(ext),
            "-out",
            str(crt),
        ],
        what="openssl (sign server certificate)",
    )
    for p in (ca_key, key):
        os.chmod(p, 0o600)
    return {"ca_cert": str(ca_crt), "ca_key": str(ca_key), "server_cert": str(crt), "server_key": str(key)}


def ensure_auth_registry(state_dir: Path, old: dict | None) -> dict:
    name = "auth-registry"
    if old and proc_matches(old) and _registry_healthy(old):
        say(f"{name}: reusing pid {old['pid']} at {old['url']} (user {old['user']})")
        return old
    auth_dir = state_dir / name / "auth"
    auth_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(auth_dir, 0o700)
    files_ok = old and all(Path(old.get(k, "")).is_file() for k in ("ca_cert", "server_cert", "server_key", "htpasswd"))
    if files_ok:  # restart with the same CA and password, so earlier env stays valid
        auth = {k: old[k] for k in ("ca_cert", "ca_key", "server_cert", "server_key", "htpasswd", "user", "password")}
    else:
        auth = _make_tls(auth_dir)
        password = secrets.token_urlsafe(18)
        htpasswd = auth_dir / "htpasswd"
        write_file(htpasswd, f"{AUTH_USER}:{_bcrypt_hash(password)}\n", 0o600)
        write_file(auth_dir / "password", password + "\n", 0o600)
        auth.update(htpasswd=str(htpasswd), user=AUTH_USER, password=password)
    rec = _start_registry(name, state_dir, old, auth)
    say(
        f"{name}: started pid {rec['pid']} at {rec['url']} (TLS with CA {rec['ca_cert']}, htpasswd user "
        f"{rec['user']}, log {rec['log']})"
    )
    return rec


# -------------------------------------------------------------------------------------- base images


def cache_dir() -> Path:
    env = os.environ.get("IMAGEGATE_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "imagegate" / "base"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _is_static_elf(path: str) -> bool:
    """True for an ELF executable without a PT_INTERP program header (statically linked)."""
    try:
        with open(path, "rb") as f:
            ident = f.read(16)
            if ident[:4] != b"\x7fELF":
                return False
            is64, endian = ident[4] == 2, "<" if ident[5] == 1 else ">"
            if is64:
                f.seek(0x20)
                (phoff,) = struct.unpack(endian + "Q", f.read(8))
                f.seek(0x36)
            else:
                f.seek(0x1C)
                (phoff,) = struct.unpack(endian + "I", f.read(4))
                f.seek(0x2A)
            phentsize, phnum = struct.unpack(endian + "HH", f.read(4))
            for i in range(phnum):
                f.seek(phoff + i * phentsize)
                (ptype,) = struct.unpack(endian + "I", f.read(4))
                if ptype == 3:  # PT_INTERP
                    return False
            return True
    except (OSError, ValueError):
        return False


def _find_static_busybox() -> str:
    candidates = [
        os.environ.get("IMAGEGATE_BUSYBOX_BIN", ""),
        which("busybox") or "",
        "/bin/busybox",
        "/usr/bin/busybox",
    ]
    for c in candidates:
        if c and os.path.isfile(c) and _is_static_elf(c):
            return os.path.realpath(c)
    apt_install(["busybox-static"], "a statically linked busybox (for the busybox base image) is missing")
    for c in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.isfile(c) and _is_static_elf(c):
            return os.path.realpath(c)
    raise StackError("no statically linked busybox found even after installing busybox-static")


def _busybox_tar(busybox: str, out: Path) -> None:
    applets = run([busybox, "--list-full"], what="busybox --list-full").stdout.split()
    dirs = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "home", "home/app", "var", "dev", "proc", "sys"}
    links = []
    for path in applets:
        path = path.strip("/")
        if not path or path == "bin/busybox" or "/" not in path:  # skip the binary itself and `linuxrc`
            continue
        links.append(path)
        dirs.add(os.path.dirname(path))

    def info(name: str, kind: bytes, mode: int, uid: int = 0) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = kind, mode, uid, uid, TAR_MTIME
        ti.uname = ti.gname = ""
        return ti

    files = {
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        "etc/group": "root:x:0:\napp:x:1000:\nnobody:x:65534:\n",
    }
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        for d in sorted(dirs):
            mode = {"root": 0o700}.get(d, 0o755)
            tar.addfile(info(d, tarfile.DIRTYPE, mode, 1000 if d == "home/app" else 0))
        tar.addfile(info("tmp", tarfile.DIRTYPE, 0o1777))
        with open(busybox, "rb") as f:
            data = f.read()
        ti = info("bin/busybox", tarfile.REGTYPE, 0o755)
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data))
        for path in sorted(links):
            ti = info(path, tarfile.SYMTYPE, 0o777)
            ti.linkname = "/bin/busybox"
            tar.addfile(ti)
        for name, text in files.items():
            raw = text.encode()
            ti = info(name, tarfile.REGTYPE, 0o644)
            ti.size = len(raw)
            tar.addfile(ti, io.BytesIO(raw))
    os.replace(tmp, out)


def _local_image_layers(host: str, ref: str) -> list[str] | None:
    proc = docker(host, "image", "inspect", "--format", "{{json .RootFS.Layers}}", ref, check=False, timeout=60)
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return None


def _import(host: str, tar: Path, local_ref: str, tar_digest: str, changes: list[str]) -> None:
    layers = _local_image_layers(host, local_ref)
    if layers == [tar_digest]:
        say(f"image: {local_ref} is already in Docker (layer {tar_digest[:19]}…)")
        return
    say(f"image: importing {tar.name} as {local_ref}")
    args = ["import"]
    for c in changes:
        args += ["-c", c]
    docker(host, *args, str(tar), local_ref, timeout=900, what=f"docker import {local_ref}")


def _registry_digest(reg: dict, repo: str, tag: str) -> str | None:
    try:
        status, headers = _http_status(
            reg["url"],
            method="HEAD",
            path=f"/v2/{repo}/manifests/{tag}",
            headers={"Accept": MANIFEST_ACCEPT},
            timeout=10,
        )
    except (OSError, http.client.HTTPException):
        return None
    return headers.get("docker-content-digest") if status == 200 else None


def _push(host: str, reg: dict, local_ref: str, repo: str, tags: list[str]) -> str:
    """Tag and push ``local_ref`` as REGISTRY/repo:tag for every tag; return the manifest digest."""
    digest = None
    for tag in tags:
        ref = f"{reg['addr']}/{repo}:{tag}"
        docker(host, "tag", local_ref, ref, timeout=60)
        have = _registry_digest(reg, repo, tag)
        repo_digests = docker(
            host, "image", "inspect", "--format", "{{json .RepoDigests}}", local_ref, timeout=60
        ).stdout
        if have and f"{reg['addr']}/{repo}@{have}" in repo_digests:
            say(f"image: {ref} already in the registry ({have[:19]}…)")
            digest = have
            continue
        say(f"image: pushing {ref} …")
        t0 = time.monotonic()
        out = docker(host, "push", ref, timeout=1800, what=f"docker push {ref}").stdout
        m = re.search(r"digest: (sha256:[0-9a-f]{64})", out)
        digest = (m.group(1) if m else None) or _registry_digest(reg, repo, tag)
        say(f"image: pushed {ref} in {time.monotonic() - t0:.1f} s ({digest})")
    if not digest:
        raise StackError(f"pushed {repo} but the registry at {reg['url']} reports no manifest for it")
    return digest


def ensure_busybox(host: str, reg: dict) -> dict:
    busybox = _find_static_busybox()
    banner = run([busybox], check=False).stdout + run([busybox, "--help"], check=False).stdout
    m = re.search(r"BusyBox v(\d+(?:\.\d+)+)", banner)
    if not m:
        raise StackError(f"cannot read the busybox version from `{busybox}`")
    version = m.group(1)
    bin_digest = _sha256_file(Path(busybox)).split(":")[1][:12]
    cdir = cache_dir()
    cdir.mkdir(parents=True, exist_ok=True)
    tar = cdir / f"busybox-{version}-{bin_digest}.tar"
    if not tar.exists():
        say(f"image: building busybox {version} rootfs from {busybox} -> {tar}")
        _busybox_tar(busybox, tar)
    tar_digest = _sha256_file(tar)
    local_ref = f"imagegate/busybox:{version}"
    _import(host, tar, local_ref, tar_digest, [f"ENV PATH={STD_PATH}", 'CMD ["/bin/sh"]'])
    digest = _push(host, reg, local_ref, "base/busybox", [version])
    ref = f"{reg['addr']}/base/busybox:{version}"
    return {
        "version": version,
        "local": local_ref,
        "ref": ref,
        "digest": digest,
        "ref_by_digest": f"{reg['addr']}/base/busybox@{digest}",
        "tarball": str(tar),
        "layer": tar_digest,
    }


def _debian_mirror() -> str:
    env = os.environ.get("IMAGEGATE_DEBIAN_MIRROR")
    if env:
        return env
    uris: list[str] = []
    for src in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        with contextlib.suppress(OSError):
            for stanza in re.split(r"\n\s*\n", src.read_text()):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
                if "deb" in fields.get("Types", "").split() and re.search(r"\bbookworm\b", fields.get("Suites", "")):
                    uris += fields.get("URIs", "").split()
    lists = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for src in lists:
        with contextlib.suppress(OSError):
            for line in src.read_text().splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line + " ")
                if m:
                    uris.append(m.group(1))
    for uri in uris:  # the main archive, not security/updates-only mirrors
        if "security" not in uri and uri.startswith(("http://", "https://")):
            return uri.rstrip("/")
    return "http://deb.debian.org/debian"


def _python_cache_entry(cdir: Path) -> dict | None:
    best = None
    for meta in sorted(cdir.glob("python-*-bookworm-*.json")):
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        tar = Path(info.get("tarball", ""))
        if tar.is_file() and tar.stat().st_size == info.get("size"):
            if best is None or info.get("created", "") > best.get("created", ""):
                best = info
    return best


def _umount_under(root: Path) -> None:
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    mounts = [m.replace("\\040", " ") for m in mounts]
    inside = sorted((m for m in mounts if m == str(root) or m.startswith(str(root) + "/")), key=len, reverse=True)
    for m in inside:
        proc = run(["umount", "-l", m], check=False)
        if proc.returncode != 0:
            raise StackError(f"cannot unmount {m} inside the debootstrap tree; remove {root} by hand")


def _build_python_rootfs(cdir: Path, state_dir: Path) -> dict:
    if not is_root():
        raise StackError(
            "building the python base image needs debootstrap, which needs root. Run `up` as root "
            "once (the result is cached), or pass --no-python-base."
        )
    debootstrap = require_tool("debootstrap", "debootstrap", "to build the python base image")
    mirror = _debian_mirror()
    work = Path(tempfile.mkdtemp(prefix=".build-python-", dir=cdir))
    rootfs = work / "rootfs"
    log = state_dir / "debootstrap.log"
    cmd = [debootstrap, "--variant=minbase", "--include=python3", "bookworm", str(rootfs), mirror]
    say(f"image: running {shlex.join(cmd)} (takes a few minutes; log {log})")
    t0 = time.monotonic()
    try:
        with open(log, "w") as logf:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                stdin=subprocess.DEVNULL,
                env=dict(os.environ, LC_ALL="C"),
            )
            phases = (
                "I: Retrieving InRelease",
                "I: Validating Packages",
                "I: Resolving dependencies",
                "I: Found additional",
                "I: Installing core packages",
                "I: Unpacking required",
                "I: Configuring required",
                "I: Unpacking the base",
                "I: Configuring the base",
                "I: Base system installed",
            )
            shown = time.monotonic()
            assert proc.stdout is not None
            for line in proc.stdout:
                logf.write(line)
                logf.flush()
                line = line.rstrip()
                if line.startswith(phases) or time.monotonic() - shown > 20:
                    say(f"debootstrap [{time.monotonic() - t0:4.0f} s] {line}")
                    shown = time.monotonic()
            rc = proc.wait()
        if rc != 0:
            raise StackError(
                f"debootstrap failed (exit {rc}) using mirror {mirror} (set IMAGEGATE_DEBIAN_MIRROR "
                f"to use another). Log {log}:\n{tail(log)}"
            )
        say(f"image: debootstrap finished in {time.monotonic() - t0:.0f} s")
        pyver = run(
            ["chroot", str(rootfs), "python3", "-c", "import platform;print(platform.python_version())"],
            what="python3 inside the new rootfs",
        ).stdout.strip()
        debver = (rootfs / "etc/debian_version").read_text().strip()
        _slim_rootfs(rootfs)
        created = _dt.datetime.now(_dt.UTC)
        stem = f"python-{pyver}-bookworm-{created:%Y%m%d}"
        tar = cdir / f"{stem}.tar"
        tmp_tar = work / "rootfs.tar"
        say(f"image: packing {tar}")
        run(
            ["tar", "--numeric-owner", "--sort=name", "-C", str(rootfs), "-cf", str(tmp_tar), "."],
            what="tar of the python rootfs",
            timeout=900,
        )
        os.replace(tmp_tar, tar)
        info = {
            "python_version": pyver,
            "debian_version": debver,
            "suite": "bookworm",
            "mirror": mirror,
            "created": created.isoformat(timespec="seconds"),
            "tarball": str(tar),
            "size": tar.stat().st_size,
            "layer": _sha256_file(tar),
            "build_seconds": round(time.monotonic() - t0),
        }
        write_file(cdir / f"{stem}.json", json.dumps(info, indent=2) + "\n")
        say(f"image: cached python rootfs {tar} ({info['size'] / 1e6:.0f} MB, python {pyver}, Debian {debver})")
        return info
    finally:
        _umount_under(rootfs)
        shutil.rmtree(work, ignore_errors=True)


def _slim_rootfs(rootfs: Path) -> None:
    def clear(rel: str, keep: tuple[str, ...] = ()) -> None:
        d = rootfs / rel
        if not d.is_dir():
            return
        for child in d.iterdir():
            if child.name in keep:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    child.unlink()

    for rel in (
        "var/cache/apt",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "usr/share/lintian",
        "usr/share/linda",
        "tmp",
        "var/tmp",
        "dev",
    ):
        clear(rel, keep=("archives", "partial", "locale.alias"))
    clear("var/cache/apt/archives", keep=("partial",))
    for p in (rootfs / "var/log").rglob("*"):
        if p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
    for p in (rootfs / "var/cache/debconf").glob("*-old"):
        p.unlink()
    os.chmod(rootfs / "tmp", 0o1777)
    os.chmod(rootfs / "var/tmp", 0o1777)
    # Unprivileged user `app` (uid/gid 1000), like the busybox image.
    passwd = (rootfs / "etc/passwd").read_text()
    if not re.search(r"^[^:]*:[^:]*:1000:", passwd, re.M):
        with open(rootfs / "etc/passwd", "a") as f:
            f.write("app:x:1000:1000:app:/home/app:/bin/sh\n")
        with open(rootfs / "etc/group", "a") as f:
            f.write("app:x:1000:\n")
        for name, line in (("etc/shadow", "app:*:19000:0:99999:7:::\n"), ("etc/gshadow", "app:!::\n")):
            if (rootfs / name).exists():
                with open(rootfs / name, "a") as f:
                    f.write(line)
    home = rootfs / "home/app"
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, 1000, 1000)


def ensure_python(host: str, reg: dict, state_dir: Path, rebuild: bool) -> dict:
    cdir = cache_dir()
    cdir.mkdir(parents=True, exist_ok=True)
    info = None if rebuild else _python_cache_entry(cdir)
    if info:
        say(
            f"image: using cached python rootfs {info['tarball']} (python {info['python_version']}, "
            f"built {info['created']})"
        )
    else:
        info = _build_python_rootfs(cdir, state_dir)
    pyver = info["python_version"]
    minor = ".".join(pyver.split(".")[:2])
    local_ref = f"imagegate/python:{pyver}-bookworm"
    _import(
        host,
        Path(info["tarball"]),
        local_ref,
        info["layer"],
        [f"ENV PATH={STD_PATH}", "ENV LANG=C.UTF-8", 'CMD ["python3"]'],
    )
    tags = [f"{minor}-bookworm", f"{pyver}-bookworm"]
    digest = _push(host, reg, local_ref, "base/python", tags)
    ref = f"{reg['addr']}/base/python:{tags[0]}"
    return {
        "version": pyver,
        "debian_version": info.get("debian_version"),
        "local": local_ref,
        "ref": ref,
        "tags": [f"{reg['addr']}/base/python:{t}" for t in tags],
        "digest": digest,
        "ref_by_digest": f"{reg['addr']}/base/python@{digest}",
        "tarball": info["tarball"],
        "layer": info["layer"],
    }


# --------------------------------------------------------------------------------------------- state


def state_dir_from(arg: str | None) -> Path:
    return Path(arg or os.environ.get("IMAGEGATE_STACK_DIR") or DEFAULT_STATE_DIR).resolve()


def load_state(state_dir: str | os.PathLike | None = None) -> dict:
    """Return the parsed ``stack.json`` of a stack brought up by ``stack.py up``.

    ``state_dir`` defaults to ``$IMAGEGATE_STACK_DIR`` or ``/tmp/imagegate-stack``. Raises FileNotFoundError
    with a hint when the stack is not up.
    """
    path = state_dir_from(str(state_dir) if state_dir else None) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: run `python3 scripts/stack.py up` first") from None


_LOGRUS_FIELD = re.compile(r'([A-Za-z_][\w.\-]*)=("(?:[^"\\]|\\.)*"|\S*)')


def _logrus_fields(line: str) -> dict[str, str]:
    fields = {}
    for key, value in _LOGRUS_FIELD.findall(line):
        if value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                value = value[1:-1]
        fields[key] = value
    return fields


def registry_requests(log_path: str | os.PathLike, start: int = 0) -> list[dict]:
    """Parse a registry log (``IMAGEGATE_REGISTRY_LOG``) from byte offset ``start``.

    Distribution writes one ``msg="response completed"`` (or ``"response completed with error"``) line per
    request under /v2/; on the auth registry a request refused with 401 writes ``msg="error authorizing
    context: ..."`` instead (counted here with status 401), and an accepted one writes an extra
    ``msg="authorized request"`` line (skipped here).

    Returns one dict per request: ``method``, ``uri``, ``path`` (uri without the query), ``status`` (int),
    ``kind`` (``manifest``, ``blob``, ``upload``, ``tags``, ``catalog``, ``base`` or ``other``), ``repo`` and
    ``time``. Use ``os.path.getsize(log)`` before an action as ``start`` to count only the requests that action
    made.
    """
    out = []
    with open(log_path, "rb") as f:
        f.seek(start)
        for raw in f:
            line = raw.decode("utf-8", "replace")
            if 'msg="response completed' in line:
                challenged = False
            elif 'msg="error authorizing context' in line:  # auth registry: 401 challenge, no "completed" line
                challenged = True
            else:
                continue
            fields = _logrus_fields(line)
            uri = fields.get("http.request.uri", "")
            path = uri.split("?", 1)[0]
            m = re.match(r"^/v2/(?:(.+?)/)?(manifests|blobs/uploads|blobs|tags)(?:/|$)", path)
            if path in ("/v2/", "/v2"):
                kind, repo = "base", None
            elif path.startswith("/v2/_catalog"):
                kind, repo = "catalog", None
            elif m:
                kind = {"manifests": "manifest", "blobs": "blob", "blobs/uploads": "upload", "tags": "tags"}[m.group(2)]
                repo = m.group(1)
            else:
                kind, repo = "other", None
            try:
                status = 401 if challenged else int(fields.get("http.response.status", "0"))
            except ValueError:
                status = 0
            out.append(
                {
                    "method": fields.get("http.request.method", ""),
                    "uri": uri,
                    "path": path,
                    "status": status,
                    "kind": kind,
                    "repo": repo,
                    "time": fields.get("time", ""),
                }
            )
    return out


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    import fcntl

    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another stack.py working on {state_dir} …")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _env_for(state: dict) -> dict[str, str]:
    reg, areg = state.get("registry") or {}, state.get("auth_registry") or {}
    images = state.get("images") or {}
    bb, py = images.get("busybox") or {}, images.get("python") or {}
    return {
        "IMAGEGATE_STACK_DIR": state["state_dir"],
        "DOCKER_HOST": (state.get("docker") or {}).get("host", ""),
        "IMAGEGATE_REGISTRY": reg.get("addr", ""),
        "IMAGEGATE_REGISTRY_URL": reg.get("url", ""),
        "IMAGEGATE_REGISTRY_LOG": reg.get("log", ""),
        "IMAGEGATE_REGISTRY_ACCESS_LOG": reg.get("access_log", ""),
        "IMAGEGATE_AUTH_REGISTRY": areg.get("addr", ""),
        "IMAGEGATE_AUTH_REGISTRY_URL": areg.get("url", ""),
        "IMAGEGATE_AUTH_USER": areg.get("user", ""),
        "IMAGEGATE_AUTH_PASSWORD": areg.get("password", ""),
        "IMAGEGATE_AUTH_CA": areg.get("ca_cert", ""),
        "IMAGEGATE_AUTH_REGISTRY_LOG": areg.get("log", ""),
        "IMAGEGATE_AUTH_REGISTRY_ACCESS_LOG": areg.get("access_log", ""),
        "IMAGEGATE_BUSYBOX_IMAGE": bb.get("ref", ""),
        "IMAGEGATE_BUSYBOX_IMAGE_DIGEST": bb.get("ref_by_digest", ""),
        "IMAGEGATE_BUSYBOX_LOCAL_IMAGE": bb.get("local", ""),
        "IMAGEGATE_PYTHON_IMAGE": py.get("ref", ""),
        "IMAGEGATE_PYTHON_IMAGE_DIGEST": py.get("ref_by_digest", ""),
        "IMAGEGATE_PYTHON_LOCAL_IMAGE": py.get("local", ""),
    }


def save_state(state_dir: Path, state: dict) -> None:
    state["updated"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    state["env"] = _env_for(state)
    write_file(state_dir / STATE_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n", 0o600)
    env_text = "# imagegate local stack - written by scripts/stack.py up\n" + "".join(
        f"export {k}={shlex.quote(v)}\n" for k, v in state["env"].items()
    )
    write_file(state_dir / ENV_FILE, env_text, 0o600)


# ------------------------------------------------------------------------------------------- commands


def _preinstall(args: argparse.Namespace) -> None:
    """As root on Debian, install every missing package in one apt-get run (each step would otherwise do its own)."""
    if not (is_root() and is_debian()) or os.environ.get("IMAGEGATE_REGISTRY_BIN"):
        return
    missing = []
    docker_running = docker_ping(os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST)
    if not which("docker") or (not docker_running and not which("dockerd")):
        missing.append("docker.io")
    if not which("docker-registry") and not which("registry"):
        missing.append("docker-registry")
    if not which("openssl"):
        missing.append("openssl")
    if not any(p and os.path.isfile(p) and _is_static_elf(p) for p in (which("busybox"), "/bin/busybox")):
        missing.append("busybox-static")
    if not args.no_python_base and not which("debootstrap"):
        if args.rebuild_base or not _python_cache_entry(cache_dir()):
            missing.append("debootstrap")
    if missing:
        apt_install(missing, f"missing packages {', '.join(missing)}")


def cmd_up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    sdir = state_dir_from(args.state_dir)
    with state_lock(sdir):
        old: dict = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            old = load_state(sdir)
        state: dict = {
            "version": STATE_VERSION,
            "state_dir": str(sdir),
            "docker": None,
            "registry": None,
            "auth_registry": None,
            "images": {"busybox": None, "python": None},
            "options": {"no_python_base": bool(args.no_python_base)},
        }
        if old.get("created") and any(proc_matches(old.get(k)) for k in ("docker", "registry", "auth_registry")):
            state["created"] = old["created"]
        else:
            state["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        _preinstall(args)
        state["docker"] = ensure_docker(old.get("docker"), sdir, args.docker_timeout)
        save_state(sdir, state)
        state["registry"] = ensure_registry(sdir, old.get("registry"))
        save_state(sdir, state)
        state["auth_registry"] = ensure_auth_registry(sdir, old.get("auth_registry"))
        save_state(sdir, state)
        host = state["docker"]["host"]
        state["images"]["busybox"] = ensure_busybox(host, state["registry"])
        save_state(sdir, state)
        if args.no_python_base:
            say("image: skipping the python base image (--no-python-base)")
        else:
            state["images"]["python"] = ensure_python(host, state["registry"], sdir, args.rebuild_base)
        save_state(sdir, state)
    say(f"stack is up in {time.monotonic() - t0:.1f} s; state {sdir / STATE_FILE}")
    say(f'use it with:  eval "$(python3 {shlex.quote(sys.argv[0])} env)"')
    for k, v in state["env"].items():
        if k != "IMAGEGATE_AUTH_PASSWORD" and v:
            say(f"  {k}={v}")
    return 0


def _component_status(name: str, rec: dict | None) -> tuple[bool, str]:
    if not rec:
        return False, f"{name:14} not set up"
    if name == "docker" and not rec.get("started"):
        ok = docker_ping(rec["host"])
        return ok, f"{name:14} {'running' if ok else 'DOWN':8} external engine at {rec['host']} (not started by stack)"
    alive = proc_matches(rec)
    if name == "docker":
        ok = alive and docker_ping(rec["host"])
        where = rec["host"]
    else:
        ok = alive and _registry_healthy(rec)
        where = rec["url"]
    what = "running" if ok else "DOWN"
    detail = f"pid {rec['pid']}" + ("" if alive else " (gone or not ours)")
    if alive and not ok:
        detail += " (process alive but not answering)"
    return ok, f"{name:14} {what:8} {detail:10} {where}  log {rec.get('log')}"


def cmd_status(args: argparse.Namespace) -> int:
    sdir = state_dir_from(args.state_dir)
    try:
        state = load_state(sdir)
    except FileNotFoundError:
        print(f"stack is not up (no {sdir / STATE_FILE})")
        return 1
    all_ok = True
    for name, key in (("docker", "docker"), ("registry", "registry"), ("auth-registry", "auth_registry")):
        ok, line = _component_status(name, state.get(key))
        all_ok &= ok
        print(line)
    reg = state.get("registry") or {}
    for name, img in (state.get("images") or {}).items():
        if not img:
            skipped = name == "python" and (state.get("options") or {"no_python_base": True}).get("no_python_base")
            all_ok &= bool(skipped)
            print(f"{'image ' + name:14} {'skipped (--no-python-base)' if skipped else 'MISSING (up did not finish)'}")
            continue
        repo, _, tag = img["ref"].split("/", 1)[1].rpartition(":")
        digest = _registry_digest(reg, repo, tag) if reg else None
        ok = digest == img["digest"]
        all_ok &= ok
        print(f"{'image ' + name:14} {'present' if ok else 'MISSING':8} {img['ref']} {img['digest']}")
    return 0 if all_ok else 1


def cmd_env(args: argparse.Namespace) -> int:
    sdir = state_dir_from(args.state_dir)
    try:
        sys.stdout.write((sdir / ENV_FILE).read_text())
    except FileNotFoundError:
        print(f"stack is not up (no {sdir / ENV_FILE}): run `python3 scripts/stack.py up`", file=sys.stderr)
        return 1
    return 0


def _untag_registry_refs(state: dict) -> None:
    """Remove the REGISTRY:PORT/base/... tags `up` added in Docker (the imagegate/* images stay)."""
    host = (state.get("docker") or {}).get("host")
    refs = []
    for img in (state.get("images") or {}).values():
        if img:
            refs += [img["ref"], *img.get("tags", [])]
    refs = sorted(set(refs))
    if not refs or not host or not which("docker") or not docker_ping(host):
        return
    docker(host, "image", "rm", "--no-prune", *refs, check=False, timeout=120)
    say(f"docker: untagged {len(refs)} registry reference(s) of the base images")


def cmd_down(args: argparse.Namespace) -> int:
    sdir = state_dir_from(args.state_dir)
    with state_lock(sdir):
        try:
            state = load_state(sdir)
        except FileNotFoundError:
            say(f"nothing to stop (no {sdir / STATE_FILE})")
            return 0
        _untag_registry_refs(state)
        for name, key in (("auth-registry", "auth_registry"), ("registry", "registry")):
            rec = state.get(key)
            stop_process(name, rec, 15)
            if rec:
                shutil.rmtree(sdir / name, ignore_errors=True)
                say(f"{name}: removed {sdir / name}")
        dk = state.get("docker") or {}
        keep_docker = args.keep_docker and dk.get("started") and proc_matches(dk)
        if dk.get("started") and not keep_docker:
            stop_process("docker", dk, 90)
        elif dk.get("started"):
            say(f"docker: leaving dockerd pid {dk['pid']} running (--keep-docker); a later `up` reuses it")
        elif dk:
            say(f"docker: leaving {dk.get('host')} alone (not started by this script)")
        for f in (STATE_FILE, ENV_FILE):
            with contextlib.suppress(FileNotFoundError):
                (sdir / f).unlink()
        if keep_docker:
            kept = {
                "version": STATE_VERSION,
                "state_dir": str(sdir),
                "docker": dk,
                "registry": None,
                "auth_registry": None,
                "images": {"busybox": None, "python": None},
                "created": state.get("created"),
            }
            save_state(sdir, kept)
    say(f"stack is down (cache kept in {cache_dir()})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack.py", description=__doc__.split("\n\n")[0])
    state_help = f"state directory (default $IMAGEGATE_STACK_DIR or {DEFAULT_STATE_DIR})"
    parser.add_argument("--state-dir", help=state_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", default=argparse.SUPPRESS, help=state_help)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", parents=[common], help="start (or reuse) Docker, both registries and the base images")
    up.add_argument("--no-python-base", action="store_true", help="skip the debootstrap python base image")
    up.add_argument("--rebuild-base", action="store_true", help="rebuild the cached python rootfs")
    up.add_argument("--docker-timeout", type=float, default=60.0, help="seconds to wait for a started dockerd")
    sub.add_parser("status", parents=[common], help="show what runs; exit 1 when something is down")
    sub.add_parser("env", parents=[common], help="print `export KEY=VALUE` lines for the running stack")
    down = sub.add_parser(
        "down", parents=[common], help="stop what `up` started and remove registry storage (keeps the cache)"
    )
    down.add_argument("--keep-docker", action="store_true", help="leave a dockerd started by `up` running")
    args = parser.parse_args(argv)
    try:
        return {"up": cmd_up, "status": cmd_status, "env": cmd_env, "down": cmd_down}[args.command](args)
    except StackError as exc:
        print(f"stack.py {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stack.py {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
