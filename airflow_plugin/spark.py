"""Spark on Kubernetes behind imagegate's gate: the provider's ``SparkKubernetesOperator`` and ``SparkSubmitOperator``.

``PinnedSparkKubernetesOperator`` gates the whole SparkApplication where the provider creates it
(``get_or_create_spark_crd``: the body is final there — ``template_spec`` / ``application_file``, the
``kubernetes`` section merged, the provider's labels and environment, ``image=`` and ``code_path=``
applied): ``imagegate.plan_spark_application`` checks and pins every image (``spec.image``, the driver's and
executor's images, sidecars, init containers, pod templates, image confs) and applies the restricted
profile, and the pinned body is what the provider creates. A refusal creates no custom resource. The
driver pod is checked against the plan when it starts; every driver and executor pod of the job when it
ends (executor pods are kept until then: the gate writes ``deleteOnTermination: false`` and refuses ``true``; they
are removed with the application).

``PinnedSparkSubmitOperator`` pins the conf (``imagegate.pin_spark_conf``: the image confs, restricted pod
templates for driver and executor) in ``execute`` before the hook builds the spark-submit command; ``env_vars``,
which the hook passes as ``--conf spark.kubernetes.driverEnv.NAME=VALUE``, are checked as those confs.

Both push the ``imagegate`` XCom (the driver's report, every other image's under ``helpers``) and log the
reports, like ``ImagegateKubernetesPodOperator``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.exceptions import AirflowException
from airflow.providers.cncf.kubernetes.operators.spark_kubernetes import SparkKubernetesOperator

from airflow_plugin import _gate
from airflow_plugin.kubernetes import to_dict
from airflow_plugin.links import LaunchedImageLink

if TYPE_CHECKING:
    from imagegate import Policy, Report, SparkPlan

SPARK_APP_LABEL = "sparkoperator.k8s.io/app-name"


def _push(operator: Any, context: Any, planned: SparkPlan, launched: dict[str, Any]) -> None:
    """The XCom record and the task log: the driver's report, then every other image's (by its field)."""
    driver = planned.driver
    helpers = {where: plan.report for where, plan in planned.plans.items() if plan is not driver}
    _gate.log_report(operator.log, driver.report)
    for where, report in helpers.items():
        _gate.log_report(operator.log, report, where)
    _gate.push_record(context, driver.report, launched, helpers=helpers)


class PinnedSparkKubernetesOperator(SparkKubernetesOperator):
    """The provider's SparkKubernetesOperator, with every image of the SparkApplication checked and pinned.

    Every argument is the provider's, plus ``policy`` (a ``Policy``, a policy file, default the deployment's or
    the nearest one) and ``harden`` (default True: the restricted profile on driver and executor pods).
    ``image=`` overrides ``spec.image`` as in the provider; the driver's and executor's own images, sidecars,
    init containers and pod templates are checked too, not left to it.
    """

    operator_extra_links = (LaunchedImageLink(),)
    imagegate_gated = True
    imagegate_report: Report | None
    imagegate_spark_plan: SparkPlan | None

    def __init__(self, *, policy: Policy | str | os.PathLike[str] | None = None, harden: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _gate.init_attributes(self, policy=policy, harden=harden, imagegate_report=None, imagegate_spark_plan=None,
                              _imagegate_launch_id=None, _imagegate_mismatch=None)

    def execute(self, context: Any) -> Any:
        result = super().execute(context)
        if self._imagegate_mismatch is not None:
            raise self._imagegate_mismatch
        return result

    def _gate_body(self, body: dict[str, Any], context: Any) -> SparkPlan:
        """The gate over the application the provider is about to create; a refusal is recorded and raised."""
        import time

        started = time.perf_counter()
        core = _gate._core()
        policy = _gate.load_policy(self.policy, _gate.dag_folder(self))
        launch_id = uuid.uuid4().hex
        from kubernetes.client import ApiClient

        body = ApiClient().sanitize_for_serialization(body)  # the provider's `kubernetes` section holds models
        if self.image:  # the provider's image= (spec.image), applied here so that the gate sees it
            body.setdefault("spec", {})["image"] = self.image
        if self.code_path:
            body.setdefault("spec", {})["mainApplicationFile"] = self.code_path
        # executors are kept until checked: plan_spark_application refuses deleteOnTermination: true and writes false
        try:
            with _gate.airflow_errors(context):
                planned = core.plan_spark_application(
                    body, policy=policy, harden=self.harden, orchestrator=_gate.ORCHESTRATOR, task=_gate.task_label(self),
                    identity=_gate.task_identity(context), launch_id=launch_id)
        except _gate.ImageRefused as exc:
            _gate.log_report(self.log, exc.report, exc.role)
            raise
        self.log.info("imagegate: gate took %.0f ms", (time.perf_counter() - started) * 1000)
        object.__setattr__(self, "_imagegate_launch_id", launch_id)
        self.imagegate_spark_plan = planned
        self.imagegate_report = planned.driver.report
        return planned

    def get_or_create_spark_crd(self, launcher: Any, context: Any) -> Any:
        """Gate the application, then create exactly the pinned body (or reattach to a driver that runs the plan)."""
        planned = self._gate_body(launcher.body, context)
        launcher.body = planned.application
        if self.reattach_on_restart:
            driver = self.find_spark_job(context)
            if driver is not None:
                self._verify_pod(driver)
                return driver
        _push(self, context, planned, {"application": self.name, "image": planned.driver.launch,
                                      "executor": planned.executor.launch})
        driver_pod, _ = launcher.start_spark_job(image=None, code_path=None, startup_timeout=self.startup_timeout_seconds)
        return driver_pod

    def _verify_pod(self, pod: Any) -> None:
        planned = self.imagegate_spark_plan
        if planned is None or pod is None or pod.metadata is None:
            return
        remote = self.client.read_namespaced_pod(pod.metadata.name, pod.metadata.namespace or self.namespace)
        with _gate.airflow_errors():
            planned.verify_pod(to_dict(remote))

    def await_pod_start(self, pod: Any) -> None:
        """The provider's, then: the driver pod runs the planned images under the restricted profile."""
        super().await_pod_start(pod)
        if self.imagegate_spark_plan is None and pod is not None:  # reattached before the gate: by its annotations
            with _gate.airflow_errors():
                _gate._core().verify_pod_images(to_dict(self.client.read_namespaced_pod(pod.metadata.name, self.namespace)))
            return
        try:
            self._verify_pod(pod)
        except AirflowException:
            self.launcher.delete_spark_job(spark_job_name=self.name)
            raise

    def verify_application_pods(self) -> list[str]:
        """Every driver and executor pod of this launch, read back: each runs its planned digests. Returns their names."""
        planned = self.imagegate_spark_plan
        if planned is None or not self._imagegate_launch_id:
            return []
        return _verify_launch_pods(self, self.client, self.namespace, self._imagegate_launch_id, planned)

    def process_pod_deletion(self, pod: Any, *, reraise: bool = True) -> Any:
        """Before the provider deletes the application: check every pod the job ran."""
        try:
            self.verify_application_pods()
        except AirflowException as exc:
            self.log.error("imagegate: %s", exc)
            object.__setattr__(self, "_imagegate_mismatch", exc)
        return super().process_pod_deletion(pod, reraise=reraise)

    def dry_run(self) -> None:
        """The application as it would be created: gated and pinned (a refusal raises)."""
        planned = self._gate_body(self.launcher.body, None)
        print(planned.driver.report.render_text())
        print(planned.application)


def _spark_submit_operator() -> type:
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    return SparkSubmitOperator


try:  # the apache-spark provider is optional: without it, only the SparkApplication door exists
    _SparkSubmitOperator: type = _spark_submit_operator()
except ImportError:  # pragma: no cover - the airflow extra installs it
    _SparkSubmitOperator = object


class PinnedSparkSubmitOperator(_SparkSubmitOperator):  # type: ignore[misc,valid-type]
    """The apache-spark provider's SparkSubmitOperator for ``--master k8s://…``, its conf pinned and checked.

    Before the hook runs, ``conf`` gets every Kubernetes image conf pinned (``spark.kubernetes.container.image``
    and the driver's and executor's) and restricted pod templates for both (a given
    ``spark.kubernetes.{driver,executor}.podTemplateFile`` is read, pinned and hardened; the original is kept).
    A ``properties_file`` (or the ``spark-defaults.conf`` spark-submit would read) that sets an image or template
    conf is refused. After the job, every driver and executor pod of the launch is read back through
    ``kubernetes_conn_id`` and must have run its planned digests. ``policy`` and ``harden`` as for the other
    operators.
    """

    operator_extra_links = (LaunchedImageLink(),)
    imagegate_gated = True

    def __init__(self, *, policy: Policy | str | os.PathLike[str] | None = None, harden: bool = True,
                 kubernetes_conn_id: str = "kubernetes_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _gate.init_attributes(self, policy=policy, harden=harden, kubernetes_conn_id=kubernetes_conn_id,
                              imagegate_report=None, imagegate_spark_plan=None, _imagegate_dir=None)

    def execute(self, context: Any) -> Any:
        core = _gate._core()
        files = [path for path in (self.properties_file, _spark_defaults()) if path and Path(path).is_file()]
        launch_id = uuid.uuid4().hex
        # the hook turns env_vars into --conf spark.kubernetes.driverEnv.NAME=VALUE after the conf (so they win): the
        # gate checks them as those confs (SPARK_SUBMIT_OPTS, JAVA_TOOL_OPTIONS… are JVM options of the driver)
        conf = {**dict(self.conf or {}), **_driver_env_confs(self.env_vars)}
        try:
            with _gate.airflow_errors(context):
                pinned = core.pin_spark_conf(
                    conf, policy=_gate.load_policy(self.policy, _gate.dag_folder(self)), harden=self.harden,
                    orchestrator=_gate.ORCHESTRATOR, task=_gate.task_label(self), identity=_gate.task_identity(context),
                    launch_id=launch_id, properties_files=files)
        except _gate.ImageRefused as exc:
            _gate.log_report(self.log, exc.report, exc.role)
            raise
        self.conf = pinned.conf
        self._hook = None  # built from the pinned conf
        self.imagegate_spark_plan = pinned.plan
        self.imagegate_report = pinned.plan.driver.report
        object.__setattr__(self, "_imagegate_dir", pinned.files["driver"].parent)
        _push(self, context, pinned.plan, {"launch": launch_id, "image": pinned.plan.driver.launch,
                                           "executor": pinned.plan.executor.launch})
        try:
            result = super().execute(context)
        finally:
            shutil.rmtree(self._imagegate_dir, ignore_errors=True)
        self.verify_application_pods(launch_id)
        return result

    def verify_application_pods(self, launch_id: str) -> list[str]:
        """Every driver and executor pod of this launch (found by its ``imagegate.dev/launch`` label, in the
        namespace the conf names, through the Kubernetes connection's kubeconfig): each ran its planned digests.
        Executor pods are kept for this (the gate writes ``spark.kubernetes.executor.deleteOnTermination=false`` and
        refuses ``true``); they go with the driver pod, which owns them."""
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        planned = self.imagegate_spark_plan
        namespace = str((self.conf or {}).get("spark.kubernetes.namespace") or "default")
        client = KubernetesHook(conn_id=self.kubernetes_conn_id).core_v1_client
        # client mode runs the driver in this worker, not in a pod; unknown counts as cluster (a driver pod required)
        mode = (getattr(self._hook, "_connection", None) or {}).get("deploy_mode") or self._deploy_mode
        return _verify_launch_pods(self, client, namespace, launch_id, planned, driver_pod=mode != "client")


def _verify_launch_pods(operator: Any, client: Any, namespace: str, launch_id: str, planned: Any, *,
                        driver_pod: bool = True) -> list[str]:
    """Every pod of the launch in *namespace* read back against *planned* (:meth:`imagegate.SparkPlan.verify_launch`:
    those labelled ``imagegate.dev/launch=<launch_id>`` and the executors their driver owns, at least one driver):
    each ran its planned digests; the names (with roles) are logged and returned."""
    labelled = client.list_namespaced_pod(namespace, label_selector=f"imagegate.dev/launch={launch_id}").items
    executors = client.list_namespaced_pod(namespace, label_selector="spark-role=executor").items
    with _gate.airflow_errors():
        roles = planned.verify_launch([to_dict(pod) for pod in [*labelled, *executors]], driver_pod=driver_pod)
    checked = [f"{name} ({role})" for name, role in roles.items()]
    operator.log.info("imagegate: %d pod(s) ran the planned digests: %s", len(checked), ", ".join(sorted(checked)))
    return checked


def _driver_env_confs(env_vars: Any) -> dict[str, str]:
    """The confs the apache-spark hook makes of ``env_vars`` for a ``k8s://`` master
    (``spark.kubernetes.driverEnv.NAME=VALUE``), for the gate to check as such."""
    return {f"spark.kubernetes.driverEnv.{name}": str(value) for name, value in dict(env_vars or {}).items()}


def _spark_defaults() -> str | None:
    """The ``spark-defaults.conf`` spark-submit reads when no ``--properties-file`` is given."""
    conf_dir = os.environ.get("SPARK_CONF_DIR") or (
        os.path.join(os.environ["SPARK_HOME"], "conf") if os.environ.get("SPARK_HOME") else None)
    return os.path.join(conf_dir, "spark-defaults.conf") if conf_dir else None


__all__ = ["PinnedSparkKubernetesOperator", "PinnedSparkSubmitOperator"]
