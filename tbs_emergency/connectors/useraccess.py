"""User access through the load balancer: does a user's session still work, and who serves it.

The runbook's `verify-user-access.sh --sample-users=N`: `GET /api/me` with a session id, through
the public entry point, answered with the session and the environment that served it
(`served_by`; the load balancer stand-in also says `X-Tbs-Backend`). Session ids are bearer
secrets: they are sent, never returned or logged.
"""

from __future__ import annotations

from typing import Any

from tbs_emergency.connectors._http import HttpEndpoint
from tbs_emergency.errors import ConnectorError


class UserAccess:
    def __init__(self, base_url: str, timeout_s: float = 5.0, name: str = "user-access") -> None:
        self.name = name
        self._http = HttpEndpoint(name, base_url, timeout_s)

    def me(self, session_id: str) -> dict[str, Any]:
        """`{"served_by": env, "user": ...}` for a working session; raises otherwise."""
        op = "read /api/me"
        resp = self._http.request("GET", "/api/me", op, headers={"X-Session-Id": session_id})
        if resp.status != 200:
            raise self._http.status_error(op, resp, detail=f"HTTP {resp.status}")
        body = self._http.json_of(op, resp)
        if not isinstance(body, dict):
            raise ConnectorError(self.name, op, "the answer is not a JSON object")
        served = body.get("served_by") or resp.headers.get("x-tbs-backend")
        session = body.get("session") or {}
        return {"served_by": served, "user": session.get("user") or session.get("username")}

    def anonymous(self) -> dict[str, Any]:
        """`GET /` through the entry point without a session: `{"served_by", "status"}`; raises
        unless it answers 200 (a user reaching the application, when no session exists)."""
        op = "read /"
        resp = self._http.request("GET", "/", op)
        if resp.status != 200:
            raise self._http.status_error(op, resp, detail=f"HTTP {resp.status}")
        served = resp.headers.get("x-tbs-backend") or resp.headers.get("x-tbs-env")
        return {"served_by": served, "status": resp.status}

    def login(self, username: str, password: str) -> str:
        """`POST /login` through the entry point: the new session's id (a bearer secret: the
        caller keeps it to itself); raises unless it answers 200 with one."""
        op = f"log in as {username}"
        resp = self._http.request(
            "POST", "/login", op, json={"username": username, "password": password}
        )
        if resp.status != 200:
            raise self._http.status_error(op, resp, detail=f"HTTP {resp.status}")
        body = self._http.json_of(op, resp)
        sid = body.get("session_id") if isinstance(body, dict) else None
        if not sid:
            raise ConnectorError(self.name, op, "the answer has no session_id")
        return str(sid)

    def close(self) -> None:
        self._http.close()
