"""Benchmark of the HeavyDB sandbox server (not part of the test suite).

    uv run python bench/heavydb_sandbox.py [--rows N]

Loads N rows of mixed types through heavyai's Arrow path (``load_table(..., method='arrow')``,
i.e. ``load_table_binary_arrow``) and fetches them back through ``sql_execute``, and does
the same work with DuckDB in-process (load from Arrow, fetch to Arrow) for comparison.

Fetch figures are split so the server's cost is visible apart from the Python client's:

* server load (in-process): the server's ``load_table_binary_arrow`` handler on the same
  serialised payload (Arrow stream parse, privilege check, casts, insert, epoch): the server's
  cost of a load, apart from heavyai's serialisation and Thrift transfer;
* server encode (in-process): ``results.encode_columnar`` on the query's Arrow result;
* raw sql_execute: a Thrift request whose reply bytes are read but not decoded (server
  execution + encoding + transfer);
* sql_execute + Thrift decode: ``Client.sql_execute`` (the reply decoded into lists);
* cursor.fetchall: what pyheavydb users see (decode + building row tuples).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import duckdb
import heavyai
import numpy as np
import pandas as pd
import pyarrow as pa
from heavyai._pandas_loaders import _serialize_arrow_payload
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.Thrift import TMessageType
from thrift.transport.TTransport import TMemoryBuffer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from heavydb.thrift.Heavy import sql_execute_args, sql_execute_result  # noqa: E402

from sandbox.heavydb import results  # noqa: E402
from sandbox.heavydb import types as ht  # noqa: E402
from sandbox.heavydb.catalog import SandboxDB  # noqa: E402
from sandbox.heavydb.handler import Handler  # noqa: E402
from sandbox.heavydb.testing import start_server  # noqa: E402

DDL = (
    "(id BIGINT, qty INT, price DOUBLE, ratio FLOAT, flag BOOLEAN, sym TEXT ENCODING DICT(32), "
    "note TEXT ENCODING NONE, ts TIMESTAMP(3), day DATE, amount DECIMAL(12,2))"
)
DUCK_DDL = (
    "(id BIGINT, qty INTEGER, price DOUBLE, ratio FLOAT, flag BOOLEAN, sym VARCHAR, note VARCHAR, "
    "ts TIMESTAMP_MS, day DATE, amount DECIMAL(12,2))"
)


def make_frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(42)
    syms = np.array(["IBM", "RHAT", "MSFT", "AAPL", "NVDA", "AMZN", "GOOG", "META"], dtype=object)
    price = rng.random(n) * 1000
    price[::97] = np.nan
    start = np.datetime64("2024-01-01T00:00:00", "ms")
    return pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),
            "qty": pd.array(rng.integers(-1000, 1000, n, dtype=np.int32), dtype="Int32"),
            "price": price,
            "ratio": rng.random(n).astype(np.float32),
            "flag": rng.random(n) < 0.5,
            "sym": pd.Series(syms[rng.integers(0, len(syms), n)], dtype="str"),
            "note": pd.Series([f"note-{i % 5000}" for i in range(n)], dtype="str"),
            "ts": start + rng.integers(0, 10**10, n).astype("timedelta64[ms]"),
            "day": (start + rng.integers(0, 10**10, n).astype("timedelta64[ms]")).astype(
                "datetime64[s]"
            ),
            "amount": np.round(rng.random(n) * 10000, 2),
        }
    )


def _complete(reply: bytes) -> bool:
    """Whether ``reply`` holds a whole sql_execute reply (checked untimed, by decoding it)."""
    try:
        proto = TBinaryProtocol(TMemoryBuffer(reply))
        proto.readMessageBegin()
        result = sql_execute_result()
        result.read(proto)
        return result.success is not None or result.e is not None
    except Exception:
        return False


def raw_sql_execute(host: str, port: int, session: str, query: str) -> tuple[float, int]:
    """Send sql_execute and receive the whole reply without decoding it.

    Returns (seconds from sending the request to the arrival of the reply's last byte,
    reply bytes).  Completeness is checked afterwards, outside the timed span.
    """
    buf = TMemoryBuffer()
    proto = TBinaryProtocol(buf)
    proto.writeMessageBegin("sql_execute", TMessageType.CALL, 1)
    sql_execute_args(
        session=session, query=query, column_format=True, first_n=-1, at_most_n=-1
    ).write(proto)
    proto.writeMessageEnd()
    request = buf.getvalue()
    chunks: list[bytes] = []
    with socket.create_connection((host, port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(2.0)
        t0 = time.perf_counter()
        s.sendall(request)
        last = t0
        while True:
            try:
                data = s.recv(1 << 22)
            except TimeoutError:
                if _complete(b"".join(chunks)):
                    break
                continue
            if not data:
                break
            last = time.perf_counter()
            chunks.append(data)
    return last - t0, sum(len(c) for c in chunks)


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def duck_load(duck_dir: Path, df: pd.DataFrame, i: int) -> tuple[float, float]:
    """DuckDB in-process, the same load: (from_pandas + INSERT, INSERT from Arrow) seconds."""
    dcon = duckdb.connect(str(duck_dir / "bench.duckdb"))
    try:
        table = "bench" if i == 0 else f"bench_{i}"
        dcon.execute(f"CREATE TABLE {table} {DUCK_DDL}")
        dcon.execute(f"CREATE TABLE {table}_arrow {DUCK_DDL}")
        t_full, _ = timed(
            lambda: (
                dcon.register("src", pa.Table.from_pandas(df, preserve_index=False)),
                dcon.execute(f"INSERT INTO {table} SELECT * FROM src"),
                dcon.unregister("src"),
            )
        )
        arrow = pa.Table.from_pandas(df, preserve_index=False)
        dcon.register("src_arrow", arrow)
        t_insert, _ = timed(
            lambda: dcon.execute(f"INSERT INTO {table}_arrow SELECT * FROM src_arrow")
        )
        dcon.unregister("src_arrow")
        dcon.execute(f"DROP TABLE {table}_arrow")
        if i:
            dcon.execute(f"DROP TABLE {table}")
        return t_full, t_insert
    finally:
        dcon.close()


def server_load(directory: Path, payload: bytes, repeat: int) -> list[float]:
    """The server's handler in this process: `repeat` loads of `payload` into fresh tables."""
    db = SandboxDB(str(directory / "inprocess.duckdb"), "HyperInteractive")
    try:
        h = Handler(db)
        session = h.connect("admin", "HyperInteractive", "heavyai")
        out = []
        for i in range(repeat):
            h.sql_execute(session, f"CREATE TABLE t{i} {DDL}", True, "", -1, -1)
            t, _ = timed(lambda i=i: h.load_table_binary_arrow(session, f"t{i}", payload, False))
            out.append(t)
            h.sql_execute(session, f"DROP TABLE t{i}", True, "", -1, -1)
        return out
    finally:
        db.close()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="loads to take the median of")
    args = ap.parse_args()
    n = args.rows
    print(f"building a DataFrame of {n:,} rows x 10 columns ...", flush=True)
    df = make_frame(n)

    t_loads: list[float] = []
    t_serializes: list[float] = []
    t_calls: list[float] = []
    t_duck_loads: list[float] = []
    t_duck_inserts: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        duck_dir = Path(tmp) / "duck"
        duck_dir.mkdir()
        srv = start_server(Path(tmp) / "sandbox")
        try:
            con = heavyai.connect(
                user="admin",
                password="HyperInteractive",
                host=srv.host,
                port=srv.port,
                dbname="heavyai",
            )
            # Each repetition loads into a fresh table, sandbox and DuckDB side by side, so
            # both see the same machine load; the median is reported (the first, cold, load too).
            meta = None
            for i in range(args.repeat):
                table = "bench" if i == 0 else f"bench_{i}"
                con.execute(f"CREATE TABLE {table} {DDL}")
                meta = meta or con.get_column_details(table)
                t, _ = timed(lambda t=table: con.load_table(t, df, method="arrow", create=False))
                t_loads.append(t)
                t, payload = timed(
                    lambda m=meta: _serialize_arrow_payload(
                        df, m, preserve_index=False
                    ).to_pybytes()
                )
                t_serializes.append(t)
                con.execute(f"CREATE TABLE {table}_call {DDL}")
                t, _ = timed(
                    lambda t=table, p=payload: con._client.load_table_binary_arrow(
                        con._session, f"{t}_call", p, False
                    )
                )
                t_calls.append(t)
                if i == 0:
                    first_payload = payload
                del payload
                con.execute(f"DROP TABLE {table}_call")
                if i:
                    con.execute(f"DROP TABLE {table}")
                t_duck, t_duck_insert = duck_load(duck_dir, df, i)
                t_duck_loads.append(t_duck)
                t_duck_inserts.append(t_duck_insert)
            (count,) = next(iter(con.execute("SELECT count(*) FROM bench")))
            assert count == n, count

            query = "SELECT * FROM bench"
            t_raw, nbytes = raw_sql_execute(srv.host, srv.port, con._session, query)
            t_thrift, res = timed(
                lambda: con._client.sql_execute(con._session, query, True, None, -1, -1)
            )
            assert len(res.row_set.columns[0].nulls) == n
            del res
            cur = con.cursor()
            t_cursor, got = timed(lambda: (cur.execute(query), cur.fetchall())[1])
            assert len(got) == n
            del got
            con.close()
        finally:
            srv.stop()

        t_server_loads = server_load(Path(tmp), first_payload, args.repeat)
        del first_payload
        # server-side encode in-process, on the same Arrow result DuckDB gives the server
        dcon = duckdb.connect(str(duck_dir / "bench.duckdb"))
        t_duck_fetch, table = timed(lambda: dcon.sql("SELECT * FROM bench").to_arrow_table())
        types = [ht.from_arrow(f.type) for f in table.schema]
        rs = results.ResultSet(table, table.column_names, types)
        t_encode, enc = timed(lambda: results.encode_columnar(rs, nonce="", total_time_ms=0))
        dcon.close()

    def line(label: str, secs: float, base: float | None = None) -> None:
        ratio = f"  ({secs / base:5.1f}x DuckDB in-process)" if base else ""
        print(f"  {label:<44} {secs:8.3f} s  {n / secs / 1e6:7.2f} M rows/s{ratio}")

    print(f"\nHeavyDB sandbox server, {n:,} rows, 10 mixed columns")
    t_load, t_serialize, t_call = median(t_loads), median(t_serializes), median(t_calls)
    t_duck_load, t_duck_insert = median(t_duck_loads), median(t_duck_inserts)
    print(f"load (median of {args.repeat}; each into a fresh table)")
    line("heavyai load_table(method='arrow')", t_load, t_duck_load)
    line("  heavyai's client-side serialisation alone", t_serialize)
    line("  load_table_binary_arrow call (serialised)", t_call, t_duck_insert)
    line("  server load only (in-process handler)", median(t_server_loads), t_duck_insert)
    line("DuckDB in-process: from_pandas + INSERT", t_duck_load)
    line("DuckDB in-process: INSERT from Arrow", t_duck_insert)
    print(
        f"  first (cold) heavyai load_table: {t_loads[0]:.3f} s; every call: "
        + ", ".join(f"{x:.3f}" for x in t_calls)
    )
    print("fetch (SELECT * over the wire)")
    line("server encode only (in-process)", t_encode, t_duck_fetch)
    line(f"raw sql_execute, reply not decoded ({nbytes / 1e6:.0f} MB)", t_raw, t_duck_fetch)
    line("sql_execute + Thrift decode (client)", t_thrift, t_duck_fetch)
    line("cursor.execute + fetchall (client)", t_cursor, t_duck_fetch)
    line("DuckDB in-process: SELECT * to Arrow", t_duck_fetch)
    print(f"\n  client-side decode share of sql_execute: {max(t_thrift - t_raw, 0):.3f} s")
    print(f"  encoded payload: {enc.nbytes / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
