"""Vulnerability reports read from verified attestations, and the ``[[vulnerabilities]]`` verdict over them.

:func:`read_predicate` turns the predicate of a verified in-toto Statement into a :class:`ScanReport` of normalised
:class:`Vulnerability` findings. It reads the four report formats users have:

* cosign's vuln predicate (``cosign attest --type vuln``; ``trivy image --format cosign-vuln``): ``scanner.result``
  holds a Trivy JSON, Grype JSON or SARIF report; the scan time is ``metadata.scanFinishedOn``.
* Trivy JSON (``SchemaVersion`` 2): ``Results[].Vulnerabilities[]`` with ``VulnerabilityID``, ``PkgName``,
  ``InstalledVersion``, ``FixedVersion``, ``Severity``; the scan time ``CreatedAt``. Fixable, as Trivy's own
  ``--ignore-unfixed`` reads it: a non-empty ``FixedVersion``.
* Grype JSON: ``matches[].vulnerability{id, severity, fix{state, versions}}`` and ``artifact{name, version}``; the
  scan time ``descriptor.timestamp``. Fixable, as ``grype --only-fixed`` reads it: ``fix.state == "fixed"``.
* SARIF 2.1.0 (``trivy --format sarif``, ``grype -o sarif``): ``runs[].results[]`` and their rules. Both tools put
  the severity in the rule: Trivy as a tag (``["vulnerability", "security", "HIGH"]``) and a CVSS-like
  ``security-severity`` score; Grype as ``security-severity`` (the CVSS base score when it has one, which can be
  *higher* than its own severity name) and the ``Severity:`` line of the rule's help text. Where two disagree the
  worse one counts. The vulnerability id and the fixed version come from the help text both write
  (``Vulnerability CVE-…``, ``Fixed Version:`` / ``Fix Version:``); without one, fixability is unknown and the finding
  counts under ``only-fixable`` (fail closed). The scan time is ``invocations[].endTimeUtc`` (neither tool writes
  it: a SARIF report has no scan time unless it was added).

Third-party reports carry many fields we do not read; those are tolerated. What decides a verdict is validated: a
severity must be one the tool writes, an id a short printable string, a fix state one Grype knows, a time RFC 3339;
anything else refuses the whole report (the attestation then does not count), never a guess. Sizes are bounded
(:data:`MAX_FINDINGS` per report).

:func:`judge` applies one rule (max-severity, only-fixable, max-age, waivers) to the reports that verified; it is
pure (the clock is a parameter).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from imagegate._json import DocumentError, Struct, struct
from imagegate._predicates import GRYPE, SARIF, TRIVY, VULN

__all__ = [
    "LEVELS", "MAX_FINDINGS", "ReportError", "ScanReport", "Verdict", "Vulnerability", "judge", "parse_age",
    "parse_time", "read_predicate",
]

LEVELS = ("none", "low", "medium", "high", "critical")  # what max-severity / unknown-severity take
SEVERITIES = ("unknown", "negligible", "low", "medium", "high", "critical")  # what a finding can have
_RANK = {"none": 0, "negligible": 1, "low": 1, "medium": 2, "high": 3, "critical": 4}
MAX_FINDINGS = 100_000  # per report; more and the report is refused (fail closed: it cannot be judged fully)
INCOMPLETE = "(not every attestation read)"  # a Candidate's ``where`` when the attestations could not all be read
MAX_LISTED = 20  # findings listed in a check's details (the worst first)
MAX_ID = 256
FUTURE_SLACK = dt.timedelta(minutes=5)  # a scan "from the future" beyond clock skew is refused

_TRIVY_SEVERITIES = {"UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL"}
_GRYPE_SEVERITIES = {"unknown", "negligible", "low", "medium", "high", "critical"}
_GRYPE_FIX_STATES = {"fixed", "not-fixed", "wont-fix", "unknown", ""}
_OTHER_SARIF_KINDS = {"misconfiguration", "secret", "license"}  # Trivy's SARIF also lists these: not vulnerabilities
_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_AGE = re.compile(r"(\d{1,6})([dhm])")


class ReportError(ValueError):
    """A report that cannot be judged: malformed, ambiguous, too large, or with a value we cannot read safely."""

    def __init__(self, format: str, reason: str, path: str = "") -> None:
        self.format = format
        self.reason = reason
        self.path = path
        super().__init__(f"{format} report: {path + ': ' if path else ''}{reason}")


@dataclass(frozen=True, slots=True)
class Vulnerability:
    """One finding: ``severity`` is one of :data:`SEVERITIES`; ``fixable`` None when the report does not say."""

    id: str
    severity: str
    package: str = ""
    installed: str = ""
    fixed: str = ""
    fixable: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "severity": self.severity, "package": self.package, "installed": self.installed,
                "fixed": self.fixed, "fixable": self.fixable}


@dataclass(frozen=True, slots=True)
class ScanReport:
    """A report read from one predicate: its format (``trivy`` / ``grype`` / ``sarif``, ``vuln+…`` inside cosign's
    vuln predicate), the scanner that wrote it, when the scan finished (None: the report does not say)."""

    format: str
    scanner: str
    scanned_at: dt.datetime | None
    vulnerabilities: tuple[Vulnerability, ...]


# -- reading -----------------------------------------------------------------------------------------------------------


def read_predicate(predicate_type: str, predicate: Any) -> ScanReport:
    """The findings of a verified statement's *predicate* (decoded JSON) of type *predicate_type*."""
    readers = {VULN: _read_cosign_vuln, TRIVY: _read_trivy, GRYPE: _read_grype, SARIF: _read_sarif}
    reader = readers.get(predicate_type)
    if reader is None:
        raise ReportError(predicate_type[:100], "not a vulnerability report type imagegate reads")
    try:
        return reader(predicate)
    except DocumentError as exc:
        raise ReportError(_FORMATS.get(predicate_type, "report"), exc.reason, exc.path) from None


_FORMATS = {VULN: "cosign vuln", TRIVY: "Trivy JSON", GRYPE: "Grype JSON", SARIF: "SARIF"}


def _read_cosign_vuln(value: Any) -> ScanReport:
    top = struct(value, "predicate")
    scanner = top.struct("scanner", required=True)
    assert scanner is not None
    metadata = top.struct("metadata")
    finished = parse_time(metadata.string("scanFinishedOn"), metadata.where("scanFinishedOn")) if metadata else None
    result = scanner.raw("result")
    inner = struct(result, scanner.where("result"))
    if "SchemaVersion" in inner or "Results" in inner:
        report = _read_trivy(result, scanner.where("result"))
    elif "matches" in inner:
        report = _read_grype(result, scanner.where("result"))
    elif "runs" in inner:
        report = _read_sarif(result, scanner.where("result"))
    else:
        raise DocumentError("is neither a Trivy JSON, a Grype JSON nor a SARIF report", scanner.where("result"))
    name = " ".join(x for x in (scanner.string("uri"), scanner.string("version")) if x) or report.scanner
    return ScanReport(f"vuln+{report.format}", _short(name, 200), finished or report.scanned_at,
                      report.vulnerabilities)


def _read_trivy(value: Any, path: str = "predicate") -> ScanReport:
    top = struct(value, path)
    version = top.integer("SchemaVersion", required=True)
    if version != 2:
        raise DocumentError(f"SchemaVersion {version} is not 2 (Trivy's JSON since v0.20)", top.where("SchemaVersion"))
    found: list[Vulnerability] = []

    def result(item: Any, where: str) -> None:
        res = struct(item, where)
        for vuln in res.items("Vulnerabilities", lambda v, p: struct(v, p)):
            _bound(found, vuln.path)
            severity = vuln.string("Severity", required=True) or ""
            if severity not in _TRIVY_SEVERITIES:
                raise DocumentError(f"severity {_short(severity, 40)!r} is not one of Trivy's "
                                    f"({', '.join(sorted(_TRIVY_SEVERITIES))})", vuln.where("Severity"))
            fixed = vuln.string("FixedVersion") or ""
            found.append(Vulnerability(_id(vuln, "VulnerabilityID"), severity.lower(),
                                       _short(vuln.string("PkgName") or ""), _short(vuln.string("InstalledVersion") or ""),
                                       _short(fixed), bool(fixed)))

    top.items("Results", result)
    trivy = top.struct("Trivy")
    scanner = f"trivy {trivy.string('Version') or ''}".strip() if trivy is not None else "trivy"
    return ScanReport("trivy", _short(scanner), parse_time(top.string("CreatedAt"), top.where("CreatedAt")), tuple(found))


def _read_grype(value: Any, path: str = "predicate") -> ScanReport:
    top = struct(value, path)
    found: list[Vulnerability] = []

    def match(item: Any, where: str) -> None:
        _bound(found, where)
        m = struct(item, where)
        vuln = m.struct("vulnerability", required=True)
        assert vuln is not None
        severity = vuln.string("severity") or "Unknown"
        if severity.lower() not in _GRYPE_SEVERITIES:
            raise DocumentError(f"severity {_short(severity, 40)!r} is not one of Grype's", vuln.where("severity"))
        fix = vuln.struct("fix") or Struct({}, vuln.where("fix"))
        state = fix.string("state") or ""
        if state not in _GRYPE_FIX_STATES:
            raise DocumentError(f"fix state {_short(state, 40)!r} is not one of Grype's "
                                "(fixed, not-fixed, wont-fix, unknown)", fix.where("state"))
        versions = fix.strings("versions") or ()
        artifact = m.struct("artifact") or Struct({}, m.where("artifact"))
        found.append(Vulnerability(_id(vuln, "id"), severity.lower(), _short(artifact.string("name") or ""),
                                   _short(artifact.string("version") or ""), _short(",".join(versions)),
                                   state == "fixed"))

    top.items("matches", match, required=True)
    descriptor = top.struct("descriptor")
    scanner, when = "grype", None
    if descriptor is not None:
        scanner = f"{descriptor.string('name') or 'grype'} {descriptor.string('version') or ''}".strip()
        when = parse_time(descriptor.string("timestamp"), descriptor.where("timestamp"))
    return ScanReport("grype", _short(scanner), when, tuple(found))


def _read_sarif(value: Any, path: str = "predicate") -> ScanReport:
    top = struct(value, path)
    version = top.string("version", required=True)
    if version != "2.1.0":
        raise DocumentError(f"version {_short(version or '', 20)!r} is not SARIF 2.1.0", top.where("version"))
    found: list[Vulnerability] = []
    times: list[dt.datetime] = []
    tools: list[str] = []

    def run(item: Any, where: str) -> None:
        r = struct(item, where)
        tool = r.struct("tool", required=True)
        assert tool is not None
        driver = tool.struct("driver", required=True)
        assert driver is not None
        tools.append(f"{driver.string('name') or '?'} {driver.string('version') or ''}".strip())
        rules = {}
        for rule in driver.items("rules", lambda v, p: struct(v, p)):
            if len(rules) >= MAX_FINDINGS:
                raise DocumentError(f"more than {MAX_FINDINGS} rules", driver.where("rules"))
            rule_id = rule.string("id", required=True) or ""
            rules.setdefault(rule_id, rule)
        for invocation in r.items("invocations", lambda v, p: struct(v, p)):
            end = parse_time(invocation.string("endTimeUtc"), invocation.where("endTimeUtc"))
            if end is not None:
                times.append(end)
        for res in r.items("results", lambda v, p: struct(v, p)):
            _bound(found, res.path)
            vuln = _sarif_result(res, rules)
            if vuln is not None:
                found.append(vuln)

    top.items("runs", run, required=True)
    return ScanReport("sarif", _short(", ".join(tools) or "sarif"), max(times) if times else None, tuple(found))


_SARIF_SCORE = ((9.0, "critical"), (7.0, "high"), (4.0, "medium"), (0.1, "low"))  # CVSS v3 qualitative ratings
_HELP_LINE = re.compile(r"^(Vulnerability|Severity|Package|Installed Version|Version|Fixed Version|Fix Version)(?::| (?=\S+$)) ?(.*)$")


def _sarif_result(res: Struct, rules: Mapping[str, Struct]) -> Vulnerability | None:
    rule_id = res.string("ruleId") or ""
    rule = rules.get(rule_id)
    if not rule_id or rule is None:
        raise DocumentError(f"ruleId {_short(rule_id, 80)!r} names no rule of the run", res.where("ruleId"))
    props = rule.struct("properties") or Struct({}, rule.where("properties"))
    tags = [t.lower() for t in (props.strings("tags") or ())]
    if _OTHER_SARIF_KINDS.intersection(tags[:1]):
        return None  # Trivy's misconfiguration / secret / license results
    # A Trivy rule is per vulnerability id and shared by every package it affects: the result's message (Package,
    # Installed Version, Fixed Version) comes first; the rule's help text fills in what the message lacks (Grype).
    lines = _help_lines((res.struct("message") or Struct({}, "")).string("text") or "")
    help_ = rule.struct("help")
    for key, text in _help_lines((help_.string("text") if help_ is not None else None) or "", strict=False).items():
        lines.setdefault(key, text)
    named = [t for t in tags if t in SEVERITIES]
    if "Severity" in lines:
        named.append(lines["Severity"].lower())
    for name in named:
        if name not in SEVERITIES:
            raise DocumentError(f"severity {_short(name, 40)!r} is not one imagegate knows", rule.where("help"))
    score_text = props.raw("security-severity")
    if score_text is not None:
        try:
            score = float(score_text) if isinstance(score_text, (str, int, float)) and not isinstance(score_text, bool) else -1.0
        except (ValueError, OverflowError):  # a 400-digit integer does not fit a float: not a score
            score = -1.0
        if not 0.0 <= score <= 10.0:
            raise DocumentError(f"security-severity {_short(str(score_text), 20)!r} is not a score from 0.0 to 10.0",
                                rule.where("properties"))
        named.extend(next(([name] for floor, name in _SARIF_SCORE if score >= floor), []))  # 0.0: no rating (Trivy's UNKNOWN)
    known = [n for n in named if n != "unknown"]
    severity = max(known, key=_RANK.__getitem__) if known else "unknown"  # the worse where they disagree
    fixed_line = lines.get("Fixed Version", lines.get("Fix Version"))
    vuln_id = lines.get("Vulnerability") or rule_id
    if not vuln_id or len(vuln_id) > MAX_ID or not vuln_id.isprintable():
        raise DocumentError("the vulnerability id is not a short printable string", res.where("ruleId"))
    # The rule id is the scanner's (Trivy: the vulnerability id; Grype: the id, "-", the package): a "Vulnerability"
    # line that names another id came from text the scanner copied out of the image (a package's version string).
    if vuln_id != rule_id and not rule_id.startswith(vuln_id + "-"):
        raise DocumentError(f"the text names vulnerability {_short(vuln_id, 80)!r} but the rule is "
                            f"{_short(rule_id, 80)!r}", res.where("message"))
    return Vulnerability(vuln_id, severity, _short(lines.get("Package", "")),
                         _short(lines.get("Installed Version", lines.get("Version", ""))), _short(fixed_line or ""),
                         None if fixed_line is None else bool(fixed_line.strip()))


def _help_lines(text: str, *, strict: bool = True) -> dict[str, str]:
    """The ``Field: value`` lines of a SARIF result's message (*strict*) or a rule's help text (Trivy and Grype
    write them one per ``\n``).

    Split on ``\n`` only: ``str.splitlines`` also splits on U+2028, U+0085, VT, FF and more, which a package's
    version string the scanner copies into the message can carry to forge a line ("Vulnerability …",
    "Fixed Version: "). In a message a field twice, or a value that is not printable, makes the finding ambiguous:
    refused. A rule's help text comes from the vulnerability database and ends in the advisory's free text: there
    the first line of each field counts and the rest is ignored."""
    found: dict[str, str] = {}
    for line in text.split("\n")[:16]:
        match = _HELP_LINE.match(line.strip(" \t\r"))
        if not match:
            continue
        value = match[2].strip(" \t")
        if (match[1] in found or (value and not value.isprintable())) and not strict:
            continue
        if match[1] in found:
            raise DocumentError(f"the field {match[1]!r} appears twice in one finding's text", "message")
        if value and not value.isprintable():
            raise DocumentError(f"the field {match[1]!r} holds characters that are not printable", "message")
        found[match[1]] = value
    return found


def _bound(found: Sequence[Any], where: str) -> None:
    if len(found) >= MAX_FINDINGS:
        raise DocumentError(f"more than {MAX_FINDINGS} findings", where)


def _id(item: Struct, name: str) -> str:
    value = item.string(name, required=True) or ""
    if not value or len(value) > MAX_ID or not value.isprintable() or value != value.strip():
        raise DocumentError("must be a non-empty printable id of at most 256 characters", item.where(name))
    return value


def _short(text: str, limit: int = 128) -> str:
    text = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_time(text: str | None, where: str = "") -> dt.datetime | None:
    """An RFC 3339 time as Go's ``time.Time`` reads it (nanoseconds allowed), in UTC; None for absent, empty or
    Go's zero time (``0001-01-01T00:00:00Z``: "not set")."""
    if not text:
        return None
    match = _TIME.fullmatch(text)
    if match is None:
        raise DocumentError(f"{_short(text, 40)!r} is not an RFC 3339 time", where)
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    micro = int((match[7] or "0").ljust(9, "0")[:6])
    zone = match[8]
    offset = dt.timedelta(0)
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        offset = sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    try:
        value = dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=dt.timezone(offset))
    except ValueError as exc:
        raise DocumentError(f"{_short(text, 40)!r} is not a valid time ({exc})", where) from None
    if year <= 1:
        return None
    return value.astimezone(dt.timezone.utc)


def parse_age(text: str) -> dt.timedelta:
    """``"7d"``, ``"36h"``, ``"90m"`` -> a duration (whole days, hours or minutes)."""
    match = _AGE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None or int(match[1]) == 0:
        raise ValueError(f"{text!r} is not an age such as '7d', '36h' or '90m'")
    unit = {"d": "days", "h": "hours", "m": "minutes"}[match[2]]
    return dt.timedelta(**{unit: int(match[1])})


# -- judging -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """A verified attestation's report, with where it came from (for the report) — or why it cannot be judged."""

    report: ScanReport | None
    predicate_type: str
    where: str
    signed_by: tuple[str, ...]
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """One rule's answer: ``ok``; ``missing`` when no verified attestation could be judged; the message; details."""

    ok: bool
    message: str
    missing: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)


def rank(severity: str, unknown: str) -> int:
    """A finding's severity as a rank (0 none … 4 critical); ``unknown`` ranks as the rule's *unknown* level."""
    return _RANK[unknown if severity == "unknown" else severity]


def judge(rule: Any, candidates: Sequence[Candidate], *, image_names: Iterable[str], now: dt.datetime,
          today: dt.date) -> Verdict:
    """Apply one ``[[vulnerabilities]]`` *rule* (:class:`~imagegate._policy.VulnerabilityRule`) to the verified
    attestations' reports. The newest scan counts (a report without a scan time is the oldest); between equally new
    ones, the one with more blocking findings. *image_names* are the image's names its waivers' ``images`` match."""
    names = tuple(image_names)
    incomplete = [c for c in candidates if c.where == INCOMPLETE]
    if incomplete:
        return Verdict(False, f"not every vulnerability attestation could be read, so the newest is unknown: "
                              f"{incomplete[0].problem}", missing=True, details={"refused": [incomplete[0].problem]})
    unjudgeable = [c for c in candidates if c.report is None and c.signed_by]
    if unjudgeable:  # signed by the rule's keys, but unreadable or about another image: it may be the newest scan
        first = unjudgeable[0]
        return Verdict(False, f"a verified vulnerability attestation cannot be judged, so the newest scan is unknown "
                              f"({first.where}: {first.problem})", missing=True,
                       details={"refused": [f"{c.where}: {c.problem}" for c in unjudgeable][:MAX_LISTED]})
    usable = [c for c in candidates if c.report is not None]
    refused = [f"{c.where}: {c.problem}" for c in candidates if c.report is None]
    if not usable:
        why = "; ".join(refused[:3]) + (f"; and {len(refused) - 3} more" if len(refused) > 3 else "")
        return Verdict(False, "no verified vulnerability attestation" + (f" ({why})" if why else ""), missing=True,
                       details={"refused": refused[:MAX_LISTED]})
    future = [c for c in usable if c.report and c.report.scanned_at and c.report.scanned_at > now + FUTURE_SLACK]
    usable = [c for c in usable if c not in future]
    if not usable:
        return Verdict(False, f"the only verified scan is dated in the future ({future[0].report.scanned_at}); "  # type: ignore[union-attr]
                              "a scan time cannot be later than now", missing=True)
    judged = [(c, _assess(rule, c.report, names, today)) for c in usable]  # type: ignore[arg-type]
    oldest = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    chosen, (blocking, waived, counted, expired) = max(
        judged, key=lambda pair: (pair[0].report.scanned_at or oldest, len(pair[1][0])))  # type: ignore[union-attr]
    report = chosen.report
    assert report is not None
    when = report.scanned_at.isoformat().replace("+00:00", "Z") if report.scanned_at else None
    source = (f"{report.format} scan by {report.scanner}" + (f" at {when}" if when else " (no scan time)")
              + f", signed by {', '.join(chosen.signed_by)}")
    counts = {s: 0 for s in SEVERITIES}
    for vuln in counted:
        counts[vuln.severity] += 1
    listed = sorted(blocking, key=lambda v: -rank(v.severity, rule.unknown_severity))
    listed_waived = sorted(waived, key=lambda pair: -rank(pair[0].severity, rule.unknown_severity))
    items = [v.to_dict() for v in listed[:MAX_LISTED]]
    items += [{**v.to_dict(), "waived": w} for v, w in listed_waived[: max(0, MAX_LISTED - len(items))]]
    details: dict[str, Any] = {
        "attestation": {"predicate_type": chosen.predicate_type, "format": report.format, "scanner": report.scanner,
                        "scanned_at": when, "where": chosen.where, "signed_by": list(chosen.signed_by)},
        "max_severity": rule.max_severity, "only_fixable": rule.only_fixable,
        "max_age": _age_text(rule.max_age), "counts": {k: v for k, v in counts.items() if v},
        "total": len(report.vulnerabilities), "counted": len(counted), "blocking": len(blocking),
        "waived": len(waived), "findings": items,
        "more_findings": len(blocking) + len(waived) - len(items),
        "expired_waivers": [f"{w.id} (expired {w.expires}: {w.reason})" for w in expired],
    }
    if refused:
        details["refused"] = refused[:MAX_LISTED]
    expired_text = (f"; waiver(s) for {', '.join(sorted({w.id for w in expired}))} expired and no longer apply"
                    if expired else "")
    if rule.max_age is not None:
        if report.scanned_at is None:
            return Verdict(False, f"the newest verified scan ({source}) has no scan time, and the policy requires one "
                                  f"no older than {_age_text(rule.max_age)}", details=details)
        age = now - report.scanned_at
        if age > rule.max_age:
            return Verdict(False, f"the newest verified scan is too old: {_age_text(age)} old, max-age is "
                                  f"{_age_text(rule.max_age)} ({source})", details=details)
    scope = "fixable findings" if rule.only_fixable else "findings"
    waived_text = f", {len(waived)} waived" if waived else ""
    if blocking:
        worst = ", ".join(f"{v.id} ({v.severity}{', ' + v.package if v.package else ''})" for v in listed[:5])
        more = f" and {len(blocking) - 5} more" if len(blocking) > 5 else ""
        return Verdict(False, f"{len(blocking)} {scope} above max-severity {rule.max_severity}: {worst}{more} "
                              f"({source}{waived_text}){expired_text}", details=details)
    return Verdict(True, f"no {scope} above max-severity {rule.max_severity} ({len(counted)} counted of "
                         f"{len(report.vulnerabilities)}{waived_text}; {source}){expired_text}", details=details)


def _assess(rule: Any, report: ScanReport, names: tuple[str, ...], today: dt.date) -> tuple[
        list[Vulnerability], list[tuple[Vulnerability, str]], list[Vulnerability], list[Any]]:
    """(blocking, waived with the waiver's reason, counted, expired waivers that would have applied)."""
    limit = _RANK[rule.max_severity]
    blocking: list[Vulnerability] = []
    waived: list[tuple[Vulnerability, str]] = []
    counted: list[Vulnerability] = []
    expired: dict[int, Any] = {}
    for vuln in report.vulnerabilities:
        if rule.only_fixable and vuln.fixable is False:
            continue
        counted.append(vuln)
        if rank(vuln.severity, rule.unknown_severity) <= limit:
            continue
        waiver = None
        for candidate in rule.waivers:
            if candidate.matches(vuln.id, names):
                if candidate.expires < today:
                    expired[id(candidate)] = candidate
                else:
                    waiver = candidate
                    break
        if waiver is not None:
            waived.append((vuln, f"{waiver.reason} (until {waiver.expires})"))
        else:
            blocking.append(vuln)
    return blocking, waived, counted, list(expired.values())


def _age_text(age: dt.timedelta | None) -> str | None:
    if age is None:
        return None
    minutes = int(age.total_seconds() // 60)
    if minutes % (24 * 60) == 0:
        return f"{minutes // (24 * 60)}d"
    if minutes % 60 == 0 or minutes > 24 * 60:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def claimed_digests(uri: str, value: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(manifest digests, config digests) a report (predicate *value* of type *uri*) names for the image it scanned:
    Trivy ``Metadata.RepoDigests`` / ``ImageID`` / ``ArtifactName``, Grype ``source.target``, SARIF run properties.

    Keys are matched case-insensitively, as the readers (and Go's decoder) match them, and every key that folds to a
    name counts: a report spelled ``"metadata"`` or with both ``ImageID`` and ``imageid`` names all its images."""
    manifests: list[str] = []
    configs: list[str] = []
    reports = [r for s in _fields(value, "scanner") for r in _fields(s, "result")] if uri == VULN else [value]
    for report in (r for r in reports if isinstance(r, dict)):
        for metadata in _fields(report, "Metadata"):  # Trivy JSON
            manifests += [d for v in _fields(metadata, "RepoDigests") for d in _digests_in(v)]
            configs += _digests_in(_fields(metadata, "ImageID"))
        manifests += _digests_in([v for v in _fields(report, "ArtifactName") if isinstance(v, str) and "@" in v])
        for target in (t for src in _fields(report, "source") for t in _fields(src, "target")):  # Grype JSON
            manifests += _digests_in(_fields(target, "manifestDigest"))
            manifests += [d for v in _fields(target, "repoDigests") for d in _digests_in(v)]
            configs += _digests_in(_fields(target, "imageID"))
            manifests += _digests_in([v for v in _fields(target, "userInput") if isinstance(v, str) and "@" in v])
        for runs in _fields(report, "runs"):  # SARIF (Trivy's)
            for properties in (p for run in (runs if isinstance(runs, list) else ()) for p in _fields(run, "properties")):
                manifests += [d for v in _fields(properties, "repoDigests") for d in _digests_in(v)]
                configs += _digests_in(_fields(properties, "imageID"))
    return tuple(dict.fromkeys(manifests)), tuple(dict.fromkeys(configs))


def _fields(value: Any, name: str) -> list[Any]:
    """The values of every key of object *value* that folds to *name* (none when *value* is no object)."""
    if not isinstance(value, dict):
        return []
    folded = name.upper()
    return [item for key, item in value.items() if isinstance(key, str) and key.upper() == folded]


def _digests_in(values: Any) -> list[str]:
    if not isinstance(values, list):
        return []
    found = []
    for item in values:
        if isinstance(item, str) and item:
            match = _DIGEST.search(item.rpartition("@")[2] if "@" in item else item)
            if match:
                found.append(match.group(0))
    return found



# -- from verified attestations ----------------------------------------------------------------------------------------


def candidates(attestations: Any, *, manifests: Iterable[str] = (), configs: Iterable[str] = ()) -> list[Candidate]:
    """The reports of an :class:`~imagegate._cosign.Attestations`' counted statements (each read, or refused with
    the reason), and its refused attestations (so "missing" can say why).

    With the image's own *manifests* (the launched digest; for an index, its platform manifest) and *configs*
    digests, a report that names another image (Trivy ``Metadata.RepoDigests`` / ``ImageID``, Grype
    ``source.target``, SARIF run properties) is refused, whoever signed it: the statement's subject says which
    image the signer meant, the report says which image was scanned, and both must be this one."""

    if getattr(attestations, "incomplete", None):  # the newest scan cannot be told: nothing counts (fail closed)
        return [Candidate(None, "", INCOMPLETE, (), attestations.incomplete)]
    own, own_configs = set(manifests), set(configs)
    out = []
    for statement, signers in attestations.counted():
        where = f"{statement.format} {statement.where}"
        try:
            report = read_predicate(statement.predicate_type, statement.predicate)
        except ReportError as exc:
            out.append(Candidate(None, statement.predicate_type, where, signers,
                                 f"a verified attestation whose report cannot be read ({exc})"))
            continue
        if own:
            named, named_configs = claimed_digests(statement.predicate_type, statement.predicate)
            foreign = [d for d in named if d not in own] + [d for d in named_configs if own_configs and
                                                            d not in own_configs]
            if foreign:
                out.append(Candidate(None, statement.predicate_type, where, signers,
                                     f"a verified attestation of a scan of another image ({', '.join(foreign[:2])}): "
                                     "the report must be about the digest it is attested for"))
                continue
        out.append(Candidate(report, statement.predicate_type, where, signers))
    for check in attestations.checks:
        if check.problem:
            out.append(Candidate(None, check.predicate_type or "", f"{check.format} {check.where}", (), check.problem))
    if attestations.statements and not attestations.counted():
        out.append(Candidate(None, "", "statements", (),
                             f"no statement is signed by {attestations.required} of the rule's keys"))
    return out


def fresh_enough(rule: Any, now: dt.datetime) -> Any:
    """For :func:`~imagegate._cosign.verify_attestations`: a cached result will do unless the rule has a max-age and
    the newest scan in it is older (then the registry may hold a newer one)."""
    if rule.max_age is None:
        return None

    def check(attestations: Any) -> bool:
        times = [c.report.scanned_at for c in candidates(attestations) if c.report and c.report.scanned_at]
        return bool(times) and now - max(times) <= rule.max_age

    return check
