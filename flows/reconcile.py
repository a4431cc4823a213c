"""Reconciliation after a recovery (runbook: "User Data Reconciliation").

Reads what a recovery run recorded (`recoveries/<id>/report.json`) and compares the recovered
data with the live data: for a MySQL point-in-time recovery or restore, row by row (key and row
checksum) per table; for a HeavyDB recovery, the recorded comparison with the archive. The
report says what differed, what was repaired and what needs a person; nothing is changed.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field, field_validator

from tasks.incident import connectors_for
from tasks.recovery import compare_mysql_tables, read_record
from tbs_emergency.recovery import layout
from tbs_emergency.recovery.ids import validate_id
from tbs_emergency.recovery.reconcile import Finding, render_markdown


class ReconcileParams(BaseModel):
    config_path: str | None = None
    recovery_id: str
    environment: str | None = None
    tables: list[str] = Field(default_factory=list)  # empty: every recovered table

    @field_validator("recovery_id")
    @classmethod
    def _valid(cls, v: str) -> str:
        return validate_id(v, "recovery id")


class ReconcileReport(BaseModel):
    recovery_id: str
    kind: str
    key: str
    differed: int
    repaired: int
    needs_person: int
    findings: list[Finding]
    markdown: str


@flow(name="reconcile", log_prints=False)
def reconcile(params: ReconcileParams) -> ReconcileReport:
    """Compare what a recovery produced with the live data; report, change nothing."""
    log = get_run_logger()
    cfg = params.config_path
    record = read_record(cfg, params.recovery_id)
    env = params.environment or str(record.source.get("environment") or "blue")
    comparison: list[Finding] = []
    if record.kind in ("point-in-time-recovery", "restore"):
        from tasks.backup import mysql_recovery

        target = record.target.get("database") or record.target.get("mysql database")
        if target:
            rec = mysql_recovery(cfg, env)
            live = rec.db.config.database
            tables = params.tables or rec.table_names(str(target))
            futures = [compare_mysql_tables.submit(cfg, env, live, str(target), t) for t in tables]
            for f in futures:
                comparison += f.result()
    findings = list(record.findings) + comparison
    md = render_markdown(record, comparison)
    doc: dict[str, Any] = {
        "recovery_id": record.recovery_id,
        "kind": record.kind,
        "findings": [f.model_dump(mode="json") for f in findings],
        "markdown": md,
    }
    import json

    key = layout.reconcile_key(record.recovery_id)
    connectors_for(cfg).store().put(key, json.dumps(doc, indent=1, default=str).encode())
    create_markdown_artifact(
        markdown=md, key="reconcile", description=f"reconciliation of {record.recovery_id}"
    )
    report = ReconcileReport(
        recovery_id=record.recovery_id,
        kind=record.kind,
        key=key,
        differed=sum(1 for f in findings if f.kind == "differed"),
        repaired=sum(1 for f in findings if f.kind == "repaired"),
        needs_person=sum(1 for f in findings if f.kind == "needs-person"),
        findings=findings,
        markdown=md,
    )
    log.info(
        "reconcile %s: %d differed, %d repaired, %d need a person",
        record.recovery_id,
        report.differed,
        report.repaired,
        report.needs_person,
    )
    return report
