"""Benchmark: full diff of 1,000,000 rows, tbs-emergency against reladiff.

    uv run --with 'reladiff[mysql]' python bench/integrity.py [--rows N] [--dir PATH]

Starts its own servers (sandbox/services.py: MariaDB; sandbox/heavydb/testing.py: the HeavyDB
sandbox server), loads the seeded `trades` table (sandbox/seed.py) into MariaDB, the HeavyDB
sandbox and a DuckDB file, then plants 10 differences in MariaDB: 3 rows deleted, 3 rows added,
4 rows changed (a decimal, a timestamp, a text of the same length, an integer).

- tbs-emergency: `tbs_emergency.integrity.diff_tables` between MariaDB and the HeavyDB sandbox,
  through the project's connectors (checksums computed inside each database).
- reladiff (from PyPI, its defaults): `reladiff.diff_tables` between the same MariaDB table and
  the same data in DuckDB, every column compared.

Both run once, one after the other, after a warm-up scan of each store; the times include
connecting and reading the schema, not Python imports. Prints both times, the ratio, and
whether every planted difference was named. The goal: at least 2x faster than reladiff, every
planted difference named. MariaDB runs with the sandbox's settings except a 256 MB buffer pool
(set at run time, the same for both tools) so the table fits in memory as in production.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

APP_USER, APP_PASSWORD = "tbs_app", "bench-Secret-1"
DATABASE = "tbs_archive"
DELETED = (17, 500_000, 999_999)  # missing in MySQL
ADDED_FROM = (5, 6, 7)  # copied to id + 2,000,000: missing in HeavyDB / DuckDB
CHANGED = {
    123_456: ("price", "price = price + 0.0001"),
    234_567: ("executed_at", "executed_at = executed_at + INTERVAL 1 SECOND"),
    345_678: ("symbol", "symbol = 'ZZZZ'"),
    456_789: ("quantity", "quantity = quantity + 1"),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_mysql(service: Any, frame: Any) -> None:
    import pymysql

    from sandbox import seed

    con = pymysql.connect(
        unix_socket=service.extra["socket"],
        user="root",
        password="",
        database=DATABASE,
        autocommit=False,
        local_infile=True,
        init_command="SET time_zone='+00:00'",
    )
    try:
        with con.cursor() as cur:
            cur.execute("SET GLOBAL innodb_buffer_pool_size = 268435456")
            cur.execute("SET SESSION sql_log_bin = 0")  # a bulk load, not history to replay
            cur.execute("SET SESSION unique_checks = 0")
            cur.execute("DROP TABLE IF EXISTS trades")
            cur.execute(seed.MYSQL_DDL["trades"])
        seed._mysql_load(con, "trades", frame)
        con.commit()
    finally:
        con.close()


def plant(service: Any) -> None:
    import pymysql

    con = pymysql.connect(
        unix_socket=service.extra["socket"], user="root", password="", database=DATABASE,
        autocommit=True, init_command="SET time_zone='+00:00'",
    )  # fmt: skip
    try:
        with con.cursor() as cur:
            cur.execute(f"DELETE FROM trades WHERE trade_id IN {DELETED}")
            cur.execute(
                "INSERT INTO trades SELECT trade_id + 2000000, strategy_id, account_id, symbol,"
                " side, quantity, price, executed_at, updated_at FROM trades"
                f" WHERE trade_id IN {ADDED_FROM}"
            )
            for key, (_, change) in CHANGED.items():
                cur.execute(f"UPDATE trades SET {change} WHERE trade_id = {key}")
    finally:
        con.close()


def load_heavydb(server: Any, frame: Any) -> None:
    import heavyai

    from sandbox import seed

    con = heavyai.connect(
        user="admin", password="HyperInteractive", host=server.host, port=server.port,
        dbname="heavyai",
    )  # fmt: skip
    try:
        con.execute("DROP TABLE IF EXISTS trades")
        con.execute(seed.HEAVYDB_DDL["trades"])
        con.load_table_arrow("trades", seed._arrow_table("trades", frame))
    finally:
        con.close()


def load_duckdb(path: Path, frame: Any) -> None:
    import duckdb

    con = duckdb.connect(str(path))
    try:
        con.execute(
            "CREATE TABLE trades (trade_id BIGINT PRIMARY KEY, strategy_id INTEGER,"
            " account_id INTEGER, symbol VARCHAR, side VARCHAR, quantity INTEGER,"
            " price DECIMAL(18,4), executed_at TIMESTAMP, updated_at TIMESTAMP)"
        )
        con.register("frame", frame)
        con.execute("INSERT INTO trades SELECT * FROM frame")
    finally:
        con.close()


def expected() -> tuple[set[int], set[int], dict[int, str]]:
    """(missing in HeavyDB, missing in MySQL, changed key -> column)."""
    return (
        {k + 2_000_000 for k in ADDED_FROM},
        set(DELETED),
        {k: col for k, (col, _) in CHANGED.items()},
    )


def run_ours(mysql_port: int, heavydb: Any) -> tuple[float, Any]:
    from tbs_emergency.config import HeavyDBConfig, MySQLConfig
    from tbs_emergency.connectors.heavydb import HeavyDBDatabase, HeavyDBIntegrity
    from tbs_emergency.connectors.mysql import MySQLDatabase, MySQLIntegrity
    from tbs_emergency.integrity import SQLTableSource, build_plan, diff_tables, with_text_groups

    started = time.perf_counter()
    my = MySQLDatabase(
        MySQLConfig(port=mysql_port, user=APP_USER, password=APP_PASSWORD, timeout_s=600), "mysql"
    )
    hv = HeavyDBDatabase(HeavyDBConfig(host=heavydb.host, port=heavydb.port, timeout_s=600))
    left = SQLTableSource(HeavyDBIntegrity(hv), "trades")
    right = SQLTableSource(MySQLIntegrity(my), "trades")
    plan, _ = build_plan(
        "trades", ["trade_id"], [], left.describe(), right.describe(), ("heavydb", "mysql")
    )
    plan = with_text_groups(plan, left.profile(plan, count=False, text=True))
    result = diff_tables(left, right, plan)
    took = time.perf_counter() - started
    my.close()
    hv.close()
    return took, result


def run_reladiff(mysql_port: int, duck: Path) -> tuple[float, list[Any]]:
    import reladiff

    started = time.perf_counter()
    a = reladiff.connect_to_table(
        f"mysql://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{mysql_port}/{DATABASE}", "trades", "trade_id"
    )
    b = reladiff.connect_to_table(f"duckdb://{duck}", "trades", "trade_id")
    cols = ("strategy_id", "account_id", "symbol", "side", "quantity", "price", "executed_at",
            "updated_at")  # fmt: skip
    diff = list(reladiff.diff_tables(a, b, extra_columns=cols))
    return time.perf_counter() - started, diff


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, default=None, help="state directory (default: temp)")
    args = ap.parse_args()
    try:
        import reladiff  # noqa: F401
    except ImportError:
        print(
            "reladiff is not installed: uv run --with 'reladiff[mysql]' python bench/integrity.py"
        )
        return 2

    # Imports both tools need, done before the clocks start.
    import heavydb  # noqa: F401
    import pymysql  # noqa: F401

    from sandbox import seed
    from sandbox.heavydb.testing import start_server
    from sandbox.services import ensure_mysql_accounts, start_mariadb

    base = args.dir or Path(tempfile.mkdtemp(prefix="tbs-bench-integrity-"))
    base.mkdir(parents=True, exist_ok=True)
    log(f"state in {base}; starting MariaDB and the HeavyDB sandbox server")
    maria = start_mariadb(base / "mariadb")
    heavy = start_server(base / "heavydb")
    try:
        ensure_mysql_accounts(maria, DATABASE, APP_USER, APP_PASSWORD, "tbs_recovery", "bench-2")
        log(f"generating {args.rows} rows")
        frame = seed.trades_frame(args.rows)
        log("loading HeavyDB sandbox")
        load_heavydb(heavy, frame)
        log("loading DuckDB")
        duck = base / "trades.duckdb"
        duck.unlink(missing_ok=True)
        load_duckdb(duck, frame)
        log("loading MariaDB")
        load_mysql(maria, frame)
        plant(maria)
        log("planted 10 differences in MariaDB (3 deleted, 3 added, 4 changed)")

        # Warm-up: one scan of each store so neither tool pays for the other's cold cache.
        import duckdb
        import pymysql as pm

        con = pm.connect(unix_socket=maria.extra["socket"], user="root", database=DATABASE)
        with con.cursor() as cur:
            cur.execute("SELECT COUNT(*), SUM(quantity), MAX(symbol) FROM trades")
        con.close()
        duckdb.connect(str(duck)).execute("SELECT COUNT(*), SUM(quantity) FROM trades").fetchall()

        log("tbs-emergency: MariaDB <-> HeavyDB sandbox")
        ours_s, ours = run_ours(maria.port, heavy)
        log(f"  {ours_s:.2f}s ({ours.queries} queries, {ours.rows_compared} rows read)")
        log("reladiff: MariaDB <-> DuckDB")
        theirs_s, theirs = run_reladiff(maria.port, duck)
        log(f"  {theirs_s:.2f}s ({len(theirs)} diff rows)")

        missing_h, missing_m, changed = expected()
        found_h = {k[0] for k in ours.only_right}
        found_m = {k[0] for k in ours.only_left}
        found_c = {d.key[0]: d.columns for d in ours.different}
        all_named = (
            found_h == missing_h
            and found_m == missing_m
            and {k: c[0] for k, c in found_c.items() if len(c) == 1} == changed
            and len(found_c) == len(changed)
        )
        their_keys = {int(row[1][0]) for row in theirs}
        reladiff_named = their_keys == missing_h | missing_m | set(changed)

        print()
        print(f"rows: {args.rows:,}; planted differences: 10 (3 missing in HeavyDB, "
              "3 missing in MySQL, 4 changed)")  # fmt: skip
        print(f"tbs-emergency (MariaDB <-> HeavyDB sandbox): {ours_s:8.2f} s")
        print(f"reladiff      (MariaDB <-> DuckDB):          {theirs_s:8.2f} s")
        print(f"ratio (reladiff / tbs-emergency):            {theirs_s / ours_s:8.2f}x")
        print(
            f"tbs-emergency named every planted difference: {'yes' if all_named else 'NO'}"
            f" (missing in HeavyDB {sorted(found_h)}, missing in MySQL {sorted(found_m)},"
            f" changed {dict(sorted(found_c.items()))})"
        )
        print(f"reladiff named the same keys: {'yes' if reladiff_named else 'no'}")
        goal = all_named and theirs_s / ours_s >= 2.0
        print(f"goal (>= 2x faster, every difference named): {'met' if goal else 'NOT met'}")
        return 0 if all_named else 1
    finally:
        heavy.stop()
        maria.stop()


if __name__ == "__main__":
    sys.exit(main())
