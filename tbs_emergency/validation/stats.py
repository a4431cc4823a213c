"""Percentiles and latency summaries (runbook: "API response time ... p50, p95, p99")."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between closest ranks.

    Same definition as numpy's default ("linear", Hyndman-Fan type 7): p50 of [1, 2, 3, 4] is
    2.5, p0 is the minimum, p100 the maximum. None for no values.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError("a percentile lies between 0 and 100")
    data = sorted(float(v) for v in values)
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return data[lo]
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


class LatencySummary(BaseModel):
    """What a series of timed requests came to. Latencies are of the requests that answered."""

    samples: int
    errors: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    max_ms: float | None = None

    @property
    def error_percent(self) -> float:
        return 100.0 * self.errors / self.samples if self.samples else 0.0

    def line(self) -> str:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.0f}"

        return (
            f"p50 {ms(self.p50_ms)} ms, p95 {ms(self.p95_ms)} ms, p99 {ms(self.p99_ms)} ms,"
            f" mean {ms(self.mean_ms)} ms over {self.samples} samples"
            + (f", {self.errors} failed" if self.errors else "")
        )


def summarize(latencies_ms: Sequence[float], errors: int = 0) -> LatencySummary:
    """Summary of the answered requests' latencies plus the count of failed ones."""
    data = [float(v) for v in latencies_ms]

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 3)

    return LatencySummary(
        samples=len(data) + errors,
        errors=errors,
        p50_ms=r(percentile(data, 50)),
        p95_ms=r(percentile(data, 95)),
        p99_ms=r(percentile(data, 99)),
        mean_ms=r(sum(data) / len(data)) if data else None,
        max_ms=r(max(data)) if data else None,
    )
