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

    def ping(self) -> Probe:
        def check() -> str:
            body = self.health()
            return f"{self._http.redacted()} status: {body.get('status', '?')}"

        return probe(self.name, check)

    def close(self) -> None:
        self._http.close()
