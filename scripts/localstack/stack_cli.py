"""Local test stack for imagegate: a Docker Engine, three OCI registries, a token issuer and local base images.

Stdlib-only (Python 3.11+). Nothing here needs the internet or a public container registry:

* Docker Engine - reuses one that answers (``$DOCKER_HOST``, ``/var/run/docker.sock`` or the docker CLI's
  current context); otherwise, as root on Debian, installs ``docker.io`` when missing and starts ``dockerd``.
* Registry 1 - Debian ``docker-registry`` (CNCF distribution 2.8) on a free loopback port, plain http,
  deletes enabled, every request logged.
* Registry 2 - a second ``docker-registry`` with htpasswd (bcrypt) basic auth behind TLS, with a CA made at
  start-up by ``openssl``.
* Registry 3 - ``token-registry``: a third ``docker-registry`` behind TLS with ``auth: token`` (the Docker token
  spec), trusting the stack's ``token-issuer`` (:mod:`localstack.token_issuer`, an https server that signs RS256
  JWTs and logs each token request as a JSON line); anonymous pulls of ``public/*``, test accounts for the rest
  (see :mod:`localstack.registry_token`). The busybox base is pushed there as ``public/busybox`` and
  ``private/busybox`` by the Docker Engine after a ``docker login`` into the stack's own docker config.
* Base images - a busybox-static rootfs and a Debian bookworm + python3 rootfs (``debootstrap``, cached under
  ``~/.cache/imagegate/base``), imported with ``docker import`` and pushed to registry 1.

Usage::

    python3 scripts/stack.py up [--no-python-base] [--rebuild-base]
    python3 scripts/stack.py status
    python3 scripts/stack.py env            # prints `export KEY=VALUE` lines; eval "$(... env)"
    python3 scripts/stack.py down [--keep-docker]
    python3 scripts/stack.py tools crane     # build crane once from the Go module proxy; print its path

State lives in ``/tmp/imagegate-stack`` (``--state-dir`` or ``$IMAGEGATE_STACK_DIR``): ``stack.json`` (machine
readable, see :func:`localstack.state.load_state`), ``stack.env``, logs and registry storage. ``down`` stops only
the processes that ``up`` started (checked against /proc/PID/cmdline and start time) and removes registry
storage; the base image cache is kept.

Registry request logs: see :mod:`localstack.registry_log` (:func:`registry_requests`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from . import cosign_tools, go_tools, trivy_tools  # noqa: F401  (the last two register their tools)
from .engine import DEFAULT_DOCKER_HOST, docker, docker_ping, ensure_docker
from .host import StackError, apt_install, is_debian, is_root, say, set_voice, which
from .images import cache_dir, ensure_busybox, ensure_python, ensure_token_images, is_static_elf
from .procs import proc_matches, stop_process
from .python_rootfs import python_cache_entry
from .registries import (
    MANIFEST_ACCEPT,
    ensure_auth_registry,
    ensure_registry,
    ensure_token_registry,
    registry_digest,
    registry_healthy,
)
from .registry_token import ensure_token_issuer, issuer_healthy, token_registry_digest
from .state import (
    DEFAULT_STATE_DIR,
    ENV_FILE,
    STATE_FILE,
    empty_state,
    load_state,
    now_iso,
    remove_state_files,
    save_state,
    state_dir_from,
    state_lock,
)

COMPONENTS = (
    ("docker", "docker"),
    ("registry", "registry"),
    ("auth-registry", "auth_registry"),
    ("token-issuer", "token_issuer"),
    ("token-registry", "token_registry"),
)
SECRET_ENV = ("IMAGEGATE_AUTH_PASSWORD", "IMAGEGATE_TOKEN_PASSWORD")

# ------------------------------------------------------------------------------------------------- up


def missing_packages(args: argparse.Namespace) -> list[str]:
    """The Debian packages `up` would otherwise install one at a time."""
    missing = []
    docker_running = docker_ping(os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST)
    if not which("docker") or (not docker_running and not which("dockerd")):
        missing.append("docker.io")
    if not which("docker-registry") and not which("registry"):
        missing.append("docker-registry")
    if not which("openssl"):
        missing.append("openssl")
    if not any(p and os.path.isfile(p) and is_static_elf(p) for p in (which("busybox"), "/bin/busybox")):
        missing.append("busybox-static")
    if not args.no_python_base and not which("debootstrap"):
        if args.rebuild_base or not python_cache_entry(cache_dir()):
            missing.append("debootstrap")
    return missing


def preinstall(args: argparse.Namespace) -> None:
    """As root on Debian, install every missing package in one apt-get run (each step would otherwise do its own)."""
    if not (is_root() and is_debian()) or os.environ.get("IMAGEGATE_REGISTRY_BIN"):
        return
    missing = missing_packages(args)
    if missing:
        apt_install(missing, f"missing packages {', '.join(missing)}")


def new_state(sdir: Path, old: dict, no_python_base: bool) -> dict:
    """A fresh state for `up`; it keeps the old creation time while some component of the old stack runs."""
    state = empty_state(sdir)
    state["options"] = {"no_python_base": no_python_base}
    if old.get("created") and any(proc_matches(old.get(k)) for _, k in COMPONENTS):
        state["created"] = old["created"]
    else:
        state["created"] = now_iso()
    return state


def bring_up(sdir: Path, args: argparse.Namespace) -> dict:
    """Each component in turn, saving the state after each (so `down` can stop a half-started stack)."""
    old: dict = {}
    with contextlib.suppress(FileNotFoundError, ValueError):
        old = load_state(sdir)
    state = new_state(sdir, old, bool(args.no_python_base))
    preinstall(args)
    state["docker"] = ensure_docker(old.get("docker"), sdir, args.docker_timeout)
    save_state(sdir, state)
    state["registry"] = ensure_registry(sdir, old.get("registry"))
    save_state(sdir, state)
    state["auth_registry"] = ensure_auth_registry(sdir, old.get("auth_registry"))
    save_state(sdir, state)
    state["token_issuer"] = ensure_token_issuer(sdir, old.get("token_issuer"))
    save_state(sdir, state)
    state["token_registry"] = ensure_token_registry(sdir, old.get("token_registry"), state["token_issuer"])
    save_state(sdir, state)
    host = state["docker"]["host"]
    state["images"]["busybox"] = ensure_busybox(host, state["registry"])
    save_state(sdir, state)
    state["token_registry"]["images"] = ensure_token_images(host, state["token_registry"], state["images"]["busybox"], sdir)
    save_state(sdir, state)
    if args.no_python_base:
        say("image: skipping the python base image (--no-python-base)")
    else:
        state["images"]["python"] = ensure_python(host, state["registry"], sdir, args.rebuild_base)
    save_state(sdir, state)
    return state


def cmd_up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    sdir = state_dir_from(args.state_dir)
    with state_lock(sdir):
        state = bring_up(sdir, args)
    say(f"stack is up in {time.monotonic() - t0:.1f} s; state {sdir / STATE_FILE}")
    say(f'use it with:  eval "$(python3 {shlex.quote(sys.argv[0])} env)"')
    for k, v in state["env"].items():
        if k not in SECRET_ENV and v:
            say(f"  {k}={v}")
    return 0


# --------------------------------------------------------------------------------------------- status


def component_status(name: str, rec: dict | None) -> tuple[bool, str]:
    if not rec:
        return False, f"{name:14} not set up"
    if name == "docker" and not rec.get("started"):
        ok = docker_ping(rec["host"])
        return ok, f"{name:14} {'running' if ok else 'DOWN':8} external engine at {rec['host']} (not started by stack)"
    alive = proc_matches(rec)
    if name == "docker":
        ok = alive and docker_ping(rec["host"])
        where = rec["host"]
    elif name == "token-issuer":
        ok = alive and issuer_healthy(rec)
        where = rec["realm"]
    else:
        ok = alive and registry_healthy(rec)
        where = rec["url"]
    return ok, component_line(name, rec, ok, alive, where)


def component_line(name: str, rec: dict, ok: bool, alive: bool, where: str) -> str:
    what = "running" if ok else "DOWN"
    detail = f"pid {rec['pid']}" + ("" if alive else " (gone or not ours)")
    if alive and not ok:
        detail += " (process alive but not answering)"
    return f"{name:14} {what:8} {detail:10} {where}  log {rec.get('log')}"


def image_status(state: dict, name: str, img: dict | None) -> tuple[bool, str]:
    if not img:
        skipped = name == "python" and (state.get("options") or {"no_python_base": True}).get("no_python_base")
        line = f"{'image ' + name:14} {'skipped (--no-python-base)' if skipped else 'MISSING (up did not finish)'}"
        return bool(skipped), line
    reg = state.get("registry") or {}
    repo, _, tag = img["ref"].split("/", 1)[1].rpartition(":")
    digest = registry_digest(reg, repo, tag) if reg else None
    ok = digest == img["digest"]
    return ok, f"{'image ' + name:14} {'present' if ok else 'MISSING':8} {img['ref']} {img['digest']}"


def cmd_status(args: argparse.Namespace) -> int:
    sdir = state_dir_from(args.state_dir)
    try:
        state = load_state(sdir)
    except FileNotFoundError:
        print(f"stack is not up (no {sdir / STATE_FILE})")
        return 1
    all_ok = True
    for name, key in COMPONENTS:
        ok, line = component_status(name, state.get(key))
        all_ok &= ok
        print(line)
    for name, img in (state.get("images") or {}).items():
        ok, line = image_status(state, name, img)
        all_ok &= ok
        print(line)
    for ok, line in token_image_status(state):
        all_ok &= ok
        print(line)
    return 0 if all_ok else 1


def token_image_status(state: dict) -> list[tuple[bool, str]]:
    """(ok, line) for each image seeded into the token registry (asked with the push account's token)."""
    treg = state.get("token_registry")
    if not treg:
        return []
    images = treg.get("images") or {}
    out = []
    for name in ("public", "private"):
        img = images.get(name)
        label = f"{'token ' + name:14}"
        if not img:
            out.append((False, f"{label} MISSING (up did not finish)"))
            continue
        repo, _, tag = img["ref"].split("/", 1)[1].rpartition(":")
        ok = token_registry_digest(treg, repo, tag, MANIFEST_ACCEPT) == img["digest"]
        out.append((ok, f"{label} {'present' if ok else 'MISSING':8} {img['ref']} {img['digest']}"))
    return out


# ------------------------------------------------------------------------------------------ env, down


def cmd_env(args: argparse.Namespace) -> int:
    sdir = state_dir_from(args.state_dir)
    try:
        sys.stdout.write((sdir / ENV_FILE).read_text())
    except FileNotFoundError:
        print(f"stack is not up (no {sdir / ENV_FILE}): run `python3 scripts/stack.py up`", file=sys.stderr)
        return 1
    return 0


def registry_refs(state: dict) -> list[str]:
    """The REGISTRY:PORT/base/... tags `up` added in Docker, sorted."""
    refs = []
    token_images = ((state.get("token_registry") or {}).get("images") or {}).values()
    for img in [*(state.get("images") or {}).values(), *token_images]:
        if img:
            refs += [img["ref"], *img.get("tags", [])]
    return sorted(set(refs))


def untag_registry_refs(state: dict) -> None:
    """Remove the REGISTRY:PORT/base/... tags `up` added in Docker (the imagegate/* images stay)."""
    host = (state.get("docker") or {}).get("host")
    refs = registry_refs(state)
    if not refs or not host or not which("docker") or not docker_ping(host):
        return
    docker(host, "image", "rm", "--no-prune", *refs, check=False, timeout=120)
    say(f"docker: untagged {len(refs)} registry reference(s) of the base images")


def take_down(sdir: Path, state: dict, keep_docker_arg: bool) -> None:
    untag_registry_refs(state)
    stop_process("token-issuer", state.get("token_issuer"), 10)  # before its material (in token-registry/) goes
    for name, key in (("token-registry", "token_registry"), ("auth-registry", "auth_registry"), ("registry", "registry")):
        rec = state.get(key)
        stop_process(name, rec, 15)
        if rec:
            shutil.rmtree(sdir / name, ignore_errors=True)
            say(f"{name}: removed {sdir / name}")
    dk = state.get("docker") or {}
    keep_docker = keep_docker_arg and dk.get("started") and proc_matches(dk)
    if dk.get("started") and not keep_docker:
        stop_process("docker", dk, 90)
    elif dk.get("started"):
        say(f"docker: leaving dockerd pid {dk['pid']} running (--keep-docker); a later `up` reuses it")
    elif dk:
        say(f"docker: leaving {dk.get('host')} alone (not started by this script)")
    remove_state_files(sdir, (STATE_FILE, ENV_FILE))
    if keep_docker:
        kept = empty_state(sdir)
        kept.update(docker=dk, created=state.get("created"))
        save_state(sdir, kept)


def cmd_down(args: argparse.Namespace) -> int:
    sdir = state_dir_from(args.state_dir)
    with state_lock(sdir):
        try:
            state = load_state(sdir)
        except FileNotFoundError:
            say(f"nothing to stop (no {sdir / STATE_FILE})")
            return 0
        take_down(sdir, state, args.keep_docker)
    say(f"stack is down (cache kept in {cache_dir()})")
    return 0


# ----------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stack.py", description=__doc__.split("\n\n")[0])
    state_help = f"state directory (default $IMAGEGATE_STACK_DIR or {DEFAULT_STATE_DIR})"
    parser.add_argument("--state-dir", help=state_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", default=argparse.SUPPRESS, help=state_help)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", parents=[common], help="start (or reuse) Docker, the registries, the token issuer and the base images")
    up.add_argument("--no-python-base", action="store_true", help="skip the debootstrap python base image")
    up.add_argument("--rebuild-base", action="store_true", help="rebuild the cached python rootfs")
    up.add_argument("--docker-timeout", type=float, default=60.0, help="seconds to wait for a started dockerd")
    sub.add_parser("status", parents=[common], help="show what runs; exit 1 when something is down")
    sub.add_parser("env", parents=[common], help="print `export KEY=VALUE` lines for the running stack")
    down = sub.add_parser(
        "down", parents=[common], help="stop what `up` started and remove registry storage (keeps the cache)"
    )
    down.add_argument("--keep-docker", action="store_true", help="leave a dockerd started by `up` running")
    tools = sub.add_parser("tools", help="build (once, from the Go module proxy) and print the path of a Go tool, e.g. crane")
    tools.add_argument("tool", choices=sorted(go_tools.TOOLS), help="the tool")
    return parser


def cmd_tools(args: argparse.Namespace) -> int:
    print(go_tools.ensure_tool(args.tool))
    return 0


COMMANDS = {"up": cmd_up, "status": cmd_status, "env": cmd_env, "down": cmd_down, "tools": cmd_tools}


def main(argv: list[str] | None = None) -> int:
    set_voice("stack", detach_closed_stdout=True)
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except StackError as exc:
        print(f"stack.py {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stack.py {args.command}: interrupted", file=sys.stderr)
        return 130
