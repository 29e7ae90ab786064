"""Vulnerability attestations written by the REAL cosign v3.1.3 (`cosign attest --type vuln|<URI>`, offline, in both
formats: the v3 bundle and `--new-bundle-format=false`) into the real local registry (distribution: no referrers API,
so bundles go through the fallback tag), then read by `imagegate verify-attestation` and the `vulnerabilities` check
of `imagegate check`, which pass or refuse as the policy says; `cosign verify-attestation` is the oracle that the
attestation is valid. The reports are the scanners' own golden files (tests/fixtures/vulns), dated now.

Needs the local stack and cosign (tests/integration/test_cosign_stack.py builds it); under CI=true a missing one
fails.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stack, run_cli, unique
from tests.integration.test_cosign_stack import _cosign, cosign, keys  # noqa: F401 - the real cosign and two key pairs
from tests.support.oci import make_image
from tests.support.push import push_image

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vulns"
TRIVY_URI = "https://imagegate.dev/attestation/trivy-report/v2"
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _predicate(kind: str, directory: Path) -> Path:
    """A predicate file as a CI job has it: Trivy's cosign-vuln output, or a Trivy JSON report; scanned just now."""
    stamp = NOW.isoformat().replace("+00:00", "Z")
    if kind == "vuln":
        doc: Any = json.loads((FIXTURES / "cosign-vuln-trivy-debian-buster.json").read_text())
        doc["metadata"] = {"scanStartedOn": stamp, "scanFinishedOn": stamp}
        report = doc["scanner"]["result"]
    else:
        doc = report = json.loads((FIXTURES / "trivy-debian-buster.json").read_text())
        doc["CreatedAt"] = stamp
    # Trivy's golden scanned another image and names its config; imagegate refuses a report about another image
    # (tests/unit/test_cosign_attest.py), so this one names none, as a scan of an image archive without ids would.
    report.get("Metadata", {}).pop("ImageID", None)
    path = directory / f"{kind}-{unique('p')}.json"
    path.write_text(json.dumps(doc))
    return path


def _attest(cosign: Path, key: Path, ref: str, kind: str, *, legacy: bool) -> None:  # noqa: F811
    predicate = _predicate(kind, key.parent)
    args = ["attest", "--key", str(key), "--type", "vuln" if kind == "vuln" else TRIVY_URI, "--predicate",
            str(predicate), "--use-signing-config=false", "--tlog-upload=false", "--yes"]
    if legacy:
        args.append("--new-bundle-format=false")
    _cosign(cosign, key.parent, *args, ref)


def _policy(directory: Path, pub: Path, max_severity: str, extra: str = "") -> Path:
    path = directory / f"policy-{unique('p')}.toml"
    path.write_text(f'[[vulnerabilities]]\nimages = ["**"]\nkeys = ["{pub}"]\nmax-severity = "{max_severity}"\n'
                    f'max-age = "1d"\n{extra}')
    return path


def _verify(ref: str, pub: Path, kind: str, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = run_cli("verify-attestation", ref, "--key", str(pub), "--type", kind if kind == "vuln" else "trivy",
                   "--json", *extra)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "bundle"])
@pytest.mark.parametrize("kind", ["vuln", "trivy"])
def test_what_cosign_attests_imagegate_verifies_and_judges(stack: Stack, cosign: Path, keys: dict[str, Path],  # noqa: F811
                                                           tmp_path: Path, legacy: bool, kind: str) -> None:
    repo = f"attest/{unique('img')}"
    digest = push_image(stack.registry_url, repo, make_image(user="1000"), tag="1.0.0")
    ref = f"{stack.registry}/{repo}@{digest}"
    _attest(cosign, keys["good.key"], ref, kind, legacy=legacy)

    # the oracle: cosign itself accepts the attestation with the good key
    oracle = _cosign(cosign, keys["good"].parent, "verify-attestation", "--key", str(keys["good"]),
                     "--insecure-ignore-tlog=true", "--type", "vuln" if kind == "vuln" else TRIVY_URI, ref, check=False)
    assert oracle.returncode == 0, oracle.stderr[-1500:]

    code, out = _verify(ref, keys["good"], kind)
    assert code == 0, out["reason"]
    assert [s["format"] for s in out["statements"]] == ["legacy" if legacy else "bundle"]
    assert out["statements"][0]["key"] == str(keys["good"])

    code, out = _verify(ref, keys["other"], kind)  # a key that never attested anything
    assert code == 1 and "does not verify with any of the keys" in out["reason"]
    code, out = _verify(ref, keys["good"], "grype" if kind == "vuln" else "vuln")  # another predicate type
    assert code == 1 and out["statements"] == []

    # the thresholds: the report holds a fixable CRITICAL (CVE-2019-18224 in libidn2-0)
    code, out = _verify(ref, keys["good"], kind, "--policy", str(_policy(tmp_path, keys["good"], "high")))
    assert code == 1 and not out["passed"] and "CVE-2019-18224" in out["policy"][0]["message"]
    code, out = _verify(ref, keys["good"], kind, "--policy", str(_policy(tmp_path, keys["good"], "critical")))
    assert code == 0 and out["passed"], out

    # the gate: imagegate check refuses, and lists the finding that decided; a dated waiver lets it through
    proc = run_cli("check", ref, "--policy", str(_policy(tmp_path, keys["good"], "high")), "--json")
    checks = {c["check"]: c for c in json.loads(proc.stdout)["checks"]}
    assert proc.returncode == 1 and checks["vulnerabilities"]["outcome"] == "fail", proc.stdout
    assert checks["vulnerabilities"]["details"]["findings"][0]["id"] == "CVE-2019-18224"
    waiver = ('[[vulnerabilities.waivers]]\nid = "CVE-2019-18224"\nreason = "not reachable; SEC-1"\n'
              f'expires = {(NOW + dt.timedelta(days=30)).date()}\n')
    proc = run_cli("check", ref, "--policy", str(_policy(tmp_path, keys["good"], "high", waiver)))
    assert proc.returncode == 0 and "1 waived" in proc.stdout, proc.stdout + proc.stderr


def test_an_image_without_attestation_is_refused(stack: Stack, keys: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    repo = f"attest/{unique('img')}"
    digest = push_image(stack.registry_url, repo, make_image(user="1000"), tag="1.0.0")
    ref = f"{stack.registry}/{repo}@{digest}"
    code, out = _verify(ref, keys["good"], "vuln")
    assert code == 1 and out["statements"] == [] and "no attestation of" in out["reason"]
    proc = run_cli("check", ref, "--policy", str(_policy(tmp_path, keys["good"], "critical")))
    assert proc.returncode == 1 and "no verified vulnerability attestation" in proc.stdout, proc.stdout


def test_an_attestation_of_another_image_is_refused(stack: Stack, cosign: Path, keys: dict[str, Path]) -> None:  # noqa: F811
    """cosign attests image A; the .att manifest is copied onto image B's tag: the statement's subject is A."""
    from tests.integration.test_cosign_stack import _copy_manifest

    repo = f"attest/{unique('img')}"
    one = push_image(stack.registry_url, repo, make_image(user="1000"), tag="1.0.0")
    two = push_image(stack.registry_url, repo, make_image(user="2000"), tag="2.0.0")
    _attest(cosign, keys["good.key"], f"{stack.registry}/{repo}@{one}", "vuln", legacy=True)
    _copy_manifest(stack, repo, one.replace(":", "-") + ".att", two.replace(":", "-") + ".att",
                   "application/vnd.oci.image.manifest.v1+json")
    code, out = _verify(f"{stack.registry}/{repo}@{two}", keys["good"], "vuln")
    assert code == 1 and "an attestation for another image" in out["reason"]
