"""A large, realistic Airflow metadata database for the image audit's query tests and benchmark.

Bulk inserts through Airflow's own tables (``DagBundleModel``, ``DagModel``, ``DagVersion``, ``DagRun``,
``TaskInstance``, ``XComModel``) into a migrated database: 50,000 task instances in a few seconds, instead
of running 50,000 tasks. The mix is what a deployment that uses containers for some steps looks like:

- ``dags`` DAGs x ``runs`` runs x ``tasks`` tasks; in each DAG, ``container_tasks`` of the tasks are container
  tasks (each pushes an ``imagegate`` record of ~2 KB, like the real ones, and the "Launched image" link's
  XCom); half of the other tasks push a small ``return_value``;
- a container task's image is rebuilt every ``rebuild_every`` runs (a new digest in the same repository);
- of the gated runs, ~8% are refusals (root user or ``latest``), ~5% pass under a waiver (with a reason and
  an expiry), the rest pass; a few records are in the format before ``verdict``/``digest``/``running``.

The :class:`Seeded` summary says what was written, so a test can compute the expected answer itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert


def _digest(*parts: object) -> str:
    return "sha256:" + hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


@dataclass
class Seeded:
    task_instances: int = 0
    xcoms: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)  # {dag_id, run_id, task_id, timestamp, value}

    def by_digest(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for record in self.records:
            digest = record["value"]["pinned"].rpartition("@")[2]
            out.setdefault(digest, []).append(record)
        return out


def record(registry: str, repository: str, tag: str, digest: str, *, verdict: str, legacy: bool, run: int) -> dict[str, Any]:
    """An ``imagegate`` record shaped like the Docker operator's (report, image facts, launched container)."""
    pinned = f"{registry}/{repository}:{tag}@{digest}"
    config = _digest("config", digest)
    waived = verdict == "waived"
    refused = verdict == "refused"
    user = "0" if (waived or refused) else "10001"
    checks = [
        {"check": "registry", "outcome": "pass", "mode": "enforce", "message": f"{registry} is allowed", "fix": None,
         "waiver": None, "note": None},
        {"check": "pinned", "outcome": "pass", "mode": "enforce",
         "message": f"tag '{tag}' is a full version: release tags like this are normally pushed once, but only a digest "
                    f"guarantees it; launching {digest[:19]}…", "fix": None, "waiver": None, "note": None},
        {"check": "non-root", "outcome": "fail" if refused else ("waived" if waived else "pass"), "mode": "enforce",
         "message": "runs as root (the image sets no USER)" if user == "0" else f"runs as '{user}' (the image's USER)",
         "fix": "add USER 10001 to the Dockerfile" if user == "0" else None,
         "waiver": "vendor image runs as root; ticket OPS-12 (until 2027-01-31)" if waived else None, "note": None},
    ]
    report = {
        "reference": f"{registry}/{repository}:{tag}", "pinned": pinned, "passed": not refused, "backend": "docker",
        "platform": "linux/amd64", "user": user, "checks": checks, "notices": [],
        "image": {"reference": f"{registry}/{repository}:{tag}", "pinned": pinned, "digest": digest,
                  "media_type": "application/vnd.oci.image.manifest.v1+json", "manifest_digest": digest,
                  "config_digest": config, "platform": "linux/amd64", "platforms": ["linux/amd64"], "user": user,
                  "entrypoint": ["/usr/local/bin/python", "-m", "job"], "cmd": ["--date", "{{ ds }}"],
                  "healthcheck": None, "labels": {"org.opencontainers.image.source": f"https://git.example.com/{repository}",
                                                  "org.opencontainers.image.revision": digest[7:47]},
                  "env_names": ["PATH", "LANG", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR"], "created": "2026-10-01T08:00:00Z"},
    }
    launched = None if refused else {"pinned": pinned, "launched": f"{registry}/{repository}@{digest}",
                                     "container_id": hashlib.sha256(f"c{run}{digest}".encode()).hexdigest(), "image_id": config}
    value: dict[str, Any] = {"pinned": pinned, "launched": launched, "report": report}
    if not legacy:
        value.update({"verdict": verdict, "digest": digest, "running": config if launched else None})
    return value


def seed(session: Any, *, dags: int = 100, runs: int = 50, tasks: int = 10, container_tasks: int = 2,
         rebuild_every: int = 10, now: dt.datetime | None = None, rng_seed: int = 13, registry: str = "registry.example.com",
         batch: int = 5000) -> Seeded:
    """Write dags x runs x tasks task instances and their XComs; commit; say what was written."""
    from airflow.models.dag import DagModel
    from airflow.models.dag_version import DagVersion
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel

    rng = random.Random(rng_seed)
    now = now or dt.datetime.now(dt.timezone.utc)
    start = now - dt.timedelta(days=30)
    step = dt.timedelta(days=30) / max(1, runs)
    seeded = Seeded()
    session.execute(insert(DagBundleModel.__table__), [{"name": "seeded", "active": True}])
    dag_rows, version_rows, versions = [], [], {}
    for d in range(dags):
        dag_id = f"seeded_{d:04d}"
        dag_rows.append({"dag_id": dag_id, "is_paused": False, "is_stale": False, "bundle_name": "seeded",
                         "timetable_type": "airflow.timetables.simple.NullTimetable", "partition_mapper_info": {},
                         "max_active_tasks": 16, "max_consecutive_failed_dag_runs": 0, "has_task_concurrency_limits": False,
                         "fileloc": f"/dags/{dag_id}.py", "relative_fileloc": f"{dag_id}.py"})
        versions[dag_id] = uuid.uuid4()
        version_rows.append({"id": versions[dag_id], "version_number": 1, "dag_id": dag_id, "bundle_name": "seeded",
                             "created_at": start, "last_updated": start})
    session.execute(insert(DagModel.__table__), dag_rows)
    session.execute(insert(DagVersion.__table__), version_rows)

    run_rows: list[dict[str, Any]] = []
    for d in range(dags):
        for r in range(runs):
            when = start + step * r + dt.timedelta(seconds=d)
            run_rows.append({"dag_id": f"seeded_{d:04d}", "run_id": f"scheduled__{when.isoformat()}", "run_type": "scheduled",
                             "run_after": when, "logical_date": when, "start_date": when, "end_date": when + dt.timedelta(minutes=5),
                             "state": "success", "created_dag_version_id": versions[f"seeded_{d:04d}"], "clear_number": 0})
    session.execute(insert(DagRun.__table__), run_rows)
    pks = _run_pks(session, DagRun)  # the table was empty: ids follow the insertion order

    tis: list[dict[str, Any]] = []
    xcoms: list[dict[str, Any]] = []

    def flush() -> None:
        if tis:
            session.execute(insert(TaskInstance.__table__), tis)
        if xcoms:
            session.execute(insert(XComModel.__table__), xcoms)
        seeded.task_instances += len(tis)
        seeded.xcoms += len(xcoms)
        tis.clear()
        xcoms.clear()

    for index, (row, pk) in enumerate(zip(run_rows, pks)):
        d, r = divmod(index, runs)
        dag_id, run_id, when = row["dag_id"], row["run_id"], row["run_after"]
        for t in range(tasks):
            task_id = f"task_{t:02d}" if t >= container_tasks else f"container_{t}"
            tis.append({"id": uuid.uuid4(), "task_id": task_id, "dag_id": dag_id, "run_id": run_id, "map_index": -1,
                        "try_number": 1, "max_tries": 0, "state": "success", "pool": "default_pool", "pool_slots": 1,
                        "queue": "default", "priority_weight": 1, "operator": "ImagegateDockerOperator" if t < container_tasks else "PythonOperator",
                        "start_date": when, "end_date": when + dt.timedelta(minutes=1), "dag_version_id": versions[dag_id],
                        "hostname": "worker-1", "unixname": "airflow", "executor_config": {}, "updated_at": when})
            stamp = when + dt.timedelta(seconds=30 + t)
            if t < container_tasks:
                repository = f"team{d % 20:02d}/job{(d * container_tasks + t) % 60:02d}"
                build = r // rebuild_every
                digest = _digest(repository, build)
                roll = rng.random()
                verdict = "refused" if roll < 0.08 else ("waived" if roll < 0.13 else "passed")
                value = record(registry, repository, f"1.{build}.0", digest, verdict=verdict, legacy=rng.random() < 0.02, run=r)
                xcoms.append({"dag_run_id": pk, "task_id": task_id, "map_index": -1, "key": "imagegate", "dag_id": dag_id,
                              "run_id": run_id, "value": value, "timestamp": stamp})
                seeded.records.append({"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "timestamp": stamp, "value": value})
                if value["launched"]:
                    xcoms.append({"dag_run_id": pk, "task_id": task_id, "map_index": -1, "key": "_link_LaunchedImageLink",
                                  "dag_id": dag_id, "run_id": run_id, "value": f"https://{registry}/v2/{repository}/manifests/{digest}",
                                  "timestamp": stamp})
            elif t % 2 == 0:
                xcoms.append({"dag_run_id": pk, "task_id": task_id, "map_index": -1, "key": "return_value", "dag_id": dag_id,
                              "run_id": run_id, "value": {"rows": rng.randint(0, 10**6), "path": f"s3://bucket/{dag_id}/{r}/{t}.parquet"},
                              "timestamp": stamp})
        if len(tis) >= batch:
            flush()
    flush()
    session.commit()
    return seeded


def _run_pks(session: Any, dag_run: Any) -> list[int]:
    from sqlalchemy import select

    return list(session.scalars(select(dag_run.id).order_by(dag_run.id)))
