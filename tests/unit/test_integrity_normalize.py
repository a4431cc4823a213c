"""Normalisation rules and the checksum's Python statement (no servers)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from tbs_emergency.integrity import checksum as cs
from tbs_emergency.integrity.normalize import (
    FLOAT_DIGITS,
    ColumnSpec,
    ColumnType,
    Kind,
    SchemaMismatch,
    display,
    merge_types,
    native,
    normalize,
)
from tbs_emergency.integrity.plan import build_plan

pytestmark = pytest.mark.unit

DEC4 = ColumnSpec("price", Kind.DECIMAL, 4)
TS = ColumnSpec("at", Kind.TIMESTAMP)
DATE = ColumnSpec("day", Kind.DATE)
TEXT = ColumnSpec("symbol", Kind.TEXT, text_groups=1)
FLOAT = ColumnSpec("sharpe", Kind.FLOAT, FLOAT_DIGITS)


def test_decimals_compare_at_their_scale() -> None:
    assert normalize(Decimal("12.5"), DEC4) == normalize(Decimal("12.5000"), DEC4) == 125000
    assert normalize(12.5, DEC4) == 125000  # a DOUBLE in one store, DECIMAL in the other
    assert normalize(Decimal("12.3456"), DEC4) != normalize(Decimal("12.3457"), DEC4)
    assert normalize(-1.5, DEC4) == -15000 and normalize(2.00004, DEC4) == 20000
    assert display(125000, DEC4) == "12.5000"
    assert native(125000, DEC4) == Decimal("12.5000")


def test_timestamps_are_utc_seconds() -> None:
    naive = dt.datetime(2025, 1, 24, 10, 0, 0)
    aware = dt.datetime(2025, 1, 24, 12, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert normalize(naive, TS) == normalize(aware, TS) == 1737712800
    assert normalize(naive.replace(microsecond=999_999), TS) == 1737712800
    assert normalize(dt.date(2025, 1, 24), TS) == normalize(dt.datetime(2025, 1, 24), TS)
    assert display(1737712800, TS) == "2025-01-24T10:00:00Z"
    assert display(normalize(dt.date(2025, 1, 24), DATE), DATE) == "2025-01-24"
    assert native(1737712800, TS) == naive


def test_text_and_nulls() -> None:
    assert normalize("", TEXT) is None  # HeavyDB treats '' as NULL
    assert normalize(None, TEXT) is None
    assert normalize("AAPL", TEXT) == "AAPL"
    assert normalize(None, DEC4) is None
    assert normalize(True, ColumnSpec("b", Kind.INT)) == 1


def test_floats_round_at_six_places() -> None:
    assert normalize(1.1234564, FLOAT) == 1123456
    assert normalize(1.1234566, FLOAT) == 1123457
    assert normalize(Decimal("1.1234566"), FLOAT) == 1123457


def test_merge_types() -> None:
    dec = ColumnType(Kind.DECIMAL, 2)
    assert merge_types("x", dec, ColumnType(Kind.DECIMAL, 4)) == ColumnSpec("x", Kind.DECIMAL, 4)
    assert merge_types("x", dec, ColumnType(Kind.FLOAT)) == ColumnSpec("x", Kind.DECIMAL, 2)
    assert merge_types("x", ColumnType(Kind.INT), ColumnType(Kind.FLOAT)).kind == Kind.FLOAT
    assert (
        merge_types("x", ColumnType(Kind.DATE), ColumnType(Kind.TIMESTAMP)).kind == Kind.TIMESTAMP
    )
    assert merge_types("x", ColumnType(Kind.DATE), ColumnType(Kind.DATE)).kind == Kind.DATE
    with pytest.raises(SchemaMismatch, match="column x"):
        merge_types("x", ColumnType(Kind.TEXT), ColumnType(Kind.INT))


def test_build_plan_names_missing_columns_and_skips_uncomparable_ones() -> None:
    left = {"id": ColumnType(Kind.INT), "a": ColumnType(Kind.TEXT), "blob": ColumnType(Kind.OTHER)}
    right = {"ID": ColumnType(Kind.INT), "A": ColumnType(Kind.TEXT), "blob": ColumnType(Kind.OTHER)}
    plan, notes = build_plan("t", ["id"], [], left, right, ("heavydb", "mysql"))
    assert plan.key_names == ["id"] and plan.column_names == ["a"]
    assert notes and "blob" in notes[0]
    with pytest.raises(SchemaMismatch, match="does not exist in mysql"):
        build_plan(
            "t", ["id"], [], left | {"extra": ColumnType(Kind.INT)}, right, ("heavydb", "mysql")
        )
    with pytest.raises(SchemaMismatch, match="key column a"):
        build_plan("t", ["a"], [], left, right)


def test_tmod_truncates_like_sql() -> None:
    assert cs.tmod(7, 3) == 1 and cs.tmod(-7, 3) == -1 and cs.tmod(-6, 3) == 0


def test_checksum_sees_swapped_values_and_null_versus_value() -> None:
    specs = [ColumnSpec("id", Kind.INT), ColumnSpec("q", Kind.INT), ColumnSpec("r", Kind.INT)]
    a = [(1, 10, 20), (2, 30, 40)]
    swapped = [(1, 30, 20), (2, 10, 40)]  # column q swapped between rows: sums stay equal
    assert cs.segment_checksum(a, specs) != cs.segment_checksum(swapped, specs)
    assert cs.row_hash((1, None, 0), specs) != cs.row_hash((1, 0, 0), specs)
    assert cs.row_hash((1, 10, 20), specs) != cs.row_hash((1, 20, 10), specs)
    # keys swapped with their rows' values unchanged
    assert cs.segment_checksum(a, specs) != cs.segment_checksum([(2, 10, 20), (1, 30, 40)], specs)


def test_text_contributions() -> None:
    assert cs.text_contributions(None, 1) == [cs.NULL_MARK, 0]
    assert cs.text_contributions("", 1) == [cs.NULL_MARK, 0]
    assert cs.text_contributions("AB", 1) == [2, (65 << 48) + (66 << 40)]
    assert len(cs.text_contributions("x" * 20, 3)) == 4
    assert cs.text_groups_for(0) == 0 and cs.text_groups_for(7) == 1 and cs.text_groups_for(8) == 2
    assert cs.text_groups_for(10_000) == cs.MAX_TEXT_GROUPS
    # POSITION(c IN ALPHABET) + 31 is the ASCII code for every printable character but '\'
    for c in map(chr, range(32, 127)):
        if c != "\\":
            assert cs.ALPHABET.index(c) + 1 + cs.ALPHABET_OFFSET == ord(c)
    assert "\\" not in cs.ALPHABET


def test_sample_selector_is_in_range_and_depends_on_the_multiplier() -> None:
    ranks = [cs.sample_selector((k,), 12345) for k in range(1000)]
    assert all(0 <= r < cs.Q for r in ranks)
    assert ranks != [cs.sample_selector((k,), 54321) for k in range(1000)]
    assert cs.sample_selector((-5, 3), 7) >= 0
