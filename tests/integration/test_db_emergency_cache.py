"""Cache and performance reset on the real servers, each followed by its health probe."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from tbs_emergency.config import RestartableService
from tbs_emergency.connectors.heavydb import HeavyDBDatabase
from tbs_emergency.dbops.cache import (
    probe_service,
    reset_heavydb,
    reset_mysql,
    restart_service,
    run_command,
)
from tbs_emergency.dbops.targets import server_targets

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.integration.test_db_emergency_support"]


def test_mysql_flush_and_query_cache(mysql_admin: Any, mysql_target: Any) -> None:
    result = reset_mysql(mysql_admin, mysql_target, clear_query_cache=True, lock_wait_s=5)
    assert result.ok, result.problems
    flush, qc = result.actions
    assert flush.outcome == "done" and flush.what.startswith("FLUSH TABLES")
    # The sandbox MariaDB runs with the query cache off: said, not pretended.
    assert qc.outcome == "unchanged" and "off" in qc.detail
    assert result.health is not None and result.health.healthy


def test_heavydb_memory_clears(heavydb_server: Any, settings_factory: Any) -> None:
    settings = settings_factory(heavydb_port=heavydb_server.port)
    (target,) = server_targets(settings, ["heavydb"])
    db = HeavyDBDatabase(settings.environment("blue").heavydb, target.name)
    try:
        result = reset_heavydb(db, target)
    finally:
        db.close()
    assert result.ok, result.problems
    assert [a.what for a in result.actions] == ["clear GPU memory", "clear CPU memory"]
    assert result.health is not None and result.health.healthy


def test_service_restart_is_probed_until_healthy(mariadb: Any, closed_port: int) -> None:
    ok = RestartableService(
        name="archive",
        command=[sys.executable, "-c", "print('restarted')"],
        health_tcp=f"127.0.0.1:{mariadb.port}",
        timeout_s=5,
    )
    result = restart_service(ok, run=run_command, probe=lambda: probe_service(None, ok.health_tcp))
    assert result.ok, result.problems
    assert result.actions[0].detail == "restarted"

    dead = RestartableService(
        name="gone",
        command=[sys.executable, "-c", "raise SystemExit(3)"],
        health_tcp=f"127.0.0.1:{closed_port}",
        timeout_s=1,
    )
    bad = restart_service(
        dead,
        run=run_command,
        probe=lambda: probe_service(None, dead.health_tcp, 0.5),
        poll_s=0.2,
    )
    assert not bad.ok
    assert any("exit code 3" in p for p in bad.problems)
    assert any("not healthy" in p for p in bad.problems)
