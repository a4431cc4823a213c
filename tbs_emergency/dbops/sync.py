"""Environment data sync (runbook: `sync-critical-data.sh --blue-to-green --verify`,
`mysql-sync-environments.sh --source=blue --target=green --verify`).

For one critical table in one engine, bring the target environment's copy to the source's:

1. diff by key with the integrity engine (`integrity.diff_tables`, checksums computed inside
   each database; only buckets that differ are read row by row): keys missing in the target,
   keys only the target has, keys whose rows differ;
2. with a watermark (`since`, on the table's `updated_column`), only rows changed at or after it
   are applied: source rows older than it are not copied, target-only rows older than it are not
   deleted (rows deleted in the source leave no timestamp behind, so the watermark cannot tell
   an old extra row from one deleted since); those are counted and reported;
3. guards, before any write: a table whose sync would delete more than `max_delete_share` of the
   target's rows (an empty or truncated source would otherwise wipe the target) is refused and
   nothing is written to it (`--allow-mass-delete` lifts the guard); where rows will be deleted,
   the target table is first copied to `<table>__pre_sync_<UTC time>` (`snapshot`);
4. apply in key-ordered batches: each batch reads the source rows (every column, not only the
   compared ones) and writes them to the target, deleting first the batch's extra keys and the
   old versions of its changed keys, in one transaction per batch (MySQL; HeavyDB has no
   transactions, so there a batch is a delete then a load, and a rerun repairs a cut-off one);
5. verify with a full checksum diff of the whole table.

A rerun diffs again and finds nothing to do. Pure: engines are reached through `TableSource`
(checksums) and `RowStore` (reading and writing whole rows) objects from the connectors.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel, Field

from tbs_emergency.dbops.actions import Action, ActionLog
from tbs_emergency.integrity import (
    DiffOptions,
    TableDiff,
    TableSource,
    build_plan,
    diff_tables,
)
from tbs_emergency.integrity.normalize import display_key, native
from tbs_emergency.integrity.source import Key, TablePlan

SAMPLE_KEYS = 10
SYNC_DIFF = DiffOptions(confirm=False)


class RowStore(Protocol):
    """Whole rows by key (connectors: engine SQL stays there)."""

    name: str

    def read_rows(
        self, table: str, key_columns: Sequence[str], keys: Sequence[Sequence[Any]]
    ) -> tuple[list[str], list[tuple[Any, ...]]]: ...

    def write_rows(
        self,
        table: str,
        key_columns: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        delete_keys: Sequence[Sequence[Any]],
    ) -> None: ...

    def snapshot_table(self, table: str, snapshot: str) -> int: ...


class TableSyncSpec(BaseModel):
    table: str  # the configured (logical) name
    source_table: str  # its name in the source store
    target_table: str  # its name in the target store
    key: list[str]
    columns: list[str] = Field(default_factory=list)  # compared columns; empty: all
    updated_column: str | None = None


class SyncBatch(BaseModel):
    upsert: list[Key] = Field(default_factory=list)
    delete: list[Key] = Field(default_factory=list)


def plan_batches(upsert: Sequence[Key], delete: Sequence[Key], size: int) -> list[SyncBatch]:
    """Key-ordered batches of at most `size` keys (upserts and deletes together)."""
    tagged = sorted([(k, True) for k in upsert] + [(k, False) for k in delete])
    batches: list[SyncBatch] = []
    for i in range(0, len(tagged), max(1, size)):
        chunk = tagged[i : i + size]
        batches.append(
            SyncBatch(upsert=[k for k, up in chunk if up], delete=[k for k, up in chunk if not up])
        )
    return batches


SNAPSHOT_INFIX = "__pre_sync_"
_MAX_NAME = 64  # MySQL's identifier limit (HeavyDB's is larger)


def snapshot_name(table: str, at: dt.datetime) -> str:
    """`<table>__pre_sync_<YYYYmmddTHHMMSSZ>` (the table part shortened to fit 64 characters)."""
    stamp = at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = f"{SNAPSHOT_INFIX}{stamp}"
    return table[: _MAX_NAME - len(suffix)] + suffix


def mass_delete_refusal(
    table: str,
    system: str,
    to_delete: int,
    rows_target: int | None,
    rows_source: int | None,
    max_share: float,
) -> str | None:
    """Why deleting `to_delete` of the target's `rows_target` rows is refused (more than
    `max_share` of them), or None when it is within the share."""
    if to_delete <= 0:
        return None
    total = max(rows_target or 0, to_delete)
    if to_delete <= max_share * total:
        return None
    return (
        f"{table}: the sync would delete {to_delete} of {total} rows of {system}"
        f" ({100 * to_delete / total:.1f}%; the source has {rows_source} rows),"
        f" more than database_emergency.sync_max_delete_share ({100 * max_share:g}%) allows:"
        " refused, nothing was written (--allow-mass-delete to delete them)"
    )


def parse_since(since: str | dt.datetime | None) -> dt.datetime | None:
    """A watermark as a naive UTC datetime. Text (from a person) must carry a time zone
    (ValueError otherwise, tbs_emergency.timestamps); a datetime without one is taken as UTC."""
    from tbs_emergency.timestamps import parse_instant

    if since is None or since == "":
        return None
    value = parse_instant(since) if isinstance(since, str) else since
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _at_or_after(value: Any, since: dt.datetime) -> bool:
    """Whether a row's watermark value is at or after `since` (NULL: never synced by time)."""
    if value is None:
        return False
    if isinstance(value, dt.datetime):
        v = value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value
        return v >= since
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day) >= since
    if isinstance(value, str):
        return _at_or_after(dt.datetime.fromisoformat(value), since)
    return False


class TableSyncResult(BaseModel):
    table: str
    system: str  # the target store
    source: str  # the source store
    dry_run: bool
    rows_source: int | None = None
    rows_target: int | None = None
    to_insert: int = 0
    to_update: int = 0
    to_delete: int = 0
    older_than_watermark: int = 0  # differences left alone because of the watermark
    refused: str | None = None  # the mass-delete guard's reason (nothing was written)
    snapshot: str | None = None  # the copy of the target table taken before deleting
    snapshot_rows: int | None = None
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    batches: int = 0
    batches_applied: int = 0
    verified: bool = False
    identical_after: bool | None = None
    remaining: int | None = None
    sample_keys: dict[str, list[Any]] = Field(default_factory=dict)
    actions: list[Action] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def changed_nothing(self) -> bool:
        return self.inserted == self.updated == self.deleted == 0

    def lines(self) -> list[str]:
        verb = "would" if self.dry_run else "did"
        out = [
            f"{self.table}: {self.source} -> {self.system}; rows {self.rows_source} ->"
            f" {self.rows_target}",
            f"differences: {self.to_insert} missing, {self.to_update} different,"
            f" {self.to_delete} extra in the target",
        ]
        if self.older_than_watermark:
            out.append(f"left alone (older than the watermark): {self.older_than_watermark}")
        if not self.dry_run or self.to_insert + self.to_update + self.to_delete:
            out.append(
                f"{verb} insert {self.inserted if not self.dry_run else self.to_insert},"
                f" update {self.updated if not self.dry_run else self.to_update},"
                f" delete {self.deleted if not self.dry_run else self.to_delete}"
                f" in {self.batches} batch(es)"
            )
        if self.snapshot:
            out.append(
                f"snapshot of the target before deleting: {self.snapshot}"
                + (f" ({self.snapshot_rows} rows)" if self.snapshot_rows is not None else "")
            )
        if self.verified:
            out.append(
                "verify (full checksum): "
                + ("identical" if self.identical_after else f"{self.remaining} differences remain")
            )
        return out + self.notes


def _counts(diff: TableDiff) -> int:
    return len(diff.only_left) + len(diff.only_right) + len(diff.different)


def table_plan(
    source: TableSource, target: TableSource, spec: TableSyncSpec
) -> tuple[TablePlan, int]:
    """The integrity plan (columns both stores compare, text widths from the source) and the
    larger side's row count (it sizes the diff's first cut: without it the diff starts from
    thousands of tiny buckets, and differences spread over the table cost a query each)."""
    from tbs_emergency.integrity import with_text_groups

    columns = list(spec.columns)
    if columns and spec.updated_column and spec.updated_column not in columns:
        columns.append(spec.updated_column)
    plan, _notes = build_plan(
        spec.table,
        spec.key,
        columns,
        source.describe(),
        target.describe(),
        names=(source.name, target.name),
    )
    profile = source.profile(plan, count=True, text=True)
    other = target.profile(plan, count=True)
    expected = max(profile.rows or 0, other.rows or 0)
    return with_text_groups(plan, profile), expected


def sync_table(
    source: TableSource,
    target: TableSource,
    source_rows: RowStore,
    target_rows: RowStore,
    spec: TableSyncSpec,
    *,
    since: str | dt.datetime | None = None,
    batch_size: int = 1000,
    verify: bool = True,
    dry_run: bool = False,
    log: Any | None = None,
    max_delete_share: float | None = None,
    snapshot: bool = False,
    now: dt.datetime | None = None,
) -> TableSyncResult:
    """Sync one table (module docstring). `max_delete_share`: refuse, before any write, to
    delete more than this share of the target's rows (None: no limit). `snapshot`: copy the
    target table aside before the first write when rows will be deleted."""
    started = time.perf_counter()
    result = TableSyncResult(
        table=spec.table, system=target.name, source=source.name, dry_run=dry_run
    )
    actions = ActionLog(target.name, log)
    watermark = parse_since(since)
    if watermark is not None and not spec.updated_column:
        result.problems.append(
            f"{spec.table}: a watermark needs integrity.tables updated_column in the configuration"
        )
        return result

    plan, expected = table_plan(source, target, spec)
    # No confirmation pass: each batch reads the source rows again when it applies them, and
    # a rerun picks up whatever changed meanwhile.
    diff = diff_tables(source, target, plan, SYNC_DIFF, expected_rows=expected or None)
    result.rows_source, result.rows_target = diff.rows_left, diff.rows_right
    if diff.duplicate_left or diff.duplicate_right:
        result.problems.append(
            f"{spec.table}: duplicate keys ({len(diff.duplicate_left)} in the source,"
            f" {len(diff.duplicate_right)} in the target): a key sync cannot fix that safely"
        )
        result.seconds = round(time.perf_counter() - started, 3)
        return result
    updates = {d.key for d in diff.different}
    result.to_insert, result.to_update = len(diff.only_left), len(updates)
    result.to_delete = len(diff.only_right)
    for label, keys in (
        ("missing", diff.only_left),
        ("different", [d.key for d in diff.different]),
        ("extra", diff.only_right),
    ):
        if keys:
            result.sample_keys[label] = [display_key(k, plan.key) for k in keys[:SAMPLE_KEYS]]

    def natives(keys: Sequence[Key]) -> list[tuple[Any, ...]]:
        return [tuple(native(v, s) for v, s in zip(k, plan.key, strict=True)) for k in keys]

    batches = plan_batches(list(diff.only_left) + sorted(updates), diff.only_right, batch_size)
    result.batches = len(batches)
    if max_delete_share is not None:
        result.refused = mass_delete_refusal(
            spec.table,
            target.name,
            result.to_delete,
            result.rows_target,
            result.rows_source,
            max_delete_share,
        )
        if result.refused and dry_run:
            result.notes.append(f"a real run would refuse: {result.refused}")
        elif result.refused:
            result.problems.append(result.refused)
            actions.add(f"sync {spec.table}", "failed", "refused: mass delete")
            result.actions = actions.actions
            result.seconds = round(time.perf_counter() - started, 3)
            return result
    if snapshot and result.to_delete:
        name = snapshot_name(spec.target_table, now or dt.datetime.now(dt.UTC))
        if dry_run:
            result.notes.append(f"a real run first copies the target table to {name}")
        else:
            done = actions.attempt(
                f"snapshot {spec.target_table} as {name}",
                lambda: target_rows.snapshot_table(spec.target_table, name),
            )
            if not done.ok:
                why = actions.actions[-1].detail
                result.problems.append(
                    f"{spec.table}: the target could not be copied to {name} before deleting"
                    f" ({why}): nothing was written"
                )
                result.actions = actions.actions
                result.seconds = round(time.perf_counter() - started, 3)
                return result
            result.snapshot = name
            result.snapshot_rows = done.value
    if not batches:
        actions.add(f"sync {spec.table}", "unchanged", "target already matches the source")
    stamp_col = spec.updated_column
    for n, batch in enumerate(batches, start=1):
        columns: list[str] = []
        rows: list[tuple[Any, ...]] = []
        if batch.upsert:
            columns, rows = source_rows.read_rows(
                spec.source_table, spec.key, natives(batch.upsert)
            )
        deletes = natives(batch.delete)
        if watermark is not None and stamp_col:
            kept = [r for r in rows if _at_or_after(_column(columns, r, stamp_col), watermark)]
            result.older_than_watermark += len(rows) - len(kept)
            rows = kept
            if deletes:
                tcols, trows = target_rows.read_rows(spec.target_table, spec.key, deletes)
                fresh = [r for r in trows if _at_or_after(_column(tcols, r, stamp_col), watermark)]
                result.older_than_watermark += len(deletes) - len(fresh)
                deletes = [_key_of(tcols, r, spec.key) for r in fresh]
        inserted_keys = {tuple(k) for k in natives([k for k in batch.upsert if k not in updates])}
        row_keys = [_key_of(columns, r, spec.key) for r in rows]
        n_ins = sum(1 for k in row_keys if k in inserted_keys)
        n_upd = len(row_keys) - n_ins
        if dry_run:
            continue
        if not rows and not deletes:
            continue
        what = f"batch {n}/{len(batches)}: insert {n_ins}, update {n_upd}, delete {len(deletes)}"
        done = actions.attempt(
            what,
            lambda c=columns, r=rows, d=deletes, rk=row_keys: target_rows.write_rows(
                spec.target_table, spec.key, c, r, [*d, *rk]
            ),
        )
        if done.ok:
            result.batches_applied += 1
            result.inserted += n_ins
            result.updated += n_upd
            result.deleted += len(deletes)
        else:
            result.problems.append(f"{spec.table}: {what} failed; the batch was rolled back")
            break

    if dry_run:
        result.actions = [
            Action(system=target.name, what=line, outcome="planned") for line in result.lines()
        ]
    if verify and not dry_run:
        after = diff_tables(source, target, plan, expected_rows=expected or None)
        result.verified = True
        result.remaining = _counts(after)
        result.identical_after = after.consistent
        if not after.consistent:
            if watermark is not None and result.remaining <= result.older_than_watermark:
                result.notes.append(
                    "the differences that remain are older than the watermark (left alone)"
                )
            else:
                result.problems.append(
                    f"{spec.table}: {result.remaining} differences remain after the sync"
                )
        actions.add(
            f"verify {spec.table} (full checksum)",
            "done" if after.consistent else ("unchanged" if not result.problems else "failed"),
            f"{after.rows_left} / {after.rows_right} rows, "
            + ("identical" if after.consistent else f"{result.remaining} differences"),
        )
    if not dry_run:
        result.actions = actions.actions
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _column(columns: Sequence[str], row: Sequence[Any], name: str) -> Any:
    lowered = [c.lower() for c in columns]
    return row[lowered.index(name.lower())]


def _key_of(columns: Sequence[str], row: Sequence[Any], key: Sequence[str]) -> tuple[Any, ...]:
    return tuple(_column(columns, row, k) for k in key)


def sync_specs(settings: Any, names: Sequence[str], engine: str) -> list[TableSyncSpec]:
    """The tables to sync: those named, else `database_emergency.sync_tables`, else every
    `integrity.tables` entry marked critical. Raises ConfigError for unknown names."""
    from tbs_emergency.errors import ConfigError

    tables = {t.name: t for t in settings.integrity.tables}
    wanted = list(names) or list(settings.database_emergency.sync_tables)
    if not wanted:
        wanted = [t.name for t in settings.integrity.tables if t.critical]
    unknown = [n for n in wanted if n not in tables]
    if unknown:
        known = ", ".join(sorted(tables)) or "none configured"
        raise ConfigError([f"integrity.tables: no table {n!r} (known: {known})" for n in unknown])
    if not wanted:
        raise ConfigError(
            ["integrity.tables: no table is marked critical and none was named: nothing to sync"]
        )
    out = []
    for n in wanted:
        t = tables[n]
        own = (t.mysql_name if engine == "mysql" else t.heavydb_name) or t.name
        out.append(
            TableSyncSpec(
                table=t.name,
                source_table=own,
                target_table=own,
                key=list(t.key),
                columns=list(t.columns),
                updated_column=t.updated_column,
            )
        )
    return out


def traffic_guard(
    live: str | None, target: str, *, force: bool, dry_run: bool
) -> tuple[bool, str | None]:
    """(may write, note): never write to the environment that has traffic, nor when nobody
    can tell which one has it, unless forced. A dry run writes nothing, so it goes on."""
    if live is not None and live != target:
        return True, None
    why = f"{target} has the traffic" if live == target else "the live environment is unknown"
    if force:
        return True, f"{why}: syncing anyway (--force)"
    if dry_run:
        return True, f"{why}: a real run would refuse without --force"
    return False, f"refused: {why}; nothing was written (use --force to sync)"
