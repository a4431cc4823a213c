"""The HTTP plumbing the HTTP-speaking connectors share (traffic, metrics, app, webhooks).

httpx is imported here and in no module above the connectors. Every request has a timeout;
transport failures become Unreachable/TimedOut naming the system, URLs are redacted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from tbs_emergency.connectors._common import redact_text, redact_url
from tbs_emergency.errors import ConnectorError, NotFound, Refused, TimedOut, Unreachable


class HttpResponse:
    """The parts of a response the connectors use (keeps httpx types inside this module)."""

    def __init__(self, status: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status = status
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        import json

        return json.loads(self.content)


class HttpEndpoint:
    """One HTTP system: a base URL, a timeout, optional bearer token, a pooled client."""

    def __init__(
        self,
        system: str,
        base_url: str,
        timeout_s: float,
        *,
        token: str | None = None,
        secrets: Iterable[str | None] = (),
    ) -> None:
        self.system = system
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._token = token
        self._secrets = [token, *secrets]
        self._client: Any = None
        self._lock = threading.Lock()

    def _http(self) -> Any:
        import httpx

        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    timeout=httpx.Timeout(self.timeout_s),
                    follow_redirects=False,
                    trust_env=False,
                )
            return self._client

    def url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/") if path else self.base_url

    def redacted(self, path: str = "") -> str:
        return redact_text(redact_url(self.url(path)), self._secrets)

    def request(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> HttpResponse:
        """Send one request; transport problems raise, any HTTP status is returned."""
        import httpx

        hdrs = dict(headers or {})
        if self._token:
            hdrs.setdefault("Authorization", f"Bearer {self._token}")
        kwargs: dict[str, Any] = {"headers": hdrs}
        if json is not None:
            kwargs["json"] = json
        if params is not None:
            kwargs["params"] = params
        if data is not None:
            kwargs["data"] = data
        if timeout_s is not None:
            kwargs["timeout"] = httpx.Timeout(timeout_s)
        try:
            resp = self._http().request(method, self.url(path), **kwargs)
        except httpx.TimeoutException:
            limit = timeout_s if timeout_s is not None else self.timeout_s
            raise TimedOut(
                self.system, operation, f"no answer from {self.redacted(path)} within {limit:g}s"
            ) from None
        except httpx.TransportError as exc:
            why = redact_text(str(exc) or type(exc).__name__, self._secrets)
            raise Unreachable(self.system, operation, f"{self.redacted(path)}: {why}") from None
        except httpx.InvalidURL as exc:
            raise ConnectorError(self.system, operation, f"invalid URL: {exc}") from None
        return HttpResponse(resp.status_code, dict(resp.headers), resp.content)

    def status_error(
        self, operation: str, resp: HttpResponse, detail: str | None = None
    ) -> ConnectorError:
        """The project's error for an HTTP status that means failure."""
        body = detail or redact_text(resp.text.strip()[:300], self._secrets) or "(empty body)"
        text = f"HTTP {resp.status} from {self.redacted()}: {body}"
        if resp.status in (401, 403, 400, 405, 409, 422):
            return Refused(self.system, operation, text)
        if resp.status == 404:
            return NotFound(self.system, operation, text)
        if resp.status in (502, 503, 504):
            return Unreachable(self.system, operation, text)
        return ConnectorError(self.system, operation, text)

    def json_of(self, operation: str, resp: HttpResponse) -> Any:
        try:
            return resp.json()
        except ValueError:
            raise ConnectorError(
                self.system,
                operation,
                f"HTTP {resp.status} from {self.redacted()} is not JSON: {resp.text[:120]!r}",
            ) from None

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
