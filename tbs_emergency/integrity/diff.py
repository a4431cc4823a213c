"""The checksum bisection diff: which keys are missing on either side and which rows differ.

The key range is cut into buckets whose (row count, checksum) each database computes in one
GROUP BY query; buckets that agree are done, buckets that differ are cut again, until a bucket
holds few enough rows to compare row by row in Python. A bucket present on one side only is
answered with its keys at once. Each bucket comes back with its smallest and largest key, so
sparse or skewed keys narrow the next cut to where the rows are. Composite keys: a range that
has shrunk to one value of a key column continues on the next key column.

`diff_tables()` runs the whole table or one `Segment` of it (the Prefect flow maps one task per
chunk from `plan_chunks()`); results of chunks are combined with `TableDiff.merge()`. Both sides
are queried concurrently. Nothing here imports Prefect or a driver.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tbs_emergency.integrity.normalize import ColumnSpec, display, display_key
from tbs_emergency.integrity.source import Key, Row, Segment, TablePlan, TableSource

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class DiffOptions:
    bisection_factor: int = 32  # buckets per cut below the first
    bisection_threshold: int = 1024  # rows: at or below this, compare rows in Python
    max_buckets: int = 8192  # buckets of the first cut of a table or chunk
    confirm: bool = True  # read reported keys again and drop those that agree now


@dataclass(frozen=True)
class RowDifference:
    """A key present on both sides whose rows differ: the columns and both sides' values
    (normalised, see normalize.py; `display()` for people)."""

    key: Key
    columns: tuple[str, ...]
    left: tuple[Any, ...]
    right: tuple[Any, ...]


@dataclass
class TableDiff:
    """What differs between two stores' copies of one table. Keys are normalised tuples;
    `plan` turns them back into values (`display_keys()`, normalize.native)."""

    plan: TablePlan
    left: str
    right: str
    only_left: list[Key] = field(default_factory=list)
    only_right: list[Key] = field(default_factory=list)
    different: list[RowDifference] = field(default_factory=list)
    duplicate_left: list[Key] = field(default_factory=list)
    duplicate_right: list[Key] = field(default_factory=list)
    rows_left: int | None = None
    rows_right: int | None = None
    segments: int = 0  # buckets whose checksums were compared
    rows_compared: int = 0  # rows read for row-by-row comparison
    queries: int = 0
    seconds: float = 0.0

    @property
    def consistent(self) -> bool:
        return not (
            self.only_left
            or self.only_right
            or self.different
            or self.duplicate_left
            or self.duplicate_right
        )

    def merge(self, other: TableDiff) -> TableDiff:
        def add(a: int | None, b: int | None) -> int | None:
            return None if a is None or b is None else a + b

        return TableDiff(
            plan=self.plan,
            left=self.left,
            right=self.right,
            only_left=_sorted(self.only_left + other.only_left),
            only_right=_sorted(self.only_right + other.only_right),
            different=sorted(self.different + other.different, key=lambda d: key_order(d.key)),
            duplicate_left=_sorted(self.duplicate_left + other.duplicate_left),
            duplicate_right=_sorted(self.duplicate_right + other.duplicate_right),
            rows_left=add(self.rows_left, other.rows_left),
            rows_right=add(self.rows_right, other.rows_right),
            segments=self.segments + other.segments,
            rows_compared=self.rows_compared + other.rows_compared,
            queries=self.queries + other.queries,
            seconds=max(self.seconds, other.seconds),
        )

    def display_keys(self, keys: Sequence[Key]) -> list[Any]:
        return [display_key(k, self.plan.key) for k in keys]

    def describe(self, d: RowDifference) -> dict[str, Any]:
        specs = {c.name: c for c in self.plan.columns}
        return {
            "key": display_key(d.key, self.plan.key),
            "columns": {
                name: {
                    self.left: display(lv, specs[name]),
                    self.right: display(rv, specs[name]),
                }
                for name, lv, rv in zip(d.columns, d.left, d.right, strict=True)
            },
        }


def empty_diff(plan: TablePlan, left: TableSource, right: TableSource) -> TableDiff:
    return TableDiff(plan, left.name, right.name)


def key_order(key: Key) -> tuple[tuple[bool, int], ...]:
    """Sort order for keys that may hold a NULL (None sorts first)."""
    return tuple((v is not None, v if v is not None else 0) for v in key)


def _sorted(keys: Any) -> list[Key]:
    return sorted(keys, key=key_order)


def _index(rows: Sequence[Row], nk: int) -> tuple[dict[Key, Row], list[Key]]:
    out: dict[Key, Row] = {}
    dups: list[Key] = []
    for r in rows:
        k = tuple(r[:nk])
        if k in out:
            dups.append(k)
        out[k] = r
    return out, dups


def compare_rows(
    plan: TablePlan, left_rows: Sequence[Row], right_rows: Sequence[Row], result: TableDiff
) -> None:
    """Row-by-row comparison of normalised rows; adds what differs to `result`."""
    nk = len(plan.key)
    a, dup_a = _index(left_rows, nk)
    b, dup_b = _index(right_rows, nk)
    result.duplicate_left += _sorted(set(dup_a))
    result.duplicate_right += _sorted(set(dup_b))
    result.rows_compared += len(left_rows) + len(right_rows)
    names = plan.column_names
    result.only_left += _sorted(a.keys() - b.keys())
    result.only_right += _sorted(b.keys() - a.keys())
    for k in _sorted(a.keys() & b.keys()):
        ra, rb = a[k][nk:], b[k][nk:]
        if ra != rb:
            cols = [i for i, (x, y) in enumerate(zip(ra, rb, strict=True)) if x != y]
            result.different.append(
                RowDifference(
                    k,
                    tuple(names[i] for i in cols),
                    tuple(ra[i] for i in cols),
                    tuple(rb[i] for i in cols),
                )
            )


class _Both:
    """Runs the same question against both sides at once."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="integrity")
        self.queries = 0

    def __call__(self, f: Callable[[], T], g: Callable[[], U]) -> tuple[T, U]:
        self.queries += 2
        fut = self.pool.submit(g)
        return f(), fut.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def root_segment(left: TableSource, right: TableSource, plan: TablePlan) -> Segment | None:
    """The whole table: the first key column's range over both sides (None: both empty)."""
    ra, rb = left.key_range(plan, ()), right.key_range(plan, ())
    bounds = [r for r in (ra, rb) if r is not None]
    if not bounds:
        return None
    return Segment((), min(b[0] for b in bounds), max(b[1] for b in bounds))


def plan_chunks(root: Segment | None, rows: int, chunk_rows: int, max_chunks: int) -> list[Segment]:
    """Cut the table's key range into about rows/chunk_rows equal ranges (at most max_chunks),
    one Prefect task each."""
    if root is None:
        return []
    n = max(1, min(max_chunks, -(-rows // max(1, chunk_rows)), root.hi - root.lo + 1))
    width = -(-(root.hi - root.lo + 1) // n)
    out = []
    lo = root.lo
    while lo <= root.hi:
        hi = min(root.hi, lo + width - 1)
        out.append(Segment(root.prefix, lo, hi))
        lo = hi + 1
    return out


def diff_tables(
    left: TableSource,
    right: TableSource,
    plan: TablePlan,
    options: DiffOptions | None = None,
    segment: Segment | None = None,
    expected_rows: int | None = None,
) -> TableDiff:
    """Every missing, extra and different key between `left` and `right` (within `segment`,
    or the whole table). `expected_rows` (if known) sizes the first cut."""
    opts = options or DiffOptions()
    started = time.perf_counter()
    result = empty_diff(plan, left, right)
    both = _Both()
    try:
        root = segment
        if root is None:
            ra, rb = both(lambda: left.key_range(plan, ()), lambda: right.key_range(plan, ()))
            bounds = [r for r in (ra, rb) if r is not None]
            if not bounds:
                result.rows_left = result.rows_right = 0
                return result
            root = Segment((), min(b[0] for b in bounds), max(b[1] for b in bounds))
        _bisect(left, right, plan, opts, root, expected_rows, result, both)
        if opts.confirm and not result.consistent:
            _confirm(left, right, plan, result, both)
    finally:
        both.close()
        result.queries += both.queries
        result.seconds = round(time.perf_counter() - started, 3)
    return result


def _bisect(
    left: TableSource,
    right: TableSource,
    plan: TablePlan,
    opts: DiffOptions,
    root: Segment,
    expected: int | None,
    result: TableDiff,
    both: _Both,
) -> None:
    nkeys = len(plan.key)
    work: list[tuple[Segment, int | None, bool]] = [(root, expected, True)]
    while work:
        seg, est, is_root = work.pop()
        if seg.lo > seg.hi:
            continue
        if est is not None and est <= opts.bisection_threshold and not is_root:
            ra, rb = both(lambda s=seg: left.rows(plan, s), lambda s=seg: right.rows(plan, s))
            compare_rows(plan, ra, rb, result)
            continue
        if seg.lo == seg.hi:
            if seg.depth + 1 < nkeys:
                prefix = (*seg.prefix, seg.lo)
                ra_, rb_ = both(
                    lambda p=prefix: left.key_range(plan, p),
                    lambda p=prefix: right.key_range(plan, p),
                )
                bounds = [r for r in (ra_, rb_) if r is not None]
                if bounds:
                    sub = Segment(prefix, min(b[0] for b in bounds), max(b[1] for b in bounds))
                    work.append((sub, est, is_root))
                continue
            ra, rb = both(lambda s=seg: left.rows(plan, s), lambda s=seg: right.rows(plan, s))
            compare_rows(plan, ra, rb, result)
            continue
        span = seg.hi - seg.lo + 1
        if est is None:
            buckets = opts.max_buckets
        elif is_root:
            buckets = -(-4 * est // opts.bisection_threshold)
        else:
            buckets = max(opts.bisection_factor, -(-2 * est // opts.bisection_threshold))
        buckets = max(2, min(buckets, opts.max_buckets, span))
        width = -(-span // buckets)
        ca, cb = both(
            lambda s=seg, w=width: left.checksums(plan, s, w),
            lambda s=seg, w=width: right.checksums(plan, s, w),
        )
        result.segments += len(ca.keys() | cb.keys())
        if is_root:
            result.rows_left = (result.rows_left or 0) + sum(b.rows for b in ca.values())
            result.rows_right = (result.rows_right or 0) + sum(b.rows for b in cb.values())
        for i in sorted(ca.keys() | cb.keys()):
            a, b = ca.get(i), cb.get(i)
            if a is not None and b is not None and a[:2] == b[:2]:
                continue
            if a is None or b is None:
                present = a or b
                assert present is not None
                sub = Segment(seg.prefix, present.lo, present.hi)
                if a is not None:
                    result.only_left += _sorted(left.keys(plan, sub))
                else:
                    result.only_right += _sorted(right.keys(plan, sub))
                both.queries += 1
                continue
            sub = Segment(seg.prefix, min(a.lo, b.lo), max(a.hi, b.hi))
            work.append((sub, max(a.rows, b.rows), False))


def _confirm(
    left: TableSource, right: TableSource, plan: TablePlan, result: TableDiff, both: _Both
) -> None:
    """Read every reported key again from both sides; keep only what still differs (a row
    written between the two sides' reads is not a discrepancy)."""
    reported = (
        set(result.only_left)
        | set(result.only_right)
        | {d.key for d in result.different}
        | set(result.duplicate_left)
        | set(result.duplicate_right)
    )
    # Keys with a NULL part cannot be looked up by equality; they stay as reported.
    keys = _sorted(k for k in reported if None not in k)
    if not keys or len(keys) > 20_000:
        return
    ra, rb = both(lambda: left.fetch(plan, keys), lambda: right.fetch(plan, keys))
    fresh = TableDiff(plan, result.left, result.right)
    compare_rows(plan, ra, rb, fresh)
    kept = set(keys)

    def keep(old: list[Key], new: list[Key]) -> list[Key]:
        return _sorted([k for k in old if k not in kept] + new)

    result.only_left = keep(result.only_left, fresh.only_left)
    result.only_right = keep(result.only_right, fresh.only_right)
    result.different = sorted(
        [d for d in result.different if d.key not in kept] + fresh.different,
        key=lambda d: key_order(d.key),
    )
    result.duplicate_left = keep(result.duplicate_left, fresh.duplicate_left)
    result.duplicate_right = keep(result.duplicate_right, fresh.duplicate_right)
    result.rows_compared += fresh.rows_compared


def spec_of(plan: TablePlan, name: str) -> ColumnSpec:
    for c in plan.specs:
        if c.name == name:
            return c
    raise KeyError(name)
