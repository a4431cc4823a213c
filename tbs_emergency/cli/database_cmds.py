"""`tbs-emergency db ...`: the database emergency procedures (runbook: "HeavyDB / MySQL
Emergency Procedures" and the manual rollback's "Database & Data Management" phase).

Every command runs its flow, prints what was done (and what could not be done) per server, and
exits 0 when everything succeeded, 1 when something failed or is still open, 2 on bad input.
`--dry-run` prints the plan and changes nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from tbs_emergency.cli.common import (
    ConfigOpt,
    DryRunOpt,
    JsonOpt,
    check_incident_id,
    config_path,
    emit_json,
    fail,
    load,
    out,
    parse_timestamp,
)

db_app = typer.Typer(
    help="Database emergency procedures: connection limits, transactions, caches, sync, archive.",
    no_args_is_help=True,
)

EnvOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--env", "-e", help="Environment (repeatable; default: all). Shared servers once."
    ),
]
MySQLOpt = Annotated[bool, typer.Option("--mysql", help="MySQL only (default: both engines).")]
HeavyOpt = Annotated[bool, typer.Option("--heavydb", help="HeavyDB only (default: both engines).")]
IncidentOpt = Annotated[
    str | None,
    typer.Option(
        "--incident",
        help="Incident id: its journal records the previous settings.",
        callback=check_incident_id,
    ),
]


def _engines(mysql: bool, heavydb: bool) -> list[Any]:
    """`--mysql`/`--heavydb` (neither: both), as the flows' `engines` parameter."""
    from tbs_emergency.dbops.targets import resolve_engines

    return list(resolve_engines(mysql, heavydb))


def _show(report: Any, as_json: bool) -> None:
    """Print the report and exit 1 when it is not ok (2 when a guard refused the request)."""
    if as_json:
        data = report.model_dump(mode="json")
        data["problems"] = report.problems
        emit_json(data)
    else:
        title = report.procedure + (" [DRY RUN: nothing changed]" if report.dry_run else "")
        out.print(f"[bold]{escape(title)}[/bold]", highlight=False)
        for note in report.notes:
            out.print(f"  [yellow]note:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)
        for t in report.targets:
            state = "[green]ok[/green]" if t.ok else "[red]PROBLEMS[/red]"
            out.print(f"\n[bold]{escape(t.system)}[/bold]: {state}", highlight=False)
            # The summary lines, then every action with its outcome (done, failed, ...).
            acted = {a.what for a in t.actions}
            for line in t.lines:
                if line not in acted:
                    out.print(f"  {line}", highlight=False, soft_wrap=True, markup=False)
            for a in t.actions:
                colour = {"failed": "red", "done": "green", "planned": "cyan"}.get(a.outcome, "")
                tag = f"[{colour}]{a.outcome}[/{colour}]" if colour else a.outcome
                detail = f": {a.detail}" if a.detail else ""
                out.print(f"  {tag} {escape(a.what + detail)}", highlight=False, soft_wrap=True)
    if not report.ok:
        # `fail` prints with markup: system names such as mysql[blue,green] must be escaped.
        problems = report.problems or [f"{report.procedure}: not ok"]
        raise fail([escape(p) for p in problems], 2 if getattr(report, "bad_input", False) else 1)


def _duration(text: str | None, option: str) -> float | None:
    from tbs_emergency.config import parse_duration

    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise fail(f"{option}: {exc}", 2) from None


# -- limit-connections -------------------------------------------------------------------------

limit_app = typer.Typer(
    help="Limit connections, priority users exempt (`lift` restores the recorded settings).",
    invoke_without_command=True,
)


@limit_app.callback()
def limit_connections(
    ctx: typer.Context,
    max_connections: Annotated[
        int | None,
        typer.Option("--max", min=1, help="At most this many connections (default: config, 10)."),
    ] = None,
    mysql: MySQLOpt = False,
    heavydb: HeavyOpt = False,
    env: EnvOpt = None,
    priority_user: Annotated[
        list[str] | None,
        typer.Option("--priority-user", help="Also a priority user for this run (repeatable)."),
    ] = None,
    reserve: Annotated[
        int | None,
        typer.Option("--reserve", min=0, help="Slots kept free for priority users (default 2)."),
    ] = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    incident: IncidentOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Lower the connection limit; close non-priority sessions beyond it, oldest idle first."""
    if ctx.invoked_subcommand is not None:
        return
    from flows.db_connection_limits import LimitConnectionsParams
    from flows.db_connection_limits import limit_connections as run

    load(config)
    report = run(
        LimitConnectionsParams(
            config_path=config_path(config),
            engines=_engines(mysql, heavydb),
            environments=env or [],
            max_connections=max_connections,
            reserve=reserve,
            extra_priority_users=priority_user or [],
            dry_run=dry_run,
            incident_id=incident,
        )
    )
    _show(report, as_json)


@limit_app.command("lift")
def lift_limits(
    mysql: MySQLOpt = False,
    heavydb: HeavyOpt = False,
    env: EnvOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    incident: IncidentOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Restore exactly the settings recorded before the limit."""
    from flows.db_connection_limits import LiftConnectionLimitsParams, lift_connection_limits

    load(config)
    report = lift_connection_limits(
        LiftConnectionLimitsParams(
            config_path=config_path(config),
            engines=_engines(mysql, heavydb),
            environments=env or [],
            dry_run=dry_run,
            incident_id=incident,
        )
    )
    _show(report, as_json)


# -- complete-transactions ---------------------------------------------------------------------


@db_app.command("complete-transactions")
def complete_transactions(
    timeout: Annotated[
        str | None,
        typer.Option("--timeout", help="How long to wait, e.g. 60s, 2m (default: config, 60s)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="End the ones still open at the timeout (they roll back)."),
    ] = False,
    env: EnvOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    incident: IncidentOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Wait for open transactions to finish; report the rest with age, user and statement."""
    timeout_s = _duration(timeout, "--timeout")
    load(config)
    from flows.db_complete_transactions import CompleteTransactionsParams
    from flows.db_complete_transactions import complete_transactions as run

    report = run(
        CompleteTransactionsParams(
            config_path=config_path(config),
            environments=env or [],
            timeout_s=timeout_s,
            force=force,
            dry_run=dry_run,
            incident_id=incident,
        )
    )
    _show(report, as_json)


# -- reset-cache -------------------------------------------------------------------------------


@db_app.command("reset-cache")
def reset_cache(
    clear_query_cache: Annotated[
        bool, typer.Option("--clear-query-cache", help="Also RESET QUERY CACHE on MySQL.")
    ] = False,
    restart_services: Annotated[
        bool,
        typer.Option("--restart-services", help="Restart the configured services, then probe."),
    ] = False,
    service: Annotated[
        list[str] | None,
        typer.Option("--service", help="Only this configured service (repeatable)."),
    ] = None,
    mysql: MySQLOpt = False,
    heavydb: HeavyOpt = False,
    env: EnvOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """HeavyDB memory clears, MySQL flushes, service restarts when asked; each then probed."""
    if service and not restart_services:
        raise fail("--service needs --restart-services", 2)
    load(config)
    from flows.db_reset_cache import ResetCacheParams
    from flows.db_reset_cache import reset_cache as run

    report = run(
        ResetCacheParams(
            config_path=config_path(config),
            engines=_engines(mysql, heavydb),
            environments=env or [],
            clear_query_cache=clear_query_cache,
            restart_services=restart_services,
            services=service or [],
            dry_run=dry_run,
        )
    )
    _show(report, as_json)


# -- sync --------------------------------------------------------------------------------------


@db_app.command("sync")
def sync(
    source: Annotated[str, typer.Option("--source", help="Environment to copy from.")] = "blue",
    target: Annotated[
        str, typer.Option("--target", help="Environment to bring in line.")
    ] = "green",
    tables: Annotated[
        list[str] | None,
        typer.Option("--tables", "--table", help="Only these tables (default: the critical ones)."),
    ] = None,
    mysql: MySQLOpt = False,
    heavydb: HeavyOpt = False,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Full checksum of both sides after.")
    ] = True,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="Watermark: only rows updated at or after (ISO time with a zone)."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Allow writing to the environment that has traffic.")
    ] = False,
    allow_mass_delete: Annotated[
        bool,
        typer.Option(
            "--allow-mass-delete",
            help="Delete more than database_emergency.sync_max_delete_share (1%) of a table.",
        ),
    ] = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    incident: IncidentOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Bring the target environment's critical tables to the source's content. Refused (exit 2,
    nothing written) if a table would lose more than the configured share of its rows; where
    rows are deleted, the target table is first copied to <table>__pre_sync_<UTC time>."""
    if source == target:
        raise fail("--source and --target must differ", 2)
    if since is not None:
        parse_timestamp(since, "--since")
    load(config)
    from flows.db_sync import SyncParams, sync_environments

    report = sync_environments(
        SyncParams(
            config_path=config_path(config),
            source=source,
            target=target,
            tables=tables or [],
            engines=_engines(mysql, heavydb),
            verify=verify,
            since=since,
            force=force,
            allow_mass_delete=allow_mass_delete,
            dry_run=dry_run,
            incident_id=incident,
        )
    )
    _show(report, as_json)


# -- protect-archive ---------------------------------------------------------------------------

archive_app = typer.Typer(
    help="Archive schema read-only for every account but the recovery account (`lift` undoes).",
    invoke_without_command=True,
)
SchemaOpt = Annotated[
    str | None,
    typer.Option("--schema", help="Archive schema (default: config, else each env's database)."),
]


@archive_app.callback()
def protect_archive(
    ctx: typer.Context,
    schema: SchemaOpt = None,
    env: EnvOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    incident: IncidentOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Revoke write privileges on the archive schema; name accounts that still can write."""
    if ctx.invoked_subcommand is not None:
        return
    from flows.db_protect_archive import ProtectArchiveParams
    from flows.db_protect_archive import protect_archive as run

    load(config)
    report = run(
        ProtectArchiveParams(
            config_path=config_path(config),
            environments=env or [],
            schema_name=schema,
            dry_run=dry_run,
            incident_id=incident,
        )
    )
    _show(report, as_json)


@archive_app.command("lift")
def lift_archive(
    schema: SchemaOpt = None,
    env: EnvOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    incident: IncidentOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Grant back exactly the privileges the protection revoked."""
    from flows.db_protect_archive import ProtectArchiveParams, lift_archive_protection

    load(config)
    report = lift_archive_protection(
        ProtectArchiveParams(
            config_path=config_path(config),
            environments=env or [],
            schema_name=schema,
            dry_run=dry_run,
            incident_id=incident,
        )
    )
    _show(report, as_json)


db_app.add_typer(limit_app, name="limit-connections")
db_app.add_typer(archive_app, name="protect-archive")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
