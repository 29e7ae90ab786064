"""``ImagegateKubernetesPodOperator``: the provider's KubernetesPodOperator behind imagegate's gate.

The gate runs in ``build_pod_request_obj()``, which both the synchronous and the deferrable
paths call and which ``dry_run()`` prints, so a dry run shows and enforces it. The task's image
is planned first (``imagegate.plan_launch``); the provider then builds its pod (templates,
``full_pod_spec``, ``pod_template_file``, the XCom sidecar), and ``imagegate.plan_pod`` checks and
pins **every** container of it — init containers, sidecars, the XCom sidecar — and applies the
restricted Pod Security Standard (user values win, then the pod must pass it). After creation the
pod the API server stored is compared with the plan, and each container's ``imageID`` once it runs.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Sequence

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

from airflow_plugin import _gate
from airflow_plugin.cluster_policy import SIDECAR_FIX, SIDECAR_NAME, SIDECAR_ROLE
from airflow_plugin.links import LaunchedImageLink

if TYPE_CHECKING:
    from kubernetes.client import models as k8s

    from imagegate import LaunchPlan, PodPlan, Policy, Report


class _Json:
    """What ``kubernetes.client.ApiClient.deserialize`` reads: an object whose ``data`` is JSON text."""

    def __init__(self, value: Any) -> None:
        self.data = json.dumps(value)


def to_model(value: Any, model: str) -> Any:
    """A Kubernetes model from a camelCase dict as in pod YAML (``{"name": "data", "emptyDir": {}}``)."""
    if not isinstance(value, dict):
        return value
    from kubernetes.client import ApiClient

    return ApiClient().deserialize(_Json(value), model)


def to_dict(value: Any) -> Any:
    """A Kubernetes model (or a dict in either spelling) as the camelCase dict the API server reads."""
    if value is None:
        return {}
    from kubernetes.client import ApiClient

    if isinstance(value, dict):
        return {_camel(k): v for k, v in value.items()}
    return ApiClient().sanitize_for_serialization(value)


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _camel_keys(value: Any) -> Any:
    """A security context given as a dict in either spelling, camelCase throughout (it has no free-form maps)."""
    if isinstance(value, dict):
        return {_camel(str(k)): _camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel_keys(v) for v in value]
    return value


_CONTEXTS = (
    ("security_context", "V1PodSecurityContext"),
    ("container_security_context", "V1SecurityContext"),
    ("xcom_sidecar_container_security_context", "V1SecurityContext"),
)


class ImagegateKubernetesPodOperator(KubernetesPodOperator):
    """Run a pod from checked, digest-pinned images under the restricted Pod Security Standard.

    Give exactly one of ``image``, ``lock_name`` or ``job_dir`` (with ``repository``). Every other
    argument is the provider's. User-given ``security_context`` / ``container_security_context`` /
    ``xcom_sidecar_container_security_context`` are kept where they satisfy the restricted profile
    and refused, naming the field, where they do not (``harden=False`` launches without the profile).

    XCom ``imagegate``: the pin, the pod name and the report (pushed before the pod is created),
    with the report of every other container's image under ``helpers``.
    """

    template_fields: Sequence[str] = (*KubernetesPodOperator.template_fields, "lock_name", "job_dir", "repository")
    operator_extra_links = (LaunchedImageLink(),)
    imagegate_gated = True
    imagegate_report: Report | None
    imagegate_plan: LaunchPlan | None
    imagegate_pod_plan: PodPlan | None

    def __init__(
        self,
        *,
        image: str | None = None,
        lock_name: str | None = None,
        job_dir: str | None = None,
        repository: str | None = None,
        lock_file: str | os.PathLike[str] | None = None,
        build_options: dict[str, Any] | None = None,
        policy: Policy | str | os.PathLike[str] | None = None,
        harden: bool = True,
        **kwargs: Any,
    ) -> None:
        for key, model in (("volumes", "V1Volume"), ("volume_mounts", "V1VolumeMount")):
            if kwargs.get(key):
                kwargs[key] = [to_model(item, model) for item in kwargs[key]]
        for key, model in _CONTEXTS:  # dicts in either spelling become models, so the provider keeps every key
            if isinstance(kwargs.get(key), dict):
                kwargs[key] = to_model(_camel_keys(kwargs[key]), model)
        super().__init__(image=image, **kwargs)
        _gate.init_attributes(
            self,
            lock_name=lock_name,
            job_dir=job_dir,
            repository=repository,
            lock_file=lock_file,
            build_options=dict(build_options or {}),
            policy=policy,
            harden=harden,
            imagegate_report=None,
            imagegate_plan=None,
            imagegate_pod_plan=None,
        )
        _gate.validate_source(image, lock_name, job_dir, repository)

    @property
    def imagegate_sidecar_report(self) -> Report | None:
        """The report of the XCom sidecar's image (``do_xcom_push=True``), once the pod was built."""
        plan = self.imagegate_pod_plan.plans.get(SIDECAR_NAME) if self.imagegate_pod_plan else None
        return plan.report if plan is not None else None

    def _user_override(self) -> str | None:
        """``runAsUser`` given for the task's container (its own, else the pod's): checked instead of USER."""
        pod = {"spec": {"securityContext": to_dict(self.security_context),
                        "containers": [{"name": self.base_container_name,
                                        "securityContext": to_dict(self.container_security_context)}]}}
        return _gate._core().pod_user(pod, self.base_container_name)

    def gate(self, context: Any = None) -> Report:
        """Resolve (or build) and check the task's image for Kubernetes; raise ImageRefused when a check fails."""
        if self.imagegate_plan is None:  # checked once per task instance (dry_run, then the pod)
            policy = _gate.load_policy(self.policy, _gate.dag_folder(self))
            self._imagegate_policy = policy
            self.imagegate_plan = _gate.plan(self, context, backend="kubernetes", user=self._user_override(), policy=policy)
            self.imagegate_report = self.imagegate_plan.report
        return self.imagegate_plan.report

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> k8s.V1Pod:
        report = self.gate(context)
        plan = self.imagegate_plan
        assert plan is not None
        if dry_run:
            print(report.render_text())
        core = _gate._core()
        self.image = plan.launch
        # Annotated before the provider builds the pod, so the cluster policy's pod_mutation_hook (which the
        # provider calls at the end of building it) sees a pod this operator gates itself.
        self.annotations = {**(self.annotations or {}), "imagegate.dev/pinned": str(plan.pinned)}
        pod = super().build_pod_request_obj(context, dry_run=dry_run)
        with _gate.airflow_errors(context, task_report=report):
            planned = core.plan_pod(
                to_dict(pod), policy=self._imagegate_policy, primary=plan, primary_container=self.base_container_name,
                harden=self.harden, roles={SIDECAR_NAME: SIDECAR_ROLE}, fixes={SIDECAR_NAME: SIDECAR_FIX},
                orchestrator=_gate.ORCHESTRATOR, task=_gate.task_label(self),
            )
        helpers = {p.role or name: p.report for name, p in planned.plans.items() if name != self.base_container_name}
        for role, helper in helpers.items():
            _gate.log_report(self.log, helper, role)
            if dry_run:
                print(f"[{role}]\n{helper.render_text()}")
        self.imagegate_pod_plan = planned
        result = to_model(planned.pod, "V1Pod")
        _gate.push_record(context, report, {"pod": result.metadata.name, "image": plan.launch}, helpers=helpers)
        return result

    # -- launch verification ----------------------------------------------------------------

    def get_or_create_pod(self, pod_request_obj: k8s.V1Pod, context: Any) -> k8s.V1Pod:
        """The provider's, then: the pod the API server stored must run exactly the planned images."""
        pod = super().get_or_create_pod(pod_request_obj, context)
        self._verify(pod, status=False)
        return pod

    def await_pod_start(self, pod: k8s.V1Pod) -> None:
        """The provider's, then: every started container's ``imageID`` is its planned digest."""
        super().await_pod_start(pod)
        self._verify(pod, status=True)

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> Any:
        """After a deferral (a new operator instance): check the pod's images against its annotations first."""
        try:
            remote = self.hook.get_pod(event["name"], event["namespace"])
        except Exception:  # the provider's own re-entry reports a pod that is gone
            remote = None
        if remote is not None:
            pod = to_dict(remote)
            with _gate.airflow_errors():
                try:
                    _gate._core().verify_pod_images(pod)
                except _gate._core().LaunchMismatch:
                    self.hook.core_v1_client.delete_namespaced_pod(event["name"], event["namespace"])
                    raise
        return super().trigger_reentry(context, event)

    def _verify(self, pod: k8s.V1Pod, *, status: bool) -> None:
        planned = self.imagegate_pod_plan
        if planned is None or pod is None or pod.metadata is None:
            return
        remote = self.client.read_namespaced_pod(pod.metadata.name, pod.metadata.namespace)
        try:
            with _gate.airflow_errors():
                (planned.verify_status if status else planned.verify_spec)(to_dict(remote))
        except _gate.LaunchMismatch:
            self.client.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace)
            raise
