"""Build the wordcount job, run exactly the built digest, keep its result: one DAG, two backends.

    prepare -> build -> count -> save

``count`` is a ContainerTask. On Docker (the default; ``airflow dags test imagegate_wordcount``) it
bind-mounts the input directory read-only. With ``IMAGEGATE_BACKEND=kubernetes`` (or ``[imagegate]
backend = kubernetes``) the same task becomes a pod that mounts the ``wordcount-data``
PersistentVolumeClaim instead, in the namespace and cluster of the ``kubernetes_default`` connection;
nothing else in the DAG changes. Building needs a Docker Engine where the build task runs; on
Kubernetes, CI usually builds and the DAG reads the lock file (see wordcount_from_lock.py).

XCom shapes differ between the backends' operators, and ``save`` takes either: DockerOperator
pushes the container's last output line (a string), KubernetesPodOperator pushes
``/airflow/xcom/return.json`` parsed (a dict). The downstream result is the same.
"""

from __future__ import annotations

import json
import os

from airflow.sdk import dag, task

from airflow_plugin import ContainerTask, ImagegateBuildOperator

try:
    from example_dags import _settings as settings
except ImportError:  # the DAGs folder itself is on sys.path
    import _settings as settings  # type: ignore[no-redef]

TEXT = """It was the best of times, it was the worst of times, it was the age of wisdom,
it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity.
"""


@dag(dag_id="imagegate_wordcount", schedule=None, start_date=settings.START, catchup=False, tags=["imagegate"])
def wordcount() -> None:
    @task
    def prepare() -> str:
        """Write the input where the container can read it (as its non-root user)."""
        inputs = settings.DATA / "input"
        inputs.mkdir(parents=True, exist_ok=True)
        os.chmod(settings.DATA, 0o755)
        os.chmod(inputs, 0o755)
        (inputs / "input.txt").write_text(TEXT, encoding="utf-8")
        os.chmod(inputs / "input.txt", 0o644)
        return str(inputs / "input.txt")

    build = ImagegateBuildOperator(
        task_id="build",
        job_dir=settings.JOB_DIR,
        repository=settings.WORDCOUNT_REPOSITORY,
        build_args={"BASE": settings.PYTHON_BASE},
        lock_file=settings.LOCK_FILE,
        lock_name="wordcount",
    )

    count = ContainerTask(
        task_id="count",
        image=build.output,  # REPO:TAG@sha256:… from the build's XCom
        command=["/data/input.txt"],
        docker_options={
            "mounts": [{"source": str(settings.DATA / "input"), "target": "/data", "type": "bind", "read_only": True}],
            "mount_tmp_dir": False,
            "auto_remove": "success",
        },
        kubernetes_options={
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": settings.DATA_CLAIM}}],
            "volume_mounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
            # A pod's XCom is /airflow/xcom/return.json, not its output. `&&`, not a pipe into tee:
            # sh has no pipefail, so a pipe would hide the job's exit status.
            "cmds": ["sh", "-c"],
            "arguments": ["python3 /app/job.py /data/input.txt > /airflow/xcom/return.json && cat /airflow/xcom/return.json"],
            "do_xcom_push": True,
            "get_logs": True,
        },
    )

    @task
    def save(summary: str | dict) -> dict:
        """Keep the job's JSON summary next to its input (a string from Docker, a dict from a pod)."""
        result = summary if isinstance(summary, dict) else json.loads(summary)
        (settings.DATA / "wordcount.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        return result

    prepare() >> build
    save(count.output)


wordcount()
