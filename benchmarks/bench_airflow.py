"""Benchmark: imagegate's Airflow operators against the provider's plain DockerOperator.

Run (needs the local stack for part 2; `make bench` starts it):

    python benchmarks/bench_airflow.py [--runs 40] [--run-rounds 11] [--json benchmarks/results/airflow.json]

1. DAG parsing: a DAG file with 100 ``ContainerTask`` (Docker backend), and one with 100
   ``ImagegateDockerOperator``, vs the same DAG with 100 plain ``DockerOperator``. Each parse is a fresh
   process that has ``airflow.sdk`` loaded (as the DAG processor does) and times ``DagBag(file)``; median of
   ``--runs``, alternating the order and, all three files alike, the stack depth (see ``STACK_OFFSETS``;
   use ``--runs`` of 20 or more to cover every offset). The same child counts socket
   connections (an audit hook: the target is 0) and lists Kubernetes modules it loaded beyond what the plain
   DAG loads (target: none). A cold ``python -X importtime`` of each file gives the wall time of the whole
   process and confirms no Kubernetes provider operator or client module is imported.
2. Run overhead: ``airflow dags test`` of a one-task DAG, ours vs the provider's DockerOperator, on the same
   digest (already in the engine); wall time of the whole command, median of ``--run-rounds``, alternating;
   and the gate's own time from the task log ("imagegate: gate took N ms").
Targets (issue 4): parse ratio <= 1.10, run ratio <= 1.05.
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
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
AIRFLOW = Path(sys.executable).with_name("airflow")

OURS = """\
import pendulum
from airflow.sdk import DAG
from airflow_plugin import ContainerTask

with DAG("bench_ours", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    for i in range({n}):
        ContainerTask(task_id=f"t{{i}}", image=f"registry.example.com/team/etl:1.4.{{i}}",
                      command=["run", str(i)], environment={{"PART": str(i)}})
"""
OPERATOR = """\
import pendulum
from airflow.sdk import DAG
from airflow_plugin.docker import ImagegateDockerOperator

with DAG("bench_operator", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    for i in range({n}):
        ImagegateDockerOperator(task_id=f"t{{i}}", image=f"registry.example.com/team/etl:1.4.{{i}}",
                                command=["run", str(i)], environment={{"PART": str(i)}})
"""
PLAIN = """\
import pendulum
from airflow.sdk import DAG
from airflow.providers.docker.operators.docker import DockerOperator

with DAG("bench_plain", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    for i in range({n}):
        DockerOperator(task_id=f"t{{i}}", image=f"registry.example.com/team/etl:1.4.{{i}}",
                       command=["run", str(i)], environment={{"PART": str(i)}})
"""

CHILD = """\
import json, sys, time
connects = []
sys.addaudithook(lambda event, args: connects.append(str(args[1])) if event == "socket.connect" else None)
import airflow.sdk  # the DAG processor has this loaded before it parses a file
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)

def parse():
    start, cpu = time.perf_counter(), time.process_time()
    bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
    return bag, time.perf_counter() - start, time.process_time() - cpu

def at_depth(frames):  # see STACK_OFFSETS
    return at_depth(frames - 1) if frames else parse()

import gc
full = []  # full collections (generation 2) during the parse: [start, stop] each
gc.callbacks.append(lambda phase, info: info["generation"] == 2 and (
    full.append([time.perf_counter()]) if phase == "start" else full[-1].append(time.perf_counter())))
bag, seconds, cpu = at_depth(int(sys.argv[2]))
full_gc = sum(stop - start for start, stop in full)
assert not bag.import_errors, bag.import_errors
[dag] = bag.dags.values()
loaded = sorted(m for m in set(sys.modules) - before if m.startswith(("kubernetes", "airflow.providers.cncf")))
print(json.dumps({"seconds": seconds, "cpu": cpu, "full_gc": full_gc, "full_gc_count": len(full), "tasks": len(dag.tasks),
                  "connects": connects, "kubernetes": loaded}))
"""

# CPython 3.11 and 3.12 keep frames on a stack of 16 KiB chunks, and a call that keeps crossing a chunk
# boundary maps and unmaps a chunk every time (python/cpython#142183, fixed in 3.13). Whether a parse hits
# that depends on the exact stack depth it runs at, which differs between this benchmark and Airflow's DAG
# processor: measured here, each of the three DAG files hit it (thousands of extra mmap/munmap, +40-150 ms)
# at a different few of 16 depths. So every round parses all three files at the same extra depth, rotating
# through these offsets (frames of ~100 bytes: 0-15 KiB, about one chunk), and the medians compare the
# files' own cost instead of where a chunk boundary happened to fall.
STACK_OFFSETS = tuple(range(0, 160, 8))

GATE_TOOK = re.compile(r"imagegate: gate took (\d+) ms")
TASK_STARTED = re.compile(r"^(\S+) \[info\s*\] Task started", re.M)
RUN_MARKED = re.compile(r"^(\S+) \[info\s*\] Marking run .* successful", re.M)


def _seconds_between(start: str, end: str) -> float:
    """Seconds between two of the task log's ISO timestamps (``2026-11-27T20:17:51.765977Z``)."""
    import datetime as dt

    parse = lambda stamp: dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()

ONE_TASK = """\
import pendulum
from airflow.sdk import dag
{import_line}

@dag(dag_id={dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
def d():
    {operator}(task_id="run", image={image!r}, command=["/app/job.py"], {options})
d()
"""


def _env(home: Path, dags: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": str(ROOT),
           "IMAGEGATE_BACKEND": "docker"}
    if dags:
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    env.pop("AIRFLOW__IMAGEGATE__CLUSTER_POLICY", None)
    # Installed packages ship bytecode; let this checkout's modules be compiled once too (outside the tree),
    # or every parse would also time compiling imagegate from source.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "imagegate-bench-pycache")
    return env


def parse_once(file: Path, home: Path, offset: int = 0) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(file), str(offset)], capture_output=True, text=True, env=_env(home), timeout=300)
    if out.returncode:
        raise SystemExit(f"parsing {file} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cold_import(file: Path, home: Path) -> tuple[float, list[str]]:
    code = f"import runpy; runpy.run_path({str(file)!r})"
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, env=_env(home), timeout=300)
    wall = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    heavy = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line]
    return wall, [m for m in heavy if m.startswith(("kubernetes", "airflow.providers.cncf.kubernetes.operators", "airflow.providers.cncf.kubernetes.pod_generator"))]


def bench_parse(runs: int, n: int, home: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-airflow-parse-") as tmp:
        ours, plain, operator = Path(tmp, "ours.py"), Path(tmp, "plain.py"), Path(tmp, "operator.py")
        ours.write_text(OURS.format(n=n))
        plain.write_text(PLAIN.format(n=n))
        operator.write_text(OPERATOR.format(n=n))
        files = [("plain", plain), ("ours", ours), ("operator", operator)]
        for _, file in files:
            parse_once(file, home)  # warm the OS file cache and .pyc files
        samples: dict[str, list[dict[str, object]]] = {name: [] for name, _ in files}
        for i in range(runs):  # rotate which goes first (the machine's load drifts) and the stack depth
            offset = STACK_OFFSETS[i % len(STACK_OFFSETS)]
            for name, file in files[i % 3 :] + files[: i % 3]:
                samples[name].append(parse_once(file, home, offset))
        med = {k: statistics.median(float(s["seconds"]) for s in v) for k, v in samples.items()}
        cpu = {k: statistics.median(float(s["cpu"]) for s in v) for k, v in samples.items()}
        # A full collection scans the whole heap, nearly all of it Airflow's own, and whether one falls inside the
        # timed parse is a threshold lottery (~100-150 ms here, half a parse): the same figures without it.
        no_gc = {k: statistics.median(float(s["seconds"]) - float(s["full_gc"]) for s in v) for k, v in samples.items()}
        full_gc = {k: sum(int(s["full_gc_count"]) for s in v) for k, v in samples.items()}

        def paired(name: str, key: Callable[[dict[str, object]], float]) -> float:
            """Median of the per-round ratios: the three files of a round run back to back at the same stack
            depth, so a round-to-round drift of the machine's speed cancels out."""
            return statistics.median(key(a) / key(b) for a, b in zip(samples[name], samples["plain"]))

        def parse_s(s: dict[str, object]) -> float:
            return float(s["seconds"])  # type: ignore[arg-type]

        def parse_s_no_gc(s: dict[str, object]) -> float:
            return float(s["seconds"]) - float(s["full_gc"])  # type: ignore[arg-type]

        walls: dict[str, list[float]] = {"ours": [], "plain": []}
        k8s_modules: set[str] = set()
        for _ in range(max(3, runs // 2)):
            for name, file in (("plain", plain), ("ours", ours)):
                wall, heavy = cold_import(file, home)
                walls[name].append(wall)
                if name == "ours":
                    k8s_modules.update(heavy)
        wall_med = {k: statistics.median(v) for k, v in walls.items()}
        extra = sorted(set(samples["ours"][0]["kubernetes"]) - set(samples["plain"][0]["kubernetes"]))  # type: ignore[arg-type]
        return {
            "tasks": n,
            "runs": runs,
            "dagbag_seconds_ours": round(med["ours"], 4),
            "dagbag_seconds_plain": round(med["plain"], 4),
            "dagbag_ratio": round(med["ours"] / med["plain"], 3),
            "dagbag_cpu_seconds_ours": round(cpu["ours"], 4),
            "dagbag_cpu_seconds_plain": round(cpu["plain"], 4),
            "dagbag_cpu_ratio": round(cpu["ours"] / cpu["plain"], 3),
            "dagbag_ratio_paired": round(paired("ours", parse_s), 3),
            "dagbag_ratio_operator_paired": round(paired("operator", parse_s), 3),
            "dagbag_ratio_without_full_gc_paired": round(paired("ours", parse_s_no_gc), 3),
            "dagbag_ratio_operator_without_full_gc_paired": round(paired("operator", parse_s_no_gc), 3),
            "samples_ms": {k: [[round(parse_s(s) * 1000, 1), round(parse_s_no_gc(s) * 1000, 1)] for s in v] for k, v in samples.items()},
            "dagbag_seconds_without_full_gc": {k: round(v, 4) for k, v in no_gc.items()},
            "dagbag_ratio_without_full_gc": round(no_gc["ours"] / no_gc["plain"], 3),
            "dagbag_ratio_operator_without_full_gc": round(no_gc["operator"] / no_gc["plain"], 3),
            "full_gc_collections": full_gc,
            "dagbag_seconds_operator": round(med["operator"], 4),
            "dagbag_ratio_operator": round(med["operator"] / med["plain"], 3),
            "dagbag_cpu_ratio_operator": round(cpu["operator"] / cpu["plain"], 3),
            "cold_process_seconds_ours": round(wall_med["ours"], 3),
            "cold_process_seconds_plain": round(wall_med["plain"], 3),
            "cold_process_ratio": round(wall_med["ours"] / wall_med["plain"], 3),
            "socket_connects_ours": sum(len(s["connects"]) for s in samples["ours"]),  # type: ignore[arg-type]
            "kubernetes_modules_beyond_plain": extra,
            "kubernetes_operator_or_client_imported": sorted(k8s_modules),
        }


def bench_run(runs: int, home: Path) -> dict[str, object]:
    import imagegate

    if "IMAGEGATE_REGISTRY" not in os.environ:  # not run from a shell that sourced stack.env (`make bench`)
        state = Path(os.environ.get("IMAGEGATE_STACK_DIR", "/tmp/imagegate-stack")) / "stack.json"
        if not state.is_file():
            sys.exit(f"no local stack at {state}; start it with: python scripts/stack.py up (or pass --skip-run)")
        os.environ.update(json.loads(state.read_text())["env"])
    registry = os.environ["IMAGEGATE_REGISTRY"]
    built = imagegate.build_image(
        ROOT / "example_dags" / "jobs" / "wordcount",
        repository=f"{registry}/examples/wordcount",
        build_args={"BASE": os.environ["IMAGEGATE_PYTHON_IMAGE_DIGEST"]},
    )
    pinned = built.pinned
    by_digest = str(pinned.without_tag())
    options = 'mount_tmp_dir=False, auto_remove="force"'
    with tempfile.TemporaryDirectory(prefix="bench-airflow-run-") as tmp:
        dags = Path(tmp)
        (dags / "ours.py").write_text(ONE_TASK.format(
            import_line="from airflow_plugin import ContainerTask", dag_id="bench_run_ours", operator="ContainerTask",
            image=str(pinned), options=f"docker_options=dict({options})"))
        (dags / "plain.py").write_text(ONE_TASK.format(
            import_line="from airflow.providers.docker.operators.docker import DockerOperator", dag_id="bench_run_plain",
            operator="DockerOperator", image=by_digest, options=options))
        env = _env(home, dags)
        subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, check=True, timeout=300)
        times: dict[str, list[float]] = {"ours": [], "plain": []}
        gate_ms: list[float] = []
        spans: dict[str, list[float]] = {"ours": [], "plain": []}

        def once(dag_id: str) -> float:
            start = time.perf_counter()
            out = subprocess.run([str(AIRFLOW), "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=300)
            wall = time.perf_counter() - start
            if out.returncode:
                raise SystemExit(f"airflow dags test {dag_id} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
            log = out.stdout + out.stderr
            gate_ms.extend(float(m) for m in GATE_TOOK.findall(log))
            started, marked = TASK_STARTED.search(log), RUN_MARKED.search(log)
            if started and marked:
                spans["ours" if dag_id.endswith("ours") else "plain"].append(_seconds_between(started[1], marked[1]))
            return wall

        once("bench_run_plain"), once("bench_run_ours")  # warm-up: DAG serialisation, .pyc, engine cache
        gate_ms.clear()
        spans["ours"].clear(), spans["plain"].clear()
        for _ in range(runs):
            for dag_id in ("bench_run_plain", "bench_run_ours") if len(times["ours"]) % 2 == 0 else ("bench_run_ours", "bench_run_plain"):
                times["ours" if dag_id.endswith("ours") else "plain"].append(once(dag_id))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "runs": runs,
        "image": by_digest,
        "dags_test_seconds_ours": round(med["ours"], 3),
        "dags_test_seconds_plain": round(med["plain"], 3),
        "run_ratio": round(med["ours"] / med["plain"], 3),
        # each round runs both back to back: the median of the per-round ratios cancels slow drift
        "run_ratio_paired": round(statistics.median(a / b for a, b in zip(times["ours"], times["plain"])), 3),
        # from the task log: "Task started" to the run marked successful (the task alone, without the ~6 s
        # of starting `airflow dags test`, most of the run-to-run noise)
        "task_seconds_ours": round(statistics.median(spans["ours"]), 3) if spans["ours"] else None,
        "task_seconds_plain": round(statistics.median(spans["plain"]), 3) if spans["plain"] else None,
        # The task log's own timing of the gate (import imagegate, policy, resolve, checks): the part of
        # the difference that is ours, free of the run-to-run noise of `airflow dags test` (seconds).
        "gate_ms_median": round(statistics.median(gate_ms), 1) if gate_ms else None,
        "gate_share_of_ours": round(statistics.median(gate_ms) / 1000 / med["ours"], 4) if gate_ms else None,
        "samples_ours": [round(t, 3) for t in times["ours"]],
        "samples_plain": [round(t, 3) for t in times["plain"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--run-rounds", type=int, default=11, help="rounds of the run benchmark (two `airflow dags test` each)")
    parser.add_argument("--skip-run", action="store_true", help="only the parse benchmark (no stack needed)")
    parser.add_argument("--skip-parse", action="store_true", help="only the run benchmark (keeps the parse figures in --json)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="airflow-home-bench-") as home:
        results: dict[str, object] = {}
        if args.skip_parse:  # keep the parse figures already in --json
            results = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
        else:
            results["parse"] = bench_parse(args.runs, args.tasks, Path(home))
            print(json.dumps(results["parse"], indent=2), flush=True)
        if not args.skip_run:
            results["run"] = bench_run(args.run_rounds, Path(home))
            print(json.dumps(results["run"], indent=2), flush=True)
    results["python"] = sys.version.split()[0]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    parse, run = results.get("parse"), results.get("run")
    if parse:
            print(f"parse ratio (DagBag, {args.tasks} tasks): wall {parse['dagbag_ratio']} (paired {parse['dagbag_ratio_paired']}), "  # type: ignore[index]
              f"cpu {parse['dagbag_cpu_ratio']}, without full GC {parse['dagbag_ratio_without_full_gc']} "  # type: ignore[index]
              f"(paired {parse['dagbag_ratio_without_full_gc_paired']}) (target <= 1.10); "  # type: ignore[index]
              f"cold process {parse['cold_process_ratio']}; socket connects {parse['socket_connects_ours']}")  # type: ignore[index]
    if run:
        print(f"run ratio (airflow dags test, median): {run['run_ratio']} (paired {run['run_ratio_paired']}; target <= 1.05); "  # type: ignore[index]
              f"the gate itself: {run['gate_ms_median']} ms, {run['gate_share_of_ours']:.1%} of the run; "  # type: ignore[index]
              f"the task alone: {run['task_seconds_ours']} s vs {run['task_seconds_plain']} s")  # type: ignore[index]


if __name__ == "__main__":
    main()
