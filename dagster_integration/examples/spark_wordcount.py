"""Example ``Definitions``: the Spark word count on Kubernetes as a Dagster asset, through ``spark-submit``.

``spark_wordcount`` pins the job's Spark conf with :func:`imagegate.pin_spark_conf` (every Kubernetes image conf
checked and pinned to its digest, restricted pod templates for the driver and the executors), then runs
``spark-submit --master k8s://… --deploy-mode cluster`` with exactly that conf. A refused image fails the asset
before spark-submit starts (``ImageRefused``: nothing is created). After the job, every driver and executor pod of
the launch is read back from the API server and must have run its planned digest (``LaunchMismatch`` otherwise);
the digests, the pods and the driver's report are the materialization's metadata. The driver pod (and the
executors it owns) is left for its log, as spark-submit leaves it.

Environment: ``IMAGEGATE_SPARK_IMAGE`` (the Spark image: an immutable tag or a digest), ``IMAGEGATE_K8S_SERVER``
(the API server, ``https://HOST:PORT``), ``IMAGEGATE_K8S_NAMESPACE``, ``SPARK_HOME`` (spark-submit) and
``KUBECONFIG`` (for spark-submit and the read-back: spark-submit reads SEC1 EC keys or tokens, not PKCS#8)::

    dagster asset materialize -m dagster_integration.examples.spark_wordcount --select spark_wordcount
"""

# No `from __future__ import annotations`: Dagster reads the asset function's annotations at definition time.

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import dagster as dg

import imagegate
from dagster_integration import ImageRefused, LaunchMismatch, report_metadata

JOB = "local:///opt/spark/work-dir/wordcount.py"


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise dg.Failure(f"{name} is not set (see the docstring of {__name__})", allow_retries=False)
    return value


@dg.asset(group_name="imagegate_examples", kinds={"spark", "kubernetes"})
def spark_wordcount(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """The word count: 1 driver, 2 executors, every pod's image a checked digest."""
    namespace, launch_id = _env("IMAGEGATE_K8S_NAMESPACE"), uuid.uuid4().hex
    spark_home = Path(_env("SPARK_HOME"))
    conf = {
        "spark.kubernetes.container.image": _env("IMAGEGATE_SPARK_IMAGE"),
        "spark.kubernetes.namespace": namespace,
        "spark.kubernetes.authenticate.driver.serviceAccountName": os.environ.get("IMAGEGATE_SPARK_SERVICE_ACCOUNT", "spark"),
        "spark.kubernetes.executor.deleteOnTermination": "false",  # kept for the read-back; they go with the driver
        "spark.executor.instances": "2",
        "spark.executor.memory": "512m",
        "spark.driver.memory": "512m",
        "spark.kubernetes.driver.request.cores": "250m",  # a small node: one driver and two executors must fit
        "spark.kubernetes.executor.request.cores": "250m",
        "spark.ui.enabled": "false",
    }
    # the spark-defaults.conf spark-submit would read must not set an image or a template behind the gate's back
    defaults = Path(os.environ.get("SPARK_CONF_DIR") or spark_home / "conf") / "spark-defaults.conf"
    try:
        pinned = imagegate.pin_spark_conf(conf, orchestrator="dagster", task=context.asset_key.to_user_string(),
                                          launch_id=launch_id, properties_files=[defaults] if defaults.is_file() else [])
    except imagegate.CheckFailed as exc:
        context.log.error("imagegate refused the image of %s; nothing was launched", exc.role)
        raise ImageRefused(exc.report, {**report_metadata(exc.report), "imagegate/field": exc.role or ""}) from exc
    except imagegate.ImagegateError as exc:  # a conf or template the gate cannot read: refused as well
        raise dg.Failure(f"imagegate did not pass the Spark conf; nothing was launched\n{exc}", allow_retries=False) from exc
    name = f"wordcount-dagster-{context.run_id[:8]}"  # the pods' spark-app-name label
    command = [str(spark_home / "bin" / "spark-submit"), "--master", f"k8s://{_env('IMAGEGATE_K8S_SERVER')}",
               "--deploy-mode", "cluster", "--name", name, *pinned.args(), JOB]
    context.log.info("imagegate: launch %s, driver %s, executors %s", launch_id, pinned.plan.driver.launch,
                     pinned.plan.executor.launch)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    finally:
        shutil.rmtree(pinned.files["driver"].parent, ignore_errors=True)
    if result.returncode != 0:
        raise dg.Failure(f"spark-submit exited {result.returncode}", metadata={"output": result.stderr[-4000:]})
    pods = _verify_pods(pinned.plan, namespace, launch_id)
    return dg.MaterializeResult(metadata={
        **report_metadata(pinned.plan.driver.report, launch=pinned.plan.driver.launch),
        "imagegate/driver": pinned.plan.driver.launch,
        "imagegate/executor": pinned.plan.executor.launch,
        "imagegate/images": pinned.plan.to_dict()["images"],
        "imagegate/launch": launch_id,
        "imagegate/pods": pods,
    })


def _verify_pods(plan: imagegate.SparkPlan, namespace: str, launch_id: str) -> dict[str, str]:
    """{pod: role} of every driver and executor pod of the launch (label ``imagegate.dev/launch``), each checked
    to have run its planned digests (``imageID``) under the restricted profile, and the driver to have succeeded
    (spark-submit's exit status does not say: in cluster mode it only watches the driver pod)."""
    from kubernetes import client, config

    with config.new_client_from_config() as api_client:
        api = client.CoreV1Api(api_client)
        pods = api.list_namespaced_pod(namespace, label_selector=f"imagegate.dev/launch={launch_id}").items
        pods += api.list_namespaced_pod(namespace, label_selector="spark-role=executor").items  # those it owns count too
        try:
            roles = plan.verify_launch([api_client.sanitize_for_serialization(pod) for pod in pods])
        except imagegate.ImagegateError as exc:
            raise LaunchMismatch(str(exc)) from exc
    drivers = list({p.metadata.uid: p for p in pods if roles.get(p.metadata.name) == "driver"}.values())
    if len(drivers) != 1 or drivers[0].status.phase != "Succeeded":
        raise dg.Failure(f"the driver pod did not succeed: {[(p.metadata.name, p.status.phase) for p in drivers]}")
    return roles


defs = dg.Definitions(assets=[spark_wordcount])
