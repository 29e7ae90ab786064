"""``ImagegateKubernetesPodOperator``: the provider's KubernetesPodOperator, gated, restricted PSS.

The checks run in ``build_pod_request_obj()``, which both the synchronous and
the deferrable paths call and which ``dry_run()`` prints, so a dry run shows
and enforces them. The base container's image becomes ``REPO@sha256:…`` with
``imagePullPolicy: IfNotPresent``; the pod, the base container and the XCom
sidecar get the restricted Pod Security Standard's security context by
default, and the finished pod is verified against the restricted rules.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from airflow.exceptions import AirflowException
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator

from airflow_plugin import _gate
from airflow_plugin.cluster_policy import ANNOTATION, SIDECAR_FIX, SIDECAR_NAME, SIDECAR_ROLE
from airflow_plugin.links import LaunchedImageLink
from airflow_plugin.pss import restricted_violations

if TYPE_CHECKING:
    from kubernetes.client import models as k8s

    from imagegate import Policy, Report

RUNTIME_DEFAULT = {"type": "RuntimeDefault"}
CONTAINER_DEFAULTS: Mapping[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": RUNTIME_DEFAULT,
}


class PodSecurityViolation(AirflowException):
    """The pod breaks the restricted Pod Security Standard (nothing was created). ``.problems`` lists the rules."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "the pod breaks the restricted Pod Security Standard (nothing was created): " + "; ".join(problems)
            + ". Fix: remove the override that weakens it, or pass harden=False to launch without the restricted profile"
        )


def _camel(value: Any) -> dict[str, Any]:
    """A security context given as a V1 object or a dict, as a camelCase dict."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {_to_camel(k): v for k, v in value.items()}
    return dict(PodGenerator.serialize_pod(value) or {})


def _to_camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def _model(value: Any, model: str) -> Any:
    """A Kubernetes model from a camelCase dict as in pod YAML (``{"name": "data", "emptyDir": {}}``)."""
    if not isinstance(value, dict):
        return value
    from kubernetes.client import ApiClient

    return ApiClient()._ApiClient__deserialize(value, model)  # the client's own YAML-dict -> model path


class ImagegateKubernetesPodOperator(KubernetesPodOperator):
    """Run a pod from a checked, digest-pinned image under the restricted Pod Security Standard.

    Give exactly one of ``image``, ``lock_name`` or ``job_dir`` (with ``repository``). Every other
    argument is the provider's. User-given ``security_context`` / ``container_security_context`` /
    ``xcom_sidecar_container_security_context`` are merged over the restricted defaults (yours win),
    and the final pod must still pass the restricted rules unless ``harden=False``.

    XCom ``imagegate``: the pin, the pod name and the report (pushed before the pod is created).
    """

    template_fields: Sequence[str] = (*KubernetesPodOperator.template_fields, "lock_name", "job_dir", "repository")
    operator_extra_links = (LaunchedImageLink(),)
    imagegate_gated = True
    imagegate_report: Report | None  # set by gate()
    imagegate_sidecar_report: Report | None  # set when the XCom sidecar's image is checked
    _sidecar_source: str | None

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
                kwargs[key] = [_model(item, model) for item in kwargs[key]]
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
            _given_contexts=(
                _camel(self.security_context),
                _camel(self.container_security_context),
                _camel(self.xcom_sidecar_container_security_context),
            ),
            imagegate_report=None,
            imagegate_sidecar_report=None,
            _sidecar_source=None,
        )
        if not any(isinstance(v, str) and "{{" in v for v in (image, lock_name, job_dir)):
            _gate.ImageSource(image, lock_name, job_dir).validate()

    def _user_override(self) -> str | None:
        pod_sc, container_sc, _ = self._given_contexts
        uid = container_sc.get("runAsUser", pod_sc.get("runAsUser"))
        return None if uid is None else str(uid)

    def gate(self, context: Any = None) -> Report:
        """Resolve (or build) and check the image for Kubernetes; raise ImageRefused when a check fails."""
        if self.imagegate_report is not None:
            return self.imagegate_report  # checked once per task instance (dry_run, then the pod)
        started = time.perf_counter()
        source = _gate.ImageSource(self.image, self.lock_name, self.job_dir)
        start = _gate.dag_folder(self)
        policy = _gate.load_policy(self.policy, start)
        reference = _gate.source_reference(
            source, start=start, lock_file=self.lock_file, repository=self.repository,
            build_options=self.build_options, policy=policy, log=self.log,
        )
        report = _gate.run_checks(
            reference, backend="kubernetes", user=self._user_override(), policy=policy, log=self.log, context=context,
            started=started,
        )
        self.imagegate_report = report
        return report

    def _harden(self, report: Report) -> None:
        pod_sc, container_sc, sidecar_sc = self._given_contexts
        uid, gid = _gate._core().numeric_ids(report.user)
        pod_defaults: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": RUNTIME_DEFAULT}
        if uid is not None:
            pod_defaults["runAsUser"] = uid
        if gid is not None:
            pod_defaults["runAsGroup"] = gid
        self.security_context = {**pod_defaults, **pod_sc}
        self.container_security_context = {**CONTAINER_DEFAULTS, **container_sc}
        self.xcom_sidecar_container_security_context = {**CONTAINER_DEFAULTS, **sidecar_sc}

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> k8s.V1Pod:
        report = self.gate(context)
        if dry_run:
            print(report.render_text())
        self.image = _gate.launch_reference(report)
        self.image_pull_policy = "IfNotPresent"
        if self.harden:
            self._harden(report)
        # Annotated before the provider builds the pod, so the cluster policy's pod_mutation_hook (which the
        # provider calls at the end of building it) sees a pod this operator checks itself.
        self.annotations = {**(self.annotations or {}), ANNOTATION: report.pinned}
        pod = super().build_pod_request_obj(context, dry_run=dry_run)
        helpers = self._gate_sidecar(pod, report, context, dry_run=dry_run)
        if self.harden:
            problems = restricted_violations(PodGenerator.serialize_pod(pod))
            if problems:
                raise PodSecurityViolation(problems)
        _gate.push_record(context, report, {"pod": pod.metadata.name, "image": self.image}, helpers=helpers)
        return pod

    def _gate_sidecar(self, pod: k8s.V1Pod, report: Report, context: Any, *, dry_run: bool) -> dict[str, Report]:
        """Check the provider's XCom sidecar image like the task's and pin it (``do_xcom_push=True`` only).

        The provider takes it from the Kubernetes connection (``xcom_sidecar_container_image``) and
        defaults to ``alpine`` by tag: launching that would break "every container runs a checked
        digest". It runs as the pod's user, so that user is what ``non-root`` checks when one is set.
        """
        sidecar = next((c for c in pod.spec.containers or () if c.name == SIDECAR_NAME), None)
        if sidecar is None:
            return {}
        checked = self.imagegate_sidecar_report
        if checked is None or self._sidecar_source != sidecar.image:  # checked once (dry_run, then the pod)
            uid = _gate.run_as_user(sidecar.security_context) or _gate.run_as_user(pod.spec.security_context)
            policy = _gate.load_policy(self.policy, _gate.dag_folder(self))
            checked = _gate.run_checks(
                sidecar.image, backend="kubernetes", user=uid, policy=policy,
                log=self.log, context=context, role=SIDECAR_ROLE, task_report=report, fix=SIDECAR_FIX,
            )
            self.imagegate_sidecar_report, self._sidecar_source = checked, sidecar.image
            if dry_run:
                print(f"[{SIDECAR_ROLE}]\n{checked.render_text()}")
        sidecar.image = _gate.launch_reference(checked)
        sidecar.image_pull_policy = "IfNotPresent"
        return {SIDECAR_ROLE: checked}
