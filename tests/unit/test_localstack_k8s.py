"""The pure parts of scripts/localstack's cluster side: containerd/CNI/kubelet/scheduler configs, kubeconfig,
registry hosts.toml, command lines, the Go wrapper module, the pause image archive, state and env files,
registry discovery and the parsers teardown relies on.

No network, no root, no Docker: everything here renders, parses or writes into a tmp dir.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shlex
import tarfile
import tomllib
from pathlib import Path

import pytest
from localstack import (
    k8s_api,
    k8s_binaries,
    k8s_cli,
    k8s_cluster,
    k8s_config,
    k8s_host,
    k8s_pause,
    k8s_pki,
    k8s_state,
    k8s_teardown,
)

SDIR = Path("/tmp/igk8s test")  # a space, to see the paths quoted right
PORTS = {"etcd": 2379, "etcd_peer": 2380, "apiserver": 6443, "kubelet": 10250, "kubelet_healthz": 10248}
BINS = Path("/cache/k8s/v1.28.15/bin")


def _flag(argv: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]
    return value


# --- configs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("restrict", [True, False])
def test_containerd_config_parses_and_stays_in_the_state_dir(restrict):
    doc = tomllib.loads(k8s_config.containerd_config(SDIR, restrict_oom_score_adj=restrict, runc="/usr/sbin/runc"))
    c = f"{SDIR}/containerd"
    assert doc["version"] == 2
    assert (doc["root"], doc["state"]) == (f"{c}/root", f"{c}/state")
    assert doc["grpc"]["address"] == f"{c}/containerd.sock" == k8s_config.containerd_socket(SDIR)
    assert doc["ttrpc"]["address"] == f"{c}/containerd.sock.ttrpc"
    assert doc["plugins"]["io.containerd.internal.v1.opt"]["path"] == f"{c}/opt"
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == k8s_pause.PAUSE_IMAGE == "imagegate.local/pause:3.9"
    assert cri["restrict_oom_score_adj"] is restrict
    assert cri["stream_server_address"] == "127.0.0.1" and cri["netns_mounts_under_state_dir"] is True
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"] == {"SystemdCgroup": False, "BinaryName": "/usr/sbin/runc", "Root": f"{c}/runc"}
    assert cri["cni"] == {"bin_dir": "/usr/lib/cni", "conf_dir": f"{SDIR}/cni/net.d", "max_conf_num": 1}
    assert cri["registry"]["config_path"] == f"{c}/certs.d"
    assert "io.containerd.snapshotter.v1.btrfs" in doc["disabled_plugins"]


def test_cni_config_has_no_gateway_and_no_masquerade():
    doc = json.loads(k8s_config.cni_config(SDIR))
    (plugin,) = doc["plugins"]
    assert (doc["cniVersion"], doc["name"], plugin["type"], plugin["bridge"]) == (
        "0.4.0", "imagegate-k8s", "bridge", "igk8s0"
    )
    assert not any(plugin[k] for k in ("isGateway", "isDefaultGateway", "ipMasq", "hairpinMode"))
    assert plugin["ipam"] == {"type": "host-local", "ranges": [[{"subnet": "10.213.0.0/24"}]],
                              "dataDir": f"{SDIR}/cni/ipam"}


def test_kubelet_config():
    doc = json.loads(k8s_config.kubelet_config(SDIR, 10250, 10248))
    assert doc["kind"] == "KubeletConfiguration" and doc["apiVersion"] == "kubelet.config.k8s.io/v1beta1"
    assert (doc["address"], doc["port"], doc["healthzPort"], doc["readOnlyPort"]) == ("127.0.0.1", 10250, 10248, 0)
    assert doc["tlsCertFile"] == f"{SDIR}/pki/kubelet-serving.crt"
    assert doc["authentication"]["x509"]["clientCAFile"] == f"{SDIR}/pki/ca.crt"
    assert doc["authentication"]["anonymous"]["enabled"] is False and doc["authorization"]["mode"] == "Webhook"
    assert (doc["cgroupDriver"], doc["cgroupRoot"]) == ("cgroupfs", "/imagegate-k8s")
    assert doc["containerRuntimeEndpoint"] == f"unix://{SDIR}/containerd/containerd.sock"
    assert doc["makeIPTablesUtilChains"] is False and doc["failSwapOn"] is False


def test_scheduler_config():
    doc = json.loads(k8s_config.scheduler_config(SDIR))
    assert doc["kind"] == "KubeSchedulerConfiguration"
    assert doc["clientConnection"]["kubeconfig"] == f"{SDIR}/scheduler.kubeconfig"
    assert doc["leaderElection"] == {"leaderElect": False}


@pytest.mark.parametrize(("user", "namespace"), [("admin", "imagegate"), ("kubelet", "default")])
def test_kubeconfig(user, namespace):
    doc = json.loads(k8s_config.kubeconfig("https://127.0.0.1:6443", user, "Q0E=", "Q1JU", "S0VZ", namespace))
    assert doc["current-context"] == "imagegate"
    (cluster,), (u,), (ctx,) = doc["clusters"], doc["users"], doc["contexts"]
    assert cluster["cluster"] == {"server": "https://127.0.0.1:6443", "certificate-authority-data": "Q0E="}
    assert u == {"name": user, "user": {"client-certificate-data": "Q1JU", "client-key-data": "S0VZ"}}
    assert ctx["context"] == {"cluster": "imagegate", "user": user, "namespace": namespace}


def test_write_kubeconfig_embeds_the_pki(tmp_path):
    for name, data in (("ca.crt", b"ca"), ("admin.crt", b"crt"), ("admin.key", b"key")):
        (tmp_path / name).write_bytes(data)
    k8s_pki.write_kubeconfig(tmp_path / "admin.kubeconfig", "https://s", tmp_path, "admin", "ns")
    doc = json.loads((tmp_path / "admin.kubeconfig").read_text())
    assert base64.b64decode(doc["users"][0]["user"]["client-key-data"]) == b"key"
    assert base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]) == b"ca"
    assert (tmp_path / "admin.kubeconfig").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("reg", "ca"),
    [({"addr": "127.0.0.1:5000", "scheme": "http"}, None),
     ({"addr": "127.0.0.1:5001", "scheme": "https", "ca": "/s/auth/ca.crt"}, "/s/auth/ca.crt")],
)
def test_hosts_toml(reg, ca):
    doc = tomllib.loads(k8s_config.hosts_toml(reg))
    url = f"{reg['scheme']}://{reg['addr']}"
    assert doc["server"] == url
    assert doc["host"][url]["capabilities"] == ["pull", "resolve"]
    assert doc["host"][url].get("ca") == ca


def test_write_registry_hosts(tmp_path):
    regs = [{"addr": "127.0.0.1:5000", "scheme": "http"}, {"addr": "127.0.0.1:5001", "scheme": "https", "ca": "/c"}]
    k8s_cluster.write_registry_hosts(tmp_path, regs)
    for reg in regs:
        text = (tmp_path / "containerd" / "certs.d" / reg["addr"] / "hosts.toml").read_text()
        assert text == k8s_config.hosts_toml(reg)


# --- command lines -------------------------------------------------------------------------------


def test_etcd_argv():
    argv = k8s_config.etcd_argv("/usr/bin/etcd", SDIR, PORTS)
    opts = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert argv[0] == "/usr/bin/etcd" and opts["--data-dir"] == f"{SDIR}/etcd"
    assert opts["--listen-client-urls"] == opts["--advertise-client-urls"] == "http://127.0.0.1:2379"
    assert opts["--initial-cluster"] == "imagegate=http://127.0.0.1:2380"


def test_apiserver_argv():
    pki = SDIR / "pki"
    argv = k8s_config.apiserver_argv(BINS, pki, PORTS)
    assert argv[0] == str(BINS / "kube-apiserver")
    assert _flag(argv, "--etcd-servers") == "http://127.0.0.1:2379"
    assert _flag(argv, "--secure-port") == "6443" and _flag(argv, "--bind-address") == "127.0.0.1"
    assert _flag(argv, "--client-ca-file") == f"{pki}/ca.crt"
    assert _flag(argv, "--service-cluster-ip-range") == "10.214.0.0/24"
    assert "PodSecurity" in _flag(argv, "--enable-admission-plugins").split(",")
    assert _flag(argv, "--enable-admission-plugins").endswith(",Priority,ResourceQuota")
    assert "--allow-privileged=false" in argv and "--endpoint-reconciler-type=none" in argv


def test_control_plane_and_kubelet_argv():
    pki = SDIR / "pki"
    cm = k8s_config.controller_manager_argv(BINS, SDIR, pki)
    assert cm[0].endswith("/kube-controller-manager")
    assert _flag(cm, "--kubeconfig") == f"{SDIR}/controller-manager.kubeconfig"
    assert _flag(cm, "--secure-port") == "0" and _flag(cm, "--root-ca-file") == f"{pki}/ca.crt"
    sched = k8s_config.scheduler_argv(BINS, SDIR, SDIR / "scheduler.yaml")
    assert _flag(sched, "--config") == f"{SDIR}/scheduler.yaml" and _flag(sched, "--secure-port") == "0"
    kubelet = k8s_config.kubelet_argv(BINS, SDIR)
    assert _flag(kubelet, "--hostname-override") == "127.0.0.1"
    assert _flag(kubelet, "--pod-infra-container-image") == "imagegate.local/pause:3.9"
    assert _flag(kubelet, "--root-dir") == f"{SDIR}/kubelet/root"
    assert k8s_config.containerd_argv("/usr/bin/containerd", SDIR) == [
        "/usr/bin/containerd", "--config", f"{SDIR}/containerd/config.toml", "--log-level", "info"
    ]


def test_service_ip_and_certificates():
    assert k8s_config.service_ip() == "10.214.0.1"
    subj, usage, sans = k8s_pki.CERTS["apiserver"]
    assert usage == "serverAuth" and "IP:10.214.0.1" in sans.split(",") and "DNS:kubernetes.default.svc" in sans
    assert k8s_pki.CERTS["kubelet"][0] == "/O=system:nodes/CN=system:node:127.0.0.1"
    assert k8s_pki.CERTS["admin"] == ("/O=system:masters/CN=imagegate-admin", "clientAuth", None)
    assert k8s_pki.cert_extensions("clientAuth") == (
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
    )
    assert k8s_pki.cert_extensions("serverAuth", "IP:127.0.0.1").endswith("\nsubjectAltName=IP:127.0.0.1\n")


# --- the Go build ---------------------------------------------------------------------------------

KUBERNETES_GOMOD = """module k8s.io/kubernetes

go 1.20

require (
\tk8s.io/api v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tgithub.com/x/y => github.com/x/y v1.0.0
)
"""


def test_wrapper_module():
    staging = k8s_binaries.staging_modules(KUBERNETES_GOMOD)
    assert staging == ["k8s.io/api", "k8s.io/client-go"]
    gomod = k8s_binaries.wrapper_gomod(staging)
    assert "module imagegate.local/k8sbuild\n" in gomod and "require k8s.io/kubernetes v1.28.15\n" in gomod
    assert "\tk8s.io/client-go => k8s.io/client-go v0.28.15\n" in gomod
    tools = k8s_binaries.tools_go()
    assert tools.startswith("//go:build tools\n") and '\t_ "k8s.io/kubernetes/cmd/kubelet"\n' in tools


def test_ldflags():
    flags = shlex.split(k8s_binaries.ldflags())
    assert flags[:2] == ["-s", "-w"]
    assert "k8s.io/component-base/version.gitVersion=v1.28.15" in flags
    assert "k8s.io/client-go/pkg/version.gitMinor=28" in flags


def test_binaries_ok(tmp_path):
    assert not k8s_binaries.binaries_ok(tmp_path)
    for b in k8s_binaries.BINARIES:
        (tmp_path / b).write_text("")
        (tmp_path / b).chmod(0o755)
    (tmp_path / "build.json").write_text(json.dumps({"version": "v1.28.15"}))
    assert k8s_binaries.binaries_ok(tmp_path)
    (tmp_path / "build.json").write_text(json.dumps({"version": "v1.27.0"}))
    assert not k8s_binaries.binaries_ok(tmp_path)


def test_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("IMAGEGATE_CACHE_DIR", str(tmp_path))
    assert k8s_binaries.version_dir() == tmp_path / "k8s" / "v1.28.15"
    assert k8s_binaries.go_env()["GOMODCACHE"] == str(tmp_path / "k8s" / "gomod")


# --- pause image -----------------------------------------------------------------------------------


def test_pause_oci_archive_is_consistent_and_reproducible(tmp_path):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    k8s_pause.write_oci_archive(a, b"\x7fELF pause")
    k8s_pause.write_oci_archive(b, b"\x7fELF pause")
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tf:
        def read(name: str) -> bytes:
            return tf.extractfile(name).read()

        def blob(digest: str) -> bytes:
            data = read("blobs/sha256/" + digest.split(":", 1)[1])
            assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
            return data

        assert json.loads(read("oci-layout")) == {"imageLayoutVersion": "1.0.0"}
        (entry,) = json.loads(read("index.json"))["manifests"]
        assert entry["annotations"]["io.containerd.image.name"] == "imagegate.local/pause:3.9"
        manifest = json.loads(blob(entry["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        (layer,) = manifest["layers"]
        layer_bytes = blob(layer["digest"])
        assert layer["size"] == len(layer_bytes)
        assert config["rootfs"]["diff_ids"] == [layer["digest"]]  # an uncompressed layer: diff id == digest
        assert config["config"] == {"Entrypoint": ["/pause"], "User": "65535:65535", "WorkingDir": "/"}
    with tarfile.open(fileobj=io.BytesIO(layer_bytes)) as ltf:
        (member,) = ltf.getmembers()
        assert (member.name, member.mode, member.mtime) == ("pause", 0o755, k8s_pause.TAR_MTIME)
        assert ltf.extractfile(member).read() == b"\x7fELF pause"


# --- state, env, registries ------------------------------------------------------------------------


def _cluster_state(sdir: Path) -> dict:
    return {
        "version": 1, "state_dir": str(sdir), "namespace": "imagegate", "server": "https://127.0.0.1:6443",
        "binaries": {"bin_dir": str(BINS)}, "procs": {},
        "registries": [{"addr": "127.0.0.1:5001", "scheme": "https", "ca": "/c"},
                       {"addr": "127.0.0.1:5000", "scheme": "http"}],
    }


def test_k8s_state_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEGATE_K8S_DIR", str(tmp_path))
    sdir = k8s_state.state_dir_from(None)
    k8s_state.save_state(sdir, _cluster_state(sdir))
    loaded = k8s_state.load_state()
    env = {}
    text = (sdir / k8s_state.ENV_FILE).read_text()
    assert text.startswith("# imagegate Kubernetes test cluster - written by scripts/k8s.py up\n")
    for line in text.splitlines()[1:]:
        key, _, value = line.removeprefix("export ").partition("=")
        (env[key],) = shlex.split(value)
    assert env == loaded["env"]
    assert list(env)[0] == "KUBECONFIG" and env["KUBECONFIG"] == f"{sdir}/admin.kubeconfig"
    assert env["IMAGEGATE_K8S_REGISTRY"] == "127.0.0.1:5000"  # the first plain-http one
    assert env["IMAGEGATE_K8S_KUBECTL"] == str(BINS / "kubectl")
    assert env["IMAGEGATE_K8S_CONTAINERD_ADDRESS"] == f"{sdir}/containerd/containerd.sock"
    assert (env["IMAGEGATE_K8S_NODE"], env["IMAGEGATE_K8S_VERSION"]) == ("127.0.0.1", "v1.28.15")


def test_k8s_env_before_the_build():
    env = k8s_state.k8s_env({"state_dir": "/s"})
    assert env["IMAGEGATE_K8S_KUBECTL"] == env["IMAGEGATE_K8S_REGISTRY"] == env["IMAGEGATE_K8S_SERVER"] == ""


def test_k8s_load_state_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="start the cluster with: python scripts/k8s.py up"):
        k8s_state.load_state(tmp_path)


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], {}, []),
        (["h:1"], {"IMAGEGATE_REGISTRY": "h:1"}, [{"addr": "h:1", "scheme": "http"}]),
        (["x:9"], {"IMAGEGATE_REGISTRY": "h:1", "IMAGEGATE_AUTH_REGISTRY": "h:2", "IMAGEGATE_AUTH_CA": "/ca"},
         [{"addr": "x:9", "scheme": "http"}, {"addr": "h:1", "scheme": "http"},
          {"addr": "h:2", "scheme": "https", "ca": "/ca"}]),
        ([], {"IMAGEGATE_AUTH_REGISTRY": "h:2"}, []),  # no CA: not pullable over TLS
    ],
)
def test_registries_from(args, env, expected):
    assert k8s_cluster.registries_from(args, env) == expected


# --- health, teardown parsers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "ready"),
    [
        (None, False),
        ({}, False),
        ({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}, False),
        ({"status": {"conditions": [{"type": "MemoryPressure", "status": "True"},
                                    {"type": "Ready", "status": "True"}]}}, True),
    ],
)
def test_node_is_ready(node, ready):
    assert k8s_api.node_is_ready(node) is ready


def test_mountinfo_points():
    info = (
        "22 1 0:21 / /tmp rw - tmpfs tmpfs rw\n"
        "30 22 0:40 / /tmp/igk8s/containerd/state/x/rootfs rw - overlay overlay rw\n"
        "31 30 0:41 / /tmp/igk8s/containerd/state/x/rootfs/dev/shm rw - tmpfs shm rw\n"
        "32 22 0:42 / /tmp/igk8s2/other rw - tmpfs tmpfs rw\n"
        "33 22 0:43 / /var/run/netns/cni-1 rw - nsfs nsfs rw\n"
        "34 22 0:44 / /tmp/igk8s/with\\040space rw - tmpfs tmpfs rw\n"
    )
    assert k8s_teardown.mountinfo_points(info, ["/tmp/igk8s", "/var/run/netns/cni-1"]) == [
        "/tmp/igk8s/containerd/state/x/rootfs/dev/shm",
        "/tmp/igk8s/containerd/state/x/rootfs",
        "/var/run/netns/cni-1",
        "/tmp/igk8s/with space",
    ]


@pytest.mark.parametrize(
    ("cmd", "ours"),
    [
        (["/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "x", "-address", "/s/c.sock"], True),
        (["/usr/bin/containerd-shim-runc-v2", "-address", "/run/containerd/containerd.sock"], False),
        (["/usr/bin/containerd-shim-runc-v2", "-address"], False),
        (["/usr/bin/sleep", "-address", "/s/c.sock"], False),
        ([], False),
    ],
)
def test_is_shim_of(cmd, ours):
    assert k8s_teardown.is_shim_of(cmd, "/s/c.sock") is ours


def test_running_tasks():
    out = "TASK    PID     STATUS\nabc     123     RUNNING\ndef     0       STOPPED\nghi     7       PAUSED\n"
    assert [line.split()[0] for line in k8s_teardown.running_tasks(out)] == ["abc", "ghi"]
    assert k8s_teardown.running_tasks("TASK PID STATUS\n") == []


def test_network_namespaces():
    info = {"Spec": {"linux": {"namespaces": [
        {"type": "pid"},
        {"type": "network", "path": "/var/run/netns/cni-1"},
        {"type": "network", "path": "/s/containerd/state/netns/cni-2"},
        {"type": "network", "path": "/proc/1/ns/net"},
    ]}}}
    assert k8s_teardown.network_namespaces(json.dumps(info), Path("/s")) == {
        "/var/run/netns/cni-1", "/s/containerd/state/netns/cni-2"
    }
    assert k8s_teardown.network_namespaces("not json", Path("/s")) == set()


@pytest.mark.parametrize(("cap_eff", "lacks"), [("000001ffffffffff", False), ("00000000a80425fb", True)])
def test_lacks_cap(cap_eff, lacks):
    status = f"Name:\tpython\nCapInh:\t0000000000000000\nCapEff:\t{cap_eff}\n"
    assert k8s_host.lacks_cap(status, 24) is lacks


def test_sysctl_path():
    assert k8s_host.sysctl_path("vm.overcommit_memory") == Path("/proc/sys/vm/overcommit_memory")


def test_parser_defaults(monkeypatch):
    monkeypatch.delenv("IMAGEGATE_K8S_NAMESPACE", raising=False)
    args = k8s_cli.build_parser().parse_args(["up", "--registry", "h:1", "--registry", "h:2"])
    assert (args.namespace, args.registry, args.timeout, args.keep_on_failure) == (
        "imagegate", ["h:1", "h:2"], 180.0, False
    )
    monkeypatch.setenv("IMAGEGATE_K8S_NAMESPACE", "other")
    assert k8s_cli.build_parser().parse_args(["up"]).namespace == "other"
    assert k8s_cli.build_parser().parse_args(["build", "--state-dir", "/x"]).state_dir == "/x"
