"""Pure renderers of the cluster's configuration: containerd, CNI, kubelet, scheduler, kubeconfig, registry
``hosts.toml``, and the command lines of every component. No I/O: paths and ports come in, text comes out."""

from __future__ import annotations

import json
from pathlib import Path

from .k8s_pause import PAUSE_IMAGE

NODE_NAME = "127.0.0.1"  # kubelet --hostname-override: an IP name keeps the node address on loopback
POD_CIDR = "10.213.0.0/24"  # host-local pool on the node's own bridge; no route leaves the bridge
SERVICE_CIDR = "10.214.0.0/24"  # virtual; routed by kube-proxy (iptables) only with the cluster services (--spark)
BRIDGE = "igk8s0"
# With the cluster services: the node's address on the bridge (the pods' gateway to the service CIDR, and the only
# host address they can reach: CoreDNS and the API server relay listen there), and the kube-dns Service's IP.
BRIDGE_IP = POD_CIDR.split("/")[0].rsplit(".", 1)[0] + ".1"
DNS_SERVICE_IP = SERVICE_CIDR.split("/")[0].rsplit(".", 1)[0] + ".10"
CLUSTER_DOMAIN = "cluster.local"
FORWARD_COMMENT = "imagegate-k8s: pod to pod on the cluster bridge"
CGROUP_ROOT = "imagegate-k8s"  # kubelet --cgroup-root; pods live under /imagegate-k8s/kubepods
CNI_BIN_DIR = "/usr/lib/cni"
CNI_CONFLIST = "10-imagegate.conflist"
CONTEXT = "imagegate"
ADMISSION_PLUGINS = (
    "NamespaceLifecycle,LimitRanger,ServiceAccount,PodSecurity,NodeRestriction,DefaultTolerationSeconds,Priority,"
    "ResourceQuota"
)


def service_ip() -> str:
    """The first address of SERVICE_CIDR (the `kubernetes` service)."""
    return SERVICE_CIDR.split("/")[0].rsplit(".", 1)[0] + ".1"


def containerd_socket(sdir: Path) -> str:
    return f"{sdir}/containerd/containerd.sock"


# --------------------------------------------------------------------------------------------- configs


def containerd_config(sdir: Path, *, restrict_oom_score_adj: bool, runc: str) -> str:
    """config.toml of a containerd of our own (root, state, socket, runc root under the state dir)."""
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
  restrict_oom_score_adj = {'true' if restrict_oom_score_adj else 'false'}
  max_container_log_line_size = 16384
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{runc}"
        Root = "{c}/runc"
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{sdir}/cni/net.d"
    max_conf_num = 1
  [{cri}.registry]
    config_path = "{c}/certs.d"
"""


def cni_config(sdir: Path, services: bool = False) -> str:
    """The bridge network. Without the cluster services, no gateway and no masquerade: pods get an address on a
    bridge local to this machine and no route anywhere else (images are pulled by containerd on the host, logs and
    exec go through the kubelet). With them (*services*), the bridge carries BRIDGE_IP and pods get one more route,
    to the service CIDR through it (so kube-proxy's rules on the host see their Service traffic); still no default
    route and no masquerade: nothing leaves the machine."""
    ipam: dict = {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]], "dataDir": f"{sdir}/cni/ipam"}
    if services:
        ipam["ranges"] = [[{"subnet": POD_CIDR, "gateway": BRIDGE_IP}]]
        ipam["routes"] = [{"dst": SERVICE_CIDR, "gw": BRIDGE_IP}]
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "imagegate-k8s",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": services,
                    "isDefaultGateway": False,
                    "ipMasq": False,
                    "hairpinMode": services,  # a pod reaching itself through a Service IP
                    "ipam": ipam,
                }
            ],
        },
        indent=2,
    )


def kubelet_config(sdir: Path, port: int, healthz: int, cluster_dns: str | None = None) -> str:
    """The kubelet's configuration; *cluster_dns* (the kube-dns Service IP) gives pods the cluster DNS."""
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
            "clusterDomain": CLUSTER_DOMAIN,
            **({"clusterDNS": [cluster_dns]} if cluster_dns else {}),
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


def scheduler_config(sdir: Path) -> str:
    return json.dumps({
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": f"{sdir}/scheduler.kubeconfig"},
        "leaderElection": {"leaderElect": False},
    }, indent=2) + "\n"


def kubeconfig(server: str, user: str, ca_data: str, cert_data: str, key_data: str, namespace: str = "default") -> str:
    """A kubeconfig with one cluster, one user (client certificate) and one context, ``imagegate``;
    the ``*_data`` arguments are base64 (``certificate-authority-data`` etc.)."""
    text = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": CONTEXT, "cluster": {"server": server, "certificate-authority-data": ca_data}}],
            "users": [{"name": user, "user": {"client-certificate-data": cert_data, "client-key-data": key_data}}],
            "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user, "namespace": namespace}}],
            "current-context": CONTEXT,
        },
        indent=2,
    )
    return text + "\n"


def hosts_toml(reg: dict) -> str:
    """containerd's certs.d/HOST:PORT/hosts.toml for a registry {"addr", "scheme", "ca"?}: pull and resolve."""
    url = f"{reg['scheme']}://{reg['addr']}"
    lines = [f'server = "{url}"', "", f'[host."{url}"]', '  capabilities = ["pull", "resolve"]']
    if reg.get("ca"):
        lines.append(f'  ca = "{reg["ca"]}"')
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------- command lines


def etcd_urls(ports: dict) -> tuple[str, str]:
    """(client URL, peer URL) of etcd."""
    return f"http://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd_peer']}"


def etcd_argv(etcd: str, sdir: Path, ports: dict) -> list[str]:
    etcd_url, peer_url = etcd_urls(ports)
    return [
        etcd, "--name", "imagegate", "--data-dir", str(sdir / "etcd"),
        "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"imagegate={peer_url}", "--initial-cluster-state", "new",
        "--logger", "zap", "--log-level", "warn", "--snapshot-count", "10000",
    ]


def containerd_argv(containerd: str, sdir: Path) -> list[str]:
    return [containerd, "--config", str(sdir / "containerd" / "config.toml"), "--log-level", "info"]


def apiserver_argv(bins: Path, pki: Path, ports: dict) -> list[str]:
    etcd_url, _ = etcd_urls(ports)
    return [
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
        f"--enable-admission-plugins={ADMISSION_PLUGINS}",
        "--allow-privileged=false",
        # The `kubernetes` service cannot have a loopback endpoint, and nothing here routes service IPs.
        "--endpoint-reconciler-type=none",
        "--profiling=false", "--v=1",
    ]


def controller_manager_argv(bins: Path, sdir: Path, pki: Path) -> list[str]:
    return [
        str(bins / "kube-controller-manager"),
        f"--kubeconfig={sdir}/controller-manager.kubeconfig",
        f"--authentication-kubeconfig={sdir}/controller-manager.kubeconfig",
        f"--authorization-kubeconfig={sdir}/controller-manager.kubeconfig",
        "--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false",
        f"--service-account-private-key-file={pki}/sa.key", f"--root-ca-file={pki}/ca.crt",
        "--use-service-account-credentials=true",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--profiling=false", "--v=1",
    ]


def scheduler_argv(bins: Path, sdir: Path, sched_cfg: Path) -> list[str]:
    return [
        str(bins / "kube-scheduler"), f"--config={sched_cfg}",
        f"--authentication-kubeconfig={sdir}/scheduler.kubeconfig",
        f"--authorization-kubeconfig={sdir}/scheduler.kubeconfig",
        "--bind-address=127.0.0.1", "--secure-port=0", "--profiling=false", "--v=1",
    ]


def kubelet_argv(bins: Path, sdir: Path) -> list[str]:
    return [
        str(bins / "kubelet"),
        f"--config={sdir}/kubelet/config.yaml", f"--kubeconfig={sdir}/kubelet.kubeconfig",
        f"--root-dir={sdir}/kubelet/root", f"--cert-dir={sdir}/kubelet/pki",
        f"--hostname-override={NODE_NAME}", f"--pod-infra-container-image={PAUSE_IMAGE}",
        "--v=1",
    ]


# ------------------------------------------------------------------ cluster services: kube-proxy, CoreDNS


def kube_proxy_config(sdir: Path, healthz: int, metrics: int) -> str:
    """KubeProxyConfiguration: iptables mode for SERVICE_CIDR traffic, NodePorts only on BRIDGE_IP, and no kernel
    setting touched (no conntrack sizing or timeouts, no ``route_localnet`` for localhost NodePorts)."""
    return json.dumps({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": f"{sdir}/kube-proxy.kubeconfig"},
        "hostnameOverride": NODE_NAME,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{healthz}",
        "metricsBindAddress": f"127.0.0.1:{metrics}",
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "nodePortAddresses": [f"{BRIDGE_IP}/32"],
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False, "syncPeriod": "30s",
                     "minSyncPeriod": "0s"},
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }, indent=2) + "\n"


def kube_proxy_argv(binary: str, sdir: Path) -> list[str]:
    return [binary, f"--config={sdir}/kube-proxy.yaml", "--v=1"]


def corefile(kubeconfig: Path, ready_port: int, health_port: int) -> str:
    """CoreDNS on BRIDGE_IP:53: ``cluster.local`` (and reverse lookups) from the API server; every other name is
    NXDOMAIN at once (nothing is forwarded: pods have no route out, and the gate's tests must not depend on it)."""
    return f"""# written by imagegate scripts/k8s.py: the test cluster's DNS
{CLUSTER_DOMAIN}:53 in-addr.arpa:53 {{
    bind {BRIDGE_IP}
    errors
    ready 127.0.0.1:{ready_port}
    health 127.0.0.1:{health_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{
        kubeconfig {kubeconfig} {CONTEXT}
        pods insecure
        ttl 5
    }}
}}
.:53 {{
    bind {BRIDGE_IP}
    template ANY ANY . {{
        rcode NXDOMAIN
    }}
}}
"""


def coredns_argv(binary: str, sdir: Path) -> list[str]:
    return [binary, "-conf", f"{sdir}/Corefile"]


def apiserver_relay_argv(socat: str, apiserver_port: int) -> list[str]:
    """socat relaying BRIDGE_IP:PORT to the API server on 127.0.0.1:PORT (TLS passes through untouched): the
    `kubernetes` Service's endpoint, since an Endpoints address may not be loopback and the API server stays there."""
    return [socat, f"TCP-LISTEN:{apiserver_port},bind={BRIDGE_IP},fork,reuseaddr",
            f"TCP:127.0.0.1:{apiserver_port}"]


def service_endpoints(name: str, namespace: str, ip: str, ports: list[dict]) -> list[dict]:
    """The Endpoints (never mirrored) and the EndpointSlice of a selectorless Service, both pointing at *ip*."""
    return [
        {"apiVersion": "v1", "kind": "Endpoints",
         "metadata": {"name": name, "namespace": namespace,
                      "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
         "subsets": [{"addresses": [{"ip": ip}],
                      "ports": [{"name": p["name"], "port": p["port"], "protocol": p["protocol"]} for p in ports]}]},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": name, "namespace": namespace,
                      "labels": {"kubernetes.io/service-name": name,
                                 "endpointslice.kubernetes.io/managed-by": "imagegate.local-k8s.py"}},
         "addressType": "IPv4",
         "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
         "ports": [{"name": p["name"], "port": p["port"], "protocol": p["protocol"]} for p in ports]},
    ]


def kube_dns_service() -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system",
                         "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
            "spec": {"clusterIP": DNS_SERVICE_IP,
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                               {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}}


COREDNS_RULES = [
    {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
]


def cluster_role(name: str, rules: list[dict], user: str) -> list[dict]:
    """A ClusterRole and its ClusterRoleBinding to *user* (a client certificate's CN)."""
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]},
    ]


def namespaced_role(name: str, namespace: str, rules: list[dict], subject: dict) -> list[dict]:
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": name, "namespace": namespace}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": name, "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [subject]},
    ]
