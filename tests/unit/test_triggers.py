"""Trigger rules at their boundaries: exactly at a threshold, broken streaks, missing data,
a watchdog restarting in the middle of a streak, scaled time."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import pytest

from tbs_emergency.config import TriggersConfig
from tbs_emergency.domain.severity import Severity
from tbs_emergency.domain.triggers import (
    MIN_DB_WINDOW_S,
    MIN_RESPONSE_TIME_S,
    DatabaseRule,
    ErrorRateRule,
    PerformanceRule,
    ProbeResult,
    ResourceRule,
    RuleSet,
    Window,
    collect_windows,
)

pytestmark = pytest.mark.unit

BASE = 37303.0
PERF = PerformanceRule(threshold=25.0, baseline=BASE, period_s=600.0, required=3)
ERR = ErrorRateRule(threshold=5.0, period_s=300.0, required=3)


def windows(values: list[float | None], period: float = 600.0, now: float = 10_000.0):
    n = len(values)
    return [
        Window(now - (n - i) * period, now - (n - 1 - i) * period, v) for i, v in enumerate(values)
    ]


# -- performance -------------------------------------------------------------------------------


def test_exactly_at_the_performance_threshold_is_not_a_breach() -> None:
    at = BASE * 0.75  # 27,977.25 rows/s: exactly 25% below
    assert at == PERF.limit
    assert not PERF.breaches(at)
    assert PERF.breaches(math.nextafter(at, 0))
    ev = PERF.evaluate("green", windows([at, at, at]), 10_000.0)
    assert ev.status == "ok" and not ev.fired


def test_three_consecutive_degraded_windows_fire_with_p1_between_25_and_50() -> None:
    ev = PERF.evaluate("green", windows([BASE * 0.6, BASE * 0.7, BASE * 0.6]), 10_000.0)
    assert ev.fired and ev.streak == 3 and ev.severity == Severity.P1
    assert ev.streak_start == 10_000.0 - 3 * 600


def test_severity_is_what_the_newest_window_shows() -> None:
    assert PERF.evaluate("green", windows([BASE * 0.4] * 3), 1e4).severity == Severity.P0
    # a total outage whose first window was only partly affected: the present decides -> P0
    mixed = windows([BASE * 0.6, BASE * 0.4, BASE * 0.0])
    assert PERF.evaluate("green", mixed, 1e4).severity == Severity.P0
    # recovering: the newest window is only 40% degraded -> P1
    better = windows([BASE * 0.4, BASE * 0.4, BASE * 0.6])
    assert PERF.evaluate("green", better, 1e4).severity == Severity.P1
    # the error rate likewise: 10% then 60% -> P0
    assert ERR.evaluate("green", windows([10.0, 10.0, 60.0], 300), 1e4).severity == Severity.P0
    # exactly 50% is not "over 50%"
    assert PERF.evaluate("green", windows([BASE * 0.5] * 3), 1e4).severity == Severity.P1


def test_one_good_window_breaks_the_streak() -> None:
    ev = PERF.evaluate("green", windows([BASE * 0.5, BASE, BASE * 0.5, BASE * 0.5]), 1e4)
    assert ev.status == "breach" and ev.streak == 2 and not ev.fired


def test_a_fault_shorter_than_the_requirement_does_not_fire() -> None:
    ev = PERF.evaluate("green", windows([BASE, BASE * 0.2, BASE * 0.2]), 1e4)
    assert ev.streak == 2 and not ev.fired


def test_missing_newest_window_is_blind_not_a_breach() -> None:
    ev = PERF.evaluate("green", windows([BASE * 0.1, BASE * 0.1, None]), 1e4)
    assert ev.status == "blind" and not ev.fired and ev.severity == Severity.P1
    assert "no throughput data" in ev.reason


def test_missing_older_window_ends_the_streak_but_is_not_blind() -> None:
    ev = PERF.evaluate("green", windows([None, BASE * 0.1, BASE * 0.1]), 1e4)
    assert ev.status == "breach" and ev.streak == 2


def test_no_windows_at_all_is_blind() -> None:
    assert PERF.evaluate("green", [], 1e4).blind


# -- error rate --------------------------------------------------------------------------------


def test_error_rate_exactly_5_percent_is_not_a_breach_just_above_is() -> None:
    assert not ERR.evaluate("green", windows([5.0] * 3, 300), 1e4).fired
    ev = ERR.evaluate("green", windows([5.01] * 3, 300), 1e4)
    assert ev.fired and ev.severity == Severity.P1
    assert ERR.evaluate("green", windows([60.0] * 3, 300), 1e4).severity == Severity.P0


# -- resources ---------------------------------------------------------------------------------


def test_resource_needs_every_sample_of_the_sustained_period() -> None:
    r = ResourceRule(signal="cpu", threshold=95.0, sustained_s=120.0, resolution_s=30.0)
    assert r.required == 5  # samples at -120, -90, -60, -30, 0 s
    assert r.evaluate("green", windows([99.0] * 5, 30), 1e4).fired
    assert not r.evaluate("green", windows([95.0, 99, 99, 99, 99], 30), 1e4).fired
    assert not r.evaluate("green", windows([99.0] * 4, 30), 1e4).fired  # 90 s only
    # the sustained period is covered even when it is not a multiple of the resolution
    assert ResourceRule("cpu", 95.0, 1.2, 0.5).required == 4


def test_disk_threshold_is_90_by_default() -> None:
    disk = next(r for r in RuleSet.from_config(TriggersConfig()).resources if r.signal == "disk")
    assert disk.threshold == 90.0
    assert not disk.breaches(90.0) and disk.breaches(90.5)


# -- database ----------------------------------------------------------------------------------

DB = DatabaseRule(connection_failures=3, window_s=60.0, response_time_s=10.0)


def probes(spec: list[tuple[float, bool, float | None]], system: str = "mysql"):
    return [ProbeResult(at, system, ok, lat) for at, ok, lat in spec]


def test_three_failures_within_the_window_fire_two_do_not() -> None:
    now = 1000.0
    two = probes([(950, False, None), (960, False, None), (970, True, 0.01)])
    assert DB.evaluate("green", "mysql", two, now).status == "breach"
    three = probes([(950, False, None), (960, False, None), (999, False, None)])
    ev = DB.evaluate("green", "mysql", three, now)
    assert ev.fired and ev.severity == Severity.P0  # every probe failed: database down


def test_a_failure_exactly_window_old_is_outside_the_window() -> None:
    now = 1000.0
    ps = probes([(940, False, None), (960, False, None), (999, False, None), (999.5, True, 0.1)])
    ev = DB.evaluate("green", "mysql", ps, now)
    assert not ev.fired and ev.streak == 2


def test_response_over_the_limit_fires_exactly_at_does_not() -> None:
    now = 1000.0
    assert not DB.evaluate("green", "mysql", probes([(999, True, 10.0)]), now).fired
    ev = DB.evaluate("green", "mysql", probes([(999, True, 10.01)]), now)
    assert ev.fired and ev.severity == Severity.P1


def test_database_without_probes_is_blind_and_counts_per_system() -> None:
    assert DB.evaluate("green", "mysql", [], 1000.0).blind
    other = probes([(990, False, None)] * 3, system="heavydb")
    assert DB.evaluate("green", "mysql", other, 1000.0).blind


# -- configuration and scale -------------------------------------------------------------------


def test_runbook_defaults_and_time_scale() -> None:
    rules = RuleSet.from_config(TriggersConfig())
    assert rules.performance is not None and rules.performance.period_s == 600
    assert rules.performance.required == 3 and rules.performance.baseline == 37303
    assert rules.error_rate is not None and rules.error_rate.period_s == 300
    assert rules.database is not None and rules.database.window_s == 60
    assert rules.database.response_time_s == 10
    drill = RuleSet.from_config(TriggersConfig(time_scale=0.01))
    assert drill.performance is not None and drill.performance.period_s == pytest.approx(6.0)
    assert drill.error_rate is not None and drill.error_rate.period_s == pytest.approx(3.0)
    assert drill.resources[0].sustained_s == pytest.approx(1.2)
    assert drill.database is not None and drill.database.window_s == MIN_DB_WINDOW_S
    assert drill.database.response_time_s == MIN_RESPONSE_TIME_S
    # 5 runbook rules (3 resource signals) + 2 fast P0 windows + auth + database + outage
    assert len(drill.describe()) == 10


def test_disabled_or_alert_only_rules_are_left_out() -> None:
    cfg = TriggersConfig.model_validate(
        {"performance_degradation": {"enabled": False}, "error_rate_spike": {"action": "ALERT"}}
    )
    rules = RuleSet.from_config(cfg)
    assert rules.performance is None and rules.error_rate is None


# -- windows from Prometheus, and a restart in the middle of a streak ---------------------------


class FakePrometheus:
    """Answers range queries from a function of time, like Prometheus over stored samples."""

    def __init__(self, value_at: Callable[[float], float | None]) -> None:
        self.value_at = value_at
        self.queries: list[tuple[str, float, float, float]] = []

    def range(
        self, promql: str, start: float, end: float, step_s: float
    ) -> list[tuple[Mapping[str, str], list[tuple[float, float]]]]:
        self.queries.append((promql, start, end, step_s))
        pts = []
        t = start
        while t <= end + 1e-9:
            v = self.value_at(t)
            if v is not None:
                pts.append((round(t, 3), v))
            t += step_s
        return [({}, pts)] if pts else []


def promql(signal: str, env: str, window_s: float) -> str:
    return f"{signal}{{env={env}}}[{window_s:g}s]"


def test_collect_windows_asks_for_exactly_n_windows_and_maps_gaps_to_none() -> None:
    prom = FakePrometheus(lambda t: None if 9000 < t < 9500 else BASE * 0.5)
    ws = collect_windows(PERF, "green", prom, promql, 10_000.0)
    q, start, end, step = prom.queries[0]
    assert (start, end, step) == (10_000.0 - 1200, 10_000.0, 600.0)
    assert "[600s]" in q and "env=green" in q
    assert [w.value for w in ws] == [BASE * 0.5, None, BASE * 0.5]


def test_a_restarted_watchdog_fires_from_history_alone() -> None:
    fault_start = 5_000.0
    prom = FakePrometheus(lambda t: BASE * 0.5 if t - 600 >= fault_start else BASE)
    # first watchdog: evaluated during the streak, then "crashed"
    mid = fault_start + 600 * 2
    ev = PERF.evaluate("green", collect_windows(PERF, "green", prom, promql, mid), mid)
    assert ev.streak == 2 and not ev.fired
    # a brand-new evaluator with no memory, one window later: fires at once
    later = fault_start + 600 * 3
    ev2 = PERF.evaluate("green", collect_windows(PERF, "green", prom, promql, later), later)
    assert ev2.fired and ev2.streak_start == fault_start


def test_nan_from_prometheus_is_missing_data() -> None:
    prom = FakePrometheus(lambda t: float("nan"))
    ws = collect_windows(ERR, "green", prom, promql, 10_000.0)
    assert all(w.value is None for w in ws)
    assert ERR.evaluate("green", ws, 10_000.0).blind
