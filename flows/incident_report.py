"""The post-incident report (runbook: "Incident Documentation", "Required Documentation").

Rendered from the incident's journal only (so it can be rendered again at any time, from any
machine, with both databases gone): the domain's report (summary, response steps against their
budgets, timeline, actions, communication timeline, what could not be done) plus technical
details (root cause, systems affected, data impact, recovery actions), impact (users affected,
downtime, data integrity status, business impact), lessons learned to fill in, and the state of
the 24 h / 72 h / 1 week reviews. Stored as `incidents/<id>/report.md` beside the journal and as
a markdown artifact.

What a person knows and the journal does not (root cause, business impact, users affected,
lessons) can be given as parameters: they are journaled first (a `review-note` entry, decided by
`by`), so the next rendering keeps them. With `schedule_followups` (default) the three review
runs are scheduled (`flows.followups.schedule_followups`); a failure to schedule is reported in
the result and journaled, never fatal to the report.

Started: at the end of an incident (automation on `tbs.incident.resolved`, see
prefect.yaml), by `tbs-emergency report INCIDENT_ID`, and after each completed review.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from tasks.incident import journal, journal_for
from tbs_emergency.domain.incident import Entry, Incident, IncidentId
from tbs_emergency.domain.journal import report_key
from tbs_emergency.errors import NotFound
from tbs_emergency.validation.report import render_full_report


class IncidentReportParams(BaseModel):
    incident_id: IncidentId
    config_path: str | None = None
    schedule_followups: bool = True
    followup_deployment: str = "incident_followup/incident-followup"
    by: str = Field("person", description="Who gives the review notes below")
    root_cause: str | None = None
    users_affected: int | None = Field(None, ge=0)
    business_impact: str | None = None
    lessons: dict[str, str] = Field(
        default_factory=dict,
        description="what_worked, improvements, process, tools -> text",
    )


class IncidentReport(BaseModel):
    incident_id: str
    status: str
    key: str
    markdown: str
    followups: list[dict[str, Any]] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)


def _notes(params: IncidentReportParams) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if params.root_cause:
        data["root_cause"] = params.root_cause
    if params.users_affected is not None:
        data["users_affected"] = params.users_affected
    if params.business_impact:
        data["business_impact"] = params.business_impact
    if params.lessons:
        data["lessons"] = dict(params.lessons)
    return data


@flow(name="incident_report", log_prints=False, persist_result=False)
def incident_report(params: IncidentReportParams) -> IncidentReport:
    """Render the incident report from the journal; store it beside the journal and as an
    artifact; schedule the review follow-ups."""
    log = get_run_logger()
    cfg = params.config_path or None
    j = journal_for(cfg)
    notes = _notes(params)
    if notes:
        if Incident.from_entries(j.entries(params.incident_id)) is None:
            raise NotFound("s3", f"report incident {params.incident_id}", "it has no journal")
        journal(
            cfg,
            Entry(
                incident_id=params.incident_id,
                kind="review-note",
                decided_by=params.by,
                what="review notes: " + ", ".join(sorted(notes)),
                result="info",
                data=notes,
            ),
        )
    entries = j.entries(params.incident_id)
    inc = Incident.from_entries(entries)
    if inc is None:
        raise NotFound(
            "s3",
            f"report incident {params.incident_id}",
            "it has no journal (see `tbs-emergency status` for open incidents)",
        )
    problems: list[str] = []
    followups: list[dict[str, Any]] = []
    if params.schedule_followups:
        from flows.followups import schedule_followups

        try:
            followups = schedule_followups(cfg, inc.id, params.followup_deployment)
        except Exception as exc:
            problems.append(f"follow-ups not scheduled: {type(exc).__name__}: {exc}")
        problems += [
            f"{f['window']} follow-up not scheduled: {f.get('error')}"
            for f in followups
            if not f.get("scheduled") and not f.get("skipped")
        ]
        entries = j.entries(inc.id)  # the scheduling is in the journal: show it
    md = render_full_report(inc, entries, datetime.now(UTC))
    if problems:
        md += "\n## What the report could not do\n\n" + "\n".join(f"- {p}" for p in problems) + "\n"
    key = report_key(inc.id)
    try:
        j.store.put(key, md.encode(), {"content-type": "text/markdown"})
    except Exception as exc:
        problems.append(f"report not stored at {key}: {exc}")
        log.error("report not stored at %s: %s", key, exc)
    create_markdown_artifact(
        key=f"incident-report-{inc.id}".lower().replace("_", "-")[:100],
        markdown=md,
        description=f"Incident report {inc.id} ({inc.status})",
    )
    for p in problems:
        log.error("%s", p)
    return IncidentReport(
        incident_id=inc.id,
        status=inc.status,
        key=key,
        markdown=md,
        followups=followups,
        problems=problems,
    )
