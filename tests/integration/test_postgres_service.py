"""The sandbox's PostgreSQL (the Prefect server's database) as `sandbox.services` starts it.

A real server in a private directory on a free port: password authentication is enforced, the
password never reaches the log or the process's command line, a stop and start keeps the data,
and the server listens on loopback TCP only (no Unix socket).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from sandbox.proc import LOOPBACK, port_open
from sandbox.services import _pg_data_dir, _pg_run, purge_postgres, start_postgres, wait_stopped

pytestmark = pytest.mark.integration


def test_postgres_starts_authenticates_and_keeps_its_data(tmp_path: Path) -> None:
    password = "pg-" + secrets.token_urlsafe(12)
    state = tmp_path / "prefect-db"
    service = start_postgres(state, user="prefect", password=password, database="prefect")
    try:
        assert service.url == f"postgresql://prefect@{LOOPBACK}:{service.port}/prefect"
        port = service.port
        assert _pg_run(port, "prefect", password, "prefect", "SELECT current_database()") == (
            "prefect"
        )
        with pytest.raises(Exception, match="password"):
            _pg_run(port, "prefect", "wrong", "prefect", None)
        _pg_run(port, "prefect", password, "prefect", "CREATE TABLE kept (x int)")
        cmdline = Path(f"/proc/{service.pid}/cmdline").read_bytes().decode(errors="replace")
        assert password not in cmdline
        assert not list(_pg_data_dir(state, None).parent.glob("*.pw")), "initdb's file is gone"
    finally:
        wait_stopped(service, timeout=15)
    assert not port_open(LOOPBACK, port)

    again = start_postgres(state, port, user="prefect", password=password, database="prefect")
    try:
        count = _pg_run(
            port,
            "prefect",
            password,
            "prefect",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'kept'",
        )
        assert count == 1, "a stop and start keeps the data"
    finally:
        wait_stopped(again, timeout=15)
    log = (state / "postgres.log").read_text(errors="replace")
    assert password not in log
    data = _pg_data_dir(state, None)
    assert not list(data.rglob(".s.PGSQL.*")), "no Unix socket"
    purge_postgres(state)
    if data != state / "data":  # run by root from a directory the postgres account cannot reach
        assert not data.exists(), "purge removes the cluster kept outside the directory"
