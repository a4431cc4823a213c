"""The reconciliation report people read after a recovery."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tbs_emergency.recovery.reconcile import Finding, RecoveryRecord, render_markdown

pytestmark = pytest.mark.unit


def test_the_report_groups_what_needs_a_person_first() -> None:
    r = RecoveryRecord(
        recovery_id="20250124T100000Z-abcdef",
        kind="point-in-time-recovery",
        started_at=datetime(2025, 1, 24, 10, tzinfo=UTC),
        source={"database": "tbs"},
        target={"database": "tbs_rec"},
        plan=["restore", "replay"],
    )
    r.add("verified", "mysql", "1,000 rows after replay", table="trades", rows=1000)
    r.add("repaired", "heavydb", "rolled back to epoch 4", table="hot")
    extra = [
        Finding(
            kind="differed",
            system="mysql",
            table="trades",
            rows=3,
            detail="rows only in tbs",
            sample=[7, 8, 9],
        ),
        Finding(
            kind="needs-person",
            system="mysql",
            table="trades",
            detail="decide which rows to copy back",
        ),
    ]
    md = render_markdown(r, extra)
    assert (
        md.index("## Needs a person")
        < md.index("## What differed")
        < md.index("## What was repaired")
    )
    assert "**mysql trades** (3 rows): rows only in tbs e.g. 7, 8, 9" in md
    assert "incomplete" in md.splitlines()[0], "neither ok nor failed yet"
    r.ok = True
    assert "succeeded" in render_markdown(r).splitlines()[0]
    assert r.needs_person == []
