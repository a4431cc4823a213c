"""The gate at the start of `emergency_rollback`: who may act, and whether this run should at all.

Called once, near the top of the flow (after the incident is loaded, before any action and
before any concurrency slot is taken: the gate never holds the global rollback limit while it
waits). What it decides is `tbs_emergency.domain.gate.decide`:

- a stale run (scheduled longer ago than `watchdog.stale_after`), a run for an incident that is
  no longer open, or one for an incident a readable journal does not know ends Cancelled with
  the reason: an emergency run is never executed late, and a run left over from an earlier world
  never moves traffic. An unreadable journal never stops a rollback.
- a duplicate (another run of the rollback deployment for the same incident already running,
  paused or completed) ends Cancelled, saying which run handles the incident;
- P1 authority (runbook: P1 = on-call engineer decision): for a P1 incident and a veto window
  > 0 (`watchdog.p1_veto_window`, scaled, default 300 s at real time), the on-call is paged and
  the run pauses with a form (`P1Decision`: approve | veto, reason) for the window. Answers:
  the Prefect UI form, or `tbs-emergency ack INCIDENT --approve | --veto [--reason ...]`
  (journaled, then sent to the paused run). A veto ends the run Cancelled and stops automatic
  action for the incident (it stays open); no answer by the end of the window proceeds and
  journals that nobody answered; a raise to P0 during the wait (the watchdog sends an approval)
  proceeds at once. A decision journaled before the run paused is honoured. P0 never waits.

`rollback_gate(params)` returns None to proceed, or the final State (Cancelled) to return.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import get_run_logger
from prefect.context import FlowRunContext
from prefect.input import RunInput
from prefect.states import Cancelled, State

from tasks.common import settings_for
from tbs_emergency.domain.gate import (
    DECISION_STEP,
    GateDecision,
    RunInfo,
    automatic,
    decide,
    decision_entry,
    decision_of,
    run_info,
)
from tbs_emergency.domain.incident import Entry, Incident

ROLLBACK_DEPLOYMENT = "emergency_rollback/emergency-rollback"


class P1Decision(RunInput):
    """The on-call engineer's answer to a P1 rollback (the form on the paused run)."""

    decision: Literal["approve", "veto"] = "approve"
    reason: str = ""
    by: str = ""
    source: Literal["ui", "cli", "watchdog"] = "ui"


def rollback_runs_for(incident_id: str, limit: int = 200) -> list[Any]:
    """Flow runs of the rollback deployment whose parameters name this incident (any state)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(ROLLBACK_DEPLOYMENT)
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=limit,
        )
    return [r for r in runs if _incident_of(r) == incident_id]


def _incident_of(run: Any) -> str:
    params = (getattr(run, "parameters", None) or {}).get("params") or {}
    return str(params.get("incident_id") or "") if isinstance(params, dict) else ""


def send_decision(incident_id: str, decision: str, reason: str, by: str) -> int:
    """Send a P1Decision to the paused rollback runs of this incident; how many took it."""
    from prefect.flow_runs import resume_flow_run

    n = 0
    source = "watchdog" if by == "watchdog" else "cli"
    for r in rollback_runs_for(incident_id):
        if run_info(r).state != "PAUSED":
            continue
        try:
            resume_flow_run(
                r.id,
                run_input={"decision": decision, "reason": reason, "by": by, "source": source},
            )
            n += 1
        except Exception:
            continue
    return n


def _journal(cfg: str | None, e: Entry) -> None:
    from tasks.incident import journal_for

    try:
        journal_for(cfg).append(e)
    except Exception as exc:
        get_run_logger().error("could not journal %r: %s", e.what, exc)


def _page_on_call(cfg: str | None, inc: Incident, veto_s: float) -> None:
    """Page the primary contact: a P1 rollback waits for them (every channel, incident kinds)."""
    from tasks.notify import deliver
    from tbs_emergency.connectors.base import Notification

    settings = settings_for(cfg)
    msg = Notification(
        subject=f"P1 DECISION NEEDED: rollback of {inc.id} in {veto_s:.0f}s unless vetoed",
        body=(
            f"P1 incident {inc.id} on {inc.env}: {inc.trigger}. The automatic rollback to blue"
            f" starts in {veto_s:.0f}s unless you veto it: `tbs-emergency ack {inc.id} --veto"
            f" --reason ...` (or approve now: --approve), or answer the form on the paused"
            " rollback run in the Prefect UI."
        ),
        severity="P1",
        incident_id=inc.id,
        extra={"template": "p1-decision"},
    )
    by_channel: dict[str, list[str]] = {}
    for c in settings.contacts:
        if c.role != "primary":
            continue
        for ch in c.channels:
            cfg_ch = settings.channels.get(ch)
            if cfg_ch is None:
                continue
            addr = {"smtp": c.email, "sms": c.phone}.get(cfg_ch.kind) or c.name
            by_channel.setdefault(ch, [])
            if addr and addr not in by_channel[ch]:
                by_channel[ch].append(addr)
    futures = [
        deliver.submit(cfg, ch, replace(msg, recipients=tuple(addrs)))
        for ch, addrs in by_channel.items()
    ]
    for f in futures:
        try:
            f.result(timeout=60)
        except Exception as exc:
            get_run_logger().warning("P1 decision page failed: %s", exc)


def _me() -> RunInfo | None:
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None
    fr = ctx.flow_run
    created = fr.expected_start_time or fr.created
    if fr.created and (created is None or fr.created < created):
        created = fr.created  # the oldest: when the run was scheduled
    ts = created.timestamp() if created else time.time()
    return RunInfo(str(fr.id), "RUNNING", ts)


def _cancelled(reason: str) -> State:
    get_run_logger().warning("rollback gate: %s", reason)
    return Cancelled(message=reason)


def rollback_gate(params: Any) -> State | None:
    """Decide before acting (see the module docstring): None = proceed, else the final state."""
    logger = get_run_logger()
    cfg = params.config_path or None
    settings = settings_for(cfg)
    inc_id = str(params.incident_id or "")
    auto = automatic(str(params.decided_by), str(params.event_id or ""))
    if getattr(params, "dry_run", False):
        return None
    inc, entries, readable = _load(cfg, inc_id)
    me = _me()
    others: list[RunInfo] = []
    if auto and inc_id:
        try:
            others = [run_info(r) for r in rollback_runs_for(inc_id)]
        except Exception as exc:
            logger.warning("cannot look for other rollback runs of %s: %s", inc_id, exc)
    veto_s = settings.watchdog.veto_window_s(settings.triggers.time_scale)
    verdict = decide(
        incident_id=inc_id,
        incident=inc,
        journal_readable=readable,
        entries=entries,
        automatic_run=auto,
        me=me,
        others=others,
        now=time.time(),
        stale_after_s=settings.watchdog.stale_after,
        veto_s=veto_s,
    )
    logger.info("rollback gate: %s (%s)", verdict.verdict, verdict.reason)
    if verdict.verdict in ("cancel", "duplicate"):
        if inc is not None and inc.is_open:
            _journal(cfg, _gate_entry(inc.id, verdict))
        return _cancelled(verdict.reason)
    if verdict.verdict == "vetoed":
        if inc is not None:
            _journal(cfg, _gate_entry(inc.id, verdict))
        return _cancelled(f"no automatic rollback: {verdict.reason} (the incident stays open)")
    if verdict.verdict == "proceed":
        if inc is not None and auto and inc.severity.value == "P1":
            _journal(cfg, _gate_entry(inc.id, verdict))
        return None
    assert inc is not None
    return _wait(cfg, inc, verdict)


def _load(cfg: str | None, inc_id: str) -> tuple[Incident | None, list[Entry], bool]:
    if not inc_id:
        return None, [], True
    from tasks.incident import journal_for

    try:
        entries = journal_for(cfg).entries(inc_id)
    except Exception:
        return None, [], False
    return Incident.from_entries(entries), entries, True


def _gate_entry(inc_id: str, verdict: GateDecision) -> Entry:
    return Entry(
        incident_id=inc_id,
        kind="decision",
        step="gate",
        what=f"rollback gate: {verdict.verdict}: {verdict.reason}",
        decided_by="automation",
        result="info",
        data={"verdict": verdict.verdict},
    )


def _wait(cfg: str | None, inc: Incident, verdict: GateDecision) -> State | None:
    """P1: page the on-call, pause with the decision form for the veto window."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run
    from prefect.states import Running

    logger = get_run_logger()
    veto_s = verdict.veto_s
    started = datetime.now(UTC)
    _journal(
        cfg,
        Entry(
            incident_id=inc.id,
            kind="decision",
            step="gate",
            what=f"P1: waiting up to {veto_s:g}s for the on-call engineer (approve or veto)",
            decided_by="automation",
            result="started",
            started_at=started,
            data={"verdict": "wait", "veto_s": veto_s},
        ),
    )
    _page_on_call(cfg, inc, veto_s)
    # A decision (or a raise to P0) may have come while paging.
    inc2, entries, _ = _load(cfg, inc.id)
    answer: P1Decision | None = None
    early = decision_of(entries)
    if inc2 is not None and inc2.severity.value == "P0":
        answer = P1Decision(decision="approve", reason="severity raised to P0", by="watchdog")
    elif early is not None:
        answer = P1Decision(decision=early.decision, reason=early.reason, by=early.by, source="cli")
    else:
        try:
            answer = pause_flow_run(
                wait_for_input=P1Decision,
                timeout=max(1, round(veto_s)),
                poll_interval=1,
                key="p1-decision",  # lowercase letters, digits and dashes only
            )
        except FlowPauseTimeout:
            answer = None
            ctx = FlowRunContext.get()
            if ctx is not None and ctx.flow_run is not None:
                with get_client(sync_client=True) as client:
                    client.set_flow_run_state(ctx.flow_run.id, Running(), force=True)
        # the journal may hold a decision sent by the CLI just before the pause ended
        _, entries, _ = _load(cfg, inc.id)
        late = decision_of(entries)
        if answer is None and late is not None and late.at >= started:
            answer = P1Decision(
                decision=late.decision, reason=late.reason, by=late.by, source="cli"
            )
    finished = datetime.now(UTC)
    if answer is None:
        _journal(
            cfg,
            Entry(
                incident_id=inc.id,
                kind="decision",
                step=DECISION_STEP,
                what=f"nobody answered within {veto_s:g}s: the rollback proceeds",
                decided_by="automation",
                result="ok",
                started_at=started,
                finished_at=finished,
                data={"decision": "timeout", "veto_s": veto_s},
            ),
        )
        logger.warning("P1 %s: nobody answered in %gs; proceeding", inc.id, veto_s)
        return None
    if answer.source == "ui":  # the CLI and the watchdog journal their own decisions
        _journal(
            cfg,
            decision_entry(inc.id, answer.decision, answer.by or "prefect-ui", answer.reason, "ui"),
        )
    if answer.decision == "veto":
        reason = f"vetoed by {answer.by or 'the on-call'}" + (
            f": {answer.reason}" if answer.reason else ""
        )
        _journal(cfg, _gate_entry(inc.id, GateDecision("vetoed", reason)))
        return _cancelled(f"no automatic rollback: {reason} (the incident stays open)")
    logger.info("P1 %s: approved by %s (%s); proceeding", inc.id, answer.by, answer.reason)
    return None
