"""The 15-minute manual rollback process (runbook: "Manual Rollback Procedures").

Five timed phases, each with the runbook's checklist. Every item ends as done, failed or skipped
(with the reason) in the incident journal, the progress is a Prefect progress artifact, and the
checklist a markdown artifact updated after every phase. A phase that ends after its window
(scaled by `drills.time_scale`) is flagged as overrun.

"Authorize rollback execution" waits for a person: `pause_flow_run(wait_for_input=Authorization)`
(a form in the Prefect UI; `tbs-emergency rollback --manual` answers it from the CLI). Without an
authorization nothing after phase 1 changes anything. `authorized_by` pre-authorizes (drills).
The steps that act reuse the emergency rollback's tasks, so both procedures do the same thing to
the same systems; `dry_run` records the plan and changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, pause_flow_run
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.input import RunInput
from pydantic import BaseModel, Field

from flows.emergency_rollback import _value
from flows.recovery_validation import validation_summary
from tasks.common import settings_for
from tasks.incident import journal, open_incident, store_report, sync_index
from tasks.notify import deliver, plan_messages
from tasks.rollback import (
    environment_health,
    metric,
    preserve_sessions,
    redirect_traffic,
    set_read_only,
    verify_traffic,
    verify_user_access,
    wait_transactions,
)
from tbs_emergency.domain.incident import RESOLVED, Entry, Incident, incident_id
from tbs_emergency.domain.plan import MANUAL_PHASES
from tbs_emergency.domain.severity import Severity
from tbs_emergency.domain.templates import MessageContext
from tbs_emergency.domain.triggers import RuleSet


class ManualRollbackParams(BaseModel):
    reason: str = Field(..., description="Why roll back (documented with the incident)")
    requested_by: str = Field("on-call", description="Who starts the procedure")
    config_path: str = ""
    incident_id: str = ""
    authorized_by: str = Field("", description="Pre-authorization (drills); empty: ask a person")
    authorization_timeout_s: int = 900
    dry_run: bool = False


class Authorization(RunInput):
    approve: bool = Field(..., description="Authorize rollback execution")
    authorized_by: str = Field(..., description="Your name")
    secondary_on_call_agrees: bool = Field(
        False, description="Rollback necessity verified with the secondary on-call"
    )
    note: str = ""


class ChecklistItem(BaseModel):
    phase: str
    item: str
    status: str = "pending"  # done | failed | skipped
    reason: str = ""
    at: str = ""


class ManualRollbackResult(BaseModel):
    incident_id: str
    authorized: bool
    completed: bool
    checklist: list[ChecklistItem]
    overruns: dict[str, float]


def _table(items: list[ChecklistItem], overruns: dict[str, float]) -> str:
    lines = ["| phase | item | status | reason |", "|---|---|---|---|"]
    for i in items:
        lines.append(f"| {i.phase} | {i.item} | {i.status} | {i.reason} |")
    if overruns:
        lines += ["", "Overruns: " + ", ".join(f"{k} {v:.1f}s late" for k, v in overruns.items())]
    return "\n".join(lines)


@flow(name="manual_rollback", log_prints=False, persist_result=False)
def manual_rollback(params: ManualRollbackParams) -> ManualRollbackResult:
    logger = get_run_logger()
    cfg = params.config_path or None
    settings = settings_for(cfg)
    scale = settings.drills.time_scale
    rules = RuleSet.from_config(settings.triggers)
    t0 = datetime.now(UTC)
    inc = Incident(
        id=params.incident_id or incident_id("green", t0, salt="manual"),
        severity=Severity.P1,
        trigger=params.reason,
        opened_at=t0,
        decided_by=f"person:{params.requested_by}",
    )
    if not params.dry_run:
        inc, _ = open_incident(cfg, inc)
    items = [ChecklistItem(phase=p.key, item=i) for p in MANUAL_PHASES for i in p.checklist]
    total = len(items)
    progress = create_progress_artifact(progress=0.0, description="manual rollback checklist")
    overruns: dict[str, float] = {}

    def mark(item: str, status: str, reason: str = "", **data: Any) -> None:
        it = next(i for i in items if i.item == item)
        it.status, it.reason, it.at = status, reason, datetime.now(UTC).isoformat()
        if not params.dry_run:
            journal(
                cfg,
                Entry(
                    incident_id=inc.id,
                    kind="checklist",
                    what=item,
                    step=it.phase,
                    decided_by=f"person:{params.requested_by}",
                    result={"done": "ok", "failed": "failed", "skipped": "skipped"}[status],
                    data={"reason": reason, **data},
                ),
            )
        done = sum(1 for i in items if i.status != "pending")
        update_progress_artifact(progress, progress=100.0 * done / total)

    def phase_end(key: str, started: datetime) -> None:
        ph = next(p for p in MANUAL_PHASES if p.key == key)
        now = datetime.now(UTC)
        late = (now - t0).total_seconds() - ph.ends_s * scale
        if late > 0:
            overruns[key] = round(late, 1)
        if not params.dry_run:
            journal(
                cfg,
                Entry(
                    incident_id=inc.id,
                    kind="step",
                    step=key,
                    what=f"{ph.title}" + (f" (overran by {late:.1f}s)" if late > 0 else ""),
                    result="ok",
                    started_at=started,
                    finished_at=now,
                    decided_by=f"person:{params.requested_by}",
                    data={"budget_scale": scale},
                ),
            )
        create_markdown_artifact(_table(items, overruns), key="manual-rollback-checklist")

    def ok(res: Any, err: str | None, key: str = "ok") -> bool:
        return err is None and bool((res or {}).get(key, True))

    # Phase 1: Assessment & Authorization ------------------------------------------------------
    s = datetime.now(UTC)
    health, err = _value(environment_health, cfg, "blue")
    mark("Document incident trigger and timestamp", "done", f"{params.reason} at {t0.isoformat()}")
    authorized_by = params.authorized_by
    agrees = bool(authorized_by)
    if not authorized_by and not params.dry_run:
        logger.info("waiting for authorization (Prefect UI form or `tbs-emergency rollback`)")
        answer = pause_flow_run(
            wait_for_input=Authorization, timeout=params.authorization_timeout_s
        )
        if answer.approve:
            authorized_by = answer.authorized_by
            agrees = answer.secondary_on_call_agrees
    mark(
        "Verify rollback necessity with secondary on-call",
        "done" if agrees else "skipped",
        "" if agrees else "not confirmed with the secondary on-call",
    )
    if params.dry_run:
        mark("Authorize rollback execution", "skipped", "dry run")
    elif authorized_by:
        mark("Authorize rollback execution", "done", f"authorized by {authorized_by}")
    else:
        mark("Authorize rollback execution", "failed", "not authorized")
    team_ok = False
    if authorized_by and not params.dry_run:
        ctx = MessageContext(incident_id=inc.id, severity=inc.severity.value, reason=params.reason)
        states = [
            deliver(cfg, ch, m, return_state=True) for ch, m in plan_messages(cfg, "immediate", ctx)
        ]
        team_ok = bool(states) and all(st.is_completed() for st in states)
    mark(
        "Notify emergency response team",
        "done" if team_ok else "skipped" if not authorized_by else "failed",
        "" if team_ok else "no authorization" if not authorized_by else "a delivery failed",
    )
    phase_end("phase-1-assessment", s)
    act = bool(authorized_by) and not params.dry_run
    blue_ok = bool((health or {}).get("healthy"))
    if act and not blue_ok:
        act = False
        logger.error("blue is not healthy: no redirect; escalate")

    def step(item: str, fn: Any, *args: Any, key: str = "ok") -> bool:
        if not act:
            mark(
                item, "skipped", "dry run" if params.dry_run else "not authorized or blue unhealthy"
            )
            return False
        res, err = _value(fn, cfg, *args)
        good = ok(res, err, key)
        mark(item, "done" if good else "failed", err or ("" if good else str(res)[:200]))
        return good

    # Phase 2: Traffic Redirection -------------------------------------------------------------
    s = datetime.now(UTC)
    step("Redirect load balancer to Blue environment", redirect_traffic, "blue")
    step("Verify traffic redirection successful", verify_traffic, "blue", key="active")
    step("Monitor Blue environment health", environment_health, "blue", key="healthy")
    step("Confirm user request routing", verify_user_access, "blue", 5)
    phase_end("phase-2-traffic", s)
    # Phase 3: Database & Data Management ------------------------------------------------------
    s = datetime.now(UTC)
    step("Complete pending database transactions", wait_transactions, "green", 60.0 * scale + 1)
    mark(
        "Synchronize critical data between environments",
        "skipped",
        "the environment sync flow owns this step (not part of rollback)",
    )
    mark(
        "Verify data integrity across systems",
        "skipped",
        "run `integrity_sweep` (owned by the integrity flows)",
    )
    step("Create rollback checkpoint", set_read_only, "green", "mysql", True)
    phase_end("phase-3-data", s)
    # Phase 4: Session & User Management -------------------------------------------------------
    s = datetime.now(UTC)
    step("Preserve active user sessions", preserve_sessions, "green", "blue")
    mark(
        "Transfer authentication states",
        "done" if act else "skipped",
        "sessions carry the authentication state" if act else "not authorized",
    )
    step("Verify user access continuity", verify_user_access, "blue", 5)
    mark(
        "Update session routing",
        "done" if act else "skipped",
        "routing follows the load balancer" if act else "not authorized",
    )
    phase_end("phase-4-sessions", s)
    # Phase 5: Validation & Communication ------------------------------------------------------
    s = datetime.now(UTC)
    if step("Execute comprehensive health checks", environment_health, "blue", key="healthy"):
        # the comprehensive part: the recovery validation of blue, journaled in the incident
        # (a failing verdict escalates it and leaves the procedure incomplete)
        verdict = validation_summary(
            cfg, "blue", "manual_rollback", incident_id=inc.id, time_scale=scale
        )
        mark(
            "Execute comprehensive health checks",
            "done" if verdict["passed"] else "failed",
            verdict["headline"],
            failures=verdict["failures"],
        )
    if act and rules.performance:
        rows, err = _value(metric, cfg, "throughput", "blue", rules.performance.period_s)
        good = rows is not None and not rules.performance.breaches(rows)
        mark(
            "Validate system performance metrics",
            "done" if good else "failed",
            f"blue {rows} rows/s" if rows is not None else (err or "no data"),
        )
    else:
        mark("Validate system performance metrics", "skipped", "not authorized or dry run")
    if act:
        ctx = MessageContext(incident_id=inc.id, severity=inc.severity.value)
        sts = [
            deliver(cfg, ch, m, return_state=True)
            for ch, m in plan_messages(cfg, "post_resolution", ctx)
        ]
        mark("Send user notifications", "done" if all(x.is_completed() for x in sts) else "failed")
    else:
        mark("Send user notifications", "skipped", "not authorized or dry run")
    mark(
        "Update monitoring systems",
        "done" if act else "skipped",
        "the watchdog follows the active environment" if act else "not authorized",
    )
    phase_end("phase-5-validation", s)
    completed = act and all(i.status != "failed" for i in items)
    if not params.dry_run:
        if completed:
            journal(
                cfg,
                Entry(
                    incident_id=inc.id,
                    kind=RESOLVED,
                    what="manual rollback complete",
                    decided_by=f"person:{authorized_by}",
                    result="ok",
                ),
            )
        sync_index(cfg, inc.id)
        store_report(cfg, inc.id)
    return ManualRollbackResult(
        incident_id=inc.id,
        authorized=bool(authorized_by),
        completed=completed,
        checklist=items,
        overruns=overruns,
    )
