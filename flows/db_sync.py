"""Environment data sync (runbook: `sync-critical-data.sh --blue-to-green --verify`,
`mysql-sync-environments.sh --source=blue --target=green --verify`).

For every critical table (`integrity.tables` with `critical = true`, or the ones named) and each
chosen engine, brings the target environment's copy to the source's content: a key diff with the
integrity engine, inserts/updates/deletes applied in key-ordered batches (one transaction per
batch on MySQL), then a full checksum verify. Guarantees:

- never writes to the environment that has traffic unless `force` (if the load balancer cannot
  be asked, it refuses too: the operator decides with `force`);
- a no-op, reported as such, for an engine whose two environments share one database;
- a rerun finds nothing left to do; `dry_run` diffs and counts but writes nothing.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import Field

from flows.db_common import DbParams, DbReport, TargetReport, guarded, publish
from tasks.common import settings_for
from tasks.database import active_environment, sync_table
from tbs_emergency.dbops.sync import TableSyncResult, parse_since, sync_specs, traffic_guard
from tbs_emergency.dbops.targets import Engine, live_identity
from tbs_emergency.errors import ConfigError


class SyncParams(DbParams):
    source: str = "blue"
    target: str = "green"
    # Configured (integrity.tables) names; empty: database_emergency.sync_tables or the critical.
    tables: list[str] = Field(default_factory=list)
    engines: list[Engine] = Field(default_factory=lambda: ["mysql", "heavydb"])
    verify: bool = True
    # Watermark (ISO time, UTC unless it says otherwise): only rows updated at or after it.
    since: str | None = None
    force: bool = False
    batch_size: int | None = Field(None, ge=1)


def _target_report(engine: str, r: TableSyncResult) -> TargetReport:
    return TargetReport(
        system=f"{r.system} {r.table}",
        ok=r.ok,
        lines=r.lines(),
        actions=r.actions,
        problems=r.problems,
        detail={"engine": engine, **r.model_dump(exclude={"actions", "problems", "notes"})},
    )


@flow(name="db_sync_environments", log_prints=False)
def sync_environments(params: SyncParams | None = None) -> DbReport:
    """Bring the target environment's critical tables to the source's content; verify."""
    params = params or SyncParams()
    settings = settings_for(params.config_path)
    problems = [
        f"environments: no environment {e!r}"
        for e in (params.source, params.target)
        if e not in settings.environments
    ]
    if params.source == params.target:
        problems.append("source and target must be different environments")
    try:
        parse_since(params.since)
    except ValueError:
        problems.append(f"since: {params.since!r} is not an ISO date or time")
    if problems:
        raise ConfigError(problems)
    batch_size = params.batch_size or settings.database_emergency.sync_batch_size
    procedure = f"sync {params.source} -> {params.target}" + (
        f" since {params.since}" if params.since else ""
    )
    notes: list[str] = []

    # The guard: never write to the live environment unless forced.
    try:
        live: str | None = active_environment(params.config_path)
    except Exception as exc:
        live = None
        notes.append(f"traffic: cannot tell which environment is live ({exc})")
    allowed, why = traffic_guard(live, params.target, force=params.force, dry_run=params.dry_run)
    if not allowed:
        refused = TargetReport(
            system=f"environment {params.target}", ok=False, problems=[why or ""]
        )
        report = DbReport(
            procedure=procedure, dry_run=params.dry_run, ok=False, targets=[refused], notes=notes
        )
        return publish(report, "db-sync")
    if why:
        notes.append(why)

    results: list[TargetReport] = []
    identify = live_identity(settings)
    for engine in params.engines:
        if _shared(settings, identify, engine, params.source, params.target):
            ident = getattr(settings.environment(params.source), engine).identity
            notes.append(
                f"{engine}: {params.source} and {params.target} share {ident}: nothing to sync"
            )
            continue
        for spec in sync_specs(settings, params.tables, engine):
            results.append(
                guarded(
                    f"{engine}[{params.target}] {spec.table}",
                    lambda e=engine, s=spec: sync_table(
                        params.config_path,
                        e,
                        s,
                        params.source,
                        params.target,
                        params.since,
                        batch_size,
                        params.verify,
                        params.dry_run,
                    ),
                    lambda r, e=engine: _target_report(e, r),
                )
            )
    report = DbReport(
        procedure=procedure,
        dry_run=params.dry_run,
        ok=all(r.ok for r in results),
        targets=results,
        notes=notes,
    )
    return publish(report, "db-sync")


def _shared(settings: Any, identify: Any, engine: Engine, source: str, target: str) -> bool:
    """One database for both environments: the same configured address and database, or the
    same server (as it reports itself, through whatever proxy each environment uses) and the
    same database name."""
    if settings.shares_database(source, target, engine):
        return True
    a, b = identify(engine, source), identify(engine, target)
    same_name = (
        getattr(settings.environment(source), engine).database
        == getattr(settings.environment(target), engine).database
    )
    return a is not None and a == b and same_name
