"""The backup manifest: the one object that makes a backup exist.

A backup's objects are written first, read back and verified, and only then is its manifest
written (`backups/<id>/manifest.json`, itself stored with its sha256). A backup without a
manifest does not exist: it is never listed, restored or used for point-in-time recovery, and
retention deletes its objects once they are old enough to be abandoned.

The manifest lists every object (key, size, sha256, rows), and per source what a restore and a
point-in-time recovery need: for MySQL the snapshot's binlog file, position and GTID, each
table's DDL, columns, key, row count and content checksum, and its chunks; for HeavyDB each
table's dump archive and the table epoch it holds. `problems()` checks that all of this is
consistent before anyone relies on it.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import reduce
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tbs_emergency.recovery import layout
from tbs_emergency.recovery.ids import is_id

FORMAT = "tbs-backup/1"
# Row format of MySQL chunks: LOAD DATA's defaults (tab-separated fields, backslash escapes,
# newline-terminated lines, NULL as \N), binary columns as hex, each chunk one LZ4 frame with a
# content checksum.
ROW_FORMAT = "tsv-lz4/1"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BinlogCoordinates(_Model):
    """A position in the MySQL binary log (and the GTID state at that position, if any)."""

    file: str
    position: int = Field(ge=4)
    gtid: str | None = None

    def __str__(self) -> str:
        gtid = f" (GTID {self.gtid})" if self.gtid else ""
        return f"{self.file}:{self.position}{gtid}"


class ColumnInfo(_Model):
    name: str
    data_type: str  # information_schema DATA_TYPE: int, varchar, decimal, blob, ...
    column_type: str  # the full type: int(10) unsigned, enum('a','b'), decimal(18,4)
    nullable: bool = True
    hex: bool = False  # binary data: written as hex in the chunk files
    generated: bool = False  # generated columns are computed again on restore, never dumped


class ChunkEntry(_Model):
    index: int = Field(ge=0)
    key: str
    lower: list[Any] | None = None  # inclusive key bound (None: from the start)
    upper: list[Any] | None = None  # exclusive key bound (None: to the end)
    rows: int = Field(ge=0)
    checksum: int = Field(ge=0)  # BIT_XOR of CRC32 of every row's line (the server's text)
    raw_size: int = Field(ge=0)
    size: int = Field(ge=0)
    sha256: str


class MySQLTable(_Model):
    name: str
    engine: str
    create_sql: str
    columns: list[ColumnInfo]
    primary_key: list[str]
    rows: int = Field(ge=0)
    checksum: int = Field(ge=0)
    chunks: list[ChunkEntry]

    @property
    def dumped_columns(self) -> list[ColumnInfo]:
        return [c for c in self.columns if not c.generated]


Consistency = Literal["binlog-snapshot", "flush-tables-with-read-lock"]


class MySQLSection(_Model):
    system: str  # the connector's name, e.g. mysql[blue,green]
    identity: str  # mysql://host:port/database (never credentials)
    database: str
    server_version: str
    server_id: int
    snapshot_at: datetime  # the server's UTC clock when the snapshot was taken
    binlog: BinlogCoordinates | None  # None: binary logging is off (no point-in-time recovery)
    consistency: Consistency
    connections: int = Field(ge=1)
    all_tables: bool = True  # every table of the database (only such backups can be rolled forward)
    row_format: str = ROW_FORMAT
    tables: list[MySQLTable]
    warnings: list[str] = Field(default_factory=list)

    def table(self, name: str) -> MySQLTable | None:
        return next((t for t in self.tables if t.name == name), None)


Compression = Literal["gzip", "lz4", "none"]


class HeavyDBTable(_Model):
    name: str
    epoch: int
    rows: int = Field(ge=0)
    key: str
    size: int = Field(ge=0)
    sha256: str
    compression: Compression
    dumped_at: datetime


class HeavyDBSection(_Model):
    system: str
    identity: str
    database: str
    tables: list[HeavyDBTable]
    warnings: list[str] = Field(default_factory=list)

    def table(self, name: str) -> HeavyDBTable | None:
        return next((t for t in self.tables if t.name == name), None)


ObjectKind = Literal["mysql-chunk", "heavydb-dump"]


class ObjectEntry(_Model):
    key: str
    kind: ObjectKind
    table: str
    size: int = Field(ge=0)
    sha256: str
    rows: int | None = None


class Manifest(_Model):
    format: Literal["tbs-backup/1"] = FORMAT
    backup_id: str
    environment: str
    started_at: datetime
    finished_at: datetime
    verified_at: datetime
    retention_days: int
    mysql: MySQLSection | None = None
    heavydb: HeavyDBSection | None = None
    objects: list[ObjectEntry]

    # -- reading and writing -----------------------------------------------------------------

    def to_bytes(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), indent=1, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "manifest") -> Manifest:
        """Parse a manifest; ManifestError (with one line per problem) if it is not one."""
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise ManifestError(where, [f"not JSON: {exc}"]) from None
        try:
            manifest = cls.model_validate(doc)
        except ValidationError as exc:
            lines = [
                f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
            ]
            raise ManifestError(where, lines) from None
        problems = manifest.problems()
        if problems:
            raise ManifestError(where, problems)
        return manifest

    # -- what it describes -------------------------------------------------------------------

    @property
    def key(self) -> str:
        return layout.manifest_key(self.backup_id)

    @property
    def taken_at(self) -> datetime:
        """When the data was captured: the MySQL snapshot, else the first HeavyDB dump."""
        if self.mysql is not None:
            return self.mysql.snapshot_at
        if self.heavydb is not None and self.heavydb.tables:
            return min(t.dumped_at for t in self.heavydb.tables)
        return self.started_at

    @property
    def total_bytes(self) -> int:
        return sum(o.size for o in self.objects)

    def object(self, key: str) -> ObjectEntry | None:
        return next((o for o in self.objects if o.key == key), None)

    def summary(self) -> dict[str, Any]:
        """One line's worth: what `backup list` shows."""
        return {
            "backup_id": self.backup_id,
            "environment": self.environment,
            "taken_at": self.taken_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "mysql_tables": len(self.mysql.tables) if self.mysql else 0,
            "mysql_rows": sum(t.rows for t in self.mysql.tables) if self.mysql else 0,
            "binlog": str(self.mysql.binlog) if self.mysql and self.mysql.binlog else None,
            "heavydb_tables": len(self.heavydb.tables) if self.heavydb else 0,
            "heavydb_epochs": (
                {t.name: t.epoch for t in self.heavydb.tables} if self.heavydb else {}
            ),
            "objects": len(self.objects),
            "bytes": self.total_bytes,
            "manifest": self.key,
        }

    # -- consistency -------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Everything inconsistent in this manifest (empty: it can be relied on)."""
        out: list[str] = []
        if not is_id(self.backup_id):
            out.append(f"backup_id {self.backup_id!r} is not a backup id")
            return out
        prefix = layout.backup_prefix(self.backup_id)
        if self.mysql is None and self.heavydb is None:
            out.append("the manifest describes no MySQL and no HeavyDB data")
        if self.finished_at < self.started_at:
            out.append("finished_at is before started_at")
        seen: dict[str, ObjectEntry] = {}
        for o in self.objects:
            if o.key in seen:
                out.append(f"object {o.key} is listed twice")
            seen[o.key] = o
            if not o.key.startswith(prefix) or o.key == layout.manifest_key(self.backup_id):
                out.append(f"object {o.key} is not a data object of backup {self.backup_id}")
            if not _SHA256.match(o.sha256):
                out.append(f"object {o.key} has no valid sha256")
        referenced: set[str] = set()
        if self.mysql is not None:
            out += _mysql_problems(self.mysql, seen, referenced)
        if self.heavydb is not None:
            for t in self.heavydb.tables:
                referenced.add(t.key)
                out += _object_matches(seen, t.key, t.size, t.sha256, f"HeavyDB table {t.name}")
                o = seen.get(t.key)
                if o is not None and (o.kind != "heavydb-dump" or o.table != t.name):
                    out.append(f"object {t.key} is not the dump of HeavyDB table {t.name}")
            names = [t.name for t in self.heavydb.tables]
            if len(set(names)) != len(names):
                out.append("a HeavyDB table is listed twice")
        for key in sorted(set(seen) - referenced):
            out.append(f"object {key} belongs to no table")
        return out


def _object_matches(
    seen: dict[str, ObjectEntry], key: str, size: int, sha256: str, what: str
) -> list[str]:
    o = seen.get(key)
    if o is None:
        return [f"{what}: object {key} is not in the object list"]
    if o.size != size or o.sha256 != sha256:
        return [f"{what}: object {key} size/sha256 differ from the object list"]
    return []


def _mysql_problems(
    section: MySQLSection, seen: dict[str, ObjectEntry], referenced: set[str]
) -> list[str]:
    out: list[str] = []
    names = [t.name for t in section.tables]
    if len(set(names)) != len(names):
        out.append("a MySQL table is listed twice")
    for t in section.tables:
        what = f"MySQL table {t.name}"
        if not t.dumped_columns:
            out.append(f"{what}: no columns")
        if [c.index for c in t.chunks] != list(range(len(t.chunks))):
            out.append(f"{what}: chunks are not numbered 0..{len(t.chunks) - 1}")
        chunk_rows = sum(c.rows for c in t.chunks)
        if chunk_rows != t.rows:
            out.append(f"{what}: chunk rows add up to {chunk_rows}, not {t.rows}")
        if reduce(lambda a, c: a ^ c.checksum, t.chunks, 0) != t.checksum:
            out.append(f"{what}: chunk checksums do not combine to the table checksum")
        for c in t.chunks:
            referenced.add(c.key)
            out += _object_matches(seen, c.key, c.size, c.sha256, what)
            o = seen.get(c.key)
            if o is not None and (o.kind != "mysql-chunk" or o.table != t.name or o.rows != c.rows):
                out.append(f"{what}: object {c.key} is described differently in the object list")
    return out


class ManifestError(ValueError):
    """A manifest that cannot be relied on; `problems` has one line each."""

    def __init__(self, where: str, problems: list[str]) -> None:
        self.where = where
        self.problems = problems
        super().__init__(f"{where}: " + "; ".join(problems))
