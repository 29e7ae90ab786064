"""Starting the cluster: etcd, containerd, the control plane and the kubelet, in order, each waited for; the
test namespace; health. Every started process is recorded in the state right away (so `down` can stop a
half-started cluster)."""

from __future__ import annotations

import contextlib
import http.client
import os
import ssl
import time
from pathlib import Path

from .host import K8sError, elapsed, free_port, say, which, write_file
from .k8s_api import Api, node_is_ready, wait
from .k8s_config import (
    BRIDGE,
    DNS_SERVICE_IP,
    CNI_CONFLIST,
    NODE_NAME,
    apiserver_argv,
    cni_config,
    containerd_argv,
    containerd_config,
    controller_manager_argv,
    etcd_argv,
    hosts_toml,
    kubelet_argv,
    kubelet_config,
    scheduler_argv,
    scheduler_config,
)
from .k8s_host import ctr, lacks_sys_resource, prepare_cgroups, read_sysctls, runc_binary
from .k8s_pause import PAUSE_IMAGE
from .k8s_pki import make_pki, write_kubeconfig
from .k8s_services import SERVICE_PORTS, services_healthy, start_services
from .k8s_spark import operator_healthy
from .k8s_state import save_state
from .procs import proc_matches, spawn
from .state import load_state as load_stack_state

COMPONENTS = ("etcd", "apiserver", "controller_manager", "scheduler", "containerd", "kubelet")
PORTS = ("etcd", "etcd_peer", "apiserver", "kubelet", "kubelet_healthz")
PSS_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}


# ----------------------------------------------------------------------------------------- registries


def registries_from(args_registries: list[str], env: dict[str, str]) -> list[dict]:
    """Registries containerd pulls from: plain http ones (the arguments, the stack's) and the stack's TLS one."""
    regs: dict[str, dict] = {}
    for addr in args_registries:
        regs[addr] = {"addr": addr, "scheme": "http"}
    if env.get("IMAGEGATE_REGISTRY"):
        regs.setdefault(env["IMAGEGATE_REGISTRY"], {"addr": env["IMAGEGATE_REGISTRY"], "scheme": "http"})
    if env.get("IMAGEGATE_AUTH_REGISTRY") and env.get("IMAGEGATE_AUTH_CA"):
        regs.setdefault(env["IMAGEGATE_AUTH_REGISTRY"], {"addr": env["IMAGEGATE_AUTH_REGISTRY"], "scheme": "https",
                                                         "ca": env["IMAGEGATE_AUTH_CA"]})
    return list(regs.values())


def discover_registries(args_registries: list[str]) -> list[dict]:
    """:func:`registries_from` with the stack's env (its ``stack.json``), overridden by ``IMAGEGATE_*`` here."""
    env = dict(os.environ)
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        env = {**load_stack_state()["env"], **{k: v for k, v in os.environ.items() if k.startswith("IMAGEGATE_")}}
    return registries_from(args_registries, env)


def write_registry_hosts(sdir: Path, registries: list[dict]) -> None:
    """containerd `config_path` hosts.toml files, re-read on every pull (so `up` can refresh them live)."""
    certs = sdir / "containerd" / "certs.d"
    certs.mkdir(parents=True, exist_ok=True)
    for reg in registries:
        d = certs / reg["addr"]  # containerd looks up certs.d/HOST:PORT/hosts.toml
        d.mkdir(parents=True, exist_ok=True)
        write_file(d / "hosts.toml", hosts_toml(reg))


# ---------------------------------------------------------------------------------------------- start


def _start(name: str, cmd: list[str], logs: Path) -> dict:
    _, rec = spawn(cmd, logs / f"{name}.log")
    say(f"{name}: started pid {rec['pid']}")
    return rec


def start_cluster(sdir: Path, state: dict, namespace: str, timeout: float) -> None:
    bins = Path(state["binaries"]["bin_dir"])
    pki = sdir / "pki"
    logs = sdir / "logs"
    _prepare(sdir, state, pki, logs, namespace)
    procs: dict[str, dict] = state["procs"]
    ports = state["ports"]
    t0 = time.monotonic()
    procs["etcd"] = _start("etcd", etcd_argv(which("etcd") or "etcd", sdir, ports), logs)
    save_state(sdir, state)
    # containerd (own instance) and the sandbox image, while etcd and the API server come up.
    _start_containerd(sdir, state, logs)
    wait("etcd /health", lambda: _etcd_ok(ports["etcd"]), 60, {"etcd": procs["etcd"]})
    procs["apiserver"] = _start("apiserver", apiserver_argv(bins, pki, ports), logs)
    save_state(sdir, state)
    api = Api(ports["apiserver"], pki)
    wait("the API server /readyz", lambda: api.ok("/readyz") is not None, timeout, {"apiserver": procs["apiserver"]})
    say(f"apiserver: ready at {state['server']} ({elapsed(t0)} after etcd start)")
    _start_controllers(sdir, state, bins, pki, logs)
    if state.get("spark"):  # before the kubelet: its pods get the cluster DNS, the bridge its address
        start_services(sdir, state, api, timeout)
    _import_sandbox_image(sdir, state)
    _start_kubelet(sdir, state, bins, logs)
    wait(f"node {NODE_NAME} Ready", lambda: node_is_ready(api.ok(f"/api/v1/nodes/{NODE_NAME}")), timeout, procs)
    say(f"kubelet: node {NODE_NAME} is Ready ({elapsed(t0)} after etcd start)")


def _prepare(sdir: Path, state: dict, pki: Path, logs: Path, namespace: str) -> None:
    """Directories, ports, certificates, kubeconfigs; and what exists outside the state dir before the kubelet
    writes there, so `down` removes only its own."""
    logs.mkdir(parents=True, exist_ok=True)
    for d in ("etcd", "kubelet", "cni/net.d", "cni/ipam", "containerd"):
        (sdir / d).mkdir(parents=True, exist_ok=True)
    names = (*PORTS, *SERVICE_PORTS, "spark_operator_health") if state.get("spark") else PORTS
    ports = {k: free_port() for k in names}
    state["ports"] = ports
    make_pki(pki)
    server = f"https://127.0.0.1:{ports['apiserver']}"
    state["server"] = server
    write_kubeconfig(sdir / "admin.kubeconfig", server, pki, "admin", namespace)
    for user in ("controller-manager", "scheduler", "kubelet"):
        write_kubeconfig(sdir / f"{user}.kubeconfig", server, pki, user)
    state["preexisting_pod_logs"] = sorted(os.listdir("/var/log/pods")) if Path("/var/log/pods").is_dir() else []
    state["sysctl_before"] = read_sysctls()
    state["bridge_existed"] = Path(f"/sys/class/net/{BRIDGE}").exists()
    save_state(sdir, state)


def _start_containerd(sdir: Path, state: dict, logs: Path) -> None:
    config = containerd_config(sdir, restrict_oom_score_adj=lacks_sys_resource(), runc=runc_binary())
    write_file(sdir / "containerd" / "config.toml", config)
    write_file(sdir / "cni" / "net.d" / CNI_CONFLIST, cni_config(sdir, services=bool(state.get("spark"))) + "\n")
    write_registry_hosts(sdir, state["registries"])
    cmd = containerd_argv(which("containerd") or "containerd", sdir)
    state["procs"]["containerd"] = _start("containerd", cmd, logs)
    save_state(sdir, state)


def _etcd_ok(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
        conn.request("GET", "/health")
        body = conn.getresponse().read()
        conn.close()
        return b'"true"' in body
    except (OSError, http.client.HTTPException):
        return False


def _start_controllers(sdir: Path, state: dict, bins: Path, pki: Path, logs: Path) -> None:
    procs = state["procs"]
    procs["controller_manager"] = _start("controller-manager", controller_manager_argv(bins, sdir, pki), logs)
    sched_cfg = sdir / "scheduler.yaml"
    write_file(sched_cfg, scheduler_config(sdir))
    procs["scheduler"] = _start("scheduler", scheduler_argv(bins, sdir, sched_cfg), logs)
    save_state(sdir, state)


def _import_sandbox_image(sdir: Path, state: dict) -> None:
    sock = sdir / "containerd" / "containerd.sock"
    wait("containerd's socket", lambda: sock.exists() and ctr(sdir, "version", check=False).returncode == 0,
         60, {"containerd": state["procs"]["containerd"]})
    pause = Path(state["pause_archive"])
    ctr(sdir, "images", "import", "--platform", "linux/amd64", str(pause))
    say(f"containerd: imported the sandbox image {PAUSE_IMAGE}")


def _start_kubelet(sdir: Path, state: dict, bins: Path, logs: Path) -> None:
    state["cgroups"] = prepare_cgroups()
    ports = state["ports"]
    dns = DNS_SERVICE_IP if state.get("spark") else None
    write_file(sdir / "kubelet" / "config.yaml", kubelet_config(sdir, ports["kubelet"], ports["kubelet_healthz"], dns))
    state["procs"]["kubelet"] = _start("kubelet", kubelet_argv(bins, sdir), logs)
    save_state(sdir, state)


# ----------------------------------------------------------------------------------- namespace, health


def ensure_namespace(api: Api, name: str, timeout: float, procs: dict) -> None:
    """The test namespace, enforcing the restricted Pod Security Standard, with its default service account
    and ``kube-root-ca.crt`` (and those of ``default``) in place."""
    status, body = api.request("POST", "/api/v1/namespaces",
                               {"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": name, "labels": PSS_LABELS}})
    if status == 409:
        status, body = api.request("PATCH", f"/api/v1/namespaces/{name}", {"metadata": {"labels": PSS_LABELS}},
                                   content_type="application/merge-patch+json")
    if status not in (200, 201):
        raise K8sError(f"cannot create namespace {name}: HTTP {status}: {body}")
    for ns in ("default", name):
        wait(f"service account default in {ns}",
             lambda ns=ns: api.ok(f"/api/v1/namespaces/{ns}/serviceaccounts/default"), timeout, procs)
        wait(f"configmap kube-root-ca.crt in {ns}",
             lambda ns=ns: api.ok(f"/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt"), timeout, procs)


def cluster_healthy(state: dict) -> tuple[bool, str]:
    procs = state.get("procs") or {}
    for name in COMPONENTS:
        if not proc_matches(procs.get(name)):
            return False, f"{name} is not running"
    try:
        api = Api(state["ports"]["apiserver"], Path(state["state_dir"]) / "pki")
    except (OSError, KeyError, ssl.SSLError) as exc:
        return False, f"cannot read the cluster credentials ({exc})"
    if api.ok("/readyz") is None:
        return False, "the API server is not ready"
    if not node_is_ready(api.ok(f"/api/v1/nodes/{NODE_NAME}") or {}):
        return False, f"node {NODE_NAME} is not Ready"
    if state.get("spark"):
        for check in (services_healthy, operator_healthy):
            ok, why = check(state)
            if not ok:
                return False, why
    return True, "running"
