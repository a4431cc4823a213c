"""Flashback (runbook: `./mysql-rollback-transactions.sh --since="..." --verify`).

Undoes the row changes (INSERT, UPDATE, DELETE) made since T on chosen tables, from the ROW
binlog's before-images. `dry_run` prints the inverse statements and changes nothing.

Guarantees: the whole flashback is one transaction, applied or not at all. Before applying, the
rows it rewrites are locked and the binlog after the plan is checked: if anyone changed one of
those rows since the plan, nothing is applied and the conflicts are reported. Every row count
must move exactly as planned, else it is rolled back. The plan and the outcome are journaled
(`flashback/<id>/journal.json`, and the incident's journal when given); the applied transaction
is tagged in the binlog, so a rerun with the same id never applies it twice, and a later
flashback refuses a window that contains it. A DDL or TRUNCATE in the window on a chosen table
is refused (point-in-time recovery is the tool for that), and so is a chosen table on a
non-transactional engine (MyISAM, Aria, MEMORY: ENGINE in information_schema.TABLES), before
anything is read from the binlog or written.

Needs: the admin account with REPLICATION SLAVE (reads the binlog), BINLOG MONITOR, BINLOG
REPLAY (applies row images) and the table privileges; binlog_format=ROW, binlog_row_image=FULL.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed
from pydantic import BaseModel, Field, field_validator

from tasks.backup import utcnow
from tasks.recovery import (
    apply_flashback,
    plan_flashback,
    read_flashback_journal,
    store_record,
    write_flashback_journal,
)
from tasks.rollback import active_traffic
from tbs_emergency.domain.incident import MaybeIncidentId
from tbs_emergency.recovery.flashback import FlashbackPlan
from tbs_emergency.recovery.ids import new_id, validate_id
from tbs_emergency.recovery.reconcile import RecoveryRecord, render_markdown
from tbs_emergency.timestamps import Instant


class FlashbackParams(BaseModel):
    config_path: str | None = None
    environment: str | None = None  # None: the environment that has traffic
    since: Instant  # with a time zone (a naive timestamp is refused)
    tables: list[str] = Field(min_length=1)
    dry_run: bool = False
    # Given: rerun (or finish) that flashback; it is never applied twice.
    flashback_id: str | None = None
    lock_wait_s: float = Field(10.0, gt=0)
    incident_id: MaybeIncidentId = None

    @field_validator("flashback_id")
    @classmethod
    def _valid(cls, v: str | None) -> str | None:
        return validate_id(v, "flashback id") if v is not None else None


class FlashbackReport(BaseModel):
    flashback_id: str
    ok: bool
    dry_run: bool
    applied: bool = False
    already_applied: bool = False
    plan: list[str] = Field(default_factory=list)
    statements: list[str] = Field(default_factory=list)
    refusals: list[str] = Field(default_factory=list)
    # refused for what was asked (a non-transactional table), not a failure: the CLI exits 2
    bad_input: bool = False
    conflicts: list[str] = Field(default_factory=list)
    counts: dict[str, Any] = Field(default_factory=dict)
    journal: str | None = None
    undo_hint: str | None = None
    seconds: float = 0.0


def _journal_entry(
    cfg: str | None, incident_id: str | None, what: str, result: str, data: dict[str, Any]
) -> None:
    if not incident_id:
        return
    from tasks.incident import journal
    from tbs_emergency.domain.incident import Entry

    journal(
        cfg,
        Entry(
            incident_id=incident_id,
            kind="action",
            what=what,
            system="mysql",
            decided_by="person",
            result=result,
            data=data,
        ),
    )  # type: ignore[arg-type]


@flow(name="flashback", log_prints=False)
def flashback(params: FlashbackParams) -> Any:
    """Undo the DML since T on chosen tables, in one journaled transaction (or show how)."""
    log = get_run_logger()
    started = time.monotonic()
    cfg = params.config_path
    env = params.environment or active_traffic(cfg)
    fid = params.flashback_id or new_id(utcnow())
    report = FlashbackReport(flashback_id=fid, ok=False, dry_run=params.dry_run)
    previous = read_flashback_journal(cfg, fid) if params.flashback_id else None
    if previous is not None and previous.get("state") == "applied":
        report.ok = report.applied = report.already_applied = True
        report.plan = list(previous.get("plan_lines", []))
        log.info("flashback %s was applied already: nothing to do", fid)
        return report
    if previous is not None and previous.get("state") in ("planned", "applying", "failed"):
        plan = FlashbackPlan.model_validate(previous["plan"])  # exactly what was shown
    else:
        plan = plan_flashback(cfg, env, fid, params.since, params.tables)
    report.plan = plan.describe()
    report.statements = plan.statements
    report.refusals = plan.refusals
    for line in report.plan:
        log.info("plan: %s", line)
    if plan.refusals:
        report.bad_input = bool(plan.non_transactional)
        return Failed(message="refused: " + "; ".join(plan.refusals), data=report)
    if params.dry_run:
        # Kept so that applying this id applies exactly what was shown (plus a conflict check
        # for anything that changed those rows since).
        report.journal = write_flashback_journal(
            cfg,
            fid,
            {
                "flashback_id": fid,
                "state": "planned",
                "planned_at": utcnow().isoformat(),
                "environment": env,
                "plan": plan.model_dump(mode="json"),
                "plan_lines": report.plan,
            },
        )
        report.ok = True
        return report
    if plan.total_changes == 0:
        report.ok = True
        log.info("no row changes since %s on %s: nothing to undo", plan.since, plan.tables)
        return report
    doc: dict[str, Any] = {
        "flashback_id": fid,
        "state": "applying",
        "planned_at": utcnow().isoformat(),
        "environment": env,
        "plan": plan.model_dump(mode="json"),
        "plan_lines": report.plan,
    }
    report.journal = write_flashback_journal(cfg, fid, doc)
    _journal_entry(
        cfg, params.incident_id, f"flashback {fid} applying", "info", {"plan": report.plan}
    )
    record = RecoveryRecord(
        recovery_id=fid,
        kind="flashback",
        started_at=utcnow(),
        source={
            "database": plan.database,
            "since": plan.since.isoformat(),
            "until": str(plan.until),
        },
        target={"tables": ", ".join(plan.tables)},
        plan=report.plan,
    )
    try:
        outcome = apply_flashback(cfg, env, plan, params.lock_wait_s)
    except Exception as exc:
        doc["state"] = "failed"
        doc["error"] = str(exc)
        write_flashback_journal(cfg, fid, doc)
        record.error = str(exc)
        record.add("needs-person", "mysql", f"flashback failed, nothing was applied: {exc}")
        store_record(cfg, record)
        _journal_entry(
            cfg, params.incident_id, f"flashback {fid} failed", "failed", {"error": str(exc)}
        )
        raise
    report.applied = outcome.applied
    report.already_applied = outcome.already_applied
    report.conflicts = outcome.conflicts
    report.counts = outcome.counts
    doc["finished_at"] = utcnow().isoformat()
    doc["outcome"] = outcome.model_dump(mode="json")
    doc["state"] = "applied" if outcome.applied else "refused"
    if outcome.applied:
        pos = outcome.position_after
        report.undo_hint = (
            f"this flashback is itself in the binlog (ends at {pos[0]}:{pos[1]}): to undo it,"
            f" run a flashback --since {doc['planned_at']} on the same tables"
            if pos
            else None
        )
        for t in plan.tables:
            c = plan.changes.get(t, {})
            record.add(
                "repaired",
                "mysql",
                f"undid {c.get('insert', 0)} insert(s),"
                f" {c.get('update', 0)} update(s), {c.get('delete', 0)} delete(s)",
                table=t,
            )
        record.ok = True
    else:
        for c in outcome.conflicts:
            record.add("needs-person", "mysql", c)
    write_flashback_journal(cfg, fid, doc)
    record.finished_at = utcnow()
    store_record(cfg, record)
    _journal_entry(
        cfg,
        params.incident_id,
        f"flashback {fid} {doc['state']}",
        "ok" if outcome.applied else "failed",
        {"counts": outcome.counts, "conflicts": outcome.conflicts},
    )
    create_markdown_artifact(
        markdown=render_markdown(record), key="flashback", description=f"flashback {fid}"
    )
    report.ok = outcome.applied
    report.seconds = round(time.monotonic() - started, 3)
    if not report.ok:
        return Failed(message="not applied: " + "; ".join(outcome.conflicts), data=report)
    return report
