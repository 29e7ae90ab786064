"""ImagegateKubernetesPodOperator without a cluster: the pod from build_pod_request_obj()/dry_run(),
validated against the Kubernetes OpenAPI schema (kubernetes-validate) and the restricted PSS rules."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest

from imagegate import restricted_violations
from tests.airflow.conftest import push_image
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

K8S_VERSION = "1.30.0"


def sidecar_connection(image: str) -> str:
    """``AIRFLOW_CONN_KUBERNETES_DEFAULT`` naming the provider's XCom sidecar image (its default, alpine, is not reachable here)."""
    return json.dumps({"conn_type": "kubernetes", "extra": {"xcom_sidecar_container_image": image}})


@pytest.fixture(autouse=True)
def _sidecar_by_tag(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> str:
    """The busybox base by its tag: the operator has to resolve, check and pin it like the task's image."""
    image = stack.env["IMAGEGATE_BUSYBOX_IMAGE"]
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", sidecar_connection(image))
    return image


def pod_of(**kwargs: Any) -> dict[str, Any]:
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator

    from airflow_plugin import ImagegateKubernetesPodOperator

    kwargs.setdefault("task_id", "k")
    kwargs.setdefault("namespace", "jobs")
    op = ImagegateKubernetesPodOperator(**kwargs)
    return PodGenerator.serialize_pod(op.build_pod_request_obj(dry_run=True))


def assert_restricted(pod: dict[str, Any]) -> None:
    """The restricted profile, spelled out (restricted_violations is tested separately below)."""
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"].get("runAsUser", 1) != 0
    for container in spec["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], container["name"]
        assert sc["runAsNonRoot"] is True
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not sc.get("privileged")
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    assert restricted_violations(pod) == []


@pytest.mark.parametrize("deferrable", [False, True])
def test_pod_is_pinned_restricted_and_valid(stack: Stack, wordcount: str, deferrable: bool) -> None:
    pod = pod_of(image=wordcount, do_xcom_push=True, deferrable=deferrable, arguments=["/app/job.py"])
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    base, sidecar = pod["spec"]["containers"]
    digest = wordcount.split("@")[1]
    assert base["image"] == f"{stack.registry}/examples/wordcount@{digest}"
    assert base["imagePullPolicy"] == "IfNotPresent"
    assert sidecar["name"] == "airflow-xcom-sidecar"
    assert sidecar["image"] == stack.env["IMAGEGATE_BUSYBOX_IMAGE_DIGEST"]  # given by tag, launched by digest
    assert sidecar["imagePullPolicy"] == "IfNotPresent"
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # the image's numeric USER
    assert pod["spec"]["securityContext"]["runAsGroup"] == 10001
    assert pod["metadata"]["annotations"]["imagegate.dev/pinned"] == wordcount
    assert_restricted(pod)


def test_dry_run_prints_the_report_and_the_pod(stack: Stack, wordcount: str, capsys: pytest.CaptureFixture[str]) -> None:
    from airflow_plugin import ImagegateKubernetesPodOperator

    ImagegateKubernetesPodOperator(task_id="d", image=wordcount, namespace="jobs").dry_run()
    out = capsys.readouterr().out
    assert "verdict  passed" in out and "runs as '10001:10001'" in out
    assert "image_pull_policy: IfNotPresent" in out and "@sha256:" in out


def test_the_sidecar_image_is_checked_and_refusing_it_creates_nothing(
    docker_client: Any, stack: Stack, repo: str, wordcount: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_plugin import ImageRefused, ImagegateKubernetesPodOperator

    push_image(docker_client, stack, repo, "latest", "sidecar")
    sidecar = f"{stack.registry}/{repo}:latest"
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", sidecar_connection(sidecar))
    op = ImagegateKubernetesPodOperator(task_id="s", image=wordcount, namespace="jobs", do_xcom_push=True)
    with pytest.raises(ImageRefused) as caught:
        op.build_pod_request_obj(dry_run=True)
    assert caught.value.role == "XCom sidecar"
    assert {r.check for r in caught.value.report.failures} == {"pinned"}
    assert caught.value.report.reference.endswith(f"{repo}:latest")
    assert "xcom_sidecar_container_image" in str(caught.value)  # the fix names the setting
    assert op.imagegate_report is not None and op.imagegate_report.passed  # the task's own image passed
    # Without do_xcom_push the provider adds no sidecar, so there is nothing more to check.
    pod = pod_of(image=wordcount, do_xcom_push=False)
    assert [c["name"] for c in pod["spec"]["containers"]] == ["base"]


def test_a_policy_waiver_lets_the_sidecar_pass(
    docker_client: Any, stack: Stack, repo: str, wordcount: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import imagegate

    digest = push_image(docker_client, stack, repo, "latest", "sidecar-waived")
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", sidecar_connection(f"{stack.registry}/{repo}:latest"))
    policy = imagegate.Policy.from_mapping({"waivers": [
        {"reference": f"{stack.registry}/{repo}", "checks": ["pinned"], "reason": "vendor sidecar, pinned next sprint"}
    ]})
    pod = pod_of(image=wordcount, do_xcom_push=True, policy=policy)
    assert pod["spec"]["containers"][1]["image"] == f"{stack.registry}/{repo}@{digest}"


@pytest.mark.parametrize(
    ("user", "tag", "failed"),
    [("0", "1.0.0-root", {"non-root"}), ("app", "1.0.0-named", {"non-root"}), ("1000", "latest", {"pinned"})],
)
def test_dry_run_enforces_the_checks(docker_client: Any, stack: Stack, repo: str, user: str, tag: str, failed: set[str]) -> None:
    from airflow_plugin import ImageRefused, ImagegateKubernetesPodOperator

    push_image(docker_client, stack, repo, tag, "k8s", user=user)
    with pytest.raises(ImageRefused) as caught:
        ImagegateKubernetesPodOperator(task_id="r", image=f"{stack.registry}/{repo}:{tag}", namespace="jobs").dry_run()
    assert {r.check for r in caught.value.report.failures} == failed


def test_user_overrides_merge_and_weakening_is_refused(wordcount: str) -> None:
    from airflow_plugin import PodSecurityViolation

    pod = pod_of(image=wordcount, container_security_context={"readOnlyRootFilesystem": True})
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert_restricted(pod)
    with pytest.raises(PodSecurityViolation, match="allowPrivilegeEscalation must be false"):
        pod_of(image=wordcount, container_security_context={"allow_privilege_escalation": True})
    relaxed = pod_of(image=wordcount, harden=False)
    assert restricted_violations(relaxed), "harden=False leaves the provider's pod as it was"


def test_a_root_run_as_user_override_is_refused(wordcount: str) -> None:
    from airflow_plugin import ImageRefused

    with pytest.raises(ImageRefused, match="runtime user override"):
        pod_of(image=wordcount, security_context={"runAsUser": 0})


def test_container_task_maps_shared_options_to_the_pod(wordcount: str) -> None:
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator

    from airflow_plugin import ContainerTask

    op = ContainerTask(
        task_id="c",
        image=wordcount,
        command="/data/input.txt --verbose",
        environment={"MODE": "fast"},
        user=10002,
        backend="kubernetes",
        kubernetes_options={
            "namespace": "jobs",
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "wordcount-data"}}],
            "volume_mounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
        },
    )
    pod = PodGenerator.serialize_pod(op.build_pod_request_obj(dry_run=True))
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    container = pod["spec"]["containers"][0]
    assert container["args"] == ["/data/input.txt", "--verbose"]
    assert {"name": "MODE", "value": "fast"} in container["env"]
    assert pod["spec"]["securityContext"]["runAsUser"] == 10002
    assert container["volumeMounts"][0]["mountPath"] == "/data"
    assert_restricted(pod)
