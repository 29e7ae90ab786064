"""The real Trivy v0.74.0 (built from the Go module proxy, scripts/localstack/trivy_tools.py) scanning the local
stack's images fully offline against the fixture database (tests/fixtures/trivy/advisories.json): the python base
image (debootstrap bookworm, a real dpkg status) and the example job (its text-unidecode wheel).

What each scan must find is derived by tests/support/trivy.py from the fixture file and the image's own package
databases, never written down: the exact findings (id, package, installed version, fixed version, severity,
status), none of the negative controls, the same ids in all three formats, and the same findings with no network.

Needs the local stack (scripts/stack.py up) and Trivy (built on first use, 7-10 minutes; ``IMAGEGATE_TRIVY``
points at one you built). Under CI=true a missing stack or a Trivy that cannot be built is a failure.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from datetime import datetime
from typing import Any, Callable, Iterator

import pytest

from tests.integration.conftest import ROOT, Stack, _unavailable, unique
from tests.support.trivy import (
    expected_findings,
    findings_of,
    fixture_ids,
    image_contents,
    load_fixtures,
    no_network_prefix,
    normalise_python_name,
    trivy_binary,
    trivy_scan,
)

pytestmark = pytest.mark.integration

WORDCOUNT = ROOT / "example_dags" / "jobs" / "wordcount"


@pytest.fixture(scope="module")
def trivy(stack: Stack) -> Callable[..., bytes]:
    """``trivy_scan`` against the stack's Docker Engine (its DOCKER_HOST)."""
    trivy_binary()
    return functools.partial(trivy_scan, docker_host=stack.env.get("DOCKER_HOST"))


@pytest.fixture(scope="module")
def python_base(stack: Stack, docker_client: Any) -> str:
    """The python base image as the local engine holds it (``imagegate/python:...``)."""
    local = stack.env.get("IMAGEGATE_PYTHON_LOCAL_IMAGE")
    if not local or not stack.python:
        _unavailable("the python base image (IMAGEGATE_PYTHON_LOCAL_IMAGE)")
    docker_client.images.get(local)  # raises when the stack lost it
    return str(local)


@pytest.fixture(scope="module")
def job_image(stack: Stack, docker_client: Any) -> Iterator[str]:
    """The example job built FROM the pinned python base and pushed; yields ``REPO@sha256:...`` (the engine keeps
    it, by that digest, until the module ends)."""
    base = stack.env.get("IMAGEGATE_PYTHON_IMAGE_DIGEST")
    if not base:
        _unavailable("the python base image (IMAGEGATE_PYTHON_IMAGE_DIGEST)")
    name = f"{stack.registry}/it-trivy/wordcount"
    tag = unique("scan")
    docker_client.images.build(path=str(WORDCOUNT), tag=f"{name}:{tag}", buildargs={"BASE": base}, rm=True,
                               pull=False)
    digest = None
    for line in docker_client.images.push(name, tag=tag, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(line["error"])
        digest = (line.get("aux") or {}).get("Digest", digest)
    assert digest, "docker push reported no digest"
    yield f"{name}@{digest}"
    docker_client.images.remove(f"{name}:{tag}", force=True)


def scan_json(scan: Callable[..., bytes], image: str, **kwargs: Any) -> dict[str, Any]:
    report = json.loads(scan(image, "json", **kwargs))
    assert report["SchemaVersion"] == 2
    return report


def test_base_image_reports_exactly_the_fixtures_it_really_hits(trivy: Callable[..., bytes], python_base: str,
                                                                docker_client: Any) -> None:
    report = scan_json(trivy, python_base)
    contents = image_contents(python_base, docker_client)
    expected = expected_findings(python_base, docker_client)
    found = findings_of(report)
    assert found == expected
    # The OS Trivy detected is the one the image's own files name.
    assert report["Metadata"]["OS"]["Family"] == contents.os_id == "debian"
    assert report["Metadata"]["OS"]["Name"] == contents.debian_version
    # Every Debian fixture that is not a negative control hits this image, through the binary packages built
    # from its source package (e.g. libssl3 and openssl from openssl); no control does.
    fixtures = load_fixtures()
    debian_ids = {v["id"] for v in fixtures["vulnerabilities"] if not v.get("control")
                  and all(a["bucket"].startswith("debian ") for a in v["advisories"])}
    assert debian_ids and {f.id for f in found} == debian_ids
    assert not {f.id for f in found} & fixture_ids(control=True)
    installed = {p.name: p.version for p in contents.deb}
    for finding in found:
        assert installed[finding.package] == finding.installed
    # Fixable and unfixable findings both come through, with the status the advisory gave.
    assert {f.status for f in found if not f.fixed} == {
        a["status"] for v in fixtures["vulnerabilities"] for a in v["advisories"]
        if v["id"] in debian_ids and not a.get("fixed_version")}
    assert all(f.status == "fixed" for f in found if f.fixed)


def test_example_job_reports_its_python_dependency_too(trivy: Callable[..., bytes], job_image: str, python_base: str,
                                                       docker_client: Any) -> None:
    report = scan_json(trivy, job_image)
    found = findings_of(report)
    assert found == expected_findings(job_image, docker_client)
    assert {f.id for f in found} == fixture_ids(control=False)  # every fixture but the controls
    # The Python findings name the distributions the job's wheels installed (their METADATA), as pip names them.
    pip_packages = {a["package"] for v in load_fixtures()["vulnerabilities"] if not v.get("control")
                    for a in v["advisories"] if a["bucket"].startswith("pip::")}
    python = [r for r in report["Results"] if r.get("Type") == "python-pkg"]
    assert python and {v["PkgName"] for r in python for v in r.get("Vulnerabilities") or []} == {
        name for name, _ in image_contents(job_image, docker_client).python
        if normalise_python_name(name) in pip_packages}
    # The job adds findings to its base's; it removes none.
    assert set(findings_of(scan_json(trivy, python_base))) < set(found)


def test_the_three_formats_agree(trivy: Callable[..., bytes], job_image: str) -> None:
    report = scan_json(trivy, job_image)
    ids = {f.id for f in findings_of(report)}
    assert ids

    predicate = json.loads(trivy(job_image, "cosign-vuln"))
    scanner = predicate["scanner"]
    assert scanner["uri"].startswith("pkg:github/aquasecurity/trivy")
    assert scanner["version"] == "0.74.0"  # the -ldflags version of our build, not "dev"
    started = datetime.fromisoformat(predicate["metadata"]["scanStartedOn"].replace("Z", "+00:00"))
    finished = datetime.fromisoformat(predicate["metadata"]["scanFinishedOn"].replace("Z", "+00:00"))
    assert started <= finished
    assert findings_of(scanner["result"]) == findings_of(report)

    sarif = json.loads(trivy(job_image, "sarif"))
    assert sarif["version"] == "2.1.0"
    (run,) = sarif["runs"]
    assert run["tool"]["driver"]["name"] == "Trivy" and run["tool"]["driver"]["version"] == "0.74.0"
    assert {r["ruleId"] for r in run["results"]} == ids
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} == ids


def test_the_scan_needs_no_network(trivy: Callable[..., bytes], job_image: str) -> None:
    prefix, why = no_network_prefix()
    if prefix is None:
        pytest.skip(f"cannot run Trivy without a network here: {why}")
    interfaces = subprocess.run([*prefix, "cat", "/proc/net/dev"], capture_output=True, text=True, check=True).stdout
    assert {line.split(":")[0].strip() for line in interfaces.splitlines()[2:]} == {"lo"}  # nothing but loopback
    assert findings_of(scan_json(trivy, job_image, no_network=True)) == findings_of(scan_json(trivy, job_image))


def test_the_expected_findings_use_dpkgs_version_order(python_base: str, docker_client: Any) -> None:
    """The helper's Debian version order agrees with dpkg's own on every comparison the fixtures make."""
    if shutil.which("dpkg") is None:
        pytest.skip("dpkg is not installed on this host (the comparison oracle)")
    from tests.support.trivy import dpkg_compare

    contents = image_contents(python_base, docker_client)
    pairs = {(p.source_version, a["fixed_version"]) for v in load_fixtures()["vulnerabilities"]
             for a in v["advisories"] if a.get("fixed_version") and a["bucket"].startswith("debian ")
             for p in contents.deb if p.source == a["package"]}
    assert pairs
    for installed, fixed in sorted(pairs):
        dpkg_says = subprocess.run(["dpkg", "--compare-versions", installed, "lt", fixed]).returncode == 0
        assert (dpkg_compare(installed, fixed) < 0) == dpkg_says, (installed, fixed)
