"""Prometheus, through its HTTP API (`/api/v1/query`, `/api/v1/query_range`, `/-/ready`).

Prometheus error answers (`{"status": "error", "errorType": ..., "error": ...}`) become the
project's errors: `bad_data` (the PromQL is wrong) is Refused, `timeout` is TimedOut,
`unavailable` is Unreachable, anything else a ConnectorError with Prometheus's own words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tbs_emergency.config import MetricsConfig
from tbs_emergency.connectors._common import probe
from tbs_emergency.connectors._http import HttpEndpoint, HttpResponse
from tbs_emergency.connectors.base import MetricSample, Probe
from tbs_emergency.errors import ConnectorError, Refused, TimedOut, Unreachable

Series = tuple[Mapping[str, str], list[tuple[float, float]]]


class PrometheusMetrics:
    def __init__(self, config: MetricsConfig, name: str = "prometheus") -> None:
        self.config = config
        self.name = name
        self._http = HttpEndpoint(name, config.prometheus_url, config.timeout_s)

    # -- errors -------------------------------------------------------------------------------

    def _data(self, operation: str, resp: HttpResponse) -> dict[str, Any]:
        """The `data` of a Prometheus API answer, or the matching error."""
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            if 200 <= resp.status < 300:
                raise ConnectorError(self.name, operation, "the answer is not Prometheus JSON")
            raise self._http.status_error(operation, resp)
        if body.get("status") == "success" and 200 <= resp.status < 300:
            data = body.get("data")
            if not isinstance(data, dict):
                raise ConnectorError(self.name, operation, "the answer has no data")
            return data
        kind = str(body.get("errorType") or "")
        message = str(body.get("error") or resp.text[:300])
        detail = f"{kind}: {message}" if kind else message
        if kind == "bad_data" or resp.status == 400:
            raise Refused(self.name, operation, detail)
        if kind == "timeout":
            raise TimedOut(self.name, operation, detail)
        if kind == "unavailable" or resp.status == 503:
            raise Unreachable(self.name, operation, detail)
        raise ConnectorError(self.name, operation, detail)

    def _query(self, path: str, operation: str, form: dict[str, str]) -> dict[str, Any]:
        # Prometheus stops evaluating at its own timeout; ours covers the network on top.
        form = {**form, "timeout": f"{self.config.timeout_s:g}s"}
        resp = self._http.request("POST", path, operation, data=form)
        return self._data(operation, resp)

    # -- the Metrics protocol -------------------------------------------------------------------

    def instant(self, promql: str, at: float | None = None) -> list[MetricSample]:
        """The value of promql now (or at the given unix time), one sample per series."""
        form = {"query": promql}
        if at is not None:
            form["time"] = _ts(at)
        data = self._query("/api/v1/query", f"query {promql!r}", form)
        kind, result = data.get("resultType"), data.get("result")
        if kind in ("scalar", "string"):
            ts, value = result  # type: ignore[misc]
            return [MetricSample({}, _float(value), float(ts))]
        if kind == "vector":
            return [
                MetricSample(dict(r.get("metric", {})), _float(r["value"][1]), float(r["value"][0]))
                for r in result or []
            ]
        if kind == "matrix":
            raise Refused(
                self.name,
                f"query {promql!r}",
                "a range vector was returned; use range() or wrap the selector in a function",
            )
        raise ConnectorError(self.name, f"query {promql!r}", f"unknown result type {kind!r}")

    def value(self, promql: str, at: float | None = None) -> float | None:
        """The single value of an aggregated query, None when it has no series."""
        samples = self.instant(promql, at)
        if not samples:
            return None
        if len(samples) > 1:
            raise ConnectorError(
                self.name, f"query {promql!r}", f"{len(samples)} series, expected one"
            )
        return samples[0].value

    def range(self, promql: str, start: float, end: float, step_s: float) -> list[Series]:
        """Each series over [start, end] every step_s seconds: (labels, [(t, value), ...])."""
        if step_s <= 0:
            raise ValueError("step_s must be positive")
        form = {"query": promql, "start": _ts(start), "end": _ts(end), "step": f"{step_s:g}"}
        data = self._query("/api/v1/query_range", f"query range {promql!r}", form)
        if data.get("resultType") != "matrix":
            raise ConnectorError(
                self.name, f"query range {promql!r}", f"unexpected {data.get('resultType')!r}"
            )
        return [
            (
                dict(r.get("metric", {})),
                [(float(t), _float(v)) for t, v in r.get("values", [])],
            )
            for r in data.get("result") or []
        ]

    def ping(self) -> Probe:
        def check() -> str:
            op = "readiness check"
            resp = self._http.request("GET", "/-/ready", op)
            if resp.status != 200:
                raise self._http.status_error(op, resp)
            return f"ready at {self._http.redacted()}"

        return probe(self.name, check)

    def close(self) -> None:
        self._http.close()


def _ts(t: float) -> str:
    return f"{t:.3f}"


def _float(value: Any) -> float:
    return float(value)  # Prometheus sends "NaN", "+Inf", "-Inf" as strings: float() reads them
