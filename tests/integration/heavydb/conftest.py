"""Fixtures for the HeavyDB sandbox contract tests: one server for the session, real clients."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import heavyai
import heavydb
import pytest

from sandbox.heavydb.testing import RunningServer, start_server

ADMIN_PASSWORD = "HyperInteractive"
_names = itertools.count()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = start_server(tmp_path_factory.mktemp("heavydb-sandbox"))
    yield srv
    srv.stop()


Connect = Callable[..., Any]


@pytest.fixture
def connect(sandbox: RunningServer) -> Iterator[Connect]:
    """``connect(user=..., password=..., dbname=..., client=heavydb|heavyai)``; closed after."""
    opened: list[Any] = []

    def _connect(
        user: str = "admin",
        password: str = ADMIN_PASSWORD,
        dbname: str = "heavyai",
        client: Any = heavydb,
        server: RunningServer | None = None,
    ) -> Any:
        srv = server or sandbox
        con = client.connect(
            user=user, password=password, host=srv.host, port=srv.port, dbname=dbname
        )
        opened.append(con)
        return con

    yield _connect
    for con in opened:
        with contextlib.suppress(Exception):
            con.close()


@pytest.fixture
def con(connect: Connect) -> Any:
    """An admin ``heavydb`` connection."""
    return connect()


@pytest.fixture
def hcon(connect: Connect) -> Any:
    """An admin ``heavyai`` connection."""
    return connect(client=heavyai)


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A table/user name unique to this test."""
    base = request.node.name.split("[")[0].removeprefix("test_")[:40]
    return f"{base}_{next(_names)}"
