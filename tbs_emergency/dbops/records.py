"""The "previous settings" a change will undo, recorded before anything changes.

A procedure that changes a server's settings (connection limits, archive protection) first
writes an `UndoRecord` with the values it is about to replace:

1. to the object store at the well-known key `state/<kind>/<server>.json`, so lifting works
   without an incident id and after the process that applied the change is gone;
2. to the incident journal (`Entry(kind="previous-settings")`) when the run belongs to an
   incident, so the incident report shows exactly what was replaced.

Only then does it change anything; if either write fails, nothing is changed. A rerun while the
record is active keeps the values first recorded (re-recording would capture the emergency
settings as "previous") and adds only what it had not recorded yet. Lifting restores the
recorded values and marks the record lifted (it stays, for the audit).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, Field

from tbs_emergency.connectors.base import AccountLimit, PrivilegeGrant
from tbs_emergency.dbops.targets import ServerTarget
from tbs_emergency.errors import NotFound, TbsError

RecordKind = Literal["connection-limits", "archive-protection"]
PREVIOUS_SETTINGS = "previous-settings"


def utcnow() -> datetime:
    return datetime.now(UTC)


class MySQLLimitUndo(BaseModel):
    max_connections: int
    # The previous MAX_USER_CONNECTIONS of every account the limit caps.
    accounts: list[AccountLimit] = Field(default_factory=list)


class HeavyDBLoginUndo(BaseModel):
    # Users who could log in before and whose login the limit disables.
    logins_enabled: list[str] = Field(default_factory=list)


class ArchiveUndo(BaseModel):
    schema_name: str
    # Exactly the privileges revoked; lifting grants these back and nothing else.
    revoked: list[PrivilegeGrant] = Field(default_factory=list)


class UndoRecord(BaseModel):
    kind: RecordKind
    target: ServerTarget
    status: Literal["active", "lifted"] = "active"
    recorded_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    lifted_at: datetime | None = None
    incident_id: str | None = None
    mysql_limits: MySQLLimitUndo | None = None
    heavydb_logins: HeavyDBLoginUndo | None = None
    archive: ArchiveUndo | None = None
    # What the procedure set (for reports; lifting never reads it).
    applied: dict[str, Any] = Field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status == "active"


def state_key(kind: RecordKind, target: ServerTarget) -> str:
    return f"state/{kind}/{target.key}.json"


class _Store(Protocol):
    def put(self, key: str, data: bytes, metadata: Any = None) -> Any: ...

    def get(self, key: str) -> bytes: ...

    def list(self, prefix: str) -> Any: ...


R = TypeVar("R", bound=BaseModel)


class JournaledRecords:
    """JSON records in the object store whose every save is also an incident journal entry
    (`previous-settings` while active, else `action`) when the run belongs to an incident; the
    stores of reversible procedures (here, and tbs_emergency.security.records) build on it."""

    def __init__(self, store: _Store, journal: Any | None = None) -> None:
        self.store = store
        if journal is None:
            from tbs_emergency.domain.journal import Journal

            journal = Journal(store)
        self.journal = journal

    def _read(self, key: str, model: type[R]) -> R | None:
        try:
            data = self.store.get(key)
        except NotFound:
            return None
        return model.model_validate_json(data)

    def _write(
        self,
        key: str,
        record: BaseModel,
        *,
        incident_id: str | None,
        active: bool,
        what: str,
        system: str,
        decided_by: str,
    ) -> None:
        """Object store first, then the journal. Raises if either fails."""
        self.store.put(
            key, record.model_dump_json(indent=2).encode(), {"content-type": "application/json"}
        )
        if incident_id:
            from tbs_emergency.domain.incident import Entry

            self.journal.append(
                Entry(
                    incident_id=incident_id,
                    kind=PREVIOUS_SETTINGS if active else "action",
                    what=what,
                    system=system,
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


class UndoStore(JournaledRecords):
    """Reads and writes undo records; journals them when the run belongs to an incident."""

    def load(self, kind: RecordKind, target: ServerTarget) -> UndoRecord | None:
        return self._read(state_key(kind, target), UndoRecord)

    def save(self, record: UndoRecord, what: str, decided_by: str = "automation") -> None:
        """Write the record (object store first, then the journal). Raises if either fails."""
        record = record.model_copy(update={"updated_at": utcnow()})
        self._write(
            state_key(record.kind, record.target),
            record,
            incident_id=record.incident_id,
            active=record.active,
            what=what,
            system=record.target.name,
            decided_by=decided_by,
        )

    def save_first(self, record: UndoRecord, what: str) -> str | None:
        """save() before any change: None when recorded, else why not (and nothing may
        change: the caller stops)."""
        try:
            self.save(record, what)
        except TbsError as exc:
            return f"could not record the previous settings ({exc}): nothing was changed"
        return None
