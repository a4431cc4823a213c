"""Integration fixtures: real servers started once per test session, and a few test doubles.

Real servers (sandbox/services.py): MariaDB, Redis, moto's S3; Prometheus from /usr/bin when it
is installed; the HeavyDB sandbox server (`sandbox.heavydb.testing`) when it exists.

Test doubles (in-test HTTP/SMTP servers, named *Double): the load-balancer admin API, the app's
/health, a webhook receiver, an SMTP server, and a "black hole" port that accepts connections
and never answers (for timeouts). They implement only the contracts the adapters rely on.
"""

from __future__ import annotations

import base64
import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sandbox.proc import LOOPBACK, Service, free_port, port_open, start_listening
from sandbox.services import ensure_mysql_accounts, start_mariadb, start_moto, start_redis
from tbs_emergency.config import Settings

APP_PASSWORD = "app-Secret-42"
RECOVERY_PASSWORD = "recovery-Secret-42"
DATABASE = "tbs_archive"
BUCKET = "tbs-dr-test"
LB_TOKEN = "lb-token-Secret-42"
HEAVYDB_PASSWORD = "HyperInteractive"


@pytest.fixture(scope="session")
def known() -> SimpleNamespace:
    """The names and secrets the fixtures use (tests check that secrets never leak)."""
    return SimpleNamespace(
        app_password=APP_PASSWORD,
        recovery_password=RECOVERY_PASSWORD,
        database=DATABASE,
        bucket=BUCKET,
        lb_token=LB_TOKEN,
        s3_secret="testing-Secret-42",
        smtp_password="smtp-Secret-42",
        heavydb_password=HEAVYDB_PASSWORD,
    )


# --------------------------------------------------------------------------------------------
# Real servers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def state_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


PROMETHEUS = "/usr/bin/prometheus"


def _start_mariadb(root: Path) -> Service:
    service = start_mariadb(root / "mariadb")
    ensure_mysql_accounts(
        service, DATABASE, "tbs_app", APP_PASSWORD, "tbs_recovery", RECOVERY_PASSWORD
    )
    return service


def _start_prometheus(root: Path) -> Service | None:
    """A real Prometheus scraping itself every second, or None when it is not installed."""
    if not Path(PROMETHEUS).exists():
        return None
    d = root / "prometheus"
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (d / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: self\n    static_configs:\n"
        f"      - targets: ['{LOOPBACK}:{port}']\n"
    )

    def ready() -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    return start_listening(
        "prometheus",
        [
            PROMETHEUS,
            f"--config.file={d / 'prometheus.yml'}",
            f"--storage.tsdb.path={d / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        port,
        d / "prometheus.log",
        ready=ready,
        timeout=60,
    )


@pytest.fixture(scope="session")
def servers(state_root: Path) -> Iterator[dict[str, Service | None]]:
    """MariaDB, Redis, moto and Prometheus, started concurrently (startup dominates the run)."""
    starters: dict[str, Any] = {
        "mariadb": _start_mariadb,
        "redis": lambda root: start_redis(root / "redis"),
        "moto": lambda root: start_moto(root / "moto"),
        "prometheus": _start_prometheus,
    }
    started: dict[str, Service | None] = {}
    with ThreadPoolExecutor(max_workers=len(starters)) as pool:
        futures = {name: pool.submit(fn, state_root) for name, fn in starters.items()}
        errors = []
        for name, future in futures.items():
            try:
                started[name] = future.result()
            except Exception as exc:
                errors.append(f"{name}: {exc}")
    try:
        if errors:
            pytest.fail("could not start test servers:\n" + "\n".join(errors))
        yield started
    finally:
        for service in started.values():
            if service is not None:
                service.stop()


@pytest.fixture(scope="session")
def mariadb(servers: dict[str, Service | None]) -> Service:
    assert servers["mariadb"] is not None
    return servers["mariadb"]


@pytest.fixture(scope="session")
def redis_server(servers: dict[str, Service | None]) -> Service:
    assert servers["redis"] is not None
    return servers["redis"]


@pytest.fixture(scope="session")
def moto(servers: dict[str, Service | None]) -> Service:
    assert servers["moto"] is not None
    return servers["moto"]


@pytest.fixture(scope="session")
def prometheus(servers: dict[str, Service | None]) -> Service | None:
    """None when Prometheus is not installed (the metrics tests then use a test double)."""
    return servers["prometheus"]


@pytest.fixture(scope="session")
def heavydb_server(state_root: Path) -> Iterator[Any]:
    """The sandbox HeavyDB server (an object with .host, .port, .stop())."""
    from sandbox.heavydb.testing import start_server

    server = start_server(state_root / "heavydb")
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# Test doubles
# --------------------------------------------------------------------------------------------


class _QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode(errors="replace")


class HttpDouble:
    """Test double: load-balancer admin API + app /health + webhook receiver, one server.

    - `GET /emergency/status`, `POST /emergency/redirect-blue`, `POST /emergency/switch`
      (Bearer token LB_TOKEN required when `require_token`), as the traffic contract says.
    - `GET /health` -> `health` (status `health_status`).
    - `POST /hooks/<name>` records (path, headers, json) in `hooks`; status `hook_status`.
    - `GET /slow` (and anything when `delay_s` is set) sleeps first, for timeout tests.
    """

    def __init__(self) -> None:
        self.active = "green"
        self.require_token = True
        self.health: dict[str, Any] = {"status": "ok", "checks": {"db": "ok"}}
        self.health_status = 200
        self.hooks: list[dict[str, Any]] = []
        self.hook_status = 200
        self.delay_s = 0.0
        double = self

        class Handler(_QuietHandler):
            def _authorised(self) -> bool:
                if not double.require_token:
                    return True
                if self.headers.get("Authorization") == f"Bearer {LB_TOKEN}":
                    return True
                self._json(401, {"error": "unauthorised"})
                return False

            def do_GET(self) -> None:
                time.sleep(double.delay_s)
                if self.path == "/emergency/status":
                    if self._authorised():
                        self._json(
                            200,
                            {"active": double.active, "backends": {"blue": {}, "green": {}}},
                        )
                elif self.path == "/health":
                    self._json(double.health_status, double.health)
                elif self.path == "/slow":
                    time.sleep(5)
                    self._json(200, {})
                else:
                    self._json(404, {"error": "no such path"})

            def do_POST(self) -> None:
                time.sleep(double.delay_s)
                body = self._body()
                if self.path.startswith("/hooks/"):
                    double.hooks.append(
                        {"path": self.path, "headers": dict(self.headers), "json": body}
                    )
                    self._json(double.hook_status, {"ok": True, "id": len(double.hooks)})
                    return
                if not self._authorised():
                    return
                previous = double.active
                if self.path == "/emergency/redirect-blue":
                    double.active = "blue"
                elif self.path == "/emergency/switch":
                    target = (body or {}).get("target") if isinstance(body, dict) else None
                    if target not in ("blue", "green"):
                        self._json(400, {"error": "target must be blue or green"})
                        return
                    double.active = target
                else:
                    self._json(404, {"error": "no such path"})
                    return
                self._json(
                    200,
                    {
                        "active": double.active,
                        "previous": previous,
                        "changed": previous != double.active,
                    },
                )

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        self.active = "green"
        self.require_token = True
        self.health = {"status": "ok", "checks": {"db": "ok"}}
        self.health_status = 200
        self.hooks.clear()
        self.hook_status = 200
        self.delay_s = 0.0

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def http_double_server() -> Iterator[HttpDouble]:
    double = HttpDouble()
    try:
        yield double
    finally:
        double.stop()


@pytest.fixture
def http_double(http_double_server: HttpDouble) -> HttpDouble:
    http_double_server.reset()
    return http_double_server


class SmtpDouble:
    """Test double: a minimal SMTP server (EHLO/HELO, AUTH PLAIN, MAIL, RCPT, DATA, NOOP, RSET,
    QUIT) that records each message. With `user`/`password` set, AUTH is checked and required.
    """

    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        self.user = user
        self.password = password
        self.messages: list[dict[str, Any]] = []
        double = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write((line + "\r\n").encode())

            def handle(self) -> None:
                self.reply("220 smtp-double ready")
                authed = double.user is None
                sender: str | None = None
                rcpts: list[str] = []
                while True:
                    raw = self.rfile.readline()
                    if not raw:
                        return
                    line = raw.decode(errors="replace").rstrip("\r\n")
                    cmd = line.split(" ", 1)[0].upper()
                    arg = line[len(cmd) :].strip()
                    if cmd == "EHLO":
                        self.reply("250-smtp-double")
                        self.reply("250 AUTH PLAIN")
                    elif cmd == "HELO":
                        self.reply("250 smtp-double")
                    elif cmd == "AUTH":
                        parts = arg.split()
                        token = parts[1] if len(parts) > 1 else ""
                        if not token:
                            self.reply("334 ")
                            token = self.rfile.readline().decode().strip()
                        try:
                            _, u, p = base64.b64decode(token).decode().split("\0")
                        except ValueError:
                            u = p = ""
                        if u == double.user and p == double.password:
                            authed = True
                            self.reply("235 2.7.0 Authentication successful")
                        else:
                            self.reply("535 5.7.8 Authentication credentials invalid")
                    elif cmd == "MAIL":
                        if not authed:
                            self.reply("530 5.7.0 Authentication required")
                            continue
                        sender = arg.split(":", 1)[1].strip().strip("<>").split()[0]
                        rcpts = []
                        self.reply("250 OK")
                    elif cmd == "RCPT":
                        addr = arg.split(":", 1)[1].strip().strip("<>")
                        if addr.startswith("nobody@"):
                            self.reply("550 5.1.1 no such user")
                        else:
                            rcpts.append(addr)
                            self.reply("250 OK")
                    elif cmd == "DATA":
                        self.reply("354 End data with <CR><LF>.<CR><LF>")
                        lines = []
                        while True:
                            data = self.rfile.readline()
                            if data in (b".\r\n", b".\n", b""):
                                break
                            lines.append(data[1:] if data.startswith(b"..") else data)
                        double.messages.append(
                            {"from": sender, "to": rcpts, "data": b"".join(lines).decode()}
                        )
                        self.reply("250 OK queued")
                    elif cmd in ("NOOP", "RSET"):
                        self.reply("250 OK")
                    elif cmd == "QUIT":
                        self.reply("221 Bye")
                        return
                    else:
                        self.reply("502 Command not implemented")

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server((LOOPBACK, 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def smtp_double() -> Iterator[SmtpDouble]:
    double = SmtpDouble(user="alerts", password="smtp-Secret-42")
    try:
        yield double
    finally:
        double.stop()


@pytest.fixture(scope="session")
def blackhole_port() -> Iterator[int]:
    """Test double: a port that accepts TCP connections (backlog) and never says a word."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((LOOPBACK, 0))
    sock.listen(64)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@pytest.fixture
def closed_port() -> int:
    """A port nobody listens on."""
    port = free_port()
    assert not port_open(LOOPBACK, port)
    return port


# --------------------------------------------------------------------------------------------
# Settings pointing at all of it
# --------------------------------------------------------------------------------------------


def make_settings(
    *,
    mysql_port: int,
    redis_url: str,
    moto_url: str,
    http_url: str,
    prometheus_url: str,
    smtp_port: int,
    heavydb_port: int = 6274,
    green_redis_url: str | None = None,
    green_mysql_database: str | None = None,
    **overrides: Any,
) -> Settings:
    def env(app_path: str, redis: str, database: str) -> dict[str, Any]:
        return {
            "app_url": http_url + app_path,
            "timeout_s": 2,
            "heavydb": {
                "host": LOOPBACK,
                "port": heavydb_port,
                "password": HEAVYDB_PASSWORD,
                "timeout_s": 5,
            },
            "mysql": {
                "host": LOOPBACK,
                "port": mysql_port,
                "user": "tbs_app",
                "password": APP_PASSWORD,
                "database": database,
                "recovery_user": "tbs_recovery",
                "timeout_s": 5,
            },
            "redis": {"url": redis, "timeout_s": 2},
        }

    data: dict[str, Any] = {
        "environments": {
            "blue": env("", redis_url, DATABASE),
            "green": env("", green_redis_url or redis_url, green_mysql_database or DATABASE),
        },
        "traffic": {"kind": "http", "url": http_url, "token": LB_TOKEN, "timeout_s": 2},
        "storage": {
            "bucket": BUCKET,
            "prefix": "tbs-emergency",
            "endpoint_url": moto_url,
            "access_key_id": "testing",
            "secret_access_key": "testing-Secret-42",
            "sse": "AES256",
            "timeout_s": 5,
            "multipart_threshold_mb": 5,
        },
        "metrics": {"prometheus_url": prometheus_url, "timeout_s": 3},
        "channels": {
            "oncall": {"kind": "webhook", "url": http_url + "/hooks/oncall", "timeout_s": 2},
            "email": {
                "kind": "smtp",
                "smtp_host": LOOPBACK,
                "smtp_port": smtp_port,
                "smtp_user": "alerts",
                "smtp_password": "smtp-Secret-42",
                "timeout_s": 2,
            },
        },
    }
    for key, value in overrides.items():
        data[key] = value
    return Settings(**data)


@pytest.fixture(scope="session")
def settings(
    mariadb: Service,
    redis_server: Service,
    moto: Service,
    prometheus: Service | None,
    http_double_server: HttpDouble,
    smtp_double: SmtpDouble,
) -> Settings:
    """Blue and green share MariaDB (one archive); each has its own Redis database number."""
    return make_settings(
        mysql_port=mariadb.port,
        redis_url=redis_server.url,
        green_redis_url=redis_server.url.rsplit("/", 1)[0] + "/1",
        moto_url=moto.url,
        http_url=http_double_server.url,
        prometheus_url=prometheus.url if prometheus else f"http://{LOOPBACK}:{free_port()}",
        smtp_port=smtp_double.port,
    )


def _root_sql(mariadb: Service, *statements: str) -> list[tuple[Any, ...]]:
    import pymysql

    con = pymysql.connect(
        unix_socket=mariadb.extra["socket"], user="root", password="", autocommit=True
    )
    try:
        rows: list[tuple[Any, ...]] = []
        with con.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
                rows = list(cur.fetchall())
        return rows
    finally:
        con.close()


@pytest.fixture
def root_sql(mariadb: Service) -> Any:
    """root_sql(*statements): run statements as MariaDB root over the socket; last rows."""
    return lambda *statements: _root_sql(mariadb, *statements)


@pytest.fixture(scope="session")
def settings_factory(
    mariadb: Service,
    redis_server: Service,
    moto: Service,
    prometheus: Service | None,
    http_double_server: HttpDouble,
    smtp_double: SmtpDouble,
) -> Any:
    """settings_factory(**changes): make_settings over the running servers, with changes."""

    def build(**changes: Any) -> Settings:
        args: dict[str, Any] = {
            "mysql_port": mariadb.port,
            "redis_url": redis_server.url,
            "green_redis_url": redis_server.url.rsplit("/", 1)[0] + "/1",
            "moto_url": moto.url,
            "http_url": http_double_server.url,
            "prometheus_url": prometheus.url if prometheus else f"http://{LOOPBACK}:{free_port()}",
            "smtp_port": smtp_double.port,
        }
        args.update(changes)
        return make_settings(**args)

    return build
