"""Benchmark: what verifying cosign signatures (and vulnerability attestations) adds to a check, against cosign.

Run (needs the local stack, `make bench` starts it; cosign v3.1.3 is built once from the Go module proxy if missing):

    .venv/bin/python benchmarks/bench_supply_chain.py [--pairs 15] [--runs 9] [--json benchmarks/results/supply_chain.json]

On one image pushed to the local registry (distribution 2.8: no referrers API, so the bundle format is found
through cosign's fallback tag), signed by the REAL cosign with a key it generated — once in each format, the
same image content in two repositories — in one run:

1. Whole process, ``--pairs`` paired runs in alternating order, medians and their ratios:
   ``imagegate check REF --json`` with a policy without ``[[signatures]]`` (the baseline), with a
   ``[[signatures]]`` rule and a cold disk cache (a new, empty cache directory every run) and with a warm one, and
   ``imagegate verify REF --key cosign.pub`` (cold, warm: the same work as cosign's), against
   ``cosign verify --key cosign.pub --insecure-ignore-tlog=true REF``.
2. In process (``imagegate.check`` with a new client every run, so nothing is cached in memory): the same three,
   medians of ``--runs``; the difference is the verification itself, without interpreter start-up.
3. Registry round trips of one run of each (the client's ``round_trips`` in process; the registry's access log
   for whole processes, both tools), requests for the image's repository only.

When the ``vulnerabilities`` check exists (``imagegate/_vulns.py``), the same for a ``[[vulnerabilities]]`` rule
over a vulnerability attestation written by ``cosign attest --type vuln`` (``imagegate check`` with both rules, and
``imagegate verify-attestation --type vuln``), against ``cosign verify-attestation --type vuln``.

REF is the digest reference (``registry/repo@sha256:…``), what a lock file holds and what both tools verify.
Every imagegate process gets a cache directory of its own, never the user's; bytecode is cached outside the tree.
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
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import imagegate  # noqa: E402
from imagegate import DockerConfig, RegistryClient  # noqa: E402
from imagegate._diskcache import DiskCache  # noqa: E402
from tests.support.oci import make_image  # noqa: E402
from tests.support.push import push_image  # noqa: E402

_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d+)')
SCRATCH = Path(tempfile.mkdtemp(prefix="imagegate-bench-supply-"))
IMAGEGATE = Path(sys.executable).with_name("imagegate")

VULN_PREDICATE = {  # cosign's vuln predicate (``cosign attest --type vuln``): a scan that found nothing
    "invocation": {"parameters": None, "uri": "", "event_id": "", "builder.id": ""},
    "scanner": {"uri": "pkg:github/aquasecurity/trivy@0.74.0", "version": "0.74.0",
                "db": {"uri": "", "version": ""}, "result": {"SchemaVersion": 2, "ArtifactType": "container_image",
                                                              "Results": []}},
    "metadata": {"scanStartedOn": "", "scanFinishedOn": ""},
}


def load_stack() -> dict[str, str]:
    state = Path(os.environ.get("IMAGEGATE_STACK_DIR", "/tmp/imagegate-stack")) / "stack.json"
    if not state.is_file():
        sys.exit(f"no local stack at {state}; start it with: python scripts/stack.py up")
    return json.loads(state.read_text())["env"]


def cosign_binary() -> Path:
    given = os.environ.get("IMAGEGATE_COSIGN")
    if given:
        return Path(given)
    from localstack.cosign_tools import ensure_cosign

    return ensure_cosign()


def cosign_env(home: Path) -> dict[str, str]:
    """No password on the bench key; a private HOME and docker config: nothing from this machine's ~/.sigstore."""
    return {**os.environ, "COSIGN_PASSWORD": "", "HOME": str(home), "DOCKER_CONFIG": str(home / ".docker"),
            "SIGSTORE_NO_CACHE": "1"}


def cosign(binary: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(binary), *args], cwd=home, env=cosign_env(home), capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        sys.exit(f"cosign {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


def child_env(cache: Path | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPYCACHEPREFIX=str(SCRATCH / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if cache is None:
        env["IMAGEGATE_REGISTRY_CACHE"] = "off"
    else:
        env.update(IMAGEGATE_REGISTRY_CACHE="on", IMAGEGATE_REGISTRY_CACHE_DIR=str(cache))
    return env


def fresh_cache(name: str) -> Path:
    return SCRATCH / f"cache-{name}-{uuid.uuid4().hex[:8]}"


def settle(log: Path) -> int:
    time.sleep(0.3)  # the registry writes its access log line after the response
    return log.stat().st_size


def repo_requests(log: Path, offset: int, repo: str) -> dict[str, int]:
    """Requests for *repo* the registry logged after *offset*, by kind (401 challenges counted apart)."""
    with log.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    out = {"total": 0, "manifest_head": 0, "manifest_get": 0, "blob_get": 0, "referrers": 0, "not_found": 0}
    for match in _LINE.finditer(text):
        path, method, status = match["path"], match["method"], int(match["status"])
        if f"/v2/{repo}/" not in path:
            continue
        out["total"] += 1
        out["not_found"] += status == 404
        if "/referrers/" in path:
            out["referrers"] += 1
        elif "/manifests/" in path:
            out["manifest_head" if method == "HEAD" else "manifest_get"] += 1
        elif "/blobs/" in path:
            out["blob_get"] += 1
    return out


def run(command: list[str], env: dict[str, str], expect: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != expect:
        sys.exit(f"{' '.join(command)} exited {proc.returncode}, not {expect}:\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    return proc


Command = Callable[[], tuple[list[str], dict[str, str]]]


def paired(commands: dict[str, Command], pairs: int) -> dict[str, list[float]]:
    """Wall times (ms) of each command, *pairs* times in alternating order, after one warm-up each. A command is
    a function, so a scenario can make its environment anew for every run (a cold cache)."""
    names = list(commands)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        run(*commands[name]())
    for i in range(pairs):
        for name in names if i % 2 == 0 else reversed(names):
            command, env = commands[name]()
            start = time.perf_counter()
            run(command, env)
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def median_ms(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def ratios(times: dict[str, list[float]], peer: str) -> dict[str, object]:
    """Each scenario's median, and its ratio to *peer*'s (of the medians; and the median of the paired ratios)."""
    out: dict[str, object] = {}
    for name, values in times.items():
        out[name] = {"median_ms": median_ms(values)}
        if name != peer:
            out[name].update(  # type: ignore[union-attr]
                ratio_to_cosign=round(statistics.median(values) / statistics.median(times[peer]), 2),
                ratio_paired=round(statistics.median(a / b for a, b in zip(values, times[peer])), 2))
    return out


def write_policies(directory: Path, registry: str, pub: Path, *, vulnerabilities: bool) -> dict[str, Path]:
    (directory / "cosign.pub").write_bytes(pub.read_bytes())
    plain = directory / "plain.toml"
    plain.write_text("# no [[signatures]]: the check is off\n")
    signed = directory / "signed.toml"
    signed.write_text(f'[[signatures]]\nimages = ["{registry}/bench/**"]\nkeys = ["cosign.pub"]\n')
    out = {"plain": plain, "signed": signed}
    if vulnerabilities:
        vulns = directory / "vulns.toml"
        vulns.write_text(signed.read_text() + f'\n[[vulnerabilities]]\nimages = ["{registry}/bench/**"]\n'
                         'keys = ["cosign.pub"]\nmax-severity = "high"\n')
        out["vulns"] = vulns
    return out


def in_process(ref: str, policy: imagegate.Policy, runs: int, cache: Callable[[], object]) -> dict[str, object]:
    """``imagegate.check`` with a new client each run: median time and the client's round trips."""
    times, trips = [], []
    for _ in range(runs):
        with RegistryClient(docker_config=DockerConfig({}), disk_cache=cache()) as client:  # type: ignore[arg-type]
            start = time.perf_counter()
            report = imagegate.check(ref, policy=policy, client=client)
            times.append((time.perf_counter() - start) * 1e3)
            trips.append(client.round_trips)
        if not report.passed:
            sys.exit(f"{ref} was refused under {policy}:\n{report.render_text()}")
    return {"median_ms": round(statistics.median(times), 2), "round_trips": max(trips)}


def bench_format(fmt: str, env: dict[str, str], binary: Path, home: Path, policies: dict[str, Path], pairs: int,
                 runs: int, vulnerabilities: bool) -> dict[str, object]:
    registry = env["IMAGEGATE_REGISTRY"]
    log = Path(env["IMAGEGATE_REGISTRY_ACCESS_LOG"])
    repo = f"bench/supply-{fmt}-{uuid.uuid4().hex[:8]}"
    digest = push_image(f"http://{registry}", repo, make_image(user="1000"), tag="1.0.0")
    ref = f"{registry}/{repo}@{digest}"
    legacy = ["--new-bundle-format=false"] if fmt == "legacy" else []
    offline = ["--key", str(home / "cosign.key"), "--use-signing-config=false", "--tlog-upload=false", "--yes"]
    cosign(binary, home, "sign", *offline, *legacy, ref)
    if vulnerabilities:
        predicate = home / "vuln.json"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        predicate.write_text(json.dumps({**VULN_PREDICATE, "metadata": {"scanStartedOn": now, "scanFinishedOn": now}}))
        cosign(binary, home, "attest", *offline, *legacy, "--type", "vuln", "--predicate", str(predicate), ref)
    pub = str(home / "cosign.pub")
    verify = [str(binary), "verify", "--key", pub, "--insecure-ignore-tlog=true", ref]
    verify_att = [str(binary), "verify-attestation", "--key", pub, "--insecure-ignore-tlog=true", "--type", "vuln", ref]
    warm = fresh_cache(f"warm-{fmt}")

    def check(policy: str, cache: Callable[[], Path | None]) -> Command:
        return lambda: ([str(IMAGEGATE), "check", ref, "--policy", str(policies[policy]), "--json"], child_env(cache()))

    ours_verify = [str(IMAGEGATE), "verify", ref, "--key", pub]
    ours_verify_att = [str(IMAGEGATE), "verify-attestation", ref, "--key", pub, "--type", "vuln"]
    scenarios: dict[str, Command] = {
        "check_no_signature_rule_warm_cache": check("plain", lambda: warm),
        "check_signature_rule_cold_cache": check("signed", lambda: fresh_cache("cold")),
        "check_signature_rule_warm_cache": check("signed", lambda: warm),
        "imagegate_verify_cold_cache": lambda: (ours_verify, child_env(fresh_cache("cold"))),
        "imagegate_verify_warm_cache": lambda: (ours_verify, child_env(warm)),
        "cosign_verify": lambda: (verify, cosign_env(home)),
    }
    if vulnerabilities:
        scenarios["check_signature_and_vulnerabilities_cold_cache"] = check("vulns", lambda: fresh_cache("cold"))
        scenarios["check_signature_and_vulnerabilities_warm_cache"] = check("vulns", lambda: warm)
        scenarios["imagegate_verify_attestation_cold_cache"] = lambda: (ours_verify_att, child_env(fresh_cache("cold")))
        scenarios["imagegate_verify_attestation_warm_cache"] = lambda: (ours_verify_att, child_env(warm))
        scenarios["cosign_verify_attestation"] = lambda: (verify_att, cosign_env(home))
    for policy in ("signed", "vulns") if vulnerabilities else ("signed",):
        run(*check(policy, lambda: warm)())  # fills the warm cache (and proves the image verifies and passes)
    run(ours_verify, child_env(warm))
    if vulnerabilities:
        run(ours_verify_att, child_env(warm))

    # One run of each: what reached the registry.
    trips: dict[str, object] = {}
    for name, command in scenarios.items():
        offset = settle(log)
        run(*command())
        trips[name] = repo_requests(log, settle(log) and offset, repo)

    times = paired(scenarios, pairs)
    out: dict[str, object] = {"reference": ref, "whole_process": ratios(times, "cosign_verify"),
                              "registry_requests_whole_process": trips}
    if vulnerabilities:
        out["whole_process_attestations"] = ratios(
            {k: v for k, v in times.items() if "attestation" in k or "vulnerabilities" in k},
            "cosign_verify_attestation")
        out["whole_process"] = ratios({k: v for k, v in times.items() if k not in out["whole_process_attestations"]},
                                      "cosign_verify")

    base = imagegate.Policy.load(policies["plain"])
    signed = imagegate.Policy.load(policies["signed"])
    cases = {
        "no_signature_rule_no_disk_cache": (base, lambda: False),
        "signature_rule_no_disk_cache": (signed, lambda: False),
        "signature_rule_cold_disk_cache": (signed, lambda: DiskCache(fresh_cache("inproc"))),
        "signature_rule_warm_disk_cache": (signed, lambda: DiskCache(warm)),
    }
    if vulnerabilities:
        vulns = imagegate.Policy.load(policies["vulns"])
        cases["signature_and_vulnerabilities_cold_disk_cache"] = (vulns, lambda: DiskCache(fresh_cache("inproc")))
        cases["signature_and_vulnerabilities_warm_disk_cache"] = (vulns, lambda: DiskCache(warm))
    out["in_process"] = {name: in_process(ref, policy, runs, cache) for name, (policy, cache) in cases.items()}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=15, help="paired whole-process runs of each scenario")
    parser.add_argument("--runs", type=int, default=9, help="in-process runs of each scenario")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    env = load_stack()
    vulnerabilities = (ROOT / "imagegate" / "_vulns.py").is_file()
    try:
        binary = cosign_binary()
        home = SCRATCH / "cosign-home"
        home.mkdir()
        cosign(binary, home, "generate-key-pair")
        policies = write_policies(SCRATCH, env["IMAGEGATE_REGISTRY"], home / "cosign.pub", vulnerabilities=vulnerabilities)
        version = run([str(binary), "version"], cosign_env(home)).stdout
        results = {
            "cosign": next((line.split()[-1] for line in version.splitlines() if line.startswith("GitVersion")), "?"),
            "vulnerabilities": vulnerabilities,
            **{fmt: bench_format(fmt, env, binary, home, policies, args.pairs, args.runs, vulnerabilities)
               for fmt in ("bundle", "legacy")},
            "pairs": args.pairs,
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
