"""Dagster's Kubernetes Pipes client, gated by imagegate, on the real test cluster.

Needs the local stack and cluster (``python scripts/stack.py up && python scripts/k8s.py up``) and the
``dagster`` extra.
"""

import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import dagster as dg
import pytest

from dagster_integration import ImagegateK8sClient, ImagegateResource
from tests.k8s.conftest import K8sCluster

pytestmark = [pytest.mark.k8s, pytest.mark.integration]


@pytest.fixture
def dagster_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="dagster-home-") as home:
        monkeypatch.setenv("DAGSTER_HOME", home)
        Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        yield Path(home)


def _client(cluster: K8sCluster, **kwargs: Any) -> ImagegateK8sClient:
    return ImagegateK8sClient(
        ImagegateResource(),
        load_incluster_config=False,
        kubeconfig_file=str(cluster.kubeconfig),
        kube_context=cluster.env["IMAGEGATE_K8S_CONTEXT"],
        poll_interval=0.5,
        **kwargs,
    )


def _asset(name: str, image: str, namespace: str, **run_kwargs: Any) -> Any:
    @dg.asset(name=name)
    def _a(context: dg.AssetExecutionContext, k8s_pipes: ImagegateK8sClient):  # dagster reads these annotations
        return k8s_pipes.run(
            context=context, image=image, namespace=namespace,
            command=["sh", "-c", "echo hello-from-the-pod; id -u"], **run_kwargs,
        ).get_materialize_result()

    return _a


def _pods(cluster: K8sCluster) -> set[str]:
    return {p.metadata.name for p in cluster.core().list_namespaced_pod(cluster.namespace).items}


def test_pod_runs_the_checked_digest_under_the_restricted_profile(
    dagster_home: Path, k8s_cluster: K8sCluster, nonroot_image: str
) -> None:
    before = _pods(k8s_cluster)
    asset = _asset("on_cluster", nonroot_image, k8s_cluster.namespace, delete_pod_on_completion=False)
    result = dg.materialize([asset], resources={"k8s_pipes": _client(k8s_cluster)})
    assert result.success
    metadata = result.asset_materializations_for_node("on_cluster")[0].metadata
    assert metadata["imagegate/pinned"].value == nonroot_image
    assert metadata["imagegate/check/non-root"].value.startswith("pass: ")
    (name,) = _pods(k8s_cluster) - before
    try:
        pod = k8s_cluster.core().read_namespaced_pod(name, k8s_cluster.namespace)
        container = pod.spec.containers[0]
        assert container.image == nonroot_image
        assert pod.status.container_statuses[0].image_id.endswith(nonroot_image.split("@")[1])
        assert pod.spec.security_context.run_as_non_root and pod.spec.security_context.run_as_user == 10001
        assert container.security_context.allow_privilege_escalation is False
        assert container.security_context.capabilities.drop == ["ALL"]
        deadline = time.monotonic() + 60  # the pod's phase trails its container's termination a little
        while pod.status.phase not in ("Succeeded", "Failed") and time.monotonic() < deadline:
            time.sleep(0.5)
            pod = k8s_cluster.core().read_namespaced_pod(name, k8s_cluster.namespace)
        assert pod.status.phase == "Succeeded"
        assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    finally:
        k8s_cluster.core().delete_namespaced_pod(name, k8s_cluster.namespace, grace_period_seconds=0)


def test_refused_image_creates_no_pod(dagster_home: Path, k8s_cluster: K8sCluster, root_image: str) -> None:
    before = _pods(k8s_cluster)
    asset = _asset("refused_on_cluster", root_image, k8s_cluster.namespace)
    result = dg.materialize([asset], resources={"k8s_pipes": _client(k8s_cluster)}, raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("refused_on_cluster")
    assert failure is not None and "non-root" in str(failure.error)
    assert _pods(k8s_cluster) == before
