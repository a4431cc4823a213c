"""Emergency rollback (runbook: "Automated Response Sequence"): green -> blue in four steps.

1. Detection (0-30 s): open or load the incident, page the on-call (immediate template), health
   of both environments before anything changes.
2. Validation (30-60 s): confirm the breach from a second source (Prometheus asked again, plus
   the app or database directly), assess impact (active sessions, error rate), and check that a
   rollback is feasible: blue healthy and its databases reachable. If blue is not healthy there
   is no redirect: the incident is escalated (P0) and stays open.
3. Execution (60-120 s): redirect traffic to blue and verify; wait for green's in-flight
   transactions (bounded), then make green's databases read-only where they are not shared with
   blue; preserve sessions green -> blue and verify the count; watch blue while it takes over.
4. Confirmation (120-180 s): blue's health, user access through the load balancer, throughput
   on blue above the trigger threshold, stakeholder and post-resolution notifications; then the
   incident is resolved and its report rendered.

Guarantees:
- *Idempotent.* Every action is journaled when done (`data.action`); a run killed at any step and
  started again skips what is done (traffic already on blue is not switched again, notifications
  already sent are not sent again) and finishes the rest. A resolved incident is left alone.
- *One rollback at a time* (deployment concurrency limit 1). An incident that arrives while
  another one's rollback has already moved traffic to blue joins that incident in the journal.
- *Never onto an unhealthy blue*, never touching a database blue shares.
- *Says what it did and what it could not do*: every step and action is a journal entry with
  timings and who decided; failures are recorded with their reason; notifications that fail are
  retried and reported, never fatal.
- `dry_run` prints the plan from the live state and changes nothing (no journal writes either).

Needs: the configuration (`config_path` or TBS_CONFIG) and an incident id from the watchdog's
event, or none for a person-initiated rollback (a new incident is opened, `decided_by` says who).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from pydantic import BaseModel, Field

from flows.recovery_validation import validation_summary
from tasks.common import settings_for
from tasks.incident import journal_for, open_incident, store_report, sync_index
from tasks.notify import deliver, pagerduty_event, plan_messages
from tasks.rollback import (
    active_traffic,
    app_second_opinion,
    count_sessions,
    environment_health,
    metric,
    preserve_sessions,
    redirect_traffic,
    set_read_only,
    verify_traffic,
    verify_user_access,
    wait_transactions,
)
from tbs_emergency.domain.incident import (
    JOINED,
    MERGED,
    RESOLVED,
    Entry,
    Incident,
    incident_id,
)
from tbs_emergency.domain.journal import done_actions
from tbs_emergency.domain.plan import AUTOMATED_STEPS
from tbs_emergency.domain.severity import Severity
from tbs_emergency.domain.templates import MessageContext
from tbs_emergency.domain.triggers import RuleSet

TARGET = "blue"
SOURCE = "green"


class RollbackParams(BaseModel):
    """What starts a rollback. The automation fills incident_id, event_id and decided_by."""

    incident_id: str = Field("", description="Incident from the watchdog; empty opens a new one")
    event_id: str = ""
    config_path: str = Field("", description="tbs.toml; empty: $TBS_CONFIG or ./tbs.toml")
    decided_by: str = Field("person", description="Who or what decided to roll back")
    reason: str = Field("manual rollback", description="Why (for a new incident)")
    severity: Severity = Severity.P0
    dry_run: bool = Field(False, description="Print the plan; change nothing")
    force: bool = Field(False, description="Roll back even if the breach is not confirmed")
    confirm_data_integrity: bool = Field(
        False, description="Wait for green's transactions even past the timeout (runbook flag)"
    )
    read_only: bool = Field(True, description="Make green's own databases read-only")
    heavydb_app_users: list[str] = Field(default_factory=list)
    transaction_timeout_s: float | None = Field(
        None, description="Wait for in-flight transactions (default 60 s x time_scale, min 1 s)"
    )
    sample_users: int = 5
    validate_recovery: bool = Field(
        True, description="End with the recovery validation of blue (runbook: recovery validation)"
    )
    validation_time_scale: float | None = Field(
        None, gt=0, le=1, description="Scale the validation's durations (default: triggers')"
    )


class RollbackResult(BaseModel):
    incident_id: str
    rolled_back: bool
    traffic: str
    status: str
    dry_run: bool = False
    joined: str | None = None
    plan: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    steps: dict[str, dict[str, Any]] = Field(default_factory=dict)
    report_key: str | None = None


def _value(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, str | None]:
    """Run a task; (result, None) or (None, why it failed) after its retries."""
    state = fn(*args, return_state=True, **kwargs)
    if state.is_completed():
        return state.result(), None
    try:
        state.result()
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return None, state.message or state.name


def _append(cfg: str | None, e: Entry, attempts: int = 3) -> str | None:
    """Append to the journal directly (not as a task run: dozens of entries per rollback would
    each cost several API round trips on the emergency path); retried, never raises."""
    last = ""
    for i in range(attempts):
        try:
            journal_for(cfg).append(e)
            return None
        except Exception as exc:
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2 * (i + 1))
    return last


def _future(f: PrefectFuture[Any]) -> tuple[Any, str | None]:
    f.wait()
    state = f.state
    if state.is_completed():
        return state.result(), None
    try:
        state.result()
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return None, state.message or state.name


class _Run:
    """The state of one rollback run: journaling, timings, what is already done."""

    def __init__(self, params: RollbackParams, incident: Incident, entries: list[Entry]) -> None:
        self.p = params
        self.cfg = params.config_path or None
        self.incident = incident
        self.done = done_actions(entries)
        self.problems: list[str] = []
        self.steps: dict[str, dict[str, Any]] = {}
        self.notifications: list[tuple[str, str, PrefectFuture[Any]]] = []
        self.log = get_run_logger()
        # The runbook's budgets are real seconds: trigger windows scale in drills, the work of a
        # rollback does not.
        self.budget_scale = 1.0

    def entry(self, kind: str, what: str, **kw: Any) -> None:
        kw.setdefault("decided_by", self.p.decided_by)
        e = Entry(incident_id=self.incident.id, kind=kind, what=what, **kw)
        err = _append(self.cfg, e)
        if err:  # the journal is the record: say so loudly, keep going
            self.log.error("journal write failed (%s): %s", what, err)
            self.problems.append(f"journal write failed: {what}: {err}")

    def action(
        self, name: str, what: str, system: str, result: str, started: datetime, **data: Any
    ) -> None:
        self.entry(
            "action",
            what,
            system=system,
            result=result,  # type: ignore[arg-type]
            started_at=started,
            finished_at=datetime.now(UTC),
            data={"action": name, **data},
        )
        if result == "ok":
            self.done.add(name)
        elif result == "failed":
            self.problems.append(f"{what}: {data.get('error') or data.get('reason') or 'failed'}")

    def step(self, key: str, started: datetime, result: str, **data: Any) -> None:
        st = next(s for s in AUTOMATED_STEPS if s.key == key)
        finished = datetime.now(UTC)
        self.steps[key] = {
            "result": result,
            "duration_s": (finished - started).total_seconds(),
            "finished_s": (finished - self.incident.opened_at).total_seconds(),
        }
        self.entry(
            "step",
            f"step {st.key}: {st.title}",
            step=key,
            result=result,  # type: ignore[arg-type]
            started_at=started,
            finished_at=finished,
            data={"budget_scale": self.budget_scale, "checklist": list(st.checklist), **data},
        )

    def notify(self, template: str, reason: str = "") -> None:
        """Submit the template's deliveries (concurrently); results are journaled at the end."""
        name = f"notify:{template}"
        if name in self.done:
            return
        ctx = MessageContext(
            incident_id=self.incident.id,
            severity=self.incident.severity.value,
            env=self.incident.env,
            reason=reason,
            trigger=self.incident.trigger,
        )
        try:
            planned = plan_messages(self.cfg, template, ctx)
        except Exception as exc:
            self.problems.append(f"notification {template} could not be planned: {exc}")
            return
        for channel, msg in planned:
            self.notifications.append((template, channel, deliver.submit(self.cfg, channel, msg)))
        self.done.add(name)

    def settle_notifications(self) -> None:
        sent: dict[str, bool] = {}
        for template, channel, fut in self.notifications:
            started = datetime.now(UTC)
            res, err = _future(fut)
            ok = err is None
            sent[template] = sent.get(template, True) and ok
            self.entry(
                "notification",
                f"{template} notification via {channel}",
                system=channel,
                result="ok" if ok else "failed",
                started_at=started,
                finished_at=datetime.now(UTC),
                data={"template": template, "detail": (res or {}).get("detail") if ok else err},
            )
            if not ok:
                self.problems.append(f"{template} via {channel} failed after retries: {err}")
        for template, ok in sent.items():
            if ok:
                self.entry(
                    "action",
                    f"{template} notifications sent",
                    system="notify",
                    result="ok",
                    data={"action": f"notify:{template}"},
                )
        self.notifications.clear()


def _incident_for(params: RollbackParams) -> Incident:
    now = datetime.now(UTC)
    if params.incident_id:
        # The watchdog opened it; if the journal lost it, rebuild a minimal record.
        return Incident(
            id=params.incident_id,
            severity=params.severity,
            env=SOURCE,
            trigger=f"automation event {params.event_id or '?'} (journal entry missing)",
            opened_at=now,
            decided_by=params.decided_by,
        )
    return Incident(
        id=incident_id(SOURCE, now, salt="manual"),
        severity=params.severity,
        env=SOURCE,
        rule=None,
        trigger=params.reason,
        opened_at=now,
        decided_by=params.decided_by,
    )


def _plan(params: RollbackParams, traffic: str | None, inc: Incident) -> list[str]:
    return [
        f"incident {inc.id} ({inc.severity.value}, {inc.trigger})",
        "step 1: page on-call (immediate template); health of blue and green",
        "step 2: confirm breach from Prometheus + app/database; impact; blue feasibility",
        f"step 3: traffic {traffic or '?'} -> blue"
        + (" (already on blue: no switch)" if traffic == TARGET else "")
        + "; wait for green transactions; green databases read-only where not shared;"
        " sessions green -> blue",
        "step 4: blue health, user access, throughput; stakeholder + post-resolution notices;"
        " resolve incident; report",
    ]


def _confirm_breach(run: _Run, rules: RuleSet) -> dict[str, Any]:
    """Ask Prometheus again (an instant query, not the watchdog's range) and the system itself."""
    inc = run.incident
    rule = inc.rule or ""
    evidence: dict[str, Any] = {"rule": rule}
    confirmed = False
    if rule == "performance_degradation" and rules.performance:
        v, _ = _value(metric, run.cfg, "throughput", inc.env, rules.performance.period_s)
        evidence["prometheus_rows_per_s"] = v
        confirmed = v is not None and rules.performance.breaches(v)
    elif rule == "error_rate_spike" and rules.error_rate:
        v, _ = _value(metric, run.cfg, "error_rate", inc.env, rules.error_rate.period_s)
        evidence["prometheus_error_rate"] = v
        confirmed = v is not None and rules.error_rate.breaches(v)
    elif rule == "resource_exhaustion":
        signal = (inc.evaluation or {}).get("signal") or "cpu"
        r = next((x for x in rules.resources if x.signal == signal), None)
        v, _ = _value(metric, run.cfg, signal, inc.env, 60.0)
        evidence[f"prometheus_{signal}"] = v
        confirmed = r is not None and v is not None and r.breaches(v)
    app, _ = _value(app_second_opinion, run.cfg, inc.env)
    evidence["app"] = {k: v for k, v in (app or {}).items() if k != "health"}
    if rule == "database_failures" or not rule:
        h, _ = _value(environment_health, run.cfg, inc.env)
        checks = (h or {}).get("checks", {})
        evidence["databases"] = {k: checks.get(k, {}).get("ok") for k in ("heavydb", "mysql")}
        if rule == "database_failures":
            confirmed = not all(evidence["databases"].values())
    if app is not None and (not app.get("reachable") or app.get("status") not in ("ok", None)):
        confirmed = True  # the app itself says it is not fine
        evidence["app_unhealthy"] = True
    evidence["confirmed"] = confirmed
    return evidence


@flow(name="emergency_rollback", log_prints=False, persist_result=False)
def emergency_rollback(params: RollbackParams | None = None) -> RollbackResult:
    """The automated response sequence; see the module docstring for what it guarantees."""
    p = params or RollbackParams()
    cfg = p.config_path or None
    logger = get_run_logger()
    settings = settings_for(cfg)
    rules = RuleSet.from_config(settings.triggers)

    # ---------------------------------------------------------------- Step 1: detection record
    t1 = datetime.now(UTC)
    inc: Incident | None = None
    entries: list[Entry] = []
    if p.incident_id:
        try:
            entries = journal_for(cfg).entries(p.incident_id)
            inc = Incident.from_entries(entries)
        except Exception as exc:
            logger.error("cannot read the journal of %s: %s", p.incident_id, exc)
    traffic, terr = _value(active_traffic, cfg)
    if p.dry_run:
        plan_inc = inc or _incident_for(p)
        plan = _plan(p, traffic, plan_inc)
        for line in plan:
            logger.info("plan: %s", line)
        return RollbackResult(
            incident_id=plan_inc.id,
            rolled_back=False,
            traffic=traffic or "unknown",
            status="dry-run",
            dry_run=True,
            plan=plan,
            problems=[terr] if terr else [],
        )
    if inc is None:
        inc, _new = open_incident(cfg, _incident_for(p))
        entries = [inc.opened_entry()]
    if not inc.is_open:
        logger.info("incident %s is already %s: nothing to do", inc.id, inc.status)
        return RollbackResult(
            incident_id=inc.id,
            rolled_back=inc.status == "resolved",
            traffic=traffic or "unknown",
            status=f"already {inc.status}",
        )
    run = _Run(p, inc, entries)
    run.entry(
        "decision",
        f"rollback started by {p.decided_by}" + (f" (event {p.event_id})" if p.event_id else ""),
        step="1-detection",
        result="started",
        data={"flow": "emergency_rollback", "force": p.force},
    )

    # Another incident's rollback already took traffic to blue: join it instead of acting twice.
    joined = _join_running_rollback(run, traffic)
    if joined:
        return RollbackResult(
            incident_id=inc.id,
            rolled_back=True,
            traffic=traffic or "unknown",
            status="merged",
            joined=joined,
        )

    run.notify("immediate")
    health = {env: environment_health.submit(cfg, env) for env in (TARGET, SOURCE)}
    pre: dict[str, dict[str, Any]] = {}
    for env, f in health.items():
        res, err = _future(f)
        pre[env] = res or {"env": env, "healthy": False, "error": err}
    run.step("1-detection", t1, "ok", pre_rollback_health=pre, traffic=traffic)

    # ---------------------------------------------------------------- Step 2: validation
    t2 = datetime.now(UTC)
    if inc.env == TARGET:
        reason = "the failing environment is blue itself: there is no rollback target"
        return _escalate(run, t2, "2-validation", reason, traffic)
    evidence = _confirm_breach(run, rules) if inc.rule else {"confirmed": True, "manual": True}
    sessions, _ = _value(count_sessions, cfg, SOURCE)
    err_rate, _ = _value(
        metric, cfg, "error_rate", SOURCE, rules.error_rate.period_s if rules.error_rate else 60.0
    )
    impact = {"active_sessions": sessions, "error_rate_percent": err_rate}
    blue = pre[TARGET]
    feasible = bool(blue.get("healthy"))
    if traffic == TARGET and "redirect" not in run.done:
        feasible = True  # already on blue (a previous run or a person): finish the job
    run.entry(
        "check",
        "breach confirmed by a second source"
        if evidence.get("confirmed")
        else "breach NOT confirmed by a second source",
        step="2-validation",
        system="prometheus+app",
        result="ok" if evidence.get("confirmed") else "failed",
        data={"evidence": evidence, "impact": impact},
    )
    if not evidence.get("confirmed") and not p.force and "redirect" not in run.done:
        reason = "the breach was not confirmed by a second source; a person must decide"
        return _escalate(run, t2, "2-validation", reason, traffic, severity=Severity.P1)
    if not feasible:
        bad = {k: v for k, v in (blue.get("checks") or {}).items() if not v.get("ok")}
        reason = f"blue is not healthy ({', '.join(bad) or blue.get('error') or 'unknown'})"
        return _escalate(run, t2, "2-validation", reason, traffic)
    run.step("2-validation", t2, "ok", evidence=evidence, impact=impact, feasible=True)

    # ---------------------------------------------------------------- Step 3: execution
    t3 = datetime.now(UTC)
    run.notify("user")
    if "redirect" not in run.done:
        s = datetime.now(UTC)
        res, err = _value(redirect_traffic, cfg, TARGET)
        run.action(
            "redirect",
            "redirect traffic to blue",
            "traffic",
            "ok" if err is None else "failed",
            s,
            **(res or {"error": err}),
        )
        if err is not None:
            return _escalate(run, t3, "3-execution", f"traffic redirect failed: {err}", traffic)
    s = datetime.now(UTC)
    ver, verr = _value(verify_traffic, cfg, TARGET)
    run.action(
        "verify-redirect",
        "verify traffic is on blue",
        "traffic",
        "ok" if verr is None else "failed",
        s,
        **(ver or {"error": verr}),
    )
    if verr is not None:
        return _escalate(run, t3, "3-execution", f"traffic is not on blue: {verr}", traffic)
    traffic = TARGET
    _remember_rollback(run)

    if "transactions" not in run.done:
        timeout = p.transaction_timeout_s
        if timeout is None:
            timeout = max(1.0, 60.0 * settings.triggers.time_scale)
        if p.confirm_data_integrity:
            timeout = max(timeout, 60.0)
        s = datetime.now(UTC)
        res, err = _value(wait_transactions, cfg, SOURCE, timeout)
        ok = err is None and (res or {}).get("ok")
        run.action(
            "transactions",
            "wait for green's in-flight transactions",
            f"mysql[{SOURCE}]",
            "ok" if ok else "failed",
            s,
            **(res or {"error": err}),
        )
    if p.read_only:
        for kind in ("mysql", "heavydb"):
            name = f"read-only:{kind}"
            if name in run.done:
                continue
            s = datetime.now(UTC)
            res, err = _value(set_read_only, cfg, SOURCE, kind, True, p.heavydb_app_users)
            res = res or {"error": err}
            result = "skipped" if res.get("skipped") else ("ok" if res.get("ok") else "failed")
            run.action(
                name, f"make green's {kind} read-only", f"{kind}[{SOURCE}]", result, s, **res
            )
    if "sessions" not in run.done:
        s = datetime.now(UTC)
        res, err = _value(preserve_sessions, cfg, SOURCE, TARGET)
        res = res or {"error": err}
        run.action(
            "sessions",
            "preserve sessions green -> blue",
            "redis",
            "ok" if res.get("ok") else "failed",
            s,
            **res,
        )
    # Watch the rollback take effect: blue must keep answering while it takes the load.
    s = datetime.now(UTC)
    progress = _value(environment_health, cfg, TARGET)[0] or {}
    run.entry(
        "check",
        "blue health while taking traffic",
        step="3-execution",
        system="blue",
        result="ok" if progress.get("healthy") else "failed",
        started_at=s,
        finished_at=datetime.now(UTC),
        data={"health": progress},
    )
    run.step("3-execution", t3, "ok", traffic=traffic)

    # ---------------------------------------------------------------- Step 4: confirmation
    t4 = datetime.now(UTC)
    checks: dict[str, Any] = {}
    f_health = environment_health.submit(cfg, TARGET)
    f_access = verify_user_access.submit(cfg, TARGET, p.sample_users)
    window = rules.performance.period_s if rules.performance else 60.0
    throughput_ok, rows = True, None
    if rules.performance:
        rows, _ = _value(metric, cfg, "throughput", TARGET, window)
        throughput_ok = rows is not None and not rules.performance.breaches(rows)
    h, herr = _future(f_health)
    a, aerr = _future(f_access)
    checks["blue_health"] = h or {"error": herr}
    checks["user_access"] = a or {"error": aerr}
    checks["throughput_rows_per_s"] = rows
    checks["throughput_ok"] = throughput_ok
    for name, ok in (
        ("blue health", bool((h or {}).get("healthy"))),
        ("user access", bool((a or {}).get("ok"))),
        ("throughput above threshold", throughput_ok),
    ):
        run.entry(
            "check",
            f"confirm {name}",
            step="4-confirmation",
            system="blue",
            result="ok" if ok else "failed",
        )
        if not ok:
            run.problems.append(f"confirmation: {name} failed")
    confirmed = bool((h or {}).get("healthy")) and throughput_ok
    if confirmed and p.validate_recovery:
        # The recovery validation (functional, API, UI, database and concurrency checks) says
        # blue really serves; its verdict is journaled in the incident, and a failing one
        # escalates below like any unconfirmed recovery (so the validation does not escalate).
        verdict = validation_summary(
            cfg,
            TARGET,
            "emergency_rollback",
            incident_id=inc.id,
            escalate=False,
            time_scale=p.validation_time_scale,
        )
        checks["recovery_validation"] = verdict
        run.entry(
            "check",
            "confirm recovery validation",
            step="4-confirmation",
            system="blue",
            result="ok" if verdict["passed"] else "failed",
            data={"headline": verdict["headline"], "failures": verdict["failures"]},
        )
        if not verdict["passed"]:
            run.problems.append(f"recovery validation failed: {verdict['headline']}")
            confirmed = False
    if confirmed:
        run.notify("stakeholder")
        run.notify("post_resolution")
    run.settle_notifications()
    if confirmed:
        pd = _pagerduty_channels(cfg)
        for ch in pd:
            _value(pagerduty_event, cfg, ch, "resolve", inc.id)
    run.step("4-confirmation", t4, "ok" if confirmed else "failed", checks=checks)
    if confirmed:
        run.entry(RESOLVED, "incident resolved: traffic on blue, recovery confirmed", result="ok")
    else:
        run.entry("escalated", "recovery not confirmed: a person must check blue", result="failed")
        run.notify("escalation", reason="recovery on blue could not be confirmed")
        run.settle_notifications()
    sync_index(cfg, inc.id)
    report, _ = _value(store_report, cfg, inc.id)
    return RollbackResult(
        incident_id=inc.id,
        rolled_back=True,
        traffic=traffic,
        status="resolved" if confirmed else "escalated",
        problems=run.problems,
        steps=run.steps,
        report_key=(report or {}).get("key"),
    )


def _pagerduty_channels(cfg: str | None) -> list[str]:
    settings = settings_for(cfg)
    return [n for n, c in settings.channels.items() if c.kind == "pagerduty" and not c.block]


def _escalate(
    run: _Run,
    started: datetime,
    step: str,
    reason: str,
    traffic: str | None,
    severity: Severity = Severity.P0,
) -> RollbackResult:
    """Stop short on purpose: say why, page people, keep the incident open."""
    run.log.error("rollback stopped: %s", reason)
    run.problems.append(reason)
    run.entry("severity", f"severity raised to {severity.value}", data={"severity": severity.value})
    run.entry(
        "escalated",
        f"escalated to a person: {reason}",
        step=step,
        result="failed",
        data={"reason": reason},
    )
    run.notify("escalation", reason=reason)
    run.settle_notifications()
    run.step(step, started, "failed", reason=reason)
    sync_index(run.cfg, run.incident.id)
    report, _ = _value(store_report, run.cfg, run.incident.id)
    return RollbackResult(
        incident_id=run.incident.id,
        rolled_back=False,
        traffic=traffic or "unknown",
        status="escalated",
        problems=run.problems,
        steps=run.steps,
        report_key=(report or {}).get("key"),
    )


LAST_ROLLBACK_KEY = "incidents/last-rollback.json"
JOIN_WITHIN_S = 3600.0


def _remember_rollback(run: _Run) -> None:
    """Note which incident moved traffic to blue (derived data, beside the journal)."""
    import json

    try:
        journal_for(run.cfg).store.put(
            LAST_ROLLBACK_KEY,
            json.dumps({"incident_id": run.incident.id, "at": time.time()}).encode(),
        )
    except Exception as exc:
        run.log.warning("could not record the last rollback: %s", exc)


def _join_running_rollback(run: _Run, traffic: str | None) -> str | None:
    """If another incident's rollback (running, or done within the hour) already moved traffic
    to blue, this incident joins it: one rollback, both incidents in the journal."""
    import json

    if traffic != TARGET or "redirect" in run.done:
        return None
    j = journal_for(run.cfg)
    other: str | None = None
    try:
        last = json.loads(j.store.get(LAST_ROLLBACK_KEY))
        if time.time() - float(last.get("at", 0)) < JOIN_WITHIN_S:
            other = str(last.get("incident_id") or "") or None
    except Exception:
        other = None
    if other is None:
        for rec in j.open_incidents():
            oid = rec.get("id")
            if oid and oid != run.incident.id and "redirect" in done_actions(j.entries(oid)):
                other = oid
                break
    if other is None or other == run.incident.id:
        return None
    run.entry(
        MERGED,
        f"joined incident {other}: its rollback already moved traffic to blue",
        result="ok",
        data={"into": other},
    )
    _append(
        run.cfg,
        Entry(
            incident_id=other,
            kind=JOINED,
            what=f"incident {run.incident.id} joined this one",
            decided_by=run.p.decided_by,
            data={"incident": run.incident.id},
        ),
    )
    sync_index(run.cfg, run.incident.id)
    return other
