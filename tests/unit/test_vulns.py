"""imagegate._vulns: the four report formats read from the scanners' own golden files (tests/fixtures/vulns), the
values that decide refused when odd, and a [[vulnerabilities]] rule's verdict (severity, fixable, age, waivers)."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from imagegate import Policy, PolicyError
from imagegate._predicates import GRYPE, SARIF, TRIVY, VULN
from imagegate._vulns import Candidate, ReportError, judge, parse_age, parse_time, read_predicate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vulns"
UTC = dt.timezone.utc
NOW = dt.datetime(2021, 8, 26, 12, 0, tzinfo=UTC)
NAMES = ("registry.test/team/app",)


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def ids(report: Any) -> list[tuple[str, str, str, bool | None]]:
    return [(v.id, v.severity, v.package, v.fixable) for v in report.vulnerabilities]


# -- reading each format -----------------------------------------------------------------------------------------------


def test_trivy_json() -> None:
    report = read_predicate(TRIVY, load("trivy-debian-buster.json"))
    assert report.format == "trivy" and report.scanner == "trivy dev"
    assert report.scanned_at == dt.datetime(2021, 8, 25, 12, 20, 30, tzinfo=UTC)
    assert ids(report) == [("CVE-2019-18276", "low", "bash", False), ("CVE-2019-18224", "critical", "libidn2-0", True)]
    assert report.vulnerabilities[1].fixed == "2.0.5-1+deb10u1" and report.vulnerabilities[1].installed == "2.0.5-1"


def test_cosign_vuln_predicate_around_trivy() -> None:
    report = read_predicate(VULN, load("cosign-vuln-trivy-debian-buster.json"))
    assert report.format == "vuln+trivy" and "pkg:github/aquasecurity/trivy@dev" in report.scanner
    assert report.scanned_at == dt.datetime(2021, 8, 25, 12, 20, 30, tzinfo=UTC)
    assert [v.id for v in report.vulnerabilities] == ["CVE-2019-18276", "CVE-2019-18224"]


def test_cosign_vuln_predicate_around_grype_and_its_own_time_wins() -> None:
    predicate = {"scanner": {"uri": "pkg:github/anchore/grype", "version": "0.80.0", "result": load("grype-image.json")},
                 "metadata": {"scanStartedOn": "2024-01-01T00:00:00Z", "scanFinishedOn": "2024-01-01T00:05:00+01:00"}}
    report = read_predicate(VULN, predicate)
    assert report.format == "vuln+grype" and report.scanned_at == dt.datetime(2023, 12, 31, 23, 5, tzinfo=UTC)
    assert [v.id for v in report.vulnerabilities] == ["CVE-1999-0001", "CVE-1999-0002"]


def test_grype_json() -> None:
    report = read_predicate(GRYPE, load("grype-image.json"))
    assert ids(report) == [("CVE-1999-0001", "low", "package-1", True), ("CVE-1999-0002", "critical", "package-2", False)]
    assert report.vulnerabilities[0].fixed == "1.2.1,2.1.3,3.4.0"
    assert report.scanned_at is None  # the golden file's descriptor.timestamp is empty


def test_trivy_sarif_reads_packages_from_each_result() -> None:
    report = read_predicate(SARIF, load("trivy-alpine-310.sarif"))
    assert report.format == "sarif" and report.scanner == "Trivy dev" and report.scanned_at is None
    assert ids(report) == [("CVE-2019-1549", "medium", "libcrypto1.1", True), ("CVE-2019-1551", "medium", "libcrypto1.1", True),
                           ("CVE-2019-1549", "medium", "libssl1.1", True), ("CVE-2019-1551", "medium", "libssl1.1", True)]
    assert report.vulnerabilities[1].fixed == "1.1.1d-r2"


def test_grype_sarif_takes_the_worse_of_its_severity_name_and_its_cvss_score() -> None:
    report = read_predicate(SARIF, load("grype-image.sarif"))
    # CVE-1999-0001 is "low" by name but carries a CVSS base score of 8.2 in security-severity: high counts.
    assert ids(report) == [("CVE-1999-0001", "high", "package-1", True), ("CVE-1999-0002", "critical", "package-2", False)]


def test_sarif_time_and_trivy_non_vulnerability_results() -> None:
    doc = load("trivy-alpine-310.sarif")
    run = doc["runs"][0]
    run["invocations"] = [{"executionSuccessful": True, "endTimeUtc": "2021-08-25T13:00:00Z"}]
    misconfig = copy.deepcopy(run["tool"]["driver"]["rules"][0])
    misconfig.update(id="AVD-DS-0002", properties={"tags": ["misconfiguration", "security", "HIGH"]})
    run["tool"]["driver"]["rules"].append(misconfig)
    run["results"].append({"ruleId": "AVD-DS-0002", "level": "error", "message": {"text": "root user"}})
    report = read_predicate(SARIF, doc)
    assert report.scanned_at == dt.datetime(2021, 8, 25, 13, tzinfo=UTC) and len(report.vulnerabilities) == 4


def mutate(name: str, change: Any) -> Any:
    doc = load(name)
    change(doc)
    return doc


def _set(path: list[Any], value: Any) -> Any:
    def change(doc: Any) -> None:
        target = doc
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
    return change


@pytest.mark.parametrize("kind, doc, reason", [
    (TRIVY, mutate("trivy-debian-buster.json", _set(["SchemaVersion"], 1)), "SchemaVersion 1 is not 2"),
    (TRIVY, mutate("trivy-debian-buster.json", _set(["Results", 0, "Vulnerabilities", 0, "Severity"], "SEVERE")),
     "is not one of Trivy's"),
    (TRIVY, mutate("trivy-debian-buster.json", _set(["Results", 0, "Vulnerabilities", 0, "Severity"], "low")),
     "is not one of Trivy's"),
    (TRIVY, mutate("trivy-debian-buster.json", _set(["Results", 0, "Vulnerabilities", 0, "VulnerabilityID"], "")),
     "non-empty printable id"),
    (TRIVY, mutate("trivy-debian-buster.json", _set(["CreatedAt"], "yesterday")), "not an RFC 3339 time"),
    (TRIVY, mutate("trivy-debian-buster.json", _set(["Results", 0, "Vulnerabilities", 0, "severity"], "LOW")),
     "differ only by case"),
    (GRYPE, mutate("grype-image.json", _set(["matches", 0, "vulnerability", "fix", "state"], "maybe")),
     "fix state 'maybe'"),
    (GRYPE, mutate("grype-image.json", _set(["matches", 0, "vulnerability", "severity"], "Severe")),
     "is not one of Grype's"),
    (GRYPE, mutate("grype-image.json", _set(["descriptor", "timestamp"], "2024-13-01T00:00:00Z")), "not a valid time"),
    (GRYPE, {"descriptor": {}}, "matches: is missing"),
    (SARIF, mutate("grype-image.sarif", _set(["version"], "2.0.0")), "is not SARIF 2.1.0"),
    (SARIF, mutate("grype-image.sarif", _set(["runs", 0, "results", 0, "ruleId"], "nope")), "names no rule"),
    (SARIF, mutate("grype-image.sarif", _set(["runs", 0, "tool", "driver", "rules", 0, "properties",
                                              "security-severity"], "11")), "not a score"),
    (VULN, {"scanner": {"result": {"something": 1}}}, "neither a Trivy JSON"),
    (VULN, {"scanner": {"result": load("grype-image.json")}, "metadata": {"scanFinishedOn": 5}}, "expected a string"),
])
def test_odd_values_that_decide_refuse_the_report(kind: str, doc: Any, reason: str) -> None:
    with pytest.raises(ReportError, match=reason):
        read_predicate(kind, doc)


def _trivy_sarif_message(installed: str) -> Any:
    def change(doc: Any) -> None:
        result = doc["runs"][0]["results"][0]
        rule_id = result["ruleId"]
        result["message"]["text"] = (f"Package: libcrypto1.1\nInstalled Version: {installed}\nVulnerability {rule_id}\n"
                                     "Severity: MEDIUM\nFixed Version: 1.1.1d-r2\nLink: [x](https://example.com)")
    return mutate("trivy-alpine-310.sarif", change)


@pytest.mark.parametrize("installed, reason", [
    # a version string copied from the image, split by str.splitlines into lines that rename the finding and drop
    # its fix (so a waiver for CVE-0000-0001 or only-fixable would let it through)
    ("1.1.1c-r0\u2028Vulnerability CVE-0000-0001\u2028Fixed Version: ", "not printable"),
    ("1.1.1c-r0\x85Fixed Version: ", "not printable"),
    ("1.1.1c-r0\nFixed Version: ", "appears twice"),
    ("1.1.1c-r0\nVulnerability CVE-0000-0001", "appears twice"),
])
def test_a_sarif_message_cannot_forge_a_findings_fields(installed: str, reason: str) -> None:
    assert read_predicate(SARIF, _trivy_sarif_message("1.1.1c-r0")).vulnerabilities[0].fixable is True  # honest
    with pytest.raises(ReportError, match=reason):
        read_predicate(SARIF, _trivy_sarif_message(installed))


def test_a_sarif_vulnerability_line_must_name_the_rule() -> None:
    def change(doc: Any) -> None:
        result = doc["runs"][0]["results"][0]
        result["message"]["text"] = "Package: libcrypto1.1\nVulnerability CVE-0000-0001\nFixed Version: 1.1.1d-r2"
    with pytest.raises(ReportError, match="names vulnerability 'CVE-0000-0001' but the rule is"):
        read_predicate(SARIF, mutate("trivy-alpine-310.sarif", change))
    grype = read_predicate(SARIF, load("grype-image.sarif"))  # Grype's rule ids are "<id>-<package>": still read
    assert [v.id for v in grype.vulnerabilities] == ["CVE-1999-0001", "CVE-1999-0002"]


def test_a_score_too_large_for_a_float_is_not_a_score() -> None:
    doc = mutate("grype-image.sarif", _set(["runs", 0, "tool", "driver", "rules", 0, "properties", "security-severity"],
                                           10**400))
    with pytest.raises(ReportError, match="not a score"):
        read_predicate(SARIF, doc)


def test_claimed_digests_match_keys_as_the_readers_do() -> None:
    from imagegate._vulns import claimed_digests

    other = "sha256:" + "e" * 64
    doc = load("trivy-debian-buster.json")
    doc["metadata"] = {"repoDigests": [f"registry.test/team/app@{other}"], "imageid": other}  # lower-case spelling
    doc.pop("Metadata", None)
    manifests, configs = claimed_digests(TRIVY, doc)
    assert manifests == (other,) and configs == (other,)
    both = {"Metadata": {"ImageID": "sha256:" + "a" * 64}, "metadata": {"imageID": other}}  # every spelling counts
    assert set(claimed_digests(TRIVY, both)[1]) == {"sha256:" + "a" * 64, other}


def test_unknown_predicate_type_and_unread_extra_fields() -> None:
    with pytest.raises(ReportError, match="not a vulnerability report type"):
        read_predicate("https://example.com/other", {})
    doc = mutate("trivy-debian-buster.json", _set(["SomethingNew"], {"x": [1, 2]}))
    assert len(read_predicate(TRIVY, doc).vulnerabilities) == 2  # a field Trivy may add later is tolerated


def test_time_and_age_parsing() -> None:
    assert parse_time("2021-08-25T12:20:30.000000005Z") == dt.datetime(2021, 8, 25, 12, 20, 30, tzinfo=UTC)
    assert parse_time("0001-01-01T00:00:00Z") is None and parse_time("") is None
    assert parse_age("7d") == dt.timedelta(days=7) and parse_age("36h") == dt.timedelta(hours=36)
    for bad in ("7", "1w", "0d", "-1d", "7 d "):
        with pytest.raises(ValueError):
            parse_age(bad if bad != "7 d " else "7 d")


# -- the rule's verdict ------------------------------------------------------------------------------------------------


def rule(**keys: Any) -> Any:
    from tests.support.cosign import Signer

    table = {"images": ["**"], "keys": [Signer.ecdsa().public_pem().decode()], "max-severity": "high", **keys}
    return Policy.from_mapping({"vulnerabilities": [table]}).vulnerabilities[0]


def candidate(name: str = "trivy-debian-buster.json", kind: str = TRIVY, when: str | None = None) -> Candidate:
    doc = load(name)
    if when is not None:
        doc["CreatedAt"] = when
    return Candidate(read_predicate(kind, doc), kind, "bundle referrer sha256:abc", ("ci.pub",))


def test_max_severity_refuses_the_critical_finding_and_lists_it() -> None:
    verdict = judge(rule(), [candidate()], image_names=NAMES, now=NOW, today=NOW.date())
    assert not verdict.ok and not verdict.missing
    assert "1 findings above max-severity high: CVE-2019-18224 (critical, libidn2-0)" in verdict.message
    assert verdict.details["counts"] == {"low": 1, "critical": 1} and verdict.details["blocking"] == 1
    assert [f["id"] for f in verdict.details["findings"]] == ["CVE-2019-18224"]
    assert verdict.details["attestation"]["signed_by"] == ["ci.pub"]
    assert judge(rule(**{"max-severity": "critical"}), [candidate()], image_names=NAMES, now=NOW, today=NOW.date()).ok


def test_only_fixable_counts_only_findings_with_a_fix() -> None:
    grype = candidate("grype-image.json", GRYPE)  # the critical one has no fix
    assert not judge(rule(**{"max-severity": "medium"}), [grype], image_names=NAMES, now=NOW, today=NOW.date()).ok
    verdict = judge(rule(**{"max-severity": "medium", "only-fixable": True}), [grype], image_names=NAMES, now=NOW,
                    today=NOW.date())
    assert verdict.ok and verdict.details["counted"] == 1, verdict.message


def test_unknown_severity_ranks_critical_unless_the_rule_says() -> None:
    doc = load("trivy-debian-buster.json")
    for vuln in doc["Results"][0]["Vulnerabilities"]:
        vuln["Severity"] = "UNKNOWN"
    found = Candidate(read_predicate(TRIVY, doc), TRIVY, "x", ("ci.pub",))
    assert not judge(rule(), [found], image_names=NAMES, now=NOW, today=NOW.date()).ok
    assert judge(rule(**{"unknown-severity": "medium"}), [found], image_names=NAMES, now=NOW, today=NOW.date()).ok


def test_max_age_and_scans_without_a_time() -> None:
    old = judge(rule(**{"max-severity": "critical", "max-age": "1d"}), [candidate()], image_names=NAMES,
                now=NOW + dt.timedelta(days=2), today=NOW.date())
    assert not old.ok and "too old" in old.message and "max-age is 1d" in old.message
    fresh = judge(rule(**{"max-severity": "critical", "max-age": "36h"}), [candidate()], image_names=NAMES, now=NOW,
                  today=NOW.date())
    assert fresh.ok
    untimed = judge(rule(**{"max-severity": "critical", "max-age": "7d"}), [candidate("grype-image.json", GRYPE)],
                    image_names=NAMES, now=NOW, today=NOW.date())
    assert not untimed.ok and "has no scan time" in untimed.message


def test_the_newest_scan_counts_and_a_future_one_does_not() -> None:
    clean = load("trivy-debian-buster.json")
    clean["Results"][0]["Vulnerabilities"] = clean["Results"][0]["Vulnerabilities"][:1]
    clean["CreatedAt"] = "2021-08-26T00:00:00Z"
    newer_clean = Candidate(read_predicate(TRIVY, clean), TRIVY, "new", ("ci.pub",))
    assert judge(rule(), [candidate(), newer_clean], image_names=NAMES, now=NOW, today=NOW.date()).ok
    clean["CreatedAt"] = "2021-08-20T00:00:00Z"
    older_clean = Candidate(read_predicate(TRIVY, clean), TRIVY, "old", ("ci.pub",))
    assert not judge(rule(), [candidate(), older_clean], image_names=NAMES, now=NOW, today=NOW.date()).ok
    clean["CreatedAt"] = "2021-09-30T00:00:00Z"  # dated a month after now: it would never grow old
    future = Candidate(read_predicate(TRIVY, clean), TRIVY, "future", ("ci.pub",))
    assert not judge(rule(), [candidate(), future], image_names=NAMES, now=NOW, today=NOW.date()).ok


def test_missing_is_its_own_outcome() -> None:
    verdict = judge(rule(), [], image_names=NAMES, now=NOW, today=NOW.date())
    assert not verdict.ok and verdict.missing and verdict.message == "no verified vulnerability attestation"
    refused = Candidate(None, TRIVY, "legacy sha256-x.att layer 0", (), "the signature does not verify")
    verdict = judge(rule(), [refused], image_names=NAMES, now=NOW, today=NOW.date())
    assert verdict.missing and "the signature does not verify" in verdict.message


def test_a_verified_report_that_cannot_be_judged_refuses_rather_than_an_older_one_deciding() -> None:
    """Signed by the rule's keys but unreadable (or about another image): it may be the newest scan, so an older
    clean one does not decide."""
    clean = load("trivy-debian-buster.json")
    clean["Results"][0]["Vulnerabilities"] = []
    older_clean = Candidate(read_predicate(TRIVY, clean), TRIVY, "old", ("ci.pub",))
    assert judge(rule(), [older_clean], image_names=NAMES, now=NOW, today=NOW.date()).ok
    unreadable = Candidate(None, TRIVY, "bundle referrer sha256:new", ("ci.pub",),
                           "a verified attestation whose report cannot be read (SchemaVersion 3 is not 2)")
    verdict = judge(rule(), [older_clean, unreadable], image_names=NAMES, now=NOW, today=NOW.date())
    assert not verdict.ok and verdict.missing and "newest scan is unknown" in verdict.message
    assert "SchemaVersion 3" in verdict.details["refused"][0]
    unsigned = Candidate(None, TRIVY, "legacy x.att layer 0", (), "the signature does not verify")  # counts nothing
    assert judge(rule(), [older_clean, unsigned], image_names=NAMES, now=NOW, today=NOW.date()).ok


def waived(expires: str, images: list[str] | None = None) -> Any:
    waiver: dict[str, Any] = {"id": "cve-2019-18224", "reason": "libidn2 is not reachable; SEC-9", "expires": expires}
    if images is not None:
        waiver["images"] = images
    return rule(waivers=[waiver])


def test_waivers_apply_until_they_expire_and_the_report_says_so() -> None:
    verdict = judge(waived("2021-09-01"), [candidate()], image_names=NAMES, now=NOW, today=NOW.date())
    assert verdict.ok and verdict.details["waived"] == 1 and "1 waived" in verdict.message
    assert verdict.details["findings"][0]["waived"].startswith("libidn2 is not reachable; SEC-9 (until 2021-09-01)")
    expired = judge(waived("2021-08-01"), [candidate()], image_names=NAMES, now=NOW, today=NOW.date())
    assert not expired.ok and "waiver(s) for cve-2019-18224 expired and no longer apply" in expired.message
    assert expired.details["expired_waivers"] == ["cve-2019-18224 (expired 2021-08-01: libidn2 is not reachable; SEC-9)"]
    other_image = judge(waived("2021-09-01", ["registry.test/other/**"]), [candidate()], image_names=NAMES, now=NOW,
                        today=NOW.date())
    assert not other_image.ok


@pytest.mark.parametrize("table, key, message", [
    ({}, "vulnerabilities[0].max-severity", "needs max-severity"),
    ({"max-severity": "severe"}, "vulnerabilities[0].max-severity", "none | low | medium | high | critical"),
    ({"max-severity": "high", "max-age": "1w"}, "vulnerabilities[0].max-age", "is not an age"),
    ({"max-severity": "high", "only-fixable": "yes"}, "vulnerabilities[0].only-fixable", "true or false"),
    ({"max-severity": "high", "types": ["cyclonedx"]}, "vulnerabilities[0].types", "unknown predicate type"),
    ({"max-severity": "high", "types": []}, "vulnerabilities[0].types", "accepts no attestation"),
    ({"max-severity": "high", "unknown-severity": "worst"}, "vulnerabilities[0].unknown-severity", "ranks UNKNOWN"),
    ({"max-severity": "high", "waivers": [{"id": "CVE-1", "reason": "r"}]}, "vulnerabilities[0].waivers[0].expires",
     "cannot be open-ended"),
    ({"max-severity": "high", "waivers": [{"id": "CVE-1", "expires": "2030-01-01"}]},
     "vulnerabilities[0].waivers[0].reason", "needs a non-empty 'reason'"),
    ({"max-severity": "high", "waivers": [{"reason": "r", "expires": "2030-01-01"}]},
     "vulnerabilities[0].waivers[0].id", "needs 'id'"),
    ({"max-severity": "high", "waivers": [{"id": "CVE-1", "reason": "r", "expires": "2030-01-01", "until": 1}]},
     "vulnerabilities[0].waivers[0]", "unknown key 'until'"),
    ({"max-severity": "high", "severity": "high"}, "vulnerabilities[0]", "unknown key 'severity'"),
])
def test_bad_vulnerability_rules_name_their_key(table: dict[str, Any], key: str, message: str) -> None:
    from tests.support.cosign import Signer

    full = {"images": ["**"], "keys": [Signer.ecdsa().public_pem().decode()], **table}
    with pytest.raises(PolicyError, match=message) as caught:
        Policy.from_mapping({"vulnerabilities": [full]})
    assert caught.value.key == key


def test_rules_turn_the_check_on_and_enforce_without_rules_is_an_error() -> None:
    assert Policy().mode("vulnerabilities").value == "off"
    assert rule().types == tuple(sorted((VULN, TRIVY, GRYPE, SARIF)))
    policy = Policy.from_mapping({"vulnerabilities": [{"images": ["**"], "keys": [_pem()], "max-severity": "low",
                                                      "types": ["trivy", "vuln"]}]})
    assert policy.mode("vulnerabilities").value == "enforce" and policy.vulnerabilities[0].types == (TRIVY, VULN)
    with pytest.raises(PolicyError, match="no \\[\\[vulnerabilities\\]\\] entry") as caught:
        Policy.from_mapping({"checks": {"vulnerabilities": "warn"}})
    assert caught.value.key == "checks.vulnerabilities"


def _pem() -> str:
    from tests.support.cosign import Signer

    return Signer.ecdsa().public_pem().decode()


def test_an_advisory_text_in_a_rules_help_that_repeats_a_field_is_not_a_refusal() -> None:
    """The help text ends in the advisory's own words, which may hold a "Severity: …" line: the first one counts."""
    def change(doc: Any) -> None:
        help_ = doc["runs"][0]["tool"]["driver"]["rules"][0]["help"]
        help_["text"] += "\nSeverity: LOW (as the vendor rated it)\nPackage: \u200bsomething"
    report = read_predicate(SARIF, mutate("trivy-alpine-310.sarif", change))
    assert ids(report) == ids(read_predicate(SARIF, load("trivy-alpine-310.sarif")))
