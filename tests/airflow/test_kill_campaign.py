"""Killed Airflow Docker tasks leave nothing behind: a seeded campaign of 50 kills and retries on the real engine.

Each run's first try is a worker process running ImagegateDockerOperator through Airflow's own task runner
(tests/support/campaign.py says why a forked worker, and what is real); the worker is SIGKILLed (OOM killer,
node loss) or SIGTERMed (Airflow's ``on_kill``; SIGKILL 5 s later if it still runs, as Airflow's supervisor
escalates) at a random point between the gate and the container's exit (a calibration run measures both;
the points are stratified so that a campaign hits every phase: the gate, create, start, the running job).
Then the second try runs to its end. Afterwards no container of these tasks runs, and ``imagegate gc``
leaves none at all. The seed is printed (``IMAGEGATE_CAMPAIGN_SEED=N`` replays a campaign).
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

import imagegate
from tests.integration.conftest import Stack, build_and_push, unique
from tests.support.campaign import (
    GATE_MARGIN,
    Driver,
    Outcome,
    calibrate,
    campaign_seed,
    containers,
    gc_cli,
    job_command,
    kill_and_retry,
    plan_kills,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNS = 50
CONCURRENCY = 5
TASK_ID = "job"


@pytest.fixture(scope="module")
def job_image(stack: Stack, docker_client: Any) -> str:
    repo = unique("campaign")
    digest = build_and_push(docker_client, stack, "FROM {base}\nUSER 1000\n", repo, "1.0.0")
    return f"{stack.registry}/{repo}@{digest}"


def summary(outcomes: list[Outcome]) -> str:
    phases = collections.Counter(f"{o.signal}: {o.phase()}" for o in outcomes)
    reattached = sum(1 for o in outcomes if (o.retry.get("launched") or {}).get("reattached"))
    return f"where the kills landed: {dict(sorted(phases.items()))}; retries that reattached: {reattached}"


def test_killed_docker_tasks_leave_nothing_running_and_gc_leaves_nothing(
    stack: Stack, docker_client: Any, job_image: str, tmp_path: Path
) -> None:
    seed = campaign_seed()
    dag_id = unique("kill_campaign").replace("-", "_")
    config = {"orchestrator": "airflow", "operator": "docker", "dag_id": dag_id, "task_id": TASK_ID,
              "results": str(tmp_path / "workers"), "kwargs": {"image": job_image, "mount_tmp_dir": False}}
    driver = Driver(config, {**os.environ, **stack.env})
    started = time.monotonic()
    try:
        # When a try's container is created and when it exits, after its worker starts: the kill window.
        calibration = imagegate.TaskIdentity.airflow(dag_id=dag_id, task_id=TASK_ID, run_id="calibrate").key
        created, exited = calibrate(driver, {"id": "calibrate", "run_id": "calibrate", "try": 1,
                                             "kwargs": {"command": job_command(-1)}},
                                    lambda: containers(docker_client, f"imagegate.dev/task-key={calibration}"))
        assert driver.result("calibrate").get("state") == "success", driver.log("calibrate")[-3000:]
        kills = plan_kills(seed, RUNS, max(0.0, created - GATE_MARGIN), exited)

        def one(index: int) -> Outcome:
            rng = random.Random(f"{seed}-{index}")
            run_id = f"manual__2026-01-01T00:00:{index:02d}+00:00"  # what Airflow's run ids look like: ':' and '+'
            key = imagegate.TaskIdentity.airflow(dag_id=dag_id, task_id=TASK_ID, run_id=run_id).key
            auto_remove = "never" if rng.random() < 0.2 else "success"
            return kill_and_retry(
                driver, index, kills[index], run_id=run_id,
                left=lambda: containers(docker_client, f"imagegate.dev/task-key={key}"),
                request={"kwargs": {"command": job_command(index), "auto_remove": auto_remove}},
            )

        with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
            outcomes = list(pool.map(one, range(RUNS)))
    finally:
        driver.close()
    print(f"{RUNS} runs in {time.monotonic() - started:.0f} s; {summary(outcomes)}")

    for o in outcomes:
        what = f"run {o.index} ({o.signal} after {o.delay:.2f} s, durable={o.reattach}, left {o.left})"
        assert o.retry_status == 0 and o.retry.get("state") == "success", \
            f"{what}: the retry failed: {o.retry}\n{o.retry_log[-4000:]}"
        assert o.retry["return_value"] == f"finished-{o.index}", what  # the job's last line, as the provider returns it
        if o.signal == "SIGTERM" and not o.escalated:  # on_kill ran to its end: nothing of that try still runs
            assert not [c for c in o.left if c["state"] in ("running", "created")], what
        settled = {p["id"]: p for p in o.retry.get("settled") or []}
        assert set(settled) <= {c["id"] for c in o.left}, what  # the retry touched only this task's containers
        launched = o.retry["launched"]
        if launched.get("reattached"):
            assert o.reattach, what
            assert settled[launched["container_id"]]["action"] == "reattach", what
            assert f"started-{o.index}" in o.retry_log, f"{what}: the reattached try's log misses the job's start"
        elif not o.reattach:
            assert all(p["action"] in ("remove", "keep") for p in settled.values()), what
        for p in settled.values():  # what the log says, for each container of the earlier try
            assert p["id"][:12] in o.retry_log, what

    # The campaign exercised what it claims: orphans that still ran when the retry came, and both answers to them.
    assert any(o.signal == "SIGKILL" and "running" in o.phase() for o in outcomes), summary(outcomes)
    assert any((o.retry["launched"] or {}).get("reattached") for o in outcomes), summary(outcomes)
    assert any(p["action"] == "remove" and p["state"] == "running"
               for o in outcomes for p in o.retry.get("settled") or []), summary(outcomes)

    label = f"imagegate.dev/dag-id={dag_id}"
    assert [c for c in containers(docker_client, label) if c["state"] != "exited"] == [], "a killed task left a container running"
    seen = {c["id"] for o in outcomes for c in o.left} | {o.retry["launched"]["container_id"] for o in outcomes}
    adopted = {v["Labels"].get("imagegate.dev/adopts")
               for v in docker_client.api.volumes(filters={"label": "imagegate.dev/adopts"}).get("Volumes") or []}
    assert not seen & adopted, "a retry left its adoption record behind"
    kept = containers(docker_client, label)  # auto_remove="never" keeps a finished container, stopped
    report = gc_cli("--label", label)
    assert report["removed"] == [] and sorted(k["id"] for k in report["kept"]) == sorted(c["id"] for c in kept)
    report = gc_cli("--label", label, "--older-than", "0s")
    assert sorted(r["id"] for r in report["removed"]) == sorted(c["id"] for c in kept)
    assert containers(docker_client, label) == []


@pytest.mark.parametrize("durable", [True, False])
def test_a_retry_reattaches_and_gets_the_first_containers_exit_code_and_logs_or_replaces_it(
    stack: Stack, docker_client: Any, job_image: str, tmp_path: Path, durable: bool
) -> None:
    dag_id = unique("reattach").replace("-", "_")
    script = "echo line-before-the-kill; sleep 3; echo line-after-the-kill; exit 7"
    config = {"orchestrator": "airflow", "operator": "docker", "dag_id": dag_id, "task_id": TASK_ID,
              "results": str(tmp_path / "workers"),
              "kwargs": {"image": job_image, "mount_tmp_dir": False, "command": ["sh", "-c", script], "durable": durable}}
    run_id = "scheduled__2026-01-01T00:00:00+00:00"
    key = imagegate.TaskIdentity.airflow(dag_id=dag_id, task_id=TASK_ID, run_id=run_id).key
    driver = Driver(config, {**os.environ, **stack.env})
    try:
        pid = driver.start({"id": "first", "run_id": run_id, "try": 1})
        first = wait_for(lambda: [c for c in containers(docker_client, f"imagegate.dev/task-key={key}")
                                  if c["state"] == "running"], 60, "the first try's container to run")[0]
        wait_for(lambda: b"line-before-the-kill" in docker_client.api.logs(first["id"]), 30, "its first line")
        os.kill(pid, 9)  # the worker dies (OOM killer, node loss): its container runs on
        assert driver.wait("first", 30) == -9
        driver.start({"id": "retry", "run_id": run_id, "try": 2})
        assert driver.wait("retry", 120) == 0
    finally:
        driver.close()
    retry, log = driver.result("retry"), driver.log("retry")
    launched = retry["launched"]
    if durable:  # the first container's outcome is the retry's: its exit code and all its output
        assert launched["reattached"] is True and launched["container_id"] == first["id"]
        assert retry["state"] == "up_for_retry" and "'StatusCode': 7" in retry["error"], retry
        assert "line-before-the-kill" in log and "line-after-the-kill" in log
        assert f"reattaching to container {first['id'][:12]} (try-number 1, running)" in log
    else:  # a new container ran the job again; the first one was stopped and removed, never left beside it
        assert launched["container_id"] != first["id"] and not launched.get("reattached")
        assert f"stopped and removed container {first['id'][:12]} (try-number 1, running)" in log
        assert "reattaching is off" in log
        assert retry["state"] == "up_for_retry" and "'StatusCode': 7" in retry["error"]
    # auto_remove="success" (the default here) removes a finished container: nothing of either try is left
    assert containers(docker_client, f"imagegate.dev/task-key={key}") == []
