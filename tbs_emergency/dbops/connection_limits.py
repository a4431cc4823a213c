"""Connection limits with priority users (runbook: `heavydb-limit-connections --max=10
--priority-users`), and lifting them.

Semantics of `--max N` on one server, both engines:

- Priority users (configuration, plus the procedure's own account) are never touched: their
  sessions stay, their logins stay enabled.
- `reserve` of the N slots stay free for priority users to log in, so non-priority sessions get
  a budget of `N - reserve - <priority sessions open now>` (never below 0).
- Non-priority sessions beyond the budget are closed, oldest idle first: idle sessions outside
  a transaction by longest idle time, then idle sessions inside a transaction (closing one rolls
  its transaction back), then busy sessions by longest running statement.
- MySQL: `max_connections` is lowered to N (never raised), and every non-priority account gets a
  share of the budget (what it kept, spare slots shared out) held by `MAX_USER_CONNECTIONS`
  (see `account_cap`: sessions opened before an account had a limit are not counted by the
  server, so the cap allows only what the share leaves; -1 is no new connection at all), so
  reconnecting pools cannot take the reserved slots.
- HeavyDB has no connection cap: non-priority users' logins are disabled (`can_login = false`)
  and their sessions beyond the budget are ended.

Everything replaced is recorded first (`records.UndoRecord`); lifting restores exactly that.
Closed sessions cannot be restored; lifting says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, Field

from tbs_emergency.connectors.base import (
    AccountLimit,
    DbSession,
    DbUser,
    HeavyDBEmergencyAdmin,
    MySQLEmergencyAdmin,
    SessionAdmin,
)
from tbs_emergency.dbops.actions import Action, ActionLog
from tbs_emergency.dbops.records import (
    HeavyDBLoginUndo,
    MySQLLimitUndo,
    UndoRecord,
    UndoStore,
    utcnow,
)
from tbs_emergency.dbops.targets import ServerTarget

KIND = "connection-limits"
NO_NEW_CONNECTIONS = -1  # MariaDB: MAX_USER_CONNECTIONS -1 refuses every new connection
# Accounts that are not people or applications: never capped.
SYSTEM_ACCOUNTS = frozenset({"mariadb.sys", "mysql.sys", "mysql.session", "mysql.infoschema"})


# --------------------------------------------------------------------------------------------
# Pure planning
# --------------------------------------------------------------------------------------------


def effective_priority(configured: Iterable[str], *implicit: str | None) -> list[str]:
    """Configured priority users plus the accounts the procedures themselves use."""
    return sorted({u for u in [*configured, *implicit] if u})


def closing_order(sessions: Iterable[DbSession]) -> list[DbSession]:
    """Who goes first: idle outside a transaction (longest idle first), idle inside one,
    then busy (longest running first). Ties: the older session (lower id) first."""

    def key(s: DbSession) -> tuple[int, float, tuple[int, str]]:
        if not s.busy:
            group = 1 if s.in_transaction else 0
            return (group, -(s.idle_s or 0.0), _id_key(s.id))
        return (2, -(s.busy_s or 0.0), _id_key(s.id))

    return sorted(sessions, key=key)


def _id_key(session_id: str) -> tuple[int, str]:
    return (int(session_id), "") if session_id.isdigit() else (0, session_id)


class SessionSplit(BaseModel):
    budget: int
    priority: list[DbSession] = Field(default_factory=list)
    internal: list[DbSession] = Field(default_factory=list)
    keep: list[DbSession] = Field(default_factory=list)
    close: list[DbSession] = Field(default_factory=list)


def split_sessions(
    sessions: Sequence[DbSession], max_connections: int, reserve: int, priority: Iterable[str]
) -> SessionSplit:
    prio = set(priority)
    internal = [s for s in sessions if s.internal]
    priority_sessions = [s for s in sessions if not s.internal and s.user in prio]
    others = [s for s in sessions if not s.internal and s.user not in prio]
    budget = max(0, max_connections - reserve - len(priority_sessions))
    ordered = closing_order(others)
    n_close = max(0, len(ordered) - budget)
    return SessionSplit(
        budget=budget,
        priority=priority_sessions,
        internal=internal,
        keep=ordered[n_close:],
        close=ordered[:n_close],
    )


def share_caps(kept: dict[str, int], users: Iterable[str], budget: int) -> dict[str, int]:
    """Each user's share of the non-priority budget: what it kept, plus the spare slots dealt
    out one at a time (users with sessions first, most sessions first, then by name). A share
    of 0 becomes -1 (no new connections)."""
    names = sorted(set(users) | set(kept), key=lambda u: (-kept.get(u, 0), u))
    shares = {u: kept.get(u, 0) for u in names}
    spare = max(0, budget - sum(shares.values()))
    while spare > 0 and names:
        for u in names:
            if spare == 0:
                break
            shares[u] += 1
            spare -= 1
    return {u: (n if n > 0 else NO_NEW_CONNECTIONS) for u, n in shares.items()}


def account_cap(current: int, share: int, kept: int) -> int:
    """The MAX_USER_CONNECTIONS that holds an account to `share` sessions.

    MariaDB (and MySQL) count an account's connections only from the moment it has a limit:
    the `kept` sessions it had while unlimited (current 0) are never counted, so the cap is the
    share *minus* them (what it may open anew); each of those old sessions that closes then
    frees no slot, which only makes the hold stricter. An account that had a limit already is
    counted in full. A cap of 0 would mean "no limit": no slot at all is -1.
    """
    allowed = share if current != 0 else share - kept
    return allowed if allowed > 0 else NO_NEW_CONNECTIONS


def _tighter(current: int, wanted: int) -> bool:
    """Whether setting `wanted` tightens an account's current cap (0 = none, -1 = no login)."""
    if current == NO_NEW_CONNECTIONS:
        return False
    if wanted == NO_NEW_CONNECTIONS:
        return True
    return current == 0 or wanted < current


class ConnectionLimitPlan(BaseModel):
    target: ServerTarget
    max_connections: int
    reserve: int
    priority_users: list[str]
    sessions: SessionSplit
    set_max_connections: int | None = None  # MySQL: the new global value, None if unchanged
    account_caps: list[AccountLimit] = Field(default_factory=list)  # MySQL: caps to set
    disable_login: list[str] = Field(default_factory=list)  # HeavyDB
    record: UndoRecord  # what will be written before any change
    notes: list[str] = Field(default_factory=list)

    @property
    def changes_anything(self) -> bool:
        return bool(
            self.set_max_connections is not None
            or self.account_caps
            or self.disable_login
            or self.sessions.close
        )

    def summary(self) -> list[str]:
        s = self.sessions
        lines = [
            f"{self.target.name}: at most {self.max_connections} connections, {self.reserve} kept"
            f" free for priority users ({', '.join(self.priority_users) or 'none'});"
            f" non-priority budget {s.budget}",
            f"sessions: {len(s.priority)} priority, {len(s.keep)} kept, {len(s.close)} to close,"
            f" {len(s.internal)} internal",
        ]
        if self.set_max_connections is not None:
            lines.append(f"max_connections -> {self.set_max_connections}")
        for cap in self.account_caps:
            lines.append(
                f"MAX_USER_CONNECTIONS {cap.user}@{cap.host} -> {cap.max_user_connections}"
            )
        if self.disable_login:
            lines.append(f"disable login: {', '.join(self.disable_login)}")
        for sess in s.close:
            lines.append(f"close session {sess.id} ({_describe(sess)})")
        lines.extend(self.notes)
        return lines


def _describe(s: DbSession) -> str:
    if s.busy:
        state = f"busy {s.busy_s:.0f}s" if s.busy_s is not None else "busy"
    else:
        state = f"idle {s.idle_s:.0f}s" if s.idle_s is not None else "idle"
    if s.in_transaction:
        state += ", in a transaction"
    return f"{s.user}@{s.host or '?'}, {state}"


def plan_mysql_limit(
    target: ServerTarget,
    *,
    sessions: Sequence[DbSession],
    accounts: Sequence[AccountLimit],
    current_max: int,
    max_connections: int,
    reserve: int,
    priority_users: Iterable[str],
    existing: UndoRecord | None = None,
    incident_id: str | None = None,
) -> ConnectionLimitPlan:
    priority = list(priority_users)
    split = split_sessions(sessions, max_connections, reserve, priority)
    notes: list[str] = []
    if reserve >= max_connections:
        notes.append(f"reserve {reserve} >= max {max_connections}: every non-priority session goes")

    kept: dict[str, int] = {}
    for s in split.keep:
        kept[s.user] = kept.get(s.user, 0) + 1
    active = existing if existing is not None and existing.active else None
    already = (
        {(a.user, a.host) for a in active.mysql_limits.accounts}
        if active is not None and active.mysql_limits is not None
        else set()
    )
    cappable = [a for a in accounts if a.user not in priority and a.user not in SYSTEM_ACCOUNTS]
    shares = share_caps(kept, [a.user for a in cappable], split.budget)
    caps = []
    for a in cappable:
        if (a.user, a.host) in already:
            continue  # capped by the active limit already: its sessions are counted from then
        wanted = account_cap(a.max_user_connections, shares[a.user], kept.get(a.user, 0))
        if _tighter(a.max_user_connections, wanted):
            caps.append(AccountLimit(a.user, a.host, wanted))
    new_max = max_connections if current_max > max_connections else None
    if new_max is None:
        notes.append(f"max_connections is {current_max} already (<= {max_connections}): unchanged")

    if active is not None and active.mysql_limits is not None:
        recorded = {(a.user, a.host) for a in active.mysql_limits.accounts}
        previous = {(a.user, a.host): a for a in accounts}
        added = [previous[(c.user, c.host)] for c in caps if (c.user, c.host) not in recorded]
        undo = MySQLLimitUndo(
            max_connections=active.mysql_limits.max_connections,
            accounts=[*active.mysql_limits.accounts, *added],
        )
        record = active.model_copy(update={"mysql_limits": undo})
        notes.append(
            f"a limit recorded at {active.recorded_at:%Y-%m-%d %H:%M:%S}Z is active: its"
            " previous settings are kept"
        )
    else:
        previous = {(a.user, a.host): a for a in accounts}
        undo = MySQLLimitUndo(
            max_connections=current_max,
            accounts=[previous[(c.user, c.host)] for c in caps],
        )
        record = UndoRecord(kind=KIND, target=target, incident_id=incident_id, mysql_limits=undo)
    record = record.model_copy(
        update={
            "applied": {
                "max_connections": max_connections,
                "reserve": reserve,
                "priority_users": priority,
                "budget": split.budget,
                "caps": {f"{c.user}@{c.host}": c.max_user_connections for c in caps},
            },
            "incident_id": record.incident_id or incident_id,
        }
    )
    return ConnectionLimitPlan(
        target=target,
        max_connections=max_connections,
        reserve=reserve,
        priority_users=priority,
        sessions=split,
        set_max_connections=new_max,
        account_caps=caps,
        record=record,
        notes=notes,
    )


def plan_heavydb_limit(
    target: ServerTarget,
    *,
    sessions: Sequence[DbSession],
    users: Sequence[DbUser],
    max_connections: int,
    reserve: int,
    priority_users: Iterable[str],
    existing: UndoRecord | None = None,
    incident_id: str | None = None,
) -> ConnectionLimitPlan:
    priority = list(priority_users)
    split = split_sessions(sessions, max_connections, reserve, priority)
    disable = sorted(u.name for u in users if u.can_login and u.name not in priority)
    notes: list[str] = []
    active = existing if existing is not None and existing.active else None
    if active is not None and active.heavydb_logins is not None:
        before = active.heavydb_logins.logins_enabled
        undo = HeavyDBLoginUndo(logins_enabled=sorted({*before, *disable}))
        record = active.model_copy(update={"heavydb_logins": undo})
        notes.append(
            f"a limit recorded at {active.recorded_at:%Y-%m-%d %H:%M:%S}Z is active: its"
            " previous settings are kept"
        )
    else:
        record = UndoRecord(
            kind=KIND,
            target=target,
            incident_id=incident_id,
            heavydb_logins=HeavyDBLoginUndo(logins_enabled=disable),
        )
    record = record.model_copy(
        update={
            "applied": {
                "max_connections": max_connections,
                "reserve": reserve,
                "priority_users": priority,
                "budget": split.budget,
                "logins_disabled": disable,
            },
            "incident_id": record.incident_id or incident_id,
        }
    )
    return ConnectionLimitPlan(
        target=target,
        max_connections=max_connections,
        reserve=reserve,
        priority_users=priority,
        sessions=split,
        disable_login=disable,
        record=record,
        notes=notes,
    )


class LiftPlan(BaseModel):
    target: ServerTarget
    record: UndoRecord | None
    set_max_connections: int | None = None
    account_limits: list[AccountLimit] = Field(default_factory=list)
    enable_login: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    def summary(self) -> list[str]:
        lines = []
        if self.set_max_connections is not None:
            lines.append(f"max_connections -> {self.set_max_connections}")
        for a in self.account_limits:
            lines.append(f"MAX_USER_CONNECTIONS {a.user}@{a.host} -> {a.max_user_connections}")
        if self.enable_login:
            lines.append(f"enable login: {', '.join(self.enable_login)}")
        return [*lines, *self.notes]


def plan_mysql_lift(
    target: ServerTarget,
    record: UndoRecord | None,
    *,
    accounts: Sequence[AccountLimit],
    current_max: int,
) -> LiftPlan:
    if record is None or not record.active or record.mysql_limits is None:
        return LiftPlan(target=target, record=record, notes=[_no_record(target, record)])
    undo = record.mysql_limits
    now = {(a.user, a.host): a.max_user_connections for a in accounts}
    restore, notes = [], []
    for a in undo.accounts:
        if (a.user, a.host) not in now:
            notes.append(f"account {a.user}@{a.host} no longer exists: nothing to restore")
        elif now[(a.user, a.host)] != a.max_user_connections:
            restore.append(a)
    new_max = undo.max_connections if current_max != undo.max_connections else None
    notes.append("closed sessions are not reopened: clients reconnect by themselves")
    return LiftPlan(
        target=target,
        record=record,
        set_max_connections=new_max,
        account_limits=restore,
        notes=notes,
    )


def plan_heavydb_lift(
    target: ServerTarget, record: UndoRecord | None, *, users: Sequence[DbUser]
) -> LiftPlan:
    if record is None or not record.active or record.heavydb_logins is None:
        return LiftPlan(target=target, record=record, notes=[_no_record(target, record)])
    now = {u.name: u for u in users}
    enable, notes = [], []
    for name in record.heavydb_logins.logins_enabled:
        if name not in now:
            notes.append(f"user {name} no longer exists: nothing to restore")
        elif not now[name].can_login:
            enable.append(name)
    notes.append("ended sessions are not reopened: clients log in again by themselves")
    return LiftPlan(target=target, record=record, enable_login=enable, notes=notes)


def _no_record(target: ServerTarget, record: UndoRecord | None) -> str:
    if record is None:
        return f"{target.name}: no connection limit was recorded: nothing to lift"
    return (
        f"{target.name}: the limit recorded at {record.recorded_at:%Y-%m-%d %H:%M:%S}Z was"
        f" lifted at {record.lifted_at:%Y-%m-%d %H:%M:%S}Z already: nothing to lift"
    )


# --------------------------------------------------------------------------------------------
# Running it on one server
# --------------------------------------------------------------------------------------------


class ConnectionLimitResult(BaseModel):
    target: ServerTarget
    dry_run: bool
    plan: list[str]
    actions: list[Action] = Field(default_factory=list)
    closed: int = 0
    problems: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _close_sessions(admin: SessionAdmin, sessions: Sequence[DbSession], log: ActionLog) -> int:
    closed = 0
    for s in sessions:
        gone = log.attempt(
            f"close session {s.id} ({_describe(s)})", lambda s=s: admin.end_session(s.id)
        )
        if not gone.ok:
            continue
        closed += 1
        if gone.value is False:
            log.amend_last("unchanged", "already gone")
    return closed


def read_mysql_plan(
    admin: MySQLEmergencyAdmin,
    undo: UndoStore,
    target: ServerTarget,
    *,
    max_connections: int,
    reserve: int,
    priority_users: Iterable[str],
    incident_id: str | None = None,
) -> ConnectionLimitPlan:
    priority = effective_priority(priority_users, admin.login_user())
    return plan_mysql_limit(
        target,
        sessions=admin.sessions(),
        accounts=admin.account_limits(),
        current_max=admin.max_connections(),
        max_connections=max_connections,
        reserve=reserve,
        priority_users=priority,
        existing=undo.load(KIND, target),
        incident_id=incident_id,
    )


def read_heavydb_plan(
    admin: HeavyDBEmergencyAdmin,
    undo: UndoStore,
    target: ServerTarget,
    *,
    max_connections: int,
    reserve: int,
    priority_users: Iterable[str],
    incident_id: str | None = None,
) -> ConnectionLimitPlan:
    priority = effective_priority(priority_users, admin.login_user())
    return plan_heavydb_limit(
        target,
        sessions=admin.sessions(),
        users=admin.users(),
        max_connections=max_connections,
        reserve=reserve,
        priority_users=priority,
        existing=undo.load(KIND, target),
        incident_id=incident_id,
    )


def limit_connections(
    admin: Any,
    undo: UndoStore,
    target: ServerTarget,
    *,
    max_connections: int,
    reserve: int,
    priority_users: Iterable[str],
    dry_run: bool = False,
    incident_id: str | None = None,
    log: Any | None = None,
) -> ConnectionLimitResult:
    """Plan, record the previous settings, apply, verify: the whole procedure on one server."""
    read = read_mysql_plan if target.engine == "mysql" else read_heavydb_plan
    plan = read(
        admin,
        undo,
        target,
        max_connections=max_connections,
        reserve=reserve,
        priority_users=priority_users,
        incident_id=incident_id,
    )
    result = ConnectionLimitResult(target=target, dry_run=dry_run, plan=plan.summary())
    actions = ActionLog(target.name, log)
    if dry_run:
        result.actions = [
            Action(system=target.name, what=line, outcome="planned") for line in plan.summary()
        ]
        return result

    # Record first: if that fails, nothing changes.
    why = undo.save_first(plan.record, f"previous connection settings of {target.name}")
    if why is not None:
        result.problems.append(f"{target.name}: {why}")
        return result
    actions.add("record previous settings", "done", "state/" + KIND + "/" + target.key + ".json")

    settings_ok = True
    if target.engine == "mysql":
        for cap in plan.account_caps:
            done = actions.attempt(
                f"MAX_USER_CONNECTIONS {cap.user}@{cap.host} -> {cap.max_user_connections}",
                lambda c=cap: admin.set_account_limit(c.user, c.host, c.max_user_connections),
            )
            settings_ok = settings_ok and done.ok
        if plan.set_max_connections is not None and settings_ok:
            done = actions.attempt(
                f"max_connections -> {plan.set_max_connections}",
                lambda: admin.set_max_connections(plan.set_max_connections),
            )
            settings_ok = done.ok
    else:
        for user in plan.disable_login:
            done = actions.attempt(
                f"disable login of {user}", lambda u=user: admin.set_login(u, False)
            )
            settings_ok = settings_ok and done.ok

    if settings_ok:
        result.closed = _close_sessions(admin, plan.sessions.close, actions)
    else:
        # Closing sessions without the limit in place only makes pools reconnect: stop here.
        result.problems.append(
            "the limit could not be put in place (see the failed actions); no session was closed"
        )
    result.actions = actions.actions
    result.problems.extend(a.line() for a in actions.failed if "close session" in a.what)
    if settings_ok:
        result.problems.extend(verify_limit(admin, plan, result.notes))
    undo.note(
        plan.record.incident_id,
        f"connection limit on {target.name}: max {max_connections}, {result.closed} closed",
        target.name,
        "failed" if result.problems else "ok",
        {"actions": [a.model_dump() for a in result.actions]},
    )
    return result


def verify_limit(
    admin: Any, plan: ConnectionLimitPlan, notes: list[str] | None = None
) -> list[str]:
    """Read the server again: the limit holds, and non-priority sessions fit the budget.

    Returns the problems; what is worth knowing but not wrong is appended to `notes`."""
    problems: list[str] = []
    notes = notes if notes is not None else []
    prio = set(plan.priority_users)
    others = [s for s in admin.sessions() if not s.internal and s.user not in prio]
    if len(others) > plan.sessions.budget:
        problems.append(
            f"{plan.target.name}: {len(others)} non-priority sessions open after the limit"
            f" (budget {plan.sessions.budget})"
        )
    if plan.target.engine == "mysql":
        if plan.set_max_connections is not None:
            now = admin.max_connections()
            undo = plan.record.mysql_limits
            before = undo.max_connections if undo is not None else now + 1
            if plan.set_max_connections < now < before:
                # MariaDB does not go below 10: the per-account caps still hold the budget.
                notes.append(
                    f"{plan.target.name}: the server keeps max_connections at {now}, its minimum;"
                    " non-priority accounts are still held to their shares"
                )
            elif now != plan.set_max_connections:
                problems.append(f"{plan.target.name}: max_connections is {now}, not the limit")
        caps = {(a.user, a.host): a.max_user_connections for a in admin.account_limits()}
        for cap in plan.account_caps:
            if caps.get((cap.user, cap.host)) != cap.max_user_connections:
                problems.append(
                    f"{plan.target.name}: {cap.user}@{cap.host} cap is"
                    f" {caps.get((cap.user, cap.host))}, not {cap.max_user_connections}"
                )
    else:
        users = {u.name: u for u in admin.users()}
        still = [n for n in plan.disable_login if n in users and users[n].can_login]
        if still:
            problems.append(f"{plan.target.name}: login still enabled for {', '.join(still)}")
    return problems


def lift_connection_limits(
    admin: Any,
    undo: UndoStore,
    target: ServerTarget,
    *,
    dry_run: bool = False,
    incident_id: str | None = None,
    log: Any | None = None,
) -> ConnectionLimitResult:
    """Restore exactly the recorded previous settings of one server, then mark them lifted."""
    record = undo.load(KIND, target)
    if target.engine == "mysql":
        plan = plan_mysql_lift(
            target, record, accounts=admin.account_limits(), current_max=admin.max_connections()
        )
    else:
        plan = plan_heavydb_lift(target, record, users=admin.users())
    result = ConnectionLimitResult(target=target, dry_run=dry_run, plan=plan.summary())
    if dry_run or plan.record is None or not plan.record.active:
        result.actions = [
            Action(system=target.name, what=line, outcome="planned" if dry_run else "unchanged")
            for line in plan.summary()
        ]
        return result
    actions = ActionLog(target.name, log)
    for a in plan.account_limits:
        actions.attempt(
            f"MAX_USER_CONNECTIONS {a.user}@{a.host} -> {a.max_user_connections}",
            lambda a=a: admin.set_account_limit(a.user, a.host, a.max_user_connections),
        )
    if plan.set_max_connections is not None:
        actions.attempt(
            f"max_connections -> {plan.set_max_connections}",
            lambda: admin.set_max_connections(plan.set_max_connections),
        )
    for user in plan.enable_login:
        actions.attempt(f"enable login of {user}", lambda u=user: admin.set_login(u, True))
    for note in plan.notes:
        actions.add(note, "unchanged")
    result.actions = actions.actions
    result.problems = [a.line() for a in actions.failed]
    if not result.problems:
        lifted = plan.record.model_copy(update={"status": "lifted", "lifted_at": utcnow()})
        lifted = lifted.model_copy(update={"incident_id": incident_id or lifted.incident_id})
        undo.save(lifted, f"connection limit on {target.name} lifted: previous settings restored")
    else:
        # The record stays active so a rerun of the lift finishes the job.
        undo.note(
            incident_id or plan.record.incident_id,
            f"lifting the connection limit on {target.name} failed in part",
            target.name,
            "failed",
            {"actions": [a.model_dump() for a in result.actions]},
        )
    return result
