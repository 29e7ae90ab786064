"""Real Trivy output for the tests: Trivy v0.74.0 scanning an image of the local Docker Engine fully offline against
the fixture database built from tests/fixtures/trivy/advisories.json (scripts/localstack/trivy_tools.py).

    report = trivy_scan("imagegate/python:3.11.2-bookworm")                 # Trivy JSON, bytes
    predicate = trivy_scan(image, fmt="cosign-vuln")                        # the cosign vuln predicate
    assert findings_of(json.loads(report)) == expected_findings(image)      # the fixtures this image really hits

:func:`expected_findings` derives what a correct scanner must report from the fixture file and the image's own
package databases (``/var/lib/dpkg/status``, ``*.dist-info/METADATA``), read through the Docker Engine: no
finding is written down anywhere, so a fixture edit or a Debian point release changes both sides together.

The binary is ``$IMAGEGATE_TRIVY`` when set, else the cached build (built on first use, 7-10 minutes). Where it
or the Docker Engine is missing the caller skips, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "trivy" / "advisories.json"
FORMATS = ("json", "cosign-vuln", "sarif")
# Offline: the fixture database only (never downloaded), no Java DB, no registry/network lookups, no version
# check, no telemetry; the image from the Docker Engine only (no fallback to a registry).
OFFLINE_FLAGS = ("--skip-db-update", "--skip-java-db-update", "--offline-scan", "--scanners", "vuln",
                 "--skip-version-check", "--disable-telemetry", "--image-src", "docker", "--quiet")
BUILD_HINT = "PYTHONPATH=scripts python -m localstack.trivy_tools builds Trivy and the database"


def _missing(what: str) -> None:
    """Skip, or under CI=true fail, naming what is missing (tests/integration/conftest.py's rule)."""
    message = f"{what} is not available; {BUILD_HINT}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _localstack() -> Any:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from localstack import host, trivy_tools
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return trivy_tools, host.StackError


@functools.cache
def trivy_binary() -> Path:
    """``$IMAGEGATE_TRIVY``, else the cached Trivy v0.74.0 build (built now when missing)."""
    given = os.environ.get("IMAGEGATE_TRIVY")
    if given:
        if not os.access(given, os.X_OK):
            _missing(f"Trivy at IMAGEGATE_TRIVY={given}")
        return Path(given)
    trivy_tools, stack_error = _localstack()
    try:
        return Path(trivy_tools.ensure_trivy())
    except stack_error as exc:
        _missing(f"Trivy v0.74.0 (building it from the Go module proxy failed: {exc})")
        raise  # pragma: no cover - _missing fails or skips


@functools.cache
def trivy_cache_dir(fixtures: Path = FIXTURES) -> Path:
    """Trivy's ``--cache-dir`` holding the database built from *fixtures* (built now when missing)."""
    trivy_tools, stack_error = _localstack()
    try:
        return Path(trivy_tools.ensure_db(fixtures))
    except stack_error as exc:
        _missing(f"the fixture vulnerability database (building it failed: {exc})")
        raise  # pragma: no cover


def no_network_prefix() -> tuple[list[str] | None, str]:
    """A command prefix running its command in a new, empty network namespace (only a down loopback), and why
    not when there is none: ``unshare -n`` as root, else ``unshare -rn`` (a user namespace)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None, "unshare (util-linux) is not installed"
    errors = []
    for prefix in ([unshare, "-n"], [unshare, "-rn"]):
        proc = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=30)
        if proc.returncode == 0:
            return prefix, ""
        errors.append(f"{' '.join(prefix[1:])}: {proc.stderr.strip() or proc.returncode}")
    return None, "no network namespace can be made here (" + "; ".join(errors) + ")"


def trivy_scan(image_ref: str, fmt: str = "json", *, docker_host: str | None = None, no_network: bool = False,
               fixtures: Path = FIXTURES, timeout: float = 300) -> bytes:
    """The report the real Trivy writes for *image_ref*, an image of the local Docker Engine (a tag, an ID or
    ``repo@sha256:...`` as ``docker images`` knows it), in *fmt*: "json" (Trivy JSON, SchemaVersion 2),
    "cosign-vuln" (the cosign vulnerability predicate) or "sarif" (SARIF 2.1.0). Fully offline against the
    fixture database; *no_network* runs Trivy in an empty network namespace (the Docker socket is a file)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown Trivy format {fmt!r}; one of {', '.join(FORMATS)}")
    cmd = [str(trivy_binary()), "image", "--cache-dir", str(trivy_cache_dir(fixtures)), *OFFLINE_FLAGS,
           "--format", fmt]
    host = docker_host or os.environ.get("DOCKER_HOST")
    if host:
        cmd += ["--docker-host", host]
    cmd.append(image_ref)
    if no_network:
        prefix, why = no_network_prefix()
        if prefix is None:
            raise RuntimeError(f"cannot scan without a network: {why}")
        cmd = prefix + cmd
    env = {**os.environ, "TRIVY_NO_PROGRESS": "true"}
    for attempt in range(4):
        proc = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout)
        # Trivy's scan cache (fanal.db) is one bolt file: a concurrent scan holds it for a second or two.
        if proc.returncode == 0 or b"cache may be in use" not in proc.stderr or attempt == 3:
            break
        time.sleep(1 + attempt)
    if proc.returncode != 0:
        raise AssertionError(f"trivy image {image_ref} --format {fmt} failed ({proc.returncode}):\n"
                             f"{proc.stderr.decode(errors='replace')[-3000:]}")
    return proc.stdout


# ------------------------------------------------------------------------------------------- findings


@dataclass(frozen=True, order=True)
class Finding:
    """One reported vulnerability of one installed package, as Trivy JSON carries it."""

    id: str  # VulnerabilityID
    package: str  # PkgName: the binary package (libssl3, not openssl) or the Python distribution name
    installed: str  # InstalledVersion, as dpkg (epoch:version-revision) / the METADATA Version report it
    fixed: str  # FixedVersion; "" when there is none
    severity: str  # CRITICAL, HIGH, MEDIUM, LOW, UNKNOWN
    status: str  # fixed, affected, will_not_fix, ...


def findings_of(report: dict[str, Any]) -> list[Finding]:
    """The findings of a Trivy JSON report (the ``scanner.result`` of a cosign-vuln predicate works too)."""
    found = []
    for result in report.get("Results") or []:
        for v in result.get("Vulnerabilities") or []:
            found.append(Finding(v["VulnerabilityID"], v["PkgName"], v["InstalledVersion"], v.get("FixedVersion", ""),
                                 v["Severity"], v.get("Status", "")))
    return sorted(found)


def load_fixtures(fixtures: Path = FIXTURES) -> dict[str, Any]:
    return json.loads(fixtures.read_text(encoding="utf-8"))


def fixture_ids(*, control: bool, fixtures: Path = FIXTURES) -> set[str]:
    """The IDs of the fixture vulnerabilities that are (control=True) or are not negative controls."""
    return {v["id"] for v in load_fixtures(fixtures)["vulnerabilities"] if bool(v.get("control")) == control}


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str  # the binary package's Version (what Trivy reports as installed)
    source: str  # the source package (advisories are keyed by it)
    source_version: str  # what the fixed version is compared with


@dataclass(frozen=True)
class ImageContents:
    os_id: str  # /etc/os-release ID, e.g. "debian"
    os_version: str  # VERSION_ID, e.g. "12"
    debian_version: str  # /etc/debian_version, e.g. "12.15" (what Trivy reports as the OS name)
    deb: tuple[DebPackage, ...]
    python: tuple[tuple[str, str], ...]  # (Name, Version) of every *.dist-info/METADATA


def parse_dpkg_status(text: str) -> list[DebPackage]:
    """The installed packages of a dpkg status file (Trivy skips "deinstall"/"purge" entries; so do we)."""
    packages = []
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^([A-Za-z0-9-]+):[ \t]*(.*)$", stanza, re.M))
        if "Package" not in fields or "Version" not in fields:
            continue
        if {"deinstall", "purge"} & set(fields.get("Status", "").split()):
            continue
        source, source_version = fields["Package"], fields["Version"]
        if fields.get("Source"):
            m = re.fullmatch(r"(\S+)(?:\s+\((\S+)\))?", fields["Source"].strip())
            if m:
                source = m.group(1)
                source_version = m.group(2) or fields["Version"]
        packages.append(DebPackage(fields["Package"], fields["Version"], source, source_version))
    return packages


class _ChunkReader(io.RawIOBase):
    """A file object over the Engine's export stream, for tarfile's streaming mode."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def image_contents(image_ref: str, docker_client: Any) -> ImageContents:
    """What the image really holds: its OS release, dpkg status and Python distributions, read from the flattened
    filesystem of a created (never started) container."""
    container = docker_client.containers.create(image_ref, entrypoint=["/nonexistent"], command=[],
                                                network_disabled=True)
    files: dict[str, bytes] = {}
    python: list[tuple[str, str]] = []
    try:
        stream = io.BufferedReader(_ChunkReader(container.export(chunk_size=1 << 20)), buffer_size=1 << 20)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                name = member.name.lstrip("./")
                if not member.isfile():
                    continue
                if name in ("etc/os-release", "usr/lib/os-release", "etc/debian_version", "var/lib/dpkg/status"):
                    files[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
                elif re.search(r"\.dist-info/METADATA$", name):
                    headers = HeaderParser().parsestr(tar.extractfile(member).read().decode("utf-8", "replace"))  # type: ignore[union-attr]
                    if headers.get("Name") and headers.get("Version"):
                        python.append((headers["Name"], headers["Version"]))
    finally:
        container.remove(force=True)
    os_release = (files.get("etc/os-release") or files.get("usr/lib/os-release") or b"").decode()
    fields = {k: v.strip('"') for k, v in re.findall(r"^([A-Z_]+)=(.*)$", os_release, re.M)}
    return ImageContents(
        os_id=fields.get("ID", ""),
        os_version=fields.get("VERSION_ID", ""),
        debian_version=files.get("etc/debian_version", b"").decode().strip(),
        deb=tuple(parse_dpkg_status(files.get("var/lib/dpkg/status", b"").decode("utf-8", "replace"))),
        python=tuple(sorted(python)),
    )


def expected_findings(image_ref: str, docker_client: Any = None, *, fixtures: Path = FIXTURES) -> list[Finding]:
    """The findings a correct scanner reports for *image_ref* (an image of the local Engine; *docker_client*
    defaults to one on ``$DOCKER_HOST``) against the fixture database: every advisory of the fixture file matched
    against the image's real packages, by the rules of Trivy's detectors (Debian: the SOURCE package and version
    against ``fixed_version``, in dpkg's order; pip: the normalised name and PEP 440 ranges). Negative controls
    fall out of the same comparison. Compare with :func:`findings_of` of a real report."""
    if docker_client is None:
        import docker

        client = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
        try:
            return expected_for(image_contents(image_ref, client), load_fixtures(fixtures))
        finally:
            client.close()
    return expected_for(image_contents(image_ref, docker_client), load_fixtures(fixtures))


def expected_for(contents: ImageContents, fixtures: dict[str, Any]) -> list[Finding]:
    sources = fixtures["data_sources"]
    found = []
    for vuln in fixtures["vulnerabilities"]:
        for adv in vuln["advisories"]:
            bucket = adv["bucket"]
            if bucket.startswith("pip::"):
                for name, version in contents.python:
                    if normalise_python_name(name) == adv["package"] and pip_vulnerable(version, adv):
                        found.append(Finding(vuln["id"], name, version, pip_fixed_version(adv), vuln["severity"],
                                             "fixed" if pip_fixed_version(adv) else "affected"))
            elif sources[bucket]["ID"] == "debian" and contents.os_id == "debian" \
                    and bucket == f"debian {contents.os_version.split('.')[0]}":
                fixed = adv.get("fixed_version", "")
                for pkg in contents.deb:
                    if pkg.source != adv["package"]:
                        continue
                    if fixed and dpkg_compare(pkg.source_version, fixed) >= 0:
                        continue
                    status = "fixed" if fixed else (adv.get("status") or "affected")
                    found.append(Finding(vuln["id"], pkg.name, pkg.version, fixed, vuln["severity"], status))
    return sorted(found)


def normalise_python_name(name: str) -> str:
    """PEP 503 normalisation (what Trivy's pip buckets are keyed by)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _pep440_match(version: str, constraints: list[str]) -> bool:
    """True when *version* satisfies one of *constraints* (each comma-separated, AND; a bare version means ==)."""
    try:
        v = Version(version)
    except InvalidVersion:
        return False
    for constraint in constraints:
        parts = [p.strip().replace(" ", "") for p in constraint.split(",") if p.strip()]
        parts = [p if re.match(r"^[<>=!~]", p) else f"=={p}" for p in parts]
        try:
            if SpecifierSet(",".join(parts)).contains(v, prereleases=True):
                return True
        except InvalidSpecifier:
            continue
    return False


def pip_vulnerable(version: str, adv: dict[str, Any]) -> bool:
    """Trivy's compare.IsVulnerable: inside a vulnerable range (when given) and not in a patched one."""
    vulnerable, patched = adv.get("vulnerable_versions") or [], adv.get("patched_versions") or []
    if "" in vulnerable + patched:
        return True
    if vulnerable and not _pep440_match(version, vulnerable):
        return False
    if not patched:
        return bool(vulnerable)
    return not _pep440_match(version, patched)


def pip_fixed_version(adv: dict[str, Any]) -> str:
    """Trivy's createFixedVersions: the patched versions, else the upper bounds ``<X`` of the vulnerable ranges."""
    if adv.get("patched_versions"):
        return ", ".join(dict.fromkeys(adv["patched_versions"]))
    bounds = []
    for constraint in adv.get("vulnerable_versions") or []:
        for part in constraint.split(","):
            part = part.strip()
            if part.startswith("<") and not part.startswith("<="):
                bounds.append(part[1:].strip())
    return ", ".join(dict.fromkeys(bounds))


# dpkg's version order (lib/dpkg/version.c, verrevcmp), written here so the expected findings do not come from
# the scanner under test nor need dpkg on the host.
def _order(c: str) -> int:
    if c.isdigit():
        return 0
    if c.isascii() and c.isalpha():
        return ord(c)
    if c == "~":
        return -1
    return ord(c) + 256 if c else 0


def _verrevcmp(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split_deb(version: str) -> tuple[int, str, str]:
    epoch, _, rest = version.partition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return int(epoch or 0), upstream, revision


def dpkg_compare(a: str, b: str) -> int:
    """<0, 0, >0 as Debian version *a* sorts before, equal to, after *b* (``dpkg --compare-versions``)."""
    ea, ua, ra = _split_deb(a)
    eb, ub, rb = _split_deb(b)
    if ea != eb:
        return ea - eb
    return _verrevcmp(ua, ub) or _verrevcmp(ra, rb)
