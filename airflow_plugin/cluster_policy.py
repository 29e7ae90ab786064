"""The deployment-wide cluster policy (entry point ``airflow.policy``), **off unless turned on**.

Installing the package changes nobody's deployment: every hook returns at once
unless Airflow's config says otherwise::

    [imagegate]
    cluster_policy = enforce      # off (default) | warn | enforce
    policy = /opt/airflow/imagegate.toml   # optional; else the nearest policy from each DAG file

    # or: AIRFLOW__IMAGEGATE__CLUSTER_POLICY=enforce

What it does to *plain* provider operators (imagegate's own operators are left alone —
they gate themselves), always through imagegate's one gate. What counts as "imagegate's own" is
decided by code, never by anything a DAG declares: an operator class defined in this package (not
a class attribute any subclass can set), a pod built while ``ImagegateKubernetesPodOperator.build_pod_request_obj``
runs (:func:`gated_build`, not an annotation any ``KubernetesPodOperator(annotations=…)`` can set).

``task_policy`` (DAG parse time, no network)
    ``imagegate.check_offline``: what can be checked from the reference text alone (the
    registry allow-list, the tag, a root ``user=`` override). Under ``enforce`` a failure is an
    ``AirflowClusterPolicyViolation``: the DAG does not load, and the import error names the task,
    the check and the fix. A templated image (``{{ … }}``) renders only when the task runs.
    For a DockerOperator it also installs a pre-execute gate, which runs after templates render:
    ``imagegate.plan_launch``, then ``task.image`` becomes ``REPO@sha256:…``.

``pod_mutation_hook`` (when a KubernetesPodOperator builds its pod, in the worker)
    ``imagegate.plan_pod`` on the whole pod: **every** container — init containers, sidecars,
    containers from a pod template, the XCom sidecar — is checked and pinned to
    ``REPO@sha256:…`` with ``imagePullPolicy: IfNotPresent``. Under ``enforce`` a refusal
    raises before the pod is created.

``warn`` is the same gate with every check in ``warn`` mode: failures are logged, and every
image that resolves is still pinned. What the policy does not do to plain operators: harden them
(the DockerOperator has no ``cap_drop``/``security_opt``); use imagegate's operators for that.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from airflow.policies import hookimpl

log = logging.getLogger(__name__)

MODES = ("off", "warn", "enforce")
_DOCKER = ("airflow.providers.docker.operators.docker", "DockerOperator")
_KUBERNETES = ("airflow.providers.cncf.kubernetes.operators.pod", "KubernetesPodOperator")
ANNOTATION = "imagegate.dev/pinned"  # imagegate.LABEL_PINNED: what the hook pinned a plain pod's first container to
SIDECAR_NAME = "airflow-xcom-sidecar"  # the provider's PodDefaults.SIDECAR_CONTAINER_NAME (its module is not imported here)
SIDECAR_ROLE = "XCom sidecar"
SIDECAR_FIX = ("set xcom_sidecar_container_image in the Kubernetes connection's extra to a pinned, non-root image "
               "(REPO@sha256:...), or waive it in the policy with a reason")
ENV = "AIRFLOW__IMAGEGATE__CLUSTER_POLICY"


def mode() -> str:
    """``[imagegate] cluster_policy`` (env ``AIRFLOW__IMAGEGATE__CLUSTER_POLICY``): off, warn or enforce.

    Read once per process for each value of the environment variable: ``task_policy`` runs for
    every task of every parsed DAG, and must cost nothing measurable when the policy is off.
    """
    return _mode(os.environ.get(ENV))


@functools.lru_cache(maxsize=8)
def _mode(env_value: str | None) -> str:
    from airflow.configuration import conf
    from airflow.exceptions import AirflowConfigException

    value = (conf.get("imagegate", "cluster_policy", fallback="off") or "off").strip().lower()
    if value not in MODES:
        raise AirflowConfigException(
            f"[imagegate] cluster_policy = {value!r} is not one of {', '.join(MODES)} "
            "(set it in airflow.cfg or AIRFLOW__IMAGEGATE__CLUSTER_POLICY)"
        )
    return value


# Set only while imagegate's Kubernetes operator builds its pod: the provider calls pod_mutation_hook at the end of
# building, and that operator then gates the whole pod itself (plan_pod). A context variable, not a mark on the
# pod: the hook receives nothing but the pod, and everything on a pod (annotations, labels) a plain operator's
# arguments can set. It is per thread and per task, so another operator building a pod meanwhile is not skipped.
_GATED_BUILD: contextvars.ContextVar[bool] = contextvars.ContextVar("imagegate_gated_build", default=False)


@contextlib.contextmanager
def gated_build() -> Iterator[None]:
    """While ``ImagegateKubernetesPodOperator`` has the provider build its pod: ``pod_mutation_hook`` leaves that pod
    to the operator, which checks, pins and hardens every container of it right after (and again before creating it)."""
    token = _GATED_BUILD.set(True)
    try:
        yield
    finally:
        _GATED_BUILD.reset(token)


def _gates_itself(task: Any) -> bool:
    """Whether *task* is one of imagegate's own operators (or a subclass): the class that says so
    (``imagegate_gated = True``) must be defined in this package, so a plain operator cannot opt out by setting it."""
    for cls in type(task).__mro__:
        if "imagegate_gated" in vars(cls):
            return bool(vars(cls)["imagegate_gated"]) and cls.__module__.split(".")[0] == __name__.split(".")[0]
    return False


def _kind(task: Any) -> str | None:
    if _gates_itself(task):
        return None  # imagegate's own operators gate themselves
    for cls in type(task).__mro__:
        if (cls.__module__, cls.__name__) == _DOCKER:
            return "docker"
        if (cls.__module__, cls.__name__) == _KUBERNETES:
            return "kubernetes"
    return None


def _policy(start: Path | None, current: str) -> Any:
    """The policy for a task (``[imagegate] policy``, else the nearest from its DAG file); in ``warn``
    mode every check is set to warn, so the one gate logs instead of refusing."""
    import imagegate

    from airflow_plugin import _gate

    policy = _gate.load_policy(None, start or Path.cwd())
    if current == "warn":
        policy = policy.with_modes(**{check.replace("-", "_"): "warn" for check in policy.checks
                                      if policy.mode(check) is imagegate.Mode.ENFORCE})
    return policy


def _task_folder(task: Any) -> Path | None:
    dag = task.dag if task.has_dag() else None
    return Path(dag.fileloc).resolve().parent if dag is not None and dag.fileloc else None


def _violation(task: Any, image: str, failures: list[Any]) -> Exception:
    from airflow.exceptions import AirflowClusterPolicyViolation

    lines = "; ".join(f"{r.check}: {r.message} (fix: {r.fix})" for r in failures)
    return AirflowClusterPolicyViolation(f"imagegate refused task {task.task_id!r} image {image!r}: {lines}")


@hookimpl
def task_policy(task: Any) -> None:
    """Parse time: offline checks of plain Docker/KubernetesPod operators; a pre-execute gate for Docker."""
    current = mode()
    if current == "off":
        return
    kind = _kind(task)
    if kind is None:
        return
    image = getattr(task, "image", None)
    user = getattr(task, "user", None) if kind == "docker" else None
    if isinstance(image, str) and image and "{{" not in image:
        import imagegate

        report = imagegate.check_offline(image, backend=kind, user=None if user is None else str(user),
                                         policy=_policy(_task_folder(task), "enforce"))
        if report.failures and current == "enforce":
            raise _violation(task, image, list(report.failures))
        for r in report.failures:
            log.warning("imagegate (warn): task %s image %s: %s: %s", task.task_id, image, r.check, r.message)
    if kind == "docker":
        task._pre_execute_hook = _DockerGate(task, current, task._pre_execute_hook)


class _DockerGate:
    """Runs after templates render, before the DockerOperator creates anything: the gate, then the pin."""

    def __init__(self, task: Any, current: str, previous: Any) -> None:
        self.task = task
        self.mode = current
        self.previous = previous

    def __call__(self, context: Any) -> None:
        if self.previous is not None:
            self.previous(context)
        # the task that runs is a rendered copy of the one the policy saw (prepare_for_execution)
        task = (context or {}).get("task") or self.task
        import imagegate

        from airflow_plugin import _gate

        user = getattr(task, "user", None)
        source = imagegate.ImageSource(image=task.image, start=_task_folder(task))
        plan = _guarded(self.mode, task.log, lambda: imagegate.plan_launch(
            source, backend="docker", user=None if user is None else str(user), policy=_policy(_task_folder(task), self.mode)))
        if plan is not None:
            _gate.log_report(task.log, plan.report)
            task.image = plan.launch
            _gate.push_record(context, plan.report, {"image": task.image})


def _guarded(current: str, logger: Any, gate: Any) -> Any:
    """Run the gate: a refusal raises as ``ImageRefused`` (enforce); an image that cannot be checked at
    all (unreachable registry) is logged and left as it was in ``warn`` mode."""
    import imagegate

    from airflow_plugin import _gate

    try:
        with _gate.airflow_errors():
            return gate()
    except _gate.ImageRefused as exc:
        _gate.log_report(logger, exc.report, exc.role)
        raise
    except imagegate.ImagegateError as exc:
        if current == "enforce":
            raise
        logger.warning("imagegate (warn): cannot check: %s", exc)
        return None


@hookimpl
def pod_mutation_hook(pod: Any) -> None:
    """When a plain KubernetesPodOperator builds its pod: check every container's image and pin it.

    Every pod is checked, whatever it is annotated with (``imagegate.dev/pinned`` included: any operator's
    ``annotations=`` sets it); a pod pinned already is checked again by its digests. Only the pod
    imagegate's own operator is building (:func:`gated_build`) is left to that operator."""
    current = mode()
    if current == "off":
        return
    if _GATED_BUILD.get():
        return  # imagegate's operator is building this pod: it gates every container itself (see gated_build)
    annotations = (pod.metadata.annotations or {}) if pod.metadata else {}
    import imagegate

    from airflow_plugin import _gate
    from airflow_plugin.kubernetes import to_dict, to_model

    planned = _guarded(current, log, lambda: imagegate.plan_pod(
        to_dict(pod), policy=_policy(None, current), harden=False,
        roles={SIDECAR_NAME: SIDECAR_ROLE}, fixes={SIDECAR_NAME: SIDECAR_FIX}, orchestrator=_gate.ORCHESTRATOR,
    ))
    if planned is None:
        return
    for name, plan in planned.plans.items():
        _gate.log_report(log, plan.report, SIDECAR_ROLE if name == SIDECAR_NAME else None)
    result = to_model(planned.pod, "V1Pod")
    pod.spec = result.spec  # the hook's contract: mutate the pod it is given
    first = planned.plans[pod.spec.containers[0].name]
    pod.metadata.annotations = {**annotations, **(result.metadata.annotations or {}), ANNOTATION: str(first.pinned)}
