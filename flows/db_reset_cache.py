"""Cache and performance reset (runbook: `heavydb-reset-cache.sh --clear-query-cache
--restart-services`).

HeavyDB: clear GPU and CPU memory. MySQL: FLUSH TABLES, and RESET QUERY CACHE with
`clear_query_cache`. Configured services (`database_emergency.services`) are restarted only with
`restart_services`, one after the other, each probed until healthy before the next. Every reset
is verified by a health probe of what was reset; an unhealthy probe makes the report fail.
"""

from __future__ import annotations

from prefect import flow
from pydantic import Field

from flows.db_common import DbParams, DbReport, TargetReport, guarded, publish, targets_for
from tasks.common import settings_for
from tasks.database import reset_cache_on, restart_service
from tbs_emergency.dbops.cache import ResetResult
from tbs_emergency.dbops.targets import Engine
from tbs_emergency.errors import ConfigError


class ResetCacheParams(DbParams):
    engines: list[Engine] = Field(default_factory=lambda: ["mysql", "heavydb"])
    clear_query_cache: bool = False
    restart_services: bool = False
    # Empty: every configured service (only with restart_services).
    services: list[str] = Field(default_factory=list)


def _target_report(r: ResetResult) -> TargetReport:
    lines = []
    if r.health is not None:
        state = "healthy" if r.health.healthy else "UNHEALTHY"
        lines.append(f"health probe after: {state} ({r.health.detail})")
    return TargetReport(
        system=r.system,
        ok=r.ok,
        lines=lines,
        actions=r.actions,
        problems=r.problems,
        detail={"health": r.health.model_dump() if r.health else None},
    )


@flow(name="db_reset_cache", log_prints=False)
def reset_cache(params: ResetCacheParams | None = None) -> DbReport:
    """Reset database caches; restart configured services only when asked; probe each."""
    params = params or ResetCacheParams()
    settings = settings_for(params.config_path)
    configured = [s.name for s in settings.database_emergency.services]
    services: list[str] = []
    notes: list[str] = []
    if params.restart_services:
        unknown = [s for s in params.services if s not in configured]
        if unknown:
            known = ", ".join(configured) or "none configured"
            raise ConfigError(
                [f"database_emergency.services: no service {s!r} (known: {known})" for s in unknown]
            )
        services = params.services or configured
        if not services:
            notes.append("--restart-services: no services are configured; none restarted")
    targets = [
        guarded(
            t.name,
            lambda t=t: reset_cache_on(
                params.config_path, t, params.clear_query_cache, params.dry_run
            ),
            _target_report,
        )
        for t in targets_for(params, params.engines)
    ]
    targets += [
        guarded(
            f"service[{name}]",
            lambda name=name: restart_service(params.config_path, name, params.dry_run),
            _target_report,
        )
        for name in services
    ]
    report = DbReport(
        procedure="cache and performance reset",
        dry_run=params.dry_run,
        ok=all(t.ok for t in targets),
        targets=targets,
        notes=notes,
    )
    return publish(report, "db-reset-cache")
