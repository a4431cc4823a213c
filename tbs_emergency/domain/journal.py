"""The incident journal: append-only JSON entries in object storage.

Layout (keys relative to the storage prefix, like every other key the store sees):

    incidents/<id>/journal/<seq:08d>-<writer>.json   one object per entry, never rewritten
    incidents/<id>/report.md                          the rendered report (rewritten on render)
    incidents/open/<id>.json                          index of open incidents (see below)

*Append-only, concurrent writers.* Each entry is its own object. Its key carries a sequence
number and the writer's id, so two writers that pick the same number write two objects and
never overwrite each other; readers order by (seq, time, writer). When the store offers a
conditional put (`put_if_absent(key, data) -> bool`), the writer uses it and retries with the
next number, which gives a strict sequence.

*Survives the loss of either database:* it lives in object storage only.

*The open index* (`incidents/open/<id>.json`, fields id, severity, opened_at, trigger, env,
rule, status) is what `tbs-emergency status` lists. It is derived data: `sync_index` rewrites it
from the journal after every state change; on close it is deleted when the store can delete, and
otherwise rewritten with status "resolved"/"merged" (readers skip those).

Every append can also be published (`on_append`): the Prefect layer emits an event per entry.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from tbs_emergency.domain.incident import OPENED, Entry, Incident

INCIDENTS = "incidents"
OPEN_INDEX = f"{INCIDENTS}/open/"


class _Store(Protocol):
    def put(self, key: str, data: bytes, metadata: Any = None) -> Any: ...

    def get(self, key: str) -> bytes: ...

    def list(self, prefix: str) -> Any: ...


def journal_prefix(incident_id: str) -> str:
    return f"{INCIDENTS}/{incident_id}/journal/"


def report_key(incident_id: str) -> str:
    return f"{INCIDENTS}/{incident_id}/report.md"


def index_key(incident_id: str) -> str:
    return f"{OPEN_INDEX}{incident_id}.json"


def _seq_of(key: str) -> int:
    name = key.rsplit("/", 1)[-1]
    try:
        return int(name.split("-", 1)[0].split(".", 1)[0])
    except ValueError:
        return -1


def new_writer_id() -> str:
    return f"{os.getpid()}{uuid.uuid4().hex[:6]}"


class Journal:
    """Append and read the entries of incidents in one object store."""

    def __init__(
        self,
        store: _Store,
        writer: str | None = None,
        on_append: Callable[[Entry], None] | None = None,
    ) -> None:
        self.store = store
        self.writer = writer or new_writer_id()
        self.on_append = on_append
        self._next: dict[str, int] = {}
        # One writer id per Journal: threads sharing it (flows run in threads of one runner)
        # must not pick the same number, or the second object would replace the first.
        self._lock = threading.Lock()

    # -- writing ---------------------------------------------------------------------------------

    def _next_seq(self, incident_id: str) -> int:
        if incident_id not in self._next:
            keys = [o.key for o in self.store.list(journal_prefix(incident_id))]
            self._next[incident_id] = max((_seq_of(k) for k in keys), default=-1) + 1
        return self._next[incident_id]

    def append(self, entry: Entry) -> Entry:
        """Write one entry as a new object; returns it with its sequence number and writer."""
        put_if_absent = getattr(self.store, "put_if_absent", None)
        with self._lock:
            seq = self._next_seq(entry.incident_id)
            self._next[entry.incident_id] = seq + 1  # reserved for this append
        while True:
            e = entry.model_copy(update={"seq": seq, "writer": self.writer})
            data = e.model_dump_json().encode()
            if put_if_absent is not None:
                key = f"{journal_prefix(e.incident_id)}{seq:08d}.json"
                if put_if_absent(key, data):
                    break
                with self._lock:  # another writer has this number: take the next free one
                    seq = max(seq + 1, self._next[entry.incident_id])
                    self._next[entry.incident_id] = seq + 1
                continue
            key = f"{journal_prefix(e.incident_id)}{seq:08d}-{self.writer}.json"
            self.store.put(key, data, {"content-type": "application/json"})
            break
        if self.on_append is not None:
            # Publishing is best effort: the journal already has the entry.
            with contextlib.suppress(Exception):
                self.on_append(e)
        return e

    def open(self, incident: Incident) -> tuple[Incident, bool]:
        """Open the incident unless its journal already has it: (incident, newly_opened).

        Opening twice is harmless: the second call returns the incident as journaled.
        """
        existing = self.incident(incident.id)
        if existing is not None:
            return existing, False
        self.append(incident.opened_entry())
        self.sync_index(incident)
        return incident, True

    def sync_index(self, incident: Incident) -> None:
        """Keep `incidents/open/<id>.json` in step with the incident's state."""
        key = index_key(incident.id)
        if incident.is_open:
            self.store.put(key, json.dumps(incident.index_record()).encode())
            return
        delete = getattr(self.store, "delete", None)
        if delete is not None:
            try:
                delete(key)
                return
            except Exception:
                pass
        self.store.put(key, json.dumps(incident.index_record()).encode())

    # -- reading ---------------------------------------------------------------------------------

    def entries(self, incident_id: str) -> list[Entry]:
        out = []
        for obj in self.store.list(journal_prefix(incident_id)):
            if obj.key.endswith(".json"):
                out.append(Entry.model_validate_json(self.store.get(obj.key)))
        return sorted(out, key=Entry.sort_key)

    def incident(self, incident_id: str) -> Incident | None:
        return Incident.from_entries(self.entries(incident_id))

    def open_incidents(self) -> list[dict[str, Any]]:
        """The open index, skipping records of closed incidents."""
        found = []
        for obj in self.store.list(OPEN_INDEX):
            if not obj.key.endswith(".json"):
                continue
            try:
                rec = json.loads(self.store.get(obj.key))
            except Exception:
                continue
            if rec.get("status", "open") in ("open", "escalated"):
                found.append(rec)
        return sorted(found, key=lambda r: str(r.get("opened_at")))

    def has_kind(self, incident_id: str, kind: str, step: str | None = None) -> bool:
        return any(
            e.kind == kind and (step is None or e.step == step) for e in self.entries(incident_id)
        )


def done_actions(entries: list[Entry]) -> set[str]:
    """Names of actions that finished ok (`data.action`): what a re-run must not repeat."""
    return {
        str(e.data["action"])
        for e in entries
        if e.result == "ok" and e.kind != OPENED and e.data.get("action")
    }
