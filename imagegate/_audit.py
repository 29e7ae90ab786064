"""The image audit: which task runs launched which digest, and why they were allowed.

Every door records what the gate decided; in Airflow that is one XCom per task instance under the key
``imagegate`` (``{"pinned", "launched", "report", "verdict", "digest", "running", "helpers"?}``). This
module is the one reading of those records, shared by the Airflow plugin's Images page and its JSON API
(which run the filter in SQL) and by ``imagegate audit`` (which prints them):

- :class:`AuditFilter` — what a user asks: a DAG, a time range, a verdict, and an image given as a
  digest, a digest or image-id prefix, a reference or a repository. Parsed once, strictly; the plugin
  translates it to SQL, :meth:`AuditFilter.matches` applies it to rows read from ``/api/v2``.
- :class:`AuditRow` — one task instance's record, read defensively: a record is whatever a task pushed
  under that key, so a malformed one becomes a row that says so instead of an error.
- :class:`AirflowAPI`, :func:`fetch_plugin`, :func:`fetch_api_v2`: the rows from the Airflow api-server over
  HTTP (the plugin's ``/imagegate/api/runs``, else Airflow's public ``/api/v2`` XCom endpoints), for
  ``imagegate audit`` (imagegate/_audit_cli.py).

No Airflow here: the command talks HTTP only (httpx, imported when it runs).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from imagegate._errors import ImagegateError, InvalidReference, redact_url
from imagegate._evidence import EVIDENCE_CHECKS, MAX_EVIDENCE_LINES, evidence_lines
from imagegate._reference import parse_reference

if TYPE_CHECKING:
    import httpx

XCOM_KEY = "imagegate"
PLUGIN_PATH = "/imagegate/api/runs"
VERDICTS = ("passed", "waived", "refused")
MAX_NEEDLE = 512  # characters of an image filter: longer is not an image reference
MAX_TEXT = 4000  # characters of one recorded string shown (a record is whatever a task pushed)
MAX_CHECKS = 64
MAX_RESPONSE = 32 * 2**20  # bytes of one api-server answer

_HEX = re.compile(r"[0-9a-f]+")
_DIGEST = re.compile(r"(sha256|sha384|sha512):([0-9a-f]+)")
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_RELATIVE = re.compile(r"(\d{1,6})\s*(m|min|h|d|w)")
_WAIVER = re.compile(r"(?s)(?P<reason>.*) \(until (?P<expires>\d{4}-\d{2}-\d{2})\)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class AuditError(ImagegateError):
    """The audit could not be read: the api-server refused, failed or answered something unreadable.

    ``url`` is the request (secrets blanked), ``status`` the HTTP status when there was one.
    """

    _fields = ("url", "status")

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        self.url = redact_url(url) if url else None
        self.status = status
        super().__init__(message)


class AuditQueryError(ImagegateError, ValueError):
    """A filter that cannot be used; ``option`` names it (``image``, ``since``, ``verdict``…)."""

    _fields = ("option", "value")

    def __init__(self, option: str, value: str, reason: str) -> None:
        self.option = option
        self.value = value[:200]
        super().__init__(f"{option} {self.value!r}: {reason}")


# -- the filter ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which records to list. Build it with :meth:`parse`, which validates every input.

    The image filter (``image``) is read as, in this order:

    - a digest, ``sha256:<64 hex>`` (or sha384/sha512): records whose pinned manifest digest is it, or
      whose engine reported it as the image it ran (Docker's image id is the config digest);
    - a prefix of one, ``sha256:`` and 12 or more hex characters, or just the hex (``docker images``'
      short image ids): the same, by prefix;
    - a reference with a digest, ``REPO[:TAG]@sha256:…``: its digest, as above;
    - a reference without one, ``REPO`` or ``REPO:TAG``: records whose pinned reference is in that
      repository (normalised as Docker does: ``python`` is ``docker.io/library/python``), with that tag.
    """

    dag_id: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    verdict: str | None = None
    image: str | None = None
    digest: str | None = None
    digest_prefix: str | None = None
    repository: str | None = None
    tag: str | None = None

    @classmethod
    def parse(
        cls,
        *,
        dag_id: str | None = None,
        since: str | dt.datetime | None = None,
        until: str | dt.datetime | None = None,
        verdict: str | None = None,
        image: str | None = None,
        now: dt.datetime | None = None,
    ) -> AuditFilter:
        """Validate the inputs (empty strings mean "any"); :class:`AuditQueryError` names a bad one."""
        now = now or dt.datetime.now(dt.timezone.utc)
        dag = (dag_id or "").strip() or None
        if dag is not None and (len(dag) > 250 or _CONTROL.search(dag)):
            raise AuditQueryError("dag_id", dag, "is not a DAG id (at most 250 printable characters)")
        verdict_ = (verdict or "").strip().lower() or None
        if verdict_ is not None and verdict_ not in VERDICTS:
            raise AuditQueryError("verdict", verdict_, f"use one of {', '.join(VERDICTS)}")
        start, end = _when("since", since, now), _when("until", until, now)
        if start and end and start >= end:
            raise AuditQueryError("since", str(since), f"is not before until ({end.isoformat()})")
        return cls(dag_id=dag, since=start, until=end, verdict=verdict_, **_needle(image))

    @property
    def is_empty(self) -> bool:
        return not any((self.dag_id, self.since, self.until, self.verdict, self.image))

    def to_params(self) -> dict[str, str]:
        """The filter as query parameters (``/imagegate/api/runs``, the page's form)."""
        out = {"dag_id": self.dag_id, "verdict": self.verdict, "image": self.image,
               "since": self.since.isoformat() if self.since else None,
               "until": self.until.isoformat() if self.until else None}
        return {k: v for k, v in out.items() if v}

    def matches(self, row: AuditRow) -> bool:
        """The filter applied to a row (what the plugin does in SQL, for rows read from ``/api/v2``)."""
        if self.dag_id is not None and row.dag_id != self.dag_id:
            return False
        when = _parse_time(row.recorded_at) if row.recorded_at else None
        if (self.since or self.until) and when is None:
            return False
        if self.since and when is not None and when < self.since:
            return False
        if self.until and when is not None and when >= self.until:
            return False
        if self.verdict is not None and row.verdict != self.verdict and (self.verdict, row.verdict) != ("refused", "unreadable"):
            return False  # an unreadable record is listed with the refusals: it did not pass the gate either
        return self.matches_image(row.pinned, (row.running, row.config_digest, (row.launch or {}).get("image_id")), row.image)

    def matches_image(self, pinned: str | None, image_ids: Sequence[Any], written: str | None) -> bool:
        """Whether a record is of the image asked for: its pinned reference's digest, an image id the engine
        reported or the config digest (``image_ids``), or its pinned or written reference's repository."""
        pinned_digest = pinned.rpartition("@")[2] if pinned and "@" in pinned else None
        digests = [d for d in (pinned_digest, *image_ids) if isinstance(d, str)]
        if self.digest is not None:
            return self.digest in digests
        if self.digest_prefix is not None:
            return any(d.startswith(self.digest_prefix) for d in digests)
        if self.repository is not None:
            names = [n for n in (pinned, written) if n]
            return any(self._in_repository(name) for name in names)
        return True

    def _in_repository(self, reference: str) -> bool:
        try:
            ref = parse_reference(reference)
        except InvalidReference:
            return False
        return ref.name == self.repository and (self.tag is None or ref.tag == self.tag)


def _needle(text: str | None) -> dict[str, str | None]:
    needle = (text or "").strip()
    if not needle:
        return {}
    if len(needle) > MAX_NEEDLE or _CONTROL.search(needle) or " " in needle:
        raise AuditQueryError("image", needle, "is not a digest, image id or reference (no spaces, at most 512 characters)")
    lowered = needle.lower()
    found = _DIGEST.fullmatch(lowered)
    if found or _HEX.fullmatch(lowered):
        algorithm, hexpart = (found.group(1), found.group(2)) if found else ("sha256", lowered)
        full = _DIGEST_LENGTHS[algorithm]
        if len(hexpart) == full:
            return {"image": needle, "digest": f"{algorithm}:{hexpart}"}
        if 12 <= len(hexpart) < full:
            return {"image": needle, "digest_prefix": f"{algorithm}:{hexpart}"}
        if found or len(hexpart) >= 12:
            raise AuditQueryError("image", needle, f"a {algorithm} digest has {full} hex characters; give all of them or at least 12")
    try:
        ref = parse_reference(needle)
    except InvalidReference as exc:
        raise AuditQueryError(
            "image", needle, f"{exc.reason}; give a digest (sha256:…), an image id prefix (12+ hex), REPO[:TAG] or REPO@sha256:…"
        ) from None
    if ref.digest is not None:
        return {"image": needle, "digest": ref.digest}
    return {"image": needle, "repository": ref.name, "tag": ref.tag}


def _when(option: str, value: str | dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    text = (value or "").strip()
    if not text:
        return None
    relative = _RELATIVE.fullmatch(text.lower())
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2)
        minutes = {"m": 1, "min": 1, "h": 60, "d": 1440, "w": 10080}[unit] * amount
        return now - dt.timedelta(minutes=minutes)
    parsed = _parse_time(text)
    if parsed is None:
        raise AuditQueryError(option, text, "use an ISO 8601 date or time (2026-11-30, 2026-11-30T08:00Z) or an age (30m, 24h, 7d, 2w)")
    return parsed


def _parse_time(text: str) -> dt.datetime | None:
    if len(text) > 64:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


# -- one record ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditRow:
    """What one task instance's gate decided and what it launched (one ``imagegate`` record).

    ``image`` is the reference as the task wrote it, ``pinned`` what the gate checked, ``digest`` its
    manifest digest, ``running`` the digest the engine reported running when the door recorded one
    (Docker's image id: the config digest), ``config_digest`` the checked image's config digest (what
    Docker shows as the image id), ``launched`` whether a container or pod was created.
    ``verdict`` is ``passed``, ``waived`` (passed because a waiver covered a check), ``refused``, or
    ``unreadable`` (``problem`` says why). ``waivers`` lists, per waived check, the waiver's reason and
    expiry. ``evidence`` holds, per supply-chain check (``signature``, ``vulnerabilities``), the lines of what
    was verified: who signed which digest, which signed scan counted and the findings that decided.
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    try_number: int | None = None
    state: str | None = None
    recorded_at: str | None = None
    image: str | None = None
    pinned: str | None = None
    digest: str | None = None
    running: str | None = None
    config_digest: str | None = None
    launched: bool = False
    launch: Mapping[str, Any] | None = None
    verdict: str = "unreadable"
    backend: str | None = None
    user: str | None = None
    checks: tuple[Mapping[str, Any], ...] = ()
    waivers: tuple[Mapping[str, Any], ...] = ()
    notices: tuple[str, ...] = ()
    helpers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    evidence: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    problem: str | None = None

    @classmethod
    def from_record(cls, record: Any, **where: Any) -> AuditRow:
        """Read an ``imagegate`` XCom value; *where* holds dag_id, run_id, task_id, map_index, try_number,
        state and recorded_at. Never raises for a bad record: the row says what is wrong with it."""
        base = cls(**{k: _text(v) if isinstance(v, str) else v for k, v in where.items()})
        if not isinstance(record, Mapping):
            return replace(base, problem=f"the record is {type(record).__name__}, not an object")
        report = record.get("report")
        if not isinstance(report, Mapping):
            return replace(base, problem="the record has no report")
        checks = tuple(_check(c) for c in _list(report.get("checks"))[:MAX_CHECKS] if isinstance(c, Mapping))
        pinned = _str(record.get("pinned")) or _str(report.get("pinned"))
        launch = record.get("launched")
        launch = {str(k)[:100]: _scalar(v) for k, v in list(launch.items())[:20]} if isinstance(launch, Mapping) else None
        running = _digest_or_none(record.get("running")) or _digest_or_none((launch or {}).get("image_id"))
        return replace(
            base,
            image=_str(report.get("reference")),
            pinned=pinned,
            digest=_digest_or_none(record.get("digest")) or _digest_or_none(pinned.rpartition("@")[2] if pinned else None),
            running=running,
            config_digest=_digest_or_none((report.get("image") or {}).get("config_digest") if isinstance(report.get("image"), Mapping) else None),
            launched=launch is not None,
            launch=launch,
            verdict=_verdict(report.get("passed") is True, checks, record.get("verdict")),
            backend=_str(report.get("backend")),
            user=_str(report.get("user")),
            checks=checks,
            waivers=tuple(_waiver(c) for c in checks if c["outcome"] == "waived"),
            notices=tuple(_text(n) for n in _list(report.get("notices"))[:MAX_CHECKS] if isinstance(n, str)),
            helpers=_helpers(record.get("helpers")),
            evidence=_record_evidence(report.get("checks")),
        )


    def to_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id, "run_id": self.run_id, "task_id": self.task_id, "map_index": self.map_index,
            "try_number": self.try_number, "state": self.state, "recorded_at": self.recorded_at,
            "image": self.image, "pinned": self.pinned, "digest": self.digest, "running": self.running,
            "config_digest": self.config_digest, "launched": self.launched, "launch": dict(self.launch) if self.launch is not None else None,
            "verdict": self.verdict, "backend": self.backend, "user": self.user,
            "checks": [dict(c) for c in self.checks], "waivers": [dict(w) for w in self.waivers],
            "notices": list(self.notices), "helpers": {k: dict(v) for k, v in self.helpers.items()},
            "evidence": {k: list(v) for k, v in self.evidence.items()}, "problem": self.problem,
        }

    @classmethod
    def from_dict(cls, data: Any) -> AuditRow:
        """A row as the plugin's JSON API returns it (checked: the answer of a server is not trusted)."""
        if not isinstance(data, Mapping) or not all(isinstance(data.get(k), str) for k in ("dag_id", "run_id", "task_id")):
            raise ValueError("a run without dag_id, run_id and task_id")
        map_index, try_number = data.get("map_index", -1), data.get("try_number")
        launch = data.get("launch")
        return cls(
            dag_id=_text(data["dag_id"]), run_id=_text(data["run_id"]), task_id=_text(data["task_id"]),
            map_index=map_index if isinstance(map_index, int) else -1,
            try_number=try_number if isinstance(try_number, int) else None,
            state=_str(data.get("state")), recorded_at=_str(data.get("recorded_at")), image=_str(data.get("image")),
            pinned=_str(data.get("pinned")), digest=_digest_or_none(data.get("digest")),
            running=_digest_or_none(data.get("running")), config_digest=_digest_or_none(data.get("config_digest")),
            launched=data.get("launched") is True,
            launch={str(k)[:100]: _scalar(v) for k, v in list(launch.items())[:20]} if isinstance(launch, Mapping) else None,
            verdict=data.get("verdict") if data.get("verdict") in (*VERDICTS, "unreadable") else "unreadable",
            backend=_str(data.get("backend")), user=_str(data.get("user")),
            checks=tuple(_check(c) for c in _list(data.get("checks"))[:MAX_CHECKS] if isinstance(c, Mapping)),
            waivers=tuple(
                {"check": _str(w.get("check")), "reason": _str(w.get("reason")), "expires": _str(w.get("expires"))}
                for w in _list(data.get("waivers"))[:MAX_CHECKS] if isinstance(w, Mapping)
            ),
            notices=tuple(_text(n) for n in _list(data.get("notices"))[:MAX_CHECKS] if isinstance(n, str)),
            helpers=_helpers(data.get("helpers")),
            evidence=_served_evidence(data.get("evidence")),
            problem=_str(data.get("problem")),
        )

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.dag_id, self.run_id, self.task_id, self.map_index)

    def render_text(self) -> str:
        """A few readable lines (control characters of recorded strings shown escaped, never sent to a terminal)."""
        task = self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"
        tries = f" (try {self.try_number})" if self.try_number is not None else ""
        state = f", task {_shown(self.state)}" if self.state else ""
        lines = [f"{_shown(self.recorded_at or '-')}  {_shown(self.dag_id)} / {_shown(self.run_id)} / {_shown(task)}{tries}"
                 f"  {self.verdict.upper()}{state}"]
        if self.problem:
            lines.append(f"  problem  {_shown(self.problem)}")
        lines.append(f"  image    {_shown(self.image or '-')}")
        lines.append(f"  pinned   {_shown(self.pinned or '(not resolved)')}")
        ran = self.running or ("(the engine's digest is not recorded)" if self.launched else "nothing was launched")
        lines.append(f"  ran      {_shown(ran)}" + (f"  [{_shown(self.backend)}]" if self.backend else ""))
        if self.checks:
            lines.append("  checks   " + ", ".join(f"{_shown(c['check'])} {c['outcome']}" for c in self.checks))
        for check in self.checks:
            if check["outcome"] == "fail":
                lines.append(f"  FAIL     {_shown(check['check'])}: {_shown(check['message'] or '')}")
        for check, evidence in self.evidence.items():
            lines += [f"  evidence [{_shown(check)}] {_shown(line)}" for line in evidence]
        for waiver in self.waivers:
            until = f" (until {waiver['expires']})" if waiver.get("expires") else " (no expiry)"
            lines.append(f"  waiver   {_shown(waiver['check'] or '')}: {_shown(waiver['reason'] or '')}{until}")
        for notice in self.notices:
            lines.append(f"  NOTICE   {_shown(notice)}")
        for role, helper in self.helpers.items():
            lines.append(f"  helper   [{_shown(role)}] {_shown(helper.get('pinned') or '-')} {helper.get('verdict')}")
        return "\n".join(lines)


def _verdict(passed: bool, checks: Sequence[Mapping[str, Any]], stored: Any = None) -> str:
    """``refused`` unless the report passed; else the stored verdict, else ``waived`` when a waiver covered a check."""
    if not passed:
        return "refused"
    if stored in ("passed", "waived"):
        return str(stored)
    return "waived" if any(c["outcome"] == "waived" for c in checks) else "passed"


def record_verdict(passed: bool, outcomes: Sequence[str]) -> str:
    """The verdict stored in a record: ``refused``, ``waived`` (a waiver let it pass) or ``passed``."""
    return _verdict(passed, [{"outcome": o} for o in outcomes])


def _check(check: Mapping[str, Any]) -> dict[str, Any]:
    outcome = _str(check.get("outcome"))
    return {
        "check": _str(check.get("check")) or "?",
        "outcome": outcome if outcome in ("pass", "warn", "fail", "waived", "skipped") else "unknown",
        "mode": _str(check.get("mode")),
        "message": _str(check.get("message")),
        "fix": _str(check.get("fix")),
        "waiver": _str(check.get("waiver")),
        "note": _str(check.get("note")),
    }


def _record_evidence(checks: Any) -> dict[str, tuple[str, ...]]:
    """check -> evidence lines, from a stored report's checks (their ``details``; the first result of each check)."""
    out: dict[str, tuple[str, ...]] = {}
    for check in _list(checks)[:MAX_CHECKS]:
        name = check.get("check") if isinstance(check, Mapping) else None
        if name in EVIDENCE_CHECKS and name not in out:
            lines = evidence_lines(name, check.get("details"))
            if lines:
                out[name] = tuple(_text(line) for line in lines)
    return out


def _served_evidence(value: Any) -> dict[str, tuple[str, ...]]:
    """The ``evidence`` of a row the plugin's API served: only the known checks, only strings, bounded."""
    if not isinstance(value, Mapping):
        return {}
    return {name: tuple(_text(line) for line in lines[:MAX_EVIDENCE_LINES] if isinstance(line, str))
            for name, lines in value.items() if name in EVIDENCE_CHECKS and isinstance(lines, list)}


def _waiver(check: Mapping[str, Any]) -> dict[str, Any]:
    """A waived check's waiver: the reason, and the expiry the policy wrote after it (``reason (until DATE)``)."""
    text = check.get("waiver") or ""
    found = _WAIVER.fullmatch(text)
    reason, expires = (found.group("reason"), found.group("expires")) if found else (text, None)
    return {"check": check["check"], "reason": reason or None, "expires": expires}


def _helpers(value: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if not isinstance(value, Mapping):
        return out
    for role, helper in list(value.items())[:8]:
        if isinstance(helper, Mapping):
            report = helper.get("report") if isinstance(helper.get("report"), Mapping) else helper
            checks = [_check(c) for c in _list(report.get("checks"))[:MAX_CHECKS] if isinstance(c, Mapping)]
            verdict = _verdict(report.get("passed") is True, checks, helper.get("verdict"))
            out[_text(str(role))[:100]] = {"pinned": _str(helper.get("pinned")), "verdict": verdict}
    return out


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return _text(value) if isinstance(value, str) and value else None


def _text(value: str) -> str:
    return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + "…"


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _text(value) if isinstance(value, str) else _text(json.dumps(value, default=str))


def _digest_or_none(value: Any) -> str | None:
    if isinstance(value, str) and (found := _DIGEST.fullmatch(value)) and len(found.group(2)) == _DIGEST_LENGTHS[found.group(1)]:
        return value
    return None


def _shown(text: str) -> str:
    """*text* with control and bidi characters escaped: recorded strings never drive a terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text)


def render_rows(rows: Sequence[AuditRow], *, truncated: bool = False) -> str:
    if not rows:
        return "no task instance matched (imagegate records only what went through the gate)"
    footer = f"{len(rows)} task instance(s)" + (" — more match: raise --limit or narrow the filter" if truncated else "")
    return "\n\n".join(row.render_text() for row in rows) + "\n\n" + footer


# -- the api-server ------------------------------------------------------------------------------------


@dataclass
class AirflowAPI:
    """An Airflow api-server: a JWT (given, or from ``POST /auth/token``), bounded JSON answers.

    Credentials go over plain http only to a loopback host unless ``insecure`` says otherwise. Redirects
    are not followed (a redirect to a login page is an answer, not the data).
    """

    url: str
    token: str | None = None
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0
    insecure: bool = False
    _client: httpx.Client | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AuditError(f"--url {self.url!r} is not an http(s) URL of the Airflow api-server, e.g. http://localhost:8080", url=self.url)
        if parts.scheme == "http" and not self.insecure and not _loopback(parts.hostname):
            raise AuditError(
                f"refusing to send Airflow credentials over plain http to {parts.hostname}; use https, or pass --insecure "
                "if this network is trusted", url=self.url,
            )
        self.url = self.url.rstrip("/")

    def __enter__(self) -> AirflowAPI:
        import httpx

        self._client = httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False)
        if self.token is None:
            self.token = self._login()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._client is not None:
            self._client.close()

    def _login(self) -> str:
        if not self.username or self.password is None:
            raise AuditError(
                "no credentials: pass --token (or $IMAGEGATE_AIRFLOW_TOKEN), or --username with the password in "
                "$IMAGEGATE_AIRFLOW_PASSWORD", url=self.url,
            )
        body = self.request("POST", "/auth/token", json={"username": self.username, "password": self.password}, auth=False)
        token = body.get("access_token") if isinstance(body, Mapping) else None
        if not isinstance(token, str) or not token:
            raise AuditError("POST /auth/token answered without an access_token", url=f"{self.url}/auth/token")
        return token

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json: Any = None, auth: bool = True, missing_ok: bool = False) -> Any:
        """One request; its JSON answer (at most 32 MiB). A 404 is ``None`` when *missing_ok*."""
        import httpx

        assert self._client is not None, "use AirflowAPI as a context manager"
        url = f"{self.url}{path}"
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            with self._client.stream(method, url, params=params, json=json, headers=headers) as response:
                if missing_ok and response.status_code == 404:
                    return None
                body = _read_capped(response, url)
        except httpx.HTTPError as exc:
            raise AuditError(f"cannot reach the Airflow api-server at {redact_url(self.url)}: {exc}", url=url) from None
        if response.status_code in (401, 403):
            what = "the credentials were refused" if path == "/auth/token" else "not allowed (log in as a user who may read these DAGs)"
            raise AuditError(f"{method} {path}: HTTP {response.status_code}, {what}", url=url, status=response.status_code)
        if response.is_redirect or response.status_code >= 400:
            detail = body[:300].decode(errors="replace")
            raise AuditError(f"{method} {path}: HTTP {response.status_code} {_shown(detail)}", url=url, status=response.status_code)
        try:
            return _json_loads(body)
        except ValueError:
            raise AuditError(f"{method} {path}: the answer is not JSON", url=url, status=response.status_code) from None


def _read_capped(response: Any, url: str) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE:
            raise AuditError(f"the answer is larger than {MAX_RESPONSE // 2**20} MiB; narrow the filter", url=url)
        chunks.append(chunk)
    return b"".join(chunks)


def _json_loads(body: bytes) -> Any:
    return json.loads(body, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


def _loopback(host: str) -> bool:
    from imagegate._reference import is_loopback_host

    return host == "localhost" or is_loopback_host(host)


def fetch_plugin(api: AirflowAPI, flt: AuditFilter, limit: int) -> tuple[list[AuditRow], bool] | None:
    """Rows from the plugin's ``/imagegate/api/runs`` (filtered and access-checked by the api-server),
    following its cursor up to *limit*; ``None`` when the api-server has no imagegate plugin."""
    rows: list[AuditRow] = []
    cursor: str | None = None
    while len(rows) < limit:
        params = {**flt.to_params(), "limit": str(min(200, limit - len(rows)))}
        if cursor:
            params["cursor"] = cursor
        page = api.request("GET", PLUGIN_PATH, params=params, missing_ok=True)
        if page is None:
            return None
        if not isinstance(page, Mapping) or not isinstance(page.get("runs"), list):
            raise AuditError(f"GET {PLUGIN_PATH}: the answer has no 'runs' list", url=api.url + PLUGIN_PATH)
        try:
            rows.extend(AuditRow.from_dict(item) for item in page["runs"])
        except ValueError as exc:
            raise AuditError(f"GET {PLUGIN_PATH}: {exc}", url=api.url + PLUGIN_PATH) from None
        cursor = page.get("next_cursor") if isinstance(page.get("next_cursor"), str) else None
        if not cursor:
            return rows[:limit], False
    return rows[:limit], cursor is not None


def fetch_api_v2(api: AirflowAPI, flt: AuditFilter, limit: int, scan: int) -> tuple[list[AuditRow], bool]:
    """Rows read through Airflow's public ``/api/v2`` only (for an api-server without imagegate): the
    ``imagegate`` XComs newest first, each record and its task instance fetched, the filter applied
    here. At most *scan* records are read; the second value says whether more were left unread."""
    from urllib.parse import quote

    rows: list[AuditRow] = []
    dag = quote(flt.dag_id, safe="") if flt.dag_id else "~"
    offset = 0
    while offset < scan and len(rows) < limit:
        page = api.request("GET", f"/api/v2/dags/{dag}/dagRuns/~/taskInstances/~/xcomEntries", params={
            "xcom_key": XCOM_KEY, "order_by": "-timestamp", "limit": min(100, scan - offset), "offset": offset})
        entries = page.get("xcom_entries") if isinstance(page, Mapping) else None
        if not isinstance(entries, list):
            raise AuditError("GET /api/v2/…/xcomEntries: the answer has no 'xcom_entries' list", url=api.url)
        for entry in entries:
            row = _api_v2_row(api, entry, quote)
            if row is not None and flt.since and row.recorded_at and (when := _parse_time(row.recorded_at)) and when < flt.since:
                return rows, False  # newest first: nothing older can match
            if row is not None and flt.matches(row):
                rows.append(row)
                if len(rows) >= limit:
                    return rows, True
        offset += len(entries)
        if len(entries) == 0 or offset >= int(page.get("total_entries") or 0):
            return rows, False
    return rows, True


def _api_v2_row(api: AirflowAPI, entry: Any, quote: Any) -> AuditRow | None:
    if not isinstance(entry, Mapping) or not all(isinstance(entry.get(k), str) for k in ("dag_id", "run_id", "task_id")):
        return None
    map_index = entry.get("map_index") if isinstance(entry.get("map_index"), int) else -1
    base = f"/api/v2/dags/{quote(entry['dag_id'], safe='')}/dagRuns/{quote(entry['run_id'], safe='')}/taskInstances/{quote(entry['task_id'], safe='')}"
    value = api.request("GET", f"{base}/xcomEntries/{XCOM_KEY}", params={"map_index": map_index}, missing_ok=True)
    ti = api.request("GET", base + (f"/{map_index}" if map_index >= 0 else ""), missing_ok=True)
    ti = ti if isinstance(ti, Mapping) else {}
    record = value.get("value") if isinstance(value, Mapping) else None
    if isinstance(record, str):  # an XCom backend that returns the JSON text
        try:
            record = _json_loads(record.encode())
        except ValueError:
            pass
    return AuditRow.from_record(
        record, dag_id=entry["dag_id"], run_id=entry["run_id"], task_id=entry["task_id"], map_index=map_index,
        try_number=ti.get("try_number") if isinstance(ti.get("try_number"), int) else None,
        state=ti.get("state") if isinstance(ti.get("state"), str) else None,
        recorded_at=entry.get("timestamp") if isinstance(entry.get("timestamp"), str) else None,
    )
