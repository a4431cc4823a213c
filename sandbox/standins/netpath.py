"""One environment's network path to its stores: `python -m sandbox.standins.netpath`.

The TCP proxies the environment's configuration points at (MySQL, and HeavyDB when it has one),
plus a small HTTP control API. It is its own process, not part of the app, because a real
network path does not go away when the application does: stopping the app (an `app-down` fault)
must not cut the watchdog's probes, the integrity sweep or a person with a mysql client off from
that environment's databases. Database faults live here:

- `POST /_faults {"kind": "db-down"|"db-slow", "magnitude", "duration", "db"}`: `db-down`
  closes the listener (connection refused) and aborts open connections; `db-slow` delays every
  reply by `magnitude` seconds; `db` limits it to `mysql` or `heavydb`; `duration` expires it.
- `DELETE /_faults[?kind=k]`, `GET /_faults` -> `{"env", "faults": [...], "proxies": {...}}`.
- `GET /health` (always 200 while the process runs: it reports, the proxies are the path) and
  `GET /metrics` (Prometheus text: `tbs_fault_active{env,kind}`, `tbs_netpath_up{env,db}`,
  `tbs_netpath_connections{env,db}`, ...).

The control port opens only once every proxy listens (uvicorn binds after the lifespan start-up),
so "port open" means "path ready". Faults live in this process: a restart clears them.

    python -m sandbox.standins.netpath --env green --port 9100 --mysql-port 9101 \
        --mysql-upstream 127.0.0.1:3306 --heavydb-port 9102 --heavydb-upstream 127.0.0.1:6274
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.standins import run_uvicorn
from sandbox.standins.faults import (
    DB_FAULT_KINDS,
    FaultBook,
    FaultSpecError,
    iso,
    validate_request,
)
from sandbox.standins.tcpproxy import TcpProxy

log = logging.getLogger("netpath")

# How often fault expiry is noticed: a `duration` ends within this much of its time.
_TICK_S = 0.2


@dataclass
class NetpathConfig:
    env: str
    host: str
    port: int
    mysql_port: int
    mysql_upstream: tuple[str, int]
    heavydb_port: int | None = None
    heavydb_upstream: tuple[str, int] | None = None


class Netpath:
    """The proxies of one environment and the database faults that act on them."""

    def __init__(self, cfg: NetpathConfig) -> None:
        self.cfg = cfg
        self.started = dt.datetime.now(dt.UTC)
        self.faults = FaultBook()
        self.proxies: dict[str, TcpProxy] = {
            "mysql": TcpProxy(f"{cfg.env}-mysql", cfg.host, cfg.mysql_port, *cfg.mysql_upstream)
        }
        if cfg.heavydb_upstream is not None and cfg.heavydb_port is not None:
            self.proxies["heavydb"] = TcpProxy(
                f"{cfg.env}-heavydb", cfg.host, cfg.heavydb_port, *cfg.heavydb_upstream
            )
        # apply() awaits (closing and re-binding listeners); the tick and a request must not
        # interleave their decisions.
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        for proxy in self.proxies.values():
            await proxy.start()

    async def stop(self) -> None:
        for proxy in self.proxies.values():
            await proxy.stop()

    async def apply(self) -> None:
        """Bring every proxy in line with the active faults (also ends expired ones)."""
        async with self._lock:
            faults = self.faults.active()
            down = faults.get("db-down")
            slow = faults.get("db-slow")
            for name, proxy in self.proxies.items():
                try:
                    await proxy.set_down(down is not None and down.db in (None, name))
                except OSError as exc:
                    # The port was taken meanwhile: say so and try again on the next tick.
                    log.error("%s: cannot listen again: %s", proxy.name, exc)
                proxy.delay = (slow.magnitude or 0.0) if slow and slow.db in (None, name) else 0.0

    def stats(self) -> dict[str, Any]:
        return {name: proxy.stats() for name, proxy in self.proxies.items()}


def _metrics_text(path: Netpath) -> str:
    env = path.cfg.env
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], Any]]):
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{v}"' for k, v in {"env": env, **labels}.items())
            lines.append(f"{name}{{{text}}} {value}")

    faults = path.faults.active()
    proxies = path.proxies
    metric(
        "tbs_fault_active",
        "gauge",
        "1 while an injected fault of this kind is active on the network path.",
        [({"kind": k}, int(k in faults)) for k in DB_FAULT_KINDS],
    )
    metric(
        "tbs_netpath_up",
        "gauge",
        "1 while the path to this database listens (0 during db-down).",
        [({"db": k}, int(not p.down)) for k, p in proxies.items()],
    )
    metric(
        "tbs_netpath_connections",
        "gauge",
        "Client connections open through the path right now.",
        [({"db": k}, p.active_connections) for k, p in proxies.items()],
    )
    metric(
        "tbs_netpath_connections_total",
        "counter",
        "Client connections forwarded to the database since start.",
        [({"db": k}, p.connections_total) for k, p in proxies.items()],
    )
    metric(
        "tbs_netpath_upstream_errors_total",
        "counter",
        "Client connections dropped because the database server could not be reached.",
        [({"db": k}, p.upstream_errors_total) for k, p in proxies.items()],
    )
    metric(
        "tbs_netpath_delay_seconds",
        "gauge",
        "Latency added to every reply from this database (db-slow).",
        [({"db": k}, p.delay) for k, p in proxies.items()],
    )
    return "\n".join(lines) + "\n"


def create_app(cfg: NetpathConfig) -> Starlette:
    path = Netpath(cfg)

    def bad(message: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": message, "env": cfg.env}, status_code=status)

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            raw = await request.body()
            try:
                data = json.loads(raw) if raw.strip() else {}
            except ValueError:
                return bad("body is not valid JSON")
            try:
                spec = validate_request(data, DB_FAULT_KINDS, "network path")
            except FaultSpecError as exc:
                return bad(str(exc))
            fault = path.faults.add(spec)
            await path.apply()
            log.info("fault injected: %s", spec)
            return JSONResponse(
                {
                    "env": cfg.env,
                    "fault": fault.as_dict(),
                    "faults": path.faults.as_list(),
                    "proxies": path.stats(),
                }
            )
        if request.method == "DELETE":
            cleared = path.faults.clear(request.query_params.get("kind"))
            await path.apply()
            if cleared:
                log.info("faults cleared: %s", cleared)
            return JSONResponse(
                {
                    "env": cfg.env,
                    "cleared": cleared,
                    "faults": path.faults.as_list(),
                    "proxies": path.stats(),
                }
            )
        return JSONResponse(
            {"env": cfg.env, "faults": path.faults.as_list(), "proxies": path.stats()}
        )

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "env": cfg.env,
                "faults": sorted(path.faults.active()),
                "proxies": path.stats(),
                "started_at": iso(path.started),
            }
        )

    async def metrics(request: Request) -> Response:
        return Response(_metrics_text(path), media_type="text/plain; version=0.0.4")

    async def tick() -> None:
        while True:
            try:
                await path.apply()
            except Exception:
                log.exception("applying faults failed")
            await asyncio.sleep(_TICK_S)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # Ready means ready: uvicorn binds the control port only after this returns.
        await path.start()
        task = asyncio.create_task(tick())
        log.info(
            "%s network path up: %s",
            cfg.env,
            {
                k: f"{p.listen_port} -> {p.upstream_host}:{p.upstream_port}"
                for k, p in path.proxies.items()
            },
        )
        try:
            yield
        finally:
            task.cancel()
            await path.stop()

    app = Starlette(
        routes=[
            Route("/_faults", faults, methods=["GET", "POST", "DELETE"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.netpath = path
    return app


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def main() -> None:
    p = argparse.ArgumentParser(description="TBS network path stand-in (one environment)")
    p.add_argument("--env", choices=("blue", "green"), required=True)
    p.add_argument("--host", default="127.0.0.1", help="where the control API and proxies listen")
    p.add_argument("--port", type=int, required=True, help="the control API's port")
    p.add_argument("--mysql-port", type=int, required=True, help="the MySQL proxy's listen port")
    p.add_argument("--mysql-upstream", type=_hostport, required=True, help="MariaDB, HOST:PORT")
    p.add_argument("--heavydb-port", type=int, help="the HeavyDB proxy's listen port")
    p.add_argument("--heavydb-upstream", type=_hostport, help="the HeavyDB server, HOST:PORT")
    a = p.parse_args()
    if (a.heavydb_port is None) != (a.heavydb_upstream is None):
        p.error("--heavydb-port and --heavydb-upstream go together")
    cfg = NetpathConfig(
        env=a.env,
        host=a.host,
        port=a.port,
        mysql_port=a.mysql_port,
        mysql_upstream=a.mysql_upstream,
        heavydb_port=a.heavydb_port,
        heavydb_upstream=a.heavydb_upstream,
    )
    run_uvicorn(create_app(cfg), cfg.host, cfg.port)


if __name__ == "__main__":
    main()
