"""The audit's one query: ``imagegate`` XCom records joined to their task instances, filtered, newest first.

What keeps it cheap on a large metadata database:

- it starts from Airflow's own index on the XCom key (``idx_xcom_key``), so a page load reads the
  ``imagegate`` records only, never every XCom (``explain`` shows the plan; a test holds it);
- the user's readable DAGs, the DAG, the time range and the verdict are plain SQL conditions;
- the image filter compares the recorded pinned reference and engine digest (JSON fields) with the
  parsed :class:`imagegate.AuditFilter`: a digest is matched exactly (``…@sha256:<hex>`` ends the pinned
  reference), a repository as a prefix with ``LIKE`` wildcards escaped, never as a pattern the user wrote;
- paging is by keyset (timestamp, dag_run_id, task_id, map_index) with an opaque cursor, so page 100 costs
  what page 1 costs; there is no count of all matches.

Cross-dialect: SQLAlchemy's JSON path operators (``JSON_EXTRACT`` on SQLite and MySQL, ``->>`` on
Postgres' JSONB).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Collection

from sqlalchemy import Text, and_, cast, literal, not_, or_, select, tuple_

from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel

if TYPE_CHECKING:
    from sqlalchemy.orm import Session
    from sqlalchemy.sql import Select

    import imagegate

XCOM_KEY = "imagegate"
MAX_LIMIT = 200
DEFAULT_LIMIT = 50


class CursorError(ValueError):
    """A paging cursor that this server did not make."""


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[imagegate.AuditRow]
    next_cursor: str | None


def _field(*path: str) -> Any:
    """A string field of the record (``JSON_EXTRACT(value, '$."a"."b"')`` / ``value #>> '{a,b}'``)."""
    return XComModel.value[path].as_string()


def _passed() -> Any:
    """The report passed: JSON ``true`` reads as '1' on SQLite, 'true' on Postgres and MySQL. Compared as text,
    so a record whose ``passed`` is not a boolean cannot make the query fail (a cast to boolean could)."""
    return _field("report", "passed").in_(("true", "1"))


def _has_waived_check() -> Any:
    """A check of the report was waived (records without a stored verdict): its checks as JSON text, minified
    (SQLite) or spaced (Postgres, MySQL)."""
    checks = cast(XComModel.value[("report", "checks")], Text)
    return or_(checks.like('%"outcome":"waived"%'), checks.like('%"outcome": "waived"%'))


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def image_condition(flt: imagegate.AuditFilter) -> Any:
    """The image part of the filter in SQL (None when there is none). Mirrors ``AuditFilter.matches_image``."""
    pinned, written = _field("pinned"), _field("report", "reference")
    image_ids = (_field("running"), _field("report", "image", "config_digest"), _field("launched", "image_id"))
    if flt.digest is not None:  # validated: algorithm and hex only, nothing a LIKE would read as a wildcard
        return or_(pinned.like(f"%@{flt.digest}"), *(i == flt.digest for i in image_ids))
    if flt.digest_prefix is not None:
        return or_(pinned.like(f"%@{flt.digest_prefix}%"), *(i.like(f"{flt.digest_prefix}%") for i in image_ids))
    if flt.repository is not None:
        names = {flt.repository}
        if flt.repository.startswith("docker.io/"):  # as written, a Docker Hub image is often short: python:3.11
            short = flt.repository.removeprefix("docker.io/")
            names |= {short, short.removeprefix("library/")}
        terms = []
        for name in sorted(names):
            stem = _like_escape(name)
            suffixes = [f":{_like_escape(flt.tag)}@%", f":{_like_escape(flt.tag)}"] if flt.tag else [":%", "@%", ""]
            for suffix in suffixes:
                pattern = stem + suffix
                terms.append(pinned.like(pattern, escape="\\") if suffix else pinned == name)
                terms.append(written.like(pattern, escape="\\") if suffix else written == name)
        return or_(*terms)
    return None


def verdict_condition(verdict: str) -> Any:
    """Mirrors ``AuditRow.verdict``: refused unless the report passed; else the stored verdict; a record
    from before verdicts were stored is waived when one of its checks was."""
    stored = _field("verdict")
    derived = or_(stored.is_(None), stored.not_in(("passed", "waived")))
    if verdict == "refused":
        return not_(_passed())
    if verdict == "waived":
        return and_(_passed(), or_(stored == "waived", and_(derived, _has_waived_check())))
    return and_(_passed(), or_(stored == "passed", and_(derived, not_(_has_waived_check()))))


def statement(flt: imagegate.AuditFilter, readable: Collection[str] | None, *, limit: int,
              cursor: tuple[dt.datetime, int, str, int] | None = None, key: tuple[str, str, str, int] | None = None) -> Select:
    """The SELECT: *readable* is the user's readable DAG ids (None: every DAG), *key* one task instance.

    Two steps: the filter, order and limit run over the ``imagegate`` records' keys alone (so the sort
    carries four small columns, not the records), then the page's rows are joined to their values and
    task instances.
    """
    x = XComModel
    order = (x.timestamp, x.dag_run_id, x.task_id, x.map_index)
    page = select(*order).where(x.key == XCOM_KEY)
    if readable is not None:
        page = page.where(x.dag_id.in_(sorted(readable)))
    if key is not None:
        dag_id, run_id, task_id, map_index = key
        page = page.where(x.dag_id == dag_id, x.run_id == run_id, x.task_id == task_id, x.map_index == map_index)
    if flt.dag_id is not None:
        page = page.where(x.dag_id == flt.dag_id)
    if flt.since is not None:
        page = page.where(x.timestamp >= flt.since)
    if flt.until is not None:
        page = page.where(x.timestamp < flt.until)
    if flt.verdict is not None:
        page = page.where(verdict_condition(flt.verdict))
    condition = image_condition(flt)
    if condition is not None:
        page = page.where(condition)
    if cursor is not None:
        page = page.where(tuple_(*order) < tuple_(*(literal(v, type_=c.type) for v, c in zip(cursor, order))))
    keys = page.order_by(*(c.desc() for c in order)).limit(limit).subquery("page")
    ti = TaskInstance
    return (
        select(x.dag_id, x.run_id, x.task_id, x.map_index, x.timestamp, x.dag_run_id, x.value, ti.try_number, ti.state)
        .join(keys, and_(x.dag_run_id == keys.c.dag_run_id, x.task_id == keys.c.task_id,
                         x.map_index == keys.c.map_index, x.key == XCOM_KEY))
        .join(ti, and_(ti.dag_id == x.dag_id, ti.task_id == x.task_id, ti.run_id == x.run_id, ti.map_index == x.map_index))
        .order_by(keys.c.timestamp.desc(), keys.c.dag_run_id.desc(), keys.c.task_id.desc(), keys.c.map_index.desc())
    )


def find_runs(session: Session, flt: imagegate.AuditFilter, readable: Collection[str] | None, *,
              limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> Page:
    """One page of rows, newest first, and the cursor of the next page (None on the last one)."""
    import imagegate

    if readable is not None and not readable:
        return Page([], None)
    limit = max(1, min(MAX_LIMIT, limit))
    rows = session.execute(statement(flt, readable, limit=limit + 1, cursor=decode_cursor(cursor) if cursor else None)).all()
    out = [_row(imagegate, row) for row in rows[:limit]]
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return Page(out, next_cursor)


def find_one(session: Session, key: tuple[str, str, str, int], readable: Collection[str] | None) -> tuple[Any, imagegate.AuditRow] | None:
    """One task instance's record (its raw value too), or None when it has none or the user may not read it."""
    import imagegate

    if readable is not None and key[0] not in readable:
        return None
    row = session.execute(statement(imagegate.AuditFilter(), readable, limit=1, key=key)).first()
    return (row.value, _row(imagegate, row)) if row is not None else None


def _row(core: Any, row: Any) -> imagegate.AuditRow:
    when = row.timestamp
    if isinstance(when, dt.datetime) and when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return core.AuditRow.from_record(
        row.value, dag_id=row.dag_id, run_id=row.run_id, task_id=row.task_id, map_index=row.map_index,
        try_number=row.try_number, state=str(row.state.value if hasattr(row.state, "value") else row.state) if row.state else None,
        recorded_at=when.isoformat() if isinstance(when, dt.datetime) else None,
    )


def encode_cursor(row: Any) -> str:
    when = row.timestamp
    if isinstance(when, dt.datetime) and when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    raw = json.dumps([when.isoformat(), row.dag_run_id, row.task_id, row.map_index], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[dt.datetime, int, str, int]:
    """The keyset of a cursor; :class:`CursorError` for anything this server would not have made."""
    if len(text) > 1400:
        raise CursorError("the cursor is too long")
    try:
        raw = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        when, run, task, index = raw
        stamp = dt.datetime.fromisoformat(when)
    except (ValueError, TypeError):
        raise CursorError("the cursor is not one this page made; start again from the first page") from None
    if not (isinstance(run, int) and isinstance(task, str) and isinstance(index, int) and len(task) <= 250):
        raise CursorError("the cursor is not one this page made; start again from the first page")
    return (stamp, run, task, index)


def explain(session: Session, flt: imagegate.AuditFilter, readable: Collection[str] | None) -> list[str]:
    """SQLite's ``EXPLAIN QUERY PLAN`` of a page's query (one line per step), for the tests and benchmark."""
    compiled = statement(flt, readable, limit=DEFAULT_LIMIT + 1).compile(
        dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True})
    return [str(r[-1]) for r in session.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").all()]
