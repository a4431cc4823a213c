"""Drills end to end in the sandbox: each produces its report, chart and history entry."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tasks.drills import record_ack
from tbs_emergency.config import load_settings
from tbs_emergency.connectors import Connectors
from tbs_emergency.validation.drills import DrillRecord, drill_id, load_history, save
from tests.e2e.conftest import World
from tests.e2e.test_validation_fixtures import (
    deliveries,
    last_delivery_id,
    prefect_api,
    validation_config,
)

# The first test may start a Prefect server (minutes on a loaded machine): a longer timeout.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def api(request: pytest.FixtureRequest, sandbox_world: World) -> str:
    return prefect_api(request)


@pytest.fixture(scope="module")
def config(sandbox_world: World, tmp_path_factory: pytest.TempPathFactory) -> str:
    return validation_config(sandbox_world, tmp_path_factory.mktemp("drills"))


@pytest.fixture(scope="module")
def conn(config: str) -> Any:
    c = Connectors(load_settings(config))
    yield c
    c.close()


def _assert_stored(conn: Any, record: DrillRecord) -> None:
    store = conn.store()
    assert record.report_key and record.chart_key
    history = json.loads(store.get(record.key))
    assert history["id"] == record.id and history["drill"] == record.drill
    assert history["report_key"] == record.report_key
    assert store.get(record.chart_key).startswith(PNG), "the chart is a PNG"
    report = store.get(record.report_key).decode()
    assert report.startswith(f"# {record.drill.replace('_', ' ')} drill {record.id}")
    assert "## RTO and RPO trend against the runbook's targets" in report
    assert "data:image/png;base64," in report, "the chart is embedded in the report"
    assert record.chart_key in report
    assert (
        "| drill | run | at (UTC) | ok | RTO (s) |" in report or "No drill has measured" in report
    )


def test_communication_drill(api: str, config: str, conn: Any, sandbox_world: World) -> None:
    from flows.drills import CommunicationDrillParams, communication_drill

    settings = load_settings(config)
    since = last_delivery_id(sandbox_world)
    acked: list[str] = []
    silent = "Engineering manager (sandbox)"

    def acknowledge() -> None:
        # the people: read the drill id from the message they got and acknowledge it
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for d in deliveries(sandbox_world, since):
                m = re.search(r"drill-communication-\d{8}T\d{9}Z", json.dumps(d))
                if m:
                    for c in settings.contacts:
                        if c.role not in ("users",) and c.name != silent:
                            record_ack(conn.store(), m.group(0), c.name, f"{c.name} (test)")
                            acked.append(c.name)
                    return
            time.sleep(0.3)

    helper = threading.Thread(target=acknowledge, daemon=True)
    helper.start()
    started = time.monotonic()
    record = communication_drill(CommunicationDrillParams(config_path=config, ack_wait_s=12))
    took = time.monotonic() - started
    helper.join(5)
    assert acked, "the test message reached the sink"
    rows = record.details["deliveries"]
    delivered = {(r["contact"], r["channel"]) for r in rows if r["result"] == "DELIVERED"}
    skipped = [r for r in rows if r["result"] == "SKIPPED"]
    # every channel of every contact, except the public status page and all users
    assert ("Primary on-call (sandbox)", "pagerduty") in delivered
    assert ("Primary on-call (sandbox)", "email") in delivered
    assert ("Secondary on-call (sandbox)", "sms") in delivered
    assert ("Stakeholders (sandbox)", "stakeholders") in delivered
    assert any(r["contact"] == "All users (sandbox)" for r in skipped)
    assert not [r for r in rows if r["result"] == "FAILED"]
    sent = deliveries(sandbox_world, since)
    assert {d["channel"] for d in sent} >= {"oncall", "sms", "stakeholders", "email", "pagerduty"}
    # acknowledgements collected; the one who did not acknowledge is a stale contact
    assert set(record.details["acknowledgements"]) == set(acked)
    assert any(silent in f and "no acknowledgement" in f for f in record.findings)
    assert not record.ok
    _assert_stored(conn, record)
    assert took < 60, f"took {took:.1f}s"


def _ingestion(world: World, enabled: bool) -> None:
    import httpx

    for env in ("blue", "green"):
        httpx.post(f"{world.url(f'app-{env}')}/_ingest", json={"enabled": enabled}, timeout=10)


def test_recovery_drill(api: str, config: str, conn: Any, sandbox_world: World) -> None:
    from flows.drills import RecoveryDrillParams, recovery_drill
    from flows.emergency_backup import BackupParams, emergency_backup

    # A backup to restore, taken while the app stand-ins' trickle is paused: a HeavyDB DUMP of a
    # table written every second is refused by the backup ("the table kept changing").
    _ingestion(sandbox_world, False)
    try:
        backup = emergency_backup(BackupParams(config_path=config, environment="blue"))
    finally:
        _ingestion(sandbox_world, True)
    assert backup.complete, backup
    time.sleep(1.0)  # the simulated failure comes after the backup: RPO > 0
    started = time.monotonic()
    record = recovery_drill(RecoveryDrillParams(config_path=config))
    took = time.monotonic() - started
    assert record.ok, (record.problems, record.phases)
    assert record.rto_s is not None and 0 < record.rto_s < 900 and record.rto_target_s == 900
    assert record.rpo_s is not None and record.rpo_s >= 1.0
    assert record.details["backup"]["backup_id"] == backup.backup_id, "the newest backup"
    names = [p.name for p in record.phases]
    assert "restore and verify (counts, checksums)" in names
    assert "drop the scratch copies" in names
    integrity = record.details["integrity"]
    assert {i["store"] for i in integrity} == {"mysql", "heavydb"} and all(
        i["ok"] for i in integrity
    )
    # the scratch copies are gone
    assert not [t for t in conn.heavydb("blue").tables() if "_drill_" in t]
    from tasks.backup import recovery_mysql

    rows = recovery_mysql(config, "blue").query("SHOW DATABASES")  # as root: sees every database
    assert not [r for r in rows if "_drill_" in str(r[0])]
    _assert_stored(conn, record)
    assert f"| recovery | {record.id} |" in conn.store().get(record.report_key).decode()
    assert took < 60, f"took {took:.1f}s"


def test_contact_verification_and_quarterly_review(api: str, config: str, conn: Any) -> None:
    from flows.drills import (
        ContactVerificationParams,
        QuarterlyReviewParams,
        contact_verification,
        quarterly_review,
    )

    # the newest rollback drill record missed its RTO target (newer than any drill the session
    # ran through the world's executor before this test)
    then = datetime.now(UTC) - timedelta(seconds=1)
    save(
        conn.store(),
        DrillRecord(
            drill="rollback",
            id=drill_id("rollback", then),
            started_at=then,
            finished_at=then + timedelta(seconds=1),
            ok=True,
            rto_s=240.0,
            rto_target_s=180.0,
        ),
    )
    started = time.monotonic()
    cv = contact_verification(ContactVerificationParams(config_path=config))
    # the sandbox contacts have never been confirmed (no verified_at): all stale
    assert not cv.ok and all("never confirmed" in f for f in cv.findings)
    assert {c["channel"] for c in cv.details["channels"]} >= {"oncall", "email", "pagerduty"}
    _assert_stored(conn, cv)
    review = quarterly_review(QuarterlyReviewParams(config_path=config))
    items = {i["item"]: i for i in review.details["items"]}
    assert items["rollback drill held"]["status"] == "attention"  # RTO 240 s > 180 s
    assert "RTO 240.0 s vs 180 s" in items["rollback drill held"]["detail"]
    assert items["contact verification drill held"]["status"] in ("ok", "attention")
    assert items["Update contact information"]["status"] == "attention"
    assert "last updated 2025-01-24" in items["Review all emergency procedures"]["detail"]
    _assert_stored(conn, review)
    report = conn.store().get(review.report_key).decode()
    assert "- [ ] **Test all emergency access methods**" in report
    assert len(load_history(conn.store(), ["quarterly_review"])) >= 1
    assert time.monotonic() - started < 60


# The rollback drill with the real drill (runner, watchdog, automation) is in
# tests/e2e/rollback/test_zz_drill_flow.py, beside the world it needs.


def test_rollback_drill_refuses_a_target_it_cannot_drill(
    api: str, sandbox_world: World, conn: Any, tmp_path: Any
) -> None:
    from pathlib import Path

    from flows.drills import RollbackDrillParams, run_rollback_drill

    path = Path(validation_config(sandbox_world, tmp_path))
    text = path.read_text()
    assert '[drills]\ntarget = "sandbox"' in text
    path.write_text(text.replace('[drills]\ntarget = "sandbox"', '[drills]\ntarget = "staging"'))
    record = run_rollback_drill(RollbackDrillParams(config_path=str(path)))  # ends Failed
    assert not record.ok and record.target == "staging"
    assert "injects its fault through the sandbox world" in record.problems[0]
    assert json.loads(conn.store().get(record.key))["ok"] is False, "the refusal is on record"
