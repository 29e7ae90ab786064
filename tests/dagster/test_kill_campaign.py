"""Killed Dagster steps leave nothing behind: a seeded campaign of 10 kills and re-executions (ImagegateDockerClient).

Each run's first attempt is a worker process executing a one-asset job (``dg.execute_job``, in-process
executor, a persistent instance); it is SIGKILLed or SIGTERMed (Dagster turns SIGTERM into an interrupt of
the step; SIGKILL 5 s later if it still runs) at a random point between the gate and the container's exit
(measured by a calibration run; stratified as in tests/airflow/test_kill_campaign.py). The killed run is then marked failed, as Dagster's run monitoring marks a run whose worker
died, and re-executed from failure — a new run with the first as its root, so the step finds the containers
of the earlier attempt by ``imagegate.dev/task-key``. Afterwards none of them runs and ``imagegate gc``
leaves none at all. The seed is printed (``IMAGEGATE_CAMPAIGN_SEED=N`` replays a campaign).
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import time
from pathlib import Path
from typing import Any

import dagster as dg
import imagegate
import pytest

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

RUNS = 10
CONCURRENCY = 2  # Dagster's SQLite run storage is shared by the workers
STEP = "campaign_step"


@pytest.fixture(scope="module")
def job_image(stack: Stack, docker_client: Any) -> str:
    repo = unique("dagster-campaign")
    digest = build_and_push(docker_client, stack, "FROM {base}\nUSER 1000\n", repo, "1.0.0")
    return f"{stack.registry}/{repo}@{digest}"


def driver_for(stack: Stack, dagster_home: Path, tmp_path: Path, image: str) -> Driver:
    out = tmp_path / "steps"
    out.mkdir()
    env = {**os.environ, **stack.env, "DAGSTER_HOME": str(dagster_home), "IMAGEGATE_CAMPAIGN_OUT": str(out),
           "IMAGEGATE_CAMPAIGN_IMAGE": image}
    with dg.DagsterInstance.get():  # its storage exists before two processes open it (SQLite migrations race)
        pass
    return Driver({"orchestrator": "dagster", "results": str(tmp_path / "workers")}, env)


def step_containers(docker_client: Any, tag: str) -> list[dict[str, Any]]:
    """The containers of every attempt of the run tagged *tag* (a re-execution shares its root's key; a run
    started anew after a kill that came too late has its own)."""
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"imagegate-campaign": tag}))
    keys = {imagegate.TaskIdentity.dagster(run_id=r.run_id, root_run_id=r.root_run_id, step_key=STEP).key for r in runs}
    return [c for key in sorted(keys) for c in containers(docker_client, f"imagegate.dev/task-key={key}")]


def test_killed_dagster_steps_leave_nothing_running_and_gc_leaves_nothing(
    stack: Stack, docker_client: Any, job_image: str, dagster_home: Path, tmp_path: Path
) -> None:
    seed = campaign_seed()
    campaign = unique("c")
    driver = driver_for(stack, dagster_home, tmp_path, job_image)
    started = time.monotonic()
    try:
        calibrate_request = {"id": "calibrate", "run_id": f"{campaign}-calibrate", "try": 1,
                     "env": {"IMAGEGATE_CAMPAIGN_COMMAND": json.dumps(job_command(-1))}}
        created, exited = calibrate(driver, calibrate_request,
                                    lambda: step_containers(docker_client, f"{campaign}-calibrate"))
        assert driver.result("calibrate").get("state") == "success", driver.log("calibrate")[-3000:]
        kills = plan_kills(seed, RUNS, max(0.0, created - GATE_MARGIN), exited)

        def one(index: int) -> Outcome:
            tag = f"{campaign}-{index}"
            return kill_and_retry(driver, index, kills[index], run_id=tag,
                                  left=lambda: step_containers(docker_client, tag),
                                  request={"env": {"IMAGEGATE_CAMPAIGN_COMMAND": json.dumps(job_command(index))}})

        with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
            outcomes = list(pool.map(one, range(RUNS)))
    finally:
        driver.close()
    phases = collections.Counter(f"{o.signal}: {o.phase()}" for o in outcomes)
    print(f"{RUNS} runs in {time.monotonic() - started:.0f} s; where the kills landed: {dict(sorted(phases.items()))}")

    for o in outcomes:
        what = f"run {o.index} ({o.signal} after {o.delay:.2f} s, reattach={o.reattach}, left {o.left})"
        assert o.retry_status == 0 and o.retry.get("state") == "success", \
            f"{what}: the re-execution failed: {o.retry}\n{o.retry_log[-4000:]}"
        assert o.retry["output"][-1] == f"finished-{o.index}", what
        if o.signal == "SIGTERM" and not o.escalated:  # the interrupted step stopped and removed its container
            assert [c for c in o.left if c["state"] in ("running", "created")] == [], what
        settled = {p["id"]: p for p in o.retry.get("settled") or []}
        assert set(settled) <= {c["id"] for c in o.left}, what
        reattached = [p for p in settled.values() if p["action"] == "reattach"]
        if reattached:
            assert o.reattach and f"started-{o.index}" in o.retry["output"], what
        elif not o.reattach:
            assert all(p["action"] in ("remove", "keep") for p in settled.values()), what

    assert any("running" in o.phase() for o in outcomes if o.signal == "SIGKILL"), phases
    tags = [f"{campaign}-{i}" for i in range(RUNS)]
    assert [c for t in tags for c in step_containers(docker_client, t) if c["state"] != "exited"] == []
    gc_cli("--label", "imagegate.dev/step-key=campaign_step", "--label", "imagegate.dev/orchestrator=dagster",
           "--older-than", "0s")
    assert [c for t in tags for c in step_containers(docker_client, t)] == []


def test_a_reexecution_reattaches_and_gets_the_first_containers_exit_code_and_output(
    stack: Stack, docker_client: Any, job_image: str, dagster_home: Path, tmp_path: Path
) -> None:
    script = "echo line-before-the-kill; sleep 3; echo line-after-the-kill; exit 7"
    driver = driver_for(stack, dagster_home, tmp_path, job_image)
    tag = unique("reattach")
    request = {"run_id": tag, "reattach": True, "env": {"IMAGEGATE_CAMPAIGN_COMMAND": json.dumps(["sh", "-c", script])}}
    try:
        pid = driver.start({**request, "id": "first", "try": 1})
        first = wait_for(lambda: [c for c in step_containers(docker_client, tag) if c["state"] == "running"], 60,
                         "the first attempt's container to run")[0]
        wait_for(lambda: b"line-before-the-kill" in docker_client.api.logs(first["id"]), 30, "its first line")
        os.kill(pid, 9)
        assert driver.wait("first", 30) == -9
        driver.start({**request, "id": "retry", "try": 2})
        assert driver.wait("retry", 120) == 0
    finally:
        driver.close()
    retry = driver.result("retry")
    assert retry["state"] == "failed"  # the followed container exited 7: the re-executed step fails with it
    assert [p["action"] for p in retry["settled"]] == ["reattach"] and retry["settled"][0]["id"] == first["id"]
    log = driver.log("retry")
    assert "Container exited with non-zero status code" in log and "'StatusCode': 7" in log
    assert "line-before-the-kill" in log and "line-after-the-kill" in log
    assert step_containers(docker_client, tag) == []  # the client removed it once the step was done
