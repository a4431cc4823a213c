"""HeavyDB SQL statements and semantics through the real clients."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import heavydb
import pandas as pd
import pytest
from heavydb.common.ttypes import TDatumType, TEncodingType, TTypeInfo
from heavydb.thrift.ttypes import TColumnType, TCreateParams, TQueryType
from sandbox_helpers import rows, run

pytestmark = [
    pytest.mark.integration,
    # heavyai 1.3 on pandas 3 warns about select_dtypes(include="object") inside load_table
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),
]


def details(con: Any, table: str) -> dict[str, Any]:
    (row,) = rows(con, f"SHOW TABLE DETAILS {table}")
    cols = [d.name for d in con.cursor().execute(f"SHOW TABLE DETAILS {table}").description]
    return dict(zip(cols, row, strict=True))


def test_create_table_encodings_and_options(con: Any, name: str) -> None:
    run(
        con,
        f"CREATE TABLE {name} (a INTEGER NOT NULL, b TEXT ENCODING DICT(16), c TEXT ENCODING NONE, "
        "d DATE ENCODING DAYS(16), e BIGINT ENCODING FIXED(32), f DECIMAL(18,4), "
        "g TIMESTAMP(3)) WITH (max_rollback_epochs = 5, fragment_size = 1000000)",
    )
    d = details(con, name)
    assert d["max_rollback_epochs"] == 5
    assert d["fragment_size"] == 1000000
    assert d["column_count"] == 7
    cols = {
        c.col_name: c.col_type for c in con._client.get_table_details(con._session, name).row_desc
    }
    assert (cols["b"].encoding, cols["b"].comp_param) == (TEncodingType.DICT, 16)
    assert cols["c"].encoding == TEncodingType.NONE
    assert (cols["d"].encoding, cols["d"].comp_param, cols["d"].size) == (
        TEncodingType.DATE_IN_DAYS,
        16,
        2,
    )
    assert (cols["e"].encoding, cols["e"].comp_param) == (TEncodingType.FIXED, 32)
    assert (cols["f"].precision, cols["f"].scale) == (18, 4)
    assert cols["a"].nullable is False
    (create,) = rows(con, f"SHOW CREATE TABLE {name}")[0]
    assert create.startswith(f"CREATE TABLE {name} (")
    assert "b TEXT ENCODING DICT(16)" in create
    assert "c TEXT ENCODING NONE" in create
    assert "a INTEGER NOT NULL" in create
    assert "MAX_ROLLBACK_EPOCHS=5" in create


def test_create_table_errors(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (a INT)")
    with pytest.raises(heavydb.Error, match=f"Table {name} already exists."):
        run(con, f"CREATE TABLE {name} (a INT)")
    run(con, f"CREATE TABLE IF NOT EXISTS {name} (a INT)")
    with pytest.raises(heavydb.Error, match="Invalid CREATE TABLE option"):
        run(con, f"CREATE TABLE {name}_x (a INT) WITH (bogus = 1)")
    with pytest.raises(heavydb.Error, match="TIMESTAMP"):
        run(con, f"CREATE TABLE {name}_y (a TIMESTAMP(4))")
    with pytest.raises(heavydb.Error, match="defined more than once"):
        run(con, f"CREATE TABLE {name}_z (a INT, A INT)")


def test_drop_and_truncate(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (a INT)")
    run(con, f"INSERT INTO {name} VALUES (1), (2)")
    run(con, f"TRUNCATE TABLE {name}")
    assert rows(con, f"SELECT count(*) FROM {name}") == [(0,)]
    run(con, f"DROP TABLE {name}")
    assert name not in con._client.get_tables(con._session)
    with pytest.raises(heavydb.Error, match=f"Table {name} does not exist."):
        run(con, f"DROP TABLE {name}")
    run(con, f"DROP TABLE IF EXISTS {name}")


def test_alter_table(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (a INT, b TEXT)")
    run(con, f"INSERT INTO {name} VALUES (1, 'x')")
    run(con, f"ALTER TABLE {name} ADD COLUMN c DOUBLE DEFAULT 2.5")
    run(con, f"ALTER TABLE {name} ADD (d INT, e TEXT ENCODING NONE)")
    assert rows(con, f"SELECT * FROM {name}") == [(1, "x", 2.5, None, None)]
    run(con, f"ALTER TABLE {name} RENAME COLUMN b TO bb")
    run(con, f"ALTER TABLE {name} DROP COLUMN d, e")
    run(con, f"INSERT INTO {name} (a, bb) VALUES (2, 'y')")
    assert rows(con, f"SELECT a, bb, c FROM {name} ORDER BY a") == [(1, "x", 2.5), (2, "y", 2.5)]
    run(con, f"ALTER TABLE {name} RENAME TO {name}_new")
    assert f"{name}_new" in con._client.get_tables(con._session)
    assert name not in con._client.get_tables(con._session)
    assert [
        c.col_name for c in con._client.get_table_details(con._session, f"{name}_new").row_desc
    ] == ["a", "bb", "c"]
    with pytest.raises(heavydb.Error, match="Column zz does not exist"):
        run(con, f"ALTER TABLE {name}_new RENAME COLUMN zz TO y")


def test_insert_update_delete(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (id INT, v TEXT, x DOUBLE)")
    run(con, f"INSERT INTO {name} VALUES (1, 'a', 1.0), (2, 'b', 2.0)")
    run(con, f"INSERT INTO {name} (x, id) VALUES (3.5, 3)")
    run(con, f"INSERT INTO {name} SELECT id + 10, v, x * 2 FROM {name} WHERE id < 3")
    run(con, f"UPDATE {name} SET x = x + 100, v = 'u' WHERE id >= 10")
    run(con, f"DELETE FROM {name} WHERE id = 2")
    assert rows(con, f"SELECT * FROM {name} ORDER BY id") == [
        (1, "a", 1.0),
        (3, None, 3.5),
        (11, "u", 102.0),
        (12, "u", 104.0),
    ]
    run(con, f"UPDATE {name} SET v = 'all'")
    assert rows(con, f"SELECT DISTINCT v FROM {name}") == [("all",)]
    run(con, f"DELETE FROM {name}")
    assert rows(con, f"SELECT count(*) FROM {name}") == [(0,)]
    with pytest.raises(heavydb.Error, match="Number of INSERT target columns"):
        run(con, f"INSERT INTO {name} (id) VALUES (1, 2)")


def test_update_with_subquery(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (id INT, x INT)")
    run(con, f"CREATE TABLE {name}_src (id INT, y INT)")
    run(con, f"INSERT INTO {name} VALUES (1, 0), (2, 0)")
    run(con, f"INSERT INTO {name}_src VALUES (2, 42)")
    run(
        con,
        f"UPDATE {name} SET x = (SELECT max(y) FROM {name}_src) "
        f"WHERE id IN (SELECT id FROM {name}_src)",
    )
    assert rows(con, f"SELECT id, x FROM {name} ORDER BY id") == [(1, 0), (2, 42)]


def test_ctas(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (a INT, s TEXT ENCODING DICT(16), t TIMESTAMP(3))")
    run(con, f"INSERT INTO {name} VALUES (1, 'x', '2020-01-01 00:00:00.5'), (2, 'y', NULL)")
    run(con, f"CREATE TABLE {name}_c AS SELECT a, s, t, a * 2 AS dbl FROM {name} WHERE a > 1")
    assert rows(con, f"SELECT * FROM {name}_c") == [(2, "y", None, 4)]
    cols = {
        c.col_name: c.col_type
        for c in con._client.get_table_details(con._session, f"{name}_c").row_desc
    }
    assert cols["s"].comp_param == 16  # source column types carry over
    assert cols["t"].precision == 3
    assert con._client.get_table_epoch_by_name(con._session, f"{name}_c") == 1
    with pytest.raises(heavydb.Error, match="already exists"):
        run(con, f"CREATE TABLE {name}_c AS SELECT 1 AS a")


def test_heavydb_semantics(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (i INT, b BIGINT, ts TIMESTAMP(0), d DATE, s TEXT)")
    run(
        con,
        f"INSERT INTO {name} VALUES (7, 2, '2020-03-04 05:06:07', '2020-03-04', 'a'), "
        "(-7, 3, '2020-03-05 00:00:00', '2021-01-01', 'b'), (8, 5, NULL, NULL, 'a')",
    )
    cur = con.cursor()
    cur.execute(
        f"SELECT i / 2, i / 2.0, COUNT(*), SUM(i), SUM(b), AVG(i) FROM {name} "
        "WHERE i = 7 GROUP BY i"
    )
    assert cur.fetchall() == [(3, 3.5, 1, 7, 2, 7.0)]
    assert [d.type_code for d in cur.description][2:5] == [TDatumType.BIGINT] * 3
    assert [d.name for d in cur.description] == [
        "EXPR$0",
        "EXPR$1",
        "EXPR$2",
        "EXPR$3",
        "EXPR$4",
        "EXPR$5",
    ]
    assert rows(con, f"SELECT -7 / 2, MOD(-7, 2) FROM {name} LIMIT 1") == [(-3, -1)]
    assert rows(
        con, f"SELECT DATE_TRUNC(month, ts), DATE_TRUNC(day, ts) FROM {name} WHERE i = 7"
    ) == [(dt.datetime(2020, 3, 1), dt.datetime(2020, 3, 4))]
    assert rows(
        con,
        f"SELECT DATEADD('day', 3, ts), TIMESTAMPADD(HOUR, 2, ts), DATEADD('month', 1, d) "
        f"FROM {name} WHERE i = 7",
    ) == [
        (
            dt.datetime(2020, 3, 7, 5, 6, 7),
            dt.datetime(2020, 3, 4, 7, 6, 7),
            dt.datetime(2020, 4, 4),
        )
    ]
    assert rows(
        con,
        "SELECT DATEDIFF('day', DATE '2020-01-01', d), "
        "TIMESTAMPDIFF(MINUTE, ts, TIMESTAMP '2020-03-04 06:06:06'), "
        f"DATEPART('year', d), EXTRACT(MONTH FROM ts) FROM {name} WHERE i = 7",
    ) == [(63, 59, 2020, 3)]
    assert rows(con, f"SELECT APPROX_COUNT_DISTINCT(s) FROM {name}") == [(2,)]
    (sample,) = rows(con, f"SELECT SAMPLE(s) FROM {name} WHERE i = 8")[0]
    assert sample == "a"
    assert rows(con, f"SELECT s, COUNT(*) AS n FROM {name} GROUP BY s ORDER BY s") == [
        ("a", 2),
        ("b", 1),
    ]
    assert rows(
        con, f"SELECT i FROM {name} WHERE s LIKE 'a%' ORDER BY i DESC LIMIT 1 OFFSET 1"
    ) == [(7,)]


def test_query_errors_are_programming_errors(con: Any, name: str) -> None:
    with pytest.raises(
        heavydb.ProgrammingError, match="SQL Error: Object 'no_such_table' not found"
    ):
        run(con, "SELECT * FROM no_such_table")
    with pytest.raises(heavydb.ProgrammingError, match="SQL Error"):
        run(con, "SELEC 1")
    run(con, f"CREATE TABLE {name} (a INT)")
    with pytest.raises(heavydb.ProgrammingError, match="SQL Error"):
        run(con, f"SELECT nope FROM {name}")
    with pytest.raises(heavydb.Error, match="multiple SQL statements not allowed"):
        run(con, "SELECT 1; SELECT 2")
    assert rows(con, "SELECT 5;") == [(5,)]


def test_show_statements(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (a INT)")
    assert (name,) in rows(con, "SHOW TABLES")
    assert ("heavyai", "admin") in rows(con, "SHOW DATABASES")
    d = details(con, name)
    assert d["table_name"] == name and d["max_rollback_epochs"] == 3 and d["max_epoch"] == 0
    cur = con.cursor()
    cur.execute("SHOW USER SESSIONS")
    assert [x.name for x in cur.description] == [
        "session_id",
        "login_name",
        "client_address",
        "db_name",
    ]
    listed = cur.fetchall()
    assert all(re.fullmatch(r"[0-9]{3}-\w{4}", r[0]) for r in listed)
    # HeavyDB's public id ends with the first four characters of the session id
    assert any(r[0][4:] == con._session[:4] for r in listed)
    cur.execute("SHOW CREATE TABLE " + name)
    assert [x.name for x in cur.description] == ["Result"]
    cur.execute("SHOW USER DETAILS")
    assert [x.name for x in cur.description] == [
        "NAME",
        "ID",
        "IS_SUPER",
        "DEFAULT_DB",
        "CAN_LOGIN",
    ]
    assert ("admin", 0, True, "(-1)", True) in cur.fetchall()


def test_metadata_calls(con: Any, hcon: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (a INT, s TEXT)")
    assert name in con._client.get_tables(con._session)
    assert name in con._client.get_physical_tables(con._session)
    assert con._client.get_views(con._session) == []
    meta = {m.table_name: m for m in con._client.get_tables_meta(con._session)}
    m = meta[name]
    assert (m.num_cols, m.col_names, m.is_view) == (2, ["a", "s"], False)
    assert [t.type for t in m.col_types] == [TDatumType.INT, TDatumType.STR]
    assert [c.name for c in hcon.get_column_details(name)] == ["a", "s"]
    assert name in hcon.get_tables()


def test_thrift_create_table_and_heavyai_create(con: Any, hcon: Any, name: str) -> None:
    desc = [
        TColumnType(col_name="a", col_type=TTypeInfo(type=TDatumType.BIGINT)),
        TColumnType(
            col_name="s", col_type=TTypeInfo(type=TDatumType.STR, encoding=TEncodingType.DICT)
        ),
        TColumnType(col_name="t", col_type=TTypeInfo(type=TDatumType.TIMESTAMP, precision=9)),
    ]
    con._client.create_table(con._session, name, desc, TCreateParams(False))
    cols = hcon.get_column_details(name)
    assert [(c.name, c.type, c.encoding, c.comp_param) for c in cols] == [
        ("a", "BIGINT", "NONE", 0),
        ("s", "STR", "DICT", 32),
        ("t", "TIMESTAMP", "NONE", 0),
    ]
    assert cols[2].precision == 9
    with pytest.raises(
        heavydb.thrift.ttypes.TDBException, match="Invalid characters in table name"
    ):
        con._client.create_table(con._session, "bad name", desc, TCreateParams(False))
    # heavyai builds the row descriptor from the DataFrame (numeric dtypes work on pandas 3)
    df = pd.DataFrame({"x": [1, 2], "y": [0.5, 1.5], "z": [True, False]})
    hcon.load_table(f"{name}_df", df)
    assert [c.type for c in hcon.get_column_details(f"{name}_df")] == ["BIGINT", "DOUBLE", "BOOL"]
    assert rows(hcon, f"SELECT * FROM {name}_df ORDER BY x") == [(1, 0.5, 1), (2, 1.5, 0)]


def test_copy_from_and_to(con: Any, name: str, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text('id,name,score\n1,alpha,1.5\n2,beta,\\N\nx,gamma,3\n3,"d, e",4.25\n')
    run(con, f"CREATE TABLE {name} (id INT, name TEXT, score DOUBLE)")
    cur = con.cursor()
    cur.execute(f"COPY {name} FROM '{src}' WITH (header='true')")
    assert [d.name for d in cur.description] == ["Result"]
    (msg,) = cur.fetchone()
    assert msg.startswith("Loaded: 3 recs, Rejected: 1 recs in ") and msg.endswith(" secs")
    assert rows(con, f"SELECT * FROM {name} ORDER BY id") == [
        (1, "alpha", 1.5),
        (2, "beta", None),
        (3, "d, e", 4.25),
    ]
    out = tmp_path / "out.csv"
    assert (
        rows(con, f"COPY (SELECT id, name FROM {name} WHERE id < 3 ORDER BY id) TO '{out}'") == []
    )
    text = out.read_text().splitlines()
    assert text[1:] == ['1,"alpha"', '2,"beta"']
    tsv = tmp_path / "in.tsv"
    tsv.write_text("7\tzeta\t1\n")
    run(con, f"COPY {name} FROM '{tsv}' WITH (header='false', delimiter='\\t')")
    assert rows(con, f"SELECT name FROM {name} WHERE id = 7") == [("zeta",)]
    with pytest.raises(heavydb.Error, match="does not exist"):
        run(con, f"COPY {name} FROM '{tmp_path / 'missing.csv'}'")


def test_query_type_and_timings(con: Any, name: str) -> None:
    c, s = con._client, con._session
    r = c.sql_execute(s, f"CREATE TABLE {name} (a INT)", True, "n1", -1, -1)
    assert (r.query_type, r.nonce, r.row_set.row_desc) == (TQueryType.SCHEMA_WRITE, "n1", [])
    r = c.sql_execute(s, f"INSERT INTO {name} VALUES (1)", True, None, -1, -1)
    assert r.query_type == TQueryType.WRITE
    r = c.sql_execute(s, f"SELECT a FROM {name}", True, None, -1, -1)
    assert r.query_type == TQueryType.READ and r.total_time_ms >= 0
    assert c.sql_validate(s, f"SELECT a, a + 1 AS b FROM {name}")[1].col_name == "b"


def test_database_switching(con: Any, connect: Any, name: str) -> None:
    run(con, f"CREATE DATABASE {name}")
    try:
        other = connect(dbname=name)
        run(other, "CREATE TABLE only_here (a INT)")
        assert con._client.get_tables_for_database(con._session, name) == ["only_here"]
        assert "only_here" not in con._client.get_tables(con._session)
        con._client.switch_database(con._session, name)
        assert rows(con, "SELECT count(*) FROM only_here") == [(0,)]
        run(con, "ALTER SESSION SET CURRENT_DATABASE = 'heavyai'")
        assert con._client.get_session_info(con._session).database == "heavyai"
        other.close()
    finally:
        run(con, f"DROP DATABASE {name}")
    assert name not in [d.db_name for d in con._client.get_databases(con._session)]


def test_null_ordering_is_calcites(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (a INT)")
    run(con, f"INSERT INTO {name} VALUES (2), (NULL), (1)")
    assert rows(con, f"SELECT a FROM {name} ORDER BY a") == [(1,), (2,), (None,)]
    assert rows(con, f"SELECT a FROM {name} ORDER BY a DESC") == [(None,), (2,), (1,)]
    assert rows(con, f"SELECT a FROM {name} ORDER BY a NULLS FIRST") == [(None,), (1,), (2,)]
