"""What the cluster needs from this machine and changes on it: Debian packages, capabilities, cgroups, kernel
settings, and ``ctr`` on the cluster's own containerd."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

from .host import K8sError, apt_install, is_debian, is_root, run, which
from .k8s_config import CGROUP_ROOT, CNI_BIN_DIR, containerd_socket

# The kubelet's, then those kube-proxy could change (it is configured not to; recorded and restored anyway).
KERNEL_TUNABLES = ("vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
                   "net.ipv4.conf.all.route_localnet", "net.netfilter.nf_conntrack_max",
                   "net.netfilter.nf_conntrack_tcp_timeout_established",
                   "net.netfilter.nf_conntrack_tcp_timeout_close_wait")
APT_PACKAGES = {
    "etcd": "etcd-server",
    "containerd": "containerd",
    "runc": "runc",
    "ctr": "containerd",
    "openssl": "openssl",
    "gcc": "gcc",
    "ip": "iproute2",
    "mount": "mount",
}


def missing_packages() -> list[str]:
    missing = sorted({pkg for tool, pkg in APT_PACKAGES.items() if not which(tool)})
    if not Path(CNI_BIN_DIR, "bridge").exists() or not Path(CNI_BIN_DIR, "host-local").exists():
        missing.append("containernetworking-plugins")
    if not Path("/usr/lib/x86_64-linux-gnu/libc.a").exists() and not list(Path("/usr/lib").glob("*/libc.a")):
        missing.append("libc6-dev")
    return missing


def ensure_packages() -> None:
    """Install the missing Debian packages in one apt-get run (root on Debian), or say what to install."""
    missing = missing_packages()
    if not missing:
        return
    if not (is_root() and is_debian()):
        raise K8sError(
            "missing tools for the cluster; install them as root and re-run:\n"
            f"    sudo apt-get update && sudo apt-get install -y {' '.join(missing)}"
        )
    apt_install(missing, f"missing packages for the Kubernetes cluster ({', '.join(missing)})")


def lacks_cap(status: str, bit: int) -> bool:
    """True when the CapEff line of a /proc/PID/status text lacks capability *bit*."""
    cap_eff = next(line for line in status.splitlines() if line.startswith("CapEff:"))
    return not (int(cap_eff.split()[1], 16) >> bit) & 1


def lacks_sys_resource() -> bool:
    """True when this process cannot lower an oom_score_adj (no CAP_SYS_RESOURCE, bit 24)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        return lacks_cap(Path("/proc/self/status").read_text(), 24)
    return True


def runc_binary() -> str:
    return os.environ.get("IMAGEGATE_K8S_RUNC") or which("runc") or "runc"


def prepare_cgroups() -> list[str]:
    """Make /<CGROUP_ROOT> in every cgroup v1 hierarchy (the kubelet insists the cgroup root exists)."""
    made = []
    base = Path("/sys/fs/cgroup")
    for hier in sorted(base.iterdir()):
        if not hier.is_dir() or hier.name == "unified" or not (hier / "cgroup.procs").exists():
            continue
        target = hier / CGROUP_ROOT
        if not target.exists():
            with contextlib.suppress(OSError):
                target.mkdir()
        if target.exists():
            made.append(str(target))
            if hier.name.startswith("cpuset"):
                _inherit_cpuset(hier, target)
    return made


def _inherit_cpuset(hier: Path, target: Path) -> None:
    for f in ("cpuset.cpus", "cpuset.mems"):
        with contextlib.suppress(OSError):
            if not (target / f).read_text().strip():
                (target / f).write_text((hier / f).read_text())


def read_sysctls() -> dict[str, str]:
    out = {}
    for key in KERNEL_TUNABLES:
        with contextlib.suppress(OSError):
            out[key] = sysctl_path(key).read_text().strip()
    return out


def sysctl_path(key: str) -> Path:
    return Path("/proc/sys", *key.split("."))


def ctr(sdir: Path, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``ctr`` on the cluster's containerd, namespace k8s.io."""
    return run(["ctr", "--address", containerd_socket(sdir), "--namespace", "k8s.io", *args],
               check=check, timeout=timeout, what=f"ctr {' '.join(args[:2])}")
