"""Flashback: undoing the row changes made since T on chosen tables.

The ROW binlog holds every changed row's before-image (binlog_row_image=FULL). Undoing a change
means applying its inverse, newest first: an INSERT is undone by deleting the row, a DELETE by
inserting the before-image again, an UPDATE by writing the before-image back.

The plan built here is what a person reads (`--dry-run`): the inverse statements as SQL with
column names, the rows touched per table, and the reasons a flashback must not be applied (a
table was altered or truncated inside the window: its old row images no longer fit it). The
flashback itself applies the binlog's exact row images (`mariadb-binlog --flashback`) in one
transaction, so the values shown here (decoded from text, see binlog.py) are never written.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from tbs_emergency.recovery.binlog import (
    ColumnType,
    Decoded,
    RawValue,
    RowChange,
    decode_value,
    sql_literal,
)
from tbs_emergency.recovery.manifest import BinlogCoordinates

_DDL = re.compile(r"^\s*(ALTER|DROP|TRUNCATE|RENAME|CREATE|OPTIMIZE|REPAIR)\b", re.I)


@dataclass(frozen=True)
class TableInfo:
    database: str
    name: str
    columns: Sequence[ColumnType]
    primary_key: Sequence[str]

    def key_positions(self) -> list[int]:
        names = [c.name for c in self.columns]
        return [names.index(k) for k in self.primary_key]


class FlashbackPlan(BaseModel):
    flashback_id: str
    database: str
    tables: list[str]
    since: datetime
    start_file: str
    until: BinlogCoordinates
    changes: dict[str, dict[str, int]] = Field(default_factory=dict)
    row_delta: dict[str, int] = Field(default_factory=dict)
    statements: list[str] = Field(default_factory=list)
    # (not named `keys`: Prefect takes any object with a `keys` attribute for a mapping)
    touched_keys: dict[str, list[list[Any]]] = Field(default_factory=dict)
    refusals: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    # Chosen tables on a non-transactional engine (table -> engine): refused, bad input.
    non_transactional: dict[str, str] = Field(default_factory=dict)

    @property
    def total_changes(self) -> int:
        return sum(sum(c.values()) for c in self.changes.values())

    @property
    def applicable(self) -> bool:
        return not self.refusals

    def describe(self) -> list[str]:
        lines = [
            f"flashback {self.flashback_id}: undo row changes on {self.database}"
            f" ({', '.join(self.tables)}) since {self.since.isoformat()}"
            f" up to binlog {self.until}",
        ]
        for t in self.tables:
            c = self.changes.get(t, {})
            lines.append(
                f"  {t}: {c.get('insert', 0)} insert(s), {c.get('update', 0)} update(s),"
                f" {c.get('delete', 0)} delete(s) to undo; row count changes by"
                f" {self.row_delta.get(t, 0):+d}"
            )
        lines += [f"refused: {r}" for r in self.refusals]
        lines += [f"warning: {w}" for w in self.warnings]
        return lines


# Engines whose changes roll back (MySQLTableLayout.transactional says the same for backups).
TRANSACTIONAL_ENGINES = ("innodb", "xtradb", "rocksdb")


def non_transactional(engines: dict[str, str]) -> dict[str, str]:
    """The tables (of table -> ENGINE from information_schema.TABLES) a flashback refuses:
    MyISAM, Aria, MEMORY, ... cannot undo a change in one transaction, nor lock rows."""
    return {
        t: e or "unknown"
        for t, e in sorted(engines.items())
        if (e or "").lower() not in TRANSACTIONAL_ENGINES
    }


def non_transactional_refusals(database: str, bad: dict[str, str]) -> list[str]:
    return [
        f"table {database}.{t} uses the {e} engine, which is not transactional: flashback"
        " undoes changes in one transaction and needs InnoDB; nothing was done"
        for t, e in bad.items()
    ]


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _decoded_row(images: list[RawValue], info: TableInfo) -> tuple[list[Any], bool, bool]:
    values: list[Any] = []
    ambiguous = approximate = False
    for raw, col in zip(images, info.columns, strict=False):
        v = decode_value(raw, col)
        values.append(v.value)
        ambiguous |= v.ambiguous
        approximate |= v.approximate
    return values, ambiguous, approximate


def _where(info: TableInfo, row: list[Any]) -> str:
    cols = list(info.primary_key) or [c.name for c in info.columns]
    names = [c.name for c in info.columns]
    parts = []
    for c in cols:
        v = row[names.index(c)]
        parts.append(f"{_ident(c)} IS NULL" if v is None else f"{_ident(c)} = {sql_literal(v)}")
    return " AND ".join(parts)


def inverse_statement(change: RowChange, info: TableInfo) -> tuple[str, bool, bool]:
    """The SQL that undoes one row change, and whether shown values are ambiguous/approximate."""
    table = f"{_ident(info.database)}.{_ident(info.name)}"
    names = [c.name for c in info.columns]
    if change.kind == "insert":
        after, amb, approx = _decoded_row(change.after or [], info)
        return f"DELETE FROM {table} WHERE {_where(info, after)} LIMIT 1;", amb, approx
    if change.kind == "delete":
        before, amb, approx = _decoded_row(change.before or [], info)
        cols = ", ".join(_ident(n) for n in names[: len(before)])
        vals = ", ".join(sql_literal(v) for v in before)
        return f"INSERT INTO {table} ({cols}) VALUES ({vals});", amb, approx
    before, amb1, approx1 = _decoded_row(change.before or [], info)
    after, amb2, approx2 = _decoded_row(change.after or [], info)
    sets = [
        f"{_ident(n)} = {sql_literal(b)}"
        for n, b, a in zip(names, before, after, strict=False)
        if b != a
    ] or [f"{_ident(names[0])} = {sql_literal(before[0])}"]
    return (
        f"UPDATE {table} SET {', '.join(sets)} WHERE {_where(info, after)} LIMIT 1;",
        amb1 or amb2,
        approx1 or approx2,
    )


def change_keys(change: RowChange, info: TableInfo) -> list[tuple[Any, ...]]:
    """The key values a change touched (an UPDATE that changed its key touches two)."""
    positions = info.key_positions() if info.primary_key else list(range(len(info.columns)))
    keys = []
    for images in (change.before, change.after):
        if images:
            row, _, _ = _decoded_row(images, info)
            keys.append(tuple(row[p] for p in positions))
    return list(dict.fromkeys(keys))


def window_refusals(decoded: Decoded, database: str, tables: Iterable[str]) -> list[str]:
    """Statements inside the window that make the old row images unusable for these tables."""
    out = []
    wanted = set(tables)
    for st in decoded.statements:
        if not _DDL.match(st.sql):
            continue
        lowered = st.sql.lower()
        for t in wanted:
            if re.search(rf"(?<![\w$]){re.escape(t.lower())}(?![\w$])", lowered) and (
                st.database in (None, database) or f"{database.lower()}." in lowered
            ):
                verb = st.sql.split()[0].upper()
                out.append(
                    f"table {t} was changed by {verb} at {st.at.isoformat()} (binlog"
                    f" {st.file or '?'}:{st.position}): row images from before it do not fit"
                    " the table any more; use point-in-time recovery instead"
                )
    return out


def build_plan(
    flashback_id: str,
    decoded: Decoded,
    tables: dict[str, TableInfo],
    database: str,
    since: datetime,
    start_file: str,
    until: BinlogCoordinates,
) -> FlashbackPlan:
    """The plan for undoing every row change in `decoded` on the given tables, newest first."""
    plan = FlashbackPlan(
        flashback_id=flashback_id,
        database=database,
        tables=sorted(tables),
        since=since,
        start_file=start_file,
        until=until,
    )
    plan.refusals += window_refusals(decoded, database, tables)
    counts: dict[str, Counter[str]] = {t: Counter() for t in tables}
    keys: dict[str, dict[tuple[Any, ...], None]] = defaultdict(dict)
    ambiguous: Counter[str] = Counter()
    approximate: Counter[str] = Counter()
    mine = [c for c in decoded.changes if c.database == database and c.table in tables]
    for change in reversed(mine):
        info = tables[change.table]
        counts[change.table][change.kind] += 1
        sql, amb, approx = inverse_statement(change, info)
        plan.statements.append(sql)
        ambiguous[change.table] += amb
        approximate[change.table] += approx
        for k in change_keys(change, info):
            keys[change.table][k] = None
    for t in tables:
        c = counts[t]
        plan.changes[t] = {k: c.get(k, 0) for k in ("insert", "update", "delete")}
        plan.row_delta[t] = c.get("delete", 0) - c.get("insert", 0)
        plan.touched_keys[t] = [list(k) for k in keys.get(t, {})]
        if not tables[t].primary_key:
            plan.warnings.append(
                f"table {t} has no primary key: rows are matched on all columns and"
                " concurrent changes to them cannot be detected"
            )
        if ambiguous[t]:
            plan.warnings.append(
                f"{t}: {ambiguous[t]} statement(s) show text with \\xHH escapes (control bytes"
                " or literal text): shown values may differ; applied values are exact"
            )
        if approximate[t]:
            plan.warnings.append(
                f"{t}: FLOAT values are shown rounded to 6 digits; applied values are exact"
            )
    return plan


def conflicts(
    later: Decoded, database: str, tables: dict[str, TableInfo], touched: dict[str, list[list[Any]]]
) -> list[str]:
    """Changes after the window to rows the flashback would rewrite (each one line)."""
    wanted = {t: {tuple(k) for k in keys} for t, keys in touched.items()}
    out = []
    for change in later.changes:
        if change.database != database or change.table not in tables:
            continue
        for k in change_keys(change, tables[change.table]):
            if k in wanted.get(change.table, set()):
                out.append(
                    f"{change.table}: row {k if len(k) > 1 else k[0]!r} was changed again"
                    f" ({change.kind}) at {change.at.isoformat()} after the flashback was planned"
                )
    out += window_refusals(later, database, tables)
    return out
