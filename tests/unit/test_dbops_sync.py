"""Environment sync over in-memory tables: diff, watermark, batches, verify, rerun."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest

from tbs_emergency.dbops import sync
from tbs_emergency.errors import Refused
from tbs_emergency.integrity import ColumnType, Kind, MemoryTableSource

pytestmark = pytest.mark.unit

TYPES = {
    "trade_id": ColumnType(Kind.INT, nullable=False),
    "symbol": ColumnType(Kind.TEXT),
    "qty": ColumnType(Kind.INT),
    "price": ColumnType(Kind.DECIMAL, 2),
    "updated_at": ColumnType(Kind.TIMESTAMP),
}
T0 = dt.datetime(2025, 1, 24, 10, 0, 0)


def row(i: int, qty: int | None = None, at: dt.datetime = T0) -> dict[str, Any]:
    return {
        "trade_id": i,
        "symbol": f"S{i % 7}",
        "qty": i if qty is None else qty,
        "price": Decimal(i) / 4,
        "updated_at": at,
    }


class Store:
    """A MemoryTableSource (checksums) and a RowStore (whole rows) over the same list."""

    def __init__(self, name: str, rows: list[dict[str, Any]]) -> None:
        self.name = name
        self.source = MemoryTableSource(name, TYPES, rows)
        self.writes = 0
        self.fail_batch: int | None = None

    @property
    def data(self) -> list[dict[str, Any]]:
        return self.source.data

    def read_rows(
        self, table: str, key_columns: Sequence[str], keys: Sequence[Sequence[Any]]
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        wanted = {tuple(k) for k in keys}
        cols = list(TYPES)
        rows = [tuple(r[c] for c in cols) for r in self.data if (r["trade_id"],) in wanted]
        return cols, rows

    def write_rows(
        self,
        table: str,
        key_columns: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        delete_keys: Sequence[Sequence[Any]],
    ) -> None:
        self.writes += 1
        if self.fail_batch == self.writes:
            raise Refused(self.name, "write rows", "(1205) lock wait timeout")
        gone = {tuple(k) for k in delete_keys}
        kept = [r for r in self.data if (r["trade_id"],) not in gone]
        kept += [dict(zip(columns, r, strict=True)) for r in rows]
        self.data[:] = kept


SPEC = sync.TableSyncSpec(
    table="trades",
    source_table="trades",
    target_table="trades",
    key=["trade_id"],
    updated_column="updated_at",
)


def pair(n: int = 300) -> tuple[Store, Store]:
    blue = Store("mysql[blue]", [row(i) for i in range(1, n + 1)])
    green_rows = [row(i) for i in range(1, n + 1) if i % 10 != 0]  # 10% missing
    for r in green_rows:
        if r["trade_id"] % 7 == 0:
            r["qty"] = -1  # different
    green_rows += [row(i) for i in range(n + 1, n + 201)]  # extra
    return blue, Store("mysql[green]", green_rows)


def run(blue: Store, green: Store, **kw: Any) -> sync.TableSyncResult:
    return sync.sync_table(blue.source, green.source, blue, green, SPEC, **kw)


def test_plan_batches_orders_keys_and_caps_size() -> None:
    batches = sync.plan_batches([(5,), (1,), (9,)], [(2,), (7,)], size=2)
    assert [(b.upsert, b.delete) for b in batches] == [
        ([(1,)], [(2,)]),
        ([(5,)], [(7,)]),
        ([(9,)], []),
    ]


def test_sync_makes_the_target_identical_and_a_rerun_changes_nothing() -> None:
    blue, green = pair()
    result = run(blue, green, batch_size=50)
    assert result.ok, result.problems
    assert (result.to_insert, result.to_delete) == (30, 200)
    assert result.to_update == len([i for i in range(1, 301) if i % 7 == 0 and i % 10 != 0])
    assert (result.inserted, result.updated, result.deleted) == (
        result.to_insert,
        result.to_update,
        result.to_delete,
    )
    assert result.identical_after and result.remaining == 0
    assert result.batches == result.batches_applied == green.writes
    again = run(blue, green)
    assert again.ok and again.changed_nothing and again.batches == 0
    assert green.writes == result.batches
    assert any(a.outcome == "unchanged" for a in again.actions)


def test_dry_run_counts_and_writes_nothing() -> None:
    blue, green = pair(100)
    before = [dict(r) for r in green.data]
    result = run(blue, green, dry_run=True)
    assert green.writes == 0 and green.data == before
    assert result.to_insert == 10 and result.to_delete == 200
    assert not result.verified
    assert all(a.outcome == "planned" for a in result.actions)


def test_watermark_applies_only_recent_changes_and_says_what_it_left() -> None:
    later = T0 + dt.timedelta(hours=1)
    blue = Store("b", [row(1), row(2, qty=20, at=later), row(3, at=later)])
    green = Store("g", [row(1, qty=99), row(2), row(5), row(6, at=later)])
    result = run(blue, green, since=T0 + dt.timedelta(minutes=30))
    assert result.ok, result.problems
    ids = sorted(r["trade_id"] for r in green.data)
    assert ids == [1, 2, 3, 5]  # 3 inserted, 6 (recent) deleted, 5 (old) left
    assert next(r for r in green.data if r["trade_id"] == 2)["qty"] == 20
    assert next(r for r in green.data if r["trade_id"] == 1)["qty"] == 99  # old: left
    assert result.older_than_watermark == 2
    assert result.remaining == 2 and not result.identical_after
    assert any("older than the watermark" in n for n in result.notes)


def test_watermark_without_updated_column_is_refused() -> None:
    blue, green = pair(10)
    spec = SPEC.model_copy(update={"updated_column": None})
    result = sync.sync_table(
        blue.source, green.source, blue, green, spec, since="2025-01-01T00:00:00Z"
    )
    assert not result.ok and "updated_column" in result.problems[0]
    assert green.writes == 0


def test_a_failed_batch_stops_the_sync_and_a_rerun_finishes_it() -> None:
    blue, green = pair(100)
    green.fail_batch = 2
    first = run(blue, green, batch_size=40)
    assert not first.ok and first.batches_applied == 1
    assert "rolled back" in first.problems[0]
    green.fail_batch = None
    second = run(blue, green, batch_size=40)
    assert second.ok and second.identical_after


def test_since_parsing() -> None:
    assert sync.parse_since("2025-01-24T10:00:00+01:00") == dt.datetime(2025, 1, 24, 9, 0)
    assert sync.parse_since(None) is None


def test_traffic_guard_never_writes_to_the_live_environment_unless_forced() -> None:
    assert sync.traffic_guard("blue", "green", force=False, dry_run=False) == (True, None)
    allowed, why = sync.traffic_guard("green", "green", force=False, dry_run=False)
    assert not allowed and why is not None and "green has the traffic" in why
    allowed, why = sync.traffic_guard(None, "green", force=False, dry_run=False)
    assert not allowed and why is not None and "unknown" in why
    assert sync.traffic_guard("green", "green", force=True, dry_run=False)[0]
    allowed, why = sync.traffic_guard("green", "green", force=False, dry_run=True)
    assert allowed and why is not None and "would refuse" in why
