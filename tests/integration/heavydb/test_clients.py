"""Which heavyai 1.3 calls work on pandas 3 against the sandbox (the wire paths the project uses),
large payloads, and concurrent sessions."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import heavydb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from heavydb.thrift.ttypes import TDBException
from sandbox_helpers import rows, run

pytestmark = [
    pytest.mark.integration,
    # heavyai 1.3 on pandas 3 warns about select_dtypes(include="object") inside load_table
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),
]


def test_heavyai_load_table_infers_arrow_for_dataframes(hcon: Any, name: str) -> None:
    hcon.execute(f"CREATE TABLE {name} (a BIGINT, s TEXT, f DOUBLE, ts TIMESTAMP(0))")
    df = pd.DataFrame(
        {
            "a": [1, 2, 3],
            "s": ["x", None, "z"],  # pandas 3 "str" dtype
            "f": [0.5, np.nan, 2.5],
            "ts": pd.to_datetime(["2024-01-01 00:00:01", "2024-01-02 00:00:00", None]),
        }
    )
    hcon.load_table(name, df)  # method='infer' + existing table -> load_table_arrow
    hcon.load_table(
        name, pa.table({"a": [4], "s": ["w"], "f": [1.0], "ts": pa.array([0], pa.timestamp("s"))})
    )
    got = rows(hcon, f"SELECT a, s, f FROM {name} ORDER BY a")
    assert got == [(1, "x", 0.5), (2, None, None), (3, "z", 2.5), (4, "w", 1.0)]


def test_heavyai_create_table_from_dataframe(hcon: Any, name: str) -> None:
    # numeric, bool, datetime and object-dtype text work; pandas 3 "str" dtype does not (client bug)
    df = pd.DataFrame(
        {
            "i": np.array([1, 2], dtype=np.int32),
            "f": [1.5, 2.5],
            "b": [True, False],
            "t": pd.to_datetime(["2024-01-01", "2024-01-02"]),
            "s": pd.Series(["a", "b"], dtype=object),
        }
    )
    hcon.load_table(name, df)
    assert [(c.name, c.type) for c in hcon.get_column_details(name)] == [
        ("i", "INT"),
        ("f", "DOUBLE"),
        ("b", "BOOL"),
        ("t", "TIMESTAMP"),
        ("s", "STR"),
    ]
    assert rows(hcon, f"SELECT i, s FROM {name} ORDER BY i") == [(1, "a"), (2, "b")]
    with pytest.raises(TypeError, match="Unhandled type str"):
        hcon.create_table(f"{name}_str", pd.DataFrame({"s": ["x"]}))


def test_heavyai_columnar_loader_is_broken_on_pandas3(hcon: Any, name: str) -> None:
    hcon.execute(f"CREATE TABLE {name} (a BIGINT, f DOUBLE)")
    with pytest.raises(
        AttributeError, match=re.escape("'numpy.ndarray' object has no attribute 'loc'")
    ):
        hcon.load_table_columnar(name, pd.DataFrame({"a": [1], "f": [1.0]}))
    # the rows path works (values are sent as strings)
    hcon.load_table(name, pd.DataFrame({"a": [1], "f": [1.0]}), method="rows")
    assert rows(hcon, f"SELECT * FROM {name}") == [(1, 1.0)]


def test_heavyai_misc_calls(hcon: Any, name: str) -> None:
    hcon.execute(f"CREATE TABLE {name} (a INT)")
    assert str(hcon.get_version()) == "8.0.1"
    assert name in hcon.get_tables()
    assert hcon.get_table_details(name).fragment_size == 32000000
    with pytest.raises(ImportError, match="cudf"):
        hcon.select_ipc_gpu(f"SELECT * FROM {name}")
    with pytest.raises(
        TDBException, match="get_dashboards is not supported by the HeavyDB sandbox server"
    ):
        hcon.get_dashboards()


def test_arrow_load_larger_than_thrift_default_string_limit(hcon: Any, name: str) -> None:
    n = 600_000
    hcon.execute(f"CREATE TABLE {name} (a BIGINT, s TEXT ENCODING NONE)")
    df = pd.DataFrame(
        {"a": np.arange(n, dtype=np.int64), "s": ["x" * 24 + str(i % 10) for i in range(n)]}
    )
    hcon.load_table_arrow(name, df)  # one ~20 MB Thrift string
    assert rows(hcon, f"SELECT count(*), sum(a), count(DISTINCT s) FROM {name}") == [
        (n, n * (n - 1) // 2, 10)
    ]
    cur = hcon.cursor()
    cur.execute(f"SELECT a, s FROM {name} WHERE a >= {n - 150_000} ORDER BY a")
    got = cur.fetchall()
    assert len(got) == 150_000 and got[0] == (n - 150_000, "x" * 24 + str((n - 150_000) % 10))


def test_concurrent_sessions(sandbox: Any, con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (worker INT, i INT)")

    def work(worker: int) -> int:
        c = heavydb.connect(
            user="admin", password="HyperInteractive", host=sandbox.host, port=sandbox.port
        )
        try:
            for i in range(15):
                run(c, f"INSERT INTO {name} VALUES ({worker}, {i})")
                assert rows(c, f"SELECT count(*) FROM {name} WHERE worker = {worker}") == [(i + 1,)]
            return worker
        finally:
            c.close()

    with ThreadPoolExecutor(6) as pool:
        assert sorted(pool.map(work, range(6))) == list(range(6))
    assert rows(con, f"SELECT count(*) FROM {name}") == [(90,)]
    assert con._client.get_table_epoch_by_name(con._session, name) == 90


def test_reads_proceed_while_a_query_runs(sandbox: Any, con: Any, connect: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (a INT)")
    run(con, f"INSERT INTO {name} SELECT * FROM (VALUES (1)) AS v(a)")
    for _ in range(11):
        run(con, f"INSERT INTO {name} SELECT a FROM {name}")
    slow = connect()
    done = threading.Event()

    def long_query() -> None:
        try:
            rows(slow, f"SELECT count(*) FROM {name} x, {name} y, {name} z WHERE x.a + y.a > z.a")
        except heavydb.Error:
            pass
        finally:
            done.set()

    t = threading.Thread(target=long_query)
    t.start()
    try:
        other = connect()
        for _ in range(5):
            assert rows(other, f"SELECT count(*) FROM {name}") == [(2048,)]
        assert not done.is_set()
    finally:
        con._client.interrupt(slow._session, con._session)
        t.join(20)
    assert done.is_set()
