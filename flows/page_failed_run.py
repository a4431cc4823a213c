"""Page when an emergency flow run fails or crashes (prefect.yaml automation).

The automation "tbs: emergency run failed or crashed -> page" starts this flow for every
`prefect.flow-run.Failed` / `prefect.flow-run.Crashed` event of a run tagged `emergency` (the
rollbacks, the escalation, the security procedures' emergency runs): the on-call chain gets the
escalation message naming the run, its final state and its incident (from the run's
`incident:<id>` tag or its `rollback-<incident>` name), on every configured incident channel.
Each delivery is journaled against the incident when there is one. A delivery that fails is
reported in the result and fails this run (it is not tagged `emergency`: no loop).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from flows.notify import NotifyParams, notify
from tbs_emergency.domain.incident import is_incident_id


class PageParams(BaseModel):
    flow_run_id: str = Field("", description="prefect.flow-run.<id> of the failed run")
    flow_run_name: str = ""
    state: str = Field("", description="The event: prefect.flow-run.Failed | Crashed")
    tags: list[str] = Field(default_factory=list)
    config_path: str = ""
    dry_run: bool = Field(False, description="Say who would be paged; send nothing")


def incident_of(name: str, tags: list[str]) -> str:
    """The incident a run is about: its `incident:<id>` tag, else its `<prefix>-inc-...` name."""
    for t in tags:
        if t.startswith("incident:"):
            return t.split(":", 1)[1]
    i = name.find("inc-")
    return name[i:] if i >= 0 else ""


def _tags_of(flow_run_id: str) -> list[str]:
    from uuid import UUID

    from prefect.client.orchestration import get_client

    rid = flow_run_id.rsplit(".", 1)[-1]
    try:
        with get_client(sync_client=True) as client:
            return list(client.read_flow_run(UUID(rid)).tags or [])
    except Exception:
        return []


@flow(name="page_failed_run", log_prints=False, persist_result=False)
def page_failed_run(params: PageParams) -> dict[str, Any]:
    log = get_run_logger()
    tags = params.tags or _tags_of(params.flow_run_id)
    state = params.state.rsplit(".", 1)[-1] or "Failed"
    incident = incident_of(params.flow_run_name, tags)
    if incident and not is_incident_id(incident):
        # A page must never fail on a malformed tag: page without the incident, say what it was.
        log.warning("run tag/name names %r, not an incident id: paging without it", incident)
        incident = ""
    severity = next((t.split(":", 1)[1] for t in tags if t.startswith("severity:")), "P0")
    reason = (
        f"the emergency run {params.flow_run_name or params.flow_run_id} ended {state}:"
        " a person must check it (Prefect UI, `tbs-emergency status`)"
    )
    log.error("%s", reason)
    if params.dry_run:
        from tasks.notify import plan_messages
        from tbs_emergency.domain.templates import MessageContext

        ctx = MessageContext(incident_id=incident, severity=severity, reason=reason)
        planned = plan_messages(params.config_path or None, "escalation", ctx)
        channels = sorted({ch for ch, _ in planned})
        log.info("dry run: would page on %s", ", ".join(channels) or "no channel")
        return {"incident_id": incident, "state": state, "dry_run": True, "channels": channels}
    results = notify(
        NotifyParams(
            template="escalation",
            incident_id=incident,
            severity=severity,
            reason=reason,
            config_path=params.config_path,
        )
    )
    failed = [r for r in results if not r.get("ok")]
    if failed or not results:
        raise RuntimeError(
            "paging failed: "
            + ("; ".join(f"{r['channel']}: {r['detail']}" for r in failed) or "no channel")
        )
    return {"incident_id": incident, "state": state, "deliveries": results}
