"""Record a command's run in Prefect over its REST API, without importing Prefect.

Importing Prefect costs seconds; an emergency command (`tbs-emergency redirect blue`) must act
as fast as the runbook's curl. So the command acts through the connectors and then records what
it did as a flow run of the same flow (`traffic_redirect`), in a final state, with its
parameters, tags and a few log lines: the Prefect UI shows it beside every other run. Recording
is best effort and bounded: a short connect timeout, and a server that cannot be reached is
reported (`PrefectUnavailable`), never waited for.

The API URL is the one the CLI settled on (env PREFECT_API_URL, else `[prefect] api_url`); an
API key in PREFECT_API_KEY is sent as a bearer token (Prefect Cloud).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

from tbs_emergency.connectors._http import HttpEndpoint
from tbs_emergency.errors import ConnectorError

SYSTEM = "prefect"
_LEVELS = {"info": 20, "warning": 30, "error": 40}


class PrefectUnavailable(ConnectorError):
    """The Prefect API could not be reached or refused the record."""


class PrefectRecorder:
    def __init__(self, api_url: str, connect_timeout_s: float = 1.0, timeout_s: float = 5.0):
        key = os.environ.get("PREFECT_API_KEY") or None
        self.api_url = api_url.rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self.http = HttpEndpoint(SYSTEM, self.api_url, timeout_s, token=key)

    def _call(self, method: str, path: str, operation: str, **kw: Any) -> Any:
        for attempt in range(3):
            try:
                resp = self.http.request(method, path, operation, **kw)
            except ConnectorError as exc:
                raise PrefectUnavailable(SYSTEM, operation, exc.detail) from None
            if resp.status not in (502, 503, 504) or attempt == 2:
                break
            time.sleep(0.25 * (attempt + 1))  # a busy server (SQLite locked): once more
        if resp.status >= 300:
            err = self.http.status_error(operation, resp)
            raise PrefectUnavailable(SYSTEM, operation, err.detail)
        return self.http.json_of(operation, resp) if resp.content else None

    def healthy(self) -> None:
        """Raise PrefectUnavailable unless the API answers within the connect timeout."""
        self._call("GET", "health", "health", timeout_s=self.connect_timeout_s)

    def record_flow_run(
        self,
        flow_name: str,
        *,
        run_name: str,
        parameters: dict[str, Any],
        tags: list[str],
        ok: bool,
        message: str,
        started: datetime,
        finished: datetime | None = None,
        logs: list[tuple[str, str]] = (),  # type: ignore[assignment]
    ) -> str:
        """Create a flow run of `flow_name` (Running, its log lines, then its final state);
        returns its id. The states carry the recording time (the API sets it); the command's
        own start is in the log lines."""
        self.healthy()
        flow = self._call("POST", "flows/", "create flow", json={"name": flow_name})
        finished = finished or datetime.now(UTC)
        run = self._call(
            "POST",
            "flow_runs/",
            "create flow run",
            json={
                "flow_id": flow["id"],
                "name": run_name,
                "parameters": parameters,
                "tags": tags,
                "state": {"type": "RUNNING", "name": "Running"},
            },
        )
        run_id = str(run["id"])
        if logs:
            self._call(
                "POST",
                "logs/",
                "write logs",
                json=[
                    {
                        "name": f"prefect.flow_runs.{flow_name}",
                        "level": _LEVELS.get(level, 20),
                        "message": text,
                        "timestamp": finished.isoformat(),
                        "flow_run_id": run_id,
                    }
                    for level, text in logs
                ],
            )
        self._call(
            "POST",
            f"flow_runs/{run_id}/set_state",
            "set final state",
            json={
                "state": {
                    "type": "COMPLETED" if ok else "FAILED",
                    "name": "Completed" if ok else "Failed",
                    "message": message,
                },
                "force": True,
            },
        )
        return run_id

    def close(self) -> None:
        self.http.close()
