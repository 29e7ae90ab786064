"""`imagegate sign` / `attest` / `generate-key-pair` against the real local registry (distribution 2.8: no referrers
API, so bundles go through the fallback tag), with the REAL cosign as the oracle: cosign v3.1.3 must verify what
imagegate writes in both formats, cosign v2.6.5 what it writes in the legacy format, and keys must work both ways.

Needs the local stack (scripts/stack.py up) and cosign (built on first use from the Go module proxy;
``IMAGEGATE_COSIGN`` / ``IMAGEGATE_COSIGN_V2`` point at builds of your own). Under CI=true a missing stack or a
cosign that cannot be built is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, Stack, _unavailable, run_cli, unique
from tests.integration.test_cosign_stack import _cosign, _env
from tests.support.oci import make_image
from tests.support.push import push_image

pytestmark = pytest.mark.integration

VULN_TYPE = "https://cosign.sigstore.dev/attestation/vuln/v1"
TYPES = {"vuln": VULN_TYPE, "trivy": "https://imagegate.dev/attestation/trivy-report/v2",
         "grype": "https://imagegate.dev/attestation/grype-report/v1",
         "sarif": "https://imagegate.dev/attestation/sarif/v2.1.0"}


def _build(name: str, variable: str) -> Path:
    given = os.environ.get(variable)
    if given:
        if not os.access(given, os.X_OK):
            _unavailable(f"cosign at {variable}={given}")
        return Path(given)
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from localstack.cosign_tools import ensure_cosign
        from localstack.host import StackError
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    try:
        return ensure_cosign(name)
    except StackError as exc:
        _unavailable(f"{name} (building it from the Go module proxy failed: {exc})")
        raise  # pragma: no cover


@pytest.fixture(scope="session")
def cosign3() -> Path:
    return _build("cosign", "IMAGEGATE_COSIGN")


@pytest.fixture(scope="session")
def cosign2() -> Path:
    return _build("cosign-v2", "IMAGEGATE_COSIGN_V2")


@pytest.fixture(scope="module")
def keys(cosign3: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Key pairs: ``cosign`` made by cosign generate-key-pair, ``imagegate`` by imagegate generate-key-pair,
    ``other`` (signs nothing), and P-384 / RSA / Ed25519 keys imported into cosign's format by cosign itself."""
    directory = tmp_path_factory.mktemp("sign-keys")
    _cosign(cosign3, directory, "generate-key-pair")
    _cosign(cosign3, directory, "generate-key-pair", "--output-key-prefix", "other")
    proc = run_cli("generate-key-pair", "--output-key-prefix", str(directory / "imagegate"),
                   env={"COSIGN_PASSWORD": "s3cret"})
    assert proc.returncode == 0, proc.stderr
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    for name, key in (("p384", ec.generate_private_key(ec.SECP384R1())),
                      ("rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
                      ("ed25519", ed25519.Ed25519PrivateKey.generate())):
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        (directory / f"{name}.pem").write_bytes(pem)
        _cosign(cosign3, directory, "import-key-pair", "--key", f"{name}.pem", "--output-key-prefix", name)
    return {name: directory / name for name in ("cosign", "other", "imagegate", "p384", "rsa", "ed25519")}


def _push(stack: Stack) -> tuple[str, str]:
    repo = f"cosign-sign/{unique('img')}"
    digest = push_image(stack.registry_url, repo, make_image(user="1000"), tag="v1")
    return f"{stack.registry}/{repo}", digest


def _sign(ref: str, key: Path, *extra: str, password: str = "") -> dict:
    proc = run_cli("sign", ref, "--key", f"{key}.key", "--json", *extra, env={"COSIGN_PASSWORD": password})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _cosign_ok(cosign: Path, key: Path, *args: str) -> bool:
    proc = _cosign(cosign, key.parent, *args, "--key", f"{key}.pub", "--insecure-ignore-tlog=true", check=False)
    return proc.returncode == 0


@pytest.mark.parametrize("fmt", ["bundle", "legacy"])
@pytest.mark.parametrize("name", ["cosign", "p384", "rsa", "ed25519"])
def test_cosign_verifies_what_imagegate_signs(stack: Stack, cosign3: Path, keys: dict[str, Path], name: str,
                                              fmt: str) -> None:
    repo, digest = _push(stack)
    out = _sign(f"{repo}:v1", keys[name], "--format", fmt)
    assert out["digest"] == digest and out["written"] and out["pinned"].endswith(f":v1@{digest}")
    ref = f"{repo}@{digest}"
    assert _cosign_ok(cosign3, keys[name], "verify", ref)
    assert not _cosign_ok(cosign3, keys["other"], "verify", ref)
    proc = run_cli("verify", ref, "--key", f"{keys[name]}.pub", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["signatures"][0]["format"] == fmt, proc.stdout
    again = _sign(ref, keys[name], "--format", fmt)
    assert not again["written"]  # no duplicate


def test_cosign_v2_verifies_imagegate_legacy_signature(stack: Stack, cosign2: Path, keys: dict[str, Path]) -> None:
    repo, digest = _push(stack)
    _sign(f"{repo}@{digest}", keys["cosign"], "--format", "legacy")
    assert _cosign_ok(cosign2, keys["cosign"], "verify", f"{repo}@{digest}")
    assert not _cosign_ok(cosign2, keys["other"], "verify", f"{repo}@{digest}")


def test_imagegate_verifies_what_cosign_v2_writes_by_default(stack: Stack, cosign2: Path, keys: dict[str, Path],
                                                              tmp_path: Path) -> None:
    """cosign v2.6.5's defaults (the legacy .sig and .att tags), offline: imagegate verifies the signature and the
    vulnerability attestation, and refuses them with a key that did not sign."""
    repo, digest = _push(stack)
    ref = f"{repo}@{digest}"
    _cosign(cosign2, keys["cosign"].parent, "sign", "--key", f"{keys['cosign']}.key", "--tlog-upload=false",
            "--yes", ref)
    stamp = "2026-11-30T00:00:00Z"
    predicate = tmp_path / "vuln.json"
    predicate.write_text(json.dumps({
        "scanner": {"uri": "pkg:github/aquasecurity/trivy@0.74.0", "version": "0.74.0",
                    "result": {"SchemaVersion": 2, "ArtifactName": ref, "ArtifactType": "container_image",
                               "Results": []}},
        "metadata": {"scanStartedOn": stamp, "scanFinishedOn": stamp}}))
    _cosign(cosign2, keys["cosign"].parent, "attest", "--key", f"{keys['cosign']}.key", "--tlog-upload=false",
            "--yes", "--type", "vuln", "--predicate", str(predicate), ref)
    tags = _tags(stack, repo)
    assert f"{digest.replace(':', '-')}.sig" in tags and f"{digest.replace(':', '-')}.att" in tags, tags
    proc = run_cli("verify", ref, "--key", f"{keys['cosign']}.pub", "--json")
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and [c["format"] for c in out["signatures"]] == ["legacy"], proc.stdout
    proc = run_cli("verify-attestation", ref, "--key", f"{keys['cosign']}.pub", "--type", "vuln", "--json")
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and [s["format"] for s in out["statements"]] == ["legacy"], proc.stdout
    for command in (("verify",), ("verify-attestation", "--type", "vuln")):
        proc = run_cli(command[0], ref, "--key", f"{keys['other']}.pub", *command[1:])
        assert proc.returncode == 1, proc.stdout + proc.stderr


def _tags(stack: Stack, repo: str) -> list[str]:
    import urllib.request

    name = repo.split("/", 1)[1]
    with urllib.request.urlopen(f"{stack.registry_url}/v2/{name}/tags/list", timeout=10) as reply:
        return json.loads(reply.read())["tags"]


def test_imagegate_signature_appends_to_cosigns(stack: Stack, cosign3: Path, keys: dict[str, Path]) -> None:
    repo, digest = _push(stack)
    ref = f"{repo}@{digest}"
    for legacy in (True, False):
        _cosign(cosign3, keys["other"].parent, "sign", "--key", f"{keys['other']}.key", "--use-signing-config=false",
                "--tlog-upload=false", "--yes", *(["--new-bundle-format=false"] if legacy else []), ref)
        _sign(ref, keys["cosign"], "--format", "legacy" if legacy else "bundle")
    for key in ("other", "cosign"):  # both signatures stand, in both formats, for cosign and for imagegate
        assert _cosign_ok(cosign3, keys[key], "verify", ref)
        assert _cosign_ok(cosign3, keys[key], "verify", "--new-bundle-format=false", ref)
    proc = run_cli("verify", ref, "--key", f"{keys['cosign']}.pub", "--key", f"{keys['other']}.pub",
                   "--required", "2", "--format", "legacy")
    assert proc.returncode == 0, proc.stdout


def test_keys_work_both_ways(stack: Stack, cosign3: Path, keys: dict[str, Path]) -> None:
    # a key imagegate made signs with cosign; a key cosign made signs with imagegate (P-256 both)
    repo, digest = _push(stack)
    ref = f"{repo}@{digest}"
    env = dict(_env(keys["imagegate"].parent), COSIGN_PASSWORD="s3cret")  # imagegate's key has a password
    proc = subprocess.run([str(cosign3), "sign", "--key", f"{keys['imagegate']}.key", "--use-signing-config=false",
                           "--tlog-upload=false", "--yes", ref], env=env, capture_output=True, text=True, timeout=120,
                          cwd=keys["imagegate"].parent)
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert run_cli("verify", ref, "--key", f"{keys['imagegate']}.pub").returncode == 0
    wrong = run_cli("sign", ref, "--key", f"{keys['imagegate']}.key", env={"COSIGN_PASSWORD": "nope"})
    assert wrong.returncode == 2 and "password does not decrypt" in wrong.stderr


def _reports(digest: str, repo: str) -> dict[str, dict]:
    trivy = {"SchemaVersion": 2, "CreatedAt": "2026-01-01T00:00:00Z", "ArtifactName": f"{repo}@{digest}",
             "ArtifactType": "container_image", "Metadata": {"RepoDigests": [f"{repo}@{digest}"]},
             "Results": [{"Target": "x", "Class": "os-pkgs", "Type": "debian", "Vulnerabilities": [
                 {"VulnerabilityID": "CVE-2026-0001", "PkgName": "libc6", "InstalledVersion": "1",
                  "FixedVersion": "2", "Severity": "HIGH"}]}]}
    grype = {"matches": [{"vulnerability": {"id": "CVE-2026-0001", "severity": "High",
                                            "fix": {"state": "fixed", "versions": ["2"]}},
                          "artifact": {"name": "libc6", "version": "1"}}],
             "source": {"type": "image", "target": {"userInput": f"{repo}@{digest}", "manifestDigest": digest}},
             "descriptor": {"name": "grype", "version": "0.80.0", "timestamp": "2026-01-01T00:00:00Z"}}
    sarif = {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "Trivy", "rules": [
        {"id": "CVE-2026-0001", "properties": {"tags": ["vulnerability", "security", "HIGH"],
                                               "security-severity": "7.5"},
         "help": {"text": "Vulnerability CVE-2026-0001\nSeverity: HIGH\nFixed Version: 2"}}]}},
        "results": [{"ruleId": "CVE-2026-0001", "ruleIndex": 0, "level": "error",
                     "message": {"text": "Package: libc6\nInstalled Version: 1\nVulnerability CVE-2026-0001\n"
                                         "Severity: HIGH\nFixed Version: 2"}}]}]}
    vuln = {"scanner": {"uri": "pkg:github/aquasecurity/trivy@v0.74.0", "version": "0.74.0",
                        "db": {"uri": "", "version": ""}, "result": trivy},
            "metadata": {"scanStartedOn": "2026-01-01T00:00:00Z", "scanFinishedOn": "2026-01-01T00:00:01Z"}}
    return {"vuln": vuln, "trivy": trivy, "grype": grype, "sarif": sarif}


@pytest.mark.parametrize("fmt", ["bundle", "legacy"])
def test_cosign_verifies_what_imagegate_attests(stack: Stack, cosign3: Path, keys: dict[str, Path], fmt: str,
                                                tmp_path: Path) -> None:
    repo, digest = _push(stack)
    ref = f"{repo}@{digest}"
    legacy = ["--new-bundle-format=false"] if fmt == "legacy" else []
    for kind, report in _reports(digest, repo).items():
        path = tmp_path / f"{kind}.json"
        path.write_text(json.dumps(report))
        proc = run_cli("attest", f"{repo}:v1", "--key", f"{keys['cosign']}.key", "--type", kind, "--predicate",
                       str(path), "--format", fmt, "--json", env={"COSIGN_PASSWORD": ""})
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["predicate_type"] == TYPES[kind]
        assert _cosign_ok(cosign3, keys["cosign"], "verify-attestation", "--type", TYPES[kind], *legacy, ref), kind
        assert not _cosign_ok(cosign3, keys["other"], "verify-attestation", "--type", TYPES[kind], *legacy, ref)
    # A report about another image is refused before anything is written.
    other = json.loads((tmp_path / "trivy.json").read_text())
    other["Metadata"]["RepoDigests"] = [f"{repo}@sha256:{'1' * 64}"]
    (tmp_path / "other.json").write_text(json.dumps(other))
    proc = run_cli("attest", ref, "--key", f"{keys['cosign']}.key", "--type", "trivy", "--predicate",
                   str(tmp_path / "other.json"), env={"COSIGN_PASSWORD": ""})
    assert proc.returncode == 2 and "about another image" in proc.stderr


def test_build_signs_and_attests_once(stack: Stack, cosign3: Path, keys: dict[str, Path], tmp_path: Path) -> None:
    """`imagegate build --sign KEY --attest-vulns REPORT`: signed after the push; an up-to-date build adds nothing."""
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {stack.busybox}\nRUN echo {unique('b')} > /id\nUSER 1000\n")
    (context / ".dockerignore").write_text(".git\n")
    report = tmp_path / "vuln.json"
    report.write_text(json.dumps(_reports("sha256:" + "0" * 64, "x")["vuln"] | {}))
    vuln = json.loads(report.read_text())
    vuln["scanner"]["result"]["Metadata"] = {}  # a report naming no image
    vuln["scanner"]["result"]["ArtifactName"] = "ctx"
    report.write_text(json.dumps(vuln))
    repository = f"{stack.registry}/cosign-sign/{unique('built')}"
    args = ("build", str(context), "--repository", repository, "--sign", f"{keys['cosign']}.key",
            "--attest-vulns", str(report), "--json")
    runs = [run_cli(*args, env={"COSIGN_PASSWORD": ""}) for _ in range(2)]
    assert all(proc.returncode == 0 for proc in runs), runs[-1].stderr
    first, second = (json.loads(proc.stdout) for proc in runs)
    assert first["built"] and not second["built"]
    assert [w["written"] for w in first["signed"]] == [True, True]
    assert [w["written"] for w in second["signed"]] == [False, False]  # no duplicate signature or attestation
    ref = f"{repository}@{first['digest']}"
    assert _cosign_ok(cosign3, keys["cosign"], "verify", ref)
    assert _cosign_ok(cosign3, keys["cosign"], "verify-attestation", "--type", "vuln", ref)
