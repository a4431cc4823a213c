"""`tbs-emergency`: the command line.

Thin by design: commands that act run the matching Prefect flow (so every action shows in the
Prefect UI and the incident journal); read-only commands (`status`, `config check`) talk to the
connectors directly because they must answer fast even when Prefect is down.

Each group of commands lives in its own module with a `register(app)` function.
Exit codes: 0 success, 1 a system failed or a check found a problem, 2 bad input or configuration.
"""

from __future__ import annotations

import sys

import typer

from tbs_emergency.cli import (
    core_cmds,
    database_cmds,
    deploy_cmds,
    incident_cmds,
    integrity_cmds,
    recovery_cmds,
    rollback_cmds,
    sandbox_cmds,
    security_cmds,
    validation_cmds,
)
from tbs_emergency.cli.common import ConfigOpt, err, state
from tbs_emergency.errors import ConfigError, TbsError

app = typer.Typer(
    name="tbs-emergency",
    help="Emergency response and disaster recovery for the TBS platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _main(config: ConfigOpt = None) -> None:
    state.config = config


for module in (
    core_cmds,
    sandbox_cmds,
    database_cmds,
    rollback_cmds,
    incident_cmds,
    recovery_cmds,
    integrity_cmds,
    validation_cmds,
    security_cmds,
    deploy_cmds,
):
    module.register(app)


def main() -> None:
    try:
        app()
    except ConfigError as exc:
        for line in exc.problems:
            err.print(f"[red]error:[/red] {line}", highlight=False)
        sys.exit(2)
    except TbsError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)
