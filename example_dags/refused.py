"""Two images imagegate refuses before any container exists: a ``:latest`` tag and a root user.

``airflow dags test imagegate_refused`` ends with both tasks failed and the
report in their logs; the Docker Engine never sees a container for either
(``docker events`` stays quiet). ``make demo`` pushes the two images.
"""

from __future__ import annotations

from airflow.sdk import dag

from airflow_plugin import ContainerTask

try:
    from example_dags import _settings as settings
except ImportError:  # the DAGs folder itself is on sys.path
    import _settings as settings  # type: ignore[no-redef]

ROOTY = f"{settings.REGISTRY}/examples/rooty"


@dag(dag_id="imagegate_refused", schedule=None, start_date=settings.START, catchup=False, tags=["imagegate"])
def refused() -> None:
    ContainerTask(task_id="latest_tag", image=f"{ROOTY}:latest", command=["id"], backend="docker")
    ContainerTask(task_id="root_user", image=f"{ROOTY}:1.0.0", command=["id"], backend="docker")


refused()
