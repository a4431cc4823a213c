"""emergency_rollback run again after a crash finishes the job without repeating it; --dry-run
touches nothing; the command-reference commands act through their flows."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from flows.rollback_drill import Drill
from tbs_emergency.domain.incident import Entry, Incident, incident_id
from tbs_emergency.domain.severity import Severity

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_a_rerun_after_a_crash_does_not_redirect_again(rollback_drill: Drill) -> None:
    from flows.emergency_rollback import RollbackParams, emergency_rollback

    rollback_drill.reset()
    now = datetime.now(UTC)
    inc = Incident(
        id=incident_id("green", now, salt="crash-test"),
        severity=Severity.P0,
        env="green",
        rule=None,
        trigger="crashed rollback (test)",
        opened_at=now,
        decided_by="test",
    )
    j = rollback_drill.journal
    j.open(inc)
    # The first run got as far as the redirect, then died.
    rollback_drill.conn.traffic().switch_to("blue")
    j.append(
        Entry(
            incident_id=inc.id,
            kind="action",
            what="redirect traffic to blue",
            system="traffic",
            result="ok",
            data={"action": "redirect", "changed": True},
        )
    )
    res = emergency_rollback(
        RollbackParams(
            incident_id=inc.id, config_path=rollback_drill.config_path, decided_by="test rerun"
        )
    )
    assert res.rolled_back and res.status == "resolved", res
    redirects = [e for e in j.entries(inc.id) if e.data.get("action") == "redirect"]
    assert len(redirects) == 1  # the one from the first run
    # A run for an incident that is no longer open is cancelled, saying why (never acts late).
    again = emergency_rollback(
        RollbackParams(incident_id=inc.id, config_path=rollback_drill.config_path),
        return_state=True,
    )
    assert again.is_cancelled(), again
    assert "already resolved" in (again.message or ""), again.message


def test_dry_run_touches_nothing(rollback_drill: Drill) -> None:
    from flows.emergency_rollback import RollbackParams, emergency_rollback

    rollback_drill.reset()
    res = emergency_rollback(RollbackParams(config_path=rollback_drill.config_path, dry_run=True))
    assert res.dry_run and res.plan and res.traffic == "green"
    assert rollback_drill.conn.traffic().active() == "green"
    assert rollback_drill.journal.incident(res.incident_id) is None


def test_redirect_commands(rollback_drill: Drill) -> None:
    from tbs_emergency.cli import app

    rollback_drill.reset()
    runner = CliRunner()
    cfg = rollback_drill.config_path
    r = runner.invoke(app, ["--config", cfg, "redirect", "blue", "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    assert rollback_drill.conn.traffic().active() == "green"
    r = runner.invoke(app, ["--config", cfg, "redirect", "blue", "--json"])
    assert r.exit_code == 0, r.output
    assert rollback_drill.conn.traffic().active() == "blue"
    # green's own MariaDB (separate stores): read-only for real, then writable again
    r = runner.invoke(app, ["--config", cfg, "readonly", "on", "--mysql", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout[r.stdout.index("{") :])["databases"]["mysql"]["read_only"] is True
    r = runner.invoke(app, ["--config", cfg, "readonly", "off", "--mysql", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout[r.stdout.index("{") :])["databases"]["mysql"]["read_only"] is False
    r = runner.invoke(app, ["--config", cfg, "redirect", "green", "--json"])
    assert r.exit_code == 0 and rollback_drill.conn.traffic().active() == "green"
