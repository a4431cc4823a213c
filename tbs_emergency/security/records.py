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
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from tbs_emergency.errors import NotFound

RecordKind = Literal["lockdown", "isolation", "account-suspension"]
StepStatus = Literal["applying", "applied", "failed", "lifted", "rolled-back"]
PREVIOUS_SETTINGS = "previous-settings"


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


class _Store(Protocol):
    def put(self, key: str, data: bytes, metadata: Any = None) -> Any: ...

    def get(self, key: str) -> bytes: ...

    def list(self, prefix: str) -> Any: ...


class SecurityStore:
    """Reads and writes security records; journals them when the run belongs to an incident."""

    def __init__(self, store: _Store, journal: Any | None = None) -> None:
        self.store = store
        if journal is None:
            from tbs_emergency.domain.journal import Journal

            journal = Journal(store)
        self.journal = journal

    def load(self, kind: RecordKind, key: str) -> SecurityRecord | None:
        try:
            data = self.store.get(record_key(kind, key))
        except NotFound:
            return None
        return SecurityRecord.model_validate_json(data)

    def save(self, record: SecurityRecord, what: str, decided_by: str = "automation") -> None:
        """Object store first, then the journal; raises if either fails."""
        record.updated_at = utcnow()
        self.store.put(
            record_key(record.kind, record.key),
            record.model_dump_json(indent=2).encode(),
            {"content-type": "application/json"},
        )
        if record.incident_id:
            from tbs_emergency.domain.incident import Entry

            self.journal.append(
                Entry(
                    incident_id=record.incident_id,
                    kind=PREVIOUS_SETTINGS if record.active else "action",
                    what=what,
                    system=f"security:{record.kind}",
                    decided_by=decided_by,
                    result="ok",
                    data=record.model_dump(mode="json"),
                )
            )

    def note(
        self,
        incident_id: str | None,
        what: str,
        system: str,
        result: Literal["ok", "failed", "skipped", "info"],
        data: dict[str, Any] | None = None,
        decided_by: str = "automation",
    ) -> None:
        """An action entry in the incident journal (nothing without an incident)."""
        if not incident_id:
            return
        from tbs_emergency.domain.incident import Entry

        self.journal.append(
            Entry(
                incident_id=incident_id,
                kind="action",
                what=what,
                system=system,
                decided_by=decided_by,
                result=result,
                data=data or {},
            )
        )
