"""Recovery validation end to end in the sandbox: a healthy environment passes with real
measurements; a failing validation makes the calling recovery flow fail and escalate."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect import flow

from sandbox import world
from tbs_emergency.config import load_settings
from tbs_emergency.connectors import Connectors
from tbs_emergency.domain.incident import Incident, incident_id
from tbs_emergency.domain.journal import Journal
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
    return validation_config(sandbox_world, tmp_path_factory.mktemp("validation"))


def _scratch_tables(config: str) -> list[str]:
    settings = load_settings(config)
    with Connectors(settings) as conn:
        mysql = [t for t in conn.mysql("blue").tables() if t.startswith("tbs_validation_")]
        heavy = [t for t in conn.heavydb("blue").tables() if t.startswith("tbs_validation_")]
    return mysql + heavy


def test_a_healthy_environment_passes_with_real_measurements(api: str, config: str) -> None:
    from prefect.client.orchestration import get_client

    from flows.recovery_validation import ValidationParams, recovery_validation, verdict_of

    started = time.monotonic()
    state = recovery_validation(
        ValidationParams(
            config_path=config,
            env="blue",
            time_scale=0.05,  # db workload 3 s, concurrent users 15 s, 10 API samples
            api_samples=10,
            ui_samples=3,
            concurrent_users=4,
            concurrent_duration_s=4,
        ),
        return_state=True,
    )
    took = time.monotonic() - started
    verdict = verdict_of(state)
    assert verdict is not None, state
    failing = [(c.name, c.status, c.detail) for c in verdict.checks if c.status != "pass"]
    assert verdict.passed, failing
    assert state.is_completed()
    by = {c.name: c for c in verdict.checks}
    # every runbook measurement is there, with real numbers
    for name in (
        "API response time",
        "UI load time",
        "database performance (heavydb)",
        "database performance (mysql)",
        "platform throughput (Prometheus)",
        "concurrent users",
        "password login and session (trader01)",
        "wrong password refused",
        "strategy 1 results",
        "MySQL application account permissions",
        "file upload (csv)",
        "file upload (json)",
    ):
        assert by[name].status == "pass", (name, by[name].detail)
    api_summary = by["API response time"].data["summary"]
    assert api_summary["samples"] == 10 and api_summary["p99_ms"] >= api_summary["p50_ms"] > 0
    db = by["database performance (mysql)"]
    assert db.unit == "rows/s" and db.measured and db.data["rows_written"] > 0
    assert db.data["dropped"] and "measured: insert + read-back" in db.source
    assert by["platform throughput (Prometheus)"].source.startswith("prometheus:")
    assert any("Prometheus" in n and "not a measurement of this run" in n for n in verdict.notes)
    assert by["concurrent users"].data["logins"]["ok"] == 4
    assert _scratch_tables(config) == [], "the scratch tables must be dropped"

    async def artifacts() -> list[object]:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["recovery-validation-blue"])
                )
            )

    import asyncio

    found = asyncio.run(artifacts())
    assert found, "the pass/fail table artifact"
    assert took < 60, f"validation (scaled) took {took:.1f}s"


def test_a_failing_validation_fails_the_recovery_flow_and_escalates(
    api: str, config: str, sandbox_world: World
) -> None:
    from flows.recovery_validation import ValidationParams, require_passed, validate_recovery

    settings = load_settings(config)
    now = datetime.now(UTC)
    inc = Incident(
        id=incident_id("blue", now, salt="validation-e2e"),
        severity=Severity.P1,
        env="green",
        trigger="e2e: restore finished, validating blue",
        opened_at=now,
        decided_by="test",
    )
    conn = Connectors(settings)
    j = Journal(conn.store())
    j.open(inc)

    @flow(name="restore_then_validate")
    def recovery_flow(incident: str) -> str:
        # what a recovery flow does at its end: validate, act on the verdict
        verdict = validate_recovery(
            ValidationParams(
                config_path=config,
                env="blue",
                incident_id=incident,
                only=["functional", "api"],
                api_samples=10,
                decided_by="restore_then_validate",
            )
        )
        require_passed(verdict)
        return "validated"

    since = last_delivery_id(sandbox_world)
    world.fault(sandbox_world.dir, "errors", "blue", 100.0, 120)
    try:
        started = time.monotonic()
        state = recovery_flow(inc.id, return_state=True)
        took = time.monotonic() - started
    finally:
        world.clear_faults(sandbox_world.dir, env="blue")
    assert state.is_failed(), state
    assert "recovery validation of blue FAILED" in (state.message or "")
    entries = j.entries(inc.id)
    kinds = [e.kind for e in entries]
    assert "validation" in kinds and "escalated" in kinds
    val = next(e for e in entries if e.kind == "validation")
    assert val.result == "failed" and val.data["verdict"]["passed"] is False
    esc = next(e for e in entries if e.kind == "escalated")
    assert "recovery validation failed" in esc.what
    sent = [
        e for e in entries if e.kind == "notification" and e.data.get("template") == "escalation"
    ]
    assert sent and all(e.result == "ok" for e in sent), [(e.what, e.data) for e in sent]
    got = deliveries(sandbox_world, since)
    assert any(inc.id in str(d.get("body")) for d in got), "the on-call chain was paged"
    assert Journal(conn.store()).incident(inc.id).status == "escalated"  # type: ignore[union-attr]
    conn.close()
    assert took < 60, f"took {took:.1f}s"


def test_unknown_environment_is_refused_before_measuring(api: str, config: str) -> None:
    from flows.recovery_validation import ValidationParams, validate_recovery

    verdict = validate_recovery(ValidationParams(config_path=config, env="purple"))
    assert not verdict.passed
    assert "did not finish" in verdict.checks[0].detail and "purple" in verdict.checks[0].detail


def test_cli_validate_exits_1_on_failure(api: str, config: str, sandbox_world: World) -> None:
    import json

    from typer.testing import CliRunner

    from tbs_emergency.cli import app

    world.fault(sandbox_world.dir, "errors", "blue", 100.0, 120)
    try:
        r = CliRunner().invoke(
            app,
            ["--config", config, "validate", "--env", "blue", "--only", "functional", "--json"],
        )
    finally:
        world.clear_faults(sandbox_world.dir, env="blue")
    assert r.exit_code == 1, r.output[-2000:]
    doc = json.loads(r.stdout[r.stdout.index("{") :])
    assert doc["passed"] is False and any(c["status"] == "fail" for c in doc["checks"])


def test_emergency_rollback_escalates_when_blue_fails_its_recovery_validation(
    api: str, config: str, sandbox_world: World, tmp_path: Path
) -> None:
    """The real recovery flow: blue is healthy, so the redirect happens and step 4's fast checks
    resolve the incident; the full recovery validation then runs as its own flow run (the
    recovery-validation deployment, named after the incident), fails (the API thresholds are
    set below what any server answers in), reopens the incident and escalates it."""
    import time

    from flows.emergency_rollback import RollbackParams, run_rollback

    text = Path(config).read_text()
    assert "p50_ms = 3000" in text
    strict = tmp_path / "tbs-strict.toml"
    strict.write_text(text.replace("p50_ms = 3000", "p50_ms = 0.001"))
    strict.chmod(0o600)
    settings = load_settings(str(strict))
    conn = Connectors(settings)
    traffic = conn.traffic()
    assert traffic.active() == "green"
    try:
        res = run_rollback(
            RollbackParams(
                config_path=str(strict),
                reason="e2e: blue fails its recovery validation",
                force=True,
                read_only=False,  # blue and green share the sandbox's servers
                sample_users=2,
            )
        )
    finally:
        traffic.switch_to("green")
    assert res.rolled_back and res.traffic == "blue", (res.status, res.problems)
    assert res.status == "resolved", (res.status, res.problems)
    assert res.validation["mode"] == "deployment", res.validation
    assert res.validation["name"] == f"validation-{res.incident_id}"
    journal = Journal(conn.store())
    deadline = time.monotonic() + 300
    entries = journal.entries(res.incident_id)
    while time.monotonic() < deadline and not any(e.kind == "escalated" for e in entries):
        time.sleep(2)
        entries = journal.entries(res.incident_id)
    val = next(e for e in entries if e.kind == "validation")
    assert val.result == "failed" and val.data["verdict"]["passed"] is False
    kinds = [e.kind for e in entries]
    assert kinds.index("resolved") < kinds.index("reopened") < kinds.index("escalated"), kinds
    inc = journal.incident(res.incident_id)
    assert inc is not None and inc.status == "escalated" and inc.is_open
    conn.close()
