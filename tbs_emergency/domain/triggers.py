"""Auto-rollback trigger rules and their exact evaluation (runbook: "Auto-Rollback Triggers").

The runbook's four YAML blocks are the defaults (`tbs_emergency.config.TriggersConfig`); every
duration is multiplied by `triggers.time_scale` (1.0 in production, e.g. 0.01 in drills).

Semantics, exactly
------------------
*Windows.* A windowed rule looks at the last N non-overlapping windows of its measurement period
P that end now: ``[now-N*P, now-(N-1)*P), ..., [now-P, now]``. Each window's value is one number
(Prometheus: ``rate(...[P])`` evaluated at the window's end, asked for with one range query of N
points and step P). Detection is therefore stateless: a watchdog that restarts in the middle of a
streak asks Prometheus for the same N windows and loses nothing.

*Breach: strictly beyond the threshold.* A value exactly at a threshold is not a breach:

- performance_degradation: a window breaches when its rows/s is more than `threshold`% below the
  baseline, computed without division as ``value * 100 < baseline * (100 - threshold)``
  (27,977.25 rows/s against 37,303 and 25% is exactly at the threshold: no breach).
- error_rate_spike: a window breaches when its error rate (percent) is ``> threshold``.
- resource_exhaustion: each signal (cpu, memory, disk) is sampled every `resolution` seconds over
  the sustained period; the signal breaches when every one of the
  ``ceil(sustained / resolution) + 1`` samples is ``> threshold`` (so the breach has lasted at
  least the sustained period).
- database_failures: counts and latencies of active probes (connect + ``SELECT 1``) of each
  database of the live environment within the last `time_window` seconds (half-open interval
  ``(now - window, now]``). It fires when the failures *reach* `connection_failures` (the runbook
  names the count that triggers: "3 connection failures") or when any answered probe took
  strictly longer than `response_time`. A probe that did not answer at all is a failure.

*Firing.* A windowed rule fires when its newest `consecutive` windows all breach; the streak is
counted from the newest window backwards and is broken by one good window. Windows end at the
evaluation time, and the watchdog evaluates every P/6, so the windows are not aligned to the
fault: each window's value is the average over its P seconds. A fault *shorter* than the
consecutive requirement (N x P) can therefore fire when the average of each of the N windows
breaches: a total outage of length D fires the performance rule (threshold q = 25%) as soon as
D > (N - 2 + 2q) x P, i.e. 1.5 x 600 s = 900 s at the defaults, not 1800 s. docs/rollback.md has
the table of the shortest fault that fires each rule at the defaults (tested in
tests/unit/test_trigger_edges.py).

*Fast P0 window* (multi-window alerting): a P0-grade breach (throughput more than 50% below the
baseline, or an error rate of 50% or more) sustained over `fast_p0.consecutive` windows of
`fast_p0.measurement_period` (default 3 x 60 s, scaled, never below `MIN_FAST_WINDOW_S` when
scaled down) fires P0 without waiting for the runbook's windows, which keep deciding P1-grade
breaches.

*Outage* (`OutageRule`): the load balancer's health view and the watchdog's own direct probes of
the live app (connect + GET /health, short timeout, every 2 s real time) count failures; N
failures of either source within the window (default 3 in 10 s, real time, never scaled) fire
P0 at once. A hung app is a failed probe (timeout).

*Authentication failures* (`AuthFailureRule`, P1): the login failure rate (failed logins / all
login attempts, percent, from the app's `tbs_logins_total`), the denominator never below
`min_attempts` per window, above the threshold for N consecutive windows.

*Missing data is never a breach and never silent.* A window without a value is not a breach and
ends a streak. When the newest window (or every probe in a database window) has no data, the
evaluation's status is ``blind``: the watchdog raises a P1 "monitoring blind" alert instead of
quietly reporting "ok".

*Severity from the present* (runbook "Severity Classification", see `severity`): the newest
window decides. Performance over 50% degradation is P0, 25-50% P1; error rate P0 from 50%
(inaccessible), else P1; resources P1; database P0 when every probe of the window failed, else
P1; outage P0; authentication failures P1; monitoring blind P1.

*Misconfigured.* A probe that fails because of the configuration or a credential (a Secret block
that cannot be read, access denied) is not a database failure: the evaluation's status is
``misconfigured`` (its own status, paged at once), and it never fires a rollback.

*Time scale.* `time_scale` multiplies measurement periods, sustained periods and the database
time window. Two floors apply when scaling down, because probes take real time that does not
scale: the database window is never below `MIN_DB_WINDOW_S` (it must hold a few real probes),
and the response-time threshold (a latency, scaled so drills can use short slow-downs) never
below `MIN_RESPONSE_TIME_S`, so that scheduler jitter on a busy machine cannot look like a slow
database.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from tbs_emergency.domain.severity import (
    Severity,
    database_severity,
    error_rate_severity,
    performance_severity,
)

MIN_RESPONSE_TIME_S = 2.5
MIN_DB_WINDOW_S = 3.0
MIN_PROBE_INTERVAL_S = 0.1
# Prometheus needs two scrapes in a rate() window (the sandbox scrapes every second).
MIN_FAST_WINDOW_S = 3.0

PERFORMANCE = "performance_degradation"
ERROR_RATE = "error_rate_spike"
RESOURCES = "resource_exhaustion"
DATABASE = "database_failures"
BLIND = "monitoring_blind"
OUTAGE = "outage"
AUTH = "authentication_failures"
MISCONFIGURED = "misconfigured"
RULE_NAMES = (PERFORMANCE, ERROR_RATE, RESOURCES, DATABASE, OUTAGE, AUTH)

Status = Literal["ok", "breach", "fired", "blind", "misconfigured"]

# What a credential or configuration problem looks like in a probe's detail.
_MISCONFIGURED_MARKERS = (
    "secret:",
    "invalid configuration",
    "access denied",
    "(1044)",
    "(1045)",
    "authentication",
    "invalid credentials",
    "password",
    "account is locked",
    "no usable credentials",
)


def is_misconfiguration(detail: str) -> bool:
    """True when a failed probe's detail says configuration or credentials, not an outage."""
    text = detail.lower()
    return any(m in text for m in _MISCONFIGURED_MARKERS)


@dataclass(frozen=True)
class Window:
    """One measurement window: [start, end] and its value (None: no data)."""

    start: float
    end: float
    value: float | None


@dataclass(frozen=True)
class ProbeResult:
    """One active database probe: did it answer, and how long it took (None: no answer)."""

    at: float
    system: str
    ok: bool
    latency_s: float | None
    detail: str = ""


@dataclass(frozen=True)
class Evaluation:
    """The outcome of evaluating one rule (one signal) for one environment at one time."""

    rule: str
    env: str
    at: float
    status: Status
    threshold: float
    required: int
    streak: int
    values: tuple[float | None, ...]  # oldest first
    reason: str
    signal: str | None = None
    severity: Severity | None = None
    streak_start: float | None = None  # start of the oldest window of the current streak
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fired(self) -> bool:
        return self.status == "fired"

    @property
    def blind(self) -> bool:
        return self.status == "blind"

    @property
    def misconfigured(self) -> bool:
        return self.status == "misconfigured"

    def payload(self) -> dict[str, Any]:
        """JSON-friendly form for events and the journal."""
        return {
            "rule": self.rule,
            "signal": self.signal,
            "env": self.env,
            "at": self.at,
            "status": self.status,
            "threshold": self.threshold,
            "required": self.required,
            "streak": self.streak,
            "values": list(self.values),
            "reason": self.reason,
            "severity": self.severity.value if self.severity else None,
            "streak_start": self.streak_start,
            **dict(self.extra),
        }


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------


class _WindowedRule:
    """What the performance, error-rate and resource rules share: N consecutive windows."""

    name: str
    signal: str
    period_s: float  # length of one window (resources: the sample resolution)
    required: int
    threshold: float

    source: str = ""  # the metrics query of the signal (default: the signal's name)

    def breaches(self, value: float) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def severity(self, streak_values: Sequence[float]) -> Severity:  # pragma: no cover
        """The severity of a firing streak (oldest first): what the newest window shows."""
        raise NotImplementedError

    @property
    def query_signal(self) -> str:
        return self.source or self.signal

    def describe(self, value: float) -> str:  # pragma: no cover
        raise NotImplementedError

    @property
    def query_window_s(self) -> float:
        """The PromQL range of one window (`rate(...[window])`); resources use none."""
        return self.period_s

    @property
    def interval_s(self) -> float:
        """How often the watchdog evaluates this rule."""
        return max(MIN_PROBE_INTERVAL_S, self.period_s / 6.0)

    def points(self, now: float) -> list[float]:
        """The end times of the N windows that decide the rule at `now`, oldest first."""
        return [now - (self.required - 1 - i) * self.period_s for i in range(self.required)]

    def evaluate(self, env: str, windows: Sequence[Window], now: float) -> Evaluation:
        values = tuple(w.value for w in windows)
        base = {
            "rule": self.name,
            "env": env,
            "at": now,
            "threshold": self.threshold,
            "required": self.required,
            "values": values,
            "signal": self.signal,
        }
        if not windows or windows[-1].value is None:
            return Evaluation(
                status="blind",
                streak=0,
                severity=Severity.P1,
                reason=f"no {self.signal} data for {env} in the newest window",
                **base,
            )
        streak_values: list[float] = []
        streak_start: float | None = None
        for w in reversed(windows):
            if w.value is None or not self.breaches(w.value):
                break
            streak_values.append(w.value)
            streak_start = w.start
        streak_values.reverse()  # oldest first: the newest window is the last
        streak = len(streak_values)
        latest = windows[-1].value
        if streak >= self.required:
            return Evaluation(
                status="fired",
                streak=streak,
                severity=self.severity(streak_values),
                streak_start=streak_start,
                reason=(
                    f"{self.describe(latest)} for {streak} consecutive windows of"
                    f" {self.period_s:g}s (needs {self.required})"
                ),
                **base,
            )
        return Evaluation(
            status="breach" if streak else "ok",
            streak=streak,
            streak_start=streak_start,
            reason=f"{self.describe(latest)}; streak {streak}/{self.required}",
            **base,
        )


@dataclass(frozen=True)
class PerformanceRule(_WindowedRule):
    """Rows/s more than `threshold`% below the baseline, for `required` windows."""

    threshold: float  # percent below baseline
    baseline: float
    period_s: float
    required: int
    p0_over: float = 50.0
    name: str = PERFORMANCE
    signal: str = "throughput"
    source: str = ""

    @property
    def limit(self) -> float:
        """Rows/s at exactly the threshold (not a breach)."""
        return self.baseline * (100.0 - self.threshold) / 100.0

    def breaches(self, value: float) -> bool:
        return value * 100.0 < self.baseline * (100.0 - self.threshold)

    def degradation(self, value: float) -> float:
        return max(0.0, (self.baseline - value) * 100.0 / self.baseline)

    def severity(self, streak_values: Sequence[float]) -> Severity:
        return performance_severity(self.degradation(streak_values[-1]), self.p0_over)

    def describe(self, value: float) -> str:
        return (
            f"throughput {value:,.1f} rows/s, {self.degradation(value):.1f}% below the"
            f" {self.baseline:,.0f} baseline (limit {self.threshold:g}%)"
        )


@dataclass(frozen=True)
class ErrorRateRule(_WindowedRule):
    """Error rate (percent) above `threshold` for `required` windows."""

    threshold: float
    period_s: float
    required: int
    name: str = ERROR_RATE
    signal: str = "error_rate"
    inclusive: bool = False  # the fast P0 window: an error rate of 50% *or more*
    source: str = ""

    def breaches(self, value: float) -> bool:
        return value >= self.threshold if self.inclusive else value > self.threshold

    def severity(self, streak_values: Sequence[float]) -> Severity:
        return error_rate_severity(streak_values[-1])

    def describe(self, value: float) -> str:
        limit = f"{'>=' if self.inclusive else '>'}{self.threshold:g}%"
        return f"error rate {value:.2f}% (limit {limit})"


@dataclass(frozen=True)
class AuthFailureRule(_WindowedRule):
    """Login failure rate (percent of attempts) above `threshold` for `required` windows. P1."""

    threshold: float
    period_s: float
    required: int
    min_attempts: float = 10.0
    name: str = AUTH
    signal: str = "login_failure_rate"
    source: str = ""

    def breaches(self, value: float) -> bool:
        return value > self.threshold

    def severity(self, streak_values: Sequence[float]) -> Severity:
        return Severity.P1

    def describe(self, value: float) -> str:
        return f"login failure rate {value:.1f}% (limit {self.threshold:g}%)"


@dataclass(frozen=True)
class ResourceRule(_WindowedRule):
    """One resource signal above `threshold` at every sample of the sustained period."""

    signal: str  # cpu | memory | disk
    threshold: float
    sustained_s: float
    resolution_s: float
    name: str = RESOURCES

    @property
    def period_s(self) -> float:  # type: ignore[override]
        return self.resolution_s

    @property
    def required(self) -> int:  # type: ignore[override]
        return math.ceil(self.sustained_s / self.resolution_s - 1e-9) + 1

    @property
    def query_window_s(self) -> float:
        return self.resolution_s

    @property
    def interval_s(self) -> float:
        return max(MIN_PROBE_INTERVAL_S, self.resolution_s)

    def breaches(self, value: float) -> bool:
        return value > self.threshold

    def severity(self, streak_values: Sequence[float]) -> Severity:
        return Severity.P1

    def describe(self, value: float) -> str:
        return f"{self.signal} {value:.1f}% (limit {self.threshold:g}%)"

    def evaluate(self, env: str, windows: Sequence[Window], now: float) -> Evaluation:
        ev = super().evaluate(env, windows, now)
        if ev.fired:
            return replace(
                ev,
                reason=(
                    f"{self.describe(windows[-1].value or 0.0)} sustained for"
                    f" {self.sustained_s:g}s ({ev.streak} samples every {self.resolution_s:g}s)"
                ),
            )
        return ev


@dataclass(frozen=True)
class DatabaseRule:
    """Connection failures within a time window, or one response over the response time."""

    connection_failures: int
    window_s: float
    response_time_s: float
    name: str = DATABASE

    @property
    def interval_s(self) -> float:
        """Probe often enough that the window can hold twice the failures it needs."""
        return max(MIN_PROBE_INTERVAL_S, self.window_s / (2 * self.connection_failures))

    @property
    def probe_timeout_s(self) -> float:
        """How long to wait for a probe before counting it as a failure (and slow)."""
        return self.response_time_s * 1.5

    def evaluate(
        self, env: str, system: str, probes: Sequence[ProbeResult], now: float
    ) -> Evaluation:
        recent = sorted(
            (p for p in probes if p.system == system and now - self.window_s < p.at <= now),
            key=lambda p: p.at,
        )
        latencies = tuple(p.latency_s for p in recent)
        base = {
            "rule": self.name,
            "env": env,
            "at": now,
            "threshold": float(self.connection_failures),
            "required": self.connection_failures,
            "values": latencies,
            "signal": system,
        }
        if not recent:
            return Evaluation(
                status="blind",
                streak=0,
                severity=Severity.P1,
                reason=f"no probe of {system} ({env}) in the last {self.window_s:g}s",
                **base,
            )
        failures = [p for p in recent if not p.ok]
        misconfigured = [p for p in failures if is_misconfiguration(p.detail)]
        if misconfigured and recent[-1] in misconfigured:
            return Evaluation(
                status="misconfigured",
                streak=0,
                severity=Severity.P1,
                reason=(
                    f"{system} ({env}) cannot be probed because of the configuration, not an"
                    f" outage: {misconfigured[-1].detail}"
                ),
                extra={"probes": len(recent), "last_detail": misconfigured[-1].detail},
                **base,
            )
        failures = [p for p in failures if not is_misconfiguration(p.detail)]
        slow = [
            p
            for p in recent
            if p.ok and p.latency_s is not None and p.latency_s > self.response_time_s
        ]
        extra = {
            "failures": len(failures),
            "probes": len(recent),
            "max_latency_s": max(
                (p.latency_s for p in recent if p.latency_s is not None), default=None
            ),
            "response_time_s": self.response_time_s,
            "window_s": self.window_s,
            "last_detail": failures[-1].detail if failures else "",
        }
        if len(failures) >= self.connection_failures:
            return Evaluation(
                status="fired",
                streak=len(failures),
                severity=database_severity(len(failures) == len(recent)),
                streak_start=failures[0].at,
                reason=(
                    f"{system}: {len(failures)} connection failures in {self.window_s:g}s"
                    f" (limit {self.connection_failures}): {failures[-1].detail}"
                ),
                extra=extra,
                **base,
            )
        if slow:
            worst = max(slow, key=lambda p: p.latency_s or 0.0)
            return Evaluation(
                status="fired",
                streak=len(slow),
                severity=Severity.P1,
                streak_start=slow[0].at,
                reason=(
                    f"{system}: response took {worst.latency_s:.2f}s"
                    f" (limit {self.response_time_s:g}s)"
                ),
                extra=extra,
                **base,
            )
        return Evaluation(
            status="breach" if failures else "ok",
            streak=len(failures),
            streak_start=failures[0].at if failures else None,
            reason=(
                f"{system}: {len(failures)}/{self.connection_failures} failures in"
                f" {self.window_s:g}s, {len(recent)} probes"
            ),
            extra=extra,
            **base,
        )


@dataclass(frozen=True)
class OutageRule:
    """The live environment is down: `failures` failed health checks within `window_s`.

    Two sources, each counted on its own (never added: they watch the same app): the watchdog's
    direct probes (`ProbeResult(system="app")`: connect + GET /health within `probe_timeout_s`;
    a timeout, a refused connection or a 5xx is a failure, so a hung app counts as down) and the
    load balancer's health view (`ProbeResult(system="lb")`, one per reading, `latency_s` None;
    its `detail` holds the LB's consecutive failure count as ``"failures=N ..."``). Fires P0.
    """

    failures: int
    window_s: float
    probe_interval_s: float
    probe_timeout_s: float
    name: str = OUTAGE

    @property
    def interval_s(self) -> float:
        return max(MIN_PROBE_INTERVAL_S, self.probe_interval_s / 2.0)

    @staticmethod
    def lb_failures(detail: str) -> int:
        for part in detail.split():
            if part.startswith("failures="):
                try:
                    return int(part.split("=", 1)[1])
                except ValueError:
                    return 0
        return 0

    def evaluate(self, env: str, probes: Sequence[ProbeResult], now: float) -> Evaluation:
        recent = [p for p in probes if now - self.window_s < p.at <= now]
        direct = sorted((p for p in recent if p.system == "app"), key=lambda p: p.at)
        lb = sorted((p for p in recent if p.system == "lb"), key=lambda p: p.at)
        direct_failed = [p for p in direct if not p.ok]
        lb_count = max((self.lb_failures(p.detail) for p in lb if not p.ok), default=0)
        if lb and lb[-1].ok:
            lb_count = 0  # the newest LB reading passed: its streak is broken
        count = max(len(direct_failed), lb_count)
        base = {
            "rule": self.name,
            "env": env,
            "at": now,
            "threshold": float(self.failures),
            "required": self.failures,
            "values": tuple(p.latency_s for p in direct),
            "signal": "app",
        }
        extra = {
            "direct_failure_times": [round(p.at, 3) for p in direct_failed],
            "direct_failures": len(direct_failed),
            "direct_probes": len(direct),
            "lb_failures": lb_count,
            "lb_readings": len(lb),
            "window_s": self.window_s,
            "last_detail": (direct_failed[-1].detail if direct_failed else "")
            or next((p.detail for p in reversed(lb) if not p.ok), ""),
        }
        if not direct and not lb:
            return Evaluation(
                status="blind",
                streak=0,
                severity=Severity.P1,
                reason=f"no health check of {env}'s app in the last {self.window_s:g}s",
                extra=extra,
                **base,
            )
        if count >= self.failures:
            by_direct = len(direct_failed) >= self.failures
            lb_failed = [p for p in lb if not p.ok]
            first = direct_failed[0].at if by_direct else (lb_failed or lb)[0].at
            source = "direct probes" if by_direct else "load balancer"
            return Evaluation(
                status="fired",
                streak=count,
                severity=Severity.P0,
                streak_start=first,
                reason=(
                    f"{env} is down: {count} failed health checks in {self.window_s:g}s"
                    f" ({source}; limit {self.failures}): {extra['last_detail']}"
                ),
                extra=extra,
                **base,
            )
        return Evaluation(
            status="breach" if count else "ok",
            streak=count,
            streak_start=direct_failed[0].at if direct_failed else None,
            reason=(
                f"{env}'s app: {count}/{self.failures} failed health checks in {self.window_s:g}s"
            ),
            extra=extra,
            **base,
        )


# --------------------------------------------------------------------------------------------
# The rule set from configuration
# --------------------------------------------------------------------------------------------


class _TriggersLike(Protocol):
    time_scale: float
    performance_degradation: Any
    error_rate_spike: Any
    resource_exhaustion: Any
    database_failures: Any
    outage: Any
    fast_p0: Any
    auth_failures: Any


@dataclass(frozen=True)
class RuleSet:
    """Every enabled rule, durations already scaled."""

    performance: PerformanceRule | None
    error_rate: ErrorRateRule | None
    resources: tuple[ResourceRule, ...]
    database: DatabaseRule | None
    time_scale: float = 1.0
    outage: OutageRule | None = None
    fast_performance: PerformanceRule | None = None
    fast_error_rate: ErrorRateRule | None = None
    auth: AuthFailureRule | None = None

    @classmethod
    def from_config(cls, triggers: _TriggersLike, resolution_s: float | None = None) -> RuleSet:
        """Build the rules from `TriggersConfig`; `resolution_s` overrides the resource sample
        spacing (default: a quarter of the sustained period)."""
        scale = triggers.time_scale
        p = triggers.performance_degradation
        e = triggers.error_rate_spike
        r = triggers.resource_exhaustion
        d = triggers.database_failures
        perf = (
            PerformanceRule(
                threshold=p.threshold,
                baseline=p.baseline_rows_per_s,
                period_s=p.measurement_period * scale,
                required=p.consecutive_failures,
                p0_over=p.p0_threshold,
            )
            if p.enabled and p.action == "IMMEDIATE_ROLLBACK"
            else None
        )
        err = (
            ErrorRateRule(
                threshold=e.threshold,
                period_s=e.measurement_period * scale,
                required=e.consecutive_measurements,
            )
            if e.enabled and e.action == "IMMEDIATE_ROLLBACK"
            else None
        )
        resources: tuple[ResourceRule, ...] = ()
        if r.enabled and r.action == "IMMEDIATE_ROLLBACK":
            sustained = r.sustained_period * scale
            step = resolution_s or sustained / 4.0
            resources = tuple(
                ResourceRule(signal=sig, threshold=thr, sustained_s=sustained, resolution_s=step)
                for sig, thr in (
                    ("cpu", r.cpu_threshold),
                    ("memory", r.memory_threshold),
                    ("disk", r.disk_threshold),
                )
            )
        db = None
        if d.enabled and d.action == "IMMEDIATE_ROLLBACK":
            rt = d.response_time * scale
            if scale < 1.0:
                rt = min(d.response_time, max(MIN_RESPONSE_TIME_S, rt))
            window = d.time_window * scale
            if scale < 1.0:
                window = min(d.time_window, max(MIN_DB_WINDOW_S, window))
            db = DatabaseRule(
                connection_failures=d.connection_failures,
                window_s=window,
                response_time_s=rt,
            )
        o = getattr(triggers, "outage", None)
        outage = (
            OutageRule(
                failures=o.failures,
                window_s=o.window,
                probe_interval_s=o.probe_interval,
                probe_timeout_s=o.probe_timeout,
            )
            if o is not None and o.enabled and o.action == "IMMEDIATE_ROLLBACK"
            else None
        )
        f = getattr(triggers, "fast_p0", None)
        fast_perf = fast_err = None
        if f is not None and f.enabled:
            period = f.measurement_period * scale
            if scale < 1.0:
                period = min(f.measurement_period, max(MIN_FAST_WINDOW_S, period))
            if p.enabled and p.action == "IMMEDIATE_ROLLBACK":
                fast_perf = PerformanceRule(
                    threshold=f.degradation,
                    baseline=p.baseline_rows_per_s,
                    period_s=period,
                    required=f.consecutive,
                    p0_over=p.p0_threshold,
                    signal="throughput_fast",
                    source="throughput",
                )
            if e.enabled and e.action == "IMMEDIATE_ROLLBACK":
                fast_err = ErrorRateRule(
                    threshold=f.error_rate,
                    period_s=period,
                    required=f.consecutive,
                    inclusive=True,
                    signal="error_rate_fast",
                    source="error_rate",
                )
        a = getattr(triggers, "auth_failures", None)
        auth = (
            AuthFailureRule(
                threshold=a.threshold,
                period_s=a.measurement_period * scale,
                required=a.consecutive,
                min_attempts=a.min_attempts,
            )
            if a is not None and a.enabled and a.action == "IMMEDIATE_ROLLBACK"
            else None
        )
        return cls(perf, err, resources, db, scale, outage, fast_perf, fast_err, auth)

    @property
    def windowed(self) -> tuple[_WindowedRule, ...]:
        rules: list[_WindowedRule] = []
        if self.performance:
            rules.append(self.performance)
        if self.error_rate:
            rules.append(self.error_rate)
        rules.extend(self.resources)
        if self.fast_performance:
            rules.append(self.fast_performance)
        if self.fast_error_rate:
            rules.append(self.fast_error_rate)
        if self.auth:
            rules.append(self.auth)
        return tuple(rules)

    def describe(self) -> list[str]:
        """One line per rule, for `watch --dry-run` and the docs."""
        lines = [
            f"{r.name}[{r.signal}]: {r.required} x {r.period_s:g}s windows, threshold"
            f" {r.threshold:g}, evaluated every {r.interval_s:g}s"
            for r in self.windowed
        ]
        if self.database:
            d = self.database
            lines.append(
                f"{d.name}: {d.connection_failures} failures in {d.window_s:g}s or a response"
                f" over {d.response_time_s:g}s, probed every {d.interval_s:g}s"
            )
        if self.outage:
            o = self.outage
            lines.append(
                f"{o.name}: {o.failures} failed health checks in {o.window_s:g}s (direct probes"
                f" every {o.probe_interval_s:g}s, timeout {o.probe_timeout_s:g}s, and the load"
                " balancer's health view), P0 at once"
            )
        return lines


# --------------------------------------------------------------------------------------------
# The shortest fault that fires a rule (docs/rollback.md's table; tests/unit/test_trigger_edges)
# --------------------------------------------------------------------------------------------


def shortest_fault_s(rule: Any, magnitude: float = 1.0) -> float:
    """The infimum of the fault lengths that can fire `rule`, for a fault of `magnitude`.

    Windowed rules (N windows of P, each the average over its P seconds, ending at the
    evaluation time): magnitude is the fraction of the signal's scale the fault takes (the
    share of throughput lost, or of requests/logins failing); a window breaches when the
    fault covers more than q/m of it (q the threshold as a fraction), so the oldest and the
    newest windows each need q/m x P of the fault and the N-2 between need all of it:
    (N - 2 + 2q/m) x P for N >= 2, (q/m) x P for N = 1; never when q/m >= 1 (strict rules).
    Resources: the sustained period. Probe rules: (failures - 1) probe intervals.
    """
    if isinstance(rule, OutageRule):
        return (rule.failures - 1) * rule.probe_interval_s
    if isinstance(rule, DatabaseRule):
        return (rule.connection_failures - 1) * rule.interval_s
    if isinstance(rule, ResourceRule):
        return rule.sustained_s
    q = rule.threshold / 100.0
    ratio = q / magnitude if magnitude > 0 else math.inf
    inclusive = getattr(rule, "inclusive", False)
    if ratio > 1.0 or (ratio == 1.0 and not inclusive):
        return math.inf
    n, p = rule.required, rule.period_s
    return (n - 2 + 2 * ratio) * p if n >= 2 else ratio * p


# --------------------------------------------------------------------------------------------
# Windows from a Metrics source (the Protocol in tbs_emergency.connectors.base)
# --------------------------------------------------------------------------------------------


class _RangeSource(Protocol):
    def range(
        self, promql: str, start: float, end: float, step_s: float
    ) -> list[tuple[Mapping[str, str], list[tuple[float, float]]]]: ...


PromQL = Callable[..., str]  # (signal, env, window_s, **extra) -> query


def collect_windows(
    rule: _WindowedRule, env: str, metrics: _RangeSource, promql: PromQL, now: float
) -> list[Window]:
    """The N windows deciding `rule` at `now`: one range query, points matched by time.

    A point Prometheus did not return (no samples) becomes a window without a value. NaN and
    infinite values count as missing too.
    """
    ends = rule.points(now)
    if isinstance(rule, AuthFailureRule):
        query = promql(rule.query_signal, env, rule.query_window_s, min_attempts=rule.min_attempts)
    else:
        query = promql(rule.query_signal, env, rule.query_window_s)
    series = metrics.range(query, ends[0], ends[-1], rule.period_s)
    points: list[tuple[float, float]] = []
    for _labels, values in series[:1]:
        points = list(values)
    tolerance = rule.period_s / 2.0
    windows = []
    for end in ends:
        value: float | None = None
        for t, v in points:
            if abs(t - end) <= tolerance and math.isfinite(v):
                value = float(v)
                break
        windows.append(Window(end - rule.query_window_s, end, value))
    return windows
