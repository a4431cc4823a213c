"""Archive protection on MariaDB: read-only for every account but the recovery account, the
accounts that still can write named, and lifting restores exactly the privileges."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from tbs_emergency.dbops.archive import KIND, lift_archive_protection, protect_archive
from tbs_emergency.dbops.records import state_key
from tests.integration.test_db_emergency_support import alive

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.integration.test_db_emergency_support"]


def app_grants(root_sql: Any) -> list[tuple[Any, ...]]:
    return sorted(
        root_sql(
            "SELECT GRANTEE, PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES"
            " WHERE TABLE_SCHEMA = 'tbs_archive' AND GRANTEE LIKE '%tbs_app%'"
        )
    )


@pytest.fixture
def archive_table(root_sql: Any, known: Any) -> Iterator[str]:
    table = f"{known.database}.dbops_archive"
    root_sql(
        f"DROP TABLE IF EXISTS {table}",
        f"CREATE TABLE {table} (id INT PRIMARY KEY, note VARCHAR(32))",
        f"INSERT INTO {table} VALUES (1, 'before')",
    )
    try:
        yield table
    finally:
        # Whatever happened, the application account gets its privileges back.
        for host in ("127.0.0.1", "localhost"):
            root_sql(f"GRANT SELECT, INSERT, UPDATE, DELETE ON tbs_archive.* TO 'tbs_app'@'{host}'")
        root_sql(f"DROP TABLE IF EXISTS {table}")


def test_protect_then_lift(
    archive_table: str,
    mysql_admin: Any,
    mysql_target: Any,
    mysql_connect: Any,
    undo: Any,
    conn: Any,
    known: Any,
    root_sql: Any,
) -> None:
    target = mysql_target.model_copy(
        update={
            "name": f"{mysql_target.name}:tbs_archive",
            "server": f"{mysql_target.server}/tbs_archive",
        }
    )
    before = app_grants(root_sql)
    app = mysql_connect("tbs_app", known.app_password)
    assert alive(app)

    result = protect_archive(
        mysql_admin, undo, target, schema="tbs_archive", recovery_user="tbs_recovery"
    )
    assert result.ok, result.problems
    # root writes everywhere through ON *.*: named, not touched.
    assert "root@localhost" in result.still_writable
    assert not any(w.startswith("tbs_recovery") for w in result.still_writable)
    assert not alive(app)  # closed: it would keep its cached privileges otherwise

    reader = mysql_connect("tbs_app", known.app_password)
    with reader.cursor() as cur:
        cur.execute(f"SELECT note FROM {archive_table}")
        assert cur.fetchall() == (("before",),)
        with pytest.raises(pymysql.err.OperationalError) as refused:
            cur.execute(f"INSERT INTO {archive_table} VALUES (2, 'app')")
    assert refused.value.args[0] == 1142
    recovery = mysql_connect("tbs_recovery", known.recovery_password)
    with recovery.cursor() as cur:
        cur.execute(f"INSERT INTO {archive_table} VALUES (3, 'recovery')")

    record = json.loads(conn.store().get(state_key(KIND, target)))
    revoked = {(g["user"], g["host"], g["privilege"]) for g in record["archive"]["revoked"]}
    assert ("tbs_app", "127.0.0.1", "INSERT") in revoked
    assert not any(u == "tbs_recovery" for u, _, _ in revoked)

    again = protect_archive(
        mysql_admin, undo, target, schema="tbs_archive", recovery_user="tbs_recovery"
    )
    assert again.ok and not any(a.what.startswith("revoke from") for a in again.actions)

    lifted = lift_archive_protection(mysql_admin, undo, target)
    assert lifted.ok, lifted.problems
    assert app_grants(root_sql) == before
    writer = mysql_connect("tbs_app", known.app_password)
    with writer.cursor() as cur:
        cur.execute(f"INSERT INTO {archive_table} VALUES (4, 'app again')")
    assert json.loads(conn.store().get(state_key(KIND, target)))["status"] == "lifted"
