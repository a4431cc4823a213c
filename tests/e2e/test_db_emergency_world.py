"""The database emergency procedures against `sandbox up`'s own configuration.

The sandbox's tbs.toml names the admin account (`[database_emergency.mysql_admin]`), so the
server-level steps run with the privileges they need, as on a real deployment: protecting the
archive really stops the application account writing to it, limiting connections really changes
`max_connections`, and each `lift` puts back exactly what was there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql
import pytest
from typer.testing import CliRunner

from tbs_emergency.cli import app
from tests.e2e.conftest import World
from tests.e2e.test_validation_fixtures import prefect_api

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def api(request: pytest.FixtureRequest, sandbox_world: World) -> str:
    return prefect_api(request)


def _cli(world: World, *args: str) -> dict[str, Any]:
    r = CliRunner().invoke(app, ["--config", str(world.info["config"]), *args, "--json"])
    assert r.exit_code == 0, r.output[-3000:]
    out = r.stdout
    return dict(json.loads(out[out.index("{") :]))


def _root(world: World, env: str = "blue") -> Any:
    """Root on the environment's MariaDB server (its URL carries the administration account)."""
    url = urlsplit(str(world.services[f"mysql-{env}"]["url"]))
    return pymysql.connect(
        host=url.hostname,
        port=url.port,
        user="root",
        password=unquote(url.password or ""),
        autocommit=True,
    )


def _app_connection(world: World, env: str = "blue") -> Any:
    cfg = world.settings.environment(env).mysql
    return pymysql.connect(
        host=cfg.host,
        port=cfg.port,
        user=cfg.user,
        password=cfg.password.get_secret_value() if cfg.password else "",
        autocommit=True,
    )


@pytest.fixture()
def archive_table(sandbox_world: World) -> Iterator[str]:
    with _root(sandbox_world) as root, root.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS tbs_archive")
        cur.execute("CREATE TABLE IF NOT EXISTS tbs_archive.e2e_probe (id INT PRIMARY KEY)")
    yield "tbs_archive.e2e_probe"
    with _root(sandbox_world) as root, root.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS tbs_archive.e2e_probe")


def _insert(world: World, table: str, key: int) -> str | None:
    """None when the application account's INSERT succeeds, else the server's refusal."""
    try:
        with _app_connection(world) as conn, conn.cursor() as cur:
            cur.execute(f"INSERT INTO {table} VALUES ({key})")
    except pymysql.err.OperationalError as e:
        return str(e)
    return None


def test_protect_archive_refuses_the_app_then_lift_restores(
    api: str, sandbox_world: World, archive_table: str
) -> None:
    assert _insert(sandbox_world, archive_table, 1) is None
    doc = _cli(sandbox_world, "db", "protect-archive", "--schema", "tbs_archive")
    assert doc["ok"], doc
    refused = _insert(sandbox_world, archive_table, 2)
    assert refused is not None and "denied" in refused.lower()
    again = _cli(sandbox_world, "db", "protect-archive", "--schema", "tbs_archive")
    assert again["ok"]
    assert not [
        a
        for t in again["targets"]
        for a in t["actions"]
        if a["outcome"] == "done" and a["what"].startswith("revoke")
    ], "a rerun must change nothing"
    lifted = _cli(sandbox_world, "db", "protect-archive", "lift", "--schema", "tbs_archive")
    assert lifted["ok"], lifted
    assert _insert(sandbox_world, archive_table, 3) is None


def test_limit_connections_then_lift_restores_max_connections(
    api: str, sandbox_world: World
) -> None:
    with _root(sandbox_world) as root, root.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.max_connections")
        (before,) = cur.fetchone()
    doc = _cli(sandbox_world, "db", "limit-connections", "--mysql", "--max", "40")
    assert doc["ok"], doc
    with _root(sandbox_world) as root, root.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.max_connections")
        assert cur.fetchone() == (40,)
    lifted = _cli(sandbox_world, "db", "limit-connections", "lift", "--mysql")
    assert lifted["ok"], lifted
    with _root(sandbox_world) as root, root.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.max_connections")
        assert cur.fetchone() == (before,)
