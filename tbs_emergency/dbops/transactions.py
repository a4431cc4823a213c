"""Transaction completion (runbook: `complete-transactions.sh --timeout=60s --force-if-needed`).

The transactions that matter are the ones open when the procedure starts: it waits for those to
finish (new ones that start meanwhile are not waited for, or a busy server would never be
"complete"). At the timeout it reports every one still open with its age, user and statement.
Only with `force` does it end them: the server closes the holding connection, which rolls the
transaction back (a transaction cannot be committed from outside). It then waits a little for
the rollbacks to finish and reports any that did not.

HeavyDB has no multi-statement transactions: every statement commits by itself, so there is
nothing to wait for there; the report says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from tbs_emergency.connectors.base import MySQLEmergencyAdmin, OpenTransaction
from tbs_emergency.dbops.actions import Action, ActionLog
from tbs_emergency.dbops.targets import ServerTarget
from tbs_emergency.errors import ConnectorError

# How long ended transactions get to roll back before they are reported as still open.
ROLLBACK_GRACE_S = 10.0


def format_age(seconds: float) -> str:
    """`45s`, `2m 05s`, `1h 02m`."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def describe(t: OpenTransaction) -> str:
    statement = (t.statement or "(idle in transaction: no statement running)").strip()
    if len(statement) > 200:
        statement = statement[:197] + "..."
    who = f"{t.user}@{t.host}" if t.host else t.user
    return (
        f"transaction {t.id} (session {t.session_id}) of {who}, open {format_age(t.age_s)},"
        f" {t.state}: {statement}"
    )


class TransactionReport(BaseModel):
    target: ServerTarget
    applicable: bool = True
    waited_s: float = 0.0
    timeout_s: float = 0.0
    at_start: list[OpenTransaction] = Field(default_factory=list)
    finished: list[str] = Field(default_factory=list)  # ids that finished by themselves
    still_open: list[OpenTransaction] = Field(default_factory=list)  # at the timeout
    forced: bool = False
    ended: list[str] = Field(default_factory=list)  # ids ended with force (rolled back)
    not_ended: list[OpenTransaction] = Field(default_factory=list)  # still there after force
    actions: list[Action] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Nothing the procedure was waiting for is still open."""
        if self.forced:
            return not self.not_ended
        return not self.still_open

    def lines(self) -> list[str]:
        if not self.applicable:
            return [f"{self.target.name}: {n}" for n in self.notes]
        out = [
            f"{self.target.name}: {len(self.at_start)} open at start, {len(self.finished)}"
            f" finished within {format_age(self.waited_s)}"
        ]
        out += [f"still open: {describe(t)}" for t in self.still_open]
        if self.forced:
            out.append(f"ended (rolled back): {len(self.ended)}")
            out += [f"NOT ended: {describe(t)}" for t in self.not_ended]
        elif self.still_open:
            out.append("not ended: run again with --force to end them (they roll back)")
        return out + self.notes


def wait_for_transactions(
    list_open: Callable[[], list[OpenTransaction]],
    timeout_s: float,
    poll_s: float = 1.0,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[OpenTransaction], list[OpenTransaction], float]:
    """(open at start, still open at the end, seconds waited): waits until every transaction
    open at the start has finished or `timeout_s` has passed, polling every `poll_s`."""
    start = clock()
    at_start = list_open()
    waiting = {t.id for t in at_start}
    still = at_start
    while waiting:
        elapsed = clock() - start
        if elapsed >= timeout_s:
            break
        sleep(min(poll_s, max(0.0, timeout_s - elapsed)))
        still = [t for t in list_open() if t.id in waiting]
        waiting = {t.id for t in still}
    return at_start, still, clock() - start


def complete_transactions(
    admin: MySQLEmergencyAdmin,
    target: ServerTarget,
    *,
    timeout_s: float,
    force: bool = False,
    poll_s: float = 1.0,
    dry_run: bool = False,
    rollback_grace_s: float = ROLLBACK_GRACE_S,
    log: Any | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> TransactionReport:
    """Wait for the transactions open now to finish; end the rest only with force."""
    actions = ActionLog(target.name, log)
    if target.engine != "mysql":
        return TransactionReport(
            target=target,
            applicable=False,
            notes=["HeavyDB has no multi-statement transactions: nothing to complete"],
        )
    if dry_run:
        open_now = admin.open_transactions()
        report = TransactionReport(
            target=target, timeout_s=timeout_s, at_start=open_now, still_open=open_now
        )
        report.notes.append(
            f"dry run: would wait up to {format_age(timeout_s)} for these"
            + (" and then end the rest" if force else "")
        )
        return report

    at_start, still, waited = wait_for_transactions(
        admin.open_transactions, timeout_s, poll_s, clock=clock, sleep=sleep
    )
    still_ids = {t.id for t in still}
    report = TransactionReport(
        target=target,
        timeout_s=timeout_s,
        waited_s=round(waited, 2),
        at_start=at_start,
        finished=[t.id for t in at_start if t.id not in still_ids],
        still_open=still,
    )
    if not force or not still:
        report.actions = actions.actions
        return report

    report.forced = True
    for t in still:
        actions.attempt(
            f"end transaction {t.id}: close session {t.session_id} of {t.user} (rolls back)",
            lambda t=t: admin.end_session(t.session_id),
        )
    # The rollback of a large transaction takes time: watch it go.
    deadline = clock() + rollback_grace_s
    remaining = still
    while remaining:
        try:
            now_open = {t.id: t for t in admin.open_transactions()}
        except ConnectorError as exc:
            actions.add("re-read open transactions", "failed", f"{exc.kind}: {exc.detail}")
            break
        remaining = [now_open[t.id] for t in remaining if t.id in now_open]
        if not remaining or clock() >= deadline:
            break
        sleep(min(poll_s, 0.5))
    remaining_ids = {t.id for t in remaining}
    report.ended = [t.id for t in still if t.id not in remaining_ids]
    report.not_ended = remaining
    for t in remaining:
        actions.add(f"still open after ending it: {describe(t)}", "failed")
    report.actions = actions.actions
    return report
