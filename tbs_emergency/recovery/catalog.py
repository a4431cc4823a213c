"""What backups exist, read from object storage through the ObjectStore protocol.

A backup exists only with a manifest that reads back intact (sha256) and is consistent.
Anything else under `backups/` is an incomplete backup: listed for retention, never used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from tbs_emergency.recovery import layout
from tbs_emergency.recovery.heavydb_plan import DumpRecord, EpochRecord
from tbs_emergency.recovery.ids import id_time, is_id
from tbs_emergency.recovery.manifest import Manifest, ManifestError


class _Stored(Protocol):
    key: str
    size: int


class Store(Protocol):
    def get(self, key: str) -> bytes: ...

    def list(self, prefix: str) -> Iterable[Any]: ...


@dataclass
class BackupListing:
    backup_id: str
    started_at: datetime
    objects: int = 0
    bytes: int = 0
    has_manifest: bool = False
    manifest: Manifest | None = None
    problem: str | None = None  # a manifest that exists but cannot be relied on


@dataclass
class Catalog:
    backups: list[BackupListing] = field(default_factory=list)

    @property
    def complete(self) -> list[Manifest]:
        """Backups that exist, oldest first."""
        return sorted(
            (b.manifest for b in self.backups if b.manifest is not None), key=lambda m: m.taken_at
        )

    @property
    def incomplete(self) -> list[BackupListing]:
        return [b for b in self.backups if b.manifest is None]


def scan(store: Store, read_manifests: bool = True) -> Catalog:
    """Every backup id under backups/, with its object count and manifest (if it reads back)."""
    found: dict[str, BackupListing] = {}
    for obj in store.list(layout.BACKUPS):
        bid = layout.backup_id_of(obj.key)
        if bid is None or not is_id(bid):
            continue
        entry = found.get(bid)
        if entry is None:
            entry = found[bid] = BackupListing(bid, id_time(bid))
        entry.objects += 1
        entry.bytes += int(obj.size or 0)
        if obj.key == layout.manifest_key(bid):
            entry.has_manifest = True
    if read_manifests:
        for entry in found.values():
            if entry.has_manifest:
                try:
                    entry.manifest = load_manifest(store, entry.backup_id)
                except (ManifestError, Exception) as exc:  # a broken manifest: not a backup
                    entry.problem = str(exc)
    return Catalog(sorted(found.values(), key=lambda b: b.backup_id))


def load_manifest(store: Store, backup_id: str) -> Manifest:
    """The manifest, read back with its sha256 checked and its consistency validated."""
    key = layout.manifest_key(backup_id)
    data = store.get(key)
    manifest = Manifest.from_bytes(data, key)
    if manifest.backup_id != backup_id:
        raise ManifestError(key, [f"the manifest is for backup {manifest.backup_id}"])
    return manifest


def epoch_records(catalog: Catalog, store: Store | None = None) -> list[EpochRecord]:
    """Every recorded (table, epoch, time): from backups and from heavydb-epochs/ records."""
    out: list[EpochRecord] = []
    for m in catalog.complete:
        if m.heavydb is not None:
            for t in m.heavydb.tables:
                out.append(EpochRecord(t.name, t.epoch, t.dumped_at, f"backup {m.backup_id}"))
    if store is not None:
        for obj in store.list(layout.EPOCHS):
            try:
                doc = json.loads(store.get(obj.key))
                at = datetime.fromisoformat(doc["recorded_at"])
                for name, epoch in doc["epochs"].items():
                    out.append(EpochRecord(name, int(epoch), at, f"epoch record {doc['id']}"))
            except Exception:  # a damaged record is skipped, never trusted
                continue
    return sorted(out, key=lambda r: r.at)


def dump_records(catalog: Catalog) -> list[DumpRecord]:
    out = []
    for m in catalog.complete:
        if m.heavydb is None:
            continue
        for t in m.heavydb.tables:
            out.append(
                DumpRecord(
                    backup_id=m.backup_id,
                    table=t.name,
                    key=t.key,
                    epoch=t.epoch,
                    dumped_at=t.dumped_at,
                    compression=t.compression,
                    sha256=t.sha256,
                    size=t.size,
                    rows=t.rows,
                )
            )
    return out
