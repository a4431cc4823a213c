"""Restore a backup (runbook: "Restore from most recent clean backup").

Guarantees: nothing is touched before the manifest and every object the restore needs have been
read back and their sha256 (and each chunk's row count) checked; a missing or corrupted object
is refused with its name. By default MySQL tables go into a new database and HeavyDB tables
into new tables; replacing existing ones needs `force`, and even then the verified copy is
swapped in and the old tables are kept aside (renamed), never dropped. After loading, every
table's row count and checksum are compared with the backup's.

Needs: MySQL CREATE, DROP, INSERT, FILE-less LOAD DATA LOCAL INFILE (server local_infile=ON)
on the target (database_emergency.mysql_admin); HeavyDB RESTORE rights and a directory the
HeavyDB server can read (`heavydb_restore_dir`).
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed
from pydantic import BaseModel, Field, field_validator

from flows.recovery_validation import validation_summary
from tasks.backup import default_dump_dir, read_manifest, utcnow
from tasks.common import settings_for
from tasks.recovery import (
    discard_mysql_target,
    discard_staged,
    fetch_backup,
    load_mysql_table,
    prepare_mysql_target,
    restore_heavydb_table,
    store_record,
    swap_mysql_tables,
    verify_mysql_table,
)
from tbs_emergency.errors import IntegrityError, NotFound
from tbs_emergency.recovery.ids import new_id, validate_id
from tbs_emergency.recovery.reconcile import RecoveryRecord, render_markdown


class RestoreParams(BaseModel):
    config_path: str | None = None
    backup_id: str
    # None: the environment the backup was taken from.
    environment: str | None = None
    # MySQL target database; None: "<database>_restore_<token>" (a new one).
    target_database: str | None = None
    # HeavyDB: each table t is restored as t + suffix; None: "_restore_<token>". "" with force:
    # replace the tables themselves.
    heavydb_suffix: str | None = None
    tables: list[str] = Field(default_factory=list)
    mysql: bool = True
    heavydb: bool = True
    force: bool = False
    dry_run: bool = False
    heavydb_restore_dir: str | None = None
    parallel: int = Field(2, ge=1, le=16)
    # a restore that replaced live tables ends with the recovery validation of the environment
    validate_recovery: bool = True

    @field_validator("backup_id")
    @classmethod
    def _valid(cls, v: str) -> str:
        return validate_id(v)


class RestoreReport(BaseModel):
    recovery_id: str
    backup_id: str
    ok: bool
    dry_run: bool
    plan: list[str] = Field(default_factory=list)
    mysql_database: str | None = None
    mysql_tables: list[dict[str, object]] = Field(default_factory=list)
    heavydb_tables: list[dict[str, object]] = Field(default_factory=list)
    swapped: list[str] = Field(default_factory=list)
    # the recovery validation's summary, when live tables were replaced
    validation: dict[str, Any] | None = None
    record: str | None = None
    seconds: float = 0.0
    problems: list[str] = Field(default_factory=list)


@flow(name="restore", log_prints=False)
def restore(params: RestoreParams) -> RestoreReport:
    """Verify a backup completely, then restore it into new (or, with force, existing) tables
    and verify counts and checksums."""
    log = get_run_logger()
    started = time.monotonic()
    cfg = params.config_path
    recovery_id = new_id(utcnow())
    short = recovery_id[-6:]
    manifest = read_manifest(cfg, params.backup_id)
    if manifest is None:
        raise NotFound(
            "s3",
            f"restore backup {params.backup_id}",
            "it has no manifest, so it does not exist (see `tbs-emergency backup list`)",
        )
    env = params.environment or manifest.environment
    want = set(params.tables)
    mysql_tables = (
        [t for t in manifest.mysql.tables if not want or t.name in want]
        if params.mysql and manifest.mysql
        else []
    )
    heavy_tables = (
        [t for t in manifest.heavydb.tables if not want or t.name in want]
        if params.heavydb and manifest.heavydb
        else []
    )
    found = {t.name for t in mysql_tables} | {t.name for t in heavy_tables}
    if want - found:
        raise NotFound(
            "s3",
            f"restore backup {params.backup_id}",
            f"the backup has no table {', '.join(sorted(want - found))}",
        )
    if not (mysql_tables or heavy_tables):
        raise NotFound("s3", f"restore backup {params.backup_id}", "nothing selected to restore")
    target_db = None
    if mysql_tables:
        assert manifest.mysql is not None
        target_db = params.target_database or f"{manifest.mysql.database}_restore_{short}"
    suffix = params.heavydb_suffix if params.heavydb_suffix is not None else f"_restore_{short}"
    plan = [
        f"verify the manifest of backup {params.backup_id} and the sha256 of its"
        f" {sum(len(t.chunks) for t in mysql_tables) + len(heavy_tables)} objects needed"
    ]
    if mysql_tables:
        plan.append(
            f"restore MySQL {', '.join(t.name for t in mysql_tables)} into database {target_db}"
            + (" (replacing existing tables, kept aside)" if params.force else "")
        )
    if heavy_tables:
        plan.append(
            "restore HeavyDB "
            + ", ".join(f"{t.name} as {t.name}{suffix}" for t in heavy_tables)
            + (" (replacing existing tables, kept renamed)" if params.force else "")
        )
    plan.append("verify row counts and checksums against the backup")
    report = RestoreReport(
        recovery_id=recovery_id,
        backup_id=params.backup_id,
        ok=False,
        dry_run=params.dry_run,
        plan=plan,
        mysql_database=target_db,
    )
    if params.dry_run:
        report.ok = True
        return report
    record = RecoveryRecord(
        recovery_id=recovery_id,
        kind="restore",
        started_at=utcnow(),
        source={"backup": params.backup_id, "environment": env},
        target={"mysql database": target_db, "heavydb suffix": suffix},
        plan=plan,
    )
    staged = fetch_backup(
        cfg, params.backup_id, [t.name for t in mysql_tables], [t.name for t in heavy_tables]
    )
    record.add("verified", "s3", f"manifest and {len(staged.files)} objects read back intact")
    tplan = None
    try:
        if mysql_tables:
            assert manifest.mysql is not None and target_db is not None
            tplan = prepare_mysql_target(
                cfg, env, target_db, mysql_tables, short, params.force, manifest.mysql.database
            )
            futures = [
                load_mysql_table.submit(cfg, env, tplan.load_database, t, staged)
                for t in mysql_tables
            ]
            for f in futures:
                f.result()
            checks = [verify_mysql_table(cfg, env, tplan.load_database, t) for t in mysql_tables]
            report.mysql_tables = checks
            bad = [c for c in checks if not c["ok"]]
            for c in checks:
                record.add(
                    "verified" if c["ok"] else "needs-person",
                    "mysql",
                    f"{c['rows']} rows, checksum {c['checksum']}"
                    + (
                        ""
                        if c["ok"]
                        else f" (backup: {c['expected_rows']}, {c['expected_checksum']})"
                    ),
                    table=str(c["table"]),
                    rows=int(c["rows"]),  # type: ignore[arg-type]
                )
            if bad:
                raise IntegrityError(
                    "mysql",
                    f"verify restore into {tplan.load_database}",
                    "; ".join(
                        f"{c['table']}: {c['rows']} rows/checksum {c['checksum']},"
                        f" backup {c['expected_rows']}/{c['expected_checksum']}"
                        for c in bad
                    ),
                )
            if tplan.swap:
                report.swapped = swap_mysql_tables(cfg, env, tplan, [t.name for t in mysql_tables])
                record.add(
                    "repaired",
                    "mysql",
                    f"restored tables swapped into {target_db}; previous tables kept in"
                    f" {tplan.aside_database}",
                )
        if heavy_tables:
            restore_dir = params.heavydb_restore_dir or default_dump_dir()
            for t in heavy_tables:
                r = restore_heavydb_table(
                    cfg,
                    env,
                    manifest,
                    t.name,
                    f"{t.name}{suffix}",
                    staged,
                    restore_dir,
                    params.force,
                    short,
                )
                report.heavydb_tables.append(r)
                record.add(
                    "verified",
                    "heavydb",
                    f"restored as {r['target']}: {r['rows']} rows,"
                    f" epoch {r['epoch']}"
                    + (f"; previous table kept as {r['kept']}" if r["kept"] else ""),
                    table=t.name,
                )
        report.ok = True
        record.ok = True
    except Exception as exc:
        record.error = str(exc)
        report.problems.append(str(exc))
        log.error("restore of backup %s failed: %s", params.backup_id, exc)
        if tplan is not None and tplan.created and not report.swapped:
            try:
                dropped = discard_mysql_target(cfg, env, tplan)
                record.add("repaired", "mysql", f"removed the partial target {', '.join(dropped)}")
            except Exception as cleanup:
                record.add(
                    "needs-person", "mysql", f"could not remove the partial target: {cleanup}"
                )
        raise
    finally:
        discard_staged(staged)
        record.finished_at = utcnow()
        report.seconds = round(time.monotonic() - started, 3)
        try:
            report.record = store_record(cfg, record)
        except Exception as exc:  # the restore's outcome matters more than its record
            log.error("could not store the recovery record: %s", exc)
        create_markdown_artifact(
            markdown=render_markdown(record),
            key="restore-report",
            description=f"restore of backup {params.backup_id}",
        )
    live = (
        bool(report.swapped) and target_db == settings_for(cfg).environment(env).mysql.database
    ) or (bool(heavy_tables) and suffix == "")
    if live and params.validate_recovery:
        report.validation = validation_summary(cfg, env, "restore")
        if not report.validation["passed"]:
            report.ok = False
            report.problems.append(
                f"live tables replaced, recovery validation failed: {report.validation['headline']}"
            )
            return Failed(message=report.problems[-1], data=report)  # type: ignore[return-value]
    return report
