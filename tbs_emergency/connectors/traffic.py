"""Traffic switching between blue and green.

`HttpTraffic` is the load balancer's admin API (traffic.kind = "http"):

- `GET  {url}/emergency/status`         -> `{"active": "blue"|"green", "backends": {...}, ...}`
- `POST {url}/emergency/redirect-blue`  -> `{"active": "blue", "previous": ..., "changed": bool}`
- `POST {url}/emergency/switch` `{"target": "blue"|"green"}` -> the same shape

with `Authorization: Bearer <token>` when traffic.token is set. The HAProxy runtime-API and AWS
ALB adapters are not implemented yet: `make_traffic` says so with a ConnectorError.

Security procedures (docs/security.md) use more of the admin API, each call idempotent and
answering with the state before and after:

- `POST {url}/emergency/drain|undrain|isolate|restore` `{"target"}` (drain, deny a backend);
- `POST {url}/emergency/allowlist` `{"networks": [cidr, ...] | null}` (serve only these sources);
- `POST {url}/emergency/rate-limit` `{"requests_per_minute": n | null, "paths": [...]}`;
- `GET  {url}/emergency/logs?since=<iso>&limit=n` (the access log, newest last).
"""

from __future__ import annotations

from typing import Any, cast

from tbs_emergency.config import TrafficConfig
from tbs_emergency.connectors._common import probe
from tbs_emergency.connectors._http import HttpEndpoint, HttpResponse
from tbs_emergency.connectors.base import EnvName, Probe
from tbs_emergency.errors import ConnectorError

ENVIRONMENTS: tuple[EnvName, ...] = ("blue", "green")


class HttpTraffic:
    """The load balancer's HTTP admin API."""

    kind = "http"

    def __init__(self, config: TrafficConfig, name: str = "traffic") -> None:
        if not config.url:
            raise ConnectorError(name, "configure", "traffic.url is not set")
        self.config = config
        self.name = name
        token = config.token.get_secret_value() if config.token else None
        self._http = HttpEndpoint(name, config.url, config.timeout_s, token=token)

    def _env(self, operation: str, body: Any, field: str = "active") -> EnvName:
        value = body.get(field) if isinstance(body, dict) else None
        if value not in ENVIRONMENTS:
            raise ConnectorError(
                self.name, operation, f"the answer has no valid {field!r}: {str(body)[:200]}"
            )
        return cast(EnvName, value)

    def _checked(self, operation: str, resp: HttpResponse) -> dict[str, Any]:
        if not 200 <= resp.status < 300:
            raise self._http.status_error(operation, resp)
        body = self._http.json_of(operation, resp)
        if not isinstance(body, dict):
            raise ConnectorError(self.name, operation, f"expected a JSON object, got {body!r:.120}")
        return body

    def status(self) -> dict[str, Any]:
        """The whole status document (active environment, backends, ...)."""
        op = "read status"
        body = self._checked(op, self._http.request("GET", "/emergency/status", op))
        self._env(op, body)
        return body

    def active(self) -> EnvName:
        """The environment that has the traffic now."""
        return self._env("read active environment", self.status())

    def redirect_blue(self) -> dict[str, Any]:
        """The runbook's `POST /emergency/redirect-blue`; the answer (active, previous, changed)."""
        op = "redirect traffic to blue"
        body = self._checked(op, self._http.request("POST", "/emergency/redirect-blue", op))
        if self._env(op, body) != "blue":
            raise ConnectorError(self.name, op, f"blue is not active afterwards: {body}")
        return body

    def switch(self, env: EnvName) -> dict[str, Any]:
        """Send traffic to env through `/emergency/switch`; the answer."""
        if env not in ENVIRONMENTS:
            raise ValueError(f"unknown environment {env!r}")
        op = f"switch traffic to {env}"
        body = self._checked(
            op, self._http.request("POST", "/emergency/switch", op, json={"target": env})
        )
        if self._env(op, body) != env:
            raise ConnectorError(self.name, op, f"{env} is not active afterwards: {body}")
        return body

    def switch_to(self, env: EnvName) -> EnvName:
        """Send all traffic to env (blue through redirect-blue); the active environment after."""
        body = self.redirect_blue() if env == "blue" else self.switch(env)
        return self._env(f"switch traffic to {env}", body)

    # -- security procedures (docs/security.md) ---------------------------------------------

    def _post(self, path: str, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._checked(operation, self._http.request("POST", path, operation, json=body))

    def security_state(self) -> dict[str, Any]:
        """What the security steps change: draining, denied, allowlist, rate_limit."""
        body = self.status()
        return {
            "draining": list(body.get("draining") or []),
            "denied": list(body.get("denied") or []),
            "allowlist": body.get("allowlist"),
            "rate_limit": body.get("rate_limit"),
        }

    def set_draining(self, env: EnvName, on: bool) -> dict[str, Any]:
        """Mark env draining (no new sessions) or not; the answer (draining, changed)."""
        path = "/emergency/drain" if on else "/emergency/undrain"
        return self._post(path, f"{'drain' if on else 'undrain'} {env}", {"target": env})

    def set_denied(self, env: EnvName, on: bool) -> dict[str, Any]:
        """Deny env at the load balancer (network isolation) or restore it."""
        path = "/emergency/isolate" if on else "/emergency/restore"
        return self._post(path, f"{'isolate' if on else 'restore'} {env}", {"target": env})

    def set_allowlist(self, networks: list[str] | None) -> dict[str, Any]:
        """Serve only clients from these networks (None: everyone)."""
        op = "restrict access to networks" if networks else "lift the network restriction"
        return self._post("/emergency/allowlist", op, {"networks": networks})

    def set_rate_limit(
        self, requests_per_minute: int | None, paths: list[str] | None = None
    ) -> dict[str, Any]:
        """Per-client rate limit on paths (None: no limit)."""
        op = "set rate limit" if requests_per_minute else "lift the rate limit"
        return self._post(
            "/emergency/rate-limit",
            op,
            {"requests_per_minute": requests_per_minute, "paths": paths or []},
        )

    def access_log(self, since: str | None = None, limit: int = 10000) -> list[dict[str, Any]]:
        """The load balancer's access log entries since an ISO time (oldest first)."""
        op = "read access log"
        params: dict[str, Any] = {"limit": limit}
        if since:
            params["since"] = since
        body = self._checked(op, self._http.request("GET", "/emergency/logs", op, params=params))
        entries = body.get("entries")
        if not isinstance(entries, list):
            raise ConnectorError(self.name, op, "the answer has no 'entries' list")
        return entries

    def ping(self) -> Probe:
        def check() -> str:
            return f"admin API at {self._http.redacted()}, active: {self.active()}"

        return probe(self.name, check)

    def close(self) -> None:
        self._http.close()


def make_traffic(config: TrafficConfig, name: str = "traffic") -> HttpTraffic:
    """The adapter for traffic.kind."""
    if config.kind == "http":
        return HttpTraffic(config, name)
    raise ConnectorError(
        name,
        "configure",
        f"the {config.kind!r} traffic adapter is not implemented yet; use kind = 'http'",
    )


def unsupported(name: str, kind: str, operation: str) -> ConnectorError:
    """The error of a traffic adapter that cannot do a security operation (never faked)."""
    return ConnectorError(
        name,
        operation,
        f"the {kind!r} traffic adapter cannot do this; do it in the load balancer itself"
        " (HAProxy ACLs and stick tables, AWS WAF and security groups) or use traffic.kind"
        " 'http'",
    )


class UnsupportedSecurityOps:
    """Security operations for adapters that do not have them: each raises, saying so."""

    name: str
    kind: str

    def security_state(self) -> dict[str, Any]:
        raise unsupported(self.name, self.kind, "read security state")

    def set_draining(self, env: EnvName, on: bool) -> dict[str, Any]:
        raise unsupported(self.name, self.kind, f"{'drain' if on else 'undrain'} {env}")

    def set_denied(self, env: EnvName, on: bool) -> dict[str, Any]:
        raise unsupported(self.name, self.kind, f"{'isolate' if on else 'restore'} {env}")

    def set_allowlist(self, networks: list[str] | None) -> dict[str, Any]:
        raise unsupported(self.name, self.kind, "restrict access to networks")

    def set_rate_limit(
        self, requests_per_minute: int | None, paths: list[str] | None = None
    ) -> dict[str, Any]:
        raise unsupported(self.name, self.kind, "set rate limit")

    def access_log(self, since: str | None = None, limit: int = 10000) -> list[dict[str, Any]]:
        raise unsupported(self.name, self.kind, "read access log")
