"""Drill records, their history in object storage, RTO/RPO and the trend against the targets.

Layout (keys relative to the storage prefix):

    drills/history/<drill>/<timestamp>.json    one record per drill run, never rewritten
    drills/reports/<drill>/<timestamp>.md      the drill's report
    drills/charts/<drill>/<timestamp>.png      its RTO/RPO trend chart
    drills/acks/<drill id>/<contact>.json      acknowledgements of a communication drill

Targets (runbook): recovery within 15 minutes by the manual procedure (`drills.rto_manual_s`,
900 s) and within 180 s by the automated sequence (`drills.rto_automated_s`). The runbook sets no
RPO target: `drills.rpo_target_s` when configured, otherwise RPO is shown without a target.

RTO of a drill: from the simulated failure to confirmed recovery. RPO: how much data the
recovery would lose, i.e. from the newest restorable point (the backup's snapshot) to the
simulated failure. A drill that does not measure one of them leaves it None.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

DrillKind = Literal[
    "rollback", "communication", "recovery", "contact_verification", "quarterly_review"
]
DRILLS: tuple[DrillKind, ...] = (
    "rollback",
    "communication",
    "recovery",
    "contact_verification",
    "quarterly_review",
)
HISTORY = "drills/history"
REPORTS = "drills/reports"
CHARTS = "drills/charts"
ACKS = "drills/acks"


def stamp(at: datetime) -> str:
    """`20250124T100000123Z`: sortable, millisecond resolution, UTC."""
    at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
    return at.strftime("%Y%m%dT%H%M%S") + f"{at.microsecond // 1000:03d}Z"


def drill_id(drill: str, at: datetime) -> str:
    return f"drill-{drill.replace('_', '-')}-{stamp(at)}"


def history_key(drill: str, at: datetime) -> str:
    return f"{HISTORY}/{drill}/{stamp(at)}.json"


def report_key(drill: str, at: datetime) -> str:
    return f"{REPORTS}/{drill}/{stamp(at)}.md"


def chart_key(drill: str, at: datetime) -> str:
    return f"{CHARTS}/{drill}/{stamp(at)}.png"


_SAFE = re.compile(r"[^a-z0-9._-]+")


def ack_key(drill_run_id: str, contact: str) -> str:
    return f"{ACKS}/{drill_run_id}/{_SAFE.sub('-', contact.lower()).strip('-') or 'x'}.json"


class Phase(BaseModel):
    """One timed phase of a drill (seconds from the drill's start)."""

    name: str
    start_s: float | None = None
    end_s: float | None = None
    ok: bool = True
    detail: str = ""

    @property
    def duration_s(self) -> float | None:
        if self.start_s is None or self.end_s is None:
            return None
        return round(self.end_s - self.start_s, 3)


class DrillRecord(BaseModel):
    """What one drill run did and measured. Stored as JSON in the history."""

    drill: DrillKind
    id: str
    started_at: datetime
    finished_at: datetime
    target: str = "sandbox"
    environment: str | None = None
    ok: bool
    rto_s: float | None = None
    rto_target_s: float | None = None
    rpo_s: float | None = None
    rpo_target_s: float | None = None
    time_scale: float = 1.0
    phases: list[Phase] = Field(default_factory=list)
    findings: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)
    report_key: str | None = None
    chart_key: str | None = None
    flow_run_id: str | None = None

    @property
    def rto_met(self) -> bool | None:
        if self.rto_s is None or self.rto_target_s is None:
            return None
        return self.rto_s <= self.rto_target_s

    @property
    def rpo_met(self) -> bool | None:
        if self.rpo_s is None or self.rpo_target_s is None:
            return None
        return self.rpo_s <= self.rpo_target_s

    @property
    def key(self) -> str:
        return history_key(self.drill, self.started_at)


def rto_target_for(drill: str, rto_manual_s: float, rto_automated_s: float) -> float | None:
    """The automated rollback is held to 180 s; a restore to the 15-minute manual target."""
    if drill == "rollback":
        return rto_automated_s
    if drill == "recovery":
        return rto_manual_s
    return None


def rpo_seconds(restorable_point: datetime | None, failure_at: datetime) -> float | None:
    """Data at risk: from the newest restorable point to the (simulated) failure; never < 0."""
    if restorable_point is None:
        return None
    return max(0.0, round((failure_at - restorable_point).total_seconds(), 3))


# --------------------------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------------------------


class _Store(Protocol):
    def put(self, key: str, data: bytes, metadata: Any = None) -> Any: ...

    def get(self, key: str) -> bytes: ...

    def list(self, prefix: str) -> Any: ...


def save(store: _Store, record: DrillRecord) -> str:
    """Write the record under its own key (timestamped: never overwrites another run)."""
    store.put(
        record.key,
        record.model_dump_json(indent=2).encode(),
        {"content-type": "application/json"},
    )
    return record.key


def load_history(
    store: _Store, drills: Iterable[str] = DRILLS, problems: list[str] | None = None
) -> list[DrillRecord]:
    """Every stored record of these drills, oldest first. Unreadable records are skipped and,
    when `problems` is given, named there."""
    out: list[DrillRecord] = []
    for drill in drills:
        for obj in store.list(f"{HISTORY}/{drill}/"):
            if not obj.key.endswith(".json"):
                continue
            try:
                out.append(DrillRecord.model_validate(json.loads(store.get(obj.key))))
            except Exception as exc:
                if problems is not None:
                    problems.append(f"{obj.key}: unreadable drill record ({type(exc).__name__})")
    return sorted(out, key=lambda r: r.started_at)


def latest(records: Sequence[DrillRecord], drill: str) -> DrillRecord | None:
    runs = [r for r in records if r.drill == drill]
    return max(runs, key=lambda r: r.started_at) if runs else None


class TrendPoint(BaseModel):
    drill: str
    id: str
    at: datetime
    ok: bool
    rto_s: float | None
    rto_target_s: float | None
    rto_met: bool | None
    rpo_s: float | None
    rpo_target_s: float | None
    rpo_met: bool | None
    time_scale: float


def trend(records: Sequence[DrillRecord], last: int = 12) -> list[TrendPoint]:
    """The last `last` runs that measured RTO or RPO, oldest first (what the chart plots)."""
    measured = [r for r in records if r.rto_s is not None or r.rpo_s is not None]
    measured = sorted(measured, key=lambda r: r.started_at)[-last:]
    return [
        TrendPoint(
            drill=r.drill,
            id=r.id,
            at=r.started_at,
            ok=r.ok,
            rto_s=r.rto_s,
            rto_target_s=r.rto_target_s,
            rto_met=r.rto_met,
            rpo_s=r.rpo_s,
            rpo_target_s=r.rpo_target_s,
            rpo_met=r.rpo_met,
            time_scale=r.time_scale,
        )
        for r in measured
    ]


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def _met(v: bool | None) -> str:
    return "-" if v is None else ("met" if v else "**missed**")


def trend_table(points: Sequence[TrendPoint]) -> list[dict[str, Any]]:
    """The numbers behind the chart, for those who prefer them (table artifact rows)."""
    return [
        {
            "drill": p.drill,
            "run": p.id,
            "at (UTC)": p.at.strftime("%Y-%m-%d %H:%M"),
            "ok": "yes" if p.ok else "no",
            "RTO (s)": _s(p.rto_s),
            "RTO target (s)": _s(p.rto_target_s),
            "RTO": _met(p.rto_met).replace("*", ""),
            "RPO (s)": _s(p.rpo_s),
            "RPO target (s)": _s(p.rpo_target_s),
            "RPO": _met(p.rpo_met).replace("*", ""),
            "time scale": f"{p.time_scale:g}",
        }
        for p in points
    ]


def trend_markdown(points: Sequence[TrendPoint]) -> str:
    if not points:
        return "_No drill has measured RTO or RPO yet._\n"
    lines = [
        "| drill | run | at (UTC) | ok | RTO (s) | target | RTO | RPO (s) | target | RPO |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        lines.append(
            f"| {p.drill} | {p.id} | {p.at.strftime('%Y-%m-%d %H:%M')} |"
            f" {'yes' if p.ok else 'no'} | {_s(p.rto_s)} | {_s(p.rto_target_s)} |"
            f" {_met(p.rto_met)} | {_s(p.rpo_s)} | {_s(p.rpo_target_s)} | {_met(p.rpo_met)} |"
        )
    return "\n".join(lines) + "\n"


def phases_markdown(phases: Sequence[Phase]) -> str:
    if not phases:
        return "_No phases recorded._\n"
    lines = [
        "| phase | ok | start (s) | end (s) | took (s) | detail |",
        "|---|---|---|---|---|---|",
    ]
    for p in phases:
        lines.append(
            f"| {p.name} | {'yes' if p.ok else '**no**'} | {_s(p.start_s)} | {_s(p.end_s)} |"
            f" {_s(p.duration_s)} | {p.detail.replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"


def report_markdown(
    record: DrillRecord,
    points: Sequence[TrendPoint],
    chart: str | None = None,
    extra: str = "",
) -> str:
    """The drill report: outcome, phases, findings, the trend (chart and table)."""
    took = (record.finished_at - record.started_at).total_seconds()
    lines = [
        f"# {record.drill.replace('_', ' ')} drill {record.id}: "
        + ("OK" if record.ok else "FAILED"),
        "",
        "| | |",
        "|---|---|",
        f"| Target | {record.target}{f' ({record.environment})' if record.environment else ''} |",
        f"| Started | {record.started_at.isoformat()} |",
        f"| Took | {took:.1f} s |",
        f"| RTO | {_s(record.rto_s)} s"
        f" (target {_s(record.rto_target_s)} s: {_met(record.rto_met)}) |",
        f"| RPO | {_s(record.rpo_s)} s"
        f" (target {_s(record.rpo_target_s)} s: {_met(record.rpo_met)}) |",
        f"| Time scale | {record.time_scale:g} |",
        "",
    ]
    if record.problems:
        lines += ["## What could not be done", ""] + [f"- {p}" for p in record.problems] + [""]
    if record.findings:
        lines += ["## Findings", ""] + [f"- {f}" for f in record.findings] + [""]
    lines += ["## Phases", "", phases_markdown(record.phases)]
    if extra:
        lines += [extra.rstrip(), ""]
    lines += ["## RTO and RPO trend against the runbook's targets", ""]
    if chart:
        lines += [chart, ""]
    lines += [trend_markdown(points)]
    return "\n".join(lines)
