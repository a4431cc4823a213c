"""The post-incident report and its follow-ups, end to end: rendered from the journal in S3,
stored beside it, the three reviews scheduled as flow runs at incident time + 24 h / 72 h / 1 w,
a review posting its checklist and notifying the owner, and the incident closing when all
three are done."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from tbs_emergency.config import load_settings
from tbs_emergency.connectors import Connectors
from tbs_emergency.domain.incident import RESOLVED, Entry, Incident, incident_id
from tbs_emergency.domain.journal import Journal, report_key
from tbs_emergency.domain.severity import Severity
from tests.e2e.conftest import World
from tests.e2e.test_validation_fixtures import (
    deliveries,
    last_delivery_id,
    prefect_api,
    validation_config,
)

# The first test may start a Prefect server (minutes on a loaded machine): a longer timeout.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def api(request: pytest.FixtureRequest, sandbox_world: World) -> str:
    return prefect_api(request)


@pytest.fixture(scope="module")
def config(sandbox_world: World, tmp_path_factory: pytest.TempPathFactory) -> str:
    return validation_config(sandbox_world, tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def followup_deployment(api: str) -> str:
    """The follow-up deployment `sandbox up` registered from prefect.yaml (`tbs-emergency
    deploy`): the report schedules its reviews as runs of it."""
    import asyncio

    from prefect.client.orchestration import get_client

    name = "incident_followup/incident-followup"

    async def read() -> Any:
        async with get_client() as client:
            return await client.read_deployment_by_name(name)

    assert asyncio.run(read()).work_pool_name == "tbs-emergency"
    return name


def _incident(config: str, ago: timedelta) -> tuple[Incident, Journal, Connectors]:
    conn = Connectors(load_settings(config))
    j = Journal(conn.store())
    opened = datetime.now(UTC) - ago
    inc = Incident(
        id=incident_id("green", opened, salt=f"report-e2e-{time.time()}"),
        severity=Severity.P0,
        env="green",
        rule="performance_degradation",
        trigger="throughput 60% below baseline for 3 windows",
        opened_at=opened,
    )
    j.open(inc)
    at = opened + timedelta(seconds=20)
    for e in (
        Entry(
            incident_id=inc.id,
            kind="step",
            what="step 2-validation",
            step="2-validation",
            result="ok",
            started_at=opened,
            finished_at=at,
            data={"impact": {"active_sessions": 17, "error_rate_percent": 0.2}},
        ),
        Entry(
            incident_id=inc.id,
            kind="action",
            what="redirect traffic to blue",
            at=at,
            system="traffic",
            result="ok",
            started_at=at,
            finished_at=at,
            data={"action": "redirect"},
        ),
        Entry(
            incident_id=inc.id,
            kind="step",
            what="step 4-confirmation",
            step="4-confirmation",
            at=opened + timedelta(seconds=140),
            result="ok",
            started_at=opened + timedelta(seconds=120),
            finished_at=opened + timedelta(seconds=140),
        ),
        Entry(
            incident_id=inc.id,
            kind=RESOLVED,
            what="incident resolved",
            at=opened + timedelta(seconds=141),
            result="ok",
        ),
    ):
        j.append(e)
    return inc, j, conn


async def _runs(ids: list[str]) -> list[Any]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return [await client.read_flow_run(UUID(i)) for i in ids]


def test_report_is_rendered_stored_and_schedules_the_reviews(
    config: str, followup_deployment: str
) -> None:
    from flows.incident_report import IncidentReportParams, incident_report

    inc, j, conn = _incident(config, timedelta(hours=30))  # the 24 h review is already due
    started = time.monotonic()
    rep = incident_report(
        IncidentReportParams(
            incident_id=inc.id,
            config_path=config,
            root_cause="a missing index in release 1.9.0",
            followup_deployment=followup_deployment,
        )
    )
    assert rep.problems == [], rep.problems
    stored = conn.store().get(report_key(inc.id)).decode()
    assert stored == rep.markdown
    for section in (
        "## Timeline of events",
        "## Technical details",
        "### Root cause analysis",
        "### Systems affected",
        "### Data impact assessment",
        "### Recovery actions taken",
        "## Impact assessment",
        "## Lessons learned",
        "## Post-incident review",
    ):
        assert section in stored, section
    assert "a missing index in release 1.9.0" in stored
    assert "- users affected: 17 (active sessions at detection)" in stored
    assert "- service downtime: 2.3 min (detection to confirmed recovery)" in stored
    # the three reviews: flow runs scheduled at incident time + 24 h (now: overdue), 72 h, 1 w
    by = {f["window"]: f for f in rep.followups}
    assert all(by[w]["scheduled"] for w in ("24h", "72h", "1w")), rep.followups
    runs = {r.name: r for r in asyncio.run(_runs([by[w]["flow_run_id"] for w in by]))}
    r72 = runs[f"followup-72h-{inc.id}"].expected_start_time
    r1w = runs[f"followup-1w-{inc.id}"].expected_start_time
    r24 = runs[f"followup-24h-{inc.id}"].expected_start_time
    assert abs((r72 - (inc.opened_at + timedelta(hours=72))).total_seconds()) < 1
    assert abs((r1w - (inc.opened_at + timedelta(weeks=1))).total_seconds()) < 1
    assert abs((r24 - datetime.now(UTC)).total_seconds()) < 120, "overdue: scheduled now"
    # the later reviews wait for their time; the overdue one may already have been picked up by
    # the world's executor (it executes every deployment of prefect.yaml)
    later = (runs[f"followup-72h-{inc.id}"], runs[f"followup-1w-{inc.id}"])
    assert all(r.state_type.value == "SCHEDULED" for r in later)
    # rendering again schedules nothing twice
    again = incident_report(
        IncidentReportParams(
            incident_id=inc.id, config_path=config, followup_deployment=followup_deployment
        )
    )
    assert [f["flow_run_id"] for f in again.followups] == [by[w]["flow_run_id"] for w in by]
    assert sum(1 for e in j.entries(inc.id) if e.data.get("event") == "scheduled") == 3
    assert "| Comprehensive Review (72 hours) |" in again.markdown and "scheduled" in again.markdown
    conn.close()
    assert time.monotonic() - started < 60


def test_a_review_posts_its_checklist_and_the_incident_closes_when_all_are_done(
    config: str, api: str, sandbox_world: World
) -> None:
    from flows.followups import (
        CompleteFollowUpParams,
        FollowUpParams,
        complete_followup,
        incident_followup,
    )

    inc, j, conn = _incident(config, timedelta(hours=25))
    since = last_delivery_id(sandbox_world)
    started = time.monotonic()
    res = incident_followup(FollowUpParams(incident_id=inc.id, window="24h", config_path=config))
    assert res["owner"] == "Primary on-call (sandbox)"
    assert res["deliveries"] and all(d["ok"] for d in res["deliveries"])
    got = deliveries(sandbox_world, since)
    assert any("Immediate Review (24 hours)" in str(d.get("body")) for d in got)
    for w in ("24h", "72h"):
        r = complete_followup(
            CompleteFollowUpParams(incident_id=inc.id, window=w, by="alice", config_path=config)
        )
        assert r["recorded"] and not r["closed"]
    r = complete_followup(
        CompleteFollowUpParams(incident_id=inc.id, window="1w", by="alice", config_path=config)
    )
    assert r["closed"] and r["pending"] == []
    again = complete_followup(
        CompleteFollowUpParams(incident_id=inc.id, window="1w", by="bob", config_path=config)
    )
    assert again["already_done"] and again["closed"]
    entries = j.entries(inc.id)
    assert sum(1 for e in entries if e.kind == "closed") == 1
    report = conn.store().get(report_key(inc.id)).decode()
    assert "| Follow-up Actions (1 week) |" in report and "| done |" in report
    conn.close()
    assert time.monotonic() - started < 60
