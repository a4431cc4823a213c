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
  memory): outcome is forwarded, denied-network, rate-limited, isolated or unreachable.

Each answer of the security calls carries the value before (`previous`) and `changed`.
Requests under `/_admin/` (the apps' user administration) are never forwarded.

If `--token-env VAR` names a set variable, every `/emergency/` call needs
`Authorization: Bearer <value>` (401 otherwise). The acting party comes from the JSON field `by`
or the `X-Actor` header. The state (active backend, history, lists) lives in a JSON file, so a
restart keeps it. A fresh state starts with green active (green = new release, blue = last good).
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator
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


def create_app(
    backends: dict[str, str],
    state_file: Path,
    token: str | None = None,
    initial: str = "green",
) -> Starlette:
    state = LBState(state_file, backends, initial)
    access: deque[dict[str, Any]] = deque(maxlen=_LOG_KEPT)
    hits: dict[str, deque[float]] = {}
    client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0), follow_redirects=False)

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
        return JSONResponse(state.as_dict())

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
        url = state.backends[target].rstrip("/") + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        client_host = request.client.host if request.client else ""
        headers["x-forwarded-for"] = client_host
        try:
            upstream = await client.request(
                request.method, url, headers=headers, content=await request.body()
            )
        except httpx.HTTPError as exc:
            record(request, 502, target, "unreachable")
            return JSONResponse(
                {"error": f"backend {target} unreachable: {type(exc).__name__}"},
                status_code=502,
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
        Route("/{path:path}", proxy, methods=methods),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

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
    args = parser.parse_args()
    token = os.environ.get(args.token_env) if args.token_env else None
    app = create_app(
        {"blue": args.blue, "green": args.green}, args.state_file, token or None, args.initial
    )
    run_uvicorn(app, args.host, args.port)


if __name__ == "__main__":
    main()
