"""Every deployment of prefect.yaml, run once against the sandbox world, the production way.

The world (fixture `prefect_world`: `.dir` the sandbox directory, `.config` its tbs.toml,
`.api_url` its Prefect API) registered prefect.yaml with `tbs-emergency deploy` and runs the
executor. Here: `deploy` again changes nothing (the world used the production path), then each
deployment runs with parameters that keep it cheap and safe (dry runs, tiny windows, no
follow-ups) and must end Completed (the rollback drill's elsewhere: see ELSEWHERE). If the
world has no executor polling the pool, this module starts one.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from deployments import declared
from deployments.deploy import deploy
from deployments.runner import spawn
from sandbox.proc import stop_pid

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

PROJECT = declared.load()
RUN_TIMEOUT_S = 600.0

# Cheap and safe parameters per deployment (the flows' `params` model); `{incident}` is an
# incident this module opens in the world's journal.
WORLD_PARAMS: dict[str, dict[str, Any]] = {
    "emergency-rollback": {
        "dry_run": True,
        "reason": "e2e deploy test",
        "validate_recovery": False,
    },
    "incident-escalation": {"incident_id": "{incident}", "max_wait_s": 1},
    "manual-rollback": {
        "reason": "e2e deploy test",
        "dry_run": True,
        "authorized_by": "e2e deploy test",
        "authorization_timeout_s": 1,
    },
    "security-incident": {
        "dry_run": True,
        "reason": "e2e deploy test",
        "rollback": False,
        "rotate": False,
    },
    "rotate-credentials": {"dry_run": True},
    "account-compromise": {"user": "e2e_nobody", "dry_run": True},
    "security-lockdown": {"dry_run": True},
    "security-lockdown-lift": {"dry_run": True},
    "trigger-latency-probe": {},
    "communication-drill": {"ack_wait_s": 0},
    "recovery-drill": {"take_backup_if_none": False, "heavydb": False},
    "contact-verification": {"probe_channels": True},
    "quarterly-review": {"incidents_since_days": 1},
    "recovery-validation": {
        "env": "blue",
        "only": ["functional"],
        "escalate": False,
        "time_scale": 0.01,
    },
    "incident-report": {"incident_id": "{incident}", "schedule_followups": False},
    "incident-followup": {"incident_id": "{incident}", "window": "24h"},
    "integrity-sweep-hourly": {"expectations": False, "sample_size": 10},
    "integrity-sweep-nightly": {"expectations": False, "max_chunks": 1},
    # no heartbeat ever on this server: nothing has gone silent, no page
    "watchdog-silent": {},
    "page-failed-emergency-run": {
        "flow_run_name": "rollback-inc-deploy-test",
        "state": "prefect.flow-run.Failed",
        "dry_run": True,
    },
}
# The rollback drill's deployment runs through the executor in tests/integration/test_deploy.py,
# and its flow against this world in tests/e2e/rollback/test_zz_drill_flow.py (last in the
# session, since it injects faults): not again here, where it would cost a minute.
ELSEWHERE = {"rollback-drill"}


def _api(url: str) -> Any:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: url})


def _call(url: str, fn: Any) -> Any:
    async def go() -> Any:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            return await fn(client)

    with _api(url):
        return asyncio.run(go())


@pytest.fixture(scope="module")
def executor(prefect_world: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The world's executor, or one started here if nothing polls the pool."""
    from prefect.client.schemas.filters import WorkerFilter

    async def online(client: Any) -> int:
        workers = await client.read_workers_for_work_pool(
            PROJECT.work_pool, worker_filter=WorkerFilter(status={"any_": ["ONLINE"]})
        )
        return len(workers)

    proc = None
    if not _call(prefect_world.api_url, online):
        log = tmp_path_factory.mktemp("deploy-world") / "runner.log"
        proc = spawn(prefect_world.api_url, str(prefect_world.config), log, timeout=300)
    try:
        yield
    finally:
        if proc is not None:
            stop_pid(proc.pid)


@pytest.fixture(scope="module")
def incident(prefect_world: Any) -> str:
    from tbs_emergency.config import load_settings
    from tbs_emergency.connectors import Connectors
    from tbs_emergency.domain.incident import RESOLVED, Entry, Incident, incident_id, utcnow
    from tbs_emergency.domain.journal import Journal
    from tbs_emergency.domain.severity import Severity

    journal = Journal(Connectors(load_settings(prefect_world.config)).store())
    inc = Incident(
        # an id as the code makes them (flows refuse any other)
        id=incident_id("green", utcnow(), salt=f"e2edeploy-{uuid.uuid4().hex}"),
        severity=Severity.P2,
        trigger="e2e deploy test",
        opened_at=utcnow(),
        decided_by="e2e deploy test",
    )
    journal.open(inc)
    journal.append(Entry(incident_id=inc.id, kind=RESOLVED, what="e2e deploy test", result="info"))
    closed = journal.incident(inc.id)
    if closed is not None:
        journal.sync_index(closed)  # not left open for the other tests' `status`
    return inc.id


def test_the_world_registered_prefect_yaml_the_production_way(prefect_world: Any) -> None:
    report = deploy(prefect_world.api_url, str(prefect_world.config))
    assert [d.name for d in report.deployments] == list(PROJECT.names)
    assert {a.status for a in report.automations} == {"unchanged"}, report.automations
    assert not report.work_pool_created
    assert {d.status for d in report.deployments} == {"updated"}


async def _run_all(client: Any, params: dict[str, dict[str, Any]], incident: str) -> dict[str, Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    runs = {}
    for name, p in params.items():
        (dep,) = await client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name]))
        )
        body = json.loads(json.dumps(p).replace("{incident}", incident))
        runs[name] = await client.create_flow_run_from_deployment(
            dep.id, parameters={"params": body} if body else {}
        )
    deadline = time.monotonic() + RUN_TIMEOUT_S
    final: dict[str, Any] = {}
    while time.monotonic() < deadline and len(final) < len(runs):
        for name, run in runs.items():
            if name not in final:
                current = await client.read_flow_run(run.id)
                if current.state is not None and current.state.is_final():
                    final[name] = current
        await asyncio.sleep(1.0)
    return {name: final.get(name) for name in runs}


def _not_completed(results: dict[str, Any]) -> dict[str, Any]:
    return {
        name: (run.state.type.value, run.state.message) if run is not None else "not final"
        for name, run in results.items()
        if run is None or not run.state.is_completed()
    }


def test_every_deployment_runs_against_the_world(
    prefect_world: Any, executor: None, incident: str
) -> None:
    assert set(WORLD_PARAMS) | ELSEWHERE == set(PROJECT.names), "a deployment nobody runs"
    results = _call(prefect_world.api_url, lambda c: _run_all(c, WORLD_PARAMS, incident))
    failed = _not_completed(results)
    assert not failed, failed
