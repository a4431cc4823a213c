"""Reversible steps and the engine that applies and lifts them.

A step reads the state it is about to change (`read`), says whether that state is what it wants
already (`done`), changes it (`apply`) and puts a recorded state back (`restore`). The engine:

- *records first*: the previous state is saved (object store, then journal) before the change;
  if it cannot be saved, nothing is changed;
- *idempotent*: a step the active record shows as applied is not applied again (a rerun changes
  nothing); a step whose target state holds already is recorded with that state as previous
  (its lift then changes nothing either);
- *nothing half-done*: when a step fails, the steps this run applied (and the failed one) are
  restored in reverse order and the record says so;
- *lift in reverse order*: every applied step, last first, back to its recorded state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, Field

from tbs_emergency.dbops.actions import Action
from tbs_emergency.errors import TbsError
from tbs_emergency.security.records import (
    RecordKind,
    SecurityRecord,
    SecurityStore,
    StepRecord,
    StepSpec,
    utcnow,
)

_log = logging.getLogger("tbs_emergency.security")


class Step(Protocol):
    spec: StepSpec
    system: str
    what: str

    def read(self) -> dict[str, Any]: ...

    def done(self, current: dict[str, Any]) -> bool: ...

    def apply(self, current: dict[str, Any]) -> str: ...

    def restore(self, previous: dict[str, Any]) -> str: ...


StepFactory = Callable[[StepSpec], Step]


class StepsResult(BaseModel):
    """What one apply or lift did."""

    kind: str
    key: str
    dry_run: bool = False
    actions: list[Action] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    rolled_back: bool = False
    status: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        return [a.line() for a in self.actions]


def _why(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, TbsError) else f"{type(exc).__name__}: {exc}"


class _Actions:
    def __init__(self, log: Any | None) -> None:
        self.log = log or _log
        self.items: list[Action] = []

    def add(self, system: str, what: str, outcome: Any, detail: str = "") -> None:
        a = Action(system=system, what=what, outcome=outcome, detail=detail)
        self.items.append(a)
        self.log.log(logging.WARNING if outcome == "failed" else logging.INFO, "%s", a.line())


def apply_steps(
    store: SecurityStore,
    kind: RecordKind,
    key: str,
    steps: Sequence[Step],
    *,
    dry_run: bool = False,
    incident_id: str | None = None,
    log: Any | None = None,
) -> StepsResult:
    """Apply the steps in order (see the module docstring for the guarantees)."""
    result = StepsResult(kind=kind, key=key, dry_run=dry_run)
    acts = _Actions(log)
    try:
        record = store.load(kind, key)
    except TbsError as exc:
        result.problems.append(f"cannot read the {kind} record: {_why(exc)}: nothing was changed")
        return result
    if record is None or not record.active:
        record = SecurityRecord(kind=kind, key=key, incident_id=incident_id)
    record.incident_id = record.incident_id or incident_id
    applied_now: list[tuple[Step, StepRecord]] = []
    failed: tuple[Step, StepRecord] | None = None
    for step in steps:
        name = step.spec.name
        known = record.step(name)
        if known is not None and known.status == "applied":
            acts.add(
                step.system, step.what, "unchanged", f"applied already at {known.at:%H:%M:%S}Z"
            )
            continue
        try:
            current = step.read()
        except Exception as exc:
            acts.add(
                step.system, step.what, "failed", f"cannot read the current state: {_why(exc)}"
            )
            failed = (
                step,
                StepRecord(
                    name=name,
                    spec=step.spec,
                    system=step.system,
                    what=step.what,
                    status="failed",
                    detail=f"cannot read the current state: {_why(exc)}",
                ),
            )
            break
        already = step.done(current)
        if dry_run:
            acts.add(step.system, step.what, "planned", "already so" if already else "")
            continue
        rec = StepRecord(
            name=name, spec=step.spec, system=step.system, what=step.what, previous=current
        )
        record.upsert(rec)
        try:
            store.save(record, f"{kind}: before '{step.what}' on {step.system}")
        except Exception as exc:
            record.steps = [s for s in record.steps if s.name != name]
            acts.add(
                step.system,
                step.what,
                "failed",
                f"could not record the previous state ({_why(exc)}): not changed",
            )
            failed = None
            result.problems.append(f"{step.system}: could not record the previous state")
            break
        if already:
            rec.status, rec.detail = "applied", "already so"
            acts.add(step.system, step.what, "unchanged", "already so (recorded)")
            applied_now.append((step, rec))
            continue
        try:
            detail = step.apply(current)
        except Exception as exc:
            rec.status, rec.detail = "failed", _why(exc)
            acts.add(step.system, step.what, "failed", _why(exc))
            failed = (step, rec)
            break
        rec.status, rec.detail, rec.at = "applied", detail, utcnow()
        acts.add(step.system, step.what, "done", detail)
        applied_now.append((step, rec))
        _save_quietly(store, record, f"{kind}: '{step.what}' applied on {step.system}", result)
    if failed is not None:
        step, rec = failed
        result.problems.append(f"{step.system}: {step.what}: {rec.detail or 'failed'}")
    if result.problems and not dry_run:
        # Nothing half-done: what this run changed goes back, last first.
        undo = list(applied_now)
        if failed is not None and failed[1].previous:
            undo.append(failed)
        for step, rec in reversed(undo):
            try:
                detail = step.restore(rec.previous)
                rec.status, rec.detail = "rolled-back", detail
                acts.add(step.system, f"undo: {step.what}", "done", detail)
            except Exception as exc:
                rec.status = "applied"
                acts.add(step.system, f"undo: {step.what}", "failed", _why(exc))
                result.problems.append(f"{step.system}: could not undo '{step.what}': {_why(exc)}")
        result.rolled_back = True
        if all(s.status != "applied" for s in record.steps):
            record.status = "rolled-back"
        _save_quietly(store, record, f"{kind}: rolled back after a failure", result)
    result.actions = acts.items
    result.status = "planned" if dry_run else record.status
    return result


def lift_steps(
    store: SecurityStore,
    kind: RecordKind,
    key: str,
    factory: StepFactory,
    *,
    dry_run: bool = False,
    incident_id: str | None = None,
    log: Any | None = None,
) -> StepsResult:
    """Restore every applied step of the active record, last first."""
    result = StepsResult(kind=kind, key=key, dry_run=dry_run)
    acts = _Actions(log)
    record = store.load(kind, key)
    if record is None or not record.active:
        what = (
            f"no {kind} was recorded: nothing to lift"
            if record is None
            else f"the recorded {kind} is {record.status} already: nothing to lift"
        )
        acts.add(f"security:{kind}", what, "unchanged")
        result.actions, result.status = acts.items, record.status if record else "none"
        return result
    record.incident_id = incident_id or record.incident_id
    for rec in reversed(record.steps):
        if rec.status not in ("applied", "failed", "applying"):
            continue
        try:
            step = factory(rec.spec)
        except Exception as exc:
            acts.add(rec.system, f"lift: {rec.what}", "failed", _why(exc))
            result.problems.append(f"{rec.system}: cannot lift '{rec.what}': {_why(exc)}")
            continue
        if dry_run:
            acts.add(rec.system, f"lift: {rec.what}", "planned", f"back to {_short(rec.previous)}")
            continue
        try:
            detail = step.restore(rec.previous)
        except Exception as exc:
            acts.add(rec.system, f"lift: {rec.what}", "failed", _why(exc))
            result.problems.append(f"{rec.system}: cannot lift '{rec.what}': {_why(exc)}")
            continue
        rec.status, rec.detail, rec.at = "lifted", detail, utcnow()
        acts.add(rec.system, f"lift: {rec.what}", "done", detail)
        _save_quietly(store, record, f"{kind}: '{rec.what}' lifted on {rec.system}", result)
    if not dry_run and not result.problems:
        record.status, record.lifted_at = "lifted", utcnow()
        _save_quietly(store, record, f"{kind} lifted: every step restored", result)
    result.actions = acts.items
    result.status = "planned" if dry_run else record.status
    return result


def _short(state: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v}" for k, v in state.items())
    return text if len(text) <= 160 else text[:157] + "..."


def _save_quietly(store: SecurityStore, record: SecurityRecord, what: str, r: StepsResult) -> None:
    try:
        store.save(record, what)
    except Exception as exc:
        r.problems.append(f"could not save the {record.kind} record: {_why(exc)}")
