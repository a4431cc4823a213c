"""Integrity checks against the real MariaDB and the HeavyDB sandbox server.

A few thousand seeded rows in both stores (`sandbox.seed`), then planted differences: a row
missing in each store (also at both ends of the key range), a changed decimal, a changed
timestamp, a changed text of the same length; for the composite-key table a missing row and
changed values. The checks must name exactly those keys.

Flows run serverless here (tasks called eagerly, artifacts recorded in memory): a Prefect API
server costs far more start-up time than these tests may take. The flow itself was also run
under a real Prefect server with mapped chunk tasks (see docs/integrity.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import seed
from sandbox.proc import LOOPBACK
from tbs_emergency.config import Settings
from tbs_emergency.integrity import (
    DiffOptions,
    SQLTableSource,
    build_plan,
    diff_tables,
    sample_compare,
    with_text_groups,
)
from tbs_emergency.integrity import checksum as cs
from tbs_emergency.integrity.source import Segment

pytestmark = pytest.mark.integration

ROWS = 3000
HEAVYDB_PASSWORD = "HyperInteractive"
TRADES, RESULTS, SAME = "itg_trades", "itg_results", "itg_same"
# Planted in the trades table (by trade_id)
MISSING_IN_HEAVYDB = [101, ROWS]  # deleted from HeavyDB (ROWS: the last key)
MISSING_IN_MYSQL = [1, 202]  # deleted from MySQL (1: the first key)
CHANGED = {1303: "price", 2404: "executed_at", 2999: "symbol"}  # changed in MySQL


def _mysql_ddl(table: str, like: str) -> str:
    return seed.MYSQL_DDL[like].replace(f"EXISTS {like} (", f"EXISTS {table} (", 1)


def _heavydb_ddl(table: str, like: str) -> str:
    return seed.HEAVYDB_DDL[like].replace(f"CREATE TABLE {like} (", f"CREATE TABLE {table} (", 1)


def _load_mysql(root_sql: Any, mariadb: Any, table: str, like: str, frame: Any) -> None:
    import pymysql

    root_sql(f"DROP TABLE IF EXISTS tbs_archive.{table}")
    con = pymysql.connect(
        unix_socket=mariadb.extra["socket"],
        user="root",
        password="",
        database="tbs_archive",
        autocommit=True,
        init_command="SET time_zone='+00:00'",
    )
    try:
        with con.cursor() as cur:
            cur.execute(_mysql_ddl(table, like))
            cols = list(frame.columns)
            marks = ", ".join(["%s"] * len(cols))
            rows = [tuple(seed._py(v) for v in r) for r in frame.itertuples(False, None)]
            cur.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", rows)
    finally:
        con.close()


def _heavydb(server: Any) -> Any:
    import heavyai

    return heavyai.connect(
        user="admin",
        password=HEAVYDB_PASSWORD,
        host=server.host,
        port=server.port,
        dbname="heavyai",
    )


def _load_heavydb(server: Any, table: str, like: str, frame: Any) -> None:
    con = _heavydb(server)
    try:
        con.execute(f"DROP TABLE IF EXISTS {table}")
        con.execute(_heavydb_ddl(table, like))
        con.load_table_arrow(table, seed._arrow_table(like, frame))
    finally:
        con.close()


def _toml(path: Path, settings: Settings, heavydb_port: int) -> Path:
    env = settings.environment("blue")
    password = env.mysql.password.get_secret_value() if env.mysql.password else ""
    block = f"""
app_url = "http://{LOOPBACK}:9"
[environments.{{e}}.heavydb]
host = "{LOOPBACK}"
port = {heavydb_port}
password = "{HEAVYDB_PASSWORD}"
timeout_s = 10
[environments.{{e}}.mysql]
host = "{LOOPBACK}"
port = {env.mysql.port}
user = "{env.mysql.user}"
password = "{password}"
database = "{env.mysql.database}"
timeout_s = 10
[environments.{{e}}.redis]
"""
    text = ""
    for e in ("blue", "green"):
        text += f"[environments.{e}]" + block.replace("{e}", e)
    text += f"""
[traffic]
url = "http://{LOOPBACK}:9"
[storage]
bucket = "unused"
[metrics]
prometheus_url = "http://{LOOPBACK}:9"
[integrity]
sample_size = 200
[[integrity.tables]]
name = "{TRADES}"
key = "trade_id"
critical = true
[[integrity.tables]]
name = "{RESULTS}"
key = ["strategy_id", "run_date"]
[[integrity.tables]]
name = "{SAME}"
key = "trade_id"
"""
    path.write_text(text)
    return path


class World:
    def __init__(self, config: Path, down_config: Path, settings: Settings, server: Any) -> None:
        self.config = config
        self.down_config = down_config
        self.settings = settings
        self.server = server
        self.results = seed.strategy_results_frame()

    def sources(self, table: str) -> tuple[SQLTableSource, SQLTableSource]:
        from tbs_emergency.config import load_settings
        from tbs_emergency.connectors.heavydb import HeavyDBDatabase, HeavyDBIntegrity
        from tbs_emergency.connectors.mysql import MySQLDatabase, MySQLIntegrity

        env = load_settings(self.config).environment("blue")
        left = SQLTableSource(
            HeavyDBIntegrity(HeavyDBDatabase(env.heavydb, "heavydb[test]")), table
        )
        right = SQLTableSource(MySQLIntegrity(MySQLDatabase(env.mysql, "mysql[test]")), table)
        return left, right


@pytest.fixture(scope="module")
def world(
    mariadb: Any,
    heavydb_server: Any,
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    import pymysql

    from sandbox.proc import free_port

    def root_sql(*statements: str) -> None:
        con = pymysql.connect(
            unix_socket=mariadb.extra["socket"],
            user="root",
            password="",
            database="tbs_archive",
            autocommit=True,
            init_command="SET time_zone='+00:00'",
        )
        try:
            with con.cursor() as cur:
                for s in statements:
                    cur.execute(s)
        finally:
            con.close()

    trades = seed.trades_frame(ROWS)
    results = seed.strategy_results_frame()
    for table, like, frame in (
        (TRADES, "trades", trades),
        (SAME, "trades", trades),
        (RESULTS, "strategy_results", results),
    ):
        _load_mysql(root_sql, mariadb, table, like, frame)
        _load_heavydb(heavydb_server, table, like, frame)

    con = _heavydb(heavydb_server)
    try:
        for key in MISSING_IN_HEAVYDB:
            con.execute(f"DELETE FROM {TRADES} WHERE trade_id = {key}")
        con.execute(f"DELETE FROM {RESULTS} WHERE strategy_id = 7 AND run_date = DATE '2024-09-01'")
    finally:
        con.close()
    root_sql(
        f"DELETE FROM {TRADES} WHERE trade_id IN ({', '.join(map(str, MISSING_IN_MYSQL))})",
        f"UPDATE {TRADES} SET price = price + 0.0001 WHERE trade_id = 1303",
        f"UPDATE {TRADES} SET executed_at = executed_at + INTERVAL 1 SECOND WHERE trade_id = 2404",
        f"UPDATE {TRADES} SET symbol = 'ZZZZ' WHERE trade_id = 2999",
        f"UPDATE {RESULTS} SET pnl = pnl + 0.01 WHERE strategy_id = 5 AND run_date = '2024-10-10'",
        f"UPDATE {RESULTS} SET sharpe = sharpe + 0.25 WHERE strategy_id = 24 AND run_date = "
        "'2025-01-23'",
    )
    tmp = tmp_path_factory.mktemp("integrity")
    config = _toml(tmp / "tbs.toml", settings, heavydb_server.port)
    down = _toml(tmp / "down.toml", settings, free_port())
    yield World(config, down, settings, heavydb_server)


# -- the checksum and the diff, without Prefect --------------------------------------------------


def _plan(left: SQLTableSource, right: SQLTableSource, key: list[str]) -> Any:
    plan, notes = build_plan("t", key, [], left.describe(), right.describe(), ("heavydb", "mysql"))
    assert notes == []
    return with_text_groups(plan, left.profile(plan, count=False, text=True))


def test_both_engines_compute_the_python_checksum(world: World) -> None:
    left, right = world.sources(SAME)
    plan = _plan(left, right, ["trade_id"])
    whole = Segment((), 1, ROWS)
    rows = right.rows(plan, whole)
    assert len(rows) == ROWS and sorted(rows) == sorted(left.rows(plan, whole))
    expected = cs.segment_checksum(rows, plan.specs, 1)
    for src in (left, right):
        (bucket,) = src.checksums(plan, whole, ROWS).values()
        assert (bucket.rows, bucket.checksum) == expected, src.name
        assert src.checksums(plan, whole, 97) == left.checksums(plan, whole, 97)
    # Same sampled rows on both sides, and the profiles agree.
    s = sample_compare(left, right, plan, 150, seed=11, rows_hint=ROWS)
    assert s.diff.consistent and s.compared == 150 and s.left_rows == s.right_rows
    pl, pr = left.profile(plan, ranges=True), right.profile(plan, ranges=True)
    assert (pl.rows, pl.minimum, pl.maximum) == (pr.rows, pr.minimum, pr.maximum)


def test_full_diff_names_exactly_the_planted_keys(world: World) -> None:
    left, right = world.sources(TRADES)
    plan = _plan(left, right, ["trade_id"])
    small = DiffOptions(bisection_factor=4, bisection_threshold=16, max_buckets=32)
    for options in (DiffOptions(), small):
        d = diff_tables(left, right, plan, options)
        assert d.only_right == [(k,) for k in MISSING_IN_HEAVYDB]
        assert d.only_left == [(k,) for k in MISSING_IN_MYSQL]
        assert {x.key[0]: x.columns for x in d.different} == {k: (c,) for k, c in CHANGED.items()}
        assert (d.rows_left, d.rows_right) == (ROWS - 2, ROWS - 2)


def test_full_diff_with_a_composite_key(world: World) -> None:
    left, right = world.sources(RESULTS)
    plan = _plan(left, right, ["strategy_id", "run_date"])
    d = diff_tables(left, right, plan, DiffOptions(bisection_threshold=8, max_buckets=8))
    assert d.display_keys(d.only_right) == [[7, "2024-09-01"]]
    assert not d.only_left
    assert [(d.display_keys([x.key])[0], x.columns) for x in d.different] == [
        ([5, "2024-10-10"], ("pnl",)),
        ([24, "2025-01-23"], ("sharpe",)),
    ]


# -- the flow and the command line, serverless ---------------------------------------------------


class _Done:
    def __init__(self, fn: Any, args: Any) -> None:
        try:
            self.value, self.error = fn(*args), None
        except Exception as exc:
            self.value, self.error = None, exc

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class _Eager:
    """A task called in place: submit() and map() run it at once (unmapped() honoured)."""

    def __init__(self, task: Any) -> None:
        self.fn = task.fn

    def submit(self, *args: Any) -> _Done:
        return _Done(self.fn, args)

    def map(self, *args: Any) -> list[_Done]:
        from prefect.utilities.annotations import unmapped

        n = next(len(a) for a in args if isinstance(a, list))
        return [
            _Done(
                self.fn,
                [
                    a.unwrap() if isinstance(a, unmapped) else a[i] if isinstance(a, list) else a
                    for a in args
                ],
            )
            for i in range(n)
        ]


@pytest.fixture
def serverless(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[Any]]]:
    from prefect import Task
    from prefect.logging import disable_run_logger

    import flows.integrity_sweep as mod

    seen: dict[str, list[Any]] = {"table": [], "markdown": []}
    for name, value in list(vars(mod).items()):
        if isinstance(value, Task):
            monkeypatch.setattr(mod, name, _Eager(value))
    monkeypatch.setattr(mod, "create_table_artifact", lambda **kw: seen["table"].append(kw))
    monkeypatch.setattr(mod, "create_markdown_artifact", lambda **kw: seen["markdown"].append(kw))
    monkeypatch.setattr(mod, "integrity_sweep", mod.integrity_sweep.fn)
    with disable_run_logger():
        yield seen


def test_sweep_full_names_the_keys_and_runs_expectations(
    world: World, serverless: dict[str, list[Any]]
) -> None:
    from flows.integrity_sweep import IntegritySweepParams, integrity_sweep

    report = integrity_sweep(
        IntegritySweepParams(
            config_path=str(world.config),
            tables=[TRADES, RESULTS],
            full=True,
            chunk_rows=1000,  # three mapped chunks for the trades table
            seed=3,
        )
    )
    doc = {t["table"]: t for t in report.to_json()["tables"]}
    assert report.exit_code == 1 and not report.consistent and report.complete
    t = doc[TRADES]
    assert (t["heavydb_rows"], t["mysql_rows"]) == (ROWS - 2, ROWS - 2)
    assert t["missing_in_heavydb"] == MISSING_IN_HEAVYDB
    assert t["missing_in_mysql"] == MISSING_IN_MYSQL
    assert t["different"] == sorted(CHANGED)
    assert t["environment"] == "blue,green"  # both environments share both databases
    detail = {d["key"]: d["columns"] for d in t["different_detail"]}
    assert list(detail[2999]) == ["symbol"]
    assert set(detail[2999]["symbol"].values()) == {"ZZZZ", seed.trades_frame(ROWS).symbol[2998]}
    r = doc[RESULTS]
    assert r["missing_in_heavydb"] == [[7, "2024-09-01"]] and r["missing_in_mysql"] == []
    assert r["different"] == [[5, "2024-10-10"], [24, "2025-01-23"]]
    # great-expectations ran on both samples and the counts
    suites = {e["suite"]: e for e in t["expectations"]}
    assert set(suites) == {f"{TRADES}.sample.heavydb", f"{TRADES}.sample.mysql", f"{TRADES}.parity"}
    assert all(e["error"] is None for e in suites.values())
    assert suites[f"{TRADES}.parity"]["success"]
    assert doc[RESULTS]["expectations"][-1]["success"] is False  # 3599 rows against 3600
    # artifacts: one table row per table, markdown with the suites
    (table_artifact,) = serverless["table"]
    assert [row["table"] for row in table_artifact["table"]] == [TRADES, RESULTS]
    assert f"{TRADES}.parity" in serverless["markdown"][0]["markdown"]


def test_sample_mode_sees_the_planted_keys_it_samples(
    world: World, serverless: dict[str, list[Any]]
) -> None:
    from flows.integrity_sweep import IntegritySweepParams, integrity_sweep

    params = IntegritySweepParams(
        config_path=str(world.config), tables=[TRADES], sample_size=5000, expectations=False
    )
    (t,) = integrity_sweep(params).to_json()["tables"]
    assert t["mode"] == "sample" and t["sample"]["keys_compared"] == ROWS
    assert t["missing_in_heavydb"] == MISSING_IN_HEAVYDB
    assert t["missing_in_mysql"] == MISSING_IN_MYSQL
    assert t["different"] == sorted(CHANGED)


def _cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from tbs_emergency.cli import app

    return CliRunner().invoke(app, list(args))


def test_cli_exit_codes_and_json(world: World, serverless: dict[str, list[Any]]) -> None:
    cfg = str(world.config)
    bad = _cli("--config", cfg, "integrity", "check", "--tables", TRADES, "--full", "--json",
               "--no-expectations", "--max-keys", "1")  # fmt: skip
    assert bad.exit_code == 1, bad.output
    doc = json.loads(bad.stdout)
    assert doc["consistent"] is False
    (t,) = doc["tables"]
    assert {"table", "heavydb_rows", "mysql_rows", "missing_in_heavydb", "missing_in_mysql",
            "different"} <= set(t)  # fmt: skip
    assert t["missing_in_heavydb"] == MISSING_IN_HEAVYDB[:1]  # capped at --max-keys ...
    assert t["missing_in_heavydb_count"] == 2 and t["missing_in_heavydb_truncated"]  # ... counted

    good = _cli("--config", cfg, "integrity", "check", "--tables", SAME, "--full",
                "--no-expectations")  # fmt: skip
    assert good.exit_code == 0, good.output
    assert "consistent" in good.stdout

    down = _cli("--config", str(world.down_config), "integrity", "check", "--tables", SAME,
                "--json", "--no-expectations")  # fmt: skip
    assert down.exit_code == 2, down.output
    (t,) = json.loads(down.stdout)["tables"]
    assert t["status"] == "error" and "heavydb" in t["error"] and "unreachable" in t["error"]

    unknown = _cli("--config", cfg, "integrity", "check", "--tables", "nope")
    assert unknown.exit_code == 2 and "no table 'nope'" in unknown.output
