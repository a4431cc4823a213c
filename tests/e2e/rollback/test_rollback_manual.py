"""The 15-minute manual rollback, pre-authorized (as in a drill), against the sandbox world."""

from __future__ import annotations

import pytest

from flows.rollback_drill import Drill

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_manual_rollback_records_every_checklist_item(rollback_drill: Drill) -> None:
    from flows.manual_rollback import ManualRollbackParams, run_manual_rollback

    rollback_drill.reset()
    res = run_manual_rollback(
        ManualRollbackParams(
            reason="e2e manual drill",
            requested_by="tester",
            authorized_by="tester",
            config_path=rollback_drill.config_path,
        )
    )
    assert res.authorized
    assert len(res.checklist) == 20
    assert all(i.status in ("done", "failed", "skipped") for i in res.checklist)
    skipped = [i for i in res.checklist if i.status == "skipped"]
    assert all(i.reason for i in skipped)  # every skip says why
    status = {i.item: i.status for i in res.checklist}
    assert status["Redirect load balancer to Blue environment"] == "done"
    assert status["Verify traffic redirection successful"] == "done"
    assert rollback_drill.conn.traffic().active() == "blue"
    entries = rollback_drill.journal.entries(res.incident_id)
    assert {e.step for e in entries if e.kind == "step"} >= {
        "phase-1-assessment",
        "phase-5-validation",
    }


def test_manual_rollback_dry_run_changes_nothing(rollback_drill: Drill) -> None:
    from flows.manual_rollback import ManualRollbackParams, run_manual_rollback

    rollback_drill.reset()
    res = run_manual_rollback(
        ManualRollbackParams(
            reason="dry",
            requested_by="tester",
            config_path=rollback_drill.config_path,
            dry_run=True,
        )
    )
    assert not res.completed and rollback_drill.conn.traffic().active() == "green"
    assert rollback_drill.journal.incident(res.incident_id) is None
