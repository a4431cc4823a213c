"""Network isolation of an environment (runbook: `network-isolate.sh
--target=green-environment --preserve-logs`), and lifting it.

1. drain the environment at the load balancer (no new sessions), then deny it (nothing is
   forwarded to it; switching traffic to it is refused);
2. revoke the application accounts' privileges on its databases (MySQL: every privilege on its
   schema, recorded exactly, sessions closed; HeavyDB: ACCESS on its database) - not where the
   other environment shares the database, unless `security.isolate_shared_databases`.

Logs are kept: nothing here deletes anything, and `preserve_evidence` copies them. Every step is
recorded before it changes anything; a failure puts back what the run changed; `lift_isolation`
restores in reverse order.
"""

from __future__ import annotations

from prefect import flow
from pydantic import Field

from flows.security_common import SecurityParams, SecurityReport, SecurityRun
from tasks.common import settings_for
from tasks.security import (
    apply_security_steps,
    lift_security_steps,
    security_store_for,
    systems_for,
)
from tbs_emergency.domain.severity import Severity
from tbs_emergency.security.systems import isolation_plan


class IsolationParams(SecurityParams):
    environment: str = Field("", description="Environment to isolate (default: the config's)")


def _env(p: IsolationParams) -> str:
    return p.environment or settings_for(p.config_path or None).security.affected_environment


def isolate_in(run: SecurityRun, env: str) -> SecurityReport:
    """The isolation steps inside a run that has its incident (security_incident uses this)."""
    specs, notes = isolation_plan(settings_for(run.cfg), env, systems_for(run.cfg).identify)
    run.report.notes += notes
    result = apply_security_steps(
        run.cfg, "isolation", env, specs, dry_run=run.p.dry_run, incident_id=run.incident_id
    )
    run.steps(result, f"isolate {env}", f"security:isolation:{env}")
    if notes:
        run.entry("decision", "; ".join(notes), system=f"security:isolation:{env}", result="info")
    run.report.detail["isolation"] = {"status": result.status, "rolled_back": result.rolled_back}
    return run.report


@flow(name="security_isolate", log_prints=False, persist_result=False)
def isolate(params: IsolationParams | None = None) -> SecurityReport:
    """Drain and deny the environment at the load balancer, revoke its app database access."""
    p = params or IsolationParams()
    env = _env(p)
    settings_for(p.config_path or None).environment(env)  # unknown environment: ConfigError
    run = SecurityRun(p, f"isolate {env}")
    run.open(Severity.P0, f"security: {env} isolated", env, salt="isolation")
    isolate_in(run, env)
    return run.finish(f"security-isolate-{env}")


@flow(name="security_isolate_lift", log_prints=False, persist_result=False)
def lift_isolation(params: IsolationParams | None = None) -> SecurityReport:
    """Restore the isolated environment's recorded state, last step first."""
    p = params or IsolationParams()
    env = _env(p)
    run = SecurityRun(p, f"lift the isolation of {env}")
    record = security_store_for(run.cfg).load("isolation", env)
    if not p.incident_id and record is not None and record.incident_id and not p.dry_run:
        run.p = p.model_copy(update={"incident_id": record.incident_id})
    if run.p.incident_id and not p.dry_run:
        run.open(Severity.P0, f"security: {env} isolated", env, salt="isolation")
    result = lift_security_steps(
        run.cfg, "isolation", env, dry_run=p.dry_run, incident_id=run.incident_id
    )
    run.steps(result, f"isolation of {env} lifted", f"security:isolation:{env}")
    return run.finish(f"security-isolate-lift-{env}")
