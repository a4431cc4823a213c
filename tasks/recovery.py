"""The external steps of restores and recoveries (runbook: "Manual Data Recovery Steps").

One external step per task: fetch and verify a backup's objects, prepare a target, load a
table, verify a table, replay the binlog, plan and apply a flashback, roll back or restore a
HeavyDB table, backfill it, compare tables, store a record. Steps that change something never
touch data that is not theirs without `force`; checks come first.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from tasks.backup import heavydb_recovery, mysql_recovery, utcnow
from tasks.common import settings_for
from tasks.incident import connectors_for
from tbs_emergency.errors import ConnectorError, IntegrityError, NotFound, Refused
from tbs_emergency.recovery import catalog, chunkfile, layout
from tbs_emergency.recovery.binlog import ColumnType, parse_verbose
from tbs_emergency.recovery.flashback import (
    FlashbackPlan,
    TableInfo,
    build_plan,
    conflicts,
    non_transactional,
    non_transactional_refusals,
)
from tbs_emergency.recovery.heavydb_plan import HeavyTablePlan, plan_table
from tbs_emergency.recovery.manifest import BinlogCoordinates, Manifest, MySQLTable
from tbs_emergency.recovery.pitr import BackupPoint, BinlogFile, PitrPlan, PitrRefused, plan_pitr
from tbs_emergency.recovery.reconcile import Finding, RecoveryRecord

# ------------------------------------------------------------------------------------------------
# Backups: fetch and verify before anything is touched
# ------------------------------------------------------------------------------------------------


class StagedBackup(BaseModel):
    """A backup's objects downloaded and verified into a local directory."""

    backup_id: str
    directory: str
    files: dict[str, str]  # object key -> local path
    bytes: int
    rows: int


@task(name="load-backup-catalog", retries=2, retry_delay_seconds=1, timeout_seconds=300)
def load_catalog(config_path: str | None) -> list[Manifest]:
    """Every backup that exists (a manifest that reads back intact), oldest first."""
    return catalog.scan(connectors_for(config_path).store()).complete


@task(
    name="fetch-and-verify-backup",
    retries=1,
    retry_delay_seconds=2,
    timeout_seconds=4 * 3600,
    cache_policy=NO_CACHE,
)
def fetch_backup(
    config_path: str | None,
    backup_id: str,
    mysql_tables: list[str],
    heavydb_tables: list[str],
    workdir: str | None = None,
) -> StagedBackup:
    """Read the manifest and every object needed, checking each sha256 (and each chunk's rows)
    into a private directory. Refuses, naming the object, if one is missing or corrupted."""
    log = get_run_logger()
    store = connectors_for(config_path).store()
    manifest = catalog.load_manifest(store, backup_id)
    wanted = []
    if manifest.mysql is not None:
        for t in manifest.mysql.tables:
            if t.name in mysql_tables:
                wanted += [(c.key, c.sha256, c.size, c.rows) for c in t.chunks]
    if manifest.heavydb is not None:
        for h in manifest.heavydb.tables:
            if h.name in heavydb_tables:
                wanted.append((h.key, h.sha256, h.size, None))
    directory = tempfile.mkdtemp(prefix=f"tbs-restore-{backup_id}-", dir=workdir)
    files: dict[str, str] = {}

    def fetch(item: tuple[str, str, int, int | None]) -> tuple[str, str]:
        key, sha, size, rows = item
        head = store.head(key)  # NotFound names the key
        if head.sha256 != sha or head.size != size:
            raise IntegrityError(
                store.name,
                f"check {key}",
                f"the object records sha256 {head.sha256} and {head.size} bytes; the manifest"
                f" says {sha} and {size}",
            )
        path = os.path.join(directory, key.replace("/", "__"))
        store.get_file(key, path)  # sha256 of the content checked against the object's
        if rows is not None:
            try:
                with open(path, "rb") as f:
                    n = chunkfile.count_rows(chunkfile.decode(f.read()))
            except chunkfile.ChunkFormatError as exc:
                raise IntegrityError(store.name, f"check {key}", str(exc)) from None
            if n != rows:
                raise IntegrityError(
                    store.name, f"check {key}", f"holds {n} rows, the manifest says {rows}"
                )
        return key, path

    try:
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="fetch") as pool:
            for key, path in pool.map(fetch, wanted):
                files[key] = path
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    total = sum(os.path.getsize(p) for p in files.values())
    rows = sum(r or 0 for _, _, _, r in wanted)
    log.info(
        "backup %s: manifest and %d objects verified (%s bytes)",
        backup_id,
        len(files),
        f"{total:,}",
    )
    return StagedBackup(
        backup_id=backup_id, directory=directory, files=files, bytes=total, rows=rows
    )


@task(name="discard-staged-backup", retries=0, timeout_seconds=300)
def discard_staged(staged: StagedBackup) -> None:
    shutil.rmtree(staged.directory, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# MySQL restore
# ------------------------------------------------------------------------------------------------


class MySQLTargetPlan(BaseModel):
    database: str
    load_database: str  # where rows are loaded (a staging database when swapping)
    swap: bool  # True: existing tables are moved aside, the staged ones renamed into place
    aside_database: str | None = None
    existing_tables: list[str] = Field(default_factory=list)
    created: list[str] = Field(default_factory=list)  # databases this run created


@task(name="prepare-mysql-target", retries=1, retry_delay_seconds=2, timeout_seconds=300)
def prepare_mysql_target(
    config_path: str | None,
    env: str,
    target_database: str,
    tables: list[MySQLTable],
    short: str,
    force: bool,
    live_database: str,
) -> MySQLTargetPlan:
    """Create the target database and its empty tables.

    A target that already holds any of the tables is refused without `force`; with it the
    rows go to a staging database first and the existing tables are kept aside (renamed)
    when the verified tables are swapped in."""
    rec = mysql_recovery(config_path, env)
    names = [t.name for t in tables]
    existing: list[str] = []
    if rec.database_exists(target_database):
        existing = sorted(set(rec.table_names(target_database)) & set(names))
    if (existing or target_database == live_database) and not force:
        what = (
            f"{target_database} is the live database"
            if target_database == live_database
            else f"database {target_database} already has table(s) {', '.join(existing)}"
        )
        raise Refused(
            rec.db.name,
            f"restore into {target_database}",
            f"{what}: choose a new --target, or --force to replace them (the old tables are"
            " kept aside, renamed)",
        )
    swap = bool(existing)
    load_db = f"{target_database}__tbs_{short}"[:64] if swap else target_database
    created = [] if rec.database_exists(target_database) else [target_database]
    if load_db != target_database and not rec.database_exists(load_db):
        created.append(load_db)
    rec.create_database(load_db)
    if load_db != target_database:
        rec.create_database(target_database)
    for t in tables:
        rec.create_table(load_db, t.name, t.create_sql, replace=(load_db != target_database))
    return MySQLTargetPlan(
        database=target_database,
        load_database=load_db,
        swap=swap,
        aside_database=f"{target_database}__before_{short}"[:64] if swap else None,
        existing_tables=existing,
        created=created,
    )


@task(name="discard-mysql-target", retries=1, retry_delay_seconds=2, timeout_seconds=300)
def discard_mysql_target(config_path: str | None, env: str, plan: MySQLTargetPlan) -> list[str]:
    """After a failed restore: drop the databases this run created (nothing else), so a rerun
    starts clean and nobody mistakes a partial copy for a recovered one."""
    rec = mysql_recovery(config_path, env)
    dropped = []
    for db in plan.created:
        if db != plan.aside_database:
            rec.drop_database(db)
            dropped.append(db)
    return dropped


@task(
    name="load-mysql-table",
    retries=1,
    retry_delay_seconds=2,
    timeout_seconds=4 * 3600,
    cache_policy=NO_CACHE,
)
def load_mysql_table(
    config_path: str | None,
    env: str,
    database: str,
    table: MySQLTable,
    staged: StagedBackup,
) -> int:
    """LOAD DATA every chunk of one table (the table is emptied first: a retry starts over)."""
    from tbs_emergency.connectors.mysql import MySQLColumn

    rec = mysql_recovery(config_path, env)
    rec.truncate_table(database, table.name)
    cols = [
        MySQLColumn(c.name, c.data_type, c.column_type, c.nullable, c.hex, c.generated)
        for c in table.dumped_columns
    ]
    con = rec.loader(database)
    loaded = 0
    try:
        with tempfile.TemporaryDirectory(prefix="tbs-load-") as d:
            tmp = os.path.join(d, "chunk.tsv")
            for c in table.chunks:
                with open(staged.files[c.key], "rb") as f:
                    data = chunkfile.decode(f.read())
                with open(tmp, "wb") as f:
                    f.write(data)
                n = rec.load_chunk(con, database, table.name, cols, tmp)
                if n != c.rows:
                    raise IntegrityError(
                        rec.db.name,
                        f"load {database}.{table.name} chunk {c.index}",
                        f"loaded {n} rows, the backup holds {c.rows}",
                    )
                loaded += n
    finally:
        con.close()
    return loaded


@task(name="verify-mysql-table", retries=1, retry_delay_seconds=2, timeout_seconds=3600)
def verify_mysql_table(
    config_path: str | None, env: str, database: str, table: MySQLTable
) -> dict[str, Any]:
    """The restored table's row count and checksum against the backup's (computed the same way
    on the source, inside the backup's snapshot)."""
    from tbs_emergency.connectors.mysql import MySQLColumn

    rec = mysql_recovery(config_path, env)
    cols = [
        MySQLColumn(c.name, c.data_type, c.column_type, c.nullable, c.hex, c.generated)
        for c in table.columns
    ]
    rows, checksum = rec.table_checksum(database, table.name, cols)
    return {
        "table": table.name,
        "rows": rows,
        "expected_rows": table.rows,
        "checksum": checksum,
        "expected_checksum": table.checksum,
        "ok": rows == table.rows and checksum == table.checksum,
    }


@task(name="swap-mysql-tables", retries=0, timeout_seconds=600)
def swap_mysql_tables(
    config_path: str | None, env: str, plan: MySQLTargetPlan, tables: list[str]
) -> list[str]:
    """One atomic RENAME: existing target tables aside, verified staged tables into place."""
    rec = mysql_recovery(config_path, env)
    assert plan.aside_database is not None
    rec.create_database(plan.aside_database)
    pairs: list[tuple[str, str]] = []
    for t in tables:
        if t in plan.existing_tables:
            pairs.append((f"{plan.database}.{t}", f"{plan.aside_database}.{t}"))
        pairs.append((f"{plan.load_database}.{t}", f"{plan.database}.{t}"))
    rec.rename_tables(pairs)
    if not rec.table_names(plan.load_database):
        rec.drop_database(plan.load_database)
    return [f"{a} -> {b}" for a, b in pairs]


# ------------------------------------------------------------------------------------------------
# HeavyDB restore
# ------------------------------------------------------------------------------------------------


@task(name="restore-heavydb-table", retries=0, timeout_seconds=4 * 3600)
def restore_heavydb_table(
    config_path: str | None,
    env: str,
    manifest: Manifest,
    table: str,
    target: str,
    staged: StagedBackup,
    restore_dir: str,
    force: bool,
    short: str,
) -> dict[str, Any]:
    """RESTORE TABLE from the verified dump into `target` and check its row count.

    An existing target is refused without `force`; with it the dump is restored under a new
    name, checked, and only then swapped in (the old table is kept, renamed)."""
    assert manifest.heavydb is not None
    entry = manifest.heavydb.table(table)
    assert entry is not None
    hr = heavydb_recovery(config_path, env)
    hdb = hr.db
    exists = hr.exists(target)
    if exists and not force:
        raise Refused(
            hdb.name,
            f"restore {table} into {target}",
            f"table {target} exists: choose another name, or --force to replace it (the old"
            " table is kept, renamed)",
        )
    load_name = f"{target}__tbs_{short}" if exists else target
    if load_name != target:
        hr.drop_table(load_name)  # a leftover of an interrupted earlier attempt
    folder = Path(restore_dir) / staged.backup_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{table}.dump"
    shutil.copyfile(staged.files[entry.key], path)
    try:
        hr.restore_table(load_name, str(path), entry.compression)
    finally:
        path.unlink(missing_ok=True)
    rows = hdb.row_count(load_name)
    if rows != entry.rows:
        raise IntegrityError(
            hdb.name, f"restore {table}", f"{rows} rows restored, the backup holds {entry.rows}"
        )
    moved = None
    if exists:
        moved = f"{target}__before_{short}"
        hr.rename_table(target, moved)
        hr.rename_table(load_name, target)
    return {"table": table, "target": target, "rows": rows, "epoch": entry.epoch, "kept": moved}


# ------------------------------------------------------------------------------------------------
# Point-in-time recovery (MySQL)
# ------------------------------------------------------------------------------------------------


class PitrDecision(BaseModel):
    plan: PitrPlan | None = None
    refused: str | None = None


@task(name="plan-point-in-time-recovery", retries=1, retry_delay_seconds=2, timeout_seconds=300)
def plan_mysql_pitr(
    config_path: str | None, env: str, target_at: datetime, target_database: str
) -> PitrDecision:
    """The plan, or the reason point-in-time recovery to `target_at` is refused."""
    try:
        return PitrDecision(plan=_plan_mysql_pitr(config_path, env, target_at, target_database))
    except PitrRefused as exc:
        return PitrDecision(refused=exc.reason)


def _plan_mysql_pitr(
    config_path: str | None, env: str, target_at: datetime, target_database: str
) -> PitrPlan:
    rec = mysql_recovery(config_path, env)
    db = rec.db
    manifests = catalog.scan(connectors_for(config_path).store()).complete
    points = [
        BackupPoint(
            m.backup_id,
            m.mysql.snapshot_at,
            m.mysql.binlog,
            m.mysql.database,
            m.mysql.identity,
            m.mysql.all_tables,
        )
        for m in manifests
        if m.mysql is not None
    ]
    logs = [BinlogFile(name, size) for name, size in rec.binary_logs()]
    file, pos, gtid = rec.master_status()
    return plan_pitr(
        target_at=target_at if target_at.tzinfo else target_at.replace(tzinfo=UTC),
        server_now=rec.server_clock(),
        backups=points,
        binlogs=logs,
        current=BinlogCoordinates(file=file, position=pos, gtid=gtid),
        source_database=db.config.database,
        target_database=target_database,
        identity=db.config.identity,
        gtid_at=lambda c: rec.gtid_at(c.file, c.position),
    )


@task(name="count-binlog-row-changes", retries=1, retry_delay_seconds=2, timeout_seconds=3600)
def binlog_row_deltas(config_path: str | None, env: str, plan: PitrPlan) -> dict[str, Any]:
    """Per table: rows the replay inserts minus rows it deletes (from the binlog's own counts),
    to verify the replayed database independently of the replay."""
    rec = mysql_recovery(config_path, env)
    return rec.binlog_row_deltas(
        plan.files,
        database=plan.source_database,
        start_position=plan.start.position,
        stop_datetime=plan.stop_at,
    )


@task(name="replay-binlog", retries=0, timeout_seconds=24 * 3600)
def replay_binlog(config_path: str | None, env: str, plan: PitrPlan) -> dict[str, Any]:
    """mariadb-binlog | mariadb from the backup's position up to T, into the target."""
    log = get_run_logger()
    rec = mysql_recovery(config_path, env)
    log.info(
        "replaying %s from %s up to %s into %s (%s bytes of binlog at most)",
        ", ".join(plan.files),
        plan.start,
        plan.stop_at.isoformat(),
        plan.target_database,
        f"{plan.binlog_bytes:,}",
    )
    return rec.replay_binlog(
        plan.files,
        plan.start.position,
        plan.stop_at,
        plan.source_database,
        plan.target_database,
    )


@task(name="count-mysql-rows", retries=1, retry_delay_seconds=1, timeout_seconds=3600)
def count_rows(config_path: str | None, env: str, database: str) -> dict[str, int]:
    rec = mysql_recovery(config_path, env)
    return {t: rec.row_count(database, t) for t in rec.table_names(database)}


# ------------------------------------------------------------------------------------------------
# Flashback
# ------------------------------------------------------------------------------------------------


def _table_info(rec: Any, database: str, table: str) -> TableInfo:
    lay = rec.layout(database, table)
    return TableInfo(
        database=database,
        name=table,
        columns=[ColumnType(c.name, c.data_type, c.column_type, binary=c.hex) for c in lay.columns],
        primary_key=list(lay.primary_key),
    )


def _files_between(logs: list[tuple[str, int]], first: str, last: str) -> list[str]:
    names = [n for n, _ in logs]
    return names[names.index(first) : names.index(last) + 1]


@task(name="plan-flashback", retries=1, retry_delay_seconds=2, timeout_seconds=1800)
def plan_flashback(
    config_path: str | None,
    env: str,
    flashback_id: str,
    since: datetime,
    tables: list[str],
) -> FlashbackPlan:
    """What undoing the row changes since `since` on `tables` means, read from the binlog."""
    rec = mysql_recovery(config_path, env)
    db = rec.db
    database = db.config.database
    since = since if since.tzinfo else since.replace(tzinfo=UTC)
    info = rec.server_info()
    base = FlashbackPlan(
        flashback_id=flashback_id,
        database=database,
        tables=sorted(tables),
        since=since,
        start_file="",
        until=BinlogCoordinates(file="-", position=4),
    )
    # Before anything else: a non-transactional table cannot be flashed back (bad input).
    bad = non_transactional(rec.table_engines(database, sorted(tables)))
    if bad:
        base.non_transactional = bad
        base.refusals += non_transactional_refusals(database, bad)
        return base
    if not info["log_bin"]:
        base.refusals.append("binary logging is off: there is nothing to undo changes from")
        return base
    if info["binlog_format"] != "ROW" or info["binlog_row_image"] != "FULL":
        base.refusals.append(
            f"the binlog is {info['binlog_format']}/{info['binlog_row_image']}: flashback needs"
            " ROW format with FULL row images"
        )
        return base
    if since > info["now"]:
        base.refusals.append(
            f"{since.isoformat()} is in the future (the server's clock says"
            f" {info['now'].isoformat()})"
        )
        return base
    present = set(rec.table_names(database))
    missing = [t for t in tables if t not in present]
    if missing:
        raise NotFound(db.name, "plan flashback", f"no table {', '.join(missing)} in {database}")
    logs = rec.binary_logs()
    file, pos, gtid = rec.master_status()
    start_file = None
    for name, _ in reversed(logs):
        started = rec.binlog_file_start(name)
        if started is not None and started <= since:
            start_file = name
            break
    if start_file is None:
        oldest = logs[0][0] if logs else "none"
        base.refusals.append(
            f"{since.isoformat()} is before the oldest retained binary log ({oldest}): the"
            " changes since then cannot all be undone; use point-in-time recovery"
        )
        return base
    files = _files_between(logs, start_file, file)
    text = rec.binlog_text(files, start_datetime=since, stop_position=pos, database=database)
    decoded = parse_verbose(text, start_file)
    infos = {t: _table_info(rec, database, t) for t in tables}
    plan = build_plan(
        flashback_id,
        decoded,
        infos,
        database,
        since,
        start_file,
        BinlogCoordinates(file=file, position=pos, gtid=gtid),
    )
    earlier = sorted({m for m in _flashback_marks(text) if m != flashback_id})
    if earlier:
        plan.refusals.append(
            f"flashback(s) {', '.join(earlier)} were applied inside this window: undoing them"
            " would redo what they undid; choose a time after them"
        )
    return plan


def _flashback_marks(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        if line.startswith("#Q> /* tbs-flashback:"):
            out.append(line[len("#Q> /* tbs-flashback:") :].split(" ", 1)[0])
    return out


class FlashbackOutcome(BaseModel):
    applied: bool
    already_applied: bool = False
    conflicts: list[str] = Field(default_factory=list)
    counts: dict[str, Any] = Field(default_factory=dict)
    position_after: list[Any] | None = None
    statements: int = 0


@task(name="apply-flashback", retries=0, timeout_seconds=3600, cache_policy=NO_CACHE)
def apply_flashback(
    config_path: str | None, env: str, plan: FlashbackPlan, lock_wait_s: float = 10.0
) -> FlashbackOutcome:
    """Apply the plan's inverse row images (`mariadb-binlog --flashback`) in one transaction,
    after locking the rows and checking nobody changed them since the plan."""
    log = get_run_logger()
    rec = mysql_recovery(config_path, env)
    database = plan.database
    logs = rec.binary_logs()
    files = _files_between(logs, plan.start_file, plan.until.file)
    done = rec.flashback_applied(
        plan.flashback_id, _files_between(logs, plan.until.file, logs[-1][0]), plan.until.position
    )
    if done is not None:
        log.info("flashback %s is already in the binlog at %s:%s", plan.flashback_id, *done)
        return FlashbackOutcome(applied=True, already_applied=True, position_after=list(done))
    statements: list[str] = []
    for table in plan.tables:
        if not sum(plan.changes.get(table, {}).values()):
            continue
        stmts = rec.flashback_statements(
            files, database, table, start_datetime=plan.since, stop_position=plan.until.position
        )
        statements += stmts if not statements else stmts[1:]  # one format description
    infos = {t: _table_info(rec, database, t) for t in plan.tables}

    def check(position: tuple[str, int]) -> list[str]:
        later_files = _files_between(rec.binary_logs(), plan.until.file, position[0])
        if (position[0], position[1]) == (plan.until.file, plan.until.position):
            return []
        text = rec.binlog_text(
            later_files,
            start_position=plan.until.position,
            stop_position=position[1],
            database=database,
        )
        return conflicts(parse_verbose(text, plan.until.file), database, infos, plan.touched_keys)

    keys = {
        t: (list(infos[t].primary_key), plan.touched_keys.get(t, []))
        for t in plan.tables
        if plan.touched_keys.get(t)
    }
    result = rec.apply_flashback(
        plan.flashback_id, database, statements, keys, plan.row_delta, check, lock_wait_s
    )
    return FlashbackOutcome(
        applied=bool(result["applied"]),
        conflicts=list(result["conflicts"]),
        counts=result["counts"],
        position_after=result.get("position_after"),
        statements=max(0, len(statements) - 1),
    )


# ------------------------------------------------------------------------------------------------
# HeavyDB recovery to T
# ------------------------------------------------------------------------------------------------


@task(name="plan-heavydb-recovery", retries=1, retry_delay_seconds=2, timeout_seconds=300)
def plan_heavydb_recovery(
    config_path: str | None,
    env: str,
    target_at: datetime,
    tables: list[str],
    dumps_only: list[str] | None = None,
) -> list[HeavyTablePlan]:
    """Per table: unchanged, roll back by epoch, restore a dump, or refused (with why).
    Tables in `dumps_only` ignore epochs (their rollback was refused)."""
    store = connectors_for(config_path).store()
    cat = catalog.scan(store)
    records = catalog.epoch_records(cat, store)
    dumps = catalog.dump_records(cat)
    hr = heavydb_recovery(config_path, env)
    present = set(hr.db.tables())
    names = tables or sorted({r.table for r in records} | {d.table for d in dumps})
    plans = []
    for t in names:
        current = max_rb = None
        if t in present:
            details = hr.table_details(t)
            current, max_rb = details["epoch"], details["max_rollback_epochs"]
        usable = [] if t in (dumps_only or []) else records
        plans.append(plan_table(t, target_at, current, max_rb, usable, dumps))
    return plans


@task(name="rollback-heavydb-table", retries=0, timeout_seconds=600)
def rollback_heavydb_table(
    config_path: str | None, env: str, plan: HeavyTablePlan
) -> dict[str, Any]:
    """set_table_epoch to the planned epoch; a refusal (epoch rolled off) is reported, not
    raised, so the flow can fall back to the dump."""
    hr = heavydb_recovery(config_path, env)
    assert plan.epoch is not None
    try:
        hr.set_table_epoch(plan.table, plan.epoch)
    except ConnectorError as exc:
        return {"table": plan.table, "ok": False, "detail": str(exc)}
    return {"table": plan.table, "ok": True, "epoch": hr.table_epoch(plan.table)}


@task(name="backfill-heavydb-table", retries=0, timeout_seconds=3600)
def backfill_heavydb_table(
    config_path: str | None,
    env: str,
    table: str,
    mysql_table: str,
    key: str,
    updated_column: str,
    after: datetime,
    until: datetime,
) -> dict[str, Any]:
    """Copy rows the MySQL archive has with updated_column in (after, until] into HeavyDB
    (replacing rows with the same key). Rows changed after `until` are reported: their
    state at `until` is not in the archive any more."""
    rec = mysql_recovery(config_path, env)
    hr = heavydb_recovery(config_path, env)
    heavy_cols = [c for c, _ in hr.columns(table)]
    rows, later = rec.rows_changed_between(mysql_table, heavy_cols, updated_column, after, until)
    key_index = heavy_cols.index(key)
    keys = [r[key_index] for r in rows]
    if keys:
        hr.delete_keys(table, key, keys)
        hr.load_rows(table, heavy_cols, rows)
    return {"table": table, "backfilled": len(rows), "changed_after": later}


@task(name="compare-heavydb-with-archive", retries=1, retry_delay_seconds=2, timeout_seconds=3600)
def compare_heavydb_with_archive(
    config_path: str | None, env: str, table: str, until: datetime | None
) -> dict[str, Any]:
    """A recovered HeavyDB table against the MySQL archive with the integrity engine (checksum
    bisection over every compared column, then row by row), the differences sorted by the
    archive's `updated_column` against `until` (T):

    - archive rows last changed at or before T must be in HeavyDB exactly as in the archive:
      a missing or different one is a failure (`only_archive`, `different`);
    - archive rows changed after T cannot be checked (their state at T is not in the archive):
      counted as `changed_after`;
    - HeavyDB rows the archive does not have (deleted there after T, or never archived) are a
      failure too (`only_heavydb`): a person decides.

    `table` names an `integrity.tables` entry (its HeavyDB and MySQL names, key, columns)."""
    from tasks.backup import recovery_mysql
    from tasks.integrity import open_store, source, table_config
    from tbs_emergency.connectors.mysql import MySQLIntegrity
    from tbs_emergency.integrity import DiffOptions, build_plan, diff_tables, with_text_groups
    from tbs_emergency.integrity.normalize import native

    m = table_config(settings_for(config_path), table)
    with open_store(config_path, env, "heavydb") as heavy_db:
        heavy = source(heavy_db, m, "heavydb")
        # the archive as data protection reads it (the administrative account when configured)
        archive = source(MySQLIntegrity(recovery_mysql(config_path, env)), m, "mysql")
        plan, notes = build_plan(
            m.name,
            m.key,
            m.columns,
            heavy.describe(),
            archive.describe(),
            names=(heavy.name, archive.name),
        )
        profile = heavy.profile(plan, count=True, text=True)
        other = archive.profile(plan, count=True)
        plan = with_text_groups(plan, profile)
        expected = max(profile.rows or 0, other.rows or 0)
        diff = diff_tables(heavy, archive, plan, DiffOptions(), expected_rows=expected)
        changed_after: list[Any] = []
        upd_spec = next(
            (
                c
                for c in plan.columns
                if m.updated_column and c.name.lower() == m.updated_column.lower()
            ),
            None,
        )
        if until is not None and upd_spec is not None:
            cut = until.astimezone(UTC).replace(tzinfo=None, microsecond=0)
            pos = plan.specs.index(upd_spec)
            suspects = diff.only_right + [d.key for d in diff.different]
            later = {
                row[: len(plan.key)]
                for row in (archive.fetch(plan, suspects) if suspects else [])
                if row[pos] is not None and native(row[pos], upd_spec) >= cut
            }
            changed_after = [k for k in suspects if k in later]
            diff.only_right = [k for k in diff.only_right if k not in later]
            diff.different = [d for d in diff.different if d.key not in later]
    problems = len(diff.only_left) + len(diff.only_right) + len(diff.different)
    problems += len(diff.duplicate_left) + len(diff.duplicate_right)
    return {
        "table": table,
        "method": "integrity diff (checksums, then rows)",
        "heavydb_rows": diff.rows_left,
        "archive_rows": diff.rows_right,
        "only_heavydb": len(diff.only_left),
        "only_archive": len(diff.only_right),
        "different": len(diff.different),
        "changed_after": len(changed_after),
        "sample_only_heavydb": diff.display_keys(diff.only_left[:10]),
        "sample_only_archive": diff.display_keys(diff.only_right[:10]),
        "sample_different": [diff.describe(d) for d in diff.different[:10]],
        "notes": notes,
        "ok": problems == 0,
    }


# ------------------------------------------------------------------------------------------------
# Comparison and records
# ------------------------------------------------------------------------------------------------


@task(name="compare-mysql-tables", retries=1, retry_delay_seconds=2, timeout_seconds=4 * 3600)
def compare_mysql_tables(
    config_path: str | None, env: str, left_db: str, right_db: str, table: str
) -> list[Finding]:
    """Key by key: rows only in the live table, only in the recovered one, and different."""
    rec = mysql_recovery(config_path, env)
    lay = rec.layout(left_db, table)
    if not lay.primary_key:
        lr, lc = rec.table_checksum(left_db, table, lay.columns)
        rr, rc = rec.table_checksum(right_db, table, lay.columns)
        if (lr, lc) == (rr, rc):
            return [Finding(kind="verified", system="mysql", table=table, detail="identical")]
        return [
            Finding(
                kind="needs-person",
                system="mysql",
                table=table,
                detail=f"differs ({lr} live rows, {rr} recovered) and has no primary key to"
                " compare row by row",
            )
        ]
    left = rec.row_digests(left_db, table, lay.columns, lay.primary_key)
    right = rec.row_digests(right_db, table, lay.columns, lay.primary_key)
    only_left: list[Any] = []
    only_right: list[Any] = []
    changed: list[Any] = []
    counts = {"left": 0, "right": 0, "changed": 0}
    lv = next(left, None)
    rv = next(right, None)
    while lv is not None or rv is not None:
        if rv is None or (lv is not None and lv[0] < rv[0]):
            counts["left"] += 1
            if len(only_left) < 10:
                only_left.append(lv[0] if len(lv[0]) > 1 else lv[0][0])  # type: ignore[index]
            lv = next(left, None)
        elif lv is None or rv[0] < lv[0]:
            counts["right"] += 1
            if len(only_right) < 10:
                only_right.append(rv[0] if len(rv[0]) > 1 else rv[0][0])
            rv = next(right, None)
        else:
            if lv[1] != rv[1]:
                counts["changed"] += 1
                if len(changed) < 10:
                    changed.append(lv[0] if len(lv[0]) > 1 else lv[0][0])
            lv = next(left, None)
            rv = next(right, None)
    out = []
    if counts["left"]:
        out.append(
            Finding(
                kind="differed",
                system="mysql",
                table=table,
                rows=counts["left"],
                detail=f"rows in {left_db} that the recovered {right_db} does not have"
                " (added after the recovery point, or lost from it)",
                sample=only_left,
            )
        )
    if counts["right"]:
        out.append(
            Finding(
                kind="differed",
                system="mysql",
                table=table,
                rows=counts["right"],
                detail=f"rows in the recovered {right_db} that {left_db} no longer has"
                " (deleted after the recovery point)",
                sample=only_right,
            )
        )
    if counts["changed"]:
        out.append(
            Finding(
                kind="differed",
                system="mysql",
                table=table,
                rows=counts["changed"],
                detail=f"rows that differ between {left_db} and {right_db}",
                sample=changed,
            )
        )
    if out:
        out.append(
            Finding(
                kind="needs-person",
                system="mysql",
                table=table,
                detail=f"decide which rows of {right_db} to copy back into {left_db}"
                " (nothing was copied automatically)",
            )
        )
    else:
        out.append(
            Finding(
                kind="verified",
                system="mysql",
                table=table,
                detail=f"{left_db} and {right_db} are identical",
            )
        )
    return out


@task(name="store-recovery-record", retries=3, retry_delay_seconds=[1, 2, 4], timeout_seconds=60)
def store_record(config_path: str | None, record: RecoveryRecord) -> str:
    store = connectors_for(config_path).store()
    key = layout.recovery_report_key(record.recovery_id)
    store.put(key, record.model_dump_json(indent=1).encode(), {"kind": record.kind})
    return key


@task(name="read-recovery-record", retries=2, retry_delay_seconds=1, timeout_seconds=60)
def read_record(config_path: str | None, recovery_id: str) -> RecoveryRecord:
    store = connectors_for(config_path).store()
    return RecoveryRecord.model_validate_json(store.get(layout.recovery_report_key(recovery_id)))


@task(name="write-flashback-journal", retries=3, retry_delay_seconds=[1, 2, 4], timeout_seconds=60)
def write_flashback_journal(config_path: str | None, flashback_id: str, doc: dict[str, Any]) -> str:
    store = connectors_for(config_path).store()
    key = layout.flashback_journal_key(flashback_id)
    store.put(key, json.dumps(doc, indent=1, default=str).encode(), {"kind": "flashback-journal"})
    return key


@task(name="read-flashback-journal", retries=2, retry_delay_seconds=1, timeout_seconds=60)
def read_flashback_journal(config_path: str | None, flashback_id: str) -> dict[str, Any] | None:
    store = connectors_for(config_path).store()
    key = layout.flashback_journal_key(flashback_id)
    if not store.exists(key):
        return None
    return dict(json.loads(store.get(key)))


def now_utc() -> datetime:
    return utcnow()
