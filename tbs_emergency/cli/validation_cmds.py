"""Recovery validation, drills, post-incident reports and reviews (runbook: "Recovery Validation
Procedures", "Post-Emergency Procedures", "Emergency Procedure Testing").

    validate [--env blue] [--scale S] [--only PART] [--incident ID] [--json]
                                     performance-validation.sh + functionality-validation.sh
    report INCIDENT_ID [--root-cause TEXT] [--no-followups] [--json]
                                     the incident report (and its 24 h / 72 h / 1 week reviews)
    followup done INCIDENT WINDOW --by NAME [--note TEXT]
    followup status INCIDENT
    drill communication [--ack-wait S] [--json]
    drill recovery [--take-backup] [--keep] [--json]
    drill contacts [--json]          the weekly contact verification
    drill ack DRILL_ID --by NAME [--contact NAME]
    review quarterly [--json]

Every command runs its flow (visible in the Prefect UI, journaled). Exit codes: 0 ok, 1 the
check/drill failed or a system failed, 2 bad input or configuration. `drill rollback` belongs
to the rollback commands; the subcommands here are added to the same `drill` group.
"""

from __future__ import annotations

import getpass
from typing import Annotated, Any

import typer
from rich.table import Table

from tbs_emergency.cli.common import (
    ConfigOpt,
    JsonOpt,
    check_incident_id,
    config_path,
    emit_json,
    err,
    fail,
    load,
    out,
)

WINDOWS = ("24h", "72h", "1w")


def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _state_data(state: Any) -> Any:
    try:
        return state.result(raise_on_failure=False)
    except Exception:
        return None


# --------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------


def validate(
    env: Annotated[str, typer.Option("--env", help="Environment to validate")] = "blue",
    scale: Annotated[
        float, typer.Option("--scale", help="Multiply every duration (0 < S <= 1)")
    ] = 1.0,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="functional | api | ui | performance | concurrency (repeat)"),
    ] = None,
    incident: Annotated[
        str | None,
        typer.Option(
            "--incident",
            help="Journal the verdict into this incident",
            callback=check_incident_id,
        ),
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate an environment after a recovery (exit 1 when the verdict fails)."""
    from flows.recovery_validation import PARTS, ValidationParams, recovery_validation, verdict_of

    settings = load(config)
    if env not in settings.environments:
        raise fail(f"no environment {env!r} (known: {', '.join(sorted(settings.environments))})", 2)
    if not 0 < scale <= 1:
        raise fail("--scale must be in (0, 1]", 2)
    bad = [p for p in only or [] if p not in PARTS]
    if bad:
        raise fail(f"unknown part(s) {', '.join(bad)} (known: {', '.join(PARTS)})", 2)
    params = ValidationParams(
        config_path=config_path(config),
        env=env,
        time_scale=scale,
        only=only or [],  # type: ignore[arg-type]
        incident_id=incident,
        decided_by=f"person:{_who()}",
    )
    state = recovery_validation(params, return_state=True)
    verdict = verdict_of(state)
    if verdict is None:
        raise fail(f"validation did not finish: {state.message or state.name}", 1)
    if as_json:
        emit_json(verdict.model_dump(mode="json"))
    else:
        table = Table(
            "result", "check", "measured", "threshold", "detail", title=verdict.headline()
        )
        colour = {"pass": "green", "fail": "red", "error": "red", "skipped": "yellow"}
        for c in verdict.checks:
            r = c.row()
            table.add_row(
                f"[{colour[c.status]}]{r['result']}[/{colour[c.status]}]",
                c.name,
                r["measured"],
                c.threshold,
                c.detail,
            )
        out.print(table)
        for n in verdict.notes:
            err.print(f"note: {n}", highlight=False)
    if not verdict.passed:
        raise fail([f"{c.name}: {c.detail}" for c in verdict.failures] or verdict.headline(), 1)


# --------------------------------------------------------------------------------------------
# report, followup
# --------------------------------------------------------------------------------------------


def report(
    incident_id: Annotated[
        str, typer.Argument(help="The incident id (inc-...)", callback=check_incident_id)
    ],
    root_cause: Annotated[str | None, typer.Option("--root-cause", help="Record it")] = None,
    users_affected: Annotated[int | None, typer.Option("--users-affected")] = None,
    business_impact: Annotated[str | None, typer.Option("--business-impact")] = None,
    no_followups: Annotated[
        bool, typer.Option("--no-followups", help="Do not schedule the review runs")
    ] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Render the incident report from the journal (stored beside it and as an artifact)."""
    from flows.incident_report import IncidentReportParams, incident_report

    load(config)
    state = incident_report(
        IncidentReportParams(
            incident_id=incident_id,
            config_path=config_path(config),
            schedule_followups=not no_followups,
            by=f"person:{_who()}",
            root_cause=root_cause,
            users_affected=users_affected,
            business_impact=business_impact,
        ),
        return_state=True,
    )
    rep = _state_data(state)
    if not state.is_completed() or rep is None or not hasattr(rep, "markdown"):
        raise fail(f"no report: {state.message or state.name}", 1)
    if as_json:
        emit_json(rep.model_dump(mode="json"))
    else:
        out.print(rep.markdown, markup=False, highlight=False)
        err.print(f"stored: {rep.key}", highlight=False)
        for f in rep.followups:
            if f.get("scheduled"):
                err.print(f"follow-up {f['window']}: scheduled ({f.get('at') or f.get('note')})")
    if rep.problems:
        raise fail(rep.problems, 1)


followup_app = typer.Typer(
    help="Post-incident review follow-ups (24h, 72h, 1w).", no_args_is_help=True
)


@followup_app.command("done")
def followup_done(
    incident_id: Annotated[str, typer.Argument(help="The incident id", callback=check_incident_id)],
    window: Annotated[str, typer.Argument(help="24h, 72h or 1w")],
    by: Annotated[str, typer.Option("--by", help="Who completed the review")],
    note: Annotated[str, typer.Option("--note")] = "",
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a review as done; the incident closes when all three are."""
    from flows.followups import CompleteFollowUpParams, complete_followup

    if window not in WINDOWS:
        raise fail(f"window must be one of {', '.join(WINDOWS)}", 2)
    load(config)
    res = complete_followup(
        CompleteFollowUpParams(
            incident_id=incident_id,
            window=window,  # type: ignore[arg-type]
            by=by,
            note=note,
            config_path=config_path(config),
        )
    )
    if as_json:
        emit_json(res)
        return
    what = "recorded" if res["recorded"] else "was already done"
    out.print(f"{window} review of {incident_id} {what}.")
    if res["closed"]:
        out.print(f"incident {incident_id} closed: every review is done.")
    else:
        out.print(f"still open: {', '.join(res['pending'])}")


@followup_app.command("status")
def followup_status(
    incident_id: Annotated[str, typer.Argument(help="The incident id", callback=check_incident_id)],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The state of an incident's three reviews (read from the journal; no flow run)."""
    from tbs_emergency.connectors import Connectors
    from tbs_emergency.domain.incident import Incident
    from tbs_emergency.domain.journal import Journal
    from tbs_emergency.validation.followups import is_closed, states

    settings = load(config)
    with Connectors(settings) as conn:
        entries = Journal(conn.store()).entries(incident_id)
    inc = Incident.from_entries(entries)
    if inc is None:
        raise fail(f"incident {incident_id} has no journal", 1)
    st = states(inc.opened_at, entries)
    if as_json:
        emit_json(
            {"closed": is_closed(entries), **{w: s.model_dump(mode="json") for w, s in st.items()}}
        )
        return
    t = Table("window", "review", "due (UTC)", "status", "by", title=f"reviews of {incident_id}")
    for w, s in st.items():
        t.add_row(w, s.title, f"{s.due_at:%Y-%m-%d %H:%M}", s.status, s.done_by or "")
    out.print(t)
    out.print("closed" if is_closed(entries) else "open")


# --------------------------------------------------------------------------------------------
# drills and the quarterly review
# --------------------------------------------------------------------------------------------


def _print_record(record: Any, as_json: bool) -> None:
    if as_json:
        emit_json(record.model_dump(mode="json"))
        return
    t = Table("", "", title=f"{record.drill} drill {record.id}: {'OK' if record.ok else 'FAILED'}")
    t.add_row("target", str(record.target))
    if record.rto_s is not None:
        t.add_row("RTO", f"{record.rto_s:.1f} s (target {record.rto_target_s or '-'} s)")
    if record.rpo_s is not None:
        t.add_row("RPO", f"{record.rpo_s:.1f} s (target {record.rpo_target_s or '-'} s)")
    t.add_row("report", str(record.report_key))
    t.add_row("chart", str(record.chart_key))
    out.print(t)
    if record.phases:
        ph = Table("phase", "ok", "start (s)", "end (s)", "detail", title="phases")
        for p in record.phases:
            ph.add_row(
                p.name,
                "yes" if p.ok else "[red]no[/red]",
                "-" if p.start_s is None else f"{p.start_s:.1f}",
                "-" if p.end_s is None else f"{p.end_s:.1f}",
                p.detail,
            )
        out.print(ph)
    for f in record.findings:
        out.print(f"finding: {f}", highlight=False)
    for p in record.problems:
        err.print(f"[red]could not:[/red] {p}", highlight=False)


def _finish(record: Any, as_json: bool) -> None:
    _print_record(record, as_json)
    if not record.ok:
        raise typer.Exit(1)


def drill_communication(
    ack_wait: Annotated[
        float | None,
        typer.Option("--ack-wait", help="Seconds to wait for acknowledgements"),
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Communication drill: test message on every channel to every contact, deliveries,
    acknowledgements, stale contacts."""
    from flows.drills import CommunicationDrillParams, communication_drill

    load(config)
    if not as_json:
        err.print("acknowledge with: tbs-emergency drill ack DRILL_ID --contact NAME --by NAME")
    _finish(
        communication_drill(
            CommunicationDrillParams(config_path=config_path(config), ack_wait_s=ack_wait)
        ),
        as_json,
    )


def drill_recovery(
    take_backup: Annotated[
        bool, typer.Option("--take-backup", help="Take a backup first if none exists")
    ] = False,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the scratch copies")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Recovery drill: newest backup restored into a scratch target, verified, RTO and RPO."""
    from flows.drills import RecoveryDrillParams, recovery_drill

    load(config)
    _finish(
        recovery_drill(
            RecoveryDrillParams(
                config_path=config_path(config), take_backup_if_none=take_backup, keep_restored=keep
            )
        ),
        as_json,
    )


def drill_contacts(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Weekly contact verification: details confirmed recently, channels reachable."""
    from flows.drills import ContactVerificationParams, contact_verification

    load(config)
    _finish(
        contact_verification(ContactVerificationParams(config_path=config_path(config))), as_json
    )


def drill_ack(
    drill_id: Annotated[str, typer.Argument(help="The drill run id from the test message")],
    by: Annotated[str, typer.Option("--by", help="Who acknowledges")],
    contact: Annotated[
        str | None, typer.Option("--contact", help="The contact (default: --by)")
    ] = None,
    note: Annotated[str, typer.Option("--note")] = "",
    config: ConfigOpt = None,
) -> None:
    """Acknowledge a communication drill's test message (read by the running drill)."""
    from tasks.drills import record_ack
    from tbs_emergency.connectors import Connectors

    settings = load(config)
    name = contact or by
    if name not in {c.name for c in settings.contacts}:
        known = "; ".join(c.name for c in settings.contacts)
        raise fail(f"no contact {name!r} (known: {known})", 2)
    with Connectors(settings) as conn:
        key = record_ack(conn.store(), drill_id, name, by, note)
    out.print(f"acknowledged {drill_id} for {name} ({key})")


review_app = typer.Typer(help="Reviews of the emergency procedures.", no_args_is_help=True)


@review_app.command("quarterly")
def review_quarterly(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """The quarterly comprehensive review checklist, filled in from the records."""
    from flows.drills import QuarterlyReviewParams, quarterly_review

    load(config)
    record = quarterly_review(QuarterlyReviewParams(config_path=config_path(config)))
    if as_json:
        emit_json(record.model_dump(mode="json"))
        return
    t = Table("status", "area", "item", "detail", title="quarterly review")
    for i in record.details.get("items", []):
        colour = {"ok": "green", "attention": "red", "manual": "yellow"}[i["status"]]
        t.add_row(f"[{colour}]{i['status'].upper()}[/{colour}]", i["area"], i["item"], i["detail"])
    out.print(t)
    out.print(f"report: {record.report_key}")


def register(app: typer.Typer) -> None:
    from tbs_emergency.cli.rollback_cmds import drill_app

    app.command()(validate)
    app.command()(report)
    app.add_typer(followup_app, name="followup")
    app.add_typer(review_app, name="review")
    # `drill` is the rollback commands' group (drill rollback); these join it.
    drill_app.command("communication")(drill_communication)
    drill_app.command("recovery")(drill_recovery)
    drill_app.command("contacts")(drill_contacts)
    drill_app.command("ack")(drill_ack)
