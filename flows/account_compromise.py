"""Compromised account response (runbook: "Compromised Account Response"), and restoring it.

1. `suspend-user-account.sh --immediate`: lock the user's MySQL accounts (every host), disable
   its HeavyDB login and disable it in the application - where it has an account; each change
   recorded first, a failure puts back what the run changed;
2. `terminate-all-sessions.sh --force`: delete every session of the user in Redis;
3. `analyze-user-access.sh --since="last 24 hours"`: the user's login attempts (the app's
   audit) and database sessions, as findings (failed-login bursts, unusual sources);
4. `review-user-privileges.sh --report-anomalies`: its privileges against
   `security.privilege_policy`.

An unknown user (no account anywhere) changes nothing and says so. The tool's own accounts and
the priority users (tbs_emergency.security.protected) are refused, nothing changed, unless
`force`; a forced suspension says so in the report and the journal. `restore_account` lifts the
suspension in reverse order (sessions ended stay ended: the user logs in again).
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.security_common import SecurityParams, SecurityReport, SecurityRun, artifact_key, why
from tasks.common import settings_for
from tasks.security import (
    apply_security_steps,
    end_user_sessions,
    lift_security_steps,
    locate_user,
    review_user_privileges,
    security_store_for,
    since,
    systems_for,
    user_access_records,
)
from tbs_emergency.domain.severity import Severity
from tbs_emergency.security.assessment import Findings, failed_login_bursts, unusual_sources
from tbs_emergency.security.protected import protected_accounts, suspension_refusal
from tbs_emergency.security.systems import suspension_plan


class AccountParams(SecurityParams):
    user: str = Field(..., description="The compromised user (database and application)")
    force: bool = Field(
        False, description="Suspend even the tool's own accounts and the priority users"
    )


@flow(name="account_compromise", log_prints=False, persist_result=False)
def account_compromise(params: AccountParams) -> SecurityReport:
    """Suspend, terminate sessions, analyse 24 h of access, review privileges."""
    p = params
    user = p.user
    run = SecurityRun(p, f"compromised account {user}")
    settings = settings_for(run.cfg)
    sec = settings.security
    refusal = suspension_refusal(settings, user)
    if refusal and not p.force:
        # Before anything: no incident opened, no lookup, nothing changed.
        run.report.bad_input = True
        run.problem(refusal)
        return run.finish(f"security-account-{user}")
    run.open(Severity.P1, f"security: account {user} compromised", "all", salt=f"account:{user}")
    forced = ""
    if refusal:
        reasons = protected_accounts(settings)[user]
        forced = " (FORCED: protected account)"
        run.report.notes.append(f"forced (--force): {user} is {'; and '.join(reasons)}")
        run.report.detail["forced"] = reasons
        run.entry(
            "decision",
            f"account {user}: suspension of a protected account forced",
            system="security:accounts",
            result="info",
            data={"forced": True, "protected": reasons},
        )
    try:
        where = locate_user(run.cfg, user)
    except Exception as exc:
        run.problem(f"cannot look {user} up: {why(exc)}: nothing was changed")
        run.entry(
            "action",
            f"account {user}: lookup failed, nothing changed",
            result="failed",
            system="security:accounts",
            data={"error": why(exc)},
        )
        return run.finish(f"security-account-{user}")
    present = {k: bool(v) for k, v in where.items()}
    run.report.detail["found"] = present
    if not any(present.values()):
        run.report.bad_input = True
        run.problem(
            f"no account {user!r} on any system ({', '.join(sorted(present))}): nothing was changed"
        )
        run.entry(
            "action",
            f"account {user}: unknown user, nothing changed",
            result="failed",
            system="security:accounts",
            data={"searched": sorted(present)},
        )
        return run.finish(f"security-account-{user}")
    run.report.notes.append(
        f"{user} has accounts on: {', '.join(k for k, v in sorted(present.items()) if v)}"
    )

    # 1. suspension
    specs = suspension_plan(settings, user, present, systems_for(run.cfg).identify)
    result = apply_security_steps(
        run.cfg,
        "account-suspension",
        user,
        specs,
        dry_run=p.dry_run,
        incident_id=run.incident_id,
    )
    run.steps(result, f"account {user} suspended{forced}", "security:accounts")
    if result.problems:
        return run.finish(f"security-account-{user}")

    # 2. sessions
    if p.dry_run:
        run.report.lines.append(f"[planned] end every session of {user} (Redis)")
    else:
        try:
            ended = end_user_sessions(run.cfg, user)
            total = sum(ended.values())
            run.report.lines.append(f"[done] ended {total} session(s) of {user}")
            run.entry(
                "action",
                f"{total} session(s) of {user} terminated",
                system="redis",
                result="ok",
                data={"ended": ended},
            )
            run.report.detail["sessions_ended"] = total
        except Exception as exc:
            run.problem(f"sessions of {user} not terminated: {why(exc)}")
            run.entry(
                "action",
                f"sessions of {user} NOT terminated",
                system="redis",
                result="failed",
                data={"error": why(exc)},
            )

    # 3. access analysis, 4. privilege review
    start = since(sec.assessment.user_window)
    findings = Findings(
        window_start=start.isoformat(timespec="seconds"),
        window_end=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    try:
        records = user_access_records(run.cfg, user, start)
        logins = records["logins"]
        findings.findings += failed_login_bursts(logins, sec.assessment)
        findings.findings += unusual_sources([], logins, sec.lockdown.internal_networks)
        findings.inputs = {
            "login attempts": len(logins),
            "database sessions": len(records["db_sessions"]),
        }
        run.report.detail["access"] = {
            "logins": len(logins),
            "failed": sum(1 for e in logins if not e.get("ok")),
            "sources": sorted({str(e.get("remote")) for e in logins}),
            "db_sessions": records["db_sessions"],
        }
    except Exception as exc:
        findings.unavailable.append(f"access records: {why(exc)}")
        run.problem(f"access analysis of {user} failed: {why(exc)}")
    try:
        anomalies = review_user_privileges(run.cfg, user, where)
        findings.findings += anomalies
        run.report.detail["privilege_anomalies"] = [a.summary for a in anomalies]
    except Exception as exc:
        findings.unavailable.append(f"privileges: {why(exc)}")
        run.problem(f"privilege review of {user} failed: {why(exc)}")
    md = findings.markdown(f"Access and privileges of {user} (last 24 hours)")
    create_markdown_artifact(
        key=artifact_key(f"security-account-findings-{user}", run.incident_id),
        markdown=md,
        description=f"Compromised account {user}: findings",
    )
    run.report.lines += [f"finding ({f.severity}): {f.summary}" for f in findings.findings]
    run.entry(
        "check",
        f"access of {user} analysed, privileges reviewed: {len(findings.findings)} finding(s)",
        system="security:accounts",
        result="ok",
        data=findings.model_dump(mode="json"),
    )
    return run.finish(f"security-account-{user}")


@flow(name="account_restore", log_prints=False, persist_result=False)
def restore_account(params: AccountParams) -> SecurityReport:
    """Lift the suspension of a user: every recorded step back, last first."""
    p = params
    run = SecurityRun(p, f"restore account {p.user}")
    record = security_store_for(run.cfg).load("account-suspension", p.user)
    if not p.incident_id and record is not None and record.incident_id and not p.dry_run:
        run.p = p.model_copy(update={"incident_id": record.incident_id})
    if run.p.incident_id and not p.dry_run:
        run.open(
            Severity.P1, f"security: account {p.user} compromised", "all", salt=f"account:{p.user}"
        )
    result = lift_security_steps(
        run.cfg, "account-suspension", p.user, dry_run=p.dry_run, incident_id=run.incident_id
    )
    run.steps(result, f"account {p.user} restored", "security:accounts")
    return run.finish(f"security-account-restore-{p.user}")
