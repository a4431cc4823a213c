"""Backup and restore of the MySQL archive against a real MariaDB (ROW binlog) and moto S3.

Covers: a consistent chunked backup with every object's sha256, SSE and the binlog position;
the manifest written last; `backup list` showing only backups with a manifest; an idempotent
rerun; restore into a new database with counts and checksums verified; refusal to overwrite
without force and a kept-aside swap with it; refusal of a corrupted or missing object, by name,
before anything is touched.
"""

# ruff: noqa: F401, F811  (fixtures imported from the support module)
from __future__ import annotations

from typing import Any

import pytest

from sandbox.proc import Service
from tbs_emergency.recovery import catalog, layout
from tests.integration.test_backup_support import (
    REC_DB,
    fresh_name,
    recovery_config,
    root_sql,
    serverless,
)

pytestmark = pytest.mark.integration

TABLES = ("bk_trades", "bk_accounts", "bk_blobs", "bk_nopk")


def _store(cfg: str) -> Any:
    from tasks.incident import connectors_for

    return connectors_for(cfg).store()


def _contents(mariadb: Service, database: str, table: str) -> list[tuple[Any, ...]]:
    return root_sql(mariadb, f"SELECT * FROM `{database}`.`{table}` ORDER BY 1, 2")


@pytest.fixture(scope="module")
def archive(mariadb: Service, recovery_config: str) -> str:
    """Tables with awkward values: every kind of column, NULLs, escapes, binary, no key."""
    root_sql(
        mariadb,
        *[f"DROP TABLE IF EXISTS {t}" for t in TABLES],
        "CREATE TABLE bk_trades (id BIGINT PRIMARY KEY, account VARCHAR(32) NOT NULL,"
        " price DECIMAL(18,6), qty INT UNSIGNED, f FLOAT, d DOUBLE, at DATETIME(6),"
        " ts TIMESTAMP(3) NULL, day DATE, note TEXT, side ENUM('BUY','SELL'),"
        " flags SET('a','b','c'), j JSON, KEY (at))",
        "INSERT INTO bk_trades SELECT seq, CONCAT('acct-', seq % 97), seq * 1.000001,"
        " seq % 1000, seq / 7, seq / 3, '2025-01-24 10:00:00' + INTERVAL seq SECOND,"
        " IF(seq % 5 = 0, NULL, '2025-01-24 10:00:00.125' + INTERVAL seq MINUTE),"
        " '2025-01-01' + INTERVAL seq % 300 DAY,"
        " IF(seq % 3 = 0, NULL, CONCAT('line', CHAR(10), 'tab', CHAR(9), 'back\\\\slash \\'q',"
        " seq)), IF(seq % 2, 'BUY', 'SELL'), IF(seq % 4, 'a,c', ''),"
        " IF(seq % 7 = 0, NULL, CONCAT('{\"n\": ', seq, '}')) FROM seq_1_to_12000",
        "CREATE TABLE bk_accounts (region CHAR(2), name VARCHAR(40), balance DECIMAL(12,2),"
        " PRIMARY KEY (region, name))",
        "INSERT INTO bk_accounts SELECT ELT(1 + seq % 4, 'eu', 'us', 'ap', 'za'),"
        " CONCAT('name-', seq, ' ünï €'), seq / 10 FROM seq_1_to_3000",
        "CREATE TABLE bk_blobs (id INT PRIMARY KEY, b VARBINARY(16), bl BLOB, bits BIT(5))",
        "INSERT INTO bk_blobs VALUES (1, 0x00FF0A095C27, 0x000102, b'10101'),"
        " (2, NULL, NULL, NULL), (3, '', '', b'0'), (4, 0x5C4E, 0x0D0A, b'11111')",
        "CREATE TABLE bk_nopk (a INT, b VARCHAR(10))",
        "INSERT INTO bk_nopk VALUES (1, 'x'), (1, 'x'), (NULL, NULL), (2, '\\\\N')",
        database=REC_DB,
    )
    return REC_DB


@pytest.fixture(scope="module")
def backup(archive: str, recovery_config: str) -> Any:
    from flows.emergency_backup import BackupParams

    with serverless() as seen:
        ok, report = seen.run(
            "emergency_backup",
            BackupParams(
                config_path=recovery_config,
                heavydb=False,
                tables=list(TABLES),
                connections=3,
                chunk_bytes=64 * 1024,
                apply_retention=False,
            ),
        )
    assert ok, report
    assert seen.markdown, "the flow publishes a report artifact"
    return report


def test_backup_writes_verified_chunks_and_the_manifest_last(
    backup: Any, recovery_config: str, mariadb: Service
) -> None:
    store = _store(recovery_config)
    manifest = catalog.load_manifest(store, backup.backup_id)
    assert manifest.problems() == []
    assert manifest.mysql is not None
    names = [t.name for t in manifest.mysql.tables]
    assert sorted(names) == sorted(TABLES)
    trades = manifest.mysql.table("bk_trades")
    assert trades is not None and trades.rows == 12000
    assert len(trades.chunks) > 3, "a big table is split into key-range chunks"
    assert manifest.mysql.binlog is not None and manifest.mysql.binlog.gtid
    assert manifest.mysql.consistency == "binlog-snapshot"
    for o in manifest.objects:
        head = store.head(o.key)
        assert head.sha256 == o.sha256 and head.size == o.size
        assert head.sse == "AES256"
    # the manifest is the newest object of the backup: written after every data object
    objs = list(store.list(layout.backup_prefix(backup.backup_id)))
    newest = max(objs, key=lambda o: o.last_modified)
    assert newest.last_modified == store.head(manifest.key).last_modified
    # row counts and checksums the server computed match a fresh computation
    from tasks.backup import mysql_recovery

    rec = mysql_recovery(recovery_config, "green")
    for t in manifest.mysql.tables:
        lay = rec.layout(REC_DB, t.name)
        assert rec.table_checksum(REC_DB, t.name, lay.columns) == (t.rows, t.checksum)


def test_backup_list_shows_only_backups_with_a_manifest(backup: Any, recovery_config: str) -> None:
    store = _store(recovery_config)
    orphan = layout.mysql_chunk_key("20200101T000000Z-abcdef", REC_DB, "x", 0)
    store.put(orphan, b"half a backup")
    cat = catalog.scan(store)
    ids = [m.backup_id for m in cat.complete]
    assert backup.backup_id in ids
    assert "20200101T000000Z-abcdef" not in ids
    assert "20200101T000000Z-abcdef" in [b.backup_id for b in cat.incomplete]


def test_rerun_with_the_same_id_does_nothing_twice(backup: Any, recovery_config: str) -> None:
    from flows.emergency_backup import BackupParams

    with serverless() as s:
        ok, again = s.run(
            "emergency_backup",
            BackupParams(config_path=recovery_config, heavydb=False, backup_id=backup.backup_id),
        )
    assert ok and again.already_existed
    assert again.manifest == backup.manifest


def test_restore_into_a_new_database_verifies_counts_and_checksums(
    backup: Any, recovery_config: str, mariadb: Service
) -> None:
    from flows.restore import RestoreParams

    target = fresh_name("rs")
    with serverless() as s:
        ok, report = s.run(
            "restore",
            RestoreParams(
                config_path=recovery_config,
                backup_id=backup.backup_id,
                target_database=target,
                heavydb=False,
            ),
        )
    assert ok, report
    assert {t["table"] for t in report.mysql_tables} == set(TABLES)
    assert all(t["ok"] for t in report.mysql_tables)
    for t in TABLES:
        assert _contents(mariadb, target, t) == _contents(mariadb, REC_DB, t), t
    assert report.record and _store(recovery_config).exists(report.record)


def test_restore_refuses_to_overwrite_without_force_and_keeps_the_old_tables_with_it(
    backup: Any, recovery_config: str, mariadb: Service
) -> None:
    from flows.restore import RestoreParams

    target = fresh_name("rs")
    root_sql(
        mariadb,
        f"CREATE DATABASE {target}",
        f"CREATE TABLE {target}.bk_blobs (id INT PRIMARY KEY, note TEXT)",
        f"INSERT INTO {target}.bk_blobs VALUES (99, 'keep me')",
    )
    params = {
        "config_path": recovery_config,
        "backup_id": backup.backup_id,
        "target_database": target,
        "heavydb": False,
        "tables": ["bk_blobs"],
    }
    with serverless() as s, pytest.raises(Exception, match="already has table"):
        s.call("restore", RestoreParams(**params))
    assert root_sql(mariadb, f"SELECT note FROM {target}.bk_blobs") == [("keep me",)]
    with serverless() as s:
        ok, report = s.run("restore", RestoreParams(**params, force=True))
    assert ok, report
    assert _contents(mariadb, target, "bk_blobs") == _contents(mariadb, REC_DB, "bk_blobs")
    aside = [d for (d,) in root_sql(mariadb, "SHOW DATABASES") if d.startswith(f"{target}__before")]
    assert len(aside) == 1
    assert root_sql(mariadb, f"SELECT note FROM `{aside[0]}`.bk_blobs") == [("keep me",)]


def test_the_live_database_is_never_a_default_target(backup: Any, recovery_config: str) -> None:
    from flows.restore import RestoreParams

    with serverless() as s, pytest.raises(Exception, match="live database"):
        s.call(
            "restore",
            RestoreParams(
                config_path=recovery_config,
                backup_id=backup.backup_id,
                target_database=REC_DB,
                heavydb=False,
            ),
        )


def _copy_backup(store: Any, backup_id: str) -> str:
    """A second, identical backup (same manifest, new id) to damage without harming others."""
    from tbs_emergency.recovery.ids import new_id
    from tbs_emergency.recovery.manifest import Manifest

    m = catalog.load_manifest(store, backup_id)
    new = new_id(m.started_at)
    doc = m.model_dump_json().replace(backup_id, new)
    copy = Manifest.model_validate_json(doc)
    for o in m.objects:
        store.put(o.key.replace(backup_id, new), store.get(o.key))
    store.put(layout.manifest_key(new), copy.to_bytes())
    return new


def test_a_corrupted_object_is_refused_by_name_before_anything_is_touched(
    backup: Any, recovery_config: str, mariadb: Service
) -> None:
    from flows.restore import RestoreParams

    store = _store(recovery_config)
    damaged = _copy_backup(store, backup.backup_id)
    m = catalog.load_manifest(store, damaged)
    assert m.mysql is not None
    victim = m.mysql.tables[0].chunks[-1]
    # same sha256 metadata, different content: what bit rot or tampering looks like
    head = store.head(victim.key)
    data = bytearray(store.get(victim.key))
    data[len(data) // 2] ^= 0xFF
    store.client.put_object(
        Bucket=store.config.bucket,
        Key=store.full_key(victim.key),
        Body=bytes(data),
        Metadata=dict(head.metadata),
    )
    target = fresh_name("rs")
    with serverless() as s, pytest.raises(Exception) as err:
        s.call(
            "restore",
            RestoreParams(
                config_path=recovery_config,
                backup_id=damaged,
                target_database=target,
                heavydb=False,
            ),
        )
    assert victim.key in str(err.value)
    assert "sha256" in str(err.value)
    assert not root_sql(mariadb, f"SHOW DATABASES LIKE '{target}'"), "nothing was touched"


def test_a_missing_object_is_refused_by_name(
    backup: Any, recovery_config: str, mariadb: Service
) -> None:
    from flows.restore import RestoreParams

    store = _store(recovery_config)
    damaged = _copy_backup(store, backup.backup_id)
    m = catalog.load_manifest(store, damaged)
    assert m.mysql is not None
    victim = m.mysql.tables[-1].chunks[0]
    store.delete(victim.key)
    target = fresh_name("rs")
    with serverless() as s, pytest.raises(Exception) as err:
        s.call(
            "restore",
            RestoreParams(
                config_path=recovery_config,
                backup_id=damaged,
                target_database=target,
                heavydb=False,
            ),
        )
    assert victim.key in str(err.value)
    assert "not found" in str(err.value)
    assert not root_sql(mariadb, f"SHOW DATABASES LIKE '{target}'")


def test_a_backup_without_manifest_cannot_be_restored(recovery_config: str) -> None:
    from flows.restore import RestoreParams

    with serverless() as s, pytest.raises(Exception, match="no manifest"):
        s.call(
            "restore",
            RestoreParams(config_path=recovery_config, backup_id="20200101T000000Z-abcdef"),
        )
