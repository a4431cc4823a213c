"""The rollback gate's verdicts (tbs_emergency.domain.gate): P1 authority, P0 never waits, stale,
unknown and closed incidents, duplicates; decisions journaled before the pause are honoured."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tbs_emergency.config import WatchdogConfig
from tbs_emergency.domain.gate import (
    RunInfo,
    automatic,
    decide,
    decision_entry,
    decision_of,
    duplicate_of,
)
from tbs_emergency.domain.incident import Entry, Incident
from tbs_emergency.domain.severity import Severity

pytestmark = pytest.mark.unit

NOW = 1_000_000.0
ME = RunInfo("me", "RUNNING", NOW - 5)


def incident(sev: Severity = Severity.P1, status: str = "open") -> Incident:
    return Incident(
        id="inc-1",
        severity=sev,
        trigger="throughput 30% below",
        opened_at=datetime.fromtimestamp(NOW - 10, UTC),
        status=status,  # type: ignore[arg-type]
    )


def verdict(**kw: Any) -> Any:
    args: dict[str, Any] = {
        "incident_id": "inc-1",
        "incident": incident(),
        "journal_readable": True,
        "entries": [],
        "automatic_run": True,
        "me": ME,
        "others": [],
        "now": NOW,
        "stale_after_s": 300.0,
        "veto_s": 300.0,
    }
    args.update(kw)
    return decide(**args)


def test_p1_waits_for_the_on_call_and_p0_never_waits() -> None:
    v = verdict()
    assert v.verdict == "wait" and v.veto_s == 300.0
    assert verdict(incident=incident(Severity.P0)).verdict == "proceed"
    assert verdict(veto_s=0.0).verdict == "proceed"  # 0 = immediate


def test_a_decision_journaled_before_the_pause_is_honoured() -> None:
    veto = decision_entry("inc-1", "veto", "alice", "known batch job", "cli")
    v = verdict(entries=[veto])
    assert v.verdict == "vetoed" and "alice" in v.reason and "known batch job" in v.reason
    approve = decision_entry("inc-1", "approve", "bob", "", "cli")
    assert verdict(entries=[approve]).verdict == "proceed"
    # the newest decision counts
    later = approve.model_copy(update={"seq": 5, "at": approve.at + timedelta(seconds=1)})
    assert decision_of([veto, later]).decision == "approve"  # type: ignore[union-attr]


def test_a_veto_holds_even_after_a_raise_to_p0() -> None:
    veto = decision_entry("inc-1", "veto", "alice", "", "cli")
    assert verdict(incident=incident(Severity.P0), entries=[veto]).verdict == "vetoed"


def test_stale_runs_are_cancelled_never_executed_late() -> None:
    old = RunInfo("me", "RUNNING", NOW - 140 - 300)
    v = verdict(me=old, incident=incident(Severity.P0))
    assert v.verdict == "cancel" and "stale" in v.reason


def test_unknown_or_closed_incidents_are_cancelled_an_unreadable_journal_proceeds() -> None:
    v = verdict(incident=None)
    assert v.verdict == "cancel" and "unknown to the journal" in v.reason
    assert verdict(incident=None, journal_readable=False).verdict == "proceed"
    v = verdict(incident=incident(status="resolved"))
    assert v.verdict == "cancel" and "resolved" in v.reason


def test_a_person_is_never_gated_by_p1_or_unknown_incidents() -> None:
    assert not automatic("person:alice")
    assert automatic("automation: tbs.trigger.fired") and automatic("watchdog (fallback)")
    assert verdict(automatic_run=False).verdict == "proceed"
    assert verdict(automatic_run=False, incident=None).verdict == "proceed"


def test_duplicates_end_without_acting_the_first_created_is_kept() -> None:
    first = RunInfo("a", "RUNNING", NOW - 20)
    second = RunInfo("b", "RUNNING", NOW - 10)
    assert duplicate_of(second, [first, second]) == first
    assert duplicate_of(first, [first, second]) is None
    done = RunInfo("c", "COMPLETED", NOW - 1)
    assert duplicate_of(first, [first, done]) == done
    # a scheduled run that never started does not stop a running one
    assert duplicate_of(second, [RunInfo("d", "SCHEDULED", NOW - 60), second]) is None
    assert duplicate_of(second, [RunInfo("e", "CANCELLED", NOW - 60), second]) is None
    v = verdict(me=second, others=[first, second], incident=incident(Severity.P0))
    assert v.verdict == "duplicate" and "a" in v.reason


def test_veto_window_is_scaled_with_a_floor() -> None:
    w = WatchdogConfig()
    assert w.veto_window_s(1.0) == 300.0
    assert w.veto_window_s(0.01) == 10.0  # never below the scaled floor
    assert w.veto_window_s(0.5) == 150.0
    assert WatchdogConfig(p1_veto_window=0).veto_window_s(0.01) == 0.0


def test_decision_entries_read_back() -> None:
    e = decision_entry("inc-1", "veto", "alice", "why", "cli")
    assert isinstance(e, Entry) and e.kind == "decision" and e.decided_by == "person:alice"
    d = decision_of([e])
    assert d is not None and d.decision == "veto" and d.by == "alice" and d.reason == "why"
    timeout = Entry(
        incident_id="inc-1",
        kind="decision",
        step="p1-decision",
        what="x",
        data={"decision": "timeout"},
    )
    assert decision_of([timeout]) is None
