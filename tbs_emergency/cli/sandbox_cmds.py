"""`tbs-emergency sandbox ...`: the whole TBS world on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tbs_emergency.cli.common import JsonOpt, emit_json, err, fail, out
from tbs_emergency.errors import TbsError

sandbox_app = typer.Typer(help="Run the whole TBS world on this machine.", no_args_is_help=True)


# --------------------------------------------------------------------------------------------
# sandbox
# --------------------------------------------------------------------------------------------

SandboxDir = Annotated[Path, typer.Option("--dir", help="Where the sandbox keeps its state.")]


@sandbox_app.command("up")
def sandbox_up(
    sandbox_dir: SandboxDir = Path(".sandbox"),
    rows: Annotated[int, typer.Option(help="Rows of trades to seed.", min=1)] = 100_000,
    prefect: Annotated[
        bool, typer.Option(help="Also run a local Prefect server, deployed, with its executor.")
    ] = True,
    topology: Annotated[
        str | None,
        typer.Option(
            help="separate (each environment its own MariaDB, HeavyDB and Redis; the default)"
            " or shared (one set for both). Default: what this directory had."
        ),
    ] = None,
    replicate: Annotated[
        str | None,
        typer.Option(
            help="green-to-blue: blue's MariaDB replicates green's; none: no replication."
            " Default: what this directory had (none at first)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start every sandbox service (idempotent) and write its tbs.toml."""
    from sandbox import world

    if topology is not None and topology not in world.TOPOLOGIES:
        raise fail(f"--topology must be one of {', '.join(world.TOPOLOGIES)}, not {topology!r}", 2)
    if replicate is not None and replicate not in (*world.REPLICATIONS, "none"):
        raise fail(f"--replicate must be green-to-blue or none, not {replicate!r}", 2)
    log = (lambda _m: None) if as_json else (lambda m: err.print(m, highlight=False))
    try:
        result = world.up(
            sandbox_dir.resolve(),
            rows=rows,
            prefect=prefect,
            topology=topology,
            replicate=replicate,
            log=log,
        )
    except (TbsError, RuntimeError, ValueError, OSError) as exc:
        raise fail(str(exc), 1) from None
    if as_json:
        emit_json(result)
    else:
        table = Table("service", "url", "pid", title="sandbox")
        for name, svc in result["services"].items():
            table.add_row(name, _without_password(svc["url"]), str(svc["pid"]))
        out.print(table)
        out.print(_security_line(result.get("security")), markup=False, highlight=False)
        shape = result["topology"] + (
            f", replication {result['replicate']}" if result.get("replicate") else ""
        )
        out.print(f"stores: {shape}")
        out.print(f"config: {result['config']}\nexport TBS_CONFIG={result['config']}")


def _without_password(url: str) -> str:
    """The table on the terminal names the account, never its password (`--json` carries the
    whole URL, for programs)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def _security_line(security: dict | None) -> str:
    """One line about the service accounts `rotate-credentials` rotates."""
    if not security:
        return "service accounts: unknown"
    if not security.get("provisioned"):
        return f"service accounts: NOT provisioned: {security.get('why', '')}"
    blocks = ", ".join(f"{k}: {v}" for k, v in (security.get("blocks") or {}).items())
    return (
        f"service accounts: {security.get('user')} provisioned (Prefect Secret blocks {blocks};"
        f" {security.get('prefect_api')})"
    )


@sandbox_app.command("down")
def sandbox_down(
    sandbox_dir: SandboxDir = Path(".sandbox"),
    purge: Annotated[
        bool,
        typer.Option(
            "--purge",
            help="Also remove data kept outside the directory (the Prefect server's database"
            " when root started it), before the directory itself is removed.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Stop every sandbox service; data stays on disk (in the directory, unless --purge)."""
    from sandbox import world

    try:
        stopped = world.down(sandbox_dir.resolve(), purge_outside=purge)
    except (RuntimeError, OSError) as exc:
        raise fail(str(exc), 1) from None
    if as_json:
        emit_json({"stopped": stopped})
    else:
        out.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@sandbox_app.command("status")
def sandbox_status(sandbox_dir: SandboxDir = Path(".sandbox"), as_json: JsonOpt = False) -> None:
    """Which sandbox services run, and whether the service accounts are provisioned (they need
    the world's Prefect server: without it, rotate-credentials refuses)."""
    from sandbox import world

    directory = sandbox_dir.resolve()
    services = world.status(directory)
    security = world.security_status(directory) if services else None
    faults = world.world_faults(directory)
    if as_json:
        emit_json(
            {
                "services": services,
                "security": security,
                "faults": faults,
                **world.topology_of(directory),
            }
        )
        return
    table = Table("service", "url", "pid", "alive", title="sandbox")
    for name, svc in services.items():
        table.add_row(name, svc["url"], str(svc["pid"]), "yes" if svc["alive"] else "[red]no[/red]")
    out.print(table if services else "sandbox: nothing running")
    if services:
        out.print(_security_line(security), markup=False, highlight=False)
        out.print(f"stores: {world.topology_of(directory)['topology']}")
    for key, record in faults.items():
        until = f" until {record['until']}" if record.get("until") else ""
        out.print(f"fault in force: {key} since {record['since']}{until}")


FAULT_KINDS = (
    "throughput",
    "errors",
    "cpu",
    "memory",
    "disk",
    "app-hang",
    "db-down",
    "db-slow",
    "app-down",
    "mysql-lost",
    "s3-down",
    "prometheus-down",
    "redis-down",
)
WORLD_WIDE = ("s3-down", "prometheus-down", "redis-down")


@sandbox_app.command("fault")
def sandbox_fault(
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(FAULT_KINDS)}; or 'clear'.")],
    env: Annotated[
        str | None,
        typer.Option(
            "--env",
            help="blue or green (default green; clear: default both and the world-wide faults;"
            f" {', '.join(WORLD_WIDE)} take none).",
        ),
    ] = None,
    magnitude: Annotated[
        float | None, typer.Option(help="Size of the fault (see docs/sandbox.md).")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Seconds until it clears by itself.")
    ] = None,
    sandbox_dir: SandboxDir = Path(".sandbox"),
    as_json: JsonOpt = False,
) -> None:
    """Inject a fault into one environment (`fault throughput --env green --magnitude 0.6`) or
    the world (`fault s3-down`), or remove them all (`fault clear`). docs/sandbox.md lists them."""
    if kind != "clear" and kind not in FAULT_KINDS:
        raise fail(f"unknown fault {kind!r}; kinds: {', '.join(FAULT_KINDS)}, or clear", 2)
    if env is not None and env not in ("blue", "green"):
        raise fail(f"--env must be blue or green, not {env!r}", 2)
    from sandbox import world

    try:
        if kind == "clear":
            result = world.clear_faults(sandbox_dir.resolve(), env)
        else:
            result = world.fault(sandbox_dir.resolve(), kind, env, magnitude, duration)
    except (ValueError, RuntimeError, OSError) as exc:
        raise fail(str(exc), 1) from None
    if as_json:
        emit_json(result)
    elif kind == "clear":
        out.print(f"faults cleared: {result}")
    else:
        where = "the world" if kind in WORLD_WIDE else (env or "green")
        out.print(f"fault {kind} injected into {where}: {result}")


def register(app: typer.Typer) -> None:
    app.add_typer(sandbox_app, name="sandbox")
