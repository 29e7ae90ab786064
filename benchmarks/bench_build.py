"""Benchmark: the no-op build-or-resolve path (cold and warm) against its floors, on three shapes.

Run (needs the local stack; `make bench` starts it):

    .venv/bin/python benchmarks/bench_build.py [--runs 7] [--json benchmarks/results/build.json]

Everything it generates lives in a temporary directory under /tmp and is deleted at the end. File
contents are seeded (the same bytes every run), so the registry stores each shape's layers once.

Shapes, each built and pushed once by a real ``build_image`` (the no-op then finds its tag):

- **small**: ``--files`` files (default 10,000) of ``--mb`` MB in total (default 200), 100 directories;
- **large**: ``--large-files`` files (default 4) of ``--large-mb`` MB each (default 128);
- **whole**: ``--whole-files`` files (default 8,000) of 16 KB, plus a 50 MB ``data/`` directory that
  ``.dockerignore`` keeps out — the whole-process shape.

What is timed (medians of ``--runs``; every subject is timed in the same loop as its floor, one after
the other, and the ratio reported is the median of the per-run ratios, so a busy machine slows both):

1. cold no-op, in-process: ``build_image(..., use_cache=False)`` — every byte hashed, one ``HEAD``
   (a long-lived ``RegistryClient(tag_ttl=0)``: the request really goes out) — against the **SHA-256
   limit**, ``hashlib.sha256`` over one in-memory buffer holding the same bytes. Target ≤ 3× (small,
   large).
2. warm no-op, in-process: ``build_image`` with the stat cache valid, against a **bare walk**
   (``os.scandir`` + ``lstat`` of every entry, recursively, the least any change check can do).
   Target ≤ 2× (small, whole). ``hash_context`` alone is reported too.
3. whole process (``imagegate build``, the console script, bytecode cached): cold (``--no-cache``)
   against ``find CTX -path CTX/data -prune -o -type f -print0 | xargs -0 sha256sum`` over the
   files that are used, target ≤ 1.2×; warm (stat cache valid) against cold, target ≤ 0.15×.
   ``python -c pass`` and a process that only imports what a no-op imports are timed alongside,
   so what is left of a warm run (start-up and imports, or work) is measured, not guessed.
4. small shape: a fully cached ``docker build`` of the same context (classic builder: the CLI tars
   and sends the whole context, every step is a cache hit). Target: cold at least 4× faster.
5. peak RSS of a process hashing a context holding one 2 GB file (sparse: the memory behaviour does
   not depend on the bytes). Target ≤ 100 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import ssl
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
from imagegate.build._context import hash_context, scan_context  # noqa: E402

RSS_CHILD = """
import sys
from imagegate.build._context import hash_context
print(hash_context(sys.argv[1], use_cache=False).digest)
"""
# What `imagegate build` imports on the no-op path, without doing anything.
IMPORTS_CHILD = "import imagegate.cli, imagegate._registry, imagegate.build._builder"
IGNORED = "data"
DOCKERIGNORE = f".git\n**/__pycache__\n**/*.pyc\n.venv\nnode_modules\n{IGNORED}\n"


def load_stack() -> dict[str, str]:
    state = Path(os.environ.get("IMAGEGATE_STACK_DIR", "/tmp/imagegate-stack")) / "stack.json"
    if not state.is_file():
        sys.exit(f"no local stack at {state}; start it with: python scripts/stack.py up")
    return json.loads(state.read_text())["env"]


# --- shapes -------------------------------------------------------------------------------------


def write_files(context: Path, sizes: list[int], seed: int, per_dir: int = 100) -> int:
    rng = random.Random(seed)
    for i, size in enumerate(sizes):
        path = context / f"d{i % per_dir:03d}" / f"f{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    return sum(sizes)


def finish(context: Path, base: str, *, copy: bool) -> None:
    body = "COPY . /data\n" if copy else ""
    (context / "Dockerfile").write_text(f"FROM {base}\n{body}USER 10001:10001\nCMD [\"ls\", \"/data\"]\n")
    (context / ".dockerignore").write_text(DOCKERIGNORE)


def small_shape(context: Path, files: int, total_mb: int, base: str) -> None:
    rng = random.Random(7)
    mean = total_mb * (1 << 20) // files
    write_files(context, [max(1, int(rng.uniform(0.2, 1.8) * mean)) for _ in range(files)], seed=7)
    finish(context, base, copy=True)


def large_shape(context: Path, files: int, mb: int, base: str) -> None:
    write_files(context, [mb << 20] * files, seed=11, per_dir=1)
    finish(context, base, copy=False)  # the image need not hold the data: the context is what is timed


def whole_shape(context: Path, files: int, base: str) -> None:
    write_files(context, [16 << 10] * files, seed=13)
    ignored = context / IGNORED
    ignored.mkdir()
    rng = random.Random(17)
    for i in range(50):
        (ignored / f"blob{i:02d}.bin").write_bytes(rng.randbytes(1 << 20))
    finish(context, base, copy=True)


def used_files(context: Path) -> list[Path]:
    """The regular files the context sends (what hash_context reads), in walk order."""
    scan = scan_context(context, always=["Dockerfile"])
    return [context / e.path for e in scan.entries if e.kind == "file"]


# --- floors ---------------------------------------------------------------------------------------


def bare_walk(top: str) -> int:
    """os.scandir + lstat of every entry below *top*: what any check for changes must at least do."""
    count, todo = 0, [top]
    while todo:
        with os.scandir(todo.pop()) as listing:
            for child in listing:
                child.stat(follow_symlinks=False)
                count += 1
                if child.is_dir(follow_symlinks=False):
                    todo.append(child.path)
    return count


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired(runs: int, subjects: dict[str, Callable[[], Any]]) -> dict[str, list[float]]:
    """Time every subject once per round, ``runs`` rounds: paired samples under the same load."""
    times: dict[str, list[float]] = {name: [] for name in subjects}
    for _ in range(runs):
        for name, fn in subjects.items():
            times[name].append(timed(fn))
    return times


def summary(times: dict[str, list[float]], ratios: dict[str, tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, samples in times.items():
        out[f"{name}_s"] = statistics.median(samples)
        out[f"{name}_runs"] = samples
    for name, (top, bottom) in ratios.items():
        out[name] = statistics.median(a / b for a, b in zip(times[top], times[bottom]))
    return out


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


# --- the measurements -----------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, env: dict[str, str], work: Path) -> None:
        self.args, self.work = args, work
        self.base = env["IMAGEGATE_BUSYBOX_IMAGE_DIGEST"]
        self.repo = f"{env['IMAGEGATE_REGISTRY']}/bench/build-{uuid.uuid4().hex[:8]}"
        self.client = RegistryClient(tag_ttl=0)  # long-lived, as in a Dagster or Airflow worker; every HEAD goes out
        self.built: list[str] = []

    def setup(self, name: str, make: Callable[[Path], None]) -> tuple[Path, str]:
        context = self.work / name
        context.mkdir()
        make(context)
        first = build_image(context, repository=self.repo, client=self.client, use_cache=False)
        self.built.append(f"{self.repo}:{first.tag}")
        print(f"{name}: {'built and pushed' if first.built else 'already in the registry'} in "
              f"{first.seconds:.1f}s -> {first.pinned.familiar}", flush=True)
        return context, first.digest

    def limit_buffer(self, context: Path) -> bytes:
        return b"".join(p.read_bytes() for p in used_files(context))

    def noop(self, context: Path, digest: str, use_cache: bool) -> Callable[[], None]:
        def run() -> None:
            result = build_image(context, repository=self.repo, client=self.client, use_cache=use_cache)
            assert not result.built and result.digest == digest, result

        return run

    def in_process(self, context: Path, digest: str, *, warm: bool) -> dict[str, Any]:
        data = self.limit_buffer(context)
        out: dict[str, Any] = {"files": len(used_files(context)), "bytes": len(data)}
        times = paired(self.args.runs, {
            "sha256_limit": lambda: hashlib.sha256(data).digest(),
            "cold": self.noop(context, digest, False),
            "cold_hash_only": lambda: hash_context(context, always=["Dockerfile"], use_cache=False),
        })
        del data
        out |= summary(times, {"cold_vs_limit": ("cold", "sha256_limit")})
        if warm:
            self.noop(context, digest, True)()  # prime the stat cache (the files are older than 2 s)
            self.noop(context, digest, True)()
            top = str(context)
            times = paired(self.args.runs, {
                "bare_walk": lambda: bare_walk(top),
                "warm": self.noop(context, digest, True),
                "warm_hash_only": lambda: hash_context(context, always=["Dockerfile"]),
            })
            out |= summary(times, {"warm_vs_walk": ("warm", "bare_walk"), "warm_hash_only_vs_walk": ("warm_hash_only", "bare_walk")})
        return out

    def whole_process(self, context: Path, digest: str) -> dict[str, Any]:
        cli = Path(sys.executable).parent / "imagegate"
        command = [str(cli)] if cli.exists() else [sys.executable, "-m", "imagegate"]
        command += ["build", str(context), "--repository", self.repo]
        env = {**os.environ, "PYTHONPYCACHEPREFIX": str(self.work / "pyc"), "IMAGEGATE_CACHE_DIR": str(self.work / "cli-cache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: bytecode cached after the first run

        def cli_run(*extra: str) -> Callable[[], None]:
            def run() -> None:
                done = subprocess.run([*command, *extra], capture_output=True, text=True, env=env, check=False)
                assert done.returncode == 0 and digest in done.stdout, done.stderr[-2000:]

            return run

        listing = self.work / f"{context.name}.sh"
        listing.write_text(
            f"find {context} -path {context}/{IGNORED} -prune -o -type f -print0 | xargs -0 sha256sum > /dev/null\n"
        )
        sha256sum = ["sh", str(listing)]
        python = [sys.executable, "-c", "pass"]
        imports = [sys.executable, "-c", IMPORTS_CHILD]
        for fn in (cli_run("--no-cache"), cli_run(), cli_run()):  # bytecode, stat cache, page cache
            fn()
        subjects = {
            "sha256sum": lambda: subprocess.run(sha256sum, check=True, env=env),
            "cold": cli_run("--no-cache"),
            "warm": cli_run(),
            "python_startup": lambda: subprocess.run(python, check=True, env=env),
            "no_op_imports": lambda: subprocess.run(imports, check=True, env={**env, "PYTHONPATH": str(ROOT)}),
        }
        out: dict[str, Any] = {"files": len(used_files(context)),
                               "bytes": sum(p.stat().st_size for p in used_files(context)),
                               "ignored_bytes": sum(p.stat().st_size for p in (context / IGNORED).iterdir())}
        out |= summary(paired(self.args.runs, subjects), {
            "cold_vs_sha256sum": ("cold", "sha256sum"),
            "warm_vs_cold": ("warm", "cold"),
        })
        out["warm_minus_imports_s"] = out["warm_s"] - out["no_op_imports_s"]
        return out

    def docker_peer(self, context: Path, tag: str, cold_s: float) -> dict[str, Any]:
        docker = shutil.which("docker")
        if not docker:
            return {}
        command = [docker, "build", "-q", "-t", tag, str(context)]
        subprocess.run(command, check=True, capture_output=True)  # every step cached from here on
        times = [timed(lambda: subprocess.run(command, check=True, capture_output=True)) for _ in range(self.args.docker_runs)]
        median = statistics.median(times)
        return {"docker_s": median, "docker_runs": times, "docker_vs_cold": median / cold_s}

    def big_file(self) -> dict[str, Any]:
        big = self.work / "big"
        big.mkdir()
        with open(big / "data.bin", "wb") as handle:
            handle.truncate(int(self.args.big_gb * (1 << 30)))
        child_env = {**os.environ, "PYTHONPATH": str(ROOT)}
        rss, digest = peak_rss_mb([sys.executable, "-c", RSS_CHILD, str(big)], child_env)
        return {"big_file_gb": self.args.big_gb, "big_file_peak_rss_mb": round(rss, 1), "big_file_digest": digest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--docker-runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--large-files", type=int, default=4)
    parser.add_argument("--large-mb", type=int, default=128)
    parser.add_argument("--whole-files", type=int, default=8_000)
    parser.add_argument("--big-gb", type=float, default=2.0)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    env = load_stack()
    work = Path(tempfile.mkdtemp(prefix="imagegate-bench-build-", dir="/tmp"))
    os.environ["IMAGEGATE_CACHE_DIR"] = str(work / "cache")  # a cache of our own, deleted at the end
    bench = Bench(args, env, work)
    results: dict[str, Any] = {
        "runs": args.runs,
        "machine": {"cores": os.cpu_count(), "load_average": os.getloadavg(), "python": sys.version.split()[0],
                    "openssl": ssl.OPENSSL_VERSION},
    }
    try:
        small, small_digest = bench.setup("small", lambda c: small_shape(c, args.files, args.mb, bench.base))
        large, large_digest = bench.setup("large", lambda c: large_shape(c, args.large_files, args.large_mb, bench.base))
        whole, whole_digest = bench.setup("whole", lambda c: whole_shape(c, args.whole_files, bench.base))
        time.sleep(2.1)  # let every file age past the stat cache's "racily clean" window
        results["small"] = bench.in_process(small, small_digest, warm=True)
        print(f"small: cold {results['small']['cold_vs_limit']:.2f}x limit, warm {results['small']['warm_vs_walk']:.2f}x walk", flush=True)
        results["large"] = bench.in_process(large, large_digest, warm=False)
        print(f"large: cold {results['large']['cold_vs_limit']:.2f}x limit", flush=True)
        results["whole"] = bench.in_process(whole, whole_digest, warm=True)
        results["whole"]["process"] = process = bench.whole_process(whole, whole_digest)
        # What no faster walk can remove: a warm run is at least the interpreter start plus a bare walk,
        # against a cold run that would not import anything either.
        process["cold_without_imports_s"] = process["cold_s"] - (process["no_op_imports_s"] - process["python_startup_s"])
        process["warm_floor_s"] = process["python_startup_s"] + results["whole"]["bare_walk_s"]
        process["warm_floor_vs_cold_without_imports"] = process["warm_floor_s"] / process["cold_without_imports_s"]
        print(f"whole: cold {results['whole']['process']['cold_vs_sha256sum']:.2f}x sha256sum, "
              f"warm {results['whole']['process']['warm_vs_cold']:.3f}x cold", flush=True)
        results["small"] |= bench.docker_peer(small, bench.built[0], results["small"]["cold_s"])
        results |= bench.big_file()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if shutil.which("docker") and bench.built:  # the local images this run built (the registry keeps its copy)
            subprocess.run(["docker", "image", "rm", "-f", *bench.built], capture_output=True, check=False)
    report(results, args)


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    s, lg, w = results["small"], results["large"], results["whole"]
    p = w["process"]
    print(json.dumps({k: v for k, v in results.items() if k in ("machine", "runs")}))
    print()
    print("| no-op build-or-resolve | median | floor (median) | ratio (median of paired) | target |")
    print("| --- | --- | --- | --- | --- |")
    for label, shape in ((f"{s['files']} files / {s['bytes'] / 1e6:.0f} MB", s),
                         (f"{lg['files']} files / {lg['bytes'] / 1e6:.0f} MB", lg),
                         (f"{w['files']} files / {w['bytes'] / 1e6:.0f} MB", w)):
        print(f"| cold, in-process, {label} | {shape['cold_s']:.3f} s | SHA-256 limit {shape['sha256_limit_s']:.3f} s "
              f"| {shape['cold_vs_limit']:.2f}× | ≤ 3× |")
    for label, shape in ((f"{s['files']} files", s), (f"{w['files']} files", w)):
        print(f"| warm, in-process, {label} | {shape['warm_s'] * 1000:.1f} ms (hash only {shape['warm_hash_only_s'] * 1000:.1f} ms) "
              f"| bare walk {shape['bare_walk_s'] * 1000:.1f} ms | {shape['warm_vs_walk']:.2f}× | ≤ 2× |")
    print(f"| cold, whole process, {p['files']} files + {p['ignored_bytes'] / 1e6:.0f} MB ignored | {p['cold_s']:.3f} s "
          f"| sha256sum {p['sha256sum_s']:.3f} s | {p['cold_vs_sha256sum']:.2f}× | ≤ 1.2× |")
    print(f"| warm, whole process | {p['warm_s']:.3f} s | cold {p['cold_s']:.3f} s | {p['warm_vs_cold']:.3f}× | ≤ 0.15× |")
    print(f"| of which: interpreter start / imports of the no-op path | {p['python_startup_s'] * 1000:.0f} ms / "
          f"{p['no_op_imports_s'] * 1000:.0f} ms (start included) | | | |")
    print(f"| floor of a warm run: interpreter start + bare walk | {p['warm_floor_s'] * 1000:.0f} ms "
          f"| cold without the imports {p['cold_without_imports_s']:.3f} s | {p['warm_floor_vs_cold_without_imports']:.3f}× | |")
    if "docker_s" in s:
        print(f"| fully cached `docker build`, {s['files']} files | {s['docker_s']:.3f} s | | cold is {s['docker_vs_cold']:.1f}× faster | ≥ 4× |")
    print(f"| peak RSS hashing one {results['big_file_gb']:g} GB file | {results['big_file_peak_rss_mb']} MB | | | ≤ 100 MB |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    checks = {
        "cold small ≤ 3× limit": s["cold_vs_limit"] <= 3,
        "cold large ≤ 3× limit": lg["cold_vs_limit"] <= 3,
        "cold whole ≤ 3× limit": w["cold_vs_limit"] <= 3,
        "warm small ≤ 2× walk": s["warm_vs_walk"] <= 2,
        "warm whole ≤ 2× walk": w["warm_vs_walk"] <= 2,
        "cold process ≤ 1.2× sha256sum": p["cold_vs_sha256sum"] <= 1.2,
        "warm process ≤ 0.15× cold": p["warm_vs_cold"] <= 0.15,
        "docker ≥ 4× cold": s.get("docker_vs_cold", 4) >= 4,
        "peak RSS ≤ 100 MB": results["big_file_peak_rss_mb"] <= 100,
    }
    missed = [name for name, ok in checks.items() if not ok]
    print("targets met" if not missed else "TARGETS MISSED: " + "; ".join(missed))
    sys.exit(0 if not missed else 1)


if __name__ == "__main__":
    main()
