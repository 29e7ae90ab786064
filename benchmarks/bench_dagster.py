"""Benchmark: the Dagster integration against its peer, dagster-docker's plain ``PipesDockerClient``.

Run (needs the local stack: ``python scripts/stack.py up``):

    /path/to/venv/bin/python benchmarks/bench_dagster.py [--runs 7] [--json FILE]

What it measures:

1. ``import dagster_integration`` in a fresh interpreter: wall time (median) and whether
   ``dagster_k8s`` / ``kubernetes`` were imported (they must not be).
2. Materialization overhead: one asset running the example job
   (``example_dags/jobs/wordcount``) through ``dg.materialize()``, in rotation:
   - peer: ``PipesDockerClient().run(image=REPO@sha256:…)`` — the same digest, no checks;
   - imagegate: ``ImagegateDockerClient().run(image=REPO:TAG)`` — resolve + check (the
     registry client caches a tag's digest for 30 s in-process, as in a long-lived code
     server), hardened launch by digest;
   - both again with two declared asset checks (the peer's asset returns two passing
     ``AssetCheckResult``s; ours are ``image_pinned`` and ``image_non_root``), so the cost of
     Dagster recording check results is on both sides.
   Containers are removed between runs outside the timed region (the peer leaves them;
   ours are removed in the background). Figures: median(imagegate) / median(peer) and the
   median of per-round ratios. The first round is a warm-up and not counted.
3. A cold check in a fresh process is reported separately (the cost of the first
   materialization in a new run worker): ``imagegate.check`` of the tag.
"""

# No `from __future__ import annotations`: Dagster reads the asset functions' annotations
# (the context type, resources) at definition time.

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

def load_stack() -> dict[str, str]:
    state = Path(os.environ.get("IMAGEGATE_STACK_DIR", "/tmp/imagegate-stack")) / "stack.json"
    if not state.is_file():
        sys.exit(f"no local stack at {state}; start it with: python scripts/stack.py up")
    return json.loads(state.read_text())["env"]

def import_cost(runs: int) -> dict[str, object]:
    code = (
        "import sys, time; t = time.perf_counter(); import dagster_integration; "
        "d = time.perf_counter() - t; "
        "print(d, any(m.split('.')[0] in ('dagster_k8s', 'kubernetes') for m in sys.modules))"
    )
    times, heavy = [], False
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()
        times.append(float(out[0]))
        heavy = heavy or out[1] == "True"
    return {"import_ms": round(statistics.median(times) * 1000, 1), "imports_dagster_k8s": heavy}

def build_job_image(env: dict[str, str]) -> str:
    import docker

    client = docker.from_env()
    tag = f"0.1.0-bench{uuid.uuid4().hex[:8]}"
    name = f"{env['IMAGEGATE_REGISTRY']}/bench/wordcount"
    client.images.build(path=str(ROOT / "example_dags/jobs/wordcount"), tag=f"{name}:{tag}",
                        buildargs={"BASE": env["IMAGEGATE_PYTHON_IMAGE_DIGEST"]}, rm=True, pull=False)
    for line in client.images.push(name, tag=tag, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(line["error"])
    client.close()
    return f"{name}:{tag}"

def materialization_overhead(image: str, runs: int) -> dict[str, object]:
    import dagster as dg
    import docker
    import docker.errors
    import imagegate
    from dagster_docker import PipesDockerClient

    from dagster_integration import ImagegateDockerClient, image_check_specs, wait_for_removals

    digest_ref = str(imagegate.resolve(image).without_tag())
    command = ["/app/job.py"]

    @dg.asset(name="peer")
    def peer(context: dg.AssetExecutionContext, pipes: PipesDockerClient):
        return pipes.run(context=context, image=digest_ref, command=command).get_materialize_result()

    @dg.asset(name="gated")
    def gated(context: dg.AssetExecutionContext, pipes: ImagegateDockerClient):
        return pipes.run(context=context, image=image, command=command).get_materialize_result()

    # the same two asset checks on both sides: Dagster's cost of recording check results
    @dg.asset(name="peer_checked", check_specs=[dg.AssetCheckSpec(n, asset="peer_checked") for n in ("image_pinned", "image_non_root")])
    def peer_checked(context: dg.AssetExecutionContext, pipes: PipesDockerClient):
        result = pipes.run(context=context, image=digest_ref, command=command).get_materialize_result()
        return dg.MaterializeResult(
            metadata=result.metadata,
            check_results=[dg.AssetCheckResult(check_name=n, passed=True) for n in ("image_pinned", "image_non_root")],
        )

    @dg.asset(name="gated_checked", check_specs=image_check_specs("gated_checked"))
    def gated_checked(context: dg.AssetExecutionContext, pipes: ImagegateDockerClient):
        return pipes.run(context=context, image=image, command=command).get_materialize_result()

    engine = docker.from_env()
    instance = dg.DagsterInstance.ephemeral()
    # clients are built once, as a Definitions' resources are
    variants = {
        "peer": (peer, PipesDockerClient()),
        "imagegate": (gated, ImagegateDockerClient()),
        "peer_2_checks": (peer_checked, PipesDockerClient()),
        "imagegate_2_checks": (gated_checked, ImagegateDockerClient()),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for index in range(runs + 1):
        order = list(variants) if index % 2 == 0 else list(variants)[::-1]  # drift hits every side
        for name in order:
            asset, client = variants[name]
            start = time.perf_counter()
            result = dg.materialize([asset], resources={"pipes": client}, instance=instance)
            elapsed = time.perf_counter() - start
            assert result.success
            # equal work outside the timed region: the peer leaves its container, ours is
            # removed in the background; finish both before the next run
            wait_for_removals()
            for container in engine.containers.list(all=True, filters={"ancestor": digest_ref}):
                if "imagegate.dev/launch" not in (container.labels or {}):
                    try:
                        container.remove(force=True)
                    except docker.errors.APIError:  # already gone, or being removed by someone else
                        pass
            if index:  # the first round warms the engine, imports and caches
                times[name].append(elapsed)
    med = {name: statistics.median(values) for name, values in times.items()}

    def pair_ratio(a: str, b: str) -> float:
        return round(statistics.median(x / y for x, y in zip(times[a], times[b])), 3)

    return {
        **{f"{name}_median_s": round(value, 3) for name, value in med.items()},
        "ratio_same_asset": round(med["imagegate"] / med["peer"], 3),
        "pair_ratio_same_asset": pair_ratio("imagegate", "peer"),
        "ratio_with_2_checks": round(med["imagegate_2_checks"] / med["peer_2_checks"], 3),
        "pair_ratio_with_2_checks": pair_ratio("imagegate_2_checks", "peer_2_checks"),
        "ratio_checks_vs_plain_peer": round(med["imagegate_2_checks"] / med["peer"], 3),
        "runs": runs,
    }

def cold_check(image: str, runs: int) -> dict[str, object]:
    code = f"import time, imagegate; t = time.perf_counter(); imagegate.check({image!r}); print(time.perf_counter() - t)"
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) for _ in range(runs)]
    return {"cold_check_ms": round(statistics.median(times) * 1000, 1)}

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    env = load_stack()
    os.environ.setdefault("DOCKER_HOST", env.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    home = tempfile.mkdtemp(prefix="dagster-home-bench-")
    Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = home

    results: dict[str, object] = {}
    results.update(import_cost(args.runs))
    image = build_job_image(env)
    results["image"] = image
    results.update(cold_check(image, args.runs))
    results.update(materialization_overhead(image, args.runs))
    print(json.dumps(results, indent=2))
    print(
        f"\nimport dagster_integration: {results['import_ms']} ms, imports dagster_k8s: {results['imports_dagster_k8s']}\n"
        f"materialize (median of {args.runs}): peer PipesDockerClient by digest {results['peer_median_s']} s, "
        f"ImagegateDockerClient tag -> check -> digest {results['imagegate_median_s']} s: "
        f"ratio {results['ratio_same_asset']} (pairs {results['pair_ratio_same_asset']})\n"
        f"with two asset checks on both: {results['peer_2_checks_median_s']} s vs {results['imagegate_2_checks_median_s']} s: "
        f"ratio {results['ratio_with_2_checks']} (pairs {results['pair_ratio_with_2_checks']}); "
        f"vs the plain peer without checks: {results['ratio_checks_vs_plain_peer']}\n"
        f"cold check in a fresh process: {results['cold_check_ms']} ms"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0

if __name__ == "__main__":
    sys.exit(main())
