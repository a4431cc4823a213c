"""`tbs-emergency deploy`: register prefect.yaml with a Prefect server (deployments.deploy).

    deploy [--api URL] [--config PATH] [--pool NAME] [--json]

The API is `--api`, else the config's `[prefect] api_url`, else PREFECT_API_URL; none of them:
exit 2 (a temporary server would register the deployments where no executor ever looks).
An unreachable API: exit 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from tbs_emergency.cli.common import JsonOpt, emit_json, fail, out, state

ApiOpt = Annotated[
    str | None,
    typer.Option(
        "--api", help="Prefect API URL (default: [prefect] api_url, then PREFECT_API_URL)."
    ),
]
PoolOpt = Annotated[
    str | None,
    typer.Option("--pool", help="Work pool (default: [prefect] work_pool, then prefect.yaml's)."),
]
DeployConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="tbs.toml the runs use (default: $TBS_CONFIG, then ./tbs.toml if present).",
    ),
]


def _settings(config: Path | None) -> tuple[Any, str | None]:
    """(settings or None, the config path the runs get). A config named on the command line or
    in TBS_CONFIG must load; the implicit ./tbs.toml is optional (deploying needs no config)."""
    from tbs_emergency.config import load_settings

    named = config or state.config or (Path(v) if (v := os.environ.get("TBS_CONFIG")) else None)
    path = named or Path("tbs.toml")
    if named is None and not path.is_file():
        return None, None
    return load_settings(path), str(path.resolve())  # ConfigError -> exit 2 (cli.main)


def deploy(
    api: ApiOpt = None,
    config: DeployConfigOpt = None,
    pool: PoolOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register prefect.yaml: work pool, deployments, schedules, limits, automations."""
    settings, config_file = _settings(config)
    prefect_cfg = settings.prefect if settings is not None else None
    api_url = api or (prefect_cfg.api_url if prefect_cfg else None)
    if not api_url:
        from prefect.settings import get_current_settings

        api_url = get_current_settings().api.url  # PREFECT_API_URL, environment or profile
    if not api_url:
        raise fail(
            escape(
                "no Prefect API: give --api URL, set [prefect] api_url in the config, or set"
                " PREFECT_API_URL"
            ),
            2,
        )
    if pool is None and prefect_cfg is not None and "work_pool" in prefect_cfg.model_fields_set:
        pool = prefect_cfg.work_pool
    from deployments.deploy import DeployError
    from deployments.deploy import deploy as run_deploy

    try:
        report = run_deploy(api_url, config_file, pool)
    except DeployError as exc:
        raise fail(escape(str(exc)), exc.code) from None
    if as_json:
        emit_json(report.as_dict())
        return
    for line in report.lines():
        out.print(line, highlight=False, markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(deploy)
