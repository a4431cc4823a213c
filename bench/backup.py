"""Benchmark: backup + verification of a 1,000,000-row table, tbs-emergency against
`mariadb-dump --single-transaction | gzip` and mydumper, side by side on the same data.

    uv run python bench/backup.py [--rows N] [--runs R] [--connections C] [--dir PATH]

Starts its own servers (sandbox/services.py: MariaDB with a 512 MB buffer pool set at run time
so the table is in memory for every tool; moto's S3), loads the seeded `trades` table
(sandbox/seed.py), then runs, R times in turn:

- mariadb-dump: `mariadb-dump --single-transaction <db> trades | gzip > file` (no verification);
- mydumper (if installed): `mydumper -B <db> -T trades -t C -c -r 100000` (no verification);
- tbs-emergency: the `emergency_backup` flow body (MySQL part) with its tasks run in-process:
  consistent snapshot, C connections, LZ4 chunks uploaded to S3 with sha256 and SSE, then
  every object re-read and verified (sha256, LZ4 content checksum, row counts), then the
  manifest written and read back. Prefect's own orchestration overhead is not included.

Prints the median wall time of each and the ratios. Goal: tbs-emergency (with verification)
at least 1.5x faster than mariadb-dump.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATABASE = "tbs_archive"
BUCKET = "bench-backups"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load(service: Any, rows: int) -> None:
    import pymysql

    from sandbox import seed

    frame = seed.trades_frame(rows)
    con = pymysql.connect(
        unix_socket=service.extra["socket"],
        user="root",
        password="",
        autocommit=False,
        local_infile=True,
        init_command="SET time_zone='+00:00'",
    )
    try:
        with con.cursor() as cur:
            cur.execute("SET GLOBAL innodb_buffer_pool_size = 536870912")
            cur.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
            cur.execute(f"USE {DATABASE}")
            cur.execute("SET SESSION sql_log_bin = 0")
            cur.execute("SET SESSION unique_checks = 0")
            cur.execute("DROP TABLE IF EXISTS trades")
            cur.execute(seed.MYSQL_DDL["trades"])
        seed._mysql_load(con, "trades", frame)
        con.commit()
        with con.cursor() as cur:
            cur.execute("SELECT COUNT(*), SUM(LENGTH(symbol)) FROM trades")  # warm the pool
            log(f"loaded {cur.fetchone()[0]:,} rows")
    finally:
        con.close()


def config(tmp: Path, mysql_port: int, moto_url: str, socket: str | None = None) -> str:
    """A tbs.toml for the bench servers (root; the socket, like the baselines, when given)."""
    sock = f'unix_socket = "{socket}"' if socket else ""
    text = f"""
[environments.blue]
app_url = "http://127.0.0.1:1"
[environments.blue.heavydb]
port = 1
[environments.blue.mysql]
host = "127.0.0.1"
port = {mysql_port}
user = "root"
password = ""
database = "{DATABASE}"
{sock}
[environments.blue.redis]
url = "redis://127.0.0.1:1/0"
[environments.green]
app_url = "http://127.0.0.1:1"
[environments.green.heavydb]
port = 1
[environments.green.mysql]
host = "127.0.0.1"
port = {mysql_port}
user = "root"
password = ""
database = "{DATABASE}"
{sock}
[environments.green.redis]
url = "redis://127.0.0.1:1/0"
[traffic]
kind = "http"
url = "http://127.0.0.1:1"
[storage]
bucket = "{BUCKET}"
endpoint_url = "{moto_url}"
access_key_id = "testing"
secret_access_key = "testing"
[metrics]
prometheus_url = "http://127.0.0.1:1"
[database_emergency.mysql_admin]
user = "root"
"""
    path = tmp / "tbs.toml"
    path.write_text(text)
    return str(path)


def run_mariadb_dump(service: Any, out: Path) -> float:
    target = out / "dump.sql.gz"
    start = time.perf_counter()
    subprocess.run(
        f"mariadb-dump --no-defaults -S {service.extra['socket']} -uroot --single-transaction"
        f" {DATABASE} trades | gzip > {target}",
        shell=True,
        check=True,
    )
    took = time.perf_counter() - start
    target.unlink()
    return took


def run_mydumper(service: Any, out: Path, threads: int) -> float:
    target = out / "mydumper"
    shutil.rmtree(target, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(
        [
            "mydumper",
            "-S",
            service.extra["socket"],
            "-u",
            "root",
            "-B",
            DATABASE,
            "-T",
            "trades",
            "-t",
            str(threads),
            "-c",
            "-r",
            "100000",
            "-o",
            str(target),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    took = time.perf_counter() - start
    shutil.rmtree(target, ignore_errors=True)
    return took


def run_ours(cfg: str, connections: int) -> tuple[float, Any]:
    from flows.emergency_backup import BackupParams
    from tests.integration.test_backup_support import serverless

    start = time.perf_counter()
    with serverless(active_env="blue") as s:
        report = s.call(
            "emergency_backup",
            BackupParams(
                config_path=cfg,
                heavydb=False,
                tables=["trades"],
                connections=connections,
                apply_retention=False,
            ),
        )
    return time.perf_counter() - start, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    from sandbox.services import start_mariadb, start_moto
    from tbs_emergency.config import load_settings
    from tbs_emergency.connectors.objectstore import S3ObjectStore

    work = Path(args.dir or tempfile.mkdtemp(prefix="bench-backup-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"starting MariaDB and moto under {work}")
    maria = start_mariadb(work / "mariadb")
    moto = start_moto(work / "moto")
    try:
        load(maria, args.rows)
        cfg = config(work, maria.port, moto.url, maria.extra["socket"])
        S3ObjectStore(load_settings(cfg).storage).ensure_bucket()
        have_mydumper = shutil.which("mydumper") is not None
        times: dict[str, list[float]] = {"mariadb-dump | gzip": [], "tbs-emergency": []}
        if have_mydumper:
            times["mydumper"] = []
        report = None
        for i in range(args.runs):
            t = run_mariadb_dump(maria, work)
            times["mariadb-dump | gzip"].append(t)
            log(f"run {i + 1}: mariadb-dump | gzip {t:.2f}s")
            if have_mydumper:
                t = run_mydumper(maria, work, args.connections)
                times["mydumper"].append(t)
                log(f"run {i + 1}: mydumper -t {args.connections} -c {t:.2f}s")
            t, report = run_ours(cfg, args.connections)
            times["tbs-emergency"].append(t)
            log(
                f"run {i + 1}: tbs-emergency backup+verify {t:.2f}s"
                f" ({report.mysql_rows:,} rows, {len(report.objects)} objects,"
                f" {report.bytes:,} bytes)"
            )
        med = {k: statistics.median(v) for k, v in times.items()}
        ours = med["tbs-emergency"]
        print()
        print(
            f"backup of {args.rows:,} rows, median of {args.runs} runs"
            f" (tbs-emergency: {args.connections} connections, verification included)"
        )
        for name, t in med.items():
            ratio = "" if name == "tbs-emergency" else f"   tbs-emergency is {t / ours:.2f}x faster"
            print(f"  {name:<22} {t:7.2f} s{ratio}")
        goal = med["mariadb-dump | gzip"] / ours
        print(
            f"goal >= 1.5x faster than mariadb-dump: {'MET' if goal >= 1.5 else 'NOT MET'}"
            f" ({goal:.2f}x)"
        )
    finally:
        maria.stop()
        moto.stop()
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
