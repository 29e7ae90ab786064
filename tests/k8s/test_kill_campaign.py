"""Killed Kubernetes tasks leave nothing behind: a seeded campaign of 10 kills and retries of
ImagegateKubernetesPodOperator on the real test cluster (restricted namespace).

As tests/airflow/test_kill_campaign.py, with pods: each run's first try (Airflow's task runner in a worker
process) is SIGKILLed or SIGTERMed (``on_kill`` deletes the pod) at a stratified random point between the
gate and the pod's end; the second try reattaches to a pod that still runs its checked images
(``durable=True``) or marks and deletes it (``durable=False``), and runs to its end. Afterwards no pod of
these tasks runs, and none is left at all once deletions finish (``on_finish_action="delete_pod"``).
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import time
from pathlib import Path
from typing import Any

import imagegate
import pytest

from tests.integration.conftest import Stack, unique
from tests.k8s.conftest import K8sCluster
from tests.support.campaign import (
    GATE_MARGIN,
    Driver,
    Outcome,
    calibrate,
    campaign_seed,
    job_command,
    kill_and_retry,
    plan_kills,
    wait_for,
)

pytestmark = [pytest.mark.k8s, pytest.mark.integration, pytest.mark.slow]

RUNS = 10
CONCURRENCY = 3
TASK_ID = "pod"


def pods(cluster: K8sCluster, key: str) -> list[dict[str, Any]]:
    listed = cluster.core().list_namespaced_pod(cluster.namespace, label_selector=f"imagegate.dev/task-key={key}").items
    return [{"id": p.metadata.name, "state": p.status.phase + ("/deleting" if p.metadata.deletion_timestamp else "")}
            for p in listed]


def test_killed_pod_tasks_leave_no_pod_running_and_none_at_all(
    stack: Stack, k8s_cluster: K8sCluster, nonroot_image: str, tmp_path: Path
) -> None:
    seed = campaign_seed()
    dag_id = unique("kill_campaign_k8s").replace("-", "_")
    cluster = {"config_file": str(k8s_cluster.kubeconfig), "cluster_context": k8s_cluster.env["IMAGEGATE_K8S_CONTEXT"],
               "in_cluster": False, "namespace": k8s_cluster.namespace, "startup_timeout_seconds": 120,
               "get_logs": True, "do_xcom_push": False, "image": nonroot_image, "cmds": ["sh", "-c"]}
    config = {"orchestrator": "airflow", "operator": "kubernetes", "dag_id": dag_id, "task_id": TASK_ID,
              "results": str(tmp_path / "workers"), "kwargs": cluster}
    env = {**os.environ, **stack.env, "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps({"conn_type": "kubernetes"})}
    driver = Driver(config, env)

    def key(run_id: str) -> str:
        return imagegate.TaskIdentity.airflow(dag_id=dag_id, task_id=TASK_ID, run_id=run_id).key

    started = time.monotonic()
    try:
        created, ended = calibrate(driver, {"id": "calibrate", "run_id": "calibrate", "try": 1,
                                            "kwargs": {"arguments": [job_command(-1)[2]]}},
                                   lambda: pods(k8s_cluster, key("calibrate")))
        assert driver.result("calibrate").get("state") == "success", driver.log("calibrate")[-3000:]
        kills = plan_kills(seed, RUNS, max(0.0, created - GATE_MARGIN), ended)

        def one(index: int) -> Outcome:
            run_id = f"manual__2026-01-01T00:00:{index:02d}+00:00"
            return kill_and_retry(driver, index, kills[index], run_id=run_id, left=lambda: pods(k8s_cluster, key(run_id)),
                                  request={"kwargs": {"arguments": [job_command(index)[2]]}}, retry_timeout=240)

        with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
            outcomes = list(pool.map(one, range(RUNS)))
    finally:
        driver.close()
    phases = collections.Counter(f"{o.signal}: {o.phase()}" for o in outcomes)
    print(f"{RUNS} runs in {time.monotonic() - started:.0f} s; where the kills landed: {dict(sorted(phases.items()))}")

    for o in outcomes:
        what = f"run {o.index} ({o.signal} after {o.delay:.2f} s, durable={o.reattach}, left {o.left})"
        assert o.retry_status == 0 and o.retry.get("state") == "success", \
            f"{what}: the retry failed: {o.retry}\n{o.retry_log[-4000:]}"
        assert f"finished-{o.index}" in o.retry_log, what  # the pod's log reached the retry's task log
        if o.signal == "SIGTERM" and not o.escalated:  # on_kill deleted the pod
            assert [p for p in o.left if p["state"] in ("Pending", "Running")] == [], what
        settled = {p["id"]: p for p in o.retry.get("settled") or []}
        assert set(settled) <= {p["id"] for p in o.left}, what
        reattached = [p for p in settled.values() if p["action"] == "reattach"]
        if reattached:
            assert o.reattach and f"reattaching to pod {reattached[0]['id']}" in o.retry_log, what
            assert f"started-{o.index}" in o.retry_log, what  # the reattached pod's log from its start
        if not o.reattach:
            assert not reattached, what
            for p in settled.values():
                if p["action"] == "remove":
                    assert f"deleted pod {p['id']}" in o.retry_log, what

    assert any(o.signal == "SIGKILL" and "Running" in o.phase() for o in outcomes), phases
    keys = [key(f"manual__2026-01-01T00:00:{i:02d}+00:00") for i in range(RUNS)]
    running = [p for k in keys for p in pods(k8s_cluster, k) if p["state"] in ("Pending", "Running")]
    assert running == [], "a killed task left a pod running"
    deadline = time.monotonic() + 90
    while (left := [p for k in keys for p in pods(k8s_cluster, k)]) and time.monotonic() < deadline:
        time.sleep(1)
    assert left == [], "pods of these tasks were never deleted"


def test_a_retry_reattaches_to_the_pod_and_gets_its_exit_code_and_logs(
    stack: Stack, k8s_cluster: K8sCluster, nonroot_image: str, tmp_path: Path
) -> None:

    dag_id = unique("reattach_k8s").replace("-", "_")
    script = "echo line-before-the-kill; sleep 4; echo line-after-the-kill; exit 7"
    kwargs = {"config_file": str(k8s_cluster.kubeconfig), "cluster_context": k8s_cluster.env["IMAGEGATE_K8S_CONTEXT"],
              "in_cluster": False, "namespace": k8s_cluster.namespace, "startup_timeout_seconds": 120, "get_logs": True,
              "do_xcom_push": False, "image": nonroot_image, "cmds": ["sh", "-c"], "arguments": [script], "durable": True}
    config = {"orchestrator": "airflow", "operator": "kubernetes", "dag_id": dag_id, "task_id": TASK_ID,
              "results": str(tmp_path / "workers"), "kwargs": kwargs}
    env = {**os.environ, **stack.env, "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps({"conn_type": "kubernetes"})}
    run_id = "scheduled__2026-01-01T00:00:00+00:00"
    key = imagegate.TaskIdentity.airflow(dag_id=dag_id, task_id=TASK_ID, run_id=run_id).key
    core = k8s_cluster.core()
    driver = Driver(config, env)
    try:
        pid = driver.start({"id": "first", "run_id": run_id, "try": 1})
        first = wait_for(lambda: [p for p in pods(k8s_cluster, key) if p["state"] == "Running"], 120, "the pod to run")[0]
        wait_for(lambda: "line-before-the-kill" in core.read_namespaced_pod_log(first["id"], k8s_cluster.namespace), 60,
                 "its first line")
        os.kill(pid, 9)
        assert driver.wait("first", 30) == -9
        driver.start({"id": "retry", "run_id": run_id, "try": 2})
        assert driver.wait("retry", 240) == 0
    finally:
        driver.close()
    retry, log = driver.result("retry"), driver.log("retry")
    assert [(p["id"], p["action"]) for p in retry["settled"]] == [(first["id"], "reattach")]
    assert retry["state"] == "up_for_retry" and first["id"] in retry["error"], retry  # the pod failed: exit 7
    assert "line-before-the-kill" in log and "line-after-the-kill" in log
    assert "'exit_code': 7" in log, log[-3000:]  # the provider logs the failed pod's container status


@pytest.mark.parametrize("reattach", [True, False])
def test_a_dagster_reexecution_reattaches_to_the_pod_or_deletes_it(
    stack: Stack, k8s_cluster: K8sCluster, nonroot_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    reattach: bool,
) -> None:
    import dagster as dg


    home = tmp_path / "dagster-home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    out = tmp_path / "steps"
    out.mkdir()
    script = "echo line-before-the-kill; sleep 4; echo line-after-the-kill; exit 7"
    env = {**os.environ, **stack.env, "DAGSTER_HOME": str(home), "IMAGEGATE_CAMPAIGN_OUT": str(out),
           "IMAGEGATE_CAMPAIGN_IMAGE": nonroot_image, "IMAGEGATE_CAMPAIGN_BACKEND": "kubernetes",
           "IMAGEGATE_CAMPAIGN_KUBECONFIG": str(k8s_cluster.kubeconfig),
           "IMAGEGATE_CAMPAIGN_CONTEXT": k8s_cluster.env["IMAGEGATE_K8S_CONTEXT"],
           "IMAGEGATE_CAMPAIGN_NAMESPACE": k8s_cluster.namespace}
    tag = unique("reattach-pod")
    request = {"run_id": tag, "reattach": reattach, "env": {"IMAGEGATE_CAMPAIGN_COMMAND": json.dumps(["sh", "-c", script])}}

    def step_pods() -> list[dict[str, Any]]:
        with dg.DagsterInstance.get() as instance:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"imagegate-campaign": tag}))
        if not runs:
            return []
        return pods(k8s_cluster, imagegate.TaskIdentity.dagster(run_id=runs[-1].run_id, step_key="campaign_pod").key)

    with dg.DagsterInstance.get():  # its storage exists before two processes open it (SQLite migrations race)
        pass
    core = k8s_cluster.core()
    driver = Driver({"orchestrator": "dagster", "results": str(tmp_path / "workers")}, env)
    try:
        pid = driver.start({**request, "id": "first", "try": 1})
        first = wait_for(lambda: [p for p in step_pods() if p["state"] == "Running"], 120, "the pod to run")[0]
        wait_for(lambda: "line-before-the-kill" in core.read_namespaced_pod_log(first["id"], k8s_cluster.namespace), 60,
                 "its first line")
        os.kill(pid, 9)  # the run worker dies; its pod runs on
        assert driver.wait("first", 30) == -9
        driver.start({**request, "id": "retry", "try": 2})
        assert driver.wait("retry", 240) == 0
    finally:
        driver.close()
    retry, log = driver.result("retry"), driver.log("retry")
    assert retry["state"] == "failed"  # exit 7, whichever pod ran it
    settled = {p["id"]: p["action"] for p in retry["settled"]}
    if reattach:
        assert settled == {first["id"]: "reattach"}
        assert "line-before-the-kill" in log and "line-after-the-kill" in log  # the first pod's log, from its start
    else:
        assert settled == {first["id"]: "remove"} and "reattaching is off" in log
    deadline = time.monotonic() + 90
    while (left := step_pods()) and time.monotonic() < deadline:
        time.sleep(1)
    assert left == []  # the followed (or deleted) pod and the re-execution's own are gone
