"""The HeavyDB connector against the sandbox's HeavyDB-wire server (real pyheavydb client)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tbs_emergency.config import HeavyDBConfig, Secret
from tbs_emergency.connectors.heavydb import HeavyDBDatabase
from tbs_emergency.errors import NotFound, Refused, TimedOut, Unreachable

pytestmark = pytest.mark.integration


def _config(server: Any, **changes: Any) -> HeavyDBConfig:
    base: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "password": Secret(value="HyperInteractive"),
        "timeout_s": 10,
    }
    base.update(changes)
    return HeavyDBConfig(**base)


@pytest.fixture
def db(heavydb_server: Any) -> Iterator[HeavyDBDatabase]:
    database = HeavyDBDatabase(_config(heavydb_server), "heavydb[blue]")
    database.query("DROP TABLE IF EXISTS trades")
    database.query("CREATE TABLE trades (trade_id INTEGER, symbol TEXT, qty INTEGER)")
    database.query("INSERT INTO trades VALUES (1, 'IBM', 100)")
    database.query("INSERT INTO trades VALUES (2, 'RHAT', 50)")
    database.query("INSERT INTO trades VALUES (3, 'MSFT', 7)")
    yield database
    database.close()


def test_ping(db: HeavyDBDatabase) -> None:
    p = db.ping()
    assert p.reachable, p.detail
    assert p.system == "heavydb[blue]"
    assert p.latency_ms is not None and p.latency_ms > 0


def test_row_count_tables_query(db: HeavyDBDatabase) -> None:
    assert db.row_count("trades") == 3
    assert "trades" in db.tables()
    assert db.query("SELECT symbol FROM trades WHERE qty > ? ORDER BY trade_id", (10,)) == [
        ("IBM",),
        ("RHAT",),
    ]
    assert db.query("SELECT COUNT(*) FROM trades WHERE symbol = :s", {"s": "MSFT"}) == [(1,)]
    assert db.is_read_only() is False


def test_missing_table_is_not_found(db: HeavyDBDatabase) -> None:
    with pytest.raises(NotFound) as err:
        db.row_count("no_such_table")
    assert err.value.system == "heavydb[blue]"


def test_dead_session_reconnects_once(db: HeavyDBDatabase) -> None:
    db.row_count("trades")
    con = db._con
    con._client.disconnect(con._session)  # behind the connector's back
    assert db.row_count("trades") == 3
    assert db._con is not con


def test_read_only_server(heavydb_server: Any, tmp_path: Path) -> None:
    from sandbox.heavydb.testing import start_server

    ro = start_server(tmp_path / "ro", read_only=True)
    try:
        db = HeavyDBDatabase(_config(ro), "heavydb[green]")
        assert db.is_read_only() is True
        assert "read-only" in db.ping().detail
        with pytest.raises(Refused):
            db.query("CREATE TABLE t (a INTEGER)")
        db.close()
    finally:
        ro.stop()


def test_server_restart_is_survived(tmp_path: Path) -> None:
    from sandbox.heavydb.testing import start_server

    srv = start_server(tmp_path / "restart")
    db = HeavyDBDatabase(_config(srv), "heavydb[blue]")
    try:
        assert db.is_read_only() is False
        port = srv.port
        srv.stop()
        srv = start_server(tmp_path / "restart", port=port, read_only=True)
        # The old socket is dead: a read reconnects once, and now sees the read-only flag.
        assert db.is_read_only() is True
    finally:
        db.close()
        srv.stop()


def test_wrong_password_is_refused_without_showing_it(heavydb_server: Any) -> None:
    db = HeavyDBDatabase(
        _config(heavydb_server, password=Secret(value="wrong-Secret-55")), "heavydb[blue]"
    )
    with pytest.raises(Refused) as err:
        db.tables()
    assert "wrong-Secret-55" not in str(err.value)


def test_closed_port_is_unreachable(closed_port: int) -> None:
    cfg = HeavyDBConfig(port=closed_port, password=Secret(value="pw-Secret-55"), timeout_s=2)
    db = HeavyDBDatabase(cfg, "heavydb[green]")
    with pytest.raises(Unreachable) as err:
        db.row_count("trades")
    assert str(err.value).startswith("heavydb[green]:")
    assert "pw-Secret-55" not in str(err.value)
    assert not db.ping().reachable


def test_silent_server_times_out_during_login(blackhole_port: int) -> None:
    cfg = HeavyDBConfig(port=blackhole_port, password=Secret(value="pw-Secret-55"), timeout_s=0.5)
    db = HeavyDBDatabase(cfg, "heavydb[green]")
    start = time.monotonic()
    with pytest.raises(TimedOut) as err:
        db.is_read_only()
    assert time.monotonic() - start < 5
    assert "pw-Secret-55" not in str(err.value)
