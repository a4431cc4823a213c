"""The 15-minute manual rollback process (runbook: "Manual Rollback Procedures").

Five timed phases, each with the runbook's checklist. Every item ends as done, failed or skipped
(with the reason) in the incident journal, the progress is a Prefect progress artifact, and the
checklist a markdown artifact updated after every phase. A phase that ends after its window
(scaled by `drills.time_scale`) is flagged as overrun.

"Authorize rollback execution" waits for a person: `pause_flow_run(wait_for_input=Authorization)`
(a form in the Prefect UI; `tbs-emergency rollback --manual` answers it from the CLI) for its
full `authorization_timeout_s` (15 minutes): the run holds no concurrency slot while paused (the
deployment has no deployment-level limit, whose lease Prefect releases at the pause and then
fails to renew, crashing the run after 225 s). An authorization that never comes
(FlowPauseTimeout) is journaled, the report stored, and the run ends Failed `NotAuthorized`.
Without an authorization nothing after phase 1 changes anything. `authorized_by` pre-authorizes
(drills). The acting phases (2-5) hold the global rollback slot (`tbs-rollback`, shared with
`emergency_rollback`). The steps that act reuse the emergency rollback's tasks, so both
procedures do the same thing to the same systems; `dry_run` records the plan and changes nothing.

The run is named `manual-rollback-<incident>`, tagged with severity and environment; a procedure
that does not complete ends Failed `Incomplete` (`run_manual_rollback` returns the result either
way). The full recovery validation runs after, as its own flow run, like the automated one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, pause_flow_run
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from prefect.states import Failed, State
from pydantic import BaseModel, Field

from flows.emergency_rollback import (
    LEASE_S,
    ROLLBACK_LIMIT,
    SLOT_WAIT_S,
    _value,
)
from flows.runinfo import (
    incident_run_name,
    name_run,
    rollback_slot,
    run_tags,
    start_validation,
)
from tasks.common import settings_for
from tasks.incident import journal, open_incident, store_report, sync_index
from tasks.notify import deliver, plan_messages
from tasks.rollback import (
    backend_window,
    carry_writes,
    environment_health,
    preserve_sessions,
    redirect_traffic,
    set_read_only,
    verify_traffic,
    verify_user_access,
    wait_transactions,
)
from tbs_emergency.domain.incident import RESOLVED, Entry, Incident, OptionalIncidentId, incident_id
from tbs_emergency.domain.plan import MANUAL_PHASES
from tbs_emergency.domain.secondsource import blue_checks
from tbs_emergency.domain.severity import Severity
from tbs_emergency.domain.templates import MessageContext
from tbs_emergency.domain.triggers import RuleSet
from tbs_emergency.errors import TbsError

# The pause (15 min by default) plus the acting phases and the slot wait.
MANUAL_TIMEOUT_S = 3600.0


class ManualRollbackParams(BaseModel):
    reason: str = Field(..., description="Why roll back (documented with the incident)")
    requested_by: str = Field("on-call", description="Who starts the procedure")
    config_path: str = ""
    incident_id: OptionalIncidentId = ""
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
    status: str = ""  # completed | incomplete | not authorized | authorization timed out | dry run
    validation: dict[str, Any] = Field(default_factory=dict)


class ManualRollbackIncomplete(TbsError):
    """What an incomplete manual rollback's Failed state carries (`.result`)."""

    def __init__(self, result: ManualRollbackResult) -> None:
        self.result = result
        failed = [i.item for i in result.checklist if i.status == "failed"]
        super().__init__(
            f"manual rollback {result.incident_id}: {result.status}"
            + (f" (failed: {'; '.join(failed)})" if failed else "")
        )


def run_manual_rollback(params: ManualRollbackParams) -> ManualRollbackResult:
    """Run `manual_rollback` and return its result whatever its final state."""
    from prefect import tags

    try:
        with tags("emergency", "rollback", "manual"):
            return manual_rollback(params)  # type: ignore[return-value]
    except ManualRollbackIncomplete as exc:
        return exc.result


def _final(result: ManualRollbackResult) -> ManualRollbackResult | State:
    if result.completed or result.status == "dry run":
        return result
    name = {"authorization timed out": "NotAuthorized", "not authorized": "NotAuthorized"}.get(
        result.status, "Incomplete"
    )
    exc = ManualRollbackIncomplete(result)
    return Failed(name=name, message=str(exc)[:500], data=exc)


@contextlib.contextmanager
def _slot_if(act: bool) -> Iterator[dict[str, Any]]:
    """The global rollback slot while the procedure acts (nothing to hold otherwise); a slot
    another rollback keeps past SLOT_WAIT_S is reported (`timeout`), not raised."""
    if not act:
        yield {}
        return
    try:
        cm = rollback_slot(ROLLBACK_LIMIT, LEASE_S, SLOT_WAIT_S)
        info = cm.__enter__()
    except TimeoutError:
        yield {"timeout": f"another rollback held {ROLLBACK_LIMIT} for {SLOT_WAIT_S:g} s"}
        return
    try:
        yield info
    except BaseException as exc:
        if not cm.__exit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        cm.__exit__(None, None, None)


def _table(items: list[ChecklistItem], overruns: dict[str, float]) -> str:
    lines = ["| phase | item | status | reason |", "|---|---|---|---|"]
    for i in items:
        lines.append(f"| {i.phase} | {i.item} | {i.status} | {i.reason} |")
    if overruns:
        lines += ["", "Overruns: " + ", ".join(f"{k} {v:.1f}s late" for k, v in overruns.items())]
    return "\n".join(lines)


@flow(
    name="manual_rollback",
    flow_run_name=incident_run_name("manual-rollback"),
    timeout_seconds=MANUAL_TIMEOUT_S,
    log_prints=False,
    persist_result=False,
)
def manual_rollback(params: ManualRollbackParams) -> ManualRollbackResult | State:
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
    name_run(
        f"manual-rollback-{inc.id}",
        run_tags(inc.severity.value, inc.env, inc.id, "rollback", "manual"),
    )
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
    timed_out = False
    if not authorized_by and not params.dry_run:
        logger.info(
            "waiting up to %d s for authorization (Prefect UI form or `tbs-emergency rollback`)",
            params.authorization_timeout_s,
        )
        try:
            answer = pause_flow_run(
                wait_for_input=Authorization, timeout=params.authorization_timeout_s
            )
        except FlowPauseTimeout:
            timed_out = True
            logger.error(
                "no authorization within %d s: nothing changed", params.authorization_timeout_s
            )
            journal(
                cfg,
                Entry(
                    incident_id=inc.id,
                    kind="decision",
                    what=(
                        f"authorization timed out after {params.authorization_timeout_s} s:"
                        " no rollback"
                    ),
                    step="phase-1-assessment",
                    decided_by="manual_rollback",
                    result="failed",
                    data={"timeout_s": params.authorization_timeout_s},
                ),
            )
        else:
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
    elif timed_out:
        mark(
            "Authorize rollback execution",
            "failed",
            f"no authorization within {params.authorization_timeout_s} s",
        )
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
    # Phases 2-5 act: they hold the global rollback slot (taken after the pause, never across it).
    with _slot_if(act) as slot:
        if slot.get("timeout"):
            act = False
            logger.error("%s: nothing changed", slot["timeout"])

        def step(item: str, fn: Any, *args: Any, key: str = "ok") -> bool:
            if not act:
                mark(
                    item,
                    "skipped",
                    "dry run" if params.dry_run else "not authorized or blue unhealthy",
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
            "Verify data integrity across systems",
            "skipped",
            "run `integrity_sweep` (owned by the integrity flows)",
        )
        step("Create rollback checkpoint", set_read_only, "green", "mysql", True)
        # Green takes no writes now: its ledger holds every write it acknowledged; carried to
        # blue and verified there (the emergency rollback's `carry-writes`, same task).
        _data_items(act, params.dry_run, cfg, mark)
        phase_end("phase-3-data", s)
        # Phase 4: Session & User Management -------------------------------------------------------
        s = datetime.now(UTC)
        sessions = _session_items(act, params.dry_run, cfg, mark)
        step("Verify user access continuity", verify_user_access, "blue", 5)
        _routing_item(act, params.dry_run, cfg, mark, sessions)
        phase_end("phase-4-sessions", s)
        # Phase 5: Validation & Communication ------------------------------------------------------
        s = datetime.now(UTC)
        # Fast checks here (blue's health, its traffic and errors at the load balancer); the full
        # recovery validation runs after the procedure, as its own flow run
        # (runinfo.start_validation).
        step("Execute comprehensive health checks", environment_health, "blue", key="healthy")
        if act:
            lb, err = _value(backend_window, cfg, "blue", 5.0)
            threshold = rules.error_rate.threshold if rules.error_rate else None
            verdicts = blue_checks(lb, threshold) if err is None else {}
            good = bool(verdicts) and all(v for v, _ in verdicts.values())
            mark(
                "Validate system performance metrics",
                "done" if good else "failed",
                "; ".join(why for _, why in verdicts.values()) or f"load balancer: {err}",
                load_balancer=lb,
            )
        else:
            mark("Validate system performance metrics", "skipped", "not authorized or dry run")
        if act:
            ctx = MessageContext(incident_id=inc.id, severity=inc.severity.value)
            sts = [
                deliver(cfg, ch, m, return_state=True)
                for ch, m in plan_messages(cfg, "post_resolution", ctx)
            ]
            mark(
                "Send user notifications",
                "done" if all(x.is_completed() for x in sts) else "failed",
            )
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
    status = (
        "dry run"
        if params.dry_run
        else "completed"
        if completed
        else "authorization timed out"
        if timed_out
        else "not authorized"
        if not authorized_by
        else "incomplete"
    )
    result = ManualRollbackResult(
        incident_id=inc.id,
        authorized=bool(authorized_by),
        completed=completed,
        checklist=items,
        overruns=overruns,
        status=status,
    )
    if completed:
        result.validation = start_validation(cfg, inc.id, "blue", scale, "manual_rollback")
    return _final(result)


# -- data and session items (the same tasks as the emergency rollback's step 3) ----------------


def _not_acting(dry_run: bool) -> str:
    return "dry run" if dry_run else "not authorized or blue unhealthy"


def _data_items(act: bool, dry_run: bool, cfg: str | None, mark: Any) -> None:
    """The item "Synchronize critical data between environments": green's acknowledged writes (its
    ledger) carried to blue's MySQL and HeavyDB and verified with the integrity engine."""
    item = "Synchronize critical data between environments"
    if not act:
        mark(item, "skipped", _not_acting(dry_run))
        return
    res, err = _value(carry_writes, cfg, "green", "blue")
    res = res or {"error": err}
    status = "skipped" if res.get("skipped") else ("done" if res.get("ok") else "failed")
    why = res.get("reason") or res.get("error") or "; ".join(res.get("lines") or [])
    mark(
        item,
        status,
        str(why)[:300],
        carried={
            k: res.get(k)
            for k in (
                "authority",
                "authority_reason",
                "ledger_entries",
                "since",
                "copied",
                "missing",
            )
        },
    )


def _session_items(act: bool, dry_run: bool, cfg: str | None, mark: Any) -> dict[str, Any]:
    """The items "Preserve active user sessions" (every session key copied to blue's Redis
    with its TTL, verified key by key) and "Transfer authentication states" (the session keys
    are the authentication state the application keeps, plus its login lockdown flag)."""
    if not act:
        mark("Preserve active user sessions", "skipped", _not_acting(dry_run))
        mark("Transfer authentication states", "skipped", _not_acting(dry_run))
        return {}
    res, err = _value(preserve_sessions, cfg, "green", "blue")
    res = res or {"ok": False, "error": err}
    counts = {
        k: res.get(k) for k in ("before", "copied", "verified", "missing", "expired", "shared")
    }
    if res.get("skipped"):
        status, why = "skipped", str(res.get("reason") or "no sessions to carry")
    elif res.get("ok"):
        where = "one store shared by both" if res.get("shared") else "copied with their TTL"
        status, why = "done", f"{res.get('verified')} of {res.get('before')} verified on blue"
        why += f" ({where})"
    else:
        status, why = "failed", str(res.get("error") or "not verified")
    mark("Preserve active user sessions", status, why, sessions=counts)
    extra = res.get("extra") or {}
    flags = ", ".join(f"{k}: {v}" for k, v in extra.items()) or "none"
    if status == "failed" or "missing" in extra.values():
        mark(
            "Transfer authentication states",
            "failed",
            f"session tokens not verified on blue ({why}); login flags: {flags}",
        )
    elif status == "skipped" and "copied" not in extra.values():
        mark(
            "Transfer authentication states",
            "skipped",
            f"no session tokens and no login flag to carry (login flags: {flags})",
        )
    else:
        mark(
            "Transfer authentication states",
            "done",
            f"{res.get('verified')} session tokens verified on blue; login flags: {flags}",
        )
    return res


def _routing_item(
    act: bool, dry_run: bool, cfg: str | None, mark: Any, sessions: dict[str, Any]
) -> None:
    """The item "Update session routing": the load balancer sends users to blue and sessions carried
    there are served by blue (a sample through the load balancer)."""
    item = "Update session routing"
    if not act:
        mark(item, "skipped", _not_acting(dry_run))
        return
    _, terr = _value(verify_traffic, cfg, "blue")
    access, aerr = _value(verify_user_access, cfg, "blue", 5)
    access = access or {"ok": False, "error": aerr}
    if terr is not None:
        mark(item, "failed", f"traffic is not on blue: {terr}")
    elif not sessions.get("ok"):
        mark(item, "failed", "sessions were not carried to blue: nothing verified to route")
    elif not access.get("checked"):
        mark(
            item,
            "skipped",
            "traffic on blue, but no session on blue to route: "
            + str(access.get("reason") or access.get("error") or ""),
        )
    elif access.get("ok"):
        mark(
            item,
            "done",
            f"traffic on blue; {access.get('passed')} of {access.get('checked')} sampled"
            " sessions served by blue through the load balancer",
        )
    else:
        mark(
            item,
            "failed",
            f"{access.get('passed')} of {access.get('checked')} sampled sessions served by blue",
        )
