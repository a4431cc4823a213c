"""Connecting, sessions and server information through the real ``heavydb`` client."""

from __future__ import annotations

import re
from typing import Any

import heavydb
import pytest
from heavydb.thrift.ttypes import TDBException, TRole
from sandbox_helpers import raw_client, rows
from thrift.Thrift import TApplicationException

from sandbox.heavydb.testing import RunningServer

pytestmark = [
    pytest.mark.integration,
    # heavyai 1.3 on pandas 3 warns about select_dtypes(include="object") inside load_table
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),
]


def test_connect_with_arguments_and_version(con: Any) -> None:
    assert con._client.get_version() == "8.0.1-sandbox"
    assert rows(con, "SELECT 1") == [(1,)]


def test_connect_with_uri(sandbox: RunningServer) -> None:
    uri = f"heavydb://admin:HyperInteractive@{sandbox.host}:{sandbox.port}/heavyai?protocol=binary"
    con = heavydb.connect(uri)
    try:
        assert rows(con, "SELECT 2") == [(2,)]
        assert sandbox.uri == uri
    finally:
        con.close()


def test_wrong_password_and_unknown_user(sandbox: RunningServer) -> None:
    for user, pw in (("admin", "nope"), ("ghost", "HyperInteractive")):
        with pytest.raises(heavydb.Error, match="Authentication failure"):
            heavydb.connect(user=user, password=pw, host=sandbox.host, port=sandbox.port)


def test_unknown_database(sandbox: RunningServer) -> None:
    with pytest.raises(heavydb.Error, match="Database name nodb does not exist"):
        heavydb.connect(
            user="admin",
            password="HyperInteractive",
            host=sandbox.host,
            port=sandbox.port,
            dbname="nodb",
        )


def test_disconnect_invalidates_session(con: Any) -> None:
    client, session = con._client, con._session
    client.disconnect(session)
    with pytest.raises(
        TDBException, match=r"^TDBException\(error_msg='Session not valid or expired\.'"
    ):
        client.get_tables(session)
    with pytest.raises(heavydb.Error, match=re.escape("Session not valid or expired.")):
        con.cursor().execute("SELECT 1")
    con._closed = 1


def test_connect_with_sessionid(sandbox: RunningServer, con: Any) -> None:
    other = heavydb.connect(sessionid=con._session, host=sandbox.host, port=sandbox.port)
    assert rows(other, "SELECT 3") == [(3,)]
    with pytest.raises(heavydb.Error, match="Session not valid"):
        heavydb.connect(sessionid="x" * 32, host=sandbox.host, port=sandbox.port)


def test_server_status(con: Any) -> None:
    st = con._client.get_server_status(con._session)
    assert st.read_only is False
    assert st.version == "8.0.1-sandbox"
    assert st.rendering_enabled is False
    assert st.start_time > 1_600_000_000
    assert st.edition == "os"
    assert st.role == TRole.SERVER
    assert st.host_name
    (st2,) = con._client.get_status(con._session)
    assert st2.version == st.version and st2.start_time == st.start_time


def test_hardware_info(con: Any) -> None:
    info = con._client.get_hardware_info(con._session)
    (hw,) = info.hardware_info
    assert hw.num_gpu_hw == 0
    assert hw.num_cpu_hw >= 1
    assert hw.gpu_info == []


def test_session_info_users_databases(con: Any) -> None:
    info = con._client.get_session_info(con._session)
    assert (info.user, info.database, info.is_super) == ("admin", "heavyai", True)
    assert info.start_time > 1_600_000_000
    assert "admin" in con._client.get_users(con._session)
    dbs = con._client.get_databases(con._session)
    assert ("heavyai", "admin") in [(d.db_name, d.db_owner) for d in dbs]


def test_clear_memory(con: Any) -> None:
    con._client.clear_cpu_memory(con._session)
    con._client.clear_gpu_memory(con._session)
    assert rows(con, "ALTER SYSTEM CLEAR CPU MEMORY") == []
    assert rows(con, "ALTER SYSTEM CLEAR GPU MEMORY") == []


def test_unimplemented_method_is_a_clear_tdbexception(con: Any) -> None:
    with pytest.raises(TDBException) as err:
        con._client.get_dashboards(con._session)
    assert err.value.error_msg == "get_dashboards is not supported by the HeavyDB sandbox server"
    with pytest.raises(TDBException, match="render_vega is not supported"):
        con._client.render_vega(con._session, 0, "{}", 1, "")


def test_interrupt_without_running_query_is_a_noop(con: Any) -> None:
    con._client.interrupt(con._session, con._session)
    assert rows(con, "SELECT 4") == [(4,)]


def test_several_raw_thrift_clients(sandbox: RunningServer) -> None:
    clients = [raw_client(sandbox.host, sandbox.port) for _ in range(3)]
    try:
        sessions = [c.connect("admin", "HyperInteractive", "heavyai") for c, _ in clients]
        assert len(set(sessions)) == 3 and all(len(s) == 32 for s in sessions)
        for (c, _), s in zip(clients, sessions, strict=True):
            assert c.get_session_info(s).user == "admin"
            c.disconnect(s)
    finally:
        for _, t in clients:
            t.close()


def test_epoch_calls_without_tdbexception_in_idl(con: Any) -> None:
    # get_table_epoch* declare no TDBException: errors come back as TApplicationException
    with pytest.raises(TApplicationException, match="not found"):
        con._client.get_table_epoch(con._session, 1, 999999)


def test_clone_session_and_internal_details(con: Any) -> None:
    c, s = con._client, con._session
    other = c.clone_session(s)
    assert other != s and c.get_session_info(other).user == "admin"
    c.disconnect(other)
    c.sql_execute(s, "CREATE TABLE clone_t (a INT)", True, None, -1, -1)
    details = c.get_internal_table_details(s, "clone_t", False)
    assert [col.col_name for col in details.row_desc] == ["a"]
    with pytest.raises(TDBException, match="Table/View nope for catalog heavyai does not exist"):
        c.get_table_details(s, "nope")
