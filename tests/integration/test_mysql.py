"""The MySQL connector against a real MariaDB (sandbox/services.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tbs_emergency.config import MySQLConfig, Secret
from tbs_emergency.connectors import Connectors
from tbs_emergency.connectors.mysql import MySQLDatabase
from tbs_emergency.errors import ConnectorError, NotFound, Refused, TimedOut, Unreachable

pytestmark = pytest.mark.integration


@pytest.fixture
def db(settings: Any, root_sql: Any, known: Any) -> Iterator[MySQLDatabase]:
    root_sql(
        f"DROP TABLE IF EXISTS {known.database}.trades",
        f"CREATE TABLE {known.database}.trades (trade_id INT PRIMARY KEY, symbol VARCHAR(16),"
        " qty INT, at DATETIME)",
        f"INSERT INTO {known.database}.trades VALUES (1,'IBM',100,'2025-01-24 10:00:00'),"
        " (2,'RHAT',50,'2025-01-24 10:01:00'), (3,'MSFT',7,NULL)",
    )
    conn = Connectors(settings)
    database = conn.mysql("blue")
    yield database
    conn.close()
    root_sql("SET GLOBAL read_only = 0")


def test_ping_reports_version_and_latency(db: MySQLDatabase) -> None:
    p = db.ping()
    assert p.reachable, p.detail
    assert p.system == "mysql[blue,green]"
    assert p.latency_ms is not None and p.latency_ms > 0
    assert "MariaDB" in p.detail


def test_row_count_tables_and_query(db: MySQLDatabase, known: Any) -> None:
    assert db.row_count("trades") == 3
    assert db.row_count(f"{known.database}.trades") == 3
    assert "trades" in db.tables()
    rows = db.query("SELECT symbol FROM trades WHERE qty > %s ORDER BY trade_id", (10,))
    assert rows == [("IBM",), ("RHAT",)]
    assert db.query_dicts("SELECT trade_id FROM trades WHERE trade_id = %(id)s", {"id": 2}) == [
        {"trade_id": 2}
    ]


def test_session_is_utc(db: MySQLDatabase) -> None:
    assert db.query("SELECT @@session.time_zone")[0][0] == "+00:00"


def test_missing_table_is_not_found(db: MySQLDatabase) -> None:
    with pytest.raises(NotFound) as err:
        db.row_count("no_such_table")
    assert err.value.system == "mysql[blue,green]"
    assert "no_such_table" in str(err.value)


def test_read_only_flips_with_set_global(db: MySQLDatabase, root_sql: Any) -> None:
    assert db.is_read_only() is False
    root_sql("SET GLOBAL read_only = 1")
    assert db.is_read_only() is True
    # The application user has no SUPER: its writes are refused now.
    with pytest.raises(Refused) as err:
        db.execute("INSERT INTO trades VALUES (9, 'X', 1, NULL)")
    assert "read-only" in str(err.value).lower() or "1290" in str(err.value)
    root_sql("SET GLOBAL read_only = 0")
    assert db.is_read_only() is False
    db.execute("INSERT INTO trades VALUES (9, 'X', 1, NULL)")
    assert db.row_count("trades") == 4


def test_binlog_position_needs_recovery_account(
    settings: Any, db: MySQLDatabase, known: Any
) -> None:
    # The application user lacks BINLOG MONITOR.
    with pytest.raises(Refused):
        db.binlog_position()
    cfg = settings.environment("blue").mysql
    recovery = MySQLDatabase(
        cfg, "mysql[blue]", user="tbs_recovery", password=known.recovery_password
    )
    try:
        file, pos, gtid = recovery.binlog_position()
        assert file.startswith("mariadb-bin.")
        assert pos > 0
        recovery.execute("INSERT INTO trades VALUES (10, 'Y', 2, NULL)")
        file2, pos2, gtid2 = recovery.binlog_position()
        assert (file2, pos2) > (file, pos)
        assert gtid2 and gtid2 != gtid
    finally:
        recovery.close()


def test_reconnects_after_the_server_kills_the_session(db: MySQLDatabase, root_sql: Any) -> None:
    conn_id = db.query("SELECT CONNECTION_ID()")[0][0]
    root_sql(f"KILL {int(conn_id)}")
    time.sleep(0.1)
    # A read is repeated once on a fresh connection.
    assert db.row_count("trades") == 3
    assert db.query("SELECT CONNECTION_ID()")[0][0] != conn_id


def test_wrong_password_is_refused_without_the_password(settings: Any) -> None:
    cfg = settings.environment("blue").mysql.model_copy(
        update={"password": Secret(value="wrong-Secret-99")}
    )
    db = MySQLDatabase(cfg, "mysql[blue]")
    with pytest.raises(Refused) as err:
        db.row_count("trades")
    assert "wrong-Secret-99" not in str(err.value)
    assert err.value.system == "mysql[blue]"
    p = db.ping()
    assert not p.reachable and "wrong-Secret-99" not in p.detail


def test_closed_port_is_unreachable(closed_port: int, known: Any) -> None:
    cfg = MySQLConfig(
        host="127.0.0.1", port=closed_port, password=Secret(value=known.app_password), timeout_s=2
    )
    db = MySQLDatabase(cfg, "mysql[blue]")
    with pytest.raises(Unreachable) as err:
        db.is_read_only()
    text = str(err.value)
    assert text.startswith("mysql[blue]:")
    assert str(closed_port) in text
    assert known.app_password not in text
    assert not db.ping().reachable


def test_silent_server_times_out(blackhole_port: int, known: Any) -> None:
    cfg = MySQLConfig(
        host="127.0.0.1",
        port=blackhole_port,
        password=Secret(value=known.app_password),
        timeout_s=0.5,
    )
    db = MySQLDatabase(cfg, "mysql[green]")
    start = time.monotonic()
    with pytest.raises(TimedOut) as err:
        db.query("SELECT 1")
    assert time.monotonic() - start < 5
    assert err.value.system == "mysql[green]"
    assert known.app_password not in str(err.value)


def test_slow_query_times_out(settings: Any) -> None:
    cfg = settings.environment("blue").mysql.model_copy(update={"timeout_s": 0.5})
    db = MySQLDatabase(cfg, "mysql[blue]")
    try:
        with pytest.raises(TimedOut):
            db.query("SELECT SLEEP(3)")
        # The connector recovers on the next call.
        assert db.query("SELECT 1") == [(1,)]
    finally:
        db.close()


def test_errors_are_connector_errors(db: MySQLDatabase) -> None:
    with pytest.raises(ConnectorError) as err:
        db.query("SELEKT nonsense")
    assert isinstance(err.value, Refused)
