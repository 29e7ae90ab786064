"""A real Airflow deployment for tests: api-server, scheduler, dag-processor and triggerer as separate processes.

``airflow dags test`` runs a DAG in one process and runs a deferred task's trigger inline; a deployment
hands the task to the scheduler's executor, parks it in the triggerer, and resumes it in a new worker
process. Tests that must see that path start these four processes on their own ``AIRFLOW_HOME``
(SQLite, LocalExecutor, the simple auth manager with every user an admin, a free loopback port), drive
runs through the REST API (``/api/v2``) and stop what they started by process group.

Note: the LocalExecutor forks its workers from the scheduler, which has already imported the plugins
(``airflow.plugins`` entry points); a change to imagegate's code needs a scheduler restart to be seen.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
TERMINAL = {"success", "failed"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class AirflowServices:
    """The four processes of one Airflow deployment on ``home`` reading DAGs from ``dags``."""

    airflow: Path  # the `airflow` executable
    home: Path
    dags: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    components: tuple[str, ...] = COMPONENTS  # e.g. ("api-server",) for a UI/API test on runs made elsewhere
    extra_env: dict[str, str] = field(default_factory=dict)  # laid over environment(), e.g. real users instead of all-admins

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        return {
            **self.env,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            **self.extra_env,
        }

    def start(self, timeout: float = 180) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        env = self.environment()
        migrate = subprocess.run([str(self.airflow), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout[-2000:]}{migrate.stderr[-2000:]}")
        for name in self.components:
            log = open(self.home / f"{name}.log", "wb")  # noqa: SIM115 - the process owns it until stop()
            self.procs[name] = subprocess.Popen(
                [str(self.airflow), name], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                last = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
                wanted = ["metadatabase", *(c.replace("-", "_") for c in self.components if c != "api-server")]
                if all((last.get(c) or {}).get("status") == "healthy" for c in wanted):
                    return
            except (httpx.HTTPError, ValueError) as exc:
                last = exc
            time.sleep(1)
        raise RuntimeError(f"the Airflow deployment was not healthy in {timeout:.0f} s: {last}")

    def log_tail(self, name: str, size: int = 3000) -> str:
        path = self.home / f"{name}.log"
        return path.read_bytes()[-size:].decode(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    # -- the REST API ---------------------------------------------------------------------------

    def token(self, username: str, password: str) -> str:
        """A JWT for *username* from ``POST /auth/token`` (the simple auth manager with real users)."""
        response = httpx.post(f"{self.url}/auth/token", json={"username": username, "password": password}, timeout=30)
        response.raise_for_status()
        return str(response.json()["access_token"])

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{self.url}/api/v2{path}", timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def wait_parsed(self, dag_id: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.api("GET", f"/dags/{dag_id}")
                return
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 404:
                    raise
            time.sleep(1)
        raise AssertionError(f"DAG {dag_id} was not parsed in {timeout:.0f} s:\n{self.log_tail('dag-processor')}")

    def trigger(self, dag_id: str) -> str:
        """Unpause *dag_id* and start a run (as the UI's trigger button does); its run id."""
        self.wait_parsed(dag_id)
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        return str(self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None})["dag_run_id"])

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in TERMINAL:
                return str(state)
            time.sleep(1)
        raise AssertionError(f"run {run_id} of {dag_id} still {state} after {timeout:.0f} s; states: {self.states(dag_id, run_id)}")

    def states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        tis = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in tis}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str) -> Any:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}")["value"]

    def xcom_keys(self, dag_id: str, run_id: str, task_id: str) -> set[str]:
        entries = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries")["xcom_entries"]
        return {e["key"] for e in entries}

    def links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links")["extra_links"])

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The task's log files (the worker's and the triggerer's), as written on this host."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return "\n".join(p.read_text(errors="replace") for p in sorted(folder.glob(f"attempt={try_number}.log*")))

    def trigger_logs(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> list[Path]:
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return sorted(folder.glob(f"attempt={try_number}.log.trigger.*"))
