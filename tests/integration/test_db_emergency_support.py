"""Fixtures the database emergency integration tests share (no tests here).

The procedures run over the real servers of `conftest.py` through the real connectors (pymysql,
pyheavydb) as they do in the flows; the flows themselves are thin compositions of these calls.
Everything a test changes on the shared servers (global settings, accounts) is put back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest

from tbs_emergency.connectors import Connectors
from tbs_emergency.connectors.mysql import MySQLDatabase
from tbs_emergency.dbops.records import UndoStore
from tbs_emergency.dbops.targets import ServerTarget, server_targets

LOOPBACK = "127.0.0.1"


@pytest.fixture
def conn(settings: Any) -> Iterator[Connectors]:
    c = Connectors(settings)
    c.store().ensure_bucket()
    yield c
    c.close()


@pytest.fixture
def undo(conn: Connectors) -> UndoStore:
    return UndoStore(conn.store())


@pytest.fixture
def mysql_target(settings: Any) -> ServerTarget:
    (target,) = server_targets(settings, ["mysql"])
    return target


@pytest.fixture
def mysql_admin(settings: Any, mysql_target: ServerTarget) -> Iterator[MySQLDatabase]:
    """The administrative account the procedures use (MariaDB root over TCP in the sandbox)."""
    db = MySQLDatabase(
        settings.environment("blue").mysql, mysql_target.name, user="root", password=""
    )
    yield db
    db.close()


MySQLConnect = Callable[..., Any]


@pytest.fixture
def mysql_connect(mariadb: Any) -> Iterator[MySQLConnect]:
    """mysql_connect(user, password, database=..., autocommit=True): a pymysql connection,
    closed after the test."""
    opened: list[Any] = []

    def connect(
        user: str, password: str, database: str = "tbs_archive", autocommit: bool = True
    ) -> Any:
        con = pymysql.connect(
            host=LOOPBACK,
            port=mariadb.port,
            user=user,
            password=password,
            database=database,
            autocommit=autocommit,
            connect_timeout=5,
            read_timeout=30,
        )
        opened.append(con)
        return con

    yield connect
    for con in opened:
        with contextlib.suppress(Exception):
            con.close()


def alive(con: Any) -> bool:
    """Whether a pymysql connection still answers (the server did not close it)."""
    try:
        with con.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone() == (1,)
    except Exception:
        return False


def connection_id(con: Any) -> str:
    with con.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        return str(cur.fetchone()[0])


__all__ = [
    "alive",
    "conn",
    "connection_id",
    "mysql_admin",
    "mysql_connect",
    "mysql_target",
    "undo",
]
