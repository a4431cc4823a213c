"""Post-incident review follow-ups (runbook: "Post-Incident Review Process": 24 h, 72 h, 1 week).

- `schedule_followups(config_path, incident_id)`: one flow run of the `incident-followup`
  deployment per review, scheduled at the incident's detection time + 24 h / 72 h / 1 week (now,
  if that has passed), through `run_deployment(..., scheduled_time=..., timeout=0)`. Idempotent:
  the idempotency key is `<incident>:<window>` and a review already scheduled in the journal is
  not scheduled again. `incident_report` calls it.
- `incident_followup` (the deployment's flow, run at its time): posts the review's checklist as a
  markdown artifact, notifies the owner (the contact who acknowledged the incident, else the
  primary on-call) through their channels, and journals `followup posted`.
- `complete_followup`: a person records a review as done (`tbs-emergency followup done INCIDENT
  WINDOW --by NAME`). When all three are done the incident's review closes: a `closed` entry is
  journaled (and a `resolved` one if the incident was still open), and the report is rendered
  again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from tasks.common import settings_for
from tasks.incident import journal, journal_for, sync_index
from tasks.notify import addressed, deliver
from tbs_emergency.connectors.base import Notification
from tbs_emergency.domain.incident import RESOLVED, Entry, Incident, IncidentId
from tbs_emergency.errors import NotFound
from tbs_emergency.validation.followups import (
    CLOSED,
    FOLLOWUP,
    WINDOWS,
    Window,
    all_done,
    checklist_markdown,
    is_closed,
    review,
    schedule_time,
    states,
)

DEPLOYMENT = "incident_followup/incident-followup"


def _incident(config_path: str | None, incident_id: str) -> tuple[Incident, list[Entry]]:
    j = journal_for(config_path)
    entries = j.entries(incident_id)
    inc = Incident.from_entries(entries)
    if inc is None:
        raise NotFound("s3", f"read incident {incident_id}", "the incident has no journal")
    return inc, entries


def owner_of(settings: Any, incident: Incident) -> list[Any]:
    """Who owns the follow-ups: the contact who acknowledged the incident, else the primary
    on-call contacts."""
    if incident.acknowledged_by:
        named = [c for c in settings.contacts if c.name == incident.acknowledged_by]
        if named:
            return named
    return [c for c in settings.contacts if c.role == "primary"]


DRILL = "drill"


def is_drill(entries: list[Entry]) -> bool:
    """A drill's incident (marked by the drill that caused it): it gets no review runs."""
    return any(e.kind == DRILL for e in entries)


def schedule_followups(
    config_path: str | None,
    incident_id: str,
    deployment: str = DEPLOYMENT,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Schedule the three review runs (skipping those the journal says are scheduled); what was
    done per window. A failure to schedule is returned, never raised."""
    from prefect.deployments import run_deployment

    now = now or datetime.now(UTC)
    inc, entries = _incident(config_path, incident_id)
    if is_drill(entries):
        return [
            {"window": w, "scheduled": False, "skipped": True, "note": "drill incident"}
            for w in WINDOWS
        ]
    st = states(inc.opened_at, entries)
    out = []
    for w in WINDOWS:
        if st[w].scheduled or st[w].done:
            out.append(
                {
                    "window": w,
                    "scheduled": True,
                    "flow_run_id": st[w].flow_run_id,
                    "note": "already " + st[w].status,
                }
            )
            continue
        when = schedule_time(inc.opened_at, w, now)
        try:
            run = run_deployment(
                deployment,
                parameters={
                    "params": {"incident_id": incident_id, "window": w, "config_path": config_path}
                },
                scheduled_time=when,
                timeout=0,
                as_subflow=False,
                idempotency_key=f"{incident_id}:{w}",
                flow_run_name=f"followup-{w}-{incident_id}",
                tags=["tbs", "followup"],
            )
        except Exception as exc:
            out.append(
                {"window": w, "scheduled": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
            )
            journal(
                config_path,
                Entry(
                    incident_id=incident_id,
                    kind=FOLLOWUP,
                    what=f"{w} follow-up NOT scheduled",
                    result="failed",
                    data={
                        "followup": w,
                        "event": "schedule-failed",
                        "error": f"{type(exc).__name__}: {exc}"[:300],
                    },
                ),
            )
            continue
        run_id = str(run.id)  # type: ignore[union-attr]  # called synchronously: a FlowRun
        out.append({"window": w, "scheduled": True, "flow_run_id": run_id, "at": when.isoformat()})
        journal(
            config_path,
            Entry(
                incident_id=incident_id,
                kind=FOLLOWUP,
                what=f"{review(w).title} scheduled for {when:%Y-%m-%d %H:%M} UTC",
                result="ok",
                data={
                    "followup": w,
                    "event": "scheduled",
                    "flow_run_id": run_id,
                    "scheduled_for": when.isoformat(),
                },
            ),
        )
    return out


class FollowUpParams(BaseModel):
    incident_id: IncidentId
    window: Window
    config_path: str | None = None


@flow(name="incident_followup", log_prints=False, persist_result=False)
def incident_followup(params: FollowUpParams) -> dict[str, Any]:
    """Post the review's checklist and notify its owner (runs at incident time + 24h/72h/1w)."""
    log = get_run_logger()
    cfg = params.config_path or None
    settings = settings_for(cfg)
    inc, entries = _incident(cfg, params.incident_id)
    st = states(inc.opened_at, entries)
    state = st[params.window]
    owners = owner_of(settings, inc)
    owner_name = ", ".join(c.name for c in owners) or None
    md = checklist_markdown(inc.id, params.window, state, owner_name, st)
    key = f"followup-{params.window}-{inc.id}".lower().replace("_", "-")[:100]
    create_markdown_artifact(key=key, markdown=md, description=f"{state.title}: {inc.id}")
    deliveries = []
    if is_drill(entries):
        log.info("%s was caused by a drill: no review, nobody notified", inc.id)
    elif state.done:
        log.info("%s for %s already done by %s", state.title, inc.id, state.done_by)
    else:
        r = review(params.window)
        base = Notification(
            subject=f"{r.title} due for incident {inc.id}",
            body=(
                f"{r.title} for incident {inc.id} ({inc.trigger}) is due"
                f" {state.due_at:%Y-%m-%d %H:%M} UTC. Checklist: "
                + "; ".join(r.items)
                + f". When done: tbs-emergency followup done {inc.id} {params.window} --by NAME"
            ),
            severity="P2",
            incident_id=inc.id,
            extra={"template": "followup", "followup": params.window},
        )
        for c in owners:
            for ch in c.channels:
                if ch not in settings.channels:
                    continue
                state_ = deliver(cfg, ch, addressed(cfg, ch, c, base), return_state=True)
                ok = state_.is_completed()
                detail = (state_.result() or {}).get("detail", "") if ok else state_.message
                deliveries.append({"contact": c.name, "channel": ch, "ok": ok, "detail": detail})
        if not owners:
            log.error(
                "no owner for the %s review of %s: no primary on-call contact",
                params.window,
                inc.id,
            )
    journal(
        cfg,
        Entry(
            incident_id=inc.id,
            kind=FOLLOWUP,
            what=f"{state.title} checklist posted"
            + (f"; owner {owner_name} notified" if deliveries else ""),
            result="ok" if state.done or any(d["ok"] for d in deliveries) else "failed",
            data={
                "followup": params.window,
                "event": "posted",
                "deliveries": deliveries,
                "owner": owner_name,
            },
        ),
    )
    return {
        "incident_id": inc.id,
        "window": params.window,
        "status": state.status,
        "owner": owner_name,
        "deliveries": deliveries,
        "artifact": key,
    }


class CompleteFollowUpParams(BaseModel):
    incident_id: IncidentId
    window: Window
    by: str = Field(min_length=1)
    note: str = ""
    items: list[str] = Field(default_factory=list, description="Done items (default: all)")
    config_path: str | None = None


@flow(name="complete_followup", log_prints=False, persist_result=False)
def complete_followup(params: CompleteFollowUpParams) -> dict[str, Any]:
    """Record a review as done; close the incident's review when all three are done."""
    cfg = params.config_path or None
    inc, entries = _incident(cfg, params.incident_id)
    st = states(inc.opened_at, entries)
    recorded = False
    if not st[params.window].done:
        journal(
            cfg,
            Entry(
                incident_id=inc.id,
                kind=FOLLOWUP,
                what=f"{review(params.window).title} done",
                decided_by=params.by,
                result="ok",
                data={
                    "followup": params.window,
                    "event": "done",
                    "items": params.items or list(review(params.window).items),
                    "note": params.note,
                },
            ),
        )
        recorded = True
    inc, entries = _incident(cfg, params.incident_id)
    closed = is_closed(entries)
    newly_closed = False
    if all_done(inc.opened_at, entries) and not closed:
        if inc.is_open:
            journal(
                cfg,
                Entry(
                    incident_id=inc.id,
                    kind=RESOLVED,
                    decided_by=params.by,
                    result="ok",
                    what="incident resolved: every post-incident review is done",
                ),
            )
        journal(
            cfg,
            Entry(
                incident_id=inc.id,
                kind=CLOSED,
                decided_by=params.by,
                result="ok",
                what="incident closed: the 24 h, 72 h and 1 week reviews are done",
            ),
        )
        sync_index(cfg, inc.id)
        closed = newly_closed = True
    if recorded or newly_closed:
        from flows.incident_report import IncidentReportParams, incident_report

        incident_report(
            IncidentReportParams(incident_id=inc.id, config_path=cfg, schedule_followups=False)
        )
    pending = [w for w, s in states(inc.opened_at, _incident(cfg, inc.id)[1]).items() if not s.done]
    return {
        "incident_id": inc.id,
        "window": params.window,
        "recorded": recorded,
        "already_done": not recorded,
        "pending": pending,
        "closed": closed,
    }
