"""The Images page and the task-instance view: server-rendered HTML, no script.

Everything shown comes from records a task pushed, so every value goes through Jinja's autoescape
(``StrictUndefined``: a missing value is a bug, not an empty cell) and the responses carry a
Content-Security-Policy that allows no script at all. Airflow shows both pages in a sandboxed iframe that
may not navigate the window around it, so every link stays inside the frame (the row's record view).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping, Sequence
from urllib.parse import quote, urlencode

import jinja2

if TYPE_CHECKING:
    import imagegate

CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'self'; base-uri 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
           "Cache-Control": "no-store"}
VERDICTS = ("passed", "waived", "refused")  # imagegate's AuditFilter accepts these
TASK_ROUTE = "imagegate-task"  # the url_route of the task-instance view (a tab of Airflow's task instance page)

_STYLE = """
:root { color-scheme: light dark; --fg:#1a202c; --muted:#5a6473; --line:#d9dee5; --bg:#fff; --head:#f4f6f8;
  --pass:#1f7a3a; --fail:#b42318; --waived:#9a5b00; --warn:#9a5b00; --skip:#5a6473; }
@media (prefers-color-scheme: dark) { :root { --fg:#e6e9ee; --muted:#a0a9b6; --line:#3a4250; --bg:#171a1f;
  --head:#222730; --pass:#5fd27f; --fail:#ff7b72; --waived:#f2b45a; --warn:#f2b45a; --skip:#a0a9b6; } }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg);
  margin: 16px 20px; }
h1 { font-size: 20px; margin: 0 0 2px; } h2 { font-size: 16px; margin: 20px 0 6px; }
.sub, .summary, .muted { color: var(--muted); } .sub { margin: 0 0 12px; }
form { display: flex; flex-wrap: wrap; gap: 8px 14px; align-items: end; padding: 10px 12px; background: var(--head);
  border: 1px solid var(--line); border-radius: 6px; }
label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); gap: 2px; }
input, select, button { font: inherit; padding: 4px 6px; border: 1px solid var(--line); border-radius: 4px;
  background: var(--bg); color: var(--fg); }
button { cursor: pointer; background: #0b5cad; color: #fff; border-color: #0b5cad; padding: 4px 14px; }
table { border-collapse: collapse; width: 100%; margin-top: 8px; }
th, td { text-align: left; vertical-align: top; padding: 6px 8px; border-bottom: 1px solid var(--line); }
th { background: var(--head); font-size: 12px; color: var(--muted); font-weight: 600; }
.mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; overflow-wrap: anywhere; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
  border: 1px solid currentColor; }
.passed, .pass { color: var(--pass); } .refused, .fail, .unreadable { color: var(--fail); }
.waived { color: var(--waived); } .warn { color: var(--warn); } .skipped, .unknown { color: var(--skip); }
.chk { display: inline-block; margin: 0 8px 2px 0; font-size: 12px; white-space: nowrap; }
.nowrap, .ti-view { white-space: nowrap; } .small { font-size: 11px; } td.pinned, td.running { max-width: 26em; }
td.checks { min-width: 11em; }
#checks td { overflow-wrap: anywhere; } #checks td:nth-child(4) { width: 42%; } #checks td:nth-child(5) { width: 34%; }
.error { color: var(--fail); font-weight: 600; } a { color: #0b5cad; }
@media (prefers-color-scheme: dark) { a { color: #6cb6ff; } }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 14px; margin: 0; } dt { color: var(--muted); }
pre { background: var(--head); border: 1px solid var(--line); padding: 8px; overflow: auto; font-size: 12px; }
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Images · imagegate</title><style>{{ style }}</style></head>
<body>
<h1>Images</h1>
<p class="sub">Every task instance that went through imagegate's gate, newest first: the image as written, the digest
it pinned, the digest the engine ran, the verdict with each check, and the waiver that allowed what.</p>
<form method="get" action="{{ page_url }}" id="filters">
  <label>Image: digest, image id or repository
    <input name="image" id="f-image" size="52" value="{{ f.image or '' }}" placeholder="sha256:… · 12+ hex · registry/repo[:tag]"></label>
  <label>DAG <select name="dag_id" id="f-dag"><option value="">any DAG</option>
    {%- for dag in dags %}<option{% if dag == f.dag_id %} selected{% endif %}>{{ dag }}</option>{% endfor %}</select></label>
  <label>Verdict <select name="verdict" id="f-verdict"><option value="">any</option>
    {%- for v in verdicts %}<option{% if v == f.verdict %} selected{% endif %}>{{ v }}</option>{% endfor %}</select></label>
  <label>Since <input name="since" id="f-since" size="16" value="{{ since }}" placeholder="7d · 2026-11-30"></label>
  <label>Until <input name="until" id="f-until" size="16" value="{{ until }}" placeholder="24h · 2026-12-01T08:00Z"></label>
  <button type="submit" id="f-apply">Filter</button>
  <a href="{{ page_url }}" id="f-reset">Reset</a> <a href="{{ json_url }}" id="f-json">JSON</a>
</form>
{% if error %}<p class="error" id="error">{{ error }}</p>{% endif %}
<p class="summary" id="summary">{{ rows|length }} task instance{{ '' if rows|length == 1 else 's' }}
{%- if next_url %} on this page; <a href="{{ next_url }}" id="next">next page →</a>{% endif %}
{%- if not rows and not error %}: nothing matched (only tasks that went through the gate are recorded){% endif %}</p>
{% if rows %}
<table id="runs"><thead><tr><th>Recorded (UTC)</th><th>DAG · task · run</th><th>Image as written</th>
<th>Pinned (checked)</th><th>Engine ran</th><th>Verdict</th><th>Checks</th><th>Waivers</th></tr></thead><tbody>
{% for r in rows %}<tr class="run" data-dag="{{ r.dag_id }}" data-run="{{ r.run_id }}" data-task="{{ r.task_id }}"
 data-map-index="{{ r.map_index }}" data-verdict="{{ r.verdict }}">
<td class="mono nowrap">{{ when(r.recorded_at) }}</td>
<td><b>{{ r.dag_id }}</b> · {{ task_label(r) }}<br><span class="mono small">{{ r.run_id }}</span><br>
  <span class="muted">try {{ r.try_number if r.try_number is not none else '–' }}{{ ' · ' ~ r.state if r.state else '' }}</span>
  · <a class="ti-view" href="{{ view_url(r) }}">record →</a></td>
<td class="mono">{{ r.image or '–' }}</td>
<td class="mono pinned">{{ r.pinned or '(not resolved)' }}</td>
<td class="mono running">{{ r.running or ('not recorded (' ~ (r.backend or '?') ~ ')' if r.launched else 'not launched') }}</td>
<td><span class="badge verdict {{ r.verdict }}">{{ r.verdict }}</span>{% if r.problem %}<br><span class="muted">{{ r.problem }}</span>{% endif %}</td>
<td class="checks">{% for c in r.checks %}<span class="chk {{ c.outcome }}" title="{{ c.message or '' }}">{{ marks.get(c.outcome, '?') }} {{ c.check }}</span> {% endfor %}</td>
<td>{% for w in r.waivers %}<div class="waiver"><b>{{ w.check }}</b>: {{ w.reason or '(no reason recorded)' }}
  <span class="muted">({{ 'until ' ~ w.expires if w.expires else 'no expiry' }})</span></div>{% endfor %}</td>
</tr>
{% endfor %}</tbody></table>
{% endif %}
</body></html>
"""

_TASK = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Image audit · imagegate</title><style>{{ style }}</style></head>
<body>
{% if r is none %}
<h1>Image audit</h1>
<p id="no-record">{{ message }}</p>
<p><a href="{{ page_url }}">All images</a></p>
{% else %}
<h1 id="ti-title">{{ r.dag_id }} · {{ task_label(r) }}</h1>
<p class="sub"><span class="mono">{{ r.run_id }}</span> · try {{ r.try_number if r.try_number is not none else '–' }}
 · {{ r.state or 'no state' }} · recorded {{ when(r.recorded_at) }} UTC
 · <a href="{{ page_url }}">all images</a></p>
<dl id="summary">
  <dt>Verdict</dt><dd><span class="badge verdict {{ r.verdict }}" id="verdict">{{ r.verdict }}</span>
    {%- if r.problem %} <span class="muted">{{ r.problem }}</span>{% endif %}</dd>
  <dt>Image as written</dt><dd class="mono">{{ r.image or '–' }}</dd>
  <dt>Pinned (checked)</dt><dd class="mono" id="pinned">{{ r.pinned or '(not resolved)' }}</dd>
  <dt>Engine ran</dt><dd class="mono" id="running">{{ r.running or ('not recorded' if r.launched else 'nothing was launched') }}</dd>
  <dt>Backend</dt><dd>{{ r.backend or '–' }}{% if r.user %} · user {{ r.user }}{% endif %}</dd>
  {% if r.launch %}<dt>Launched</dt><dd class="mono">{% for k, v in r.launch.items() %}{{ k }}: {{ v }}<br>{% endfor %}</dd>{% endif %}
</dl>
{% if r.notices %}<h2>Notices</h2>{% for n in r.notices %}<p class="warn">NOTICE {{ n }}</p>{% endfor %}{% endif %}
<h2>Checks</h2>
<table id="checks"><thead><tr><th>Check</th><th>Outcome</th><th>Mode</th><th>Message</th><th>Waiver · note · fix</th></tr></thead><tbody>
{% for c in r.checks %}<tr class="check" data-check="{{ c.check }}" data-outcome="{{ c.outcome }}">
<td>{{ c.check }}</td><td><span class="badge {{ c.outcome }}">{{ c.outcome }}</span></td><td>{{ c.mode or '' }}</td>
<td>{{ c.message or '' }}{% for line in evidence.get(c.check, []) %}<div class="evidence small mono">{{ line }}</div>{% endfor %}</td>
<td>{% if c.waiver %}<div class="waived">waiver: {{ c.waiver }}</div>{% endif %}{% if c.note %}<div>note: {{ c.note }}</div>{% endif %}
{% if c.fix and c.outcome in ('fail', 'warn') %}<div>fix: {{ c.fix }}</div>{% endif %}</td></tr>
{% endfor %}</tbody></table>
{% for role, h in r.helpers.items() %}<h2>Helper container: {{ role }}</h2>
<p class="mono">{{ h.pinned or '(not resolved)' }} · <span class="badge {{ h.verdict }}">{{ h.verdict }}</span></p>{% endfor %}
<h2>Record</h2>
<details><summary>The <span class="mono">imagegate</span> XCom as stored</summary><pre>{{ raw }}</pre></details>
{% endif %}
</body></html>
"""

_MARKS = {"pass": "✓", "fail": "✗", "waived": "≈", "warn": "!", "skipped": "–"}
_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)
_PAGE_T = _ENV.from_string(_PAGE)
_TASK_T = _ENV.from_string(_TASK)


class Links:
    """The URLs the pages link to, under the api-server's base path."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.page = f"{self.base}/imagegate/images"
        self.view = f"{self.base}/imagegate/task"
        self.json = f"{self.base}/imagegate/api/runs"

    def airflow(self, row: imagegate.AuditRow) -> str:
        """Airflow's task instance page, on imagegate's "Image audit" tab (for the docs and the tests: the
        frame cannot navigate to it)."""
        parts = ["dags", row.dag_id, "runs", row.run_id, "tasks", row.task_id]
        if row.map_index >= 0:
            parts += ["mapped", str(row.map_index)]
        return f"{self.base}/" + "/".join(quote(p, safe="") for p in parts) + f"/plugin/{TASK_ROUTE}"

    def record(self, row: imagegate.AuditRow) -> str:
        return f"{self.view}?" + urlencode({"dag_id": row.dag_id, "run_id": row.run_id, "task_id": row.task_id,
                                             "map_index": row.map_index})


def _when(text: str | None) -> str:
    return (text or "–").replace("T", " ", 1).split(".")[0].removesuffix("+00:00")


def _task_label(row: imagegate.AuditRow) -> str:
    return row.task_id if row.map_index < 0 else f"{row.task_id}[{row.map_index}]"


def images_page(*, rows: Sequence[imagegate.AuditRow], flt: imagegate.AuditFilter, params: Mapping[str, str],
                dags: Sequence[str], next_cursor: str | None, error: str | None, links: Links) -> str:
    query = {k: v for k, v in params.items() if v and k in ("dag_id", "verdict", "image", "since", "until")}
    next_url = f"{links.page}?" + urlencode({**query, "cursor": next_cursor}) if next_cursor else None
    return _PAGE_T.render(
        style=_STYLE, rows=rows, f=flt, dags=dags, verdicts=VERDICTS,
        since=params.get("since", ""), until=params.get("until", ""), error=error, next_url=next_url,
        page_url=links.page, json_url=f"{links.json}?" + urlencode(query) if query else links.json,
        when=_when, task_label=_task_label, view_url=links.record, marks=_MARKS,
    )


def task_page(*, row: imagegate.AuditRow | None, raw: Any, message: str, links: Links) -> str:
    shown = json.dumps(raw, indent=2, sort_keys=False, default=str)[:200_000] if row is not None else ""
    return _TASK_T.render(style=_STYLE, r=row, raw=shown, message=message, page_url=links.page, when=_when,
                          task_label=_task_label, evidence=evidence(raw))


def evidence(record: Any) -> dict[str, list[str]]:
    """check -> the lines of evidence its stored details hold (who signed; which scan counted and what decided), read
    from the record as stored (a task wrote it: every value is checked, and autoescaped when shown)."""
    from airflow_plugin._gate import evidence_lines

    report = record.get("report") if isinstance(record, Mapping) else None
    checks = report.get("checks") if isinstance(report, Mapping) else None
    out: dict[str, list[str]] = {}
    for check in checks[:16] if isinstance(checks, list) else []:
        if isinstance(check, Mapping) and isinstance(check.get("check"), str) and check["check"] not in out:
            lines = evidence_lines(check["check"], check.get("details"))
            if lines:
                out[check["check"]] = lines
    return out
