"""Fixtures for tests against the real single-node cluster started by ``scripts/k8s.py up``.

Contract (for these tests and for the operator end-to-end tests that reuse them):

* The cluster writes ``$IMAGEGATE_K8S_DIR/k8s.json`` (default ``/tmp/imagegate-k8s``); its ``env`` holds
  ``KUBECONFIG`` (admin, mode 0600), ``IMAGEGATE_K8S_NAMESPACE`` (enforces the ``restricted`` Pod Security
  Standard), ``IMAGEGATE_K8S_CONTEXT``, ``IMAGEGATE_K8S_REGISTRY`` (pulled over plain http) and more; the same
  values are in ``k8s.env`` for shells (``eval "$(python scripts/k8s.py env)"``).
* ``k8s_cluster`` (session) loads the kubeconfig into a kubernetes ``ApiClient`` and checks the node is Ready.
  Where the cluster is missing the tests skip, except under ``CI=true``, where it is a failure that says how to
  start it.
* ``k8s_pods`` creates pods in the test namespace and deletes every one of them after the test, waiting until
  the API no longer has it.
* ``k8s_services`` (session) needs the cluster services and the spark-operator (``k8s.py up --spark``, or
  ``IMAGEGATE_K8S_SPARK=1``): kube-proxy, CoreDNS and the controller; ``spark_image`` is imagegate's Spark image
  (``localstack.spark_parts``) pushed to the stack's registry, as ``REGISTRY/REPO@DIGEST``.

The stack fixtures (``stack``, ``docker_client``, ``build_and_push``, ``unique``) are the ones of
tests/integration/conftest.py, imported rather than copied.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.conftest import Stack, build_and_push, docker_client, stack, unique  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[2]
K8S_START_HINT = "start it with: python scripts/k8s.py up"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "k8s: needs the local Kubernetes cluster (scripts/k8s.py up)")


def k8s_unavailable(what: str) -> None:
    message = f"{what} is not available; {K8S_START_HINT}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@dataclass(frozen=True)
class K8sCluster:
    kubeconfig: Path
    namespace: str  # enforces the restricted Pod Security Standard
    node: str
    registry: str  # 127.0.0.1:PORT, pulled over plain http by the cluster's containerd
    env: dict[str, str]
    api_client: Any = field(repr=False)

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)


def load_k8s_env() -> dict[str, str] | None:
    state = Path(os.environ.get("IMAGEGATE_K8S_DIR", "/tmp/imagegate-k8s")) / "k8s.json"
    if not state.is_file():
        return None
    env: dict[str, str] = json.loads(state.read_text())["env"]
    return env


@pytest.fixture(scope="session")
def k8s_cluster() -> Iterator[K8sCluster]:
    from kubernetes import client, config
    from urllib3.exceptions import HTTPError

    env = load_k8s_env()
    if env is None:
        k8s_unavailable("the Kubernetes test cluster (no k8s.json)")
        raise AssertionError("unreachable")
    kubeconfig = Path(env["KUBECONFIG"])
    try:
        api_client = config.new_client_from_config(config_file=str(kubeconfig), context=env["IMAGEGATE_K8S_CONTEXT"])
        node = client.CoreV1Api(api_client).read_node(env["IMAGEGATE_K8S_NODE"], _request_timeout=10)
    except (OSError, HTTPError, client.ApiException, config.ConfigException) as exc:
        k8s_unavailable(f"the Kubernetes API server at {env.get('IMAGEGATE_K8S_SERVER')} ({exc})")
        raise AssertionError("unreachable") from exc
    ready = [c for c in node.status.conditions or [] if c.type == "Ready"]
    if not ready or ready[0].status != "True":
        k8s_unavailable(f"a Ready node (node {node.metadata.name}: {ready})")
    yield K8sCluster(
        kubeconfig=kubeconfig,
        namespace=env["IMAGEGATE_K8S_NAMESPACE"],
        node=env["IMAGEGATE_K8S_NODE"],
        registry=env["IMAGEGATE_K8S_REGISTRY"],
        env=env,
        api_client=api_client,
    )
    api_client.close()


@pytest.fixture(scope="session")
def k8s_services(k8s_cluster: K8sCluster) -> K8sCluster:
    """The cluster, checked to run kube-proxy, CoreDNS and the spark-operator (``k8s.py up --spark``)."""
    if k8s_cluster.env.get("IMAGEGATE_K8S_SPARK") != "1":
        k8s_unavailable("the cluster services and the spark-operator (the cluster runs without --spark); "
                        "IMAGEGATE_K8S_SPARK=1 python scripts/k8s.py up")
    state = json.loads((Path(k8s_cluster.env["IMAGEGATE_K8S_DIR"]) / "k8s.json").read_text())
    from localstack.k8s_cluster import cluster_healthy  # the same check as `k8s.py status`

    healthy, why = cluster_healthy(state)
    if not healthy:
        k8s_unavailable(f"the cluster services ({why})")
    return k8s_cluster


@pytest.fixture(scope="session")
def spark_image(k8s_services: K8sCluster, stack: Any, docker_client: Any) -> str:
    """imagegate's Spark image (built once by localstack.spark_parts), pushed to the stack's registry; returns
    REGISTRY/REPO@DIGEST. The tag is the image's build key, so an unchanged image is pushed once."""
    from localstack import spark_parts
    from localstack.host import StackError

    _require_pulls_from(k8s_services, stack.registry)
    try:
        local = spark_parts.ensure_spark_image(stack.env.get("DOCKER_HOST"))
    except StackError as exc:
        k8s_unavailable(f"the Spark image ({exc})")
        raise AssertionError("unreachable") from exc
    image = docker_client.images.get(local)
    name, tag = f"{stack.registry}/imagegate-test/spark", image.labels[spark_parts.IMAGE_KEY_LABEL]
    image.tag(name, tag)
    digest = None
    for line in docker_client.images.push(name, tag=tag, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(line["error"])
        digest = (line.get("aux") or {}).get("Digest", digest)
    assert digest, "docker push reported no digest"
    docker_client.images.remove(f"{name}:{tag}", noprune=True)
    return f"{name}@{digest}"


def restricted_security_context() -> dict[str, Any]:
    """Container securityContext that satisfies the restricted Pod Security Standard."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def job_pod(name: str, image: str, command: list[str], *, restricted: bool = True) -> dict[str, Any]:
    """A one-shot pod (restartPolicy Never); restricted=False renders it like a provider's default pod."""
    container: dict[str, Any] = {"name": "base", "image": image, "command": command}
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if restricted:
        container["securityContext"] = restricted_security_context()
        spec["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "imagegate-test"}},
            "spec": spec}


class PodRunner:
    """Creates pods in the test namespace, waits for them, and deletes them all at teardown."""

    def __init__(self, cluster: K8sCluster):
        self.cluster = cluster
        self.core = cluster.core()
        self.created: list[str] = []

    def create(self, manifest: dict[str, Any]) -> Any:
        pod = self.core.create_namespaced_pod(self.cluster.namespace, manifest)
        self.created.append(pod.metadata.name)
        return pod

    def wait_finished(self, name: str, timeout: float = 120.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            pod = self.core.read_namespaced_pod(name, self.cluster.namespace)
            if pod.status.phase in ("Succeeded", "Failed"):
                return pod
            if time.monotonic() > deadline:
                raise AssertionError(f"pod {name} did not finish in {timeout:.0f} s: {pod.status}")
            time.sleep(0.25)

    def wait_waiting_reason(self, name: str, timeout: float = 120.0) -> str:
        """Wait until the container is stuck waiting with a reason other than ContainerCreating; return it."""
        deadline = time.monotonic() + timeout
        while True:
            pod = self.core.read_namespaced_pod(name, self.cluster.namespace)
            for st in pod.status.container_statuses or []:
                waiting = st.state.waiting
                if waiting and waiting.reason not in (None, "ContainerCreating"):
                    return str(waiting.reason) + ": " + str(waiting.message)
            if time.monotonic() > deadline:
                raise AssertionError(f"pod {name} never reported a waiting reason: {pod.status}")
            time.sleep(0.25)

    def wait_running(self, name: str, timeout: float = 120.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            pod = self.core.read_namespaced_pod(name, self.cluster.namespace)
            if pod.status.phase == "Running" and all(s.ready for s in pod.status.container_statuses or []):
                return pod
            if pod.status.phase in ("Succeeded", "Failed") or time.monotonic() > deadline:
                raise AssertionError(f"pod {name} is not running: {pod.status}")
            time.sleep(0.25)

    def logs(self, name: str) -> str:
        # Raw bytes: kubernetes client 36 renders the deserialized log as a bytes repr ("b'...'").
        resp = self.core.read_namespaced_pod_log(name, self.cluster.namespace, _preload_content=False)
        return bytes(resp.data).decode()

    def delete_all(self, timeout: float = 60.0) -> None:
        from kubernetes import client

        for name in self.created:
            try:
                self.core.delete_namespaced_pod(name, self.cluster.namespace, grace_period_seconds=0)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
        deadline = time.monotonic() + timeout
        for name in self.created:
            while True:
                try:
                    self.core.read_namespaced_pod(name, self.cluster.namespace)
                except client.ApiException as exc:
                    if exc.status == 404:
                        break
                    raise
                if time.monotonic() > deadline:
                    raise AssertionError(f"pod {name} was not deleted within {timeout:.0f} s")
                time.sleep(0.25)


@pytest.fixture
def k8s_pods(k8s_cluster: K8sCluster) -> Iterator[PodRunner]:
    runner = PodRunner(k8s_cluster)
    yield runner
    runner.delete_all()


def _require_pulls_from(cluster: K8sCluster, registry: str) -> None:
    hosts = Path(cluster.env["IMAGEGATE_K8S_DIR"]) / "containerd" / "certs.d" / registry / "hosts.toml"
    if not hosts.is_file():
        pytest.fail(f"the cluster is not configured to pull from the stack's registry {registry} ({hosts} is "
                    "missing; the stack moved?): re-run python scripts/k8s.py up", pytrace=False)


@pytest.fixture(scope="session")
def nonroot_image(k8s_cluster: K8sCluster, stack: Any, docker_client: Any) -> str:
    """The local busybox base plus ``USER 10001``, pushed to the local registry; returns REGISTRY/REPO@DIGEST."""
    _require_pulls_from(k8s_cluster, stack.registry)
    repo = unique("k8s-nonroot")
    digest = build_and_push(docker_client, stack, "FROM {base}\nUSER 10001\n", repo, "v1")
    return f"{stack.registry}/{repo}@{digest}"


@pytest.fixture(scope="session")
def root_image(k8s_cluster: K8sCluster, stack: Any) -> str:
    """The busybox base by digest (no USER: runs as root)."""
    _require_pulls_from(k8s_cluster, stack.registry)
    ref = stack.env.get("IMAGEGATE_BUSYBOX_IMAGE_DIGEST")
    if not ref:
        pytest.fail("the stack did not export IMAGEGATE_BUSYBOX_IMAGE_DIGEST; re-run: python scripts/stack.py up")
    return str(ref)
