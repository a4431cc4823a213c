"""The world's own faults, end to end: what production loses in a real emergency.

`app-down` stops only the application (its stores and their network path stay reachable),
`app-hang` leaves it accepting connections that are never answered, `s3-down`,
`prometheus-down` and `redis-down` stop a world-wide service and `clear` brings it back with
nothing lost, `mysql-lost` kills an environment's MariaDB and deletes its data. Each is visible
at the port, or in Prometheus, within 3 s; the load balancer's health checks mark a dead or hung
backend DOWN after `fall` failed checks.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import httpx
import pymysql
import pytest
import redis

from sandbox import world
from sandbox.proc import LOOPBACK, load_services, port_open
from tbs_emergency.config import load_settings
from tests.e2e.conftest import E2E_ROWS, World

pytestmark = pytest.mark.e2e

VISIBLE_S = 3.0  # every fault is visible at the port or in Prometheus within this
# the LB marks a backend DOWN after `fall` failed checks, one every `interval` seconds
LB_DOWN_S = world.LB_HEALTH["interval"] * world.LB_HEALTH["fall"] + world.LB_HEALTH["timeout"] + 2


def _poll(check: Callable[[], bool], deadline_s: float, every: float = 0.1) -> float:
    started = time.monotonic()
    while True:
        with contextlib.suppress(Exception):
            if check():
                return time.monotonic() - started
        if time.monotonic() - started > deadline_s:
            pytest.fail(f"condition not met within {deadline_s}s")
        time.sleep(every)


def _port(w: World, name: str) -> int:
    return int(load_services(w.dir / "services.json")[name].port)


def _promql(w: World, query: str) -> list[dict[str, Any]]:
    resp = httpx.get(
        f"{w.settings.metrics.prometheus_url}/api/v1/query", params={"query": query}, timeout=5
    )
    resp.raise_for_status()
    return list(resp.json()["data"]["result"])


def _lb_health(w: World) -> dict[str, Any]:
    token = w.settings.traffic.token
    assert token is not None
    status = httpx.get(
        f"{w.url('lb')}/emergency/status",
        headers={"Authorization": f"Bearer {token.get_secret_value()}"},
        timeout=5,
    ).json()
    return dict(status["health"])


def _s3(w: World) -> Any:
    st = w.settings.storage
    return boto3.client(
        "s3",
        endpoint_url=st.endpoint_url,
        region_name=st.region,
        aws_access_key_id=st.access_key_id.get_secret_value(),  # type: ignore[union-attr]
        aws_secret_access_key=st.secret_access_key.get_secret_value(),  # type: ignore[union-attr]
    )


def _app_mysql(w: World, env: str) -> Any:
    cfg = w.settings.environment(env).mysql
    return pymysql.connect(
        host=cfg.host,
        port=cfg.port,
        user=cfg.user,
        password=cfg.password.get_secret_value() if cfg.password else "",
        database=cfg.database,
        connect_timeout=3,
    )


@pytest.fixture(autouse=True)
def _clean(sandbox_world: World) -> Iterator[None]:
    with contextlib.suppress(world.WorldError):
        world.clear_faults(sandbox_world.dir)
    yield
    with contextlib.suppress(world.WorldError):
        world.clear_faults(sandbox_world.dir)
    assert world.world_faults(sandbox_world.dir) == {}


def test_world_fault_validation_is_one_line(sandbox_world: World) -> None:
    with pytest.raises(world.WorldError, match="world-wide"):
        world.fault(sandbox_world.dir, "s3-down", "green")
    with pytest.raises(world.WorldError, match="no magnitude"):
        world.fault(sandbox_world.dir, "app-down", "green", magnitude=1)
    with pytest.raises(world.WorldError, match="unknown environment"):
        world.fault(sandbox_world.dir, "mysql-lost", "purple")


def test_app_down_stops_the_app_only_and_the_lb_marks_it_down(sandbox_world: World) -> None:
    w = sandbox_world
    port = _port(w, "app-green")
    ledger_before = httpx.get(f"{w.url('app-green')}/_ledger", timeout=10).json()["writes"]
    t0 = time.monotonic()
    world.fault(w.dir, "app-down", "green")
    assert _poll(lambda: not port_open(LOOPBACK, port), VISIBLE_S) <= VISIBLE_S
    # green's stores and their network path are not part of the app: still there
    with contextlib.closing(_app_mysql(w, "green")) as con, con.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    # the LB's health checks see it, as HAProxy's would
    _poll(lambda: _lb_health(w)["green"]["state"] == "DOWN", LB_DOWN_S)
    assert time.monotonic() - t0 <= LB_DOWN_S + 1
    _poll(
        lambda: bool(_promql(w, 'haproxy_server_status{server="green",state="DOWN"} == 1')),
        VISIBLE_S + 2,
    )
    assert world.world_faults(w.dir)["app-down:green"]["services"] == ["app-green"]

    world.clear_faults(w.dir, "green")
    assert port_open(LOOPBACK, port)
    _poll(lambda: _lb_health(w)["green"]["state"] == "UP", LB_DOWN_S)
    # its data came back with it: the ledger it had still answers
    ledger_after = httpx.get(f"{w.url('app-green')}/_ledger", timeout=10).json()["writes"]
    assert ledger_after[: len(ledger_before)] == ledger_before


def test_app_down_with_a_duration_ends_by_itself(sandbox_world: World) -> None:
    w = sandbox_world
    port = _port(w, "app-blue")
    world.fault(w.dir, "app-down", "blue", duration=2)
    _poll(lambda: not port_open(LOOPBACK, port), VISIBLE_S)
    _poll(lambda: port_open(LOOPBACK, port) and not world.world_faults(w.dir), 60)


def test_app_hang_accepts_and_never_answers(sandbox_world: World) -> None:
    w = sandbox_world
    url = w.url("app-green")
    world.fault(w.dir, "app-hang", "green")
    with pytest.raises(httpx.TimeoutException):
        httpx.get(f"{url}/health", timeout=2)
    assert port_open(LOOPBACK, _port(w, "app-green"))
    # Prometheus' scrape of green fails
    _poll(lambda: bool(_promql(w, 'up{job="tbs-app",env="green"} == 0')), VISIBLE_S + 2)
    _poll(lambda: _lb_health(w)["green"]["state"] == "DOWN", LB_DOWN_S)
    world.clear_faults(w.dir, "green")
    assert httpx.get(f"{url}/health", timeout=20).status_code in (200, 503)


def test_s3_down_then_clear_loses_nothing(sandbox_world: World) -> None:
    w = sandbox_world
    s3 = _s3(w)
    key = f"e2e/s3-down-{time.time_ns()}.txt"
    s3.put_object(Bucket=w.settings.storage.bucket, Key=key, Body=b"journal")
    port = _port(w, "s3")
    world.fault(w.dir, "s3-down")
    _poll(lambda: not port_open(LOOPBACK, port), VISIBLE_S)
    world.clear_faults(w.dir)
    got = s3.get_object(Bucket=w.settings.storage.bucket, Key=key)["Body"].read()
    assert got == b"journal"


def test_prometheus_down_then_clear_keeps_its_series(sandbox_world: World) -> None:
    w = sandbox_world
    port = _port(w, "prometheus")
    assert _promql(w, 'up{job="tbs-app"}')
    world.fault(w.dir, "prometheus-down")
    _poll(lambda: not port_open(LOOPBACK, port), VISIBLE_S)
    world.clear_faults(w.dir)
    _poll(lambda: bool(_promql(w, 'count_over_time(up{job="tbs-app"}[10m]) > 5')), 30)


def test_redis_down_then_clear_keeps_the_sessions(sandbox_world: World) -> None:
    w = sandbox_world
    login = httpx.post(
        f"{w.url('lb')}/login", json={"username": "trader02", "password": "sandbox-trader"}
    )
    assert login.status_code == 200, login.text
    session = login.json()["session_id"]
    ports = [_port(w, f"redis-{env}") for env in ("blue", "green")]
    world.fault(w.dir, "redis-down")
    _poll(lambda: not any(port_open(LOOPBACK, p) for p in ports), VISIBLE_S)
    world.clear_faults(w.dir)
    me = httpx.get(f"{w.url('lb')}/api/me", headers={"X-Session-Id": session}, timeout=20)
    assert me.status_code == 200, me.text


def test_mysql_lost_then_clear_gives_an_empty_server_on_the_same_port(
    sandbox_world: World,
) -> None:
    w = sandbox_world
    name = "mysql-green"
    service = load_services(w.dir / "services.json")[name]
    datadir = Path(service.extra["datadir"])
    assert datadir.is_dir()
    world.fault(w.dir, "mysql-lost", "green")
    _poll(lambda: not port_open(LOOPBACK, service.port), VISIBLE_S)
    assert not datadir.exists()
    try:
        world.clear_faults(w.dir, "green")
        url = urlsplit(w.services[name]["url"])
        con = pymysql.connect(
            host=url.hostname, port=url.port, user="root", password=unquote(url.password or "")
        )
        with con.cursor() as cur:
            cur.execute("SHOW DATABASES LIKE 'tbs_archive'")
            assert cur.fetchall() == ()  # empty: the archive is gone with the server
        con.close()
    finally:
        # give the rest of the session its green archive back (seeded again)
        info = world.up(w.dir, rows=E2E_ROWS, log=lambda _m: None)
        w.info = info
        w.settings = load_settings(info["config"])
    with contextlib.closing(_app_mysql(w, "green")) as con, con.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM users")
        assert cur.fetchone()[0] > 0


def test_redis_keeps_a_session_per_environment(sandbox_world: World) -> None:
    r = redis.Redis.from_url(sandbox_world.settings.environment("blue").redis.url)
    g = redis.Redis.from_url(sandbox_world.settings.environment("green").redis.url)
    r.set("e2e:only-blue", "1", ex=60)
    assert not g.exists("e2e:only-blue")
