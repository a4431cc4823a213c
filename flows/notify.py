"""Send one of the runbook's messages to everyone it addresses (the `notify` subflow).

Other flows call it (or do the same with `tasks.notify` directly when they must not wait):
template -> contacts by role -> their channels; every delivery is retried, journaled against the
incident when there is one, and reported; a failed delivery never raises.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from tasks.incident import journal_for
from tasks.notify import deliver, plan_messages
from tbs_emergency.domain.incident import Entry, OptionalIncidentId
from tbs_emergency.domain.templates import DEFAULT_TEMPLATES, MessageContext


class NotifyParams(BaseModel):
    template: str = Field(..., description=f"One of: {', '.join(DEFAULT_TEMPLATES)}")
    incident_id: OptionalIncidentId = ""
    severity: str = "P0"
    reason: str = ""
    config_path: str = ""


@flow(name="notify", log_prints=False, persist_result=False)
def notify(params: NotifyParams) -> list[dict[str, Any]]:
    cfg = params.config_path or None
    ctx = MessageContext(
        incident_id=params.incident_id, severity=params.severity, reason=params.reason
    )
    planned = plan_messages(cfg, params.template, ctx)
    futures = [(ch, deliver.submit(cfg, ch, msg)) for ch, msg in planned]
    results = []
    for ch, fut in futures:
        started = datetime.now(UTC)
        fut.wait()
        ok = fut.state.is_completed()
        detail = fut.state.result()["detail"] if ok else (fut.state.message or "failed")
        results.append({"channel": ch, "ok": ok, "detail": detail})
        if params.incident_id:
            try:
                journal_for(cfg).append(
                    Entry(
                        incident_id=params.incident_id,
                        kind="notification",
                        what=f"{params.template} notification via {ch}",
                        system=ch,
                        result="ok" if ok else "failed",
                        started_at=started,
                        finished_at=datetime.now(UTC),
                        data={"template": params.template, "detail": detail},
                    )
                )
            except Exception:  # the delivery result is returned either way
                results[-1]["journaled"] = False
    return results
