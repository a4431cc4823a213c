"""Users, privileges, roles and sessions: enforced as HeavyDB enforces them."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import heavydb
import pytest
from heavydb.thrift.ttypes import (
    TDBException,
    TDBObjectPermissions,
    TDBObjectType,
    TStringRow,
    TStringValue,
    TTablePermissions,
)
from sandbox_helpers import rows, run

pytestmark = [
    pytest.mark.integration,
    # heavyai 1.3 on pandas 3 warns about select_dtypes(include="object") inside load_table
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),
]


@pytest.fixture
def user(con: Any, name: str) -> str:
    u = f"u_{name}"
    run(con, f"CREATE USER {u} (password = 'pw-{u}', is_super = 'false')")
    yield u
    run(con, f"DROP USER IF EXISTS {u}")


def login(connect: Any, user: str, password: str | None = None) -> Any:
    return connect(user=user, password=password or f"pw-{user}")


def test_new_user_needs_access_to_the_database(con: Any, connect: Any, user: str) -> None:
    with pytest.raises(
        heavydb.Error, match=f"user {user} is not allowed to access database heavyai"
    ):
        login(connect, user)
    run(con, f"GRANT ACCESS ON DATABASE heavyai TO {user}")
    u = login(connect, user)
    info = u._client.get_session_info(u._session)
    assert (info.user, info.is_super) == (user, False)


def test_table_privileges_enforced(con: Any, connect: Any, user: str, name: str) -> None:
    run(con, f"CREATE TABLE {name} (a INT)")
    run(con, f"INSERT INTO {name} VALUES (1)")
    run(con, f"GRANT ACCESS ON DATABASE heavyai TO {user}")
    u = login(connect, user)
    assert name not in u._client.get_tables(u._session)
    with pytest.raises(
        heavydb.Error, match=f"user {user} has no proper privileges for object {name}"
    ):
        rows(u, f"SELECT * FROM {name}")
    run(con, f"GRANT SELECT ON TABLE {name} TO {user}")
    assert rows(u, f"SELECT * FROM {name}") == [(1,)]
    assert name in u._client.get_tables(u._session)
    with pytest.raises(
        heavydb.Error, match=f"user {user} has no insert privileges for table {name}"
    ):
        run(u, f"INSERT INTO {name} VALUES (2)")
    row = TStringRow(cols=[TStringValue(str_val="5", is_null=False)])
    with pytest.raises(TDBException, match="has no insert privileges"):
        u._client.load_table(u._session, name, [row], [])
    run(con, f"GRANT INSERT ON TABLE {name} TO {user}")
    run(u, f"INSERT INTO {name} VALUES (2)")
    with pytest.raises(heavydb.Error, match="has no proper privileges"):
        run(u, f"UPDATE {name} SET a = 3")
    with pytest.raises(heavydb.Error, match="has no proper privileges"):
        run(u, f"DELETE FROM {name} WHERE a = 1")
    with pytest.raises(heavydb.Error, match="will not be truncated"):
        run(u, f"TRUNCATE TABLE {name}")
    with pytest.raises(heavydb.Error, match="does not have the privilege to alter table"):
        run(u, f"ALTER TABLE {name} ADD COLUMN b INT")
    with pytest.raises(heavydb.Error, match="will not be dropped"):
        run(u, f"DROP TABLE {name}")
    run(con, f"GRANT UPDATE, DELETE ON TABLE {name} TO {user}")
    run(u, f"UPDATE {name} SET a = a * 10")
    run(u, f"DELETE FROM {name} WHERE a = 10")
    assert rows(u, f"SELECT * FROM {name}") == [(20,)]
    run(con, f"REVOKE SELECT ON TABLE {name} FROM {user}")
    with pytest.raises(heavydb.Error, match="has no proper privileges"):
        rows(u, f"SELECT * FROM {name}")
    run(con, f"GRANT ALL ON TABLE {name} TO {user}")
    run(u, f"TRUNCATE TABLE {name}")
    run(u, f"DROP TABLE {name}")


def test_database_level_privileges_and_revoke_from_all(
    con: Any, connect: Any, user: str, name: str
) -> None:
    run(con, f"CREATE TABLE {name} (a INT)")
    run(con, f"GRANT ALL ON DATABASE heavyai TO {user}")
    u = login(connect, user)
    run(u, f"INSERT INTO {name} VALUES (1)")
    run(u, f"CREATE TABLE {name}_own (x INT)")  # CREATE comes with ALL
    # the project's "make HeavyDB read-only" step: revoke the write privileges at database level
    for p in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
        run(con, f"REVOKE {p} ON DATABASE heavyai FROM {user}")
    assert rows(u, f"SELECT count(*) FROM {name}") == [(1,)]
    for stmt in (
        f"INSERT INTO {name} VALUES (2)",
        f"UPDATE {name} SET a = 3",
        f"DELETE FROM {name}",
        f"TRUNCATE TABLE {name}",
    ):
        with pytest.raises(heavydb.Error):
            run(u, stmt)
    run(u, f"INSERT INTO {name}_own VALUES (1)")  # owners keep their own tables
    for p in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
        run(con, f"GRANT {p} ON DATABASE heavyai TO {user}")
    run(u, f"INSERT INTO {name} VALUES (2)")
    assert rows(con, f"SELECT count(*) FROM {name}") == [(2,)]


def test_roles(con: Any, connect: Any, user: str, name: str) -> None:
    role = f"r_{name}"
    run(con, f"CREATE TABLE {name} (a INT)")
    run(con, f"CREATE ROLE {role}")
    try:
        run(con, f"GRANT ACCESS ON DATABASE heavyai TO {role}")
        run(con, f"GRANT SELECT ON TABLE {name} TO {role}")
        run(con, f"GRANT {role} TO {user}")
        u = login(connect, user)
        assert rows(u, f"SELECT count(*) FROM {name}") == [(0,)]
        assert con._client.has_role(con._session, user, role) is True
        assert role in con._client.get_all_roles_for_user(con._session, user)
        perms = TDBObjectPermissions(table_permissions_=TTablePermissions(select_=True))
        assert con._client.has_object_privilege(
            con._session, user, name, TDBObjectType.TableDBObjectType, perms
        )
        run(con, f"REVOKE {role} FROM {user}")
        with pytest.raises(heavydb.Error, match="has no proper privileges"):
            rows(u, f"SELECT count(*) FROM {name}")
    finally:
        run(con, f"DROP ROLE {role}")


def test_can_login_false_and_password_change(con: Any, connect: Any, user: str) -> None:
    run(con, f"GRANT ACCESS ON DATABASE heavyai TO {user}")
    run(con, f"ALTER USER {user} (can_login = 'false')")
    with pytest.raises(heavydb.Error, match=f"User {user} is deactivated"):
        login(connect, user)
    run(con, f"ALTER USER {user} (can_login = 'true')")
    u = login(connect, user)
    # a user may change their own password, nothing else
    run(u, f"ALTER USER {user} (password = 'new-pw')")
    with pytest.raises(heavydb.Error, match="can only be executed by super user"):
        run(u, f"ALTER USER {user} (is_super = 'true')")
    with pytest.raises(heavydb.Error, match="Authentication failure"):
        login(connect, user)
    assert login(connect, user, "new-pw")
    run(con, f"ALTER USER {user} (password = 'third-pw')")
    with pytest.raises(heavydb.Error, match="Authentication failure"):
        login(connect, user, "new-pw")
    assert login(connect, user, "third-pw")


def test_superuser_only_operations(con: Any, connect: Any, user: str, name: str) -> None:
    run(con, f"CREATE TABLE {name} (a INT)")
    run(con, f"GRANT ALL ON DATABASE heavyai TO {user}")
    u = login(connect, user)
    c, s = u._client, u._session
    with pytest.raises(heavydb.Error, match="CREATE USER failed"):
        run(u, "CREATE USER someone (password = 'x')")
    with pytest.raises(
        TDBException, match="Superuser privilege is required to run clear_cpu_memory"
    ):
        c.clear_cpu_memory(s)
    with pytest.raises(TDBException, match="Only superuser can set_table_epoch"):
        c.set_table_epoch_by_name(s, name, 0)
    with pytest.raises(heavydb.Error, match="SHOW USER SESSIONS failed"):
        rows(u, "SHOW USER SESSIONS")
    with pytest.raises(heavydb.Error, match="KILL QUERY failed: only super user"):
        run(u, "KILL QUERY '123-abcd'")
    with pytest.raises(heavydb.Error, match="can only be executed by super user or the owner"):
        run(u, f"GRANT SELECT ON TABLE {name} TO admin")
    assert c.get_users(s)  # users with access to the current database
    assert c.get_session_info(s).is_super is False


def test_superuser_lists_and_ends_sessions(con: Any, connect: Any, user: str) -> None:
    run(con, f"GRANT ACCESS ON DATABASE heavyai TO {user}")
    u1, u2 = login(connect, user), login(connect, user)
    listed = [r for r in rows(con, "SHOW USER SESSIONS") if r[1] == user]
    assert len(listed) == 2
    assert all(r[2].startswith("tcp:127.0.0.1:") and r[3] == "heavyai" for r in listed)
    # HeavyDB's disconnect() ends any session whose id the caller holds
    con._client.disconnect(u1._session)
    with pytest.raises(heavydb.Error, match=re.escape("Session not valid or expired.")):
        rows(u1, "SELECT 1")
    assert rows(u2, "SELECT 1") == [(1,)]
    # DROP USER invalidates every session of the user
    run(con, f"DROP USER {user}")
    with pytest.raises(heavydb.Error, match=re.escape("Session not valid or expired.")):
        rows(u2, "SELECT 1")
    u1._closed = u2._closed = 1


def test_kill_query_and_queries_info(con: Any, connect: Any, user: str, name: str) -> None:
    run(con, f"CREATE TABLE {name} (a INT)")
    run(con, f"INSERT INTO {name} SELECT * FROM (VALUES (1)) AS v(a)")
    for _ in range(11):
        run(con, f"INSERT INTO {name} SELECT a FROM {name}")  # 2048 rows
    run(con, f"GRANT ACCESS ON DATABASE heavyai TO {user}")
    run(con, f"GRANT SELECT ON TABLE {name} TO {user}")
    u = login(connect, user)
    errors: list[BaseException] = []

    def slow() -> None:
        try:
            rows(u, f"SELECT count(*) FROM {name} x, {name} y, {name} z WHERE x.a + y.a + z.a > 0")
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=slow)
    t.start()
    deadline = time.monotonic() + 10
    queries: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline and not queries:
        queries = [r for r in rows(con, "SHOW QUERIES") if r[5] == user]
        time.sleep(0.05)
    assert queries, "the slow query never showed up in SHOW QUERIES"
    public_id = queries[0][0]
    infos = [i for i in con._client.get_queries_info(con._session) if i.login_name == user]
    assert infos and infos[0].query_public_session_id == public_id
    assert infos[0].query_session_id == u._session
    run(con, f"KILL QUERY '{public_id}'")
    t.join(20)
    assert not t.is_alive()
    assert errors and "interrupted" in str(errors[0])
    assert rows(u, "SELECT 1") == [(1,)]  # the session itself survives KILL QUERY
    with pytest.raises(
        heavydb.Error, match=re.escape("KILL QUERY failed: invalid query session is given.")
    ):
        run(con, f"KILL QUERY '{public_id}'")
