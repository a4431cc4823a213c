"""Environment data sync (runbook: `sync-critical-data.sh --blue-to-green --verify`,
`mysql-sync-environments.sh --source=blue --target=green --verify`).

For every critical table (`integrity.tables` with `critical = true`, or the ones named) and each
chosen engine, brings the target environment's copy to the source's content: a key diff with the
integrity engine, inserts/updates/deletes applied in key-ordered batches (one transaction per
batch on MySQL), then a full checksum verify. Guarantees:

- never writes to the environment that has traffic unless `force` (if the load balancer cannot
  be asked, it refuses too: the operator decides with `force`);
- never deletes more than `database_emergency.sync_max_delete_share` (1%) of a target table's
  rows unless `allow_mass_delete`: every table is checked (a diff, no write) before the first
  write to any of them, and the run is refused (bad input, nothing written) if one would; an
  empty or truncated source therefore never wipes the target;
- where rows are deleted, the target table is first copied to `<table>__pre_sync_<UTC time>`
  (named in the report);
- a no-op, reported as such, for an engine whose two environments share one database;
- a rerun finds nothing left to do; `dry_run` diffs and counts but writes nothing.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import Field, field_validator

from flows.db_common import DbParams, DbReport, TargetReport, guarded, publish
from tasks.common import settings_for
from tasks.database import active_environment, sync_table
from tbs_emergency.dbops.sync import TableSyncResult, TableSyncSpec, sync_specs, traffic_guard
from tbs_emergency.dbops.targets import Engine, live_identity
from tbs_emergency.errors import ConfigError
from tbs_emergency.timestamps import parse_instant


class SyncParams(DbParams):
    source: str = "blue"
    target: str = "green"
    # Configured (integrity.tables) names; empty: database_emergency.sync_tables or the critical.
    tables: list[str] = Field(default_factory=list)
    engines: list[Engine] = Field(default_factory=lambda: ["mysql", "heavydb"])
    verify: bool = True
    # Watermark (ISO time with a time zone; a naive one is refused): only rows updated at or
    # after it.
    since: str | None = None
    force: bool = False
    # Lift the guard: delete more than database_emergency.sync_max_delete_share of a table.
    allow_mass_delete: bool = False
    batch_size: int | None = Field(None, ge=1)

    @field_validator("since")
    @classmethod
    def _since_has_zone(cls, v: str | None) -> str | None:
        if v:
            parse_instant(v)  # ValueError: one line, naming the timestamp
        return v


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

    identify = live_identity(settings)
    jobs: list[tuple[Engine, TableSyncSpec]] = []
    for engine in params.engines:
        if _shared(settings, identify, engine, params.source, params.target):
            ident = getattr(settings.environment(params.source), engine).identity
            notes.append(
                f"{engine}: {params.source} and {params.target} share {ident}: nothing to sync"
            )
            continue
        jobs += [(engine, spec) for spec in sync_specs(settings, params.tables, engine)]

    share = None if params.allow_mass_delete else settings.database_emergency.sync_max_delete_share
    if params.allow_mass_delete:
        notes.append("mass delete allowed (--allow-mass-delete): no limit on deleted rows")

    def run(engine: Engine, spec: TableSyncSpec, dry_run: bool) -> TargetReport:
        return guarded(
            f"{engine}[{params.target}] {spec.table}",
            lambda: sync_table(
                params.config_path,
                engine,
                spec,
                params.source,
                params.target,
                params.since,
                batch_size,
                params.verify,
                dry_run,
                share,
                True,
            ),
            lambda r: _target_report(engine, r),
        )

    # The guard, for every table before the first write to any: a diff without writing. (One
    # table alone needs no extra pass: sync_table checks it before its first write.)
    if share is not None and not params.dry_run and len(jobs) > 1:
        checks = [run(engine, spec, True) for engine, spec in jobs]
        refused = [c for c in checks if c.detail.get("refused")]
        if refused:
            targets = [
                c.model_copy(update={"ok": False, "problems": [c.detail["refused"]]})
                for c in refused
            ]
            notes.append(
                f"nothing was written to any of the {len(jobs)} table(s): checked before the"
                " first write"
            )
            report = DbReport(
                procedure=procedure,
                dry_run=False,
                ok=False,
                targets=targets,
                notes=notes,
                bad_input=True,
            )
            return publish(report, "db-sync")

    results = [run(engine, spec, params.dry_run) for engine, spec in jobs]
    report = DbReport(
        procedure=procedure,
        dry_run=params.dry_run,
        ok=all(r.ok for r in results),
        targets=results,
        notes=notes,
        bad_input=any(r.detail.get("refused") and not params.dry_run for r in results),
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
