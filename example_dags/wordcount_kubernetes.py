"""The wordcount job on Kubernetes, from the pin CI wrote to the lock file.

Both tasks check the locked image for Kubernetes (numeric non-root USER), launch
``REPO@sha256:…`` with ``imagePullPolicy: IfNotPresent`` and the restricted Pod
Security Standard on the job container and the XCom sidecar. The sidecar's image
(the Kubernetes connection's ``xcom_sidecar_container_image``; the provider's
default is ``alpine``, a floating tag) is checked and pinned too, so set it to a
pinned image in the connection. ``count_deferrable`` waits in the triggerer
instead of a worker slot. Without a cluster, see the pod with ``task.dry_run()``
(docs/airflow.md).
"""

from __future__ import annotations

from airflow.sdk import dag

from airflow_plugin import ContainerTask

try:
    from example_dags import _settings as settings
except ImportError:  # the DAGs folder itself is on sys.path
    import _settings as settings  # type: ignore[no-redef]

POD = {
    "namespace": "jobs",
    "cmds": ["sh", "-c"],
    "arguments": ["python3 /app/job.py /app/job.py | tee /airflow/xcom/return.json"],
    "do_xcom_push": True,
    "get_logs": True,
}


@dag(dag_id="imagegate_wordcount_kubernetes", schedule=None, start_date=settings.START, catchup=False, tags=["imagegate"])
def wordcount_kubernetes() -> None:
    ContainerTask(
        task_id="count",
        lock_name="wordcount",
        backend="kubernetes",
        lock_file=settings.LOCK_FILE,
        kubernetes_options=POD,
    )
    ContainerTask(
        task_id="count_deferrable",
        lock_name="wordcount",
        backend="kubernetes",
        lock_file=settings.LOCK_FILE,
        kubernetes_options={**POD, "deferrable": True},
    )


wordcount_kubernetes()
