"""The audit's reading of records and filters (imagegate._audit): tables of good and hostile inputs."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

import imagegate
from imagegate._audit import AirflowAPI, AuditError, render_rows

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
CONFIG = "sha256:" + "c" * 64
NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.timezone.utc)


def record(*, passed: bool = True, outcomes: tuple[str, ...] = ("pass", "pass", "pass"), launched: bool = True,
           pinned: str = f"registry.example.com/team/etl:1.4.2@{D1}", summary: bool = True, waiver: str | None = None) -> dict[str, Any]:
    checks = [{"check": name, "outcome": outcome, "mode": "enforce", "message": f"{name} said {outcome}", "fix": None,
               "waiver": waiver if outcome == "waived" else None, "note": None}
              for name, outcome in zip(("registry", "pinned", "non-root"), outcomes)]
    value: dict[str, Any] = {
        "pinned": pinned,
        "launched": {"container_id": "f" * 64, "image_id": CONFIG, "pinned": pinned} if launched else None,
        "report": {"reference": "registry.example.com/team/etl:1.4.2", "pinned": pinned, "passed": passed,
                   "backend": "docker", "platform": "linux/amd64", "user": "1000", "checks": checks, "notices": [],
                   "image": {"config_digest": CONFIG}},
    }
    if summary:
        verdict = "refused" if not passed else ("waived" if "waived" in outcomes else "passed")
        value.update({"verdict": verdict, "digest": pinned.rpartition("@")[2], "running": CONFIG if launched else None})
    return value


def row(value: Any, **where: Any) -> imagegate.AuditRow:
    return imagegate.AuditRow.from_record(value, **{"dag_id": "d", "run_id": "r", "task_id": "t", "recorded_at": NOW.isoformat(), **where})


@pytest.mark.parametrize(("image", "expected"), [
    (D1, {"digest": D1}),
    (D1.upper().replace("SHA256", "sha256"), {"digest": D1}),
    ("1" * 64, {"digest": D1}),  # a full image id without the algorithm
    ("sha256:111111111111", {"digest_prefix": "sha256:111111111111"}),
    ("111111111111", {"digest_prefix": "sha256:111111111111"}),  # docker images' short id
    (f"registry.example.com/team/etl@{D1}", {"digest": D1}),
    (f"registry.example.com/team/etl:1.4.2@{D1}", {"digest": D1}),
    ("registry.example.com/team/etl", {"repository": "registry.example.com/team/etl", "tag": None}),
    ("registry.example.com/team/etl:1.4.2", {"repository": "registry.example.com/team/etl", "tag": "1.4.2"}),
    ("python:3.11", {"repository": "docker.io/library/python", "tag": "3.11"}),
    ("localhost:5000/x_y", {"repository": "localhost:5000/x_y", "tag": None}),
])
def test_image_filter_reads_digests_ids_and_references(image: str, expected: dict[str, Any]) -> None:
    flt = imagegate.AuditFilter.parse(image=image)
    for name in ("digest", "digest_prefix", "repository", "tag"):
        assert getattr(flt, name) == expected.get(name), name


@pytest.mark.parametrize(("option", "value"), [
    ("image", "sha256:1234"),  # too short to mean one image
    ("image", "sha256:" + "g" * 64),
    ("image", "sha256:" + "1" * 65),
    ("image", "Registry.example.com/Team/ETL:1"),  # uppercase repository: Docker refuses it
    ("image", "etl 1.0"),
    ("image", "etl:1\x1b[31m"),
    ("image", "a" * 600),
    ("verdict", "maybe"),
    ("since", "yesterday"),
    ("since", "2026-13-01"),
    ("dag_id", "x" * 251),
])
def test_bad_filters_name_the_option(option: str, value: str) -> None:
    with pytest.raises(imagegate.AuditQueryError) as caught:
        imagegate.AuditFilter.parse(**{option: value})
    assert caught.value.option == option
    assert isinstance(caught.value, ValueError)


def test_time_range_takes_dates_times_and_ages() -> None:
    flt = imagegate.AuditFilter.parse(since="7d", until="2026-11-30T11:00Z", now=NOW)
    assert flt.since == NOW - dt.timedelta(days=7)
    assert flt.until == dt.datetime(2026, 11, 30, 11, tzinfo=dt.timezone.utc)
    assert imagegate.AuditFilter.parse(since="2026-11-01").since == dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    with pytest.raises(imagegate.AuditQueryError, match="not before"):
        imagegate.AuditFilter.parse(since="1h", until="2h", now=NOW)


@pytest.mark.parametrize(("value", "verdict", "waivers"), [
    (record(), "passed", []),
    (record(passed=False, outcomes=("pass", "pass", "fail"), launched=False), "refused", []),
    (record(outcomes=("pass", "pass", "waived"), waiver="vendor image runs as root; OPS-12 (until 2027-01-31)"), "waived",
     [{"check": "non-root", "reason": "vendor image runs as root; OPS-12", "expires": "2027-01-31"}]),
    (record(outcomes=("pass", "pass", "waived"), waiver="no date given"), "waived",
     [{"check": "non-root", "reason": "no date given", "expires": None}]),
    # a record from before verdicts were stored: derived from the report
    (record(outcomes=("pass", "pass", "waived"), waiver="r", summary=False), "waived", [{"check": "non-root", "reason": "r", "expires": None}]),
    (record(passed=False, outcomes=("pass", "fail", "pass"), summary=False, launched=False), "refused", []),
])
def test_rows_say_the_verdict_and_which_waiver_allowed_what(value: dict[str, Any], verdict: str, waivers: list[Any]) -> None:
    audit = row(value)
    assert audit.verdict == verdict
    assert [dict(w) for w in audit.waivers] == waivers
    assert audit.digest == D1
    assert audit.launched is (value["launched"] is not None)
    assert audit.running == (CONFIG if value["launched"] else None)
    assert imagegate.AuditRow.from_dict(audit.to_dict()).to_dict() == audit.to_dict()


@pytest.mark.parametrize("value", [
    None, "text", [1, 2], {"pinned": 1}, {"report": "x"}, {"report": {"checks": "nope", "passed": "yes"}},
    {"report": {"checks": [None, 3, {"check": ["x"], "outcome": {"a": 1}}], "passed": True}, "launched": [1]},
    {"report": {"passed": True, "checks": []}, "pinned": "x" * 100_000, "running": "sha256:short"},
])
def test_a_malformed_record_is_a_row_that_says_so(value: Any) -> None:
    audit = row(value)
    assert audit.dag_id == "d"
    text = audit.render_text()
    assert len(text) < 20_000
    if not isinstance(value, dict) or not isinstance(value.get("report"), dict):
        assert audit.verdict == "unreadable" and audit.problem
    else:
        assert audit.running is None  # not a digest: never shown as one
        assert all(isinstance(c["check"], str) and c["outcome"] in ("pass", "warn", "fail", "waived", "skipped", "unknown")
                   for c in audit.checks)


def test_recorded_text_never_drives_a_terminal() -> None:
    value = record()
    value["report"]["reference"] = "etl\x1b]0;pwned\x07\x1b[2J"
    value["report"]["checks"][0]["message"] = "ok\u202eevil"
    value["report"]["checks"][0]["outcome"] = "fail"
    text = render_rows([row(value, dag_id="dag\x1b[31m")])
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b" in text and "\\u202e" in text


@pytest.mark.parametrize(("flt", "matches"), [
    ({}, True),
    ({"image": D1}, True),
    ({"image": CONFIG}, True),  # Docker's image id (config digest)
    ({"image": D2}, False),
    ({"image": "sha256:111111111111"}, True),
    ({"image": "cccccccccccc"}, True),
    ({"image": "registry.example.com/team/etl"}, True),
    ({"image": "registry.example.com/team/etl:1.4.2"}, True),
    ({"image": "registry.example.com/team/etl:1.4.3"}, False),
    ({"image": "registry.example.com/team/et"}, False),  # a repository is a name, not a prefix
    ({"image": "registry.example.com/team"}, False),
    ({"dag_id": "d"}, True),
    ({"dag_id": "e"}, False),
    ({"verdict": "passed"}, True),
    ({"verdict": "refused"}, False),
    ({"since": "2026-11-30T11:59Z"}, True),
    ({"since": "2026-11-30T12:01Z"}, False),
    ({"until": "2026-11-30T12:00Z"}, False),  # until is exclusive
])
def test_filter_matches_rows(flt: dict[str, str], matches: bool) -> None:
    assert imagegate.AuditFilter.parse(**flt, now=NOW).matches(row(record())) is matches


def test_credentials_never_go_over_plain_http_to_another_host() -> None:
    with pytest.raises(AuditError, match="plain http"):
        AirflowAPI("http://airflow.example.com:8080", token="t")
    AirflowAPI("http://airflow.example.com:8080", token="t", insecure=True)
    AirflowAPI("http://127.0.0.1:8080", token="t")
    AirflowAPI("https://airflow.example.com", token="t")
    with pytest.raises(AuditError, match="not an http"):
        AirflowAPI("file:///etc/passwd", token="t")


def test_the_command_line_offers_the_audit_s_verdicts() -> None:
    from imagegate import _audit, _audit_cli

    assert _audit_cli.VERDICTS == _audit.VERDICTS


def test_rows_carry_the_evidence_of_the_supply_chain_checks() -> None:
    """Who signed which digest and which signed scan decided: from the stored details, into text and JSON."""
    value = record()
    value["report"]["checks"] += [
        {"check": "signature", "outcome": "pass", "mode": "enforce", "message": "signed by 1 of 1 key(s)",
         "details": {"digest": D1, "signed_by": ["keys/team.pub"], "formats": ["bundle"]}},
        {"check": "vulnerabilities", "outcome": "fail", "mode": "enforce", "message": "1 critical",
         "details": {"attestation": {"format": "vuln+trivy", "scanner": "trivy 0.74.0", "scanned_at": "2026-11-29T10:00:00Z",
                                     "signed_by": ["keys/team.pub"]},
                     "counts": {"low": 2, "critical": 1}, "max_severity": "high",
                     "findings": [{"id": "CVE-2099-0001", "severity": "critical", "package": "openssl", "installed": "3.0.1",
                                   "fixed": "3.0.2"}]}},
    ]
    audit = row(value)
    assert audit.evidence["signature"] == (f"signed by keys/team.pub (bundle) for {D1}",)
    assert audit.evidence["vulnerabilities"] == (
        "vuln+trivy scan by trivy 0.74.0 at 2026-11-29T10:00:00Z, signed by keys/team.pub",
        "found critical 1, low 2 (max-severity high)",
        "CVE-2099-0001 critical in openssl 3.0.1, fixed in 3.0.2",
    )
    text = audit.render_text()
    assert "  evidence [signature] signed by keys/team.pub (bundle)" in text
    assert "  evidence [vulnerabilities] CVE-2099-0001 critical in openssl 3.0.1, fixed in 3.0.2" in text
    assert imagegate.AuditRow.from_dict(audit.to_dict()) == audit  # what the plugin's API serves reads back the same
    assert row(record()).evidence == {}  # no supply-chain check: nothing to show


@pytest.mark.parametrize("served", [
    "text", ["a"], {"signature": "not a list"}, {"signature": [1, None, {"x": 1}]},
    {"other": ["injected"], "signature": ["x" * 100_000] + ["y"] * 10_000},
])
def test_served_evidence_is_bounded_and_only_for_known_checks(served: Any) -> None:
    data = row(record()).to_dict() | {"evidence": served}
    audit = imagegate.AuditRow.from_dict(data)
    assert set(audit.evidence) <= {"signature", "vulnerabilities"}
    for lines in audit.evidence.values():
        assert len(lines) <= 24 and all(isinstance(line, str) and len(line) <= 4001 for line in lines)
    assert len(audit.render_text()) < 200_000
