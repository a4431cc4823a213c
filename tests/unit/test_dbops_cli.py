"""`tbs-emergency db`: bad input exits 2 before any flow runs (no Prefect needed)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tbs_emergency.cli import app

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["db", "sync", "--source", "blue", "--target", "blue"], "must differ"),
        (["db", "sync", "--since", "yesterday"], "is not a timestamp"),
        (["db", "sync", "--since", "2026-12-07 10:00"], "has no time zone"),
        (["db", "reset-cache", "--service", "heavydb"], "--service needs --restart-services"),
        (["db", "complete-transactions", "--timeout", "soon"], "not a duration"),
        (["db", "limit-connections", "--max", "0"], "equal to 1"),
    ],
)
def test_bad_input_exits_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["--config", "/nonexistent/tbs.toml", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_commands_are_registered() -> None:
    result = CliRunner().invoke(app, ["db", "--help"])
    assert result.exit_code == 0
    for name in (
        "limit-connections",
        "complete-transactions",
        "reset-cache",
        "sync",
        "protect-archive",
    ):
        assert name in result.output
    lift = CliRunner().invoke(app, ["db", "protect-archive", "lift", "--help"])
    assert lift.exit_code == 0 and "Grant back exactly" in lift.output
