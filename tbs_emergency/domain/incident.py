"""The incident record and the entries of its timeline.

An incident is opened by the first trigger that fires for an environment (or by a person) and
collects every action taken about it. Its state is never stored by overwriting: it is the fold
of its journal entries (`Incident.apply`), so the journal alone is the truth.

Identity: `incident_id(env, first_breach_at)` is deterministic, so the same breach seen twice
(a repeated event, a restarted watchdog) names the same incident, and a Prefect run started for
it twice finds the work already done.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from tbs_emergency.domain.severity import Severity, most_severe

Result = Literal["ok", "failed", "skipped", "started", "info"]
IncidentStatus = Literal["open", "escalated", "degraded", "resolved", "merged"]
# An incident in one of these still needs people or a rerun: `degraded` is a rollback that moved
# traffic but left a containment action undone (named in its journal), still open.
OPEN_STATUSES: tuple[str, ...] = ("open", "escalated", "degraded")

# Entry kinds that change the incident's state when folded.
OPENED = "opened"
SEVERITY = "severity"
ESCALATED = "escalated"
DEGRADED = "degraded"
REOPENED = "reopened"
RESOLVED = "resolved"
MERGED = "merged"
JOINED = "joined"
ACKNOWLEDGED = "acknowledged"


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(t: datetime | float) -> datetime:
    if isinstance(t, int | float):
        return datetime.fromtimestamp(t, UTC)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def incident_id(env: str, first_breach_at: datetime | float, salt: str = "") -> str:
    """`inc-20250124T100000Z-green-1a2b`: time of the first breach, environment, short hash.

    Breach times are truncated to the second, so the same breach always gives the same id.
    """
    at = as_utc(first_breach_at).replace(microsecond=0)
    stamp = at.strftime("%Y%m%dT%H%M%SZ")
    digest = hashlib.sha256(f"{env}|{stamp}|{salt}".encode()).hexdigest()[:4]
    return f"inc-{stamp}-{env}-{digest}"


# What the code makes: `incident_id()` (the environment part is a configured environment name or
# `all`) and the day's operations log of the CLI (`ops-YYYYMMDD`). Ids become object-key
# components of the journal, so nothing else is accepted from a person or an event.
_INCIDENT_ID_RE = re.compile(r"inc-\d{8}T\d{6}Z-[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*-[0-9a-f]{4}")
_OPS_LOG_RE = re.compile(r"ops-\d{8}")


def is_incident_id(value: object) -> bool:
    return isinstance(value, str) and bool(
        _INCIDENT_ID_RE.fullmatch(value) or _OPS_LOG_RE.fullmatch(value)
    )


def validate_incident_id(value: str) -> str:
    """The id itself, or ValueError naming it and what a valid one looks like."""
    if not is_incident_id(value):
        shown = value if isinstance(value, str) else type(value).__name__
        raise ValueError(
            f"{shown!r} is not an incident id (expected e.g. inc-20261207T235449Z-green-cf01"
            " or ops-20261207; `tbs-emergency incident list` shows them)"
        )
    return value


def _optional_incident_id(value: str | None) -> str | None:
    """Flow parameters: empty or None means "none given"; anything else must be an id."""
    return validate_incident_id(value) if value else value


# Flow parameter types: an incident id, or (optional) empty/None for "open a new one / none".
IncidentId = Annotated[str, AfterValidator(validate_incident_id)]
OptionalIncidentId = Annotated[str, AfterValidator(_optional_incident_id)]
MaybeIncidentId = Annotated[str | None, AfterValidator(_optional_incident_id)]


class Entry(BaseModel):
    """One line of an incident's timeline: what was done, to which system, by whom, result."""

    incident_id: str
    seq: int = 0
    writer: str = "?"
    at: datetime = Field(default_factory=utcnow)
    kind: str  # opened, step, action, check, notification, decision, escalated, resolved, ...
    what: str
    step: str | None = None  # "1-detection", "phase-2-traffic", ...
    system: str | None = None
    decided_by: str = "automation"
    result: Result = "info"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    def sort_key(self) -> tuple[int, datetime, str]:
        return (self.seq, self.at, self.writer)


class Incident(BaseModel):
    """The incident as its journal tells it."""

    id: str
    severity: Severity
    env: str = "green"
    rule: str | None = None
    trigger: str  # one human line: what fired and why
    opened_at: datetime
    decided_by: str = "watchdog"
    status: IncidentStatus = "open"
    resolved_at: datetime | None = None
    merged_into: str | None = None
    joined: list[str] = Field(default_factory=list)
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    evaluation: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def index_record(self) -> dict[str, Any]:
        """What `incidents/open/<id>.json` holds (read by `tbs-emergency status`)."""
        return {
            "id": self.id,
            "severity": self.severity.value,
            "opened_at": self.opened_at.isoformat(),
            "trigger": self.trigger,
            "env": self.env,
            "rule": self.rule,
            "status": self.status,
            "acknowledged_by": self.acknowledged_by,
        }

    def opened_entry(self) -> Entry:
        return Entry(
            incident_id=self.id,
            at=self.opened_at,
            kind=OPENED,
            what=f"incident opened: {self.trigger}",
            decided_by=self.decided_by,
            result="ok",
            data=self.model_dump(mode="json"),
        )

    @classmethod
    def from_entries(cls, entries: list[Entry]) -> Incident | None:
        """Fold the journal; None when it has no `opened` entry."""
        ordered = sorted(entries, key=Entry.sort_key)
        opened = next((e for e in ordered if e.kind == OPENED), None)
        if opened is None:
            return None
        inc = cls.model_validate(opened.data)
        for e in ordered:
            inc = inc.apply(e)
        return inc

    def apply(self, e: Entry) -> Incident:
        if e.kind == SEVERITY and "severity" in e.data:
            return self.model_copy(
                update={"severity": most_severe(self.severity, Severity(e.data["severity"]))}
            )
        if e.kind == ESCALATED and self.status == "open":
            return self.model_copy(update={"status": "escalated"})
        if e.kind == DEGRADED and self.status in ("open", "escalated"):
            return self.model_copy(update={"status": "degraded"})
        if e.kind == RESOLVED:
            return self.model_copy(update={"status": "resolved", "resolved_at": e.at})
        if e.kind == REOPENED and self.status == "resolved":
            # e.g. the recovery validation after a rollback failed: open again, then escalated
            return self.model_copy(update={"status": "open", "resolved_at": None})
        if e.kind == MERGED:
            return self.model_copy(
                update={"status": "merged", "merged_into": e.data.get("into"), "resolved_at": e.at}
            )
        if e.kind == JOINED and e.data.get("incident"):
            joined = [*self.joined, e.data["incident"]]
            return self.model_copy(update={"joined": joined})
        if e.kind == ACKNOWLEDGED and self.acknowledged_by is None:
            return self.model_copy(
                update={"acknowledged_by": e.decided_by, "acknowledged_at": e.at}
            )
        return self
