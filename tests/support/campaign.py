"""Kill campaigns: run a task in a worker process, kill the worker at a random point, retry the task.

Each worker is a process that runs one try of one task through the orchestrator's real execution path:

* ``airflow``: Airflow's own task runner (``airflow.sdk.execution_time.supervisor.run_task_in_process``, the
  function ``airflow dags test`` / ``airflow tasks test`` call) around the real operator. The runner installs
  Airflow's SIGTERM handler, which calls ``on_kill`` — the wiring a worker has. The Execution API server the
  runner talks to is a small in-memory stand-in (the run's context, XCom writes kept for the test): Airflow's
  own ``dry_run`` client does the same, but its canned answer no longer validates in Airflow 3.3.
* ``dagster``: ``dagster.execute_job`` of a one-asset job (in-process executor) on a persistent instance;
  a retry is a re-execution from failure, after the killed run is marked failed as Dagster's run monitoring
  marks a run whose worker died.

Starting an interpreter and importing Airflow costs ~2-4 s per process, so a driver process imports
everything once and forks a worker per request (as Airflow's own supervisor forks its task runner). The
driver is single-threaded (a fork copies no lock held by another thread): it reads requests from stdin,
replies ``{"id", "event": "started", "pid"}``, reaps workers and replies ``{"id", "event": "exited",
"status"}``. Each worker writes its result to ``RESULTS/ID.json`` and its log to ``RESULTS/ID.log``.

Run as ``python -m tests.support.campaign CONFIG.json``; the test side is :class:`Driver`.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
GATE_MARGIN = 0.5  # the kill window opens this long before the container is created: the gate runs then
JOB_SECONDS = 2


# -- the worker (in the forked child) --------------------------------------------------------------------


def _airflow_worker(config: dict[str, Any], request: dict[str, Any], result: dict[str, Any]) -> None:
    import datetime as dt

    import httpx
    from airflow.sdk import DAG
    from airflow.sdk.api.client import Client
    from airflow.sdk.api.datamodels._generated import TaskInstance as TaskInstanceSDK
    from airflow.sdk.execution_time.supervisor import run_task_in_process

    kind = config["operator"]
    if kind == "kubernetes":
        from airflow_plugin.kubernetes import ImagegateKubernetesPodOperator as operator_class
    else:
        from airflow_plugin.docker import ImagegateDockerOperator as operator_class  # type: ignore[assignment]
    kwargs = {**config["kwargs"], **request.get("kwargs", {})}
    with DAG(config["dag_id"], schedule=None, start_date=dt.datetime(2026, 1, 1)):
        task = operator_class(task_id=config["task_id"], **kwargs)
    ti = TaskInstanceSDK(id=uuid.uuid4(), task_id=config["task_id"], dag_id=config["dag_id"], run_id=request["run_id"],
                         try_number=request["try"], map_index=-1, dag_version_id=uuid.uuid4())
    xcoms: dict[str, Any] = {}
    now = "2026-01-01T00:00:00Z"

    def execution_api(request_: httpx.Request) -> httpx.Response:
        path = request_.url.path
        if path.startswith("/task-instances/") and path.endswith("/run"):
            return httpx.Response(200, json={
                "dag_run": {"dag_id": config["dag_id"], "run_id": ti.run_id, "logical_date": now,
                            "data_interval_start": now, "data_interval_end": now, "run_after": now, "start_date": now,
                            "end_date": None, "run_type": "manual", "state": "running", "consumed_asset_events": [],
                            "partition_key": None},
                "max_tries": 3, "should_retry": True})
        if path.startswith("/xcoms/") and request_.method == "POST":
            xcoms[path.rsplit("/", 1)[1]] = json.loads(request_.content or b"null")
        return httpx.Response(200, json={})

    client = Client(base_url=None, dry_run=True, token="", transport=httpx.MockTransport(execution_api))
    outcome = run_task_in_process(ti=ti, task=task, client=client)
    ran = outcome.ti.task
    settled = getattr(ran, "imagegate_settled", None)
    result.update({
        "state": str(getattr(outcome.state, "value", outcome.state)),
        "error": repr(outcome.error) if outcome.error else None,
        "return_value": xcoms.get("return_value"),
        "launched": getattr(ran, "imagegate_launched", None),
        "settled": _settled(settled),
    })


def _settled(settled: Any) -> list[dict[str, Any]]:
    if settled is None:
        return []
    if isinstance(settled, (list, tuple)):
        return [p.to_dict() for p in settled]
    items = ([settled.reattached] if settled.reattached else []) + list(settled.removed) + list(settled.kept)
    return [p.to_dict() for p in items]


def _dagster_worker(config: dict[str, Any], request: dict[str, Any], result: dict[str, Any]) -> None:
    import dagster as dg

    from tests.support import campaign_dagster

    os.environ.update(request.get("env") or {})
    os.environ["IMAGEGATE_CAMPAIGN_REATTACH"] = "1" if request.get("reattach", True) else "0"
    instance = dg.DagsterInstance.get()
    tags = {"imagegate-campaign": request["run_id"]}
    options = None
    if request["try"] > 1:
        runs = instance.get_runs(filters=dg.RunsFilter(tags=tags), limit=1)  # newest first
        parent = runs[0] if runs else None
        succeeded = parent is not None and bool(instance.get_records_for_run(
            parent.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS).records)
        if parent is not None and not succeeded:  # the step did not finish: re-execute it from failure
            if not parent.is_finished:  # its worker died: what Dagster's run monitoring does for such a run
                instance.report_run_failed(parent, message="the run worker was killed")
            options = dg.ReexecutionOptions.from_failure(parent.run_id, instance)
        # else: killed before the run existed, or after its step had succeeded: a new run (nothing to take over)
    outcome = dg.execute_job(dg.reconstructable(campaign_dagster.campaign_job), instance, tags=tags, reexecution_options=options)
    output = campaign_dagster.read_output(outcome.run_id)
    result.update({"state": "success" if outcome.success else "failed", "run_id": outcome.run_id,
                   "error": None if outcome.success else "the run failed", **output})


def _run_worker(config: dict[str, Any], request: dict[str, Any]) -> None:
    results = Path(config["results"])
    log = os.open(results / f"{request['id']}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    result: dict[str, Any] = {"id": request["id"], "pid": os.getpid(), "started": time.time()}
    try:
        (_dagster_worker if config["orchestrator"] == "dagster" else _airflow_worker)(config, request, result)
    except BaseException:  # noqa: BLE001 - reported to the test, which decides
        result["crash"] = traceback.format_exc()
    result["finished"] = time.time()
    (results / f"{request['id']}.json").write_text(json.dumps(result, default=str))


# -- the driver (a fork server) --------------------------------------------------------------------


def _preload(config: dict[str, Any]) -> None:
    """Import what every worker needs once, before forking (no client, no socket is opened here)."""
    if config["orchestrator"] == "dagster":
        import dagster  # noqa: F401
        import dagster_docker  # noqa: F401

        import dagster_integration  # noqa: F401
        from tests.support import campaign_dagster  # noqa: F401
        return
    import httpx  # noqa: F401
    from airflow.sdk import DAG  # noqa: F401
    from airflow.sdk.execution_time import supervisor, task_runner  # noqa: F401

    if config["operator"] == "kubernetes":
        import airflow_plugin.kubernetes  # noqa: F401
    else:
        import airflow_plugin.docker  # noqa: F401
    import imagegate._gc  # noqa: F401
    import imagegate._gate  # noqa: F401


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def serve(config: dict[str, Any]) -> None:
    _preload(config)
    _reply({"event": "ready"})
    children: dict[int, str] = {}
    buffer = b""
    open_input = True
    while open_input or children:
        readable, _, _ = select.select([sys.stdin.buffer] if open_input else [], [], [], 0.02)
        if readable:
            chunk = os.read(sys.stdin.fileno(), 65536)
            if not chunk:
                open_input = False
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    try:
                        _run_worker(config, request)
                    finally:
                        os._exit(0)
                children[pid] = request["id"]
                _reply({"id": request["id"], "event": "started", "pid": pid})
        while children:  # reap at once: a zombie's /proc entry would still read as the live launcher
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            _reply({"id": children.pop(pid), "event": "exited", "status": os.waitstatus_to_exitcode(status)})


# -- the test side -------------------------------------------------------------------------------------


class Driver:
    """Starts the driver process and talks to it: :meth:`start` a worker, :meth:`wait` for its end."""

    def __init__(self, config: dict[str, Any], env: dict[str, str], *, timeout: float = 120.0) -> None:
        self.config = config
        self.results = Path(config["results"])
        self.results.mkdir(parents=True, exist_ok=True)
        path = self.results / "driver.json"
        path.write_text(json.dumps(config))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.campaign", str(path)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=open(self.results / "driver.err", "wb"), cwd=ROOT,
            env={**env, "PYTHONPATH": str(ROOT)},
        )
        self._lock = threading.Lock()
        self._events: dict[str, dict[str, Any]] = {}
        self._signals: dict[str, threading.Event] = {}
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout) or self.process.poll() is not None:
            self.close()
            raise AssertionError(f"the campaign driver did not start: {(self.results / 'driver.err').read_text()[-3000:]}")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not ours (a stray print)
            if message.get("event") == "ready":
                self._ready.set()
                continue
            with self._lock:
                self._events[f"{message['id']}:{message['event']}"] = message
                self._signal(f"{message['id']}:{message['event']}").set()
        self._ready.set()  # the driver exited: nobody waits for it any longer than that

    def _signal(self, key: str) -> threading.Event:
        return self._signals.setdefault(key, threading.Event())

    def start(self, request: dict[str, Any], timeout: float = 30.0) -> int:
        assert self.process.stdin is not None
        with self._lock:
            started = self._signal(f"{request['id']}:started")
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
        if not started.wait(timeout):
            raise AssertionError(f"worker {request['id']} did not start")
        return int(self._events[f"{request['id']}:started"]["pid"])

    def wait(self, worker: str, timeout: float) -> int | None:
        """The worker's exit status (negative: the signal that ended it), or None if it still runs."""
        with self._lock:
            done = self._signal(f"{worker}:exited")
        if not done.wait(timeout):
            return None
        return int(self._events[f"{worker}:exited"]["status"])

    def result(self, worker: str) -> dict[str, Any]:
        path = self.results / f"{worker}.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def log(self, worker: str) -> str:
        path = self.results / f"{worker}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@dataclass
class Outcome:
    """One run of a campaign: how its first try was killed, what it left, and how its retry ended."""

    index: int
    signal: str
    delay: float
    reattach: bool
    first_status: int | None
    escalated: bool  # SIGTERM did not end the worker within 5 s: SIGKILL followed (as Airflow's supervisor does)
    left: list[dict[str, Any]]  # this run's containers or pods right after the first try ended (id, state)
    retry_status: int | None
    retry: dict[str, Any] = field(default_factory=dict)
    retry_log: str = ""

    def phase(self) -> str:
        """Where the kill landed, as the engine saw it afterwards."""
        if not self.left:
            return "nothing left"
        return "+".join(sorted({str(item["state"]) for item in self.left}))


@dataclass(frozen=True)
class Kill:
    """How one run's first try ends: *signal* after *delay* seconds; *reattach*: the retry's setting."""

    signal: signal.Signals
    delay: float
    reattach: bool


def plan_kills(seed: int, runs: int, start: float, end: float) -> list[Kill]:
    """Seeded kills for *runs* runs: half SIGKILL, half SIGTERM (shuffled); within each signal the delays are
    stratified over ``[start, end)`` (one random point in each of equal slices, the slices shuffled), so
    every phase between the gate and the container's exit is hit even in a short campaign; reattaching is
    on for half of each signal's runs."""
    rng = random.Random(seed)
    signals = [signal.SIGKILL, signal.SIGTERM] * (runs // 2) + [signal.SIGKILL] * (runs % 2)
    rng.shuffle(signals)
    kills: list[Kill | None] = [None] * runs
    for sig in (signal.SIGKILL, signal.SIGTERM):
        indices = [i for i, s in enumerate(signals) if s == sig]
        strata = list(range(len(indices)))
        rng.shuffle(strata)
        reattach = [j % 2 == 0 for j in range(len(indices))]
        rng.shuffle(reattach)
        for j, index in enumerate(indices):
            delay = start + (end - start) * (strata[j] + rng.random()) / len(indices)
            kills[index] = Kill(sig, delay, reattach[j])
    return [k for k in kills if k is not None]


def calibrate(driver: Driver, request: dict[str, Any], probe: Callable[[], list[dict[str, Any]]],
              timeout: float = 120.0) -> tuple[float, float]:
    """Run one try unkilled; (when its container was created, when it exited), in seconds after the worker's
    start, as *probe* (this try's containers: id, state) sees them."""
    started = time.monotonic()
    driver.start(request)
    created = exited = None
    while driver.wait(request["id"], 0.0) is None:
        now = time.monotonic() - started
        states = [c["state"] for c in probe()]
        if states and created is None:
            created = now
        if created is not None and exited is None and all(s not in ("created", "running", "Pending", "Running")
                                                           for s in states):
            exited = now
        if now > timeout:
            raise AssertionError(f"the calibration run did not end in {timeout:.0f} s")
        time.sleep(0.05)
    if created is None:
        raise AssertionError(f"the calibration run launched nothing: {driver.log(request['id'])[-3000:]}")
    return created, exited if exited is not None else time.monotonic() - started


def kill_and_retry(driver: Driver, index: int, kill: Kill, *, run_id: str,
                   left: Callable[[], list[dict[str, Any]]], request: dict[str, Any] | None = None,
                   retry_timeout: float = 120.0) -> Outcome:
    """Start the first try, kill it as *kill* says, record what it *left*, then run the second try to its
    end. SIGTERM is followed by SIGKILL after 5 s if the worker still runs, as Airflow's supervisor escalates."""
    sig, delay, reattach = kill.signal, kill.delay, kill.reattach
    extra = dict(request or {})
    first, second = f"{index}-1", f"{index}-2"
    pid = driver.start({**extra, "id": first, "run_id": run_id, "try": 1, "reattach": reattach,
                        "kwargs": {**extra.get("kwargs", {}), **_reattach_kwargs(driver, reattach)}})
    time.sleep(delay)
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # it finished first
    status = driver.wait(first, 5.0 if sig == signal.SIGTERM else 30.0)
    escalated = False
    if status is None:
        escalated = True
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        status = driver.wait(first, 30.0)
    found = left()
    driver.start({**extra, "id": second, "run_id": run_id, "try": 2, "reattach": reattach,
                  "kwargs": {**extra.get("kwargs", {}), **_reattach_kwargs(driver, reattach)}})
    retry_status = driver.wait(second, retry_timeout)
    return Outcome(index, sig.name, delay, reattach, status, escalated, found, retry_status, driver.result(second),
                   driver.log(second))


def _reattach_kwargs(driver: Driver, reattach: bool) -> dict[str, Any]:
    """The operator argument that turns reattaching on or off (Dagster reads it from the request)."""
    return {} if driver.config["orchestrator"] == "dagster" else {"durable": reattach}


# -- shared by the campaigns ----------------------------------------------------------------------------


def campaign_seed() -> int:
    seed = int(os.environ.get("IMAGEGATE_CAMPAIGN_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nkill campaign seed: {seed} (IMAGEGATE_CAMPAIGN_SEED={seed} replays it)")
    return seed


def job_command(index: int) -> list[str]:
    """A well-behaved job: it says when it starts and ends, and exits at once on SIGTERM."""
    return ["sh", "-c", f"trap 'exit 143' TERM; echo started-{index}; sleep {JOB_SECONDS} & wait; echo finished-{index}"]


def containers(docker_client: Any, label: str) -> list[dict[str, Any]]:
    """id and state of every container with *label*, running or not."""
    return [{"id": c["Id"], "state": c["State"]} for c in docker_client.api.containers(all=True, filters={"label": label})]


def gc_cli(*args: str) -> dict[str, Any]:
    """``imagegate gc --json ARGS`` through the command line; its JSON."""
    result = subprocess.run([sys.executable, "-m", "imagegate", "gc", "--json", *args], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def main() -> None:
    serve(json.loads(Path(sys.argv[1]).read_text()))


if __name__ == "__main__":
    main()
