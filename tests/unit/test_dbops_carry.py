"""Carrying green's acknowledged writes (tbs_emergency/dbops/carry.py): the pure parts.

The ledger's keys against a store's keys through the integrity engine (KeySetSource against
MemoryTableSource), and the carry over in-memory stores that follow the connectors' row
protocols (read_rows / insert_rows_if_absent). The real servers: tests/integration.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from tbs_emergency.dbops.carry import (
    LEDGER,
    CarryTarget,
    KeyRange,
    KeySetSource,
    TableStores,
    carry_key_ranges,
    carry_writes,
    choose_authority,
    key_plan,
    key_ranges,
    ledger_keys,
    missing_keys,
)
from tbs_emergency.integrity import ColumnType, DiffOptions, Kind, MemoryTableSource, diff_tables
from tbs_emergency.integrity.source import Segment

pytestmark = pytest.mark.unit

G = 2 * 10**15
B = 1 * 10**15
TYPES = {"trade_id": ColumnType(Kind.INT, nullable=False), "qty": ColumnType(Kind.INT)}


def w(key: int, store: str = "mysql", at: str = "2026-01-01T00:00:00.000Z") -> dict[str, Any]:
    return {"table": "trades", "store": store, "key": {"trade_id": key}, "at": at}


def test_ledger_keys_takes_acknowledged_writes_only_and_dedups() -> None:
    writes = [
        w(G + 1, at="t1"),
        w(G + 1, "heavydb", "t2"),
        w(G + 2, at="t3"),
        w(G + 1, at="t4"),
        {"table": "orders", "store": "mysql", "key": {"a": 1, "b": 2}, "at": "t5"},
    ]
    tables = ledger_keys(writes)
    t = tables["trades"]
    assert t.key_columns == ("trade_id",)
    assert t.keys == [(G + 1,), (G + 2,)]
    assert t.entries == 3 and t.first_at == "t1" and t.last_at == "t4"
    assert tables["orders"].keys == [(1, 2)] and tables["orders"].key_columns == ("a", "b")


def test_ledger_keys_refuses_an_entry_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="no table or key"):
        ledger_keys([w(1), {"table": "trades", "store": "mysql", "at": "x"}])
    with pytest.raises(ValueError, match="keyed by"):
        ledger_keys([w(1), {"table": "trades", "store": "mysql", "key": {"id": 1}}])


def test_key_ranges_and_missing_keys() -> None:
    assert key_ranges([7, 1, 3, 2, 2, 9, 8]) == [(1, 3), (7, 9)]
    assert key_ranges([]) == []
    assert missing_keys([(1,), (2,), (3,)], {(2,)}) == [(1,), (3,)]


@pytest.mark.parametrize("n_missing", [0, 1, 37, 3000])
def test_keyset_against_a_store_finds_exactly_the_missing_keys(n_missing: int) -> None:
    rng = random.Random(n_missing)
    ledger = sorted(rng.sample(range(G, G + 10**9), 5000))
    gone = set(rng.sample(ledger, n_missing))
    # the store: blue's own rows (other range), the ledgered rows it holds, an unledgered one
    rows = [{"trade_id": B + i, "qty": 1} for i in range(200)]
    rows += [{"trade_id": k, "qty": 2} for k in ledger if k not in gone]
    rows.append({"trade_id": G + 10**9 + 5, "qty": 3})
    store = MemoryTableSource("mysql[blue]", TYPES, rows)
    plan = key_plan("trades", ["trade_id"], store.describe())
    keys = KeySetSource("ledger", {}, [(k,) for k in ledger])
    seg = Segment((), ledger[0], ledger[-1])
    opts = DiffOptions(bisection_factor=8, bisection_threshold=64, max_buckets=256, confirm=False)
    diff = diff_tables(keys, store, plan, opts, segment=seg)
    assert sorted(k[0] for k in diff.only_left) == sorted(gone)
    assert diff.only_right == [] and diff.different == []


def test_key_plan_needs_the_key_in_the_target() -> None:
    with pytest.raises(ValueError, match="does not exist"):
        key_plan("trades", ["id"], TYPES)


class MemoryStore:
    """A table in memory with the connectors' row protocols, seen by the integrity engine."""

    def __init__(self, name: str, rows: list[dict[str, Any]], fail_reads: bool = False) -> None:
        self.name = name
        self.data = {r["trade_id"]: dict(r) for r in rows}
        self.fail_reads = fail_reads
        self.inserts = 0

    @property
    def check(self) -> MemoryTableSource:
        return MemoryTableSource(self.name, TYPES, list(self.data.values()))

    def read_rows(
        self, table: str, key_columns: Sequence[str], keys: Sequence[Sequence[Any]]
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        if self.fail_reads:
            raise ConnectionError(f"{self.name} is down")
        want = {k[0] for k in keys}
        rows = [(r["trade_id"], r["qty"]) for k, r in sorted(self.data.items()) if k in want]
        return ["trade_id", "qty"], rows

    def insert_rows_if_absent(
        self,
        table: str,
        key_columns: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> int:
        n = 0
        for r in rows:
            d = dict(zip(columns, r, strict=True))
            if d["trade_id"] not in self.data:
                self.data[d["trade_id"]] = d
                n += 1
        self.inserts += 1
        return n


class LiveCheck:
    """The integrity view of a MemoryStore as it is now (rows change during the carry)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.name = store.name

    def __getattr__(self, item: str) -> Any:
        return getattr(self.store.check, item)


def _stores(blue: MemoryStore, sources: list[MemoryStore]) -> Any:
    def stores_for(_t: Any) -> TableStores:
        target = CarryTarget(
            system=blue.name,
            table="trades",
            check=LiveCheck(blue),  # type: ignore[arg-type]
            sink=blue,
            sources=[(s, "trades") for s in sources],
        )
        return TableStores([target])

    return stores_for


def test_carry_copies_what_blue_lacks_then_verifies() -> None:
    green_rows = [{"trade_id": G + i, "qty": i} for i in range(50)]
    green = MemoryStore("mysql[green]", green_rows)
    blue = MemoryStore("mysql[blue]", [{"trade_id": B + 1, "qty": 0}, *green_rows[:20]])
    writes = [w(G + i, at=f"2026-01-01T00:00:{i:02d}.000Z") for i in range(50)]
    res = carry_writes(writes, _stores(blue, [green]), since="2026-01-01T00:00:00Z")
    assert res.ok, res.lines()
    t = res.tables[0].targets[0]
    assert (t.ledgered, t.missing_before, t.copied, t.still_missing) == (50, 30, 30, 0)
    assert t.copied_from == {"mysql[green]": 30}
    assert res.missing == 0 and res.copied == 30
    assert res.watermark == "2026-01-01T00:00:49.000Z"
    assert blue.data[G + 49] == {"trade_id": G + 49, "qty": 49}
    # a rerun finds everything there and copies nothing
    again = carry_writes(writes, _stores(blue, [green]))
    assert again.ok and again.copied == 0
    assert "nothing copied (already there)" in " ".join(again.lines())


def test_carry_with_nothing_ledgered_is_not_a_pass() -> None:
    blue = MemoryStore("mysql[blue]", [])
    res = carry_writes([w(G, "heavydb")], _stores(blue, []), since="2026-01-01T00:00:00Z")
    assert res.nothing_to_carry and res.ledger_entries == 0
    assert "nothing to carry, nothing verified" in res.lines()[0]
    assert res.tables == []


def test_carry_falls_back_to_the_next_source_and_reports_what_no_source_has() -> None:
    green_mysql = MemoryStore("mysql[green]", [], fail_reads=True)  # lost
    green_heavy = MemoryStore("heavydb[green]", [{"trade_id": G + i, "qty": i} for i in range(8)])
    blue = MemoryStore("mysql[blue]", [])
    writes = [w(G + i) for i in range(10)]  # keys 8 and 9 reached no HeavyDB flush
    res = carry_writes(writes, _stores(blue, [green_mysql, green_heavy]))
    assert not res.ok
    t = res.tables[0].targets[0]
    assert t.copied == 8 and t.copied_from == {"heavydb[green]": 8}
    assert t.still_missing == 2 and t.sample_missing == [G + 8, G + 9]
    assert res.missing == 2
    assert any("mysql[green] is down" in p for p in res.problems)


def test_carry_dry_run_changes_nothing() -> None:
    green = MemoryStore("mysql[green]", [{"trade_id": G, "qty": 1}])
    blue = MemoryStore("mysql[blue]", [])
    res = carry_writes([w(G)], _stores(blue, [green]), dry_run=True)
    assert not res.ok and blue.data == {} and blue.inserts == 0
    assert res.tables[0].targets[0].missing_before == 1


def test_carry_reports_a_table_without_a_store() -> None:
    def stores_for(_t: Any) -> TableStores:
        raise KeyError("trades")

    res = carry_writes([w(G)], stores_for)
    assert not res.ok and res.missing == 1
    assert "no store to carry to" in res.problems[0]


# -- without the ledger: green's MySQL over green's key range ----------------------------------

GREEN_RANGE = KeyRange("trades", ("trade_id",), G, 3 * 10**15 - 1)
BLUE_RANGE = KeyRange("trades", ("trade_id",), B, G - 1)


def test_choose_authority_prefers_the_ledger_whenever_it_was_read() -> None:
    c = choose_authority("green", None, [GREEN_RANGE], "green's MySQL is down too")
    assert c.authority == LEDGER and c.reason is None and not c.problems


def test_choose_authority_falls_back_to_green_mysql_key_range() -> None:
    c = choose_authority(
        "green",
        "app[green]: read the write ledger: connection refused",
        [GREEN_RANGE],
        None,
        {"trades": True, "strategy_results": False},
    )
    assert c.authority == "green mysql key range"
    assert c.reason == "green's ledger cannot be read: app[green]: read the write ledger:" + (
        " connection refused"
    )
    assert c.ranges == [GREEN_RANGE] and not c.problems
    # a table without a range: unknown whether green wrote it; critical ones are problems
    assert len(c.notes) == 1 and c.notes[0].startswith("strategy_results: no key range")


def test_choose_authority_names_an_uncovered_critical_table_as_a_problem() -> None:
    c = choose_authority("green", "503", [GREEN_RANGE], None, {"trades": True, "orders": True})
    assert c.authority == "green mysql key range"
    assert len(c.problems) == 1 and c.problems[0].startswith("orders: no key range for green")


@pytest.mark.parametrize(
    ("ranges", "mysql_error", "says"),
    [
        ([], None, "no table has a key range for green"),
        ([GREEN_RANGE], "connection refused", "green's MySQL cannot be read either"),
    ],
)
def test_choose_authority_without_ledger_or_mysql_trusts_nothing(
    ranges: list[KeyRange], mysql_error: str | None, says: str
) -> None:
    c = choose_authority("green", "connection refused", ranges, mysql_error, {"trades": True})
    assert c.authority is None and c.ranges == []
    assert len(c.problems) == 1 and says in c.problems[0] and "unknown" in c.problems[0]
    assert c.reason == "green's ledger cannot be read: connection refused"


def _range_carry(green: MemoryStore, blue: MemoryStore, heavy: MemoryStore | None = None) -> Any:
    choice = choose_authority("green", "connection refused", [GREEN_RANGE], None, {"trades": True})

    def stores_for(_r: Any) -> TableStores:
        targets = _stores(blue, [green])(_r).targets
        if heavy is not None:
            targets.append(
                CarryTarget(heavy.name, "trades", LiveCheck(heavy), heavy, [(blue, "trades")])  # type: ignore[arg-type]
            )
        return TableStores(targets, critical=True)

    return carry_key_ranges(
        choice,
        lambda _r: LiveCheck(green),  # type: ignore[arg-type,return-value]
        stores_for,
        since="2026-01-01T00:00:00.000Z",
    )


def test_carry_by_key_range_copies_green_rows_blue_lacks_and_leaves_the_rest() -> None:
    green_rows = [{"trade_id": G + 3 * i, "qty": i} for i in range(400)]
    # green's MySQL also holds the seeded rows and a row of blue's range (replicated): not green's
    green = MemoryStore(
        "mysql[green]",
        [{"trade_id": 5, "qty": 1}, {"trade_id": B + 9, "qty": 1}, *green_rows],
    )
    blue = MemoryStore("mysql[blue]", [{"trade_id": B + 1, "qty": 0}, *green_rows[:150]])
    heavy = MemoryStore("heavydb[blue]", green_rows[:10])
    res = _range_carry(green, blue, heavy)
    assert res.ok, res.lines()
    assert res.authority == "green mysql key range"
    assert res.authority_reason == "green's ledger cannot be read: connection refused"
    my, hv = res.tables[0].targets
    assert (my.ledgered, my.missing_before, my.copied, my.still_missing) == (400, 250, 250, 0)
    assert (hv.ledgered, hv.missing_before, hv.copied, hv.still_missing) == (400, 390, 390, 0)
    assert 5 not in blue.data and B + 9 not in blue.data  # outside green's range: untouched
    assert res.missing == 0 and res.copied == 640
    # the ledger's watermark is not advanced by a carry that did not read the ledger
    assert res.watermark == "2026-01-01T00:00:00.000Z"
    doc = res.summary()
    assert doc["authority"] == "green mysql key range"
    assert doc["key_ranges"] == [
        {"table": "trades", "key": "trade_id", "lo": G, "hi": 3 * 10**15 - 1}
    ]
    assert res.lines()[0].startswith("authority: green mysql key range (green's ledger cannot")
    again = _range_carry(green, blue, heavy)
    assert again.ok and again.copied == 0


def test_carry_by_key_range_with_nothing_in_green_range_is_nothing_to_carry() -> None:
    green = MemoryStore("mysql[green]", [{"trade_id": 5, "qty": 1}])
    res = _range_carry(green, MemoryStore("mysql[blue]", []))
    assert res.nothing_to_carry and not res.problems and res.tables[0].targets[0].ledgered == 0
    assert "no row in its key range" in res.lines()[1]


def test_carry_by_key_range_reports_rows_it_could_not_carry() -> None:
    green = MemoryStore("mysql[green]", [{"trade_id": G + i, "qty": i} for i in range(5)])

    class Refusing(MemoryStore):
        def insert_rows_if_absent(self, *a: Any, **k: Any) -> int:
            raise ConnectionError("blue refuses writes")

    refusing = Refusing("mysql[blue]", [])
    res = _range_carry(green, refusing)
    assert not res.ok and res.missing == 5
    assert any("blue refuses writes" in p for p in res.problems)
    assert res.tables[0].targets[0].sample_missing == [G + i for i in range(5)]
