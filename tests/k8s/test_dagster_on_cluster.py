"""Dagster's Kubernetes Pipes client, gated by imagegate, on the real test cluster.

Needs the local stack and cluster (``python scripts/stack.py up && python scripts/k8s.py up``) and the
``dagster`` extra: the Pipes client, the ``ContainerAssetComponent`` with ``backend: kubernetes``, a build
asset feeding a pod, and the Kubernetes examples through the ``dagster`` CLI.
"""

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import dagster as dg
import pytest

from dagster_integration import ImagegateK8sClient, ImagegateResource, image_build_asset, image_check_specs
from tests.dagster.conftest import WORDCOUNT, load_component_defs, wordcount_image  # noqa: F401 - a fixture
from tests.k8s.conftest import K8sCluster, _require_pulls_from, unique

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
    assert _pods(k8s_cluster) - before == set()  # no pod created (an earlier test's may still be going away)


def _tamper(how: str, other: str) -> Any:
    """Change a pod body the way a subclass (or a wrapper around dagster-k8s) could, after the plan."""

    def change(body: Any) -> None:
        if how == "image":
            body.spec.containers[0].image = other
        elif how == "user":
            body.spec.security_context.run_as_user = 0
            body.spec.containers[0].security_context.run_as_user = 0
            body.spec.containers[0].security_context.run_as_non_root = False
            body.spec.security_context.run_as_non_root = False
        elif how == "privileged":
            body.spec.containers[0].security_context.privileged = True
        elif how == "name":  # a pod the step would neither follow nor delete
            body.metadata.name += "-elsewhere"
        else:  # another launch's pod (its label is how a retry finds and judges it)
            body.metadata.labels["imagegate.dev/launch"] = "0" * 32

    return change


@pytest.mark.parametrize(("how", "says"), [
    ("image", "not the checked image"), ("user", "runAsUser"), ("privileged", "privileged"),
    ("launch", "not this launch's"), ("name", "-elsewhere', not"),
])
def test_a_pod_body_changed_after_the_plan_is_never_created(
    dagster_home: Path, k8s_cluster: K8sCluster, nonroot_image: str, root_image: str, how: str, says: str
) -> None:
    """dagster-k8s builds the body from the plan; what reaches ``create_namespaced_pod`` is held to the plan
    first, so a changed body creates no pod at all (no kubelet ever sees it)."""
    change = _tamper(how, root_image)

    class Tampered(ImagegateK8sClient):
        def pod_body(self, planned: Any, **kwargs: Any) -> Any:
            body = super().pod_body(planned, **kwargs)
            change(body)
            return body

    task = f"tampered_{how}"
    watch = PodWatch(k8s_cluster, task)
    before = _pods(k8s_cluster)
    try:
        client = Tampered(ImagegateResource(), load_incluster_config=False, kubeconfig_file=str(k8s_cluster.kubeconfig),
                          kube_context=k8s_cluster.env["IMAGEGATE_K8S_CONTEXT"], poll_interval=0.5)
        result = dg.materialize([_asset(task, nonroot_image, k8s_cluster.namespace)], resources={"k8s_pipes": client},
                                raise_on_error=False)
    finally:
        time.sleep(1)  # room for a (wrongly) created pod's ADDED event to arrive
        seen = watch.finish()
    assert not result.success
    (failure,) = result.get_step_failure_events()
    error = failure.event_specific_data.error
    assert error.cls_name == "LaunchMismatch", error
    assert "no pod was created" in error.message and says in error.message, error.message
    assert seen == {} and _pods(k8s_cluster) - before == set()


# -- the component's Kubernetes backend, a build asset feeding a pod, the examples ----------------------------


class PodWatch:
    """Every change the API server reports for the pods of the given Dagster assets, watched from before
    the materialization until after the pod is gone — an observer independent of the client under test
    (the component and dagster-k8s delete the pod when it completes)."""

    def __init__(self, cluster: K8sCluster, *tasks: str) -> None:
        self.cluster, self.tasks = cluster, set(tasks)
        self.seen: dict[str, list[tuple[str, Any]]] = {}  # pod name -> [(event type, V1Pod)]
        self._stop = threading.Event()
        self._start = cluster.core().list_namespaced_pod(cluster.namespace).metadata.resource_version
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from kubernetes import watch

        version = self._start
        while not self._stop.is_set():
            for event in watch.Watch().stream(
                self.cluster.core().list_namespaced_pod, self.cluster.namespace, resource_version=version,
                label_selector="imagegate.dev/orchestrator=dagster", timeout_seconds=1,
            ):
                pod = event["object"]
                version = pod.metadata.resource_version
                if (pod.metadata.annotations or {}).get("imagegate.dev/task") in self.tasks:
                    self.seen.setdefault(pod.metadata.name, []).append((event["type"], pod))

    def finish(self, timeout: float = 60.0) -> dict[str, list[tuple[str, Any]]]:
        """Wait until every pod seen was deleted (or *timeout*), stop, return what was seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(events[-1][0] != "DELETED" for events in self.seen.values()):
            time.sleep(0.2)
        self._stop.set()
        self._thread.join(10)
        return self.seen


def _terminated(events: list[tuple[str, Any]]) -> Any:
    """The first container status the API server reported as terminated."""
    for _, pod in events:
        for status in pod.status.container_statuses or ():
            if status.state.terminated is not None:
                return status
    raise AssertionError(f"the pod never reported a terminated container: {[t for t, _ in events]}")


def _evaluations(instance: dg.DagsterInstance, run_id: str) -> dict[tuple[str, str], bool]:
    found = {}
    for record in instance.get_records_for_run(run_id).records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            found[(data.asset_key.to_user_string(), data.check_name)] = data.passed
    return found


def _component(tmp_path: Path, cluster: K8sCluster, key: str, image: str) -> dg.Definitions:
    return load_component_defs(tmp_path, f"""
        asset_key: {key}
        image: "{image}"
        backend: kubernetes
        namespace: {cluster.namespace}
        kubeconfig_file: {cluster.kubeconfig}
        kube_context: {cluster.env["IMAGEGATE_K8S_CONTEXT"]}
        poll_interval: 0.5
        command: ["sh", "-c", "echo hello-from-the-component; id -u"]
        checks: [image_pinned, image_non_root]
    """, component=key)


def test_component_with_the_kubernetes_backend_runs_the_pinned_digest(
    dagster_home: Path, k8s_cluster: K8sCluster, nonroot_image: str, tmp_path: Path
) -> None:
    defs = _component(tmp_path, k8s_cluster, "component_on_cluster", nonroot_image)
    instance = dg.DagsterInstance.ephemeral()
    watch = PodWatch(k8s_cluster, "component_on_cluster")
    try:
        result = dg.materialize(list(defs.assets or ()), instance=instance)
    finally:
        seen = watch.finish()
    assert result.success
    metadata = result.asset_materializations_for_node("component_on_cluster")[0].metadata
    assert metadata["imagegate/pinned"].value == nonroot_image
    assert metadata["imagegate/launched"].value == nonroot_image  # REPO@sha256:… (given without a tag)
    assert metadata["imagegate/backend"].value.startswith("kubernetes")
    assert _evaluations(instance, result.run_id) == {
        ("component_on_cluster", "image_pinned"): True, ("component_on_cluster", "image_non_root"): True}

    (events,) = seen.values()  # exactly one pod, created and (by default) deleted after it completed
    assert events[0][0] == "ADDED" and events[-1][0] == "DELETED"
    pod = events[0][1]
    assert [c.image for c in pod.spec.containers] == [nonroot_image]
    assert pod.metadata.annotations["imagegate.dev/pinned"] == nonroot_image
    assert pod.spec.security_context.run_as_non_root and pod.spec.security_context.run_as_user == 10001
    status = _terminated(events)
    assert status.image_id.endswith("@" + nonroot_image.split("@")[1])  # the kubelet ran that digest
    assert status.state.terminated.exit_code == 0


def test_component_with_the_kubernetes_backend_creates_no_pod_for_a_refused_image(
    dagster_home: Path, k8s_cluster: K8sCluster, root_image: str, tmp_path: Path
) -> None:
    defs = _component(tmp_path, k8s_cluster, "component_refused", root_image)
    before = _pods(k8s_cluster)
    instance = dg.DagsterInstance.ephemeral()
    watch = PodWatch(k8s_cluster, "component_refused")
    try:
        result = dg.materialize(list(defs.assets or ()), instance=instance, raise_on_error=False)
    finally:
        time.sleep(1)  # room for a (wrongly) created pod's ADDED event to arrive
        seen = watch.finish()
    (failure,) = result.get_step_failure_events()
    assert failure.event_specific_data.error.cls_name == "ImageRefused"
    assert failure.event_specific_data.user_failure_data.metadata["imagegate/check/non-root"].value.startswith("fail: ")
    assert _evaluations(instance, result.run_id) == {
        ("component_refused", "image_pinned"): True, ("component_refused", "image_non_root"): False}
    assert seen == {} and _pods(k8s_cluster) - before == set()


def test_build_asset_feeds_a_pod_that_runs_the_built_digest(
    dagster_home: Path, k8s_cluster: K8sCluster, stack: Any
) -> None:
    """image_build_asset → a run asset with ImagegateK8sClient, in one run: the pod runs the built digest."""
    _require_pulls_from(k8s_cluster, stack.registry)
    repository = f"{stack.registry}/dagster/{unique('k8sbuild')}"
    gate = ImagegateResource(repository=repository, build_args={"BASE": stack.env["IMAGEGATE_PYTHON_IMAGE_DIGEST"]})
    build = image_build_asset("k8s_job_image", job_directory=WORDCOUNT, backend="kubernetes")

    @dg.asset(check_specs=image_check_specs("k8s_job_run"))
    def k8s_job_run(context: dg.AssetExecutionContext, k8s_pipes: ImagegateK8sClient, k8s_job_image: str):
        return k8s_pipes.run(context=context, image=k8s_job_image, namespace=k8s_cluster.namespace).get_materialize_result()

    instance = dg.DagsterInstance.ephemeral()
    watch = PodWatch(k8s_cluster, "k8s_job_run")
    try:
        result = dg.materialize([build, k8s_job_run], resources={"imagegate": gate, "k8s_pipes": _client(k8s_cluster)},
                                instance=instance)
    finally:
        seen = watch.finish()
    pinned = result.output_for_node("k8s_job_image")
    assert pinned.startswith(repository + ":c-") and "@sha256:" in pinned
    digest = pinned.split("@")[1]
    ran = result.asset_materializations_for_node("k8s_job_run")[0].metadata
    assert ran["imagegate/pinned"].value == pinned and ran["imagegate/launched"].value == f"{repository}@{digest}"
    assert _evaluations(instance, result.run_id) == {
        ("k8s_job_image", "image_pinned"): True, ("k8s_job_image", "image_non_root"): True,
        ("k8s_job_image", "dockerfile_lint"): True,
        ("k8s_job_run", "image_pinned"): True, ("k8s_job_run", "image_non_root"): True,
    }
    (events,) = seen.values()
    assert [c.image for c in events[0][1].spec.containers] == [f"{repository}@{digest}"]
    status = _terminated(events)
    assert status.image_id.endswith("@" + digest) and status.state.terminated.exit_code == 0


def test_the_kubernetes_examples_run_through_the_dagster_cli(
    dagster_home: Path, k8s_cluster: K8sCluster, stack: Any, wordcount_image: str, tmp_path: Path
) -> None:
    """The documented commands: ``wordcount_on_k8s`` (component, backend kubernetes) and
    ``wordcount_image`` → ``wordcount_from_build_on_k8s`` (build asset → pod)."""
    _require_pulls_from(k8s_cluster, stack.registry)
    env = {**os.environ, **stack.env, **k8s_cluster.env, "DAGSTER_HOME": str(dagster_home), "IMAGEGATE_WORDCOUNT_IMAGE": wordcount_image}
    assets = ("wordcount_on_k8s", "wordcount_image", "wordcount_from_build_on_k8s")
    watch = PodWatch(k8s_cluster, "wordcount_on_k8s", "wordcount_from_build_on_k8s")
    try:
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "dagster_integration.examples.wordcount",
             "--select", ",".join(assets)],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
        )
    finally:
        seen = watch.finish()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with dg.DagsterInstance.get() as instance:
        metadata = {}
        for key in assets:
            event = instance.get_latest_materialization_event(dg.AssetKey(key))
            assert event is not None, key
            metadata[key] = event.asset_materialization.metadata  # type: ignore[union-attr]
    assert metadata["wordcount_on_k8s"]["imagegate/pinned"].value.startswith(wordcount_image + "@sha256:")
    assert metadata["wordcount_from_build_on_k8s"]["imagegate/pinned"].value == metadata["wordcount_image"]["imagegate/pinned"].value
    launched = {key: metadata[key]["imagegate/launched"].value for key in ("wordcount_on_k8s", "wordcount_from_build_on_k8s")}
    assert len(seen) == 2
    for events in seen.values():
        pod = events[0][1]
        task = pod.metadata.annotations["imagegate.dev/task"]
        assert [c.image for c in pod.spec.containers] == [launched[task]]
        status = _terminated(events)
        assert status.image_id.endswith("@" + launched[task].split("@")[1]) and status.state.terminated.exit_code == 0
