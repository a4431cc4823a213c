"""Carrying green's acknowledged writes to blue on real servers (tbs_emergency/dbops/carry.py).

Two MariaDB servers (the session's, as blue, and one started here, as green, with its own GTID
domain) and the HeavyDB sandbox server (blue's hot store, and a second table standing for
green's HeavyDB). The ledger is the application's `GET /_ledger` answer, built here from the
keys green committed (the application stand-in's own ledger is tested in
tests/integration/test_standins_stores.py; the whole path in tests/e2e/rollback).

Without the ledger (green's application unreachable) the task `carry-writes` takes green's
MySQL over green's configured key range as the authority: run here through the task's body with
a tbs.toml whose green app address is a closed port.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import heavydb
import pymysql
import pytest

from sandbox.proc import LOOPBACK, free_port
from sandbox.services import ensure_mysql_accounts, start_mariadb
from tbs_emergency.config import HeavyDBConfig, MySQLConfig
from tbs_emergency.connectors.heavydb import HeavyDBDatabase, HeavyDBIntegrity
from tbs_emergency.connectors.mysql import MySQLDatabase, MySQLIntegrity
from tbs_emergency.dbops.carry import CarryTarget, TableStores, carry_writes
from tbs_emergency.integrity import SQLTableSource
from tests.integration.test_backup_support import _plain, to_toml

pytestmark = pytest.mark.integration

TABLE = "carry_trades"
GREEN_HEAVY = "carry_trades_green"
G = 2 * 10**15
B = 1 * 10**15
T0 = dt.datetime(2026, 1, 1, 12, 0, 0)
MYSQL_DDL = (
    f"CREATE TABLE {TABLE} (trade_id BIGINT NOT NULL PRIMARY KEY, symbol VARCHAR(16) NOT NULL,"
    " quantity INT NOT NULL, price DECIMAL(18,4) NOT NULL, executed_at TIMESTAMP NOT NULL)"
)
HEAVY_DDL = (
    "CREATE TABLE {name} (trade_id BIGINT NOT NULL, symbol TEXT ENCODING DICT(32),"
    " quantity INTEGER, price DECIMAL(18,4), executed_at TIMESTAMP(0))"
)


def row(k: int) -> tuple[Any, ...]:
    return (k, f"S{k % 41}", k % 997, Decimal(k % 10007) / 8, T0 + dt.timedelta(seconds=k % 5000))


def ledger(keys: list[int], store: str = "mysql") -> list[dict[str, Any]]:
    return [
        {
            "table": TABLE,
            "store": store,
            "key": {"trade_id": k},
            "at": (T0 + dt.timedelta(milliseconds=i)).isoformat(timespec="milliseconds") + "Z",
        }
        for i, k in enumerate(keys)
    ]


@pytest.fixture(scope="module")
def green_mariadb(tmp_path_factory: pytest.TempPathFactory, known: Any) -> Iterator[Any]:
    root: Path = tmp_path_factory.mktemp("mariadb-green")
    service = start_mariadb(root, server_id=2, name="mariadb-green")
    try:
        ensure_mysql_accounts(
            service, known.database, "tbs_app", known.app_password, "tbs_recovery", "r-Secret-1"
        )
        yield service
    finally:
        service.stop()


def _root(service: Any, *statements: str, rows: list[tuple[Any, ...]] | None = None) -> None:
    con = pymysql.connect(
        unix_socket=service.extra["socket"], user="root", password="", database="tbs_archive"
    )
    try:
        with con.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
            if rows:
                cur.executemany(f"INSERT INTO {TABLE} VALUES (%s, %s, %s, %s, %s)", rows)
        con.commit()
    finally:
        con.close()


def _heavy(server: Any, *statements: str, load: dict[str, list[tuple[Any, ...]]] | None = None):
    from heavydb.thrift.ttypes import TStringRow, TStringValue

    con = heavydb.connect(
        user="admin", password=known_heavy(), host=server.host, port=server.port, dbname="heavyai"
    )
    try:
        cur = con.cursor()
        for sql in statements:
            cur.execute(sql)
        for name, rows in (load or {}).items():
            srows = [
                TStringRow(
                    cols=[
                        TStringValue(
                            str_val=v.strftime("%Y-%m-%d %H:%M:%S")
                            if isinstance(v, dt.datetime)
                            else str(v),
                            is_null=False,
                        )
                        for v in r
                    ]
                )
                for r in rows
            ]
            if srows:
                con._client.load_table(con._session, name, srows, None)
        return list(cur) if cur.description else None
    finally:
        con.close()


def known_heavy() -> str:
    return "HyperInteractive"


@pytest.fixture
def stores(
    mariadb: Any, green_mariadb: Any, heavydb_server: Any, known: Any
) -> Iterator[dict[str, Any]]:
    for svc in (mariadb, green_mariadb):
        _root(svc, f"DROP TABLE IF EXISTS {TABLE}", MYSQL_DDL)
    _heavy(
        heavydb_server,
        f"DROP TABLE IF EXISTS {TABLE}",
        f"DROP TABLE IF EXISTS {GREEN_HEAVY}",
        HEAVY_DDL.format(name=TABLE),
        HEAVY_DDL.format(name=GREEN_HEAVY),
    )

    def mysql(svc: Any, name: str, port: int | None = None) -> MySQLDatabase:
        cfg = MySQLConfig(
            host=LOOPBACK,
            port=port or svc.port,
            user="tbs_app",
            password=known.app_password,
            database=known.database,
            timeout_s=3,
        )
        return MySQLDatabase(cfg, name)

    heavy_cfg = HeavyDBConfig(
        host=heavydb_server.host, port=heavydb_server.port, password=known_heavy(), timeout_s=10
    )
    made = {
        "blue_mysql": mysql(mariadb, "mysql[blue]"),
        "green_mysql": mysql(green_mariadb, "mysql[green]"),
        "lost_mysql": mysql(green_mariadb, "mysql[green]", port=free_port()),  # nothing there
        "blue_heavy": HeavyDBDatabase(heavy_cfg, "heavydb[blue]"),
        "green_heavy": HeavyDBDatabase(heavy_cfg, "heavydb[green]"),
    }
    yield made
    for c in made.values():
        c.close()
    for svc in (mariadb, green_mariadb):
        _root(svc, f"DROP TABLE IF EXISTS {TABLE}")
    _heavy(heavydb_server, f"DROP TABLE IF EXISTS {TABLE}", f"DROP TABLE IF EXISTS {GREEN_HEAVY}")


def stores_for(s: dict[str, Any], green_mysql: str = "green_mysql") -> Any:
    bm, bh, gm, gh = s["blue_mysql"], s["blue_heavy"], s[green_mysql], s["green_heavy"]

    def build(_t: Any) -> TableStores:
        return TableStores(
            [
                CarryTarget(
                    bm.name,
                    TABLE,
                    SQLTableSource(MySQLIntegrity(bm), TABLE),
                    bm,
                    [(gm, TABLE), (gh, GREEN_HEAVY)],
                ),
                CarryTarget(
                    bh.name,
                    TABLE,
                    SQLTableSource(HeavyDBIntegrity(bh), TABLE),
                    bh,
                    [(bm, TABLE), (gm, TABLE), (gh, GREEN_HEAVY)],
                ),
            ]
        )

    return build


def _mysql_rows(service: Any) -> list[tuple[Any, ...]]:
    con = pymysql.connect(
        unix_socket=service.extra["socket"], user="root", password="", database="tbs_archive"
    )
    try:
        with con.cursor() as cur:
            cur.execute(f"SELECT * FROM {TABLE} WHERE trade_id >= {G} ORDER BY trade_id")
            return list(cur.fetchall())
    finally:
        con.close()


def test_carry_between_two_mariadb_servers_and_heavydb_then_rerun(
    stores: dict[str, Any], mariadb: Any, green_mariadb: Any, heavydb_server: Any
) -> None:
    green_keys = [G + 7 * i for i in range(3000)]
    _root(green_mariadb, rows=[row(k) for k in green_keys])
    # blue: its own writes, plus the first 1000 of green's (as replication would have brought)
    _root(mariadb, rows=[row(B + i) for i in range(500)] + [row(k) for k in green_keys[:1000]])
    # blue's HeavyDB: its own rows and 10 of green's
    _heavy(
        heavydb_server,
        load={TABLE: [row(B + i) for i in range(500)] + [row(k) for k in green_keys[:10]]},
    )
    writes = ledger(green_keys) + ledger(green_keys[:2000], store="heavydb")

    res = carry_writes(writes, stores_for(stores), since="2026-01-01T12:00:00Z")
    assert res.ok, res.lines()
    assert res.ledger_entries == 3000 and res.missing == 0
    my, hv = res.tables[0].targets
    assert (my.ledgered, my.missing_before, my.copied, my.still_missing) == (3000, 2000, 2000, 0)
    assert my.copied_from == {"mysql[green]": 2000}
    assert (hv.missing_before, hv.copied, hv.still_missing) == (2990, 2990, 0)
    assert hv.copied_from == {"mysql[blue]": 2990}  # blue's MySQL holds them by then
    # the rows themselves, not only their keys: blue's MySQL now equals green's in green's range
    assert _mysql_rows(mariadb) == _mysql_rows(green_mariadb)
    (n,) = _heavy(heavydb_server, f"SELECT COUNT(*) FROM {TABLE} WHERE trade_id >= {G}")[0]
    assert n == 3000  # no duplicates in HeavyDB

    again = carry_writes(writes, stores_for(stores))
    assert again.ok and again.copied == 0
    assert [t.missing_before for t in again.tables[0].targets] == [0, 0]
    (n,) = _heavy(heavydb_server, f"SELECT COUNT(*) FROM {TABLE} WHERE trade_id >= {G}")[0]
    assert n == 3000


def test_green_mysql_lost_falls_back_to_heavydb_and_names_what_is_missing(
    stores: dict[str, Any], mariadb: Any, heavydb_server: Any
) -> None:
    green_keys = [G + i for i in range(100)]
    # green's HeavyDB got the first 90 (its last micro-batch never flushed); MySQL is gone
    _heavy(heavydb_server, load={GREEN_HEAVY: [row(k) for k in green_keys[:90]]})
    res = carry_writes(ledger(green_keys), stores_for(stores, green_mysql="lost_mysql"))
    assert not res.ok
    my, hv = res.tables[0].targets
    assert my.copied == 90 and my.copied_from == {"heavydb[green]": 90}
    assert my.still_missing == 10 and my.sample_missing == green_keys[90:100]
    assert hv.copied == 90 and hv.still_missing == 10
    assert res.missing == 20
    assert any("mysql[green]" in p and "failed" in p for p in res.problems)
    text = "\n".join(res.lines())
    assert "10 still missing" in text


def test_an_empty_ledger_verifies_nothing(stores: dict[str, Any]) -> None:
    res = carry_writes([], stores_for(stores), since="2026-01-01T12:00:00Z")
    assert res.nothing_to_carry and not res.tables
    assert "nothing to carry" in res.lines()[0]


# -- without the ledger: the task, with green's MySQL over green's key range --------------------


@pytest.fixture
def carry_config(
    settings_factory: Any, green_mariadb: Any, heavydb_server: Any, tmp_path: Path
) -> Any:
    """carry_config(green_mysql_port=None) -> a tbs.toml path: blue on the session's MariaDB
    and the HeavyDB server, green on green_mariadb; green's application (its ledger) and its
    HeavyDB at closed ports; `carry_trades` keyed and ranged as the applications mint keys."""
    made = 0

    def build(green_mysql_port: int | None = None) -> str:
        nonlocal made
        made += 1
        data = _plain(settings_factory(heavydb_port=heavydb_server.port))
        green = data["environments"]["green"]
        green["app_url"] = f"http://{LOOPBACK}:{free_port()}"
        green["mysql"]["port"] = green_mysql_port or green_mariadb.port
        green["heavydb"]["port"] = free_port()
        data["integrity"] = {
            "tables": [
                {
                    "name": TABLE,
                    "key": ["trade_id"],
                    "critical": True,
                    "write_ranges": {"blue": [B, G - 1], "green": [G, 3 * 10**15 - 1]},
                }
            ]
        }
        path = tmp_path / f"tbs-{made}.toml"
        path.write_text(to_toml(data))
        return str(path)

    return build


def test_without_the_ledger_green_mysql_key_range_is_carried_and_verified(
    stores: dict[str, Any], carry_config: Any, mariadb: Any, green_mariadb: Any, heavydb_server: Any
) -> None:
    from tasks.rollback import carry_writes as carry_task

    green_keys = [G + 5 * i for i in range(2000)]
    # green's MySQL: its own rows, and one of blue's (as replication blue -> green would bring)
    _root(green_mariadb, rows=[row(k) for k in green_keys] + [row(B + 9999)])
    # blue: its own writes, plus the first 500 of green's
    _root(mariadb, rows=[row(B + i) for i in range(100)] + [row(k) for k in green_keys[:500]])
    _heavy(heavydb_server, load={TABLE: [row(B + i) for i in range(100)]})

    res = carry_task.fn(carry_config(), "green", "blue")
    assert res["ok"], res["lines"]
    assert res["authority"] == "green mysql key range"
    assert res["authority_reason"].startswith("green's ledger cannot be read: ")
    assert res["key_ranges"] == [{"table": TABLE, "key": "trade_id", "lo": G, "hi": 3 * 10**15 - 1}]
    assert res["missing"] == 0 and res["copied"] == 1500 + 2000
    my, hv = res["tables"][0]["targets"]
    assert (my["system"], my["ledgered"], my["missing_before"], my["still_missing"]) == (
        "mysql[blue]",
        2000,
        1500,
        0,
    )
    assert my["copied_from"] == {"mysql[green]": 1500}
    assert (hv["system"], hv["missing_before"], hv["still_missing"]) == ("heavydb[blue]", 2000, 0)
    assert hv["copied_from"] == {"mysql[blue]": 2000}
    # the rows themselves; blue's own row in green's MySQL was not green's to carry
    assert _mysql_rows(mariadb) == _mysql_rows(green_mariadb)
    assert row(B + 9999)[0] not in {r[0] for r in _blue_range(mariadb)}
    (n,) = _heavy(heavydb_server, f"SELECT COUNT(*) FROM {TABLE} WHERE trade_id >= {G}")[0]
    assert n == 2000
    assert any("does not advance" in n for n in res["notes"]), res["notes"]

    again = carry_task.fn(carry_config(), "green", "blue")
    assert again["ok"] and again["copied"] == 0, again["lines"]


def test_without_the_ledger_or_green_mysql_nothing_is_carried_and_it_says_so(
    stores: dict[str, Any], carry_config: Any, mariadb: Any, green_mariadb: Any
) -> None:
    from tasks.rollback import carry_writes as carry_task

    _root(green_mariadb, rows=[row(G + i) for i in range(10)])
    res = carry_task.fn(carry_config(green_mysql_port=free_port()), "green", "blue")
    assert res["ok"] is False and res["authority"] is None and res["missing"] is None
    assert "green's ledger cannot be read" in res["error"]
    assert "green's MySQL cannot be read either" in res["error"]
    assert "unknown" in res["error"]
    assert _mysql_rows(mariadb) == []


def _blue_range(service: Any) -> list[tuple[Any, ...]]:
    con = pymysql.connect(
        unix_socket=service.extra["socket"], user="root", password="", database="tbs_archive"
    )
    try:
        with con.cursor() as cur:
            cur.execute(f"SELECT trade_id FROM {TABLE} WHERE trade_id >= {B} AND trade_id < {G}")
            return list(cur.fetchall())
    finally:
        con.close()
