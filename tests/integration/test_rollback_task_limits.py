"""Issue #14: the emergency path's task timeouts hold where the tasks run, and retries fire.

Real servers, no doubles of our connectors: a TCP server that accepts and never answers (a hung
load balancer / Prometheus), and a small HTTP server that fails its first request and then
answers like Prometheus. The tasks run inside a flow, submitted to worker threads as the
rollback submits them.
"""

from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

CONFIG = """
[environments.blue]
app_url = "http://127.0.0.1:{hung}"
timeout_s = 60
[environments.blue.heavydb]
[environments.blue.mysql]
[environments.blue.redis]
[environments.green]
app_url = "http://127.0.0.1:{hung}"
timeout_s = 60
[environments.green.heavydb]
port = 7000
[environments.green.mysql]
[environments.green.redis]
[traffic]
url = "http://127.0.0.1:{hung}"
timeout_s = 60
[storage]
bucket = "b"
[metrics]
prometheus_url = "http://127.0.0.1:{prom}"
timeout_s = 60
"""


@pytest.fixture
def hung_server() -> Iterator[int]:
    """Accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                held.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(2)
    for c in held:
        c.close()
    srv.close()


@pytest.fixture
def flaky_prometheus() -> Iterator[tuple[int, list[int]]]:
    """Refuses its first query (HTTP 503, `unavailable`), then answers 42."""
    calls: list[int] = []

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_POST(self) -> None:
            calls.append(1)
            n = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(n)
            if len(calls) == 1:
                body = {"status": "error", "errorType": "unavailable", "error": "blip"}
                code = 503
            else:
                body = {
                    "status": "success",
                    "data": {
                        "resultType": "vector",
                        "result": [{"metric": {}, "value": [0, "42"]}],
                    },
                }
                code = 200
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1], calls
    srv.shutdown()
    srv.server_close()


def test_a_hung_system_is_abandoned_at_the_bound_and_prometheus_blips_are_retried(
    tmp_path: Path,
    hung_server: int,
    flaky_prometheus: tuple[int, list[int]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from prefect import flow

    from tasks.bounded import bounded
    from tasks.rollback import active_traffic, metric

    prom_port, calls = flaky_prometheus
    cfg = tmp_path / "tbs.toml"
    cfg.write_text(CONFIG.format(hung=hung_server, prom=prom_port))

    # The real task with a short bound (its production bound is 20 s); a hung load balancer.
    hung = active_traffic.with_options(retries=1, retry_delay_seconds=0)
    hung.fn = bounded(1.0)(active_traffic.fn.__wrapped__)  # type: ignore[attr-defined]

    @flow(persist_result=False)
    def probe() -> dict[str, Any]:
        t0 = time.monotonic()
        fut = hung.submit(str(cfg))  # a worker thread, as the rollback's submitted checks
        fut.wait()
        took = time.monotonic() - t0
        st = fut.state
        value = metric(str(cfg), "throughput", "green", 60.0)
        return {"name": st.name, "failed": st.is_failed(), "took": took, "value": value}

    from prefect.settings import (
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    # a loaded test machine starts the ephemeral API slowly
    slow = {PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 180}
    with temporary_settings(updates=slow), caplog.at_level(logging.WARNING):
        out = probe()
    # abandoned after 1 s, retried once, abandoned again: ~2 s, not the connector's 60 s
    assert out["failed"] and out["name"] == "TimedOut", out
    assert out["took"] < 10, out
    # one Prometheus blip: the task raised, Prefect retried, the value came through
    assert out["value"] == 42.0 and len(calls) == 2
    assert "worker thread" not in caplog.text, "Prefect's timeout warning in the run's log"
