"""The wordcount job from the pin CI wrote to the lock file, on the configured backend.

CI builds and pushes the image and writes ``imagegate.lock.json``; this DAG only reads the pin
(``lock_name="wordcount"``), checks it and launches ``REPO@sha256:…``. The backend is the
setting (``IMAGEGATE_BACKEND`` / ``[imagegate] backend``), as in wordcount.py.

On Kubernetes both tasks run under the restricted Pod Security Standard with
``imagePullPolicy: IfNotPresent``; the XCom sidecar's image (the ``kubernetes_default``
connection's ``xcom_sidecar_container_image``; the provider's default is ``alpine``, a floating
tag) is checked and pinned too, so set it to a pinned image in the connection.
``count_deferrable`` waits in the triggerer instead of a worker slot (on Docker it is an ordinary
task). Without a cluster, see the pods with ``task.dry_run()`` (docs/airflow.md).
"""

from __future__ import annotations

from airflow.sdk import dag

from airflow_plugin import ContainerTask

try:
    from example_dags import _settings as settings
except ImportError:  # the DAGs folder itself is on sys.path
    import _settings as settings  # type: ignore[no-redef]

POD = {
    "cmds": ["sh", "-c"],
    "arguments": ["python3 /app/job.py /app/job.py > /airflow/xcom/return.json && cat /airflow/xcom/return.json"],
    "do_xcom_push": True,
    "get_logs": True,
}


@dag(dag_id="imagegate_wordcount_from_lock", schedule=None, start_date=settings.START, catchup=False, tags=["imagegate"])
def wordcount_from_lock() -> None:
    ContainerTask(
        task_id="count",
        lock_name="wordcount",
        lock_file=settings.LOCK_FILE,
        docker_options={"auto_remove": "success", "mount_tmp_dir": False},
        kubernetes_options=POD,
    )
    ContainerTask(
        task_id="count_deferrable",
        lock_name="wordcount",
        lock_file=settings.LOCK_FILE,
        docker_options={"auto_remove": "success", "mount_tmp_dir": False},
        kubernetes_options={**POD, "deferrable": True},
    )


wordcount_from_lock()
