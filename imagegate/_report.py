"""Check results and the report that collects them.

A check function returns a :class:`Finding` (what it saw); the policy turns it
into a :class:`CheckResult` (what that means under this policy: pass, warn,
fail, waived or skipped). A :class:`Report` is the whole answer for one image,
JSON-serialisable and readable as text.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Mapping


class Outcome(str, enum.Enum):
    """What a check means for the launch."""

    PASS = "pass"
    WARN = "warn"  # reported, does not block
    FAIL = "fail"  # blocks the launch
    WAIVED = "waived"  # would warn or fail, but a waiver with a reason covers it
    SKIPPED = "skipped"  # turned off, or nothing to check


class Status(str, enum.Enum):
    """What a check function saw, before the policy's mode is applied."""

    OK = "ok"
    CONCERN = "concern"  # worth a warning even under enforce
    VIOLATION = "violation"


@dataclass(frozen=True, slots=True)
class Finding:
    """The raw result of one check function."""

    check: str
    status: Status
    message: str
    fix: str | None = None
    details: Mapping[str, Any] | None = None  # structured evidence (e.g. the vulnerabilities that decided)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome under the policy, with the message and how to fix it."""

    check: str
    outcome: Outcome
    mode: str
    message: str
    fix: str | None = None
    waiver: str | None = None
    note: str | None = None  # e.g. that a waiver which would have covered it expired, and when
    # Structured evidence, JSON-ready: for ``vulnerabilities``, the attestation that counted, the counts by
    # severity and the findings that decided the verdict (the worst few); None for checks that have none.
    details: Mapping[str, Any] | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "check": self.check,
            "outcome": self.outcome.value,
            "mode": self.mode,
            "message": self.message,
            "fix": self.fix,
            "waiver": self.waiver,
            "note": self.note,
        }
        if self.details is not None:
            out["details"] = dict(self.details)
        return out


_MARKS = {
    Outcome.PASS: "PASS",
    Outcome.WARN: "WARN",
    Outcome.FAIL: "FAIL",
    Outcome.WAIVED: "WAIVED",
    Outcome.SKIPPED: "SKIP",
}


@dataclass(frozen=True, slots=True)
class Report:
    """Every check for one image reference, and what will be launched.

    ``reference`` is the input as given; ``pinned`` the immutable reference that
    would be launched (``None`` when the image was not fetched).
    """

    reference: str
    pinned: str | None
    backend: str
    platform: str
    results: tuple[CheckResult, ...]
    user: str | None = None
    facts: Mapping[str, Any] | None = field(default=None, compare=False)
    notices: tuple[str, ...] = ()  # loud warnings about the policy itself (e.g. a waiver that covers everything)

    @property
    def passed(self) -> bool:
        """True when nothing blocks the launch (warnings allowed)."""
        return not self.failures

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.outcome is Outcome.FAIL)

    @property
    def warnings(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.outcome is Outcome.WARN)

    def result(self, check: str) -> CheckResult:
        """The result of check *check*; KeyError when it was not run."""
        for r in self.results:
            if r.check == check:
                return r
        raise KeyError(check)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "pinned": self.pinned,
            "passed": self.passed,
            "backend": self.backend,
            "platform": self.platform,
            "user": self.user,
            "checks": [r.to_dict() for r in self.results],
            "notices": list(self.notices),
            "image": dict(self.facts) if self.facts is not None else None,
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    def render_text(self) -> str:
        """A short readable report: header, one line per check, fixes indented."""
        verdict = "passed" if self.passed else "REFUSED"
        lines = [
            f"image    {self.reference}",
            f"pinned   {self.pinned or '(not resolved)'}",
            f"backend  {self.backend} ({self.platform})",
            f"verdict  {verdict}"
            + (f" with {len(self.warnings)} warning(s)" if self.passed and self.warnings else ""),
        ]
        for notice in self.notices:
            lines.append(f"  NOTICE {notice}")
        for r in self.results:
            lines.append(f"  {_MARKS[r.outcome]:<6} {r.check:<9} {r.message}")
            if r.waiver:
                lines.append(f"  {'':<6} {'':<9} waiver: {r.waiver}")
            if r.note:
                lines.append(f"  {'':<6} {'':<9} note: {r.note}")
            if r.fix and r.outcome in (Outcome.FAIL, Outcome.WARN):
                lines.append(f"  {'':<6} {'':<9} fix: {r.fix}")
            lines.extend(f"  {'':<6} {'':<9} {line}" for line in _detail_lines(r.details))
        return "\n".join(lines)


def _detail_lines(details: Mapping[str, Any] | None) -> list[str]:
    """The findings a check listed in its details (``vulnerabilities``: the ones that decided), one per line."""
    if not details:
        return []
    lines = []
    for item in details.get("findings") or ():
        fix = f", fixed in {item['fixed']}" if item.get("fixed") else ""
        waived = f" (waived: {item['waived']})" if item.get("waived") else ""
        lines.append(f"- {item.get('id')} {item.get('severity')} in {item.get('package')} "
                     f"{item.get('installed') or ''}{fix}{waived}".replace("  ", " "))
    more = details.get("more_findings")
    if more:
        lines.append(f"- and {more} more")
    return lines
