"""The scheduled `rollback_drill` flow with the real drill: fault on green, the watchdog's
trigger, the automation-started `emergency_rollback`, validation, every phase timed, things put
back, the record and its report stored. Named to run last in this folder: the flow stops the
drill's runner and watchdog at its end, as a scheduled drill does."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flows.rollback_drill import Drill
from tbs_emergency.connectors import Connectors
from tbs_emergency.validation.drills import load_history

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_rollback_drill_flow_with_the_real_drill(
    rollback_drill: Drill, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.drills as drills

    calls: list[str] = []

    def session_drill(config_path: str, sandbox_dir: str | None, log: Any) -> Drill:
        # the session's drill (its runner is already serving this world's deployments); a
        # second one would start a second runner against the same server
        calls.append(config_path)
        return rollback_drill

    monkeypatch.setattr(drills, "_make_drill", session_drill)
    with rollback_drill._api():
        record = drills.rollback_drill(
            drills.RollbackDrillParams(config_path=rollback_drill.config_path, scenario="errors")
        )
    assert calls, "the flow used the drill"
    assert record.ok, record.problems
    drill = record.details["drill"]
    assert drill["rolled_back"] and drill["traffic"] == "blue" and drill["status"] == "resolved"
    assert record.rto_s is not None and record.rto_target_s == 180 and record.rto_met
    names = [p.name for p in record.phases]
    assert "traffic redirected to blue" in names
    val = next(p for p in record.phases if p.name == "recovery validation (blue)")
    assert val.ok, val.detail
    # put back: traffic on green, and the record, its report and the history stored
    with Connectors(rollback_drill.settings) as conn:
        assert conn.traffic().active() == "green"
        store = conn.store()
        assert json.loads(store.get(record.key))["ok"] is True
        assert f"| rollback | {record.id} |" in store.get(record.report_key).decode()
        assert any(r.id == record.id for r in load_history(store, ["rollback"]))
