"""A real single-node Kubernetes cluster for imagegate's tests, built from source, all on loopback.

Stdlib-only (Python 3.11+), root on Debian. No Kubernetes binary is packaged on PyPI, Debian or npm and no
image can be pulled here, so this script:

* builds ``kube-apiserver``, ``kube-controller-manager``, ``kube-scheduler``, ``kubelet`` and ``kubectl``
  once from the ``k8s.io/kubernetes`` Go module (a wrapper module that requires ``k8s.io/kubernetes vX.Y.Z``
  and replaces every ``k8s.io/*`` staging module with its published ``v0.Y.Z``), cached outside the repo in
  ``~/.cache/imagegate/k8s/vX.Y.Z/`` (``$IMAGEGATE_CACHE_DIR`` overrides ``~/.cache/imagegate``), together
  with the Go module and build caches, so a second build is a cache hit;
* compiles Kubernetes' ``build/pause/linux/pause.c`` statically with gcc into a one-layer OCI image (the
  sandbox image), because ``registry.k8s.io/pause`` cannot be pulled;
* runs Debian's ``etcd-server``, the control plane, a **separate** ``containerd`` (own root, state and
  socket under the state dir, so Docker's containerd is never touched) with runc and Debian's CNI plugins
  (bridge + host-local; no gateway, no masquerade, no NAT), and a kubelet (cgroupfs driver, cgroup v1);
* configures containerd to pull ``127.0.0.1:PORT`` registries of the local stack over plain http
  (``hosts.toml``), writes a kubeconfig, waits for the node to be Ready and creates a test namespace that
  enforces the ``restricted`` Pod Security Standard.

Usage::

    python3 scripts/k8s.py up [--namespace NAME] [--registry HOST:PORT ...] [--spark]
    python3 scripts/k8s.py status
    python3 scripts/k8s.py env            # `export KEY=VALUE` lines; eval "$(python3 scripts/k8s.py env)"
    python3 scripts/k8s.py down
    python3 scripts/k8s.py build          # only build/cache the binaries and the pause image

State lives in ``/tmp/imagegate-k8s`` (``--state-dir`` or ``$IMAGEGATE_K8S_DIR``): ``k8s.json`` (machine
readable), ``k8s.env``, ``admin.kubeconfig`` (mode 0600), certificates, configs and ``logs/``. ``down`` stops
only what ``up`` started (each PID checked against /proc/PID/cmdline and its start time), kills the containerd
shims of its own containerd, unmounts everything under the state dir, removes the pod network namespaces,
the bridge and the cgroups it made, and restores the kernel settings the kubelet changed.

``up --spark`` (or ``IMAGEGATE_K8S_SPARK=1``) adds the cluster services, kube-proxy (iptables) and CoreDNS, so
that Service IPs route and ``*.svc.cluster.local`` resolves from pods, and the kubeflow spark-operator controller
(``localstack/k8s_services.py``, ``localstack/k8s_spark.py``); their parts are built once by
``localstack/spark_parts.py`` (~5-8 min cold) and only then.

Kubernetes version: v1.28.15 - see docs/kubernetes-cluster.md for why (containerd 1.6.20, cgroup v1).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import time
from pathlib import Path

from .host import K8sError, StackError, elapsed, is_root, say, set_voice
from .k8s_api import Api
from .k8s_binaries import K8S_VERSION, ensure_binaries, version_dir
from .k8s_cluster import (
    COMPONENTS,
    cluster_healthy,
    discover_registries,
    ensure_namespace,
    start_cluster,
    write_registry_hosts,
)
from .k8s_host import ensure_packages
from .k8s_pause import ensure_pause_image
from .k8s_services import SERVICE_COMPONENTS, ensure_service_packages
from .k8s_spark import ensure_spark_parts, start_operator
from .k8s_state import (
    DEFAULT_STATE_DIR,
    ENV_FILE,
    STATE_FILE,
    STATE_VERSION,
    load_state,
    save_state,
    state_dir_from,
    state_lock,
)
from .k8s_teardown import teardown
from .procs import proc_matches
from .state import now_iso, remove_state_files

DEFAULT_NAMESPACE = "imagegate"


def _require_root() -> None:
    if not is_root():
        raise K8sError("the cluster needs root (kubelet, containerd, cgroups, network namespaces); re-run as root")


def cmd_build(args: argparse.Namespace) -> int:
    ensure_packages()
    info = ensure_binaries()
    pause = ensure_pause_image()
    say(f"binaries in {info['bin_dir']} ({'built in %.0f s' % info['seconds'] if info['built'] else 'cached'}); "
        f"sandbox image {pause}")
    if args.spark:
        ensure_service_packages()
        parts = ensure_spark_parts()
        say(f"Spark parts ready in {parts['seconds']} s: kube-proxy, CoreDNS, spark-operator, Spark home")
    return 0


# ------------------------------------------------------------------------------------------------- up


def cmd_up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    _require_root()
    sdir = state_dir_from(args.state_dir)
    with state_lock(sdir):
        old: dict = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            old = load_state(sdir)
        registries = discover_registries(args.registry or [])
        if old and _reuse(sdir, old, registries, args, t0):
            return 0
        state = _start_new(sdir, args, registries, t0)
    say(f"cluster is up in {elapsed(t0)} (start-up {state['timings']['start_s']} s); state {sdir / STATE_FILE}")
    print_env(state)
    return 0


def _reuse(sdir: Path, old: dict, registries: list[dict], args: argparse.Namespace, t0: float) -> bool:
    """Reuse a healthy cluster of the same namespace that runs at least what is asked (one with the cluster services
    serves a plain `up` too), refreshing its registries; else tear the old one down."""
    healthy, why = cluster_healthy(old)
    same = old.get("namespace") == args.namespace and (bool(old.get("spark")) or not args.spark)
    if healthy and same:
        old["registries"] = registries
        write_registry_hosts(sdir, registries)
        save_state(sdir, old)
        say(f"cluster already running (reused; {elapsed(t0)}); state {sdir / STATE_FILE}")
        print_env(old)
        return True
    say(f"previous cluster is not usable ({why if not healthy else 'other namespace, or no --spark'}): "
        "cleaning it up")
    teardown(sdir, old)
    return False


def _start_new(sdir: Path, args: argparse.Namespace, registries: list[dict], t0: float) -> dict:
    ensure_packages()
    binaries = ensure_binaries()
    pause = ensure_pause_image()
    parts: dict = {}
    if args.spark:  # only then: the parts cost minutes and ~2 GB once
        ensure_service_packages()
        parts = ensure_spark_parts()
    t_start = time.monotonic()
    state: dict = {
        "version": STATE_VERSION,
        "state_dir": str(sdir),
        "kubernetes": K8S_VERSION,
        "namespace": args.namespace,
        "binaries": binaries,
        "pause_archive": str(pause),
        "registries": registries,
        "spark": bool(args.spark),
        "parts": parts,
        "procs": {},
        "created": now_iso(),
    }
    save_state(sdir, state)
    _start_or_clean_up(sdir, state, args)
    state["timings"] = {"build_s": binaries["seconds"], "parts_s": parts.get("seconds", 0.0),
                        "start_s": round(time.monotonic() - t_start, 1),
                        "up_s": round(time.monotonic() - t0, 1)}
    save_state(sdir, state)
    return state


def _start_or_clean_up(sdir: Path, state: dict, args: argparse.Namespace) -> None:
    try:
        start_cluster(sdir, state, args.namespace, args.timeout)
        api = Api(state["ports"]["apiserver"], sdir / "pki")
        ensure_namespace(api, args.namespace, args.timeout, state["procs"])
        if args.spark:
            start_operator(sdir, state, api, args.namespace, args.timeout)
    except BaseException:
        save_state(sdir, state)
        if not args.keep_on_failure:
            say("start-up failed: tearing down what was started (use --keep-on-failure to inspect)")
            teardown(sdir, state)
            remove_state_files(sdir, (STATE_FILE, ENV_FILE))
        raise


def print_env(state: dict) -> None:
    say(f'use it with:  eval "$(python3 {shlex.quote(sys.argv[0])} env)"')
    for k, v in state["env"].items():
        say(f"  {k}={v}")


# ---------------------------------------------------------------------------------- status, env, down


def cmd_status(args: argparse.Namespace) -> int:
    sdir = state_dir_from(args.state_dir)
    try:
        state = load_state(sdir)
    except FileNotFoundError:
        print(f"cluster is not up (no {sdir / STATE_FILE})")
        return 1
    extra = (*SERVICE_COMPONENTS, "spark_operator") if state.get("spark") else ()
    for name in (*COMPONENTS, *extra):
        rec = (state.get("procs") or {}).get(name)
        alive = proc_matches(rec)
        pid, log = (rec or {}).get("pid"), (rec or {}).get("log")
        print(f"{name:20} {'running' if alive else 'DOWN':8} pid {pid}  log {log}")
    ok, why = cluster_healthy(state)
    print(f"{'cluster':20} {why}  server {state.get('server')}  namespace {state.get('namespace')}"
          f"{'  services+spark' if state.get('spark') else ''}")
    return 0 if ok else 1


def cmd_env(args: argparse.Namespace) -> int:
    sdir = state_dir_from(args.state_dir)
    try:
        sys.stdout.write((sdir / ENV_FILE).read_text())
    except FileNotFoundError:
        print(f"cluster is not up (no {sdir / ENV_FILE}): start it with: python scripts/k8s.py up", file=sys.stderr)
        return 1
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    _require_root()
    sdir = state_dir_from(args.state_dir)
    with state_lock(sdir):
        try:
            state = load_state(sdir)
        except FileNotFoundError:
            say(f"nothing to stop (no {sdir / STATE_FILE})")
            return 0
        teardown(sdir, state)
        remove_state_files(sdir, (STATE_FILE, ENV_FILE))
    say(f"cluster is down (binaries kept in {version_dir()}; logs in {sdir / 'logs'})")
    return 0


# ----------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="k8s.py", description=__doc__.split("\n\n")[0])
    state_help = f"state directory (default $IMAGEGATE_K8S_DIR or {DEFAULT_STATE_DIR})"
    parser.add_argument("--state-dir", help=state_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", default=argparse.SUPPRESS, help=state_help)
    spark = argparse.ArgumentParser(add_help=False)
    spark.add_argument("--spark", action=argparse.BooleanOptionalAction, default=_env_flag("IMAGEGATE_K8S_SPARK"),
                       help="also run kube-proxy, CoreDNS and the spark-operator controller, building their parts "
                            "once (default: on when $IMAGEGATE_K8S_SPARK=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", parents=[common, spark], help="build once, then start (or reuse) the cluster")
    up.add_argument("--namespace", default=os.environ.get("IMAGEGATE_K8S_NAMESPACE") or DEFAULT_NAMESPACE,
                    help=f"test namespace enforcing the restricted Pod Security Standard (default {DEFAULT_NAMESPACE})")
    up.add_argument("--registry", action="append", metavar="HOST:PORT",
                    help="extra plain-http registry to pull from (the local stack's registries are added anyway)")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for each component")
    up.add_argument("--keep-on-failure", action="store_true", help="leave a failed start-up running to inspect it")
    sub.add_parser("build", parents=[common, spark],
                   help="only build and cache the binaries and the sandbox image (with --spark: the Spark parts)")
    sub.add_parser("status", parents=[common], help="show what runs; exit 1 when something is down")
    sub.add_parser("env", parents=[common], help="print `export KEY=VALUE` lines for the running cluster")
    sub.add_parser("down", parents=[common], help="stop what `up` started and remove its state (keeps the cache)")
    return parser


def _env_flag(name: str) -> bool:
    """An on/off environment variable: 1, true or yes (any case) is on; anything else, or unset, is off."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


COMMANDS = {"up": cmd_up, "build": cmd_build, "status": cmd_status, "env": cmd_env, "down": cmd_down}


def main(argv: list[str] | None = None) -> int:
    # Every progress line of the shared helpers (stop_process, apt_install, ...) carries this script's prefix.
    set_voice("k8s", detach_closed_stdout=False)
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except StackError as exc:
        print(f"k8s.py {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"k8s.py {args.command}: interrupted", file=sys.stderr)
        return 130
