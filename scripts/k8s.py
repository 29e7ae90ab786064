#!/usr/bin/env python3
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

    python3 scripts/k8s.py up [--namespace NAME] [--registry HOST:PORT ...]
    python3 scripts/k8s.py status
    python3 scripts/k8s.py env            # `export KEY=VALUE` lines; eval "$(python3 scripts/k8s.py env)"
    python3 scripts/k8s.py down
    python3 scripts/k8s.py build          # only build/cache the binaries and the pause image

State lives in ``/tmp/imagegate-k8s`` (``--state-dir`` or ``$IMAGEGATE_K8S_DIR``): ``k8s.json`` (machine
readable), ``k8s.env``, ``admin.kubeconfig`` (mode 0600), certificates, configs and ``logs/``. ``down`` stops
only what ``up`` started (each PID checked against /proc/PID/cmdline and its start time), kills the containerd
shims of its own containerd, unmounts everything under the state dir, removes the pod network namespaces,
the bridge and the cgroups it made, and restores the kernel settings the kubelet changed.

Kubernetes version: v1.28.15 - see docs/kubernetes-cluster.md for why (containerd 1.6.20, cgroup v1).
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
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stack as _stack  # noqa: E402  (the sibling stdlib-only stack script: process and apt helpers)
from stack import (  # noqa: E402
    StackError,
    free_port,
    is_debian,
    is_root,
    proc_matches,
    spawn,
    tail,
    which,
    write_file,
)

K8S_VERSION = "v1.28.15"
K8S_COMMIT = "841856557ef0f6a399096c42635d114d6f2cf7f4"  # the v1.28.15 tag, for the version ldflags
K8S_BUILD_DATE = "2024-10-22T00:00:00Z"
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl")
PAUSE_VERSION = "3.9"  # the sandbox image version Kubernetes 1.28 expects
PAUSE_IMAGE = f"imagegate.local/pause:{PAUSE_VERSION}"
DEFAULT_STATE_DIR = "/tmp/imagegate-k8s"
STATE_FILE = "k8s.json"
ENV_FILE = "k8s.env"
STATE_VERSION = 1
DEFAULT_NAMESPACE = "imagegate"
NODE_NAME = "127.0.0.1"  # kubelet --hostname-override: an IP name keeps the node address on loopback
POD_CIDR = "10.213.0.0/24"  # host-local pool on the node's own bridge; no route leaves the bridge
SERVICE_CIDR = "10.214.0.0/24"  # virtual only: no kube-proxy, nothing routes it
BRIDGE = "igk8s0"
CGROUP_ROOT = "imagegate-k8s"  # kubelet --cgroup-root; pods live under /imagegate-k8s/kubepods
CNI_BIN_DIR = "/usr/lib/cni"
KERNEL_TUNABLES = ("vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops")
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
COMPONENTS = ("etcd", "apiserver", "controller_manager", "scheduler", "containerd", "kubelet")


class K8sError(StackError):
    """A failure with a message meant for the user (printed without a traceback)."""


def say(msg: str) -> None:
    try:
        print(f"[k8s] {msg}", flush=True)
    except (BrokenPipeError, ValueError):
        pass


_stack.say = say  # messages of the shared helpers (stop_process, apt_install) carry this script's prefix


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return _stack.run(cmd, **kw)


def _elapsed(t0: float) -> str:
    return f"{time.monotonic() - t0:.1f} s"


# ------------------------------------------------------------------------------------------- packages


def ensure_packages() -> None:
    """Install the missing Debian packages in one apt-get run (root on Debian), or say what to install."""
    missing = sorted({pkg for tool, pkg in APT_PACKAGES.items() if not which(tool)})
    if not Path(CNI_BIN_DIR, "bridge").exists() or not Path(CNI_BIN_DIR, "host-local").exists():
        missing.append("containernetworking-plugins")
    if not Path("/usr/lib/x86_64-linux-gnu/libc.a").exists() and not list(Path("/usr/lib").glob("*/libc.a")):
        missing.append("libc6-dev")
    if not missing:
        return
    if not (is_root() and is_debian()):
        raise K8sError(
            "missing tools for the cluster; install them as root and re-run:\n"
            f"    sudo apt-get update && sudo apt-get install -y {' '.join(missing)}"
        )
    _stack.apt_install(missing, f"missing packages for the Kubernetes cluster ({', '.join(missing)})")


# ---------------------------------------------------------------------------------------------- build


def cache_root() -> Path:
    base = os.environ.get("IMAGEGATE_CACHE_DIR") or os.path.join(Path.home(), ".cache", "imagegate")
    return Path(base) / "k8s"


def version_dir() -> Path:
    return cache_root() / K8S_VERSION


def _go_env() -> dict[str, str]:
    root = cache_root()
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(root / "gomod"),
        GOCACHE=str(root / "gocache"),
        GOFLAGS="-mod=mod",
        GOTOOLCHAIN="local",
        CGO_ENABLED="0",
        GOWORK="off",
    )
    env.setdefault("GOPROXY", "https://proxy.golang.org,direct")
    return env


def _ldflags() -> str:
    minor = K8S_VERSION.split(".")[1]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        for key, value in (
            ("gitVersion", K8S_VERSION),
            ("gitMajor", "1"),
            ("gitMinor", minor),
            ("gitCommit", K8S_COMMIT),
            ("gitTreeState", "clean"),
            ("buildDate", K8S_BUILD_DATE),
        ):
            flags.append(f"-X {pkg}.{key}={value}")
    return " ".join(flags)


def _go() -> str:
    go = which("go") or ("/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None)
    if not go:
        raise K8sError(
            "the Go toolchain (go 1.21 or newer) is needed once to build Kubernetes "
            f"{K8S_VERSION}; install it (e.g. to /usr/local/go) and re-run"
        )
    return go


def _run_logged(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, what: str) -> None:
    """Run a long command with output appended to *log*, printing a heartbeat every minute."""
    with open(log, "ab") as out:
        out.write(f"\n$ {shlex.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        t0 = time.monotonic()
        while True:
            try:
                rc = proc.wait(timeout=60)
                break
            except subprocess.TimeoutExpired:
                say(f"{what}: still running ({_elapsed(t0)}; log {log})")
    if rc != 0:
        raise K8sError(f"{what} failed (exit {rc}); last lines of {log}:\n{tail(log, 30)}")


def _write_wrapper_module(src: Path, env: dict[str, str], go: str) -> None:
    """go.mod requiring k8s.io/kubernetes and replacing each staging module by its published v0.Y.Z."""
    proc = run([go, "mod", "download", "-json", f"k8s.io/kubernetes@{K8S_VERSION}"], env=env, timeout=1800,
               what=f"go mod download k8s.io/kubernetes@{K8S_VERSION}")
    info = json.loads(proc.stdout)
    staging = re.findall(r"^\s*(k8s\.io/[\w.\-]+)\s+=>\s+\./staging/", Path(info["GoMod"]).read_text(), re.M)
    if not staging:
        raise K8sError(f"found no staging replacements in {info['GoMod']}: is {K8S_VERSION} a real release?")
    staged = "v0." + K8S_VERSION.split(".", 1)[1]
    replaces = "".join(f"\t{mod} => {mod} {staged}\n" for mod in staging)
    gomod = (
        "// Generated by imagegate scripts/k8s.py: builds Kubernetes from its published Go modules.\n"
        "module imagegate.local/k8sbuild\n\ngo 1.20\n\n"
        f"require k8s.io/kubernetes {K8S_VERSION}\n\nreplace (\n{replaces})\n"
    )
    imports = "".join(f'\t_ "k8s.io/kubernetes/cmd/{b}"\n' for b in BINARIES)
    tools = f"//go:build tools\n\npackage k8sbuild\n\nimport (\n{imports})\n"
    src.mkdir(parents=True, exist_ok=True)
    if not (src / "go.mod").exists() or "k8s.io/kubernetes " + K8S_VERSION not in (src / "go.mod").read_text():
        write_file(src / "go.mod", gomod)
    write_file(src / "tools.go", tools)


def _binaries_ok(bin_dir: Path) -> bool:
    stamp = bin_dir / "build.json"
    if not stamp.is_file() or not all(os.access(bin_dir / b, os.X_OK) for b in BINARIES):
        return False
    with contextlib.suppress(ValueError, OSError):
        return json.loads(stamp.read_text()).get("version") == K8S_VERSION
    return False


def ensure_binaries() -> dict:
    """Build the Kubernetes binaries once; return {"bin_dir", "built", "seconds"}."""
    vdir = version_dir()
    bin_dir = vdir / "bin"
    if _binaries_ok(bin_dir):
        return {"bin_dir": str(bin_dir), "built": False, "seconds": 0.0}
    go = _go()
    env = _go_env()
    vdir.mkdir(parents=True, exist_ok=True)
    log = vdir / "build.log"
    t0 = time.monotonic()
    say(f"building Kubernetes {K8S_VERSION} from the Go module proxy (once; ~30-60 min on 2 cores, log {log})")
    src = vdir / "src"
    _write_wrapper_module(src, env, go)
    _run_logged([go, "mod", "tidy"], src, env, log, "go mod tidy")
    tmp = vdir / "bin.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    pkgs = [f"k8s.io/kubernetes/cmd/{b}" for b in BINARIES]
    cmd = [go, "build", "-trimpath", "-ldflags", _ldflags(), "-o", str(tmp) + "/", *pkgs]
    _run_logged(cmd, src, env, log, f"go build ({', '.join(BINARIES)})")
    goversion = run([go, "version"], env=env, what="go version").stdout.strip()
    write_file(tmp / "build.json", json.dumps({"version": K8S_VERSION, "go": goversion, "ldflags": _ldflags(),
                                                "seconds": round(time.monotonic() - t0, 1)}, indent=2) + "\n")
    shutil.rmtree(bin_dir, ignore_errors=True)
    os.replace(tmp, bin_dir)
    say(f"built {', '.join(BINARIES)} in {_elapsed(t0)} -> {bin_dir}")
    return {"bin_dir": str(bin_dir), "built": True, "seconds": round(time.monotonic() - t0, 1)}


# --------------------------------------------------------------------------------- pause (sandbox) image


def _tar_member(tf: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uid, info.gid = len(data), mode, 946684800, 0, 0
    tf.addfile(info, io.BytesIO(data))


def _blob(tf: tarfile.TarFile, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _tar_member(tf, "blobs/sha256/" + digest.split(":", 1)[1], data)
    return digest


def ensure_pause_image() -> Path:
    """Compile pause.c statically and wrap it in a one-layer OCI image archive (cached, reproducible)."""
    out_dir = version_dir() / "pause"
    archive = out_dir / f"pause-{PAUSE_VERSION}-oci.tar"
    if archive.is_file():
        return archive
    env = _go_env()
    src = Path(env["GOMODCACHE"]) / f"k8s.io/kubernetes@{K8S_VERSION}" / "build/pause/linux/pause.c"
    if not src.is_file():
        run([_go(), "mod", "download", f"k8s.io/kubernetes@{K8S_VERSION}"], env=env, timeout=1800,
            what="go mod download k8s.io/kubernetes")
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / "pause"
    run(["gcc", "-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{PAUSE_VERSION}-imagegate", "-o", str(binary),
         str(src)], what="gcc -static pause.c", timeout=300)
    run(["strip", str(binary)], check=False, what="strip pause")
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.GNU_FORMAT) as ltf:
        _tar_member(ltf, "pause", binary.read_bytes(), 0o755)
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535", "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": f"imagegate scripts/k8s.py: gcc -static kubernetes {K8S_VERSION} "
                                   "build/pause/linux/pause.c"}],
    }
    tmp = archive.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tf:
        cfg = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        cfg_digest = _blob(tf, cfg)
        layer_digest = _blob(tf, layer_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest,
                       "size": len(cfg)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest,
                        "size": len(layer_bytes)}],
        }
        mbytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        m_digest = _blob(tf, mbytes)
        index = {
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": m_digest,
                "size": len(mbytes),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": PAUSE_IMAGE,
                                "org.opencontainers.image.ref.name": PAUSE_VERSION},
            }],
        }
        _tar_member(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _tar_member(tf, "index.json", json.dumps(index, sort_keys=True).encode())
    os.replace(tmp, archive)
    say(f"pause image: built {archive} ({binary.stat().st_size} byte static binary)")
    return archive


# ------------------------------------------------------------------------------------------ certificates


def _openssl(*args: str, what: str) -> None:
    run(["openssl", *args], what=what, timeout=60)


def _make_pki(pki: Path) -> None:
    """CA, apiserver/kubelet serving certs and client certs (EC P-256), plus the service-account key."""
    pki.mkdir(parents=True, exist_ok=True)
    os.chmod(pki, 0o700)
    if (pki / "done").exists():
        return

    def key(name: str) -> Path:
        path = pki / f"{name}.key"
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path),
                 what=f"openssl genpkey {name}")
        os.chmod(path, 0o600)
        return path

    ca_key = key("ca")
    _openssl("req", "-x509", "-new", "-key", str(ca_key), "-sha256", "-days", "3650", "-subj",
             "/CN=imagegate-k8s-ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(pki / "ca.crt"), what="openssl CA")

    def cert(name: str, subj: str, usage: str, sans: str | None = None) -> None:
        k = key(name)
        csr = pki / f"{name}.csr"
        ext = pki / f"{name}.ext"
        lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                 f"extendedKeyUsage={usage}"]
        if sans:
            lines.append(f"subjectAltName={sans}")
        ext.write_text("\n".join(lines) + "\n")
        _openssl("req", "-new", "-key", str(k), "-subj", subj, "-out", str(csr), what=f"openssl req {name}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"), "-CAkey", str(ca_key),
                 "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", str(ext), "-out",
                 str(pki / f"{name}.crt"), what=f"openssl x509 {name}")
        csr.unlink()
        ext.unlink()

    svc_ip = SERVICE_CIDR.split("/")[0].rsplit(".", 1)[0] + ".1"
    cert("apiserver", "/CN=kube-apiserver", "serverAuth",
         "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
         f"DNS:kubernetes.default.svc.cluster.local,IP:{svc_ip}")
    cert("kubelet-serving", f"/O=system:nodes/CN=system:node:{NODE_NAME}", "serverAuth", "IP:127.0.0.1")
    cert("admin", "/O=system:masters/CN=imagegate-admin", "clientAuth")
    cert("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", "clientAuth")
    cert("controller-manager", "/CN=system:kube-controller-manager", "clientAuth")
    cert("scheduler", "/CN=system:kube-scheduler", "clientAuth")
    cert("kubelet", f"/O=system:nodes/CN=system:node:{NODE_NAME}", "clientAuth")
    sa = key("sa")
    _openssl("pkey", "-in", str(sa), "-pubout", "-out", str(pki / "sa.pub"), what="openssl sa.pub")
    (pki / "done").write_text("ok\n")


def _b64file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _kubeconfig(path: Path, server: str, pki: Path, user: str, namespace: str = "default") -> None:
    text = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "imagegate", "cluster": {"server": server,
                                                           "certificate-authority-data": _b64file(pki / "ca.crt")}}],
            "users": [{"name": user, "user": {"client-certificate-data": _b64file(pki / f"{user}.crt"),
                                              "client-key-data": _b64file(pki / f"{user}.key")}}],
            "contexts": [{"name": "imagegate", "context": {"cluster": "imagegate", "user": user,
                                                            "namespace": namespace}}],
            "current-context": "imagegate",
        },
        indent=2,
    )
    write_file(path, text + "\n", 0o600)


# ------------------------------------------------------------------------------------------ API client


class Api:
    """A tiny HTTPS client for the API server (admin client certificate), enough for `up`/`down`."""

    def __init__(self, port: int, pki: Path):
        self.port = port
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0,
                content_type: str = "application/json") -> tuple[int, Any]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": content_type, "Accept": "application/json"} if data else {}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw.decode("utf-8", "replace")

    def ok(self, path: str) -> Any | None:
        try:
            status, body = self.request("GET", path, timeout=5)
        except (OSError, http.client.HTTPException):
            return None
        return body if status == 200 else None


def _wait(what: str, check: Any, timeout: float, procs: dict[str, dict] | None = None, interval: float = 0.5) -> Any:
    """Poll *check* until it returns a truthy value; fail early when a started process died."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        for name, rec in (procs or {}).items():
            if rec and not proc_matches(rec):
                raise K8sError(f"{name} exited while waiting for {what}; last lines of {rec['log']}:\n"
                               f"{tail(rec['log'], 30)}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"  {n}: {r['log']}" for n, r in (procs or {}).items() if r)
            raise K8sError(f"timed out after {timeout:.0f} s waiting for {what}; logs:\n{logs}")
        time.sleep(interval)


# -------------------------------------------------------------------------------------------- components


def _registries(args_registries: list[str]) -> list[dict]:
    """Registries containerd pulls from: plain http ones (the stack's) and the stack's TLS one (its CA)."""
    regs: dict[str, dict] = {}
    for addr in args_registries:
        regs[addr] = {"addr": addr, "scheme": "http"}
    env = dict(os.environ)
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        env = {**_stack.load_state()["env"], **{k: v for k, v in os.environ.items() if k.startswith("IMAGEGATE_")}}
    if env.get("IMAGEGATE_REGISTRY"):
        regs.setdefault(env["IMAGEGATE_REGISTRY"], {"addr": env["IMAGEGATE_REGISTRY"], "scheme": "http"})
    if env.get("IMAGEGATE_AUTH_REGISTRY") and env.get("IMAGEGATE_AUTH_CA"):
        regs.setdefault(env["IMAGEGATE_AUTH_REGISTRY"], {"addr": env["IMAGEGATE_AUTH_REGISTRY"], "scheme": "https",
                                                         "ca": env["IMAGEGATE_AUTH_CA"]})
    return list(regs.values())


def write_registry_hosts(sdir: Path, registries: list[dict]) -> None:
    """containerd `config_path` hosts.toml files, re-read on every pull (so `up` can refresh them live)."""
    certs = sdir / "containerd" / "certs.d"
    certs.mkdir(parents=True, exist_ok=True)
    for reg in registries:
        url = f"{reg['scheme']}://{reg['addr']}"
        lines = [f'server = "{url}"', "", f'[host."{url}"]', '  capabilities = ["pull", "resolve"]']
        if reg.get("ca"):
            lines.append(f'  ca = "{reg["ca"]}"')
        d = certs / reg["addr"]  # containerd looks up certs.d/HOST:PORT/hosts.toml
        d.mkdir(parents=True, exist_ok=True)
        write_file(d / "hosts.toml", "\n".join(lines) + "\n")


def _lacks_sys_resource() -> bool:
    """True when this process cannot lower an oom_score_adj (no CAP_SYS_RESOURCE, bit 24)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text()
        cap_eff = next(line for line in status.splitlines() if line.startswith("CapEff:"))
        return not (int(cap_eff.split()[1], 16) >> 24) & 1
    return True


def _containerd_config(sdir: Path) -> str:
    c = sdir / "containerd"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""# written by imagegate scripts/k8s.py: a containerd of its own, beside Docker's
version = 2
root = "{c}/root"
state = "{c}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{c}/containerd.sock"
[ttrpc]
  address = "{c}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{c}/opt"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  netns_mounts_under_state_dir = true
  # Root here may lack CAP_SYS_RESOURCE (sandboxed VMs), so the kubelet's negative oom_score_adj for pod
  # sandbox (-998) makes runc fail with "can't get final child's PID from pipe"; clamp it to ours instead.
  restrict_oom_score_adj = {'true' if _lacks_sys_resource() else 'false'}
  max_container_log_line_size = 16384
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{os.environ.get('IMAGEGATE_K8S_RUNC') or which('runc') or 'runc'}"
        Root = "{c}/runc"
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{sdir}/cni/net.d"
    max_conf_num = 1
  [{cri}.registry]
    config_path = "{c}/certs.d"
"""


def _cni_config(sdir: Path) -> str:
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "imagegate-k8s",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    # No gateway and no masquerade: pods get an address on a bridge local to this machine
                    # and no route anywhere else. The cluster's pods need no network: images are pulled by
                    # containerd on the host, and logs/exec go through the kubelet.
                    "isGateway": False,
                    "isDefaultGateway": False,
                    "ipMasq": False,
                    "hairpinMode": False,
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                             "dataDir": f"{sdir}/cni/ipam"},
                }
            ],
        },
        indent=2,
    )


def _kubelet_config(sdir: Path, port: int, healthz: int) -> str:
    pki = sdir / "pki"
    return json.dumps(
        {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            "tlsCertFile": str(pki / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(pki / "ca.crt")}},
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": "/" + CGROUP_ROOT,
            "containerRuntimeEndpoint": f"unix://{sdir}/containerd/containerd.sock",
            "clusterDomain": "cluster.local",
            "failSwapOn": False,
            "makeIPTablesUtilChains": False,
            "serializeImagePulls": False,
            "resolvConf": "/etc/resolv.conf",
            "maxPods": 50,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%",
                             "nodefs.inodesFree": "2%"},
            "imageGCHighThresholdPercent": 95,
            "imageGCLowThresholdPercent": 90,
            "containerLogMaxSize": "10Mi",
            "nodeStatusReportFrequency": "1m",
        },
        indent=2,
    )


def _prepare_cgroups() -> list[str]:
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
                for f in ("cpuset.cpus", "cpuset.mems"):
                    with contextlib.suppress(OSError):
                        if not (target / f).read_text().strip():
                            (target / f).write_text((hier / f).read_text())
    return made


def _read_sysctls() -> dict[str, str]:
    out = {}
    for key in KERNEL_TUNABLES:
        with contextlib.suppress(OSError):
            out[key] = Path("/proc/sys", *key.split(".")).read_text().strip()
    return out


def _start(name: str, cmd: list[str], logs: Path) -> dict:
    _, rec = spawn(cmd, logs / f"{name}.log")
    say(f"{name}: started pid {rec['pid']}")
    return rec


def _ctr(sdir: Path, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run(["ctr", "--address", f"{sdir}/containerd/containerd.sock", "--namespace", "k8s.io", *args],
               check=check, timeout=timeout, what=f"ctr {' '.join(args[:2])}")


def start_cluster(sdir: Path, state: dict, args: argparse.Namespace) -> None:
    bins = Path(state["binaries"]["bin_dir"])
    pki = sdir / "pki"
    logs = sdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for d in ("etcd", "kubelet", "cni/net.d", "cni/ipam", "containerd"):
        (sdir / d).mkdir(parents=True, exist_ok=True)
    ports = {k: free_port() for k in ("etcd", "etcd_peer", "apiserver", "kubelet", "kubelet_healthz")}
    state["ports"] = ports
    procs: dict[str, dict] = state["procs"]
    _make_pki(pki)
    server = f"https://127.0.0.1:{ports['apiserver']}"
    state["server"] = server
    _kubeconfig(sdir / "admin.kubeconfig", server, pki, "admin", args.namespace)
    for user in ("controller-manager", "scheduler", "kubelet"):
        _kubeconfig(sdir / f"{user}.kubeconfig", server, pki, user)

    # Record what exists before the kubelet writes outside the state dir, so `down` removes only its own.
    state["preexisting_pod_logs"] = sorted(os.listdir("/var/log/pods")) if Path("/var/log/pods").is_dir() else []
    state["sysctl_before"] = _read_sysctls()
    state["bridge_existed"] = Path(f"/sys/class/net/{BRIDGE}").exists()
    save_state(sdir, state)

    t0 = time.monotonic()
    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
    procs["etcd"] = _start("etcd", [
        which("etcd") or "etcd", "--name", "imagegate", "--data-dir", str(sdir / "etcd"),
        "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"imagegate={peer_url}", "--initial-cluster-state", "new",
        "--logger", "zap", "--log-level", "warn", "--snapshot-count", "10000",
    ], logs)
    save_state(sdir, state)

    # containerd (own instance) and the sandbox image, while etcd and the API server come up.
    write_file(sdir / "containerd" / "config.toml", _containerd_config(sdir))
    write_file(sdir / "cni" / "net.d" / "10-imagegate.conflist", _cni_config(sdir) + "\n")
    write_registry_hosts(sdir, state["registries"])
    procs["containerd"] = _start("containerd", [
        which("containerd") or "containerd", "--config", str(sdir / "containerd" / "config.toml"),
        "--log-level", "info",
    ], logs)
    save_state(sdir, state)

    def etcd_ok() -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", ports["etcd"], timeout=3)
            conn.request("GET", "/health")
            body = conn.getresponse().read()
            conn.close()
            return b'"true"' in body
        except (OSError, http.client.HTTPException):
            return False

    _wait("etcd /health", etcd_ok, 60, {"etcd": procs["etcd"]})
    svc_ip = SERVICE_CIDR.split("/")[0].rsplit(".", 1)[0] + ".1"
    procs["apiserver"] = _start("apiserver", [
        str(bins / "kube-apiserver"),
        f"--etcd-servers={etcd_url}",
        "--bind-address=127.0.0.1", f"--secure-port={ports['apiserver']}", "--advertise-address=127.0.0.1",
        f"--tls-cert-file={pki}/apiserver.crt", f"--tls-private-key-file={pki}/apiserver.key",
        f"--client-ca-file={pki}/ca.crt",
        f"--kubelet-client-certificate={pki}/apiserver-kubelet-client.crt",
        f"--kubelet-client-key={pki}/apiserver-kubelet-client.key",
        f"--kubelet-certificate-authority={pki}/ca.crt",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki}/sa.pub", f"--service-account-signing-key-file={pki}/sa.key",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,PodSecurity,NodeRestriction,"
        "DefaultTolerationSeconds,Priority,ResourceQuota",
        "--allow-privileged=false",
        # The `kubernetes` service cannot have a loopback endpoint, and nothing here routes service IPs.
        "--endpoint-reconciler-type=none",
        "--profiling=false", "--v=1",
    ], logs)
    save_state(sdir, state)

    api = Api(ports["apiserver"], pki)
    _wait("the API server /readyz", lambda: api.ok("/readyz") is not None, args.timeout,
          {"apiserver": procs["apiserver"]})
    say(f"apiserver: ready at {server} ({_elapsed(t0)} after etcd start)")
    procs["controller_manager"] = _start("controller-manager", [
        str(bins / "kube-controller-manager"),
        f"--kubeconfig={sdir}/controller-manager.kubeconfig",
        f"--authentication-kubeconfig={sdir}/controller-manager.kubeconfig",
        f"--authorization-kubeconfig={sdir}/controller-manager.kubeconfig",
        "--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false",
        f"--service-account-private-key-file={pki}/sa.key", f"--root-ca-file={pki}/ca.crt",
        "--use-service-account-credentials=true",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--profiling=false", "--v=1",
    ], logs)
    sched_cfg = sdir / "scheduler.yaml"
    write_file(sched_cfg, json.dumps({
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": f"{sdir}/scheduler.kubeconfig"},
        "leaderElection": {"leaderElect": False},
    }, indent=2) + "\n")
    procs["scheduler"] = _start("scheduler", [
        str(bins / "kube-scheduler"), f"--config={sched_cfg}",
        f"--authentication-kubeconfig={sdir}/scheduler.kubeconfig",
        f"--authorization-kubeconfig={sdir}/scheduler.kubeconfig",
        "--bind-address=127.0.0.1", "--secure-port=0", "--profiling=false", "--v=1",
    ], logs)
    save_state(sdir, state)

    sock = sdir / "containerd" / "containerd.sock"
    _wait("containerd's socket", lambda: sock.exists() and _ctr(sdir, "version", check=False).returncode == 0,
          60, {"containerd": procs["containerd"]})
    pause = Path(state["pause_archive"])
    _ctr(sdir, "images", "import", "--platform", "linux/amd64", str(pause))
    say(f"containerd: imported the sandbox image {PAUSE_IMAGE}")

    state["cgroups"] = _prepare_cgroups()
    write_file(sdir / "kubelet" / "config.yaml", _kubelet_config(sdir, ports["kubelet"], ports["kubelet_healthz"]))
    procs["kubelet"] = _start("kubelet", [
        str(bins / "kubelet"),
        f"--config={sdir}/kubelet/config.yaml", f"--kubeconfig={sdir}/kubelet.kubeconfig",
        f"--root-dir={sdir}/kubelet/root", f"--cert-dir={sdir}/kubelet/pki",
        f"--hostname-override={NODE_NAME}", f"--pod-infra-container-image={PAUSE_IMAGE}",
        "--v=1",
    ], logs)
    save_state(sdir, state)

    def node_ready() -> bool:
        node = api.ok(f"/api/v1/nodes/{NODE_NAME}")
        conds = ((node or {}).get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)

    _wait(f"node {NODE_NAME} Ready", node_ready, args.timeout, procs)
    say(f"kubelet: node {NODE_NAME} is Ready ({_elapsed(t0)} after etcd start)")


def ensure_namespace(api: Api, name: str, timeout: float, procs: dict) -> None:
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
    }
    status, body = api.request("POST", "/api/v1/namespaces",
                               {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    if status == 409:
        status, body = api.request("PATCH", f"/api/v1/namespaces/{name}", {"metadata": {"labels": labels}},
                                   content_type="application/merge-patch+json")
    if status not in (200, 201):
        raise K8sError(f"cannot create namespace {name}: HTTP {status}: {body}")
    for ns in ("default", name):
        _wait(f"service account default in {ns}",
              lambda ns=ns: api.ok(f"/api/v1/namespaces/{ns}/serviceaccounts/default"), timeout, procs)
        _wait(f"configmap kube-root-ca.crt in {ns}",
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
    node = api.ok(f"/api/v1/nodes/{NODE_NAME}") or {}
    conds = (node.get("status") or {}).get("conditions") or []
    if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
        return False, f"node {NODE_NAME} is not Ready"
    return True, "running"


# --------------------------------------------------------------------------------------------- teardown


def _mounts_under(paths: list[str]) -> list[str]:
    out = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mnt = line.split()[4].replace("\\040", " ")
            if any(mnt == p or mnt.startswith(p.rstrip("/") + "/") for p in paths):
                out.append(mnt)
    return sorted(set(out), key=lambda m: m.count("/"), reverse=True)


def _umount_all(paths: list[str]) -> int:
    n = 0
    for _ in range(3):
        mounts = _mounts_under(paths)
        if not mounts:
            break
        for m in mounts:
            if run(["umount", m], check=False, timeout=60).returncode != 0:
                run(["umount", "-l", m], check=False, timeout=60)
            n += 1
    return n


def _our_shims(sdir: Path) -> list[int]:
    """PIDs of containerd shims started by *our* containerd (their cmdline names our socket)."""
    sock = f"{sdir}/containerd/containerd.sock"
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        cmd = _stack._proc_cmdline(int(p.name)) or []
        if cmd and os.path.basename(cmd[0]).startswith("containerd-shim") and "-address" in cmd:
            i = cmd.index("-address")
            if i + 1 < len(cmd) and cmd[i + 1] == sock:
                pids.append(int(p.name))
    return pids


def _kill_cgroup_procs(cgroups: list[str]) -> list[int]:
    """SIGKILL every process in the kubelet's cgroup root (only our pods live there); return their PIDs."""
    killed: set[int] = set()
    for _ in range(10):
        pids = set()
        for cg in cgroups:
            for procs in Path(cg).rglob("cgroup.procs") if Path(cg).is_dir() else []:
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(x) for x in procs.read_text().split())
        pids.discard(os.getpid())
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed |= pids
        time.sleep(0.3)
    return sorted(killed)


def _delete_all_pods(state: dict, timeout: float = 30.0) -> None:
    """Delete every pod through the API, then wait for the kubelet to stop their sandboxes (frees netns, IPs)."""
    try:
        api = Api(state["ports"]["apiserver"], Path(state["state_dir"]) / "pki")
    except (OSError, KeyError, ssl.SSLError):
        return
    pods = api.ok("/api/v1/pods")
    if not pods or not pods.get("items"):
        return
    for pod in pods["items"]:
        md = pod["metadata"]
        with contextlib.suppress(OSError, http.client.HTTPException):
            api.request("DELETE", f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}?gracePeriodSeconds=1")
    say(f"deleted {len(pods['items'])} pod(s); waiting for the kubelet to stop them")
    sdir = Path(state["state_dir"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = api.ok("/api/v1/pods")
        tasks = _ctr(sdir, "tasks", "ls", check=False, timeout=30)
        running = [line for line in tasks.stdout.splitlines()[1:] if line.split()[2:3] != ["STOPPED"]]
        if left is not None and not left.get("items") and tasks.returncode == 0 and not running:
            say(f"the kubelet stopped them in {timeout - (deadline - time.monotonic()):.1f} s")
            return
        time.sleep(0.5)


def _netns_of_containers(sdir: Path) -> set[str]:
    paths: set[str] = set()
    listing = _ctr(sdir, "containers", "ls", "-q", check=False, timeout=30)
    for cid in listing.stdout.split() if listing.returncode == 0 else []:
        info = _ctr(sdir, "containers", "info", cid, check=False, timeout=30)
        with contextlib.suppress(ValueError, KeyError, TypeError):
            for ns in json.loads(info.stdout)["Spec"]["linux"]["namespaces"]:
                path = ns.get("path", "")
                if ns.get("type") == "network" and path.startswith(("/var/run/netns/", f"{sdir}/")):
                    paths.add(path)
    return paths


def _kill_tasks(sdir: Path) -> None:
    tasks = _ctr(sdir, "tasks", "ls", "-q", check=False, timeout=30)
    for tid in tasks.stdout.split() if tasks.returncode == 0 else []:
        _ctr(sdir, "tasks", "kill", "--signal", "SIGKILL", tid, check=False, timeout=30)
    for tid in tasks.stdout.split() if tasks.returncode == 0 else []:
        for _ in range(20):
            if _ctr(sdir, "tasks", "delete", tid, check=False, timeout=30).returncode == 0:
                break
            time.sleep(0.25)


def teardown(sdir: Path, state: dict) -> None:
    """Stop everything `up` started and remove what it left behind (safe to run on a half-started cluster)."""
    procs = state.get("procs") or {}
    containerd_ok = proc_matches(procs.get("containerd"))
    # Controllers first, so that deleted pods are not re-created (ReplicaSets, Jobs) while the kubelet stops them.
    for name in ("controller_manager", "scheduler"):
        _stack.stop_process(name, procs.get(name), 20)
    if proc_matches(procs.get("kubelet")) and proc_matches(procs.get("apiserver")) and containerd_ok:
        _delete_all_pods(state)
    for name in ("kubelet", "apiserver", "etcd"):
        _stack.stop_process(name, procs.get(name), 20)
    netns: set[str] = set()
    if containerd_ok:
        netns = _netns_of_containers(sdir)
        _kill_tasks(sdir)
    _stack.stop_process("containerd", procs.get("containerd"), 20)
    # Containers whose containerd is gone (e.g. everything killed at once): their processes are in our cgroups.
    orphans = _kill_cgroup_procs(state.get("cgroups") or [])
    if orphans:
        say(f"killed {len(orphans)} leftover container process(es) in /{CGROUP_ROOT}: {orphans}")
    shims = _our_shims(sdir)
    for pid in shims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if shims:
        say(f"containerd: killed {len(shims)} leftover shim(s) of our containerd: {shims}")
    n = _umount_all([str(sdir), *sorted(netns)])
    if n:
        say(f"unmounted {n} mount(s) under {sdir} and pod network namespaces")
    for path in netns:
        with contextlib.suppress(OSError):
            os.unlink(path)
    if not state.get("bridge_existed") and Path(f"/sys/class/net/{BRIDGE}").exists():
        run(["ip", "link", "delete", BRIDGE], check=False, timeout=30)
        say(f"removed the bridge {BRIDGE}")
    for cg in state.get("cgroups") or []:
        for d in sorted((p for p in Path(cg).rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            Path(cg).rmdir()
    before = state.get("sysctl_before") or {}
    for key, value in before.items():
        path = Path("/proc/sys", *key.split("."))
        with contextlib.suppress(OSError):
            if path.read_text().strip() != value:
                path.write_text(value + "\n")
                say(f"restored {key}={value}")
    if state.get("preexisting_pod_logs") is not None and Path("/var/log/pods").is_dir():
        keep = set(state["preexisting_pod_logs"])
        for entry in os.listdir("/var/log/pods"):
            if entry not in keep:
                shutil.rmtree(Path("/var/log/pods") / entry, ignore_errors=True)
        with contextlib.suppress(OSError):
            for link in Path("/var/log/containers").iterdir():
                if link.is_symlink() and not link.exists():
                    link.unlink()
    for child in list(sdir.iterdir()) if sdir.is_dir() else []:
        if child.name in ("logs", ".lock", STATE_FILE, ENV_FILE):
            continue
        if _mounts_under([str(child)]):
            say(f"NOT removing {child}: something is still mounted there")
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                child.unlink()


# --------------------------------------------------------------------------------------------- state


def state_dir_from(arg: str | None) -> Path:
    return Path(arg or os.environ.get("IMAGEGATE_K8S_DIR") or DEFAULT_STATE_DIR).resolve()


def load_state(state_dir: str | os.PathLike | None = None) -> dict:
    """Return the parsed ``k8s.json`` of a cluster brought up by ``k8s.py up``.

    Raises FileNotFoundError with a hint when the cluster is not up.
    """
    path = state_dir_from(str(state_dir) if state_dir else None) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: start the cluster with: python scripts/k8s.py up") from None


def _env_for(state: dict) -> dict[str, str]:
    sdir = Path(state["state_dir"])
    bins = Path((state.get("binaries") or {}).get("bin_dir", ""))
    http_regs = [r["addr"] for r in state.get("registries") or [] if r.get("scheme") == "http"]
    return {
        "KUBECONFIG": str(sdir / "admin.kubeconfig"),
        "IMAGEGATE_K8S_DIR": str(sdir),
        "IMAGEGATE_K8S_SERVER": state.get("server", ""),
        "IMAGEGATE_K8S_CONTEXT": "imagegate",
        "IMAGEGATE_K8S_NAMESPACE": state.get("namespace", ""),
        "IMAGEGATE_K8S_NODE": NODE_NAME,
        "IMAGEGATE_K8S_VERSION": K8S_VERSION,
        "IMAGEGATE_K8S_KUBECTL": str(bins / "kubectl") if state.get("binaries") else "",
        "IMAGEGATE_K8S_REGISTRY": http_regs[0] if http_regs else "",
        "IMAGEGATE_K8S_CONTAINERD_ADDRESS": str(sdir / "containerd" / "containerd.sock"),
        "IMAGEGATE_K8S_POD_CIDR": POD_CIDR,
        "IMAGEGATE_K8S_SERVICE_CIDR": SERVICE_CIDR,
    }


def save_state(sdir: Path, state: dict) -> None:
    state["updated"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    state["env"] = _env_for(state)
    write_file(sdir / STATE_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n", 0o600)
    env_text = "# imagegate Kubernetes test cluster - written by scripts/k8s.py up\n" + "".join(
        f"export {k}={shlex.quote(v)}\n" for k, v in state["env"].items()
    )
    write_file(sdir / ENV_FILE, env_text, 0o600)


@contextlib.contextmanager
def state_lock(sdir: Path):  # type: ignore[no-untyped-def]
    import fcntl

    sdir.mkdir(parents=True, exist_ok=True)
    with open(sdir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another k8s.py working on {sdir} ...")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


# ------------------------------------------------------------------------------------------- commands


def _require_root() -> None:
    if not is_root():
        raise K8sError("the cluster needs root (kubelet, containerd, cgroups, network namespaces); re-run as root")


def cmd_build(args: argparse.Namespace) -> int:
    ensure_packages()
    info = ensure_binaries()
    pause = ensure_pause_image()
    say(f"binaries in {info['bin_dir']} ({'built in %.0f s' % info['seconds'] if info['built'] else 'cached'}); "
        f"sandbox image {pause}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    _require_root()
    sdir = state_dir_from(args.state_dir)
    with state_lock(sdir):
        old: dict = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            old = load_state(sdir)
        registries = _registries(args.registry or [])
        if old:
            healthy, why = cluster_healthy(old)
            if healthy and old.get("namespace") == args.namespace:
                old["registries"] = registries
                write_registry_hosts(sdir, registries)
                save_state(sdir, old)
                say(f"cluster already running (reused; {_elapsed(t0)}); state {sdir / STATE_FILE}")
                _print_env(old)
                return 0
            say(f"previous cluster is not usable ({why if not healthy else 'other namespace'}): cleaning it up")
            teardown(sdir, old)
        ensure_packages()
        binaries = ensure_binaries()
        pause = ensure_pause_image()
        t_start = time.monotonic()
        state: dict = {
            "version": STATE_VERSION,
            "state_dir": str(sdir),
            "kubernetes": K8S_VERSION,
            "namespace": args.namespace,
            "binaries": binaries,
            "pause_archive": str(pause),
            "registries": registries,
            "procs": {},
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        save_state(sdir, state)
        try:
            start_cluster(sdir, state, args)
            api = Api(state["ports"]["apiserver"], sdir / "pki")
            ensure_namespace(api, args.namespace, args.timeout, state["procs"])
        except BaseException:
            save_state(sdir, state)
            if not args.keep_on_failure:
                say("start-up failed: tearing down what was started (use --keep-on-failure to inspect)")
                teardown(sdir, state)
                for f in (STATE_FILE, ENV_FILE):
                    with contextlib.suppress(FileNotFoundError):
                        (sdir / f).unlink()
            raise
        state["timings"] = {"build_s": binaries["seconds"], "start_s": round(time.monotonic() - t_start, 1),
                            "up_s": round(time.monotonic() - t0, 1)}
        save_state(sdir, state)
    say(f"cluster is up in {_elapsed(t0)} (start-up {state['timings']['start_s']} s); state {sdir / STATE_FILE}")
    _print_env(state)
    return 0


def _print_env(state: dict) -> None:
    say(f'use it with:  eval "$(python3 {shlex.quote(sys.argv[0])} env)"')
    for k, v in state["env"].items():
        say(f"  {k}={v}")


def cmd_status(args: argparse.Namespace) -> int:
    sdir = state_dir_from(args.state_dir)
    try:
        state = load_state(sdir)
    except FileNotFoundError:
        print(f"cluster is not up (no {sdir / STATE_FILE})")
        return 1
    for name in COMPONENTS:
        rec = (state.get("procs") or {}).get(name)
        alive = proc_matches(rec)
        pid, log = (rec or {}).get("pid"), (rec or {}).get("log")
        print(f"{name:20} {'running' if alive else 'DOWN':8} pid {pid}  log {log}")
    ok, why = cluster_healthy(state)
    print(f"{'cluster':20} {why}  server {state.get('server')}  namespace {state.get('namespace')}")
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
        for f in (STATE_FILE, ENV_FILE):
            with contextlib.suppress(FileNotFoundError):
                (sdir / f).unlink()
    say(f"cluster is down (binaries kept in {version_dir()}; logs in {sdir / 'logs'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="k8s.py", description=__doc__.split("\n\n")[0])
    state_help = f"state directory (default $IMAGEGATE_K8S_DIR or {DEFAULT_STATE_DIR})"
    parser.add_argument("--state-dir", help=state_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", default=argparse.SUPPRESS, help=state_help)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", parents=[common], help="build once, then start (or reuse) the cluster")
    up.add_argument("--namespace", default=os.environ.get("IMAGEGATE_K8S_NAMESPACE") or DEFAULT_NAMESPACE,
                    help=f"test namespace enforcing the restricted Pod Security Standard (default {DEFAULT_NAMESPACE})")
    up.add_argument("--registry", action="append", metavar="HOST:PORT",
                    help="extra plain-http registry to pull from (the local stack's registries are added anyway)")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for each component")
    up.add_argument("--keep-on-failure", action="store_true", help="leave a failed start-up running to inspect it")
    sub.add_parser("build", parents=[common], help="only build and cache the binaries and the sandbox image")
    sub.add_parser("status", parents=[common], help="show what runs; exit 1 when something is down")
    sub.add_parser("env", parents=[common], help="print `export KEY=VALUE` lines for the running cluster")
    sub.add_parser("down", parents=[common], help="stop what `up` started and remove its state (keeps the cache)")
    args = parser.parse_args(argv)
    try:
        return {"up": cmd_up, "build": cmd_build, "status": cmd_status, "env": cmd_env, "down": cmd_down}[
            args.command
        ](args)
    except StackError as exc:
        print(f"k8s.py {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"k8s.py {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
