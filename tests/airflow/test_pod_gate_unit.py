"""ImagegateKubernetesPodOperator and the cluster policy's pod_mutation_hook without a cluster or the stack.

The provider's real operator code runs (``build_pod_request_obj``, ``execute_sync``/``execute_async``, its
callbacks, ``reconcile_pods``) on the kubernetes client's models; images come from the in-process fake
registry; only the Kubernetes API calls (create, read, list, delete) are stubbed, and they record what
would have reached the API server.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

import imagegate
from imagegate import DockerConfig, RegistryClient
from tests.support.fakeregistry import FakeRegistry
from tests.support.oci import make_image

HOST = "registry.test"
ETL = f"{HOST}/team/etl:1.0.0"
ROOT = f"{HOST}/team/root:1.0.0"


class Created(Exception):
    """Raised by the stubbed create call once it has recorded the pod: the test needs nothing after it."""


class FakeApi:
    """The CoreV1Api calls the operator makes; the API server "stores" what was created as it was sent."""

    def __init__(self, listed: list[Any] | None = None) -> None:
        self.listed = listed or []
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.patched: list[str] = []

    def create_pod(self, pod: Any) -> None:  # PodManager.create_pod
        from airflow_plugin.kubernetes import to_dict

        self.created.append(to_dict(pod))
        raise Created

    def list_namespaced_pod(self, namespace: str, label_selector: str = "") -> Any:
        return SimpleNamespace(items=list(self.listed))

    def read_namespaced_pod(self, name: str, namespace: str) -> Any:
        return next(p for p in self.listed if p.metadata.name == name)

    def delete_namespaced_pod(self, name: str, namespace: str, **kwargs: Any) -> None:
        self.deleted.append(name)

    def patch_namespaced_pod(self, name: str, namespace: str, body: Any) -> None:
        self.patched.append(name)


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeRegistry]:
    """Every registry request of this process goes to the fake registry; no policy file is found."""
    from imagegate import _api

    reg = FakeRegistry()
    reg.put_image("team/etl", make_image(user="10001"), tag="1.0.0")
    reg.put_image("team/root", make_image(user="0"), tag="1.0.0")
    client = RegistryClient(transport=reg.transport, docker_config=DockerConfig({}))
    monkeypatch.setitem(_api._clients, (), client)
    monkeypatch.delenv("AIRFLOW__IMAGEGATE__POLICY", raising=False)
    monkeypatch.chdir(tmp_path)
    yield reg


def operator(**kwargs: Any) -> Any:
    from airflow_plugin import ImagegateKubernetesPodOperator

    kwargs.setdefault("task_id", "t")
    kwargs.setdefault("image", ETL)
    kwargs.setdefault("namespace", "jobs")
    kwargs.setdefault("policy", imagegate.Policy())
    return ImagegateKubernetesPodOperator(**kwargs)


def wire(op: Any, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stub the operator's API clients (cached properties) and its clean-up (it would call the API too)."""
    op.__dict__["client"] = api
    op.__dict__["pod_manager"] = api
    op.__dict__["hook"] = SimpleNamespace(is_in_cluster=False, get_namespace=lambda: "jobs", core_v1_client=api)
    monkeypatch.setattr(type(op), "post_complete_action", lambda self, **kwargs: None)


def context() -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="d", task_id="t", run_id="manual__1", map_index=-1, try_number=1,
                         xcom_push=lambda **kwargs: None)
    return {"ti": ti, "run_id": ti.run_id, "dag": SimpleNamespace(dag_id="d")}


def tamper(change: Any) -> type:
    """A provider callback that changes the pod request after the gate, before the create call."""
    from airflow.providers.cncf.kubernetes.callbacks import KubernetesPodOperatorCallback

    class Tamper(KubernetesPodOperatorCallback):
        @staticmethod
        def on_pod_manifest_created(*, pod_request: Any, **kwargs: Any) -> None:
            change(pod_request)

    return Tamper


# -- 1. the pod request is always the operator's own, and checked right before the create call ------------------


def test_a_gated_pod_reaches_the_create_call_pinned_and_hardened(monkeypatch: pytest.MonkeyPatch,
                                                                 registry: FakeRegistry) -> None:
    op = operator()
    api = FakeApi()
    wire(op, api, monkeypatch)
    with pytest.raises(Created):
        op.execute_sync(context())
    [pod] = api.created
    digest = registry.repositories["team/etl"].tags["1.0.0"]
    assert pod["spec"]["containers"][0]["image"] == f"{HOST}/team/etl@{digest}"
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    assert imagegate.restricted_violations(pod) == []


@pytest.mark.parametrize("path", ["execute_sync", "execute_async"])
@pytest.mark.parametrize("attribute", ["pod_request_obj", "pod"])
def test_a_preset_pod_request_or_pod_is_refused(monkeypatch: pytest.MonkeyPatch, path: str, attribute: str) -> None:
    from kubernetes.client import models as k8s

    from airflow_plugin.kubernetes import PresetPodRefused

    evil = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p", namespace="jobs"),
                     spec=k8s.V1PodSpec(containers=[k8s.V1Container(
                         name="base", image="docker.io/evil:latest",
                         security_context=k8s.V1SecurityContext(privileged=True, run_as_user=0))]))
    op = operator()
    api = FakeApi()
    wire(op, api, monkeypatch)
    setattr(op, attribute, evil)
    with pytest.raises(PresetPodRefused) as caught:
        getattr(op, path)(context())
    assert caught.value.option == attribute and "pod_template_dict" in str(caught.value)
    assert api.created == [] and op.imagegate_report is None  # refused before anything, not gated and launched


def test_no_pod_is_created_without_a_plan_for_this_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes.client import models as k8s

    from airflow_plugin.kubernetes import PresetPodRefused

    op = operator()
    api = FakeApi()
    wire(op, api, monkeypatch)
    pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p", namespace="jobs"),
                    spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base", image="docker.io/evil:latest")]))
    with pytest.raises(PresetPodRefused, match="no imagegate plan"):
        op.get_or_create_pod(pod, context())
    assert api.created == []


def _image(pod: Any) -> None:
    pod.spec.containers[0].image = "docker.io/evil@sha256:" + "1" * 64


def _privileged(pod: Any) -> None:
    pod.spec.containers[0].security_context.privileged = True


def _host_pid(pod: Any) -> None:
    pod.spec.host_pid = True


def _root(pod: Any) -> None:
    pod.spec.containers[0].security_context.run_as_user = 0


@pytest.mark.parametrize(("change", "harden", "error", "says"), [
    (_image, True, "LaunchMismatch", "docker.io/evil"),
    (_privileged, True, "PodSecurityViolation", "privileged must be false"),
    (_host_pid, True, "PodSecurityViolation", "spec.hostPID"),
    (_root, True, "PodSecurityViolation", "not the user imagegate checked"),
    (_root, False, "HardeningViolation", "not the user imagegate checked"),  # harden=False: still never root
])
def test_a_callback_that_changes_the_pod_after_the_gate_creates_nothing(
    monkeypatch: pytest.MonkeyPatch, change: Any, harden: bool, error: str, says: str
) -> None:
    import airflow_plugin

    op = operator(harden=harden, callbacks=[tamper(change)],
                  container_security_context=None if harden else {"runAsUser": 10001})
    api = FakeApi()
    wire(op, api, monkeypatch)
    with pytest.raises(getattr(airflow_plugin, error), match=says):
        op.execute_sync(context())
    assert api.created == []


# -- 2. the cluster policy trusts no annotation ---------------------------------------------------------------


def test_the_hook_checks_a_plain_pod_whatever_its_annotations_say(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from airflow_plugin import ImageRefused, cluster_policy

    monkeypatch.setenv(cluster_policy.ENV, "enforce")
    forged = {"imagegate.dev/pinned": "x", "imagegate.dev/images": '{"base": "x"}'}
    plain = KubernetesPodOperator(task_id="c", image=ROOT, namespace="jobs", annotations=forged)
    with pytest.raises(ImageRefused, match="non-root"):
        plain.build_pod_request_obj(dry_run=True)  # the provider calls pod_mutation_hook at the end
    pod = KubernetesPodOperator(task_id="c", image=ETL, namespace="jobs", annotations=forged).build_pod_request_obj(
        dry_run=True)
    assert pod.spec.containers[0].image.startswith(f"{HOST}/team/etl@sha256:")
    assert pod.metadata.annotations["imagegate.dev/pinned"].startswith(ETL + "@sha256:")  # ours, not the forged one
    pod.spec.containers[0].image = ROOT  # a pod pinned already is checked again, by what it runs now
    with pytest.raises(ImageRefused, match="non-root"):
        cluster_policy.pod_mutation_hook(pod)


def test_the_hook_leaves_only_the_pod_imagegates_operator_is_building(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from airflow_plugin import cluster_policy

    monkeypatch.setenv(cluster_policy.ENV, "enforce")
    hooked: list[str] = []
    policy = cluster_policy._policy
    monkeypatch.setattr(cluster_policy, "_policy", lambda *a: hooked.append("checked") or policy(*a))
    KubernetesPodOperator(task_id="c", image=ETL, namespace="jobs").build_pod_request_obj(dry_run=True)
    assert hooked == ["checked"]
    hooked.clear()
    pod = operator().build_pod_request_obj(dry_run=True)  # gates every container itself, right after the hook
    assert hooked == [] and pod.spec.containers[0].image.startswith(f"{HOST}/team/etl@sha256:")
    assert not cluster_policy._GATED_BUILD.get()  # reset once the build returned


def test_a_plain_operator_cannot_declare_itself_gated() -> None:
    from airflow.providers.docker.operators.docker import DockerOperator

    from airflow_plugin import ImagegateKubernetesPodOperator, cluster_policy

    class Sneaky(DockerOperator):
        imagegate_gated = True

    class Mine(ImagegateKubernetesPodOperator):
        pass

    assert cluster_policy._kind(Sneaky(task_id="s", image="x")) == "docker"
    assert cluster_policy._kind(Mine(task_id="m", image="x")) is None


# -- 3. the task's image is checked as the user the built pod runs it as ----------------------------------------


@pytest.mark.parametrize("where", ["pod_template_dict", "full_pod_spec", "pod_template_file"])
@pytest.mark.parametrize("harden", [True, False])
def test_a_root_run_as_user_from_a_template_is_checked(tmp_path: Path, where: str, harden: bool) -> None:
    import yaml
    from kubernetes.client import models as k8s

    from airflow_plugin import ImageRefused

    template = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                "spec": {"containers": [{"name": "base", "image": "ignored", "securityContext": {"runAsUser": 0}}]}}
    if where == "pod_template_file":
        path = tmp_path / "pod.yaml"
        path.write_text(yaml.safe_dump(template))
        value: Any = str(path)
    elif where == "full_pod_spec":
        value = k8s.V1Pod(spec=k8s.V1PodSpec(containers=[k8s.V1Container(
            name="base", security_context=k8s.V1SecurityContext(run_as_user=0))]))
    else:
        value = copy.deepcopy(template)
    op = operator(harden=harden, **{where: value})
    with pytest.raises(ImageRefused) as caught:
        op.build_pod_request_obj(dry_run=True)
    assert [r.check for r in caught.value.report.failures] == ["non-root"]


def test_a_template_user_is_the_user_checked_and_run(registry: FakeRegistry) -> None:
    template = {"spec": {"securityContext": {"runAsUser": 4242}, "containers": [{"name": "base", "image": "x"}]}}
    op = operator(harden=False, pod_template_dict=template)
    pod = op.build_pod_request_obj(dry_run=True)
    assert op.imagegate_plan.user == "4242" and op.imagegate_report.user == "4242"
    assert pod.spec.security_context.run_as_user == 4242


# -- 4. reattaching holds an earlier try's pod to the plan's profile ------------------------------------------------


def test_a_retry_does_not_reattach_to_a_pod_that_breaks_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_plugin.kubernetes import to_dict, to_model

    op = operator()
    api = FakeApi()
    wire(op, api, monkeypatch)
    ctx = context()
    request = op.build_pod_request_obj(ctx)
    earlier = to_dict(request)  # an earlier try's pod: the same images, changed by a callback before it was created
    earlier["metadata"]["name"] = "earlier"
    earlier["spec"]["hostPID"] = True
    earlier["spec"]["containers"][0]["securityContext"]["privileged"] = True
    earlier["status"] = {"phase": "Running"}
    api.listed = [to_model(earlier, "V1Pod")]
    with pytest.raises(Created):
        op.get_or_create_pod(request, ctx)
    [verdict] = op.imagegate_settled
    assert verdict.action == "remove" and "hostPID" in verdict.reason
    assert api.deleted == ["earlier"] and len(api.created) == 1
