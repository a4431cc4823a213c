"""Carrying green's acknowledged writes to blue during a rollback (runbook step 3: "critical
data synchronised between environments"; docs/rollback.md "No lost writes, sessions").

The application keeps a ledger of every write it saw committed (`GET /_ledger`, one entry per
row: table, store, key, commit time). After green stops taking writes (traffic on blue, green's
databases read-only) the rollback reads green's ledger and, per table:

1. `ledger_keys()`: the keys of the writes green's MySQL acknowledged (store "mysql");
2. the keys blue lacks, found with the integrity engine: a checksum bisection diff
   (`integrity.diff_tables`) of a key-only plan between the ledger's keys (`KeySetSource`, in
   memory) and blue's table, over the ledger's key range. Green's and blue's applications
   write disjoint key ranges (blue from 1e15, green from 2e15), so that range holds green's rows
   only and the diff reads little more than the checksums of buckets that agree;
3. those rows are read from the first source that has them (green's MySQL, still readable while
   read-only; where it is lost, green's HeavyDB; for blue's HeavyDB first blue's MySQL, which
   now holds them) and inserted into blue where absent (insert-if-absent: a rerun, or rows that
   replication brought meanwhile, are left alone);
4. verification: the same diff again; every ledgered key must be on blue (MySQL, and HeavyDB for
   the hot tables: those blue's HeavyDB has). Keys still missing are named (a sample) and
   counted: the rollback's action fails with that count.

A ledger with no entries is reported as "nothing to carry" (a check over nothing is no pass).

When the ledger cannot be read (green's application is down, hung, or answers something that is
not a whole ledger) `choose_authority()` decides what else may say what green committed: green's
MySQL itself, over green's own key range of each table (`KeyRange`, configured as
`integrity.tables[].write_ranges`), provided that MySQL can be read. `carry_key_ranges()` then
does steps 2-4 above with green's MySQL table (an integrity `SQLTableSource`) in place of the
ledger's keys: every row of green's range there is a write green's MySQL committed (a superset
of the acknowledged ones, never less), and the ranges are disjoint, so nothing of blue's is
touched. The result names its authority and why the ledger was not used.

Pure: stores are reached through the small protocols below; no Prefect, no driver.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, Field

from tbs_emergency.integrity import DiffOptions, diff_tables
from tbs_emergency.integrity import checksum as cs
from tbs_emergency.integrity.normalize import (
    ColumnType,
    display_key,
    merge_types,
    native,
    normalize,
)
from tbs_emergency.integrity.source import (
    Bucket,
    Key,
    Profile,
    Row,
    Segment,
    TablePlan,
    TableSource,
)

SAMPLE_KEYS = 10
LEDGER = "ledger"
ACKNOWLEDGED_STORE = "mysql"  # a write is acknowledged when green's MySQL committed it
KEY_DIFF = DiffOptions(confirm=False)


class RowSource(Protocol):
    """Whole rows by key (MySQLDatabase, HeavyDBDatabase)."""

    name: str

    def read_rows(
        self, table: str, key_columns: Sequence[str], keys: Sequence[Sequence[Any]]
    ) -> tuple[list[str], list[tuple[Any, ...]]]: ...


class RowSink(Protocol):
    name: str

    def insert_rows_if_absent(
        self,
        table: str,
        key_columns: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> int: ...


# --------------------------------------------------------------------------------------------
# The ledger (pure)
# --------------------------------------------------------------------------------------------


@dataclass
class TableLedger:
    """The acknowledged writes of one table: key columns, distinct keys (sorted), times."""

    table: str
    key_columns: tuple[str, ...]
    keys: list[tuple[Any, ...]] = field(default_factory=list)
    entries: int = 0
    first_at: str | None = None
    last_at: str | None = None


def ledger_keys(
    writes: Sequence[Mapping[str, Any]], store: str = ACKNOWLEDGED_STORE
) -> dict[str, TableLedger]:
    """Group the ledger's entries of `store` by table: distinct keys, sorted.

    Raises ValueError on an entry without a table or a key object (a ledger that cannot be
    read whole is not read at all: a key silently dropped would be a write silently lost)."""
    out: dict[str, TableLedger] = {}
    seen: dict[str, set[tuple[Any, ...]]] = {}
    for i, w in enumerate(writes):
        if w.get("store") != store:
            continue
        table, key = w.get("table"), w.get("key")
        if not isinstance(table, str) or not isinstance(key, Mapping) or not key:
            raise ValueError(f"ledger entry {i} has no table or key: {dict(w)!r}"[:300])
        cols = tuple(str(c) for c in key)
        t = out.get(table)
        if t is None:
            t = out[table] = TableLedger(table, cols)
            seen[table] = set()
        elif cols != t.key_columns:
            raise ValueError(
                f"ledger entry {i}: table {table} keyed by {cols}, earlier by {t.key_columns}"
            )
        t.entries += 1
        at = w.get("at")
        if isinstance(at, str):
            t.first_at = t.first_at or at
            t.last_at = at
        seen[table].add(tuple(key[c] for c in cols))
    for table, t in out.items():
        t.keys = sorted(seen[table])
    return out


def last_at(writes: Sequence[Mapping[str, Any]]) -> str | None:
    """The commit time of the ledger's newest entry (any store): the next read's `since`."""
    for w in reversed(writes):
        at = w.get("at")
        if isinstance(at, str):
            return at
    return None


def missing_keys(wanted: Sequence[tuple[Any, ...]], present: set[tuple[Any, ...]]) -> list[Any]:
    """The wanted keys that are not present, in order (pure set difference, kept for callers
    that already hold both key sets, e.g. the drill's own check)."""
    return [k for k in wanted if k not in present]


def key_ranges(values: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted distinct integers as inclusive runs: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    out: list[tuple[int, int]] = []
    for v in sorted(set(values)):
        if out and v == out[-1][1] + 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


# --------------------------------------------------------------------------------------------
# The ledger's keys as an integrity TableSource (key-only plans)
# --------------------------------------------------------------------------------------------


class KeySetSource:
    """A set of keys answering the integrity Protocol for a key-only plan (no columns):
    sorted normalised keys, segments found by bisection (fast for hundreds of thousands of
    keys, unlike a row list scanned per question)."""

    def __init__(self, name: str, types: Mapping[str, ColumnType], keys: Sequence[Sequence[Any]]):
        self.name = name
        self.types = dict(types)
        self._raw = [tuple(k) for k in keys]
        self._plan: TablePlan | None = None
        self._keys: list[Key] = []
        self.queries = 0

    def describe(self) -> dict[str, ColumnType]:
        return dict(self.types)

    def _sorted(self, plan: TablePlan) -> list[Key]:
        if plan.columns:
            raise ValueError("KeySetSource answers key-only plans")
        if self._plan != plan:
            self._keys = sorted(
                {
                    tuple(normalize(v, s) for v, s in zip(k, plan.key, strict=True))  # type: ignore[misc]
                    for k in self._raw
                }
            )
            self._plan = plan
        return self._keys

    def _slice(self, plan: TablePlan, segment: Segment) -> list[Key]:
        keys = self._sorted(plan)
        p = segment.prefix
        if segment.depth == len(plan.key):
            i = bisect.bisect_left(keys, p)
            return keys[i : i + 1] if i < len(keys) and keys[i] == p else []
        lo = bisect.bisect_left(keys, (*p, segment.lo))
        hi = bisect.bisect_left(keys, (*p, segment.hi + 1))
        return keys[lo:hi]

    def profile(
        self, plan: TablePlan, *, count: bool = True, text: bool = False, ranges: bool = False
    ) -> Profile:
        self.queries += 1
        keys = self._sorted(plan)
        return Profile(
            len(keys) if count else None,
            keys[0][0] if keys else None,
            keys[-1][0] if keys else None,
        )

    def checksums(self, plan: TablePlan, segment: Segment, width: int) -> dict[int, Bucket]:
        self.queries += 1
        d = segment.depth
        groups: dict[int, list[Key]] = {}
        for k in self._slice(plan, segment):
            groups.setdefault((k[d] - segment.lo) // width, []).append(k)
        out = {}
        for b, rows in groups.items():
            n, total = cs.segment_checksum(rows, plan.specs, len(plan.key))
            out[b] = Bucket(n, total, rows[0][d], rows[-1][d])
        return out

    def key_range(self, plan: TablePlan, prefix: Key) -> tuple[int, int] | None:
        self.queries += 1
        keys = self._sorted(plan)
        d = len(prefix)
        lo = bisect.bisect_left(keys, prefix)
        values = []
        for k in keys[lo:]:
            if k[:d] != prefix:
                break
            values.append(k[d])
        return (min(values), max(values)) if values else None

    def rows(self, plan: TablePlan, segment: Segment) -> list[Row]:
        self.queries += 1
        return list(self._slice(plan, segment))

    def keys(self, plan: TablePlan, segment: Segment) -> list[Key]:
        return self.rows(plan, segment)

    def sample(self, plan: TablePlan, multiplier: int, below: int, limit: int) -> list[Row]:
        self.queries += 1
        ranked = [
            (cs.sample_selector(k, multiplier), *k)
            for k in self._sorted(plan)
            if cs.sample_selector(k, multiplier) < below
        ]
        return sorted(ranked)[:limit]

    def fetch(self, plan: TablePlan, keys: Sequence[Key]) -> list[Row]:
        self.queries += 1
        have = set(self._sorted(plan))
        return [k for k in keys if k in have]


def key_plan(table: str, key_columns: Sequence[str], types: Mapping[str, ColumnType]) -> TablePlan:
    """A plan comparing keys only, typed by the store the keys are checked in."""
    lowered = {k.lower(): v for k, v in types.items()}
    specs = []
    for k in key_columns:
        t = lowered.get(k.lower())
        if t is None:
            raise ValueError(f"{table}: key column {k} does not exist in the target")
        specs.append(merge_types(k, t, t))
    return TablePlan(table, tuple(specs), ())


# --------------------------------------------------------------------------------------------
# Carrying
# --------------------------------------------------------------------------------------------


@dataclass
class CarryTarget:
    """One of blue's stores for one table: where rows go and how keys are checked there."""

    system: str  # e.g. "mysql[blue]"
    table: str  # the table's name in this store
    check: TableSource  # integrity view of the table (SQLTableSource)
    sink: RowSink
    sources: list[tuple[RowSource, str]]  # (store, its table name), tried in this order


class TargetCarry(BaseModel):
    system: str
    table: str
    ledgered: int = 0
    missing_before: int = 0
    copied: int = 0
    copied_from: dict[str, int] = Field(default_factory=dict)
    still_missing: int | None = None  # None: could not verify
    duplicates: int = 0
    sample_missing: list[Any] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    seconds: float = 0.0

    @property
    def verified(self) -> bool:
        return self.still_missing == 0 and not self.duplicates and not self.problems


class TableCarry(BaseModel):
    table: str
    key: list[str]
    ledgered: int
    entries: int
    first_at: str | None = None
    last_at: str | None = None
    critical: bool = True
    targets: list[TargetCarry] = Field(default_factory=list)


class CarryResult(BaseModel):
    source: str
    target: str
    # What says which writes source committed: LEDGER, or "<source> mysql key range" when the
    # ledger could not be used (`authority_reason` says why; see choose_authority).
    authority: str = LEDGER
    authority_reason: str | None = None
    key_ranges: list[dict[str, Any]] = Field(default_factory=list)  # {table, key, lo, hi}
    since: str | None = None
    ledger_entries: int = 0  # acknowledged writes read (store mysql), all tables
    watermark: str | None = None  # the newest ledger entry read: the next carry's `since`
    tables: list[TableCarry] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def by_key_range(self) -> bool:
        return self.authority != LEDGER

    @property
    def nothing_to_carry(self) -> bool:
        if self.by_key_range:  # every table's range read, none holds a row of source's
            return (
                bool(self.tables)
                and all(g.ledgered == 0 for t in self.tables for g in t.targets)
                and not self.problems
            )
        return self.ledger_entries == 0 and not self.problems

    @property
    def missing(self) -> int:
        """Ledgered keys not verified on blue (a target that could not be checked counts all
        of its table's keys)."""
        n = 0
        for t in self.tables:
            for g in t.targets:
                n += g.ledgered if g.still_missing is None else g.still_missing
        return n

    @property
    def copied(self) -> int:
        return sum(g.copied for t in self.tables for g in t.targets)

    @property
    def ok(self) -> bool:
        return (
            not self.problems
            and not self.dry_run
            and all(g.verified for t in self.tables for g in t.targets)
        )

    def summary(self) -> dict[str, Any]:
        """What the journal records."""
        return {
            "ok": self.ok,
            "authority": self.authority,
            "authority_reason": self.authority_reason,
            "key_ranges": self.key_ranges,
            "nothing_to_carry": self.nothing_to_carry,
            "ledger_entries": self.ledger_entries,
            "since": self.since,
            "watermark": self.watermark,
            "copied": self.copied,
            "missing": self.missing,
            "tables": [t.model_dump() for t in self.tables],
            "problems": self.problems,
            "notes": self.notes,
            "lines": self.lines(),
            "seconds": self.seconds,
        }

    def lines(self) -> list[str]:
        if self.by_key_range:
            head = [
                f"authority: {self.authority} ({self.authority_reason or 'ledger not used'})",
                (
                    f"{self.source}'s MySQL holds no row in its key range"
                    if self.nothing_to_carry
                    else f"{sum(t.ledgered for t in self.tables)} rows in {self.source}'s"
                    " MySQL key range"
                )
                + " of "
                + (", ".join(f"{r['table']} [{r['lo']}, {r['hi']}]" for r in self.key_ranges))
                + (": nothing to carry" if self.nothing_to_carry else ""),
            ]
            if self.nothing_to_carry:
                return head + self.notes
            return head + self._target_lines() + self.notes + self.problems
        if self.nothing_to_carry:
            return [
                f"{self.source}'s ledger lists no acknowledged writes"
                + (f" since {self.since}" if self.since else "")
                + ": nothing to carry, nothing verified"
            ]
        out = [
            f"{self.ledger_entries} acknowledged writes of {self.source}"
            + (f" since {self.since}" if self.since else "")
        ]
        return out + self._target_lines() + self.notes + self.problems

    def _target_lines(self) -> list[str]:
        out = []
        for t in self.tables:
            for g in t.targets:
                if g.still_missing is None:
                    state = "NOT verified"
                elif g.still_missing:
                    state = f"{g.still_missing} still missing"
                else:
                    state = "every key present"
                copied = (
                    "nothing copied (already there)"
                    if not g.copied and not g.missing_before
                    else f"{g.missing_before} missing, {g.copied} copied"
                    + (
                        " from " + ", ".join(f"{k} {v}" for k, v in g.copied_from.items())
                        if g.copied_from
                        else ""
                    )
                )
                out.append(f"{t.table} -> {g.system}: {g.ledgered} keys; {copied}; {state}")
        return out


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _diff_missing(
    authority: TableSource, target: CarryTarget, plan: TablePlan, segment: Segment | None
) -> tuple[list[Key], int, int | None]:
    """Keys (normalised) the authority holds in `segment` and the target lacks, keys the target
    holds twice, and how many keys the authority holds there (None: not counted)."""
    if segment is None:
        return [], 0, 0
    diff = diff_tables(authority, target.check, plan, KEY_DIFF, segment=segment)
    return sorted(diff.only_left), len(diff.duplicate_right), diff.rows_left


def _ledger_segment(ledger_src: KeySetSource) -> Callable[[TablePlan], Segment | None]:
    def segment(plan: TablePlan) -> Segment | None:
        keys = ledger_src._sorted(plan)
        return Segment((), keys[0][0], keys[-1][0]) if keys else None

    return segment


def _range_segment(r: KeyRange) -> Callable[[TablePlan], Segment | None]:
    def segment(plan: TablePlan) -> Segment | None:
        spec = plan.key[0]
        lo, hi = normalize(r.lo, spec), normalize(r.hi, spec)
        if not isinstance(lo, int) or not isinstance(hi, int):
            raise ValueError(f"{r.table}: key range [{r.lo}, {r.hi}] is not integer")
        return Segment((), lo, hi)

    return segment


def _carry_rows(
    target: CarryTarget, key_columns: Sequence[str], keys: list[tuple[Any, ...]], res: TargetCarry
) -> None:
    """Read the rows of `keys` from the target's sources in turn, insert them where absent."""
    todo = list(keys)
    for source, table in target.sources:
        if not todo:
            break
        try:
            columns, rows = source.read_rows(table, key_columns, todo)
        except Exception as exc:
            res.problems.append(f"reading from {source.name} failed: {_error(exc)}")
            continue
        if not rows:
            continue
        lowered = [c.lower() for c in columns]
        at = [lowered.index(k.lower()) for k in key_columns]
        found = {tuple(r[i] for i in at) for r in rows}
        try:
            n = target.sink.insert_rows_if_absent(target.table, key_columns, columns, rows)
        except Exception as exc:
            res.problems.append(f"writing to {target.system} failed: {_error(exc)}")
            return
        res.copied += n
        if n:
            res.copied_from[source.name] = res.copied_from.get(source.name, 0) + n
        todo = [k for k in todo if tuple(k) not in found]
    # What no source had stays missing: the verification below counts it.


def _carry_target(
    table: str,
    key_columns: Sequence[str],
    target: CarryTarget,
    authority: Callable[[TablePlan], TableSource],
    segment_of: Callable[[TablePlan], Segment | None],
    known: int | None,
    what: str,
    dry_run: bool,
) -> TargetCarry:
    """Diff the authority's keys against one target, copy what it lacks, diff again.
    `known`: how many keys the authority holds (None: counted by the first diff)."""
    started = time.perf_counter()
    res = TargetCarry(system=target.system, table=target.table, ledgered=known or 0)

    def done() -> TargetCarry:
        res.seconds = round(time.perf_counter() - started, 3)
        return res

    try:
        plan = key_plan(table, key_columns, target.check.describe())
        src, seg = authority(plan), segment_of(plan)
        missing, dups, counted = _diff_missing(src, target, plan, seg)
    except Exception as exc:
        res.problems.append(f"cannot compare {what} with {target.system}: {_error(exc)}")
        return done()
    if known is None:
        res.ledgered = counted or 0
    res.missing_before = len(missing)
    natives = [tuple(native(v, s) for v, s in zip(k, plan.key, strict=True)) for k in missing]
    if missing and not dry_run:
        _carry_rows(target, key_columns, natives, res)
        try:
            missing, dups, _ = _diff_missing(src, target, plan, seg)
        except Exception as exc:
            res.problems.append(f"cannot verify {target.system}: {_error(exc)}")
            return done()
    if not dry_run:
        res.still_missing = len(missing)
    res.duplicates = dups
    if dups:
        res.problems.append(f"{target.system} holds {dups} of {what}'s keys more than once")
    res.sample_missing = [display_key(k, plan.key) for k in missing[:SAMPLE_KEYS]]
    return done()


def carry_table(
    ledger: TableLedger,
    targets: Sequence[CarryTarget],
    *,
    critical: bool = True,
    dry_run: bool = False,
) -> TableCarry:
    out = TableCarry(
        table=ledger.table,
        key=list(ledger.key_columns),
        ledgered=len(ledger.keys),
        entries=ledger.entries,
        first_at=ledger.first_at,
        last_at=ledger.last_at,
        critical=critical,
    )
    ledger_src = KeySetSource(f"ledger[{ledger.table}]", {}, ledger.keys)
    for target in targets:
        out.targets.append(
            _carry_target(
                ledger.table,
                ledger.key_columns,
                target,
                lambda _plan: ledger_src,
                _ledger_segment(ledger_src),
                len(ledger.keys),
                "the ledger",
                dry_run,
            )
        )
    return out


@dataclass
class TableStores:
    """Where one ledgered table lives, as the caller resolved it from the configuration."""

    targets: list[CarryTarget]
    critical: bool = True


def carry_writes(
    writes: Sequence[Mapping[str, Any]],
    stores_for: Callable[[TableLedger], TableStores],
    *,
    source: str = "green",
    target: str = "blue",
    since: str | None = None,
    dry_run: bool = False,
    tables: Mapping[str, TableLedger] | None = None,
) -> CarryResult:
    """Carry every acknowledged write in `writes` (green's ledger) to the target's stores and
    verify; see the module docstring. `stores_for(table)` names the targets of each table (it
    may raise: the table is then reported as not carried). `tables`: `ledger_keys(writes)`
    when the caller has it already."""
    started = time.perf_counter()
    result = CarryResult(source=source, target=target, since=since, dry_run=dry_run)
    result.watermark = last_at(writes) or since
    if tables is None:
        try:
            tables = ledger_keys(writes)
        except ValueError as exc:
            result.problems.append(f"the ledger cannot be read whole: {exc}")
            result.seconds = round(time.perf_counter() - started, 3)
            return result
    result.ledger_entries = sum(t.entries for t in tables.values())
    for name in sorted(tables):
        t = tables[name]
        try:
            stores = stores_for(t)
        except Exception as exc:
            result.tables.append(
                TableCarry(
                    table=name,
                    key=list(t.key_columns),
                    ledgered=len(t.keys),
                    entries=t.entries,
                    targets=[
                        TargetCarry(
                            system=f"{target}",
                            table=name,
                            ledgered=len(t.keys),
                            problems=[f"no store to carry to: {_error(exc)}"],
                        )
                    ],
                )
            )
            result.problems.append(f"{name}: no store to carry to: {_error(exc)}")
            continue
        tc = carry_table(t, stores.targets, critical=stores.critical, dry_run=dry_run)
        if not stores.critical:
            result.notes.append(f"{name} is ledgered but not marked critical in integrity.tables")
        for g in tc.targets:
            result.problems += [f"{name} -> {g.system}: {p}" for p in g.problems]
        result.tables.append(tc)
    result.seconds = round(time.perf_counter() - started, 3)
    return result


# --------------------------------------------------------------------------------------------
# Without the ledger: green's MySQL over green's key range
# --------------------------------------------------------------------------------------------


def key_range_authority(source: str) -> str:
    """The authority's name when the ledger is not used: "green mysql key range"."""
    return f"{source} mysql key range"


@dataclass(frozen=True)
class KeyRange:
    """The keys one environment's application mints in a table: values of its first key
    column, inclusive (configured as `integrity.tables[].write_ranges`)."""

    table: str
    key_columns: tuple[str, ...]
    lo: int
    hi: int


@dataclass
class AuthorityChoice:
    """What a carry may trust for "what source committed", and why.

    `authority`: LEDGER, key_range_authority(source), or None (nothing to trust: the carry
    cannot run and `problems` says what is unknown). `reason`: why the ledger was not used.
    `ranges`: the tables carried by key range. `problems`: critical tables the choice leaves
    uncovered (their writes are not carried: the carry is not ok). `notes`: the rest."""

    authority: str | None
    reason: str | None = None
    ranges: list[KeyRange] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def choose_authority(
    source: str,
    ledger_error: str | None,
    ranges: Sequence[KeyRange],
    source_mysql_error: str | None,
    tables: Mapping[str, bool] | None = None,
) -> AuthorityChoice:
    """The ledger when it could be read whole (`ledger_error` None); else source's MySQL over
    source's key ranges, when some table has one and that MySQL answers; else nothing.

    `tables`: every configured table -> critical. Without the ledger nothing says which tables
    source wrote, so a critical table without a key range is a problem (its writes, if any,
    are not carried), another one a note."""
    if ledger_error is None:
        return AuthorityChoice(LEDGER)
    why = f"{source}'s ledger cannot be read: {ledger_error}"
    if not ranges:
        return AuthorityChoice(
            None,
            why,
            problems=[
                f"{why}; no table has a key range for {source} (integrity.tables write_ranges),"
                f" so what {source} committed is unknown: nothing carried"
            ],
        )
    if source_mysql_error is not None:
        return AuthorityChoice(
            None,
            why,
            problems=[
                f"{why}; {source}'s MySQL cannot be read either ({source_mysql_error}), so what"
                f" {source} committed is unknown: nothing carried"
            ],
        )
    choice = AuthorityChoice(key_range_authority(source), why, list(ranges))
    covered = {r.table for r in ranges}
    for name, critical in sorted((tables or {}).items()):
        if name in covered:
            continue
        line = (
            f"{name}: no key range for {source} (integrity.tables write_ranges): its writes,"
            " if any, are not carried without the ledger"
        )
        (choice.problems if critical else choice.notes).append(line)
    return choice


def carry_key_ranges(
    choice: AuthorityChoice,
    authority_for: Callable[[KeyRange], TableSource],
    stores_for: Callable[[KeyRange], TableStores],
    *,
    source: str = "green",
    target: str = "blue",
    since: str | None = None,
    dry_run: bool = False,
) -> CarryResult:
    """Carry, table by table, the rows of source's key range that source's MySQL holds
    (`authority_for(range)`, an integrity TableSource) and the target's stores lack; verify
    with the same diff. `since` is kept as the watermark unchanged: this carry does not say
    which ledger entries it covered (see docs/rollback.md)."""
    started = time.perf_counter()
    result = CarryResult(
        source=source,
        target=target,
        authority=choice.authority or key_range_authority(source),
        authority_reason=choice.reason,
        watermark=since,
        dry_run=dry_run,
        problems=list(choice.problems),
        notes=list(choice.notes),
        key_ranges=[
            {"table": r.table, "key": r.key_columns[0], "lo": r.lo, "hi": r.hi}
            for r in choice.ranges
        ],
    )
    what = f"{source}'s MySQL key range"
    for r in sorted(choice.ranges, key=lambda r: r.table):
        out = TableCarry(table=r.table, key=list(r.key_columns), ledgered=0, entries=0)
        result.tables.append(out)
        try:
            stores = stores_for(r)
            authority = authority_for(r)
        except Exception as exc:
            out.targets.append(
                TargetCarry(system=target, table=r.table, problems=[f"no store: {_error(exc)}"])
            )
            result.problems.append(f"{r.table}: no store to carry with: {_error(exc)}")
            continue
        out.critical = stores.critical

        def authority_of(_plan: TablePlan, a: TableSource = authority) -> TableSource:
            return a

        for t in stores.targets:
            out.targets.append(
                _carry_target(
                    r.table,
                    r.key_columns,
                    t,
                    authority_of,
                    _range_segment(r),
                    None,
                    what,
                    dry_run,
                )
            )
        out.ledgered = out.entries = max((g.ledgered for g in out.targets), default=0)
        for g in out.targets:
            result.problems += [f"{r.table} -> {g.system}: {p}" for p in g.problems]
    result.seconds = round(time.perf_counter() - started, 3)
    return result
