"""Writes come from users through the load balancer to the live environment, and every write an
app acknowledges is in its ledger (`GET /_ledger`), with keys that never collide between the
environments. With `replicate="green-to-blue"` blue's MariaDB follows green's."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import httpx
import pymysql
import pytest

from sandbox import world
from tests.e2e.conftest import E2E_ROWS, World

pytestmark = pytest.mark.e2e

GREEN_BASE, BLUE_BASE = 2 * 10**15, 10**15


def _poll(check: Callable[[], bool], deadline_s: float, every: float = 0.2) -> None:
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(every)
    pytest.fail(f"condition not met within {deadline_s}s")


def _ledger(w: World, env: str, since: str | None = None) -> list[dict[str, Any]]:
    params = {"since": since} if since else {}
    resp = httpx.get(f"{w.url(f'app-{env}')}/_ledger", params=params, timeout=20)
    resp.raise_for_status()
    return list(resp.json()["writes"])


def _ids_in_mysql(w: World, env: str, ids: list[int]) -> set[int]:
    cfg = w.settings.environment(env).mysql
    con = pymysql.connect(
        host=cfg.host,
        port=cfg.port,
        user=cfg.user,
        password=cfg.password.get_secret_value() if cfg.password else "",
        database=cfg.database,
    )
    try:
        with con.cursor() as cur:
            cur.execute(
                f"SELECT trade_id FROM trades WHERE trade_id IN ({','.join(map(str, ids))})"
            )
            return {int(r[0]) for r in cur.fetchall()}
    finally:
        con.close()


def _active(w: World) -> str:
    token = w.settings.traffic.token
    assert token is not None
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
    return str(httpx.get(f"{w.url('lb')}/emergency/status", headers=headers).json()["active"])


def test_the_live_environment_takes_the_writes_and_its_ledger_names_them(
    sandbox_world: World,
) -> None:
    w = sandbox_world
    assert _active(w) == "green"
    start = dt.datetime.now(dt.UTC).isoformat()
    blue_before = len(_ledger(w, "blue"))
    _poll(lambda: {e["store"] for e in _ledger(w, "green", start)} >= {"mysql", "heavydb"}, 30)
    writes = _ledger(w, "green", start)
    assert all(e["at"] >= start[:19] for e in writes)
    mysql = [e for e in writes if e["store"] == "mysql"]
    assert all(e["table"] == "trades" and set(e["key"]) == {"trade_id"} for e in mysql)
    ids = [int(e["key"]["trade_id"]) for e in mysql]
    assert all(GREEN_BASE <= i < GREEN_BASE + 10**15 for i in ids)  # green's key range
    assert _ids_in_mysql(w, "green", ids) == set(ids)  # acknowledged = committed
    assert not _ids_in_mysql(w, "blue", ids)  # separate stores: blue holds the cut-over data
    time.sleep(2)
    assert len(_ledger(w, "blue")) == blue_before  # nobody writes to the idle environment
    bad = httpx.get(f"{w.url('app-green')}/_ledger", params={"since": "yesterday"}, timeout=10)
    assert bad.status_code == 400


def test_replication_green_to_blue_carries_green_writes(sandbox_world: World) -> None:
    w = sandbox_world
    info = world.up(w.dir, rows=E2E_ROWS, replicate="green-to-blue", log=lambda _m: None)
    try:
        assert info["replicate"] == "green-to-blue"
        start = dt.datetime.now(dt.UTC).isoformat()
        _poll(lambda: any(e["store"] == "mysql" for e in _ledger(w, "green", start)), 20)
        # MySQL commits after replication was set up (a HeavyDB entry may be a row committed to
        # MySQL before: HeavyDB is written in later micro-batches)
        mysql = [e for e in _ledger(w, "green", start) if e["store"] == "mysql"]
        ids = [int(e["key"]["trade_id"]) for e in mysql[:20]]
        _poll(lambda: _ids_in_mysql(w, "blue", ids) == set(ids), 20)
    finally:
        off = world.up(w.dir, rows=E2E_ROWS, replicate="none", log=lambda _m: None)
        w.info = off
    assert off["replicate"] is None
