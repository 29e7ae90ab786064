"""The evidence behind the supply-chain checks as short readable lines: who signed which digest, which signed scan
counted and what decided. One job: turn a ``signature`` / ``vulnerabilities`` result's ``details`` (from a report,
or from a record a task stored, so anything is tolerated) into bounded lines for a task log, the audit page and
``imagegate audit``.
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["EVIDENCE_CHECKS", "MAX_EVIDENCE_LINES", "evidence_lines"]

#: The report checks whose results carry evidence ``details``.
EVIDENCE_CHECKS = ("signature", "vulnerabilities")

MAX_EVIDENCE_LINES = 24
_MAX_ITEM = 300
_SEVERITY_ORDER = {name: i for i, name in enumerate(("critical", "high", "medium", "low", "negligible", "unknown"))}


def evidence_lines(check: Any, details: Any, *, findings: bool = True) -> list[str]:
    """The structured evidence of a ``signature`` or ``vulnerabilities`` result as short lines: who signed which
    digest in which format and what did not count; which scan counted (format, scanner, time, signer), the counts
    by severity and (with *findings*) the findings that decided. For the task log and the audit page.

    *details* comes from a report or from a stored XCom record: anything is tolerated (a value of the wrong type is
    left out), every line is bounded, and there are at most :data:`MAX_EVIDENCE_LINES`.
    """
    if not isinstance(details, Mapping):
        return []
    lines = _signature_lines(details) if check == "signature" else (
        _vulnerability_lines(details, findings) if check == "vulnerabilities" else [])
    return [line if len(line) <= _MAX_ITEM else line[:_MAX_ITEM] + "…" for line in lines[:MAX_EVIDENCE_LINES]]


def _texts(value: Any, limit: int = 8) -> list[str]:
    return [str(v)[:_MAX_ITEM] for v in value[:limit] if isinstance(v, (str, int))] if isinstance(value, list) else []


def _signature_lines(details: Mapping[str, Any]) -> list[str]:
    signed_by, formats = _texts(details.get("signed_by")), _texts(details.get("formats"))
    digest = details.get("digest") if isinstance(details.get("digest"), str) else None
    head = f"signed by {', '.join(signed_by)}" if signed_by else "signed by none of the policy's keys"
    lines = [head + (f" ({', '.join(formats)})" if formats else "") + (f" for {digest}" if digest else "")]
    rules = details.get("rules") if isinstance(details.get("rules"), list) else []
    for rule in rules[:4]:
        for item in (rule.get("signatures") if isinstance(rule, Mapping) and isinstance(rule.get("signatures"), list) else [])[:6]:
            if isinstance(item, Mapping) and isinstance(item.get("problem"), str):
                lines.append(f"not counted: {item.get('format')} {item.get('where')}: {item['problem']}")
    return lines


def _vulnerability_lines(details: Mapping[str, Any], findings: bool) -> list[str]:
    lines = []
    att = details.get("attestation")
    if isinstance(att, Mapping):
        when = f" at {att['scanned_at']}" if isinstance(att.get("scanned_at"), str) else " (no scan time)"
        signers = _texts(att.get("signed_by"))
        lines.append(f"{att.get('format')} scan by {att.get('scanner')}{when}"
                     + (f", signed by {', '.join(signers)}" if signers else ""))
    counts = details.get("counts")
    if isinstance(counts, Mapping) and counts:
        worst = sorted(list(counts.items())[:8], key=lambda kv: _SEVERITY_ORDER.get(str(kv[0]), len(_SEVERITY_ORDER)))
        shown = ", ".join(f"{k} {v}" for k, v in worst if isinstance(v, int))
        rule = f" (max-severity {details['max_severity']})" if isinstance(details.get("max_severity"), str) else ""
        lines.append(f"found {shown}{rule}")
    elif isinstance(att, Mapping):
        lines.append("found no vulnerability")
    for item in (details.get("findings") if findings and isinstance(details.get("findings"), list) else [])[:20]:
        if isinstance(item, Mapping):
            fixed = f", fixed in {item['fixed']}" if item.get("fixed") else ""
            waived = f" (waived: {item['waived']})" if item.get("waived") else ""
            lines.append(f"{item.get('id')} {item.get('severity')} in {item.get('package')} "
                         f"{item.get('installed') or ''}{fixed}{waived}".replace("  ", " "))
    more = details.get("more_findings")
    if findings and isinstance(more, int) and more > 0:
        lines.append(f"and {more} more finding(s)")
    lines += [f"expired waiver: {w}" for w in _texts(details.get("expired_waivers"), 4)]
    lines += [f"not counted: {r}" for r in _texts(details.get("refused"), 4)]
    return lines
