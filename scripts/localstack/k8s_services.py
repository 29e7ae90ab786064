"""The cluster services (``k8s.py up --spark``): kube-proxy (iptables) so that Service IPs route, CoreDNS so that
``*.svc.cluster.local`` resolves, and a relay that gives the `kubernetes` Service an endpoint the pods can reach.

What pods can reach, and nothing more: the bridge's own address (BRIDGE_IP: CoreDNS on port 53, the API server
relay on the API server's port), other pods on the bridge, and the service CIDR through BRIDGE_IP. No default
route, no masquerade: nothing leaves the machine. The API server itself stays on 127.0.0.1.

What this changes on the machine, all undone by :func:`stop_services` / :func:`cleanup_services` (``down``):
the bridge gets BRIDGE_IP (the bridge is removed anyway); one iptables rule ``FORWARD -i igk8s0 -o igk8s0
ACCEPT`` (this machine's FORWARD policy is Docker's DROP, and the bridge's frames go through iptables, so pod to
pod traffic, e.g. executors to the Spark driver, needs it); kube-proxy's ``KUBE-*`` chains (``kube-proxy
--cleanup``). kube-proxy is configured to leave every kernel setting alone (conntrack sizes and timeouts,
``route_localnet``); the ones it could touch are recorded and restored like the kubelet's anyway.
"""

from __future__ import annotations

import http.client
import shlex
import subprocess
from pathlib import Path

from .host import K8sError, apt_install, is_debian, is_root, run, say, which, write_file
from .k8s_api import Api, apply_objects, wait
from .k8s_config import (
    BRIDGE,
    BRIDGE_IP,
    COREDNS_RULES,
    DNS_SERVICE_IP,
    FORWARD_COMMENT,
    POD_CIDR,
    apiserver_relay_argv,
    cluster_role,
    coredns_argv,
    corefile,
    kube_dns_service,
    kube_proxy_argv,
    kube_proxy_config,
    service_endpoints,
    service_ip,
)
from .k8s_pki import write_kubeconfig
from .k8s_state import save_state
from .procs import proc_matches, spawn, stop_process

SERVICE_COMPONENTS = ("kube_proxy", "apiserver_relay", "coredns")
SERVICE_PORTS = ("kube_proxy_healthz", "kube_proxy_metrics", "coredns_ready", "coredns_health")
SERVICE_PACKAGES = {"socat": "socat", "conntrack": "conntrack", "iptables": "iptables"}
FORWARD_RULE = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-m", "comment", "--comment", FORWARD_COMMENT, "-j", "ACCEPT"]


def ensure_service_packages() -> None:
    """socat (the API server relay), conntrack (kube-proxy clears stale UDP entries, e.g. DNS) and iptables."""
    missing = sorted({pkg for tool, pkg in SERVICE_PACKAGES.items() if not which(tool)})
    if not missing:
        return
    if not (is_root() and is_debian()):
        raise K8sError(f"the cluster services need {', '.join(missing)}: sudo apt-get install -y {' '.join(missing)}")
    apt_install(missing, f"missing packages for the cluster services ({', '.join(missing)})")


# ---------------------------------------------------------------------------------------------- start


def prepare_bridge() -> None:
    """The bridge with BRIDGE_IP, before CoreDNS and the relay bind there (the CNI plugin reuses it)."""
    if not Path(f"/sys/class/net/{BRIDGE}").exists():
        run(["ip", "link", "add", BRIDGE, "type", "bridge"], what=f"ip link add {BRIDGE}")
    addrs = run(["ip", "-4", "-o", "addr", "show", "dev", BRIDGE], what=f"ip addr show {BRIDGE}").stdout
    if f" {BRIDGE_IP}/" not in addrs:
        run(["ip", "addr", "add", f"{BRIDGE_IP}/{POD_CIDR.split('/')[1]}", "dev", BRIDGE], what="ip addr add")
    run(["ip", "link", "set", BRIDGE, "up"], what=f"ip link set {BRIDGE} up")


def _iptables(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return run([which("iptables") or "iptables", "-w", "10", *args], check=check, timeout=60, what="iptables")


def allow_pod_to_pod(state: dict) -> None:
    if _iptables("-C", *FORWARD_RULE).returncode != 0:
        _iptables("-I", *FORWARD_RULE[:1], "1", *FORWARD_RULE[1:], check=True)
    state["forward_rule"] = True


def http_ok(port: int, path: str) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status == 200
    except (OSError, http.client.HTTPException):
        return False


def _nat_rules_for(*ips: str) -> bool:
    out = _iptables("-t", "nat", "-S", "KUBE-SERVICES").stdout
    return all(f"-d {ip}/32" in out for ip in ips)


def start_services(sdir: Path, state: dict, api: Api, timeout: float) -> None:
    """kube-proxy, the API server relay and CoreDNS, with their Services, endpoints and RBAC; each waited for."""
    parts, ports, procs = state["parts"], state["ports"], state["procs"]
    logs, pki, server = sdir / "logs", sdir / "pki", state["server"]
    prepare_bridge()
    allow_pod_to_pod(state)
    save_state(sdir, state)
    # kube-proxy: system:kube-proxy is bound to system:node-proxier by the API server's default policy.
    write_kubeconfig(sdir / "kube-proxy.kubeconfig", server, pki, "kube-proxy")
    write_file(sdir / "kube-proxy.yaml", kube_proxy_config(sdir, ports["kube_proxy_healthz"],
                                                           ports["kube_proxy_metrics"]))
    procs["kube_proxy"] = _start("kube-proxy", kube_proxy_argv(parts["kube_proxy"], sdir), logs)
    procs["apiserver_relay"] = _start("apiserver-relay", apiserver_relay_argv(parts["socat"], ports["apiserver"]),
                                      logs)
    save_state(sdir, state)
    apply_objects(api, [
        *service_endpoints("kubernetes", "default", BRIDGE_IP,
                           [{"name": "https", "port": ports["apiserver"], "protocol": "TCP"}]),
        kube_dns_service(),
        *service_endpoints("kube-dns", "kube-system", BRIDGE_IP,
                           [{"name": "dns", "port": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]),
        *cluster_role("imagegate:coredns", COREDNS_RULES, "imagegate:coredns"),
    ])
    write_kubeconfig(sdir / "coredns.kubeconfig", server, pki, "coredns")
    write_file(sdir / "Corefile", corefile(sdir / "coredns.kubeconfig", ports["coredns_ready"],
                                           ports["coredns_health"]))
    procs["coredns"] = _start("coredns", coredns_argv(parts["coredns"], sdir), logs)
    save_state(sdir, state)
    watched = {k: procs[k] for k in SERVICE_COMPONENTS}
    wait("kube-proxy /healthz", lambda: http_ok(ports["kube_proxy_healthz"], "/healthz"), timeout, watched)
    wait(f"kube-proxy's rules for {service_ip()} and {DNS_SERVICE_IP}",
         lambda: _nat_rules_for(service_ip(), DNS_SERVICE_IP), timeout, watched)
    wait("CoreDNS /ready", lambda: http_ok(ports["coredns_ready"], "/ready"), timeout, watched)
    say(f"cluster services: kube-proxy (iptables), CoreDNS on {BRIDGE_IP}:53 (kube-dns {DNS_SERVICE_IP}), "
        f"API server relay {BRIDGE_IP}:{ports['apiserver']} (kubernetes {service_ip()}:443)")


def _start(name: str, cmd: list[str], logs: Path) -> dict:
    _, rec = spawn(cmd, logs / f"{name}.log")
    say(f"{name}: started pid {rec['pid']}")
    return rec


def services_healthy(state: dict) -> tuple[bool, str]:
    procs, ports = state.get("procs") or {}, state.get("ports") or {}
    for name in SERVICE_COMPONENTS:
        if not proc_matches(procs.get(name)):
            return False, f"{name} is not running"
    if not http_ok(ports.get("coredns_ready", 0), "/ready"):
        return False, "CoreDNS is not ready"
    if not http_ok(ports.get("kube_proxy_healthz", 0), "/healthz"):
        return False, "kube-proxy is not healthy"
    return True, "running"


# ----------------------------------------------------------------------------------------------- stop


def stop_services(state: dict) -> None:
    procs = state.get("procs") or {}
    for name in ("coredns", "apiserver_relay", "kube_proxy"):
        stop_process(name, procs.get(name), 20)


def kube_rules(iptables_save: str) -> tuple[list[tuple[str, list[str]]], list[tuple[str, str]]]:
    """From ``iptables-save`` output: the rules of built-in chains that jump to a ``KUBE-*`` chain, as (table,
    ``-A CHAIN …`` arguments), and every ``KUBE-*`` chain, as (table, chain)."""
    jumps, chains, table = [], [], ""
    for line in iptables_save.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":KUBE-"):
            chains.append((table, line[1:].split()[0]))
        elif line.startswith("-A ") and not line.split()[1].startswith("KUBE-"):
            args = shlex.split(line)
            if any(a.startswith("KUBE-") for a, prev in zip(args[1:], args) if prev in ("-j", "-g")):
                jumps.append((table, args))
    return jumps, chains


def remove_kube_chains() -> list[str]:
    """What ``kube-proxy --cleanup`` leaves (KUBE-FIREWALL, KUBE-MARK-MASQ, KUBE-PROXY-CANARY and the jumps to
    them), in iptables and ip6tables: only ``KUBE-*`` chains, which nothing but this cluster's kube-proxy makes here.
    Returns the chains still there afterwards."""
    left: list[str] = []
    for tool in ("iptables", "ip6tables"):
        binary, save = which(tool), which(f"{tool}-save")
        if not binary or not save:
            continue
        jumps, chains = kube_rules(run([save], check=False, timeout=60, what=f"{tool}-save").stdout)
        for table, args in jumps:
            run([binary, "-w", "10", "-t", table, "-D", *args[1:]], check=False, timeout=60, what=f"{tool} -D")
        for op in ("-F", "-X"):  # flush all first: KUBE-* chains jump to one another
            for table, chain in chains:
                run([binary, "-w", "10", "-t", table, op, chain], check=False, timeout=60, what=f"{tool} {op}")
        _, still = kube_rules(run([save], check=False, timeout=60, what=f"{tool}-save").stdout)
        left += [f"{tool} {t} {c}" for t, c in still]
    return left


def cleanup_services(state: dict) -> None:
    """kube-proxy's chains and our FORWARD rule; safe to run twice. ``kube-proxy --cleanup`` removes its service
    chains but exits 1 here (it also tries IPVS ipsets, and there is no ``ipset``) and keeps the chains it shares
    with the kubelet; :func:`remove_kube_chains` removes the rest."""
    binary = (state.get("parts") or {}).get("kube_proxy")
    if binary and Path(binary).is_file():
        run([binary, "--cleanup"], check=False, timeout=120, what="kube-proxy --cleanup")
        left = remove_kube_chains()
        say(f"iptables: KUBE-* chains left behind: {', '.join(left)}" if left else
            "kube-proxy --cleanup: no KUBE-* chain left in iptables or ip6tables")
    if state.get("forward_rule"):
        while _iptables("-C", *FORWARD_RULE).returncode == 0:
            if _iptables("-D", *FORWARD_RULE).returncode != 0:
                break
        say(f"removed the iptables rule FORWARD -i {BRIDGE} -o {BRIDGE} ACCEPT")
