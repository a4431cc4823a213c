"""The Prometheus adapter against a real Prometheus (installed at /usr/bin/prometheus here).

When Prometheus is not installed the real-server tests skip, and the error mapping is still
checked against `PromDouble`, a TEST DOUBLE answering with Prometheus's documented error bodies.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tbs_emergency.config import MetricsConfig
from tbs_emergency.connectors.metrics import PrometheusMetrics
from tbs_emergency.errors import ConnectorError, Refused, TimedOut, Unreachable

pytestmark = pytest.mark.integration


@pytest.fixture
def prom(prometheus: Any) -> PrometheusMetrics:
    # make setup installs Prometheus; a machine without it is not set up for these tests.
    assert prometheus is not None, "Prometheus is not installed: run `make setup`"
    m = PrometheusMetrics(MetricsConfig(prometheus_url=prometheus.url, timeout_s=3))
    # Wait for the first self-scrape so `up` has a sample.
    deadline = time.monotonic() + 20
    while not m.instant('up{job="self"}') and time.monotonic() < deadline:
        time.sleep(0.3)
    return m


def test_ping_and_instant(prom: PrometheusMetrics) -> None:
    assert prom.ping().reachable
    samples = prom.instant('up{job="self"}')
    assert len(samples) == 1
    assert samples[0].value == 1.0 and samples[0].labels["job"] == "self"
    assert prom.value("vector(42)") == 42.0
    assert prom.instant("scalar(vector(3))")[0].value == 3.0
    assert prom.value('up{job="nothing"}') is None
    at = time.time() - 1
    assert abs(prom.instant("time()", at=at)[0].value - at) < 0.01


def test_range(prom: PrometheusMetrics) -> None:
    now = time.time()
    series = prom.range("vector(1)", now - 10, now, 2)
    assert len(series) == 1
    labels, points = series[0]
    assert labels == {} and len(points) == 6 and all(v == 1.0 for _, v in points)


def test_bad_promql_is_refused(prom: PrometheusMetrics) -> None:
    with pytest.raises(Refused) as err:
        prom.instant("sum(rate(")
    assert err.value.system == "prometheus"
    assert "bad_data" in str(err.value)
    with pytest.raises(Refused, match="range vector"):
        prom.instant("up[1m]")
    with pytest.raises(Refused):
        prom.range("up", time.time(), time.time() - 60, 1)  # end before start


def test_unreachable_and_timeout(closed_port: int, blackhole_port: int) -> None:
    m = PrometheusMetrics(MetricsConfig(prometheus_url=f"http://127.0.0.1:{closed_port}"))
    with pytest.raises(Unreachable, match=r"^prometheus"):
        m.instant("up")
    assert not m.ping().reachable
    m = PrometheusMetrics(
        MetricsConfig(prometheus_url=f"http://127.0.0.1:{blackhole_port}", timeout_s=0.3)
    )
    with pytest.raises(TimedOut):
        m.instant("up")


class PromDouble:
    """TEST DOUBLE: answers /api/v1/query with a canned Prometheus error body and status."""

    def __init__(self) -> None:
        self.status = 200
        self.body: Any = {"status": "success", "data": {"resultType": "vector", "result": []}}
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                data = json.dumps(double.body).encode()
                self.send_response(double.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def prom_double() -> Iterator[PromDouble]:
    d = PromDouble()
    yield d
    d.server.shutdown()
    d.server.server_close()


@pytest.mark.parametrize(
    "status, error_type, expected",
    [
        (400, "bad_data", Refused),
        (503, "timeout", TimedOut),
        (503, "unavailable", Unreachable),
        (422, "execution", ConnectorError),
        (500, "internal", ConnectorError),
    ],
)
def test_error_bodies_are_mapped(
    prom_double: PromDouble, status: int, error_type: str, expected: type[Exception]
) -> None:
    prom_double.status = status
    prom_double.body = {"status": "error", "errorType": error_type, "error": "it went wrong"}
    m = PrometheusMetrics(MetricsConfig(prometheus_url=prom_double.url))
    with pytest.raises(expected) as err:
        m.instant("up")
    assert type(err.value) is expected
    assert f"{error_type}: it went wrong" in str(err.value)
