"""System-wide security lockdown (runbook: "System-Wide Security Lockdown"), and lifting it.

In order, each step recorded before it changes anything:

1. `emergency-auth-lockdown.sh --disable-new-logins --preserve-active`: the application's
   lockdown key in every Redis (new logins refused, existing sessions keep working);
2. `restrict-network-access.sh --internal-only --log-attempts`: the load balancer serves only
   `security.lockdown.internal_networks` (other sources get 403 and are logged);
3. `protect-api-endpoints.sh --rate-limit-aggressive --log-suspicious`: a per-client rate limit
   on the API paths (429 above it, logged);
4. `restrict-db-access.sh --read-only --authorized-ips-only`: every MySQL account whose host is
   not authorised loses its write privileges on the application schemas (recorded exactly;
   their sessions are closed). HeavyDB has no per-host accounts and its read-only mode is a
   start flag: the report says so.

A step that fails puts back what this run changed (nothing half-done). `lockdown lift` restores
every step in reverse order; a rerun of either changes nothing.
"""

from __future__ import annotations

from prefect import flow

from flows.security_common import SecurityParams, SecurityReport, SecurityRun
from tasks.common import settings_for
from tasks.security import (
    apply_security_steps,
    lift_security_steps,
    security_store_for,
    systems_for,
)
from tbs_emergency.domain.severity import Severity
from tbs_emergency.security.systems import lockdown_plan

KEY = "all"
HEAVYDB_NOTE = (
    "HeavyDB: not made read-only (its read-only mode is a server start flag and its accounts"
    " have no hosts); restart it with --read-only if it must be"
)


class LockdownParams(SecurityParams):
    pass


@flow(name="security_lockdown", log_prints=False, persist_result=False)
def lockdown(params: LockdownParams | None = None) -> SecurityReport:
    """Disable new logins, internal networks only, aggressive API rate limits, databases
    read-only except authorised hosts; every step reversible (`lift_lockdown`)."""
    p = params or LockdownParams()
    run = SecurityRun(p, "security lockdown")
    settings = settings_for(run.cfg)
    specs = lockdown_plan(settings, identify=systems_for(run.cfg).identify)
    inc = run.open(Severity.P0, "security lockdown", "all", salt="lockdown")
    run.report.notes.append(HEAVYDB_NOTE)
    run.entry("decision", f"security lockdown started by {p.decided_by}", result="started")
    result = apply_security_steps(
        run.cfg, "lockdown", KEY, specs, dry_run=p.dry_run, incident_id=inc
    )
    run.steps(result, "security lockdown", "security:lockdown")
    run.report.detail = {"status": result.status, "rolled_back": result.rolled_back}
    return run.finish("security-lockdown")


@flow(name="security_lockdown_lift", log_prints=False, persist_result=False)
def lift_lockdown(params: LockdownParams | None = None) -> SecurityReport:
    """Restore every lockdown step to its recorded state, last first."""
    p = params or LockdownParams()
    run = SecurityRun(p, "lift the security lockdown")
    record = security_store_for(run.cfg).load("lockdown", KEY)
    if not p.incident_id and record is not None and record.incident_id and not p.dry_run:
        p = p.model_copy(update={"incident_id": record.incident_id})
        run.p = p
    if p.incident_id and not p.dry_run:
        run.open(Severity.P0, "security lockdown", "all", salt="lockdown")
    result = lift_security_steps(
        run.cfg, "lockdown", KEY, dry_run=p.dry_run, incident_id=run.incident_id
    )
    run.steps(result, "security lockdown lifted", "security:lockdown")
    run.report.detail = {"status": result.status}
    return run.finish("security-lockdown-lift")
