"""The incident journal from flows: open, append, render the report, close.

Every journal entry is also published as a Prefect event (`tbs.incident.<kind>`, resource
`tbs.incident.<id>`), so the Prefect UI shows the incident's timeline beside the flow runs.
Payloads carry what/result/step/system only, never connection details or credentials.
"""

from __future__ import annotations

import atexit
import threading
from functools import lru_cache
from typing import Any

from prefect import get_run_logger, task

from tasks.common import settings_for
from tbs_emergency.connectors import Connectors
from tbs_emergency.domain.incident import Entry, Incident
from tbs_emergency.domain.journal import Journal, report_key
from tbs_emergency.domain.report import render_report


def incident_resource(incident_id: str, **labels: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"tbs.incident.{incident_id}",
        "prefect.resource.name": incident_id,
        "tbs.incident.id": incident_id,
        **labels,
    }


def publish_entry(e: Entry) -> None:
    from prefect.events import emit_event

    emit_event(
        f"tbs.incident.{e.kind}",
        resource=incident_resource(e.incident_id),
        payload={
            "seq": e.seq,
            "what": e.what,
            "result": e.result,
            "step": e.step,
            "system": e.system,
            "decided_by": e.decided_by,
        },
    )


@lru_cache(maxsize=8)
def connectors_for(config_path: str | None) -> Connectors:
    """One Connectors per process and configuration (connections are reused across tasks),
    closed when the process exits: a HeavyDB session left open stays on the server until it
    expires."""
    conn = Connectors(settings_for(config_path))
    atexit.register(_close_at_exit, conn)
    return conn


def _close_at_exit(conn: Connectors, timeout_s: float = 5.0) -> None:
    """Close, but never hold the process's exit longer than `timeout_s` (a server that stopped
    answering, or a connection another thread is still using)."""
    t = threading.Thread(target=conn.close, name="close-connections", daemon=True)
    t.start()
    t.join(timeout_s)


@lru_cache(maxsize=8)
def journal_for(config_path: str | None, publish: bool = True) -> Journal:
    """One journal per process and configuration, with the configured local spool: a store
    that is down never fails an append (see tbs_emergency.domain.journal)."""
    return Journal.configured(
        connectors_for(config_path).store(),
        settings_for(config_path).journal,
        on_append=publish_entry if publish else None,
    )


@task(name="journal-open-incident", retries=3, retry_delay_seconds=[0.5, 1, 2], timeout_seconds=30)
def open_incident(config_path: str | None, incident: Incident) -> tuple[Incident, bool]:
    """Open (or find) the incident in the journal; (incident as journaled, newly opened)."""
    return journal_for(config_path).open(incident)


@task(name="journal-append", retries=3, retry_delay_seconds=[0.5, 1, 2], timeout_seconds=30)
def journal(config_path: str | None, entry: Entry) -> Entry:
    """Append one entry to the incident's journal (a new object; never overwrites)."""
    return journal_for(config_path).append(entry)


@task(name="journal-read", retries=2, retry_delay_seconds=1, timeout_seconds=30)
def read_incident(config_path: str | None, incident_id: str) -> tuple[Incident | None, list[Entry]]:
    j = journal_for(config_path)
    entries = j.entries(incident_id)
    return Incident.from_entries(entries), entries


@task(name="journal-sync-index", retries=3, retry_delay_seconds=[0.5, 1, 2], timeout_seconds=30)
def sync_index(config_path: str | None, incident_id: str) -> Incident | None:
    """Rewrite `incidents/open/<id>.json` from the journal (delete it once closed)."""
    j = journal_for(config_path)
    inc = j.incident(incident_id)
    if inc is not None:
        j.sync_index(inc)
    return inc


@task(name="incident-report", retries=2, retry_delay_seconds=1, timeout_seconds=60)
def store_report(config_path: str | None, incident_id: str) -> dict[str, Any]:
    """Render the report from the journal, store it beside it and as a markdown artifact."""
    from prefect.artifacts import create_markdown_artifact

    j = journal_for(config_path)
    entries = j.entries(incident_id)
    inc = Incident.from_entries(entries)
    if inc is None:
        return {"stored": False, "reason": f"no journal for {incident_id}"}
    md = render_report(inc, entries)
    stored, reason = True, None
    try:
        j.store.put(report_key(incident_id), md.encode(), {"content-type": "text/markdown"})
    except Exception as exc:  # the store is down: the artifact still has it
        stored, reason = False, f"{type(exc).__name__}: {exc}"
        get_run_logger().warning("incident report not stored (%s); see the artifact", reason)
    create_markdown_artifact(
        markdown=md,
        key=f"incident-{incident_id}".lower().replace("_", "-")[:100],
        description=f"Incident report {incident_id}",
    )
    if not stored:
        return {"stored": False, "reason": reason, "markdown": md}
    return {"stored": True, "key": report_key(incident_id), "markdown": md}
