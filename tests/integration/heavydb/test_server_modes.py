"""Restart persistence, --read-only, --admin-password and clean SIGTERM (own servers)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import heavyai
import heavydb
import pandas as pd
import pytest
from heavydb.common.ttypes import TDatumType, TTypeInfo
from heavydb.thrift.ttypes import (
    TColumn,
    TColumnData,
    TColumnType,
    TCreateParams,
    TDBException,
    TStringRow,
    TStringValue,
)
from sandbox_helpers import rows, run

from sandbox.heavydb.testing import start_server

pytestmark = [
    pytest.mark.integration,
    # heavyai 1.3 on pandas 3 warns about select_dtypes(include="object") inside load_table
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),
]

READ_ONLY_SQL = "This SQL command is not supported in read-only mode."


def test_persistence_read_only_and_admin_password(tmp_path: Path, connect: Any) -> None:
    data = tmp_path / "data"
    with start_server(data) as srv:
        con = connect(server=srv)
        run(
            con,
            "CREATE TABLE kept (id INT, s TEXT ENCODING DICT(16)) WITH (max_rollback_epochs = 7)",
        )
        run(con, "INSERT INTO kept VALUES (1, 'a'), (2, 'b')")
        run(con, "UPDATE kept SET s = 'B' WHERE id = 2")
        run(con, "CREATE USER reader (password = 'r-pw')")
        run(con, "GRANT ACCESS ON DATABASE heavyai TO reader")
        run(con, "GRANT SELECT ON TABLE kept TO reader")
        con.close()
    with start_server(data, read_only=True) as srv:
        con = connect(server=srv)
        status = con._client.get_server_status(con._session)
        assert status.read_only is True
        # data, epochs, types, options, users and grants survived the restart
        assert rows(con, "SELECT * FROM kept ORDER BY id") == [(1, "a"), (2, "B")]
        assert con._client.get_table_epoch_by_name(con._session, "kept") == 2
        (create,) = rows(con, "SHOW CREATE TABLE kept")[0]
        assert "ENCODING DICT(16)" in create and "MAX_ROLLBACK_EPOCHS=7" in create
        reader = connect(user="reader", password="r-pw", server=srv)
        assert rows(reader, "SELECT count(*) FROM kept") == [(2,)]
        # the old session ids are gone, as after a HeavyDB restart
        for stmt in (
            "INSERT INTO kept VALUES (3, 'c')",
            "UPDATE kept SET s = 'x'",
            "DELETE FROM kept",
            "TRUNCATE TABLE kept",
            "DROP TABLE kept",
            "ALTER TABLE kept ADD COLUMN z INT",
            "CREATE TABLE nope (a INT)",
            "CREATE USER nobody (password = 'x')",
            "GRANT SELECT ON TABLE kept TO reader",
            "DUMP TABLE kept TO '/tmp/never-written.tgz'",
            f"COPY kept FROM '{tmp_path}/x.csv'",
        ):
            with pytest.raises(heavydb.Error, match=READ_ONLY_SQL):
                run(con, stmt)
        with pytest.raises(
            heavydb.Error,
            match=re.escape("insert_into_table disabled: server running in read-only mode."),
        ):
            run(con, "INSERT INTO kept SELECT * FROM kept")
        with pytest.raises(
            heavydb.Error,
            match=re.escape("create_table_as disabled: server running in read-only mode."),
        ):
            run(con, "CREATE TABLE copy_of AS SELECT * FROM kept")
        c, s = con._client, con._session
        with pytest.raises(
            TDBException,
            match=r"^TDBException.*load_table disabled: server running in read-only mode\.",
        ):
            c.load_table(
                s, "kept", [TStringRow([TStringValue("1", False), TStringValue("x", False)])], []
            )
        with pytest.raises(TDBException, match="load_table_binary_columnar disabled"):
            c.load_table_binary_columnar(
                s, "kept", [TColumn(TColumnData(int_col=[1]), [False])] * 2, []
            )
        hc = connect(client=heavyai, server=srv)
        with pytest.raises(TDBException, match="load_table_binary_arrow disabled"):
            hc.load_table_arrow("kept", pd.DataFrame({"id": [1], "s": ["x"]}))
        with pytest.raises(TDBException, match="create_table disabled"):
            c.create_table(
                s, "t2", [TColumnType("a", TTypeInfo(type=TDatumType.INT))], TCreateParams(False)
            )
        with pytest.raises(TDBException, match="set_table_epoch disabled"):
            c.set_table_epoch_by_name(s, "kept", 1)
        # reads and exports still work
        out = tmp_path / "export.csv"
        run(con, f"COPY (SELECT * FROM kept) TO '{out}'")
        assert out.exists()
        assert ("kept",) in rows(con, "SHOW TABLES")
        for x in (con, reader, hc):
            x.close()
    with start_server(data, admin_password="rotated-pw") as srv:
        with pytest.raises(heavydb.Error, match="Authentication failure"):
            connect(server=srv)
        con = connect(password="rotated-pw", server=srv)
        assert rows(con, "SELECT count(*) FROM kept") == [(2,)]
        con.close()


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "d")
    con = heavydb.connect(user="admin", password="HyperInteractive", host=srv.host, port=srv.port)
    run(con, "CREATE TABLE t (a INT)")
    assert srv.stop() == 0
    con._closed = 1
    with start_server(tmp_path / "d") as again:
        con = heavydb.connect(
            user="admin", password="HyperInteractive", host=again.host, port=again.port
        )
        assert rows(con, "SELECT count(*) FROM t") == [(0,)]
        con.close()
