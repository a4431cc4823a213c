"""The checksum bisection diff over in-memory tables (MemoryTableSource, no servers)."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from decimal import Decimal
from typing import Any

import pytest

from tbs_emergency.integrity import (
    ColumnType,
    DiffOptions,
    Kind,
    MemoryTableSource,
    build_plan,
    diff_tables,
    with_text_groups,
)
from tbs_emergency.integrity.diff import plan_chunks, root_segment
from tbs_emergency.integrity.source import Segment

pytestmark = pytest.mark.unit

TRADE_TYPES = {
    "trade_id": ColumnType(Kind.INT, nullable=False),
    "symbol": ColumnType(Kind.TEXT),
    "quantity": ColumnType(Kind.INT, bits=32),
    "price": ColumnType(Kind.DECIMAL, 4),
    "executed_at": ColumnType(Kind.TIMESTAMP),
}
# The other store keeps price as DOUBLE and the time as an aware datetime: same data.
OTHER_TYPES = TRADE_TYPES | {"price": ColumnType(Kind.FLOAT)}
BASE = dt.datetime(2025, 1, 1)
SMALL = DiffOptions(bisection_factor=4, bisection_threshold=8, max_buckets=16)


def trades(n: int, start: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(7)
    return [
        {
            "trade_id": i,
            "symbol": rng.choice(["AAPL", "MSFT", "GOOGL", "BRK.B"]),
            "quantity": rng.randint(1, 500) * 10,
            "price": Decimal(rng.randint(100_000, 9_000_000)).scaleb(-4),
            "executed_at": BASE + dt.timedelta(seconds=37 * (i % 10**6)),
        }
        for i in range(start, start + n)
    ]


def as_other(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same rows as the other store returns them (float price, aware UTC time)."""
    return [
        r
        | {
            "price": float(r["price"]) if r["price"] is not None else None,
            "executed_at": r["executed_at"].replace(tzinfo=dt.UTC) if r["executed_at"] else None,
        }
        for r in rows
    ]


def run(
    left_rows: list[dict[str, Any]],
    right_rows: list[dict[str, Any]],
    options: DiffOptions = SMALL,
    key: tuple[str, ...] = ("trade_id",),
    left_types: dict[str, ColumnType] = TRADE_TYPES,
    right_types: dict[str, ColumnType] = OTHER_TYPES,
) -> Any:
    left = MemoryTableSource("heavydb", left_types, left_rows)
    right = MemoryTableSource("mysql", right_types, right_rows)
    plan, _ = build_plan("trades", list(key), [], left.describe(), right.describe())
    plan = with_text_groups(plan, left.profile(plan, count=False, text=True))
    return diff_tables(left, right, plan, options)


def test_identical_tables_are_consistent() -> None:
    rows = trades(500)
    d = run(rows, as_other(rows))
    assert d.consistent
    assert (d.rows_left, d.rows_right) == (500, 500)
    assert d.rows_compared == 0  # every bucket agreed: no row was read


def test_missing_extra_and_changed_rows_are_named() -> None:
    rows = trades(500)
    other = as_other(rows)
    del other[99]  # trade 100 missing on the right
    other.append(as_other(trades(1, start=1000))[0])  # trade 1000 extra on the right
    other[10]["price"] = other[10]["price"] + 0.0001  # trade 11: changed decimal
    other[20]["executed_at"] += dt.timedelta(seconds=1)  # trade 21: changed timestamp
    other[30]["symbol"] = "AAPX"  # trade 31: changed text, same length
    d = run(rows, other)
    assert d.only_left == [(100,)]
    assert d.only_right == [(1000,)]
    assert [(x.key, x.columns) for x in d.different] == [
        ((11,), ("price",)),
        ((21,), ("executed_at",)),
        ((31,), ("symbol",)),
    ]
    assert d.rows_compared < 200  # only the differing buckets were read row by row


def test_differences_at_segment_boundaries() -> None:
    rows = trades(256)
    left = MemoryTableSource("l", TRADE_TYPES, rows)
    right_rows = [dict(r) for r in rows]
    plan, _ = build_plan("trades", ["trade_id"], [], TRADE_TYPES, TRADE_TYPES)
    plan = with_text_groups(plan, left.profile(plan, text=True))
    # Bucket edges of every cut: first and last key, and keys either side of each width step.
    edges = {1, 16, 17, 32, 33, 64, 65, 128, 129, 255, 256}
    for r in right_rows:
        if r["trade_id"] in edges:
            r["quantity"] += 1
    right = MemoryTableSource("r", TRADE_TYPES, right_rows)
    d = diff_tables(left, right, plan, SMALL)
    assert sorted(x.key[0] for x in d.different) == sorted(edges)
    # Missing at both ends of the key range.
    right2 = MemoryTableSource("r", TRADE_TYPES, rows[1:-1])
    d2 = diff_tables(left, right2, plan, SMALL)
    assert d2.only_left == [(1,), (256,)] and not d2.only_right


def test_empty_tables() -> None:
    d = run([], [])
    assert d.consistent and (d.rows_left, d.rows_right) == (0, 0)
    d = run(trades(40), [])
    assert len(d.only_left) == 40 and not d.only_right
    d = run([], as_other(trades(40)))
    assert len(d.only_right) == 40


def test_whole_ranges_missing_are_answered_with_keys_at_once() -> None:
    rows = trades(2000)
    d = run(rows, as_other(rows[:1000]), DiffOptions(bisection_threshold=16, max_buckets=64))
    assert d.only_left == [(i,) for i in range(1001, 2001)]
    assert d.queries < 80


def test_nulls_and_empty_text() -> None:
    rows = trades(50)
    other = as_other(rows)
    rows[5]["symbol"] = None
    other[5]["symbol"] = ""  # '' and NULL are the same (HeavyDB)
    rows[6]["price"] = None
    other[6]["price"] = None
    rows[7]["quantity"] = None  # NULL against a value
    rows[8]["symbol"] = None  # NULL text against a value
    d = run(rows, other)
    assert [(x.key, x.columns) for x in d.different] == [((8,), ("quantity",)), ((9,), ("symbol",))]


def test_sparse_and_skewed_keys() -> None:
    rows = trades(300) + trades(5, start=10**15)  # live ids far away, as the sandbox has
    other = as_other(rows)
    other[150]["quantity"] += 10
    del other[-1]
    d = run(rows, other, DiffOptions(bisection_threshold=16, max_buckets=64))
    assert [x.key for x in d.different] == [(151,)]
    assert d.only_left == [(10**15 + 4,)]
    assert d.queries < 60


def test_duplicate_keys_are_reported() -> None:
    rows = trades(30)
    d = run([*rows, dict(rows[3])], as_other(rows))
    assert d.duplicate_left == [(4,)]


RESULT_TYPES = {
    "strategy_id": ColumnType(Kind.INT, bits=32),
    "run_date": ColumnType(Kind.DATE),
    "pnl": ColumnType(Kind.DECIMAL, 2),
    "sharpe": ColumnType(Kind.FLOAT),
}


def results(strategies: int, days: int) -> list[dict[str, Any]]:
    rng = random.Random(3)
    first = dt.date(2024, 9, 1)
    return [
        {
            "strategy_id": s,
            "run_date": first + dt.timedelta(days=d),
            "pnl": Decimal(rng.randint(-(10**6), 10**6)).scaleb(-2),
            "sharpe": round(rng.gauss(1.1, 0.6), 6),
        }
        for s in range(1, strategies + 1)
        for d in range(days)
    ]


def test_composite_keys() -> None:
    rows = results(6, 60)
    other = [dict(r) for r in rows]
    other[70]["pnl"] += Decimal("0.01")  # strategy 2, day 10
    del other[200]  # strategy 4, day 20
    other.append(
        {"strategy_id": 9, "run_date": dt.date(2024, 9, 1), "pnl": Decimal(1), "sharpe": 0.5}
    )
    d = run(
        rows, other, SMALL, key=("strategy_id", "run_date"),
        left_types=RESULT_TYPES, right_types=RESULT_TYPES,
    )  # fmt: skip
    day = 86400
    start = int(dt.datetime(2024, 9, 1, tzinfo=dt.UTC).timestamp())
    assert [x.key for x in d.different] == [(2, start + 10 * day)]
    assert d.only_left == [(4, start + 20 * day)]
    assert d.only_right == [(9, start)]
    assert d.display_keys(d.only_left) == [[4, "2024-09-21"]]


def test_composite_key_descends_into_the_second_column() -> None:
    # One strategy with many dates: the first column cannot be cut, the second is.
    rows = results(1, 400)
    other = [dict(r) for r in rows]
    other[123]["sharpe"] += 0.5
    d = run(
        rows, other, SMALL, key=("strategy_id", "run_date"),
        left_types=RESULT_TYPES, right_types=RESULT_TYPES,
    )  # fmt: skip
    assert len(d.different) == 1 and d.different[0].columns == ("sharpe",)
    assert d.rows_compared <= 2 * SMALL.bisection_threshold


def test_chunks_cover_the_key_range_and_merge() -> None:
    rows = trades(1000)
    other = as_other(rows)
    for i in (0, 333, 334, 999):
        other[i]["quantity"] += 1
    left = MemoryTableSource("l", TRADE_TYPES, rows)
    right = MemoryTableSource("r", OTHER_TYPES, other)
    plan, _ = build_plan("trades", ["trade_id"], [], TRADE_TYPES, OTHER_TYPES)
    plan = with_text_groups(plan, left.profile(plan, text=True))
    root = root_segment(left, right, plan)
    chunks = plan_chunks(root, 1000, chunk_rows=300, max_chunks=8)
    assert len(chunks) == 4 and chunks[0].lo == 1 and chunks[-1].hi == 1000
    assert all(a.hi + 1 == b.lo for a, b in itertools.pairwise(chunks))
    parts = [diff_tables(left, right, plan, SMALL, segment=c) for c in chunks]
    merged = parts[0]
    for p in parts[1:]:
        merged = merged.merge(p)
    assert [x.key[0] for x in merged.different] == [1, 334, 335, 1000]
    assert (merged.rows_left, merged.rows_right) == (1000, 1000)
    assert plan_chunks(None, 0, 10, 4) == []


def test_confirmation_drops_rows_that_agree_when_read_again() -> None:
    rows = trades(40)
    left = MemoryTableSource("l", TRADE_TYPES, rows)
    right = MemoryTableSource("r", TRADE_TYPES, [dict(r) for r in rows[:-1]])
    plan, _ = build_plan("trades", ["trade_id"], [], TRADE_TYPES, TRADE_TYPES)
    plan = with_text_groups(plan, left.profile(plan, text=True))

    real_checksums = right.checksums

    def late_write(*args: Any) -> Any:  # the missing row arrives while the diff runs
        out = real_checksums(*args)
        if len(right.data) < 40:
            right.data.append(dict(rows[-1]))
        return out

    right.checksums = late_write  # type: ignore[method-assign]
    d = diff_tables(left, right, plan, SMALL)
    assert d.consistent
    assert diff_tables(left, right, plan, SMALL, segment=Segment((), 1, 40)).consistent
