"""`SQLTableSource`: a table in a SQL database, answering the integrity Protocol inside the
database (aggregates for checksums, range scans on the key for rows).

The database is a `connectors.base.IntegrityDatabase` (`MySQLIntegrity`, `HeavyDBIntegrity`):
the engine-specific SQL comes from its dialect, the statements are composed by
`checksum.QueryBuilder`. No driver is imported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tbs_emergency.connectors.base import IntegrityDatabase
from tbs_emergency.integrity.checksum import QueryBuilder
from tbs_emergency.integrity.normalize import ColumnType
from tbs_emergency.integrity.source import Bucket, Key, Profile, Row, Segment, TablePlan

FETCH_KEYS_BATCH = 200


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


class SQLTableSource:
    """One table (by its name in this store) of one SQL database."""

    def __init__(self, db: IntegrityDatabase, table: str) -> None:
        self.db = db
        self.table = table
        self.name = db.name
        self._own: dict[str, ColumnType] | None = None
        self._builders: dict[TablePlan, QueryBuilder] = {}
        self.queries = 0

    def describe(self) -> dict[str, ColumnType]:
        if self._own is None:
            self._own = self.db.describe_columns(self.table)
        return self._own

    def _q(self, plan: TablePlan) -> QueryBuilder:
        qb = self._builders.get(plan)
        if qb is None:
            qb = QueryBuilder(self.db.integrity_dialect(), self.table, self.describe(), plan)
            self._builders[plan] = qb
        return qb

    def _run(self, sql: str) -> list[tuple[Any, ...]]:
        self.queries += 1
        return self.db.query(sql)

    def _row(self, plan: TablePlan, raw: Sequence[Any]) -> Row:
        return tuple(
            (v or None) if spec.is_text else _int(v)
            for v, spec in zip(raw, plan.specs, strict=True)
        )

    # -- the TableSource protocol -----------------------------------------------------------------

    def profile(
        self, plan: TablePlan, *, count: bool = True, text: bool = False, ranges: bool = False
    ) -> Profile:
        sql = self._q(plan).profile_sql(count=count, text=text, ranges=ranges)
        (r,) = self._run(sql)
        rows, kmin, kmax, null_keys, *rest = r
        text_bytes: dict[str, int] = {}
        lo: dict[str, Any] = {}
        hi: dict[str, Any] = {}
        it = iter(rest)
        for spec in plan.columns:
            if spec.is_text:
                n = int(next(it) or 0)
                if text:
                    text_bytes[spec.name] = n
            elif ranges:
                lo[spec.name], hi[spec.name] = _int(next(it)), _int(next(it))
        return Profile(
            int(rows or 0) if count else None,
            _int(kmin),
            _int(kmax),
            int(null_keys or 0),
            text_bytes,
            lo,
            hi,
        )

    def checksums(self, plan: TablePlan, segment: Segment, width: int) -> dict[int, Bucket]:
        rows = self._run(self._q(plan).checksums_sql(segment, width))
        return {
            int(b): Bucket(int(n), int(s or 0), int(lo), int(hi))
            for b, n, s, lo, hi in rows
            if b is not None
        }

    def key_range(self, plan: TablePlan, prefix: Key) -> tuple[int, int] | None:
        (r,) = self._run(self._q(plan).key_range_sql(prefix))
        return None if r[0] is None else (int(r[0]), int(r[1]))

    def rows(self, plan: TablePlan, segment: Segment) -> list[Row]:
        qb = self._q(plan)
        return [self._row(plan, r) for r in self._run(qb.rows_sql(qb.segment_where(segment)))]

    def keys(self, plan: TablePlan, segment: Segment) -> list[Key]:
        return [tuple(int(v) for v in r) for r in self._run(self._q(plan).keys_sql(segment))]

    def sample(self, plan: TablePlan, multiplier: int, below: int, limit: int) -> list[Row]:
        rows = self._run(self._q(plan).sample_sql(multiplier, below, limit))
        return [(int(r[0]), *self._row(plan, r[1:])) for r in rows]

    def fetch(self, plan: TablePlan, keys: Sequence[Key]) -> list[Row]:
        qb = self._q(plan)
        out: list[Row] = []
        for i in range(0, len(keys), FETCH_KEYS_BATCH):
            batch = keys[i : i + FETCH_KEYS_BATCH]
            out += [self._row(plan, r) for r in self._run(qb.rows_sql(qb.keys_where(batch)))]
        return out
