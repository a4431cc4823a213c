"""The command line of validation, drills, reports and reviews: wiring and input checks."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tbs_emergency.cli import app

pytestmark = pytest.mark.unit


def test_commands_are_registered_beside_the_rollback_drill() -> None:
    runner = CliRunner()
    top = runner.invoke(app, ["--help"]).output
    for name in ("validate", "report", "followup", "review"):
        assert name in top
    drill = runner.invoke(app, ["drill", "--help"]).output
    for name in ("rollback", "communication", "recovery", "contacts", "ack"):
        assert name in drill


def test_bad_input_exits_2_before_anything_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    missing = str(tmp_path / "nope.toml")
    r = runner.invoke(app, ["--config", missing, "validate"])
    assert r.exit_code == 2
    inc = "inc-20261207T235449Z-green-cf01"
    r = runner.invoke(app, ["followup", "done", inc, "2w", "--by", "me"])
    assert r.exit_code == 2 and "window must be one of 24h, 72h, 1w" in r.output
    r = runner.invoke(app, ["followup", "done", "inc-1", "24h", "--by", "me"])
    assert r.exit_code == 2 and "'inc-1' is not an incident id" in r.output
