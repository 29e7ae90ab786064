"""The cluster services of ``k8s.py up --spark`` work from inside a pod: cluster DNS (CoreDNS) resolves Services,
kube-proxy routes ClusterIPs (to the API server and to pods), a headless Service resolves to its pod, pods reach
each other, and an unknown name is NXDOMAIN at once.

One restricted probe pod (the stack's python base, run as 10001) runs every check and prints one JSON line; the
tests read it. Needs ``python scripts/stack.py up`` and ``IMAGEGATE_K8S_SPARK=1 python scripts/k8s.py up``.
"""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any, Iterator

import pytest
from kubernetes import client

from .conftest import K8sCluster, PodRunner, job_pod, unique

pytestmark = pytest.mark.k8s

PROBE = r"""
import json, socket, ssl, sys, urllib.request
ns, headless, clusterip = sys.argv[1:4]
out = {"resolv": open("/etc/resolv.conf").read()}

def resolve(name):
    try:
        return {"ips": sorted({a[4][0] for a in socket.getaddrinfo(name, None, socket.AF_INET)})}
    except socket.gaierror as exc:
        return {"error": exc.errno, "name_unknown": exc.errno == socket.EAI_NONAME}

out["kubernetes"] = resolve("kubernetes.default.svc.cluster.local")
out["kubernetes_short"] = resolve("kubernetes.default")  # through the search path
out["headless"] = resolve(f"{headless}.{ns}.svc.cluster.local")
out["clusterip"] = resolve(f"{clusterip}.{ns}.svc.cluster.local")
out["unknown"] = resolve(f"no-such-service.{ns}.svc.cluster.local.")
out["external"] = resolve("example.com.")
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")  # verified TLS: the API server's cert names the service
req = urllib.request.Request("https://kubernetes.default.svc/version",
                             headers={"Authorization": "Bearer " + open(sa + "/token").read().strip()})
out["version"] = json.load(urllib.request.urlopen(req, context=ctx, timeout=20))
for key, url in (("via_headless", f"http://{headless}:8080/index.html"),
                 ("via_clusterip", f"http://{clusterip}.{ns}.svc:80/index.html")):
    try:
        out[key] = urllib.request.urlopen(url, timeout=20).read().decode().strip()
    except OSError as exc:
        out[key] = f"error: {exc}"
print(json.dumps(out))
"""


def _restricted_as(user: int, manifest: dict[str, Any]) -> dict[str, Any]:
    manifest["spec"]["securityContext"]["runAsUser"] = user
    return manifest


def _service(name: str, selector: dict[str, str], *, headless: bool, port: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": selector, "ports": [{"name": "http", "port": port, "targetPort": 8080}]}
    if headless:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def _wait_endpoint(core: Any, name: str, namespace: str, ip: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ep = core.read_namespaced_endpoints(name, namespace)
        if any(a.ip == ip for s in ep.subsets or [] for a in s.addresses or []):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"service {name} never got the endpoint {ip}: {ep.subsets}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def probe(k8s_services: K8sCluster, nonroot_image: str, stack: Any) -> Iterator[dict[str, Any]]:
    """Run a web server pod behind a headless and a ClusterIP Service, then the probe pod; yield its findings
    (plus the server pod's IP and the Services' ClusterIP)."""
    if not stack.env.get("IMAGEGATE_PYTHON_IMAGE_DIGEST"):
        pytest.fail("the stack did not export IMAGEGATE_PYTHON_IMAGE_DIGEST; re-run: python scripts/stack.py up")
    pods = PodRunner(k8s_services)
    core, ns = pods.core, k8s_services.namespace
    app = unique("web")
    headless, clusterip = f"{app}-hl", f"{app}-ip"
    services = []
    try:
        server = job_pod(app, nonroot_image, ["sh", "-c", "mkdir -p /tmp/www && echo served-by-$(hostname) > "
                                               "/tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"])
        server["metadata"]["labels"]["app"] = app
        pods.create(server)
        for svc in (_service(headless, {"app": app}, headless=True, port=8080),
                    _service(clusterip, {"app": app}, headless=False, port=80)):
            core.create_namespaced_service(ns, svc)
            services.append(svc["metadata"]["name"])
        server_ip = pods.wait_running(app).status.pod_ip
        for name in services:
            _wait_endpoint(core, name, ns, server_ip)
        name = unique("probe")
        pods.create(_restricted_as(10001, job_pod(
            name, stack.env["IMAGEGATE_PYTHON_IMAGE_DIGEST"], ["python3", "-c", PROBE, ns, headless, clusterip])))
        pod = pods.wait_finished(name, timeout=120)
        logs = pods.logs(name)
        assert pod.status.phase == "Succeeded", logs
        found = json.loads(logs.strip().splitlines()[-1])
        found.update(server=app, server_ip=server_ip,
                     service_ip=core.read_namespaced_service(clusterip, ns).spec.cluster_ip)
        yield found
    finally:
        for svc_name in services:
            try:
                core.delete_namespaced_service(svc_name, ns)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
        pods.delete_all()


def test_pods_use_the_cluster_dns(k8s_services: K8sCluster, probe: dict[str, Any]) -> None:
    resolv = probe["resolv"].split("\n")
    assert f"nameserver {k8s_services.env['IMAGEGATE_K8S_DNS']}" in resolv
    search = next(line for line in resolv if line.startswith("search ")).split()[1:]
    assert search[:3] == [f"{k8s_services.namespace}.svc.cluster.local", "svc.cluster.local", "cluster.local"]


def test_the_kubernetes_service_resolves_to_its_cluster_ip(k8s_services: K8sCluster, probe: dict[str, Any]) -> None:
    cluster_ip = k8s_services.core().read_namespaced_service("kubernetes", "default").spec.cluster_ip
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(k8s_services.env["IMAGEGATE_K8S_SERVICE_CIDR"])
    assert probe["kubernetes"] == {"ips": [cluster_ip]}
    assert probe["kubernetes_short"] == {"ips": [cluster_ip]}


def test_a_pod_reaches_the_api_server_through_its_cluster_ip(k8s_services: K8sCluster, probe: dict[str, Any]) -> None:
    """Verified TLS to https://kubernetes.default.svc with the pod's service-account token: what a Spark driver does."""
    assert probe["version"]["gitVersion"] == k8s_services.env["IMAGEGATE_K8S_VERSION"]


def test_a_headless_service_resolves_to_its_pod_and_pods_reach_each_other(probe: dict[str, Any]) -> None:
    assert probe["headless"] == {"ips": [probe["server_ip"]]}
    assert probe["via_headless"] == f"served-by-{probe['server']}"  # pod to pod (executors to the driver)


def test_a_cluster_ip_service_routes_to_its_pod(probe: dict[str, Any]) -> None:
    assert probe["clusterip"] == {"ips": [probe["service_ip"]]}
    assert probe["service_ip"] != probe["server_ip"]
    assert probe["via_clusterip"] == f"served-by-{probe['server']}"  # kube-proxy's DNAT, port 80 -> 8080


def test_unknown_names_are_nxdomain_and_nothing_is_forwarded(probe: dict[str, Any]) -> None:
    assert probe["unknown"]["name_unknown"] is True, probe["unknown"]
    assert probe["external"]["name_unknown"] is True, probe["external"]  # no upstream: not even example.com
