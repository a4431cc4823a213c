"""The rollback gate's decisions, plain logic (flows/rollback_gate.py runs them in the flow).

Before an automatically started `emergency_rollback` acts, the gate decides one of:

- `cancel`: the run is stale (scheduled longer ago than `watchdog.stale_after`), or its incident
  is no longer open, or a readable journal does not know the incident (a run left over from an
  earlier world must never move traffic). An unreadable journal never cancels: proceed.
- `duplicate`: another run of the rollback deployment for the same incident is already running,
  paused or completed (of two running at once, the later-created one ends).
- `vetoed`: the on-call engineer vetoed automatic action for this P1 incident (journal).
- `wait`: a P1 incident, no decision yet, veto window > 0: page the on-call and pause the run
  for the veto window (a form in the Prefect UI, `tbs-emergency ack INCIDENT --approve|--veto`).
- `proceed`: P0 (never waits), an approval, a person's own rollback, or a zero veto window.

Decisions are journal entries of kind `decision`, step `p1-decision`, `data.decision` approve or
veto (`decision_of` reads the newest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from tbs_emergency.domain.incident import Entry, Incident
from tbs_emergency.domain.severity import Severity

DECISION_STEP = "p1-decision"
Verdict = Literal["proceed", "wait", "cancel", "duplicate", "vetoed"]
ACTIVE_STATES = ("RUNNING", "PAUSED", "COMPLETED")


@dataclass(frozen=True)
class Decision:
    decision: Literal["approve", "veto"]
    by: str
    reason: str
    at: datetime


@dataclass(frozen=True)
class RunInfo:
    """What the gate needs of a flow run (this one, or another for the same incident)."""

    id: str
    state: str  # StateType name: SCHEDULED, PENDING, RUNNING, PAUSED, COMPLETED, ...
    created: float  # epoch seconds


@dataclass(frozen=True)
class GateDecision:
    verdict: Verdict
    reason: str
    veto_s: float = 0.0


def decision_entry(incident_id: str, decision: str, by: str, reason: str, source: str) -> Entry:
    """The journal entry of an on-call decision (approve or veto)."""
    what = f"{'approved' if decision == 'approve' else 'vetoed'} by {by}"
    return Entry(
        incident_id=incident_id,
        kind="decision",
        step=DECISION_STEP,
        what=what + (f": {reason}" if reason else ""),
        decided_by=f"person:{by}" if source != "watchdog" else "watchdog",
        result="ok",
        data={"decision": decision, "by": by, "reason": reason, "source": source},
    )


def decision_of(entries: Sequence[Entry]) -> Decision | None:
    """The newest approve/veto decision journaled for the incident, if any."""
    for e in sorted(entries, key=lambda e: e.sort_key(), reverse=True):
        if e.kind == "decision" and e.step == DECISION_STEP:
            d = e.data.get("decision")
            if d in ("approve", "veto"):
                return Decision(d, str(e.data.get("by", "")), str(e.data.get("reason", "")), e.at)
    return None


def automatic(decided_by: str, event_id: str = "") -> bool:
    """Whether a run was started by the automation or the watchdog (not by a person)."""
    who = decided_by.lower()
    return bool(event_id) or who.startswith("automation") or who.startswith("watchdog")


def duplicate_of(me: RunInfo, others: Sequence[RunInfo]) -> RunInfo | None:
    """Another run for the same incident that makes this one a duplicate: running, paused or
    completed; of two running at once, the one created first is kept."""
    for o in sorted(others, key=lambda r: (r.created, r.id)):
        if o.id == me.id or o.state not in ACTIVE_STATES:
            continue
        if o.state == "COMPLETED" or (o.created, o.id) < (me.created, me.id):
            return o
    return None


def decide(
    *,
    incident_id: str,
    incident: Incident | None,
    journal_readable: bool,
    entries: Sequence[Entry],
    automatic_run: bool,
    me: RunInfo | None,
    others: Sequence[RunInfo],
    now: float,
    stale_after_s: float,
    veto_s: float,
) -> GateDecision:
    """The gate's verdict for one run; see the module docstring."""
    if me is not None and automatic_run and now - me.created > stale_after_s:
        return GateDecision(
            "cancel",
            f"stale: scheduled {now - me.created:.0f}s ago (more than {stale_after_s:g}s);"
            " an emergency run is never executed late",
        )
    if incident_id and journal_readable and incident is None and automatic_run:
        return GateDecision(
            "cancel",
            f"incident {incident_id} is unknown to the journal (a run left over from another"
            " world must never move traffic)",
        )
    if incident is not None and not incident.is_open:
        return GateDecision("cancel", f"incident {incident.id} is already {incident.status}")
    if me is not None and automatic_run:
        dup = duplicate_of(me, others)
        if dup is not None:
            return GateDecision(
                "duplicate",
                f"another rollback run ({dup.id}, {dup.state.lower()}) already handles"
                f" incident {incident_id}: this run does nothing",
            )
    if incident is None or not automatic_run:
        return GateDecision("proceed", "not an automatic P1 decision")
    decision = decision_of(entries)
    if decision is not None and decision.decision == "veto":
        return GateDecision(
            "vetoed",
            f"vetoed by {decision.by}" + (f": {decision.reason}" if decision.reason else ""),
        )
    if incident.severity.rank <= Severity.P0.rank:
        return GateDecision("proceed", f"{incident.severity.value}: automation decides")
    if decision is not None:
        return GateDecision("proceed", f"approved by {decision.by}")
    if veto_s <= 0:
        return GateDecision("proceed", "P1 with no veto window: immediate")
    return GateDecision("wait", f"P1: the on-call engineer has {veto_s:g}s to veto", veto_s)


def run_info(run: Any) -> RunInfo:
    """A RunInfo from a Prefect flow run object (duck-typed: id, state_type, created)."""
    state = getattr(run, "state_type", None) or getattr(getattr(run, "state", None), "type", "")
    name = getattr(state, "name", None) or str(state or "")
    created = getattr(run, "created", None) or getattr(run, "expected_start_time", None)
    ts = created.timestamp() if isinstance(created, datetime) else 0.0
    return RunInfo(str(run.id), name.upper(), ts)
