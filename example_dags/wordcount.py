"""Build the wordcount job, run exactly the built digest, keep its result.

    prepare -> build -> count -> save

``count`` is a ContainerTask: on Docker (the default; ``airflow dags test
imagegate_wordcount``) it bind-mounts the input directory read-only; with
``IMAGEGATE_BACKEND=kubernetes`` the same task becomes a pod that mounts the
``wordcount-data`` PersistentVolumeClaim instead. Building needs a Docker Engine
where the build task runs; on Kubernetes, CI usually builds and the DAG reads
the lock file (see wordcount_kubernetes.py).
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
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "wordcount-data"}}],
            "volume_mounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
            # a pod's XCom is /airflow/xcom/return.json, not stdout
            "cmds": ["sh", "-c"],
            "arguments": ["python3 /app/job.py /data/input.txt | tee /airflow/xcom/return.json"],
            "do_xcom_push": True,
        },
    )

    @task
    def save(summary: str) -> dict:
        """Keep the job's JSON summary next to its input."""
        result = json.loads(summary)
        (settings.DATA / "wordcount.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        return result

    prepare() >> build
    save(count.output)


wordcount()
