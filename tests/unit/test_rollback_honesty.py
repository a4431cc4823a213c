"""Issue #14, flow behaviour: honest steps, degraded/reopened incidents, the second source's
arithmetic, bounded task bodies, Failed states that carry the result, the drill's `steps`."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tbs_emergency.domain.incident import Entry, Incident
from tbs_emergency.domain.secondsource import (
    MIN_LB_REQUESTS,
    app_window,
    backend_window,
    blue_checks,
    confirm,
    login_failure_rate,
    parse_exposition,
    total,
)
from tbs_emergency.domain.severity import Severity

pytestmark = pytest.mark.unit

LB_BEFORE = """
# HELP haproxy_backend_http_requests_total Total.
# TYPE haproxy_backend_http_requests_total counter
haproxy_backend_http_requests_total{proxy="tbs",server="blue"} 100
haproxy_backend_http_requests_total{proxy="tbs",server="green"} 5000
haproxy_server_http_responses_total{proxy="tbs",server="blue",code="2xx"} 100
haproxy_server_http_responses_total{proxy="tbs",server="blue",code="5xx"} 0
haproxy_server_http_responses_total{proxy="tbs",server="green",code="5xx"} 10
haproxy_server_connection_errors_total{proxy="tbs",server="blue"} 0
haproxy_server_connection_errors_total{proxy="tbs",server="green"} 0
haproxy_server_status{proxy="tbs",server="blue",state="UP"} 1
haproxy_server_status{proxy="tbs",server="blue",state="DOWN"} 0
tbs_feed_batches_total{server="blue",result="ok"} 3
tbs_feed_batches_total{server="blue",result="failed"} 0
tbs_feed_rows_total{server="blue"} 60
"""

LB_AFTER = (
    LB_BEFORE.replace('server="blue"} 100\n', 'server="blue"} 150\n', 1)
    .replace('server="blue",code="5xx"} 0', 'server="blue",code="5xx"} 1')
    .replace('tbs_feed_rows_total{server="blue"} 60', 'tbs_feed_rows_total{server="blue"} 160')
)


def test_exposition_is_parsed_with_labels_and_comments_skipped() -> None:
    s = parse_exposition(LB_BEFORE + 'bad line\nx{a="q\\"uote"} 2 1700000000\n')
    assert total(s, "haproxy_backend_http_requests_total", server="blue") == 100
    assert total(s, "haproxy_backend_http_requests_total") == 5100
    assert total(s, "x", a='q"uote') == 2
    assert total(s, "missing") is None


def test_backend_window_rates_and_error_rate() -> None:
    w = backend_window(parse_exposition(LB_BEFORE), parse_exposition(LB_AFTER), "blue", 5.0)
    assert w["requests"] == 50 and w["requests_per_s"] == 10
    assert w["errors"] == 1 and w["error_rate_percent"] == pytest.approx(2.0)
    assert w["feed_rows_per_s"] == 20 and w["up"] is True


def test_a_window_without_requests_has_no_error_rate_and_is_not_verified() -> None:
    same = parse_exposition(LB_BEFORE)
    w = backend_window(same, same, "blue", 5.0)
    assert w["requests"] == 0 and w["error_rate_percent"] is None
    checks = blue_checks(w, 5.0)
    assert checks["throughput"][0] is None and "not verified" in checks["throughput"][1]
    assert checks["errors"][0] is None
    assert blue_checks(None, 5.0)["errors"][0] is None


def test_blue_checks_pass_and_fail_on_the_rule_threshold() -> None:
    w = backend_window(parse_exposition(LB_BEFORE), parse_exposition(LB_AFTER), "blue", 5.0)
    assert blue_checks(w, 5.0)["throughput"][0] is True
    assert blue_checks(w, 5.0)["errors"][0] is True
    assert blue_checks(w, 1.0)["errors"][0] is False


def test_app_window_and_confirmation_by_rule() -> None:
    before = parse_exposition(
        'tbs_rows_ingested_total{env="green"} 1000\ntbs_http_requests_total{env="green"} 100\n'
        'tbs_http_errors_total{env="green"} 0\ntbs_cpu_usage_percent{env="green"} 97\n'
    )
    after = parse_exposition(
        'tbs_rows_ingested_total{env="green"} 31000\ntbs_http_requests_total{env="green"} 250\n'
        'tbs_http_errors_total{env="green"} 30\ntbs_cpu_usage_percent{env="green"} 98\n'
    )
    app = app_window(before, after, 2.0)
    assert app["rows_per_s"] == 15000 and app["error_rate_percent"] == pytest.approx(20.0)
    assert app["cpu_percent"] == 98
    assert confirm("performance_degradation", "throughput", app, None, lambda v: v < 27977) == (
        True,
        "app counters",
    )
    assert confirm("error_rate_spike", "error_rate", app, None, lambda v: v > 5) == (
        True,
        "app counters",
    )
    assert confirm("resource_exhaustion", "cpu", app, None, lambda v: v > 95)[0] is True
    assert confirm("resource_exhaustion", "memory", app, None, lambda v: v > 95) == (None, None)
    # the load balancer confirms errors only with enough requests in the window
    lb = {"error_rate_percent": 50.0, "requests": MIN_LB_REQUESTS}
    assert confirm("error_rate_spike", "error_rate", None, lb, lambda v: v > 5) == (
        True,
        "load balancer",
    )
    lb_few = {"error_rate_percent": 50.0, "requests": 2}
    assert confirm("error_rate_spike", "error_rate", None, lb_few, lambda v: v > 5) == (None, None)


def _logins(ok: int, failed: int, denied: int = 0) -> str:
    return "".join(
        f'tbs_logins_total{{env="green",result="{k}"}} {v}\n'
        for k, v in (("ok", ok), ("failed", failed), ("denied", denied))
    )


def test_authentication_failures_are_confirmed_from_the_app_login_counter() -> None:
    from tbs_emergency.domain.triggers import AuthFailureRule

    rule = AuthFailureRule(threshold=30.0, period_s=300.0, required=2, min_attempts=10.0)
    per_s = rule.min_attempts / rule.period_s
    before = parse_exposition(_logins(100, 5, 1))
    # 3 s: 40 attempts, 30 of them failed (75 %), 2 denied by the lockdown: attempts too
    app = app_window(before, parse_exposition(_logins(108, 35, 3)), 3.0)
    assert (app["login_attempts"], app["login_failures"]) == (40, 30)
    assert login_failure_rate(app, per_s) == pytest.approx(75.0)
    assert confirm(rule.name, "login_failure_rate", app, None, rule.breaches, per_s) == (
        True,
        "app counters (logins)",
    )
    # the app sees logins succeed: a second source that does not confirm
    calm = app_window(before, parse_exposition(_logins(138, 7, 1)), 3.0)
    assert login_failure_rate(calm, per_s) == pytest.approx(5.0)
    assert confirm(rule.name, "login_failure_rate", calm, None, rule.breaches, per_s) == (
        False,
        "app counters (logins)",
    )


def test_login_failure_rate_floors_the_attempts_and_says_nothing_without_any() -> None:
    before = parse_exposition(_logins(10, 0))
    # 2 failed of 2 attempts in 30 s; the rule's floor (10 per 300 s) is 1 attempt here
    few = app_window(before, parse_exposition(_logins(10, 2)), 30.0)
    assert login_failure_rate(few, 10.0 / 300.0) == pytest.approx(100.0)
    # a floor of 6 attempts (0.2/s over 30 s) dilutes 2 failures to 33 %, as the rule's query
    assert login_failure_rate(few, 0.2) == pytest.approx(100.0 * 2 / 6)
    # nobody tried to log in, or the app has no login counter: cannot tell (never 0 %)
    idle = app_window(before, parse_exposition(_logins(10, 0)), 3.0)
    assert login_failure_rate(idle, 0.03) is None
    assert confirm("authentication_failures", None, idle, None, lambda v: v > 30, 0.03) == (
        None,
        None,
    )
    bare = app_window([], [], 3.0)
    assert bare["login_attempts"] is None and login_failure_rate(bare, 0.03) is None


def _inc() -> Incident:
    return Incident(
        id="inc-x",
        severity=Severity.P0,
        trigger="t",
        opened_at=datetime.now(UTC) - timedelta(minutes=1),
    )


def test_degraded_is_open_and_a_reopened_incident_escalates() -> None:
    inc = _inc()
    opened = inc.opened_entry()

    def e(kind: str, seq: int) -> Entry:
        return Entry(incident_id=inc.id, kind=kind, what=kind, seq=seq)

    deg = Incident.from_entries([opened, e("escalated", 1), e("degraded", 2)])
    assert deg is not None and deg.status == "degraded" and deg.is_open
    fixed = Incident.from_entries([opened, e("escalated", 1), e("degraded", 2), e("resolved", 3)])
    assert fixed is not None and fixed.status == "resolved" and not fixed.is_open
    reopened = Incident.from_entries(
        [opened, e("resolved", 1), e("reopened", 2), e("escalated", 3)]
    )
    assert reopened is not None and reopened.status == "escalated" and reopened.resolved_at is None


def test_read_only_results_are_honest() -> None:
    from flows.emergency_rollback import _read_only_result

    shared = {"ok": True, "skipped": True, "reason": "same server as blue's"}
    assert _read_only_result("mysql", shared, set()) == "skipped"
    assert _read_only_result("mysql", {"ok": True}, set()) == "ok"
    assert _read_only_result("mysql", {"ok": False, "error": "x"}, set()) == "failed"
    no_users = {"ok": False, "skipped": True, "reason": "no HeavyDB application users configured"}
    assert _read_only_result("heavydb", dict(no_users), set()) == "failed"
    res = dict(no_users)
    assert _read_only_result("heavydb", res, {"read-only:mysql"}) == "skipped"
    assert "MySQL is read-only" in res["reason"]


def test_a_step_is_ok_only_when_every_action_is() -> None:
    from flows.emergency_rollback import _Run

    run = object.__new__(_Run)
    run.outcomes = {
        "3-execution": [("redirect", "ok"), ("read-only:mysql", "skipped"), ("sessions", "ok")],
        "4-confirmation": [("confirm blue health", "ok"), ("user access", "failed")],
        "1-detection": [],
    }
    assert run.step_result("3-execution") == "ok"
    assert run.step_result("4-confirmation") == "failed"
    run.outcomes["3-execution"].append(("transactions", "failed"))
    assert run.step_result("3-execution") == "failed"


def test_an_incomplete_rollback_is_a_failed_state_that_carries_its_result() -> None:
    from flows.emergency_rollback import (
        RollbackIncomplete,
        RollbackResult,
        final_state,
        rollback_result,
    )

    ok = RollbackResult(incident_id="i", rolled_back=True, traffic="blue", status="resolved")
    assert final_state(ok) is ok
    deg = ok.model_copy(update={"status": "degraded", "left": ["sessions"], "problems": ["x"]})
    st = final_state(deg)
    assert st.is_failed() and st.name == "Degraded"  # type: ignore[union-attr]
    assert rollback_result(st) == deg
    esc = ok.model_copy(update={"status": "escalated", "rolled_back": False})
    st2 = final_state(esc)
    assert st2.name == "Escalated"  # type: ignore[union-attr]
    with pytest.raises(RollbackIncomplete) as err:
        st2.result()  # type: ignore[union-attr]
    assert err.value.result == esc


def test_call_bounded_abandons_a_blocked_body() -> None:
    from tasks.bounded import BoundedTimeout, bounded, call_bounded

    release = threading.Event()
    t0 = time.monotonic()
    with pytest.raises(BoundedTimeout, match=r"within 0\.3 s"):
        call_bounded(0.3, release.wait, 30)
    assert time.monotonic() - t0 < 2
    release.set()

    @bounded(5)
    def boom() -> None:
        raise ValueError("inner")

    with pytest.raises(ValueError, match="inner"):
        boom()
    assert boom.bound_s == 5  # type: ignore[attr-defined]
    assert call_bounded(1, lambda: 42) == 42


def test_emergency_path_tasks_declare_no_prefect_timeout() -> None:
    """Prefect's timeout_seconds cannot interrupt a worker thread (and says so in the log):
    the emergency path's tasks are bounded by `tasks.bounded` instead."""
    import tasks.notify as notify
    import tasks.rollback as rollback

    seen = 0
    for mod in (rollback, notify):
        for obj in vars(mod).values():
            if hasattr(obj, "timeout_seconds") and hasattr(obj, "fn"):
                seen += 1
                assert obj.timeout_seconds is None, obj.name
                assert getattr(obj.fn, "bound_s", None), f"{obj.name} is not bounded"
    assert seen >= 12


def test_drill_steps_come_from_the_journal_last_run_wins() -> None:
    from flows.rollback_drill import step_results

    t = datetime.now(UTC)

    def step(key: str, result: Any, dur: float, seq: int, **data: Any) -> Entry:
        return Entry(
            incident_id="i",
            kind="step",
            what=key,
            step=key,
            result=result,
            seq=seq,
            started_at=t,
            finished_at=t + timedelta(seconds=dur),
            data=data,
        )

    out = step_results(
        [
            step("3-execution", "failed", 20, 1, not_ok=["sessions"]),
            step("4-confirmation", "ok", 70, 2),
            step("3-execution", "ok", 10, 3),
        ]
    )
    assert out["3-execution"] == {
        "result": "ok",
        "duration_s": 10.0,
        "budget_s": 60,
        "within_budget": True,
        "not_ok": [],
    }
    assert out["4-confirmation"]["within_budget"] is False


def test_rollback_deployments_have_no_deployment_limit_and_failures_page() -> None:
    from deployments import declared as d

    project = d.load()
    for name in (d.ROLLBACK, d.MANUAL):
        assert project.get(name).concurrency is None, name
    page = project.get(d.PAGE_FAILED)
    assert "emergency" not in page.tags  # its own failure must not page itself in a loop
    (trigger,) = page.triggers
    assert set(trigger.expect) == set(d.RUN_FAILED_EVENTS)
    assert trigger.spec["match_related"]["prefect.resource.id"] == "prefect.tag.emergency"


def test_run_tags_carry_emergency_severity_and_environment() -> None:
    from flows.page_failed_run import incident_of
    from flows.runinfo import run_tags

    tags = run_tags("P0", "green", "inc-1")
    assert {"emergency", "severity:P0", "env:green", "incident:inc-1"} <= set(tags)
    assert incident_of("x", tags) == "inc-1"
    assert incident_of("rollback-inc-20250101T000000Z-green-abcd", []) == (
        "inc-20250101T000000Z-green-abcd"
    )
