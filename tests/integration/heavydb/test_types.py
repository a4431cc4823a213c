"""Every supported type round-trips with NULLs, encoded on the wire as HeavyDB encodes it."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import heavydb
import numpy as np
import pandas as pd
import pytest
from heavydb.common.ttypes import TDatumType, TEncodingType
from heavydb.thrift.ttypes import TColumn, TColumnData, TStringRow, TStringValue
from sandbox_helpers import rows, run

pytestmark = [
    pytest.mark.integration,
    # heavyai 1.3 on pandas 3 warns about select_dtypes(include="object") inside load_table
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),
]

DDL = (
    "(b BOOLEAN, ti TINYINT, si SMALLINT, i INT, bi BIGINT, f FLOAT, d DOUBLE, "
    "dec DECIMAL(10,2), s TEXT ENCODING DICT(32), sn TEXT ENCODING NONE, dt DATE, tm TIME, "
    "ts0 TIMESTAMP(0), ts3 TIMESTAMP(3), ts6 TIMESTAMP(6), ts9 TIMESTAMP(9))"
)
VALUES = (
    "(true, -5, 300, 70000, 5000000000, 1.5, 2.25, 12.34, 'héllo', 'none-enc', "
    "'2020-01-02', '10:11:12', '2020-01-02 03:04:05', '2020-01-02 03:04:05.123', "
    "'2020-01-02 03:04:05.123456', '2020-01-02 03:04:05.123456789')"
)
NULLS = "(" + ", ".join(["NULL"] * 16) + ")"

EXPECTED_PY = (
    1,  # BOOL comes back as an int, as from HeavyDB
    -5,
    300,
    70000,
    5000000000,
    1.5,
    2.25,
    12.34,
    "héllo",
    "none-enc",
    dt.date(2020, 1, 2),
    dt.time(10, 11, 12),
    dt.datetime(2020, 1, 2, 3, 4, 5),
    dt.datetime(2020, 1, 2, 3, 4, 5, 123000),
    dt.datetime(2020, 1, 2, 3, 4, 5, 123456),
    np.datetime64("2020-01-02T03:04:05.123456789"),
)
TYPE_CODES = [
    TDatumType.BOOL,
    TDatumType.TINYINT,
    TDatumType.SMALLINT,
    TDatumType.INT,
    TDatumType.BIGINT,
    TDatumType.FLOAT,
    TDatumType.DOUBLE,
    TDatumType.DECIMAL,
    TDatumType.STR,
    TDatumType.STR,
    TDatumType.DATE,
    TDatumType.TIME,
    TDatumType.TIMESTAMP,
    TDatumType.TIMESTAMP,
    TDatumType.TIMESTAMP,
    TDatumType.TIMESTAMP,
]
# what travels in the TColumn slots for the value row and for the NULL row
WIRE_VALUES = [
    ("int_col", 1),
    ("int_col", -5),
    ("int_col", 300),
    ("int_col", 70000),
    ("int_col", 5000000000),
    ("real_col", 1.5),
    ("real_col", 2.25),
    ("real_col", 12.34),
    ("str_col", "héllo"),
    ("str_col", "none-enc"),
    ("int_col", 1577923200),  # DATE: epoch seconds
    ("int_col", 36672),  # TIME: seconds since midnight
    ("int_col", 1577934245),
    ("int_col", 1577934245123),
    ("int_col", 1577934245123456),
    ("int_col", 1577934245123456789),
]
WIRE_NULLS = [
    -128,
    -128,
    -32768,
    -2147483648,
    -9223372036854775808,
    1.1754943508222875e-38,  # FLT_MIN
    2.2250738585072014e-308,  # DBL_MIN
    -9223372036854775808 / 100,  # NULL_BIGINT / 10^scale
    "",
    "",
    -9223372036854775808,
    -9223372036854775808,
    -9223372036854775808,
    -9223372036854775808,
    -9223372036854775808,
    -9223372036854775808,
]


@pytest.fixture
def typed(con: Any, name: str) -> str:
    run(con, f"CREATE TABLE {name} {DDL}")
    run(con, f"INSERT INTO {name} VALUES {VALUES}")
    run(con, f"INSERT INTO {name} VALUES {NULLS}")
    return name


def test_cursor_roundtrip_with_nulls(con: Any, typed: str) -> None:
    cur = con.cursor()
    cur.execute(f"SELECT * FROM {typed}")
    assert cur.rowcount == 2
    assert [d.type_code for d in cur.description] == TYPE_CODES
    assert [d.name for d in cur.description][:3] == ["b", "ti", "si"]
    assert all(d.null_ok for d in cur.description)
    got = cur.fetchall()
    assert got[0] == EXPECTED_PY
    assert got[1] == (None,) * 16


def test_columnar_wire_slots_nulls_and_sentinels(con: Any, typed: str) -> None:
    res = con._client.sql_execute(con._session, f"SELECT * FROM {typed}", True, None, -1, -1)
    assert res.success is True
    assert res.row_set.is_columnar is True
    assert res.row_set.rows == []
    for col, (slot, value), null_value in zip(
        res.row_set.columns, WIRE_VALUES, WIRE_NULLS, strict=True
    ):
        assert col.nulls == [False, True]
        values = getattr(col.data, slot)
        assert values[0] == value
        assert values[1] == null_value
        for other in ("int_col", "real_col", "str_col", "arr_col"):
            if other != slot:
                assert getattr(col.data, other) == []


def test_row_format(con: Any, typed: str) -> None:
    res = con._client.sql_execute(con._session, f"SELECT * FROM {typed}", False, None, -1, -1)
    assert res.row_set.is_columnar is False
    assert res.row_set.columns == []
    first, second = res.row_set.rows
    for datum, (slot, value) in zip(first.cols, WIRE_VALUES, strict=True):
        assert datum.is_null is False
        key = {"int_col": "int_val", "real_col": "real_val", "str_col": "str_val"}[slot]
        assert getattr(datum.val, key) == value
    assert all(d.is_null for d in second.cols)


def test_row_descriptor_types(con: Any, typed: str) -> None:
    res = con._client.sql_execute(con._session, f"SELECT * FROM {typed}", True, None, -1, -1)
    ti = {c.col_name: c.col_type for c in res.row_set.row_desc}
    assert (ti["dec"].precision, ti["dec"].scale) == (10, 2)
    assert ti["s"].encoding == TEncodingType.DICT and ti["s"].comp_param == 32
    assert ti["sn"].encoding == TEncodingType.NONE
    assert ti["dt"].encoding == TEncodingType.DATE_IN_DAYS and ti["dt"].size == 4
    assert [ti[f"ts{p}"].precision for p in (0, 3, 6, 9)] == [0, 3, 6, 9]


def test_table_details(con: Any, typed: str) -> None:
    details = con._client.get_table_details(con._session, typed)
    cols = {c.col_name: c for c in details.row_desc}
    assert [c.col_id for c in details.row_desc] == list(range(1, 17))
    assert cols["s"].col_type.type == TDatumType.STR
    assert cols["s"].col_type.encoding == TEncodingType.DICT
    assert cols["s"].col_type.comp_param == 32
    assert cols["sn"].col_type.encoding == TEncodingType.NONE
    assert cols["dt"].col_type.comp_param == 32
    assert cols["ts3"].col_type.precision == 3
    assert cols["i"].col_type.nullable is True
    assert details.fragment_size == 32000000
    assert details.page_size == 2097152
    assert details.max_rows == 4611686018427387904
    assert details.key_metainfo == "[]"
    assert details.is_temporary is False


def test_not_null_column(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (a INT NOT NULL, b TEXT)")
    details = con._client.get_table_details(con._session, name)
    assert [c.col_type.nullable for c in details.row_desc] == [False, True]
    with pytest.raises(heavydb.Error):
        run(con, f"INSERT INTO {name} VALUES (NULL, 'x')")
    with pytest.raises(heavydb.Error, match="cannot be omitted due to NOT NULL constraint"):
        run(con, f"INSERT INTO {name} (b) VALUES ('x')")


def test_first_n_and_at_most_n(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (a INT)")
    run(con, f"INSERT INTO {name} VALUES (1), (2), (3)")
    c, s = con._client, con._session
    res = c.sql_execute(s, f"SELECT a FROM {name} ORDER BY a", True, None, 2, -1)
    assert res.row_set.columns[0].data.int_col == [1, 2]
    res = c.sql_execute(s, f"SELECT a FROM {name}", True, None, -1, 3)
    assert len(res.row_set.columns[0].nulls) == 3
    with pytest.raises(
        heavydb.thrift.ttypes.TDBException, match="more rows than the specified cap of 2"
    ):
        c.sql_execute(s, f"SELECT a FROM {name}", True, None, -1, 2)
    with pytest.raises(
        heavydb.thrift.ttypes.TDBException, match="At most one of first_n and at_most_n"
    ):
        c.sql_execute(s, f"SELECT a FROM {name}", True, None, 1, 1)


def test_fetch_interfaces_and_parameters(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (a INT, s TEXT)")
    run(con, f"INSERT INTO {name} VALUES (1, 'x'), (2, 'y'), (3, 'z')")
    cur = con.cursor()
    cur.execute(f"SELECT a, s FROM {name} WHERE a >= :lo ORDER BY a", {"lo": 2})
    assert cur.fetchone() == (2, "y")
    assert cur.fetchone() == (3, "z")
    assert cur.fetchone() is None
    cur.execute(f"SELECT a FROM {name} ORDER BY a")
    cur.arraysize = 2
    assert cur.fetchmany() == [(1,), (2,)]
    assert cur.fetchmany(5) == [(3,)]
    cur.execute(f"SELECT s FROM {name} WHERE s = :s", {"s": "it's"})
    assert cur.fetchall() == []
    assert list(con.execute(f"SELECT count(*) FROM {name}")) == [(3,)]


def test_arrow_load_all_types_with_nulls(hcon: Any, name: str) -> None:
    hcon.execute(f"CREATE TABLE {name} {DDL}")
    df = pd.DataFrame(
        {
            "b": pd.array([True, None], dtype="boolean"),
            "ti": pd.array([-5, None], dtype="Int8"),
            "si": pd.array([300, None], dtype="Int16"),
            "i": pd.array([70000, None], dtype="Int32"),
            "bi": pd.array([5000000000, None], dtype="Int64"),
            "f": np.array([1.5, np.nan], dtype=np.float32),
            "d": [2.25, None],
            "dec": [decimal.Decimal("12.34"), None],
            "s": ["héllo", None],
            "sn": ["none-enc", None],
            "dt": [dt.date(2020, 1, 2), None],
            "tm": [dt.time(10, 11, 12), None],
            "ts0": pd.to_datetime(["2020-01-02 03:04:05", None]),
            "ts3": pd.to_datetime(["2020-01-02 03:04:05.123", None]),
            "ts6": pd.to_datetime(["2020-01-02 03:04:05.123456", None]),
            "ts9": pd.to_datetime(["2020-01-02 03:04:05.123456789", None]),
        }
    )
    hcon.load_table(name, df, method="arrow", create=False)
    got = rows(hcon, f"SELECT * FROM {name}")
    assert got == [EXPECTED_PY, (None,) * 16]


def test_arrow_load_by_column_names(hcon: Any, name: str) -> None:
    import pyarrow as pa

    hcon.execute(f"CREATE TABLE {name} (a INT, b TEXT, c DOUBLE)")
    tbl = pa.table({"c": [1.5], "a": pa.array([7], pa.int32())})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, tbl.schema) as w:
        w.write_table(tbl)
    hcon._client.load_table_binary_arrow(hcon._session, name, sink.getvalue().to_pybytes(), True)
    assert rows(hcon, f"SELECT a, b, c FROM {name}") == [(7, None, 1.5)]


def test_columnar_load_all_types_with_nulls(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} {DDL}")

    def col(slot: str, value: Any, null: Any) -> TColumn:
        return TColumn(data=TColumnData(**{slot: [value, null]}), nulls=[False, True])

    cols = [
        col("int_col", 1, -128),
        col("int_col", -5, -128),
        col("int_col", 300, -32768),
        col("int_col", 70000, -2147483648),
        col("int_col", 5000000000, -9223372036854775808),
        col("real_col", 1.5, 0.0),
        col("real_col", 2.25, 0.0),
        col("int_col", 1234, 0),  # DECIMAL(10,2) travels as a scaled integer
        col("str_col", "héllo", ""),
        col("str_col", "none-enc", ""),
        col("int_col", 1577923200, -9223372036854775808),
        col("int_col", 36672, -9223372036854775808),
        col("int_col", 1577934245, -9223372036854775808),
        col("int_col", 1577934245123, -9223372036854775808),
        col("int_col", 1577934245123456, -9223372036854775808),
        col("int_col", 1577934245123456789, -9223372036854775808),
    ]
    con._client.load_table_binary_columnar(con._session, name, cols, [])
    assert rows(con, f"SELECT * FROM {name}") == [EXPECTED_PY, (None,) * 16]


def test_columnar_load_inconsistent_rows(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (a INT, b INT)")
    cols = [
        TColumn(data=TColumnData(int_col=[1, 2]), nulls=[False, False]),
        TColumn(data=TColumnData(int_col=[1]), nulls=[False]),
    ]
    with pytest.raises(heavydb.thrift.ttypes.TDBException, match="Inconsistent number of rows"):
        con._client.load_table_binary_columnar(con._session, name, cols, [])
    assert rows(con, f"SELECT count(*) FROM {name}") == [(0,)]


def test_row_load_strings_with_nulls(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} {DDL}")
    values = [
        "true",
        "-5",
        "300",
        "70000",
        "5000000000",
        "1.5",
        "2.25",
        "12.34",
        "héllo",
        "none-enc",
        "2020-01-02",
        "10:11:12",
        "2020-01-02 03:04:05",
        "2020-01-02 03:04:05.123",
        "2020-01-02 03:04:05.123456",
        "2020-01-02 03:04:05.123456789",
    ]
    good = TStringRow(cols=[TStringValue(str_val=v, is_null=False) for v in values])
    nulls = TStringRow(cols=[TStringValue(str_val="", is_null=True) for _ in values])
    con._client.load_table(con._session, name, [good, nulls], [])
    assert rows(con, f"SELECT * FROM {name}") == [EXPECTED_PY, (None,) * 16]


def test_heavyai_rowwise_load(hcon: Any, name: str) -> None:
    hcon.execute(f"CREATE TABLE {name} (a INT, s TEXT, t TIMESTAMP(0), d DOUBLE)")
    hcon.load_table_rowwise(
        name,
        [(1, "x", dt.datetime(2021, 5, 6, 7, 8, 9), 1.5), (2, "y", dt.datetime(2021, 1, 1), None)],
    )
    assert rows(hcon, f"SELECT * FROM {name} ORDER BY a") == [
        (1, "x", dt.datetime(2021, 5, 6, 7, 8, 9), 1.5),
        (2, "y", dt.datetime(2021, 1, 1), None),  # "None" loads as NULL into a number column
    ]


def test_select_ipc_wire_and_shared_memory(hcon: Any, name: str) -> None:
    from heavydb.thrift.ttypes import TArrowTransport

    hcon.execute(f"CREATE TABLE {name} (a BIGINT, s TEXT, f DOUBLE, d DATE)")
    hcon.execute(f"INSERT INTO {name} VALUES (1, 'x', 1.5, '2020-01-02'), (2, NULL, NULL, NULL)")
    for transport in (TArrowTransport.WIRE, TArrowTransport.SHARED_MEMORY):
        df = hcon.select_ipc(f"SELECT * FROM {name} ORDER BY a", transport_method=transport)
        assert list(df.columns) == ["a", "s", "f", "d"]
        assert df["a"].tolist() == [1, 2]
        assert df["s"].dtype == "category"  # dict-encoded text comes back as a categorical
        assert df["s"].tolist()[0] == "x" and pd.isna(df["s"].tolist()[1])
        assert df["f"].tolist()[0] == 1.5 and np.isnan(df["f"].tolist()[1])


def test_sql_execute_df_refuses_dml(hcon: Any, name: str) -> None:
    with pytest.raises(
        heavydb.thrift.ttypes.TDBException, match="DDL or update DML are not unsupported"
    ):
        hcon.select_ipc(f"CREATE TABLE {name} (a INT)")


def test_binary_row_load_and_import_table(con: Any, name: str, tmp_path: Any) -> None:
    from heavydb.thrift.ttypes import TCopyParams, TDatum, TDatumVal, TRow

    run(con, f"CREATE TABLE {name} (a INT, s TEXT, d DATE, x DOUBLE)")
    row = TRow(
        cols=[
            TDatum(TDatumVal(int_val=5), False),
            TDatum(TDatumVal(str_val="five"), False),
            TDatum(TDatumVal(int_val=1577923200), False),
            TDatum(TDatumVal(real_val=0.5), False),
        ]
    )
    nulls = TRow(cols=[TDatum(TDatumVal(), True)] * 4)
    con._client.load_table_binary(con._session, name, [row, nulls], [])
    csv = tmp_path / "in.csv"
    csv.write_text("a,s,d,x\n6,six,2020-01-03,1.5\n")
    con._client.import_table(con._session, name, str(csv), TCopyParams(delimiter=","))
    assert rows(con, f"SELECT * FROM {name} ORDER BY a") == [
        (5, "five", dt.date(2020, 1, 2), 0.5),
        (6, "six", dt.date(2020, 1, 3), 1.5),
        (None, None, None, None),
    ]


def test_explain(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (a INT)")
    cur = con.cursor()
    cur.execute(f"EXPLAIN SELECT a FROM {name}")
    assert [d.name for d in cur.description] == ["Explanation"]
    (plan,) = cur.fetchone()
    assert plan.strip()
