"""The app stand-ins against real stores, the way the sandbox world runs them.

One module-wide small world: the session's MariaDB and HeavyDB servers (a database of this
module's own on each, shared by both environments as in the "shared" topology), a Redis per
environment, a network path per environment, blue and green apps with ledger files, and the LB
with a fast write feed. Every process is real; nothing of ours is mocked.

- the feed writes to the active environment only, and follows a switch;
- the ledger lists exactly what was committed in MySQL and HeavyDB; `since`; bad `since`;
- a write the app cannot commit gets 503 and is not in the ledger; the stores converge after
  db faults (forwarded through the app to its network path) without HeavyDB duplicates;
- app-hang: requests hang while /_faults and /_ledger answer; the LB marks the app DOWN;
  clearing releases the hung requests (503) and leaves none held;
- sessions live in the environment's own Redis (401 elsewhere);
- the ledger survives an app restart; the rows a killed app had not flushed to HeavyDB reach
  it after the restart; the network path keeps working while the app is down.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox import seed
from sandbox.proc import LOOPBACK, Service, free_port, pid_alive, start_listening, stop_pid
from sandbox.services import start_redis

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
APP_PASSWORD = "app-Secret-42"  # conftest's tbs_app password
HEAVYDB_PASSWORD = "HyperInteractive"
ENVS = ("blue", "green")
HEALTH_INTERVAL, HEALTH_TIMEOUT, HEALTH_FALL, HEALTH_RISE = 0.5, 1.0, 3, 2


def _wait(condition: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what} not within {seconds:.0f}s"
        time.sleep(0.1)
    return result


class World:
    """The processes of this module, and ways to look at the stores behind them."""

    def __init__(self, root: Path, mariadb: Service, heavydb: Any, database: str) -> None:
        self.root = root
        self.mariadb = mariadb
        self.heavydb = heavydb
        self.database = database
        self.redis: dict[str, Service] = {}
        self.netpaths: dict[str, Service] = {}
        self.apps: dict[str, Service] = {}
        self.app_ports = {env: free_port() for env in ENVS}
        self.lb: Service | None = None

    # processes ---------------------------------------------------------------------------------
    def start_netpath(self, env: str) -> None:
        port, mysql_port, heavydb_port = free_port(), free_port(), free_port()
        argv = [sys.executable, "-m", "sandbox.standins.netpath", "--env", env]
        argv += ["--port", str(port), "--mysql-port", str(mysql_port)]
        argv += ["--mysql-upstream", f"{LOOPBACK}:{self.mariadb.port}"]
        argv += ["--heavydb-port", str(heavydb_port)]
        argv += ["--heavydb-upstream", f"{self.heavydb.host}:{self.heavydb.port}"]
        service = start_listening(
            f"netpath-{env}", argv, port, self.root / f"netpath-{env}.log", cwd=ROOT
        )
        service.extra.update(mysql_port=str(mysql_port), heavydb_port=str(heavydb_port))
        self.netpaths[env] = service

    def start_app(self, env: str) -> None:
        path = self.netpaths[env]
        port = self.app_ports[env]
        argv = [sys.executable, "-m", "sandbox.standins.app", "--env", env, "--port", str(port)]
        argv += ["--version", "1.8.2" if env == "blue" else "1.9.0"]
        argv += ["--mysql", f"{LOOPBACK}:{path.extra['mysql_port']}"]
        argv += ["--mysql-user", "tbs_app", "--mysql-database", self.database]
        argv += ["--heavydb", f"{LOOPBACK}:{path.extra['heavydb_port']}"]
        argv += ["--heavydb-database", self.database]
        argv += ["--redis-url", self.redis[env].url, "--netpath-url", path.url]
        argv += ["--ledger-file", str(self.ledger_file(env))]
        argv += ["--heavydb-flush-interval", "0.5", "--probe-interval", "0.5"]
        argv += ["--in-doubt-grace", "1"]
        self.apps[env] = start_listening(
            f"app-{env}",
            argv,
            port,
            self.root / f"app-{env}.log",
            cwd=ROOT,
            env={"TBS_APP_MYSQL_PASSWORD": APP_PASSWORD},
            timeout=120,
        )

    def kill_app(self, env: str) -> None:
        """As abruptly as the world's app-down may be: SIGKILL, nothing flushed."""
        pid = self.apps[env].pid
        os.killpg(pid, signal.SIGKILL)
        _wait(lambda: not pid_alive(pid), 10, f"app-{env} to die")

    def start_lb(self) -> None:
        port = free_port()
        argv = [sys.executable, "-m", "sandbox.standins.lb", "--port", str(port)]
        for env in ENVS:
            argv += [f"--{env}", f"http://{LOOPBACK}:{self.app_ports[env]}"]
        argv += ["--state-file", str(self.root / "lb-state.json")]
        argv += ["--feed-interval", "0.2", "--feed-rows", "5", "--backend-timeout", "3"]
        argv += ["--health-interval", str(HEALTH_INTERVAL)]
        argv += ["--health-timeout", str(HEALTH_TIMEOUT)]
        argv += ["--health-fall", str(HEALTH_FALL), "--health-rise", str(HEALTH_RISE)]
        self.lb = start_listening("lb", argv, port, self.root / "lb.log", cwd=ROOT)

    def stop(self) -> None:
        services = [self.lb, *self.apps.values(), *self.netpaths.values(), *self.redis.values()]
        for service in services:
            if service is not None:
                stop_pid(service.pid)

    # helpers -----------------------------------------------------------------------------------
    def ledger_file(self, env: str) -> Path:
        return self.root / "apps" / f"app-{env}.ledger.jsonl"

    def url(self, env: str) -> str:
        return self.apps[env].url

    @property
    def lb_url(self) -> str:
        assert self.lb is not None
        return self.lb.url

    def switch(self, env: str) -> None:
        httpx.post(f"{self.lb_url}/emergency/switch", json={"target": env}).raise_for_status()

    def ledger(self, env: str, since: str | None = None) -> list[dict[str, Any]]:
        params = {"since": since} if since else None
        resp = httpx.get(f"{self.url(env)}/_ledger", params=params, timeout=30)
        resp.raise_for_status()
        return resp.json()["writes"]

    def ingest(self, env: str, enabled: bool | None = None) -> dict[str, Any]:
        if enabled is None:
            return httpx.get(f"{self.url(env)}/_ingest").json()
        resp = httpx.post(f"{self.url(env)}/_ingest", json={"enabled": enabled})
        resp.raise_for_status()
        return resp.json()

    def quiesce(self, env: str) -> None:
        """Pause writes and wait until nothing is pending (in flight, in doubt, unflushed)."""
        self.ingest(env, False)
        time.sleep(0.5)  # a batch the feed sent just before the pause
        _wait(
            lambda: not any(self.ingest(env)["pending_rows"].values()),
            30,
            f"{env}'s pending rows to drain",
        )

    def mysql_ids(self, env: str) -> list[int]:
        import pymysql

        base = seed.ENV_ID_BASE[env]
        con = pymysql.connect(
            unix_socket=self.mariadb.extra["socket"], user="root", database=self.database
        )
        try:
            with con.cursor() as cur:
                cur.execute(
                    "SELECT trade_id FROM trades WHERE trade_id >= %s AND trade_id < %s",
                    (base, base + seed.LIVE_ID_BASE),
                )
                return sorted(int(r[0]) for r in cur.fetchall())
        finally:
            con.close()

    def heavydb_ids(self, env: str) -> list[int]:
        """Every row's id, duplicates kept (HeavyDB has no keys to refuse them)."""
        import heavydb

        base = seed.ENV_ID_BASE[env]
        con = heavydb.connect(
            user="admin",
            password=HEAVYDB_PASSWORD,
            host=self.heavydb.host,
            port=self.heavydb.port,
            dbname=self.database,
        )
        try:
            cur = con.cursor()
            cur.execute(
                f"SELECT trade_id FROM trades WHERE trade_id >= {base}"
                f" AND trade_id < {base + seed.LIVE_ID_BASE}"
            )
            return sorted(int(r[0]) for r in cur.fetchall())
        finally:
            con.close()

    def lb_metric(self, name: str) -> float:
        for line in httpx.get(f"{self.lb_url}/_lb/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no metric {name}")


def _create_databases(mariadb: Service, heavydb: Any, name: str) -> None:
    import heavydb as heavydb_client
    import pymysql

    con = pymysql.connect(unix_socket=mariadb.extra["socket"], user="root", autocommit=True)
    try:
        with con.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
            for host in ("127.0.0.1", "localhost"):
                cur.execute(
                    f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{name}`.* TO 'tbs_app'@%s",
                    (host,),
                )
    finally:
        con.close()
    con = pymysql.connect(
        unix_socket=mariadb.extra["socket"], user="root", database=name, local_infile=True
    )
    frames = seed.frames(50)
    try:
        seed.seed_mysql(con, frames, log=lambda _: None)
    finally:
        con.close()
    admin = heavydb_client.connect(
        user="admin",
        password=HEAVYDB_PASSWORD,
        host=heavydb.host,
        port=heavydb.port,
        dbname="heavyai",
    )
    try:
        admin.cursor().execute(f"CREATE DATABASE {name}")
    finally:
        admin.close()
    seed.seed_heavydb(
        heavydb.host, heavydb.port, HEAVYDB_PASSWORD, frames, dbname=name, log=lambda _: None
    )


def _drop_databases(mariadb: Service, heavydb: Any, name: str) -> None:
    import heavydb as heavydb_client
    import pymysql

    con = pymysql.connect(unix_socket=mariadb.extra["socket"], user="root", autocommit=True)
    try:
        with con.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        con.close()
    admin = heavydb_client.connect(
        user="admin",
        password=HEAVYDB_PASSWORD,
        host=heavydb.host,
        port=heavydb.port,
        dbname="heavyai",
    )
    try:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
    finally:
        admin.close()


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, mariadb: Service, heavydb_server: Any
) -> Iterator[World]:
    root = tmp_path_factory.mktemp("stores")
    database = f"standins_{secrets.token_hex(4)}"
    _create_databases(mariadb, heavydb_server, database)
    w = World(root, mariadb, heavydb_server, database)
    try:
        for env in ENVS:
            w.redis[env] = start_redis(root / f"redis-{env}")
            w.start_netpath(env)
        for env in ENVS:
            w.start_app(env)
        w.start_lb()
        yield w
    finally:
        w.stop()
        _drop_databases(mariadb, heavydb_server, database)


@pytest.fixture(autouse=True)
def _clean(world: World) -> Iterator[None]:
    """Each test starts with green live, no faults, writes enabled."""
    for env in ENVS:
        httpx.delete(f"{world.url(env)}/_faults").raise_for_status()
        world.ingest(env, True)
    world.switch("green")
    yield
    for env in ENVS:
        httpx.delete(f"{world.url(env)}/_faults", timeout=10)


def _new_entries(world: World, env: str, store: str = "mysql") -> Callable[[], bool]:
    seen = len([w for w in world.ledger(env) if w["store"] == store])
    return lambda: len([w for w in world.ledger(env) if w["store"] == store]) > seen


def _at(entry: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(entry["at"])


def _assert_converged(world: World, env: str) -> None:
    """With writes quiesced: the ledger lists exactly the env's rows of both stores."""
    writes = world.ledger(env)
    ledger_mysql = [w["key"]["trade_id"] for w in writes if w["store"] == "mysql"]
    ledger_heavy = [w["key"]["trade_id"] for w in writes if w["store"] == "heavydb"]
    assert len(ledger_mysql) == len(set(ledger_mysql)), "a MySQL write ledgered twice"
    assert sorted(set(ledger_heavy)) == sorted(ledger_mysql)
    assert world.mysql_ids(env) == sorted(ledger_mysql)
    heavy = world.heavydb_ids(env)
    assert len(heavy) == len(set(heavy)), "duplicate rows in HeavyDB"
    assert heavy == sorted(ledger_mysql)


def test_feed_writes_to_the_active_environment_only(world: World) -> None:
    _wait(_new_entries(world, "green"), 10, "green writes")
    blue_before = world.ledger("blue")
    world.switch("blue")
    switched = dt.datetime.now(dt.UTC)
    since = switched.isoformat().replace("+00:00", "Z")
    _wait(lambda: world.ledger("blue", since), 10, "blue writes after the switch")
    time.sleep(1.0)
    # The one batch in flight at the switch may commit on green after it (on a loaded machine,
    # well after); no later batch goes to green. A batch's rows share one commit time.
    late = switched + dt.timedelta(seconds=0.5)
    green_late = [w for w in world.ledger("green", since) if w["store"] == "mysql"]
    late_batches = {w["at"] for w in green_late if _at(w) >= late}
    assert len(late_batches) <= 1, sorted(late_batches)
    blue_after = world.ledger("blue")
    assert blue_after[: len(blue_before)] == blue_before
    assert len([w for w in blue_after if w["store"] == "mysql"]) >= 10
    assert world.lb_metric('tbs_feed_batches_total{server="blue",result="ok"}') >= 2
    assert world.lb_metric('tbs_feed_rows_total{server="blue"}') >= 10


def test_ledger_lists_exactly_what_was_committed(world: World) -> None:
    _wait(_new_entries(world, "green", "heavydb"), 10, "green HeavyDB writes")
    for env in ENVS:
        world.quiesce(env)
    try:
        for env in ENVS:
            writes = world.ledger(env)
            base = seed.ENV_ID_BASE[env]
            for w in writes:
                assert set(w) == {"table", "store", "key", "at"}
                assert w["table"] == "trades" and w["store"] in ("mysql", "heavydb")
                assert list(w["key"]) == ["trade_id"]
                assert base <= w["key"]["trade_id"] < base + seed.LIVE_ID_BASE
                assert w["at"].endswith("Z")
            times = [_at(w) for w in writes]
            assert times == sorted(times), "the ledger is in commit order"
            _assert_converged(world, env)
        assert world.ledger("green"), "green (live at the start) wrote nothing"
    finally:
        for env in ENVS:
            world.ingest(env, True)


def test_ledger_since(world: World) -> None:
    _wait(_new_entries(world, "green"), 10, "green writes")
    _wait(_new_entries(world, "green"), 10, "more green writes")
    world.quiesce("green")
    try:
        full = world.ledger("green")
        middle = full[len(full) // 2]["at"]
        expected = [w for w in full if _at(w) >= dt.datetime.fromisoformat(middle)]
        assert world.ledger("green", middle) == expected
        # Other spellings of the same instant: an offset, or no zone at all (UTC).
        assert world.ledger("green", middle.replace("Z", "+00:00")) == expected
        assert world.ledger("green", middle.replace("Z", "")) == expected
        assert world.ledger("green", "2999-01-01T00:00:00Z") == []
        assert world.ledger("green", "2000-01-01T00:00:00Z") == full
        bad = httpx.get(f"{world.url('green')}/_ledger", params={"since": "yesterday"})
        assert bad.status_code == 400
        assert "since must be an ISO 8601 time" in bad.json()["error"]
    finally:
        world.ingest("green", True)


def test_unwritable_batches_get_503_and_the_stores_converge(world: World) -> None:
    green = world.url("green")
    failed = 'tbs_feed_batches_total{server="green",result="failed"}'
    # db-down posted to the APP reaches green's network path.
    resp = httpx.post(f"{green}/_faults", json={"kind": "db-down", "db": "mysql"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["proxies"]["mysql"]["down"] is True
    metrics = httpx.get(f"{green}/metrics").text
    assert 'tbs_fault_active{env="green",kind="db-down"} 1' in metrics
    before = len(world.ledger("green"))
    refused = httpx.post(f"{green}/api/trades", json={"count": 3}, timeout=30)
    assert refused.status_code == 503
    assert "write not accepted" in refused.json()["error"]
    feed_failed = world.lb_metric(failed)
    _wait(lambda: world.lb_metric(failed) >= feed_failed + 2, 10, "failed feed batches")
    assert len([w for w in world.ledger("green")[before:] if w["store"] == "mysql"]) == 0
    httpx.delete(f"{green}/_faults").raise_for_status()
    ok = httpx.post(f"{green}/api/trades", json={"count": 3}, timeout=30)
    assert ok.status_code == 200
    body = ok.json()
    assert body["accepted"] == 3 and body["last_trade_id"] == body["first_trade_id"] + 2
    # HeavyDB down: writes are still acknowledged (MySQL), HeavyDB's share waits and retries.
    httpx.post(f"{green}/_faults", json={"kind": "db-down", "db": "heavydb"}).raise_for_status()
    _wait(lambda: world.ingest("green")["pending_rows"]["heavydb"] >= 20, 15, "pending rows")
    httpx.delete(f"{green}/_faults", params={"kind": "db-down"}).raise_for_status()
    world.quiesce("green")
    try:
        _assert_converged(world, "green")
    finally:
        world.ingest("green", True)


def test_paused_writes_are_answered_200_not_accepted(world: World) -> None:
    world.ingest("green", False)
    resp = httpx.post(f"{world.url('green')}/api/trades", json={"count": 5})
    assert resp.status_code == 200
    assert resp.json() == {"env": "green", "accepted": 0, "paused": True}
    bad = httpx.post(f"{world.url('green')}/api/trades", json={"count": 500})
    assert bad.status_code == 400 and "between 1 and 100" in bad.json()["error"]


def test_app_hang(world: World) -> None:
    green = world.url("green")
    resp = httpx.post(f"{green}/_faults", json={"kind": "app-hang"})
    assert resp.status_code == 200
    outcome: dict[str, Any] = {}

    def hung_request() -> None:
        started = time.monotonic()
        try:
            r = httpx.get(f"{green}/api/me", timeout=30)
            outcome["status"] = r.status_code
        except httpx.HTTPError as exc:
            outcome["error"] = repr(exc)
        outcome["answered_at"] = time.monotonic()
        outcome["waited"] = time.monotonic() - started

    waiter = threading.Thread(target=hung_request, daemon=True)
    waiter.start()
    try:
        for path in ("/health", "/metrics", "/api/trades", "/_ingest"):
            with pytest.raises(httpx.ReadTimeout):
                httpx.get(f"{green}{path}", timeout=0.5)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{green}/login", json={"username": "a", "password": "b"}, timeout=0.5)
        # The control paths answer, so the fault can be seen and cleared.
        listed = httpx.get(f"{green}/_faults", timeout=5).json()
        assert [f["kind"] for f in listed["faults"]] == ["app-hang"]
        assert listed["held_requests"] >= 1
        assert httpx.get(f"{green}/_ledger", timeout=10).status_code == 200
        # The LB's health checks time out: green goes DOWN, and stays the active one.
        down = 'haproxy_server_status{proxy="tbs",server="green",state="DOWN"}'
        _wait(
            lambda: world.lb_metric(down) == 1,
            HEALTH_INTERVAL * HEALTH_FALL + HEALTH_TIMEOUT + 1,
            "green DOWN",
        )
        assert "active" in httpx.get(f"{world.lb_url}/emergency/status").json()
        assert "status" not in outcome  # still hung
    finally:
        cleared_at = time.monotonic()
        cleared = httpx.delete(f"{green}/_faults", params={"kind": "app-hang"}, timeout=5)
    assert cleared.json()["cleared"] == ["app-hang"]
    waiter.join(10)
    assert outcome.get("status") == 503, outcome
    assert outcome["answered_at"] - cleared_at < 2
    assert outcome["waited"] > 2
    # Nothing stays held: requests whose clients gave up were let go, the rest released.
    _wait(lambda: httpx.get(f"{green}/_faults").json()["held_requests"] == 0, 5, "no held")
    assert httpx.get(f"{green}/health", timeout=10).status_code == 200
    up = 'haproxy_server_status{proxy="tbs",server="green",state="UP"}'
    _wait(lambda: world.lb_metric(up) == 1, HEALTH_INTERVAL * HEALTH_RISE + 3, "green UP again")


def test_sessions_live_in_the_environments_own_redis(world: World) -> None:
    import redis

    login = httpx.post(
        f"{world.lb_url}/login", json={"username": "trader01", "password": "sandbox-trader"}
    )
    assert login.status_code == 200, login.text
    assert login.headers["x-tbs-backend"] == "green"
    session_id = login.json()["session_id"]
    assert login.json()["env"] == "green"
    headers = {"X-Session-Id": session_id}
    me = httpx.get(f"{world.url('green')}/api/me", headers=headers)
    assert me.status_code == 200 and me.json()["served_by"] == "green"
    # Blue's Redis does not hold green's session.
    unknown = httpx.get(f"{world.url('blue')}/api/me", headers=headers)
    assert unknown.status_code == 401
    assert "session unknown" in unknown.json()["error"]
    key = f"session:{session_id}"
    assert redis.Redis.from_url(world.redis["green"].url).exists(key) == 1
    assert redis.Redis.from_url(world.redis["blue"].url).exists(key) == 0
    # After a switch the same session is unknown through the LB; a new login lands in blue.
    world.switch("blue")
    assert httpx.get(f"{world.lb_url}/api/me", headers=headers).status_code == 401
    again = httpx.post(
        f"{world.lb_url}/login", json={"username": "trader01", "password": "sandbox-trader"}
    )
    assert again.status_code == 200 and again.headers["x-tbs-backend"] == "blue"
    assert redis.Redis.from_url(world.redis["blue"].url).exists(
        f"session:{again.json()['session_id']}"
    )


def test_ledger_survives_a_restart_and_unflushed_rows_reach_heavydb(world: World) -> None:
    import pymysql

    green = world.url("green")
    netpath = world.netpaths["green"]
    # HeavyDB unreachable: acknowledged rows pile up waiting for it ...
    httpx.post(f"{green}/_faults", json={"kind": "db-down", "db": "heavydb"}).raise_for_status()
    _wait(lambda: world.ingest("green")["pending_rows"]["heavydb"] >= 20, 15, "pending rows")
    # ... when the app dies. Its pending micro-batches die with it.
    world.kill_app("green")
    with open(world.ledger_file("green"), encoding="utf-8") as f:
        lines_before = f.read().splitlines()
    assert lines_before
    # The network path outlives the app: the environment's MySQL is still reachable.
    con = pymysql.connect(
        host=LOOPBACK,
        port=int(netpath.extra["mysql_port"]),
        user="tbs_app",
        password=APP_PASSWORD,
        database=world.database,
        connect_timeout=5,
    )
    with con.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM trades")
        assert cur.fetchone()[0] > 50
    con.close()
    httpx.delete(f"{netpath.url}/_faults").raise_for_status()
    world.start_app("green")
    after = world.ledger("green")
    before_ids = {w["key"]["trade_id"] for w in after if w["store"] == "mysql"}
    with open(world.ledger_file("green"), encoding="utf-8") as f:
        assert f.read().splitlines()[: len(lines_before)] == lines_before
    # New writes continue above every id written before the restart.
    _wait(_new_entries(world, "green"), 10, "green writes after the restart")
    newest = max(w["key"]["trade_id"] for w in world.ledger("green") if w["store"] == "mysql")
    assert newest > max(before_ids)
    world.quiesce("green")
    try:
        _assert_converged(world, "green")
    finally:
        world.ingest("green", True)
