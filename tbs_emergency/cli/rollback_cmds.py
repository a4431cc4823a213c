"""Rollback commands (runbook: "Emergency Command Reference" and the rollback procedures).

    redirect blue|green            curl -X POST http://load-balancer/emergency/redirect-blue
    rollback [--force] [--confirm-data-integrity] [--dry-run]
                                   ./emergency-rollback.sh --force --confirm-data-integrity
    rollback --manual              the 15-minute manual process (asks for authorization)
    readonly on|off [--heavydb] [--mysql]
                                   ./db-emergency-readonly.sh --heavydb --mysql
    sessions preserve              ./preserve-sessions.sh --backup --verify
    watch                          the watchdog (auto-rollback triggers)
    runner                         execute the work pool's runs (prefect.yaml's deployments)
    ack INCIDENT --by NAME         acknowledge an incident (stops the escalation)
    ack INCIDENT --approve|--veto [--reason ...]
                                   the on-call decision on a P1 rollback (veto window)
    drill rollback --scenario S    the unattended rollback drill in the sandbox

Every action runs a Prefect flow (visible in the UI, journaled) except `watch` and `runner`,
which are the long-running processes that start flows, and `redirect`, which must be as fast as
the runbook's curl: it acts through the connectors, journals, and then records its run in
Prefect as a `traffic_redirect` flow run (saying so when Prefect cannot be reached).
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
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
    process_age_s,
)

Env = Annotated[str, typer.Argument(help="blue or green")]


def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _check_env(env: str) -> None:
    if env not in ("blue", "green"):
        raise fail(f"environment must be blue or green, not {env!r}", 2)


# --------------------------------------------------------------------------------------------
# redirect, readonly, sessions
# --------------------------------------------------------------------------------------------


def redirect(
    target: Env,
    config: ConfigOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    force: Annotated[
        bool, typer.Option("--force", help="Switch even if the target is not healthy")
    ] = False,
    incident: Annotated[
        str,
        typer.Option(
            "--incident",
            help="Journal under this incident (default: the open one)",
            callback=check_incident_id,
        ),
    ] = "",
) -> None:
    """Send all traffic to one environment (`redirect blue` is the runbook's redirect-blue).

    Acts directly through the connectors (as fast as the runbook's curl), journals what it did,
    then records the run in Prefect as a `traffic_redirect` flow run; if Prefect cannot be
    reached the redirect still stands and the output says the run was not recorded."""
    _check_env(target)
    settings = load(config)
    from concurrent.futures import ThreadPoolExecutor

    from tbs_emergency.cli.incident_cmds import journal_action, record_in_prefect
    from tbs_emergency.commands import redirect as do_redirect
    from tbs_emergency.connectors import Connectors
    from tbs_emergency.domain.incident import utcnow

    who = _who()
    started = utcnow()
    conn = Connectors(settings)
    pool = ThreadPoolExecutor(max_workers=2)  # journal and Prefect record at once, after
    res = do_redirect(conn, target, dry_run=dry_run, force=force)
    if res.get("verified"):
        res["verified_after_s"] = process_age_s()  # from the shell to traffic verified
    journaled = recorded = None
    if not dry_run and (res.get("ok") or res.get("changed")):
        journaled = pool.submit(
            journal_action,
            settings,
            conn,
            incident,
            kind="action",
            what=f"traffic redirected to {target} (tbs-emergency redirect, by {who})"
            if res.get("ok")
            else f"traffic redirect to {target} not verified (tbs-emergency redirect, by {who})",
            system="traffic",
            result="ok" if res.get("ok") else "failed",
            decided_by=f"person:{who}",
            started_at=started,
            data={k: v for k, v in res.items() if k in ("before", "after", "verified", "error")}
            | {"command": "redirect", "target": target},
        )
    if not dry_run:
        recorded = pool.submit(
            record_in_prefect,
            settings,
            "traffic_redirect",
            run_name=f"redirect-{target}-by-{who}",
            parameters={
                "params": {
                    "target": target,
                    "dry_run": dry_run,
                    "force": force,
                    "decided_by": f"person:{who}",
                }
            },
            tags=["tbs-emergency", "command", f"env:{target}"],
            ok=bool(res.get("ok")),
            message=res.get("error") or f"traffic on {target}",
            started=started,
            logs=[
                (
                    "info" if res.get("ok") else "error",
                    res.get("error") or f"traffic on {target} (by person:{who}), verified",
                )
            ],
        )
    if journaled is not None:
        res["journal"] = journaled.result()
    if recorded is not None:
        res["prefect"] = recorded.result()
    pool.shutdown()
    conn.close()
    _print(res, as_json)
    if not res.get("ok"):
        raise fail(res.get("error") or "redirect failed", 1)


def readonly(
    state: Annotated[str, typer.Argument(help="on or off")],
    heavydb: Annotated[bool, typer.Option("--heavydb", help="HeavyDB")] = False,
    mysql: Annotated[bool, typer.Option("--mysql", help="MySQL/MariaDB")] = False,
    env: Annotated[str, typer.Option("--env", help="whose databases")] = "green",
    users: Annotated[
        list[str] | None, typer.Option("--app-user", help="HeavyDB application user (repeat)")
    ] = None,
    config: ConfigOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Database emergency read-only mode (neither flag: both databases)."""
    if state not in ("on", "off"):
        raise fail("state must be on or off", 2)
    _check_env(env)
    load(config)
    from flows.commands import CommandParams, database_read_only

    kinds = [k for k, on in (("mysql", mysql), ("heavydb", heavydb)) if on] or ["mysql", "heavydb"]
    res = database_read_only(
        CommandParams(
            config_path=config_path(config) or "",
            target=env,
            dry_run=dry_run,
            on=state == "on",
            kinds=kinds,
            app_users=users or [],
            decided_by=f"person:{_who()}",
        )
    )
    _print(res, as_json)
    if not res.get("ok"):
        raise fail("read-only change did not complete on every database", 1)


sessions_app = typer.Typer(help="User sessions.", no_args_is_help=True)


@sessions_app.command("preserve")
def sessions_preserve(
    source: Annotated[str, typer.Option("--from")] = "green",
    target: Annotated[str, typer.Option("--to")] = "blue",
    config: ConfigOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Carry active sessions from one environment to the other and verify the count."""
    _check_env(source)
    _check_env(target)
    load(config)
    from flows.commands import CommandParams
    from flows.commands import sessions_preserve as flow

    res = flow(
        CommandParams(
            config_path=config_path(config) or "",
            source=source,
            target=target,
            dry_run=dry_run,
            decided_by=f"person:{_who()}",
        )
    )
    _print(res, as_json)
    if not res.get("ok"):
        raise fail(res.get("error") or "sessions not preserved", 1)


def _print(res: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(res)
        return
    for k, v in res.items():
        if v is None or (k == "error" and not v):
            continue  # a success prints no `error: None`
        if k == "prefect" and isinstance(v, dict):
            if v.get("recorded"):
                out.print(f"prefect: recorded as flow run {v.get('flow_run_id')}", highlight=False)
            else:
                err.print(
                    f"[yellow]prefect: the run could not be recorded in Prefect:[/yellow]"
                    f" {escape(str(v.get('reason')))}",
                    highlight=False,
                )
            continue
        if k == "journal" and isinstance(v, dict):
            where = v.get("incident")
            if v.get("error"):
                err.print(f"[yellow]journal: {escape(str(v['error']))}[/yellow]", highlight=False)
            else:
                spooled = " (spooled locally: the object store is down)" if v.get("spooled") else ""
                out.print(f"journal: {where} #{v.get('seq')}{spooled}", highlight=False)
            continue
        out.print(f"{k}: {v}", highlight=False, markup=False)


# --------------------------------------------------------------------------------------------
# rollback
# --------------------------------------------------------------------------------------------


def rollback(
    force: Annotated[
        bool, typer.Option("--force", help="Roll back without a confirmed breach")
    ] = False,
    confirm_data_integrity: Annotated[
        bool, typer.Option("--confirm-data-integrity", help="Wait for green's transactions")
    ] = False,
    manual: Annotated[bool, typer.Option("--manual", help="The 15-minute manual process")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why (documented)")] = "manual rollback",
    incident: Annotated[
        str, typer.Option("--incident", help="Join this incident", callback=check_incident_id)
    ] = "",
    authorized_by: Annotated[
        str, typer.Option("--authorized-by", help="Manual process: authorize now")
    ] = "",
    config: ConfigOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Roll back to blue now (runs `emergency_rollback`; `--manual`: `manual_rollback`)."""
    load(config)
    cfg = config_path(config) or ""
    if manual:
        from flows.manual_rollback import ManualRollbackParams, run_manual_rollback

        mres = run_manual_rollback(
            ManualRollbackParams(
                reason=reason,
                requested_by=_who(),
                config_path=cfg,
                incident_id=incident,
                authorized_by=authorized_by,
                dry_run=dry_run,
            )
        )
        doc = mres.model_dump()
        if as_json:
            emit_json(doc)
        else:
            table = Table(
                "phase", "item", "status", "reason", title=f"manual rollback {mres.incident_id}"
            )
            for i in mres.checklist:
                table.add_row(i.phase, i.item, i.status, escape(i.reason))
            out.print(table)
            for k, v in mres.overruns.items():
                out.print(f"[yellow]overrun[/yellow] {k}: {v:.1f}s late")
        if not (mres.completed or dry_run):
            raise fail("the manual rollback did not complete (see the checklist)", 1)
        return
    from flows.emergency_rollback import RollbackParams, run_rollback

    # An escalated or degraded rollback ends its run Failed; its result is still the answer.
    res = run_rollback(
        RollbackParams(
            incident_id=incident,
            config_path=cfg,
            decided_by=f"person:{_who()}",
            reason=reason,
            dry_run=dry_run,
            force=force,
            confirm_data_integrity=confirm_data_integrity,
        )
    )
    if as_json:
        emit_json(res.model_dump())
    else:
        if res.plan:
            for line in res.plan:
                out.print(f"plan: {line}", highlight=False)
        out.print(f"incident {res.incident_id}: {res.status}; traffic on {res.traffic}")
        for p in res.problems:
            err.print(f"[yellow]could not:[/yellow] {escape(p)}", highlight=False)
    if not (res.rolled_back or res.dry_run):
        raise fail(f"rollback not done: {res.status}", 1)


# --------------------------------------------------------------------------------------------
# watch, runner, ack
# --------------------------------------------------------------------------------------------


def watch(
    max_seconds: Annotated[
        float | None, typer.Option("--max-seconds", help="Stop after this long")
    ] = None,
    config: ConfigOpt = None,
    dry_run: DryRunOpt = False,
) -> None:
    """The watchdog: evaluate every trigger rule, probe the live databases, emit events."""
    settings = load(config)
    from tbs_emergency.domain.triggers import RuleSet

    rules = RuleSet.from_config(settings.triggers)
    for line in rules.describe():
        err.print(f"rule: {line}", highlight=False, markup=False)
    if dry_run:
        return
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    import signal

    from flows.watchdog import Watchdog

    wd = Watchdog(settings)
    # SIGTERM (a supervisor's stop) and Ctrl-C end the loop cleanly: the watchdog then says it
    # stopped, and its silence is not paged as a death (flows/watchdog_silent.py).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: wd.stop())
    stats = wd.run(max_seconds=max_seconds)
    err.print(
        f"evaluations: {stats.evaluations}; incidents: {', '.join(stats.incidents) or 'none'};"
        f" misconfigured: {len(stats.misconfigured)}; heartbeats: {stats.heartbeats}"
    )


def runner(
    start: Annotated[
        str, typer.Option("--start", help="thread (fast, default) | process (one per run)")
    ] = "thread",
    poll: Annotated[float, typer.Option("--poll", help="seconds between polls")] = 0.25,
    pool: Annotated[
        str | None, typer.Option("--pool", help="work pool (default: prefect.yaml's)")
    ] = None,
    max_lateness: Annotated[
        float,
        typer.Option("--max-lateness", help="cancel emergency-rollback runs due longer ago (s)"),
    ] = 300.0,
    deploy_first: Annotated[
        bool, typer.Option("--deploy", help="register prefect.yaml first (as `deploy`)")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Execute every run of the work pool (prefect.yaml's deployments), starting them fast."""
    settings = load(config)
    if start not in ("thread", "process"):
        raise fail(f"--start must be thread or process, not {start!r}", 2)
    if not os.environ.get("PREFECT_API_URL") and settings.prefect.api_url:
        os.environ["PREFECT_API_URL"] = settings.prefect.api_url
    from deployments.runner import main as runner_main

    args = ["--start", start, "--poll", str(poll), "--max-lateness", str(max_lateness)]
    if pool:
        args += ["--pool", pool]
    if deploy_first:
        args.append("--deploy")
    if cfg := config_path(config):
        args += ["--config", str(Path(cfg).resolve())]
    runner_main(args)


def ack(
    incident_id: Annotated[str, typer.Argument(help="The incident", callback=check_incident_id)],
    by: Annotated[str, typer.Option("--by", help="Your name")] = "",
    note: Annotated[str, typer.Option("--note")] = "",
    approve: Annotated[
        bool, typer.Option("--approve", help="P1: roll back now (ends the veto window)")
    ] = False,
    veto: Annotated[
        bool, typer.Option("--veto", help="P1: no automatic rollback for this incident")
    ] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why (approve or veto)")] = "",
    config: ConfigOpt = None,
) -> None:
    """Acknowledge an incident: stops its escalation (journal + Prefect input). With --approve
    or --veto, also the on-call decision on a P1 rollback waiting in its veto window."""
    settings = load(config)
    from tbs_emergency.connectors import Connectors
    from tbs_emergency.domain.incident import ACKNOWLEDGED, Entry
    from tbs_emergency.domain.journal import Journal

    if approve and veto:
        raise fail("--approve and --veto exclude each other", 2)
    who = by or _who()
    j = Journal.configured(Connectors(settings).store(), settings.journal)
    inc = j.incident(incident_id)
    if inc is None:
        raise fail(f"no incident {incident_id} in the journal", 1)
    if approve or veto:
        _decide(j, incident_id, "approve" if approve else "veto", who, reason or note)
        if inc.acknowledged_by is not None:
            return
    j.append(
        Entry(
            incident_id=incident_id,
            kind=ACKNOWLEDGED,
            what=f"acknowledged by {who}",
            decided_by=f"person:{who}",
            result="ok",
            data={"note": note},
        )
    )
    sent = _send_ack_input(incident_id, who, note)
    out.print(
        f"acknowledged {incident_id} as {who}"
        + (f"; told {sent} escalation run(s)" if sent else "")
    )


def _decide(j: Any, incident_id: str, decision: str, who: str, reason: str) -> None:
    """Journal the P1 decision, then hand it to the paused rollback run (if one waits): a
    decision journaled before the run pauses is honoured by its gate."""
    from tbs_emergency.domain.gate import decision_entry

    inc = j.incident(incident_id)
    if inc is not None and not inc.is_open:
        raise fail(f"incident {incident_id} is already {inc.status}", 1)
    j.append(decision_entry(incident_id, decision, who, reason, "cli"))
    try:
        from flows.rollback_gate import send_decision

        sent = send_decision(incident_id, decision, reason, who)
    except Exception as exc:  # the journal has it; the gate reads it there
        err.print(f"could not reach the paused rollback run: {exc}", highlight=False, markup=False)
        sent = 0
    verb = "approved" if decision == "approve" else "vetoed"
    out.print(
        f"{verb} the rollback of {incident_id} as {who}"
        + (f"; told {sent} paused rollback run(s)" if sent else " (journaled)")
    )


def _send_ack_input(incident_id: str, who: str, note: str) -> int:
    """Send the Acknowledgement input to running escalation flow runs of this incident."""
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        from flows.escalation import Acknowledgement

        n = 0
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
                ),
                limit=50,
            )
            for r in runs:
                params = (r.parameters or {}).get("params") or {}
                if params.get("incident_id") == incident_id:
                    Acknowledgement(by=who, note=note).send_to(r.id)
                    n += 1
        return n
    except Exception:
        return 0


# --------------------------------------------------------------------------------------------
# drill
# --------------------------------------------------------------------------------------------

drill_app = typer.Typer(help="Emergency procedure drills (sandbox).", no_args_is_help=True)


@drill_app.command("rollback")
def drill_rollback(
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario",
            help=(
                "throughput | errors | resources | database | blue-down | short | double |"
                " outage | app-hang | p1-veto | p1-timeout"
            ),
        ),
    ] = "throughput",
    time_scale: Annotated[
        float | None,
        typer.Option(
            "--time-scale",
            help="The watchdog's trigger time scale (1 = real time; default: the config's)",
        ),
    ] = None,
    sandbox_dir: Annotated[
        Path | None, typer.Option("--dir", help="Sandbox directory (default: the config's)")
    ] = None,
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="Leave the runner running afterwards")
    ] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The unattended rollback drill: runner + watchdog, fault, automation-triggered rollback,
    incident report and phase timings (run after `sandbox up`)."""
    settings_path = config_path(config)
    load(config)
    from flows.rollback_drill import Drill, DrillError
    from tbs_emergency.config import config_path as resolve_config

    log = (
        (lambda _m: None)
        if as_json
        else (lambda m: err.print(f"drill: {m}", highlight=False, markup=False))
    )
    try:
        if time_scale is not None and time_scale <= 0:
            raise fail("--time-scale must be greater than 0", 2)
        drill = Drill(
            str(resolve_config(settings_path)), sandbox_dir, log=log, time_scale=time_scale
        )
    except DrillError as exc:
        raise fail(str(exc), 1) from None
    try:
        result = drill.run(scenario)
    except DrillError as exc:
        raise fail(str(exc), 1) from None
    finally:
        if not keep_running:
            drill.stop()
    doc = result.as_dict()
    if as_json:
        emit_json(doc)
    else:
        out.print(result.report or "(no incident report)", highlight=False, markup=False)
        t = Table("timing", "seconds from the fault", title=f"drill {scenario}: phase timings")
        for k, v in result.timings.items():
            t.add_row(k, "-" if v is None else f"{v:.2f}")
        out.print(t)
        if result.phases:
            ph = Table(
                "step",
                "result",
                "start (s)",
                "end (s)",
                "duration (s)",
                "budget ends (s)",
                title="response steps (from detection) vs the runbook's budgets",
            )
            for p in result.phases:
                ph.add_row(
                    p["step"],
                    p["result"],
                    f"{p['start_s']:.2f}",
                    f"{p['end_s']:.2f}" if p["end_s"] is not None else "-",
                    f"{p['duration_s']:.2f}",
                    f"{p['window_end_s']:g}",
                )
            out.print(ph)
        out.print(
            f"rolled back: {result.rolled_back}; traffic on {result.traffic};"
            f" incident {result.incident_id} {result.status};"
            f" started by {result.started_by or '-'}"
        )
    from flows.rollback_drill import EXPECT_ROLLBACK

    if scenario in EXPECT_ROLLBACK and not result.rolled_back:
        raise fail(f"drill {scenario}: expected a rollback, got {result.status}", 1)
    if scenario == "p1-veto" and (result.rolled_back or result.traffic != "green"):
        raise fail(f"drill {scenario}: the veto did not hold: traffic on {result.traffic}", 1)


def register(app: typer.Typer) -> None:
    app.command()(redirect)
    app.command()(rollback)
    app.command()(readonly)
    app.add_typer(sessions_app, name="sessions")
    app.command()(watch)
    app.command()(runner)
    app.command()(ack)
    app.add_typer(drill_app, name="drill")
