"""Benchmark: a PySpark word count through imagegate's PinnedSparkKubernetesOperator vs the provider's operator.

Run (needs ``python scripts/stack.py up`` and ``IMAGEGATE_K8S_SPARK=1 python scripts/k8s.py up``; the first run
builds imagegate's Spark image, minutes, and pushes it to the stack's registry)::

    .venv/bin/python benchmarks/bench_spark.py [--runs 5] [--gate-runs 21] [--json benchmarks/results/spark.json]

1. Job wall time (issue 17: target <= 1.05x). The same SparkApplication (the word count baked into the image,
   1 driver and 2 executors, 250m of CPU each, the restricted pod templates the namespace requires) as a one-task
   DAG, run by ``airflow dags test``:

   * ours: ``PinnedSparkKubernetesOperator`` given ``REPO:TAG``: it resolves, checks, pins and hardens every
     image, creates the pinned application, then reads every driver and executor pod back;
   * plain: the provider's ``SparkKubernetesOperator`` given the already-pinned ``REPO@sha256:`` the gate pins
     to (the same digest), so only the gate differs.

   Wall time of the whole command, median of ``--runs`` each, alternating which goes first; one warm-up of each
   (not counted). Between two runs the benchmark waits until the previous job's pods are gone, so no job
   shares the 2-core node with another. Also from the task log: "Task started" to the run marked successful
   (the task alone, without starting ``airflow dags test``), and our operator's "imagegate: gate took N ms".
2. The gate's own time, in process: ``imagegate.plan_spark_application`` over the body the operator gates
   (the spec walk, resolving the tag, the checks, pinning and hardening), median of ``--gate-runs``:
   cold (a new client, an empty registry disk cache), warm disk (a new client on the filled disk cache: a new
   task process), warm process (the same client again: a long-lived process).
3. The one-time cost of the extra cluster parts: the cold build figures measured when they were added
   (docs/spark.md, cited, not rebuilt here) and the cached check measured now (``spark_parts all``).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "benchmarks")]
AIRFLOW = Path(sys.executable).with_name("airflow")

from bench_airflow import GATE_TOOK, RUN_MARKED, TASK_STARTED, _seconds_between  # noqa: E402

GROUP, VERSION, PLURAL = "sparkoperator.k8s.io", "v1beta2", "sparkapplications"
APP_LABEL = "sparkoperator.k8s.io/app-name"
SPARK_UID = 185
WORDS = ROOT / "scripts" / "localstack" / "spark" / "words.txt"
PODS_CHECKED = re.compile(r"imagegate: (\d+) pod\(s\) ran the planned digests: (.*)")
DAGS_TEST_TIMEOUT = 900

# The cold build of each part, as measured when it was added (docs/spark.md, "How long it takes": 2 cores,
# shared with test runs, nice -n 19). Not rebuilt here: a cold CoreDNS and operator build costs minutes and
# ~1.4 GB of memory and would empty the cache every other run depends on.
PARTS_COLD_S = {
    "kube-proxy": 13,
    "coredns": 176,  # with empty Go caches (121 s with them warm)
    "spark-operator": 123,  # 86-123 s after CoreDNS
    "pyspark sdist download + unpack": 5.3,
    "debootstrap + tar of the rootfs": 53,
    "docker import + build of the image": 13,
}

DAG = '''\
import pendulum
from airflow.sdk import dag
from {module} import {operator}

@dag(dag_id={dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
def d():
    {operator}(task_id="spark", namespace={namespace!r}, template_spec={application!r}, config_file={kubeconfig!r},
               cluster_context={context!r}, in_cluster=False, get_logs=True, startup_timeout_seconds=300)
d()
'''


def load_env(dir_var: str, default: str, name: str, hint: str) -> dict[str, str]:
    state = Path(os.environ.get(dir_var, default)) / name
    if not state.is_file():
        sys.exit(f"no {state}; {hint}")
    env: dict[str, str] = json.loads(state.read_text())["env"]
    return env


def pod_template(container: str) -> dict[str, Any]:
    """What the restricted namespace requires of the provider's pods (the spark-operator's webhook, which would
    apply ``spec.*.securityContext``, does not run here: docs/spark.md). Ours keeps it: it satisfies the profile."""
    return {"spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": SPARK_UID, "runAsGroup": SPARK_UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": container, "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"}}}],
    }}


def application(name: str, namespace: str, image: str) -> dict[str, Any]:
    role = {"cores": 1, "coreRequest": "250m", "memory": "512m"}  # 2 cores on the node: 3 pods must fit
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SparkApplication",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "type": "Python", "pythonVersion": "3", "mode": "cluster", "sparkVersion": "4.3.0", "image": image,
            "imagePullPolicy": "IfNotPresent", "mainApplicationFile": "local:///opt/spark/work-dir/wordcount.py",
            "arguments": ["/opt/spark/work-dir/words.txt", "4"],
            "sparkConf": {"spark.ui.enabled": "false"}, "restartPolicy": {"type": "Never"},
            "driver": {**role, "serviceAccount": "spark", "template": pod_template("spark-kubernetes-driver")},
            "executor": {**role, "instances": 2, "template": pod_template("spark-kubernetes-executor")},
        },
    }


def push_spark_image(stack: dict[str, str], k8s: dict[str, str]) -> str:
    """imagegate's Spark image (built once by localstack.spark_parts) in the stack's registry, tagged with its
    build key (an unchanged image is pushed once); returns REPO:TAG."""
    import docker
    from localstack import spark_parts

    hosts = Path(k8s["IMAGEGATE_K8S_DIR"]) / "containerd" / "certs.d" / stack["IMAGEGATE_REGISTRY"] / "hosts.toml"
    if not hosts.is_file():
        sys.exit(f"the cluster does not pull from the stack's registry ({hosts} is missing): re-run scripts/k8s.py up")
    docker_host = stack.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    local = spark_parts.ensure_spark_image(docker_host)
    dk = docker.DockerClient(base_url=docker_host)
    image = dk.images.get(local)
    repo, tag = f"{stack['IMAGEGATE_REGISTRY']}/imagegate-bench/spark", image.labels[spark_parts.IMAGE_KEY_LABEL]
    image.tag(repo, tag)
    for line in dk.images.push(repo, tag=tag, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(line["error"])
    dk.images.remove(f"{repo}:{tag}", noprune=True)
    dk.close()
    return f"{repo}:{tag}"


def operator_body(app: dict[str, Any]) -> dict[str, Any]:
    """The body PinnedSparkKubernetesOperator gates: the application as the provider's launcher holds it, with
    the executors kept for the read-back (what ``_gate_body`` does before ``plan_spark_application``)."""
    import copy

    body = copy.deepcopy(app)
    body["spec"]["executor"].setdefault("deleteOnTermination", False)
    return body


def bench_gate(app: dict[str, Any], runs: int) -> dict[str, Any]:
    """``plan_spark_application`` in this process: cold, warm disk cache, warm process (seconds, medians)."""
    import imagegate
    from imagegate._diskcache import DiskCache
    from imagegate._registry import RegistryClient

    with tempfile.TemporaryDirectory(prefix="bench-spark-policy-") as start:
        policy = imagegate.Policy.discover(start)  # what a DAG in a folder with no policy file gets
    body = operator_body(app)

    def gate(client: RegistryClient) -> tuple[float, int, Any]:
        before = client.round_trips
        t0 = time.perf_counter()
        plan = imagegate.plan_spark_application(body, policy=policy, client=client, orchestrator="airflow",
                                                task="bench/spark", launch_id="0" * 32)
        return time.perf_counter() - t0, client.round_trips - before, plan

    samples: dict[str, list[float]] = {"cold": [], "warm_disk": [], "warm_process": []}
    trips: dict[str, list[int]] = {k: [] for k in samples}
    plan = None
    with tempfile.TemporaryDirectory(prefix="bench-spark-cache-") as tmp:
        for i in range(runs + 1):  # the first round warms this process's imports; not counted
            cold = RegistryClient(disk_cache=DiskCache(Path(tmp, f"cold-{i}")))
            seconds, n, plan = gate(cold)
            rounds = [("cold", seconds, n)]
            warm = RegistryClient(disk_cache=DiskCache(Path(tmp, f"cold-{i}")))  # the disk cache it just filled
            rounds.append(("warm_disk", *gate(warm)[:2]))
            rounds.append(("warm_process", *gate(warm)[:2]))
            cold.close(), warm.close()
            if i:
                for kind, s, n in rounds:
                    samples[kind].append(s)
                    trips[kind].append(n)
    assert plan is not None
    return {
        "runs": runs,
        "images_gated": sorted(plan.plans),
        "launch": plan.driver.launch,
        **{f"{k}_ms_median": round(statistics.median(v) * 1000, 2) for k, v in samples.items()},
        **{f"{k}_http_requests": statistics.median(v) for k, v in trips.items()},
        "samples_ms": {k: [round(s * 1000, 2) for s in v] for k, v in samples.items()},
    }


def cluster_parts() -> dict[str, Any]:
    """The cached check of every part (a second ``spark_parts all``), measured; the cold build, cited."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "scripts")}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "localstack.spark_parts", "all"], env=env, capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    cached = time.perf_counter() - t0
    if out.returncode:
        sys.exit(f"spark_parts all failed:\n{out.stderr[-3000:]}")
    return {
        "cold_build_seconds": PARTS_COLD_S,
        "cold_build_seconds_total": round(sum(PARTS_COLD_S.values()), 1),
        "cold_build_source": "docs/spark.md, 'How long it takes' (measured when the parts were added; not rebuilt)",
        "cached_check_seconds": round(cached, 2),
    }


def expected_summary() -> str:
    words = WORDS.read_text().lower().split()
    return f"wordcount: {len(set(words))} distinct words, {len(words)} in all"


def wait_gone(custom: Any, core: Any, ns: str, prefix: str, timeout: float = 240) -> None:
    """No SparkApplication and no pod of an earlier run is left (so the next job has the node to itself)."""
    deadline = time.monotonic() + timeout
    while True:
        apps = [a["metadata"]["name"] for a in custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
                if a["metadata"]["name"].startswith(prefix)]
        pods = [p.metadata.name for p in core.list_namespaced_pod(ns, label_selector=APP_LABEL).items
                if p.metadata.labels.get(APP_LABEL, "").startswith(prefix)]
        if not apps and not pods:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"left behind after {timeout:.0f} s: applications {apps}, pods {pods}")
        for name in apps:  # a failed run may leave its application; ours are ours to delete
            custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        time.sleep(1)


def bench_jobs(runs: int, image: str, launch: str, k8s: dict[str, str], env: dict[str, str], home: Path,
               custom: Any, core: Any) -> dict[str, Any]:
    ns, kubeconfig, context = k8s["IMAGEGATE_K8S_NAMESPACE"], k8s["KUBECONFIG"], k8s["IMAGEGATE_K8S_CONTEXT"]
    summary = expected_summary()
    with tempfile.TemporaryDirectory(prefix="bench-spark-dags-") as tmp:
        dags = Path(tmp)
        for side, module, operator, ref in (
            ("ours", "airflow_plugin.spark", "PinnedSparkKubernetesOperator", image),
            ("plain", "airflow.providers.cncf.kubernetes.operators.spark_kubernetes", "SparkKubernetesOperator", launch),
        ):
            (dags / f"{side}.py").write_text(DAG.format(
                module=module, operator=operator, dag_id=f"bench_spark_{side}", namespace=ns, kubeconfig=kubeconfig,
                context=context, application=application(f"bench-spark-{side}", ns, ref)))
        env = {**env, "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
        subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, check=True, timeout=300)
        times: dict[str, list[float]] = {"ours": [], "plain": []}
        spans: dict[str, list[float]] = {"ours": [], "plain": []}
        gate_ms: list[float] = []

        def once(side: str, record: bool = True) -> None:
            wait_gone(custom, core, ns, "bench-spark-")
            start = time.perf_counter()
            out = subprocess.run([str(AIRFLOW), "dags", "test", f"bench_spark_{side}"], env=env, capture_output=True,
                                 text=True, timeout=DAGS_TEST_TIMEOUT, cwd=ROOT)
            wall = time.perf_counter() - start
            log = out.stdout + out.stderr
            if out.returncode:
                raise SystemExit(f"airflow dags test bench_spark_{side} failed:\n{log[-6000:]}")
            if summary not in log:  # the job ran: the driver's log, streamed by get_logs, has the counts
                raise SystemExit(f"bench_spark_{side}: no {summary!r} in the task log:\n{log[-4000:]}")
            checked = PODS_CHECKED.search(log)
            if side == "ours" and not (checked and checked.group(2).count("(executor)") == 2):
                raise SystemExit(f"bench_spark_ours: the pods were not read back:\n{log[-4000:]}")
            print(f"  {side}: {wall:.1f} s", flush=True)
            if not record:
                return
            times[side].append(wall)
            if side == "ours":
                gate_ms.extend(float(m) for m in GATE_TOOK.findall(log))
            started, marked = TASK_STARTED.search(log), RUN_MARKED.search(log)
            if started and marked:
                spans[side].append(_seconds_between(started[1], marked[1]))

        print("warm-up (not counted): first pull into the cluster, DAG serialisation, .pyc", flush=True)
        once("plain", record=False), once("ours", record=False)
        for i in range(runs):  # alternate who goes first: the shared machine's load drifts
            order = ("plain", "ours") if i % 2 == 0 else ("ours", "plain")
            print(f"round {i + 1}/{runs}", flush=True)
            for side in order:
                once(side)
        wait_gone(custom, core, ns, "bench-spark-")
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "runs": runs,
        "image_ours": image,
        "image_plain": launch,
        "dags_test_seconds_ours": round(med["ours"], 2),
        "dags_test_seconds_plain": round(med["plain"], 2),
        "run_ratio": round(med["ours"] / med["plain"], 3),
        "run_ratio_paired": round(statistics.median(a / b for a, b in zip(times["ours"], times["plain"])), 3),
        "task_seconds_ours": round(statistics.median(spans["ours"]), 2) if spans["ours"] else None,
        "task_seconds_plain": round(statistics.median(spans["plain"]), 2) if spans["plain"] else None,
        "task_ratio": round(statistics.median(spans["ours"]) / statistics.median(spans["plain"]), 3)
        if spans["ours"] and spans["plain"] else None,
        "gate_ms_in_task_median": round(statistics.median(gate_ms), 1) if gate_ms else None,
        "samples_ours": [round(t, 2) for t in times["ours"]],
        "samples_plain": [round(t, 2) for t in times["plain"]],
        "task_samples_ours": [round(t, 2) for t in spans["ours"]],
        "task_samples_plain": [round(t, 2) for t in spans["plain"]],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="`airflow dags test` runs of each operator")
    parser.add_argument("--gate-runs", type=int, default=21, help="in-process gate calls of each kind")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "spark.json")
    args = parser.parse_args()

    stack = load_env("IMAGEGATE_STACK_DIR", "/tmp/imagegate-stack", "stack.json",
                     "start the stack with: python scripts/stack.py up")
    k8s = load_env("IMAGEGATE_K8S_DIR", "/tmp/imagegate-k8s", "k8s.json",
                   "start the cluster with: IMAGEGATE_K8S_SPARK=1 python scripts/k8s.py up")
    if k8s.get("IMAGEGATE_K8S_SPARK") != "1":
        sys.exit("the cluster runs without Spark; start it with: IMAGEGATE_K8S_SPARK=1 python scripts/k8s.py up")
    os.environ.update(stack)
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=k8s["KUBECONFIG"], context=k8s["IMAGEGATE_K8S_CONTEXT"])
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    ns = k8s["IMAGEGATE_K8S_NAMESPACE"]

    image = push_spark_image(stack, k8s)
    print(f"image {image}", flush=True)
    gate = bench_gate(application("bench-spark-ours", ns, image), args.gate_runs)
    print(json.dumps({k: v for k, v in gate.items() if k != "samples_ms"}, indent=2), flush=True)
    parts = cluster_parts()
    print(json.dumps(parts, indent=2), flush=True)

    kube_conn = {"conn_type": "kubernetes", "extra": {"kube_config_path": k8s["KUBECONFIG"],
                                                      "cluster_context": k8s["IMAGEGATE_K8S_CONTEXT"], "namespace": ns}}
    with tempfile.TemporaryDirectory(prefix="airflow-home-bench-spark-") as home:
        env = {**os.environ, "AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": str(ROOT),
               "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(kube_conn)}
        env.pop("AIRFLOW__IMAGEGATE__CLUSTER_POLICY", None)
        env.pop("AIRFLOW__IMAGEGATE__POLICY", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "imagegate-bench-pycache")
        jobs = bench_jobs(args.runs, image, gate["launch"], k8s, env, Path(home), custom, core)
    api.close()

    result = {
        "benchmark": "PySpark word count (1 driver, 2 executors) via airflow dags test: PinnedSparkKubernetesOperator "
                     "vs the provider's SparkKubernetesOperator on the same digest",
        "kubernetes": k8s.get("IMAGEGATE_K8S_VERSION"),
        "spark": "4.3.0",
        "jobs": jobs,
        "gate": gate,
        "cluster_parts": parts,
        "python": sys.version.split()[0],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"job wall time (airflow dags test, median of {args.runs}): ours {jobs['dags_test_seconds_ours']} s, "
          f"provider {jobs['dags_test_seconds_plain']} s, ratio {jobs['run_ratio']} (paired {jobs['run_ratio_paired']}; "
          f"target <= 1.05); the task alone {jobs['task_seconds_ours']} s vs {jobs['task_seconds_plain']} s; "
          f"the gate in the task {jobs['gate_ms_in_task_median']} ms; in process: cold {gate['cold_ms_median']} ms, "
          f"warm disk {gate['warm_disk_ms_median']} ms, warm process {gate['warm_process_ms_median']} ms  (-> {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
