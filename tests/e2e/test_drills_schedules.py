"""The drill schedules are what the runbook says: prefect.yaml's entries as the world's Prefect
server holds them after `sandbox up` registered prefect.yaml with `tbs-emergency deploy` (the
production path), read back from the server."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from typing import Any

import pytest

from deployments import declared
from tests.e2e.test_validation_fixtures import prefect_api

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def api(request: pytest.FixtureRequest) -> str:
    return prefect_api(request)


async def _read() -> dict[str, Any]:
    """deployment name -> the deployment the world's server holds."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return {d.name: d for d in await client.read_deployments()}


def _next(cron: str, tz: str, n: int = 8) -> list[datetime]:
    from prefect.server.schemas.schedules import CronSchedule

    start = datetime(2025, 1, 25, tzinfo=UTC)  # after the runbook's "Last Updated"
    return asyncio.run(CronSchedule(cron=cron, timezone=tz).get_dates(n=n, start=start))


def test_schedules_read_from_the_server_are_the_runbooks(api: str) -> None:
    deployed = asyncio.run(_read())
    project = declared.load()
    assert {d.name for d in project.deployments} <= set(deployed), "prefect.yaml not deployed"
    sched = {}
    for name, dep in deployed.items():
        active = [s for s in dep.schedules if s.active]
        sched[name] = [(s.schedule.cron, s.schedule.timezone) for s in active]

    # "Monthly Emergency Drills", "Next Review: Monthly (24th of each month)"
    assert sched["rollback-drill"] == [("0 3 24 * *", "UTC")]
    for drill in ("rollback-drill", "communication-drill", "recovery-drill"):
        ((cron, tz),) = sched[drill]
        runs = _next(cron, tz)
        assert all(r.day == 24 for r in runs), (drill, runs)
        assert [r.month for r in runs] == [2, 3, 4, 5, 6, 7, 8, 9], "once a month"
        assert tz == "UTC"
    starts = sorted(
        _next(sched[d][0][0], "UTC", 1)[0]
        for d in ("rollback-drill", "communication-drill", "recovery-drill")
    )
    assert len(set(starts)) == 3, "the monthly drills do not start together"
    # "Emergency Contact Verification: Weekly"
    ((cron, tz),) = sched["contact-verification"]
    runs = _next(cron, tz)
    gaps = {(b - a).days for a, b in itertools.pairwise(runs)}
    assert gaps == {7} and tz == "UTC"
    # "Quarterly Comprehensive Review"
    ((cron, tz),) = sched["quarterly-review"]
    runs = _next(cron, tz, 4)
    assert [r.month for r in runs] == [4, 7, 10, 1] and all(r.day == 24 for r in runs)


def test_declared_entries_are_complete() -> None:
    by = {d.name: d for d in declared.load().deployments}
    for name in ("recovery-validation", "incident-report", "incident-followup"):
        assert not by[name].schedules, "on demand or event driven"
    (trig,) = by["incident-report"].triggers
    assert trig.expect == ("tbs.incident.resolved",)
    assert trig.parameters["params"]["incident_id"] == "{{ event.resource['tbs.incident.id'] }}"
