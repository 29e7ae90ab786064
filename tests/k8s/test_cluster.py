"""The local cluster runs restricted pods from the local registry by digest, and enforces Pod Security.

Needs ``python scripts/stack.py up`` and ``python scripts/k8s.py up``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from .conftest import K8sCluster, PodRunner, job_pod, unique

pytestmark = pytest.mark.k8s


def test_node_is_ready_and_namespace_enforces_restricted(k8s_cluster: K8sCluster) -> None:
    core = k8s_cluster.core()
    node = core.read_node(k8s_cluster.node)
    assert node.status.node_info.kubelet_version == k8s_cluster.env["IMAGEGATE_K8S_VERSION"]
    assert node.status.node_info.container_runtime_version.startswith("containerd://1.6")
    assert {a.address for a in node.status.addresses} == {"127.0.0.1"}  # nothing off loopback
    labels = core.read_namespace(k8s_cluster.namespace).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce-version"] == "latest"
    core.read_namespaced_service_account("default", k8s_cluster.namespace)


def test_restricted_pod_by_digest_runs_and_logs_are_readable(
    k8s_pods: PodRunner, nonroot_image: str
) -> None:
    name = unique("ok")
    k8s_pods.create(job_pod(name, nonroot_image, ["sh", "-c", "echo hello-from-k8s; id -u; id -g"]))
    pod = k8s_pods.wait_finished(name)
    assert pod.status.phase == "Succeeded", pod.status
    status = pod.status.container_statuses[0]
    assert status.state.terminated.exit_code == 0
    # Pulled by exactly that digest. The repository in imageID is containerd's first name for that content:
    # another repository pushed earlier with the same bytes (the same Dockerfile) is reported instead.
    registry = nonroot_image.split("/", 1)[0]
    assert status.image_id.endswith("@" + nonroot_image.split("@", 1)[1]), status.image_id
    assert status.image_id.startswith(registry + "/"), status.image_id
    assert k8s_pods.logs(name).split() == ["hello-from-k8s", "10001", "0"]


def test_nonzero_exit_makes_the_pod_failed(k8s_pods: PodRunner, nonroot_image: str) -> None:
    name = unique("fail")
    k8s_pods.create(job_pod(name, nonroot_image, ["sh", "-c", "echo about-to-fail; exit 3"]))
    pod = k8s_pods.wait_finished(name)
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3
    assert terminated.reason == "Error"
    assert "about-to-fail" in k8s_pods.logs(name)


def test_exec_into_a_restricted_pod_works(k8s_pods: PodRunner, k8s_cluster: K8sCluster, nonroot_image: str) -> None:
    """Exec goes API server -> kubelet -> containerd's stream server (what the provider's XCom sidecar read uses)."""
    from kubernetes.stream import stream

    name = unique("exec")
    k8s_pods.create(job_pod(name, nonroot_image, ["sh", "-c", "echo exec-ok-$(id -u) > /tmp/out; sleep 120"]))
    k8s_pods.wait_running(name)
    out = stream(k8s_cluster.core().connect_get_namespaced_pod_exec, name, k8s_cluster.namespace,
                 command=["cat", "/tmp/out"], stderr=True, stdin=False, stdout=True, tty=False)
    assert out.strip() == "exec-ok-10001"


def test_restricted_namespace_rejects_the_provider_default_pod_for_a_root_image(
    k8s_pods: PodRunner, k8s_cluster: K8sCluster, root_image: str
) -> None:
    """A pod rendered with no securityContext (what a provider sends by default) is refused at admission."""
    name = unique("root")
    with pytest.raises(client.ApiException) as caught:
        k8s_pods.create(job_pod(name, root_image, ["true"], restricted=False))
    assert caught.value.status == 403
    body: dict[str, Any] = json.loads(caught.value.body)
    assert body["reason"] == "Forbidden"
    message = body["message"]
    assert f'pods "{name}" is forbidden: violates PodSecurity "restricted:latest"' in message
    for violation in ("allowPrivilegeEscalation != false", "unrestricted capabilities", "runAsNonRoot != true",
                      "seccompProfile"):
        assert violation in message, message
    # Nothing was created.
    names = [p.metadata.name for p in k8s_cluster.core().list_namespaced_pod(k8s_cluster.namespace).items]
    assert name not in names


def test_restricted_namespace_admits_our_pod_spec(k8s_cluster: K8sCluster, nonroot_image: str) -> None:
    """Server-side dry run: the restricted spec passes admission, the default spec does not (same image)."""
    core = k8s_cluster.core()
    ok = core.create_namespaced_pod(k8s_cluster.namespace, job_pod(unique("dry"), nonroot_image, ["true"]),
                                    dry_run="All")
    assert ok.metadata.uid  # admitted (dry run: nothing stored)
    with pytest.raises(client.ApiException) as caught:
        core.create_namespaced_pod(k8s_cluster.namespace,
                                   job_pod(unique("dry"), nonroot_image, ["true"], restricted=False), dry_run="All")
    assert caught.value.status == 403 and "PodSecurity" in caught.value.body


def test_root_image_with_restricted_context_is_only_stopped_by_the_kubelet(
    k8s_pods: PodRunner, root_image: str
) -> None:
    """Admission cannot see the image's USER: a root image with runAsNonRoot is admitted, then never starts.

    This is the gap imagegate's pre-launch check closes: the cluster only notices on the node, after the pod
    was created and scheduled.
    """
    name = unique("rootctx")
    k8s_pods.create(job_pod(name, root_image, ["true"]))
    reason = k8s_pods.wait_waiting_reason(name)
    assert reason.startswith("CreateContainerConfigError"), reason
    assert "runAsNonRoot and image will run as root" in reason
