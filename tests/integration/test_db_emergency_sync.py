"""Environment sync on the real servers: 10,000 rows with inserts, updates and deletes leave both
environments identical by checksum, and a rerun changes nothing.

Green gets databases of its own on the fixture servers: a second MySQL schema and a second
HeavyDB database, with the same table; a Settings points green's MySQL/HeavyDB at them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import heavydb
import pytest

from tbs_emergency.connectors.heavydb import HeavyDBDatabase, HeavyDBIntegrity
from tbs_emergency.connectors.mysql import MySQLDatabase, MySQLIntegrity
from tbs_emergency.dbops.sync import sync_specs, sync_table
from tbs_emergency.integrity import SQLTableSource

pytestmark = pytest.mark.integration

N = 10_000
TABLE = "dbops_trades"
GREEN_SCHEMA = "tbs_green"
GREEN_HEAVYDB = "heavyai_green"
T0 = dt.datetime(2025, 1, 24, 10, 0, 0)
INTEGRITY = {
    "tables": [{"name": TABLE, "key": "trade_id", "critical": True, "updated_column": "updated_at"}]
}


def blue_rows() -> list[tuple[Any, ...]]:
    return [
        (
            i,
            f"SYM{i % 37}",
            (i * 7) % 1000,
            Decimal(i % 5000) / 4,
            T0 + dt.timedelta(seconds=i),
        )
        for i in range(1, N + 1)
    ]


def green_rows() -> list[tuple[Any, ...]]:
    """Blue with 500 rows missing, 700 changed and 300 extra."""
    out = []
    different = 0
    for r in blue_rows():
        i = r[0]
        if i % 20 == 0:
            continue  # missing in green: 500
        if i % 13 == 0 and different < 700:
            r = (i, r[1], -1, r[3], r[4])  # different: 700
            different += 1
        out.append(r)
    out += [(N + i, "EXTRA", 1, Decimal(1), T0) for i in range(1, 301)]
    return out


@pytest.fixture
def mysql_pair(root_sql: Any, known: Any) -> Iterator[None]:
    ddl = (
        "(trade_id INT PRIMARY KEY, symbol VARCHAR(16), qty INT, price DECIMAL(12,4),"
        " updated_at DATETIME)"
    )
    root_sql(
        f"CREATE DATABASE IF NOT EXISTS {GREEN_SCHEMA}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {GREEN_SCHEMA}.* TO 'tbs_app'@'127.0.0.1'",
        f"DROP TABLE IF EXISTS {known.database}.{TABLE}",
        f"DROP TABLE IF EXISTS {GREEN_SCHEMA}.{TABLE}",
        f"CREATE TABLE {known.database}.{TABLE} {ddl}",
        f"CREATE TABLE {GREEN_SCHEMA}.{TABLE} {ddl}",
    )
    yield
    root_sql(f"DROP TABLE IF EXISTS {known.database}.{TABLE}", f"DROP DATABASE {GREEN_SCHEMA}")


def load_mysql(mariadb: Any, schema: str, rows: list[tuple[Any, ...]]) -> None:
    import pymysql

    con = pymysql.connect(unix_socket=mariadb.extra["socket"], user="root", password="")
    try:
        with con.cursor() as cur:
            cur.executemany(f"INSERT INTO {schema}.{TABLE} VALUES (%s, %s, %s, %s, %s)", rows)
        con.commit()
    finally:
        con.close()


def checksum_table(root_sql: Any, schema: str) -> int:
    """MariaDB's own CHECKSUM TABLE: an independent check of the integrity engine's verdict."""
    return int(root_sql(f"CHECKSUM TABLE {schema}.{TABLE} EXTENDED")[0][1])


def mysql_side(settings: Any, env: str) -> tuple[SQLTableSource, MySQLDatabase]:
    db = MySQLDatabase(settings.environment(env).mysql, f"mysql[{env}]")
    return SQLTableSource(MySQLIntegrity(db), TABLE), db


def test_mysql_sync_of_10000_rows_then_rerun(
    mysql_pair: None, mariadb: Any, settings_factory: Any, root_sql: Any, known: Any
) -> None:
    blue, green = blue_rows(), green_rows()
    assert sum(1 for r in green if r[2] == -1) == 700
    load_mysql(mariadb, known.database, blue)
    load_mysql(mariadb, GREEN_SCHEMA, green)
    settings = settings_factory(green_mysql_database=GREEN_SCHEMA, integrity=INTEGRITY)
    assert not settings.shares_database("blue", "green", "mysql")
    (spec,) = sync_specs(settings, [], "mysql")
    assert checksum_table(root_sql, known.database) != checksum_table(root_sql, GREEN_SCHEMA)

    src, src_db = mysql_side(settings, "blue")
    dst, dst_db = mysql_side(settings, "green")
    try:
        dry = sync_table(src, dst, src_db, dst_db, spec, dry_run=True)
        assert (dry.to_insert, dry.to_update, dry.to_delete) == (500, 700, 300)
        assert checksum_table(root_sql, known.database) != checksum_table(root_sql, GREEN_SCHEMA)

        result = sync_table(src, dst, src_db, dst_db, spec, batch_size=400)
        assert result.ok, result.problems
        assert (result.inserted, result.updated, result.deleted) == (500, 700, 300)
        assert result.batches == result.batches_applied >= 4
        assert result.identical_after and result.remaining == 0
        assert checksum_table(root_sql, known.database) == checksum_table(root_sql, GREEN_SCHEMA)

        again = sync_table(src, dst, src_db, dst_db, spec)
        assert again.ok and again.changed_nothing and again.batches == 0
        assert again.identical_after
    finally:
        src_db.close()
        dst_db.close()


# -- HeavyDB -------------------------------------------------------------------------------------


def load_heavydb(server: Any, dbname: str, rows: list[tuple[Any, ...]]) -> None:
    from heavydb.thrift.ttypes import TStringRow, TStringValue

    con = heavydb.connect(
        user="admin",
        password=known_password(),
        host=server.host,
        port=server.port,
        dbname=dbname,
    )
    try:
        cur = con.cursor()
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cur.execute(
            f"CREATE TABLE {TABLE} (trade_id BIGINT, symbol TEXT ENCODING DICT(32), qty INTEGER,"
            " price DECIMAL(12,4), updated_at TIMESTAMP(0))"
        )
        string_rows = [
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
        for i in range(0, len(string_rows), 5000):
            con._client.load_table(con._session, TABLE, string_rows[i : i + 5000], None)
    finally:
        con.close()


def known_password() -> str:
    return "HyperInteractive"


@pytest.fixture
def heavydb_pair(heavydb_server: Any) -> Iterator[Any]:
    con = heavydb.connect(
        user="admin",
        password=known_password(),
        host=heavydb_server.host,
        port=heavydb_server.port,
        dbname="heavyai",
    )
    try:
        existing = [d.db_name for d in con._client.get_databases(con._session)]
        if GREEN_HEAVYDB not in existing:
            con.cursor().execute(f"CREATE DATABASE {GREEN_HEAVYDB}")
    finally:
        con.close()
    yield heavydb_server


def heavydb_sync_parts(heavydb_pair: Any, settings_factory: Any) -> tuple[Any, ...]:
    """Blue's and green's HeavyDB databases on the session server, the table's sync spec and
    both checksum sources: what a HeavyDB sync of TABLE needs."""
    settings = settings_factory(heavydb_port=heavydb_pair.port, integrity=INTEGRITY)
    green_cfg = settings.environment("green").heavydb.model_copy(update={"database": GREEN_HEAVYDB})
    blue_db = HeavyDBDatabase(settings.environment("blue").heavydb, "heavydb[blue]")
    green_db = HeavyDBDatabase(green_cfg, "heavydb[green]")
    (spec,) = sync_specs(settings, [], "heavydb")
    src = SQLTableSource(HeavyDBIntegrity(blue_db), TABLE)
    dst = SQLTableSource(HeavyDBIntegrity(green_db), TABLE)
    return blue_db, green_db, spec, src, dst


def test_heavydb_sync_of_10000_rows_then_rerun(heavydb_pair: Any, settings_factory: Any) -> None:
    blue, green = blue_rows(), green_rows()
    assert sum(1 for r in green if r[2] == -1) == 700
    load_heavydb(heavydb_pair, "heavyai", blue)
    load_heavydb(heavydb_pair, GREEN_HEAVYDB, green)
    blue_db, green_db, spec, src, dst = heavydb_sync_parts(heavydb_pair, settings_factory)
    try:
        result = sync_table(src, dst, blue_db, green_db, spec, batch_size=1000)
        assert result.ok, result.problems
        assert (result.inserted, result.updated, result.deleted) == (500, 700, 300)
        assert result.identical_after and result.remaining == 0
        assert green_db.row_count(TABLE) == N

        again = sync_table(src, dst, blue_db, green_db, spec)
        assert again.ok and again.changed_nothing and again.identical_after
    finally:
        blue_db.close()
        green_db.close()


# -- guards: mass deletes, snapshots -------------------------------------------------------------


def _mysql_count(root_sql: Any, schema: str, table: str = TABLE) -> int:
    return int(root_sql(f"SELECT COUNT(*) FROM {schema}.{table}")[0][0])


def test_mysql_an_empty_source_is_refused_and_changes_nothing(
    mysql_pair: None, mariadb: Any, settings_factory: Any, root_sql: Any, known: Any
) -> None:
    """The source table was emptied (or truncated): the sync must not copy that emptiness."""
    load_mysql(mariadb, GREEN_SCHEMA, green_rows())
    settings = settings_factory(green_mysql_database=GREEN_SCHEMA, integrity=INTEGRITY)
    (spec,) = sync_specs(settings, [], "mysql")
    share = settings.database_emergency.sync_max_delete_share
    before = checksum_table(root_sql, GREEN_SCHEMA)
    src, src_db = mysql_side(settings, "blue")
    dst, dst_db = mysql_side(settings, "green")
    try:
        result = sync_table(src, dst, src_db, dst_db, spec, max_delete_share=share, snapshot=True)
    finally:
        src_db.close()
        dst_db.close()
    rows = len(green_rows())
    assert not result.ok and result.refused is not None
    assert f"{TABLE}: the sync would delete {rows} of {rows} rows of mysql[green]" in result.refused
    assert result.deleted == result.inserted == result.batches_applied == 0
    assert checksum_table(root_sql, GREEN_SCHEMA) == before
    assert not root_sql(f"SHOW TABLES FROM {GREEN_SCHEMA} LIKE '%pre_sync%'")


def test_mysql_allowed_deletes_snapshot_the_target_first(
    mysql_pair: None, mariadb: Any, settings_factory: Any, root_sql: Any, known: Any
) -> None:
    load_mysql(mariadb, known.database, blue_rows())
    load_mysql(mariadb, GREEN_SCHEMA, green_rows())
    settings = settings_factory(green_mysql_database=GREEN_SCHEMA, integrity=INTEGRITY)
    (spec,) = sync_specs(settings, [], "mysql")
    before = checksum_table(root_sql, GREEN_SCHEMA)
    src, src_db = mysql_side(settings, "blue")
    dst, dst_db = mysql_side(settings, "green")
    try:
        # The application account cannot CREATE: no snapshot, so nothing is written.
        denied = sync_table(src, dst, src_db, dst_db, spec, snapshot=True)
        assert not denied.ok and "could not be copied" in denied.problems[0]
        assert denied.batches_applied == 0 and checksum_table(root_sql, GREEN_SCHEMA) == before
        assert not root_sql(f"SHOW TABLES FROM {GREEN_SCHEMA} LIKE '%pre_sync%'")

        root_sql(f"GRANT CREATE, DROP ON {GREEN_SCHEMA}.* TO 'tbs_app'@'127.0.0.1'")
        # 300 of 10,300 rows (2.9%) are extra: over the 1% default, so this needs the flag
        # (no limit), as `db sync --allow-mass-delete` passes it.
        result = sync_table(
            src, dst, src_db, dst_db, spec, max_delete_share=None, snapshot=True, batch_size=2000
        )
        assert result.ok, result.problems
        assert result.deleted == 300 and result.identical_after
        assert result.snapshot and result.snapshot.startswith(f"{TABLE}__pre_sync_")
        assert result.snapshot_rows == len(green_rows())
        kept = int(root_sql(f"CHECKSUM TABLE {GREEN_SCHEMA}.{result.snapshot} EXTENDED")[0][1])
        assert kept == before  # the snapshot is the target exactly as it was
        keys = root_sql(
            f"SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA ="
            f" '{GREEN_SCHEMA}' AND TABLE_NAME = '{result.snapshot}' AND INDEX_NAME = 'PRIMARY'"
        )
        assert [k[0] for k in keys] == ["trade_id"]  # CREATE TABLE LIKE: keys kept
    finally:
        src_db.close()
        dst_db.close()
        root_sql(f"REVOKE CREATE, DROP ON {GREEN_SCHEMA}.* FROM 'tbs_app'@'127.0.0.1'")


def test_heavydb_allowed_deletes_snapshot_the_target_first(
    heavydb_pair: Any, settings_factory: Any
) -> None:
    load_heavydb(heavydb_pair, "heavyai", blue_rows()[:1000])
    load_heavydb(heavydb_pair, GREEN_HEAVYDB, blue_rows()[:1000] + blue_rows()[5000:5005])
    blue_db, green_db, spec, src, dst = heavydb_sync_parts(heavydb_pair, settings_factory)
    result: Any = None
    try:
        refused = sync_table(src, dst, blue_db, green_db, spec, max_delete_share=0.001)
        assert refused.refused and "delete 5 of 1005 rows" in refused.refused
        assert green_db.row_count(TABLE) == 1005
        result = sync_table(src, dst, blue_db, green_db, spec, max_delete_share=0.01, snapshot=True)
        assert result.ok, result.problems
        assert result.deleted == 5 and green_db.row_count(TABLE) == 1000
        assert result.snapshot and green_db.row_count(result.snapshot) == 1005
    finally:
        with contextlib.suppress(Exception):
            if result is not None and result.snapshot:
                green_db.query(f"DROP TABLE IF EXISTS {result.snapshot}")
        blue_db.close()
        green_db.close()
