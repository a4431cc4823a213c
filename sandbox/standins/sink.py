"""The notification sink: records every delivery so tests and drills can read what was sent.

HTTP (`--port`):
- `POST /hooks/<channel>`: any webhook (Slack-style, generic, SMS or status-page webhooks); the
  JSON (or text) body, the headers minus Authorization, and the time are recorded. Answers 200
  `{"ok": true, "id": n}`.
- `POST /pagerduty/v2/enqueue`: PagerDuty Events API v2. Validates `routing_key` and
  `event_action` (trigger / acknowledge / resolve; trigger needs `payload.summary`, `.source`,
  `.severity`), answers 202 `{"status": "success", "message": "Event processed", "dedup_key"}`
  (a new key for a trigger without one), or 400 `{"status": "invalid event", ...}`.
- `GET /deliveries[?channel=x][&kind=webhook|pagerduty|smtp][&since_id=n]` lists what was
  recorded (oldest first); `DELETE /deliveries` forgets everything.
- `POST /_faults` `{"channel": "oncall", "status": 500, "count": 3}` makes the next `count`
  deliveries to that channel fail with `status` (to drill retries and escalation);
  `DELETE /_faults` clears them.

SMTP (`--smtp-port`): plain SMTP (HELO/EHLO, optional AUTH PLAIN/LOGIN accepted as anyone, MAIL,
RCPT, DATA, RSET, NOOP, QUIT), each message recorded under channel `email` with from, to,
subject, text body and the raw message.

Deliveries are appended to a JSONL file (`--store`) and reloaded on start.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import email
import email.policy
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.standins import run_uvicorn

log = logging.getLogger("sink")

_PD_ACTIONS = ("trigger", "acknowledge", "resolve")
_PD_SEVERITIES = ("critical", "error", "warning", "info")
_MAX_MESSAGE = 10 * 1024 * 1024


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Store:
    """Deliveries in memory and in a JSONL file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.failures: dict[str, dict[str, int]] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    self.items.append(json.loads(line))
        self._next = max((int(i.get("id", 0)) for i in self.items), default=0) + 1

    def add(self, record: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            record = {"id": self._next, "at": _now(), **record}
            self._next += 1
            self.items.append(record)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, default=str) + "\n")
        return record

    def clear(self) -> int:
        with self._lock:
            n = len(self.items)
            self.items.clear()
            self.path.write_text("")
        return n

    def take_failure(self, channel: str) -> int | None:
        """The status to fail this delivery with, if a failure is armed for the channel."""
        armed = self.failures.get(channel)
        if not armed or armed["count"] <= 0:
            return None
        armed["count"] -= 1
        if armed["count"] <= 0:
            self.failures.pop(channel, None)
        return armed["status"]


# ------------------------------------------------------------------------------------------------
# HTTP
# ------------------------------------------------------------------------------------------------


def create_app(store: Store) -> Starlette:
    def clean_headers(request: Request) -> dict[str, str]:
        return {k: v for k, v in request.headers.items() if k.lower() != "authorization"}

    async def parsed_body(request: Request) -> tuple[Any, str]:
        raw = await request.body()
        text = raw.decode("utf-8", errors="replace")
        try:
            return json.loads(text), "json"
        except ValueError:
            return text, "text"

    async def hook(request: Request) -> Response:
        channel = request.path_params["channel"]
        body, body_format = await parsed_body(request)
        failing = store.take_failure(channel)
        record = store.add(
            {
                "channel": channel,
                "kind": "webhook",
                "path": request.url.path,
                "query": request.url.query,
                "headers": clean_headers(request),
                "body": body,
                "body_format": body_format,
                "failed_with": failing,
            }
        )
        if failing:
            return JSONResponse({"ok": False, "error": "injected failure"}, status_code=failing)
        return JSONResponse({"ok": True, "id": record["id"]})

    async def pagerduty(request: Request) -> Response:
        body, _ = await parsed_body(request)
        errors = []
        if not isinstance(body, dict):
            errors.append("Event object is invalid")
            body = {"raw": body}
        else:
            if not body.get("routing_key"):
                errors.append("'routing_key' is missing or blank")
            action = body.get("event_action")
            if action not in _PD_ACTIONS:
                errors.append("'event_action' must be one of trigger, acknowledge, resolve")
            if action == "trigger":
                payload = body.get("payload")
                if not isinstance(payload, dict):
                    errors.append("'payload' is missing")
                else:
                    for field in ("summary", "source", "severity"):
                        if not payload.get(field):
                            errors.append(f"'payload.{field}' is missing or blank")
                    if payload.get("severity") and payload["severity"] not in _PD_SEVERITIES:
                        errors.append("'payload.severity' is invalid")
            elif action in ("acknowledge", "resolve") and not body.get("dedup_key"):
                errors.append("'dedup_key' is missing for acknowledge/resolve")
        dedup_key = (body.get("dedup_key") if isinstance(body, dict) else None) or uuid.uuid4().hex
        failing = store.take_failure("pagerduty")
        store.add(
            {
                "channel": "pagerduty",
                "kind": "pagerduty",
                "path": request.url.path,
                "headers": clean_headers(request),
                "body": body,
                "dedup_key": dedup_key,
                "accepted": not errors and not failing,
                "errors": errors,
                "failed_with": failing,
            }
        )
        if failing:
            return JSONResponse({"status": "error", "message": "injected failure"}, failing)
        if errors:
            return JSONResponse(
                {"status": "invalid event", "message": "Event object is invalid", "errors": errors},
                status_code=400,
            )
        return JSONResponse(
            {"status": "success", "message": "Event processed", "dedup_key": dedup_key},
            status_code=202,
        )

    async def deliveries(request: Request) -> Response:
        if request.method == "DELETE":
            return JSONResponse({"cleared": store.clear()})
        q = request.query_params
        items = store.items
        if channel := q.get("channel"):
            items = [i for i in items if i.get("channel") == channel]
        if kind := q.get("kind"):
            items = [i for i in items if i.get("kind") == kind]
        if since := q.get("since_id"):
            try:
                since_id = int(since)
            except ValueError:
                return JSONResponse({"error": "since_id must be an integer"}, status_code=400)
            items = [i for i in items if int(i.get("id", 0)) > since_id]
        return JSONResponse({"count": len(items), "deliveries": items})

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            store.failures.clear()
            return JSONResponse({"failures": {}})
        if request.method == "POST":
            body, _ = await parsed_body(request)
            if not isinstance(body, dict) or not body.get("channel"):
                return JSONResponse({"error": "need {channel, status, count}"}, status_code=400)
            status = int(body.get("status") or 500)
            count = int(body.get("count") or 1)
            if not 400 <= status <= 599 or count < 1:
                return JSONResponse(
                    {"error": "status must be 4xx/5xx and count >= 1"}, status_code=400
                )
            store.failures[str(body["channel"])] = {"status": status, "count": count}
        return JSONResponse({"failures": store.failures})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "deliveries": len(store.items)})

    routes = [
        Route("/hooks/{channel:path}", hook, methods=["POST", "PUT"]),
        Route("/pagerduty/v2/enqueue", pagerduty, methods=["POST"]),
        Route("/deliveries", deliveries, methods=["GET", "DELETE"]),
        Route("/_faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/health", health, methods=["GET"]),
    ]
    return Starlette(routes=routes)


# ------------------------------------------------------------------------------------------------
# SMTP
# ------------------------------------------------------------------------------------------------


class SmtpSession:
    """One SMTP conversation (RFC 5321 subset), recording each accepted message."""

    def __init__(self, store: Store, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.store = store
        self.reader = reader
        self.writer = writer
        self.helo: str | None = None
        self.reset()

    def reset(self) -> None:
        self.sender: str | None = None
        self.recipients: list[str] = []

    async def reply(self, text: str) -> None:
        self.writer.write(text.encode() + b"\r\n")
        await self.writer.drain()

    async def line(self) -> str | None:
        raw = await self.reader.readline()
        if not raw:
            return None
        return raw.decode("utf-8", errors="replace").rstrip("\r\n")

    async def run(self) -> None:
        await self.reply("220 tbs-sink ESMTP ready")
        while (line := await self.line()) is not None:
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                self.helo = arg
                self.reset()
                await self.reply(
                    "250-tbs-sink\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250 SIZE 10485760"
                )
            elif verb == "HELO":
                self.helo = arg
                self.reset()
                await self.reply("250 tbs-sink")
            elif verb == "AUTH":
                await self.auth(arg)
            elif verb == "MAIL":
                if not arg.upper().startswith("FROM:"):
                    await self.reply("501 Syntax: MAIL FROM:<address>")
                    continue
                self.reset()
                self.sender = _address(arg[5:])
                await self.reply("250 OK")
            elif verb == "RCPT":
                if self.sender is None:
                    await self.reply("503 Error: need MAIL command")
                elif not arg.upper().startswith("TO:"):
                    await self.reply("501 Syntax: RCPT TO:<address>")
                else:
                    self.recipients.append(_address(arg[3:]))
                    await self.reply("250 OK")
            elif verb == "DATA":
                if not self.recipients:
                    await self.reply("503 Error: need RCPT command")
                    continue
                await self.reply("354 End data with <CR><LF>.<CR><LF>")
                data = await self.data()
                if data is None:
                    return
                record = self.record(data)
                await self.reply(f"250 OK: queued as {record['id']}")
                self.reset()
            elif verb == "RSET":
                self.reset()
                await self.reply("250 OK")
            elif verb == "NOOP":
                await self.reply("250 OK")
            elif verb == "QUIT":
                await self.reply("221 Bye")
                return
            elif verb == "STARTTLS":
                await self.reply("454 TLS not available")
            else:
                await self.reply("502 Command not implemented")

    async def auth(self, arg: str) -> None:
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        if mechanism == "PLAIN":
            if not initial:
                await self.reply("334 ")
                await self.line()
            await self.reply("235 Authentication successful")
        elif mechanism == "LOGIN":
            if not initial:
                await self.reply("334 " + base64.b64encode(b"Username:").decode())
                await self.line()
            await self.reply("334 " + base64.b64encode(b"Password:").decode())
            await self.line()
            await self.reply("235 Authentication successful")
        else:
            await self.reply("504 Unrecognized authentication type")

    async def data(self) -> bytes | None:
        lines: list[bytes] = []
        size = 0
        while True:
            raw = await self.reader.readline()
            if not raw:
                return None
            if raw in (b".\r\n", b".\n"):
                return b"".join(lines)
            if raw.startswith(b".."):
                raw = raw[1:]
            size += len(raw)
            if size <= _MAX_MESSAGE:
                lines.append(raw)

    def record(self, data: bytes) -> dict[str, Any]:
        message = email.message_from_bytes(data, policy=email.policy.default)
        text = ""
        body = message.get_body(preferencelist=("plain", "html"))
        if body is not None:
            with contextlib.suppress(Exception):
                text = body.get_content()  # type: ignore[attr-defined]
        return self.store.add(
            {
                "channel": "email",
                "kind": "smtp",
                "from": self.sender,
                "to": list(self.recipients),
                "subject": str(message.get("Subject", "")),
                "headers": {k: str(v) for k, v in message.items()},
                "body": text,
                "raw": data.decode("utf-8", errors="replace"),
                "helo": self.helo,
            }
        )


def _address(text: str) -> str:
    text = text.strip()
    if text.startswith("<"):
        text = text[1 : text.find(">")] if ">" in text else text[1:]
    return text.split(" ")[0]


async def start_smtp(store: Store, host: str, port: int) -> asyncio.Server:
    """Listen for SMTP on host:port (raises if the port cannot be bound)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await SmtpSession(store, reader, writer).run()
        except (OSError, asyncio.IncompleteReadError) as exc:
            log.info("smtp: connection ended: %s", exc)
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    return await asyncio.start_server(handle, host, port, reuse_address=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="TBS notification sink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--store", type=Path, required=True, help="JSONL file of deliveries")
    args = parser.parse_args()
    store = Store(args.store)
    app = create_app(store)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        smtp = await start_smtp(store, args.host, args.smtp_port)
        yield
        smtp.close()

    app.router.lifespan_context = lifespan
    run_uvicorn(app, args.host, args.port)


if __name__ == "__main__":
    main()
