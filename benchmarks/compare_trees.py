"""Before/after in one run: the Airflow and Dagster benchmarks on two source trees, alternated.

    git worktree add /tmp/imagegate-before <commit>        # or: git clone . /tmp/imagegate-before
    .venv/bin/python benchmarks/compare_trees.py --before /tmp/imagegate-before [--rounds 2]

Each round runs, from each tree in turn (the order alternates from round to round), the same
commands the README gives — ``benchmarks/bench_airflow.py`` (parse and ``airflow dags test`` run)
and ``benchmarks/bench_dagster.py`` — with ``PYTHONPATH`` set to that tree, in this environment,
against the same local stack. Each benchmark already compares imagegate with its plain peer (the
provider's ``DockerOperator``, dagster-docker's ``PipesDockerClient``) in the same process; this
reports, per tree, the median over rounds of those ratios and of imagegate's own times, and
after/before. Needs the local stack (``python scripts/stack.py up``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

FIGURES = {
    "airflow": {
        "parse": ["dagbag_ratio", "dagbag_ratio_paired", "dagbag_ratio_operator", "dagbag_seconds_ours",
                  "dagbag_seconds_operator", "dagbag_seconds_plain"],
        "run": ["run_ratio", "run_ratio_paired", "dags_test_seconds_ours", "task_seconds_ours", "gate_ms_median"],
    },
    "dagster": {"": ["ratio_same_asset", "pair_ratio_same_asset", "imagegate_median_s", "peer_median_s", "import_ms"]},
}


def run(tree: Path, bench: str, args: list[str]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, str(tree / "benchmarks" / f"bench_{bench}.py"), *args, "--json", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=7200)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return data


def pick(data: dict[str, Any], bench: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for section, keys in FIGURES[bench].items():
        block = data.get(section, {}) if section else data
        for key in keys:
            if isinstance(block.get(key), (int, float)):
                values[f"{bench}.{section + '.' if section else ''}{key}"] = float(block[key])
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the earlier commit")
    parser.add_argument("--after", type=Path, default=ROOT, help="default: this tree")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--airflow-runs", type=int, default=20, help="--runs of bench_airflow.py (parse)")
    parser.add_argument("--run-rounds", type=int, default=5, help="--run-rounds of bench_airflow.py")
    parser.add_argument("--dagster-runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    for round_index in range(args.rounds):
        order = list(trees) if round_index % 2 == 0 else list(reversed(trees))
        for name in order:
            tree = trees[name]
            figures = pick(run(tree, "airflow", ["--runs", str(args.airflow_runs), "--run-rounds", str(args.run_rounds)]), "airflow")
            figures.update(pick(run(tree, "dagster", ["--runs", str(args.dagster_runs)]), "dagster"))
            for key, value in figures.items():
                samples[name].setdefault(key, []).append(value)
            print(f"round {round_index + 1} {name}: " + ", ".join(f"{k}={v:g}" for k, v in sorted(figures.items())), flush=True)
    report: dict[str, Any] = {"rounds": args.rounds, "trees": {k: str(v) for k, v in trees.items()}, "figures": {}}
    print(f"\n{'figure':48} {'before':>10} {'after':>10} {'after/before':>13}")
    for key in sorted(samples["after"]):
        before = statistics.median(samples["before"].get(key) or [float("nan")])
        after = statistics.median(samples["after"][key])
        ratio = after / before if before else float("nan")
        report["figures"][key] = {"before": before, "after": after, "after_over_before": round(ratio, 3)}
        print(f"{key:48} {before:10.4g} {after:10.4g} {ratio:13.3f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
