"""Example ``Definitions``: the Spark word count on Kubernetes as a Dagster asset, through ``spark-submit``.

``spark_wordcount`` pins the job's Spark conf with :func:`imagegate.pin_spark_conf` (every Kubernetes image conf
checked and pinned to its digest, restricted pod templates for the driver and the executors), then runs
``spark-submit --master k8s://… --deploy-mode cluster`` with exactly that conf. A refused image fails the asset
before spark-submit starts; the digests are the materialization's metadata.

Environment: ``IMAGEGATE_SPARK_IMAGE`` (the Spark image: an immutable tag or a digest), ``IMAGEGATE_K8S_SERVER``
(the API server, ``https://HOST:PORT``), ``IMAGEGATE_K8S_NAMESPACE``, ``SPARK_HOME`` (spark-submit) and
``KUBECONFIG`` (spark-submit reads SEC1 EC keys or tokens, not PKCS#8)::

    dagster asset materialize -m dagster_integration.examples.spark_wordcount --select spark_wordcount
"""

# No `from __future__ import annotations`: Dagster reads the asset function's annotations at definition time.

import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg

import imagegate

JOB = "local:///opt/spark/work-dir/wordcount.py"


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise dg.Failure(f"{name} is not set (see the docstring of {__name__})")
    return value


@dg.asset(group_name="imagegate_examples", kinds={"spark", "kubernetes"})
def spark_wordcount(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """The word count: 1 driver, 2 executors, every pod's image a checked digest."""
    conf = {
        "spark.kubernetes.container.image": _env("IMAGEGATE_SPARK_IMAGE"),
        "spark.kubernetes.namespace": _env("IMAGEGATE_K8S_NAMESPACE"),
        "spark.kubernetes.authenticate.driver.serviceAccountName": os.environ.get("IMAGEGATE_SPARK_SERVICE_ACCOUNT", "spark"),
        "spark.executor.instances": "2",
        "spark.executor.memory": "512m",
        "spark.driver.memory": "512m",
        "spark.ui.enabled": "false",
    }
    try:
        pinned = imagegate.pin_spark_conf(conf, orchestrator="dagster", task=context.asset_key.to_user_string())
    except imagegate.ImagegateError as exc:
        raise dg.Failure(str(exc), metadata={"refused": str(exc)}) from exc
    spark_submit = str(Path(_env("SPARK_HOME")) / "bin" / "spark-submit")
    command = [spark_submit, "--master", f"k8s://{_env('IMAGEGATE_K8S_SERVER')}", "--deploy-mode", "cluster",
               "--name", "wordcount-dagster", *pinned.args(), JOB]
    context.log.info("imagegate: driver %s, executors %s", pinned.plan.driver.launch, pinned.plan.executor.launch)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    finally:
        shutil.rmtree(pinned.files["driver"].parent, ignore_errors=True)
    if result.returncode != 0:
        raise dg.Failure(f"spark-submit exited {result.returncode}", metadata={"output": result.stderr[-4000:]})
    return dg.MaterializeResult(metadata={
        "driver_image": pinned.plan.driver.launch,
        "executor_image": pinned.plan.executor.launch,
        "images": pinned.plan.to_dict()["images"],
    })


defs = dg.Definitions(assets=[spark_wordcount])
