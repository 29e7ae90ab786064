"""Benchmark: no-op build-or-resolve on a 10,000-file, ~200 MB context, and hashing memory.

Run (needs the local stack; `make bench` starts it):

    .venv/bin/python benchmarks/bench_build.py [--runs 5] [--files 10000] [--mb 200] [--json FILE]

Everything it generates lives in a temporary directory under /tmp and is deleted at the end.

1. Setup: a context of ``--files`` random files (``--mb`` MB in total, 100 directories) with a
   Dockerfile FROM the local busybox base; one real ``build_image`` builds and pushes it.
2. ``sha256sum`` over the same files (``find … -print0 | xargs -0 sha256sum``), the floor for reading
   and hashing every byte.
3. Cold no-op build-or-resolve: ``build_image`` with the stat cache off (every byte hashed, FROM digest
   pinned, one HEAD, "up to date"). Target: ≤ 1.5× sha256sum.
4. Warm no-op build-or-resolve: ``build_image`` with the stat cache primed. Target: ≤ 0.15× cold.
5. The peer: a fully cached ``docker build`` of the same context (classic builder: the CLI tars and
   sends the whole context, every step is a cache hit). Target: cold at least 4× faster.
6. Peak RSS of a process hashing a context holding one 2 GB file (a sparse file: the memory
   behaviour does not depend on the bytes). Target: ≤ 100 MB.

Every figure is the median of ``--runs`` runs in this one process/session; ratios compare medians.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imagegate import RegistryClient, build_image  # noqa: E402

RSS_CHILD = """
import sys
from imagegate.build._context import hash_context
print(hash_context(sys.argv[1], use_cache=False).digest)
"""


def load_stack() -> dict[str, str]:
    state = Path(os.environ.get("IMAGEGATE_STACK_DIR", "/tmp/imagegate-stack")) / "stack.json"
    if not state.is_file():
        sys.exit(f"no local stack at {state}; start it with: python scripts/stack.py up")
    return json.loads(state.read_text())["env"]


def generate(context: Path, files: int, total_mb: int, base: str) -> int:
    rng = random.Random(7)
    mean = total_mb * (1 << 20) // files
    written = 0
    for i in range(files):
        size = max(1, int(rng.uniform(0.2, 1.8) * mean))
        path = context / f"d{i % 100:03d}" / f"f{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        written += size
    (context / "Dockerfile").write_text(
        f"FROM {base}\nCOPY . /data\nUSER 10001:10001\nCMD [\"ls\", \"/data\"]\n"
    )
    (context / ".dockerignore").write_text(".git\n**/__pycache__\n**/*.pyc\n.venv\nnode_modules\n")
    return written


def median_time(fn: Callable[[], Any], runs: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def peak_rss_mb(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Peak RSS (MiB) of one child process, from getrusage(RUSAGE_CHILDREN) after it exits."""
    code = (
        "import resource, subprocess, sys, json\n"
        "out = subprocess.run(sys.argv[1:], capture_output=True, text=True, check=True).stdout\n"
        "print(json.dumps([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, out]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True, env=env, check=True)
    kib, out = json.loads(done.stdout)
    return kib / 1024, out.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--docker-runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--big-gb", type=float, default=2.0)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    env = load_stack()
    base = env["IMAGEGATE_BUSYBOX_IMAGE_DIGEST"]
    repo = f"{env['IMAGEGATE_REGISTRY']}/bench/build-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="imagegate-bench-build-", dir="/tmp"))
    results: dict[str, Any] = {"files": args.files, "runs": args.runs}
    try:
        context = work / "ctx"
        os.environ["IMAGEGATE_CACHE_DIR"] = str(work / "cache")  # a cache of our own, deleted at the end
        results["bytes"] = generate(context, args.files, args.mb, base)
        print(f"context: {args.files} files, {results['bytes'] / 1e6:.0f} MB in {context}", flush=True)
        first = build_image(context, repository=repo, use_cache=False)
        print(f"setup build+push: {first.seconds:.1f}s -> {first.pinned.familiar}", flush=True)
        time.sleep(2.1)  # let every file age past the stat cache's "racily clean" window

        files = [str(p) for p in sorted(context.rglob("*")) if p.is_file()]
        listing = work / "files.txt"
        listing.write_text("\0".join(files))

        def sha256sum() -> None:
            subprocess.run(f"xargs -0 sha256sum < {listing} > /dev/null", shell=True, check=True)

        def noop(use_cache: bool) -> None:
            with RegistryClient() as client:  # a fresh client: the HEAD really goes out
                result = build_image(context, repository=repo, client=client, use_cache=use_cache)
            assert not result.built and result.digest == first.digest

        sha256sum()  # page cache warm for everyone
        results["sha256sum_s"], results["sha256sum_runs"] = median_time(sha256sum, args.runs)
        results["cold_s"], results["cold_runs"] = median_time(lambda: noop(False), args.runs)
        noop(True)  # prime the stat cache
        results["warm_s"], results["warm_runs"] = median_time(lambda: noop(True), args.runs)

        docker = shutil.which("docker")
        if docker:
            tag = f"{repo}:{first.tag}"
            command = [docker, "build", "-q", "-t", tag, str(context)]
            subprocess.run(command, check=True, capture_output=True)  # every step cached from here on
            results["docker_s"], results["docker_runs"] = median_time(
                lambda: subprocess.run(command, check=True, capture_output=True), args.docker_runs
            )
        big = work / "big"
        big.mkdir()
        with open(big / "data.bin", "wb") as handle:
            handle.truncate(int(args.big_gb * (1 << 30)))
        child_env = {**os.environ, "PYTHONPATH": str(ROOT)}
        rss, digest = peak_rss_mb([sys.executable, "-c", RSS_CHILD, str(big)], child_env)
        results["big_file_gb"], results["big_file_peak_rss_mb"] = args.big_gb, round(rss, 1)
        results["big_file_digest"] = digest
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if shutil.which("docker"):  # the local image this run built (the registry keeps its copy)
            subprocess.run(["docker", "image", "rm", "-f", f"{repo}:{first.tag}"] if "first" in locals() else ["true"],
                           capture_output=True, check=False)

    results["cold_vs_sha256sum"] = results["cold_s"] / results["sha256sum_s"]
    results["warm_vs_cold"] = results["warm_s"] / results["cold_s"]
    if "docker_s" in results:
        results["docker_vs_cold"] = results["docker_s"] / results["cold_s"]
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in results.items() if not k.endswith("_runs")}, indent=2))
    print()
    print(f"| no-op on {args.files} files / {results['bytes'] / 1e6:.0f} MB | median | ratio | target |")
    print("| --- | --- | --- | --- |")
    print(f"| sha256sum over the same files | {results['sha256sum_s']:.3f} s | 1.00 | |")
    print(f"| cold build-or-resolve (no stat cache) | {results['cold_s']:.3f} s | {results['cold_vs_sha256sum']:.2f}× sha256sum | ≤ 1.5× |")
    print(f"| warm build-or-resolve (stat cache) | {results['warm_s']:.3f} s | {results['warm_vs_cold']:.3f}× cold | ≤ 0.15× |")
    if "docker_s" in results:
        print(f"| fully cached `docker build` | {results['docker_s']:.3f} s | cold is {results['docker_vs_cold']:.1f}× faster | ≥ 4× |")
    print(f"| peak RSS hashing one {args.big_gb:g} GB file | {results['big_file_peak_rss_mb']} MB | | ≤ 100 MB |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    ok = (
        results["cold_vs_sha256sum"] <= 1.5
        and results["warm_vs_cold"] <= 0.15
        and results.get("docker_vs_cold", 4) >= 4
        and results["big_file_peak_rss_mb"] <= 100
    )
    print("targets met" if ok else "TARGETS MISSED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
