"""The TBS application of one environment: its `GET /health` document, over HTTP."""

from __future__ import annotations

from typing import Any

from tbs_emergency.connectors._common import probe
from tbs_emergency.connectors._http import HttpEndpoint
from tbs_emergency.connectors.base import Probe
from tbs_emergency.errors import ConnectorError


class HttpApp:
    def __init__(self, app_url: str, timeout_s: float, name: str = "app") -> None:
        self.name = name
        self.app_url = app_url
        self._http = HttpEndpoint(name, app_url, timeout_s)

    def health(self) -> dict[str, Any]:
        """The JSON of `GET {app_url}/health`.

        An unhealthy app may answer 503 with its health document: that is still an answer and
        is returned (with `http_status` added); any other failure raises.
        """
        op = "read health"
        resp = self._http.request("GET", "/health", op)
        if 200 <= resp.status < 300 or resp.status == 503:
            try:
                body = resp.json()
            except ValueError:
                body = None
            if isinstance(body, dict):
                body.setdefault("http_status", resp.status)
                return body
            if resp.status == 503:
                raise self._http.status_error(op, resp)
            raise ConnectorError(
                self.name, op, f"HTTP {resp.status}: the answer is not a JSON object"
            )
        raise self._http.status_error(op, resp)

    # -- the write ledger (docs/sandbox.md "The ledger"; rollback: carrying writes) -----------

    def ledger(self, since: str | None = None, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Every write the application saw committed (`GET /_ledger[?since=ISO]`), in commit
        order: `[{"table", "store", "key": {column: value}, "at"}, ...]`. Raises on any
        failure (a ledger that cannot be read is never an empty one)."""
        op = "read the write ledger"
        params = {"since": since} if since else None
        resp = self._http.request("GET", "/_ledger", op, params=params, timeout_s=timeout_s)
        if not 200 <= resp.status < 300:
            raise self._http.status_error(op, resp)
        body = self._http.json_of(op, resp)
        writes = body.get("writes") if isinstance(body, dict) else None
        if not isinstance(writes, list):
            raise ConnectorError(self.name, op, 'the answer has no "writes" list')
        return writes

    # -- user administration (security procedures, docs/security.md) --------------------------
    # `GET /_admin/users/<name>` -> {"user", "active", "role"};
    # `POST /_admin/users/<name>` {"active": bool} -> {"user", "active", "previous", "changed"}.

    def user(self, username: str) -> dict[str, Any]:
        """The application's account of username (NotFound when there is none)."""
        op = f"read user {username}"
        resp = self._http.request("GET", f"/_admin/users/{_path(username)}", op)
        return self._user_answer(op, resp)

    def set_user_active(self, username: str, active: bool) -> dict[str, Any]:
        """Enable or disable an application account; the answer (previous, changed)."""
        op = f"{'enable' if active else 'disable'} user {username}"
        resp = self._http.request(
            "POST", f"/_admin/users/{_path(username)}", op, json={"active": active}
        )
        return self._user_answer(op, resp)

    def _user_answer(self, op: str, resp: Any) -> dict[str, Any]:
        if not 200 <= resp.status < 300:
            raise self._http.status_error(op, resp)
        body = self._http.json_of(op, resp)
        if not isinstance(body, dict) or "active" not in body:
            raise ConnectorError(self.name, op, "the answer is not a user document")
        return body

    def ping(self) -> Probe:
        def check() -> str:
            body = self.health()
            return f"{self._http.redacted()} status: {body.get('status', '?')}"

        return probe(self.name, check)

    def close(self) -> None:
        self._http.close()


def _path(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
