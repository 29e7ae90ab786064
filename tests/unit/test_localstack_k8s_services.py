"""Pure logic of the cluster services and the spark-operator of ``k8s.py up --spark`` (no root, no cluster)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from localstack import k8s_api, k8s_cli, k8s_config, k8s_services, k8s_spark
from localstack.host import K8sError

SDIR = Path("/tmp/imagegate-k8s")


def test_cni_config_with_services_routes_only_the_service_cidr_through_the_bridge():
    (plugin,) = json.loads(k8s_config.cni_config(SDIR, services=True))["plugins"]
    assert plugin["isGateway"] is True and plugin["hairpinMode"] is True
    assert plugin["isDefaultGateway"] is False and plugin["ipMasq"] is False  # still nothing leaves the machine
    assert plugin["ipam"]["ranges"] == [[{"subnet": "10.213.0.0/24", "gateway": "10.213.0.1"}]]
    assert plugin["ipam"]["routes"] == [{"dst": "10.214.0.0/24", "gw": "10.213.0.1"}]


def test_kubelet_config_cluster_dns_only_with_services():
    assert "clusterDNS" not in json.loads(k8s_config.kubelet_config(SDIR, 1, 2))
    doc = json.loads(k8s_config.kubelet_config(SDIR, 1, 2, k8s_config.DNS_SERVICE_IP))
    assert (doc["clusterDNS"], doc["clusterDomain"]) == (["10.214.0.10"], "cluster.local")


def test_kube_proxy_config_touches_no_kernel_setting():
    doc = json.loads(k8s_config.kube_proxy_config(SDIR, 7001, 7002))
    assert (doc["kind"], doc["mode"], doc["clusterCIDR"]) == ("KubeProxyConfiguration", "iptables", "10.213.0.0/24")
    assert doc["clientConnection"]["kubeconfig"] == f"{SDIR}/kube-proxy.kubeconfig"
    assert (doc["healthzBindAddress"], doc["metricsBindAddress"]) == ("127.0.0.1:7001", "127.0.0.1:7002")
    assert doc["conntrack"] == {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"}
    assert doc["iptables"]["localhostNodePorts"] is False  # no route_localnet
    assert doc["nodePortAddresses"] == ["10.213.0.1/32"]


def test_corefile_binds_the_bridge_and_forwards_nothing():
    text = k8s_config.corefile(SDIR / "coredns.kubeconfig", 8181, 8080)
    assert text.count("bind 10.213.0.1") == 2
    assert f"kubeconfig {SDIR}/coredns.kubeconfig imagegate" in text
    assert "ready 127.0.0.1:8181" in text and "health 127.0.0.1:8080" in text
    assert "forward" not in text and "rcode NXDOMAIN" in text


def test_service_endpoints_are_never_mirrored_and_carry_every_port():
    ports = [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]
    endpoints, slice_ = k8s_config.service_endpoints("kube-dns", "kube-system", "10.213.0.1", ports)
    assert endpoints["metadata"]["labels"] == {"endpointslice.kubernetes.io/skip-mirror": "true"}
    assert endpoints["subsets"] == [{"addresses": [{"ip": "10.213.0.1"}], "ports": ports}]
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "kube-dns"
    assert slice_["endpoints"] == [{"addresses": ["10.213.0.1"], "conditions": {"ready": True}}]
    assert slice_["ports"] == ports
    assert k8s_config.kube_dns_service()["spec"]["clusterIP"] == "10.214.0.10"


def test_apiserver_relay_listens_on_the_bridge_only():
    assert k8s_config.apiserver_relay_argv("/usr/bin/socat", 6443) == [
        "/usr/bin/socat", "TCP-LISTEN:6443,bind=10.213.0.1,fork,reuseaddr", "TCP:127.0.0.1:6443"]


@pytest.mark.parametrize(("kind", "namespace", "path"), [
    ("Endpoints", "default", "/api/v1/namespaces/default/endpoints/x"),
    ("EndpointSlice", "ns", "/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices/x"),
    ("ClusterRole", None, "/apis/rbac.authorization.k8s.io/v1/clusterroles/x"),
    ("RoleBinding", "ns", "/apis/rbac.authorization.k8s.io/v1/namespaces/ns/rolebindings/x"),
])
def test_object_path(kind, namespace, path):
    md = {"name": "x", **({"namespace": namespace} if namespace else {})}
    assert k8s_api.object_path({"kind": kind, "metadata": md}) == path


def test_kube_rules():
    save = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:KUBE-FIREWALL - [0:0]
-A INPUT -j KUBE-FIREWALL
-A FORWARD -i igk8s0 -o igk8s0 -m comment --comment "imagegate-k8s: x" -j ACCEPT
-A FORWARD -j DOCKER-USER
-A KUBE-FIREWALL -m mark --mark 0x8000/0x8000 -j DROP
COMMIT
*nat
:KUBE-MARK-MASQ - [0:0]
-A OUTPUT -m comment --comment "KUBE-ish comment" -j RETURN
COMMIT
"""
    jumps, chains = k8s_services.kube_rules(save)
    assert jumps == [("filter", ["-A", "INPUT", "-j", "KUBE-FIREWALL"])]  # not our rule, not Docker's, not a comment
    assert chains == [("filter", "KUBE-FIREWALL"), ("nat", "KUBE-MARK-MASQ")]
    assert k8s_services.kube_rules("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n") == ([], [])


@pytest.mark.parametrize(("out", "major"), [
    ('openjdk version "17.0.15" 2025-04-15', 17), ('openjdk version "21" 2023-09-19', 21),
    ('java version "1.8.0_402"', 8), ("nothing", None),
])
def test_java_major(out, major):
    assert k8s_spark.java_major(out) == major


def test_operator_argv_and_env():
    argv = k8s_spark.operator_argv("/b/spark-operator", SDIR / "op.kubeconfig", "imagegate", 9999)
    assert argv[:3] == ["/b/spark-operator", "controller", "start"]
    for flag in ("--namespaces=imagegate", "--leader-election=false", "--health-probe-bind-address=127.0.0.1:9999",
                 "--metrics-bind-address=0", "--enable-ui-service=false", f"--kubeconfig={SDIR}/op.kubeconfig"):
        assert flag in argv
    state = {"parts": {"java": "/usr/bin/java", "spark_home": "/c/spark-home"}, "ports": {"apiserver": 6443}}
    env = k8s_spark.operator_env(state, SDIR / "op.kubeconfig", SDIR / "home")
    assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == ("127.0.0.1", "6443")
    assert (env["SPARK_HOME"], env["KUBECONFIG"]) == ("/c/spark-home", f"{SDIR}/op.kubeconfig")


def _kubeconfig_with_key(tmp_path: Path, pem: bytes) -> Path:
    path = tmp_path / "k"
    path.write_text(json.dumps({"users": [{"user": {"client-key-data": base64.b64encode(pem).decode()}}]}))
    return path


def test_check_operator_kubeconfig(tmp_path):
    k8s_spark.check_operator_kubeconfig(_kubeconfig_with_key(tmp_path, b"-----BEGIN EC PRIVATE KEY-----\n"))
    with pytest.raises(K8sError, match="SEC1"):
        k8s_spark.check_operator_kubeconfig(_kubeconfig_with_key(tmp_path, b"-----BEGIN PRIVATE KEY-----\n"))
    with pytest.raises(K8sError, match="missing or unreadable"):
        k8s_spark.check_operator_kubeconfig(tmp_path / "absent")


def test_rbac_keeps_the_driver_in_its_namespace():
    objs = k8s_spark.rbac_objects("imagegate")
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert ("ServiceAccount", "spark") in kinds and ("Role", "spark-driver") in kinds
    binding = next(o for o in objs if o["kind"] == "RoleBinding" and o["metadata"]["name"] == "spark-driver")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "spark", "namespace": "imagegate"}]
    assert not any(o["kind"] == "ClusterRoleBinding" and o["subjects"][0]["name"] == "spark" for o in objs)


def test_spark_flag(monkeypatch):
    monkeypatch.delenv("IMAGEGATE_K8S_SPARK", raising=False)
    assert k8s_cli.build_parser().parse_args(["up"]).spark is False
    assert k8s_cli.build_parser().parse_args(["up", "--spark"]).spark is True
    monkeypatch.setenv("IMAGEGATE_K8S_SPARK", "1")
    assert k8s_cli.build_parser().parse_args(["up"]).spark is True
    assert k8s_cli.build_parser().parse_args(["up", "--no-spark"]).spark is False
    assert k8s_cli.build_parser().parse_args(["build"]).spark is True
