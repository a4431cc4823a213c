"""The backup manifest: what makes a backup exist, and what makes it trustworthy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tbs_emergency.recovery import layout
from tbs_emergency.recovery.ids import id_time, new_id, validate_id
from tbs_emergency.recovery.manifest import (
    BinlogCoordinates,
    ChunkEntry,
    ColumnInfo,
    HeavyDBSection,
    HeavyDBTable,
    Manifest,
    ManifestError,
    MySQLSection,
    MySQLTable,
    ObjectEntry,
)

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 24, 10, 0, 0, tzinfo=UTC)
BID = "20250124T100000Z-abc123"
SHA = "a" * 64


def chunk(i: int, rows: int, checksum: int) -> ChunkEntry:
    key = layout.mysql_chunk_key(BID, "tbs", "trades", i)
    return ChunkEntry(
        index=i, key=key, rows=rows, checksum=checksum, raw_size=rows * 10, size=rows, sha256=SHA
    )


def manifest(**change: object) -> Manifest:
    chunks = [chunk(0, 10, 0b0101), chunk(1, 5, 0b0011)]
    table = MySQLTable(
        name="trades",
        engine="InnoDB",
        create_sql="CREATE TABLE trades (id INT)",
        columns=[ColumnInfo(name="id", data_type="int", column_type="int(11)")],
        primary_key=["id"],
        rows=15,
        checksum=0b0110,
        chunks=chunks,
    )
    dump = HeavyDBTable(
        name="hot",
        epoch=7,
        rows=3,
        key=layout.heavydb_dump_key(BID, "heavyai", "hot", "gzip"),
        size=99,
        sha256=SHA,
        compression="gzip",
        dumped_at=T0,
    )
    objects = [
        ObjectEntry(
            key=c.key, kind="mysql-chunk", table="trades", size=c.size, sha256=c.sha256, rows=c.rows
        )
        for c in chunks
    ]
    objects.append(
        ObjectEntry(key=dump.key, kind="heavydb-dump", table="hot", size=99, sha256=SHA, rows=3)
    )
    data = dict(
        backup_id=BID,
        environment="green",
        started_at=T0,
        finished_at=T0 + timedelta(minutes=1),
        verified_at=T0 + timedelta(minutes=1),
        retention_days=30,
        mysql=MySQLSection(
            system="mysql[blue,green]",
            identity="mysql://h:3306/tbs",
            database="tbs",
            server_version="10.11",
            server_id=1,
            snapshot_at=T0 + timedelta(seconds=1),
            binlog=BinlogCoordinates(file="bin.000003", position=1234, gtid="0-1-99"),
            consistency="binlog-snapshot",
            connections=4,
            tables=[table],
        ),
        heavydb=HeavyDBSection(
            system="heavydb[green]",
            identity="heavydb://h:6274/heavyai",
            database="heavyai",
            tables=[dump],
        ),
        objects=objects,
    )
    data.update(change)
    return Manifest(**data)  # type: ignore[arg-type]


def test_a_consistent_manifest_has_no_problems_and_round_trips() -> None:
    m = manifest()
    assert m.problems() == []
    again = Manifest.from_bytes(m.to_bytes())
    assert again == m
    assert again.to_bytes() == m.to_bytes(), "serialisation is stable (sorted keys)"
    assert m.taken_at == T0 + timedelta(seconds=1), "the MySQL snapshot time"
    s = m.summary()
    assert s["binlog"] == "bin.000003:1234 (GTID 0-1-99)"
    assert s["heavydb_epochs"] == {"hot": 7}
    assert s["mysql_rows"] == 15 and s["objects"] == 3


def test_every_object_must_be_listed_and_belong_to_a_table() -> None:
    m = manifest()
    m.objects = m.objects[1:]
    assert any("not in the object list" in p for p in m.problems())
    m = manifest()
    extra = ObjectEntry(
        key=layout.backup_prefix(BID) + "stray",
        kind="mysql-chunk",
        table="trades",
        size=1,
        sha256=SHA,
        rows=0,
    )
    m.objects.append(extra)
    assert any("belongs to no table" in p for p in m.problems())


def test_counts_and_checksums_must_add_up() -> None:
    m = manifest()
    assert m.mysql is not None
    m.mysql.tables[0].rows = 16
    assert any("add up to 15, not 16" in p for p in m.problems())
    m = manifest()
    assert m.mysql is not None
    m.mysql.tables[0].checksum = 1
    assert any("checksums do not combine" in p for p in m.problems())


def test_objects_must_live_under_their_backup_and_have_a_sha256() -> None:
    m = manifest()
    m.objects[0] = m.objects[0].model_copy(update={"key": "backups/other/x"})
    assert any("not a data object of backup" in p for p in m.problems())
    m = manifest()
    m.objects[0] = m.objects[0].model_copy(update={"sha256": "nope"})
    assert any("no valid sha256" in p for p in m.problems())


def test_an_empty_or_garbled_manifest_is_refused_with_its_problems() -> None:
    with pytest.raises(ManifestError, match="no MySQL and no HeavyDB"):
        Manifest.from_bytes(manifest(mysql=None, heavydb=None, objects=[]).to_bytes())
    with pytest.raises(ManifestError, match="not JSON"):
        Manifest.from_bytes(b"{half")
    with pytest.raises(ManifestError, match="backup_id"):
        Manifest.from_bytes(b'{"format": "tbs-backup/1"}')


def test_backup_ids_sort_by_time_and_keep_keys_safe() -> None:
    a = new_id(T0, "000001")
    b = new_id(T0 + timedelta(seconds=1), "000000")
    assert a < b and id_time(a) == T0
    assert validate_id(a) == a
    for bad in ("../etc", "20250124T100000Z-ABC123", "20250124T100000Z", "x/y"):
        with pytest.raises(ValueError, match="backup list"):
            validate_id(bad)
    with pytest.raises(ValueError):
        layout.mysql_chunk_key(a, "db", "a/b", 0)
    assert layout.backup_id_of(layout.manifest_key(a)) == a
