"""The sandbox's fault kinds, their validation, and the book the stand-ins keep them in.

Shared by the app stand-in, the network path (`sandbox.standins.netpath`) and `world.fault`.

Faults of the app (`APP_FAULT_KINDS`, injected into the app process):

- `throughput`: magnitude = fraction of throughput lost, 0-1 (default 0.6):
  `tbs_rows_ingested_total` advances that much slower.
- `errors`: magnitude = error rate in percent (default 20): simulated and real API requests
  fail at that rate (HTTP 500).
- `cpu`, `memory`, `disk`: magnitude = the usage percent the gauge reports (98, 97, 95).
- `app-hang`: no magnitude: the app accepts connections and answers nothing but its control
  paths (`/_faults`, `/_ledger`).

Faults of the environment's network path to its stores (`DB_FAULT_KINDS`, injected into the
netpath process; the app forwards them there):

- `db-down`: no magnitude: the environment's database proxies refuse and drop connections.
- `db-slow`: magnitude = seconds added to every database reply (default 2).

Faults the sandbox world carries out itself (`WORLD_FAULT_KINDS`: it stops a process or
destroys data); no magnitude. The stand-ins refuse them, with a message saying where they belong.

A fault optionally expires after `duration` seconds. `db-down` and `db-slow` may name one database
(`db`: "mysql" or "heavydb"); without it they hit both.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

APP_FAULT_KINDS = ("throughput", "errors", "cpu", "memory", "disk", "app-hang")
DB_FAULT_KINDS = ("db-down", "db-slow")
WORLD_FAULT_KINDS = frozenset(
    {"app-down", "s3-down", "prometheus-down", "redis-down", "mysql-lost"}
)
# Everything `world.fault` may be asked for, in a stable order for help texts.
FAULT_KINDS = (*APP_FAULT_KINDS, *DB_FAULT_KINDS, *sorted(WORLD_FAULT_KINDS))
DB_NAMES = ("mysql", "heavydb")
DEFAULT_MAGNITUDE: dict[str, float | None] = {
    "throughput": 0.6,
    "errors": 20.0,
    "cpu": 98.0,
    "memory": 97.0,
    "disk": 95.0,
    "db-slow": 2.0,
}
# Kinds that are on or off: a magnitude would mean nothing.
_NO_MAGNITUDE = frozenset({"db-down", "app-hang", *WORLD_FAULT_KINDS})
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
    if kind in _NO_MAGNITUDE:
        if magnitude is not None:
            raise FaultSpecError(f"{kind} takes no magnitude")
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
        if kind not in DB_FAULT_KINDS:
            raise FaultSpecError(f"{kind}: only db-down and db-slow take a db")
        if db not in DB_NAMES:
            raise FaultSpecError(f"db must be one of {', '.join(DB_NAMES)} (got {db!r})")
    return {"kind": kind, "magnitude": value, "duration": duration, "db": db}


def validate_request(data: Any, accepts: Collection[str], component: str) -> dict[str, Any]:
    """Validate a `POST /_faults` body for a stand-in that takes the kinds in `accepts`.

    Kinds that exist but belong elsewhere get a message naming where (the world, the app, the
    network path) rather than "unknown", so a caller posting to the wrong place learns why."""
    if not isinstance(data, dict):
        raise FaultSpecError("body must be a JSON object")
    kind = data.get("kind")
    if kind in WORLD_FAULT_KINDS:
        raise FaultSpecError(f"{kind} is handled by the sandbox world, not the {component}")
    if kind in FAULT_KINDS and kind not in accepts:
        owner = "app" if kind in APP_FAULT_KINDS else "network path"
        raise FaultSpecError(f"{kind} is a fault of the {owner}, not of the {component}")
    return validate_fault(kind, data.get("magnitude"), data.get("duration"), data.get("db"))


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(t: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, the format every stand-in answers with."""
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Fault:
    kind: str
    magnitude: float | None
    duration: float | None
    db: str | None
    started_at: dt.datetime
    expires_mono: float | None

    def as_dict(self) -> dict[str, Any]:
        remaining = None
        expires_at = None
        if self.expires_mono is not None:
            remaining = max(0.0, self.expires_mono - time.monotonic())
            expires_at = iso(_utcnow() + dt.timedelta(seconds=remaining))
        return {
            "kind": self.kind,
            "magnitude": self.magnitude,
            "duration": self.duration,
            "db": self.db,
            "started_at": iso(self.started_at),
            "expires_at": expires_at,
            "remaining_s": None if remaining is None else round(remaining, 3),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        """Rebuild a fault from another stand-in's `as_dict()` (the app mirrors the netpath's)."""
        try:
            started = dt.datetime.fromisoformat(str(data.get("started_at")))
        except ValueError:
            started = _utcnow()
        remaining = data.get("remaining_s")
        return cls(
            kind=str(data.get("kind")),
            magnitude=data.get("magnitude"),
            duration=data.get("duration"),
            db=data.get("db"),
            started_at=started,
            expires_mono=None if remaining is None else time.monotonic() + float(remaining),
        )


class FaultBook:
    """The active faults of one stand-in, at most one per kind; expired ones drop out on read."""

    def __init__(self) -> None:
        self._faults: dict[str, Fault] = {}

    def add(self, spec: dict[str, Any]) -> Fault:
        """Inject a validated fault (see validate_fault); it replaces one of the same kind."""
        duration = spec["duration"]
        fault = Fault(
            kind=spec["kind"],
            magnitude=spec["magnitude"],
            duration=duration,
            db=spec["db"],
            started_at=_utcnow(),
            expires_mono=None if duration is None else time.monotonic() + duration,
        )
        self._faults[fault.kind] = fault
        return fault

    def put(self, fault: Fault) -> None:
        self._faults[fault.kind] = fault

    def active(self) -> dict[str, Fault]:
        now = time.monotonic()
        for kind, f in list(self._faults.items()):
            if f.expires_mono is not None and f.expires_mono <= now:
                del self._faults[kind]
        return self._faults

    def get(self, kind: str) -> Fault | None:
        return self.active().get(kind)

    def value(self, kind: str) -> float | None:
        f = self.get(kind)
        return None if f is None else f.magnitude

    def clear(self, kind: str | None = None) -> list[str]:
        cleared = [k for k in list(self._faults) if kind in (None, k)]
        for k in cleared:
            del self._faults[k]
        return cleared

    def replace(self, faults: Collection[Fault]) -> None:
        self._faults = {f.kind: f for f in faults}

    def as_list(self) -> list[dict[str, Any]]:
        return [f.as_dict() for f in self.active().values()]
