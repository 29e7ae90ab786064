"""The deployment-wide cluster policy (entry point ``airflow.policy``), **off unless turned on**.

Installing the package changes nobody's deployment: every hook returns at once
unless Airflow's config says otherwise::

    [imagegate]
    cluster_policy = enforce      # off (default) | warn | enforce
    policy = /opt/airflow/imagegate.toml   # optional; else the nearest policy from each DAG file

    # or: AIRFLOW__IMAGEGATE__CLUSTER_POLICY=enforce

What it does to *plain* provider operators (imagegate's own operators are left alone —
they already check and pin):

``task_policy`` (DAG parse time, no network)
    Checks what can be checked from the reference text alone: the registry
    allow-list and the tag (``latest``, no tag, ``main``…), and a root
    ``user=`` override of a DockerOperator. Under ``enforce`` a failure is an
    ``AirflowClusterPolicyViolation``: the DAG does not load, and the import
    error names the task, the check and the fix. A templated image (``{{ … }}``)
    cannot be checked here: templates render only when the task runs.
    For a DockerOperator it also installs a pre-execute gate, which runs after
    templates render: it resolves and checks the image against the registry and
    rewrites ``task.image`` to ``REPO@sha256:…`` before the container is created.

``pod_mutation_hook`` (when a KubernetesPodOperator builds its pod, in the worker)
    Resolves and checks the base container's image, and the XCom sidecar's
    (``do_xcom_push=True``), rewrites each to ``REPO@sha256:…`` with
    ``imagePullPolicy: IfNotPresent``. Under ``enforce`` a failure raises before
    the pod is created.

``warn`` runs the same checks, logs every failure, and still pins the digest
when the image resolves. What the policy does not do to plain operators:
harden them (the DockerOperator has no ``cap_drop``/``security_opt``); use
imagegate's operators for that.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

from airflow.policies import hookimpl

log = logging.getLogger(__name__)

MODES = ("off", "warn", "enforce")
_DOCKER = ("airflow.providers.docker.operators.docker", "DockerOperator")
_KUBERNETES = ("airflow.providers.cncf.kubernetes.operators.pod", "KubernetesPodOperator")
ANNOTATION = "imagegate.dev/pinned"
SIDECAR_NAME = "airflow-xcom-sidecar"  # the provider's PodDefaults.SIDECAR_CONTAINER_NAME (its module is not imported here)
SIDECAR_ROLE = "XCom sidecar"
SIDECAR_FIX = ("set xcom_sidecar_container_image in the Kubernetes connection's extra to a pinned, non-root image "
               "(REPO@sha256:...), or waive it in the policy with a reason")


def mode() -> str:
    """``[imagegate] cluster_policy`` (env ``AIRFLOW__IMAGEGATE__CLUSTER_POLICY``): off, warn or enforce.

    Read once per process for each value of the environment variable: ``task_policy`` runs for
    every task of every parsed DAG, and must cost nothing measurable when the policy is off.
    """
    return _mode(os.environ.get(ENV))


ENV = "AIRFLOW__IMAGEGATE__CLUSTER_POLICY"


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


def _kind(task: Any) -> str | None:
    if getattr(task, "imagegate_gated", False):
        return None  # imagegate's own operators check and pin themselves
    for cls in type(task).__mro__:
        if (cls.__module__, cls.__name__) == _DOCKER:
            return "docker"
        if (cls.__module__, cls.__name__) == _KUBERNETES:
            return "kubernetes"
    return None


def _policy(start: Path | None) -> Any:
    import imagegate
    from airflow.configuration import conf

    configured = conf.get("imagegate", "policy", fallback=None)
    if configured:
        return imagegate.Policy.load(configured)
    return imagegate.Policy.discover(start or Path.cwd())


def _task_folder(task: Any) -> Path | None:
    dag = task.dag if task.has_dag() else None
    return Path(dag.fileloc).resolve().parent if dag is not None and dag.fileloc else None


def offline_failures(image: str, *, backend: str, user: str | None, policy: Any) -> list[Any]:
    """The checks that fail from the reference text alone (no network): registry, pinned, a root user override."""
    import imagegate

    ref = imagegate.parse_reference(image)
    results = imagegate.evaluate(
        imagegate.CheckInput(reference=ref, facts=None, backend=imagegate.Backend.parse(backend), policy=policy, user=None)
    )
    failures = [r for r in results if r.outcome is imagegate.Outcome.FAIL]
    if user is not None and imagegate.is_root_user(str(user)) and policy.mode("non-root") is imagegate.Mode.ENFORCE:
        failures.append(
            imagegate.CheckResult(
                "non-root", imagegate.Outcome.FAIL, "enforce", f"the runtime user override is {str(user)!r}: root",
                "drop the root user override, or use a non-root numeric UID",
            )
        )
    return failures


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
        failures = offline_failures(image, backend=kind, user=user, policy=_policy(_task_folder(task)))
        if failures and current == "enforce":
            raise _violation(task, image, failures)
        for r in failures:
            log.warning("imagegate (warn): task %s image %s: %s: %s", task.task_id, image, r.check, r.message)
    if kind == "docker":
        previous = task._pre_execute_hook
        task._pre_execute_hook = _DockerGate(task, current, previous)


class _DockerGate:
    """Runs after templates render, before the DockerOperator creates anything: check, then pin."""

    def __init__(self, task: Any, current: str, previous: Any) -> None:
        self.task = task
        self.mode = current
        self.previous = previous

    def __call__(self, context: Any) -> None:
        if self.previous is not None:
            self.previous(context)
        # the task that runs is a rendered copy of the one the policy saw (prepare_for_execution)
        task = (context or {}).get("task") or self.task
        from airflow_plugin import _gate

        report = _check_and_pin(task.image, "docker", getattr(task, "user", None), _task_folder(task), self.mode, task.log)
        if report is not None and report.pinned:
            task.image = _gate.launch_reference(report)
            _gate.push_record(context, report, {"image": task.image})


def _check_and_pin(
    image: str, backend: str, user: Any, start: Path | None, current: str, logger: Any, role: str | None = None
) -> Any:
    """Check *image* against the registry; the report (launch its pin), or None to leave the image (warn).

    *role* names a helper container (the XCom sidecar) in the log and in a refusal."""
    import imagegate

    from airflow_plugin import _gate

    policy = _policy(start)
    try:
        report = imagegate.check(image, backend=backend, user=None if user is None else str(user), policy=policy)
    except imagegate.ImagegateError as exc:
        if current == "enforce":
            raise
        logger.warning("imagegate (warn): cannot check %s: %s", image, exc)
        return None
    _gate.log_report(logger, report, role)
    if not report.passed and current == "enforce":
        raise _gate.ImageRefused(report, role=role, fix=SIDECAR_FIX if role == SIDECAR_ROLE else None)
    return report


@hookimpl
def pod_mutation_hook(pod: Any) -> None:
    """When a plain KubernetesPodOperator builds its pod: check its base and XCom sidecar images and pin them."""
    current = mode()
    if current == "off":
        return
    annotations = (pod.metadata.annotations or {}) if pod.metadata else {}
    if ANNOTATION in annotations:
        return  # built by imagegate's operator: it checks and pins every container itself
    from airflow_plugin import _gate

    pod_user = _gate.run_as_user(pod.spec.security_context if pod.spec else None)
    for index, container in enumerate(pod.spec.containers):
        if index and container.name != SIDECAR_NAME:
            continue  # the provider's pod has the base container and, with do_xcom_push, its sidecar
        user = _gate.run_as_user(container.security_context)
        user = pod_user if user is None else user
        report = _check_and_pin(container.image, "kubernetes", user, None, current, log,
                                role=SIDECAR_ROLE if index else None)
        if report is not None and report.pinned:
            container.image = _gate.launch_reference(report)
            container.image_pull_policy = "IfNotPresent"
            if not index:
                annotations = {**annotations, ANNOTATION: report.pinned}
    pod.metadata.annotations = annotations

