"""The load balancer stand-in's health checks, HAProxy-style metrics, backend timeout and feed.

Backends are plain `python -m http.server` processes: SIGSTOP makes one hang (the kernel still
accepts connections, nothing answers), killing it makes it refuse. Intervals are short (flags)
so a DOWN/UP transition takes about a second. The feed against real apps is in
test_standins_stores.py.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from sandbox.proc import LOOPBACK, Service, free_port, start_listening, stop_pid

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INTERVAL, TIMEOUT, FALL, RISE = 0.3, 0.3, 3, 2


class Backend:
    """An http.server serving whoami.txt; can be hung (SIGSTOP), resumed, killed, restarted."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        (root / "whoami.txt").write_text(name)
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.service: Service | None = None
        self.start()

    def start(self) -> None:
        argv = [sys.executable, "-m", "http.server", str(self.port), "--bind", LOOPBACK]
        self.service = start_listening(self.name, argv, self.port, self.root / "log", cwd=self.root)

    def hang(self) -> None:
        assert self.service is not None
        os.kill(self.service.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.service is not None:
            os.kill(self.service.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.service is not None:
            self.resume()
            stop_pid(self.service.pid)
            self.service = None


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[dict[str, Backend]]:
    started: dict[str, Backend] = {}
    try:
        for env in ("blue", "green"):
            root = tmp_path / env
            root.mkdir()
            started[env] = Backend(env, root)
        yield started
    finally:
        for b in started.values():
            b.kill()


def _start_lb(backends: dict[str, Backend], tmp_path: Path, *extra: str) -> Service:
    port = free_port()
    argv = [sys.executable, "-m", "sandbox.standins.lb", "--port", str(port)]
    argv += ["--blue", backends["blue"].url, "--green", backends["green"].url]
    argv += ["--state-file", str(tmp_path / "lb-state.json")]
    argv += ["--health-interval", str(INTERVAL), "--health-timeout", str(TIMEOUT)]
    argv += ["--health-fall", str(FALL), "--health-rise", str(RISE), *extra]
    return start_listening("lb", argv, port, tmp_path / "lb.log", cwd=ROOT)


@pytest.fixture
def lb(backends: dict[str, Backend], tmp_path: Path) -> Iterator[Service]:
    service = _start_lb(backends, tmp_path, "--feed-rows", "0", "--backend-timeout", "1")
    yield service
    stop_pid(service.pid)


def _metrics(lb: Service) -> dict[str, float]:
    resp = httpx.get(f"{lb.url}/_lb/metrics", timeout=5)
    assert resp.status_code == 200
    assert "x-tbs-backend" not in resp.headers  # answered by the LB, not forwarded
    out = {}
    for line in resp.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _status_key(server: str, state: str) -> str:
    return f'haproxy_server_status{{proxy="tbs",server="{server}",state="{state}"}}'


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> float:
    """Poll until condition() holds; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"{what} not within {seconds:.1f}s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_health_checks_mark_a_hung_backend_down_and_up_again(
    lb: Service, backends: dict[str, Backend]
) -> None:
    _wait(lambda: _metrics(lb)[_status_key("blue", "UP")] == 1, 5, "blue UP")
    assert _metrics(lb)[_status_key("blue", "DOWN")] == 0
    backends["blue"].hang()
    try:
        took = _wait(
            lambda: _metrics(lb)[_status_key("blue", "DOWN")] == 1,
            INTERVAL * FALL + 1 + TIMEOUT,
            "blue DOWN after hanging",
        )
        assert took >= INTERVAL * (FALL - 1)  # not before `fall` checks could fail
        metrics = _metrics(lb)
        assert metrics[_status_key("blue", "UP")] == 0
        assert metrics['haproxy_server_check_failures_total{proxy="tbs",server="blue"}'] >= FALL
        assert metrics[_status_key("green", "UP")] == 1  # the other one is unaffected
        health = httpx.get(f"{lb.url}/emergency/status").json()["health"]
        assert health["blue"]["state"] == "DOWN"
        assert health["blue"]["consecutive_failures"] >= FALL
        assert "timed out" in health["blue"]["last_error"]
        assert health["blue"]["last_check_at"].endswith("Z")
        assert health["green"] == {
            "state": "UP",
            "last_check_at": health["green"]["last_check_at"],
            "consecutive_failures": 0,
            "last_error": None,
        }
        # The LB does not fail over by itself.
        assert httpx.get(f"{lb.url}/emergency/status").json()["active"] == "green"
    finally:
        backends["blue"].resume()
    _wait(
        lambda: _metrics(lb)[_status_key("blue", "UP")] == 1,
        INTERVAL * RISE + 1 + TIMEOUT,
        "blue UP again",
    )


def test_health_checks_mark_a_dead_backend_down_and_up_when_back(
    lb: Service, backends: dict[str, Backend]
) -> None:
    green = backends["green"]
    _wait(lambda: _metrics(lb)[_status_key("green", "UP")] == 1, 5, "green UP")
    green.kill()
    _wait(
        lambda: _metrics(lb)[_status_key("green", "DOWN")] == 1,
        INTERVAL * FALL + 1,
        "green DOWN after dying",
    )
    health = httpx.get(f"{lb.url}/emergency/status").json()["health"]["green"]
    assert "Connect" in health["last_error"]
    # Requests still go to the active backend (and fail): counted as connection errors.
    before = _metrics(lb)['haproxy_server_connection_errors_total{proxy="tbs",server="green"}']
    assert httpx.get(f"{lb.url}/whoami.txt").status_code == 502
    after = _metrics(lb)['haproxy_server_connection_errors_total{proxy="tbs",server="green"}']
    assert after == before + 1
    green.start()
    _wait(
        lambda: _metrics(lb)[_status_key("green", "UP")] == 1,
        INTERVAL * RISE + 1,
        "green UP after restarting",
    )
    assert httpx.get(f"{lb.url}/whoami.txt").text == "green"


def test_response_code_counters_and_active_server(lb: Service) -> None:
    key = 'haproxy_server_http_responses_total{{proxy="tbs",server="green",code="{}"}}'
    requests = 'haproxy_backend_http_requests_total{proxy="tbs",server="green"}'
    before = _metrics(lb)
    assert httpx.get(f"{lb.url}/whoami.txt").status_code == 200
    assert httpx.get(f"{lb.url}/no-such-file").status_code == 404
    assert httpx.post(f"{lb.url}/whoami.txt", content=b"x").status_code == 501  # http.server
    after = _metrics(lb)
    assert after[requests] - before[requests] == 3
    for code, n in (("2xx", 1), ("4xx", 1), ("5xx", 1), ("3xx", 0), ("1xx", 0), ("other", 0)):
        assert after[key.format(code)] - before[key.format(code)] == n, code
    assert after['haproxy_backend_http_requests_total{proxy="tbs",server="blue"}'] == 0
    assert after['haproxy_server_response_time_average_seconds{proxy="tbs",server="green"}'] > 0
    assert after['haproxy_server_active{proxy="tbs",server="green"}'] == 1
    assert after['haproxy_server_active{proxy="tbs",server="blue"}'] == 0
    httpx.post(f"{lb.url}/emergency/switch", json={"target": "blue"}).raise_for_status()
    switched = _metrics(lb)
    assert switched['haproxy_server_active{proxy="tbs",server="blue"}'] == 1
    assert switched['haproxy_server_active{proxy="tbs",server="green"}'] == 0
    text = httpx.get(f"{lb.url}/_lb/metrics").text
    assert "# TYPE haproxy_server_http_responses_total counter" in text
    assert "# TYPE haproxy_server_status gauge" in text


def test_hung_backend_gives_504_after_backend_timeout(
    lb: Service, backends: dict[str, Backend]
) -> None:
    errors = 'haproxy_server_connection_errors_total{proxy="tbs",server="green"}'
    before = _metrics(lb)[errors]
    backends["green"].hang()
    try:
        started = time.monotonic()
        resp = httpx.get(f"{lb.url}/whoami.txt", timeout=10)
        elapsed = time.monotonic() - started
    finally:
        backends["green"].resume()
    assert resp.status_code == 504
    assert resp.headers["x-tbs-backend"] == "green"
    assert "did not answer within 1s" in resp.json()["error"]
    assert 0.9 <= elapsed < 5
    assert _metrics(lb)[errors] == before + 1
    entries = httpx.get(f"{lb.url}/emergency/logs").json()["entries"]
    assert entries[-1]["status"] == 504 and entries[-1]["outcome"] == "timeout"


def test_feed_posts_to_the_active_backend_only(
    backends: dict[str, Backend], tmp_path: Path
) -> None:
    # http.server answers POST with 501: every batch fails, which is what is counted here
    # (the feed against real apps, which accept the batches, is in test_standins_stores.py).
    service = _start_lb(backends, tmp_path, "--feed-interval", "0.1", "--feed-rows", "5")
    try:
        key = 'tbs_feed_batches_total{{server="{}",result="{}"}}'
        _wait(lambda: _metrics(service)[key.format("green", "failed")] >= 3, 5, "green batches")
        metrics = _metrics(service)
        assert metrics[key.format("blue", "failed")] == 0
        assert metrics[key.format("green", "ok")] == 0
        green_requests = metrics['haproxy_backend_http_requests_total{proxy="tbs",server="green"}']
        assert green_requests >= 3  # the feed's batches are forwarded requests
        httpx.post(f"{service.url}/emergency/switch", json={"target": "blue"}).raise_for_status()
        _wait(lambda: _metrics(service)[key.format("blue", "failed")] >= 3, 5, "blue batches")
        # An isolated active backend gets nothing: the batches fail at the LB.
        httpx.post(f"{service.url}/emergency/isolate", json={"target": "blue"}).raise_for_status()
        sent = _metrics(service)['haproxy_backend_http_requests_total{proxy="tbs",server="blue"}']
        time.sleep(0.5)
        after = _metrics(service)
        assert after['haproxy_backend_http_requests_total{proxy="tbs",server="blue"}'] <= sent + 1
        assert after[key.format("blue", "failed")] > metrics[key.format("blue", "failed")]
        # The feed is not in the access log (the security procedures read that).
        entries = httpx.get(f"{service.url}/emergency/logs").json()["entries"]
        assert all(e["path"] != "/api/trades" for e in entries)
    finally:
        stop_pid(service.pid)
