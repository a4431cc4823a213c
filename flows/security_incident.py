"""Security incident response (runbook: "Security Incident Response"), its three timed stages
journaled in the incident record.

1. Immediate response (0-5 min): isolate the affected environment (drain and deny it at the load
   balancer, revoke the application accounts' database privileges on its databases, recorded
   so they can be restored; logs kept), preserve the system state as locked evidence with a
   sha256 manifest, notify the security contacts (P0 `security` template).
2. Assessment (5-15 min): the access logs and database activity of the last hour (failed-login
   bursts, unusual sources, volume spikes, privilege changes, unexpected database sessions)
   into a findings artifact; the rollback-vs-containment decision.
3. Containment & recovery (15-30 min): roll back to blue (the `emergency_rollback` flow, as a
   subflow with an incident of its own, referenced here), rotate the service accounts'
   credentials, run the hardening checks and report what is off.

Each stage is a journal entry with its duration and whether it finished within the runbook's
time; every action is an entry with its result. The incident stays open: people close it.
`dry_run` prints the plan and changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.rotate_credentials import rotate_in
from flows.security_common import SecurityParams, SecurityReport, SecurityRun, artifact_key, why
from flows.security_evidence import preserve_in
from flows.security_isolation import isolate_in
from tasks.common import settings_for
from tasks.incident import store_report, sync_index
from tasks.notify import deliver, plan_messages
from tasks.security import hardening_checks, privilege_log, since, systems_for
from tbs_emergency.domain.severity import Severity
from tbs_emergency.domain.templates import MessageContext
from tbs_emergency.security.assessment import Findings, assess
from tbs_emergency.security.stages import STAGES, Stage
from tbs_emergency.security.systems import isolation_plan

FALLBACK_ROLES = ("primary", "escalation")


class SecurityIncidentParams(SecurityParams):
    environment: str = Field("", description="Affected environment (default: the config's)")
    reason: str = Field("security incident", description="What was detected")
    rollback: bool = Field(True, description="Roll back to blue in containment")
    rotate: bool = Field(True, description="Rotate the service accounts' credentials")


class _Stages:
    def __init__(self, run: SecurityRun) -> None:
        self.run = run
        self.opened = run.incident.opened_at if run.incident else datetime.now(UTC)
        self.timings: dict[str, dict[str, Any]] = {}

    def done(self, stage: Stage, started: datetime, result: str, **data: Any) -> None:
        finished = datetime.now(UTC)
        since_open = (finished - self.opened).total_seconds()
        within = since_open <= stage.ends_at_s
        self.timings[stage.key] = {
            "duration_s": round((finished - started).total_seconds(), 2),
            "finished_s": round(since_open, 2),
            "due_s": stage.ends_at_s,
            "within_time": within,
            "result": result,
        }
        self.run.entry(
            "step",
            f"stage {stage.key}: {stage.title}",
            step=stage.key,
            result=result,  # type: ignore[arg-type]
            started_at=started,
            finished_at=finished,
            data={"checklist": list(stage.checklist), **self.timings[stage.key], **data},
        )
        if not within:
            self.run.report.notes.append(
                f"{stage.title} finished {since_open:.0f}s after the incident opened"
                f" (runbook: by {stage.ends_at_s:.0f}s)"
            )


def _notify(run: SecurityRun, env: str, reason: str) -> None:
    settings = settings_for(run.cfg)
    roles = tuple(settings.security.notify_roles)
    if not any(c.role in roles for c in settings.contacts):
        run.report.notes.append(
            f"no contact with role {', '.join(roles)}: the security notification goes to"
            f" {', '.join(FALLBACK_ROLES)}"
        )
        roles = FALLBACK_ROLES
    ctx = MessageContext(
        incident_id=run.incident_id or "?",
        severity="P0",
        env=env,
        reason=reason,
        trigger=reason,
    )
    planned = plan_messages(run.cfg, "security", ctx, roles=roles)
    if run.p.dry_run:
        run.report.lines += [f"[planned] security notification via {ch}" for ch, _ in planned]
        return
    if not planned:
        run.problem(f"no channel reaches a contact with role {', '.join(roles)}")
    futures = [(ch, deliver.submit(run.cfg, ch, msg)) for ch, msg in planned]
    for ch, fut in futures:
        fut.wait()
        ok = fut.state.is_completed()
        detail = ""
        if ok:
            detail = str((fut.state.result() or {}).get("detail") or "")
        else:
            try:
                fut.state.result()
            except Exception as exc:
                detail = why(exc)
        run.report.lines.append(
            f"[{'done' if ok else 'failed'}] security notification via {ch}"
            + (f": {detail}" if not ok else "")
        )
        if not ok:
            run.problem(f"security notification via {ch} failed: {detail}")
        run.entry(
            "notification",
            f"security notification via {ch}",
            system=ch,
            result="ok" if ok else "failed",
            data={"template": "security", "roles": list(roles), "detail": detail},
        )


def _known_users(settings: Any) -> set[str]:
    s = settings
    users = set(s.security.privilege_policy.mysql) | set(
        s.security.privilege_policy.heavydb_superusers
    )
    for cfg in s.environments.values():
        users |= {cfg.mysql.user, cfg.heavydb.user}
        if cfg.mysql.recovery_user:
            users.add(cfg.mysql.recovery_user)
    if s.database_emergency.mysql_admin:
        users.add(s.database_emergency.mysql_admin.user)
    users |= set(s.database_emergency.priority_users.mysql)
    users |= set(s.database_emergency.priority_users.heavydb)
    users |= {a.user for a in s.security.service_accounts}
    return users


def _assess(run: SecurityRun, payloads: dict[str, dict[str, Any]]) -> Findings:
    settings = settings_for(run.cfg)
    sec = settings.security
    start = since(sec.assessment.window)
    unavailable = [
        f"{s}: not collected"
        for s in ("lb-access-log", "app-login-audit", "mysql-processlist")
        if s not in payloads
    ]
    access = (payloads.get("lb-access-log") or {}).get("data", {}).get("entries", [])
    logins: list[dict[str, Any]] = []
    for v in ((payloads.get("app-login-audit") or {}).get("data") or {}).values():
        logins += v.get("entries", [])
    sessions: dict[str, list[dict[str, Any]]] = dict(
        (payloads.get("mysql-processlist") or {}).get("data") or {}
    )
    for server, v in ((payloads.get("heavydb-sessions") or {}).get("data") or {}).items():
        sessions[server] = v.get("sessions", [])
    try:
        changes = privilege_log(run.cfg, start)
    except Exception as exc:
        changes = []
        unavailable.append(f"privilege changes (MySQL binary log): {why(exc)}")
    return assess(
        window_start=start.isoformat(timespec="seconds"),
        window_end=datetime.now(UTC).isoformat(timespec="seconds"),
        access_log=access,
        login_audit=logins,
        db_sessions=sessions,
        privilege_log=changes,
        networks=sec.lockdown.internal_networks,
        known_users=_known_users(settings),
        cfg=sec.assessment,
        unavailable=unavailable,
    )


@flow(name="security_incident", log_prints=False, persist_result=False)
def security_incident(params: SecurityIncidentParams | None = None) -> SecurityReport:
    """Immediate response, assessment, containment (see the module docstring)."""
    p = params or SecurityIncidentParams()
    settings = settings_for(p.config_path or None)
    env = p.environment or settings.security.affected_environment
    settings.environment(env)  # unknown environment: ConfigError
    run = SecurityRun(p, f"security incident on {env}")
    if p.dry_run:
        specs, notes = isolation_plan(settings, env, systems_for(run.cfg).identify)
        run.report.notes += notes
        run.report.lines += [f"[planned] stage 1: isolation step {s.name}" for s in specs]
    run.open(Severity.P0, f"security incident: {p.reason}", env, salt="security")
    run.entry(
        "decision",
        f"security incident response started by {p.decided_by}: {p.reason}",
        step=STAGES[0].key,
        result="started",
        data={"environment": env},
    )
    stages = _Stages(run)

    # -------------------------------------------------------------- 1. immediate response
    t1 = datetime.now(UTC)
    if not p.dry_run:
        isolate_in(run, env)
    _manifest, payloads = preserve_in(run)
    _notify(run, env, p.reason)
    stages.done(STAGES[0], t1, "failed" if run.report.problems else "ok")

    # -------------------------------------------------------------- 2. assessment
    t2 = datetime.now(UTC)
    rollback = p.rollback and env != "blue" and "blue" in settings.environments
    if p.dry_run:
        run.report.lines.append(
            "[planned] stage 2: assess the last hour's access logs and"
            " database activity into findings"
        )
    else:
        findings = _assess(run, payloads)
        create_markdown_artifact(
            key=artifact_key("security-findings", run.incident_id),
            markdown=findings.markdown(f"Security assessment of {run.incident_id}"),
            description="Security assessment findings",
        )
        run.report.lines += [f"finding ({f.severity}): {f.summary}" for f in findings.findings]
        run.report.detail["findings"] = {
            "count": len(findings.findings),
            "worst": findings.worst,
            "unavailable": findings.unavailable,
        }
        run.entry(
            "check",
            f"security assessment: {len(findings.findings)} finding(s)"
            + (f", worst {findings.worst}" if findings.worst else ""),
            step=STAGES[1].key,
            system="security:assessment",
            result="ok",
            data=findings.model_dump(mode="json"),
        )
    strategy = (
        "roll back to blue, then contain"
        if rollback
        else "contain without rollback" + (" (no rollback target)" if p.rollback else "")
    )
    run.entry("decision", f"strategy: {strategy}", step=STAGES[1].key, result="ok")
    run.report.lines.append(f"strategy: {strategy}")
    stages.done(STAGES[1], t2, "ok")

    # -------------------------------------------------------------- 3. containment & recovery
    t3 = datetime.now(UTC)
    if rollback:
        _rollback(run, env, p)
    if p.rotate:
        rotate_in(run)
    if p.dry_run:
        run.report.lines.append("[planned] stage 3: hardening checks")
    else:
        try:
            hardening = hardening_checks(run.cfg)
            create_markdown_artifact(
                key=artifact_key("security-hardening", run.incident_id),
                markdown=hardening.markdown(),
                description="Hardening checks",
            )
            run.report.lines += [
                f"hardening {c.status}: {c.system}: {c.name}: {c.detail}" for c in hardening.off
            ]
            run.report.detail["hardening_off"] = len(hardening.off)
            run.entry(
                "check",
                f"hardening checks: {len(hardening.off)} of {len(hardening.checks)} need attention",
                step=STAGES[2].key,
                system="security:hardening",
                result="ok" if not hardening.off else "failed",
                data=hardening.model_dump(mode="json"),
            )
        except Exception as exc:
            run.problem(f"hardening checks failed: {why(exc)}")
        run.entry(
            "decision",
            "patching identified vulnerabilities is for people: see the"
            " findings and hardening artifacts",
            step=STAGES[2].key,
            result="info",
        )
    stages.done(STAGES[2], t3, "failed" if run.report.problems else "ok")
    run.report.detail["stages"] = stages.timings
    if run.incident is not None:
        sync_index(run.cfg, run.incident.id)
        try:
            store_report(run.cfg, run.incident.id)
        except Exception as exc:
            run.problem(f"incident report not stored: {why(exc)}")
    return run.finish("security-incident")


def _rollback(run: SecurityRun, env: str, p: SecurityIncidentParams) -> None:
    from flows.emergency_rollback import RollbackParams, run_rollback

    if p.dry_run:
        run.report.lines.append("[planned] stage 3: emergency_rollback to blue (own incident)")
        return
    started = datetime.now(UTC)
    try:
        # run_rollback: an escalated/degraded rollback (a Failed run) still gives its result
        res = run_rollback(
            RollbackParams(
                config_path=p.config_path,
                decided_by=f"security_incident {run.incident_id}",
                reason=f"security incident {run.incident_id}: secure rollback ({env} isolated)",
                severity=Severity.P0,
            )
        )
    except Exception as exc:
        run.problem(f"secure rollback failed: {why(exc)}")
        run.entry(
            "action",
            "secure rollback to blue FAILED",
            step=STAGES[2].key,
            system="traffic",
            result="failed",
            started_at=started,
            finished_at=datetime.now(UTC),
            data={"error": why(exc)},
        )
        return
    ok = res.rolled_back and res.traffic == "blue"
    run.report.lines.append(
        f"[{'done' if ok else 'failed'}] secure rollback to blue: incident {res.incident_id}"
        f" {res.status}, traffic on {res.traffic}"
    )
    if not ok:
        run.problem(f"secure rollback did not complete: {res.status}: {'; '.join(res.problems)}")
    run.report.detail["rollback"] = {
        "incident_id": res.incident_id,
        "status": res.status,
        "traffic": res.traffic,
    }
    run.entry(
        "action",
        f"secure rollback to blue (incident {res.incident_id}): {res.status}",
        step=STAGES[2].key,
        system="traffic",
        result="ok" if ok else "failed",
        started_at=started,
        finished_at=datetime.now(UTC),
        data={
            "rollback_incident": res.incident_id,
            "status": res.status,
            "traffic": res.traffic,
            "problems": res.problems,
        },
    )
