"""The TBS application stand-in: one process per environment (`--env blue|green`).

What is real:
- writes from users: `POST /api/trades {"count": N}` (the load balancer's feed sends one batch
  per second to the live environment only) generates N trades, writes them to MySQL before
  answering (200 = acknowledged; 503 = not written, the client's problem, as with any failed
  request) and queues them for HeavyDB, written in micro-batches every
  `--heavydb-flush-interval` s (default 3) through the `heavydb` client's Arrow load call. A
  HeavyDB batch that fails stays pending and is retried without duplicates, so the two databases
  converge once a fault clears (`tbs_ingest_pending_rows`). `POST /_ingest {"enabled": false}`
  pauses writing: batches are then answered 200 with `{"accepted": 0, "paused": true}`.
- the ledger: every write the app saw committed, per store (`GET /_ledger[?since=ISO]`), kept
  in an append-only JSONL file (`--ledger-file`) so it survives a restart; on start, rows the
  ledger has in MySQL but not in HeavyDB are read back from MySQL and queued for HeavyDB.
- `POST /login` against the `users` table (pbkdf2 hashes), Redis sessions `session:<id>` in this
  environment's Redis, `GET /api/me`, `GET /api/trades` (HeavyDB),
  `GET /api/strategies/<id>/results` (MySQL), `POST /upload` (csv or json, parsed), `GET /` (a
  small page), `GET /health` (live probes).
- the databases are reached at `--mysql` / `--heavydb`: the environment's network path
  (`sandbox.standins.netpath`), where `db-down` / `db-slow` faults act. With `--netpath-url`
  this app accepts those faults too and forwards them there.

What is simulated (documented in docs/sandbox.md):
- `tbs_rows_ingested_total` is the platform's processing throughput: a counter advancing at
  `--nominal-rows-per-s` (default 40000, a little above the runbook's 37,303 rows/s baseline) with
  +-2% jitter, scaled down by a `throughput` fault. It is NOT the writes above.
- request traffic: `--sim-requests-per-s` (default 50) simulated requests per second are added to
  `tbs_http_requests_total`, failing at the `errors` fault's rate (0.1% otherwise); real requests
  served are counted too.
- CPU, memory and disk usage gauges: quiet values around 20-40%, or the fault's value.

Faults: `POST /_faults` `{"kind", "magnitude", "duration", "db"}`, `GET /_faults`,
`DELETE /_faults[?kind=k]`; see `sandbox.standins.faults`. `app-hang` makes the app answer
nothing but `/_faults` and `/_ledger` until it ends.

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
import bisect
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
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import IO, Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.seed import ENV_ID_BASE, TRADE_COLUMNS, arrow_table, live_trades, verify_password
from sandbox.standins import run_uvicorn
from sandbox.standins.faults import (
    APP_FAULT_KINDS,
    DB_FAULT_KINDS,
    Fault,
    FaultBook,
    FaultSpecError,
    iso,
    validate_request,
)

log = logging.getLogger("app")

SESSION_PREFIX = "session:"
SESSION_TTL_S = 3600
LOCKDOWN_KEY = "tbs:lockdown"
AUDIT_KEY = "tbs:audit:logins"
AUDIT_KEPT = 10_000
BASELINE_ERROR_PERCENT = 0.1
SLOW_MS = 1000.0
MAX_PENDING_BATCHES = 3600
# live_trades numbers a batch's rows base + 0..99, base from the millisecond: at most 100 rows.
MAX_BATCH_ROWS = 100
DEFAULT_BATCH_ROWS = 20
# Concurrent synchronous MySQL writes; a batch that waits longer than this for one is refused
# (503), like a real application whose connection pool is exhausted, instead of piling up
# threads behind a slow database.
WRITE_SLOTS = 2
WRITE_SLOT_WAIT_S = 2.0
_INTERNAL_PREFIXES = ("/metrics", "/_")
# Answered even while the app hangs: the fault must be clearable, and the ledger is the
# sandbox's bookkeeping, not the application.
_HANG_EXEMPT = ("/_faults", "/_ledger")
_WRITER_TICK_S = 0.25


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(t: dt.datetime) -> str:
    return iso(t)


def _jsonable(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    if hasattr(v, "item"):
        return v.item()
    return v


def _ranges(ids: Iterable[int]) -> list[list[int]]:
    """Sorted ids as [[first, last], ...] runs of consecutive numbers (a batch is one run)."""
    out: list[list[int]] = []
    for i in sorted(ids):
        if out and i <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], i)
        else:
            out.append([i, i])
    return out


def _subtract(ranges: list[list[int]], minus: list[list[int]]) -> list[list[int]]:
    """The ids of `ranges` not in `minus` (both sorted, non-overlapping), as ranges."""
    out: list[list[int]] = []
    j = 0
    for lo, hi in ranges:
        cur = lo
        while j < len(minus) and minus[j][1] < cur:
            j += 1
        k = j
        while cur <= hi:
            if k < len(minus) and minus[k][0] <= hi:
                m_lo, m_hi = minus[k]
                if m_lo > cur:
                    out.append([cur, m_lo - 1])
                cur = max(cur, m_hi + 1)
                k += 1
            else:
                out.append([cur, hi])
                break
    return out


def _parse_since(text: str) -> dt.datetime:
    """An ISO 8601 instant; without an offset it is UTC (the ledger's own times carry Z)."""
    try:
        t = dt.datetime.fromisoformat(text.strip().replace(" ", "+"))
    except ValueError:
        raise ValueError(
            f"since must be an ISO 8601 time such as 2025-01-24T10:00:00Z (got {text!r})"
        ) from None
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


# ------------------------------------------------------------------------------------------------
# Configuration and database access
# ------------------------------------------------------------------------------------------------


@dataclass
class AppConfig:
    env: str
    version: str
    host: str
    port: int
    mysql: tuple[str, int]
    mysql_user: str
    mysql_password: str
    mysql_database: str
    heavydb: tuple[str, int] | None
    heavydb_user: str
    heavydb_password: str
    heavydb_database: str
    redis_url: str
    netpath_url: str | None = None
    ledger_file: Path | None = None
    nominal_rows_per_s: float = 40_000.0
    sim_requests_per_s: float = 50.0
    heavydb_flush_interval: float = 3.0
    in_doubt_grace: float = 10.0
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
    """Blocking access to this environment's MySQL and HeavyDB, at the addresses it was given
    (the environment's network path, so its faults are felt here as by any other client)."""

    def __init__(self, cfg: AppConfig) -> None:
        self.cfg = cfg
        self.mysql = Pool(self.connect_mysql, lambda c: c.close())
        self.heavydb = Pool(self.connect_heavydb, _close_heavydb) if cfg.heavydb else None

    def connect_mysql(self, timeout: float | None = None) -> Any:
        import pymysql

        t = timeout or self.cfg.query_timeout
        host, port = self.cfg.mysql
        return pymysql.connect(
            host=host,
            port=port,
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

        assert self.cfg.heavydb is not None
        host, port = self.cfg.heavydb
        con = heavydb.connect(
            user=self.cfg.heavydb_user,
            password=self.cfg.heavydb_password,
            host=host,
            port=port,
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
    # One multi-row statement (pymysql batches an INSERT's executemany): all rows or none.
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


def _present_ids(con: Any, ids: list[int], heavy: bool) -> set[int]:
    """Which of `ids` the database has (one range query; the caller's ids are few)."""
    sql = f"SELECT trade_id FROM trades WHERE trade_id BETWEEN {int(min(ids))} AND {int(max(ids))}"
    if heavy:
        cur = con.cursor()
        cur.execute(sql)
        found = cur.fetchall()
    else:
        with con.cursor() as cur:
            cur.execute(sql)
            found = cur.fetchall()
    wanted = set(ids)
    return {int(r[0]) for r in found} & wanted


def _refused_by_server(exc: BaseException) -> bool:
    """True when MySQL itself answered with an error (codes below 2000: read-only, lock wait,
    ...): the statement did not commit. Client-side errors (2xxx: connection lost, timed out)
    leave it unknown whether the commit happened."""
    args: tuple[Any, ...] = getattr(exc, "args", ())
    return bool(args) and isinstance(args[0], int) and 1000 <= args[0] < 2000


# ------------------------------------------------------------------------------------------------
# The ledger
# ------------------------------------------------------------------------------------------------


@dataclass
class LedgerEntry:
    at: dt.datetime
    at_text: str
    table: str
    store: str
    ids: list[list[int]]  # ranges [[first, last], ...]


class Ledger:
    """Every write the app saw committed, per store, in commit order.

    One entry (and one JSONL line in the file) per batch, the keys as ranges of trade ids, so
    hours of 20 rows/s stay small; `GET /_ledger` expands them to one entry per row. Entries are
    recorded by the writing thread right after its commit returned, under a lock, so the order
    is the order the commits were seen in; `at` never goes backwards (a clock step cannot
    reorder the ledger or break `since`). The file is appended to and flushed, not fsynced."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: list[LedgerEntry] = []
        self._file: IO[str] | None = None
        self._file_error_logged = False
        if path is not None:
            self._load(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open: appends)

    def _load(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        if text and not text.endswith("\n"):
            # A line cut short by a crash: drop it, and end the file so the next line is whole.
            text = text[: text.rfind("\n") + 1]
            with open(path, "r+", encoding="utf-8") as f:
                f.truncate(len(text.encode("utf-8")))
        bad = 0
        for line in text.splitlines():
            try:
                data = json.loads(line)
                at = dt.datetime.fromisoformat(data["at"]).astimezone(dt.UTC)
                entry = LedgerEntry(
                    at, data["at"], data["table"], data["store"], [list(r) for r in data["ids"]]
                )
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            if self._entries and entry.at < self._entries[-1].at:
                entry.at = self._entries[-1].at
            self._entries.append(entry)
        if bad:
            log.warning("ledger %s: %d unreadable lines skipped", path, bad)
        log.info("ledger %s: %d batches loaded", path, len(self._entries))

    def record(self, store: str, ids: Iterable[int], table: str = "trades") -> None:
        """Called from the writing thread right after the commit; never raises on file trouble
        (the write happened: losing the file must not turn it into a failed request)."""
        ranges = _ranges(ids)
        if not ranges:
            return
        with self._lock:
            t = _utcnow()
            # Milliseconds, as written: the text and the value `since` compares must agree.
            now = t.replace(microsecond=t.microsecond // 1000 * 1000)
            if self._entries and now < self._entries[-1].at:
                now = self._entries[-1].at
            entry = LedgerEntry(now, _iso(now), table, store, ranges)
            self._entries.append(entry)
            if self._file is not None:
                line = {"at": entry.at_text, "table": table, "store": store, "ids": ranges}
                try:
                    self._file.write(json.dumps(line, separators=(",", ":")) + "\n")
                    self._file.flush()
                except OSError as exc:
                    if not self._file_error_logged:
                        log.error("ledger %s: cannot append: %s", self.path, exc)
                        self._file_error_logged = True

    def entries(self, since: dt.datetime | None = None) -> list[LedgerEntry]:
        with self._lock:
            entries = self._entries
            start = 0 if since is None else bisect.bisect_left(entries, since, key=lambda e: e.at)
            return entries[start:]

    def writes_json(self, since: dt.datetime | None = None) -> str:
        """`{"writes": [...]}`, one entry per row, built as text (hundreds of thousands of rows
        would take seconds through dicts and json.dumps)."""
        parts: list[str] = []
        for e in self.entries(since):
            head = (
                f'{{"table":{json.dumps(e.table)},"store":{json.dumps(e.store)},"key":{{"trade_id":'
            )
            tail = f'}},"at":"{e.at_text}"}}'
            for lo, hi in e.ids:
                parts.extend(f"{head}{i}{tail}" for i in range(lo, hi + 1))
        return '{"writes":[' + ",".join(parts) + "]}"

    def ranges(self, store: str) -> list[list[int]]:
        """Every id recorded for a store, merged into sorted ranges."""
        runs = [r for e in self.entries() if e.store == store for r in e.ids]
        runs.sort()
        merged: list[list[int]] = []
        for lo, hi in runs:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        return merged

    def max_id(self) -> int | None:
        ids = [e.ids[-1][1] for e in self.entries()]
        return max(ids) if ids else None

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None


# ------------------------------------------------------------------------------------------------
# State
# ------------------------------------------------------------------------------------------------


@dataclass
class Batch:
    rows: list[tuple[Any, ...]]
    # A write of this batch was sent and its outcome is unknown: look before writing again.
    attempted: bool = False
    failed_mono: float = 0.0


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
    write_batches: dict[str, int] = field(
        default_factory=lambda: {"acknowledged": 0, "failed": 0, "paused": 0}
    )
    sim_requests: float = 0.0
    sim_errors: float = 0.0
    real_requests: int = 0
    real_errors: int = 0
    logins: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0, "denied": 0})
    uploads_rows: int = 0


class Hang:
    """The `app-hang` fault's gate: requests wait on an event that is set when the fault ends."""

    def __init__(self) -> None:
        self._release: asyncio.Event | None = None
        self.held = 0

    @property
    def active(self) -> bool:
        return self._release is not None

    def set(self, on: bool) -> None:
        if on and self._release is None:
            self._release = asyncio.Event()
        elif not on and self._release is not None:
            self._release.set()
            self._release = None

    async def hold(self, receive: Receive) -> bool:
        """Wait until the fault ends (True) or the client goes away (False)."""
        release = self._release
        if release is None:
            return True

        async def client_gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        self.held += 1
        waiters = [asyncio.ensure_future(release.wait()), asyncio.ensure_future(client_gone())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            return release.is_set()
        finally:
            # Both waiters end here whatever happened (also when uvicorn cancels us at
            # shutdown): a hung request leaves no task behind.
            for w in waiters:
                w.cancel()
            self.held -= 1


class AppState:
    def __init__(self, cfg: AppConfig) -> None:
        self.cfg = cfg
        self.started = _utcnow()
        self.started_mono = time.monotonic()
        self.rng = random.Random()
        self.db = Databases(cfg)
        self.faults = FaultBook()  # the app's own
        # The environment's database faults as the network path last reported them (or as this
        # app forwarded them, when the path did not answer since): for metrics and listings.
        self.db_faults = FaultBook()
        self.netpath_proxies: dict[str, Any] = {}
        self.netpath_error: str | None = None
        self.netpath: httpx.AsyncClient | None = None
        self.hang = Hang()
        self.counters = Counters()
        self.checks = {"mysql": Check(), "heavydb": Check(), "redis": Check()}
        if cfg.heavydb is None:
            self.checks["heavydb"] = Check(ok=False, detail="heavydb not configured")
        self.active_sessions = 0
        # MySQL batches whose write failed without the server saying no: checked (after
        # in_doubt_grace) and, if they landed, ledgered and sent on to HeavyDB.
        self.in_doubt: deque[Batch] = deque()
        self.pending_heavy: deque[Batch] = deque()
        self.recovered = cfg.heavydb is None  # queued what the ledger says HeavyDB lacks
        self.ingest_enabled = True
        self.write_slots = asyncio.Semaphore(WRITE_SLOTS)
        self.ledger = Ledger(cfg.ledger_file)
        self.last_id_ms = 0
        if (top := self.ledger.max_id()) is not None:
            # Ids come from the clock; never hand out one below what was written before a
            # restart, even if the clock stepped back meanwhile.
            self.last_id_ms = (top - ENV_ID_BASE[cfg.env]) // 100
        self.jitter = 1.0
        self.resource = {"cpu": 25.0, "memory": 35.0, "disk": 30.0}
        self.last_tick = time.monotonic()
        self.probe_threads: dict[str, asyncio.Future[Any]] = {}
        self.redis: Any = None

    # faults ------------------------------------------------------------------------------------
    def fault_value(self, kind: str) -> float | None:
        return self.faults.value(kind)

    def sync_hang(self) -> None:
        self.hang.set(self.faults.get("app-hang") is not None)

    def all_faults(self) -> list[dict[str, Any]]:
        return self.faults.as_list() + self.db_faults.as_list()

    def mirror_netpath(self, answer: Any) -> None:
        """Take the network path's view of the database faults from one of its answers."""
        if not isinstance(answer, dict):
            return
        faults = answer.get("faults")
        if isinstance(faults, list):
            self.db_faults.replace(
                [
                    Fault.from_dict(f)
                    for f in faults
                    if isinstance(f, dict) and f.get("kind") in DB_FAULT_KINDS
                ]
            )
        if isinstance(answer.get("proxies"), dict):
            self.netpath_proxies = answer["proxies"]
        self.netpath_error = None

    async def call_netpath(
        self, method: str, query: dict[str, str] | None = None, body: Any = None
    ) -> httpx.Response:
        assert self.netpath is not None and self.cfg.netpath_url
        url = self.cfg.netpath_url.rstrip("/") + "/_faults"
        try:
            resp = await self.netpath.request(method, url, params=query, json=body)
        except httpx.HTTPError as exc:
            self.netpath_error = f"{type(exc).__name__}: {exc}"[:200]
            raise
        if resp.status_code < 400:
            with contextlib.suppress(ValueError):
                self.mirror_netpath(resp.json())
        return resp

    # writes ------------------------------------------------------------------------------------
    def new_trades(self, count: int) -> list[tuple[Any, ...]]:
        """A batch of trades with ids no batch of this environment had before: base + 0..99
        where base comes from the millisecond, strictly increasing within this process (two
        batches in one millisecond) and across restarts (the ledger's highest id)."""
        ms = max(int(time.time() * 1000), self.last_id_ms + 1)
        self.last_id_ms = ms
        now = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        base = ENV_ID_BASE[self.cfg.env] + ms * 100
        rows = live_trades(self.cfg.env, now, count, self.rng)
        # live_trades derives the ids from a float timestamp; number them from the exact one.
        return [(base + i, *r[1:]) for i, r in enumerate(rows)]

    def queue_heavydb(self, batch: Batch) -> None:
        if self.db.heavydb is None:
            return
        self.pending_heavy.append(batch)
        while len(self.pending_heavy) > MAX_PENDING_BATCHES:
            dropped = self.pending_heavy.popleft()
            self.counters.rows_dropped["heavydb"] += len(dropped.rows)

    def pending_rows(self) -> dict[str, int]:
        out = {"mysql": sum(len(b.rows) for b in self.in_doubt)}
        if self.db.heavydb is not None:
            out["heavydb"] = sum(len(b.rows) for b in self.pending_heavy)
        return out

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
# Writing
# ------------------------------------------------------------------------------------------------


async def write_mysql(state: AppState, rows: list[tuple[Any, ...]]) -> str | None:
    """Write one batch to MySQL now; None when committed (and ledgered), else why not."""
    try:
        await asyncio.wait_for(state.write_slots.acquire(), WRITE_SLOT_WAIT_S)
    except TimeoutError:
        state.counters.rows_dropped["mysql"] += len(rows)
        return "mysql busy: every write connection is in use"
    ids = [r[0] for r in rows]
    sent = False

    def write(con: Any) -> None:
        nonlocal sent
        sent = True
        _mysql_insert(con, rows)  # INSERT IGNORE: a second run (fresh connection) is harmless
        state.ledger.record("mysql", ids)

    try:
        await asyncio.to_thread(state.db.mysql.run, write)
    except Exception as exc:
        state.counters.write_failures["mysql"] += 1
        if sent and not _refused_by_server(exc):
            # The commit may have happened with its answer lost (a db-slow reply past the read
            # timeout, a connection aborted by db-down): find out later, when the path works.
            state.in_doubt.append(Batch(rows, attempted=True, failed_mono=time.monotonic()))
            while len(state.in_doubt) > MAX_PENDING_BATCHES:
                state.counters.rows_dropped["mysql"] += len(state.in_doubt.popleft().rows)
        else:
            state.counters.rows_dropped["mysql"] += len(rows)
        return f"mysql unavailable: {type(exc).__name__}: {str(exc)[:160]}"
    finally:
        state.write_slots.release()
    state.counters.rows_written["mysql"] += len(rows)
    state.queue_heavydb(Batch(rows))
    return None


async def resolve_in_doubt(state: AppState) -> None:
    """Settle MySQL batches whose commit is unknown: landed -> ledgered and queued for HeavyDB
    (so the databases converge); not landed -> lost, like the failed request it was."""
    while state.in_doubt:
        batch = state.in_doubt[0]
        if time.monotonic() - batch.failed_mono < state.cfg.in_doubt_grace:
            return  # the statement may still be running on the server
        ids = [r[0] for r in batch.rows]

        def check(con: Any, ids: list[int] = ids) -> set[int]:
            present = _present_ids(con, ids, heavy=False)
            if present:
                state.ledger.record("mysql", present)
            return present

        try:
            present = await asyncio.to_thread(state.db.mysql.run, check)
        except Exception as exc:
            log.debug("in-doubt check failed: %s", exc)
            return
        state.in_doubt.popleft()
        if present:
            state.counters.rows_written["mysql"] += len(present)
            state.queue_heavydb(Batch([r for r in batch.rows if r[0] in present]))
        state.counters.rows_dropped["mysql"] += len(batch.rows) - len(present)


async def recover_unflushed(state: AppState) -> None:
    """Queue for HeavyDB what the ledger has in MySQL but not in HeavyDB: the micro-batches a
    previous run of this app had not flushed when it stopped (app-down kills it)."""
    missing = _subtract(state.ledger.ranges("mysql"), state.ledger.ranges("heavydb"))
    if not missing:
        state.recovered = True
        return
    cols = ", ".join(TRADE_COLUMNS)

    def fetch(con: Any) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        with con.cursor() as cur:
            for lo, hi in missing:
                cur.execute(
                    f"SELECT {cols} FROM trades WHERE trade_id BETWEEN %s AND %s ORDER BY trade_id",
                    (lo, hi),
                )
                rows.extend(cur.fetchall())
        return rows

    rows = await asyncio.to_thread(state.db.mysql.run, fetch)
    step = MAX_BATCH_ROWS
    batches = [Batch(rows[i : i + step], attempted=True) for i in range(0, len(rows), step)]
    # Oldest first, ahead of anything written since this start; attempted: they may have
    # landed before the stop without being ledgered, so the flush looks before writing.
    state.pending_heavy.extendleft(reversed(batches))
    state.recovered = True
    log.info("recovered %d rows the ledger has in MySQL but not in HeavyDB", len(rows))


async def flush_heavydb(state: AppState, max_rows: int = 1000, max_writes: int = 5) -> None:
    """Write pending batches to HeavyDB, oldest first, several batches per call (a call costs
    the HeavyDB stand-in far more than a row), stopping at a failure."""
    pending = state.pending_heavy
    pool = state.db.heavydb
    if pool is None:
        return
    for _ in range(max_writes):
        group: list[Batch] = []
        for batch in pending:
            if group and sum(len(b.rows) for b in group) + len(batch.rows) > max_rows:
                break
            group.append(batch)
        if not group:
            return
        rows = [r for b in group for r in b.rows]

        def write(con: Any, group: list[Batch] = group, rows: list[Any] = rows) -> None:
            todo = rows
            # Checked on every run, so also when Pool.run retries on a fresh connection.
            if any(b.attempted for b in group):
                # A write whose answer was lost may have landed: write only what is missing
                # (HeavyDB has no keys to stop a duplicate).
                present = _present_ids(con, [r[0] for r in rows], heavy=True)
                todo = [r for r in rows if r[0] not in present]
            for b in group:
                b.attempted = True
            if todo:
                _heavydb_insert(con, todo)
            state.ledger.record("heavydb", [r[0] for r in rows])

        try:
            await asyncio.to_thread(pool.run, write)
        except Exception as exc:
            state.counters.write_failures["heavydb"] += 1
            log.debug("heavydb write failed: %s", exc)
            return
        for _ in group:
            pending.popleft()
        state.counters.rows_written["heavydb"] += len(rows)


# ------------------------------------------------------------------------------------------------
# Background loops
# ------------------------------------------------------------------------------------------------


async def tick_loop(state: AppState) -> None:
    n = 0
    while True:
        try:
            state.sync_hang()  # ends a hang whose duration ran out
            state.advance()
            if n % 4 == 0:
                state.wander()
        except Exception:
            log.exception("tick failed")
        n += 1
        await asyncio.sleep(0.5)


async def writer_loop(state: AppState) -> None:
    """The background half of writing: HeavyDB micro-batches, in-doubt MySQL batches, and the
    recovery of what a previous run left unflushed."""
    last_flush = 0.0
    while True:
        try:
            if not state.recovered:
                await recover_unflushed(state)
        except Exception as exc:
            log.debug("recovery from the ledger failed (will retry): %s", exc)
        try:
            await resolve_in_doubt(state)
            now = time.monotonic()
            if now - last_flush >= state.cfg.heavydb_flush_interval - 0.05:
                last_flush = now
                await flush_heavydb(state)
        except Exception:
            log.exception("writer failed")
        await asyncio.sleep(_WRITER_TICK_S)


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
        if state.netpath is not None:
            # Faults posted to the network path directly (as the world does) show here too.
            with contextlib.suppress(httpx.HTTPError):
                await state.call_netpath("GET")
        await asyncio.sleep(state.cfg.probe_interval)


async def count_sessions(state: AppState) -> int:
    n = 0
    async for _ in state.redis.scan_iter(match=SESSION_PREFIX + "*", count=1000):
        n += 1
    return n


# ------------------------------------------------------------------------------------------------
# HTTP
# ------------------------------------------------------------------------------------------------


class HangGate:
    """The `app-hang` fault: every request but the control paths waits, unanswered, until the
    fault ends (then 503) or its client gives up. Outermost, so a hung request is not counted."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in _HANG_EXEMPT:
            self.state.sync_hang()
            if self.state.hang.active:
                if await self.state.hang.hold(receive):
                    response = JSONResponse(
                        {"error": "the app was hung (app-hang); retry", "env": self.state.cfg.env},
                        status_code=503,
                    )
                    await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
        "Rows the stand-in really wrote (and ledgered), per database.",
        [({"db": k}, v) for k, v in c.rows_written.items()],
    )
    metric(
        "tbs_rows_dropped_total",
        "counter",
        "Rows not written: failed MySQL writes that did not land, HeavyDB backlog overflow.",
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
        "Rows waiting: MySQL writes of unknown outcome, HeavyDB rows not flushed yet.",
        [({"db": k}, v) for k, v in state.pending_rows().items()],
    )
    metric(
        "tbs_write_batches_total",
        "counter",
        "Write batches (POST /api/trades) by outcome.",
        [({"result": k}, v) for k, v in c.write_batches.items()],
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
        "Redis keys session:* in this environment's Redis.",
        [({}, state.active_sessions)],
    )
    metric(
        "tbs_db_up",
        "gauge",
        "1 if the last probe through this environment's network path worked.",
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
    active = set(state.faults.active()) | set(state.db_faults.active())
    metric(
        "tbs_fault_active",
        "gauge",
        "1 while an injected fault of this kind is active (db faults: on the network path).",
        [({"kind": k}, int(k in active)) for k in (*APP_FAULT_KINDS, *DB_FAULT_KINDS)],
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
        if cfg.heavydb is not None:
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
                "faults": sorted({f["kind"] for f in state.all_faults()}),
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
        if request.method == "POST":
            return await write_trades(request)
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

    async def write_trades(request: Request) -> Response:
        """`POST /api/trades {"count": N}`: users' writes (the LB's feed sends them). 200 once
        MySQL committed (acknowledged, in the ledger), 503 when it did not."""
        try:
            data = await body_json(request)
        except ValueError as exc:
            return bad(str(exc))
        if not isinstance(data, dict):
            return bad('body must be a JSON object such as {"count": 20}')
        count = data.get("count", DEFAULT_BATCH_ROWS)
        if (
            isinstance(count, bool)
            or not isinstance(count, int)
            or not 1 <= count <= MAX_BATCH_ROWS
        ):
            return bad(f"count must be an integer between 1 and {MAX_BATCH_ROWS}")
        if not state.ingest_enabled:
            state.counters.write_batches["paused"] += 1
            return JSONResponse({"env": cfg.env, "accepted": 0, "paused": True})
        rows = state.new_trades(count)
        error = await write_mysql(state, rows)
        if error is not None:
            state.counters.write_batches["failed"] += 1
            return bad(f"write not accepted: {error}", 503)
        state.counters.write_batches["acknowledged"] += 1
        return JSONResponse(
            {
                "env": cfg.env,
                "accepted": len(rows),
                "first_trade_id": rows[0][0],
                "last_trade_id": rows[-1][0],
            }
        )

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
                spec = validate_request(data, (*APP_FAULT_KINDS, *DB_FAULT_KINDS), "app")
            except (ValueError, FaultSpecError) as exc:
                return bad(str(exc))
            if spec["kind"] in DB_FAULT_KINDS:
                return await forward_db_fault(spec)
            state.advance()  # book the time before the fault at the old rate
            fault = state.faults.add(spec)
            state.sync_hang()
            log.info("fault injected: %s", spec)
            return JSONResponse(
                {"env": cfg.env, "fault": fault.as_dict(), "faults": state.all_faults()}
            )
        if request.method == "DELETE":
            return await clear_faults(request.query_params.get("kind"))
        if state.netpath is not None:
            with contextlib.suppress(httpx.HTTPError):
                await state.call_netpath("GET")
        answer: dict[str, Any] = {
            "env": cfg.env,
            "faults": state.all_faults(),
            "proxies": state.netpath_proxies,
            "held_requests": state.hang.held,
        }
        if state.netpath_error:
            answer["netpath_error"] = state.netpath_error
        return JSONResponse(answer)

    async def forward_db_fault(spec: dict[str, Any]) -> Response:
        if state.netpath is None:
            return bad(
                f"{spec['kind']} acts on the environment's network path, and this app was"
                " started without --netpath-url: post it to the network path"
            )
        try:
            resp = await state.call_netpath("POST", body=spec)
        except httpx.HTTPError as exc:
            return bad(f"network path unreachable: {type(exc).__name__}: {exc}", 502)
        try:
            answer = resp.json()
        except ValueError:
            answer = {"error": resp.text[:200]}
        if resp.status_code >= 400:
            return bad(str(answer.get("error") or answer), resp.status_code)
        # Our own record, should the path stop answering before the fault ends.
        state.db_faults.put(Fault.from_dict(answer["fault"]))
        log.info("fault forwarded to the network path: %s", spec)
        return JSONResponse(
            {
                "env": cfg.env,
                "fault": answer["fault"],
                "faults": state.all_faults(),
                "proxies": state.netpath_proxies,
            }
        )

    async def clear_faults(kind: str | None) -> Response:
        cleared: list[str] = []
        if kind is None or kind not in DB_FAULT_KINDS:
            state.advance()
            cleared += state.faults.clear(kind)
            state.sync_hang()  # releases requests held by app-hang
        error = None
        if kind is None or kind in DB_FAULT_KINDS:
            if state.netpath is not None:
                try:
                    resp = await state.call_netpath(
                        "DELETE", query={"kind": kind} if kind else None
                    )
                    resp.raise_for_status()
                    cleared += resp.json().get("cleared", [])
                except (httpx.HTTPError, ValueError) as exc:
                    error = f"network path: {type(exc).__name__}: {exc}"
            else:
                cleared += state.db_faults.clear(kind)
        if cleared:
            log.info("faults cleared: %s", cleared)
        answer = {"env": cfg.env, "cleared": cleared, "faults": state.all_faults()}
        if error:
            return JSONResponse({**answer, "error": error}, status_code=502)
        return JSONResponse(answer)

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
                "pending_rows": state.pending_rows(),
                "rows_written": dict(state.counters.rows_written),
            }
        )

    async def ledger(request: Request) -> Response:
        since = request.query_params.get("since")
        try:
            start = None if since is None else _parse_since(since)
        except ValueError as exc:
            return bad(str(exc))
        # Expanding hours of batches is CPU work: off the event loop, which serves the feed.
        text = await asyncio.to_thread(state.ledger.writes_json, start)
        return Response(text, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        import redis.asyncio as aioredis

        loop = asyncio.get_running_loop()
        # Writes, probes, flushes and API reads each hold a thread while the database
        # answers; the default pool (cores + 4) would make a slow database stall all of them.
        loop.set_default_executor(ThreadPoolExecutor(max_workers=16, thread_name_prefix="db"))
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        # A restarted Redis (redis-down, then clear) leaves the pool's connections dead: a
        # request retries on a fresh one instead of failing, as a production client would.
        state.redis = aioredis.Redis.from_url(
            cfg.redis_url,
            socket_timeout=cfg.probe_timeout,
            socket_connect_timeout=cfg.probe_timeout,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            health_check_interval=5,
        )
        if cfg.netpath_url:
            state.netpath = httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0))
            with contextlib.suppress(httpx.HTTPError):
                await state.call_netpath("GET")
        # Ready means ready: uvicorn opens its port only after this, so the drivers' imports
        # (seconds on a busy machine) and a first probe happen before anyone is told "up".
        await asyncio.to_thread(_import_drivers, cfg.heavydb is not None)
        with contextlib.suppress(Exception):
            await probe_all(state)
        tasks = [
            asyncio.create_task(tick_loop(state)),
            asyncio.create_task(writer_loop(state)),
            asyncio.create_task(probe_loop(state)),
        ]
        log.info("%s %s up; mysql %s, heavydb %s", cfg.env, cfg.version, cfg.mysql, cfg.heavydb)
        try:
            yield
        finally:
            state.hang.set(False)
            for t in tasks:
                t.cancel()
            with contextlib.suppress(Exception):
                await state.redis.aclose()
            if state.netpath is not None:
                await state.netpath.aclose()
            state.db.mysql.clear()
            if state.db.heavydb is not None:
                state.db.heavydb.clear()
            state.ledger.close()

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/api/me", me, methods=["GET"]),
        Route("/api/trades", trades, methods=["GET", "POST"]),
        Route("/api/strategies/{strategy_id}/results", strategy_results, methods=["GET"]),
        Route("/upload", upload, methods=["POST", "PUT"]),
        Route("/_faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/_ingest", ingest, methods=["GET", "POST"]),
        Route("/_ledger", ledger, methods=["GET"]),
        Route("/_admin/users/{username}", admin_user, methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.tbs = state
    app.add_middleware(RequestAccounting, state=state)
    # Added last = outermost: a hung request never reaches the accounting.
    app.add_middleware(HangGate, state=state)
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
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def main() -> None:
    p = argparse.ArgumentParser(description="TBS application stand-in (one environment)")
    p.add_argument("--env", choices=("blue", "green"), required=True)
    p.add_argument("--version", default="0.0.0")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument(
        "--mysql", type=_hostport, required=True, help="MySQL as this app reaches it, HOST:PORT"
    )
    p.add_argument("--mysql-user", default="tbs_app")
    p.add_argument("--mysql-password-env", default="TBS_APP_MYSQL_PASSWORD")
    p.add_argument("--mysql-database", default="tbs_archive")
    p.add_argument("--heavydb", type=_hostport, help="HeavyDB, HOST:PORT (omit: none)")
    p.add_argument("--heavydb-user", default="admin")
    p.add_argument("--heavydb-password-env", default="TBS_APP_HEAVYDB_PASSWORD")
    p.add_argument("--heavydb-database", default="heavyai")
    p.add_argument("--redis-url", required=True, help="this environment's Redis (sessions)")
    p.add_argument(
        "--netpath-url",
        help="the environment's network path control API; db faults posted here go there",
    )
    p.add_argument("--ledger-file", type=Path, help="append-only JSONL ledger of committed writes")
    p.add_argument("--nominal-rows-per-s", type=float, default=40_000.0)
    p.add_argument("--sim-requests-per-s", type=float, default=50.0)
    p.add_argument(
        "--heavydb-flush-interval",
        type=float,
        default=3.0,
        help="seconds between HeavyDB micro-batch writes (MySQL is written per request)",
    )
    p.add_argument(
        "--in-doubt-grace",
        type=float,
        default=10.0,
        help="seconds before checking whether a MySQL write whose answer was lost landed",
    )
    p.add_argument("--probe-interval", type=float, default=2.0)
    a = p.parse_args()
    cfg = AppConfig(
        env=a.env,
        version=a.version,
        host=a.host,
        port=a.port,
        mysql=a.mysql,
        mysql_user=a.mysql_user,
        mysql_password=os.environ.get(a.mysql_password_env, ""),
        mysql_database=a.mysql_database,
        heavydb=a.heavydb,
        heavydb_user=a.heavydb_user,
        heavydb_password=os.environ.get(a.heavydb_password_env, "HyperInteractive"),
        heavydb_database=a.heavydb_database,
        redis_url=a.redis_url,
        netpath_url=a.netpath_url,
        ledger_file=a.ledger_file,
        nominal_rows_per_s=a.nominal_rows_per_s,
        sim_requests_per_s=a.sim_requests_per_s,
        heavydb_flush_interval=a.heavydb_flush_interval,
        in_doubt_grace=a.in_doubt_grace,
        probe_interval=a.probe_interval,
    )
    # One line per netpath poll, and a traceback per refused HeavyDB connection (thrift logs
    # them itself) would bury the log during a fault: the checks and counters report those.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("thrift").setLevel(logging.CRITICAL)
    run_uvicorn(create_app(cfg), cfg.host, cfg.port)


if __name__ == "__main__":
    main()
