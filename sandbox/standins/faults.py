"""The faults the app stand-in takes, and their validation (shared by the app and `world.fault`).

- `throughput`: magnitude = fraction of throughput lost, 0-1 (default 0.6):
  `tbs_rows_ingested_total` advances that much slower.
- `errors`: magnitude = error rate in percent (default 20): simulated and real API requests
  fail at that rate (HTTP 500).
- `cpu`, `memory`, `disk`: magnitude = the usage percent the gauge reports (98, 97, 95).
- `db-down`: no magnitude: the environment's database proxies refuse and drop connections.
- `db-slow`: magnitude = seconds added to every database reply (default 2).

A fault optionally expires after `duration` seconds. `db-down` and `db-slow` may name one database
(`db`: "mysql" or "heavydb"); without it they hit both.
"""

from __future__ import annotations

import math
from typing import Any

FAULT_KINDS = ("throughput", "errors", "cpu", "memory", "disk", "db-down", "db-slow")
DB_NAMES = ("mysql", "heavydb")
DEFAULT_MAGNITUDE: dict[str, float | None] = {
    "throughput": 0.6,
    "errors": 20.0,
    "cpu": 98.0,
    "memory": 97.0,
    "disk": 95.0,
    "db-down": None,
    "db-slow": 2.0,
}
_RANGES: dict[str, tuple[float, float, str]] = {
    "throughput": (0.0, 1.0, "a fraction of throughput lost between 0 and 1 (0.6 = 60% lower)"),
    "errors": (0.0, 100.0, "an error rate in percent between 0 and 100"),
    "cpu": (0.0, 100.0, "a usage percentage between 0 and 100"),
    "memory": (0.0, 100.0, "a usage percentage between 0 and 100"),
    "disk": (0.0, 100.0, "a usage percentage between 0 and 100"),
    "db-slow": (0.0, 120.0, "added latency in seconds, between 0 and 120"),
}


class FaultSpecError(ValueError):
    """A fault request that does not make sense; the message is one line."""


def validate_fault(
    kind: Any, magnitude: Any = None, duration: Any = None, db: Any = None
) -> dict[str, Any]:
    """Return the normalised fault `{kind, magnitude, duration, db}` or raise FaultSpecError."""
    if kind not in FAULT_KINDS:
        raise FaultSpecError(f"unknown fault kind {kind!r} (known: {', '.join(FAULT_KINDS)})")
    if kind == "db-down":
        if magnitude is not None:
            raise FaultSpecError("db-down takes no magnitude")
        value: float | None = None
    else:
        if magnitude is None:
            magnitude = DEFAULT_MAGNITUDE[kind]
        if isinstance(magnitude, bool) or not isinstance(magnitude, int | float):
            raise FaultSpecError(f"{kind}: magnitude must be a number")
        value = float(magnitude)
        low, high, meaning = _RANGES[kind]
        if not math.isfinite(value) or not low <= value <= high:
            raise FaultSpecError(f"{kind}: magnitude {magnitude} out of range: {meaning}")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, int | float):
            raise FaultSpecError("duration must be a number of seconds")
        if not math.isfinite(duration) or duration <= 0:
            raise FaultSpecError("duration must be a positive number of seconds")
        duration = float(duration)
    if db is not None:
        if kind not in ("db-down", "db-slow"):
            raise FaultSpecError(f"{kind}: only db-down and db-slow take a db")
        if db not in DB_NAMES:
            raise FaultSpecError(f"db must be one of {', '.join(DB_NAMES)} (got {db!r})")
    return {"kind": kind, "magnitude": value, "duration": duration, "db": db}
