"""Incident identity and the incident report rendered from the journal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tbs_emergency.domain.incident import Entry, Incident, incident_id
from tbs_emergency.domain.report import render_report, rto_s, step_timings
from tbs_emergency.domain.severity import Severity

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 24, 10, 0, 0, tzinfo=UTC)


def test_incident_id_is_deterministic_per_breach() -> None:
    a = incident_id("green", T0.timestamp() + 0.4)
    assert a == incident_id("green", T0)
    assert a.startswith("inc-20250124T100000Z-green-")
    assert a != incident_id("blue", T0) and a != incident_id("green", T0 + timedelta(seconds=1))


def test_report_has_timeline_steps_rto_and_what_failed() -> None:
    inc = Incident(id="inc-x", severity=Severity.P0, trigger="throughput 60% down", opened_at=T0)
    s = lambda sec: T0 + timedelta(seconds=sec)  # noqa: E731
    entries = [
        inc.opened_entry(),
        Entry(
            incident_id="inc-x",
            seq=1,
            at=s(1),
            kind="step",
            step="1-detection",
            what="Detection",
            result="ok",
            started_at=s(0),
            finished_at=s(1),
        ),
        Entry(
            incident_id="inc-x",
            seq=2,
            at=s(2),
            kind="action",
            what="redirect traffic to blue",
            system="traffic",
            result="ok",
            data={"impact": {"active_sessions": 12}},
        ),
        Entry(
            incident_id="inc-x",
            seq=3,
            at=s(3),
            kind="notification",
            what="immediate",
            system="pagerduty",
            result="failed",
            data={"template": "immediate", "detail": "503"},
        ),
        Entry(
            incident_id="inc-x",
            seq=4,
            at=s(200),
            kind="step",
            step="4-confirmation",
            what="Confirmation",
            result="ok",
            started_at=s(150),
            finished_at=s(200),
        ),
    ]
    md = render_report(inc, entries)
    assert "# Incident inc-x" in md and "| RTO (detection to confirmed recovery) | 200.0 s |" in md
    assert "redirect traffic to blue" in md and "active_sessions: 12" in md
    assert "FAILED: immediate" in md
    assert "20.0 s late" in md  # confirmation ended at 200 s, its window closes at 180 s
    assert rto_s(inc, entries) == 200.0
    rows = {r["step"]: r for r in step_timings(inc, entries)}
    assert rows["1-detection"]["overrun_s"] == 0.0 and rows["4-confirmation"]["overrun_s"] == 20.0


def test_report_without_confirmation_has_no_rto() -> None:
    inc = Incident(id="inc-y", severity=Severity.P1, trigger="t", opened_at=T0)
    assert rto_s(inc, [inc.opened_entry()]) is None
    assert "| RTO (detection to confirmed recovery) | - |" in render_report(
        inc, [inc.opened_entry()]
    )
