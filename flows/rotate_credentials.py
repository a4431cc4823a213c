"""Credential rotation (runbook: `reset-compromised-credentials.sh --all-service-accounts
--force-rotation`).

For the MySQL and HeavyDB service accounts of `security.service_accounts`: generate strong
passwords, change them on the servers, check the new one logs in and the old one is refused,
write them to the Prefect Secret blocks the configuration reads them from. All or nothing: a
failure on any account puts back every account the run changed (server and block). Passwords
never appear in parameters, results, logs, artifacts or the journal.

Needs: each account's password as `{ block = "name" }`; a MySQL account with CREATE USER
(`database_emergency.mysql_admin`) and a HeavyDB superuser (the environment's account).
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.security_common import SecurityParams, SecurityReport, SecurityRun, artifact_key, why
from tasks.security import rotate_service_accounts
from tbs_emergency.domain.severity import Severity
from tbs_emergency.errors import ConfigError
from tbs_emergency.security.rotation import RotationReport


class RotateParams(SecurityParams):
    accounts: list[str] = Field(
        default_factory=list, description="Only these service accounts (default: all)"
    )


def rotate_in(run: SecurityRun, accounts: list[str] | None = None) -> RotationReport | None:
    """Rotation inside a run that has its incident (security_incident uses this)."""
    try:
        report = rotate_service_accounts(run.cfg, accounts or None, dry_run=run.p.dry_run)
    except ConfigError as exc:
        for line in exc.problems:
            run.problem(line)
        run.report.bad_input = True
        run.entry(
            "action",
            "credential rotation refused: " + "; ".join(exc.problems),
            system="security:credentials",
            result="failed",
        )
        return None
    except Exception as exc:
        run.problem(f"credential rotation failed: {why(exc)}")
        run.entry(
            "action",
            f"credential rotation failed: {why(exc)}",
            system="security:credentials",
            result="failed",
        )
        return None
    run.report.lines += [a.line() for a in report.actions]
    for p in report.problems:
        run.problem(p)
    if not report.accounts:
        run.report.notes.append("no service accounts configured (security.service_accounts)")
    run.entry(
        "action",
        f"credentials rotated: {', '.join(report.rotated)}"
        if report.ok and report.rotated
        else (
            "credential rotation planned"
            if run.p.dry_run
            else "credential rotation FAILED: nothing rotated (changed accounts were put back)"
        )
        if report.accounts
        else "credential rotation: no service accounts configured",
        system="security:credentials",
        result="ok" if report.ok else "failed",
        data={"accounts": [a.model_dump() for a in report.accounts], "problems": report.problems},
    )
    create_markdown_artifact(
        key=artifact_key("security-rotation", run.incident_id),
        markdown=report.markdown(),
        description="Credential rotation",
    )
    run.report.detail["rotation"] = {
        "rotated": report.rotated,
        "accounts": [a.model_dump() for a in report.accounts],
    }
    return report


@flow(name="rotate_credentials", log_prints=False, persist_result=False)
def rotate_credentials(params: RotateParams | None = None) -> SecurityReport:
    """Rotate the service accounts' passwords, all or nothing (see the module docstring)."""
    p = params or RotateParams()
    run = SecurityRun(p, "rotate credentials" + (" (dry run)" if p.dry_run else ""))
    run.open(Severity.P1, "security: credential rotation", "all", salt="rotation")
    rotate_in(run, p.accounts)
    return run.finish("security-rotate-credentials")
