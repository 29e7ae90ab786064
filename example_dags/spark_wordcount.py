"""A PySpark word count on Kubernetes, every driver and executor image pinned and checked: two doors, one job.

    spark_application   PinnedSparkKubernetesOperator: a kubeflow SparkApplication (1 driver, 2 executors)
    spark_submit        PinnedSparkSubmitOperator: spark-submit --master k8s://… --deploy-mode cluster

The Spark image (imagegate's, ``scripts/localstack/spark_parts.py``: Debian bookworm, OpenJDK 17, pyspark
4.3.0, user 185, the word count and its input baked in) comes from ``IMAGEGATE_SPARK_IMAGE`` (a reference
with an immutable tag, or a digest), else from the lock file's ``spark`` entry. Both tasks run in
``IMAGEGATE_K8S_NAMESPACE`` as the ServiceAccount ``IMAGEGATE_SPARK_SERVICE_ACCOUNT`` (default ``spark``);
``spark_submit`` needs a ``spark_k8s`` connection (``AIRFLOW_CONN_SPARK_K8S``: host
``k8s://https://API-SERVER``, ``{"deploy-mode": "cluster", "spark-binary": "spark-submit"}``) and
``SPARK_HOME``/``JAVA_HOME`` for the submitting side::

    export IMAGEGATE_SPARK_IMAGE=127.0.0.1:5000/examples/spark:4.3.0-bookworm
    airflow dags test imagegate_spark_wordcount
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from airflow.sdk import dag

from airflow_plugin.spark import PinnedSparkKubernetesOperator, PinnedSparkSubmitOperator

try:
    from example_dags import _settings as settings
except ImportError:  # the DAGs folder itself is on sys.path
    import _settings as settings  # type: ignore[no-redef]


def spark_image() -> str:
    """``IMAGEGATE_SPARK_IMAGE``, else the lock file's ``spark`` entry (parse time reads no registry)."""
    image = os.environ.get("IMAGEGATE_SPARK_IMAGE")
    if image:
        return image
    lock = Path(settings.LOCK_FILE)
    if lock.is_file():
        entry = (json.loads(lock.read_text()).get("images") or {}).get("spark")
        if isinstance(entry, dict) and entry.get("reference"):
            return str(entry["reference"])
        if isinstance(entry, str):
            return entry
    return f"{settings.REGISTRY}/examples/spark:4.3.0-bookworm"


NAMESPACE = os.environ.get("IMAGEGATE_K8S_NAMESPACE", "default")
SERVICE_ACCOUNT = os.environ.get("IMAGEGATE_SPARK_SERVICE_ACCOUNT", "spark")
JOB = "local:///opt/spark/work-dir/wordcount.py"
RESOURCES = {"cores": 1, "coreRequest": "250m", "memory": "512m"}  # three pods fit a 2-core test node


def application(image: str) -> dict:
    """The SparkApplication: one driver, two executors, the job baked into the image."""
    return {
        "apiVersion": "sparkoperator.k8s.io/v1beta2",
        "kind": "SparkApplication",
        "metadata": {"name": "wordcount", "namespace": NAMESPACE},
        "spec": {
            "type": "Python", "pythonVersion": "3", "mode": "cluster", "sparkVersion": "4.3.0",
            "image": image, "imagePullPolicy": "IfNotPresent", "mainApplicationFile": JOB,
            "sparkConf": {"spark.ui.enabled": "false", "spark.kubernetes.executor.deleteOnTermination": "false"},
            "restartPolicy": {"type": "Never"},
            "driver": {**RESOURCES, "serviceAccount": SERVICE_ACCOUNT},
            "executor": {**RESOURCES, "instances": 2},
        },
    }


@dag(dag_id="imagegate_spark_wordcount", schedule=None, start_date=settings.START, catchup=False,
     tags=["imagegate", "spark"])
def spark_wordcount() -> None:
    PinnedSparkKubernetesOperator(
        task_id="spark_application",
        namespace=NAMESPACE,
        template_spec=application(spark_image()),
        kubernetes_conn_id=os.environ.get("IMAGEGATE_SPARK_K8S_CONN", "kubernetes_default"),
        get_logs=True,
        startup_timeout_seconds=300,
    )
    PinnedSparkSubmitOperator(
        task_id="spark_submit",
        conn_id=os.environ.get("IMAGEGATE_SPARK_SUBMIT_CONN", "spark_k8s"),
        application=JOB,
        name="wordcount-submit",
        deploy_mode="cluster",
        conf={
            "spark.kubernetes.container.image": spark_image(),
            "spark.kubernetes.namespace": NAMESPACE,
            "spark.kubernetes.authenticate.driver.serviceAccountName": SERVICE_ACCOUNT,
            "spark.executor.instances": "2",
            "spark.executor.memory": "512m",
            "spark.driver.memory": "512m",
            "spark.kubernetes.driver.request.cores": "250m",
            "spark.kubernetes.executor.request.cores": "250m",
            "spark.ui.enabled": "false",
            "spark.kubernetes.executor.deleteOnTermination": "false",
        },
    )


spark_wordcount()
