"""``ImagegateKubernetesPodOperator``: the provider's KubernetesPodOperator behind imagegate's gate.

The gate runs in ``build_pod_request_obj()``, which both the synchronous and the deferrable
paths call and which ``dry_run()`` prints, so a dry run shows and enforces it. The provider builds its
pod first (templates, ``full_pod_spec``, ``pod_template_file``, the XCom sidecar); the task's image is
then checked (``imagegate.plan_launch``) as the ``runAsUser`` that pod gives its container, wherever it
was set, and ``imagegate.plan_pod`` checks and pins **every** container — init containers, sidecars,
the XCom sidecar — and applies the restricted Pod Security Standard (user values win, then the pod must
pass it). ``execute`` always builds its own pod this way: a ``pod_request_obj`` or ``pod`` set from outside
(which the provider would launch unbuilt, ungated) is refused (``PresetPodRefused``). Right before the create
call the pod — after the provider's ``on_pod_manifest_created`` callbacks, which get the very object — must
still be the plan (images, users, profile); after creation the pod the API server stored is compared with
the plan the same way, and each container's ``imageID`` once it runs.

Killed tasks leave nothing behind. The pod is labelled with ``imagegate.dev/task-key`` (the task instance,
every try alike) and this launch, and annotated with the full ids. Before a try creates its pod it settles
the pods of earlier tries (``imagegate.pod_verdicts``): with the provider's ``durable`` (default True) it
reattaches to one that still runs this try's checked images, as the provider's own reattach does; every
other one is marked ``already_checked`` and deleted (kept, if finished, when ``on_finish_action`` keeps
pods) — with ``durable=False`` the provider would leave it running beside the new one. ``on_kill`` (SIGTERM)
also deletes a pod whose create call had not returned yet, and nothing is created after it.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import TYPE_CHECKING, Any, Sequence

from airflow.exceptions import AirflowException
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

from airflow_plugin import _gate
from airflow_plugin.cluster_policy import SIDECAR_FIX, SIDECAR_NAME, SIDECAR_ROLE, gated_build
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


class PresetPodRefused(AirflowException, ValueError):
    """A pod request (``pod_request_obj``) or pod (``pod``) was set on the operator from outside: the provider
    would launch it without building — so without imagegate's gate. ``.option`` names the attribute."""

    def __init__(self, option: str, why: str | None = None) -> None:
        self.option = option
        reason = why or (f"{option} was set before the task ran, so the provider would launch it without building "
                         "its pod, skipping imagegate's checks")
        super().__init__(
            f"imagegate refused to launch: {reason}. Nothing was created. Fix: do not set {option}; describe the pod "
            "with pod_template_dict=, pod_template_file= or full_pod_spec= (and the operator's arguments), which the "
            "gate checks"
        )


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
            imagegate_settled=None,
            _imagegate_launch_id=None,
            _imagegate_identity=None,
            _imagegate_pod_request_obj=None,
            _imagegate_pod=None,
        )
        _gate.validate_source(image, lock_name, job_dir, repository)

    @property
    def imagegate_sidecar_report(self) -> Report | None:
        """The report of the XCom sidecar's image (``do_xcom_push=True``), once the pod was built."""
        plan = self.imagegate_pod_plan.plans.get(SIDECAR_NAME) if self.imagegate_pod_plan else None
        return plan.report if plan is not None else None

    def gate(self, context: Any = None, *, user: str | None = None) -> Report:
        """Resolve (or build) and check the task's image for Kubernetes as *user* (the ``runAsUser`` its container
        will run as; None: the image's USER); raise ImageRefused when a check fails."""
        plan = self.imagegate_plan
        if plan is None or plan.user != user:  # checked once per task instance and user (dry_run, then the pod)
            policy = _gate.load_policy(self.policy, _gate.dag_folder(self))
            self._imagegate_policy = policy
            self.imagegate_plan = _gate.plan(self, context, backend="kubernetes", user=user, policy=policy)
            self.imagegate_report = self.imagegate_plan.report
        return self.imagegate_plan.report

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> k8s.V1Pod:
        """The provider's pod (templates, ``full_pod_spec``, ``pod_template_file``, the XCom sidecar), then the gate:
        the task's image checked as the user the built pod runs it as — wherever that ``runAsUser`` came from —
        and every other container checked, pinned and (``harden``) put under the restricted profile."""
        core = _gate._core()
        with gated_build():  # the cluster policy's pod_mutation_hook leaves this pod to plan_pod below
            pod = to_dict(super().build_pod_request_obj(context, dry_run=dry_run))
        report = self.gate(context, user=core.pod_user(pod, self.base_container_name))
        plan = self.imagegate_plan
        assert plan is not None
        if dry_run:
            print(report.render_text())
        self._imagegate_identity = _gate.task_identity(context)
        self._imagegate_launch_id = uuid.uuid4().hex
        with _gate.airflow_errors(context, task_report=report):
            planned = core.plan_pod(
                pod, policy=self._imagegate_policy, primary=plan, primary_container=self.base_container_name,
                harden=self.harden, roles={SIDECAR_NAME: SIDECAR_ROLE}, fixes={SIDECAR_NAME: SIDECAR_FIX},
                orchestrator=_gate.ORCHESTRATOR, task=_gate.task_label(self), identity=self._imagegate_identity,
                launch_id=self._imagegate_launch_id,
            )
        helpers = {p.role or name: p.report for name, p in planned.plans.items() if name != self.base_container_name}
        for role, helper in helpers.items():
            _gate.log_report(self.log, helper, role)
            if dry_run:
                print(f"[{role}]\n{helper.render_text()}")
        self.imagegate_pod_plan = planned
        result = to_model(planned.pod, "V1Pod")
        self._imagegate_pod_request_obj = result
        _gate.push_record(context, report, {"pod": result.metadata.name, "image": plan.launch}, helpers=helpers)
        return result

    def execute_sync(self, context: Any) -> Any:
        self._build_own_request(context)
        return super().execute_sync(context)

    def execute_async(self, context: Any) -> None:
        self._build_own_request(context)
        return super().execute_async(context)

    def _build_own_request(self, context: Any) -> None:
        """The provider builds (and so gates) its pod only when ``pod_request_obj`` is unset, and creates one only
        when ``pod`` is: a pod request or pod set from outside would skip the gate, so it is refused, not silently
        replaced (the DAG meant something by it; the gated ways are ``pod_template_dict``, ``pod_template_file``
        and ``full_pod_spec``). One this operator built itself (an earlier ``execute`` of the same instance) is
        built again, for this run."""
        for attribute in ("pod_request_obj", "pod"):
            value = getattr(self, attribute)
            if value is not None and value is not getattr(self, f"_imagegate_{attribute}", None):
                raise PresetPodRefused(attribute)
        self.pod = None
        self.pod_request_obj = self.build_pod_request_obj(context)

    # -- launch verification ----------------------------------------------------------------

    def get_or_create_pod(self, pod_request_obj: k8s.V1Pod, context: Any) -> k8s.V1Pod:
        """Settle the pods of earlier tries (reattach to one, mark and delete the rest), else create this
        try's pod; either way the pod must be the plan (``PodPlan.verify_request`` right before the create
        call, ``verify_spec`` on what the API server stored): the planned images, each as the user it was
        checked as, under the restricted profile when ``harden``. Without a plan for this run nothing is created.

        The provider's own reattach (``durable``: the task state store, then a label search) is replaced
        by this one, which also checks the images and never leaves a second pod running.
        """
        planned = self.imagegate_pod_plan
        if planned is None:
            raise PresetPodRefused("pod_request_obj", "no imagegate plan exists for this run: the pod was not built "
                                   "by this operator's build_pod_request_obj()")
        self._check_alive()
        identity = self._imagegate_identity
        namespace = pod_request_obj.metadata.namespace
        reattached = self._settle(namespace, identity, exclude=pod_request_obj.metadata.name) if identity else None
        if reattached is not None:
            pod = self.client.read_namespaced_pod(reattached, namespace)
            self._persist(context, pod)
            self._verify(pod, status=False)
            self._imagegate_pod = pod
            return pod
        request = to_dict(pod_request_obj)  # as it is now: callbacks (on_pod_manifest_created) got the same object
        with _gate.airflow_errors(context):
            planned.verify_request(request)
        self.log.debug("Starting pod:\n%s", json.dumps(request))
        self.pod_manager.create_pod(pod=pod_request_obj)
        if getattr(self, "_killed", False):  # on_kill ran while the create call was under way
            self._delete(pod_request_obj.metadata.name, namespace, "the task was killed while its pod was created")
            self._check_alive()
        self._persist(context, pod_request_obj)
        self._verify(pod_request_obj, status=False)
        self._imagegate_pod = pod_request_obj
        return pod_request_obj

    def _settle(self, namespace: str, identity: Any, *, exclude: str) -> str | None:
        """The pods of earlier tries of this task: the name of the one reattached to, or None."""
        core = _gate._core()
        listed = self.client.list_namespaced_pod(namespace, label_selector=f"imagegate.dev/task-key={identity.key}").items
        pods = [to_dict(p) for p in listed if p.metadata.name != exclude]
        verdicts = core.pod_verdicts(pods, self.imagegate_pod_plan, reattach=bool(self.reattach_on_restart),
                                     keep_finished=self.on_finish_action.value != "delete_pod",
                                     checked_label=self.POD_CHECKED_KEY)
        reattached = None
        for verdict in verdicts:
            if verdict.action == "reattach":
                reattached = verdict.id
                self.log.info("imagegate: reattaching to %s of an earlier try: %s", verdict.describe(), verdict.reason)
                continue
            self._mark_checked(verdict.id, namespace)  # the provider's label search must never pick it up
            if verdict.action == "remove":
                self._delete(verdict.id, namespace, f"{verdict.describe()} of an earlier try: {verdict.reason}")
            else:
                self.log.info("imagegate: left %s of an earlier try: %s", verdict.describe(), verdict.reason)
        self.imagegate_settled = verdicts
        return reattached

    def _mark_checked(self, name: str, namespace: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.client.patch_namespaced_pod(name, namespace, {"metadata": {"labels": {self.POD_CHECKED_KEY: "True"}}})
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _delete(self, name: str, namespace: str, why: str) -> None:
        from kubernetes.client.exceptions import ApiException

        kwargs: dict[str, Any] = {}
        if self.termination_grace_period is not None:
            kwargs["grace_period_seconds"] = self.termination_grace_period
        try:
            self.client.delete_namespaced_pod(name, namespace, **kwargs)
        except ApiException as exc:
            if exc.status != 404:
                raise
        self.log.info("imagegate: deleted pod %s: %s", name, why)

    def _persist(self, context: Any, pod: k8s.V1Pod) -> None:
        """The provider's record of the pod in the task state store (Airflow 3.3+), where it keeps one."""
        persist = getattr(self, "_persist_pod_identity_to_task_state_store", None)
        if persist is not None and self.reattach_on_restart:
            persist(context, pod)

    def _check_alive(self) -> None:
        if getattr(self, "_killed", False):
            raise _gate.TaskKilled("the task was killed (SIGTERM) before its pod ran; nothing is left running")

    def on_kill(self) -> None:
        """The provider's (delete ``self.pod`` unless ``on_kill_action="keep_pod"``), and also a pod of this
        launch whose create call had not returned yet (found by its ``imagegate.dev/launch`` label)."""
        super().on_kill()
        if self.on_kill_action.value == "keep_pod" or self.pod is not None or not self._imagegate_launch_id:
            return
        if "client" not in self.__dict__:  # no client was opened: nothing was created
            return
        namespace = self.pod_request_obj.metadata.namespace if self.pod_request_obj is not None else self.namespace
        try:
            listed = self.client.list_namespaced_pod(
                namespace, label_selector=f"imagegate.dev/launch={self._imagegate_launch_id}").items
        except Exception as exc:  # noqa: BLE001 - on_kill must not raise; the retry settles what is left
            self.log.warning("imagegate: could not list this launch's pods: %s", exc)
            return
        for pod in listed:
            self._delete(pod.metadata.name, pod.metadata.namespace, "the task was killed")

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
        except (_gate.LaunchMismatch, _gate.HardeningViolation) as exc:
            self.client.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace)
            exc.add_note(f"imagegate deleted pod {pod.metadata.namespace}/{pod.metadata.name}")
            raise
