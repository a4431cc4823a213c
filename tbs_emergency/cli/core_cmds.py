"""Read-only and health commands: `config check`, `status`, `health`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from tbs_emergency.cli.common import ConfigOpt, JsonOpt, config_path, emit_json, fail, load, out

config_app = typer.Typer(
    help="Check the configuration and every system it names.", no_args_is_help=True
)


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------


@config_app.command("check")
def config_check(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Validate the configuration and probe every configured system."""
    from tbs_emergency.connectors import probe_all
    from tbs_emergency.domain.triggers import is_misconfiguration

    settings = load(config)
    probes = probe_all(settings)
    down = [p for p in probes if not p.reachable]
    # a credential or a Secret block that cannot be read is the configuration, not an outage
    misconfigured = [p for p in down if is_misconfiguration(p.detail)]
    if as_json:
        emit_json(
            {
                "valid": True,
                "reachable": not down,
                "systems": [
                    {
                        "system": p.system,
                        "reachable": p.reachable,
                        "latency_ms": p.latency_ms,
                        "detail": p.detail,
                        "misconfigured": p in misconfigured,
                    }
                    for p in probes
                ],
            }
        )
    else:
        table = Table("system", "reachable", "latency", "detail", title="configuration check")
        for p in probes:
            table.add_row(
                p.system,
                "[green]yes[/green]" if p.reachable else "[red]NO[/red]",
                f"{p.latency_ms:.1f} ms" if p.latency_ms is not None else "-",
                p.detail,
            )
        out.print(table)
    if misconfigured:
        raise fail([f"{p.system} misconfigured: {p.detail}" for p in misconfigured], 2)
    if down:
        raise fail([f"{p.system} unreachable: {p.detail}" for p in down], 1)


# --------------------------------------------------------------------------------------------
# status and health
# --------------------------------------------------------------------------------------------


def print_status(doc: dict[str, Any]) -> None:
    out.print(f"traffic: [bold]{doc['traffic']}[/bold]")
    envs = Table("environment", "traffic", "health", "detail", title="environments")
    for name, e in doc["environments"].items():
        detail = e["error"] or ", ".join(
            f"{k}={'ok' if v.get('ok') else 'FAIL'}" for k, v in e["checks"].items()
        )
        envs.add_row(name, "yes" if e["has_traffic"] else "", e["health"], detail)
    out.print(envs)
    dbs = Table("database", "target", "read-only", "detail", title="databases")
    for d in doc["databases"]:
        ro = {True: "[yellow]yes[/yellow]", False: "no", None: "unknown"}[d["read_only"]]
        dbs.add_row(d["system"], d["target"], ro, d["error"] or "")
    out.print(dbs)
    if doc["incidents"]:
        inc = Table("incident", "severity", "opened", "trigger", title="open incidents")
        for i in doc["incidents"]:
            inc.add_row(
                i.get("id", "?"),
                i.get("severity", "?"),
                str(i.get("opened_at", "")),
                str(i.get("trigger", "")),
            )
        out.print(inc)
    else:
        out.print("open incidents: none")
    spool = doc.get("journal_spool") or {}
    if spool.get("error"):
        out.print(f"[yellow]journal spool:[/yellow] {spool['error']}", highlight=False)
    elif spool.get("count"):
        out.print(
            f"[yellow]journal spool: {spool['count']} unflushed entr"
            f"{'y' if spool['count'] == 1 else 'ies'}[/yellow] (oldest {spool['oldest']};"
            " `tbs-emergency journal flush` writes them to the store)",
            highlight=False,
        )


def status(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Which environment has traffic, each environment's health, databases' read-only state."""
    from tbs_emergency.status import collect_status

    doc = collect_status(load(config))
    if as_json:
        emit_json(doc)
    else:
        print_status(doc)
    if doc["problems"]:
        raise fail(doc["problems"], 1)


def health(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    detailed: Annotated[
        bool, typer.Option("--detailed", help="Also each environment's checks and traffic.")
    ] = False,
) -> None:
    """Service health check of every system (runs the `health_check` flow)."""
    from flows.health_check import HealthCheckParams, health_check

    settings_path = config_path(config)
    settings = load(config)  # fail fast on bad configuration, before Prefect starts
    report = health_check(HealthCheckParams(config_path=settings_path))
    detail = None
    if detailed:
        from tbs_emergency.status import collect_status

        detail = collect_status(settings)
    if as_json:
        emit_json({**report.model_dump(), **({"detailed": detail} if detail else {})})
    else:
        if detail is not None:
            print_status(detail)
        table = Table("system", "reachable", "latency", "detail", title="health check")
        for s in report.systems:
            table.add_row(
                s.system,
                "[green]yes[/green]" if s.reachable else "[red]NO[/red]",
                f"{s.latency_ms:.1f} ms" if s.latency_ms is not None else "-",
                s.detail,
            )
        out.print(table)
    if not report.healthy:
        raise fail([f"{s.system}: {s.detail}" for s in report.systems if not s.reachable], 1)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
    app.command()(status)
    app.command()(health)
