"""No acknowledged write lost, sessions really moved: a rollback drill on separate stores.

The drill measures on the systems themselves (green's ledger against blue's MySQL, the session
ids in green's Redis before the fault against blue's Redis, pre-rollback sessions through the
load balancer); this test also logs a user in through the load balancer while green is live and
uses that cookie on blue afterwards, and checks the journal's carry and session actions and
blue's HeavyDB (the hot table) against green's ledger.
"""

from __future__ import annotations

import pytest

from flows.rollback_drill import Drill
from sandbox.seed import SANDBOX_USERS
from tbs_emergency.connectors.useraccess import UserAccess
from tbs_emergency.dbops.carry import ledger_keys
from tests.e2e.rollback.test_rollback_drills import assert_resolved_rollback

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_rollback_carries_every_acknowledged_write_and_every_session(
    rollback_drill: Drill,
) -> None:
    d = rollback_drill
    d.reset()  # green live, so the login below is green's session
    assert d.conn.traffic().active() == "green"
    name, _role, password, _ = next(u for u in SANDBOX_USERS if u[0] == "analyst01")
    ua = UserAccess(d.settings.traffic.url or "")
    try:
        sid = ua.login(name, password)
        assert ua.me(sid)["served_by"] == "green"
        assert d.conn.sessions("blue").get(sid) is None  # separate stores: not on blue yet

        r = d.run("throughput")
        assert_resolved_rollback(d, r)  # the trigger family's checks (test_rollback_drills.py)
        # measured by the drill on the systems
        assert r.lost_writes == 0, r.as_dict()
        s = r.sessions or {}
        assert s["before"] > 0 and s["on_blue"] == s["before"], s
        assert s["logged_in_by_drill"] > 0
        assert s["drill_users_served_by_blue"] == s["logged_in_by_drill"], s
        assert s["writes"]["trades"]["ledgered"] > 0
        # the cookie from before the rollback answers 200 on blue through the load balancer
        me = ua.me(sid)
        assert me["served_by"] == "blue" and me["user"] == name
    finally:
        ua.close()

    entries = d.journal.entries(r.incident_id or "")
    carry = [e for e in entries if e.data.get("action") == "carry-writes"]
    assert carry and carry[-1].result == "ok", [(e.result, e.data.get("lines")) for e in carry]
    data = carry[-1].data
    assert data["ledger_entries"] > 0 and data["missing"] == 0
    systems = {g["system"] for t in data["tables"] for g in t["targets"]}
    assert systems == {"mysql[blue]", "heavydb[blue]"}
    sessions = [e for e in entries if e.data.get("action") == "sessions"]
    assert sessions and sessions[-1].result == "ok"
    sd = sessions[-1].data
    assert sd["shared_store"] is False and sd["missing"] == 0
    assert sd["verified"] == sd["before"] - sd["expired"] > 0

    # blue's HeavyDB (the hot table) holds every key green's MySQL acknowledged
    t = ledger_keys(d.conn.app("green").ledger())["trades"]
    _, rows = d.conn.heavydb("blue").read_rows("trades", ["trade_id"], t.keys)
    assert {r[0] for r in rows} >= {k[0] for k in t.keys}


def test_manual_rollback_ticks_the_session_and_data_items_it_did(rollback_drill: Drill) -> None:
    from flows.manual_rollback import ManualRollbackParams, manual_rollback

    d = rollback_drill
    d.reset()
    name, _role, password, _ = next(u for u in SANDBOX_USERS if u[0] == "analyst02")
    ua = UserAccess(d.settings.traffic.url or "")
    try:
        sid = ua.login(name, password)
        res = manual_rollback(
            ManualRollbackParams(
                reason="e2e: sessions and writes",
                requested_by="tester",
                authorized_by="tester",
                config_path=d.config_path,
            )
        )
        items = {i.item: i for i in res.checklist}
        for item in (
            "Synchronize critical data between environments",
            "Preserve active user sessions",
            "Transfer authentication states",
            "Update session routing",
        ):
            assert items[item].status == "done", (item, items[item].reason)
        assert "verified on blue" in items["Preserve active user sessions"].reason
        assert "served by blue" in items["Update session routing"].reason
        me = ua.me(sid)  # the cookie from before the manual rollback, through the LB
        assert me["served_by"] == "blue" and me["user"] == name
    finally:
        ua.close()
    t = ledger_keys(d.conn.app("green").ledger())["trades"]
    _, rows = d.conn.mysql("blue").read_rows("trades", ["trade_id"], t.keys)
    assert len(rows) == len(t.keys)
