"""Benchmark: the image audit (the Images page and its JSON) on a metadata database of 50,000 task instances.

Run (no stack needed):

    python benchmarks/bench_audit.py [--task-instances 50000] [--rounds 21] [--json benchmarks/results/audit.json]

1. A fresh Airflow home: ``airflow db migrate`` (SQLite), then tests/support/audit_seed.py bulk-inserts DAGs,
   runs, task instances and XComs through Airflow's own tables: 100 DAGs x 50 runs x 10 tasks, 2 of the 10
   tasks in every DAG are container tasks (10,000 ``imagegate`` records of ~2 KB, plus the "Launched image"
   link's XCom), half of the others return a small value; 8% of the gated runs refused, 5% waived.
2. A real ``airflow api-server`` on it (the simple auth manager, a real admin user, the plugin from its
   entry point). Each request is timed by the api-server itself (its access log's ``duration_us``: from the
   request's arrival to the response's end, authentication and the auth manager's DAG list included) and by
   the client; median and p95 of ``--rounds``, after one warm-up request each.
3. The closest peer on the same work: Airflow's own public XCom list, ``GET /api/v2/dags/~/dagRuns/~/
   taskInstances/~/xcomEntries?xcom_key=imagegate&limit=50`` — the same 50 newest records, but without their
   values, task instances or any filter; and what a script would do without the plugin (that list plus one
   ``GET …/xcomEntries/imagegate`` per record: ``imagegate audit --api-v2``).
4. The query alone (in-process SQLAlchemy, no HTTP) and SQLite's plan for it.

Target (issue 13): every page load <= 300 ms server-side.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
AIRFLOW = Path(sys.executable).with_name("airflow")
TARGET_MS = 300.0
PASSWORD = "bench-admin-pw"


def _median_p95(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median_ms": round(statistics.median(ordered), 1),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))], 1),
            "max_ms": round(ordered[-1], 1)}


def _server_durations(log: Path, start: int) -> list[tuple[str, str, float]]:
    """(path, query, ms) of each request the api-server logged after byte *start* of its log."""
    text = log.read_bytes()[start:].decode(errors="replace")
    out = []
    for line in text.splitlines():
        if "request finished" not in line:
            continue
        duration = re.search(r"duration_us=(\d+)", line)
        path = re.search(r"\bpath=(\S+)", line)
        query = re.search(r"\bquery=('[^']*'|\S*)", line)
        if duration and path:
            out.append((path.group(1), (query.group(1) if query else "").strip("'"), int(duration.group(1)) / 1000))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task-instances", type=int, default=50_000, help="seeded task instances (100 DAGs x 10 tasks x N runs)")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="imagegate-bench-audit-"))
    os.environ["AIRFLOW_HOME"] = str(home)  # before anything imports airflow
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    import imagegate
    from airflow_plugin.audit import _query
    from tests.support.airflow_services import AirflowServices
    from tests.support.audit_seed import seed

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    migrate = subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    if migrate.returncode != 0:
        print(migrate.stdout[-2000:], migrate.stderr[-2000:], file=sys.stderr)
        return 2
    migrate_s = time.perf_counter() - started
    runs = max(1, args.task_instances // 1000)
    engine = create_engine(f"sqlite:///{home / 'airflow.db'}")
    started = time.perf_counter()
    with Session(engine) as session:
        seeded = seed(session, dags=100, runs=runs, tasks=10, container_tasks=2)
    seed_s = time.perf_counter() - started
    by_digest = seeded.by_digest()
    digest = max(by_digest, key=lambda d: (len(by_digest[d]), d))
    sample = by_digest[digest][0]
    repository = sample["value"]["pinned"].split(":")[0]
    print(f"seeded {seeded.task_instances} task instances, {seeded.xcoms} XComs ({len(seeded.records)} imagegate records) "
          f"in {seed_s:.1f} s (migrate {migrate_s:.1f} s)", flush=True)

    cases: dict[str, dict[str, Any]] = {
        "json: newest 50": {"path": "/imagegate/api/runs", "params": {}},
        "page: newest 50": {"path": "/imagegate/images", "params": {}},
        "json: a digest": {"path": "/imagegate/api/runs", "params": {"image": digest}},
        "page: a digest": {"path": "/imagegate/images", "params": {"image": digest}},
        "json: an image id prefix": {"path": "/imagegate/api/runs", "params": {"image": sample["value"]["report"]["image"]["config_digest"][7:19]}},
        "json: a repository": {"path": "/imagegate/api/runs", "params": {"image": repository}},
        "json: refused, last 7 days": {"path": "/imagegate/api/runs", "params": {"verdict": "refused", "since": "7d"}},
        "json: one DAG": {"path": "/imagegate/api/runs", "params": {"dag_id": sample["dag_id"]}},
        "page: one task instance": {"path": "/imagegate/task", "params": {"dag_id": sample["dag_id"], "run_id": sample["run_id"],
                                                                          "task_id": sample["task_id"]}},
        "peer: /api/v2 xcomEntries list (no values)": {"path": "/api/v2/dags/~/dagRuns/~/taskInstances/~/xcomEntries",
                                                       "params": {"xcom_key": "imagegate", "order_by": "-timestamp", "limit": 50}},
    }
    results: dict[str, Any] = {}
    services = AirflowServices(
        airflow=AIRFLOW, home=home, dags=home / "dags", env=env, components=("api-server",),
        extra_env={"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
                   "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                   "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json")},
    )
    (home / "passwords.json").write_text(json.dumps({"admin": PASSWORD}))
    (home / "dags").mkdir(exist_ok=True)
    try:
        services.start()
        token = services.token("admin", PASSWORD)
        client = httpx.Client(base_url=services.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        log = home / "api-server.log"
        # page 20 (cursor of page 19), to show that deep pages cost what page 1 costs
        cursor = None
        for _ in range(19):
            cursor = client.get("/imagegate/api/runs", params={**({"cursor": cursor} if cursor else {})}).json()["next_cursor"]
        cases["json: page 20 (cursor)"] = {"path": "/imagegate/api/runs", "params": {"cursor": cursor}}
        for name, case in cases.items():
            response = client.get(case["path"], params=case["params"])  # warm-up
            response.raise_for_status()
            rows = len(response.json()["runs"]) if case["path"].endswith("/runs") else None
            mark = log.stat().st_size
            wall = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                client.get(case["path"], params=case["params"]).raise_for_status()
                wall.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.3)  # the access log line is written after the response
            server = [ms for path, _, ms in _server_durations(log, mark) if path == case["path"]]
            results[name] = {"server": _median_p95(server), "client": _median_p95(wall), "rows": rows,
                             "requests": len(server), "params": case["params"]}
            print(f"{name:<46} server median {results[name]['server']['median_ms']:>6.1f} ms  p95 "
                  f"{results[name]['server']['p95_ms']:>6.1f} ms  client median {results[name]['client']['median_ms']:>6.1f} ms"
                  + (f"  rows {rows}" if rows is not None else ""), flush=True)
        # a script without the plugin: the list, then each record (imagegate audit --api-v2's reads)
        listing = client.get(cases["peer: /api/v2 xcomEntries list (no values)"]["path"],
                             params=cases["peer: /api/v2 xcomEntries list (no values)"]["params"]).json()["xcom_entries"]
        t0 = time.perf_counter()
        for entry in listing:
            client.get(f"/api/v2/dags/{entry['dag_id']}/dagRuns/{entry['run_id']}/taskInstances/{entry['task_id']}/xcomEntries/imagegate")
        results["peer: /api/v2 list + one GET per record (50 records)"] = {
            "client": {"total_ms": round((time.perf_counter() - t0) * 1000 + results["peer: /api/v2 xcomEntries list (no values)"]["client"]["median_ms"], 1)},
            "requests": len(listing) + 1}
        client.close()
    finally:
        services.stop()

    with Session(engine) as session:
        query_ms = {}
        for name, params in (("newest 50", {}), ("a digest", {"image": digest}), ("a repository", {"image": repository}),
                             ("refused, last 7 days", {"verdict": "refused", "since": "7d"})):
            flt = imagegate.AuditFilter.parse(**params)
            times = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                _query.find_runs(session, flt, None)
                times.append((time.perf_counter() - t0) * 1000)
            query_ms[name] = _median_p95(times)
        plan = _query.explain(session, imagegate.AuditFilter.parse(image=digest), {f"seeded_{d:04d}" for d in range(100)})
    engine.dispose()

    pages = {k: v for k, v in results.items() if not k.startswith("peer") and "server" in v}
    worst = max(v["server"]["p95_ms"] for v in pages.values())
    peer = results["peer: /api/v2 xcomEntries list (no values)"]["server"]["median_ms"]
    ours = results["json: newest 50"]["server"]["median_ms"]
    summary = {
        "task_instances": seeded.task_instances, "xcoms": seeded.xcoms, "imagegate_records": len(seeded.records),
        "seed_seconds": round(seed_s, 1), "worst_page_p95_ms": worst, "target_ms": TARGET_MS, "meets_target": worst <= TARGET_MS,
        "ratio_newest_page_vs_api_v2_list": round(ours / peer, 2) if peer else None,
        "ratio_newest_page_vs_api_v2_list_plus_values": round(
            ours / results["peer: /api/v2 list + one GET per record (50 records)"]["client"]["total_ms"], 3),
    }
    print(json.dumps(summary, indent=2))
    print("query plan (a digest):\n  " + "\n  ".join(plan))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "summary": summary, "requests": results, "query_only": query_ms, "plan_digest_filter": plan,
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "database": "SQLite (airflow db migrate)"},
        }, indent=2) + "\n")
    return 0 if summary["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
