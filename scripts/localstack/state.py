"""State directories: the JSON state file, the ``export`` env file and the lock.

The mechanics (``read_state``, ``write_state``, ``env_file_text``, ``lock``) are shared with the cluster
(``k8s_state``); the rest is the stack's: ``/tmp/imagegate-stack`` with ``stack.json`` and ``stack.env``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

from .host import say, write_file

DEFAULT_STATE_DIR = "/tmp/imagegate-stack"
STATE_FILE = "stack.json"
ENV_FILE = "stack.env"
STATE_VERSION = 1
ENV_HEADER = "# imagegate local stack - written by scripts/stack.py up\n"


# ------------------------------------------------------------------------------------------ mechanics


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def resolve_state_dir(arg: str | None, env_var: str, default: str) -> Path:
    return Path(arg or os.environ.get(env_var) or default).resolve()


def read_state(path: Path, hint: str) -> dict:
    """Parse a state file; FileNotFoundError ``"{path} does not exist: {hint}"`` when it is missing."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: {hint}") from None


def env_file_text(header: str, env: dict[str, str]) -> str:
    """The ``export KEY=VALUE`` lines of an env file, values shell-quoted."""
    return header + "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


def write_state(sdir: Path, state: dict, env: dict[str, str], files: tuple[str, str], header: str) -> None:
    """Stamp ``updated`` and ``env`` into *state*; write the state file and the env file (both 0600)."""
    state_file, env_file = files
    state["updated"] = now_iso()
    state["env"] = env
    write_file(sdir / state_file, json.dumps(state, indent=2, sort_keys=True) + "\n", 0o600)
    write_file(sdir / env_file, env_file_text(header, state["env"]), 0o600)


@contextlib.contextmanager
def lock(sdir: Path, waiting: str) -> Iterator[None]:
    """Hold ``sdir/.lock`` exclusively; say *waiting* first when another process has it."""
    import fcntl

    sdir.mkdir(parents=True, exist_ok=True)
    with open(sdir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(waiting)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def remove_state_files(sdir: Path, files: tuple[str, ...]) -> None:
    for f in files:
        with contextlib.suppress(FileNotFoundError):
            (sdir / f).unlink()


# ------------------------------------------------------------------------------------------ the stack


def state_dir_from(arg: str | None) -> Path:
    return resolve_state_dir(arg, "IMAGEGATE_STACK_DIR", DEFAULT_STATE_DIR)


def load_state(state_dir: str | os.PathLike | None = None) -> dict:
    """Return the parsed ``stack.json`` of a stack brought up by ``stack.py up``.

    ``state_dir`` defaults to ``$IMAGEGATE_STACK_DIR`` or ``/tmp/imagegate-stack``. Raises FileNotFoundError
    with a hint when the stack is not up.
    """
    path = state_dir_from(str(state_dir) if state_dir else None) / STATE_FILE
    return read_state(path, "run `python3 scripts/stack.py up` first")


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    with lock(state_dir, f"waiting for another stack.py working on {state_dir} …"):
        yield


def stack_env(state: dict) -> dict[str, str]:
    """The environment of a stack (``stack.env``, and ``env`` in ``stack.json``)."""
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
        **token_env(state),
    }


def token_env(state: dict) -> dict[str, str]:
    """The token registry's part of the environment (empty values while it is not up)."""
    treg, issuer = state.get("token_registry") or {}, state.get("token_issuer") or {}
    images = treg.get("images") or {}
    public, private = images.get("public") or {}, images.get("private") or {}
    user, password = treg.get("user", ""), ""
    if user and treg.get("accounts"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            password = json.loads(Path(treg["accounts"]).read_text())[user]["password"]
    return {
        "IMAGEGATE_TOKEN_REGISTRY": treg.get("addr", ""),
        "IMAGEGATE_TOKEN_REGISTRY_URL": treg.get("url", ""),
        "IMAGEGATE_TOKEN_REGISTRY_LOG": treg.get("log", ""),
        "IMAGEGATE_TOKEN_REALM": issuer.get("realm", ""),
        "IMAGEGATE_TOKEN_SERVICE": issuer.get("service", ""),
        "IMAGEGATE_TOKEN_CA": treg.get("ca_cert", ""),
        "IMAGEGATE_TOKEN_USER": user,
        "IMAGEGATE_TOKEN_PASSWORD": password,
        "IMAGEGATE_TOKEN_ACCOUNTS": treg.get("accounts", ""),
        "IMAGEGATE_TOKEN_ISSUER_LOG": issuer.get("request_log", ""),
        "IMAGEGATE_TOKEN_PUBLIC_IMAGE": public.get("ref", ""),
        "IMAGEGATE_TOKEN_PRIVATE_IMAGE": private.get("ref", ""),
    }


def save_state(state_dir: Path, state: dict) -> None:
    write_state(state_dir, state, stack_env(state), (STATE_FILE, ENV_FILE), ENV_HEADER)


def empty_state(sdir: Path) -> dict:
    """A state with nothing set up yet (what `up` fills in, component by component)."""
    return {
        "version": STATE_VERSION,
        "state_dir": str(sdir),
        "docker": None,
        "registry": None,
        "auth_registry": None,
        "token_issuer": None,
        "token_registry": None,
        "images": {"busybox": None, "python": None},
    }
