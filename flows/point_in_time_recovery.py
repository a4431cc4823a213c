"""Point-in-time recovery (runbook: "Execute Point-in-Time Recovery": restore from the most
recent clean backup, apply transaction logs up to the known good state, verify).

`point_in_time_recovery` (MySQL): restores the newest backup taken before T into a new database
and replays the binary log from the backup's recorded position up to T, then verifies every
table: row count = backup rows + rows the binlog inserted - rows it deleted in that window.
It refuses, with the reason, a T in the future, before the oldest backup, or past the retained
binlog. `dry_run` shows the plan. The live database is never written.

`heavydb_point_in_time_recovery`: per table, rolls back to the epoch recorded at or before T if
HeavyDB still retains it; otherwise restores the dump taken before T; then backfills the rows
changed between that point and T from the MySQL archive (integrity.tables mapping with an
updated_column) and compares keys with the archive.

Needs (MySQL): the admin account with SELECT, CREATE, INSERT, REPLICATION SLAVE (reads the
binlog over the network), BINLOG MONITOR, BINLOG REPLAY and SUPER (applies it); the
mariadb-binlog and mariadb clients installed where the flow runs.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed
from pydantic import BaseModel, Field

from flows.recovery_validation import validation_summary
from tasks.backup import default_dump_dir, read_manifest, utcnow
from tasks.common import settings_for
from tasks.recovery import (
    backfill_heavydb_table,
    binlog_row_deltas,
    compare_heavydb_with_archive,
    count_rows,
    discard_mysql_target,
    discard_staged,
    fetch_backup,
    load_mysql_table,
    plan_heavydb_recovery,
    plan_mysql_pitr,
    prepare_mysql_target,
    replay_binlog,
    restore_heavydb_table,
    rollback_heavydb_table,
    store_record,
    swap_mysql_tables,
    verify_mysql_table,
)
from tasks.rollback import active_traffic
from tbs_emergency.recovery.binlog import Decoded, StatementEvent
from tbs_emergency.recovery.flashback import window_refusals
from tbs_emergency.recovery.ids import new_id
from tbs_emergency.recovery.reconcile import RecoveryRecord, render_markdown
from tbs_emergency.timestamps import Instant


class PitrParams(BaseModel):
    config_path: str | None = None
    environment: str | None = None  # None: the environment that has traffic
    target_at: Instant  # with a time zone (a naive timestamp is refused)
    target_database: str
    dry_run: bool = False
    force: bool = False  # the target database may exist (its tables are kept aside)
    reconcile: bool = True  # compare the recovered database with the live one afterwards


class PitrReport(BaseModel):
    recovery_id: str
    ok: bool
    dry_run: bool
    refused: str | None = None
    plan: list[str] = Field(default_factory=list)
    backup_id: str | None = None
    target_database: str | None = None
    tables: list[dict[str, Any]] = Field(default_factory=list)
    replay: dict[str, Any] = Field(default_factory=dict)
    record: str | None = None
    reconcile: str | None = None
    seconds: float = 0.0
    problems: list[str] = Field(default_factory=list)


def _statement_tables(statements: list[str], database: str, tables: list[str]) -> list[str]:
    at = datetime.now(UTC)
    decoded = Decoded(statements=[StatementEvent(at, 0, None, database, s) for s in statements])
    out = []
    for t in tables:
        if window_refusals(decoded, database, [t]):
            out.append(t)
    return out


@flow(name="point_in_time_recovery", log_prints=False)
def point_in_time_recovery(params: PitrParams) -> Any:
    """Recover the MySQL archive as of T into a new database, verify it, report differences."""
    log = get_run_logger()
    started = time.monotonic()
    cfg = params.config_path
    env = params.environment or active_traffic(cfg)
    recovery_id = new_id(utcnow())
    report = PitrReport(
        recovery_id=recovery_id,
        ok=False,
        dry_run=params.dry_run,
        target_database=params.target_database,
    )
    decision = plan_mysql_pitr(cfg, env, params.target_at, params.target_database)
    if decision.plan is None:
        report.refused = decision.refused
        log.error("point-in-time recovery REFUSED: %s", decision.refused)
        return Failed(message=f"refused: {decision.refused}", data=report)
    plan = decision.plan
    report.plan = plan.describe()
    report.backup_id = plan.backup_id
    for line in report.plan:
        log.info("plan: %s", line)
    if params.dry_run:
        report.ok = True
        return report
    record = RecoveryRecord(
        recovery_id=recovery_id,
        kind="point-in-time-recovery",
        started_at=utcnow(),
        source={
            "database": plan.source_database,
            "environment": env,
            "recovered to": plan.target_at.isoformat(),
            "backup": plan.backup_id,
        },
        target={"database": plan.target_database},
        plan=report.plan,
    )
    staged = None
    tplan = None
    swapped = False
    try:
        manifest = read_manifest(cfg, plan.backup_id)
        assert manifest is not None and manifest.mysql is not None
        tables = manifest.mysql.tables
        short = recovery_id[-6:]
        tplan = prepare_mysql_target(
            cfg, env, plan.target_database, tables, short, params.force, plan.source_database
        )
        staged = fetch_backup(cfg, plan.backup_id, [t.name for t in tables], [])
        for f in [
            load_mysql_table.submit(cfg, env, tplan.load_database, t, staged) for t in tables
        ]:
            f.result()
        checks = [verify_mysql_table(cfg, env, tplan.load_database, t) for t in tables]
        bad = [c for c in checks if not c["ok"]]
        if bad:
            raise RuntimeError(
                "the restored backup does not match its manifest: "
                + "; ".join(f"{c['table']} {c['rows']}/{c['expected_rows']} rows" for c in bad)
            )
        record.add(
            "verified",
            "mysql",
            f"backup {plan.backup_id} restored and verified ({sum(t.rows for t in tables):,} rows)",
        )
        replay_plan = plan.model_copy(update={"target_database": tplan.load_database})
        deltas_future = binlog_row_deltas.submit(cfg, env, replay_plan)
        report.replay = replay_binlog(cfg, env, replay_plan)
        window = deltas_future.result()
        counts = count_rows(cfg, env, tplan.load_database)
        unverifiable = _statement_tables(window["statements"], plan.source_database, sorted(counts))
        for name in sorted(counts):
            base = next((t.rows for t in tables if t.name == name), 0)
            expected = base + window["deltas"].get(name, 0)
            entry = {"table": name, "rows": counts[name], "expected_rows": expected}
            if name in unverifiable:
                entry["ok"] = None
                record.add(
                    "needs-person",
                    "mysql",
                    "a DDL or TRUNCATE statement in the replayed"
                    " window changed it: its row count could not be predicted; check it",
                    table=name,
                    rows=counts[name],
                )
            else:
                entry["ok"] = counts[name] == expected
                record.add(
                    "verified" if entry["ok"] else "needs-person",
                    "mysql",
                    f"{counts[name]:,} rows after replay"
                    + ("" if entry["ok"] else f", expected {expected:,} (backup + binlog)"),
                    table=name,
                    rows=counts[name],
                )
            report.tables.append(entry)
        if any(e["ok"] is False for e in report.tables):
            raise RuntimeError(
                "row counts after the replay differ from backup + binlog: "
                + ", ".join(e["table"] for e in report.tables if e["ok"] is False)
            )
        if tplan.swap:
            swap_mysql_tables(cfg, env, tplan, sorted(counts))
            swapped = True
            record.add(
                "repaired",
                "mysql",
                f"recovered tables swapped into {tplan.database};"
                f" previous tables kept in {tplan.aside_database}",
            )
        report.ok = record.ok = True
    except Exception as exc:
        record.error = str(exc)
        report.problems.append(str(exc))
        log.error("point-in-time recovery failed: %s", exc)
        if tplan is not None and tplan.created and not swapped:
            try:
                dropped = discard_mysql_target(cfg, env, tplan)
                record.add("repaired", "mysql", f"removed the partial target {', '.join(dropped)}")
            except Exception as cleanup:
                record.add(
                    "needs-person", "mysql", f"could not remove the partial target: {cleanup}"
                )
    finally:
        if staged is not None:
            discard_staged(staged)
        record.finished_at = utcnow()
        try:
            report.record = store_record(cfg, record)
        except Exception as exc:
            log.error("could not store the recovery record: %s", exc)
        create_markdown_artifact(
            markdown=render_markdown(record),
            key="point-in-time-recovery",
            description=f"point-in-time recovery to {plan.target_at.isoformat()}",
        )
    if report.ok and params.reconcile:
        from flows.reconcile import ReconcileParams, reconcile

        try:
            rec_report = reconcile(
                ReconcileParams(config_path=cfg, recovery_id=recovery_id, environment=env)
            )
            report.reconcile = rec_report.key
        except Exception as exc:  # the recovery stands; the comparison can be rerun
            report.problems.append(f"reconcile did not finish: {exc}")
    report.seconds = round(time.monotonic() - started, 3)
    if not report.ok:
        return Failed(message="; ".join(report.problems) or "failed", data=report)
    return report


# ------------------------------------------------------------------------------------------------
# HeavyDB
# ------------------------------------------------------------------------------------------------


class HeavyPitrParams(BaseModel):
    config_path: str | None = None
    environment: str | None = None
    target_at: Instant  # with a time zone (a naive timestamp is refused)
    tables: list[str] = Field(default_factory=list)  # empty: every table with records/dumps
    dry_run: bool = False
    heavydb_restore_dir: str | None = None
    # the live tables change: end with the recovery validation of the environment
    validate_recovery: bool = True


class HeavyPitrReport(BaseModel):
    recovery_id: str
    ok: bool
    dry_run: bool
    plan: list[str] = Field(default_factory=list)
    tables: list[dict[str, Any]] = Field(default_factory=list)
    record: str | None = None
    seconds: float = 0.0
    problems: list[str] = Field(default_factory=list)
    # the recovery validation's summary, when live tables were changed
    validation: dict[str, Any] | None = None


def _mapping(cfg: str | None, table: str) -> Any:
    settings = settings_for(cfg)
    for t in settings.integrity.tables:
        if (t.heavydb_name or t.name) == table:
            return t
    return None


@flow(name="heavydb_point_in_time_recovery", log_prints=False)
def heavydb_point_in_time_recovery(params: HeavyPitrParams) -> Any:
    """Bring HeavyDB tables back to their state at T (epochs, else dumps), backfill from the
    MySQL archive, verify against it."""
    log = get_run_logger()
    started = time.monotonic()
    cfg = params.config_path
    env = params.environment or active_traffic(cfg)
    recovery_id = new_id(utcnow())
    short = recovery_id[-6:]
    now = utcnow()
    report = HeavyPitrReport(recovery_id=recovery_id, ok=False, dry_run=params.dry_run)
    if params.target_at > now:
        report.problems.append(f"{params.target_at.isoformat()} is in the future")
        return Failed(message=report.problems[0], data=report)
    plans = plan_heavydb_recovery(cfg, env, params.target_at, params.tables)
    report.plan = [p.describe() for p in plans]
    for line in report.plan:
        log.info("plan: %s", line)
    if params.dry_run:
        report.ok = not any(p.action == "refuse" for p in plans)
        return report
    record = RecoveryRecord(
        recovery_id=recovery_id,
        kind="heavydb-recovery",
        started_at=utcnow(),
        source={"environment": env, "recovered to": params.target_at.isoformat()},
        plan=report.plan,
    )
    restore_dir = params.heavydb_restore_dir or default_dump_dir()
    for p in plans:
        entry: dict[str, Any] = {"table": p.table, "action": p.action}
        try:
            if p.action == "refuse":
                record.add("needs-person", "heavydb", p.reason, table=p.table)
                entry["ok"] = False
                report.tables.append(entry)
                continue
            if p.action == "rollback":
                done = rollback_heavydb_table(cfg, env, p)
                if done["ok"]:
                    record.add(
                        "repaired", "heavydb", f"rolled back to epoch {p.epoch}", table=p.table
                    )
                else:
                    log.info("rollback of %s refused (%s); using its dump", p.table, done["detail"])
                    p = plan_heavydb_recovery(
                        cfg, env, params.target_at, [p.table], dumps_only=[p.table]
                    )[0]
                    entry["action"] = p.action
                    entry["rollback_refused"] = done["detail"]
                    if p.action == "refuse":
                        record.add(
                            "needs-person",
                            "heavydb",
                            f"epoch rollback refused ({done['detail']}) and {p.reason}",
                            table=p.table,
                        )
                        entry["ok"] = False
                        report.tables.append(entry)
                        continue
            if p.action == "restore":
                assert p.dump is not None
                backup_id = str(p.dump["backup_id"])
                manifest = read_manifest(cfg, backup_id)
                staged = fetch_backup(cfg, backup_id, [], [p.table])
                try:
                    r = restore_heavydb_table(
                        cfg, env, manifest, p.table, p.table, staged, restore_dir, True, short
                    )
                finally:
                    discard_staged(staged)
                record.add(
                    "repaired",
                    "heavydb",
                    f"restored the dump of backup {backup_id}"
                    f" (epoch {p.epoch}); the previous table is kept as {r['kept']}",
                    table=p.table,
                    rows=int(r["rows"]),
                )
            m = _mapping(cfg, p.table)
            if p.backfill_after is not None and p.action != "unchanged":
                if m is None or not m.updated_column or len(m.key) != 1:
                    record.add(
                        "needs-person",
                        "heavydb",
                        "rows changed between"
                        f" {p.backfill_after.isoformat()} and T could not be backfilled:"
                        " no integrity.tables mapping with a one-column key and an"
                        " updated_column",
                        table=p.table,
                    )
                else:
                    b = backfill_heavydb_table(
                        cfg,
                        env,
                        p.table,
                        m.mysql_name or m.name,
                        m.key[0],
                        m.updated_column,
                        p.backfill_after,
                        params.target_at,
                    )
                    entry["backfilled"] = b["backfilled"]
                    record.add(
                        "repaired",
                        "heavydb",
                        f"{b['backfilled']} rows backfilled from the MySQL archive",
                        table=p.table,
                        rows=int(b["backfilled"]),
                    )
                    if b["changed_after"]:
                        record.add(
                            "needs-person",
                            "heavydb",
                            f"{b['changed_after']} archive rows"
                            " changed after T: their state at T is not in the archive"
                            " (restore the archive to T to get it)",
                            table=p.table,
                            rows=int(b["changed_after"]),
                        )
            if p.action == "unchanged":
                record.add("verified", "heavydb", p.reason, table=p.table)
            if m is not None:
                c = compare_heavydb_with_archive(cfg, env, m.name, params.target_at)
                entry["comparison"] = c
                if c["ok"]:
                    what = (
                        f"integrity check against the MySQL archive: {c['heavydb_rows']} rows,"
                        " every row last changed at or before T identical"
                    )
                else:
                    what = (
                        f"integrity check against the MySQL archive: {c['only_heavydb']} rows"
                        f" only in HeavyDB, {c['only_archive']} archive rows (changed at or"
                        f" before T) missing, {c['different']} different"
                    )
                record.add(
                    "verified" if c["ok"] else "differed",
                    "heavydb",
                    what,
                    table=p.table,
                    sample=c["sample_only_heavydb"] + c["sample_only_archive"],
                )
                if c["changed_after"] and "backfilled" not in entry:  # the backfill said so
                    record.add(
                        "needs-person",
                        "heavydb",
                        f"{c['changed_after']} archive rows changed after T: their state at T"
                        " is not in the archive, so they could not be checked",
                        table=p.table,
                        rows=int(c["changed_after"]),
                    )
            else:
                record.add(
                    "needs-person",
                    "heavydb",
                    "no integrity.tables mapping: verified by"
                    " the recovery step only, not against the archive",
                    table=p.table,
                )
            entry["ok"] = entry.get("comparison", {}).get("ok", True)
        except Exception as exc:
            entry["ok"] = False
            entry["error"] = str(exc)
            record.add("needs-person", "heavydb", f"recovery failed: {exc}", table=p.table)
        report.tables.append(entry)
    report.ok = record.ok = all(e.get("ok") for e in report.tables)
    record.finished_at = utcnow()
    try:
        report.record = store_record(cfg, record)
    except Exception as exc:
        report.problems.append(f"could not store the recovery record: {exc}")
    create_markdown_artifact(
        markdown=render_markdown(record),
        key="heavydb-recovery",
        description=f"HeavyDB recovery to {params.target_at.isoformat()}",
    )
    changed = any(t.get("action") in ("rollback", "restore") for t in report.tables)
    if changed and params.validate_recovery:
        report.validation = validation_summary(cfg, env, "heavydb_point_in_time_recovery")
        if not report.validation["passed"]:
            report.ok = False
            report.problems.append(
                f"recovery validation of {env} failed: {report.validation['headline']}"
            )
    report.seconds = round(time.monotonic() - started, 3)
    if not report.ok:
        return Failed(
            message="; ".join(report.problems) or "some tables were not recovered", data=report
        )
    return report
