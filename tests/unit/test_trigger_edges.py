"""The edges of the trigger rules: the shortest fault that fires each rule at the defaults
(docs/rollback.md's table), the fast P0 window, the outage rule, authentication failures and a
misconfiguration that must never look like an outage.

The windowed rules are simulated exactly as the watchdog runs them: a fault of length D starts at
t=0; each window's value is the average of the signal over the P seconds ending at its end
(what `rate(...[P])` gives); the watchdog evaluates every P/6 from an arbitrary phase.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest

from tbs_emergency.config import TriggersConfig
from tbs_emergency.domain.severity import Severity
from tbs_emergency.domain.triggers import (
    AuthFailureRule,
    ErrorRateRule,
    OutageRule,
    PerformanceRule,
    ProbeResult,
    RuleSet,
    collect_windows,
    is_misconfiguration,
    shortest_fault_s,
)

pytestmark = pytest.mark.unit

DEFAULTS = RuleSet.from_config(TriggersConfig())
BASE = 37303.0


class FaultSignal:
    """A Prometheus stand-in for one signal: `normal` outside [0, D), `during` inside; each
    point is the average over the window [t - window, t] (rate semantics)."""

    def __init__(self, duration: float, normal: float, during: float, window: float) -> None:
        self.d, self.normal, self.during, self.window = duration, normal, during, window

    def value(self, t: float) -> float:
        start, end = t - self.window, t
        overlap = max(0.0, min(end, self.d) - max(start, 0.0))
        share = overlap / self.window
        return self.normal * (1 - share) + self.during * share

    def range(
        self, promql: str, start: float, end: float, step_s: float
    ) -> list[tuple[Mapping[str, str], list[tuple[float, float]]]]:
        pts, t = [], start
        while t <= end + 1e-6:
            pts.append((t, self.value(t)))
            t += step_s
        return [({}, pts)]


def fires_at_some_evaluation(rule, signal: FaultSignal, phases: int = 12) -> bool:  # type: ignore[no-untyped-def]
    """Whether any evaluation (every P/6, from any of `phases` phases) fires the rule."""
    step = rule.interval_s
    horizon = signal.d + rule.required * rule.period_s + step
    for k in range(phases):
        t = k * step / phases
        while t <= horizon:
            windows = collect_windows(rule, "green", signal, lambda *a, **kw: "q", t)
            if rule.evaluate("green", windows, t).fired:
                return True
            t += step
    return False


CASES = [
    # (name, rule, normal, during, magnitude, expected shortest fault at the defaults)
    ("performance, total outage", DEFAULTS.performance, BASE, 0.0, 1.0, 900.0),
    ("performance, 60% drop", DEFAULTS.performance, BASE, BASE * 0.4, 0.6, 1100.0),
    ("fast P0 throughput, total outage", DEFAULTS.fast_performance, BASE, 0.0, 1.0, 120.0),
    ("fast P0 throughput, 60% drop", DEFAULTS.fast_performance, BASE, BASE * 0.4, 0.6, 160.0),
    ("error rate, 100% errors", DEFAULTS.error_rate, 0.0, 100.0, 1.0, 330.0),
    ("error rate, 20% errors", DEFAULTS.error_rate, 0.0, 20.0, 0.2, 450.0),
    ("fast P0 error rate, 100% errors", DEFAULTS.fast_error_rate, 0.0, 100.0, 1.0, 120.0),
    ("auth failures, every login fails", DEFAULTS.auth, 0.0, 100.0, 1.0, 180.0),
]


@pytest.mark.parametrize(
    ("name", "rule", "normal", "during", "magnitude", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_the_shortest_fault_that_fires_at_the_defaults(  # type: ignore[no-untyped-def]
    name, rule, normal, during, magnitude, expected
) -> None:
    assert rule is not None
    bound = shortest_fault_s(rule, magnitude)
    assert bound == pytest.approx(expected)
    # shorter than the consecutive requirement, yet it fires (windows end at evaluation time)
    assert bound < rule.required * rule.period_s
    window = rule.query_window_s
    # a little longer than the bound (plus one evaluation step): fires
    longer = FaultSignal(bound + rule.interval_s + 1.0, normal, during, window)
    assert fires_at_some_evaluation(rule, longer), name
    # a little shorter than the bound: never fires, whatever the evaluation phase
    shorter = FaultSignal(bound - 1.0, normal, during, window)
    assert not fires_at_some_evaluation(rule, shorter), name


def test_probe_and_sample_rules_at_the_defaults() -> None:
    assert DEFAULTS.outage is not None and shortest_fault_s(DEFAULTS.outage) == 4.0
    assert DEFAULTS.database is not None and shortest_fault_s(DEFAULTS.database) == 20.0
    assert shortest_fault_s(DEFAULTS.resources[0]) == 120.0
    # a 40% drop never fires the fast P0 window (it needs more than 50%)
    assert DEFAULTS.fast_performance is not None
    assert math.isinf(shortest_fault_s(DEFAULTS.fast_performance, 0.4))


def test_fast_p0_window_fires_p0_on_a_collapse_and_ignores_p1_grade_breaches() -> None:
    rule = DEFAULTS.fast_performance
    assert rule is not None and rule.period_s == 60 and rule.required == 3
    collapse = FaultSignal(10_000, BASE, BASE * 0.4, rule.period_s)  # 60% below, sustained
    windows = collect_windows(rule, "green", collapse, lambda *a, **kw: "q", 200.0)
    ev = rule.evaluate("green", windows, 200.0)
    assert ev.fired and ev.severity == Severity.P0
    p1_grade = FaultSignal(10_000, BASE, BASE * 0.6, rule.period_s)  # 40% below
    windows = collect_windows(rule, "green", p1_grade, lambda *a, **kw: "q", 200.0)
    assert not rule.evaluate("green", windows, 200.0).fired


def test_fast_error_window_is_inclusive_at_50_percent() -> None:
    rule = DEFAULTS.fast_error_rate
    assert isinstance(rule, ErrorRateRule) and rule.inclusive
    assert rule.breaches(50.0) and not rule.breaches(49.99)
    assert not DEFAULTS.error_rate.breaches(5.0)  # type: ignore[union-attr]  # runbook: strictly


def test_fast_window_is_scaled_but_never_below_two_scrapes() -> None:
    drill = RuleSet.from_config(TriggersConfig(time_scale=0.01))
    assert drill.fast_performance is not None and drill.fast_performance.period_s == 3.0
    half = RuleSet.from_config(TriggersConfig(time_scale=0.5))
    assert half.fast_performance is not None and half.fast_performance.period_s == 30.0


# -- the outage rule --------------------------------------------------------------------------

OUT = OutageRule(failures=3, window_s=10.0, probe_interval_s=2.0, probe_timeout_s=1.5)


def app(at: float, ok: bool, detail: str = "") -> ProbeResult:
    return ProbeResult(at, "app", ok, 0.01 if ok else None, detail or ("ok" if ok else "refused"))


def lb(at: float, failures: int) -> ProbeResult:
    state = "UP" if failures < 3 else "DOWN"
    return ProbeResult(at, "lb", failures == 0, None, f"failures={failures} state={state}")


def test_three_failed_direct_probes_within_10s_fire_p0_at_once() -> None:
    probes = [app(100.0, True), app(102.0, False), app(104.0, False), app(106.0, False)]
    ev = OUT.evaluate("green", probes, 106.5)
    assert ev.fired and ev.severity == Severity.P0 and ev.streak_start == 102.0
    assert OUT.evaluate("green", probes[:3], 104.5).status == "breach"


def test_failures_spread_over_more_than_the_window_do_not_fire() -> None:
    probes = [app(100.0, False), app(106.0, True), app(111.0, False), app(121.0, False)]
    assert not OUT.evaluate("green", probes, 121.5).fired


def test_the_load_balancer_view_alone_fires() -> None:
    probes = [lb(100.0, 1), lb(102.0, 2), lb(104.0, 3)]
    ev = OUT.evaluate("green", probes, 104.5)
    assert ev.fired and ev.extra["lb_failures"] == 3
    # the newest reading passed: its streak is over
    assert not OUT.evaluate("green", [*probes, lb(106.0, 0)], 106.5).fired


def test_a_hung_app_is_a_failed_probe() -> None:
    hung = [app(100.0 + 2 * i, False, "app[green]: read health timed out") for i in range(3)]
    assert OUT.evaluate("green", hung, 105.0).fired


def test_no_health_check_at_all_is_blind_not_ok() -> None:
    ev = OUT.evaluate("green", [], 100.0)
    assert ev.blind and not ev.fired


# -- authentication failures ------------------------------------------------------------------


def test_auth_rule_is_p1_and_reads_the_login_counters() -> None:
    rule = DEFAULTS.auth
    assert isinstance(rule, AuthFailureRule) and rule.period_s == 300 and rule.required == 2
    windows = collect_windows(
        rule, "green", FaultSignal(10_000, 0.0, 80.0, 300), lambda *a, **kw: "q", 1000.0
    )
    ev = rule.evaluate("green", windows, 1000.0)
    assert ev.fired and ev.severity == Severity.P1
    q = TriggersConfig()  # the query: failed logins over attempts, attempts at least 10
    from tbs_emergency.config import MetricsConfig

    text = MetricsConfig(prometheus_url="http://x").query("login_failure_rate", "green", 300, 10)
    assert 'result="failed"' in text and "clamp_min" in text and ", 10)" in text
    assert q.auth_failures.min_attempts == 10


# -- misconfiguration is not an outage --------------------------------------------------------


@pytest.mark.parametrize(
    "detail",
    [
        "invalid configuration: secret: Prefect Secret block 'x' cannot be read: ValueError",
        "refused: (1045) Access denied for user 'tbs_app'@'localhost' (using password: YES)",
    ],
)
def test_a_credential_failure_is_misconfigured_and_never_fires(detail: str) -> None:
    assert is_misconfiguration(detail)
    rule = DEFAULTS.database
    assert rule is not None
    probes = [ProbeResult(100.0 + i, "mysql", False, None, detail) for i in range(5)]
    ev = rule.evaluate("green", "mysql", probes, 105.0)
    assert ev.status == "misconfigured" and not ev.fired


def test_an_unreachable_database_still_fires() -> None:
    assert not is_misconfiguration("unreachable: 127.0.0.1:3306: Connection refused")
    rule = DEFAULTS.database
    assert rule is not None
    probes = [
        ProbeResult(100.0 + i, "mysql", False, None, "unreachable: refused") for i in range(3)
    ]
    ev = rule.evaluate("green", "mysql", probes, 103.0)
    assert ev.fired and ev.severity == Severity.P0


def test_performance_rule_is_unchanged_for_p1_grade() -> None:
    rule = PerformanceRule(threshold=25, baseline=BASE, period_s=600, required=3)
    assert rule.breaches(BASE * 0.7) and not rule.breaches(BASE * 0.75)
