"""Archive protection (runbook: `mysql-emergency-mode.sh --protect-archive`), and lifting it.

The archive schema (`database_emergency.archive_schema`, else each environment's MySQL database)
becomes read-only for every account but the environment's `recovery_user`: the write privileges
granted on it are recorded, then revoked, and the sessions of the accounts that lost them are
closed (MySQL caches schema privileges in open connections). Accounts that can write through
global or pattern grants cannot be stopped for one schema without breaking others: the report
names them as still able to write. Lifting grants back exactly what was revoked.

Server-wide read-only for both stores is the rollback's `readonly` command, not this flow.
"""

from __future__ import annotations

from prefect import flow

from flows.db_common import DbParams, DbReport, TargetReport, guarded, publish, targets_for
from tasks.common import settings_for
from tasks.database import lift_archive_protection_on, protect_archive_on
from tbs_emergency.dbops.archive import ArchiveResult
from tbs_emergency.dbops.targets import ServerTarget


class ProtectArchiveParams(DbParams):
    # None: database_emergency.archive_schema, else each environment's MySQL database.
    schema_name: str | None = None


def archive_targets(params: ProtectArchiveParams) -> list[tuple[ServerTarget, str, str | None]]:
    """(target scoped to one schema, schema, recovery user) for every server and schema."""
    settings = settings_for(params.config_path)
    out = []
    for target in targets_for(params, ["mysql"]):
        envs = [settings.environment(e).mysql for e in target.envs]
        schemas = (
            [params.schema_name or settings.database_emergency.archive_schema]
            if (params.schema_name or settings.database_emergency.archive_schema)
            else list(dict.fromkeys(cfg.database for cfg in envs))
        )
        recovery = next((cfg.recovery_user for cfg in envs if cfg.recovery_user), None)
        for schema in schemas:
            assert schema is not None
            scoped = target.model_copy(
                update={"name": f"{target.name}:{schema}", "server": f"{target.server}/{schema}"}
            )
            out.append((scoped, schema, recovery))
    return out


def _target_report(r: ArchiveResult) -> TargetReport:
    lines = list(r.plan)
    return TargetReport(
        system=r.target.name,
        ok=r.ok,
        lines=lines,
        actions=r.actions,
        problems=r.problems,
        detail={"still_writable": r.still_writable},
    )


@flow(name="db_protect_archive", log_prints=False)
def protect_archive(params: ProtectArchiveParams | None = None) -> DbReport:
    """Make the archive schema read-only for every account but the recovery account."""
    params = params or ProtectArchiveParams()
    results: list[ArchiveResult] = []

    def run(target: ServerTarget, schema: str, recovery: str | None) -> ArchiveResult:
        result = protect_archive_on(
            params.config_path,
            target,
            schema,
            recovery,
            dry_run=params.dry_run,
            incident_id=params.incident_id,
        )
        results.append(result)
        return result

    targets = [
        guarded(t.name, lambda t=t, s=s, r=r: run(t, s, r), _target_report)
        for t, s, r in archive_targets(params)
    ]
    writable = sorted({w for r in results for w in r.still_writable})
    report = DbReport(
        procedure="protect the archive schema",
        dry_run=params.dry_run,
        ok=all(t.ok for t in targets),
        targets=targets,
        notes=[f"still able to write (global or pattern grants): {', '.join(writable)}"]
        if writable
        else [],
    )
    return publish(report, "db-protect-archive")


@flow(name="db_lift_archive_protection", log_prints=False)
def lift_archive_protection(params: ProtectArchiveParams | None = None) -> DbReport:
    """Grant back exactly the privileges the archive protection revoked."""
    params = params or ProtectArchiveParams()
    targets = [
        guarded(
            target.name,
            lambda t=target: lift_archive_protection_on(
                params.config_path, t, dry_run=params.dry_run, incident_id=params.incident_id
            ),
            _target_report,
        )
        for target, _schema, _recovery in archive_targets(params)
    ]
    report = DbReport(
        procedure="lift the archive protection",
        dry_run=params.dry_run,
        ok=all(t.ok for t in targets),
        targets=targets,
    )
    return publish(report, "db-lift-archive-protection")
