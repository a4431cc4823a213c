"""From configuration and the two stores' catalogs to a `TablePlan` both sides agree on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tbs_emergency.integrity.checksum import text_groups_for
from tbs_emergency.integrity.normalize import (
    KEY_KINDS,
    ColumnType,
    Kind,
    SchemaMismatch,
    merge_types,
)
from tbs_emergency.integrity.source import Profile, TablePlan


def build_plan(
    table: str,
    key: Sequence[str],
    columns: Sequence[str],
    left: Mapping[str, ColumnType],
    right: Mapping[str, ColumnType],
    names: tuple[str, str] = ("left", "right"),
) -> tuple[TablePlan, list[str]]:
    """The plan for `table` and notes on columns left out (types integrity cannot compare).

    `columns` empty means every column of either store. Raises SchemaMismatch, naming the
    column and the store, when a key or a requested column is missing or cannot be compared.
    """
    lmap = {k.lower(): (k, v) for k, v in left.items()}
    rmap = {k.lower(): (k, v) for k, v in right.items()}
    notes: list[str] = []

    def pair(name: str) -> tuple[ColumnType, ColumnType]:
        lo = name.lower()
        missing = [n for n, m in zip(names, (lmap, rmap), strict=True) if lo not in m]
        if missing:
            raise SchemaMismatch(f"column {name} does not exist in {' and '.join(missing)}")
        return lmap[lo][1], rmap[lo][1]

    key_specs = []
    for name in key:
        spec = merge_types(name, *pair(name))
        if spec.kind not in KEY_KINDS:
            raise SchemaMismatch(
                f"key column {name} is {spec.kind}: keys must be integers, decimals, dates or"
                " timestamps to be cut into ranges"
            )
        key_specs.append(spec)
    key_lower = {k.lower() for k in key}

    if columns:
        wanted = [c for c in columns if c.lower() not in key_lower]
    else:
        wanted = [orig for lo, (orig, _) in lmap.items() if lo not in key_lower]
        extra = [orig for lo, (orig, _) in rmap.items() if lo not in lmap and lo not in key_lower]
        wanted += extra
    col_specs = []
    for name in wanted:
        a, b = pair(name)
        if not columns and Kind.OTHER in (a.kind, b.kind):
            notes.append(f"column {name} not compared: type {a} / {b} is not comparable")
            continue
        col_specs.append(merge_types(name, a, b))
    return TablePlan(table, tuple(key_specs), tuple(col_specs)), notes


def with_text_groups(plan: TablePlan, profile: Profile) -> TablePlan:
    """The plan with each text column reading enough 7-byte groups for the longest value one
    store holds (at least one group; see checksum.py for why one store is enough)."""
    groups = {
        c.name: max(1, text_groups_for(profile.text_bytes.get(c.name, 0)))
        for c in plan.columns
        if c.is_text
    }
    return plan.with_text_groups(groups)
