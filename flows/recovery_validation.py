"""Recovery validation (runbook: "Recovery Validation Procedures"), at the end of every
recovery flow and on demand.

What it measures, against the environment's own endpoints and databases:

1. functional checks declared in `[validation]` (authentication methods, trading workflows per
   strategy, database connectivity with permission checks, file upload per format);
2. API response time over `validation.api.samples` requests (p50, p95, p99);
3. UI load time over `validation.ui.samples` page loads;
4. database performance: a real insert + read-back workload for `validation.performance.duration`
   per engine, in rows/s against the configured baseline (37,303 by default), and the platform
   throughput Prometheus reports (what the rollback triggers compare);
5. concurrent users (`validation.concurrency`: 20 users for 300 s by default).

They run one after another, so one measurement's load does not distort the next. Durations are
multiplied by `time_scale` (drills pass `drills.time_scale`); sample counts shrink with it down
to a floor (10 API requests, 3 page loads).

Guarantees: it changes no application data (the scratch table is `tbs_validation_*` and is
dropped; functional SQL steps are limited to reads and scratch tables at configuration time);
every check ends pass, fail, error (could not measure: counts as failed) or skipped (not
configured: listed, never a pass). Result: a pass/fail table artifact, a markdown summary, and a
`Verdict`. The run ends *Failed* when the verdict fails, with the verdict as its data, so the UI,
the CLI and automations see it; a calling flow uses `validate_recovery`, which returns the
verdict either way, and acts on `verdict.passed` (`require_passed` raises).

With `incident_id`, the verdict is journaled (`validation` entry) and, when it fails and
`escalate` is set, the incident is escalated: an `escalated` entry and the escalation template
to the on-call chain, each delivery journaled. A `tbs.validation.passed|failed` event is emitted
either way.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, Failed, State
from pydantic import BaseModel, Field

from tasks.common import settings_for
from tasks.incident import journal
from tasks.notify import deliver, plan_messages
from tasks.validation import (
    api_latency,
    concurrent_users,
    db_performance,
    functional_check,
    platform_throughput,
    strategies,
    ui_load,
)
from tbs_emergency.domain.incident import Entry, MaybeIncidentId
from tbs_emergency.domain.templates import MessageContext
from tbs_emergency.errors import TbsError
from tbs_emergency.validation.declarations import SampleAccount, expand
from tbs_emergency.validation.verdict import CheckResult, Verdict, errored, skipped

Part = Literal["functional", "api", "ui", "performance", "concurrency"]
PARTS: tuple[Part, ...] = ("functional", "api", "ui", "performance", "concurrency")


class ValidationParams(BaseModel):
    """What to validate and how long to measure. Unset numbers come from `[validation]`."""

    config_path: str | None = None
    env: str = Field("blue", description="The environment to validate (after a rollback: blue)")
    incident_id: MaybeIncidentId = Field(None, description="Journal the verdict into this incident")
    escalate: bool = Field(True, description="With incident_id: escalate when it fails")
    decided_by: str = "recovery_validation"
    time_scale: float = Field(1.0, gt=0, le=1, description="Multiplies every duration (drills)")
    only: list[Part] = Field(default_factory=list, description="Run only these parts")
    db_duration_s: float | None = Field(None, gt=0)
    api_samples: int | None = Field(None, ge=1)
    ui_samples: int | None = Field(None, ge=1)
    concurrent_users: int | None = Field(None, ge=1)
    concurrent_duration_s: float | None = Field(None, gt=0)


class RecoveryNotValidated(TbsError):
    """Raised by `require_passed`: the recovery is not validated; the verdict says why."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        lines = [f"{c.name}: {c.detail}" for c in verdict.failures]
        super().__init__(verdict.headline() + ("\n" + "\n".join(lines) if lines else ""))


def plan(params: ValidationParams, settings: Any) -> dict[str, Any]:
    """The effective durations and sample counts (what the artifact reports as measured)."""
    v, s = settings.validation, params.time_scale
    return {
        "db_duration_s": params.db_duration_s or max(1.0, v.performance.duration * s),
        "api_samples": params.api_samples or max(min(10, v.api.samples), round(v.api.samples * s)),
        "ui_samples": params.ui_samples or max(min(3, v.ui.samples), round(v.ui.samples * s)),
        "concurrent_users": params.concurrent_users or v.concurrency.users,
        "concurrent_duration_s": params.concurrent_duration_s
        or max(2.0, v.concurrency.duration * s),
        # the rate over at least 30 s: a shorter window reads a stalled scrape or a busy moment
        # of the application as a throughput drop
        "platform_window_s": max(30.0, min(60.0, v.performance.duration * s)),
    }


def _functional(params: ValidationParams, settings: Any) -> list[CheckResult]:
    cfg, env = params.config_path, params.env
    v = settings.validation
    if not v.functional:
        return [skipped("functional checks", "functional", "none declared (validation.functional)")]
    strats, why = strategies(cfg, env)
    users = [SampleAccount(username=u.username, role=u.role) for u in v.users]
    out: list[CheckResult] = []
    futures = []
    for decl in v.functional:
        if decl.for_each == "strategy" and why:
            name = decl.name.replace("{strategy}", "*")
            out.append(errored(name, decl.category, why, decl.required))
            continue
        for c in expand(decl, users, strats, v.uploads):
            futures.append((c, functional_check.submit(cfg, env, c)))
    for c, f in futures:
        try:
            out.append(f.result())
        except Exception as exc:  # the task timed out or crashed: a result, not an abort
            out.append(errored(c.name, c.category, f"{type(exc).__name__}: {exc}", c.required))
    return out


def _result(fn: Any, *args: Any, name: str, category: str) -> CheckResult:
    try:
        result: CheckResult = fn(*args)
        return result
    except Exception as exc:
        return errored(name, category, f"{type(exc).__name__}: {exc}")


def _escalate(params: ValidationParams, verdict: Verdict) -> list[str]:
    """Journal the escalation and page the chain; returns what could not be delivered."""
    cfg, inc = params.config_path, params.incident_id
    assert inc is not None
    reason = (
        "recovery validation failed: "
        + "; ".join(f"{c.name} ({c.status})" for c in verdict.failures)[:400]
    )
    _reopen_if_resolved(params, reason)
    journal(
        cfg,
        Entry(
            incident_id=inc,
            kind="escalated",
            what=f"escalated to a person: {reason}",
            step="recovery-validation",
            system=params.env,
            decided_by=params.decided_by,
            result="failed",
            data={"reason": reason},
        ),
    )
    ctx = MessageContext(incident_id=inc, severity="P1", env=params.env, reason=reason)
    problems = []
    for channel, message in plan_messages(cfg, "escalation", ctx):
        at = datetime.now(UTC)
        state = deliver(cfg, channel, message, return_state=True)
        ok = state.is_completed()
        detail = (state.result() or {}).get("detail", "") if ok else (state.message or "failed")
        if not ok:
            problems.append(f"escalation via {channel} failed: {detail}")
        journal(
            cfg,
            Entry(
                incident_id=inc,
                kind="notification",
                what=f"escalation via {channel}",
                system=f"notify[{channel}]",
                decided_by=params.decided_by,
                result="ok" if ok else "failed",
                started_at=at,
                finished_at=datetime.now(UTC),
                data={"template": "escalation", "detail": str(detail)[:300]},
            ),
        )
    return problems


def _reopen_if_resolved(params: ValidationParams, reason: str) -> None:
    """The rollback resolved the incident on its fast checks and started this validation as its
    own run: a failing verdict reopens the incident (a `reopened` entry) before escalating."""
    from tasks.incident import journal_for, sync_index

    assert params.incident_id is not None
    try:
        inc = journal_for(params.config_path).incident(params.incident_id)
    except Exception as exc:  # the escalation below still happens
        get_run_logger().error("cannot read incident %s: %s", params.incident_id, exc)
        return
    if inc is None or inc.status != "resolved":
        return
    journal(
        params.config_path,
        Entry(
            incident_id=params.incident_id,
            kind="reopened",
            what=f"incident reopened: {reason}",
            step="recovery-validation",
            system=params.env,
            decided_by=params.decided_by,
            result="failed",
            data={"reason": reason},
        ),
    )
    with contextlib.suppress(Exception):
        sync_index(params.config_path, params.incident_id)


def _emit(params: ValidationParams, verdict: Verdict) -> None:
    from prefect.events import emit_event

    resource = {"prefect.resource.id": f"tbs.env.{params.env}", "tbs.env": params.env}
    if params.incident_id:
        resource["tbs.incident.id"] = params.incident_id
    # An event is a convenience; the verdict is in the artifact and the journal.
    with contextlib.suppress(Exception):
        emit_event(
            f"tbs.validation.{'passed' if verdict.passed else 'failed'}",
            resource=resource,
            payload={
                "headline": verdict.headline(),
                "failures": [c.name for c in verdict.failures],
            },
        )


@flow(name="recovery_validation", log_prints=False, persist_result=False)
def recovery_validation(params: ValidationParams | None = None) -> State:
    """Validate an environment after a recovery; the run fails when the verdict fails."""
    params = params or ValidationParams()
    log = get_run_logger()
    settings = settings_for(params.config_path)
    settings.environment(params.env)  # ConfigError for an unknown environment, before anything
    v = settings.validation
    p = plan(params, settings)
    parts = set(params.only or PARTS)
    started = datetime.now(UTC)
    checks: list[CheckResult] = []
    cfg, env = params.config_path, params.env

    if "functional" in parts:
        checks += _functional(params, settings)
    if "api" in parts:
        checks.append(
            _result(
                api_latency, cfg, env, p["api_samples"], name="API response time", category="api"
            )
            if v.api.enabled
            else skipped("API response time", "api", "disabled (validation.api.enabled)")
        )
    if "ui" in parts:
        checks.append(
            _result(ui_load, cfg, env, p["ui_samples"], name="UI load time", category="ui")
            if v.ui.enabled
            else skipped("UI load time", "ui", "disabled (validation.ui.enabled)")
        )
    if "performance" in parts:
        if not v.performance.enabled:
            checks.append(skipped("database performance", "performance", "disabled"))
        for engine in v.performance.engines if v.performance.enabled else []:
            name = f"database performance ({engine})"
            measure = db_performance.with_options(timeout_seconds=p["db_duration_s"] + 300)
            checks.append(
                _result(
                    measure, cfg, env, engine, p["db_duration_s"], name=name, category="performance"
                )
            )
        if v.performance.enabled and v.performance.platform_throughput:
            checks.append(
                _result(
                    platform_throughput,
                    cfg,
                    env,
                    p["platform_window_s"],
                    name="platform throughput (Prometheus)",
                    category="performance",
                )
            )
    if "concurrency" in parts:
        if v.concurrency.enabled:
            simulate = concurrent_users.with_options(
                timeout_seconds=p["concurrent_duration_s"] + v.concurrency.timeout_s * 3 + 120
            )
            checks.append(
                _result(
                    simulate,
                    cfg,
                    env,
                    p["concurrent_users"],
                    p["concurrent_duration_s"],
                    name="concurrent users",
                    category="concurrency",
                )
            )
        else:
            checks.append(skipped("concurrent users", "concurrency", "disabled"))

    notes = [
        "database performance is measured here with a real workload on a scratch table;"
        " the platform throughput row is Prometheus' rate of tbs_rows_ingested_total (the rollback"
        " triggers' signal), not a measurement of this run",
        f"measured with: {', '.join(f'{k}={v:g}' for k, v in p.items())}",
    ]
    verdict = Verdict.of(
        env,
        checks,
        started,
        datetime.now(UTC),
        time_scale=params.time_scale,
        incident_id=params.incident_id,
        notes=notes,
    )
    key = f"recovery-validation-{env}".lower()
    create_table_artifact(key=key, table=verdict.table(), description=verdict.headline())
    create_markdown_artifact(
        key=f"{key}-summary", markdown=verdict.markdown(), description=verdict.headline()
    )
    (log.info if verdict.passed else log.error)("%s", verdict.headline())
    for c in verdict.failures:
        log.error("%s: %s", c.name, c.detail)

    if params.incident_id:
        journal(
            cfg,
            Entry(
                incident_id=params.incident_id,
                kind="validation",
                what=verdict.headline(),
                step="recovery-validation",
                system=env,
                decided_by=params.decided_by,
                result="ok" if verdict.passed else "failed",
                started_at=verdict.started_at,
                finished_at=verdict.finished_at,
                data={"verdict": verdict.model_dump(mode="json", exclude={"notes"})},
            ),
        )
        if not verdict.passed and params.escalate:
            for problem in _escalate(params, verdict):
                log.error("%s", problem)
                verdict.notes.append(problem)
    _emit(params, verdict)
    if verdict.passed:
        return Completed(message=verdict.headline(), data=verdict)
    return Failed(message=verdict.headline(), data=verdict)


def verdict_of(state: State) -> Verdict | None:
    """The verdict a `recovery_validation` run left in its final state (None if it crashed
    before deciding, e.g. an unknown environment)."""
    try:
        data = state.result(raise_on_failure=False)
    except Exception:
        return None
    if isinstance(data, Verdict):
        return data
    if isinstance(data, State):
        return verdict_of(data)
    return None


def validate_recovery(params: ValidationParams) -> Verdict:
    """For recovery flows: run `recovery_validation` as a subflow and return its verdict, passed
    or not (a crash becomes a failed verdict that says why)."""
    state = recovery_validation(params, return_state=True)
    verdict = verdict_of(state)
    if verdict is not None:
        return verdict
    now = datetime.now(UTC)
    why = state.message or state.name
    return Verdict.of(
        params.env,
        [errored("recovery validation", "validation", f"the validation run did not finish: {why}")],
        now,
        now,
        time_scale=params.time_scale,
        incident_id=params.incident_id,
    )


def require_passed(verdict: Verdict) -> Verdict:
    """Raise `RecoveryNotValidated` unless the verdict passed (the calling flow then fails)."""
    if not verdict.passed:
        raise RecoveryNotValidated(verdict)
    return verdict


def validation_summary(
    config_path: str | None,
    env: str,
    decided_by: str,
    *,
    incident_id: str | None = None,
    escalate: bool = True,
    time_scale: float | None = None,
) -> dict[str, Any]:
    """For recovery flows that changed a live environment: run the validation as a subflow and
    return what their reports carry (`passed`, `headline`, `failures`). `time_scale` defaults to
    `triggers.time_scale` (1 in production; the sandbox runs its recoveries in seconds)."""
    scale = time_scale or min(1.0, settings_for(config_path).triggers.time_scale)
    verdict = validate_recovery(
        ValidationParams(
            config_path=config_path,
            env=env,
            incident_id=incident_id,
            escalate=escalate and incident_id is not None,
            decided_by=decided_by,
            time_scale=scale,
        )
    )
    return {
        "env": env,
        "passed": verdict.passed,
        "headline": verdict.headline(),
        "failures": [f"{c.name}: {c.detail}" for c in verdict.failures],
    }
