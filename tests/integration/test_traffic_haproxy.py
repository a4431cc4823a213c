"""The HAProxy traffic adapter against a real haproxy process (Debian's /usr/sbin/haproxy).

Two tiny HTTP servers stand for blue and green; haproxy fronts them with one backend and a
runtime API on loopback. The adapter switches traffic and the frontend proves it.
"""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.proc import free_port, port_open, stop_pid
from tbs_emergency.config import TrafficConfig
from tbs_emergency.connectors.traffic_haproxy import HAProxyTraffic
from tbs_emergency.errors import ConnectorError

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _haproxy_installed() -> None:
    # make setup installs HAProxy; a machine without it is not set up for these tests.
    assert Path(HAPROXY).exists(), "haproxy is not installed: run `make setup`"


def backend(name: str) -> tuple[http.server.ThreadingHTTPServer, int]:
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


@pytest.fixture(scope="module")
def haproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    d = tmp_path_factory.mktemp("haproxy")
    blue, bport = backend("blue")
    green, gport = backend("green")
    front, api = free_port(), free_port()
    cfg = d / "haproxy.cfg"
    cfg.write_text(
        f"""
global
    stats socket ipv4@127.0.0.1:{api} level admin
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:{front}
    default_backend tbs
backend tbs
    server blue 127.0.0.1:{bport} weight 100 disabled
    server green 127.0.0.1:{gport} weight 100
"""
    )
    proc = subprocess.Popen(
        [HAPROXY, "-f", str(cfg), "-db"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 15
    while not (port_open("127.0.0.1", front) and port_open("127.0.0.1", api)):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail("haproxy did not start")
        time.sleep(0.05)
    try:
        yield front, api
    finally:
        stop_pid(proc.pid)
        blue.shutdown()
        green.shutdown()


def served_by(front: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{front}/", timeout=5) as r:
        return r.read().decode()


def test_switch_blue_and_back(haproxy: tuple[int, int]) -> None:
    front, api = haproxy
    t = HAProxyTraffic(TrafficConfig(kind="haproxy", runtime_api=f"127.0.0.1:{api}"))
    assert t.active() == "green" and served_by(front) == "green"
    assert t.switch_to("blue") == "blue"
    assert {served_by(front) for _ in range(5)} == {"blue"}
    assert t.switch_to("blue") == "blue"  # idempotent
    assert t.switch_to("green") == "green" and served_by(front) == "green"
    assert t.ping().reachable


def test_unknown_backend_and_dead_api_are_errors(haproxy: tuple[int, int]) -> None:
    _, api = haproxy
    wrong = HAProxyTraffic(
        TrafficConfig(kind="haproxy", runtime_api=f"127.0.0.1:{api}", backend="nope")
    )
    with pytest.raises(ConnectorError):
        wrong.active()
    dead = HAProxyTraffic(TrafficConfig(kind="haproxy", runtime_api=f"127.0.0.1:{free_port()}"))
    assert not dead.ping().reachable
