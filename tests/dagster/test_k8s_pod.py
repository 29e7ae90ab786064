"""The pod ``ImagegateK8sClient`` would submit, rendered by dagster-k8s's own ``build_pod_body``.

No cluster is needed: the image is resolved and checked against the real local
registry, the pod is rendered through the same seam ``PipesK8sClient.run`` uses,
validated against the Kubernetes OpenAPI schema (kubernetes-validate) and held
to the restricted Pod Security Standard.
"""

import kubernetes
import imagegate
import kubernetes_validate
import pytest

from dagster_integration import ImagegateDagsterError, ImagegateResource, ImageRefused
from tests.integration.conftest import build_and_push, unique

pytestmark = pytest.mark.integration

K8S_VERSION = "1.30.0"

@pytest.fixture(scope="module")
def named_user_image(stack, docker_client) -> str:
    """``USER app``: fine for Docker, but the kubelet cannot verify runAsNonRoot for a name."""
    repository = f"dagster/{unique('named')}"
    build_and_push(docker_client, stack, "FROM {base}\nUSER app\n", repository, "1.0.0")
    return f"{stack.registry}/{repository}:1.0.0"

def _client():
    from dagster_integration import ImagegateK8sClient

    return ImagegateK8sClient(ImagegateResource(), env={"LOG_LEVEL": "info"})

def _as_dict(pod) -> dict:
    return kubernetes.client.ApiClient().sanitize_for_serialization(pod)

def assert_restricted(pod: dict) -> None:
    """The restricted Pod Security Standard's controls that a pod spec decides."""
    spec = pod["spec"]
    pod_ctx = spec.get("securityContext", {})
    assert pod_ctx.get("runAsNonRoot") is True
    assert pod_ctx.get("seccompProfile", {}).get("type") in ("RuntimeDefault", "Localhost")
    assert pod_ctx.get("runAsUser", 1) != 0
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    for container in spec["containers"] + spec.get("initContainers", []):
        ctx = container.get("securityContext", {})
        assert ctx.get("allowPrivilegeEscalation") is False
        assert ctx.get("capabilities", {}).get("drop") == ["ALL"]
        assert not ctx.get("privileged")
        assert set(ctx.get("capabilities", {}).get("add") or []) <= {"NET_BIND_SERVICE"}
        assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True

def test_rendered_pod_is_valid_restricted_and_pinned(wordcount_image):
    client = _client()
    gate = client.preflight(None, image=wordcount_image)
    pod = _as_dict(client.render_pod(gate, command=["python3", "/app/job.py"], base_pod_spec={"serviceAccountName": "etl"}))
    pod.update(apiVersion="v1", kind="Pod")
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    assert_restricted(pod)
    (container,) = pod["spec"]["containers"]
    assert container["image"] == gate.launch and "@sha256:" in gate.launch and ":0.1.0" not in gate.launch
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # from the image's numeric USER 10001:10001
    assert pod["spec"]["securityContext"]["runAsGroup"] == 10001
    assert pod["spec"]["serviceAccountName"] == "etl"  # the user's spec is kept
    assert pod["spec"]["restartPolicy"] == "Never"
    assert {"name": "LOG_LEVEL", "value": "info"} in container["env"]
    assert gate.report.backend == "kubernetes"

def test_camel_case_base_spec_is_merged_not_duplicated(wordcount_image):
    client = _client()
    gate = client.preflight(None, image=wordcount_image)
    base = {"securityContext": {"fsGroup": 2000}, "containers": [{"name": "job", "resources": {"limits": {"memory": "64Mi"}}}]}
    pod = _as_dict(client.render_pod(gate, base_pod_spec=base))
    pod.update(apiVersion="v1", kind="Pod")
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    assert_restricted(pod)
    assert pod["spec"]["securityContext"]["fsGroup"] == 2000
    assert pod["spec"]["containers"][0]["resources"] == {"limits": {"memory": "64Mi"}}

def test_contradicting_base_spec_is_an_error_naming_the_key(wordcount_image):
    client = _client()
    gate = client.preflight(None, image=wordcount_image)
    with pytest.raises(ImagegateDagsterError) as info:
        client.render_pod(gate, base_pod_spec={"containers": [{"securityContext": {"allowPrivilegeEscalation": True}}]})
    assert info.value.setting == "base_pod_spec"
    assert "containers[dagster-pipes-execution].securityContext.allowPrivilegeEscalation must be false" in str(info.value)

def test_named_user_is_refused_for_kubernetes_before_any_pod(named_user_image):
    with pytest.raises(ImageRefused) as info:
        _client().preflight(None, image=named_user_image)
    result = info.value.report.result("non-root")
    assert result.outcome.value == "fail" and "numeric" in (result.fix or "") + result.message


def test_refused_asset_never_reaches_the_cluster(named_user_image, tmp_path, dagster_home):
    """The gate runs before PipesK8sClient loads any kubeconfig: a refusal is an ImageRefused,
    not a connection error, and the declared checks are recorded."""
    import dagster as dg

    from dagster_integration import ImagegateK8sClient, image_check_specs

    missing = tmp_path / "no-such-kubeconfig"

    @dg.asset(check_specs=image_check_specs("named_job"))
    def named_job(context: dg.AssetExecutionContext, k8s_pipes: ImagegateK8sClient):
        return k8s_pipes.run(context=context, image=named_user_image).get_materialize_result()

    instance = dg.DagsterInstance.ephemeral()
    client = ImagegateK8sClient(ImagegateResource(), kubeconfig_file=str(missing))
    result = dg.materialize([named_job], resources={"k8s_pipes": client}, instance=instance, raise_on_error=False)
    (failure,) = result.get_step_failure_events()
    assert failure.event_specific_data.error.cls_name == "ImageRefused"
    stored = {
        r.event_log_entry.dagster_event.event_specific_data.check_name: r.event_log_entry.dagster_event.event_specific_data.passed
        for r in instance.get_records_for_run(result.run_id).records
        if r.event_log_entry.dagster_event and r.event_log_entry.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert stored == {"image_pinned": True, "image_non_root": False}

@pytest.mark.parametrize("base", [
    None,
    {"securityContext": {"fsGroup": 2000}, "containers": [{"name": "job", "resources": {"limits": {"memory": "64Mi"}}}]},
    {"serviceAccountName": "etl", "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "etl"}]},
])
def test_the_body_dagster_k8s_builds_is_the_plan(wordcount_image, base):
    """``run()`` holds the body to its plan right before the create: dagster-k8s's own rendering (env, its
    labels, ``restartPolicy``, the snake/camel round trip) must keep every image, user and control."""
    client = _client()
    gate = client.preflight(None, image=wordcount_image)
    planned = client.plan_pod(gate, command=["python3", "/app/job.py"], base_pod_spec=base, launch_id="f" * 32)
    body = _as_dict(client.pod_body(planned, pod_name="p", env_vars={"DAGSTER_PIPES_CONTEXT": "e30="}))
    planned.verify_request(body)  # raises on any difference
    body["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    with pytest.raises(imagegate.HardeningError, match="allowPrivilegeEscalation"):
        planned.verify_request(body)
