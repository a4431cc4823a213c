"""Connection limits with priority users (runbook: `heavydb-limit-connections.sh --max=10
--priority-users`), and lifting them.

Guarantees, per server (environments sharing a server are one):

- the previous settings are recorded (object store `state/connection-limits/<server>.json`, and
  the incident journal when there is an incident) before anything changes; if recording fails,
  nothing changes;
- priority users' sessions stay and they can still log in: `reserve` of the `max` slots are
  kept free for them, and non-priority accounts are held to the rest (MySQL: max_connections
  and per-account MAX_USER_CONNECTIONS; HeavyDB: their logins are disabled);
- non-priority sessions beyond the limit are closed, oldest idle first;
- a rerun changes nothing more and keeps the first recorded settings; lifting restores exactly
  those and says that closed sessions are not reopened.

Needs: MySQL `database_emergency.mysql_admin` (SUPER or CONNECTION ADMIN, PROCESS, SELECT on
mysql.*), HeavyDB a superuser, and the object store.
"""

from __future__ import annotations

from prefect import flow
from pydantic import Field

from flows.db_common import DbParams, DbReport, TargetReport, guarded, publish, targets_for
from tasks.common import settings_for
from tasks.database import lift_connection_limits_on, limit_connections_on
from tbs_emergency.dbops.connection_limits import ConnectionLimitResult
from tbs_emergency.dbops.targets import Engine


class LimitConnectionsParams(DbParams):
    engines: list[Engine] = Field(default_factory=lambda: ["mysql", "heavydb"])
    # None: database_emergency.max_connections (10)
    max_connections: int | None = Field(None, ge=1)
    # None: database_emergency.priority_reserve (2)
    reserve: int | None = Field(None, ge=0)
    # Added to database_emergency.priority_users for this run (both engines).
    extra_priority_users: list[str] = Field(default_factory=list)


class LiftConnectionLimitsParams(DbParams):
    engines: list[Engine] = Field(default_factory=lambda: ["mysql", "heavydb"])


def _target_report(r: ConnectionLimitResult) -> TargetReport:
    return TargetReport(
        system=r.target.name,
        ok=r.ok,
        lines=[*r.plan, *r.notes],
        actions=r.actions,
        problems=r.problems,
        detail={"closed": r.closed},
    )


@flow(name="db_limit_connections", log_prints=False)
def limit_connections(params: LimitConnectionsParams | None = None) -> DbReport:
    """Limit the connections of every chosen server, priority users exempt."""
    params = params or LimitConnectionsParams()
    de = settings_for(params.config_path).database_emergency
    max_connections = params.max_connections or de.max_connections
    reserve = de.priority_reserve if params.reserve is None else params.reserve
    targets: list[TargetReport] = []
    for target in targets_for(params, params.engines):
        priority = getattr(de.priority_users, target.engine) + params.extra_priority_users
        targets.append(
            guarded(
                target.name,
                lambda t=target, p=priority: limit_connections_on(
                    params.config_path,
                    t,
                    max_connections,
                    p,
                    reserve,
                    dry_run=params.dry_run,
                    incident_id=params.incident_id,
                ),
                _target_report,
            )
        )
    report = DbReport(
        procedure=f"limit connections to {max_connections} ({reserve} kept for priority users)",
        dry_run=params.dry_run,
        ok=all(t.ok for t in targets),
        targets=targets,
    )
    return publish(report, "db-limit-connections")


@flow(name="db_lift_connection_limits", log_prints=False)
def lift_connection_limits(params: LiftConnectionLimitsParams | None = None) -> DbReport:
    """Restore exactly the settings recorded before the connection limit."""
    params = params or LiftConnectionLimitsParams()
    targets = [
        guarded(
            target.name,
            lambda t=target: lift_connection_limits_on(
                params.config_path, t, dry_run=params.dry_run, incident_id=params.incident_id
            ),
            _target_report,
        )
        for target in targets_for(params, params.engines)
    ]
    report = DbReport(
        procedure="lift connection limits",
        dry_run=params.dry_run,
        ok=all(t.ok for t in targets),
        targets=targets,
    )
    return publish(report, "db-lift-connection-limits")
