"""Benchmark: resolve + check against the real local registries, with crane and skopeo as the peers.

Run (needs the local stack; `make bench` starts it; crane is built once from the Go module proxy if missing):

    .venv/bin/python benchmarks/bench_check.py [--runs 7] [--pairs 21] [--processes 200] [--json benchmarks/results/check.json]

What it measures, in one run:

1. Requests that reach the registry (its access log) for 1,000 checks of one reference in one process:
   the target is exactly 1 manifest GET and 1 config-blob GET (and the tag's HEAD: the disk cache is on).
2. Cached check latency (``imagegate.check`` after the first), median over 1,000 calls.
3. Cold resolve + check: HTTP requests the registry received after auth, for a single-platform image and a
   two-platform index, on the plain registry and on the TLS + basic-auth registry: without the disk cache
   (as before it existed), with an empty one (one HEAD more) and with a warm one (the HEAD alone).
4. One fetch per image per host: ``--processes`` separate ``imagegate check`` processes (4 at a time) on one
   image, then on 50 distinct images, each scenario with a fresh cache directory; the registry's access log
   must show at most one HEAD per process and exactly one manifest GET and one config GET per image.
5. CLI start-up against the Go peers, whole process, ``--pairs`` paired runs (alternating order), medians and
   their ratio: ``imagegate resolve REF`` vs ``crane digest REF`` (one HEAD each); ``imagegate check REF
   --json`` vs ``skopeo inspect --config`` (the same manifest + config) with imagegate's disk cache off (both
   fetch everything) and warm (imagegate: one HEAD).
6. ``import imagegate`` wall time in a fresh interpreter (median), and which heavy modules it pulls in.

Every imagegate process here gets a cache directory of its own (``IMAGEGATE_REGISTRY_CACHE_DIR``), never the
user's; bytecode is cached (outside the tree), as it is for an installed package.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import imagegate  # noqa: E402
from imagegate import DockerConfig, RegistryClient  # noqa: E402
from imagegate._diskcache import DiskCache  # noqa: E402
from tests.support.oci import make_image, make_index, platform_of  # noqa: E402
from tests.support.push import push_image, push_index  # noqa: E402

_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d+)')
SCRATCH = Path(tempfile.mkdtemp(prefix="imagegate-bench-check-"))
IMAGEGATE = Path(sys.executable).with_name("imagegate")  # the console script users run


def load_stack() -> dict[str, str]:
    state = Path(os.environ.get("IMAGEGATE_STACK_DIR", "/tmp/imagegate-stack")) / "stack.json"
    if not state.is_file():
        sys.exit(f"no local stack at {state}; start it with: python scripts/stack.py up")
    return json.loads(state.read_text())["env"]


def fresh_cache(name: str) -> Path:
    return SCRATCH / f"cache-{name}-{uuid.uuid4().hex[:6]}"


def child_env(cache: Path | None) -> dict[str, str]:
    """The environment of an imagegate process: its own cache (or none), bytecode cached outside the tree."""
    env = dict(os.environ, PYTHONPYCACHEPREFIX=str(SCRATCH / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if cache is None:
        env["IMAGEGATE_REGISTRY_CACHE"] = "off"
    else:
        env.update(IMAGEGATE_REGISTRY_CACHE="on", IMAGEGATE_REGISTRY_CACHE_DIR=str(cache))
    return env


def log_requests(log: Path, offset: int, repo: str) -> list[tuple[str, str, int]]:
    """(method, kind, status) of each request for *repo* written to the access log after *offset*."""
    with log.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    found = []
    for match in _LINE.finditer(text):
        path = match["path"]
        if f"/v2/{repo}/" in path:
            kind = "manifests" if "/manifests/" in path else "blobs" if "/blobs/" in path else "other"
            found.append((match["method"], kind, int(match["status"])))
    return found


def settle(log: Path) -> int:
    time.sleep(0.3)  # the registry writes its access log line after the response
    return log.stat().st_size


def counts(seen: list[tuple[str, str, int]]) -> dict[str, int]:
    return {
        "manifest_heads": sum(1 for m, k, _ in seen if (m, k) == ("HEAD", "manifests")),
        "manifest_gets": sum(1 for m, k, _ in seen if (m, k) == ("GET", "manifests")),
        "blob_gets": sum(1 for m, k, _ in seen if (m, k) == ("GET", "blobs")),
    }


def bench_thousand_checks(env: dict[str, str]) -> dict[str, object]:
    repo = f"bench/thousand-{uuid.uuid4().hex[:8]}"
    push_image(f"http://{env['IMAGEGATE_REGISTRY']}", repo, make_image(user="1000"), tag="1.0.0")
    log = Path(env["IMAGEGATE_REGISTRY_ACCESS_LOG"])
    offset = settle(log)
    ref = f"{env['IMAGEGATE_REGISTRY']}/{repo}:1.0.0"
    with RegistryClient(docker_config=DockerConfig({}), disk_cache=DiskCache(fresh_cache("thousand"))) as client:
        imagegate.check(ref, client=client)
        timings = []
        for _ in range(999):
            start = time.perf_counter()
            report = imagegate.check(ref, client=client)
            timings.append(time.perf_counter() - start)
        assert report.passed
    seen = log_requests(log, settle(log) and offset, repo)
    return {
        "checks": 1000,
        **counts(seen),
        "cached_check_median_us": round(statistics.median(timings) * 1e6, 1),
        "cached_check_p99_us": round(sorted(timings)[int(len(timings) * 0.99)] * 1e6, 1),
    }


def bench_cold_round_trips(env: dict[str, str], runs: int) -> dict[str, object]:
    """Requests the registry sees for one cold check, after auth (401s and /v2/ pings left out)."""
    results: dict[str, object] = {}
    plain = f"http://{env['IMAGEGATE_REGISTRY']}"
    auth = (env["IMAGEGATE_AUTH_USER"], env["IMAGEGATE_AUTH_PASSWORD"])
    tls = f"https://{env['IMAGEGATE_AUTH_REGISTRY']}"
    import base64

    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    config = DockerConfig({"auths": {env["IMAGEGATE_AUTH_REGISTRY"]: {"auth": token}}})
    index = make_index(
        [(platform_of("linux", "amd64"), make_image(user="1000")),
         (platform_of("linux", "arm64", "v8"), make_image(user="1000", architecture="arm64", variant="v8"))]
    )
    cases = [
        ("plain http, single image", plain, env["IMAGEGATE_REGISTRY"], env["IMAGEGATE_REGISTRY_ACCESS_LOG"], None, False),
        ("plain http, 2-platform index", plain, env["IMAGEGATE_REGISTRY"], env["IMAGEGATE_REGISTRY_ACCESS_LOG"], None, True),
        ("TLS + basic auth, single image", tls, env["IMAGEGATE_AUTH_REGISTRY"], env["IMAGEGATE_AUTH_REGISTRY_ACCESS_LOG"], auth, False),
        ("TLS + basic auth, 2-platform index", tls, env["IMAGEGATE_AUTH_REGISTRY"], env["IMAGEGATE_AUTH_REGISTRY_ACCESS_LOG"], auth, True),
    ]
    for name, url, host, log_path, creds, multi in cases:
        repo = f"bench/cold-{uuid.uuid4().hex[:8]}"
        kwargs = {"auth": creds, "verify": env["IMAGEGATE_AUTH_CA"]} if creds else {}
        if multi:
            push_index(url, repo, index, tag="1.0.0", **kwargs)
        else:
            push_image(url, repo, make_image(user="1000"), tag="1.0.0", **kwargs)
        log = Path(log_path)
        warm_cache = fresh_cache("cold")
        with RegistryClient(docker_config=config if creds else DockerConfig({}), ca_file=env["IMAGEGATE_AUTH_CA"],
                            disk_cache=DiskCache(warm_cache)) as client:
            imagegate.check(f"{host}/{repo}:1.0.0", client=client)  # fills the warm cache
        figures: dict[str, object] = {}
        for label, disk in (("no disk cache", lambda: False), ("empty disk cache", lambda: DiskCache(fresh_cache("cold"))),
                            ("warm disk cache", lambda: DiskCache(warm_cache))):
            found, times = [], []
            for _ in range(runs):
                offset = settle(log)
                with RegistryClient(docker_config=config if creds else DockerConfig({}), ca_file=env["IMAGEGATE_AUTH_CA"],
                                    disk_cache=disk()) as client:
                    start = time.perf_counter()
                    assert imagegate.check(f"{host}/{repo}:1.0.0", client=client).passed
                    times.append(time.perf_counter() - start)
                seen = log_requests(log, settle(log) and offset, repo)
                found.append(sum(1 for _, _, status in seen if status != 401))
            figures[label] = {"requests_after_auth": max(found), "cold_check_median_ms": round(statistics.median(times) * 1e3, 2)}
        results[name] = figures
    return results


# -- one fetch per image per host ----------------------------------------------------------------------


def run_processes(commands: list[list[str]], env: dict[str, str], parallel: int = 4) -> float:
    """Run every command, *parallel* at a time; fail on any exit status but 0. Returns the wall time."""
    start = time.perf_counter()
    pending = list(commands)
    running: list[subprocess.Popen[bytes]] = []
    while pending or running:
        while pending and len(running) < parallel:
            running.append(subprocess.Popen(pending.pop(0), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        proc = running.pop(0)
        _, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            sys.exit(f"{proc.args} failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return time.perf_counter() - start


def wait_for_heads(log: Path, offset: int, repo: str, heads: int) -> list[tuple[str, str, int]]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = log_requests(log, offset, repo)
        if counts(seen)["manifest_heads"] >= heads:
            break
        time.sleep(0.2)
    return log_requests(log, settle(log) and offset, repo)


def bench_processes(env: dict[str, str], processes: int, images: int = 50) -> dict[str, object]:
    registry = env["IMAGEGATE_REGISTRY"]
    log = Path(env["IMAGEGATE_REGISTRY_ACCESS_LOG"])
    images = min(images, processes)
    out: dict[str, object] = {"processes": processes, "parallel": 4}

    repo = f"bench/procs-one-{uuid.uuid4().hex[:8]}"
    push_image(f"http://{registry}", repo, make_image(user="1000"), tag="1.0.0")
    offset = settle(log)
    cache = fresh_cache("one")
    wall = run_processes([[str(IMAGEGATE), "check", f"{registry}/{repo}:1.0.0", "--json"]] * processes, child_env(cache))
    seen = wait_for_heads(log, offset, repo, processes)
    out["one_image"] = {**counts(seen), "seconds": round(wall, 1), "cache_entries": DiskCache(cache).stats().entries,
                        "target": f"<= {processes} HEADs, exactly 1 manifest GET and 1 config GET"}

    repo = f"bench/procs-many-{uuid.uuid4().hex[:8]}"
    for i in range(images):
        push_image(f"http://{registry}", repo, make_image(user="1000", labels={"n": str(i)}), tag=f"1.0.{i}")
    offset = settle(log)
    cache = fresh_cache("many")
    commands = [[str(IMAGEGATE), "check", f"{registry}/{repo}:1.0.{i % images}", "--json"] for i in range(processes)]
    wall = run_processes(commands, child_env(cache))
    seen = wait_for_heads(log, offset, repo, processes)
    out[f"{images}_images"] = {**counts(seen), "seconds": round(wall, 1), "cache_entries": DiskCache(cache).stats().entries,
                               "target": f"<= {processes} HEADs, {images} manifest GETs and {images} config GETs"}
    return out


# -- CLI start-up against the peers ---------------------------------------------------------------------


def crane_binary() -> str:
    from localstack.go_tools import ensure_tool

    return str(ensure_tool("crane"))


def paired(commands: dict[str, tuple[list[str], dict[str, str]]], pairs: int) -> dict[str, list[float]]:
    """Wall times (ms) of each command, run *pairs* times in alternating order (after one warm-up each)."""
    names = list(commands)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        _run_checked(*commands[name])
    for i in range(pairs):
        for name in names if i % 2 == 0 else reversed(names):
            start = time.perf_counter()
            _run_checked(*commands[name])
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def _run_checked(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode not in (0, 1):
        sys.exit(f"{' '.join(command)} failed: {result.stderr}")
    return result


def _ratio(times: dict[str, list[float]], ours: str, peer: str) -> dict[str, float]:
    return {
        f"{ours}_median_ms": round(statistics.median(times[ours]), 1),
        f"{peer}_median_ms": round(statistics.median(times[peer]), 1),
        "ratio": round(statistics.median(times[ours]) / statistics.median(times[peer]), 2),
        "ratio_paired": round(statistics.median(a / b for a, b in zip(times[ours], times[peer])), 2),
    }


def bench_cli_vs_peers(env: dict[str, str], pairs: int) -> dict[str, object]:
    registry = env["IMAGEGATE_REGISTRY"]
    repo = f"bench/cli-{uuid.uuid4().hex[:8]}"
    push_image(f"http://{registry}", repo, make_image(user="1000"), tag="1.0.0")
    ref = f"{registry}/{repo}:1.0.0"
    warm = child_env(fresh_cache("cli"))
    out: dict[str, object] = {"pairs": pairs, "reference": ref}
    crane = crane_binary()
    assert _run_checked([crane, "digest", ref], os.environ).stdout.strip() in _run_checked([str(IMAGEGATE), "resolve", ref], warm).stdout
    times = paired({"imagegate_resolve": ([str(IMAGEGATE), "resolve", ref], warm),
                    "crane_digest": ([crane, "digest", ref], dict(os.environ))}, pairs)
    out["resolve_vs_crane_digest"] = {**_ratio(times, "imagegate_resolve", "crane_digest"), "target": "<= 100 ms and <= 10x"}
    skopeo = shutil.which("skopeo")
    if not skopeo:
        out["skopeo"] = "not installed (apt-get install skopeo)"
        return out
    peer = [skopeo, "inspect", "--config", "--tls-verify=false", f"docker://{ref}"]
    assert json.loads(_run_checked(peer, os.environ).stdout)["config"]["User"] == "1000"
    ours = [str(IMAGEGATE), "check", ref, "--json"]
    times = paired({"imagegate_check_no_cache": (ours, child_env(None)), "imagegate_check_warm_cache": (ours, warm),
                    "skopeo_inspect_config": (peer, dict(os.environ))}, pairs)
    out["check_vs_skopeo_inspect_config"] = {
        "no_disk_cache": _ratio(times, "imagegate_check_no_cache", "skopeo_inspect_config"),
        "warm_disk_cache": _ratio(times, "imagegate_check_warm_cache", "skopeo_inspect_config"),
    }
    return out


def bench_import(runs: int) -> dict[str, object]:
    code = (
        "import time, sys; s = time.perf_counter(); import imagegate; e = time.perf_counter(); "
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'docker', 'kubernetes', 'airflow', 'dagster', 'httpx', 'httpcore'}); "
        "print(e - s, ','.join(heavy))"
    )
    times, heavy = [], ""
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                             env=child_env(None)).stdout.split()
        times.append(float(out[0]))
        heavy = out[1] if len(out) > 1 else ""
    return {"import_median_ms": round(statistics.median(times) * 1e3, 2), "heavy_modules_imported": heavy or "none",
            "target": "<= 40 ms"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--pairs", type=int, default=21, help="paired runs of each CLI comparison (>= 15)")
    parser.add_argument("--processes", type=int, default=200, help="processes of the one-fetch-per-host scenarios")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    env = load_stack()
    try:
        results = {
            "thousand_checks": bench_thousand_checks(env),
            "cold": bench_cold_round_trips(env, args.runs),
            "processes": bench_processes(env, args.processes),
            "cli_vs_peers": bench_cli_vs_peers(env, args.pairs),
            "import": bench_import(args.runs),
            "runs": args.runs,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
