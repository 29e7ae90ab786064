"""The cluster's state directory: ``/tmp/imagegate-k8s`` with ``k8s.json``, ``k8s.env`` and the lock."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .k8s_binaries import K8S_VERSION
from .k8s_config import CONTEXT, DNS_SERVICE_IP, NODE_NAME, POD_CIDR, SERVICE_CIDR
from .state import lock, read_state, resolve_state_dir, write_state

DEFAULT_STATE_DIR = "/tmp/imagegate-k8s"
STATE_FILE = "k8s.json"
ENV_FILE = "k8s.env"
STATE_VERSION = 1
ENV_HEADER = "# imagegate Kubernetes test cluster - written by scripts/k8s.py up\n"


def state_dir_from(arg: str | None) -> Path:
    return resolve_state_dir(arg, "IMAGEGATE_K8S_DIR", DEFAULT_STATE_DIR)


def load_state(state_dir: str | os.PathLike | None = None) -> dict:
    """Return the parsed ``k8s.json`` of a cluster brought up by ``k8s.py up``.

    Raises FileNotFoundError with a hint when the cluster is not up.
    """
    path = state_dir_from(str(state_dir) if state_dir else None) / STATE_FILE
    return read_state(path, "start the cluster with: python scripts/k8s.py up")


def k8s_env(state: dict) -> dict[str, str]:
    """The environment of a cluster (``k8s.env``, and ``env`` in ``k8s.json``)."""
    sdir = Path(state["state_dir"])
    bins = Path((state.get("binaries") or {}).get("bin_dir", ""))
    http_regs = [r["addr"] for r in state.get("registries") or [] if r.get("scheme") == "http"]
    return {
        "KUBECONFIG": str(sdir / "admin.kubeconfig"),
        "IMAGEGATE_K8S_DIR": str(sdir),
        "IMAGEGATE_K8S_SERVER": state.get("server", ""),
        "IMAGEGATE_K8S_CONTEXT": CONTEXT,
        "IMAGEGATE_K8S_NAMESPACE": state.get("namespace", ""),
        "IMAGEGATE_K8S_NODE": NODE_NAME,
        "IMAGEGATE_K8S_VERSION": K8S_VERSION,
        "IMAGEGATE_K8S_KUBECTL": str(bins / "kubectl") if state.get("binaries") else "",
        "IMAGEGATE_K8S_REGISTRY": http_regs[0] if http_regs else "",
        "IMAGEGATE_K8S_CONTAINERD_ADDRESS": str(sdir / "containerd" / "containerd.sock"),
        "IMAGEGATE_K8S_POD_CIDR": POD_CIDR,
        "IMAGEGATE_K8S_SERVICE_CIDR": SERVICE_CIDR,
        # `up --spark`: kube-proxy, CoreDNS and the spark-operator run; drivers use the service account "spark".
        "IMAGEGATE_K8S_SPARK": "1" if state.get("spark") else "",
        "IMAGEGATE_K8S_DNS": DNS_SERVICE_IP if state.get("spark") else "",
        "IMAGEGATE_K8S_SPARK_SERVICE_ACCOUNT": "spark" if state.get("spark") else "",
    }


def save_state(sdir: Path, state: dict) -> None:
    write_state(sdir, state, k8s_env(state), (STATE_FILE, ENV_FILE), ENV_HEADER)


@contextlib.contextmanager
def state_lock(sdir: Path) -> Iterator[None]:
    with lock(sdir, f"waiting for another k8s.py working on {sdir} ..."):
        yield
