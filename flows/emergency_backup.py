"""Emergency backup (runbook: `./heavydb-emergency-backup.sh --verify-integrity --compress`).

Guarantees: a backup exists only when its manifest does, and the manifest is written last,
after every object was written and read back. The MySQL archive is dumped from one consistent
snapshot (chunked by primary key, chunks in parallel, LZ4, server-side encryption) with the
binlog file, position and GTID of that snapshot; each HeavyDB table is dumped with `DUMP TABLE`
and the epoch it holds. A failed or killed backup leaves no manifest: it does not exist, and a
rerun with the same `backup_id` finishes it (same objects, rewritten). Retention
(`storage.backup_retention_days`) runs after a successful backup.

Needs: MySQL SELECT, RELOAD and BINLOG MONITOR (database_emergency.mysql_admin, else the
environment's account); HeavyDB DUMP rights and a dump directory both the HeavyDB server and this
process can use (`heavydb_dump_dir`); write access to the bucket.
"""

from __future__ import annotations

import time
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact
from pydantic import BaseModel, Field, field_validator

from tasks.backup import (
    apply_retention,
    backup_heavydb_table,
    backup_mysql,
    default_dump_dir,
    heavydb_tables,
    read_manifest,
    record_heavydb_epochs,
    remove_strays,
    utcnow,
    verify_backup_objects,
    write_manifest,
)
from tasks.common import settings_for
from tasks.rollback import active_traffic
from tbs_emergency.errors import IntegrityError, NotFound
from tbs_emergency.recovery.ids import new_id, validate_id
from tbs_emergency.recovery.manifest import HeavyDBSection, Manifest, ObjectEntry


class BackupParams(BaseModel):
    config_path: str | None = None
    # None: the environment that has traffic (what users write to now).
    environment: str | None = None
    mysql: bool = True
    heavydb: bool = True
    # Empty: every table. Names apply to both databases (a name may exist in only one).
    tables: list[str] = Field(default_factory=list)
    # Given: finish (or confirm) that backup; a rerun never makes a second one.
    backup_id: str | None = None
    connections: int = Field(4, ge=1, le=32)
    # Size of a MySQL chunk (its text form); also capped by the server's max_allowed_packet / 4.
    chunk_bytes: int = Field(4 * 1024 * 1024, ge=64 * 1024)
    heavydb_compression: Literal["gzip", "lz4", "none"] = "gzip"
    heavydb_dump_dir: str | None = None
    # Only record HeavyDB table epochs (cheap; schedule it often for epoch-based recovery).
    epochs_only: bool = False
    apply_retention: bool = True

    @field_validator("backup_id")
    @classmethod
    def _valid_id(cls, v: str | None) -> str | None:
        return validate_id(v) if v is not None else None


class BackupReport(BaseModel):
    backup_id: str
    environment: str
    manifest: str | None
    complete: bool
    already_existed: bool = False
    objects: list[ObjectEntry] = Field(default_factory=list)
    mysql_rows: int = 0
    heavydb_tables: dict[str, int] = Field(default_factory=dict)  # table -> epoch
    binlog: str | None = None
    bytes: int = 0
    seconds: float = 0.0
    warnings: list[str] = Field(default_factory=list)
    retention: list[dict[str, object]] = Field(default_factory=list)
    epochs_record: dict[str, object] | None = None

    def markdown(self) -> str:
        lines = [
            f"# Backup {self.backup_id}: {'complete' if self.complete else 'INCOMPLETE'}",
            "",
            f"- environment: {self.environment}",
            f"- manifest: {self.manifest or '-'}",
            f"- MySQL rows: {self.mysql_rows:,}; binlog position: {self.binlog or '-'}",
            f"- HeavyDB table epochs: {self.heavydb_tables or '-'}",
            f"- objects: {len(self.objects)}, {self.bytes:,} bytes; {self.seconds:.1f} s",
        ]
        lines += [f"- warning: {w}" for w in self.warnings]
        deleted = [r for r in self.retention if r.get("done")]
        if deleted:
            lines.append(f"- retention deleted: {', '.join(str(r['backup_id']) for r in deleted)}")
        return "\n".join(lines) + "\n"


def _report_from(manifest: Manifest, existed: bool, seconds: float) -> BackupReport:
    return BackupReport(
        backup_id=manifest.backup_id,
        environment=manifest.environment,
        manifest=manifest.key,
        complete=True,
        already_existed=existed,
        objects=manifest.objects,
        mysql_rows=sum(t.rows for t in manifest.mysql.tables) if manifest.mysql else 0,
        heavydb_tables={t.name: t.epoch for t in manifest.heavydb.tables}
        if manifest.heavydb
        else {},
        binlog=str(manifest.mysql.binlog) if manifest.mysql and manifest.mysql.binlog else None,
        bytes=manifest.total_bytes,
        seconds=seconds,
        warnings=(manifest.mysql.warnings if manifest.mysql else [])
        + (manifest.heavydb.warnings if manifest.heavydb else []),
    )


@flow(name="emergency_backup", log_prints=False)
def emergency_backup(params: BackupParams | None = None) -> BackupReport:
    """Back up MySQL (consistent snapshot + binlog position) and HeavyDB (dumps + epochs) to S3;
    verify by reading everything back; write the manifest last; apply retention."""
    params = params or BackupParams()
    log = get_run_logger()
    started = time.monotonic()
    started_at = utcnow()
    cfg = params.config_path
    settings = settings_for(cfg)
    env = params.environment or active_traffic(cfg)
    settings.environment(env)  # a clear error for an unknown name
    if params.epochs_only:
        record = record_heavydb_epochs(cfg, env, params.tables)
        return BackupReport(
            backup_id=str(record["id"]),
            environment=env,
            manifest=None,
            complete=True,
            epochs_record=record,
            heavydb_tables=dict(record["epochs"]),  # type: ignore[arg-type]
            seconds=round(time.monotonic() - started, 3),
        )
    if not (params.mysql or params.heavydb):
        raise ValueError("nothing to back up: choose MySQL, HeavyDB or both")
    backup_id = params.backup_id or new_id(started_at)
    existing = read_manifest(cfg, backup_id)
    if existing is not None:
        log.info("backup %s already has its manifest: nothing to do", backup_id)
        return _report_from(existing, True, round(time.monotonic() - started, 3))
    log.info("backup %s of environment %s started", backup_id, env)
    progress_id = create_progress_artifact(
        0.0, key="backup-progress", description=f"backup {backup_id}: starting"
    )
    try:
        mysql_future = (
            backup_mysql.submit(
                cfg,
                backup_id,
                env,
                params.tables,
                params.connections,
                target_chunk_bytes=params.chunk_bytes,
                progress_id=progress_id,
            )
            if params.mysql
            else None
        )
        heavy_futures = []
        warnings: list[str] = []
        if params.heavydb:
            present = heavydb_tables(cfg, env)
            wanted = params.tables or present
            missing = [t for t in wanted if t not in present]
            if missing and (not params.mysql or not params.tables):
                raise NotFound("heavydb", "back up", f"no table {', '.join(missing)} in HeavyDB")
            if missing:
                warnings.append(f"HeavyDB has no table {', '.join(missing)} (MySQL only)")
            dump_dir = params.heavydb_dump_dir or default_dump_dir()
            for t in [t for t in wanted if t in present]:
                heavy_futures.append(
                    backup_heavydb_table.submit(
                        cfg, backup_id, env, t, dump_dir, params.heavydb_compression
                    )
                )
        mysql_result = mysql_future.result() if mysql_future is not None else None
        heavy_tables = [f.result() for f in heavy_futures]
    except Exception as exc:
        log.error(
            "backup %s FAILED: %s. No manifest was written, so this backup does not exist;"
            " rerun with backup_id=%s to finish it, or start a new one",
            backup_id,
            exc,
            backup_id,
        )
        raise
    objects: list[ObjectEntry] = list(mysql_result.objects) if mysql_result else []
    heavydb_section = None
    if params.heavydb:
        hdb = settings.environment(env).heavydb
        from tbs_emergency.connectors import system_name

        heavydb_section = HeavyDBSection(
            system=system_name(settings, "heavydb", env),
            identity=hdb.identity,
            database=hdb.database,
            tables=heavy_tables,
            warnings=warnings,
        )
        objects += [
            ObjectEntry(
                key=t.key,
                kind="heavydb-dump",
                table=t.name,
                size=t.size,
                sha256=t.sha256,
                rows=t.rows,
            )
            for t in heavy_tables
        ]
    verify = verify_backup_objects(cfg, objects)
    if verify.problems:
        log.error(
            "backup %s FAILED verification (%d problems): no manifest written",
            backup_id,
            len(verify.problems),
        )
        raise IntegrityError("s3", f"verify backup {backup_id}", "; ".join(verify.problems[:10]))
    manifest = Manifest(
        backup_id=backup_id,
        environment=env,
        started_at=started_at,
        finished_at=utcnow(),
        verified_at=utcnow(),
        retention_days=settings.storage.backup_retention_days,
        mysql=mysql_result.section if mysql_result else None,
        heavydb=heavydb_section,
        objects=objects,
    )
    key = write_manifest(cfg, manifest)
    log.info("backup %s complete: manifest %s", backup_id, key)
    report = _report_from(manifest, False, 0.0)
    try:
        strays = remove_strays(cfg, manifest)
        if strays:
            log.info("removed %d objects an interrupted attempt left behind", len(strays))
    except Exception as exc:  # the backup exists and is verified; the leftovers are only clutter
        report.warnings.append(f"objects of an interrupted attempt were not removed: {exc}")
    if params.apply_retention:
        try:
            report.retention = apply_retention(cfg)
        except Exception as exc:  # the backup exists; retention can run next time
            report.warnings.append(f"retention did not run: {exc}")
    report.seconds = round(time.monotonic() - started, 3)
    create_markdown_artifact(
        markdown=report.markdown(), key="backup-report", description=f"backup {backup_id}"
    )
    return report
