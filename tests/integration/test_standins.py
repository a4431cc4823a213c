"""The sandbox stand-ins, each run as its own process the way the world runs them.

- lb: status, redirect-blue (idempotent), switch, token auth, isolation, reverse proxying,
  state kept across a restart.
- sink: webhooks, PagerDuty Events v2, SMTP, listing and clearing.
- app: fault endpoints (validation, expiry), the metrics text and what faults do to it; db
  faults posted to the app reach its network path (a netpath process in front of an echo server).
- tcpproxy: db-down refuses new and drops open connections, db-slow delays replies (against a
  plain TCP echo server).

The network path on its own, the app against real stores (ledger, app-hang, sessions) and the
LB's health checks, metrics and feed: test_standins_netpath.py, test_standins_stores.py,
test_standins_lb.py.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import sys
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from sandbox.proc import LOOPBACK, Service, free_port, port_open, start_listening, stop_pid
from sandbox.standins.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "lb-standin-token-42"


def _start(name: str, module: str, args: list[str], log_dir: Path, **kw: object) -> Service:
    port = free_port()
    argv = [sys.executable, "-m", module, "--port", str(port), *args]
    return start_listening(name, argv, port, log_dir / f"{name}.log", cwd=ROOT, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# Load balancer
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two plain HTTP servers, each serving a file that says which one it is."""
    started = []
    urls = {}
    for env in ("blue", "green"):
        root = tmp_path_factory.mktemp(f"backend-{env}")
        (root / "whoami.txt").write_text(env)
        port = free_port()
        argv = [sys.executable, "-m", "http.server", str(port), "--bind", LOOPBACK]
        started.append(start_listening(f"backend-{env}", argv, port, root / "log", cwd=root))
        urls[env] = f"http://{LOOPBACK}:{port}"
    yield urls
    for s in started:
        stop_pid(s.pid)


@pytest.fixture
def lb(backends: dict[str, str], tmp_path: Path) -> Iterator[Service]:
    service = _start_lb(backends, tmp_path, token=None)
    yield service
    stop_pid(service.pid)


def _start_lb(backends: dict[str, str], tmp_path: Path, token: str | None) -> Service:
    args = ["--blue", backends["blue"], "--green", backends["green"]]
    args += ["--state-file", str(tmp_path / "lb-state.json")]
    env = {}
    if token:
        args += ["--token-env", "TEST_LB_TOKEN"]
        env["TEST_LB_TOKEN"] = token
    return _start("lb", "sandbox.standins.lb", args, tmp_path, env=env)


def test_lb_status_starts_green_and_proxies_to_it(lb: Service, backends: dict[str, str]) -> None:
    status = httpx.get(f"{lb.url}/emergency/status").json()
    assert status["active"] == "green"
    assert status["backends"] == backends
    assert status["switched_at"] is None
    assert status["history"] == []
    assert status["draining"] == [] and status["denied"] == []
    resp = httpx.get(f"{lb.url}/whoami.txt")
    assert resp.status_code == 200
    assert resp.text == "green"
    assert resp.headers["x-tbs-backend"] == "green"


def test_lb_redirect_blue_is_idempotent(lb: Service) -> None:
    first = httpx.post(f"{lb.url}/emergency/redirect-blue", headers={"X-Actor": "pytest"})
    assert first.json() == {"active": "blue", "previous": "green", "changed": True}
    second = httpx.post(f"{lb.url}/emergency/redirect-blue").json()
    assert second == {"active": "blue", "previous": "blue", "changed": False}
    assert httpx.get(f"{lb.url}/whoami.txt").text == "blue"
    status = httpx.get(f"{lb.url}/emergency/status").json()
    assert status["active"] == "blue"
    assert status["switched_at"] is not None
    assert len(status["history"]) == 1
    entry = status["history"][0]
    assert (entry["from"], entry["to"], entry["by"]) == ("green", "blue", "pytest")
    assert entry["at"] == status["switched_at"]


def test_lb_switch_validates_and_switches(lb: Service) -> None:
    bad = httpx.post(f"{lb.url}/emergency/switch", json={"target": "purple"})
    assert bad.status_code == 400
    assert "target" in bad.json()["error"]
    assert httpx.post(f"{lb.url}/emergency/switch", content=b"{nope").status_code == 400
    to_blue = httpx.post(f"{lb.url}/emergency/switch", json={"target": "blue", "by": "drill"})
    assert to_blue.json() == {"active": "blue", "previous": "green", "changed": True}
    back = httpx.post(f"{lb.url}/emergency/switch", json={"target": "green"}).json()
    assert back == {"active": "green", "previous": "blue", "changed": True}
    history = httpx.get(f"{lb.url}/emergency/status").json()["history"]
    assert [(h["from"], h["to"], h["by"]) for h in history] == [
        ("green", "blue", "drill"),
        ("blue", "green", "api"),
    ]


def test_lb_isolation_and_drain(lb: Service) -> None:
    drained = httpx.post(f"{lb.url}/emergency/drain", json={"target": "green"}).json()
    assert drained == {"draining": ["green"], "changed": True}
    isolated = httpx.post(f"{lb.url}/emergency/isolate", json={"target": "green"}).json()
    assert isolated["denied"] == ["green"]
    # The active backend is isolated: nothing is forwarded to it.
    assert httpx.get(f"{lb.url}/whoami.txt").status_code == 503
    httpx.post(f"{lb.url}/emergency/redirect-blue").raise_for_status()
    assert httpx.get(f"{lb.url}/whoami.txt").text == "blue"
    refused = httpx.post(f"{lb.url}/emergency/switch", json={"target": "green"})
    assert refused.status_code == 409
    httpx.post(f"{lb.url}/emergency/restore", json={"target": "green"}).raise_for_status()
    ok = httpx.post(f"{lb.url}/emergency/switch", json={"target": "green"})
    assert ok.json()["changed"] is True


def test_lb_token_auth_and_state_survives_restart(backends: dict[str, str], tmp_path: Path) -> None:
    service = _start_lb(backends, tmp_path, token=TOKEN)
    try:
        for method, path in (
            ("GET", "/emergency/status"),
            ("POST", "/emergency/redirect-blue"),
            ("POST", "/emergency/switch"),
        ):
            resp = httpx.request(method, service.url + path, json={"target": "blue"})
            assert resp.status_code == 401, path
            wrong = httpx.request(
                method, service.url + path, headers={"Authorization": "Bearer nope"}
            )
            assert wrong.status_code == 401, path
        auth = {"Authorization": f"Bearer {TOKEN}"}
        # The refused calls changed nothing.
        status = httpx.get(f"{service.url}/emergency/status", headers=auth).json()
        assert status["active"] == "green"
        moved = httpx.post(f"{service.url}/emergency/redirect-blue", headers=auth).json()
        assert moved["changed"] is True
        # Proxied traffic needs no token.
        assert httpx.get(f"{service.url}/whoami.txt").text == "blue"
    finally:
        stop_pid(service.pid)
    restarted = _start_lb(backends, tmp_path, token=TOKEN)
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        status = httpx.get(f"{restarted.url}/emergency/status", headers=auth).json()
        assert status["active"] == "blue"
        assert len(status["history"]) == 1
    finally:
        stop_pid(restarted.pid)


def test_lb_reports_unreachable_backend(tmp_path: Path) -> None:
    dead = f"http://{LOOPBACK}:{free_port()}"
    service = _start_lb({"blue": dead, "green": dead}, tmp_path, token=None)
    try:
        resp = httpx.get(f"{service.url}/anything")
        assert resp.status_code == 502
        assert "green" in resp.json()["error"]
    finally:
        stop_pid(service.pid)


# ------------------------------------------------------------------------------------------------
# Notification sink
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("sink")
    smtp_port = free_port()
    args = ["--smtp-port", str(smtp_port), "--store", str(root / "deliveries.jsonl")]
    service = _start(
        "sink", "sandbox.standins.sink", args, root, ready=lambda: port_open(LOOPBACK, smtp_port)
    )
    service.extra["smtp_port"] = str(smtp_port)
    service.extra["store"] = str(root / "deliveries.jsonl")
    yield service
    stop_pid(service.pid)


def test_sink_records_webhooks_without_authorization(sink: Service) -> None:
    httpx.delete(f"{sink.url}/deliveries").raise_for_status()
    resp = httpx.post(
        f"{sink.url}/hooks/oncall",
        json={"text": "P0 EMERGENCY: TBS deployment issue detected."},
        headers={"Authorization": "Bearer secret-value", "X-Custom": "yes"},
    )
    assert resp.status_code == 200
    assert resp.json()["ok"] is True
    httpx.post(f"{sink.url}/hooks/stakeholders", content=b"plain words").raise_for_status()
    oncall = httpx.get(f"{sink.url}/deliveries", params={"channel": "oncall"}).json()
    assert oncall["count"] == 1
    record = oncall["deliveries"][0]
    assert record["body"] == {"text": "P0 EMERGENCY: TBS deployment issue detected."}
    assert record["kind"] == "webhook"
    assert record["headers"]["x-custom"] == "yes"
    assert "authorization" not in {k.lower() for k in record["headers"]}
    assert "secret-value" not in Path(sink.extra["store"]).read_text()
    assert record["at"].endswith("Z")
    everything = httpx.get(f"{sink.url}/deliveries").json()
    assert [d["channel"] for d in everything["deliveries"]] == ["oncall", "stakeholders"]
    assert everything["deliveries"][1]["body"] == "plain words"


def test_sink_pagerduty_events_v2(sink: Service) -> None:
    url = f"{sink.url}/pagerduty/v2/enqueue"
    event = {
        "routing_key": "rk",
        "event_action": "trigger",
        "payload": {"summary": "rollback", "source": "tbs", "severity": "critical"},
    }
    resp = httpx.post(url, json=event)
    assert resp.status_code == 202
    body = resp.json()
    assert body["status"] == "success" and body["dedup_key"]
    ack = httpx.post(
        url, json={"routing_key": "rk", "event_action": "acknowledge", "dedup_key": "k1"}
    )
    assert ack.status_code == 202 and ack.json()["dedup_key"] == "k1"
    invalid = httpx.post(url, json={"event_action": "trigger", "payload": {}})
    assert invalid.status_code == 400
    assert invalid.json()["status"] == "invalid event"
    recorded = httpx.get(f"{sink.url}/deliveries", params={"kind": "pagerduty"}).json()
    assert [d["accepted"] for d in recorded["deliveries"][-3:]] == [True, True, False]


def test_sink_smtp_and_clear(sink: Service) -> None:
    msg = EmailMessage()
    msg["From"] = "tbs-emergency@sandbox.local"
    msg["To"] = "oncall@sandbox.local, manager@sandbox.local"
    msg["Subject"] = "P0 EMERGENCY"
    msg.set_content("Rollback initiated.\n.leading dot survives\n")
    with smtplib.SMTP(LOOPBACK, int(sink.extra["smtp_port"]), timeout=10) as smtp:
        smtp.ehlo()
        smtp.login("anyone", "anything")
        smtp.send_message(msg)
        smtp.noop()
        smtp.rset()
    mails = httpx.get(f"{sink.url}/deliveries", params={"channel": "email"}).json()
    assert mails["count"] == 1
    mail = mails["deliveries"][0]
    assert mail["subject"] == "P0 EMERGENCY"
    assert mail["from"] == "tbs-emergency@sandbox.local"
    assert sorted(mail["to"]) == ["manager@sandbox.local", "oncall@sandbox.local"]
    assert ".leading dot survives" in mail["body"]
    cleared = httpx.delete(f"{sink.url}/deliveries").json()
    assert cleared["cleared"] >= 1
    assert httpx.get(f"{sink.url}/deliveries").json()["count"] == 0


def test_sink_injected_failures(sink: Service) -> None:
    httpx.post(f"{sink.url}/_faults", json={"channel": "oncall", "status": 503, "count": 2})
    codes = [httpx.post(f"{sink.url}/hooks/oncall", json={"n": i}).status_code for i in range(3)]
    assert codes == [503, 503, 200]


# ------------------------------------------------------------------------------------------------
# TCP proxy (in-process, against a TCP echo server)
# ------------------------------------------------------------------------------------------------


async def _echo_server() -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, LOOPBACK, 0)


async def _roundtrip(port: int, payload: bytes = b"ping") -> tuple[bytes, float]:
    started = time.monotonic()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), 5)
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
    writer.close()
    return data, time.monotonic() - started


def test_tcpproxy_down_refuses_and_drops_connections() -> None:
    async def scenario() -> None:
        echo = await _echo_server()
        upstream = echo.sockets[0].getsockname()[1]
        proxy = TcpProxy("test", LOOPBACK, 0, LOOPBACK, upstream)
        await proxy.start()
        port = proxy.listen_port
        assert (await _roundtrip(port))[0] == b"ping"
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(b"open")
        assert await reader.readexactly(4) == b"open"

        await proxy.set_down(True)
        # The open connection is dropped ...
        assert await asyncio.wait_for(reader.read(10), 5) == b""
        # ... and new ones are refused.
        with pytest.raises(OSError):
            await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), 5)
        # The echo server itself is untouched.
        assert (await _roundtrip(upstream))[0] == b"ping"

        await proxy.set_down(False)
        assert proxy.listen_port == port
        assert (await _roundtrip(port))[0] == b"ping"
        await proxy.stop()
        echo.close()

    asyncio.run(scenario())


def test_tcpproxy_slow_delays_replies() -> None:
    async def scenario() -> None:
        echo = await _echo_server()
        proxy = TcpProxy("test", LOOPBACK, 0, LOOPBACK, echo.sockets[0].getsockname()[1])
        await proxy.start()
        _, fast = await _roundtrip(proxy.listen_port)
        proxy.delay = 0.4
        data, slow = await _roundtrip(proxy.listen_port, b"x" * 200_000)
        assert data == b"x" * 200_000  # order and content kept across chunks
        assert slow >= 0.4
        assert fast < 0.4
        proxy.delay = 0.0
        _, again = await _roundtrip(proxy.listen_port)
        assert again < 0.4
        await proxy.stop()
        echo.close()

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------------
# App stand-in (against an echo server as its "MySQL" and a real Redis)
# ------------------------------------------------------------------------------------------------


class _EchoThread:
    """A TCP echo server on a thread, standing in for a database server behind the proxy."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from sandbox.services import start_redis

    root = tmp_path_factory.mktemp("app")
    redis = start_redis(root / "redis")
    echo = _EchoThread()
    proxy_port = free_port()
    path_args = ["--env", "green", "--mysql-port", str(proxy_port)]
    path_args += ["--mysql-upstream", f"{LOOPBACK}:{echo.port}"]
    netpath = _start("netpath-green", "sandbox.standins.netpath", path_args, root)
    args = ["--env", "green", "--version", "9.9.9", "--mysql", f"{LOOPBACK}:{proxy_port}"]
    args += ["--netpath-url", netpath.url, "--redis-url", redis.url]
    args += ["--nominal-rows-per-s", "40000", "--probe-interval", "0.5"]
    service = _start("app-green", "sandbox.standins.app", args, root)
    service.extra["mysql_proxy_port"] = str(proxy_port)
    service.extra["netpath_url"] = netpath.url
    yield service
    stop_pid(service.pid)
    stop_pid(netpath.pid)
    stop_pid(redis.pid)
    echo.close()


def _metrics(app: Service) -> dict[str, float]:
    out = {}
    for line in httpx.get(f"{app.url}/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _rate(app: Service, seconds: float = 1.0) -> float:
    """rows/s over about `seconds`, timed by the app's own clock (HTTP delays do not count)."""
    key, clock = 'tbs_rows_ingested_total{env="green"}', 'tbs_app_uptime_seconds{env="green"}'
    first = _metrics(app)
    time.sleep(seconds)
    second = _metrics(app)
    return (second[key] - first[key]) / (second[clock] - first[clock])


def test_app_metrics_text_has_the_project_signals(app: Service) -> None:
    httpx.delete(f"{app.url}/_faults").raise_for_status()
    metrics = _metrics(app)
    for name in (
        "tbs_rows_ingested_total",
        "tbs_http_requests_total",
        "tbs_http_errors_total",
        "tbs_cpu_usage_percent",
        "tbs_memory_usage_percent",
        "tbs_disk_usage_percent",
        "tbs_active_sessions",
    ):
        assert f'{name}{{env="green"}}' in metrics, name
    assert 'tbs_db_up{env="green",db="mysql"}' in metrics
    assert 'tbs_db_up{env="green",db="heavydb"}' in metrics
    for gauge in ("cpu", "memory", "disk"):
        assert 15 <= metrics[f'tbs_{gauge}_usage_percent{{env="green"}}'] <= 45
    text = httpx.get(f"{app.url}/metrics").text
    assert "# TYPE tbs_rows_ingested_total counter" in text
    assert "# TYPE tbs_cpu_usage_percent gauge" in text


def test_app_fault_endpoints_validate(app: Service) -> None:
    for body, fragment in (
        ({"kind": "meteor"}, "unknown fault kind"),
        ({"kind": "throughput", "magnitude": 1.5}, "out of range"),
        ({"kind": "errors", "magnitude": "lots"}, "must be a number"),
        ({"kind": "db-down", "magnitude": 3}, "no magnitude"),
        ({"kind": "cpu", "duration": -1}, "duration"),
        ({"kind": "cpu", "db": "mysql"}, "only db-down and db-slow"),
        ({"kind": "app-hang", "magnitude": 1}, "no magnitude"),
        ({"kind": "app-down"}, "handled by the sandbox world, not the app"),
        ({"kind": "mysql-lost"}, "handled by the sandbox world, not the app"),
    ):
        resp = httpx.post(f"{app.url}/_faults", json=body)
        assert resp.status_code == 400, body
        assert fragment in resp.json()["error"], body
    assert httpx.get(f"{app.url}/_faults").json()["faults"] == []


def test_app_throughput_fault_slows_rows_ingested(app: Service) -> None:
    httpx.delete(f"{app.url}/_faults").raise_for_status()
    normal = _rate(app)
    assert 34_000 < normal < 46_000
    resp = httpx.post(f"{app.url}/_faults", json={"kind": "throughput", "magnitude": 0.6})
    assert resp.json()["fault"]["magnitude"] == 0.6
    degraded = _rate(app)
    assert 0.3 * normal < degraded < 0.5 * normal
    assert _metrics(app)['tbs_fault_active{env="green",kind="throughput"}'] == 1
    cleared = httpx.delete(f"{app.url}/_faults").json()
    assert cleared["cleared"] == ["throughput"]
    assert _rate(app) > 0.8 * normal


def test_app_resource_faults_and_expiry(app: Service) -> None:
    httpx.post(f"{app.url}/_faults", json={"kind": "cpu", "magnitude": 97.5}).raise_for_status()
    disk = httpx.post(f"{app.url}/_faults", json={"kind": "disk", "duration": 3})
    assert disk.json()["fault"]["remaining_s"] <= 3
    metrics = _metrics(app)
    assert metrics['tbs_cpu_usage_percent{env="green"}'] == 97.5
    assert metrics['tbs_disk_usage_percent{env="green"}'] == 95.0
    listed = {f["kind"]: f for f in httpx.get(f"{app.url}/_faults").json()["faults"]}
    assert listed["disk"]["expires_at"] is not None and listed["cpu"]["expires_at"] is None
    deadline = time.monotonic() + 15
    while _metrics(app)['tbs_disk_usage_percent{env="green"}'] == 95.0:
        assert time.monotonic() < deadline, "the disk fault did not expire"
        time.sleep(0.2)
    metrics = _metrics(app)
    assert metrics['tbs_disk_usage_percent{env="green"}'] < 45
    assert metrics['tbs_cpu_usage_percent{env="green"}'] == 97.5
    only_cpu = httpx.delete(f"{app.url}/_faults", params={"kind": "cpu"}).json()
    assert only_cpu["cleared"] == ["cpu"]
    assert _metrics(app)['tbs_cpu_usage_percent{env="green"}'] < 45


def test_app_errors_fault_fails_real_and_simulated_requests(app: Service) -> None:
    httpx.delete(f"{app.url}/_faults").raise_for_status()
    assert httpx.get(f"{app.url}/").status_code == 200
    httpx.post(f"{app.url}/_faults", json={"kind": "errors", "magnitude": 100}).raise_for_status()
    before = _metrics(app)
    assert httpx.get(f"{app.url}/").status_code == 500
    # Internal endpoints keep working so the fault can be cleared and observed.
    assert httpx.get(f"{app.url}/_faults").status_code == 200
    time.sleep(1.0)
    after = _metrics(app)
    key_req, key_err = 'tbs_http_requests_total{env="green"}', 'tbs_http_errors_total{env="green"}'
    requests = after[key_req] - before[key_req]
    errors = after[key_err] - before[key_err]
    assert requests >= 40  # 50 simulated requests per second plus the real ones
    assert errors >= 0.9 * requests
    httpx.delete(f"{app.url}/_faults").raise_for_status()
    assert httpx.get(f"{app.url}/").status_code == 200


def test_app_forwards_db_faults_to_its_network_path(app: Service) -> None:
    """db faults posted to the app (as callers did before the network path was its own
    process) act on the path and show in the app's listing and metrics."""
    port = int(app.extra["mysql_proxy_port"])
    netpath = app.extra["netpath_url"]

    def roundtrip() -> tuple[bytes, float]:
        started = time.monotonic()
        with socket.create_connection((LOOPBACK, port), timeout=5) as s:
            s.sendall(b"hello")
            return s.recv(5), time.monotonic() - started

    assert roundtrip()[0] == b"hello"
    held = socket.create_connection((LOOPBACK, port), timeout=5)
    posted = httpx.post(f"{app.url}/_faults", json={"kind": "db-down"})
    posted.raise_for_status()
    assert posted.json()["fault"]["kind"] == "db-down"
    with pytest.raises(OSError):
        roundtrip()
    assert held.recv(10) == b""  # the open connection was dropped
    held.close()
    listed = httpx.get(f"{app.url}/_faults").json()
    assert listed["proxies"]["mysql"]["down"] is True
    assert [f["kind"] for f in listed["faults"]] == ["db-down"]
    assert [f["kind"] for f in httpx.get(f"{netpath}/_faults").json()["faults"]] == ["db-down"]
    assert _metrics(app)['tbs_fault_active{env="green",kind="db-down"}'] == 1
    # Clearing everything at the app clears the path too, and the app's own faults.
    httpx.post(f"{app.url}/_faults", json={"kind": "cpu"}).raise_for_status()
    cleared = httpx.delete(f"{app.url}/_faults").json()
    assert sorted(cleared["cleared"]) == ["cpu", "db-down"]
    assert httpx.get(f"{netpath}/_faults").json()["faults"] == []
    assert _metrics(app)['tbs_fault_active{env="green",kind="db-down"}'] == 0
    assert roundtrip()[0] == b"hello"
    httpx.post(
        f"{app.url}/_faults", json={"kind": "db-slow", "magnitude": 0.5, "db": "mysql"}
    ).raise_for_status()
    data, elapsed = roundtrip()
    assert data == b"hello" and elapsed >= 0.5
    # A fault posted to the path directly (as the world does) shows at the app as well.
    httpx.delete(f"{app.url}/_faults", params={"kind": "db-slow"}).raise_for_status()
    assert roundtrip()[1] < 0.5
    httpx.post(f"{netpath}/_faults", json={"kind": "db-down", "db": "mysql"}).raise_for_status()
    assert [f["kind"] for f in httpx.get(f"{app.url}/_faults").json()["faults"]] == ["db-down"]
    httpx.delete(f"{netpath}/_faults").raise_for_status()
    assert roundtrip()[0] == b"hello"


def test_app_health_reports_failing_database(app: Service) -> None:
    # Its "MySQL" is an echo server: the probe fails, and the app says so instead of hanging.
    resp = httpx.get(f"{app.url}/health", timeout=20)
    body = resp.json()
    assert body["env"] == "green" and body["version"] == "9.9.9"
    assert body["checks"]["mysql"]["ok"] is False
    assert body["checks"]["redis"]["ok"] is True
    assert body["status"] == "down"
    assert resp.status_code == 503


def test_app_upload_and_page(app: Service) -> None:
    csv_body = b"trade_id,symbol\n1,AAPL\n2,MSFT\n"
    resp = httpx.post(f"{app.url}/upload", content=csv_body, headers={"content-type": "text/csv"})
    assert resp.json()["rows"] == 2 and resp.json()["format"] == "csv"
    files = {"file": ("t.json", b'[{"a": 1}, {"a": 2}, {"b": 3}]', "application/json")}
    multipart = httpx.post(f"{app.url}/upload", files=files).json()
    assert multipart["rows"] == 3 and multipart["columns"] == ["a", "b"]
    assert multipart["filename"] == "t.json"
    broken = httpx.post(f"{app.url}/upload", content=b"a,b\n1\n")
    assert broken.status_code == 422
    page = httpx.get(f"{app.url}/")
    assert "text/html" in page.headers["content-type"] and "green" in page.text
    assert page.headers["x-tbs-env"] == "green"
