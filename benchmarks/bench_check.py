"""Benchmark: resolve + check against the real local registries, with skopeo as the peer.

Run (needs the local stack; `make bench` starts it):

    .venv/bin/python benchmarks/bench_check.py [--runs 7] [--json benchmarks/results/latest.json]

What it measures, each a median of several runs in one process/session:

1. Requests that reach the registry (its access log) for 1,000 checks of one reference in one process:
   the target is exactly 1 manifest and 1 config-blob request.
2. Cached check latency (``imagegate.check`` after the first), median over 1,000 calls.
3. Cold resolve + check: HTTP requests the registry received after auth, for a single-platform image and a
   two-platform index, on the plain registry and on the TLS + basic-auth registry.
4. Cold CLI process vs the peer: ``imagegate check REF --json`` against ``skopeo inspect --config`` (reads the
   same manifest + config) on the same image; wall time ratio of medians.
5. ``import imagegate`` wall time in a fresh interpreter (median), and which heavy modules it pulls in.
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
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import imagegate  # noqa: E402
from imagegate import DockerConfig, RegistryClient  # noqa: E402
from tests.support.oci import make_image, make_index, platform_of  # noqa: E402
from tests.support.push import push_image, push_index  # noqa: E402

_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d+)')


def load_stack() -> dict[str, str]:
    state = Path(os.environ.get("IMAGEGATE_STACK_DIR", "/tmp/imagegate-stack")) / "stack.json"
    if not state.is_file():
        sys.exit(f"no local stack at {state}; start it with: python scripts/stack.py up")
    return json.loads(state.read_text())["env"]


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


def bench_thousand_checks(env: dict[str, str]) -> dict[str, object]:
    repo = f"bench/thousand-{uuid.uuid4().hex[:8]}"
    push_image(f"http://{env['IMAGEGATE_REGISTRY']}", repo, make_image(user="1000"), tag="1.0.0")
    log = Path(env["IMAGEGATE_REGISTRY_ACCESS_LOG"])
    offset = settle(log)
    ref = f"{env['IMAGEGATE_REGISTRY']}/{repo}:1.0.0"
    with RegistryClient(docker_config=DockerConfig({})) as client:
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
        "manifest_requests": sum(1 for _, kind, _ in seen if kind == "manifests"),
        "blob_requests": sum(1 for _, kind, _ in seen if kind == "blobs"),
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
        counts, times = [], []
        for _ in range(runs):
            offset = settle(log)
            with RegistryClient(docker_config=config if creds else DockerConfig({}), ca_file=env["IMAGEGATE_AUTH_CA"]) as client:
                start = time.perf_counter()
                assert imagegate.check(f"{host}/{repo}:1.0.0", client=client).passed
                times.append(time.perf_counter() - start)
            seen = log_requests(log, settle(log) and offset, repo)
            counts.append(sum(1 for _, _, status in seen if status != 401))
        results[name] = {"requests_after_auth": max(counts), "cold_check_median_ms": round(statistics.median(times) * 1e3, 2)}
    return results


def _median_wall(command: list[str], runs: int) -> tuple[float, subprocess.CompletedProcess[str]]:
    times = []
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        if result.returncode not in (0, 1):
            sys.exit(f"{' '.join(command)} failed: {result.stderr}")
    assert result is not None
    return statistics.median(times), result


def bench_cli_vs_skopeo(env: dict[str, str], runs: int) -> dict[str, object]:
    repo = f"bench/cli-{uuid.uuid4().hex[:8]}"
    push_image(f"http://{env['IMAGEGATE_REGISTRY']}", repo, make_image(user="1000"), tag="1.0.0")
    ref = f"{env['IMAGEGATE_REGISTRY']}/{repo}:1.0.0"
    ours, _ = _median_wall([sys.executable, "-m", "imagegate", "check", ref, "--json"], runs)
    out: dict[str, object] = {"imagegate_check_cli_median_ms": round(ours * 1e3, 1)}
    skopeo = shutil.which("skopeo")
    if skopeo:
        peer, result = _median_wall([skopeo, "inspect", "--config", "--tls-verify=false", f"docker://{ref}"], runs)
        assert json.loads(result.stdout)["config"]["User"] == "1000"
        out.update(skopeo_inspect_config_median_ms=round(peer * 1e3, 1), ratio_imagegate_over_skopeo=round(ours / peer, 2))
    else:
        out["skopeo"] = "not installed (apt-get install skopeo)"
    return out


def bench_import(runs: int) -> dict[str, object]:
    code = (
        "import time, sys; s = time.perf_counter(); import imagegate; e = time.perf_counter(); "
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'docker', 'kubernetes', 'airflow', 'dagster', 'httpx'}); "
        "print(e - s, ','.join(heavy))"
    )
    times, heavy = [], ""
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()
        times.append(float(out[0]))
        heavy = out[1] if len(out) > 1 else ""
    return {"import_median_ms": round(statistics.median(times) * 1e3, 1), "heavy_modules_imported": heavy or "none"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    env = load_stack()
    results = {
        "thousand_checks": bench_thousand_checks(env),
        "cold": bench_cold_round_trips(env, args.runs),
        "cli_vs_peer": bench_cli_vs_skopeo(env, args.runs),
        "import": bench_import(args.runs),
        "runs": args.runs,
        "python": sys.version.split()[0],
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
