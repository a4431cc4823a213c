"""Escalation: an unacknowledged P0 goes primary -> secondary -> manager on the runbook's times."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tbs_emergency.domain.escalation import due, next_page_at, schedule
from tbs_emergency.domain.severity import Severity

pytestmark = pytest.mark.unit


@dataclass
class C:
    name: str
    role: str
    response_minutes: float | None = None


TEAM = [C("ann", "primary"), C("bob", "secondary"), C("cat", "escalation"), C("dan", "users")]


def test_p0_chain_on_runbook_response_times() -> None:
    pages = schedule(TEAM, Severity.P0)
    assert [(p.contact, p.at_s) for p in pages] == [("ann", 0), ("bob", 300), ("cat", 1200)]


def test_p1_waits_longer_and_p2_never_escalates() -> None:
    assert [p.at_s for p in schedule(TEAM, Severity.P1)] == [0, 900, 1800]
    assert [p.contact for p in schedule(TEAM, Severity.P2)] == ["ann"]


def test_due_pages_respect_age_acks_and_what_was_sent() -> None:
    assert [p.contact for p in due(TEAM, Severity.P0, 0, False, set())] == ["ann"]
    assert [p.contact for p in due(TEAM, Severity.P0, 299.9, False, {"ann"})] == []
    assert [p.contact for p in due(TEAM, Severity.P0, 300, False, {"ann"})] == ["bob"]
    assert due(TEAM, Severity.P0, 5000, True, set()) == []
    assert next_page_at(TEAM, Severity.P0, {"ann", "bob"}) == 1200
    assert next_page_at(TEAM, Severity.P0, {"ann", "bob", "cat"}) is None


def test_configured_response_times_and_scale() -> None:
    team = [C("ann", "primary", 2), C("bob", "secondary", 3), C("cat", "escalation")]
    assert [p.at_s for p in schedule(team, Severity.P0, time_scale=0.01)] == [0, 1.2, 3.0]
