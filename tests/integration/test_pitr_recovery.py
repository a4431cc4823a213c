"""Point-in-time recovery of MySQL against a real MariaDB binlog.

The central property: recovering to a random instant T gives exactly the data a snapshot taken
at T held, while writes kept landing before and after T. Also: refusals (future, before the
oldest backup, partial backups), the dry-run plan, the verification and the reconciliation.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pymysql
import pytest

from sandbox.proc import Service
from tests.integration.test_backup_support import (
    fresh_name,
    root_sql,
    serverless,
    write_config,
)

pytestmark = pytest.mark.integration

DB = "pitr_archive"


@pytest.fixture(scope="module")
def pitr_config(
    mariadb: Service, moto: Service, settings: Any, tmp_path_factory: pytest.TempPathFactory
) -> str:
    root_sql(mariadb, f"DROP DATABASE IF EXISTS {DB}", f"CREATE DATABASE {DB}")
    root_sql(
        mariadb,
        f"CREATE TABLE {DB}.orders (id INT PRIMARY KEY, account INT NOT NULL,"
        " amount DECIMAL(12,2), note VARCHAR(40), updated_at TIMESTAMP(6) NOT NULL"
        " DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))",
        f"INSERT INTO {DB}.orders (id, account, amount, note) SELECT seq, seq % 17, seq * 1.5,"
        " CONCAT('seed ', seq) FROM seq_1_to_2000",
        f"CREATE TABLE {DB}.ledger (account INT, day DATE, total DECIMAL(14,2),"
        " PRIMARY KEY (account, day))",
        f"INSERT INTO {DB}.ledger SELECT seq % 17, '2025-01-01' + INTERVAL (seq DIV 17) DAY,"
        " seq FROM seq_1_to_500",
        database=DB,
    )
    from tbs_emergency.connectors.objectstore import S3ObjectStore

    S3ObjectStore(settings.storage).ensure_bucket()
    return write_config(tmp_path_factory.mktemp("pitr-config"), settings, database=DB)


def _connect(mariadb: Service) -> Any:
    return pymysql.connect(
        unix_socket=mariadb.extra["socket"],
        user="root",
        password="",
        autocommit=True,
        database=DB,
        init_command="SET time_zone='+00:00'",
    )


def _state(cur: Any) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for t in ("orders", "ledger"):
        cur.execute(f"SELECT * FROM {t} ORDER BY 1, 2")
        out[t] = list(cur.fetchall())
    return out


def _write(cur: Any, rng: random.Random, n: int) -> None:
    op = rng.random()
    if op < 0.4:
        cur.execute(
            "INSERT INTO orders (id, account, amount, note) VALUES (%s, %s, %s, %s)",
            (10_000 + n, rng.randint(0, 16), rng.randint(1, 9999) / 100, f"live {n}"),
        )
    elif op < 0.7:
        cur.execute(
            "UPDATE orders SET amount = amount + 1, note = %s WHERE id = %s",
            (f"upd {n}", rng.randint(1, 2000)),
        )
    elif op < 0.85:
        cur.execute("DELETE FROM orders WHERE id = %s", (rng.randint(1, 2000),))
    else:
        cur.execute(
            "INSERT INTO ledger VALUES (%s, '2026-01-01' + INTERVAL %s DAY, %s)"
            " ON DUPLICATE KEY UPDATE total = total + VALUES(total)",
            (rng.randint(0, 16), rng.randint(0, 30), rng.randint(1, 100)),
        )


@pytest.fixture(scope="module")
def base_backup(pitr_config: str) -> Any:
    from flows.emergency_backup import BackupParams

    with serverless() as s:
        return s.call(
            "emergency_backup",
            BackupParams(
                config_path=pitr_config, heavydb=False, connections=2, apply_retention=False
            ),
        )


def _server_now(mariadb: Service) -> datetime:
    (now,) = root_sql(mariadb, "SELECT UTC_TIMESTAMP(6)")[0]
    return now.replace(tzinfo=UTC)


def test_recovery_to_a_random_instant_equals_a_snapshot_taken_then(
    base_backup: Any, pitr_config: str, mariadb: Service
) -> None:
    from flows.point_in_time_recovery import PitrParams

    seed = int(time.time())
    rng = random.Random(seed)
    con = _connect(mariadb)
    cur = con.cursor()
    # T: a whole second 1.5 to 3.5 s from now; writes run continuously across it
    start = _server_now(mariadb)
    target = (start + timedelta(seconds=rng.uniform(1.5, 3.5))).replace(microsecond=0)
    snapshot = None
    n = before = 0
    deadline = target + timedelta(seconds=1.5)
    while True:
        now = _server_now(mariadb)
        if snapshot is None and now >= target:
            snapshot = _state(cur)  # everything committed before T, nothing after
            before = n
        if now >= deadline:
            break
        if snapshot is None and target - now < timedelta(seconds=0.25):
            # A statement begun just before T may carry T's second in the binary log (its own
            # start time) while the check before it saw T-1: no write at the boundary, so the
            # snapshot is exactly what a recovery to T must give.
            continue
        _write(cur, rng, n)
        n += 1
    con.close()
    assert snapshot is not None
    assert before >= 2 and n - before >= 2, f"seed {seed}: writes {before} before, {n} in all"
    recovered = fresh_name("pitr")
    with serverless() as s:
        report = s.call(
            "point_in_time_recovery",
            PitrParams(config_path=pitr_config, target_at=target, target_database=recovered),
        )
    assert report.ok and report.backup_id == base_backup.backup_id
    assert all(t["ok"] for t in report.tables), report.tables
    con = _connect(mariadb)
    con.select_db(recovered)
    got = _state(con.cursor())
    con.close()
    assert got == snapshot, f"seed {seed}, T {target.isoformat()}"
    live = _state(_connect(mariadb).cursor())
    assert got != live, "writes after T are not in the recovered database"
    assert report.reconcile, "the reconciliation ran"


def test_dry_run_shows_the_plan_and_changes_nothing(
    base_backup: Any, pitr_config: str, mariadb: Service
) -> None:
    from flows.point_in_time_recovery import PitrParams

    target = fresh_name("pitr")
    at = _server_now(mariadb) - timedelta(microseconds=1)
    with serverless() as s:
        report = s.call(
            "point_in_time_recovery",
            PitrParams(config_path=pitr_config, target_at=at, target_database=target, dry_run=True),
        )
    text = "\n".join(report.plan)
    assert base_backup.backup_id in text and "replay the binary log" in text
    assert "whole seconds" in text  # T had a fraction: the plan says what that means
    assert not root_sql(mariadb, f"SHOW DATABASES LIKE '{target}'")


@pytest.mark.parametrize(
    ("when", "reason"),
    [
        (lambda now, b: now + timedelta(hours=1), "in the future"),
        (lambda now, b: b - timedelta(days=3650), "before the oldest backup"),
    ],
)
def test_refusals_say_why(
    base_backup: Any, pitr_config: str, mariadb: Service, when: Any, reason: str
) -> None:
    from flows.point_in_time_recovery import PitrParams
    from tests.integration.test_backup_support import FlowFailed

    taken = datetime.fromisoformat(_taken_at(pitr_config, base_backup.backup_id))
    at = when(_server_now(mariadb), taken)
    with serverless() as s, pytest.raises(FlowFailed) as err:
        s.call(
            "point_in_time_recovery",
            PitrParams(config_path=pitr_config, target_at=at, target_database=fresh_name("p")),
        )
    assert reason in (err.value.report.refused or "")


def _taken_at(cfg: str, backup_id: str) -> str:
    from tasks.incident import connectors_for
    from tbs_emergency.recovery import catalog

    return catalog.load_manifest(connectors_for(cfg).store(), backup_id).taken_at.isoformat()


def test_the_target_must_be_a_new_database(base_backup: Any, pitr_config: str) -> None:
    from flows.point_in_time_recovery import PitrParams
    from tests.integration.test_backup_support import FlowFailed

    with serverless() as s, pytest.raises(FlowFailed) as err:
        s.call(
            "point_in_time_recovery",
            PitrParams(config_path=pitr_config, target_at=datetime.now(UTC), target_database=DB),
        )
    assert "live database" in (err.value.report.refused or "")
