"""The network path stand-in (`python -m sandbox.standins.netpath`) in front of the real
MariaDB and HeavyDB servers of the integration session: db-down and db-slow per database, clear
and expiry, validation, health and metrics.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.proc import LOOPBACK, Service, free_port, port_open, start_listening, stop_pid

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
APP_PASSWORD = "app-Secret-42"  # conftest's tbs_app password


@pytest.fixture(scope="module")
def netpath(
    tmp_path_factory: pytest.TempPathFactory, mariadb: Service, heavydb_server: Any
) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("netpath")
    port, mysql_port, heavydb_port = free_port(), free_port(), free_port()
    argv = [sys.executable, "-m", "sandbox.standins.netpath", "--env", "blue"]
    argv += ["--port", str(port), "--mysql-port", str(mysql_port)]
    argv += ["--mysql-upstream", f"{LOOPBACK}:{mariadb.port}"]
    argv += ["--heavydb-port", str(heavydb_port)]
    argv += ["--heavydb-upstream", f"{heavydb_server.host}:{heavydb_server.port}"]
    service = start_listening("netpath-blue", argv, port, root / "netpath.log", cwd=ROOT)
    service.extra.update(mysql_port=str(mysql_port), heavydb_port=str(heavydb_port))
    yield service
    stop_pid(service.pid)


@pytest.fixture(autouse=True)
def _no_faults(netpath: Service) -> Iterator[None]:
    httpx.delete(f"{netpath.url}/_faults").raise_for_status()
    yield
    httpx.delete(f"{netpath.url}/_faults").raise_for_status()


def _mysql_query(netpath: Service, timeout: float = 10) -> float:
    """Connect through the path and SELECT 1; seconds taken."""
    import pymysql

    started = time.monotonic()
    con = pymysql.connect(
        host=LOOPBACK,
        port=int(netpath.extra["mysql_port"]),
        user="tbs_app",
        password=APP_PASSWORD,
        connect_timeout=timeout,
        read_timeout=timeout,
    )
    try:
        with con.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchall() == ((1,),)
    finally:
        con.close()
    return time.monotonic() - started


def _heavydb_query(netpath: Service) -> float:
    import heavydb

    started = time.monotonic()
    con = heavydb.connect(
        user="admin",
        password="HyperInteractive",
        host=LOOPBACK,
        port=int(netpath.extra["heavydb_port"]),
        dbname="heavyai",
    )
    try:
        cur = con.cursor()
        cur.execute("SELECT 1")
        assert [tuple(r) for r in cur.fetchall()] == [(1,)]
    finally:
        con.close()
    return time.monotonic() - started


def _closed_by_peer(sock: socket.socket, timeout: float = 5) -> bool:
    """Read what is left (the rest of a greeting) until the peer closes or resets."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


def _metrics(netpath: Service) -> dict[str, float]:
    out = {}
    for line in httpx.get(f"{netpath.url}/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_netpath_is_ready_when_its_control_port_is(netpath: Service) -> None:
    # start_listening returned as soon as the control port opened: the proxies already listen.
    for key in ("mysql_port", "heavydb_port"):
        assert port_open(LOOPBACK, int(netpath.extra[key]))
    health = httpx.get(f"{netpath.url}/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["env"] == "blue" and body["faults"] == []
    assert set(body["proxies"]) == {"mysql", "heavydb"}
    assert _mysql_query(netpath) < 2
    assert _heavydb_query(netpath) < 5


def test_db_down_on_one_database_and_clear(netpath: Service) -> None:
    port = int(netpath.extra["mysql_port"])
    held = socket.create_connection((LOOPBACK, port), timeout=5)
    held.recv(1)  # MariaDB's greeting: the connection is open through the path
    assert _metrics(netpath)['tbs_netpath_connections{env="blue",db="mysql"}'] >= 1
    resp = httpx.post(f"{netpath.url}/_faults", json={"kind": "db-down", "db": "mysql"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["fault"]["kind"] == "db-down" and body["fault"]["db"] == "mysql"
    assert body["proxies"]["mysql"]["down"] is True
    assert body["proxies"]["heavydb"]["down"] is False
    import pymysql

    with pytest.raises(pymysql.err.OperationalError) as refused:
        _mysql_query(netpath, timeout=3)
    assert refused.value.args[0] == 2003  # CR_CONN_HOST_ERROR: connection refused
    assert _closed_by_peer(held)  # the open connection was dropped
    held.close()
    _heavydb_query(netpath)  # the other database's path is untouched
    metrics = _metrics(netpath)
    assert metrics['tbs_fault_active{env="blue",kind="db-down"}'] == 1
    assert metrics['tbs_fault_active{env="blue",kind="db-slow"}'] == 0
    assert metrics['tbs_netpath_up{env="blue",db="mysql"}'] == 0
    assert metrics['tbs_netpath_up{env="blue",db="heavydb"}'] == 1
    listed = httpx.get(f"{netpath.url}/_faults").json()
    assert listed["env"] == "blue"
    assert [f["kind"] for f in listed["faults"]] == ["db-down"]
    assert listed["proxies"]["mysql"]["down"] is True
    cleared = httpx.delete(f"{netpath.url}/_faults", params={"kind": "db-down"}).json()
    assert cleared["cleared"] == ["db-down"]
    assert _mysql_query(netpath) < 2
    metrics = _metrics(netpath)
    assert metrics['tbs_netpath_up{env="blue",db="mysql"}'] == 1
    assert metrics['tbs_fault_active{env="blue",kind="db-down"}'] == 0


def test_db_down_on_both_and_expiry(netpath: Service) -> None:
    httpx.post(f"{netpath.url}/_faults", json={"kind": "db-down", "duration": 1.5})
    for key in ("mysql_port", "heavydb_port"):
        assert not port_open(LOOPBACK, int(netpath.extra[key]))
    ports = [int(netpath.extra[key]) for key in ("mysql_port", "heavydb_port")]
    deadline = time.monotonic() + 5
    # The proxies come back one after the other: wait for both.
    while not all(port_open(LOOPBACK, port) for port in ports):
        assert time.monotonic() < deadline, "db-down did not expire"
        time.sleep(0.1)
    assert httpx.get(f"{netpath.url}/_faults").json()["faults"] == []
    _mysql_query(netpath)


def test_db_slow_delays_replies(netpath: Service) -> None:
    fast = _mysql_query(netpath)
    resp = httpx.post(
        f"{netpath.url}/_faults", json={"kind": "db-slow", "magnitude": 0.3, "db": "mysql"}
    )
    assert resp.json()["proxies"]["mysql"]["delay_s"] == 0.3
    slow = _mysql_query(netpath)
    # A connect + query is several round trips, each delayed.
    assert slow >= 0.6 > fast
    assert _heavydb_query(netpath) < 0.6 + fast
    assert _metrics(netpath)['tbs_netpath_delay_seconds{env="blue",db="mysql"}'] == 0.3
    httpx.delete(f"{netpath.url}/_faults").raise_for_status()
    assert _mysql_query(netpath) < 0.3


def test_netpath_fault_validation(netpath: Service) -> None:
    for body, fragment in (
        ({"kind": "throughput"}, "fault of the app, not of the network path"),
        ({"kind": "app-hang"}, "fault of the app, not of the network path"),
        ({"kind": "app-down"}, "handled by the sandbox world, not the network path"),
        ({"kind": "redis-down"}, "handled by the sandbox world"),
        ({"kind": "db-down", "magnitude": 2}, "no magnitude"),
        ({"kind": "db-slow", "magnitude": 500}, "out of range"),
        ({"kind": "db-slow", "db": "redis"}, "db must be one of"),
        ({"kind": "meteor"}, "unknown fault kind"),
        ([1, 2], "JSON object"),
    ):
        resp = httpx.post(f"{netpath.url}/_faults", json=body)
        assert resp.status_code == 400, body
        assert fragment in resp.json()["error"], body
    assert httpx.post(f"{netpath.url}/_faults", content=b"{nope").status_code == 400
    assert httpx.get(f"{netpath.url}/_faults").json()["faults"] == []
