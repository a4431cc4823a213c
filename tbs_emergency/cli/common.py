"""Shared pieces of the command line: options, output, failure with exit codes."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from tbs_emergency.errors import ConfigError

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="tbs.toml to use (default: $TBS_CONFIG, then ./tbs.toml)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")]


class _State:
    config: Path | None = None


state = _State()


def fail(lines: list[str] | str, code: int) -> typer.Exit:
    """Print each line as an error and return the Exit to raise (1: failure, 2: bad input)."""
    for line in [lines] if isinstance(lines, str) else lines:
        err.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def check_incident_id(value: str | None) -> str | None:
    """Typer callback of every incident id argument and `--incident` option: an id the code
    makes (inc-..., ops-YYYYMMDD), else one line and exit 2 before anything runs."""
    if value:
        from tbs_emergency.domain.incident import validate_incident_id

        try:
            validate_incident_id(value)
        except ValueError as exc:
            raise fail(escape(str(exc)), 2) from None
    return value


def parse_timestamp(value: str, option: str) -> datetime:
    """A point in time from an option: ISO 8601 with a zone, else one line and exit 2."""
    from tbs_emergency.timestamps import parse_instant

    try:
        return parse_instant(value)
    except ValueError as exc:
        raise fail(f"{option}: {escape(str(exc))}", 2) from None


def config_path(config: Path | None) -> str | None:
    """The configuration path a command was given, for passing to a flow run."""
    chosen = config or state.config
    return str(chosen) if chosen else None


def load(config: Path | None) -> Any:
    """Load and validate the settings, or exit 2 with one line per problem."""
    from tbs_emergency.config import load_settings

    try:
        settings = load_settings(config or state.config)
    except ConfigError as exc:
        raise fail(exc.problems, 2) from None
    use_prefect_api(settings)
    return settings


def use_prefect_api(settings: Any) -> str | None:
    """Point Prefect at `[prefect] api_url` unless PREFECT_API_URL is set (the shell wins).

    Without an API URL, every Prefect call from the CLI would boot a temporary local server
    (tens of seconds). Called when the settings are loaded, before any command imports
    Prefect; if Prefect was already imported, its settings context is refreshed."""
    url = os.environ.get("PREFECT_API_URL") or None
    if url is None and settings.prefect.api_url:
        url = settings.prefect.api_url
        os.environ["PREFECT_API_URL"] = url
        if "prefect.context" in sys.modules:
            from prefect.context import refresh_global_settings_context

            refresh_global_settings_context()
    return url


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc; None elsewhere): "from the shell"."""
    try:
        with open("/proc/self/stat") as f:
            after_name = f.read().rsplit(")", 1)[1].split()
        started = int(after_name[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
        with open("/proc/uptime") as f:
            return round(float(f.read().split()[0]) - started, 3)
    except (OSError, ValueError, IndexError):
        return None


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
