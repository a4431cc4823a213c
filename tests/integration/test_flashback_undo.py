"""Flashback against a real MariaDB ROW binlog: undo the row changes since T on chosen tables.

Covers: the dry run (inverse statements with column names, nothing changed), applying in one
transaction (the table is back to its state at T, other tables untouched), an idempotent rerun,
refusing a window that contains an earlier flashback or a DDL, and refusing to apply when a
touched row changed after the plan (nothing applied).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sandbox.proc import Service
from tests.integration.test_backup_support import FlowFailed, root_sql, serverless, write_config

pytestmark = pytest.mark.integration

DB = "fb_archive"


@pytest.fixture(scope="module")
def fb_config(
    mariadb: Service, moto: Service, settings: Any, tmp_path_factory: pytest.TempPathFactory
) -> str:
    root_sql(mariadb, f"DROP DATABASE IF EXISTS {DB}", f"CREATE DATABASE {DB}")
    from tbs_emergency.connectors.objectstore import S3ObjectStore

    S3ObjectStore(settings.storage).ensure_bucket()
    return write_config(tmp_path_factory.mktemp("fb-config"), settings, database=DB)


def _fresh_tables(mariadb: Service, *names: str) -> None:
    for name in names:
        root_sql(
            mariadb,
            f"DROP TABLE IF EXISTS {name}",
            f"CREATE TABLE {name} (id INT PRIMARY KEY, v VARCHAR(40), f FLOAT, d DECIMAL(9,3),"
            " b VARBINARY(8), at DATETIME(6))",
            f"INSERT INTO {name} SELECT seq, CONCAT('v', seq, IF(seq % 3 = 0, CHAR(10), '')),"
            " seq / 7, seq / 3, IF(seq % 2, 0x00FF27, NULL), '2025-01-24 10:00:00'"
            " + INTERVAL seq SECOND FROM seq_1_to_200",
            database=DB,
        )


def _rows(mariadb: Service, table: str) -> list[tuple[Any, ...]]:
    return root_sql(mariadb, f"SELECT * FROM {table} ORDER BY id", database=DB)


def _next_second(mariadb: Service) -> datetime:
    """Wait until a new second starts on the server; return that second (UTC)."""
    (now,) = root_sql(mariadb, "SELECT UTC_TIMESTAMP(6)")[0]
    time.sleep(1.0 - now.microsecond / 1e6 + 0.01)
    return now.replace(microsecond=0, tzinfo=UTC) + timedelta(seconds=1)


def _damage(mariadb: Service, table: str) -> None:
    root_sql(
        mariadb,
        f"DELETE FROM {table} WHERE id BETWEEN 10 AND 29",
        f"UPDATE {table} SET v = 'oops', f = f * 2, b = 0x5C WHERE id % 10 = 1",
        f"INSERT INTO {table} VALUES (1000, 'new', 1.5, 2.5, NULL, NOW(6))",
        f"UPDATE {table} SET id = 2000 WHERE id = 50",
        database=DB,
    )


def test_flashback_undoes_the_changes_since_t_in_one_transaction(
    fb_config: str, mariadb: Service
) -> None:
    from flows.flashback import FlashbackParams

    _fresh_tables(mariadb, "fb_orders", "fb_other")
    since = _next_second(mariadb)
    before = _rows(mariadb, "fb_orders")
    other_before = _rows(mariadb, "fb_other")
    _damage(mariadb, "fb_orders")
    _damage(mariadb, "fb_other")
    damaged_other = _rows(mariadb, "fb_other")
    with serverless() as s:
        dry = s.call(
            "flashback",
            FlashbackParams(config_path=fb_config, since=since, tables=["fb_orders"], dry_run=True),
        )
    assert dry.ok and not dry.applied
    assert _rows(mariadb, "fb_orders") != before, "a dry run changes nothing"
    sql = "\n".join(dry.statements)
    assert "INSERT INTO `fb_archive`.`fb_orders` (`id`, `v`, `f`, `d`, `b`, `at`)" in sql
    assert "DELETE FROM `fb_archive`.`fb_orders` WHERE `id` = 1000" in sql
    assert "SET `id` = 50" in sql
    assert dry.statements[0].startswith("UPDATE"), "newest change is undone first"
    with serverless() as s:
        report = s.call(
            "flashback",
            FlashbackParams(
                config_path=fb_config,
                since=since,
                tables=["fb_orders"],
                flashback_id=dry.flashback_id,
            ),
        )
    assert report.applied and not report.already_applied
    assert _rows(mariadb, "fb_orders") == before
    assert _rows(mariadb, "fb_other") == damaged_other != other_before, "other tables untouched"
    assert report.journal
    # the same flashback again: recognised, nothing applied twice
    with serverless() as s:
        again = s.call(
            "flashback",
            FlashbackParams(
                config_path=fb_config,
                since=since,
                tables=["fb_orders"],
                flashback_id=dry.flashback_id,
            ),
        )
    assert again.already_applied
    assert _rows(mariadb, "fb_orders") == before
    # a new flashback over a window that holds the first one would redo the damage: refused
    with serverless() as s, pytest.raises(FlowFailed) as err:
        s.call(
            "flashback", FlashbackParams(config_path=fb_config, since=since, tables=["fb_orders"])
        )
    assert dry.flashback_id in " ".join(err.value.report.refusals)
    assert _rows(mariadb, "fb_orders") == before


def test_a_row_changed_after_the_plan_stops_the_flashback(fb_config: str, mariadb: Service) -> None:
    from prefect.logging import disable_run_logger

    from tasks.recovery import apply_flashback, plan_flashback

    _fresh_tables(mariadb, "fb_conflict")
    since = _next_second(mariadb)
    _damage(mariadb, "fb_conflict")
    with disable_run_logger():
        plan = plan_flashback.fn(
            fb_config, "green", "20260101T000000Z-0000aa", since, ["fb_conflict"]
        )
        assert plan.applicable and plan.total_changes > 0
        root_sql(mariadb, "UPDATE fb_conflict SET v = 'someone else' WHERE id = 1", database=DB)
        after_plan = _rows(mariadb, "fb_conflict")
        outcome = apply_flashback.fn(fb_config, "green", plan)
    assert not outcome.applied
    assert any("fb_conflict" in c and "changed again" in c for c in outcome.conflicts)
    assert _rows(mariadb, "fb_conflict") == after_plan, "nothing applied"


def test_a_ddl_in_the_window_is_refused(fb_config: str, mariadb: Service) -> None:
    from flows.flashback import FlashbackParams

    _fresh_tables(mariadb, "fb_ddl")
    since = _next_second(mariadb)
    root_sql(
        mariadb,
        "DELETE FROM fb_ddl WHERE id < 5",
        "ALTER TABLE fb_ddl ADD COLUMN z INT",
        database=DB,
    )
    with serverless() as s, pytest.raises(FlowFailed) as err:
        s.call(
            "flashback",
            FlashbackParams(config_path=fb_config, since=since, tables=["fb_ddl"], dry_run=True),
        )
    assert any("ALTER" in r for r in err.value.report.refusals)


def test_since_in_the_future_is_refused(fb_config: str, mariadb: Service) -> None:
    from flows.flashback import FlashbackParams

    _fresh_tables(mariadb, "fb_future")
    with serverless() as s, pytest.raises(FlowFailed) as err:
        s.call(
            "flashback",
            FlashbackParams(
                config_path=fb_config, tables=["fb_future"], since=datetime(2999, 1, 1, tzinfo=UTC)
            ),
        )
    assert "future" in " ".join(err.value.report.refusals)


@pytest.mark.parametrize("engine", ["MyISAM", "Aria", "MEMORY"])
def test_a_non_transactional_table_is_refused_before_anything(
    fb_config: str, mariadb: Service, engine: str
) -> None:
    """Its changes cannot be undone in one transaction: refused as bad input (the CLI exits
    2), naming the table and its engine; the table is left as it is, no journal is written."""
    from flows.flashback import FlashbackParams

    name = f"fb_{engine.lower()}"
    _fresh_tables(mariadb, "fb_innodb_too")
    root_sql(
        mariadb,
        f"DROP TABLE IF EXISTS {name}",
        f"CREATE TABLE {name} (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE={engine}",
        f"INSERT INTO {name} SELECT seq, CONCAT('v', seq) FROM seq_1_to_20",
        database=DB,
    )
    since = _next_second(mariadb)
    root_sql(mariadb, f"DELETE FROM {name} WHERE id < 5", database=DB)
    after = _rows(mariadb, name)
    for dry_run in (True, False):
        with serverless() as s, pytest.raises(FlowFailed) as err:
            s.call(
                "flashback",
                FlashbackParams(
                    config_path=fb_config,
                    since=since,
                    tables=[name, "fb_innodb_too"],
                    dry_run=dry_run,
                ),
            )
        report = err.value.report
        assert report.bad_input and not report.applied and report.journal is None
        assert report.refusals == [
            f"table {DB}.{name} uses the {engine} engine, which is not transactional: flashback"
            " undoes changes in one transaction and needs InnoDB; nothing was done"
        ]
        assert not report.statements
    assert _rows(mariadb, name) == after
