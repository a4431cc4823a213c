"""Contact verification, the quarterly review checklist and the full incident report."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from tbs_emergency.config import ContactConfig
from tbs_emergency.domain.incident import Entry, Incident
from tbs_emergency.domain.severity import Severity
from tbs_emergency.validation.contacts import add_problem, missing_roles, verify_contacts
from tbs_emergency.validation.drills import DrillRecord
from tbs_emergency.validation.report import render_full_report, split_sections
from tbs_emergency.validation.review import OpenFollowUps, review_items, review_markdown

pytestmark = pytest.mark.unit

NOW = datetime(2025, 4, 24, 3, 0, tzinfo=UTC)
KINDS = {"mail": "smtp", "sms": "sms", "hook": "webhook"}


def contact(name: str, role: str, **kw: object) -> ContactConfig:
    return ContactConfig(name=name, role=role, **kw)  # type: ignore[arg-type]


def test_contact_findings() -> None:
    contacts = [
        contact(
            "ok",
            "primary",
            email="a@x.io",
            phone="+15550100001",
            channels=["mail", "sms"],
            verified_at="2025-04-20",
        ),
        contact("old", "secondary", email="b@x.io", channels=["mail"], verified_at="2024-12-01"),
        contact("never", "stakeholder", channels=["hook"]),
        contact(
            "broken",
            "escalation",
            email="nope",
            phone="5550100",
            channels=["mail", "sms"],
            verified_at="yesterday",
        ),
        contact("unreachable", "users", channels=[], verified_at="2025-04-23T10:00:00Z"),
    ]
    f = {x.contact: x for x in verify_contacts(contacts, KINDS, NOW, 30, {"hook": "HTTP 500"})}
    assert not f["ok"].stale and f["ok"].verified_age_days == 4.1
    assert "last confirmed 144 days ago" in f["old"].problems[0]
    assert f["never"].problems == [
        "details never confirmed (no verified_at)",
        "channel hook: HTTP 500",
    ]
    assert any("malformed" in p for p in f["broken"].problems)
    assert any("international format" in p for p in f["broken"].problems)
    assert any("not a date" in p for p in f["broken"].problems)
    assert f["unreachable"].problems == ["no channel: this contact cannot be reached"]
    add_problem(list(f.values()), "ok", "no acknowledgement within 900 s")
    assert f["ok"].stale and f["ok"].row()["status"] == "STALE"
    assert missing_roles(contacts) == []
    assert missing_roles(contacts[1:3]) == ["primary", "escalation"]


def _rec(drill: str, days_ago: float, ok: bool = True, **kw: object) -> DrillRecord:
    at = NOW - timedelta(days=days_ago)
    return DrillRecord(
        drill=drill,
        id=f"d-{drill}-{days_ago}",
        started_at=at,  # type: ignore[arg-type]
        finished_at=at,
        ok=ok,
        **kw,
    )  # type: ignore[arg-type]


def test_quarterly_review_items() -> None:
    contacts = verify_contacts(
        [contact("p", "primary", channels=["hook"], verified_at="2025-04-01")], KINDS, NOW, 30
    )
    history = [
        _rec("rollback", 10, rto_s=200, rto_target_s=180),
        _rec("communication", 40),
        _rec("recovery", 5, ok=False, rpo_s=3600),
        _rec("contact_verification", 2),
    ]
    items = review_items(
        NOW,
        contacts,
        ["secondary"],
        history,
        date(2025, 1, 24),
        [OpenFollowUps(incident_id="inc-1", pending=["72h", "1w"], overdue=["72h"])],
    )
    by = {i.item: i for i in items}
    assert by["Review all emergency procedures"].status == "manual"
    assert "90 days ago" in by["Review all emergency procedures"].detail
    assert by["Update contact information"].status == "attention"
    assert "nobody holds: secondary" in by["Update contact information"].detail
    assert by["rollback drill held"].status == "attention"  # RTO missed
    assert by["communication drill held"].detail.endswith("overdue")
    assert (
        by["recovery drill held"].status == "attention"
        and "FAILED" in by["recovery drill held"].detail
    )
    assert by["contact verification drill held"].status == "ok"
    assert by["Validate automation systems"].status == "attention"
    assert "inc-1: 72h, 1w open (72h overdue)" in by["Post-incident follow-ups closed"].detail
    assert by["Conduct team training refresher"].status == "manual"
    md = review_markdown(NOW, items, "| trend |")
    assert "- [x] **contact verification drill held**" in md
    assert "**(attention)**" in md and "| trend |" in md
    old = review_items(NOW, [], [], [], date(2024, 1, 1), [])
    assert {i.item: i for i in old}["Review all emergency procedures"].status == "attention"
    assert {i.item: i for i in old}["rollback drill held"].detail.startswith("never run")


T0 = datetime(2025, 1, 24, 10, 0, tzinfo=UTC)


def _incident() -> Incident:
    return Incident(
        id="inc-1",
        severity=Severity.P0,
        env="green",
        rule="performance_degradation",
        trigger="throughput 40% below baseline for 3 windows",
        opened_at=T0,
    )


def _e(seconds: float, kind: str, what: str, **kw: object) -> Entry:
    return Entry(
        incident_id="inc-1", at=T0 + timedelta(seconds=seconds), kind=kind, what=what, **kw
    )  # type: ignore[arg-type]


def test_full_report_has_every_required_section() -> None:
    inc = _incident()
    entries = [
        inc.opened_entry(),
        _e(
            20,
            "step",
            "step 2-validation",
            step="2-validation",
            result="ok",
            started_at=T0,
            finished_at=T0 + timedelta(seconds=20),
            data={"impact": {"active_sessions": 42, "error_rate_percent": 0.4}},
        ),
        _e(
            30,
            "action",
            "redirect traffic to blue",
            system="traffic",
            result="ok",
            data={"action": "redirect"},
        ),
        _e(
            31,
            "notification",
            "immediate via sms",
            system="notify[sms]",
            result="failed",
            data={"error": "HTTP 500"},
        ),
        _e(
            150,
            "step",
            "step 4",
            step="4-confirmation",
            result="ok",
            started_at=T0 + timedelta(seconds=120),
            finished_at=T0 + timedelta(seconds=150),
        ),
        _e(
            160,
            "validation",
            "recovery validation of blue",
            system="blue",
            result="ok",
            data={
                "verdict": {
                    "passed": True,
                    "checks": [
                        {
                            "name": "MySQL archive reachable and readable",
                            "category": "database",
                            "status": "pass",
                        }
                    ],
                }
            },
        ),
    ]
    md = render_full_report(inc, entries, T0 + timedelta(hours=1))
    _, sections = split_sections(md)
    titles = [t for t, _ in sections]
    for t in (
        "Timeline of events",
        "Communication timeline",
        "Technical details",
        "Impact assessment",
        "Lessons learned",
        "Post-incident review",
    ):
        assert t in titles
    assert titles.count("Impact assessment") == 1 and "Review" not in titles
    assert "- users affected: 42 (active sessions at detection)" in md
    assert "- service downtime: 2.5 min (detection to confirmed recovery)" in md
    assert "- data integrity: verified (see evidence)" in md
    assert "database checks passed" in md
    assert "redirect traffic to blue on traffic: ok" in md
    assert "with failures: notify[sms]" in md
    assert "_to be completed by the incident owner_ (due with the 72 h" in md
    assert "notification failed: immediate via sms: HTTP 500" in md
    assert "| Immediate Review (24 hours) | 2025-01-25 10:00 | not scheduled |" in md


def test_report_uses_given_root_cause_and_lessons_and_says_ongoing() -> None:
    inc = _incident()
    entries = [
        inc.opened_entry(),
        _e(
            5,
            "review-note",
            "root cause recorded",
            data={"root_cause": "bad index in 1.9.0", "lessons": {"tools": "alert on index"}},
        ),
    ]
    md = render_full_report(inc, entries, T0 + timedelta(minutes=3))
    assert "bad index in 1.9.0" in md and "alert on index" in md
    assert "ongoing: no confirmed recovery yet" in md
    assert "not verified: no integrity check" in md
