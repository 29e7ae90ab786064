"""The supply-chain walk-through of docs/supply-chain.md, RUN as written: its marked ```console blocks are executed in
one bash shell (and its marked ```toml block written to the file it names), in document order, against the local
stack, the real Trivy v0.74.0 with the fixture database, the real Docker Engine, and the real cosign as the oracle on
what imagegate wrote. So the page cannot drift from what is tested: a command that stops working, an exit status
(`echo $?`) or an output line the page shows that the run does not print, fails here.

The page's setup block runs as written too (from the repository's root); of the variables it exports, two are then
replaced: ``REPO`` by a fresh repository per run (no earlier run's signatures) and ``TRIVY_CACHE`` by a private copy
of the same fixture database (no concurrent scan holds Trivy's lock).

What must hold, derived and never written down: the findings come from tests/support/trivy.py's
``expected_findings`` (the fixture advisories matched against the image's own package databases); the check passes
with the page's waiver and fails without it, naming exactly the findings above max-severity (only-fixable decides
the HIGH ``will_not_fix`` one); ``imagegate run`` starts a container of the checked digest when the check passes and
creates none when it refuses — also for an unsigned image, one signed but with no scan attested, one attested with a
key the policy does not list, and one whose newest scan is older than max-age (seen in the Engine's event stream); and the three reports Trivy writes (cosign-vuln, Trivy
JSON, SARIF) attested in both formats are judged alike.

Needs the local stack, Trivy and cosign (built on first use); under CI=true a missing one fails.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.conftest import ROOT, Stack, _unavailable, run_cli, unique
from tests.integration.test_cosign_stack import _cosign, cosign  # noqa: F401 - the real cosign v3
from tests.support.trivy import (
    OFFLINE_FLAGS,
    Finding,
    expected_findings,
    findings_of,
    trivy_binary,
    trivy_cache_dir,
)

pytestmark = pytest.mark.integration

DOC = ROOT / "docs" / "supply-chain.md"
JOB = ROOT / "example_dags" / "jobs" / "wordcount"
MARKED = re.compile(r"<!-- supply-chain-flow: (run|file (\S+)) -->\s*\n```(\w+)\n(.*?)\n```", re.S)
PROVIDED = ("REPO", "BASE", "TRIVY_CACHE", "PATH")
RANK = {"none": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
TYPES = {"vuln": "https://cosign.sigstore.dev/attestation/vuln/v1",
         "trivy": "https://imagegate.dev/attestation/trivy-report/v2",
         "sarif": "https://imagegate.dev/attestation/sarif/v2.1.0"}
TRIVY_FORMAT = {"vuln": "cosign-vuln", "trivy": "json", "sarif": "sarif"}
TODAY = dt.datetime.now(dt.timezone.utc).date()


# ------------------------------------------------------------------------------------------- the page


@dataclass
class Step:
    """One marked piece of the page: a shell command (with the output the page shows and the exit status its
    ``echo $?`` shows, else 0) or a file the page writes."""

    command: str = ""
    shown: list[str] = field(default_factory=list)
    exit_code: int = 0
    path: str = ""  # a file step: where
    content: str = ""


def page_steps(text: str) -> list[Step]:
    steps: list[Step] = []
    for match in MARKED.finditer(text):
        kind, path, lang, body = match.groups()
        if kind.startswith("file"):
            steps.append(Step(path=path, content=body + "\n"))
            continue
        assert lang == "console", f"a marked run block must be ```console, not {lang}"
        lines = body.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            assert line.startswith("$ "), f"output before any command in a run block: {line!r}"
            command = line[2:]
            while command.endswith("\\"):
                i += 1
                command += "\n" + lines[i]  # bash reads the continuation as written
            i += 1
            shown = []
            while i < len(lines) and not lines[i].startswith("$ "):
                shown.append(lines[i])
                i += 1
            if command.strip() == "echo $?":
                assert steps and steps[-1].command and len(shown) == 1, "`echo $?` must follow a command"
                steps[-1].exit_code = int(shown[0])
            else:
                steps.append(Step(command=command, shown=shown))
    return steps


def setup_block(text: str) -> str:
    match = re.search(r"## Before you start.*?```sh\n(.*?)\n```", text, re.S)
    assert match, "docs/supply-chain.md lost its setup block"
    return match.group(1)


def setup_env(text: str, stack: Stack) -> dict[str, str]:
    """The environment after the page's setup block, run as written from the repository's root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSIGN_")}
    env["IMAGEGATE_STACK_DIR"] = str(Path(stack.env.get("IMAGEGATE_STACK_DIR", "/tmp/imagegate-stack")))
    proc = subprocess.run(["bash", "-c", f"set -e\n{setup_block(text)}\nenv -0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"the setup block of docs/supply-chain.md failed:\n{proc.stderr[-3000:]}"
    after = dict(item.split("=", 1) for item in proc.stdout.split("\0") if "=" in item)
    missing = [name for name in PROVIDED if not after.get(name)]
    assert not missing, f"the setup block does not set {missing}"
    return after


def _with_waiver_expiring(policy: str, day: dt.date) -> str:
    """The page's policy with its waiver's expiry moved to *day* (a fixed date on the page would fail this test the
    day after it)."""
    new, count = re.subn(r"^expires = \d{4}-\d{2}-\d{2}[ \t]*$", f"expires = {day.isoformat()}", policy, flags=re.M)
    assert count == 1, "the page's policy must hold exactly one waiver with `expires = YYYY-MM-DD`"
    return new


# ------------------------------------------------------------------------------------------- running it


@dataclass
class Ran:
    step: Step
    returncode: int
    started: float  # epoch seconds, as `date +%s.%N`
    ended: float
    stdout: str
    stderr: str


@dataclass
class Flow:
    workdir: Path
    env: dict[str, str]
    repo: str
    image: str  # what the page's $IMAGE held: REPO:TAG@sha256:...
    launch: str  # REPO@sha256:...
    ran: list[Ran]
    policy: dict[str, Any]  # the page's imagegate.toml, parsed
    password: str  # the COSIGN_PASSWORD the page exports (its cosign.key's)
    tags: list[str] = field(default_factory=list)  # what the tests tagged in the Engine, removed at the end

    def runs_of(self, prefix: str) -> list[Ran]:
        return [r for r in self.ran if r.step.command.startswith(prefix)]


def _script(steps: list[Step], out: Path) -> str:
    """One bash script: each command's stdout/stderr/exit status/times into *out*; stop at the first exit status
    that differs from the page's."""
    parts = []
    for n, step in enumerate(steps):
        if step.path:
            parts.append(f"cat > '{step.path}' <<'__IMAGEGATE_PAGE_EOF__'\n{step.content}__IMAGEGATE_PAGE_EOF__\n")
            continue
        parts.append(
            f'date +%s.%N > "{out}/{n}.t0"\n'
            f'{{ {step.command}\n}} > "{out}/{n}.out" 2> "{out}/{n}.err"\n'
            f'rc=$?; date +%s.%N > "{out}/{n}.t1"; echo "$rc" > "{out}/{n}.rc"\n'
            f'[ "$rc" = "{step.exit_code}" ] || exit 97\n')
    parts.append(f'printf "%s" "$IMAGE" > "{out}/IMAGE"\n')
    return "".join(parts)


@pytest.fixture(scope="module")
def flow(stack: Stack, docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    text = DOC.read_text(encoding="utf-8")
    steps = page_steps(text)
    base = stack.env.get("IMAGEGATE_PYTHON_IMAGE_DIGEST")
    if not base:
        _unavailable("the python base image (IMAGEGATE_PYTHON_IMAGE_DIGEST)")
    imagegate = shutil.which("imagegate", path=str(Path(sys.executable).parent))
    assert imagegate, f"the imagegate command is not installed beside {sys.executable}"
    workdir = tmp_path_factory.mktemp("supply-chain")
    shutil.copytree(JOB, workdir / "example_dags" / "jobs" / "wordcount")  # the page runs from a clone's root
    cache = workdir / "trivy-cache"
    shutil.copytree(trivy_cache_dir() / "db", cache / "db")
    out = workdir / ".steps"
    out.mkdir()
    for step in steps:
        if step.path == "imagegate.toml":
            step.content = _with_waiver_expiring(step.content, TODAY + dt.timedelta(days=30))
    env = setup_env(text, stack)
    assert env["BASE"] == base and Path(env["TRIVY_CACHE"]) == trivy_cache_dir(), "the page's setup block drifted"
    assert env["REPO"].startswith(stack.registry + "/")
    repo = f"{stack.registry}/{unique('it-flow')}/wordcount"  # a fresh repository: no earlier run's signatures
    env.update(REPO=repo, TRIVY_CACHE=str(cache),  # a private copy: no concurrent scan holds Trivy's lock
               PATH=f"{trivy_binary().parent}:{Path(imagegate).parent}:{env['PATH']}")
    script = workdir / "walkthrough.sh"
    script.write_text(_script(steps, out))
    proc = subprocess.run(["bash", str(script)], cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    ran = []
    for n, step in enumerate(steps):
        if step.path or not (out / f"{n}.rc").exists():
            continue
        ran.append(Ran(step, int((out / f"{n}.rc").read_text()), float((out / f"{n}.t0").read_text()),
                       float((out / f"{n}.t1").read_text()), (out / f"{n}.out").read_text(),
                       (out / f"{n}.err").read_text()))
    if proc.returncode != 0 or len(ran) != sum(1 for s in steps if s.command):
        last = ran[-1] if ran else None
        detail = (f"`{last.step.command}` exited {last.returncode}, the page says {last.step.exit_code}:\n"
                  f"{last.stdout[-2000:]}\n{last.stderr[-3000:]}" if last else proc.stderr)
        pytest.fail(f"the walk-through of docs/supply-chain.md failed: {detail}", pytrace=False)
    image = (out / "IMAGE").read_text()
    name, _, digest = image.partition("@")
    assert name.startswith(repo + ":") and digest.startswith("sha256:"), image
    password = re.search(r"^export COSIGN_PASSWORD='([^']*)'", "\n".join(s.command for s in steps), re.M)
    assert password, "the page must export COSIGN_PASSWORD='…' (the key's password) before it makes the key"
    found = Flow(workdir, env, repo, image, f"{repo}@{digest}", ran,
                 tomllib.loads((workdir / "imagegate.toml").read_text()), password.group(1))
    yield found
    for tag in [t for img in docker_client.images.list(name=repo) for t in img.tags]:
        docker_client.images.remove(tag, noprune=True)  # the base's layers stay for the next build
    for tag in found.tags:
        docker_client.images.remove(tag, force=True)


# ------------------------------------------------------------------------------------------- helpers


def _cli(flow: Flow, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={**flow.env, "COSIGN_PASSWORD": flow.password}, cwd=flow.workdir)


def check_json(flow: Flow, ref: str, policy: str | Path) -> tuple[int, dict[str, Any]]:
    proc = _cli(flow, "check", ref, "--policy", str(policy), "--json")
    assert proc.returncode in (0, 1), proc.stderr
    report = json.loads(proc.stdout)
    return proc.returncode, {c["check"]: c for c in report["checks"]}


def blocking_of(findings: list[Finding], rule: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(id, package, severity) of the findings a rule without waivers refuses, by its documented semantics: above
    max-severity, and fixable when only-fixable (UNKNOWN ranks as critical, the default)."""
    limit = RANK[rule["max-severity"]]
    return {(f.id, f.package, f.severity.lower()) for f in findings
            if RANK.get(f.severity.lower(), RANK["critical"]) > limit
            and (f.fixed or not rule.get("only-fixable", False))}


def listed(check: dict[str, Any], *, waived: bool) -> set[tuple[str, str, str]]:
    """(id, package, severity) of the findings a check's report lists as blocking (or as waived)."""
    return {(f["id"], f["package"], f["severity"]) for f in check["details"]["findings"]
            if bool(f.get("waived")) == waived}


def container_events(docker_client: Any, since: float, until: float) -> list[dict[str, Any]]:
    """Every container event of the Engine between two instants (epoch seconds)."""
    events = docker_client.events(since=int(since) - 1, until=int(until) + 2, filters={"type": "container"},
                                  decode=True)
    # The daemon stamps an event when it happens, on this host's clock: before the command that caused it returned.
    return [e for e in events if since <= e.get("timeNano", 0) / 1e9 <= until]


def _variant(docker_client: Any, flow: Flow, name: str) -> str:
    """The walk-through's image with one LABEL added (same filesystem, another digest), pushed to its own
    repository; returns ``REPO@sha256:...`` (the Engine keeps it for Trivy)."""
    repo = f"{flow.repo}-{name}"
    dockerfile = f"FROM {flow.launch}\nLABEL dev.imagegate.test.variant={name}\n".encode()
    docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=f"{repo}:v1", rm=True, pull=False)
    flow.tags.append(f"{repo}:v1")
    digest = None
    for line in docker_client.images.push(repo, tag="v1", stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(line["error"])
        digest = (line.get("aux") or {}).get("Digest", digest)
    assert digest, "docker push reported no digest"
    return f"{repo}@{digest}"


def _scan(flow: Flow, ref: str, kind: str) -> Path:
    path = flow.workdir / f"{kind}-{unique('r')}.json"
    proc = subprocess.run(["trivy", "image", "--cache-dir", flow.env["TRIVY_CACHE"], *OFFLINE_FLAGS, "--format",
                           TRIVY_FORMAT[kind], "--output", str(path), ref], env=flow.env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return path


def _sign(flow: Flow, ref: str) -> None:
    proc = _cli(flow, "sign", ref, "--key", "cosign.key")
    assert proc.returncode == 0, proc.stderr


def _attest(flow: Flow, ref: str, kind: str, report: Path, *, fmt: str = "bundle", key: str = "cosign.key") -> None:
    proc = _cli(flow, "attest", ref, "--key", key, "--type", kind, "--predicate", str(report), "--format", fmt)
    assert proc.returncode == 0, proc.stderr


def _cosign_ok(cosign: Path, flow: Flow, *args: str) -> bool:  # noqa: F811
    return _cosign(cosign, flow.workdir, *args, "--insecure-ignore-tlog=true", check=False).returncode == 0


_EXPECTED: dict[str, list[Finding]] = {}


def expected(ref: str, docker_client: Any) -> list[Finding]:
    if ref not in _EXPECTED:
        _EXPECTED[ref] = expected_findings(ref, docker_client)
    return _EXPECTED[ref]


# ------------------------------------------------------------------------------------------- the page itself


def test_the_page_runs_as_written(flow: Flow) -> None:
    """Every command of the page ran, in order, with the exit status the page shows; nothing was skipped."""
    text = DOC.read_text(encoding="utf-8")
    commands = [s for s in page_steps(text) if s.command]
    assert [r.step.command for r in flow.ran] == [s.command for s in commands]
    # The page walks the whole flow: key, signed build, scan, attest, verify both, check, a launch and a refusal.
    for verb in ("imagegate generate-key-pair", "IMAGE=$(imagegate build", "trivy image", "imagegate attest",
                 "imagegate verify ", "imagegate verify-attestation", "imagegate check", "imagegate run"):
        assert any(c.command.startswith(verb) for c in commands), verb
    assert sorted(r.step.exit_code for r in flow.runs_of("imagegate run")) == [0, 1]
    # The variables the run blocks read are the ones the setup block exports and this module provides.
    read = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", "\n".join(c.command for c in commands))) - {"IMAGE"}
    exported = set(re.findall(r"^export ([A-Z_][A-Z0-9_]*)=", setup_block(text), re.M))
    assert read - {"COSIGN_PASSWORD"} <= exported <= set(PROVIDED) | {"COSIGN_PASSWORD"}, (read, exported)


def _normalise(text: str, repo_path: str) -> str:
    text = re.sub(r"(?:\d{1,3}\.){3}\d{1,3}:\d+", "REGISTRY", text)
    text = text.replace(f"REGISTRY/{repo_path}", "REGISTRY/REPO")
    text = re.sub(r"sha256[:-][0-9a-f]{4,64}…?", "sha256:HEX", text)
    text = re.sub(r"\bc-[0-9a-f]{4,20}…?", "c-TAG", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z", "TIME", text)
    return re.sub(r"\d{4}-\d\d-\d\d", "DATE", text)


def test_the_output_the_page_shows_is_what_ran(flow: Flow) -> None:
    """Each output line the page shows (``…`` standing for anything) is printed by its command, with registry
    addresses, digests, content tags, times and dates left out of the comparison."""
    page_repo = re.search(r"^export REPO=\$IMAGEGATE_REGISTRY/(\S+)", setup_block(DOC.read_text()), re.M)
    assert page_repo
    test_repo = flow.repo.split("/", 1)[1]
    compared = 0
    for ran in flow.ran:
        actual = [line.strip() for line in _normalise(ran.stdout + "\n" + ran.stderr, test_repo).splitlines()]
        for line in ran.step.shown:
            line = _normalise(line, page_repo.group(1)).strip()
            if line in ("", "…"):
                continue
            pattern = re.compile(".*".join(re.escape(part) for part in line.split("…")))
            assert any(pattern.fullmatch(a) for a in actual), (
                f"docs/supply-chain.md shows {line!r} after `{ran.step.command}`, but it printed:\n"
                + "\n".join(actual))
            compared += 1
    assert compared >= 10


# ------------------------------------------------------------------------------------------- the oracles


def test_cosign_verifies_what_the_walkthrough_wrote(flow: Flow, cosign: Path, docker_client: Any) -> None:  # noqa: F811
    """The real cosign accepts the signature and the vuln attestation imagegate wrote, with the page's key only; the
    attested report is Trivy's scan of exactly this image (its findings are the ones the fixtures predict)."""
    assert _cosign_ok(cosign, flow, "verify", "--key", "cosign.pub", flow.launch)
    proc = _cosign(cosign, flow.workdir, "verify-attestation", "--key", "cosign.pub", "--insecure-ignore-tlog=true",
                   "--type", "vuln", flow.launch)
    statements = [json.loads(base64.b64decode(json.loads(line)["payload"]))
                  for line in proc.stdout.splitlines() if line.strip()]
    assert len(statements) == 1
    (statement,) = statements
    assert statement["subject"][0]["digest"]["sha256"] == flow.launch.split(":")[-1]
    assert statement["predicateType"] == TYPES["vuln"]
    assert findings_of(statement["predicate"]["scanner"]["result"]) == expected(flow.launch, docker_client)
    # A key pair that signed nothing: cosign refuses both (so the oracle can say no).
    proc = _cli(flow, "generate-key-pair", "--output-key-prefix", "stranger")
    assert proc.returncode == 0, proc.stderr
    assert not _cosign_ok(cosign, flow, "verify", "--key", "stranger.pub", flow.launch)
    assert not _cosign_ok(cosign, flow, "verify-attestation", "--key", "stranger.pub", "--type", "vuln", flow.launch)


# ------------------------------------------------------------------------------------------- the verdicts


def test_the_check_passes_with_the_waiver_and_fails_without(flow: Flow, docker_client: Any) -> None:
    (rule,) = flow.policy["vulnerabilities"]
    findings = expected(flow.launch, docker_client)
    waived_ids = {w["id"] for w in rule["waivers"]}
    refused = blocking_of(findings, rule)
    # The page demonstrates something: without the waiver the rule refuses, and the waiver covers all of it.
    assert refused and {f[0] for f in refused} <= waived_ids

    code, checks = check_json(flow, flow.image, flow.workdir / "imagegate.toml")
    assert code == 0, checks
    vulns = checks["vulnerabilities"]
    assert vulns["outcome"] == "pass" and checks["signature"]["outcome"] == "pass"
    assert listed(vulns, waived=False) == set() and listed(vulns, waived=True) == refused
    assert vulns["details"]["total"] == len(findings)
    assert vulns["details"]["counted"] == sum(1 for f in findings if f.fixed or not rule.get("only-fixable"))

    code, checks = check_json(flow, flow.image, flow.workdir / "strict.toml")  # written by the page's sed
    vulns = checks["vulnerabilities"]
    assert code == 1 and vulns["outcome"] == "fail" and listed(vulns, waived=False) == refused
    assert all(f"{i} ({s}, {p})" in vulns["message"] for i, p, s in refused), vulns["message"]

    # only-fixable: the HIGH finding with no fix (will_not_fix) is what it leaves out.
    strict = (flow.workdir / "strict.toml").read_text()
    assert "only-fixable = true" in strict
    every = flow.workdir / "every.toml"
    every.write_text(strict.replace("only-fixable = true", "only-fixable = false"))
    unfixed = blocking_of(findings, {**rule, "only-fixable": False}) - refused
    assert unfixed and all(f.status == "will_not_fix" for f in findings if (f.id, f.package, f.severity.lower())
                           in unfixed)
    code, checks = check_json(flow, flow.image, every)
    assert code == 1 and listed(checks["vulnerabilities"], waived=False) == refused | unfixed

    # An expired waiver no longer applies, and the report says so.
    expired = flow.workdir / "expired.toml"
    expired.write_text(_with_waiver_expiring((flow.workdir / "imagegate.toml").read_text(), TODAY - dt.timedelta(1)))
    code, checks = check_json(flow, flow.image, expired)
    vulns = checks["vulnerabilities"]
    assert code == 1 and listed(vulns, waived=False) == refused
    assert "expired and no longer apply" in vulns["message"] and vulns["details"]["expired_waivers"]


def test_the_launch_runs_the_checked_digest_and_a_refusal_creates_nothing(flow: Flow, docker_client: Any) -> None:
    (passed,) = [r for r in flow.runs_of("imagegate run") if r.step.exit_code == 0]
    (refused,) = [r for r in flow.runs_of("imagegate run") if r.step.exit_code == 1]
    # It ran: the job's own output on stdout, a container of exactly the checked digest created, started, exited 0.
    assert json.loads(passed.stdout)["file"] == "/app/job.py"
    events = [e for e in container_events(docker_client, passed.started, passed.ended)
              if e["Actor"]["Attributes"].get("image") == flow.launch]
    assert {"create", "start", "die"} <= {e["Action"] for e in events}, events
    assert {e["Actor"]["Attributes"].get("exitCode") for e in events if e["Action"] == "die"} == {"0"}
    (created,) = [e for e in events if e["Action"] == "create"]
    assert created["Actor"]["Attributes"]["imagegate.dev/pinned"] == flow.image  # the reference that was checked
    # Refused: no container of this repository was created (nor anything else by this command).
    assert "nothing was created" in refused.stderr
    leaked = [e for e in container_events(docker_client, refused.started, refused.ended)
              if flow.repo in e["Actor"]["Attributes"].get("image", "")]
    assert not leaked, (refused.started, refused.ended, leaked)


@pytest.mark.parametrize("case", ["unsigned", "signed-not-attested", "attested-by-another-key", "stale-scan"])
def test_refused_images_create_nothing(flow: Flow, docker_client: Any, cosign: Path, case: str) -> None:  # noqa: F811
    """The page's policy refuses, and `imagegate run` creates no container for: an unsigned image; a signed one with
    no scan attested; one whose scan was attested with a key the policy does not list; one whose newest signed scan is
    older than max-age. cosign agrees on what is (not) signed and attested."""
    ref = _variant(docker_client, flow, case)
    if case != "unsigned":
        _sign(flow, ref)
    assert _cosign_ok(cosign, flow, "verify", "--key", "cosign.pub", ref) == (case != "unsigned")
    if case == "attested-by-another-key":
        if not (flow.workdir / "ci-other.pub").exists():
            assert _cli(flow, "generate-key-pair", "--output-key-prefix", "ci-other").returncode == 0
        _attest(flow, ref, "vuln", _scan(flow, ref, "vuln"), key="ci-other.key")
        assert _cosign_ok(cosign, flow, "verify-attestation", "--key", "ci-other.pub", "--type", "vuln", ref)
    if case == "stale-scan":  # the real scan, its times moved back past the page's max-age (7d)
        report = _scan(flow, ref, "vuln")
        predicate = json.loads(report.read_text())
        old = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
        predicate["metadata"] = {"scanStartedOn": old, "scanFinishedOn": old}
        report.write_text(json.dumps(predicate))
        _attest(flow, ref, "vuln", report)
    assert _cosign_ok(cosign, flow, "verify-attestation", "--key", "cosign.pub", "--type", "vuln", ref) == (
        case == "stale-scan")

    code, checks = check_json(flow, ref, flow.workdir / "imagegate.toml")
    signature, vulns = checks["signature"], checks["vulnerabilities"]
    assert code == 1 and signature["outcome"] == ("fail" if case == "unsigned" else "pass"), signature
    assert vulns["outcome"] == "fail", vulns
    reason = {"unsigned": "no verified vulnerability attestation",
              "signed-not-attested": "no verified vulnerability attestation",
              "attested-by-another-key": "does not verify with any of the keys",
              "stale-scan": "the newest verified scan is too old"}[case]
    assert reason in vulns["message"], vulns["message"]

    name = unique("it-flow-refused")
    t0 = dt.datetime.now(dt.timezone.utc).timestamp()
    proc = _cli(flow, "run", ref, "--policy", "imagegate.toml", "--name", name)
    t1 = dt.datetime.now(dt.timezone.utc).timestamp()
    assert proc.returncode == 1 and "nothing was created" in proc.stderr, proc.stderr
    assert proc.stdout == ""
    repo = ref.split("@")[0]
    assert not [e for e in container_events(docker_client, t0, t1)
                if e["Actor"]["Attributes"].get("name") == name or repo in e["Actor"]["Attributes"].get("image", "")]
    assert docker_client.containers.list(all=True, filters={"name": name}) == []


@pytest.mark.parametrize("fmt", ["bundle", "legacy"])
@pytest.mark.parametrize("kind", ["vuln", "trivy", "sarif"])
def test_every_report_trivy_writes_is_judged_the_same(flow: Flow, docker_client: Any, cosign: Path,  # noqa: F811
                                                     kind: str, fmt: str) -> None:
    """Trivy's cosign-vuln predicate, its JSON and its SARIF, attested with `imagegate attest --type` in either
    format, on an image with the walk-through's filesystem: the real cosign accepts each attestation, and the check
    finds the same findings and gives the same verdicts as the fixtures predict."""
    ref = _variant(docker_client, flow, f"{kind}-{fmt}")
    _sign(flow, ref)
    _attest(flow, ref, kind, _scan(flow, ref, kind), fmt=fmt)
    legacy = ["--new-bundle-format=false"] if fmt == "legacy" else []
    assert _cosign_ok(cosign, flow, "verify-attestation", "--key", "cosign.pub", "--type", TYPES[kind], *legacy, ref)

    (rule,) = flow.policy["vulnerabilities"]
    findings = expected(ref, docker_client)
    assert findings == expected(flow.launch, docker_client)  # a LABEL changes no package
    refused = blocking_of(findings, rule)
    # Judged without max-age: Trivy's SARIF carries no scan time (see below).
    strict = (flow.workdir / "strict.toml").read_text()
    no_age = flow.workdir / f"no-age-{kind}-{fmt}.toml"
    no_age.write_text(re.sub(r"^max-age = .*$", "", strict, flags=re.M))
    code, checks = check_json(flow, ref, no_age)
    vulns = checks["vulnerabilities"]
    assert code == 1 and vulns["outcome"] == "fail" and listed(vulns, waived=False) == refused, vulns
    assert vulns["details"]["attestation"]["predicate_type"] == TYPES[kind]
    assert vulns["details"]["attestation"]["where"].startswith(fmt)
    assert vulns["details"]["total"] == len(findings)
    assert vulns["details"]["counted"] == sum(1 for f in findings if f.fixed or not rule.get("only-fixable"))

    # The page's policy (waiver, max-age): a report with a scan time passes; SARIF, which has none, cannot satisfy
    # max-age and is refused for that reason alone.
    code, checks = check_json(flow, ref, flow.workdir / "imagegate.toml")
    vulns = checks["vulnerabilities"]
    if kind == "sarif":
        assert code == 1 and "has no scan time" in vulns["message"], vulns["message"]
    else:
        assert code == 0 and listed(vulns, waived=True) == refused and listed(vulns, waived=False) == set()
