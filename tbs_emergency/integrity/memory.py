"""`MemoryTableSource`: a table held in Python, answering the integrity Protocol in Python.

It applies the same normalisation and checksum as the databases (normalize.py, checksum.py), so
the diff algorithm can be tested without servers, and data already in memory (a DataFrame's
records, an export) can be compared with a live table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tbs_emergency.integrity import checksum as cs
from tbs_emergency.integrity.normalize import ColumnType, Kind, normalize
from tbs_emergency.integrity.source import Bucket, Key, Profile, Row, Segment, TablePlan


class MemoryTableSource:
    """Rows as mappings column -> Python value (None for NULL), with the columns' types."""

    def __init__(
        self, name: str, types: Mapping[str, ColumnType], rows: Iterable[Mapping[str, Any]]
    ) -> None:
        self.name = name
        self.types = dict(types)
        self.data = [dict(r) for r in rows]
        self.queries = 0

    def describe(self) -> dict[str, ColumnType]:
        return dict(self.types)

    def _normalised(self, plan: TablePlan) -> list[Row]:
        return [tuple(normalize(r.get(s.name), s) for s in plan.specs) for r in self.data]

    def _in(self, plan: TablePlan, row: Row, segment: Segment) -> bool:
        d = segment.depth
        if any(v is None for v in row[: len(plan.key)]):
            return False
        if tuple(row[:d]) != segment.prefix:
            return False
        if d == len(plan.key):
            return True
        return segment.lo <= row[d] <= segment.hi

    def _segment(self, plan: TablePlan, segment: Segment) -> list[Row]:
        return [r for r in self._normalised(plan) if self._in(plan, r, segment)]

    def profile(
        self, plan: TablePlan, *, count: bool = True, text: bool = False, ranges: bool = False
    ) -> Profile:
        self.queries += 1
        rows = self._normalised(plan)
        nk = len(plan.key)
        keyed = [r for r in rows if all(v is not None for v in r[:nk])]
        firsts = [r[0] for r in rows if r[0] is not None]
        text_bytes: dict[str, int] = {}
        lo: dict[str, Any] = {}
        hi: dict[str, Any] = {}
        for i, spec in enumerate(plan.columns, start=nk):
            values = [r[i] for r in rows if r[i] is not None]
            if spec.kind == Kind.TEXT:
                if text:
                    text_bytes[spec.name] = max((len(v.encode()) for v in values), default=0)
            elif ranges:
                lo[spec.name] = min(values, default=None)
                hi[spec.name] = max(values, default=None)
        return Profile(
            rows=len(rows) if count else None,
            key_min=min(firsts, default=None),
            key_max=max(firsts, default=None),
            null_key_rows=len(rows) - len(keyed),
            text_bytes=text_bytes,
            minimum=lo,
            maximum=hi,
        )

    def checksums(self, plan: TablePlan, segment: Segment, width: int) -> dict[int, Bucket]:
        self.queries += 1
        buckets: dict[int, list[Row]] = {}
        d = segment.depth
        for r in self._segment(plan, segment):
            buckets.setdefault((r[d] - segment.lo) // width, []).append(r)
        out = {}
        for b, rows in buckets.items():
            n, total = cs.segment_checksum(rows, plan.specs, len(plan.key))
            out[b] = Bucket(n, total, min(r[d] for r in rows), max(r[d] for r in rows))
        return out

    def key_range(self, plan: TablePlan, prefix: Key) -> tuple[int, int] | None:
        self.queries += 1
        d = len(prefix)
        values = [
            r[d]
            for r in self._normalised(plan)
            if tuple(r[:d]) == prefix and all(v is not None for v in r[: d + 1])
        ]
        return (min(values), max(values)) if values else None

    def rows(self, plan: TablePlan, segment: Segment) -> list[Row]:
        self.queries += 1
        return self._segment(plan, segment)

    def keys(self, plan: TablePlan, segment: Segment) -> list[Key]:
        self.queries += 1
        return [tuple(r[: len(plan.key)]) for r in self._segment(plan, segment)]

    def sample(self, plan: TablePlan, multiplier: int, below: int, limit: int) -> list[Row]:
        self.queries += 1
        nk = len(plan.key)
        ranked = []
        for r in self._normalised(plan):
            if any(v is None for v in r[:nk]):
                continue
            sel = cs.sample_selector(tuple(r[:nk]), multiplier)
            if sel < below:
                ranked.append((sel, *r))
        ranked.sort(key=lambda r: (r[0], *r[1 : nk + 1]))
        return ranked[:limit]

    def fetch(self, plan: TablePlan, keys: Sequence[Key]) -> list[Row]:
        self.queries += 1
        wanted = set(keys)
        nk = len(plan.key)
        return [r for r in self._normalised(plan) if tuple(r[:nk]) in wanted]
