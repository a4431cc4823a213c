"""A Prometheus text-format endpoint read directly (not through Prometheus): the load
balancer's per-backend metrics (`/_lb/metrics`, HAProxy exporter names) and an application's
own `/metrics`. The rollback confirms a breach and blue's recovery from these, a different
system from the Prometheus that fired the trigger (tbs_emergency.domain.secondsource).
"""

from __future__ import annotations

from tbs_emergency.connectors._common import probe
from tbs_emergency.connectors._http import HttpEndpoint
from tbs_emergency.connectors.base import Probe
from tbs_emergency.domain.secondsource import Sample, parse_exposition


class MetricsEndpoint:
    def __init__(self, url: str, timeout_s: float, name: str) -> None:
        self.name = name
        self._http = HttpEndpoint(name, url, timeout_s)

    def scrape(self) -> list[Sample]:
        """Every sample the endpoint exposes now."""
        op = "scrape metrics"
        resp = self._http.request("GET", "", op)
        if not 200 <= resp.status < 300:
            raise self._http.status_error(op, resp)
        return parse_exposition(resp.text)

    def ping(self) -> Probe:
        return probe(self.name, lambda: f"{self._http.redacted()}: {len(self.scrape())} samples")

    def close(self) -> None:
        self._http.close()
