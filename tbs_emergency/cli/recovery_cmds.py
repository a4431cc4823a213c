"""Data protection commands: `backup`, `backup list`, `restore`, `recover`, `flashback`,
`reconcile` (docs/recovery.md).

Every action runs its Prefect flow; `backup list` reads object storage directly (it must answer
when Prefect is down). Times are ISO 8601 with a time zone (`Z`, `+01:00`); a time without
one is refused (exit 2).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tbs_emergency.cli.common import (
    ConfigOpt,
    DryRunOpt,
    JsonOpt,
    check_incident_id,
    config_path,
    emit_json,
    err,
    fail,
    load,
    out,
    parse_timestamp,
)

backup_app = typer.Typer(
    help="Back up MySQL and HeavyDB to object storage (runs `emergency_backup`); `backup list`.",
    invoke_without_command=True,
)
recover_app = typer.Typer(help="Point-in-time recovery of MySQL or HeavyDB.", no_args_is_help=True)

EnvOpt = Annotated[
    str | None,
    typer.Option("--env", help="blue or green (default: the environment that has traffic)."),
]
TablesOpt = Annotated[
    list[str] | None,
    typer.Option("--tables", help="Tables (repeat the option or separate with commas)."),
]


def _tables(values: list[str] | None) -> list[str]:
    return [t.strip() for v in values or [] for t in v.split(",") if t.strip()]


def parse_time(value: str, option: str) -> datetime:
    """ISO 8601 with a zone (`2025-01-24T10:00:00Z`, `...+01:00`); else one line, exit 2."""
    return parse_timestamp(value, option)


def _run(flow_fn: Any, params: Any) -> tuple[bool, Any]:
    """Run a flow; (succeeded, its report or the exception that ended it)."""
    state = flow_fn(params, return_state=True)
    result = state.result(raise_on_failure=False)
    if state.is_completed() and not isinstance(result, BaseException):
        return True, result
    return False, result


def _dump(report: Any) -> Any:
    return report.model_dump(mode="json") if hasattr(report, "model_dump") else report


def _failure(result: Any, as_json: bool, what: str) -> typer.Exit:
    if hasattr(result, "model_dump"):
        if as_json:
            emit_json(_dump(result))
        reasons = (
            ([getattr(result, "refused", None)] if getattr(result, "refused", None) else [])
            + list(getattr(result, "refusals", []) or [])
            + list(getattr(result, "conflicts", []) or [])
            + list(getattr(result, "problems", []) or [])
        )
        code = 2 if getattr(result, "bad_input", False) else 1  # 2: refused what was asked
        return fail([f"{what}: {r}" for r in reasons] or [f"{what} failed"], code)
    if as_json:
        emit_json({"ok": False, "error": str(result)})
    return fail(f"{what} failed: {result}", 1)


# --------------------------------------------------------------------------------------------
# backup
# --------------------------------------------------------------------------------------------


@backup_app.callback()
def backup(
    ctx: typer.Context,
    heavydb: Annotated[bool, typer.Option("--heavydb", help="Back up HeavyDB.")] = False,
    mysql: Annotated[bool, typer.Option("--mysql", help="Back up MySQL.")] = False,
    tables: TablesOpt = None,
    env: EnvOpt = None,
    backup_id: Annotated[
        str | None, typer.Option("--backup-id", help="Finish (or confirm) this backup.")
    ] = None,
    connections: Annotated[int, typer.Option(help="Parallel MySQL connections.", min=1)] = 4,
    heavydb_dump_dir: Annotated[
        Path | None,
        typer.Option(help="Directory the HeavyDB server writes dumps to and this host reads."),
    ] = None,
    epochs_only: Annotated[
        bool, typer.Option("--epochs-only", help="Only record HeavyDB table epochs.")
    ] = False,
    no_retention: Annotated[
        bool, typer.Option("--no-retention", help="Do not apply the retention policy.")
    ] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Back up MySQL and/or HeavyDB (both when neither is named). The backup exists once its
    manifest is written, after everything was read back and verified."""
    if ctx.invoked_subcommand is not None:
        return
    from flows.emergency_backup import BackupParams, emergency_backup

    load(config)
    try:
        params = BackupParams(
            config_path=config_path(config),
            environment=env,
            mysql=mysql or not heavydb,
            heavydb=heavydb or not mysql,
            tables=_tables(tables),
            backup_id=backup_id,
            connections=connections,
            heavydb_dump_dir=str(heavydb_dump_dir.resolve()) if heavydb_dump_dir else None,
            epochs_only=epochs_only,
            apply_retention=not no_retention,
        )
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    ok, report = _run(emergency_backup, params)
    if not ok:
        raise _failure(report, as_json, "backup")
    if as_json:
        emit_json(
            {
                "backup_id": report.backup_id,
                "manifest": report.manifest,
                "objects": [o.model_dump(mode="json") for o in report.objects],
                "environment": report.environment,
                "mysql_rows": report.mysql_rows,
                "binlog": report.binlog,
                "heavydb_epochs": report.heavydb_tables,
                "bytes": report.bytes,
                "seconds": report.seconds,
                "warnings": report.warnings,
                "already_existed": report.already_existed,
                "retention": report.retention,
                "epochs_record": report.epochs_record,
            }
        )
        return
    if report.epochs_record:
        out.print(f"recorded HeavyDB epochs {report.heavydb_tables} ({report.backup_id})")
        return
    out.print(report.markdown(), highlight=False)


@backup_app.command("list")
def backup_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Backups that exist (a manifest that reads back intact), oldest first."""
    from tbs_emergency.connectors import Connectors
    from tbs_emergency.errors import TbsError
    from tbs_emergency.recovery import catalog

    settings = load(config)
    try:
        with Connectors(settings) as conn:
            cat = catalog.scan(conn.store())
    except TbsError as exc:
        raise fail(str(exc), 1) from None
    complete = [m.summary() for m in cat.complete]
    broken = [b for b in cat.backups if b.has_manifest and b.manifest is None]
    if as_json:
        emit_json(
            {
                "backups": complete,
                "incomplete": len(cat.incomplete) - len(broken),
                "unreadable_manifests": [
                    {"backup_id": b.backup_id, "problem": b.problem} for b in broken
                ],
            }
        )
        return
    table = Table(title="backups")
    table.add_column("backup id", no_wrap=True)
    table.add_column("env")
    table.add_column("taken at (UTC)", no_wrap=True)
    table.add_column("MySQL rows", justify="right")
    table.add_column("binlog")
    table.add_column("HeavyDB epochs")
    table.add_column("bytes", justify="right")
    for s in complete:
        table.add_row(
            s["backup_id"],
            s["environment"],
            s["taken_at"][:19].replace("T", " "),
            f"{s['mysql_rows']:,}",
            (s["binlog"] or "-").split(" (")[0],
            ", ".join(f"{k}@{v}" for k, v in s["heavydb_epochs"].items()) or "-",
            f"{s['bytes']:,}",
        )
    out.print(table if complete else "no backups")
    incomplete = len(cat.incomplete) - len(broken)
    if incomplete:
        err.print(f"{incomplete} incomplete backup(s) without a manifest are not listed")
    for b in broken:
        err.print(f"[yellow]warning:[/yellow] backup {b.backup_id} is unusable: {b.problem}")


# --------------------------------------------------------------------------------------------
# restore
# --------------------------------------------------------------------------------------------


def restore(
    backup_id: Annotated[str, typer.Argument(help="The backup (see `backup list`).")],
    target: Annotated[
        str | None, typer.Option("--target", help="MySQL target database (default: a new one).")
    ] = None,
    heavydb_suffix: Annotated[
        str | None, typer.Option(help="HeavyDB tables are restored as <table><suffix>.")
    ] = None,
    tables: TablesOpt = None,
    mysql_only: Annotated[bool, typer.Option("--mysql", help="Only MySQL.")] = False,
    heavydb_only: Annotated[bool, typer.Option("--heavydb", help="Only HeavyDB.")] = False,
    env: EnvOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace existing tables (kept aside, renamed).")
    ] = False,
    heavydb_restore_dir: Annotated[
        Path | None, typer.Option(help="A directory the HeavyDB server can read.")
    ] = None,
    dry_run: DryRunOpt = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify a backup completely, then restore it into a new database/new tables."""
    from flows.restore import RestoreParams
    from flows.restore import restore as restore_flow

    load(config)
    try:
        params = RestoreParams(
            config_path=config_path(config),
            backup_id=backup_id,
            environment=env,
            target_database=target,
            heavydb_suffix=heavydb_suffix,
            tables=_tables(tables),
            mysql=mysql_only or not heavydb_only,
            heavydb=heavydb_only or not mysql_only,
            force=force,
            dry_run=dry_run,
            heavydb_restore_dir=str(heavydb_restore_dir.resolve()) if heavydb_restore_dir else None,
        )
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    ok, report = _run(restore_flow, params)
    if not ok:
        raise _failure(report, as_json, f"restore of {backup_id}")
    if as_json:
        emit_json(_dump(report))
        return
    for line in report.plan:
        out.print(("would: " if dry_run else "done: ") + line, highlight=False)
    for t in report.mysql_tables:
        out.print(f"mysql {report.mysql_database}.{t['table']}: {t['rows']:,} rows, checksum ok")
    for t in report.heavydb_tables:
        out.print(f"heavydb {t['target']}: {t['rows']:,} rows (epoch {t['epoch']})")
    if report.record:
        out.print(f"record: {report.record}  (reconcile {report.recovery_id})")


# --------------------------------------------------------------------------------------------
# recover
# --------------------------------------------------------------------------------------------


@recover_app.command("mysql")
def recover_mysql(
    to: Annotated[
        str, typer.Option("--to", help="The instant to recover to, with a zone (e.g. ...Z).")
    ],
    target_database: Annotated[
        str, typer.Option("--target-database", help="A new database to recover into.")
    ],
    env: EnvOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="The target database may exist (tables kept aside).")
    ] = False,
    no_reconcile: Annotated[bool, typer.Option("--no-reconcile")] = False,
    dry_run: DryRunOpt = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Restore the newest backup before T into a new database and replay the binlog up to T."""
    from flows.point_in_time_recovery import PitrParams, point_in_time_recovery

    at = parse_time(to, "--to")
    load(config)
    try:
        params = PitrParams(
            config_path=config_path(config),
            environment=env,
            target_at=at,
            target_database=target_database,
            dry_run=dry_run,
            force=force,
            reconcile=not no_reconcile,
        )
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    ok, report = _run(point_in_time_recovery, params)
    if not ok:
        raise _failure(report, as_json, "point-in-time recovery")
    if as_json:
        emit_json(_dump(report))
        return
    for line in report.plan:
        out.print(line, highlight=False)
    if not dry_run:
        for t in report.tables:
            out.print(f"{report.target_database}.{t['table']}: {t['rows']:,} rows (verified)")
        out.print(f"record: {report.record}; reconciliation: {report.reconcile or '-'}")


@recover_app.command("heavydb")
def recover_heavydb(
    to: Annotated[
        str, typer.Option("--to", help="The instant to recover to, with a zone (e.g. ...Z).")
    ],
    tables: TablesOpt = None,
    env: EnvOpt = None,
    heavydb_restore_dir: Annotated[Path | None, typer.Option()] = None,
    dry_run: DryRunOpt = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Roll HeavyDB tables back to T (epochs, else dumps), backfill from MySQL, verify."""
    from flows.point_in_time_recovery import HeavyPitrParams, heavydb_point_in_time_recovery

    at = parse_time(to, "--to")
    load(config)
    try:
        params = HeavyPitrParams(
            config_path=config_path(config),
            environment=env,
            target_at=at,
            tables=_tables(tables),
            dry_run=dry_run,
            heavydb_restore_dir=str(heavydb_restore_dir.resolve()) if heavydb_restore_dir else None,
        )
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    ok, report = _run(heavydb_point_in_time_recovery, params)
    if not ok:
        raise _failure(report, as_json, "HeavyDB recovery")
    if as_json:
        emit_json(_dump(report))
        return
    for line in report.plan:
        out.print(line, highlight=False)
    if report.record:
        out.print(f"record: {report.record}")


# --------------------------------------------------------------------------------------------
# flashback, reconcile
# --------------------------------------------------------------------------------------------


def flashback(
    since: Annotated[
        str, typer.Option("--since", help="Undo changes since (with a zone, e.g. ...Z).")
    ],
    tables: TablesOpt = None,
    env: EnvOpt = None,
    flashback_id: Annotated[
        str | None, typer.Option("--flashback-id", help="Rerun or finish this flashback.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Apply without asking.")] = False,
    incident: Annotated[
        str | None,
        typer.Option("--incident", help="Incident to journal to.", callback=check_incident_id),
    ] = None,
    dry_run: DryRunOpt = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Undo the INSERT/UPDATE/DELETE since a time on chosen tables, in one transaction."""
    from flows.flashback import FlashbackParams
    from flows.flashback import flashback as flashback_flow

    at = parse_time(since, "--since")
    names = _tables(tables)
    if not names:
        raise fail("--tables: name at least one table", 2)
    load(config)
    base = {
        "config_path": config_path(config),
        "environment": env,
        "since": at,
        "tables": names,
        "flashback_id": flashback_id,
        "incident_id": incident,
    }
    try:
        FlashbackParams(**base)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    if not dry_run and not yes:
        ok, preview = _run(flashback_flow, FlashbackParams(**base, dry_run=True))
        if not ok:
            raise _failure(preview, as_json, "flashback")
        for line in preview.plan:
            err.print(line, highlight=False)
        if not preview.statements:
            out.print("nothing to undo")
            return
        if not typer.confirm(f"apply {len(preview.statements)} inverse change(s)?"):
            raise fail("not applied", 1)
        base["flashback_id"] = preview.flashback_id
    ok, report = _run(flashback_flow, FlashbackParams(**base, dry_run=dry_run))
    if not ok:
        raise _failure(report, as_json, "flashback")
    if as_json:
        emit_json(_dump(report))
        return
    for line in report.plan:
        err.print(line, highlight=False)
    if dry_run:
        for sql in report.statements:
            out.print(sql, highlight=False, soft_wrap=True)
        return
    out.print(
        f"flashback {report.flashback_id}: "
        + ("already applied" if report.already_applied else "applied")
        + (f"; {report.undo_hint}" if report.undo_hint else "")
    )


def reconcile(
    recovery_id: Annotated[str, typer.Argument(help="The recovery run (restore, recover...).")],
    tables: TablesOpt = None,
    env: EnvOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Report what differs between a recovery's result and the live data."""
    from flows.reconcile import ReconcileParams
    from flows.reconcile import reconcile as reconcile_flow

    load(config)
    try:
        params = ReconcileParams(
            config_path=config_path(config),
            recovery_id=recovery_id,
            environment=env,
            tables=_tables(tables),
        )
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    ok, report = _run(reconcile_flow, params)
    if not ok:
        raise _failure(report, as_json, "reconcile")
    if as_json:
        emit_json(_dump(report))
        return
    out.print(report.markdown, highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")
    app.command()(restore)
    app.add_typer(recover_app, name="recover")
    app.command()(flashback)
    app.command()(reconcile)
