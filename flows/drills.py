"""Emergency procedure testing (runbook: "Monthly Emergency Drills", "Quarterly Comprehensive
Review", "Emergency Contact Verification: Weekly").

- `rollback_drill` (monthly, 03:00 UTC on the 24th): fault -> watchdog -> automated rollback,
  recovery validation, put back.
- `communication_drill` (monthly, 03:30 UTC on the 24th): a test message on every channel of
  every contact, deliveries verified, acknowledgements collected.
- `recovery_drill` (monthly, 04:00 UTC on the 24th): the newest backup restored into a scratch
  target, verified, RTO and RPO recorded, the copy dropped.
- `contact_verification` (weekly, Mondays 09:00 UTC): contact details and channels checked,
  stale contacts reported.
- `quarterly_review` (09:00 UTC on the 24th of Jan/Apr/Jul/Oct): the review checklist, filled in
  from the records.

Schedules: prefect.yaml (the one declaration of deployments).

Every drill writes a record to `drills/history/<drill>/<timestamp>.json`, its report to
`drills/reports/...` and a chart of the RTO/RPO trend against the runbook's targets (15 minutes
manual, 180 s automated) to `drills/charts/...`; the report (markdown artifact) embeds the chart
and a table of the numbers, and a table artifact holds the same numbers.

Safety: drills run against `drills.target` (sandbox by default; production only when the
configuration says `allow_production = true` as well). The rollback drill needs the sandbox world
(it injects faults through it) and refuses other targets. The communication drill never posts to
the channel kinds in `drills.communication_skip_kinds` (a public status page) or to the roles in
`drills.communication_skip_roles` (every user): they are listed as skipped. The recovery drill
restores into new names only (`<db>_drill_<token>`, `<table>_drill_<token>`) and drops them
afterwards. A drill that cannot do something records it as a problem and still writes its record.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Failed, State
from pydantic import BaseModel, Field

from tasks.common import settings_for
from tasks.drills import (
    data_uri,
    drill_chart,
    drill_history,
    drop_scratch_restore,
    newest_backup,
    presigned_url,
    probe_channel,
    read_acks,
    store_object,
    store_record,
)
from tasks.incident import connectors_for
from tasks.notify import addressed, deliver, pagerduty_event
from tbs_emergency.config import Settings
from tbs_emergency.connectors.base import Notification
from tbs_emergency.domain.templates import DEFAULT_TEMPLATES
from tbs_emergency.errors import TbsError
from tbs_emergency.validation.contacts import (
    ContactFinding,
    add_problem,
    missing_roles,
    verify_contacts,
)
from tbs_emergency.validation.drills import (
    DrillRecord,
    Phase,
    chart_key,
    drill_id,
    report_key,
    report_markdown,
    rpo_seconds,
    rto_target_for,
    trend,
    trend_table,
)
from tbs_emergency.validation.review import OpenFollowUps, review_items, review_markdown


def _now() -> datetime:
    return datetime.now(UTC)


def _run_id() -> str | None:
    with contextlib.suppress(Exception):
        rid = flow_run.get_id()
        return str(rid) if rid else None
    return None


def target_problem(settings: Settings) -> str | None:
    """Why drills must not run against the configured target (None: they may)."""
    d = settings.drills
    if d.target == "production" and not d.allow_production:  # the config refuses this too
        return "drills.target is production but drills.allow_production is false"
    return None


def finish(
    config_path: str | None,
    record: DrillRecord,
    extra_markdown: str = "",
    extra_table: list[dict[str, Any]] | None = None,
) -> DrillRecord:
    """Chart, report and history entry of a drill; artifacts for the UI. Never raises for a
    storage problem: it is added to the record's problems and the report still appears."""
    log = get_run_logger()
    cfg = config_path
    record.report_key = report_key(record.drill, record.started_at)
    record.chart_key = chart_key(record.drill, record.started_at)
    record.flow_run_id = record.flow_run_id or _run_id()
    try:
        history, unreadable = drill_history(cfg)
    except Exception as exc:
        history, unreadable = [], [f"drill history could not be read: {exc}"]
        record.problems.append(unreadable[0])
    history = [r for r in history if r.id != record.id] + [record]
    points = trend(history)
    chart_md = None
    try:
        png = drill_chart(cfg, points, "RTO and RPO of recent drills")
        store_object(cfg, record.chart_key, png, "image/png")
        link = presigned_url(cfg, record.chart_key)
        chart_md = (
            f"![RTO/RPO trend]({data_uri(png)})\n\n"
            f"Chart: `{record.chart_key}` in the bucket"
            + (f" ([link, valid 7 days]({link}))" if link else "")
        )
        if link:
            from prefect.artifacts import create_image_artifact

            with contextlib.suppress(Exception):
                create_image_artifact(
                    image_url=link,
                    key=f"drill-{record.drill.replace('_', '-')}-chart",
                    description="RTO/RPO trend against the runbook's targets",
                )
    except Exception as exc:
        record.chart_key = None
        record.problems.append(f"trend chart not produced: {type(exc).__name__}: {exc}")
    if unreadable:
        record.findings += unreadable[:5]
    md = report_markdown(record, points, chart_md, extra_markdown)
    try:
        store_object(cfg, record.report_key, md.encode(), "text/markdown")
    except Exception as exc:
        record.report_key = None
        record.problems.append(f"report not stored: {exc}")
    try:
        store_record(cfg, record)
    except Exception as exc:
        record.problems.append(f"history entry not stored: {exc}")
        log.error("drill record %s not stored: %s", record.id, exc)
    key = f"drill-{record.drill.replace('_', '-')}"
    create_markdown_artifact(key=key, markdown=md, description=f"{record.drill} drill {record.id}")
    create_table_artifact(
        key=f"{key}-trend",
        table=trend_table(points) or [{"note": "no drill has measured RTO or RPO yet"}],
        description="RTO/RPO of recent drills against the runbook's targets",
    )
    if extra_table:
        create_table_artifact(key=f"{key}-details", table=extra_table)
    (log.info if record.ok else log.error)(
        "%s drill %s: %s", record.drill, record.id, "ok" if record.ok else "FAILED"
    )
    for p in record.problems:
        log.error("could not: %s", p)
    return record


def _base(drill: str, settings: Settings, started: datetime, **kw: Any) -> DrillRecord:
    d = settings.drills
    return DrillRecord(
        drill=drill,  # type: ignore[arg-type]
        id=drill_id(drill, started),
        started_at=started,
        finished_at=started,
        target=d.target,
        ok=False,
        rto_target_s=rto_target_for(drill, d.rto_manual_s, d.rto_automated_s),
        rpo_target_s=d.rpo_target_s if drill in ("recovery", "rollback") else None,
        time_scale=d.time_scale,
        **kw,
    )


# ================================================================================================
# Rollback drill
# ================================================================================================


class RollbackDrillParams(BaseModel):
    config_path: str | None = None
    scenario: str = Field("throughput", description="throughput | errors | resources | database")
    sandbox_dir: str | None = Field(None, description="The sandbox world (default: the config's)")
    validate_after: bool = Field(True, description="Run recovery_validation on blue")
    timeout_s: float = Field(300.0, gt=0)


def _journaled_verdict(
    drill: Any, incident_id: str | None, timeout_s: float
) -> tuple[bool, str, list[str]] | None:
    """The verdict of the recovery validation the rollback started for the incident (its
    `validation` journal entry), waited for up to `timeout_s`; None if the rollback started
    none (validation disabled) or it did not finish in time."""
    if not incident_id:
        return None
    deadline = time.monotonic() + timeout_s
    started = False
    while time.monotonic() < deadline:
        entries = drill.journal.entries(incident_id)
        started = started or any(
            e.kind == "action" and "recovery validation started" in e.what for e in entries
        )
        val = [e for e in entries if e.kind == "validation"]
        if val:
            v = val[-1].data.get("verdict") or {}
            failures = [
                f"{c.get('name')}: {c.get('detail')}"
                for c in v.get("checks", [])
                if c.get("status") in ("fail", "error") and c.get("required", True)
            ]
            return val[-1].result == "ok", val[-1].what, failures
        if not started and time.monotonic() > deadline - timeout_s + 30:
            return None  # no validation run was started for this incident
        time.sleep(1.0)
    return None


def _make_drill(config_path: str, sandbox_dir: str | None, log: Any) -> Any:
    """The rollback engineer's drill (flows.rollback_drill.Drill): runner, watchdog, faults."""
    import os

    from prefect.settings import PREFECT_API_URL

    from flows.rollback_drill import Drill

    # The drill starts a runner process against the Prefect API: the one this run uses.
    current = PREFECT_API_URL.value()
    if current and not os.environ.get("PREFECT_API_URL"):
        os.environ["PREFECT_API_URL"] = current
    return Drill(config_path, Path(sandbox_dir) if sandbox_dir else None, log=log)


class DrillFailed(TbsError):
    """A failed drill's Failed state carries its record (`.record`); `run_rollback_drill`
    returns the record either way."""

    def __init__(self, record: DrillRecord) -> None:
        self.record = record
        super().__init__(
            f"rollback drill {record.id} failed: " + "; ".join(record.problems[:3] or ["not ok"])
        )


def run_rollback_drill(params: RollbackDrillParams | None = None) -> DrillRecord:
    """Run the `rollback_drill` flow; its record, passed or failed."""
    try:
        return rollback_drill(params)  # type: ignore[return-value]
    except DrillFailed as exc:
        return exc.record


@flow(name="rollback_drill", log_prints=False, persist_result=False)
def rollback_drill(params: RollbackDrillParams | None = None) -> DrillRecord | State:
    """Rollback drill checklist: simulate the trigger, let the automation roll back, validate,
    record every phase's time, put things back (faults cleared, traffic on green). A drill that
    fails (or is refused) ends its run Failed `DrillFailed`, carrying the record."""
    record = _rollback_drill(params)
    if record.ok:
        return record
    exc = DrillFailed(record)
    return Failed(name="DrillFailed", message=str(exc)[:500], data=exc)


def _rollback_drill(params: RollbackDrillParams | None = None) -> DrillRecord:
    from tbs_emergency.config import config_path as resolve

    params = params or RollbackDrillParams()
    log = get_run_logger()
    settings = settings_for(params.config_path)
    started = _now()
    record = _base("rollback", settings, started, environment="green -> blue")
    record.details["scenario"] = params.scenario
    refuse = target_problem(settings)
    if refuse is None and settings.drills.target != "sandbox":
        refuse = (
            f"drills.target is {settings.drills.target}: the rollback drill injects its fault"
            " through the sandbox world; against another target inject it with that"
            " environment's own tooling and watch the automation (`tbs-emergency watch`)"
        )
    if refuse:
        record.problems.append(refuse)
        record.finished_at = _now()
        return finish(params.config_path, record)

    drill = None
    try:
        t0 = time.monotonic()
        drill = _make_drill(str(resolve(params.config_path)), params.sandbox_dir, log.info)
        result = drill.run(params.scenario, timeout=params.timeout_s)
        t_run = time.monotonic() - t0
        record.details["drill"] = result.as_dict()
        tm = result.timings
        for name, key in (
            ("trigger fired (detection)", "detected_s"),
            ("rollback started", "rollback_started_s"),
            ("traffic redirected to blue", "redirected_s"),
            ("recovery confirmed", "confirmed_s"),
        ):
            if tm.get(key) is not None:
                record.phases.append(
                    Phase(name=name, start_s=0.0, end_s=tm[key], detail="from the fault")
                )
        for ph in result.phases:
            record.phases.append(
                Phase(
                    name=f"step {ph['step']}",
                    start_s=ph.get("start_s"),
                    end_s=ph.get("end_s"),
                    ok=ph.get("result") == "ok",
                    detail=f"from detection; runbook window ends {ph.get('window_end_s')} s",
                )
            )
        record.rto_s = tm.get("confirmed_s")
        if record.rto_s is None:
            record.problems.append(
                f"recovery was not confirmed (incident {result.incident_id} {result.status})"
            )
        record.problems += [f"rollback: {p}" for p in result.problems]
        record.details["incident_id"] = result.incident_id
        if result.incident_id:
            from tasks.incident import journal
            from tbs_emergency.domain.incident import Entry

            # Marks the incident as a drill's: it gets no post-incident review runs.
            journal(
                params.config_path,
                Entry(
                    incident_id=result.incident_id,
                    kind="drill",
                    what=f"caused by rollback drill {record.id} ({params.scenario})",
                    decided_by="rollback_drill",
                    data={"drill": record.id},
                ),
            )
        record.details["drill_seconds"] = round(t_run, 3)
        ok = result.rolled_back

        if params.validate_after and result.rolled_back:
            from flows.recovery_validation import ValidationParams, validate_recovery

            v0 = time.monotonic() - t0
            # The rollback starts the full recovery validation as its own run after step 4;
            # the drill waits for its verdict in the journal rather than validating twice.
            seen = _journaled_verdict(drill, result.incident_id, params.timeout_s)
            if seen is not None:
                passed, headline, failures = seen
            else:
                verdict = validate_recovery(
                    ValidationParams(
                        config_path=params.config_path,
                        env="blue",
                        incident_id=result.incident_id,
                        escalate=False,
                        decided_by="rollback_drill",
                        time_scale=settings.drills.time_scale,
                    )
                )
                passed, headline = verdict.passed, verdict.headline()
                failures = [f"{c.name}: {c.detail}" for c in verdict.failures]
            record.phases.append(
                Phase(
                    name="recovery validation (blue)",
                    start_s=round(v0, 3),
                    end_s=round(time.monotonic() - t0, 3),
                    ok=passed,
                    detail=headline,
                )
            )
            record.details["validation"] = headline
            if not passed:
                ok = False
                record.problems += [f"validation: {f}" for f in failures]
        p0 = time.monotonic() - t0
        drill.reset()
        record.phases.append(
            Phase(
                name="put back (faults cleared, traffic on green)",
                start_s=round(p0, 3),
                end_s=round(time.monotonic() - t0, 3),
            )
        )
        record.ok = ok
        if record.rto_met is False:
            record.findings.append(
                f"RTO {record.rto_s:.1f} s missed the automated target {record.rto_target_s:g} s"
            )
        record.findings.append(
            f"trigger time scale {settings.triggers.time_scale:g}: detection windows are scaled,"
            " execution is real time"
        )
    except Exception as exc:
        record.problems.append(f"the drill could not complete: {type(exc).__name__}: {exc}")
        if drill is not None:
            try:
                drill.reset()
            except Exception as exc2:
                record.problems.append(f"could not put things back: {exc2}")
    finally:
        if drill is not None:
            with contextlib.suppress(Exception):
                drill.stop()
    record.finished_at = _now()
    return finish(params.config_path, record)


# ================================================================================================
# Communication drill
# ================================================================================================


class CommunicationDrillParams(BaseModel):
    config_path: str | None = None
    ack_wait_s: float | None = Field(
        None, ge=0, description="Wait for acknowledgements (default drills.communication_ack_wait)"
    )
    contacts: list[str] = Field(default_factory=list, description="Only these contacts")


def drill_message(drill_run_id: str, contact: str) -> Notification:
    return Notification(
        subject=f"TBS COMMUNICATION DRILL {drill_run_id} (test: no incident)",
        body=(
            f"This is the monthly TBS emergency communication drill ({drill_run_id}). There is no"
            " incident. Please acknowledge that you received it:"
            f' tbs-emergency drill ack {drill_run_id} --contact "{contact}" --by "<your name>"'
        ),
        severity="P2",
        incident_id=drill_run_id,
        extra={"template": "drill", "drill": drill_run_id},
    )


def _templates_markdown() -> str:
    lines = ["## Message templates under review", ""]
    for t in DEFAULT_TEMPLATES.values():
        lines.append(f"- **{t.key}** ({t.moment}; roles {', '.join(t.roles)}): {t.body}")
    return "\n".join(lines) + "\n"


@flow(name="communication_drill", log_prints=False, persist_result=False)
def communication_drill(params: CommunicationDrillParams | None = None) -> DrillRecord:
    """Communication drill checklist: test message through every channel to every contact,
    delivery verified, acknowledgements collected, stale contacts reported."""
    params = params or CommunicationDrillParams()
    log = get_run_logger()
    cfg = params.config_path
    settings = settings_for(cfg)
    d = settings.drills
    started = _now()
    record = _base("communication", settings, started)
    run_id = record.id
    refuse = target_problem(settings)
    if refuse:
        record.problems.append(refuse)
        record.finished_at = _now()
        return finish(cfg, record)

    contacts = [c for c in settings.contacts if not params.contacts or c.name in params.contacts]
    rows: list[dict[str, Any]] = []
    plan: list[tuple[Any, str, Any]] = []
    for c in contacts:
        if c.role in d.communication_skip_roles:
            rows.append(
                {
                    "contact": c.name,
                    "channel": "-",
                    "result": "SKIPPED",
                    "detail": f"role {c.role} is not messaged in drills",
                }
            )
            continue
        for ch in c.channels:
            kind = settings.channels[ch].kind
            if kind in d.communication_skip_kinds:
                rows.append(
                    {
                        "contact": c.name,
                        "channel": ch,
                        "result": "SKIPPED",
                        "detail": f"{kind} is not posted to in drills",
                    }
                )
                continue
            msg = addressed(cfg, ch, c, drill_message(run_id, c.name))
            plan.append((c, ch, deliver.submit(cfg, ch, msg)))
    channel_problems: dict[str, str] = {}
    reached: dict[str, list[str]] = {}
    pagerduty: set[str] = set()
    for c, ch, fut in plan:
        fut.wait()
        st = fut.state
        ok = st.is_completed()
        if ok:
            res = fut.result()
            detail = str(res.get("detail", ""))
            reached.setdefault(c.name, []).append(ch)
            if settings.channels[ch].kind == "pagerduty":
                pagerduty.add(ch)
        else:
            try:
                fut.result()
                detail = st.message or "failed"
            except Exception as exc:
                detail = f"{type(exc).__name__}: {exc}"
            channel_problems[ch] = f"delivery failed: {detail}"[:200]
        rows.append(
            {
                "contact": c.name,
                "channel": ch,
                "result": "DELIVERED" if ok else "FAILED",
                "detail": detail[:200],
            }
        )
    t_sent = (_now() - started).total_seconds()
    record.phases.append(
        Phase(
            name="deliver test messages",
            start_s=0.0,
            end_s=round(t_sent, 3),
            ok=not channel_problems,
            detail=f"{sum(1 for r in rows if r['result'] == 'DELIVERED')} delivered",
        )
    )

    wait_s = (
        params.ack_wait_s
        if params.ack_wait_s is not None
        else d.communication_ack_wait * d.time_scale
    )
    expected = set(reached)
    acks: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + wait_s
    while True:
        acks = read_acks(cfg, run_id)
        if expected <= set(acks) or time.monotonic() >= deadline:
            break
        time.sleep(min(2.0, max(0.2, wait_s / 20)))
    t_acked = (_now() - started).total_seconds()
    record.phases.append(
        Phase(
            name="collect acknowledgements",
            start_s=round(t_sent, 3),
            end_s=round(t_acked, 3),
            ok=expected <= set(acks),
            detail=f"{len(set(acks) & expected)}/{len(expected)} acknowledged"
            f" (waited up to {wait_s:g} s)",
        )
    )
    for ch in sorted(pagerduty):
        with contextlib.suppress(Exception):
            pagerduty_event(cfg, ch, "resolve", run_id)

    kinds = {n: ch.kind for n, ch in settings.channels.items()}
    findings = verify_contacts(contacts, kinds, started, d.contact_stale_days, channel_problems)
    for name in sorted(expected - set(acks)):
        add_problem(findings, name, f"no acknowledgement within {wait_s:g} s")
    for f in findings:
        if f.contact not in reached and f.role not in d.communication_skip_roles:
            add_problem(findings, f.contact, "no channel accepted the test message")
    ack_seconds = {}
    for name, a in acks.items():
        with contextlib.suppress(Exception):
            ack_seconds[name] = round(
                (datetime.fromisoformat(a["at"]) - started).total_seconds(), 1
            )
    stale = [f for f in findings if f.stale]
    missing = missing_roles(contacts)
    record.details = {
        "deliveries": rows,
        "acknowledgements": acks,
        "ack_seconds": ack_seconds,
        "contacts": [f.model_dump() for f in findings],
        "missing_roles": missing,
    }
    record.findings += [f"stale contact {f.contact}: {'; '.join(f.problems)}" for f in stale]
    if missing:
        record.findings.append(f"nobody holds the role(s): {', '.join(missing)}")
    record.problems += [f"{ch}: {why}" for ch, why in channel_problems.items()]
    record.ok = not channel_problems and expected <= set(acks) and bool(expected)
    if not expected:
        record.problems.append(
            "no contact could be messaged (no contacts or every channel skipped)"
        )
    record.finished_at = _now()
    log.info(
        "communication drill %s: %d deliveries, %d acknowledgements, %d stale contacts",
        run_id,
        len(rows),
        len(acks),
        len(stale),
    )
    extra = _contacts_markdown(findings, rows) + "\n" + _templates_markdown()
    return finish(cfg, record, extra, rows)


def _contacts_markdown(findings: list[ContactFinding], rows: list[dict[str, Any]]) -> str:
    lines = ["## Deliveries", "", "| contact | channel | result | detail |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['contact']} | {r['channel']} | {r['result']} | {r['detail']} |")
    lines += [
        "",
        "## Contacts",
        "",
        "| contact | role | verified | status | problems |",
        "|---|---|---|---|---|",
    ]
    for f in findings:
        r = f.row()
        lines.append(
            f"| {r['contact']} | {r['role']} | {r['verified']} | {r['status']} | {r['problems']} |"
        )
    return "\n".join(lines) + "\n"


# ================================================================================================
# Recovery drill
# ================================================================================================


class RecoveryDrillParams(BaseModel):
    config_path: str | None = None
    environment: str | None = Field(
        None, description="Restore through (default drills.recovery_environment)"
    )
    take_backup_if_none: bool = Field(
        False, description="Take a backup first when none exists (RPO then says little)"
    )
    mysql: bool = True
    heavydb: bool = True
    keep_restored: bool = Field(False, description="Leave the scratch copies for inspection")
    heavydb_restore_dir: str | None = None


@flow(name="recovery_drill", log_prints=False, persist_result=False)
def recovery_drill(params: RecoveryDrillParams | None = None) -> DrillRecord:
    """Recovery drill checklist: restore the newest backup into a scratch target, verify its
    integrity (row counts and checksums against the backup), record RTO and RPO, clean up."""
    from flows.restore import RestoreParams, restore

    params = params or RecoveryDrillParams()
    cfg = params.config_path
    settings = settings_for(cfg)
    env = params.environment or settings.drills.recovery_environment
    started = _now()
    record = _base("recovery", settings, started, environment=env)
    refuse = target_problem(settings)
    if refuse:
        record.problems.append(refuse)
        record.finished_at = _now()
        return finish(cfg, record)
    t0 = time.monotonic()

    def since() -> float:
        return round(time.monotonic() - t0, 3)

    backup = newest_backup(cfg)
    record.phases.append(
        Phase(
            name="find the newest backup",
            start_s=0.0,
            end_s=since(),
            ok=backup is not None,
            detail=backup["backup_id"] if backup else "none exists",
        )
    )
    if backup is None and params.take_backup_if_none:
        from flows.emergency_backup import BackupParams, emergency_backup

        b0 = since()
        state = emergency_backup(  # type: ignore[call-overload]
            BackupParams(config_path=cfg, environment=env), return_state=True
        )
        ok = state.is_completed()
        record.phases.append(
            Phase(
                name="take a backup (none existed)",
                start_s=b0,
                end_s=since(),
                ok=ok,
                detail=state.message or state.name,
            )
        )
        record.findings.append(
            "no backup existed: the drill took one, so its RPO says nothing"
            " about the backup schedule"
        )
        backup = newest_backup(cfg) if ok else None
    if backup is None:
        record.problems.append(
            "no complete backup exists: there is nothing to restore"
            " (check the backup schedule: `tbs-emergency backup list`)"
        )
        record.finished_at = _now()
        return finish(cfg, record)

    failure_at = _now()  # the simulated loss: everything after the backup's snapshot is at risk
    f0 = since()
    token = record.id.rsplit("-", 1)[-1][-8:].lower()
    target_db = f"{settings.environment(env).mysql.database}_drill_{token}"
    suffix = f"_drill_{token}"
    state = restore(  # type: ignore[call-overload]
        RestoreParams(
            config_path=cfg,
            backup_id=backup["backup_id"],
            environment=env,
            target_database=target_db,
            heavydb_suffix=suffix,
            mysql=params.mysql and bool(backup["mysql_tables"]),
            heavydb=params.heavydb and bool(backup["heavydb_tables"]),
            heavydb_restore_dir=params.heavydb_restore_dir,
        ),
        return_state=True,
    )
    restored_ok = state.is_completed()
    report = None
    try:
        report = state.result(raise_on_failure=False)
    except Exception:
        report = None
    record.phases.append(
        Phase(
            name="restore and verify (counts, checksums)",
            start_s=f0,
            end_s=since(),
            ok=restored_ok,
            detail=state.message or state.name,
        )
    )
    integrity: list[dict[str, Any]] = []
    heavy_names: list[str] = []
    if report is not None and hasattr(report, "mysql_tables"):
        for t in report.mysql_tables:
            integrity.append(
                {
                    "store": "mysql",
                    "table": t.get("table"),
                    "rows": t.get("rows"),
                    "expected": t.get("expected_rows"),
                    "ok": bool(t.get("ok")),
                }
            )
        for t in report.heavydb_tables:
            heavy_names.append(str(t.get("target")))
            integrity.append(
                {
                    "store": "heavydb",
                    "table": t.get("target"),
                    "rows": t.get("rows"),
                    "expected": t.get("rows"),
                    "ok": True,
                }
            )
        record.problems += list(report.problems)
    elif not restored_ok:
        record.problems.append(f"restore failed: {state.message or state.name}")
    if not heavy_names and params.heavydb:
        heavy_names = [f"{t}{suffix}" for t in backup["heavydb_tables"]]
    if restored_ok:
        record.rto_s = round((_now() - failure_at).total_seconds() + 0.0, 3)
    record.rpo_s = rpo_seconds(backup["taken_at"], failure_at)
    if backup.get("binlog"):
        record.findings.append(
            f"MySQL binlog position {backup['binlog']} recorded: point-in-time recovery can roll"
            " the archive forward past the backup (RPO here is the backup alone)"
        )
    if not params.keep_restored:
        c0 = since()
        problems = drop_scratch_restore(
            cfg, env, target_db if params.mysql else None, heavy_names if params.heavydb else []
        )
        record.problems += problems
        record.phases.append(
            Phase(name="drop the scratch copies", start_s=c0, end_s=since(), ok=not problems)
        )
    else:
        record.findings.append(f"scratch copies kept: MySQL {target_db}, HeavyDB *{suffix}")
    bad = [i for i in integrity if not i["ok"]]
    record.ok = restored_ok and not bad and bool(integrity)
    if restored_ok and not integrity:
        record.problems.append("the restore reported no verified table")
    if record.rto_met is False:
        record.findings.append(
            f"RTO {record.rto_s:.0f} s missed the target {record.rto_target_s:g} s"
        )
    record.details = {
        "backup": backup["summary"],
        "integrity": integrity,
        "mysql_target": target_db,
        "heavydb_suffix": suffix,
    }
    record.finished_at = _now()
    lines = [
        "## Integrity of the restored copy",
        "",
        "| store | table | rows | backup | ok |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {i['store']} | {i['table']} | {i['rows']} | {i['expected']} |"
        f" {'yes' if i['ok'] else '**no**'} |"
        for i in integrity
    ]
    return finish(cfg, record, "\n".join(lines) + "\n", integrity)


# ================================================================================================
# Contact verification (weekly) and the quarterly review
# ================================================================================================


class ContactVerificationParams(BaseModel):
    config_path: str | None = None
    probe_channels: bool = True


@flow(name="contact_verification", log_prints=False, persist_result=False)
def contact_verification(params: ContactVerificationParams | None = None) -> DrillRecord:
    """Weekly: every contact's details confirmed recently, addresses for its channels, channels
    reachable (probed, nothing sent), every role of the escalation chain held."""
    params = params or ContactVerificationParams()
    cfg = params.config_path
    settings = settings_for(cfg)
    started = _now()
    record = _base("contact_verification", settings, started)
    problems: dict[str, str] = {}
    probes: list[dict[str, Any]] = []
    if params.probe_channels:
        futures = {ch: probe_channel.submit(cfg, ch) for ch in sorted(settings.channels)}
        for ch, fut in futures.items():
            try:
                ok, detail = fut.result()
            except Exception as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            probes.append({"channel": ch, "reachable": "yes" if ok else "NO", "detail": detail})
            if not ok:
                problems[ch] = f"unreachable: {detail}"[:200]
    kinds = {n: ch.kind for n, ch in settings.channels.items()}
    findings = verify_contacts(
        settings.contacts, kinds, started, settings.drills.contact_stale_days, problems
    )
    missing = missing_roles(settings.contacts)
    stale = [f for f in findings if f.stale]
    record.findings += [f"stale contact {f.contact}: {'; '.join(f.problems)}" for f in stale]
    if missing:
        record.findings.append(f"nobody holds the role(s): {', '.join(missing)}")
    if not settings.contacts:
        record.problems.append("no contacts configured")
    record.phases.append(
        Phase(
            name="verify contacts and channels",
            start_s=0.0,
            end_s=round((_now() - started).total_seconds(), 3),
            ok=not stale,
        )
    )
    record.ok = bool(settings.contacts) and not stale and not missing
    record.details = {
        "contacts": [f.model_dump() for f in findings],
        "channels": probes,
        "missing_roles": missing,
    }
    record.finished_at = _now()
    rows = [f.row() for f in findings]
    lines = [
        "## Contacts",
        "",
        "| contact | role | channels | verified | status | problems |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['contact']} | {r['role']} | {r['channels']} | {r['verified']} | {r['status']}"
        f" | {r['problems']} |"
        for r in rows
    ]
    if probes:
        lines += ["", "## Channels", "", "| channel | reachable | detail |", "|---|---|---|"]
        lines += [f"| {p['channel']} | {p['reachable']} | {p['detail']} |" for p in probes]
    return finish(cfg, record, "\n".join(lines) + "\n", rows)


class QuarterlyReviewParams(BaseModel):
    config_path: str | None = None
    incidents_since_days: int = Field(120, ge=1, description="Incidents whose follow-ups count")


def open_followups(config_path: str | None, since: datetime, now: datetime) -> list[OpenFollowUps]:
    """Incidents opened since `since` whose follow-ups are not all done."""
    from tbs_emergency.domain.incident import Incident
    from tbs_emergency.domain.journal import INCIDENTS, Journal
    from tbs_emergency.validation.followups import is_closed, states

    store = connectors_for(config_path).store()
    j = Journal(store)
    ids: set[str] = set()
    for obj in store.list(f"{INCIDENTS}/"):
        parts = obj.key.split("/")
        if len(parts) >= 3 and parts[1].startswith("inc-"):
            ids.add(parts[1])
    out = []
    for iid in sorted(ids):
        stamp = iid.split("-")[1] if iid.count("-") >= 2 else ""
        with contextlib.suppress(ValueError):
            if datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) < since:
                continue
        entries = j.entries(iid)
        inc = Incident.from_entries(entries)
        if inc is None or inc.status == "merged" or is_closed(entries):
            continue
        st = states(inc.opened_at, entries)
        pend = [w for w, s in st.items() if not s.done]
        if pend:
            out.append(
                OpenFollowUps(
                    incident_id=iid, pending=pend, overdue=[w for w in pend if st[w].due_at < now]
                )
            )
    return out


@flow(name="quarterly_review", log_prints=False, persist_result=False)
def quarterly_review(params: QuarterlyReviewParams | None = None) -> DrillRecord:
    """The quarterly comprehensive review checklist, filled in from contacts, the drill history,
    the procedures' age and the open post-incident follow-ups."""
    params = params or QuarterlyReviewParams()
    cfg = params.config_path
    settings = settings_for(cfg)
    now = _now()
    record = _base("quarterly_review", settings, now)
    history, unreadable = drill_history(cfg)
    kinds = {n: ch.kind for n, ch in settings.channels.items()}
    contacts = verify_contacts(settings.contacts, kinds, now, settings.drills.contact_stale_days)
    updated = None
    if settings.drills.procedures_updated:
        try:
            updated = date.fromisoformat(settings.drills.procedures_updated)
        except ValueError:
            record.problems.append(
                f"drills.procedures_updated {settings.drills.procedures_updated!r} is not a date"
            )
    try:
        followups = open_followups(cfg, now - timedelta(days=params.incidents_since_days), now)
    except Exception as exc:
        followups = []
        record.problems.append(f"could not read the incident journals: {exc}")
    items = review_items(
        now, contacts, missing_roles(settings.contacts), history, updated, followups
    )
    attention = [i for i in items if i.status == "attention"]
    record.findings += [f"{i.item}: {i.detail}" for i in attention]
    record.problems += unreadable
    record.ok = not attention
    record.details = {
        "items": [i.model_dump() for i in items],
        "open_followups": [f.model_dump() for f in followups],
    }
    record.finished_at = _now()
    checklist = review_markdown(now, items)
    create_markdown_artifact(
        key="quarterly-review-checklist",
        markdown=checklist,
        description="Quarterly comprehensive review checklist",
    )
    return finish(
        cfg, record, checklist.replace("# Quarterly", "## Quarterly", 1), [i.row() for i in items]
    )
