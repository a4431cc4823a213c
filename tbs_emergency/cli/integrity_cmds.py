"""`tbs-emergency integrity check`: data integrity verification (runs the `integrity_sweep` flow).

Exit codes: 0 every table consistent; 1 a discrepancy found (row counts, missing, extra or
different keys, failed expectations); 2 could not check (a store unreachable, a schema that
cannot be compared, bad input or configuration). A discrepancy outranks a table that could not
be checked: both are printed, the exit code is 1 and the JSON says `"complete": false`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tbs_emergency.cli.common import (
    ConfigOpt,
    JsonOpt,
    config_path,
    emit_json,
    err,
    fail,
    load,
    out,
)
from tbs_emergency.errors import ConfigError

integrity_app = typer.Typer(
    help="Data integrity between HeavyDB and MySQL: counts, samples, full diff.",
    no_args_is_help=True,
)

TablesOpt = Annotated[
    str | None,
    typer.Option("--tables", "-t", help="Comma-separated tables (default: every configured one)."),
]
SampleOpt = Annotated[
    int | None,
    typer.Option("--sample-size", "-n", min=1, help="Keys sampled per table (default: config)."),
]
FullOpt = Annotated[
    bool,
    typer.Option("--full", help="Checksum bisection diff of every row (names every key)."),
]
EnvOpt = Annotated[
    list[str] | None,
    typer.Option("--env", "-e", help="Environment (repeatable; default: all, shared ones once)."),
]
CapOpt = Annotated[
    int,
    typer.Option("--max-keys", help="Keys listed per kind and table before cutting (JSON too)."),
]
NoExpectOpt = Annotated[
    bool,
    typer.Option("--no-expectations", help="Skip the great-expectations suites (faster)."),
]


def _keys(keys: list[Any], count: int) -> str:
    shown = ", ".join(str(k) for k in keys)
    return shown + (f" ... ({count} in all)" if count > len(keys) else "")


def _print(doc: dict[str, Any]) -> None:
    table = Table(
        "env",
        "table",
        "status",
        "heavydb rows",
        "mysql rows",
        "missing heavydb",
        "missing mysql",
        "different",
        title=f"integrity check ({doc['mode']}, sample {doc['sample_size']} keys)",
    )
    shown = {
        "consistent": "[green]ok[/green]",
        "discrepancies": "[red]DIFFERS[/red]",
        "error": "[yellow]NOT CHECKED[/yellow]",
    }
    for t in doc["tables"]:
        table.add_row(
            escape(t["environment"]),
            escape(t["table"]) + (" (critical)" if t["critical"] else ""),
            shown[t["status"]],
            str(t["heavydb_rows"] if t["heavydb_rows"] is not None else "-"),
            str(t["mysql_rows"] if t["mysql_rows"] is not None else "-"),
            str(t["missing_in_heavydb_count"]),
            str(t["missing_in_mysql_count"]),
            str(t["different_count"]),
        )
    out.print(table)
    lines: list[str] = []
    for t in doc["tables"]:
        where = f"{t['table']} [{t['environment']}]"
        for name in ("missing_in_heavydb", "missing_in_mysql"):
            if t[f"{name}_count"]:
                label = name.replace("_", " ")
                lines.append(f"{where} {label}: {_keys(t[name], t[f'{name}_count'])}")
        for d in t.get("different_detail", []):
            cols = "; ".join(
                f"{c}: " + " vs ".join(f"{s}={v}" for s, v in sides.items())
                for c, sides in d["columns"].items()
            )
            lines.append(f"{where} different {d['key']}: {cols}")
        if t["different_count"] > len(t.get("different_detail", [])):
            lines.append(f"{where} different keys: {_keys(t['different'], t['different_count'])}")
        for e in t["expectations"]:
            lines += [
                f"{where} expectation failed on {e['data']}: {f['expectation']}"
                for f in e["failed"]
            ]
            if e["error"]:
                lines.append(f"{where} expectations on {e['data']} could not run: {e['error']}")
        lines += [
            f"{where} {p}" for p in t["problems"] if p.startswith(("row counts", "rows with"))
        ]
        lines += [f"{where} note: {note}" for note in t["notes"]]
    for line in lines:  # keys and values are data, not rich markup
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    if doc["consistent"]:
        out.print("[green]consistent:[/green] every table agrees in both stores")


@integrity_app.command("check")
def check(
    tables: TablesOpt = None,
    sample_size: SampleOpt = None,
    full: FullOpt = False,
    env: EnvOpt = None,
    as_json: JsonOpt = False,
    max_keys: CapOpt = 100,
    no_expectations: NoExpectOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Compare HeavyDB with MySQL: row counts, a sample of keys, with --full every row.

    Exit 0 consistent, 1 discrepancies, 2 could not check.
    """
    settings = load(config)  # exit 2 on bad configuration, before Prefect starts
    names = [t.strip() for t in (tables or "").split(",") if t.strip()]
    configured = [t.name for t in settings.integrity.tables]
    problems = [
        f"integrity.tables: no table {n!r} (known: {', '.join(configured) or 'none configured'})"
        for n in names
        if n not in configured
    ]
    problems += [
        f"environments: no environment {e!r}" for e in env or [] if e not in settings.environments
    ]
    if not configured:
        problems.append("integrity.tables: no table is configured ([[integrity.tables]])")
    if problems:
        raise fail(problems, 2)

    from flows.integrity_sweep import IntegritySweepParams, integrity_sweep

    params = IntegritySweepParams(
        tables=names,
        sample_size=sample_size,
        full=full,
        environments=list(env or []),
        config_path=config_path(config),
        expectations=not no_expectations,
    )
    try:
        report = integrity_sweep(params)
    except ConfigError as exc:
        raise fail(exc.problems, 2) from None
    except Exception as exc:  # Prefect could not start the run, a bug: nothing was checked
        raise fail(
            f"could not run the integrity_sweep flow: {type(exc).__name__}: {exc}", 2
        ) from None
    doc = report.to_json(cap=max_keys)
    if as_json:
        emit_json(doc)
    else:
        _print(doc)
    for t in doc["tables"]:
        if t["error"]:
            err.print(
                f"could not check {t['table']} [{t['environment']}]: {t['error']}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def register(app: typer.Typer) -> None:
    app.add_typer(integrity_app, name="integrity")
