"""Connection limits on the real servers: non-priority sessions beyond the limit are closed
(oldest idle first), priority users still connect, lifting restores the recorded settings."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from tbs_emergency.dbops.connection_limits import (
    KIND,
    lift_connection_limits,
    limit_connections,
)
from tbs_emergency.dbops.records import state_key
from tests.integration.test_db_emergency_support import alive

pytest_plugins = ["tests.integration.test_db_emergency_support"]
pytestmark = pytest.mark.integration

BI_PASSWORD = "bi-Secret-42"
ONCALL_PASSWORD = "oncall-Secret-42"


@pytest.fixture
def accounts(root_sql: Any) -> Iterator[None]:
    """tbs_bi (not a priority user) and tbs_oncall (priority), and a clean server after."""
    root_sql(
        f"CREATE USER IF NOT EXISTS 'tbs_bi'@'127.0.0.1' IDENTIFIED BY '{BI_PASSWORD}'",
        "GRANT SELECT ON tbs_archive.* TO 'tbs_bi'@'127.0.0.1'",
        f"CREATE USER IF NOT EXISTS 'tbs_oncall'@'127.0.0.1' IDENTIFIED BY '{ONCALL_PASSWORD}'",
        "GRANT SELECT ON tbs_archive.* TO 'tbs_oncall'@'127.0.0.1'",
    )
    before = root_sql("SELECT @@global.max_connections")[0][0]
    try:
        yield
    finally:
        root_sql(
            f"SET GLOBAL max_connections = {before}",
            "DROP USER IF EXISTS 'tbs_bi'@'127.0.0.1'",
            "DROP USER IF EXISTS 'tbs_oncall'@'127.0.0.1'",
            "ALTER USER 'tbs_app'@'127.0.0.1' WITH MAX_USER_CONNECTIONS 0",
            "ALTER USER 'tbs_app'@'localhost' WITH MAX_USER_CONNECTIONS 0",
            "ALTER USER 'tbs_recovery'@'127.0.0.1' WITH MAX_USER_CONNECTIONS 0",
            "ALTER USER 'tbs_recovery'@'localhost' WITH MAX_USER_CONNECTIONS 0",
        )


def test_mysql_limit_then_lift(
    accounts: None,
    mysql_admin: Any,
    mysql_target: Any,
    mysql_connect: Any,
    undo: Any,
    conn: Any,
    root_sql: Any,
) -> None:
    priority = ["tbs_oncall", "tbs_app", "tbs_recovery", "root"]
    old = [mysql_connect("tbs_bi", BI_PASSWORD) for _ in range(6)]
    time.sleep(1.3)  # the server counts idle time in whole seconds
    new = [mysql_connect("tbs_bi", BI_PASSWORD) for _ in range(4)]
    oncall = mysql_connect("tbs_oncall", ONCALL_PASSWORD)
    for c in new:
        assert alive(c)
    sessions = mysql_admin.sessions()
    priority_now = [s for s in sessions if not s.internal and s.user in priority]
    reserve = 1
    # Budget for non-priority sessions: 8 of the 10 tbs_bi sessions stay (and MariaDB's
    # max_connections cannot go below 10).
    limit = len(priority_now) + reserve + 8
    assert limit >= 10
    max_before = mysql_admin.max_connections()

    result = limit_connections(
        mysql_admin,
        undo,
        mysql_target,
        max_connections=limit,
        reserve=reserve,
        priority_users=priority,
    )
    assert result.ok, result.problems
    assert result.closed == 2
    # The two closed are among the six that were idle longest.
    assert sum(not alive(c) for c in old) == 2
    assert all(alive(c) for c in new)
    assert alive(oncall)
    assert mysql_admin.max_connections() == limit

    # Priority users still connect; a non-priority account is held to its share.
    extra = mysql_connect("tbs_oncall", ONCALL_PASSWORD)
    assert alive(extra)
    extra.close()  # frees the reserved slot: a refusal below is the account's cap, not the server
    time.sleep(0.2)
    with pytest.raises(pymysql.err.OperationalError) as refused:
        mysql_connect("tbs_bi", BI_PASSWORD)
    assert refused.value.args[0] == 1226  # max_user_connections exceeded

    record = json.loads(conn.store().get(state_key(KIND, mysql_target)))
    assert record["status"] == "active"
    assert record["mysql_limits"]["max_connections"] == max_before
    assert {"user": "tbs_bi", "host": "127.0.0.1", "max_user_connections": 0} in record[
        "mysql_limits"
    ]["accounts"]

    # A rerun changes nothing and keeps the first record.
    again = limit_connections(
        mysql_admin,
        undo,
        mysql_target,
        max_connections=limit,
        reserve=reserve,
        priority_users=priority,
    )
    assert again.ok and again.closed == 0
    rerecorded = json.loads(conn.store().get(state_key(KIND, mysql_target)))
    assert rerecorded["mysql_limits"] == record["mysql_limits"]

    lifted = lift_connection_limits(mysql_admin, undo, mysql_target)
    assert lifted.ok, lifted.problems
    assert mysql_admin.max_connections() == max_before
    caps = root_sql("SELECT max_user_connections FROM mysql.user WHERE User = 'tbs_bi'")
    assert caps == [(0,)]
    assert alive(mysql_connect("tbs_bi", BI_PASSWORD))
    final = json.loads(conn.store().get(state_key(KIND, mysql_target)))
    assert final["status"] == "lifted"


def test_mysql_limit_dry_run_changes_nothing(
    accounts: None, mysql_admin: Any, mysql_target: Any, mysql_connect: Any, undo: Any
) -> None:
    bi = [mysql_connect("tbs_bi", BI_PASSWORD) for _ in range(3)]
    before = mysql_admin.max_connections()
    result = limit_connections(
        mysql_admin,
        undo,
        mysql_target,
        max_connections=2,
        reserve=0,
        priority_users=["tbs_app", "tbs_recovery", "root", "tbs_oncall"],
        dry_run=True,
    )
    assert result.dry_run and result.closed == 0
    assert any("close session" in line for line in result.plan)
    assert all(alive(c) for c in bi)
    assert mysql_admin.max_connections() == before


# -- HeavyDB -------------------------------------------------------------------------------------


@pytest.fixture
def heavydb_users(heavydb_server: Any) -> Iterator[Any]:
    import heavydb

    admin = heavydb.connect(
        user="admin",
        password="HyperInteractive",
        host=heavydb_server.host,
        port=heavydb_server.port,
        dbname="heavyai",
    )
    cur = admin.cursor()
    for user in ("analyst", "ops"):
        cur.execute(f"CREATE USER {user} (password = '{user}-pw', is_super = 'false')")
        cur.execute(f"GRANT ACCESS ON DATABASE heavyai TO {user}")
    try:
        yield heavydb_server
    finally:
        for user in ("analyst", "ops"):
            cur.execute(f"DROP USER {user}")
        admin.close()


def heavy_login(server: Any, user: str) -> Any:
    import heavydb

    return heavydb.connect(
        user=user, password=f"{user}-pw", host=server.host, port=server.port, dbname="heavyai"
    )


def spin_table(server: Any) -> str:
    """A table whose three-way self join runs long enough to be caught running."""
    import heavydb
    from heavydb.thrift.ttypes import TStringRow, TStringValue

    con = heavydb.connect(
        user="admin", password="HyperInteractive", host=server.host, port=server.port
    )
    try:
        con.cursor().execute("DROP TABLE IF EXISTS dbops_spin")
        con.cursor().execute("CREATE TABLE dbops_spin (v INTEGER)")
        rows = [TStringRow(cols=[TStringValue(str_val=str(i), is_null=False)]) for i in range(2000)]
        con._client.load_table(con._session, "dbops_spin", rows, None)
        con.cursor().execute("GRANT SELECT ON TABLE dbops_spin TO analyst")
    finally:
        con.close()
    return "dbops_spin"


def test_heavydb_limit_disables_logins_ends_busy_sessions_and_lift_restores(
    heavydb_users: Any, settings_factory: Any, undo: Any, conn: Any
) -> None:
    import threading

    from tbs_emergency.connectors.heavydb import HeavyDBDatabase
    from tbs_emergency.dbops.targets import server_targets

    settings = settings_factory(heavydb_port=heavydb_users.port)
    (target,) = server_targets(settings, ["heavydb"])
    admin = HeavyDBDatabase(settings.environment("blue").heavydb, target.name)
    table = spin_table(heavydb_users)
    idle = [heavy_login(heavydb_users, "analyst") for _ in range(2)]
    busy = heavy_login(heavydb_users, "analyst")
    ops = heavy_login(heavydb_users, "ops")
    outcome: dict[str, str] = {}

    def spin() -> None:
        try:
            busy.cursor().execute(
                f"SELECT COUNT(*) FROM {table} a, {table} b, {table} c WHERE a.v + b.v + c.v = 7"
            ).fetchall()
            outcome["done"] = "finished"
        except Exception as exc:
            outcome["done"] = str(exc)

    runner = threading.Thread(target=spin, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            s.busy for s in admin.sessions() if s.user == "analyst"
        ):
            time.sleep(0.1)
        # Budget 3 - 1 - 2 (ops and the procedure's own session) = 0: every analyst session
        # must go. The running one is ended (its statement interrupted first); the idle ones
        # cannot be (HeavyDB publishes no idle session's id), and the report says so.
        result = limit_connections(
            admin, undo, target, max_connections=3, reserve=1, priority_users=["ops"]
        )
        runner.join(timeout=30)
        assert "interrupted" in outcome.get("done", ""), outcome
        with pytest.raises(Exception, match="not valid"):
            busy.cursor().execute("SELECT 1")
        failed = [a for a in result.actions if a.outcome == "failed"]
        assert len(failed) == 2 and all("idle" in a.detail for a in failed)
        assert result.closed == 1 and not result.ok
        users = {u.name: u.can_login for u in admin.users()}
        assert users["analyst"] is False and users["ops"] is True and users["admin"] is True
        with pytest.raises(Exception, match="deactivated"):
            heavy_login(heavydb_users, "analyst")
        extra = heavy_login(heavydb_users, "ops")  # priority users still connect
        extra.close()
        assert ops.cursor().execute("SELECT 1").fetchall() == [(1,)]
        record = json.loads(conn.store().get(state_key(KIND, target)))
        assert record["heavydb_logins"]["logins_enabled"] == ["analyst"]

        lifted = lift_connection_limits(admin, undo, target)
        assert lifted.ok, lifted.problems
        assert {u.name: u.can_login for u in admin.users()}["analyst"] is True
        heavy_login(heavydb_users, "analyst").close()
    finally:
        for c in [*idle, busy, ops]:
            with contextlib.suppress(Exception):
                c.close()
        with contextlib.suppress(Exception):
            admin.query(f"DROP TABLE IF EXISTS {table}")
        admin.close()
