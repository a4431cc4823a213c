"""What a reversible security change recorded before it changed anything.

A record lives at `state/security/<kind>/<key>.json` in the object store (so a lift works
without an incident id, from another process, after the one that applied it is gone) and, when
the run belongs to an incident, every save is also a journal entry (`previous-settings`).

One record per procedure and subject: `lockdown` (key `all`), `isolation` (key: the
environment), `account-suspension` (key: the user). Each step keeps its previous state; a step
is saved as `applying` before it changes anything, `applied` after; lifting restores the steps
in reverse order and marks them `lifted`; the record is `lifted` when every step is.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from tbs_emergency.dbops.records import JournaledRecords

RecordKind = Literal["lockdown", "isolation", "account-suspension"]
StepStatus = Literal["applying", "applied", "failed", "lifted", "rolled-back"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class StepSpec(BaseModel):
    """Which step, with which parameters (enough to rebuild it for a lift)."""

    kind: str
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        """Unique within a record: the kind and its `target` parameter."""
        return f"{self.kind}:{self.params.get('target', '')}"


class StepRecord(BaseModel):
    name: str
    spec: StepSpec
    system: str
    what: str
    status: StepStatus = "applying"
    previous: dict[str, Any] = Field(default_factory=dict)
    detail: str = ""
    at: datetime = Field(default_factory=utcnow)


class SecurityRecord(BaseModel):
    kind: RecordKind
    key: str
    status: Literal["active", "lifted", "rolled-back"] = "active"
    incident_id: str | None = None
    recorded_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    lifted_at: datetime | None = None
    steps: list[StepRecord] = Field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.status == "active"

    def step(self, name: str) -> StepRecord | None:
        return next((s for s in self.steps if s.name == name), None)

    def upsert(self, step: StepRecord) -> None:
        for i, s in enumerate(self.steps):
            if s.name == step.name:
                self.steps[i] = step
                return
        self.steps.append(step)


def safe_key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "all"


def record_key(kind: RecordKind, key: str) -> str:
    return f"state/security/{kind}/{safe_key(key)}.json"


class SecurityStore(JournaledRecords):
    """Reads and writes security records; journals them when the run belongs to an incident."""

    def load(self, kind: RecordKind, key: str) -> SecurityRecord | None:
        return self._read(record_key(kind, key), SecurityRecord)

    def save(self, record: SecurityRecord, what: str, decided_by: str = "automation") -> None:
        """Object store first, then the journal; raises if either fails."""
        record.updated_at = utcnow()
        self._write(
            record_key(record.kind, record.key),
            record,
            incident_id=record.incident_id,
            active=record.active,
            what=what,
            system=f"security:{record.kind}",
            decided_by=decided_by,
        )
