"""The reconciliation report after a recovery: what differed, what was repaired, what needs a
person. Every recovery flow records its findings; `reconcile` adds a comparison of the
recovered data with the live data and renders the report.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

FindingKind = Literal["differed", "repaired", "needs-person", "verified"]


class Finding(BaseModel):
    kind: FindingKind
    system: str  # mysql, heavydb, s3
    table: str | None = None
    detail: str
    rows: int | None = None
    sample: list[Any] = Field(default_factory=list)


class RecoveryRecord(BaseModel):
    """What one recovery run did, as its flow records it (recoveries/<id>/report.json)."""

    recovery_id: str
    kind: Literal["restore", "point-in-time-recovery", "flashback", "heavydb-recovery"]
    started_at: datetime
    finished_at: datetime | None = None
    ok: bool = False
    target: dict[str, Any] = Field(default_factory=dict)
    source: dict[str, Any] = Field(default_factory=dict)
    plan: list[str] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    error: str | None = None

    def add(self, kind: FindingKind, system: str, detail: str, **kw: Any) -> Finding:
        f = Finding(kind=kind, system=system, detail=detail, **kw)
        self.findings.append(f)
        return f

    @property
    def needs_person(self) -> list[Finding]:
        return [f for f in self.findings if f.kind == "needs-person"]


def render_markdown(record: RecoveryRecord, comparison: list[Finding] | None = None) -> str:
    """The report people read (also stored as a Prefect markdown artifact)."""
    findings = list(record.findings) + list(comparison or [])
    status = "succeeded" if record.ok else "FAILED" if record.error else "incomplete"
    lines = [
        f"# Recovery {record.recovery_id}: {record.kind} {status}",
        "",
        f"- started: {record.started_at.isoformat()}",
        f"- finished: {record.finished_at.isoformat() if record.finished_at else '-'}",
    ]
    for k, v in {**record.source, **{f"target {k}": v for k, v in record.target.items()}}.items():
        lines.append(f"- {k}: {v}")
    if record.error:
        lines += ["", f"**Error:** {record.error}"]
    if record.plan:
        lines += ["", "## Plan", "", *[f"- {p}" for p in record.plan]]
    titles = {
        "needs-person": "Needs a person",
        "differed": "What differed",
        "repaired": "What was repaired",
        "verified": "What was verified",
    }
    for kind in ("needs-person", "differed", "repaired", "verified"):
        group = [f for f in findings if f.kind == kind]
        lines += ["", f"## {titles[kind]}", ""]
        if not group:
            lines.append("- nothing")
        for f in group:
            where = f"{f.system}" + (f" {f.table}" if f.table else "")
            rows = f" ({f.rows:,} rows)" if f.rows is not None else ""
            sample = f" e.g. {', '.join(map(str, f.sample[:5]))}" if f.sample else ""
            lines.append(f"- **{where}**{rows}: {f.detail}{sample}")
    return "\n".join(lines) + "\n"
