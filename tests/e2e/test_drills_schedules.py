"""The drill schedules are what the runbook says: the entries of prefect.yaml (once merged
there; deployments/drills.yaml until then, and the two must agree) deployed to a Prefect server
and read back from it."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_validation_fixtures import prefect_api

# The first test may start a Prefect server (minutes on a loaded machine): a longer timeout.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "deployments" / "drills.yaml"
PREFECT_YAML = ROOT / "prefect.yaml"


def _entries() -> list[dict[str, Any]]:
    """Our deployment entries as prefect.yaml has them (drills.yaml's where not merged yet)."""
    ours = yaml.safe_load(SPEC.read_text())["deployments"]
    merged = {d["name"]: d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}
    return [merged.get(d["name"], d) for d in ours]


@pytest.fixture(scope="module")
def api(request: pytest.FixtureRequest) -> str:
    return prefect_api(request)  # a Prefect server only: the schedules need no sandbox world


def _deploy_all() -> dict[str, str]:
    """Apply the scheduled entries of drills.yaml (concurrently): name -> 'flow/deployment'.

    A schedule entry becomes what `prefect deploy` makes of it: a CronSchedule with the entry's
    cron and timezone, active as the entry says."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import load_flow_from_entrypoint

    names, deployments = {}, []
    for d in _entries():
        if not d.get("schedules"):
            continue
        path, func = d["entrypoint"].split(":")
        flow = load_flow_from_entrypoint(f"{ROOT / path}:{func}", use_placeholder_flow=False)
        schedules = [
            {
                "schedule": CronSchedule(cron=s["cron"], timezone=s.get("timezone")),
                "active": s.get("active", True),
            }
            for s in d["schedules"]
        ]
        deployments.append(
            flow.to_deployment(
                name=d["name"],
                schedules=schedules or None,
                tags=d.get("tags"),
                description=d.get("description"),
            )
        )
        names[d["name"]] = f"{flow.name}/{d['name']}"

    async def apply() -> None:
        await asyncio.gather(*(dep.aapply() for dep in deployments))

    asyncio.run(apply())
    return names


async def _read(names: dict[str, str]) -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return {n: await client.read_deployment_by_name(full) for n, full in names.items()}


def _next(cron: str, tz: str, n: int = 8) -> list[datetime]:
    from prefect.server.schemas.schedules import CronSchedule

    start = datetime(2025, 1, 25, tzinfo=UTC)  # after the runbook's "Last Updated"
    return asyncio.run(CronSchedule(cron=cron, timezone=tz).get_dates(n=n, start=start))


def test_schedules_read_from_the_server_are_the_runbooks(api: str) -> None:
    deployed = asyncio.run(_read(_deploy_all()))
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


def test_drills_yaml_entries_are_complete_and_merged_unchanged() -> None:
    doc = yaml.safe_load(SPEC.read_text())
    by = {d["name"]: d for d in doc["deployments"]}
    merged = {d["name"]: d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}
    for name, d in by.items():
        if name in merged:
            assert merged[name] == d, f"prefect.yaml's {name} differs from deployments/drills.yaml"
    for d in by.values():
        assert d["work_pool"]["name"] == "tbs-emergency"
        assert (ROOT / d["entrypoint"].split(":")[0]).exists()
        for s in d.get("schedules", []):
            assert s["timezone"] == "UTC"
    for name in ("recovery-validation", "incident-report", "incident-followup"):
        assert "schedules" not in by[name], "on demand or event driven"
    trig = by["incident-report"]["triggers"][0]
    assert trig["expect"] == ["tbs.incident.resolved"]
    assert trig["parameters"]["params"]["incident_id"] == "{{ event.resource['tbs.incident.id'] }}"
