"""The shared topology: one MariaDB, one HeavyDB and one Redis serve both environments, as at
sites that run blue and green on one data tier. A world of its own, for this module only."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from sandbox import world
from sandbox.seed import SANDBOX_USERS
from tbs_emergency.cli import app
from tbs_emergency.connectors.useraccess import UserAccess
from tests.e2e.conftest import World
from tests.e2e.test_validation_fixtures import prefect_api

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api(request: pytest.FixtureRequest, sandbox_world: World) -> str:
    return prefect_api(request)


def _cli(w: World, *args: str) -> dict[str, Any]:
    r = CliRunner().invoke(app, ["--config", w.config, *args, "--json"])
    assert r.exit_code == 0, r.output[-3000:]
    out = r.stdout
    return dict(json.loads(out[out.index("{") :]))


def test_both_environments_name_the_same_stores(shared_world: World) -> None:
    s = shared_world.services
    for kind in ("mysql", "redis", "heavydb"):
        assert s[f"{kind}-blue"] == s[f"{kind}-green"], kind
    assert world.topology_of(shared_world.dir)["topology"] == "shared"
    blue = shared_world.settings.environment("blue")
    green = shared_world.settings.environment("green")
    assert blue.redis.url == green.redis.url
    assert blue.mysql.port != green.mysql.port  # each its own network path, still


def test_a_session_is_recognised_by_either_environment(shared_world: World) -> None:
    lb = shared_world.url("lb")
    login = httpx.post(f"{lb}/login", json={"username": "trader01", "password": "sandbox-trader"})
    assert login.status_code == 200, login.text
    session = login.json()["session_id"]
    for env in ("blue", "green"):
        me = httpx.get(
            f"{shared_world.url(f'app-{env}')}/api/me", headers={"X-Session-Id": session}
        )
        assert me.status_code == 200 and me.json()["served_by"] == env


def test_sync_between_environments_sharing_the_servers_is_a_reported_no_op(
    api: str, shared_world: World
) -> None:
    # blue and green reach the same MariaDB and HeavyDB databases through their own paths
    doc = _cli(shared_world, "db", "sync", "--source", "green", "--target", "blue")
    assert doc["ok"], doc
    notes = " ".join(doc.get("notes") or [])
    assert "mysql: green and blue share" in notes and "heavydb: green and blue share" in notes
    assert not [a for t in doc["targets"] for a in t["actions"] if a["outcome"] == "done"]


def test_replication_needs_separate_stores(shared_world: World) -> None:
    with pytest.raises(world.WorldError, match="separate stores"):
        world.up(shared_world.dir, rows=10, prefect=False, replicate="green-to-blue")


def test_shared_stores_verify_writes_and_sessions_without_copying(shared_world: World) -> None:
    from tasks.incident import connectors_for
    from tasks.rollback import carry_writes, preserve_sessions

    cfg = shared_world.config
    conn = connectors_for(cfg)
    name, _role, password, _ = next(u for u in SANDBOX_USERS if u[0] == "trader02")
    ua = UserAccess(shared_world.settings.traffic.url or "")
    try:
        sid = ua.login(name, password)
        # the feed writes through green: wait for its first acknowledged writes
        deadline = time.monotonic() + 60
        while not conn.app("green").ledger() and time.monotonic() < deadline:
            time.sleep(1)
        conn.traffic().switch_to("blue")
        res: dict[str, Any] = carry_writes.fn(cfg, "green", "blue")
        assert res["ok"], res
        assert res["ledger_entries"] > 0 and res["copied"] == 0 and res["missing"] == 0
        (table,) = res["tables"]
        assert [g["system"] for g in table["targets"]] == ["mysql[blue]"]
        assert table["targets"][0]["still_missing"] == 0
        notes = " ".join(res["notes"])
        assert "mysql: green and blue share one server: verified, nothing copied" in notes
        assert "heavydb: green and blue share one server: nothing to carry there" in notes

        s: dict[str, Any] = preserve_sessions.fn(cfg, "green", "blue")
        assert s["ok"] and s["shared"] and s["copied"] == 0
        assert s["verified"] == s["before"] > 0
        assert ua.me(sid)["served_by"] == "blue"
    finally:
        ua.close()
        conn.traffic().switch_to("green")
