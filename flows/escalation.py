"""Escalation of an unacknowledged P0/P1 incident: primary -> secondary -> manager.

Started by the automation on `tbs.incident.opened` (severity P0 or P1). Pages each contact of
the chain when the previous one's response time has run out (`tbs_emergency.domain.escalation`,
times scaled by `triggers.time_scale`), until someone acknowledges, the incident is closed, or
the chain is exhausted.

Acknowledgement, any of:
- a Prefect input `Acknowledgement` sent to this flow run (`tbs-emergency ack INCIDENT --by NAME`
  sends it, and the Prefect UI can too);
- an `acknowledged` entry in the incident's journal (also written by `tbs-emergency ack`).

Each page is journaled (kind `page`, who and on which channel) and PagerDuty is told about
the acknowledgement, so its own escalation stops as well.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.input import RunInput
from pydantic import BaseModel

from tasks.common import settings_for
from tasks.incident import journal, journal_for, sync_index
from tasks.notify import addressed, deliver, pagerduty_event
from tbs_emergency.domain.escalation import due, next_page_at
from tbs_emergency.domain.incident import ACKNOWLEDGED, Entry, IncidentId
from tbs_emergency.domain.templates import MessageContext, render


class EscalationParams(BaseModel):
    incident_id: IncidentId
    config_path: str = ""
    max_wait_s: float = 3600.0


class Acknowledgement(RunInput):
    by: str
    note: str = ""


@flow(name="incident_escalation", log_prints=False, persist_result=False)
def incident_escalation(params: EscalationParams) -> dict[str, object]:
    """Page up the chain until acknowledged; returns who was paged and who acknowledged."""
    logger = get_run_logger()
    cfg = params.config_path or None
    settings = settings_for(cfg)
    j = journal_for(cfg)
    paged: set[str] = set()
    started = time.monotonic()
    acked_by: str | None = None
    while time.monotonic() - started < params.max_wait_s:
        inc = j.incident(params.incident_id)
        if inc is None or not inc.is_open:
            logger.info("incident %s closed; escalation ends", params.incident_id)
            break
        if inc.acknowledged_by:
            acked_by = inc.acknowledged_by
            break
        age = (datetime.now(UTC) - inc.opened_at).total_seconds()
        scale = settings.triggers.time_scale
        for page in due(settings.contacts, inc.severity, age, False, paged, scale):
            contact = next(c for c in settings.contacts if c.name == page.contact)
            msg = render(
                "immediate" if page.role == "primary" else "escalation",
                MessageContext(
                    incident_id=inc.id,
                    severity=inc.severity.value,
                    reason=f"unacknowledged after {age:.0f}s; paging {page.role}",
                ),
            )
            for ch in contact.channels:
                state = deliver(cfg, ch, addressed(cfg, ch, contact, msg), return_state=True)
                journal(
                    cfg,
                    Entry(
                        incident_id=inc.id,
                        kind="page",
                        what=f"paged {page.role} {contact.name} via {ch}",
                        system=ch,
                        decided_by="escalation policy",
                        result="ok" if state.is_completed() else "failed",
                        data={"role": page.role, "age_s": round(age, 1)},
                    ),
                )
            paged.add(page.contact)
        nxt = next_page_at(settings.contacts, inc.severity, paged, scale)
        wait = 5.0 if nxt is None else max(0.5, min(5.0, nxt - age))
        ack = Acknowledgement.receive(
            timeout=wait, poll_interval=min(1.0, wait), raise_timeout_error=False
        )
        got = next(iter(ack), None)
        if got is not None:
            acked_by = f"person:{got.by}"
            journal(
                cfg,
                Entry(
                    incident_id=inc.id,
                    kind=ACKNOWLEDGED,
                    what=f"acknowledged by {got.by}" + (f": {got.note}" if got.note else ""),
                    decided_by=acked_by,
                    result="ok",
                ),
            )
            break
    if acked_by:
        for name, ch in settings.channels.items():
            if ch.kind == "pagerduty" and not ch.block:
                pagerduty_event(cfg, name, "acknowledge", params.incident_id, return_state=True)
        sync_index(cfg, params.incident_id)
    return {"incident_id": params.incident_id, "paged": sorted(paged), "acknowledged_by": acked_by}
