"""Sampled comparison, expectation suites as data, and the sweep report (no servers)."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tbs_emergency.integrity import ColumnType, Kind, MemoryTableSource, build_plan, sample_compare
from tbs_emergency.integrity.diff import TableDiff
from tbs_emergency.integrity.expectations import (
    ExpectationOutcome,
    describe_spec,
    parity_suite,
    sample_records,
    sample_suite,
)
from tbs_emergency.integrity.plan import with_text_groups
from tbs_emergency.integrity.report import SweepReport, TableResult

pytestmark = pytest.mark.unit

TYPES = {
    "id": ColumnType(Kind.INT, nullable=False),
    "v": ColumnType(Kind.INT),
    "at": ColumnType(Kind.TIMESTAMP),
}


def rows(n: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "v": i * 3, "at": dt.datetime(2025, 1, 1) + dt.timedelta(minutes=i)}
        for i in range(1, n + 1)
    ]


def sources(left_rows: list[dict[str, Any]], right_rows: list[dict[str, Any]]) -> tuple[Any, ...]:
    left = MemoryTableSource("heavydb", TYPES, left_rows)
    right = MemoryTableSource("mysql", TYPES, right_rows)
    plan, _ = build_plan("t", ["id"], [], TYPES, TYPES)
    return left, right, with_text_groups(plan, left.profile(plan, text=True))


def test_identical_samples_agree_and_have_the_requested_size() -> None:
    left, right, plan = sources(rows(5000), rows(5000))
    s = sample_compare(left, right, plan, 200, seed=42, rows_hint=5000)
    assert s.diff.consistent
    assert s.compared == 200 and len(s.left_rows) == len(s.right_rows) == 200
    again = sample_compare(left, right, plan, 200, seed=42, rows_hint=5000)
    assert [r[0] for r in again.left_rows] == [r[0] for r in s.left_rows]  # reproducible
    other = sample_compare(left, right, plan, 200, seed=43, rows_hint=5000)
    assert [r[0] for r in other.left_rows] != [r[0] for r in s.left_rows]


def test_sample_names_missing_and_different_keys_it_sees() -> None:
    data = rows(300)
    other = [dict(r) for r in data if r["id"] != 17]
    other[40]["v"] = -1  # id 42
    other.append({"id": 999, "v": 0, "at": None})
    left, right, plan = sources(data, other)
    with ThreadPoolExecutor(1) as pool:
        s = sample_compare(left, right, plan, 10_000, seed=1, executor=pool)
    assert s.diff.only_left == [(17,)]
    assert s.diff.only_right == [(999,)]
    assert [d.key for d in s.diff.different] == [(42,)]


def test_sample_cut_does_not_invent_missing_keys() -> None:
    # The right side lacks many rows: its sample reaches further down the ranking. Keys beyond
    # the left sample's last rank are cut, not reported as missing on the left.
    data = rows(2000)
    left, right, plan = sources(data, data[::2])
    s = sample_compare(left, right, plan, 100, seed=5)
    assert not s.diff.only_right
    assert s.diff.only_left and all(k[0] % 2 == 0 for k in s.diff.only_left)


def test_expectation_suites_from_the_plan() -> None:
    _left, right, plan = sources(rows(10), rows(10))
    other = right.profile(plan, ranges=True)
    suite = sample_suite(plan, other)
    types = [s.type for s in suite]
    assert types[:2] == ["ExpectColumnValuesToNotBeNull", "ExpectColumnValuesToBeUnique"]
    between = [s for s in suite if s.type == "ExpectColumnValuesToBeBetween"]
    assert {s.kwargs["column"] for s in between} == {"v", "at"}
    at = next(s for s in between if s.kwargs["column"] == "at")
    assert describe_spec(plan, at) == "at between 2025-01-01T00:01:00Z and 2025-01-01T00:10:00Z"
    assert parity_suite()[0].type == "ExpectColumnPairValuesToBeEqual"
    assert sample_records(plan, [(1, 3, 60)]) == [{"id": 1, "v": 3, "at": 60}]


def _result(**kw: Any) -> TableResult:
    return TableResult("trades", "blue", "heavydb[blue]", "mysql[blue]", **kw)


def test_report_status_json_and_exit_codes() -> None:
    _, _, plan = sources([], [])
    diff = TableDiff(plan, "heavydb[blue]", "mysql[blue]")
    diff.only_right = [(i,) for i in range(250)]
    bad = _result(heavydb_rows=10, mysql_rows=260, full=diff, mode="full")
    doc = bad.to_json(cap=100)
    assert doc["status"] == "discrepancies" and not doc["consistent"]
    assert len(doc["missing_in_heavydb"]) == 100 and doc["missing_in_heavydb_count"] == 250
    assert doc["missing_in_heavydb_truncated"] and doc["missing_in_mysql"] == []
    assert "row counts differ: heavydb 10, mysql 260" in doc["problems"]
    ok = _result(heavydb_rows=5, mysql_rows=5, sample=TableDiff(plan, "a", "b"))
    err = _result(error="heavydb[blue]: connect unreachable: refused")
    ge = _result(
        heavydb_rows=5,
        mysql_rows=5,
        expectations=[ExpectationOutcome("trades.sample", "mysql sample", False, 3, [{"x": 1}])],
    )
    assert ok.status == "consistent" and err.status == "error" and ge.status == "discrepancies"
    assert SweepReport([ok]).exit_code == 0
    assert SweepReport([ok, err]).exit_code == 2
    assert SweepReport([ok, err, bad]).exit_code == 1
    assert SweepReport([]).exit_code == 2
    full = SweepReport([ok, err]).to_json()
    assert full["consistent"] is False and full["complete"] is False
    assert {"table", "heavydb_rows", "mysql_rows", "missing_in_heavydb", "missing_in_mysql"} <= set(
        full["tables"][0]
    )
