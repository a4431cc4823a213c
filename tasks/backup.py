"""The external steps of a backup (runbook: "Emergency backup ... --verify-integrity --compress").

One task per external step: the MySQL snapshot dump (one task, because the snapshot lives in
its connections), one HeavyDB table dump, the verification that re-reads what was written,
the manifest (written last), the epoch record and the retention pass. Every task is idempotent
for a given backup id: a rerun rewrites the same objects and, once the manifest exists, does
nothing again.

MySQL steps run as `database_emergency.mysql_admin` when configured (a backup needs SELECT,
RELOAD for the FLUSH TABLES WITH READ LOCK fallback and BINLOG MONITOR), else as the
environment's own account.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from functools import reduce
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from tasks.common import settings_for
from tasks.incident import connectors_for
from tbs_emergency.errors import ConnectorError, IntegrityError, NotFound
from tbs_emergency.recovery import catalog, chunkfile, layout
from tbs_emergency.recovery.chunking import (
    KeyRange,
    boundary_ranges,
    integer_ranges,
    rows_per_chunk,
    schedule,
)
from tbs_emergency.recovery.ids import new_id
from tbs_emergency.recovery.manifest import (
    BinlogCoordinates,
    ChunkEntry,
    ColumnInfo,
    HeavyDBTable,
    Manifest,
    MySQLSection,
    MySQLTable,
    ObjectEntry,
)
from tbs_emergency.recovery.retention import StoredBackup, plan_retention

TARGET_CHUNK_BYTES = 4 * 1024 * 1024
_mysql_lock = threading.Lock()
_mysql: dict[tuple[str | None, str], Any] = {}


def utcnow() -> datetime:
    return datetime.now(UTC)


def recovery_mysql(config_path: str | None, env: str) -> Any:
    """The MySQL connector data protection uses: the admin account if configured (cached)."""
    from tbs_emergency.connectors import system_name
    from tbs_emergency.connectors.mysql import MySQLDatabase

    settings = settings_for(config_path)
    cfg = settings.environment(env).mysql
    key = (config_path, cfg.identity)
    with _mysql_lock:
        if key not in _mysql:
            admin = settings.database_emergency.mysql_admin
            name = system_name(settings, "mysql", env)
            if admin is None:
                _mysql[key] = MySQLDatabase(cfg, name)
            else:
                password = admin.password.get_secret_value() if admin.password else ""
                _mysql[key] = MySQLDatabase(cfg, name, user=admin.user, password=password)
        return _mysql[key]


def mysql_recovery(config_path: str | None, env: str) -> Any:
    from tbs_emergency.connectors.mysql import MySQLRecovery

    return MySQLRecovery(recovery_mysql(config_path, env))


def heavydb_recovery(config_path: str | None, env: str) -> Any:
    from tbs_emergency.connectors.heavydb import HeavyDBRecovery

    return HeavyDBRecovery(connectors_for(config_path).heavydb(env))


# -- progress ------------------------------------------------------------------------------------


class Progress:
    """Rows and bytes done: log lines and a Prefect progress artifact, at most every second."""

    def __init__(self, what: str, artifact_id: UUID | None, expected_rows: int) -> None:
        self.what = what
        self.artifact_id = artifact_id
        self.expected = max(expected_rows, 1)
        self.rows = 0
        self.raw = 0
        self.stored = 0
        self.parts = 0
        self._last = 0.0
        self._lock = threading.Lock()
        self._log = get_run_logger()

    def add(self, rows: int, raw: int, stored: int, final: bool = False) -> None:
        with self._lock:
            self.rows += rows
            self.raw += raw
            self.stored += stored
            self.parts += 1
            now = time.monotonic()
            if not final and now - self._last < 1.0:
                return
            self._last = now
            rows_done, raw_done, stored_done, parts = self.rows, self.raw, self.stored, self.parts
        pct = min(100.0, 100.0 * rows_done / self.expected)
        self._log.info(
            "%s: %s rows (about %.0f%%), %s bytes read, %s bytes stored, %d objects",
            self.what,
            f"{rows_done:,}",
            pct,
            f"{raw_done:,}",
            f"{stored_done:,}",
            parts,
        )
        if self.artifact_id is not None:
            from prefect.artifacts import update_progress_artifact

            # progress is best effort; the backup is not
            with contextlib.suppress(Exception):
                update_progress_artifact(
                    self.artifact_id,
                    pct,
                    description=f"{self.what}: {rows_done:,} rows, {stored_done:,} bytes stored",
                )


# -- MySQL ---------------------------------------------------------------------------------------


class MySQLBackupResult(BaseModel):
    section: MySQLSection
    objects: list[ObjectEntry]


def _column_info(c: Any) -> ColumnInfo:
    return ColumnInfo(
        name=c.name,
        data_type=c.data_type,
        column_type=c.column_type,
        nullable=c.nullable,
        hex=c.hex,
        generated=c.generated,
    )


def _plain(value: Any) -> Any:
    return value if isinstance(value, int | str | float | bool) or value is None else str(value)


def _plan_chunks(snap: Any, lay: Any, target_bytes: int, workers: int) -> list[KeyRange]:
    per = rows_per_chunk(snap.line_bytes(lay) or lay.avg_row_bytes, target_bytes)
    if not lay.primary_key:
        return [KeyRange(0)]
    if lay.integer_key:
        lo, hi = snap.key_bounds(lay)
        if lo is None or hi is None:
            return [KeyRange(0)]
        # InnoDB's row estimate can be far off (a freshly loaded table may say 0): plan for at
        # least a few chunks per worker, never more than one per `per` key values (a range of
        # `per` unique integer keys cannot hold more than `per` rows).
        span = int(hi) - int(lo) + 1
        n = min(max(1, span // per + 1), max(-(-lay.rows_estimate // per), 4 * workers), 10_000)
        return integer_ranges(int(lo), int(hi), n * per, per)
    if lay.rows_estimate <= per:
        return [KeyRange(0)]
    return boundary_ranges(snap.boundaries(lay, per))


@task(
    name="backup-mysql-snapshot",
    retries=1,
    retry_delay_seconds=5,
    timeout_seconds=4 * 3600,
    cache_policy=NO_CACHE,
)
def backup_mysql(
    config_path: str | None,
    backup_id: str,
    env: str,
    tables: list[str],
    connections: int = 4,
    lock_wait_s: float = 10.0,
    target_chunk_bytes: int = TARGET_CHUNK_BYTES,
    progress_id: UUID | None = None,
) -> MySQLBackupResult:
    """Dump the archive database from one consistent snapshot, in key-range chunks, in parallel.

    Each chunk is LZ4-compressed and stored with its sha256 (server-side encryption as
    configured); its row count comes from the server, inside the snapshot, and its checksum
    (CRC32 per row line, XOR-ed) is the one a restore's target must reproduce.
    """
    log = get_run_logger()
    rec = mysql_recovery(config_path, env)
    db = rec.db
    store = connectors_for(config_path).store()
    database = db.config.database
    info = rec.server_info()
    warnings: list[str] = []
    if not info["log_bin"]:
        warnings.append(
            "binary logging is off: this backup cannot be rolled forward (no point-in-time"
            " recovery, no flashback)"
        )
    elif info["binlog_format"] != "ROW" or info["binlog_row_image"] != "FULL":
        warnings.append(
            f"binlog_format={info['binlog_format']}, binlog_row_image="
            f"{info['binlog_row_image']}: flashback needs ROW and FULL"
        )
    with rec.snapshot(connections, lock_wait_s) as snap:
        log.info(
            "mysql: snapshot of %s on %s taken (%s, %d connections) at binlog %s",
            database,
            db.name,
            snap.consistency,
            len(snap.connections),
            f"{snap.binlog[0]}:{snap.binlog[1]}" if snap.binlog else "(binary logging off)",
        )
        names = snap.tables(database)
        if tables:
            missing = sorted(set(tables) - set(names))
            if missing:
                raise NotFound(db.name, "back up", f"no table {', '.join(missing)} in {database}")
            names = [n for n in names if n in tables]
        layouts = {n: snap.layout(database, n) for n in names}
        for lay in layouts.values():
            if not lay.transactional:
                warnings.append(
                    f"table {lay.name} uses {lay.engine}, which a snapshot does not cover: it"
                    " was read while other sessions could write to it"
                )
        target = max(64 * 1024, min(target_chunk_bytes, snap.max_allowed_packet // 4))
        workers = len(snap.connections)
        plans = {n: _plan_chunks(snap, lay, target, workers) for n, lay in layouts.items()}
        work = schedule(
            [
                (n, r.index, layouts[n].rows_estimate / len(plans[n]))
                for n in names
                for r in plans[n]
            ]
        )
        progress = Progress(
            "mysql backup", progress_id, sum(lay.rows_estimate for lay in layouts.values())
        )
        log.info(
            "mysql: %d tables, %d chunks (about %s rows)",
            len(names),
            len(work),
            f"{progress.expected:,}",
        )
        entries: dict[tuple[str, int], ChunkEntry] = {}
        queue = list(reversed(work))
        qlock = threading.Lock()
        stop = threading.Event()

        def worker(i: int) -> None:
            while not stop.is_set():
                with qlock:
                    if not queue:
                        return
                    name, index = queue.pop()
                lay = layouts[name]
                rng = plans[name][index]
                try:
                    dump = snap.dump_chunk(i, lay, rng.lower, rng.upper)
                    blob = chunkfile.encode(dump.data)
                    key = layout.mysql_chunk_key(backup_id, database, name, index)
                    stored = store.put(
                        key,
                        blob,
                        {"backup-id": backup_id, "table": name, "rows": str(dump.rows)},
                    )
                except ConnectorError as exc:
                    stop.set()
                    raise type(exc)(
                        exc.system, f"back up {name} chunk {index} {rng.describe()}", exc.detail
                    ) from None
                except Exception:
                    stop.set()
                    raise
                if dump.streamed:
                    log.info("mysql: %s chunk %d was streamed row by row (large rows)", name, index)
                entries[(name, index)] = ChunkEntry(
                    index=index,
                    key=key,
                    lower=[_plain(v) for v in rng.lower] if rng.lower is not None else None,
                    upper=[_plain(v) for v in rng.upper] if rng.upper is not None else None,
                    rows=dump.rows,
                    checksum=dump.checksum,
                    raw_size=len(dump.data),
                    size=stored.size,
                    sha256=str(stored.sha256),
                )
                progress.add(dump.rows, len(dump.data), stored.size)

        n_workers = max(1, len(snap.connections))
        with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="dump") as pool:
            futures = [pool.submit(worker, i) for i in range(n_workers)]
            wait(futures, return_when=FIRST_EXCEPTION)
            stop_error = next((f.exception() for f in futures if f.done() and f.exception()), None)
            if stop_error is not None:
                stop.set()
                wait(futures)
                raise stop_error
            for f in futures:
                f.result()
        progress.add(0, 0, 0, final=True)
        section_tables = []
        objects = []
        for n in names:
            lay = layouts[n]
            chunks = [entries[(n, r.index)] for r in plans[n]]
            section_tables.append(
                MySQLTable(
                    name=n,
                    engine=lay.engine,
                    create_sql=lay.create_sql,
                    columns=[_column_info(c) for c in lay.columns],
                    primary_key=list(lay.primary_key),
                    rows=sum(c.rows for c in chunks),
                    checksum=reduce(lambda a, c: a ^ c.checksum, chunks, 0),
                    chunks=chunks,
                )
            )
            objects += [
                ObjectEntry(
                    key=c.key,
                    kind="mysql-chunk",
                    table=n,
                    size=c.size,
                    sha256=c.sha256,
                    rows=c.rows,
                )
                for c in chunks
            ]
        binlog = (
            BinlogCoordinates(file=snap.binlog[0], position=snap.binlog[1], gtid=snap.binlog[2])
            if snap.binlog
            else None
        )
        assert snap.taken_at is not None
        section = MySQLSection(
            system=db.name,
            identity=db.config.identity,
            database=database,
            server_version=info["version"],
            server_id=info["server_id"],
            snapshot_at=snap.taken_at,
            binlog=binlog,
            consistency=snap.consistency,  # type: ignore[arg-type]
            connections=len(snap.connections),
            all_tables=not tables,
            tables=section_tables,
            warnings=warnings,
        )
    log.info(
        "mysql: %d tables, %s rows, %d objects, %s bytes stored",
        len(section.tables),
        f"{sum(t.rows for t in section.tables):,}",
        len(objects),
        f"{sum(o.size for o in objects):,}",
    )
    return MySQLBackupResult(section=section, objects=objects)


# -- HeavyDB -------------------------------------------------------------------------------------


_STAGING_DIRS: set[str] = set()
_STAGING_LOCK = threading.Lock()
_STAGING_AT_EXIT = False


def private_staging_dir(prefix: str = "tbs-staging-") -> str:
    """A new directory under the system temp dir that only this user can use (mode 0700).

    Every call makes its own (tempfile.mkdtemp, which also picks an unpredictable name), so two
    runs on one machine, or two flows in one process, never share one: a fixed path shared by
    every process made overlapping runs delete or overwrite each other's files. The directory
    and whatever is left in it are removed by `remove_staging_dir`, or when this process exits.
    """
    global _STAGING_AT_EXIT
    path = tempfile.mkdtemp(prefix=prefix)
    with _STAGING_LOCK:
        if not _STAGING_AT_EXIT:
            import atexit

            # a failed task can leave an archive behind: never leave it in the temp dir
            atexit.register(_remove_staging_dirs)
            _STAGING_AT_EXIT = True
        _STAGING_DIRS.add(path)
    return path


def remove_staging_dir(path: str) -> None:
    """Remove a directory `private_staging_dir` made, with its contents (idempotent)."""
    import shutil

    with _STAGING_LOCK:
        _STAGING_DIRS.discard(path)
    shutil.rmtree(path, ignore_errors=True)


def _remove_staging_dirs() -> None:
    with _STAGING_LOCK:
        paths = list(_STAGING_DIRS)
    for path in paths:
        remove_staging_dir(path)


def default_dump_dir() -> str:
    """A new private directory (0700) for this run's HeavyDB DUMP and RESTORE archives.

    The HeavyDB server writes each DUMP archive into it and reads each RESTORE archive from
    it, so this default only works when the server runs on this machine as this user, as in
    the sandbox (its HeavyDB stand-in is this user's process). A server elsewhere, or running
    as another user (or limited to its allowed import/export paths), needs a directory both
    can use: pass it as `heavydb_dump_dir` / `heavydb_restore_dir` (--heavydb-dump-dir).
    The tasks delete each archive once used; the directory goes with `remove_staging_dir` or
    at the process's exit.
    """
    return private_staging_dir("tbs-heavydb-dumps-")


@task(name="list-heavydb-tables", retries=2, retry_delay_seconds=1, timeout_seconds=60)
def heavydb_tables(config_path: str | None, env: str) -> list[str]:
    return connectors_for(config_path).heavydb(env).tables()


@task(name="backup-heavydb-table", retries=1, retry_delay_seconds=5, timeout_seconds=4 * 3600)
def backup_heavydb_table(
    config_path: str | None,
    backup_id: str,
    env: str,
    table: str,
    dump_dir: str,
    compression: str = "gzip",
) -> HeavyDBTable:
    """DUMP one table on the HeavyDB server, record its epoch, upload the archive (multipart).

    The archive is written by the server into `dump_dir/<backup id>/`, which this task must be
    able to read (same machine or a shared directory); it is deleted after the upload. The
    epoch is read before and after the dump: if a write moved it meanwhile, the dump is redone.
    """
    log = get_run_logger()
    hdb = connectors_for(config_path).heavydb(env)
    hr = heavydb_recovery(config_path, env)
    store = connectors_for(config_path).store()
    database = hdb.config.database
    folder = Path(dump_dir) / backup_id
    folder.mkdir(parents=True, exist_ok=True)
    key = layout.heavydb_dump_key(backup_id, database, table, compression)
    path = folder / key.rsplit("/", 1)[1]
    for attempt in range(1, 4):
        if path.exists():
            path.unlink()  # a rerun: HeavyDB refuses to overwrite an archive
        epoch = hr.table_epoch(table)
        rows = hdb.row_count(table)
        dumped_at = utcnow()
        hr.dump_table(table, str(path), compression)
        if hr.table_epoch(table) == epoch:
            break
        log.info("heavydb: %s changed during its dump (attempt %d); dumping again", table, attempt)
    else:
        path.unlink(missing_ok=True)
        raise ConnectorError(hdb.name, f"dump {table}", "the table kept changing during the dump")
    if not path.exists():
        raise NotFound(
            hdb.name,
            f"dump {table}",
            f"the server wrote no archive at {path}: the backup must run where it can read the"
            " HeavyDB server's dump directory (--heavydb-dump-dir)",
        )
    try:
        stored = store.put_file(
            key,
            str(path),
            {"backup-id": backup_id, "table": table, "epoch": str(epoch), "rows": str(rows)},
        )
    finally:
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()
    log.info(
        "heavydb: %s at epoch %d, %s rows, %s bytes stored",
        table,
        epoch,
        f"{rows:,}",
        f"{stored.size:,}",
    )
    return HeavyDBTable(
        name=table,
        epoch=epoch,
        rows=rows,
        key=key,
        size=stored.size,
        sha256=str(stored.sha256),
        compression=compression,  # type: ignore[arg-type]
        dumped_at=dumped_at,
    )


@task(name="record-heavydb-epochs", retries=2, retry_delay_seconds=1, timeout_seconds=120)
def record_heavydb_epochs(config_path: str | None, env: str, tables: list[str]) -> dict[str, Any]:
    """Store each table's current epoch with the time it was read (heavydb-epochs/<id>.json).

    These records let a HeavyDB recovery roll a table back to its state at a time by epoch."""
    hdb = connectors_for(config_path).heavydb(env)
    hr = heavydb_recovery(config_path, env)
    names = tables or hdb.tables()
    epochs: dict[str, int] = {}
    read_at: dict[str, str] = {}
    for t in names:
        epochs[t] = hr.table_epoch(t)
        read_at[t] = utcnow().isoformat()
    started = min(read_at.values()) if read_at else utcnow().isoformat()
    rid = new_id(datetime.fromisoformat(started))
    doc = {
        "id": rid,
        "recorded_at": started,
        "read_at": read_at,
        "environment": env,
        "system": hdb.name,
        "epochs": epochs,
    }
    connectors_for(config_path).store().put(
        layout.epochs_key(rid), json.dumps(doc, indent=1).encode(), {"kind": "heavydb-epochs"}
    )
    return doc


# -- verification, manifest, retention -----------------------------------------------------------


class VerifyReport(BaseModel):
    objects: int
    bytes: int
    rows: int
    problems: list[str] = Field(default_factory=list)


def _verify_one(store: Any, o: ObjectEntry) -> tuple[int, list[str]]:
    if o.kind == "mysql-chunk":
        data = store.get(o.key)  # raises IntegrityError naming the key if the sha256 differs
        if len(data) != o.size:
            return 0, [f"{o.key}: {len(data)} bytes, the backup wrote {o.size}"]
        try:
            lines = chunkfile.decode(data)
            rows = chunkfile.count_rows(lines)
        except chunkfile.ChunkFormatError as exc:
            return 0, [f"{o.key}: {exc}"]
        if o.rows is not None and rows != o.rows:
            return rows, [f"{o.key}: holds {rows} rows, the backup wrote {o.rows}"]
        return rows, []
    with tempfile.TemporaryDirectory(prefix="tbs-verify-") as d:
        stored = store.get_file(o.key, os.path.join(d, "object"))  # sha256 checked
        if stored.size != o.size:
            return 0, [f"{o.key}: {stored.size} bytes, the backup wrote {o.size}"]
    return o.rows or 0, []


@task(name="verify-backup-objects", retries=1, retry_delay_seconds=2, timeout_seconds=4 * 3600)
def verify_backup_objects(
    config_path: str | None, objects: list[ObjectEntry], workers: int = 4
) -> VerifyReport:
    """Re-read every object that was written: sha256, size, and for MySQL chunks the LZ4
    frame's content checksum and the row count."""
    log = get_run_logger()
    store = connectors_for(config_path).store()
    problems: list[str] = []
    rows = 0

    def one(o: ObjectEntry) -> tuple[int, list[str]]:
        try:
            return _verify_one(store, o)
        except (IntegrityError, NotFound) as exc:
            return 0, [f"{o.key}: {exc.kind}: {exc.detail}"]

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="verify") as pool:
        for n, errs in pool.map(one, objects):
            rows += n
            problems += errs
    report = VerifyReport(
        objects=len(objects), bytes=sum(o.size for o in objects), rows=rows, problems=problems
    )
    log.info(
        "verify: %d objects re-read, %s bytes, %s rows, %d problems",
        report.objects,
        f"{report.bytes:,}",
        f"{report.rows:,}",
        len(problems),
    )
    return report


@task(name="read-backup-manifest", retries=2, retry_delay_seconds=1, timeout_seconds=120)
def read_manifest(config_path: str | None, backup_id: str) -> Manifest | None:
    """The backup's manifest, None if it has none (IntegrityError/ManifestError if broken)."""
    store = connectors_for(config_path).store()
    if not store.exists(layout.manifest_key(backup_id)):
        return None
    return catalog.load_manifest(store, backup_id)


@task(name="write-backup-manifest", retries=2, retry_delay_seconds=[1, 3], timeout_seconds=120)
def write_manifest(config_path: str | None, manifest: Manifest) -> str:
    """Write the manifest last, then read it back (sha256 and content) before trusting it."""
    problems = manifest.problems()
    if problems:
        raise IntegrityError(
            "s3", f"write manifest of backup {manifest.backup_id}", "; ".join(problems)
        )
    store = connectors_for(config_path).store()
    key = layout.manifest_key(manifest.backup_id)
    store.put(key, manifest.to_bytes(), {"backup-id": manifest.backup_id, "kind": "manifest"})
    back = catalog.load_manifest(store, manifest.backup_id)
    if back.to_bytes() != manifest.to_bytes():
        raise IntegrityError(
            "s3", f"read back {key}", "the stored manifest differs from the one written"
        )
    return key


@task(name="remove-stray-backup-objects", retries=1, retry_delay_seconds=2, timeout_seconds=600)
def remove_strays(config_path: str | None, manifest: Manifest) -> list[str]:
    """Delete the objects under the backup's prefix its manifest does not list: what an earlier,
    interrupted attempt with the same id wrote and this one did not (its chunks can be cut
    differently). Run after the manifest is written: the manifest says what the backup is."""
    store = connectors_for(config_path).store()
    keep = {o.key for o in manifest.objects} | {layout.manifest_key(manifest.backup_id)}
    strays = [
        o.key for o in store.list(layout.backup_prefix(manifest.backup_id)) if o.key not in keep
    ]
    for key in strays:
        store.delete(key)
    return strays


@task(name="apply-backup-retention", retries=1, retry_delay_seconds=2, timeout_seconds=1800)
def apply_retention(
    config_path: str | None, dry_run: bool = False, keep_last: int = 1
) -> list[dict[str, Any]]:
    """Delete what `storage.backup_retention_days` no longer keeps (manifest first)."""
    log = get_run_logger()
    settings = settings_for(config_path)
    store = connectors_for(config_path).store()
    cat = catalog.scan(store)
    stored = [
        StoredBackup(
            b.backup_id,
            b.started_at,
            b.manifest is not None,
            b.manifest.taken_at if b.manifest else None,
            b.objects,
            b.bytes,
        )
        for b in cat.backups
    ]
    decisions = plan_retention(stored, utcnow(), settings.storage.backup_retention_days, keep_last)
    out = []
    for d in decisions:
        entry = {"backup_id": d.backup_id, "action": d.action, "reason": d.reason, "done": False}
        if d.action == "delete" and not dry_run:
            mkey = layout.manifest_key(d.backup_id)
            if store.exists(mkey):
                store.delete(mkey)  # the backup stops existing first
            for obj in list(store.list(layout.backup_prefix(d.backup_id))):
                store.delete(obj.key)
            entry["done"] = True
            log.info("retention: deleted backup %s (%s)", d.backup_id, d.reason)
        out.append(entry)
    return out
