"""Benchmark: binlog replay of a point-in-time recovery (100,000 row events), tbs-emergency
against the plain `mariadb-binlog | mariadb` pipeline, side by side on the same binlog.

    uv run python bench/pitr.py [--events N] [--runs R] [--dir PATH]

Starts its own servers (sandbox/services.py: MariaDB, moto's S3), creates a table, takes a
backup with the `emergency_backup` flow body, then writes N single-row changes (inserts,
updates, deletes; 100 per transaction) and picks T after the last one. Each run restores the
backup twice (not timed) into two new databases, then times:

- plain: `mariadb-binlog --read-from-remote-server --start-position=P --stop-datetime=T
  --database=src --rewrite-db=src->a FILES | mariadb --init-command='SET sql_log_bin=0'`
  (the same session setting tbs-emergency uses, so both apply the same work; both over the
  server's socket; which one runs first alternates between runs);
- tbs-emergency: the recovery's replay step (`replay_binlog`: the same pipeline, credentials in
  a private option file) with its verification as the flow runs it (the binlog's row counts per
  table read concurrently, then the recovered tables counted and compared).

Both databases are then compared (row count and checksum of every table must be equal). Prints
median times and the ratio. Goal: tbs-emergency within 1.2x of the plain pipeline.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.backup import config, log  # noqa: E402

DATABASE = "tbs_archive"


def _root(service: Any, database: str | None = None) -> Any:
    import pymysql

    return pymysql.connect(
        unix_socket=service.extra["socket"],
        user="root",
        password="",
        autocommit=True,
        database=database,
        init_command="SET time_zone='+00:00'",
    )


def prepare(service: Any) -> None:
    con = _root(service)
    with con.cursor() as cur:
        cur.execute("SET GLOBAL innodb_buffer_pool_size = 268435456")
        cur.execute("SET GLOBAL innodb_flush_log_at_trx_commit = 2")
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        cur.execute(f"USE {DATABASE}")
        cur.execute(
            "CREATE TABLE events (id INT PRIMARY KEY, account INT NOT NULL, amount DECIMAL(12,2),"
            " note VARCHAR(64), updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))"
        )
        cur.execute(
            "INSERT INTO events (id, account, amount, note) SELECT seq, seq % 500, seq / 100,"
            " CONCAT('seed ', seq) FROM seq_1_to_50000"
        )
    con.close()


def generate(service: Any, events: int) -> None:
    rng = random.Random(20250124)
    con = _root(service, DATABASE)
    con.autocommit(False)
    cur = con.cursor()
    next_id = 100_000
    for i in range(events):
        op = rng.random()
        if op < 0.5:
            cur.execute(
                "INSERT INTO events (id, account, amount, note) VALUES (%s, %s, %s, %s)",
                (next_id, rng.randint(0, 499), rng.randint(1, 99999) / 100, f"live {i}"),
            )
            next_id += 1
        elif op < 0.85:
            cur.execute(
                "UPDATE events SET amount = amount + 1, note = %s WHERE id = %s",
                (f"upd {i}", rng.randint(1, 50_000)),
            )
        else:
            cur.execute("DELETE FROM events WHERE id = %s", (rng.randint(1, 50_000),))
        if i % 100 == 99:
            con.commit()
    con.commit()
    con.close()


def restore_into(cfg: str, backup_id: str, target: str) -> None:
    from tasks.backup import read_manifest
    from tasks.recovery import discard_staged, fetch_backup, load_mysql_table, prepare_mysql_target

    manifest = read_manifest.fn(cfg, backup_id)
    tables = manifest.mysql.tables
    plan = prepare_mysql_target.fn(cfg, "blue", target, tables, "bench0", False, DATABASE)
    staged = fetch_backup.fn(cfg, backup_id, [t.name for t in tables], [])
    for t in tables:
        load_mysql_table.fn(cfg, "blue", plan.load_database, t, staged)
    discard_staged.fn(staged)


def plain(service: Any, plan: Any, target: str) -> float:
    files = " ".join(plan.files)
    stop = plan.stop_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    cmd = (
        f"TZ=UTC mariadb-binlog --no-defaults --read-from-remote-server"
        f" --socket={service.extra['socket']} --user=root --start-position={plan.start.position}"
        f" --stop-datetime='{stop}' --database={DATABASE}"
        f" --rewrite-db='{DATABASE}->{target}' {files}"
        f" | mariadb --no-defaults -S {service.extra['socket']} -uroot --binary-mode"
        " --init-command='SET sql_log_bin=0'"
    )
    start = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True)
    return time.perf_counter() - start


def ours(cfg: str, plan: Any, target: str) -> tuple[float, float]:
    from tasks.recovery import binlog_row_deltas, count_rows, replay_binlog

    p = plan.model_copy(update={"target_database": target})
    start = time.perf_counter()
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        deltas = pool.submit(binlog_row_deltas.fn, cfg, "blue", p)
        replay_binlog.fn(cfg, "blue", p)
        replayed = time.perf_counter() - start
        window = deltas.result()
    counts = count_rows.fn(cfg, "blue", target)
    assert counts, "the target has tables"
    assert window["deltas"], "the window has row changes"
    return time.perf_counter() - start, replayed


def checksums(cfg: str, database: str) -> dict[str, tuple[int, int]]:
    from tasks.backup import mysql_recovery

    rec = mysql_recovery(cfg, "blue")
    return {
        t: rec.table_checksum(database, t, rec.layout(database, t).columns)
        for t in rec.table_names(database)
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    from prefect.logging import disable_run_logger

    from flows.emergency_backup import BackupParams
    from sandbox.services import start_mariadb, start_moto
    from tasks.recovery import plan_mysql_pitr
    from tbs_emergency.config import load_settings
    from tbs_emergency.connectors.objectstore import S3ObjectStore
    from tests.integration.test_backup_support import serverless

    work = Path(args.dir or tempfile.mkdtemp(prefix="bench-pitr-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"starting MariaDB and moto under {work}")
    maria = start_mariadb(work / "mariadb")
    moto = start_moto(work / "moto")
    try:
        prepare(maria)
        cfg = config(work, maria.port, moto.url, maria.extra["socket"])
        S3ObjectStore(load_settings(cfg).storage).ensure_bucket()
        with serverless(active_env="blue") as s:
            s.call(
                "emergency_backup",
                BackupParams(config_path=cfg, heavydb=False, apply_retention=False),
            )
        log(f"backup taken; writing {args.events:,} row changes")
        generate(maria, args.events)
        time.sleep(1.1)
        with _root(maria).cursor() as cur:
            cur.execute("SELECT UTC_TIMESTAMP()")
            target_at = cur.fetchone()[0].replace(tzinfo=UTC)
        with disable_run_logger():
            decision = plan_mysql_pitr.fn(cfg, "blue", target_at, "bench_target")
        plan = decision.plan
        assert plan is not None, decision.refused
        log(f"plan: {plan.describe()[3]}")
        times: dict[str, list[float]] = {"plain pipeline": [], "tbs-emergency": [], "replay": []}
        with disable_run_logger():
            for i in range(args.runs):
                a, b = f"plain_{i}", f"ours_{i}"
                restore_into(cfg, plan.backup_id, a)
                restore_into(cfg, plan.backup_id, b)
                if i % 2 == 0:  # alternate which goes first: the machine is shared
                    t_plain = plain(maria, plan, a)
                    t_ours, t_replay = ours(cfg, plan, b)
                else:
                    t_ours, t_replay = ours(cfg, plan, b)
                    t_plain = plain(maria, plan, a)
                times["plain pipeline"].append(t_plain)
                times["tbs-emergency"].append(t_ours)
                times["replay"].append(t_replay)
                same = checksums(cfg, a) == checksums(cfg, b)
                log(
                    f"run {i + 1}: plain {t_plain:.2f}s, tbs-emergency {t_ours:.2f}s"
                    f" (replay alone {t_replay:.2f}s); identical results: {same}"
                )
                assert same, "both replays must produce the same database"
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med["tbs-emergency"] / med["plain pipeline"]
        print()
        print(f"binlog replay of {args.events:,} row events, median of {args.runs} runs")
        print(f"  plain mariadb-binlog | mariadb   {med['plain pipeline']:7.2f} s")
        print(
            f"  tbs-emergency replay + verify    {med['tbs-emergency']:7.2f} s"
            f"   ({ratio:.2f}x the plain pipeline; replay alone"
            f" {med['replay'] / med['plain pipeline']:.2f}x)"
        )
        print(f"goal within 1.2x: {'MET' if ratio <= 1.2 else 'NOT MET'}")
    finally:
        maria.stop()
        moto.stop()
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
