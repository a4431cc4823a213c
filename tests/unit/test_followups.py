"""Post-incident follow-ups: the runbook's three checklists, their due times and state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tbs_emergency.domain.incident import Entry
from tbs_emergency.validation.followups import (
    REVIEWS,
    WINDOWS,
    all_done,
    checklist_markdown,
    due_at,
    is_closed,
    pending,
    schedule_time,
    states,
)

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 24, 10, 0, tzinfo=UTC)


def fu(window: str, event: str, at: datetime, by: str = "automation", **data: object) -> Entry:
    return Entry(
        incident_id="inc-1",
        kind="followup",
        what=f"{window} {event}",
        at=at,
        decided_by=by,
        data={"followup": window, "event": event, **data},
    )


def test_the_runbooks_three_reviews_and_items() -> None:
    assert WINDOWS == ("24h", "72h", "1w")
    assert REVIEWS["24h"].items[0] == "Complete incident timeline documentation"
    assert REVIEWS["72h"].items[0] == "Root cause analysis completion"
    assert REVIEWS["1w"].items[1] == "Update emergency procedures"
    assert all(len(r.items) == 4 for r in REVIEWS.values())


def test_due_and_schedule_times() -> None:
    assert due_at(T0, "24h") == T0 + timedelta(hours=24)
    assert due_at(T0, "72h") == T0 + timedelta(hours=72)
    assert due_at(T0, "1w") == T0 + timedelta(days=7)
    late = T0 + timedelta(days=2)
    assert schedule_time(T0, "24h", late) == late
    assert schedule_time(T0, "72h", late) == T0 + timedelta(hours=72)
    with pytest.raises(ValueError):
        due_at(T0, "2w")


def test_state_from_the_journal() -> None:
    entries = [
        fu("24h", "scheduled", T0, flow_run_id="r1"),
        fu("72h", "scheduled", T0),
        fu("24h", "posted", T0 + timedelta(hours=24)),
        fu("24h", "done", T0 + timedelta(hours=26), by="alice", note="debrief held"),
        fu("24h", "done", T0 + timedelta(hours=30), by="bob"),
        Entry(incident_id="inc-1", kind="action", what="unrelated"),
    ]
    st = states(T0, entries)
    assert st["24h"].status == "done" and st["24h"].done_by == "alice"
    assert st["24h"].flow_run_id == "r1" and st["24h"].note == "debrief held"
    assert st["72h"].status == "scheduled" and st["1w"].status == "not scheduled"
    assert pending(T0, entries) == ["72h", "1w"]
    assert not all_done(T0, entries)
    entries += [fu("72h", "done", T0), fu("1w", "done", T0)]
    assert all_done(T0, entries)
    assert not is_closed(entries)
    assert is_closed([*entries, Entry(incident_id="inc-1", kind="closed", what="closed")])


def test_checklist_ticks_when_done_and_says_how_to_record() -> None:
    st = states(T0, [fu("72h", "posted", T0)])
    md = checklist_markdown("inc-1", "72h", st["72h"], "Primary on-call", st)
    assert md.startswith("# Comprehensive Review (72 hours): incident inc-1")
    assert "- [ ] Root cause analysis completion" in md
    assert "tbs-emergency followup done inc-1 72h --by NAME" in md
    done = states(T0, [fu("72h", "done", T0, by="alice")])
    assert "- [x] Training needs assessment" in checklist_markdown(
        "inc-1", "72h", done["72h"], None
    )
