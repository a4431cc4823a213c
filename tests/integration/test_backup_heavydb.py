"""HeavyDB backup, restore and recovery to T against the HeavyDB sandbox server (through the real
heavydb client) with the MySQL archive as the backfill source.

Covers: DUMP per table with its epoch, uploaded with sha256 (and verified by re-reading);
restore into a new table; a corrupted dump refused by name; recovery to T by epoch rollback
while the epoch is retained, and by dump + backfill from the archive when it is not.
"""

# ruff: noqa: F401, F811  (fixtures imported from the support module)
from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sandbox.proc import Service
from tests.integration.test_backup_support import (
    REC_DB,
    fresh_name,
    heavy_config,
    root_sql,
    serverless,
)

pytestmark = pytest.mark.integration


def _heavy(cfg: str) -> Any:
    from tasks.incident import connectors_for

    return connectors_for(cfg).heavydb("green")


def _rows(cfg: str, table: str) -> list[tuple[Any, ...]]:
    return sorted(_heavy(cfg).query(f"SELECT id, v FROM {table}"))


def _add(cfg: str, mariadb: Service, rows: list[tuple[int, str]]) -> datetime:
    """The app's write path: the same row into HeavyDB and the MySQL archive."""
    (now,) = root_sql(mariadb, "SELECT UTC_TIMESTAMP(6)")[0]
    for i, v in rows:
        _heavy(cfg).query(f"INSERT INTO hot VALUES ({i}, '{v}', '{now.isoformat(sep=' ')}')")
        root_sql(
            mariadb,
            f"INSERT INTO hot VALUES ({i}, '{v}', '{now.isoformat(sep=' ')}')",
            database=REC_DB,
        )
    return now.replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def heavy_backup(heavy_config: str, mariadb: Service, tmp_path_factory: Any) -> Any:
    from flows.emergency_backup import BackupParams

    hdb = _heavy(heavy_config)
    for t in hdb.tables():
        if t.startswith("hot"):
            hdb.query(f"DROP TABLE {t}")
    hdb.query("CREATE TABLE hot (id BIGINT, v TEXT ENCODING DICT(32), updated_at TIMESTAMP(6))")
    root_sql(
        mariadb,
        "DROP TABLE IF EXISTS hot",
        "CREATE TABLE hot (id BIGINT PRIMARY KEY, v VARCHAR(40), updated_at DATETIME(6))",
        database=REC_DB,
    )
    _add(heavy_config, mariadb, [(i, f"seed{i}") for i in range(1, 6)])
    dumps = tmp_path_factory.mktemp("dumps")
    with serverless() as s:
        report = s.call(
            "emergency_backup",
            BackupParams(
                config_path=heavy_config,
                mysql=False,
                tables=["hot"],
                heavydb_dump_dir=str(dumps),
                apply_retention=False,
            ),
        )
    return report, str(dumps)


def test_heavydb_backup_records_the_epoch_and_restores_into_a_new_table(
    heavy_backup: Any, heavy_config: str
) -> None:
    from flows.restore import RestoreParams
    from tasks.incident import connectors_for
    from tbs_emergency.recovery import catalog

    report, dumps = heavy_backup
    store = connectors_for(heavy_config).store()
    manifest = catalog.load_manifest(store, report.backup_id)
    assert manifest.heavydb is not None and manifest.mysql is None
    (entry,) = manifest.heavydb.tables
    from tasks.backup import heavydb_recovery

    assert entry.rows == 5 and entry.epoch == heavydb_recovery(heavy_config, "green").table_epoch(
        "hot"
    )
    assert store.head(entry.key).sha256 == entry.sha256
    with serverless() as s:
        r = s.call(
            "restore",
            RestoreParams(
                config_path=heavy_config,
                backup_id=report.backup_id,
                mysql=False,
                heavydb_suffix="_copy",
                heavydb_restore_dir=dumps,
            ),
        )
    assert r.heavydb_tables[0]["rows"] == 5
    assert _rows(heavy_config, "hot_copy") == _rows(heavy_config, "hot")


def test_a_corrupted_dump_is_refused_by_name(heavy_backup: Any, heavy_config: str) -> None:
    from flows.restore import RestoreParams
    from tasks.incident import connectors_for
    from tbs_emergency.recovery import catalog

    report, dumps = heavy_backup
    store = connectors_for(heavy_config).store()
    entry = catalog.load_manifest(store, report.backup_id).heavydb.tables[0]  # type: ignore[union-attr]
    head = store.head(entry.key)
    original = store.get(entry.key)
    try:
        store.client.put_object(
            Bucket=store.config.bucket,
            Key=store.full_key(entry.key),
            Body=original[:-3] + b"xyz",
            Metadata=dict(head.metadata),
        )
        name = fresh_name("_bad")
        with serverless() as s, pytest.raises(Exception) as err:
            s.call(
                "restore",
                RestoreParams(
                    config_path=heavy_config,
                    backup_id=report.backup_id,
                    mysql=False,
                    heavydb_suffix=name,
                    heavydb_restore_dir=dumps,
                ),
            )
        assert entry.key in str(err.value)
        assert f"hot{name}" not in _heavy(heavy_config).tables()
    finally:
        store.client.put_object(
            Bucket=store.config.bucket,
            Key=store.full_key(entry.key),
            Body=original,
            Metadata=dict(head.metadata),
        )


def test_recovery_to_t_by_epoch_then_by_dump_with_backfill_from_the_archive(
    heavy_backup: Any, heavy_config: str, mariadb: Service
) -> None:
    from flows.point_in_time_recovery import HeavyPitrParams

    _, dumps = heavy_backup
    time.sleep(1.1)
    _add(heavy_config, mariadb, [(100, "between")])  # after the dump, before T
    time.sleep(0.2)
    (t,) = root_sql(mariadb, "SELECT UTC_TIMESTAMP(6)")[0]
    target = t.replace(tzinfo=UTC)
    time.sleep(0.2)
    _add(heavy_config, mariadb, [(200, "after")])  # after T
    at_t = sorted([*((i, f"seed{i}") for i in range(1, 6)), (100, "between")])
    with serverless() as s:
        plan = s.call(
            "heavydb_point_in_time_recovery",
            HeavyPitrParams(
                config_path=heavy_config, target_at=target, tables=["hot"], dry_run=True
            ),
        )
        assert "roll back to epoch" in plan.plan[0] and "backfill" in plan.plan[0]
        done = s.call(
            "heavydb_point_in_time_recovery",
            HeavyPitrParams(
                config_path=heavy_config,
                target_at=target,
                tables=["hot"],
                heavydb_restore_dir=dumps,
                validate_recovery=False,  # no application here; e2e covers the validation
            ),
        )
    assert done.tables[0]["action"] == "rollback" and done.tables[0]["backfilled"] == 1
    assert _rows(heavy_config, "hot") == at_t
    # verified with the integrity engine: every archive row changed at or before T identical,
    # the row written after T counted apart (its state at T is not in the archive)
    c = done.tables[0]["comparison"]
    assert c["method"].startswith("integrity diff") and c["ok"], c
    assert (c["changed_after"], c["only_heavydb"], c["different"]) == (1, 0, 0), c
    # a row whose content differs (same key, same change time) is found and named
    from tasks.recovery import compare_heavydb_with_archive

    _heavy(heavy_config).query("UPDATE hot SET v = 'tampered' WHERE id = 3")
    bad = compare_heavydb_with_archive.fn(heavy_config, "green", "hot", target)
    assert not bad["ok"] and bad["different"] == 1, bad
    assert bad["sample_different"][0]["key"] == 3
    _heavy(heavy_config).query("UPDATE hot SET v = 'seed3' WHERE id = 3")
    # many writes later the epoch is no longer retained: the dump is restored and backfilled
    for i in range(300, 306):
        _add(heavy_config, mariadb, [(i, "later")])
    with serverless() as s:
        done = s.call(
            "heavydb_point_in_time_recovery",
            HeavyPitrParams(
                config_path=heavy_config,
                target_at=target,
                tables=["hot"],
                heavydb_restore_dir=dumps,
                validate_recovery=False,  # no application here; e2e covers the validation
            ),
        )
    assert done.tables[0]["action"] == "restore", done.tables
    assert _rows(heavy_config, "hot") == at_t
    assert any(t.startswith("hot__before_") for t in _heavy(heavy_config).tables())


def test_recovery_to_t_in_the_future_is_refused(heavy_config: str) -> None:
    from flows.point_in_time_recovery import HeavyPitrParams
    from tests.integration.test_backup_support import FlowFailed

    with serverless() as s, pytest.raises(FlowFailed):
        s.call(
            "heavydb_point_in_time_recovery",
            HeavyPitrParams(
                config_path=heavy_config,
                tables=["hot"],
                target_at=datetime.now(UTC) + timedelta(hours=1),
            ),
        )
