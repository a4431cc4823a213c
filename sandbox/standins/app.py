"""The TBS application stand-in: one process per environment (`--env blue|green`).

What is real:
- a trickle of real trades (`--ingest-batch` rows every `--ingest-interval` s, default 20 per
  second) written to both databases of the environment (MySQL with pymysql every interval,
  HeavyDB through the `heavydb` client's Arrow load call in micro-batches every
  `--heavydb-flush-interval` s, default 3), through this environment's database proxies; a batch
  that cannot be written
  stays pending and is retried (`tbs_ingest_pending_rows`), so the two databases converge once a
  fault clears. Counted in `tbs_rows_written_total{db}`.
- `POST /login` against the `users` table (pbkdf2 hashes), Redis sessions `session:<id>`,
  `GET /api/me`, `GET /api/trades` (HeavyDB), `GET /api/strategies/<id>/results` (MySQL),
  `POST /upload` (csv or json, parsed), `GET /` (a small page), `GET /health` (live probes).
- two TCP proxies (`--mysql-proxy-port`, `--heavydb-proxy-port`) in front of the shared database
  servers; the environment's configuration points at them, so `db-down` / `db-slow` faults are
  seen by every client of this environment and by no client of the other.

What is simulated (documented in docs/sandbox.md):
- `tbs_rows_ingested_total` is the platform's processing throughput: a counter advancing at
  `--nominal-rows-per-s` (default 40000, a little above the runbook's 37,303 rows/s baseline) with
  +-2% jitter, scaled down by a `throughput` fault. It is NOT the trickle above.
- request traffic: `--sim-requests-per-s` (default 50) simulated requests per second are added to
  `tbs_http_requests_total`, failing at the `errors` fault's rate (0.1% otherwise); real requests
  served are counted too.
- CPU, memory and disk usage gauges: quiet values around 20-40%, or the fault's value.

Faults: `POST /_faults` `{"kind", "magnitude", "duration", "db"}`, `GET /_faults`,
`DELETE /_faults[?kind=k]`; see `sandbox.standins.faults`. Ingestion can be paused with
`POST /_ingest {"enabled": false}` (`GET /_ingest` shows pending batches).

The login lockdown flag is the Redis key `tbs:lockdown` (any value): while it exists new logins
get 403 and existing sessions keep working. Every login attempt is appended to the Redis list
`tbs:audit:logins` (newest first, capped at 10000).

User administration for the security procedures: `GET /_admin/users/<name>` and
`POST /_admin/users/<name>` `{"active": bool}` (the `users.active` flag: a disabled user cannot
log in). The load balancer stand-in does not forward `/_admin/`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import email.parser
import email.policy
import io
import json
import logging
import os
import queue
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.seed import TRADE_COLUMNS, arrow_table, live_trades, verify_password
from sandbox.standins import run_uvicorn
from sandbox.standins.faults import FaultSpecError, validate_fault
from sandbox.standins.tcpproxy import TcpProxy

log = logging.getLogger("app")

SESSION_PREFIX = "session:"
SESSION_TTL_S = 3600
LOCKDOWN_KEY = "tbs:lockdown"
AUDIT_KEY = "tbs:audit:logins"
AUDIT_KEPT = 10_000
BASELINE_ERROR_PERCENT = 0.1
SLOW_MS = 1000.0
MAX_PENDING_BATCHES = 3600
_INTERNAL_PREFIXES = ("/metrics", "/_")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _jsonable(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    if hasattr(v, "item"):
        return v.item()
    return v


# ------------------------------------------------------------------------------------------------
# Configuration and database access
# ------------------------------------------------------------------------------------------------


@dataclass
class AppConfig:
    env: str
    version: str
    host: str
    port: int
    mysql_upstream: tuple[str, int]
    mysql_proxy_port: int
    mysql_user: str
    mysql_password: str
    mysql_database: str
    heavydb_upstream: tuple[str, int] | None
    heavydb_proxy_port: int
    heavydb_user: str
    heavydb_password: str
    heavydb_database: str
    redis_url: str
    nominal_rows_per_s: float = 40_000.0
    sim_requests_per_s: float = 50.0
    ingest_batch: int = 20
    ingest_interval: float = 1.0
    heavydb_flush_interval: float = 3.0
    probe_interval: float = 2.0
    probe_timeout: float = 5.0
    query_timeout: float = 15.0


class Pool:
    """A few blocking connections, each used by one thread at a time; broken ones are dropped."""

    def __init__(self, connect: Callable[[], Any], close: Callable[[Any], None], size: int = 4):
        self._connect = connect
        self._close = close
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    def run(self, fn: Callable[[Any], Any]) -> Any:
        """fn(connection); a pooled connection that fails is replaced by a fresh one, once.

        (A db-down fault drops every open connection: the first use after it must not fail.)
        """
        with self._slots:
            try:
                con, fresh = self._idle.get_nowait(), False
            except queue.Empty:
                con, fresh = self._connect(), True
            try:
                result = fn(con)
            except Exception:
                with contextlib.suppress(Exception):
                    self._close(con)
                if fresh:
                    raise
                con = self._connect()
                try:
                    result = fn(con)
                except BaseException:
                    with contextlib.suppress(Exception):
                        self._close(con)
                    raise
            except BaseException:
                with contextlib.suppress(Exception):
                    self._close(con)
                raise
            self._idle.put(con)
            return result

    def clear(self) -> None:
        while True:
            try:
                con = self._idle.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                self._close(con)


class Databases:
    """Blocking access to this environment's MySQL and HeavyDB, always through its proxies."""

    def __init__(self, cfg: AppConfig) -> None:
        self.cfg = cfg
        self.mysql = Pool(self.connect_mysql, lambda c: c.close())
        self.heavydb = Pool(self.connect_heavydb, _close_heavydb) if cfg.heavydb_upstream else None

    def connect_mysql(self, timeout: float | None = None) -> Any:
        import pymysql

        t = timeout or self.cfg.query_timeout
        return pymysql.connect(
            host="127.0.0.1",
            port=self.cfg.mysql_proxy_port,
            user=self.cfg.mysql_user,
            password=self.cfg.mysql_password,
            database=self.cfg.mysql_database,
            connect_timeout=min(t, 10),
            read_timeout=t,
            write_timeout=t,
            autocommit=True,
        )

    def connect_heavydb(self, timeout: float | None = None) -> Any:
        import heavydb

        con = heavydb.connect(
            user=self.cfg.heavydb_user,
            password=self.cfg.heavydb_password,
            host="127.0.0.1",
            port=self.cfg.heavydb_proxy_port,
            dbname=self.cfg.heavydb_database,
        )
        # pyheavydb offers no timeout argument; its Thrift socket takes one after connecting.
        with contextlib.suppress(Exception):
            con._socket.setTimeout((timeout or self.cfg.query_timeout) * 1000)
        return con

    # probes: a fresh connection and SELECT 1, like the watchdog's
    def probe_mysql(self) -> None:
        con = self.connect_mysql(self.cfg.probe_timeout)
        try:
            with con.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchall()
        finally:
            con.close()

    def probe_heavydb(self) -> None:
        con = self.connect_heavydb(self.cfg.probe_timeout)
        try:
            cur = con.cursor()
            cur.execute("SELECT 1")
            cur.fetchall()
        finally:
            _close_heavydb(con)


def _import_drivers(heavydb: bool) -> None:
    import pymysql  # noqa: F401

    if heavydb:
        import heavydb as _  # noqa: F401
        import pyarrow  # noqa: F401


def _close_heavydb(con: Any) -> None:
    with contextlib.suppress(Exception):
        con.close()
    # close() raises on a dead socket before marking itself closed (then __del__ tries again and
    # prints a traceback), and it leaves the socket to the garbage collector: finish both here.
    with contextlib.suppress(Exception):
        con._closed = 1
        con._transport.close()


def _mysql_insert(con: Any, rows: list[tuple[Any, ...]]) -> None:
    cols = ", ".join(TRADE_COLUMNS)
    marks = ", ".join(["%s"] * len(TRADE_COLUMNS))
    with con.cursor() as cur:
        cur.executemany(f"INSERT IGNORE INTO trades ({cols}) VALUES ({marks})", rows)


def _heavydb_insert(con: Any, rows: list[tuple[Any, ...]]) -> None:
    """Append rows through HeavyDB's Arrow load call (what heavyai's load_table_arrow sends).

    The SQL INSERT path costs the HeavyDB stand-in ~2 ms of CPU per row; this one a few ms per
    call whatever its size."""
    import pyarrow as pa

    columns = {name: [r[i] for r in rows] for i, name in enumerate(TRADE_COLUMNS)}
    table = arrow_table("trades", columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    con._client.load_table_binary_arrow(con._session, "trades", sink.getvalue().to_pybytes(), [])


def _count_ids(con: Any, lo: int, hi: int, heavy: bool) -> int:
    sql = f"SELECT COUNT(*) FROM trades WHERE trade_id BETWEEN {int(lo)} AND {int(hi)}"
    if heavy:
        cur = con.cursor()
        cur.execute(sql)
        return int(cur.fetchall()[0][0])
    with con.cursor() as cur:
        cur.execute(sql)
        return int(cur.fetchall()[0][0])


def _delete_ids(con: Any, lo: int, hi: int, heavy: bool) -> None:
    sql = f"DELETE FROM trades WHERE trade_id BETWEEN {int(lo)} AND {int(hi)}"
    if heavy:
        con.cursor().execute(sql)
    else:
        with con.cursor() as cur:
            cur.execute(sql)


# ------------------------------------------------------------------------------------------------
# State
# ------------------------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    magnitude: float | None
    duration: float | None
    db: str | None
    started_at: dt.datetime
    expires_mono: float | None

    def as_dict(self) -> dict[str, Any]:
        remaining = None
        expires_at = None
        if self.expires_mono is not None:
            remaining = max(0.0, self.expires_mono - time.monotonic())
            expires_at = _iso(_utcnow() + dt.timedelta(seconds=remaining))
        return {
            "kind": self.kind,
            "magnitude": self.magnitude,
            "duration": self.duration,
            "db": self.db,
            "started_at": _iso(self.started_at),
            "expires_at": expires_at,
            "remaining_s": None if remaining is None else round(remaining, 3),
        }


@dataclass
class Batch:
    rows: list[tuple[Any, ...]]
    attempted: bool = False


@dataclass
class Check:
    ok: bool = False
    latency_ms: float | None = None
    detail: str = "not probed yet"
    at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "latency_ms": self.latency_ms, "detail": self.detail, "at": self.at}


@dataclass
class Counters:
    rows_ingested: float = 0.0
    rows_written: dict[str, int] = field(default_factory=lambda: {"mysql": 0, "heavydb": 0})
    rows_dropped: dict[str, int] = field(default_factory=lambda: {"mysql": 0, "heavydb": 0})
    write_failures: dict[str, int] = field(default_factory=lambda: {"mysql": 0, "heavydb": 0})
    sim_requests: float = 0.0
    sim_errors: float = 0.0
    real_requests: int = 0
    real_errors: int = 0
    logins: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0, "denied": 0})
    uploads_rows: int = 0


class AppState:
    def __init__(self, cfg: AppConfig) -> None:
        self.cfg = cfg
        self.started = _utcnow()
        self.started_mono = time.monotonic()
        self.rng = random.Random()
        self.db = Databases(cfg)
        self.faults: dict[str, Fault] = {}
        self.counters = Counters()
        self.checks = {"mysql": Check(), "heavydb": Check(), "redis": Check()}
        if cfg.heavydb_upstream is None:
            self.checks["heavydb"] = Check(ok=False, detail="heavydb not configured")
        self.active_sessions = 0
        self.pending: dict[str, deque[Batch]] = {"mysql": deque()}
        if cfg.heavydb_upstream is not None:
            self.pending["heavydb"] = deque()
        self.ingest_enabled = True
        self.jitter = 1.0
        self.resource = {"cpu": 25.0, "memory": 35.0, "disk": 30.0}
        self.last_tick = time.monotonic()
        self.proxies: dict[str, TcpProxy] = {}
        self.probe_threads: dict[str, asyncio.Future[Any]] = {}
        self.redis: Any = None

    # faults ------------------------------------------------------------------------------------
    def active_faults(self) -> dict[str, Fault]:
        now = time.monotonic()
        for kind, f in list(self.faults.items()):
            if f.expires_mono is not None and f.expires_mono <= now:
                del self.faults[kind]
                log.info("fault %s expired", kind)
        return self.faults

    def fault_value(self, kind: str) -> float | None:
        f = self.active_faults().get(kind)
        return None if f is None else f.magnitude

    async def apply_faults(self) -> None:
        faults = self.active_faults()
        for name, proxy in self.proxies.items():
            down = faults.get("db-down")
            slow = faults.get("db-slow")
            await proxy.set_down(down is not None and down.db in (None, name))
            proxy.delay = (slow.magnitude or 0.0) if slow and slow.db in (None, name) else 0.0

    # simulated signals ---------------------------------------------------------------------------
    def advance(self) -> None:
        now = time.monotonic()
        dt_s, self.last_tick = now - self.last_tick, now
        if dt_s <= 0:
            return
        lost = self.fault_value("throughput") or 0.0
        self.counters.rows_ingested += self.cfg.nominal_rows_per_s * (1 - lost) * self.jitter * dt_s
        requests = self.cfg.sim_requests_per_s * dt_s
        rate = self.fault_value("errors")
        self.counters.sim_requests += requests
        self.counters.sim_errors += (
            requests * (BASELINE_ERROR_PERCENT if rate is None else rate) / 100
        )

    def wander(self) -> None:
        self.jitter = 1 + self.rng.uniform(-0.02, 0.02)
        for key, (low, high) in {"cpu": (18, 40), "memory": (30, 40), "disk": (28, 33)}.items():
            value = self.resource[key] + self.rng.uniform(-1.5, 1.5)
            self.resource[key] = min(high, max(low, value))

    def usage(self, kind: str) -> float:
        value = self.fault_value(kind)
        return round(self.resource[kind] if value is None else value, 2)


# ------------------------------------------------------------------------------------------------
# Background loops
# ------------------------------------------------------------------------------------------------


async def tick_loop(state: AppState) -> None:
    n = 0
    while True:
        try:
            await state.apply_faults()
            state.advance()
            if n % 4 == 0:
                state.wander()
        except Exception:
            log.exception("tick failed")
        n += 1
        await asyncio.sleep(0.5)


async def ingest_loop(state: AppState) -> None:
    cfg = state.cfg
    last_flush = {name: 0.0 for name in state.pending}
    every = {"mysql": cfg.ingest_interval, "heavydb": cfg.heavydb_flush_interval}
    while True:
        started = time.monotonic()
        try:
            if state.ingest_enabled:
                batch_rows = live_trades(cfg.env, _utcnow(), cfg.ingest_batch, state.rng)
                for name, pending in state.pending.items():
                    pending.append(Batch(list(batch_rows)))
                    while len(pending) > MAX_PENDING_BATCHES:
                        dropped = pending.popleft()
                        state.counters.rows_dropped[name] += len(dropped.rows)
            due = [n for n in state.pending if started - last_flush[n] >= every[n] - 0.05]
            for name in due:
                last_flush[name] = started
            await asyncio.gather(*(flush(state, name) for name in due))
        except Exception:
            log.exception("ingest failed")
        await asyncio.sleep(max(0.05, cfg.ingest_interval - (time.monotonic() - started)))


async def flush(state: AppState, name: str, max_rows: int = 1000, max_writes: int = 5) -> None:
    """Write pending batches to one database, oldest first, several batches per statement
    (a statement costs the HeavyDB stand-in far more than a row), stopping at a failure."""
    pending = state.pending[name]
    pool = state.db.mysql if name == "mysql" else state.db.heavydb
    assert pool is not None
    heavy = name == "heavydb"
    insert = _heavydb_insert if heavy else _mysql_insert
    for _ in range(max_writes):
        group: list[Batch] = []
        for batch in pending:
            if group and sum(len(b.rows) for b in group) + len(batch.rows) > max_rows:
                break
            group.append(batch)
        if not group:
            return
        rows = [r for b in group for r in b.rows]
        retry = any(b.attempted for b in group)

        def write(
            con: Any, group: list[Batch] = group, rows: list[Any] = rows, retry: bool = retry
        ) -> None:
            if retry:
                # A write whose answer was lost may have landed: look before writing again.
                # (Ids rise with time and are unique per environment, so the range is exact.)
                lo, hi = rows[0][0], rows[-1][0]
                have = _count_ids(con, lo, hi, heavy)
                if have == len(rows):
                    return
                if have:
                    _delete_ids(con, lo, hi, heavy)
            for b in group:
                b.attempted = True
            insert(con, rows)

        try:
            await asyncio.to_thread(pool.run, write)
        except Exception as exc:
            state.counters.write_failures[name] += 1
            log.debug("%s write failed: %s", name, exc)
            return
        for _ in group:
            pending.popleft()
        state.counters.rows_written[name] += len(rows)


async def probe(state: AppState, name: str, *, fresh: bool = True) -> Check:
    """Check one dependency. fresh: a new connection and SELECT 1 (like the watchdog); else a
    SELECT 1 on a pooled connection (the cheap background probe behind `tbs_db_up`)."""
    started = time.monotonic()
    timeout = state.cfg.probe_timeout
    try:
        if name == "redis":
            await asyncio.wait_for(state.redis.ping(), timeout)
        elif name == "heavydb" and state.db.heavydb is None:
            return Check(ok=False, detail="heavydb not configured", at=_iso(_utcnow()))
        else:
            if fresh:
                call = state.db.probe_mysql if name == "mysql" else state.db.probe_heavydb
            else:
                pool = state.db.mysql if name == "mysql" else state.db.heavydb
                assert pool is not None
                call = partial(pool.run, _select_one_mysql if name == "mysql" else _select_one)
            thread = asyncio.ensure_future(asyncio.to_thread(call))
            if not fresh:
                state.probe_threads[name] = thread
            # shield: on timeout the thread finishes on its own; the loop will not pile up more.
            await asyncio.wait_for(asyncio.shield(thread), timeout)
    except TimeoutError:
        return Check(
            ok=False,
            latency_ms=round((time.monotonic() - started) * 1000, 1),
            detail=f"timed out after {timeout:g}s",
            at=_iso(_utcnow()),
        )
    except Exception as exc:
        return Check(
            ok=False,
            latency_ms=round((time.monotonic() - started) * 1000, 1),
            detail=f"{type(exc).__name__}: {str(exc)[:200]}",
            at=_iso(_utcnow()),
        )
    latency = round((time.monotonic() - started) * 1000, 1)
    detail = "ok" if latency < SLOW_MS else f"slow ({latency:.0f} ms)"
    return Check(ok=True, latency_ms=latency, detail=detail, at=_iso(_utcnow()))


def _select_one_mysql(con: Any) -> None:
    with con.cursor() as cur:
        cur.execute("SELECT 1")
        cur.fetchall()


def _select_one(con: Any) -> None:
    cur = con.cursor()
    cur.execute("SELECT 1")
    cur.fetchall()


async def probe_all(state: AppState, *, fresh: bool = True) -> dict[str, Check]:
    names = list(state.checks)
    if not fresh:
        # A background probe still waiting on a slow database keeps its last result.
        busy = {n for n, t in state.probe_threads.items() if not t.done()}
        names = [n for n in names if n not in busy]
    results = await asyncio.gather(*(probe(state, n, fresh=fresh) for n in names))
    for name, check in zip(names, results, strict=True):
        state.checks[name] = check
    return dict(state.checks)


async def probe_loop(state: AppState) -> None:
    while True:
        try:
            await probe_all(state, fresh=False)
        except Exception:
            log.exception("probe failed")
        if state.checks["redis"].ok:
            try:
                state.active_sessions = await count_sessions(state)
            except Exception as exc:
                log.debug("counting sessions failed: %s", exc)
        await asyncio.sleep(state.cfg.probe_interval)


async def count_sessions(state: AppState) -> int:
    n = 0
    async for _ in state.redis.scan_iter(match=SESSION_PREFIX + "*", count=1000):
        n += 1
    return n


# ------------------------------------------------------------------------------------------------
# HTTP
# ------------------------------------------------------------------------------------------------


class RequestAccounting:
    """Counts real requests and fails them at the `errors` fault's rate (not internal paths)."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_INTERNAL_PREFIXES):
            await self.app(scope, receive, send)
            return
        counters = self.state.counters
        counters.real_requests += 1
        rate = self.state.fault_value("errors")
        if rate and self.state.rng.random() * 100 < rate:
            counters.real_errors += 1
            response = JSONResponse(
                {"error": "injected error", "env": self.state.cfg.env}, status_code=500
            )
            await response(scope, receive, send)
            return
        status: list[int] = []

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-tbs-env", self.state.cfg.env.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            counters.real_errors += 1
            raise
        if status and status[0] >= 500:
            counters.real_errors += 1


def _metrics_text(state: AppState) -> str:
    state.advance()
    env = state.cfg.env
    c = state.counters
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], Any]]):
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            all_labels = {"env": env, **labels}
            text = ",".join(f'{k}="{v}"' for k, v in all_labels.items())
            lines.append(f"{name}{{{text}}} {value}")

    metric(
        "tbs_rows_ingested_total",
        "counter",
        "Platform processing throughput in rows (SIMULATED at --nominal-rows-per-s).",
        [({}, int(c.rows_ingested))],
    )
    metric(
        "tbs_rows_written_total",
        "counter",
        "Rows the stand-in really wrote, per database.",
        [({"db": k}, v) for k, v in c.rows_written.items()],
    )
    metric(
        "tbs_rows_dropped_total",
        "counter",
        "Rows given up after too long pending, per database.",
        [({"db": k}, v) for k, v in c.rows_dropped.items()],
    )
    metric(
        "tbs_db_write_failures_total",
        "counter",
        "Failed batch writes, per database.",
        [({"db": k}, v) for k, v in c.write_failures.items()],
    )
    metric(
        "tbs_ingest_pending_rows",
        "gauge",
        "Rows waiting to be written, per database.",
        [({"db": k}, sum(len(b.rows) for b in q)) for k, q in state.pending.items()],
    )
    metric(
        "tbs_http_requests_total",
        "counter",
        "HTTP requests (simulated plus real).",
        [({}, int(c.sim_requests) + c.real_requests)],
    )
    metric(
        "tbs_http_errors_total",
        "counter",
        "HTTP requests that failed (5xx).",
        [({}, int(c.sim_errors) + c.real_errors)],
    )
    metric("tbs_cpu_usage_percent", "gauge", "CPU usage (simulated).", [({}, state.usage("cpu"))])
    metric(
        "tbs_memory_usage_percent",
        "gauge",
        "Memory usage (simulated).",
        [({}, state.usage("memory"))],
    )
    metric(
        "tbs_disk_usage_percent", "gauge", "Disk usage (simulated).", [({}, state.usage("disk"))]
    )
    metric(
        "tbs_active_sessions",
        "gauge",
        "Redis keys session:* (shared by both environments).",
        [({}, state.active_sessions)],
    )
    metric(
        "tbs_db_up",
        "gauge",
        "1 if the last probe through this environment's proxy worked.",
        [({"db": k}, int(state.checks[k].ok)) for k in ("mysql", "heavydb")],
    )
    metric(
        "tbs_db_probe_latency_seconds",
        "gauge",
        "Latency of the last database probe.",
        [({"db": k}, (state.checks[k].latency_ms or 0) / 1000) for k in ("mysql", "heavydb")],
    )
    metric(
        "tbs_logins_total",
        "counter",
        "Login attempts by result.",
        [({"result": k}, v) for k, v in c.logins.items()],
    )
    faults = state.active_faults()
    metric(
        "tbs_fault_active",
        "gauge",
        "1 while an injected fault of this kind is active.",
        [
            ({"kind": k}, int(k in faults))
            for k in ("throughput", "errors", "cpu", "memory", "disk", "db-down", "db-slow")
        ],
    )
    metric(
        "tbs_app_info", "gauge", "The stand-in's version.", [({"version": state.cfg.version}, 1)]
    )
    # The instant the counters above were brought up to date: exact rates without Prometheus.
    metric(
        "tbs_app_uptime_seconds",
        "gauge",
        "Seconds since the stand-in started, as of this scrape's counters.",
        [({}, round(state.last_tick - state.started_mono, 6))],
    )
    return "\n".join(lines) + "\n"


def create_app(cfg: AppConfig) -> Starlette:
    state = AppState(cfg)

    async def body_json(request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise ValueError("body is not valid JSON") from None

    def bad(message: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": message, "env": cfg.env}, status_code=status)

    async def index(request: Request) -> Response:
        return HTMLResponse(
            "<!doctype html><html><head><title>TBS</title></head><body>"
            f"<h1>TBS strategy platform</h1><p id='env'>environment: {cfg.env}</p>"
            f"<p id='version'>version {cfg.version}</p>"
            "<ul><li><a href='/api/trades?limit=10'>recent trades</a></li>"
            "<li><a href='/health'>health</a></li></ul></body></html>"
        )

    async def health(request: Request) -> Response:
        checks = await probe_all(state)
        db_ok = [checks["mysql"].ok]
        if cfg.heavydb_upstream is not None:
            db_ok.append(checks["heavydb"].ok)
        slow = any(c.ok and (c.latency_ms or 0) >= SLOW_MS for c in checks.values())
        if not any(db_ok):
            status = "down"
        elif not all(db_ok) or not checks["redis"].ok or slow:
            status = "degraded"
        else:
            status = "ok"
        return JSONResponse(
            {
                "status": status,
                "env": cfg.env,
                "version": cfg.version,
                "checks": {k: v.as_dict() for k, v in checks.items()},
                "faults": sorted(state.active_faults()),
                "started_at": _iso(state.started),
            },
            status_code=200 if status != "down" else 503,
        )

    async def metrics(request: Request) -> Response:
        return Response(_metrics_text(state), media_type="text/plain; version=0.0.4")

    async def login(request: Request) -> Response:
        try:
            data = await body_json(request)
        except ValueError as exc:
            return bad(str(exc))
        if not isinstance(data, dict):
            return bad("body must be a JSON object")
        username = str(data.get("username") or data.get("user") or "")
        password = str(data.get("password") or "")
        if not username or not password:
            return bad("need username and password")
        remote = request.client.host if request.client else ""

        async def audit(ok: bool, reason: str) -> None:
            entry = {
                "at": _iso(_utcnow()),
                "user": username,
                "env": cfg.env,
                "ok": ok,
                "reason": reason,
                "remote": remote,
            }
            with contextlib.suppress(Exception):
                await state.redis.lpush(AUDIT_KEY, json.dumps(entry))
                await state.redis.ltrim(AUDIT_KEY, 0, AUDIT_KEPT - 1)

        try:
            locked = await state.redis.exists(LOCKDOWN_KEY)
        except Exception as exc:
            return bad(f"session store unavailable: {type(exc).__name__}", 503)
        if locked:
            state.counters.logins["denied"] += 1
            await audit(False, "lockdown")
            return bad("new logins are disabled (emergency lockdown)", 403)

        def lookup(con: Any) -> Any:
            with con.cursor() as cur:
                cur.execute(
                    "SELECT user_id, password_hash, role, active FROM users WHERE username = %s",
                    (username,),
                )
                return cur.fetchone()

        try:
            row = await asyncio.to_thread(state.db.mysql.run, lookup)
        except Exception as exc:
            return bad(f"user database unavailable: {type(exc).__name__}", 503)
        if row is None or not verify_password(password, row[1]):
            state.counters.logins["failed"] += 1
            await audit(False, "bad credentials")
            return bad("invalid username or password", 401)
        if not row[3]:
            state.counters.logins["denied"] += 1
            await audit(False, "account disabled")
            return bad("account disabled", 403)
        session_id = secrets.token_urlsafe(24)
        session = {
            "user": username,
            "user_id": int(row[0]),
            "role": row[2],
            "env": cfg.env,
            "created_at": _iso(_utcnow()),
        }
        await state.redis.set(SESSION_PREFIX + session_id, json.dumps(session), ex=SESSION_TTL_S)
        state.counters.logins["ok"] += 1
        await audit(True, "ok")
        return JSONResponse({"session_id": session_id, **session})

    async def admin_user(request: Request) -> Response:
        """`GET|POST /_admin/users/<name>`: read or set an account's `active` flag (the
        security procedures' "disable the user in the app")."""
        username = request.path_params["username"]
        active: bool | None = None
        if request.method == "POST":
            try:
                data = await body_json(request)
            except ValueError as exc:
                return bad(str(exc))
            if not isinstance(data, dict) or not isinstance(data.get("active"), bool):
                return bad('body must be {"active": true|false}')
            active = data["active"]

        def change(con: Any) -> Any:
            with con.cursor() as cur:
                cur.execute(
                    "SELECT user_id, role, active FROM users WHERE username = %s", (username,)
                )
                row = cur.fetchone()
                if row is None or active is None or bool(row[2]) == active:
                    return row, False
                cur.execute(
                    "UPDATE users SET active = %s WHERE username = %s", (int(active), username)
                )
                con.commit()
                return row, True

        try:
            row, changed = await asyncio.to_thread(state.db.mysql.run, change)
        except Exception as exc:
            return bad(f"user database unavailable: {type(exc).__name__}: {exc}", 503)
        if row is None:
            return bad(f"no user {username!r}", 404)
        previous = bool(row[2])
        return JSONResponse(
            {
                "user": username,
                "user_id": int(row[0]),
                "role": row[1],
                "active": previous if active is None else active,
                "previous": previous,
                "changed": changed,
            }
        )

    async def me(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        session_id = request.headers.get("x-session-id") or (
            auth[7:].strip() if auth.startswith("Bearer ") else ""
        )
        if not session_id:
            return bad("no session (send X-Session-Id or Authorization: Bearer)", 401)
        raw = await state.redis.get(SESSION_PREFIX + session_id)
        if raw is None:
            return bad("session unknown or expired", 401)
        return JSONResponse({"session": json.loads(raw), "served_by": cfg.env})

    async def trades(request: Request) -> Response:
        try:
            limit = max(1, min(1000, int(request.query_params.get("limit", "20"))))
        except ValueError:
            return bad("limit must be an integer")
        if state.db.heavydb is None:
            return bad("heavydb not configured", 503)

        def query(con: Any) -> list[dict[str, Any]]:
            cur = con.cursor()
            cols = ", ".join(TRADE_COLUMNS)
            cur.execute(f"SELECT {cols} FROM trades ORDER BY trade_id DESC LIMIT {limit}")
            return [
                dict(zip(TRADE_COLUMNS, map(_jsonable, r), strict=True)) for r in cur.fetchall()
            ]

        try:
            rows = await asyncio.to_thread(state.db.heavydb.run, query)
        except Exception as exc:
            return bad(f"heavydb unavailable: {type(exc).__name__}: {str(exc)[:160]}", 503)
        return JSONResponse({"env": cfg.env, "count": len(rows), "trades": rows})

    async def strategy_results(request: Request) -> Response:
        try:
            strategy_id = int(request.path_params["strategy_id"])
            limit = max(1, min(1000, int(request.query_params.get("limit", "30"))))
        except ValueError:
            return bad("strategy id and limit must be integers")

        def query(con: Any) -> list[dict[str, Any]]:
            with con.cursor() as cur:
                cur.execute(
                    "SELECT strategy_id, run_date, pnl, sharpe, trades_count FROM strategy_results"
                    " WHERE strategy_id = %s ORDER BY run_date DESC LIMIT %s",
                    (strategy_id, limit),
                )
                cols = ("strategy_id", "run_date", "pnl", "sharpe", "trades_count")
                return [dict(zip(cols, map(_jsonable, r), strict=True)) for r in cur.fetchall()]

        try:
            rows = await asyncio.to_thread(state.db.mysql.run, query)
        except Exception as exc:
            return bad(f"mysql unavailable: {type(exc).__name__}: {str(exc)[:160]}", 503)
        if not rows:
            return bad(f"no results for strategy {strategy_id}", 404)
        return JSONResponse({"env": cfg.env, "strategy_id": strategy_id, "results": rows})

    async def upload(request: Request) -> Response:
        raw = await request.body()
        ctype = request.headers.get("content-type", "")
        filename = request.query_params.get("filename", "")
        if ctype.startswith("multipart/form-data"):
            try:
                raw, filename, ctype = _first_file_part(ctype, raw)
            except ValueError as exc:
                return bad(str(exc))
        fmt = _upload_format(ctype, filename, raw)
        try:
            rows, columns = _parse_upload(fmt, raw)
        except ValueError as exc:
            return bad(f"cannot parse {fmt}: {exc}", 422)
        state.counters.uploads_rows += rows
        return JSONResponse(
            {
                "env": cfg.env,
                "format": fmt,
                "rows": rows,
                "columns": columns,
                "bytes": len(raw),
                "filename": filename or None,
            }
        )

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                data = await body_json(request)
                if not isinstance(data, dict):
                    raise FaultSpecError("body must be a JSON object")
                spec = validate_fault(
                    data.get("kind"), data.get("magnitude"), data.get("duration"), data.get("db")
                )
            except (ValueError, FaultSpecError) as exc:
                return bad(str(exc))
            state.advance()  # book the time before the fault at the old rate
            state.faults[spec["kind"]] = Fault(
                kind=spec["kind"],
                magnitude=spec["magnitude"],
                duration=spec["duration"],
                db=spec["db"],
                started_at=_utcnow(),
                expires_mono=None
                if spec["duration"] is None
                else time.monotonic() + spec["duration"],
            )
            await state.apply_faults()
            log.info("fault injected: %s", spec)
            return JSONResponse(
                {
                    "env": cfg.env,
                    "fault": state.faults[spec["kind"]].as_dict(),
                    "faults": [f.as_dict() for f in state.active_faults().values()],
                }
            )
        if request.method == "DELETE":
            kind = request.query_params.get("kind")
            state.advance()
            cleared = [k for k in list(state.faults) if kind in (None, k)]
            for k in cleared:
                del state.faults[k]
            await state.apply_faults()
            log.info("faults cleared: %s", cleared)
            return JSONResponse(
                {
                    "env": cfg.env,
                    "cleared": cleared,
                    "faults": [f.as_dict() for f in state.active_faults().values()],
                }
            )
        return JSONResponse(
            {
                "env": cfg.env,
                "faults": [f.as_dict() for f in state.active_faults().values()],
                "proxies": {k: p.stats() for k, p in state.proxies.items()},
            }
        )

    async def ingest(request: Request) -> Response:
        if request.method == "POST":
            try:
                data = await body_json(request)
            except ValueError as exc:
                return bad(str(exc))
            if not isinstance(data, dict) or not isinstance(data.get("enabled"), bool):
                return bad('need {"enabled": true|false}')
            state.ingest_enabled = data["enabled"]
        return JSONResponse(
            {
                "env": cfg.env,
                "enabled": state.ingest_enabled,
                "pending_rows": {k: sum(len(b.rows) for b in q) for k, q in state.pending.items()},
                "rows_written": dict(state.counters.rows_written),
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        import redis.asyncio as aioredis

        state.redis = aioredis.Redis.from_url(
            cfg.redis_url,
            socket_timeout=cfg.probe_timeout,
            socket_connect_timeout=cfg.probe_timeout,
        )
        state.proxies["mysql"] = TcpProxy(
            f"{cfg.env}-mysql", "127.0.0.1", cfg.mysql_proxy_port, *cfg.mysql_upstream
        )
        if cfg.heavydb_upstream is not None:
            state.proxies["heavydb"] = TcpProxy(
                f"{cfg.env}-heavydb", "127.0.0.1", cfg.heavydb_proxy_port, *cfg.heavydb_upstream
            )
        for proxy in state.proxies.values():
            await proxy.start()
        # Ready means ready: uvicorn opens its port only after this, so the drivers' imports
        # (seconds on a busy machine) and a first probe happen before anyone is told "up".
        await asyncio.to_thread(_import_drivers, cfg.heavydb_upstream is not None)
        with contextlib.suppress(Exception):
            await probe_all(state)
        tasks = [
            asyncio.create_task(tick_loop(state)),
            asyncio.create_task(ingest_loop(state)),
            asyncio.create_task(probe_loop(state)),
        ]
        log.info(
            "%s %s up; proxies %s",
            cfg.env,
            cfg.version,
            {k: p.listen_port for k, p in state.proxies.items()},
        )
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            for proxy in state.proxies.values():
                await proxy.stop()
            with contextlib.suppress(Exception):
                await state.redis.aclose()
            state.db.mysql.clear()
            if state.db.heavydb is not None:
                state.db.heavydb.clear()

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/api/me", me, methods=["GET"]),
        Route("/api/trades", trades, methods=["GET"]),
        Route("/api/strategies/{strategy_id}/results", strategy_results, methods=["GET"]),
        Route("/upload", upload, methods=["POST", "PUT"]),
        Route("/_faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/_ingest", ingest, methods=["GET", "POST"]),
        Route("/_admin/users/{username}", admin_user, methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.tbs = state
    app.add_middleware(RequestAccounting, state=state)
    return app


# ------------------------------------------------------------------------------------------------
# Uploads
# ------------------------------------------------------------------------------------------------


def _first_file_part(ctype: str, raw: bytes) -> tuple[bytes, str, str]:
    """The first part of a multipart/form-data body: (payload, filename, content type)."""
    head = f"Content-Type: {ctype}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    if not message.is_multipart():
        raise ValueError("multipart body without parts")
    for part in message.iter_parts():  # type: ignore[attr-defined]
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        return data, part.get_filename() or "", part.get_content_type()
    raise ValueError("multipart body without parts")


def _upload_format(ctype: str, filename: str, raw: bytes) -> str:
    lowered = (ctype + " " + filename).lower()
    if "json" in lowered:
        return "json"
    if "csv" in lowered:
        return "csv"
    return "json" if raw.lstrip()[:1] in (b"[", b"{") else "csv"


def _parse_upload(fmt: str, raw: bytes) -> tuple[int, list[str]]:
    import csv

    text = raw.decode("utf-8-sig", errors="strict") if raw else ""
    if fmt == "json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"invalid JSON: {exc}") from None
        if isinstance(data, dict):
            data = data.get("rows", data.get("data", [data]))
        if not isinstance(data, list):
            raise ValueError("expected a list of records")
        columns = sorted({k for r in data if isinstance(r, dict) for k in r})
        return len(data), columns
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise ValueError("empty file")
    rows = 0
    for record in reader:
        if not record:
            continue
        if len(record) != len(header):
            raise ValueError(f"row {rows + 2} has {len(record)} fields, header has {len(header)}")
        rows += 1
    return rows, header


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main() -> None:
    p = argparse.ArgumentParser(description="TBS application stand-in (one environment)")
    p.add_argument("--env", choices=("blue", "green"), required=True)
    p.add_argument("--version", default="0.0.0")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mysql", required=True, help="the real MariaDB, host:port")
    p.add_argument("--mysql-proxy-port", type=int, required=True)
    p.add_argument("--mysql-user", default="tbs_app")
    p.add_argument("--mysql-password-env", default="TBS_APP_MYSQL_PASSWORD")
    p.add_argument("--mysql-database", default="tbs_archive")
    p.add_argument("--heavydb", help="the real HeavyDB server, host:port (omit: none)")
    p.add_argument("--heavydb-proxy-port", type=int, default=0)
    p.add_argument("--heavydb-user", default="admin")
    p.add_argument("--heavydb-password-env", default="TBS_APP_HEAVYDB_PASSWORD")
    p.add_argument("--heavydb-database", default="heavyai")
    p.add_argument("--redis-url", required=True)
    p.add_argument("--nominal-rows-per-s", type=float, default=40_000.0)
    p.add_argument("--sim-requests-per-s", type=float, default=50.0)
    p.add_argument("--ingest-batch", type=int, default=20)
    p.add_argument("--ingest-interval", type=float, default=1.0)
    p.add_argument(
        "--heavydb-flush-interval",
        type=float,
        default=3.0,
        help="seconds between HeavyDB micro-batch writes (MySQL is written every interval)",
    )
    p.add_argument("--probe-interval", type=float, default=2.0)
    a = p.parse_args()
    cfg = AppConfig(
        env=a.env,
        version=a.version,
        host=a.host,
        port=a.port,
        mysql_upstream=_hostport(a.mysql),
        mysql_proxy_port=a.mysql_proxy_port,
        mysql_user=a.mysql_user,
        mysql_password=os.environ.get(a.mysql_password_env, ""),
        mysql_database=a.mysql_database,
        heavydb_upstream=_hostport(a.heavydb) if a.heavydb else None,
        heavydb_proxy_port=a.heavydb_proxy_port,
        heavydb_user=a.heavydb_user,
        heavydb_password=os.environ.get(a.heavydb_password_env, "HyperInteractive"),
        heavydb_database=a.heavydb_database,
        redis_url=a.redis_url,
        nominal_rows_per_s=a.nominal_rows_per_s,
        sim_requests_per_s=a.sim_requests_per_s,
        ingest_batch=a.ingest_batch,
        ingest_interval=a.ingest_interval,
        heavydb_flush_interval=a.heavydb_flush_interval,
        probe_interval=a.probe_interval,
    )
    run_uvicorn(create_app(cfg), cfg.host, cfg.port)


if __name__ == "__main__":
    main()
