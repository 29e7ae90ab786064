"""The audit's query on a real, migrated Airflow metadata database seeded with 50,000 task instances.

No stack needed: ``airflow db migrate`` makes the schema (Airflow's own indexes included) and
tests/support/audit_seed.py bulk-inserts DAGs, runs, task instances and XComs through Airflow's tables.
The answers are checked against the seeded records themselves; the plan against SQLite's planner.
Speed is measured in benchmarks/bench_audit.py, not asserted here.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any, Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

import imagegate
from tests.airflow.conftest import AIRFLOW
from tests.support.audit_seed import Seeded, seed


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Session, Seeded]]:
    home = tmp_path_factory.mktemp("audit-db")
    env = {"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    migrate = subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
    engine = create_engine(f"sqlite:///{home / 'airflow.db'}")
    with Session(engine) as session:
        facts = seed(session)
        yield session, facts
    engine.dispose()


def _all_pages(session: Session, flt: imagegate.AuditFilter, readable: set[str] | None, limit: int = 200) -> list[Any]:
    from airflow_plugin.audit import _query

    rows, cursor = [], None
    while True:
        page = _query.find_runs(session, flt, readable, limit=limit, cursor=cursor)
        rows.extend(page.rows)
        cursor = page.next_cursor
        if cursor is None:
            return rows


def _key(record: dict[str, Any]) -> tuple[str, str, str]:
    return (record["dag_id"], record["run_id"], record["task_id"])


def test_the_seed_is_realistic(seeded: tuple[Session, Seeded]) -> None:
    _, facts = seeded
    assert facts.task_instances == 50_000
    assert len(facts.records) == 10_000  # one task in five is a container task
    assert facts.xcoms > len(facts.records) * 3  # most XComs are not imagegate records
    verdicts = [r["value"]["report"]["passed"] for r in facts.records]
    assert 500 < verdicts.count(False) < 1200


def test_the_page_query_starts_from_the_xcom_key_index(seeded: tuple[Session, Seeded]) -> None:
    from airflow_plugin.audit import _query

    session, facts = seeded
    digest = next(iter(facts.by_digest()))
    readable = {f"seeded_{d:04d}" for d in range(100)}
    for flt in (imagegate.AuditFilter(), imagegate.AuditFilter.parse(image=digest),
                imagegate.AuditFilter.parse(image="registry.example.com/team03/job06:1.2.0", verdict="refused", since="30d"),
                imagegate.AuditFilter.parse(dag_id="seeded_0007")):
        plan = _query.explain(session, flt, readable)
        xcom_steps = [step for step in plan if re.match(r"(SEARCH|SCAN) xcom\b", step)]
        assert any(re.fullmatch(r"SEARCH xcom USING (COVERING )?INDEX idx_xcom_key \(key=\?\)", s) for s in xcom_steps), plan
        assert not [s for s in xcom_steps if s.startswith("SCAN")], f"a full scan of the XCom table: {plan}"
        ti_steps = [step for step in plan if "task_instance" in step]
        assert ti_steps and all(s.startswith("SEARCH") for s in ti_steps), plan


def test_a_digest_finds_exactly_the_runs_that_recorded_it(seeded: tuple[Session, Seeded]) -> None:
    session, facts = seeded
    by_digest = facts.by_digest()
    for digest in list(by_digest)[:5]:
        expected = {_key(r) for r in by_digest[digest]}
        found = _all_pages(session, imagegate.AuditFilter.parse(image=digest), None, limit=7)
        assert {(r.dag_id, r.run_id, r.task_id) for r in found} == expected
        assert all(r.digest == digest for r in found)
        launched = [r for r in found if r.launched]
        assert {r.running for r in launched} == {by_digest[digest][0]["value"]["report"]["image"]["config_digest"]}
        # the same image by its image id (the config digest) and by a short prefix of it
        config = by_digest[digest][0]["value"]["report"]["image"]["config_digest"]
        assert {(r.dag_id, r.run_id, r.task_id) for r in _all_pages(session, imagegate.AuditFilter.parse(image=config[7:19]), None)} == expected


def test_sql_and_python_agree_on_every_filter(seeded: tuple[Session, Seeded]) -> None:
    """The plugin runs the filter in SQL, ``imagegate audit --api-v2`` in Python: one meaning, two engines."""
    session, facts = seeded
    rows = {_key(r): imagegate.AuditRow.from_record(r["value"], dag_id=r["dag_id"], run_id=r["run_id"], task_id=r["task_id"],
                                                     recorded_at=r["timestamp"].isoformat()) for r in facts.records}
    readable = {f"seeded_{d:04d}" for d in range(0, 100, 3)}
    middle = sorted(r["timestamp"] for r in facts.records)[len(facts.records) // 2]
    filters = [
        {"verdict": "waived"},
        {"verdict": "refused", "image": "registry.example.com/team05/job10"},
        {"verdict": "passed", "dag_id": "seeded_0042"},
        {"image": "registry.example.com/team01/job02:1.3.0"},
        {"image": "registry.example.com/team01/job0"},  # no such repository: a name is not a prefix
        {"since": middle.isoformat(), "dag_id": "seeded_0003"},
        {"until": middle.isoformat(), "image": "registry.example.com/team12/job24"},
    ]
    for spec in filters:
        flt = imagegate.AuditFilter.parse(**spec)
        expected = {key for key, r in rows.items() if flt.matches(r) and key[0] in readable}
        found = _all_pages(session, flt, readable)
        assert {(r.dag_id, r.run_id, r.task_id) for r in found} == expected, spec
        stamps = [r.recorded_at for r in found]
        assert stamps == sorted(stamps, reverse=True), "newest first"
        if spec.get("verdict"):
            assert {r.verdict for r in found} <= {spec["verdict"]}, spec
    assert any(_all_pages(session, imagegate.AuditFilter.parse(verdict="waived"), readable)), "the seed has waivers"


def test_rows_outside_the_readable_dags_never_appear(seeded: tuple[Session, Seeded]) -> None:
    from airflow_plugin.audit import _query

    session, facts = seeded
    digest = next(d for d, records in facts.by_digest().items() if len({r["dag_id"] for r in records}) >= 1)
    owner = facts.by_digest()[digest][0]["dag_id"]
    assert _all_pages(session, imagegate.AuditFilter.parse(image=digest), {owner})
    assert _all_pages(session, imagegate.AuditFilter.parse(image=digest), {"seeded_9999"}) == []
    assert _query.find_runs(session, imagegate.AuditFilter(), set()).rows == []
    assert _all_pages(session, imagegate.AuditFilter.parse(dag_id=owner), {"seeded_9999"}) == []
    record = facts.by_digest()[digest][0]
    key = (record["dag_id"], record["run_id"], record["task_id"], -1)
    assert _query.find_one(session, key, {owner}) is not None
    assert _query.find_one(session, key, {"seeded_9999"}) is None


@pytest.mark.parametrize("cursor", ["", "x" * 2000, "bm90IGpzb24", "WzEsMiwzXQ", "WyJub3QgYSB0aW1lIiwxLCJ0IiwtMV0"])
def test_a_cursor_this_server_did_not_make_is_refused(cursor: str) -> None:
    from airflow_plugin.audit import _query

    with pytest.raises(_query.CursorError):
        _query.decode_cursor(cursor)


@pytest.mark.parametrize("outcomes", [("pass", "pass", "pass"), ("pass", "waived", "pass"), ("fail", "pass", "waived"),
                                      ("warn", "pass", "skipped")])
def test_the_record_summary_agrees_with_the_audit(outcomes: tuple[str, ...]) -> None:
    """push_record's stored verdict (what SQL filters on) is the audit's verdict of the same report."""
    from airflow_plugin import _gate

    results = tuple(imagegate.CheckResult(name, imagegate.Outcome(o), "enforce", "m", waiver="w (until 2030-01-01)" if o == "waived" else None)
                    for name, o in zip(("registry", "pinned", "non-root"), outcomes))
    pinned = f"registry.example.com/a/b:1@sha256:{'a' * 64}"
    report = imagegate.Report("registry.example.com/a/b:1", pinned, "docker", "linux/amd64", results)

    class TI:
        pushed: dict[str, Any] = {}

        def xcom_push(self, key: str, value: Any) -> None:
            self.pushed[key] = value

    ti = TI()
    launched = {"container_id": "c", "image_id": "sha256:" + "b" * 64} if report.passed else None
    _gate.push_record({"ti": ti}, report, launched)
    value = ti.pushed["imagegate"]
    audit = imagegate.AuditRow.from_record(value, dag_id="d", run_id="r", task_id="t")
    assert value["verdict"] == audit.verdict
    assert value["digest"] == audit.digest == "sha256:" + "a" * 64
    assert value["running"] == audit.running == (launched or {}).get("image_id")
    assert set(value) >= {"pinned", "launched", "report"}  # the record as before, plus the summary
