"""Detection and decision drills (issue 13), at the world's scaled time.

- `outage`: green's app process stopped: the outage rule fires P0 within seconds (direct
  probes + the load balancer's health view), the automation starts the rollback, traffic on blue;
  green's writes are carried without its ledger (green's MySQL over green's key range), the
  incident resolves and no acknowledged write is lost;
- `app-hang`: green's app accepts connections and answers nothing: also an outage;
- `p1-veto`: a 30% throughput loss (P1) is vetoed with `tbs-emergency ack INCIDENT --veto`: no
  rollback, traffic stays on green, the incident stays open;
- `p1-timeout`: the same fault, nobody answers: the rollback starts when the veto window ends,
  and the journal says nobody answered.
"""

from __future__ import annotations

import pytest

from flows.rollback_drill import Drill

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.mark.parametrize("scenario", ["outage", "app-hang"])
def test_an_outage_fires_p0_at_once_and_rolls_back(rollback_drill: Drill, scenario: str) -> None:
    r = rollback_drill.run(scenario)
    doc = r.as_dict()
    assert r.rolled_back and r.traffic == "blue", doc
    assert r.severity == "P0" and r.decision is None, doc  # P0 never waits
    entries = rollback_drill.journal.entries(r.incident_id or "")
    opened = next(e for e in entries if e.kind == "opened")
    assert "outage" in (opened.data.get("rule") or opened.what), opened
    t = r.timings
    assert t["detected_s"] is not None and t["detected_s"] <= 15.0, t
    assert t["redirected_s"] is not None and t["confirmed_s"] is not None, t
    assert r.started_by in ("automation", "fallback"), doc
    for key in ("rolled_back", "traffic", "status", "incident_id", "timings", "started_by"):
        assert key in doc
    if scenario == "outage":
        # Green's application (its ledger) is down, its MySQL is not: green's writes are carried
        # from green's MySQL over green's key range, and the incident resolves with none lost.
        carried = [e for e in entries if e.data.get("action") == "carry-writes"]
        assert carried and carried[-1].result == "ok", [e.data for e in carried]
        assert carried[-1].data.get("authority") == "green mysql key range", carried[-1].data
        assert "ledger cannot be read" in (carried[-1].data.get("authority_reason") or "")
        assert r.status == "resolved" and r.lost_writes == 0, doc


def test_p1_vetoed_by_the_on_call_does_not_roll_back(rollback_drill: Drill) -> None:
    r = rollback_drill.run("p1-veto")
    doc = r.as_dict()
    assert r.severity == "P1", doc
    assert not r.rolled_back and r.traffic == "green", doc
    assert r.status == "open" and r.decision == "veto", doc
    assert not r.problems, doc
    entries = rollback_drill.journal.entries(r.incident_id or "")
    assert not any(e.data.get("action") == "redirect" for e in entries)
    veto = [e for e in entries if e.step == "p1-decision" and e.data.get("decision") == "veto"]
    assert veto and veto[0].decided_by == "person:drill"


def test_p1_nobody_answers_rolls_back_after_the_veto_window(rollback_drill: Drill) -> None:
    r = rollback_drill.run("p1-timeout")
    doc = r.as_dict()
    assert r.severity == "P1" and r.decision == "timeout", doc
    assert r.rolled_back and r.traffic == "blue", doc
    entries = rollback_drill.journal.entries(r.incident_id or "")
    waited = next(e for e in entries if e.step == "p1-decision")
    assert "nobody answered" in waited.what
    redirect = next(e for e in entries if e.data.get("action") == "redirect" and e.result == "ok")
    assert redirect.at >= waited.at  # the redirect came after the window, not before
