"""The cluster's PKI (``openssl`` CLI, EC P-256): a CA, serving and client certificates, the service-account
key; and the kubeconfigs that carry them."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from .host import run, write_file
from .k8s_config import NODE_NAME, kubeconfig, service_ip

# name -> (subject, extendedKeyUsage, subjectAltName or None), in the order they are made.
CERTS = {
    "apiserver": (
        "/CN=kube-apiserver",
        "serverAuth",
        "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
        f"DNS:kubernetes.default.svc.cluster.local,IP:{service_ip()}",
    ),
    "kubelet-serving": (f"/O=system:nodes/CN=system:node:{NODE_NAME}", "serverAuth", "IP:127.0.0.1"),
    "admin": ("/O=system:masters/CN=imagegate-admin", "clientAuth", None),
    "apiserver-kubelet-client": ("/O=system:masters/CN=kube-apiserver-kubelet-client", "clientAuth", None),
    "controller-manager": ("/CN=system:kube-controller-manager", "clientAuth", None),
    "scheduler": ("/CN=system:kube-scheduler", "clientAuth", None),
    "kubelet": (f"/O=system:nodes/CN=system:node:{NODE_NAME}", "clientAuth", None),
    # The cluster services (k8s.py up --spark): kube-proxy is bound to system:node-proxier by default; CoreDNS and
    # the spark-operator controller get roles of their own (localstack.k8s_services, localstack.k8s_spark).
    "kube-proxy": ("/CN=system:kube-proxy", "clientAuth", None),
    "coredns": ("/CN=imagegate:coredns", "clientAuth", None),
    "spark-operator": ("/CN=imagegate:spark-operator", "clientAuth", None),
}
# Client keys also written in SEC1 form (`BEGIN EC PRIVATE KEY`), for spark-submit: its fabric8 Kubernetes client
# cannot read the PKCS#8 keys `openssl genpkey` writes ("Invalid DER: object is not integer").
SEC1_KEYS = ("spark-operator",)


def cert_extensions(usage: str, sans: str | None = None) -> str:
    """The openssl extension file of a leaf certificate."""
    lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
             f"extendedKeyUsage={usage}"]
    if sans:
        lines.append(f"subjectAltName={sans}")
    return "\n".join(lines) + "\n"


def _openssl(*args: str, what: str) -> None:
    run(["openssl", *args], what=what, timeout=60)


def _key(pki: Path, name: str) -> Path:
    path = pki / f"{name}.key"
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path),
             what=f"openssl genpkey {name}")
    os.chmod(path, 0o600)
    return path


def _ca(pki: Path) -> Path:
    ca_key = _key(pki, "ca")
    _openssl("req", "-x509", "-new", "-key", str(ca_key), "-sha256", "-days", "3650", "-subj",
             "/CN=imagegate-k8s-ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(pki / "ca.crt"), what="openssl CA")
    return ca_key


def _cert(pki: Path, ca_key: Path, name: str, subj: str, usage: str, sans: str | None = None) -> None:
    k = _key(pki, name)
    csr = pki / f"{name}.csr"
    ext = pki / f"{name}.ext"
    ext.write_text(cert_extensions(usage, sans))
    _openssl("req", "-new", "-key", str(k), "-subj", subj, "-out", str(csr), what=f"openssl req {name}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", str(ext), "-out",
             str(pki / f"{name}.crt"), what=f"openssl x509 {name}")
    csr.unlink()
    ext.unlink()


def make_pki(pki: Path) -> None:
    """CA, apiserver/kubelet serving certs and client certs (EC P-256), plus the service-account key."""
    pki.mkdir(parents=True, exist_ok=True)
    os.chmod(pki, 0o700)
    if (pki / "done").exists():
        return
    ca_key = _ca(pki)
    for name, (subj, usage, sans) in CERTS.items():
        _cert(pki, ca_key, name, subj, usage, sans)
    for name in SEC1_KEYS:
        sec1 = pki / f"{name}.sec1.key"
        _openssl("ec", "-in", str(pki / f"{name}.key"), "-out", str(sec1), what=f"openssl ec {name} (SEC1)")
        os.chmod(sec1, 0o600)
    sa = _key(pki, "sa")
    _openssl("pkey", "-in", str(sa), "-pubout", "-out", str(pki / "sa.pub"), what="openssl sa.pub")
    (pki / "done").write_text("ok\n")


def _b64file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, pki: Path, user: str, namespace: str = "default",
                     key: Path | None = None) -> None:
    """A kubeconfig (mode 0600) for *user*, whose certificate and key are ``pki/USER.crt`` and ``.key`` (or *key*)."""
    text = kubeconfig(server, user, _b64file(pki / "ca.crt"), _b64file(pki / f"{user}.crt"),
                      _b64file(key or pki / f"{user}.key"), namespace)
    write_file(path, text, 0o600)
