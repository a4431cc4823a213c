"""The load balancer stand-in: the runbook's emergency admin API in front of blue and green.

Every request outside `/emergency/` is reverse-proxied to the active backend. The admin API is the
contract the `http` traffic adapter is written against; keep it exactly:

- `GET  /emergency/status` -> `{"active", "backends": {"blue": url, "green": url}, "switched_at",
  "history": [{"at", "from", "to", "by"}], "draining": [...], "denied": [...]}`
- `POST /emergency/redirect-blue` -> `{"active": "blue", "previous", "changed"}` (idempotent)
- `POST /emergency/switch` `{"target": "blue"|"green"}` -> the same shape
- `POST /emergency/drain` / `POST /emergency/undrain` `{"target"}`: mark a backend as draining
  (informational here: the proxy keeps serving it while it is active).
- `POST /emergency/isolate` / `POST /emergency/restore` `{"target"}`: deny a backend (network
  isolation): requests are not forwarded to it and switching to it is refused (409).

- `POST /emergency/allowlist` `{"networks": ["10.0.0.0/8", ...] | null}`: serve only clients
  whose address is in one of the networks (others get 403, logged); null lifts it.
- `POST /emergency/rate-limit` `{"requests_per_minute": n | null, "paths": ["/api/", ...]}`:
  at most n requests per minute per client address on paths starting with one of the prefixes
  (all paths when empty); the rest get 429, logged. null lifts it.
- `GET  /emergency/logs?since=<iso>&limit=n` -> `{"entries": [{"at", "client", "method",
  "path", "status", "backend", "outcome"}]}`, oldest first (the last 20000 requests, in
  memory): outcome is forwarded, denied-network, rate-limited, isolated, unreachable or
  timeout.

Each answer of the security calls carries the value before (`previous`) and `changed`.
Requests under `/_admin/` (the apps' user administration) are never forwarded.

Health checks, as HAProxy's `check inter I fall F rise R timeout T`: every `--health-interval`
s each backend gets `GET /health` (`--health-timeout` s); a connect error, a timeout or a 5xx
is a failed check. A backend is DOWN after `--health-fall` consecutive failures and UP again
after `--health-rise` consecutive successes (it starts UP). The state is reported (in
`GET /emergency/status` under `health`, and as metrics), never acted on: this load balancer does
not fail over by itself, switching is the emergency tool's decision, and it keeps forwarding to
the active backend whatever its health (a real HAProxy would answer 503 when no server is UP).

Forwarded requests time out after `--backend-timeout` s (504; a connect failure is 502); both
count as connection errors.

The write feed: every `--feed-interval` s the load balancer sends the users' writes,
`POST /api/trades {"count": --feed-rows}` with `X-TBS-Feed: 1`, to the ACTIVE backend (none
while it is isolated). A failed batch is not retried: it is lost like any failed client request.
The feed is not subject to the allowlist or the rate limit (those act on client addresses) and
is not in `/emergency/logs`; it has its own counters. `--feed-rows 0` turns it off.

`GET /_lb/metrics` (no token, never forwarded): Prometheus text with HAProxy's exporter names,
`haproxy_backend_http_requests_total{proxy="tbs",server}`,
`haproxy_server_http_responses_total{proxy,server,code="1xx".."5xx"|"other"}`,
`haproxy_server_connection_errors_total`, `haproxy_server_status{state="UP"|"DOWN"}`,
`haproxy_server_check_failures_total`, `haproxy_server_response_time_average_seconds` (last 1024
responses), `haproxy_server_active` (1 for the backend receiving traffic), and the feed's
`tbs_feed_batches_total{server,result="ok"|"failed"}` and `tbs_feed_rows_total{server}`.

If `--token-env VAR` names a set variable, every `/emergency/` call needs
`Authorization: Bearer <value>` (401 otherwise). The acting party comes from the JSON field `by`
or the `X-Actor` header. The state (active backend, history, lists) lives in a JSON file, so a
restart keeps it. A fresh state starts with green active (green = new release, blue = last good).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.standins import run_uvicorn

log = logging.getLogger("lb")

BACKENDS = ("blue", "green")
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
_HISTORY_KEPT = 200
_LOG_KEPT = 20_000
PROXY_NAME = "tbs"  # the `proxy` label of the HAProxy-style metrics
CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")
# HAProxy's response-time average covers the last 1024 responses.
_RESPONSE_TIMES_KEPT = 1024
# Feed batches waiting on a slow backend at once; beyond that a tick's batch counts as failed
# without being sent (users keep writing; the LB must not pile up connections without end).
_FEED_MAX_IN_FLIGHT = 16
FEED_HEADER = "x-tbs-feed"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LBState:
    """The switchable state, persisted to a JSON file after every change."""

    def __init__(self, path: Path, backends: dict[str, str], initial: str = "green") -> None:
        self.path = path
        self.backends = backends
        self.active = initial
        self.switched_at: str | None = None
        self.history: list[dict[str, Any]] = []
        self.draining: list[str] = []
        self.denied: list[str] = []
        self.allowlist: list[str] | None = None
        self.rate_limit: dict[str, Any] | None = None
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._save()
            return
        if data.get("active") in BACKENDS:
            self.active = data["active"]
        self.switched_at = data.get("switched_at")
        self.history = list(data.get("history") or [])
        self.draining = [b for b in data.get("draining") or [] if b in BACKENDS]
        self.denied = [b for b in data.get("denied") or [] if b in BACKENDS]
        self.allowlist = data.get("allowlist")
        self.rate_limit = data.get("rate_limit")

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=2))
        tmp.replace(self.path)

    def as_dict(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "backends": dict(self.backends),
            "switched_at": self.switched_at,
            "history": list(self.history),
            "draining": list(self.draining),
            "denied": list(self.denied),
            "allowlist": self.allowlist,
            "rate_limit": self.rate_limit,
        }

    def set_value(self, field: str, value: Any) -> dict[str, Any]:
        previous = getattr(self, field)
        changed = previous != value
        if changed:
            setattr(self, field, value)
            self._save()
            log.info("%s: %s -> %s", field, previous, value)
        return {field: value, "previous": previous, "changed": changed}

    def switch(self, target: str, by: str) -> dict[str, Any]:
        previous = self.active
        changed = target != previous
        if changed:
            self.active = target
            self.switched_at = _now()
            self.history.append({"at": self.switched_at, "from": previous, "to": target, "by": by})
            self.history = self.history[-_HISTORY_KEPT:]
            self._save()
            log.info("switched %s -> %s by %s", previous, target, by)
        return {"active": self.active, "previous": previous, "changed": changed}

    def mark(self, listname: str, target: str, on: bool) -> dict[str, Any]:
        items: list[str] = getattr(self, listname)
        changed = (target in items) != on
        if changed:
            if on:
                items.append(target)
            else:
                items.remove(target)
            self._save()
        return {listname: list(items), "changed": changed}


@dataclass
class LBOptions:
    """Health checks, timeouts and the write feed (defaults: HAProxy's `inter 2s fall 3 rise 2`,
    one batch of 20 rows a second)."""

    health_interval: float = 2.0
    health_timeout: float = 1.0
    health_fall: int = 3
    health_rise: int = 2
    backend_timeout: float = 10.0
    feed_interval: float = 1.0
    feed_rows: int = 20


@dataclass
class ServerStats:
    """One backend's counters and health, as HAProxy keeps them per server."""

    requests: int = 0
    responses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CODE_CLASSES, 0))
    connection_errors: int = 0
    response_times: deque[float] = field(default_factory=lambda: deque(maxlen=_RESPONSE_TIMES_KEPT))
    # health
    state: str = "UP"
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    check_failures: int = 0
    last_check_at: str | None = None
    last_error: str | None = None
    # feed
    feed_batches: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})
    feed_rows: int = 0

    def response(self, status: int, seconds: float) -> None:
        klass = f"{status // 100}xx" if 100 <= status < 600 else "other"
        self.responses[klass] += 1
        self.response_times.append(seconds)

    def check(self, error: str | None, opts: LBOptions, name: str) -> None:
        """Count one health check; UP/DOWN changes after rise/fall in a row, like HAProxy."""
        self.last_check_at = _now()
        if error is None:
            self.consecutive_failures = 0
            self.consecutive_successes += 1
            if self.state == "DOWN" and self.consecutive_successes >= opts.health_rise:
                self.state = "UP"
                log.warning("%s is UP (%d checks passed)", name, self.consecutive_successes)
            return
        self.last_error = error
        self.check_failures += 1
        self.consecutive_successes = 0
        self.consecutive_failures += 1
        if self.state == "UP" and self.consecutive_failures >= opts.health_fall:
            self.state = "DOWN"
            log.warning("%s is DOWN (%d checks failed: %s)", name, self.consecutive_failures, error)

    def health(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "last_check_at": self.last_check_at,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
        }


@dataclass
class Forwarded:
    """What became of one request sent to a backend: a response, or why there is none."""

    response: httpx.Response | None
    status: int  # the backend's, or the LB's own 502/504
    error: str | None = None


def _metrics_text(state: LBState, stats: dict[str, ServerStats]) -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], Any]]):
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"{name}{{{text}}} {value}")

    def per_server(fn: Any) -> list[tuple[dict[str, str], Any]]:
        return [({"proxy": PROXY_NAME, "server": b}, fn(b, stats[b])) for b in BACKENDS]

    metric(
        "haproxy_backend_http_requests_total",
        "counter",
        "Total number of HTTP requests forwarded to the server.",
        per_server(lambda b, s: s.requests),
    )
    metric(
        "haproxy_server_http_responses_total",
        "counter",
        "Total number of HTTP responses from the server, by status class.",
        [
            ({"proxy": PROXY_NAME, "server": b, "code": code}, stats[b].responses[code])
            for b in BACKENDS
            for code in CODE_CLASSES
        ],
    )
    metric(
        "haproxy_server_connection_errors_total",
        "counter",
        "Requests that got no response: connection failures and timeouts.",
        per_server(lambda b, s: s.connection_errors),
    )
    metric(
        "haproxy_server_status",
        "gauge",
        "Current status of the server (health checks), 1 for the state it is in.",
        [
            ({"proxy": PROXY_NAME, "server": b, "state": st}, int(stats[b].state == st))
            for b in BACKENDS
            for st in ("UP", "DOWN")
        ],
    )
    metric(
        "haproxy_server_check_failures_total",
        "counter",
        "Total number of failed health checks.",
        per_server(lambda b, s: s.check_failures),
    )
    metric(
        "haproxy_server_response_time_average_seconds",
        "gauge",
        "Average response time of the last 1024 responses.",
        per_server(
            lambda b, s: (
                round(sum(s.response_times) / len(s.response_times), 6) if s.response_times else 0
            )
        ),
    )
    metric(
        "haproxy_server_active",
        "gauge",
        "1 for the server that receives the traffic (the active environment).",
        per_server(lambda b, s: int(state.active == b)),
    )
    metric(
        "tbs_feed_batches_total",
        "counter",
        "Write batches the feed sent, by the server they went to and the outcome.",
        [
            ({"server": b, "result": r}, stats[b].feed_batches[r])
            for b in BACKENDS
            for r in ("ok", "failed")
        ],
    )
    metric(
        "tbs_feed_rows_total",
        "counter",
        "Rows the servers acknowledged to the feed.",
        [({"server": b}, stats[b].feed_rows) for b in BACKENDS],
    )
    return "\n".join(lines) + "\n"


def create_app(
    backends: dict[str, str],
    state_file: Path,
    token: str | None = None,
    initial: str = "green",
    options: LBOptions | None = None,
) -> Starlette:
    opts = options or LBOptions()
    state = LBState(state_file, backends, initial)
    stats = {b: ServerStats() for b in BACKENDS}
    access: deque[dict[str, Any]] = deque(maxlen=_LOG_KEPT)
    hits: dict[str, deque[float]] = {}
    # HAProxy's `timeout server`: no answer within backend_timeout -> 504.
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(opts.backend_timeout, connect=min(5.0, opts.backend_timeout)),
        follow_redirects=False,
    )
    # Health checks open a fresh connection each time, as HAProxy's do: a backend that stopped
    # accepting must not hide behind a kept-alive connection.
    checker = httpx.AsyncClient(
        timeout=httpx.Timeout(opts.health_timeout),
        limits=httpx.Limits(max_keepalive_connections=0),
        follow_redirects=False,
    )
    feed_tasks: set[asyncio.Task[None]] = set()

    async def forward(
        target: str, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> Forwarded:
        """Send one request to a backend, counting it the way HAProxy's exporter does."""
        server = stats[target]
        server.requests += 1
        url = state.backends[target].rstrip("/") + path
        started = time.monotonic()
        try:
            resp = await client.request(method, url, headers=headers, content=body)
        except httpx.TimeoutException as exc:
            server.connection_errors += 1
            if isinstance(exc, httpx.ConnectTimeout):
                return Forwarded(None, 502, f"backend {target} unreachable: {type(exc).__name__}")
            return Forwarded(
                None,
                504,
                f"backend {target} did not answer within {opts.backend_timeout:g}s",
            )
        except httpx.HTTPError as exc:
            server.connection_errors += 1
            return Forwarded(None, 502, f"backend {target} unreachable: {type(exc).__name__}")
        server.response(resp.status_code, time.monotonic() - started)
        return Forwarded(resp, resp.status_code)

    def unauthorized(request: Request) -> Response | None:
        if not token:
            return None
        given = request.headers.get("authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip(), token):
            return None
        return JSONResponse(
            {"error": "unauthorized: admin calls need Authorization: Bearer <token>"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def body_json(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise ValueError("body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        return data

    def actor(request: Request, data: dict[str, Any]) -> str:
        return str(data.get("by") or request.headers.get("x-actor") or "api")

    async def status(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        return JSONResponse({**state.as_dict(), "health": {b: stats[b].health() for b in BACKENDS}})

    async def lb_metrics(request: Request) -> Response:
        return Response(_metrics_text(state, stats), media_type="text/plain; version=0.0.4")

    async def redirect_blue(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        try:
            data = await body_json(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return _switch("blue", actor(request, data))

    async def switch(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        try:
            data = await body_json(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        target = data.get("target")
        if target not in BACKENDS:
            return JSONResponse(
                {"error": f"target must be one of {', '.join(BACKENDS)} (got {target!r})"},
                status_code=400,
            )
        return _switch(target, actor(request, data))

    def _switch(target: str, by: str) -> Response:
        if target in state.denied and target != state.active:
            return JSONResponse(
                {"error": f"{target} is isolated (denied); restore it before switching to it"},
                status_code=409,
            )
        return JSONResponse(state.switch(target, by))

    def marker(listname: str, on: bool):  # type: ignore[no-untyped-def]
        async def endpoint(request: Request) -> Response:
            if (denied := unauthorized(request)) is not None:
                return denied
            try:
                data = await body_json(request)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            target = data.get("target")
            if target not in BACKENDS:
                return JSONResponse(
                    {"error": f"target must be one of {', '.join(BACKENDS)} (got {target!r})"},
                    status_code=400,
                )
            return JSONResponse(state.mark(listname, target, on))

        return endpoint

    def record(request: Request, status: int, backend: str | None, outcome: str) -> None:
        access.append(
            {
                "at": _now(),
                "client": request.client.host if request.client else "",
                "method": request.method,
                "path": request.url.path,
                "status": status,
                "backend": backend,
                "outcome": outcome,
            }
        )

    def allowed_source(host: str) -> bool:
        if not state.allowlist:
            return True
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        for net in state.allowlist:
            with contextlib.suppress(ValueError):
                if addr in ipaddress.ip_network(net, strict=False):
                    return True
        return False

    def over_limit(host: str, path: str) -> bool:
        limit = state.rate_limit
        if not limit or not limit.get("requests_per_minute"):
            return False
        prefixes = limit.get("paths") or []
        if prefixes and not any(path.startswith(p) for p in prefixes):
            return False
        now = time.monotonic()
        window = hits.setdefault(host, deque())
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= int(limit["requests_per_minute"]):
            return True
        window.append(now)
        return False

    def security_setter(field: str, parse: Any):  # type: ignore[no-untyped-def]
        async def endpoint(request: Request) -> Response:
            if (denied := unauthorized(request)) is not None:
                return denied
            try:
                data = await body_json(request)
                value = parse(data)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            if field == "rate_limit":
                hits.clear()
            return JSONResponse(state.set_value(field, value))

        return endpoint

    def parse_allowlist(data: dict[str, Any]) -> list[str] | None:
        networks = data.get("networks")
        if networks is None:
            return None
        if not isinstance(networks, list) or not networks:
            raise ValueError("networks must be a non-empty list of CIDRs, or null")
        for net in networks:
            try:
                ipaddress.ip_network(str(net), strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not a network") from None
        return [str(n) for n in networks]

    def parse_rate_limit(data: dict[str, Any]) -> dict[str, Any] | None:
        rpm = data.get("requests_per_minute")
        if rpm is None:
            return None
        if not isinstance(rpm, int) or isinstance(rpm, bool) or rpm < 1:
            raise ValueError("requests_per_minute must be a positive integer, or null")
        paths = data.get("paths") or []
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ValueError("paths must be a list of path prefixes")
        return {"requests_per_minute": rpm, "paths": paths}

    async def logs(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        since = request.query_params.get("since") or ""
        try:
            limit = max(1, min(_LOG_KEPT, int(request.query_params.get("limit") or _LOG_KEPT)))
        except ValueError:
            return JSONResponse({"error": "limit must be an integer"}, status_code=400)
        since_key = since.replace("+00:00", "Z")
        entries = [e for e in list(access) if not since_key or e["at"] >= since_key]
        return JSONResponse({"entries": entries[-limit:]})

    async def proxy(request: Request) -> Response:
        target = state.active
        host = request.client.host if request.client else ""
        if request.url.path.startswith("/_admin/"):
            record(request, 404, None, "not-forwarded")
            return JSONResponse({"error": "not found"}, status_code=404)
        if not allowed_source(host):
            record(request, 403, None, "denied-network")
            log.warning(
                "denied %s %s from %s (not an internal network)",
                request.method,
                request.url.path,
                host,
            )
            return JSONResponse(
                {"error": "access is restricted to internal networks"}, status_code=403
            )
        if over_limit(host, request.url.path):
            record(request, 429, None, "rate-limited")
            return JSONResponse(
                {"error": "too many requests (emergency rate limit)"},
                status_code=429,
                headers={"Retry-After": "60"},
            )
        if target in state.denied:
            record(request, 503, target, "isolated")
            return JSONResponse({"error": f"active backend {target} is isolated"}, status_code=503)
        path = request.url.path
        if request.url.query:
            path += "?" + request.url.query
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        # Only the LB's own feed may mark a request as the feed.
        headers.pop(FEED_HEADER, None)
        headers["x-forwarded-for"] = host
        result = await forward(target, request.method, path, headers, await request.body())
        upstream = result.response
        if upstream is None:
            record(
                request, result.status, target, "timeout" if result.status == 504 else "unreachable"
            )
            return JSONResponse(
                {"error": result.error},
                status_code=result.status,
                headers={"x-tbs-backend": target},
            )
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
        out_headers.pop("content-encoding", None)  # httpx already decoded the body
        out_headers["x-tbs-backend"] = target
        record(request, upstream.status_code, target, "forwarded")
        return Response(upstream.content, status_code=upstream.status_code, headers=out_headers)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    routes = [
        Route("/emergency/status", status, methods=["GET"]),
        Route("/emergency/redirect-blue", redirect_blue, methods=["POST"]),
        Route("/emergency/switch", switch, methods=["POST"]),
        Route("/emergency/drain", marker("draining", True), methods=["POST"]),
        Route("/emergency/undrain", marker("draining", False), methods=["POST"]),
        Route("/emergency/isolate", marker("denied", True), methods=["POST"]),
        Route("/emergency/restore", marker("denied", False), methods=["POST"]),
        Route(
            "/emergency/allowlist",
            security_setter("allowlist", parse_allowlist),
            methods=["POST"],
        ),
        Route(
            "/emergency/rate-limit",
            security_setter("rate_limit", parse_rate_limit),
            methods=["POST"],
        ),
        Route("/emergency/logs", logs, methods=["GET"]),
        Route("/_lb/metrics", lb_metrics, methods=["GET"]),
        Route("/{path:path}", proxy, methods=methods),
    ]

    async def check_once(name: str) -> None:
        url = state.backends[name].rstrip("/") + "/health"
        error: str | None = None
        try:
            # The timeout covers the whole check (httpx's is per read, a trickle could pass).
            resp = await asyncio.wait_for(checker.get(url), opts.health_timeout)
            if resp.status_code >= 500:
                error = f"HTTP {resp.status_code}"
        except TimeoutError:
            error = f"timed out after {opts.health_timeout:g}s"
        except httpx.TimeoutException:
            error = f"timed out after {opts.health_timeout:g}s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {str(exc)[:120]}"
        stats[name].check(error, opts, name)

    async def health_loop(name: str) -> None:
        while True:
            started = time.monotonic()
            try:
                await check_once(name)
            except Exception:
                log.exception("health check of %s failed", name)
            await asyncio.sleep(max(0.0, opts.health_interval - (time.monotonic() - started)))

    async def feed_once() -> None:
        target = state.active
        server = stats[target]
        if target in state.denied:
            server.feed_batches["failed"] += 1  # isolated: the users' writes go nowhere
            return
        body = json.dumps({"count": opts.feed_rows}).encode()
        headers = {"content-type": "application/json", FEED_HEADER: "1"}
        result = await forward(target, "POST", "/api/trades", headers, body)
        ok = result.response is not None and 200 <= result.status < 300
        server.feed_batches["ok" if ok else "failed"] += 1
        if ok and result.response is not None:
            with contextlib.suppress(ValueError, AttributeError):
                server.feed_rows += int(result.response.json().get("accepted") or 0)

    async def feed_loop() -> None:
        while True:
            started = time.monotonic()
            if len(feed_tasks) >= _FEED_MAX_IN_FLIGHT:
                stats[state.active].feed_batches["failed"] += 1
            else:
                # One task per batch: a slow backend delays its answer, not the next batch.
                task = asyncio.create_task(feed_once())
                feed_tasks.add(task)
                task.add_done_callback(feed_tasks.discard)
            await asyncio.sleep(max(0.0, opts.feed_interval - (time.monotonic() - started)))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loops = [asyncio.create_task(health_loop(b)) for b in BACKENDS]
        if opts.feed_rows > 0 and opts.feed_interval > 0:
            loops.append(asyncio.create_task(feed_loop()))
        try:
            yield
        finally:
            for task in [*loops, *feed_tasks]:
                task.cancel()
            await asyncio.gather(*loops, *feed_tasks, return_exceptions=True)
            await client.aclose()
            await checker.aclose()

    return Starlette(routes=routes, lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description="TBS load balancer stand-in")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--blue", required=True, help="blue backend base URL")
    parser.add_argument("--green", required=True, help="green backend base URL")
    parser.add_argument("--state-file", type=Path, required=True)
    parser.add_argument("--initial", choices=BACKENDS, default="green")
    parser.add_argument("--token-env", help="environment variable holding the admin token")
    parser.add_argument("--health-interval", type=float, default=2.0, help="seconds between checks")
    parser.add_argument("--health-timeout", type=float, default=1.0, help="seconds per check")
    parser.add_argument("--health-fall", type=int, default=3, help="failed checks -> DOWN")
    parser.add_argument("--health-rise", type=int, default=2, help="passed checks -> UP")
    parser.add_argument(
        "--backend-timeout",
        type=float,
        default=10.0,
        help="seconds before a forwarded request 504s",
    )
    parser.add_argument("--feed-interval", type=float, default=1.0, help="seconds between batches")
    parser.add_argument("--feed-rows", type=int, default=20, help="rows per batch; 0: no feed")
    args = parser.parse_args()
    for name in ("health_interval", "health_timeout", "backend_timeout", "feed_interval"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.health_fall < 1 or args.health_rise < 1:
        parser.error("--health-fall and --health-rise must be at least 1")
    if not 0 <= args.feed_rows <= 100:
        parser.error("--feed-rows must be between 0 and 100 (the app takes at most 100 a batch)")
    token = os.environ.get(args.token_env) if args.token_env else None
    options = LBOptions(
        health_interval=args.health_interval,
        health_timeout=args.health_timeout,
        health_fall=args.health_fall,
        health_rise=args.health_rise,
        backend_timeout=args.backend_timeout,
        feed_interval=args.feed_interval,
        feed_rows=args.feed_rows,
    )
    app = create_app(
        {"blue": args.blue, "green": args.green},
        args.state_file,
        token or None,
        args.initial,
        options,
    )
    # httpx logs every request at INFO: the feed and the health checks alone would write
    # several lines a second. `/emergency/logs` and the metrics say what happened.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    run_uvicorn(app, args.host, args.port)


if __name__ == "__main__":
    main()
