"""The measuring helpers of tasks/validation.py and tasks/drills.py, without servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tasks.drills import data_uri, render_chart
from tasks.validation import measure_db_workload, page_assets
from tbs_emergency.validation.drills import DrillRecord, drill_id, trend

pytestmark = pytest.mark.unit


class FakeDb:
    """A database that keeps rows in memory; `lose` drops rows on read (data loss)."""

    def __init__(self, lose: bool = False, fail_drop: bool = False, fail_write: bool = False):
        self.statements: list[str] = []
        self.rows: list[tuple[int, float]] = []
        self.lose, self.fail_drop, self.fail_write = lose, fail_drop, fail_write

    def execute(self, sql: str) -> None:
        self.query(sql)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        self.statements.append(sql)
        if sql.startswith("DROP") and self.fail_drop:
            raise RuntimeError("drop refused")
        if sql.startswith("SELECT"):
            lo = int(sql.split(">= ")[1].split()[0])
            hi = int(sql.split("< ")[1])
            got = [r for r in self.rows if lo <= r[0] < hi]
            return got[:-1] if self.lose else got
        return []

    def write_rows(self, table: str, keys: Any, cols: Any, rows: Any, delete: Any) -> None:
        if self.fail_write:
            raise RuntimeError("read-only")
        assert table.startswith("tbs_validation_perf_") and not delete
        self.rows += list(rows)


def test_workload_creates_writes_reads_back_and_drops_its_scratch_table() -> None:
    db = FakeDb()
    m = measure_db_workload(db, "heavydb", 0.05, 100)
    assert db.statements[0].startswith("CREATE TABLE tbs_validation_perf_")
    assert db.statements[-1] == f"DROP TABLE IF EXISTS {m['table']}"
    assert m["rows_written"] == m["rows_read"] >= 100 and m["batches_short"] == 0
    assert m["rows_per_s"] > 0 and m["dropped"]


def test_workload_reports_short_reads_and_a_failed_drop() -> None:
    m = measure_db_workload(FakeDb(lose=True, fail_drop=True), "mysql", 0.01, 10)
    assert m["batches_short"] >= 1
    assert not m["dropped"] and "drop refused" in m["drop_error"]


def test_workload_drops_the_table_even_when_writing_fails() -> None:
    db = FakeDb(fail_write=True)
    with pytest.raises(RuntimeError):
        measure_db_workload(db, "mysql", 1, 10)
    assert db.statements[-1].startswith("DROP TABLE IF EXISTS tbs_validation_perf_")


def test_page_assets_are_same_origin_only() -> None:
    html = """<link rel=stylesheet href="/static/app.css?v=3"><script src='js/app.js'></script>
    <img src="https://cdn.example.com/x.png"><img src="//other/y.png"><a href="/api/trades">t</a>
    <link href="/static/app.css">"""
    assert page_assets("http://127.0.0.1:8080", "/ui/", html) == [
        "/static/app.css",
        "/ui/js/app.js",
    ]


def test_chart_is_a_png_with_or_without_points() -> None:
    now = datetime(2025, 1, 24, 3, tzinfo=UTC)
    records = [
        DrillRecord(
            drill="rollback",
            id=drill_id("rollback", now + timedelta(days=i)),
            started_at=now + timedelta(days=i),
            finished_at=now,
            ok=True,
            rto_s=100.0 + 30 * i,
            rto_target_s=180,
        )
        for i in range(3)
    ] + [
        DrillRecord(
            drill="recovery",
            id=drill_id("recovery", now),
            started_at=now,
            finished_at=now,
            ok=True,
            rto_s=40.0,
            rpo_s=3600.0,
            rto_target_s=900,
        )
    ]
    png = render_chart(trend(records), 900, 180, None, "trend")
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert render_chart([], 900, 180, 600, "empty").startswith(b"\x89PNG")
    assert data_uri(b"\x89PNG").startswith("data:image/png;base64,iVBO")
