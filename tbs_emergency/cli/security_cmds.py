"""Security incident response, compromised accounts and lockdown (runbook: "Security Emergency
Procedures", "Access Control Emergency Procedures"; docs/security.md).

`security-incident`, `isolate [lift]`, `preserve-evidence`, `rotate-credentials`,
`account suspend|restore USER`, `lockdown [lift]`. Each runs its flow, prints what was done and
what could not be done, and exits 0 when everything succeeded, 1 when something failed, 2 on
bad input (an unknown user or account, a bad configuration). Commands that change systems take
`--dry-run` (the plan; nothing changes). Passwords are never printed.
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
)

IncidentOpt = Annotated[
    str | None,
    typer.Option(
        "--incident",
        help="Incident to journal to (default: a new one).",
        callback=check_incident_id,
    ),
]
EnvOpt = Annotated[
    str | None,
    typer.Option("--env", "-e", help="Affected environment (default: security config, green)."),
]


def _who() -> str:
    import getpass

    try:
        return f"person: {getpass.getuser()}"
    except Exception:
        return "person"


def _show(report: Any, as_json: bool) -> None:
    """Print the report; exit 1 when it is not ok (2 for bad input)."""
    if as_json:
        emit_json(report.model_dump(mode="json"))
    else:
        title = report.procedure + (" [DRY RUN: nothing changed]" if report.dry_run else "")
        out.print(f"[bold]{escape(title)}[/bold]", highlight=False)
        if report.incident_id:
            out.print(f"incident: {escape(report.incident_id)}", highlight=False)
        for note in report.notes:
            out.print(f"  [yellow]note:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)
        for line in report.lines:
            out.print(f"  {line}", highlight=False, soft_wrap=True, markup=False)
    if not report.ok:
        problems = report.problems or [f"{report.procedure}: not ok"]
        raise fail([escape(p) for p in problems], 2 if report.bad_input else 1)


def security_incident(
    env: EnvOpt = None,
    reason: Annotated[str, typer.Option("--reason", help="What was detected.")] = (
        "security incident"
    ),
    no_rollback: Annotated[
        bool, typer.Option("--no-rollback", help="Contain without rolling back to blue.")
    ] = False,
    no_rotate: Annotated[
        bool, typer.Option("--no-rotate", help="Do not rotate the service accounts.")
    ] = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    incident: IncidentOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Security incident response: isolate, preserve, notify; assess; roll back, rotate, harden."""
    from flows.security_incident import SecurityIncidentParams
    from flows.security_incident import security_incident as run

    load(config)
    report = run(
        SecurityIncidentParams(
            config_path=config_path(config) or "",
            environment=env or "",
            reason=reason,
            rollback=not no_rollback,
            rotate=not no_rotate,
            dry_run=dry_run,
            incident_id=incident or "",
            decided_by=_who(),
        )
    )
    _show(report, as_json)


isolate_app = typer.Typer(
    help="Isolate an environment: drain and deny it at the load balancer, revoke its app"
    " database access (`lift` restores).",
    invoke_without_command=True,
)


@isolate_app.callback()
def isolate(
    ctx: typer.Context,
    env: EnvOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    incident: IncidentOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Network isolation of the affected environment, recorded so it can be lifted."""
    if ctx.invoked_subcommand is not None:
        return
    from flows.security_isolation import IsolationParams
    from flows.security_isolation import isolate as run

    load(config)
    report = run(
        IsolationParams(
            config_path=config_path(config) or "",
            environment=env or "",
            dry_run=dry_run,
            incident_id=incident or "",
            decided_by=_who(),
        )
    )
    _show(report, as_json)


@isolate_app.command("lift")
def isolate_lift(
    env: EnvOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    incident: IncidentOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Restore the isolated environment's recorded state, last step first."""
    from flows.security_isolation import IsolationParams, lift_isolation

    load(config)
    report = lift_isolation(
        IsolationParams(
            config_path=config_path(config) or "",
            environment=env or "",
            dry_run=dry_run,
            incident_id=incident or "",
            decided_by=_who(),
        )
    )
    _show(report, as_json)


def preserve_evidence(
    as_json: JsonOpt = False,
    incident: IncidentOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Preserve the system state as locked evidence with a sha256 manifest."""
    from flows.security_evidence import EvidenceParams
    from flows.security_evidence import preserve_evidence as run

    load(config)
    report = run(
        EvidenceParams(
            config_path=config_path(config) or "", incident_id=incident or "", decided_by=_who()
        )
    )
    _show(report, as_json)


def rotate_credentials(
    account: Annotated[
        list[str] | None,
        typer.Option("--account", help="Only this service account (repeatable; default: all)."),
    ] = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    incident: IncidentOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Rotate the MySQL and HeavyDB service accounts' passwords, all or nothing."""
    from flows.rotate_credentials import RotateParams
    from flows.rotate_credentials import rotate_credentials as run

    load(config)
    report = run(
        RotateParams(
            config_path=config_path(config) or "",
            accounts=account or [],
            dry_run=dry_run,
            incident_id=incident or "",
            decided_by=_who(),
        )
    )
    _show(report, as_json)


account_app = typer.Typer(
    help="Compromised accounts: suspend (lock, disable, end sessions, analyse) and restore.",
    no_args_is_help=True,
)


@account_app.command("suspend")
def account_suspend(
    user: Annotated[str, typer.Argument(help="The compromised user.")],
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Suspend even the tool's own accounts and the priority users."
        ),
    ] = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    incident: IncidentOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Lock the user's database accounts, disable it in the app, end its sessions, analyse its
    last 24 hours and review its privileges. The tool's own accounts and the priority users
    are refused (exit 2, nothing changed) without --force."""
    from tbs_emergency.security.protected import suspension_refusal

    settings = load(config)
    refusal = suspension_refusal(settings, user)
    if refusal and not force:
        raise fail(escape(refusal), 2)
    from flows.account_compromise import AccountParams, account_compromise

    report = account_compromise(
        AccountParams(
            config_path=config_path(config) or "",
            user=user,
            force=force,
            dry_run=dry_run,
            incident_id=incident or "",
            decided_by=_who(),
        )
    )
    _show(report, as_json)


@account_app.command("restore")
def account_restore(
    user: Annotated[str, typer.Argument(help="The user to restore.")],
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    incident: IncidentOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Lift the suspension: every recorded change back, last first."""
    from flows.account_compromise import AccountParams, restore_account

    load(config)
    report = restore_account(
        AccountParams(
            config_path=config_path(config) or "",
            user=user,
            dry_run=dry_run,
            incident_id=incident or "",
            decided_by=_who(),
        )
    )
    _show(report, as_json)


lockdown_app = typer.Typer(
    help="System-wide security lockdown (`lift` restores every step in reverse order).",
    invoke_without_command=True,
)


@lockdown_app.callback()
def lockdown(
    ctx: typer.Context,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    incident: IncidentOpt = None,
    config: ConfigOpt = None,
) -> None:
    """No new logins (sessions kept), internal networks only, aggressive API rate limits,
    databases read-only except authorised hosts."""
    if ctx.invoked_subcommand is not None:
        return
    from flows.security_lockdown import LockdownParams
    from flows.security_lockdown import lockdown as run

    load(config)
    report = run(
        LockdownParams(
            config_path=config_path(config) or "",
            dry_run=dry_run,
            incident_id=incident or "",
            decided_by=_who(),
        )
    )
    _show(report, as_json)


@lockdown_app.command("lift")
def lockdown_lift(
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    incident: IncidentOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Lift the lockdown: every step back to its recorded state, last first."""
    from flows.security_lockdown import LockdownParams, lift_lockdown

    load(config)
    report = lift_lockdown(
        LockdownParams(
            config_path=config_path(config) or "",
            dry_run=dry_run,
            incident_id=incident or "",
            decided_by=_who(),
        )
    )
    _show(report, as_json)


def register(app: typer.Typer) -> None:
    app.command("security-incident")(security_incident)
    app.add_typer(isolate_app, name="isolate")
    app.command("preserve-evidence")(preserve_evidence)
    app.command("rotate-credentials")(rotate_credentials)
    app.add_typer(account_app, name="account")
    app.add_typer(lockdown_app, name="lockdown")
