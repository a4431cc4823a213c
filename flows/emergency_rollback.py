"""Emergency rollback (runbook: "Automated Response Sequence"): green -> blue in four steps.

1. Detection (0-30 s): open or load the incident, page the on-call (immediate template), health
   of both environments before anything changes.
2. Validation (30-60 s): confirm the breach from a second source, a different system from the
   Prometheus that fired it (the application's own counters and the load balancer's per-backend
   metrics for throughput and errors, the host's gauges as the app reports them for resources,
   the app and databases themselves for outages and database failures; which system confirmed
   is journaled), assess impact (active sessions, error rate), and check that a rollback is
   feasible: blue healthy and its databases reachable. If blue is not healthy there is no
   redirect: the incident is escalated (P0) and stays open.
3. Execution (60-120 s): redirect traffic to blue and verify; wait for green's in-flight
   transactions (bounded), then make green's databases read-only where they are not shared with
   blue; preserve sessions green -> blue; watch blue while it takes over.
4. Confirmation (120-180 s, within 60 s at real time): fast checks only: blue's health, a
   user-access sample through the load balancer, and blue's throughput and error rate from the
   load balancer's per-backend metrics over a short window (`confirm_window_s`); stakeholder and
   post-resolution notifications; the incident is resolved and its report rendered. The full
   recovery validation then runs as its own flow run (the `recovery-validation` deployment,
   named `validation-<incident>`, tagged with the incident; in-process when no deployment is
   registered); a failing verdict reopens the incident and escalates it.

Guarantees:
- *Honest steps.* A step is `ok` only when every action and check in it is. A containment
  action of step 3 that fails (transactions, read-only, sessions, carrying writes) leaves the
  incident open as `degraded`, escalates, and names what is left; a rerun retries exactly the
  actions not journaled `ok`. A check over zero items is not a pass.
- *Idempotent.* Every action is journaled when done (`data.action`); a run killed at any step and
  started again skips what is done (traffic already on blue is not switched again, notifications
  already sent are not sent again) and finishes the rest. A resolved incident is left alone.
- *One rollback at a time, everywhere*: the global concurrency limit `tbs-rollback` (limit 1) is
  taken inside the flow around the acting part, so CLI runs, subflows and both deployments
  share it; it is never held across a pause. An incident that arrives while another one's
  rollback has already moved traffic to blue joins that incident in the journal.
- *Never onto an unhealthy blue*, never touching a database blue shares.
- *The UI tells the truth*: the run is named `rollback-<incident>` and tagged with severity and
  environment; an escalated rollback ends in a Failed state named `Escalated`, a degraded one
  `Degraded` (the `RollbackResult` rides on the state: `run_rollback` returns it either way).
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
from prefect.states import Failed, State
from pydantic import BaseModel, Field

from flows.runinfo import (
    incident_run_name,
    name_run,
    rollback_slot,
    run_tags,
    start_validation,
)
from tasks.common import settings_for
from tasks.incident import journal_for, open_incident, store_report, sync_index
from tasks.notify import deliver, pagerduty_event, plan_messages
from tasks.rollback import (
    active_traffic,
    app_counters_window,
    app_second_opinion,
    backend_window,
    carry_writes,
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
    DEGRADED,
    JOINED,
    MERGED,
    RESOLVED,
    Entry,
    Incident,
    incident_id,
)
from tbs_emergency.domain.journal import done_actions
from tbs_emergency.domain.plan import AUTOMATED_STEPS
from tbs_emergency.domain.secondsource import blue_checks, confirm
from tbs_emergency.domain.severity import Severity
from tbs_emergency.domain.templates import MessageContext
from tbs_emergency.domain.triggers import RuleSet
from tbs_emergency.errors import TbsError

TARGET = "blue"
SOURCE = "green"

# One rollback at a time, whoever starts it (deployments, CLI, subflows): a Prefect global
# concurrency limit taken inside the flows around the acting part only (never across a pause).
ROLLBACK_LIMIT = "tbs-rollback"
# The slot's lease: the shortest Prefect allows (60 s), renewed by Prefect every 45 s while held;
# a process that dies holding the slot frees it within a minute.
LEASE_S = 60.0
SLOT_WAIT_S = 900.0  # a rollback waits this long for the one running before it
# Step 2 of an outage: how long the app's own health check may take before the app counts as
# not answering (the watchdog's direct probes time out at 1.5 s by default).
OUTAGE_HEALTH_WAIT_S = 2.5
# The whole run, slot wait and the in-process validation fallback included.
ROLLBACK_TIMEOUT_S = 3600.0
# Step 4 (runbook: 120-180 s) at real time: its checks are waited for this long, its
# notifications until STEP4_SETTLE_S; later answers are journaled after the step.
STEP4_CHECKS_S = 45.0
STEP4_SETTLE_S = 55.0
# The containment actions of step 3: one that fails leaves the incident `degraded`.
CONTAINMENT = ("transactions", "read-only:mysql", "read-only:heavydb", "sessions", "carry-writes")


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
        True,
        description="After step 4, start the full recovery validation of blue as its own run",
    )
    validation_time_scale: float | None = Field(
        None, gt=0, le=1, description="Scale the validation's durations (default: triggers')"
    )
    confirm_window_s: float = Field(
        5.0, gt=0, le=30, description="Step 4: seconds of load balancer metrics on blue"
    )
    second_source_window_s: float = Field(
        3.0, gt=0, le=30, description="Step 2: seconds of app/load balancer counters"
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
    left: list[str] = Field(
        default_factory=list, description="Containment actions not done (status degraded)"
    )
    validation: dict[str, Any] = Field(
        default_factory=dict, description="The recovery validation run started after step 4"
    )


class RollbackIncomplete(TbsError):
    """What an escalated or degraded rollback's Failed state carries: the result is `.result`.

    Calling `emergency_rollback(...)` directly raises it; `run_rollback` returns the result."""

    def __init__(self, result: RollbackResult) -> None:
        self.result = result
        left = f"; left: {', '.join(result.left)}" if result.left else ""
        why = "; ".join(result.problems[:3])
        super().__init__(f"rollback {result.status} ({result.incident_id}): {why}{left}")


def rollback_result(value: Any) -> RollbackResult:
    """The RollbackResult of a run's outcome: a result, the exception of an incomplete one, or
    a final state (`return_state=True`)."""
    if isinstance(value, RollbackResult):
        return value
    if isinstance(value, RollbackIncomplete):
        return value.result
    if isinstance(value, State):
        return rollback_result(value.result(raise_on_failure=False))
    raise TypeError(f"not a rollback outcome: {value!r:.200}")


def run_rollback(params: RollbackParams) -> RollbackResult:
    """Run `emergency_rollback` (in process or as a subflow) and return its result whatever the
    final state (Completed, or Failed `Escalated` / `Degraded`). Other failures raise."""
    from prefect import tags

    # tagged when created: the paging automation matches the tag in the run's final event
    try:
        with tags("emergency", "rollback"):
            return emergency_rollback(params)  # type: ignore[return-value]
    except RollbackIncomplete as exc:
        return exc.result


def final_state(result: RollbackResult) -> RollbackResult | State:
    """What the flow returns: the result when it ended well, else a Failed state named for what
    happened, carrying the result (so the UI, automations and callers all see it)."""
    names = {"escalated": "Escalated", "degraded": "Degraded"}
    if result.status not in names:
        return result
    exc = RollbackIncomplete(result)
    return Failed(name=names[result.status], message=str(exc)[:500], data=exc)


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


def _future(f: PrefectFuture[Any], deadline: float | None = None) -> tuple[Any, str | None]:
    """A submitted task's result, or why not; with `deadline` (time.monotonic()), a task still
    running then is reported as not answered in time (it is abandoned, not waited for)."""
    if deadline is None:
        f.wait()
    else:
        f.wait(max(0.0, deadline - time.monotonic()))
        if not f.state.is_final():
            return None, "no answer within the step's budget"
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
        # What each step did: (name, result) of its actions and checks; a step is ok only when
        # every one of them is (`skipped` counts only with a reason that makes it unnecessary).
        self.current = "1-detection"
        self.outcomes: dict[str, list[tuple[str, str]]] = {}
        self.left: list[str] = []  # containment actions not done
        self._sent: dict[str, bool] = {}  # template -> all its settled deliveries ok

    def begin(self, key: str) -> datetime:
        self.current = key
        self.outcomes.setdefault(key, [])
        return datetime.now(UTC)

    def _outcome(self, name: str, result: str) -> None:
        self.outcomes.setdefault(self.current, []).append((name, result))

    def check(self, what: str, system: str, result: str, **data: Any) -> None:
        """A check of the current step (journaled, counted in the step's result)."""
        self.entry("check", what, step=self.current, system=system, result=result, data=data)
        self._outcome(what, result)
        if result == "failed":
            why = data.get("error") or data.get("reason") or "failed"
            self.problems.append(f"{what}: {why}")

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
            step=self.current,
            system=system,
            result=result,  # type: ignore[arg-type]
            started_at=started,
            finished_at=datetime.now(UTC),
            data={"action": name, **data},
        )
        self._outcome(name, result)
        if result == "ok":
            self.done.add(name)
        elif result == "failed":
            self.problems.append(f"{what}: {data.get('error') or data.get('reason') or 'failed'}")
            if name in CONTAINMENT and name not in self.left:
                self.left.append(name)

    def step_result(self, key: str) -> str:
        """`ok` when every action and check of the step is ok (or skipped, with its reason
        journaled: e.g. read-only of a server blue shares); `failed` otherwise."""
        outcomes = self.outcomes.get(key, [])
        return "ok" if all(r in ("ok", "skipped") for _, r in outcomes) else "failed"

    def step(self, key: str, started: datetime, result: str | None = None, **data: Any) -> None:
        st = next(s for s in AUTOMATED_STEPS if s.key == key)
        finished = datetime.now(UTC)
        result = result or self.step_result(key)
        failed = [n for n, r in self.outcomes.get(key, []) if r not in ("ok", "skipped")]
        if failed:
            data["not_ok"] = failed
        self.steps[key] = {
            "result": result,
            "duration_s": (finished - started).total_seconds(),
            "finished_s": (finished - self.incident.opened_at).total_seconds(),
            "budget_s": st.budget_s,
            **({"not_ok": failed} if failed else {}),
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

    def settle_notifications(self, deadline: float | None = None) -> None:
        """Journal the submitted deliveries. With `deadline` (time.monotonic()), stop waiting
        then: deliveries still under way stay pending for a later call (a slow channel never
        holds a step past its budget)."""
        pending: list[tuple[str, str, PrefectFuture[Any]]] = []
        for template, channel, fut in self.notifications:
            if deadline is not None:
                fut.wait(max(0.0, deadline - time.monotonic()))
                if not fut.state.is_final():
                    pending.append((template, channel, fut))
                    continue
            started = datetime.now(UTC)
            res, err = _future(fut)
            ok = err is None
            self._sent[template] = self._sent.get(template, True) and ok
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
        waiting = {t for t, _, _ in pending}
        for template, ok in list(self._sent.items()):
            if template in waiting:
                continue
            if ok:
                self.entry(
                    "action",
                    f"{template} notifications sent",
                    system="notify",
                    result="ok",
                    data={"action": f"notify:{template}"},
                )
            del self._sent[template]
        self.notifications = pending


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


def _confirm_breach(run: _Run, rules: RuleSet, window_s: float) -> dict[str, Any]:
    """Confirm the breach from a system other than the Prometheus that fired it.

    Throughput and errors: the application's own counters over `window_s` (and, for errors,
    the load balancer's per-backend counters when the backend carried enough requests);
    resources: the host's gauges as the app reports them; authentication failures: the app's
    login counter (failed / attempts, the rule's threshold and attempt floor); database failures:
    the databases themselves; outage (or no rule): the app's own health and the load balancer's
    view of it.
    Prometheus is asked again too, for the record only. `confirmed_by` names the system.
    """
    inc = run.incident
    rule = inc.rule or ""
    evidence: dict[str, Any] = {"rule": rule}
    confirmed: bool | None = None
    by: str | None = None
    signal = None
    threshold: Any = None
    min_attempts_per_s = 0.0
    if rule == "performance_degradation" and rules.performance:
        threshold = rules.performance.breaches
        signal = "throughput"
    elif rule == "error_rate_spike" and rules.error_rate:
        threshold = rules.error_rate.breaches
        signal = "error_rate"
    elif rule == "resource_exhaustion":
        signal = (inc.evaluation or {}).get("signal") or "cpu"
        r = next((x for x in rules.resources if x.signal == signal), None)
        threshold = r.breaches if r else None
    elif rule == "authentication_failures" and rules.auth:
        threshold = rules.auth.breaches
        signal = "login_failure_rate"
        min_attempts_per_s = rules.auth.min_attempts / rules.auth.period_s
    outage = rule == "outage"
    health_by: float | None = None
    if outage:
        # An outage is confirmed by health (the app's own and the load balancer's), not by
        # rates: one reading of each, no counter window, and an app that has not answered its
        # health check within OUTAGE_HEALTH_WAIT_S counts as not answering (a hung app).
        window_s = 0.0
        health_by = time.monotonic() + OUTAGE_HEALTH_WAIT_S
    f_app = None if outage else app_counters_window.submit(run.cfg, inc.env, window_s)
    f_lb = backend_window.submit(run.cfg, inc.env, window_s)
    f_health = app_second_opinion.submit(run.cfg, inc.env)
    if signal is not None:  # for the record: what Prometheus says now (not the confirmation)
        window = (
            rules.performance.period_s
            if signal == "throughput" and rules.performance
            else rules.error_rate.period_s
            if signal == "error_rate" and rules.error_rate
            else rules.auth.period_s
            if signal == "login_failure_rate" and rules.auth
            else 60.0
        )
        v, err = _value(metric, run.cfg, signal, inc.env, window)
        evidence[f"prometheus_{signal}"] = v if err is None else f"unknown ({err})"
    app_c, app_err = (
        _future(f_app) if f_app is not None else (None, "not read: health decides an outage")
    )
    lb, lb_err = _future(f_lb)
    app, app_herr = _future(f_health, health_by)
    evidence["app_counters"] = app_c or {"error": app_err}
    evidence["load_balancer"] = lb or {"error": lb_err}
    if threshold is not None:
        confirmed, by = confirm(rule, signal, app_c, lb, threshold, min_attempts_per_s)
    if rule == "database_failures" or not rule or rule == "outage":
        h, _ = _value(environment_health, run.cfg, inc.env)
        checks = (h or {}).get("checks", {})
        evidence["databases"] = {k: checks.get(k, {}).get("ok") for k in ("heavydb", "mysql")}
        if rule == "database_failures" and h is not None:
            confirmed = not all(evidence["databases"].values())
            by = f"{inc.env}'s databases (probed directly)"
    evidence["app"] = (
        {k: v for k, v in (app or {}).items() if k != "health"}
        if app is not None
        else {"reachable": False, "error": app_herr}
    )
    app_bad = app is None or app.get("status") not in ("ok", "healthy", None)
    lb_down = lb is not None and lb.get("up") is False
    if app_bad or lb_down:
        # the environment itself (or the load balancer's health checks) says it is not fine
        confirmed = True
        by = by or (f"{inc.env}'s application (health)" if app_bad else "load balancer health")
        evidence["app_unhealthy"] = app_bad
        evidence["lb_down"] = lb_down
    evidence["confirmed"] = bool(confirmed)
    evidence["confirmed_by"] = by if confirmed else None
    evidence["second_source"] = by or "none could tell"
    return evidence


@flow(
    name="emergency_rollback",
    flow_run_name=incident_run_name("rollback"),
    timeout_seconds=ROLLBACK_TIMEOUT_S,
    log_prints=False,
    persist_result=False,
)
def emergency_rollback(params: RollbackParams | None = None) -> RollbackResult | State:
    """The automated response sequence; see the module docstring for what it guarantees.

    Ends Completed with the RollbackResult, or Failed named `Escalated` / `Degraded` carrying it
    (`run_rollback` returns it either way)."""
    p = params or RollbackParams()
    logger = get_run_logger()
    if p.incident_id:
        name_run(None, run_tags(p.severity.value, SOURCE, p.incident_id, "rollback"))

    if p.dry_run:  # reads only: no slot, no journal
        return _dry_run(p)

    # P1 authority; stale, unknown-incident and duplicate runs (flows/rollback_gate.py): decided
    # before any action and outside the rollback slot (a P1 veto window never holds it).
    from flows.rollback_gate import rollback_gate

    if (gated := rollback_gate(p)) is not None:
        return gated

    # -- the acting part: one rollback at a time, whoever started it -----------------------
    try:
        with rollback_slot(
            ROLLBACK_LIMIT,
            LEASE_S,
            SLOT_WAIT_S,
            on_wait=lambda: logger.info("taking the rollback slot (%s)", ROLLBACK_LIMIT),
        ) as slot:
            if slot.get("error"):
                logger.error("%s", slot["error"])
            result, run = _act(p, slot)
    except TimeoutError:
        reason = f"another rollback held the slot {ROLLBACK_LIMIT} for {SLOT_WAIT_S:g} s"
        logger.error("rollback not started: %s", reason)
        result = RollbackResult(
            incident_id=p.incident_id or "?",
            rolled_back=False,
            traffic="unknown",
            status="escalated",
            problems=[reason],
        )
        return final_state(result)

    # -- after acting (slot released): the full recovery validation as its own run ---------
    if run is not None and result.status == "resolved" and p.validate_recovery:
        result.validation = _start_validation(run, p)
        if result.validation.get("passed") is False:  # in-process fallback: known already
            result.status = "escalated"
            result.problems.append(f"recovery validation failed: {result.validation['headline']}")
    return final_state(result)


def _dry_run(p: RollbackParams) -> RollbackResult:
    cfg = p.config_path or None
    logger = get_run_logger()
    inc: Incident | None = None
    if p.incident_id:
        try:
            inc = Incident.from_entries(journal_for(cfg).entries(p.incident_id))
        except Exception as exc:
            logger.error("cannot read the journal of %s: %s", p.incident_id, exc)
    traffic, terr = _value(active_traffic, cfg)
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


def _act(p: RollbackParams, slot: dict[str, Any]) -> tuple[RollbackResult, _Run | None]:
    """Steps 1-4, holding the slot."""
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
    if terr:
        logger.warning("active traffic unknown: %s", terr)
    if inc is None:
        inc, _new = open_incident(cfg, _incident_for(p))
        entries = [inc.opened_entry()]
    name_run(f"rollback-{inc.id}", run_tags(inc.severity.value, inc.env, inc.id, "rollback"))
    if not inc.is_open:
        logger.info("incident %s is already %s: nothing to do", inc.id, inc.status)
        return (
            RollbackResult(
                incident_id=inc.id,
                rolled_back=inc.status == "resolved",
                traffic=traffic or "unknown",
                status=f"already {inc.status}",
            ),
            None,
        )
    run = _Run(p, inc, entries)
    t1 = run.begin("1-detection")
    run.entry(
        "decision",
        f"rollback started by {p.decided_by}" + (f" (event {p.event_id})" if p.event_id else ""),
        step="1-detection",
        result="started",
        data={
            "flow": "emergency_rollback",
            "force": p.force,
            "slot": {k: v for k, v in slot.items() if v not in (None, "")},
            "already_done": sorted(run.done),
        },
    )
    if slot.get("error"):
        run.problems.append(slot["error"])

    # Another incident's rollback already took traffic to blue: join it instead of acting twice.
    joined = _join_running_rollback(run, traffic)
    if joined:
        return (
            RollbackResult(
                incident_id=inc.id,
                rolled_back=True,
                traffic=traffic or "unknown",
                status="merged",
                joined=joined,
            ),
            None,
        )

    run.notify("immediate")
    health = {env: environment_health.submit(cfg, env) for env in (TARGET, SOURCE)}
    pre: dict[str, dict[str, Any]] = {}
    for env, f in health.items():
        res, err = _future(f)
        pre[env] = res or {"env": env, "healthy": False, "error": err}
        if err is not None:
            run.check(f"pre-rollback health of {env}", env, "failed", error=err)
        elif env == TARGET:
            healthy = bool(res.get("healthy")) or (traffic == TARGET)
            run.check(
                "pre-rollback health of blue",
                env,
                "ok" if healthy else "failed",
                health=res,
                reason=None if healthy else "blue is not healthy",
            )
        else:  # green's health is measured: it is the evidence, not a condition
            run.check(f"pre-rollback health of {env}", env, "ok", health=res)
    if "notify:immediate" not in run.done:  # could not even be planned (problem recorded)
        run._outcome("immediate page", "failed")
    run.step("1-detection", t1, pre_rollback_health=pre, traffic=traffic)

    # ---------------------------------------------------------------- Step 2: validation
    t2 = run.begin("2-validation")
    if inc.env == TARGET:
        reason = "the failing environment is blue itself: there is no rollback target"
        return _escalate(run, t2, "2-validation", reason, traffic), run
    evidence = (
        _confirm_breach(run, rules, p.second_source_window_s)
        if inc.rule
        else {"confirmed": True, "manual": True, "confirmed_by": f"person: {p.decided_by}"}
    )
    sessions, serr = _value(count_sessions, cfg, SOURCE)
    err_rate, eerr = _value(
        metric, cfg, "error_rate", SOURCE, rules.error_rate.period_s if rules.error_rate else 60.0
    )
    impact = {
        "active_sessions": sessions if serr is None else f"unknown ({serr})",
        "error_rate_percent": err_rate if eerr is None else f"unknown ({eerr})",
    }
    blue = pre[TARGET]
    feasible = bool(blue.get("healthy"))
    if traffic == TARGET and "redirect" not in run.done:
        feasible = True  # already on blue (a previous run or a person): finish the job
    confirmed = bool(evidence.get("confirmed"))
    run.entry(
        "check",
        (
            f"breach confirmed by a second source: {evidence.get('confirmed_by')}"
            if confirmed
            else "breach NOT confirmed by a second source"
        ),
        step="2-validation",
        system=str(evidence.get("confirmed_by") or evidence.get("second_source") or "none"),
        result="ok" if confirmed else "failed",
        data={"evidence": evidence, "impact": impact},
    )
    run._outcome(
        "second source", "ok" if confirmed or p.force or "redirect" in run.done else "failed"
    )
    if not confirmed and not p.force and "redirect" not in run.done:
        reason = "the breach was not confirmed by a second source; a person must decide"
        return _escalate(run, t2, "2-validation", reason, traffic, severity=Severity.P1), run
    if not feasible:
        bad = {k: v for k, v in (blue.get("checks") or {}).items() if not v.get("ok")}
        reason = f"blue is not healthy ({', '.join(bad) or blue.get('error') or 'unknown'})"
        return _escalate(run, t2, "2-validation", reason, traffic), run
    run.step("2-validation", t2, evidence=evidence, impact=impact, feasible=True)

    # ---------------------------------------------------------------- Step 3: execution
    t3 = run.begin("3-execution")
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
            return _escalate(
                run, t3, "3-execution", f"traffic redirect failed: {err}", traffic
            ), run
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
        return _escalate(run, t3, "3-execution", f"traffic is not on blue: {verr}", traffic), run
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
            result = _read_only_result(kind, res, run.done)
            run.action(
                name, f"make green's {kind} read-only", f"{kind}[{SOURCE}]", result, s, **res
            )
    # Green takes no writes now (traffic on blue, its databases read-only): its ledger, read
    # after that, holds every write it acknowledged, those between redirect and read-only too.
    if "carry-writes" not in run.done:
        s = datetime.now(UTC)
        res, err = _value(carry_writes, cfg, SOURCE, TARGET)
        res = res or {"error": err}
        result = "skipped" if res.get("skipped") else ("ok" if res.get("ok") else "failed")
        run.action(
            "carry-writes",
            "carry green's acknowledged writes to blue and verify",
            "mysql+heavydb",
            result,
            s,
            **res,
        )
    if "sessions" not in run.done:
        s = datetime.now(UTC)
        res, err = _value(preserve_sessions, cfg, SOURCE, TARGET)
        res = res or {"error": err}
        result = "skipped" if res.get("skipped") else ("ok" if res.get("ok") else "failed")
        run.action("sessions", "preserve sessions green -> blue", "redis", result, s, **res)
    # Watch the rollback take effect: blue must keep answering while it takes the load.
    progress, perr = _value(environment_health, cfg, TARGET)
    run.check(
        "blue health while taking traffic",
        "blue",
        "ok" if (progress or {}).get("healthy") else "failed",
        health=progress,
        error=perr,
    )
    run.step("3-execution", t3, traffic=traffic, left=list(run.left))

    # ---------------------------------------------------------------- Step 4: confirmation
    # Fast checks only (the step's budget is 60 s at real time); the full recovery validation
    # runs after, as its own flow run (`_start_validation`).
    t4 = run.begin("4-confirmation")
    t4_mono = time.monotonic()
    checks: dict[str, Any] = {}
    f_health = environment_health.submit(cfg, TARGET)
    f_access = verify_user_access.submit(cfg, TARGET, p.sample_users)
    f_lb = backend_window.submit(cfg, TARGET, p.confirm_window_s)
    # Step 4's budget is 60 s at real time: checks not answered by then are "not verified".
    checks_by = time.monotonic() + STEP4_CHECKS_S
    h, herr = _future(f_health, checks_by)
    a, aerr = _future(f_access, checks_by)
    lb, lberr = _future(f_lb, checks_by)
    checks["blue_health"] = h or {"error": herr}
    checks["user_access"] = a or {"error": aerr}
    checks["load_balancer"] = lb or {"error": lberr}
    threshold = rules.error_rate.threshold if rules.error_rate else None
    lbc = blue_checks(lb, threshold)
    if lberr:
        lbc = {k: (None, f"load balancer metrics unreadable: {lberr}") for k in lbc}
    run.check(
        "confirm blue health",
        "blue",
        "ok" if (h or {}).get("healthy") else "failed",
        health=h,
        error=herr,
    )
    access_ok = bool((a or {}).get("ok"))
    run.check(
        "confirm user access through the load balancer",
        "load balancer",
        "ok" if access_ok else "failed",
        checked=(a or {}).get("checked"),
        reason=(a or {}).get("reason") or aerr,
        anonymous=(a or {}).get("anonymous"),
    )
    for key, what in (("throughput", "throughput on blue"), ("errors", "error rate on blue")):
        verdict, why = lbc[key]
        # not verified (no request in the window, metrics unreadable) is a failure, never a pass
        run.check(
            f"confirm {what} (load balancer, {p.confirm_window_s:g} s)",
            "load balancer",
            "ok" if verdict else "failed",
            reason=why,
            verified=verdict is not None,
        )
    confirmed = run.step_result("4-confirmation") == "ok"
    degraded = bool(run.left)
    if confirmed and not degraded:
        run.notify("stakeholder")
        run.notify("post_resolution")
    run.settle_notifications(deadline=t4_mono + STEP4_SETTLE_S)
    run.step("4-confirmation", t4, checks=checks)
    run.settle_notifications()  # what a slow channel still had under way
    status = "resolved"
    if not confirmed:
        status = "escalated"
        run.entry("escalated", "recovery not confirmed: a person must check blue", result="failed")
        run.notify("escalation", reason="recovery on blue could not be confirmed")
        run.settle_notifications()
    if degraded:
        left = ", ".join(run.left)
        status = "degraded"
        reason = f"traffic is on blue but containment is not complete: {left} not done"
        run.entry(
            "escalated",
            f"escalated to a person: {reason}",
            result="failed",
            data={"reason": reason, "left": run.left},
        )
        run.entry(
            DEGRADED,
            f"incident degraded: {left} left to do",
            result="failed",
            data={"left": run.left},
        )
        run.notify("escalation", reason=reason)
        run.settle_notifications()
    if status == "resolved":
        run.entry(RESOLVED, "incident resolved: traffic on blue, recovery confirmed", result="ok")
        for ch in _pagerduty_channels(cfg):
            _value(pagerduty_event, cfg, ch, "resolve", inc.id)
    sync_index(cfg, inc.id)
    report, _ = _value(store_report, cfg, inc.id)
    return (
        RollbackResult(
            incident_id=inc.id,
            rolled_back=True,
            traffic=traffic,
            status=status,
            problems=run.problems,
            steps=run.steps,
            report_key=(report or {}).get("key"),
            left=list(run.left),
        ),
        run,
    )


def _read_only_result(kind: str, res: dict[str, Any], done: set[str]) -> str:
    """Journal result of one read-only action: a server blue shares is skipped on purpose (ok
    to leave); HeavyDB without configured application users is not done, unless green's MySQL
    is read-only (the application writes MySQL first, so green takes no write either way)."""
    if res.get("ok") and res.get("skipped"):
        return "skipped"
    if res.get("ok"):
        return "ok"
    if kind == "heavydb" and res.get("skipped") and "read-only:mysql" in done:
        res["reason"] = (
            f"{res.get('reason')}; green takes no write: its MySQL is read-only and the"
            " application writes MySQL before HeavyDB"
        )
        return "skipped"
    return "failed"


def _start_validation(run: _Run, p: RollbackParams) -> dict[str, Any]:
    """Start the full recovery validation of blue as its own flow run, linked to the incident
    (`flows.runinfo.start_validation`, after the slot is released), and journal that it did."""
    scale = p.validation_time_scale or min(1.0, settings_for(run.cfg).triggers.time_scale)
    info = start_validation(run.cfg, run.incident.id, TARGET, scale, "emergency_rollback")
    name = info["name"]
    run.entry(
        "action",
        f"recovery validation started as its own run ({info['mode']}): {name}",
        system="prefect",
        result="ok",
        data={"validation": info},
    )
    return info


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
        left=list(run.left),
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
