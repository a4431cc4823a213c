"""Connection limits: which sessions close, the caps that hold the limit, record-first, lift."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tbs_emergency.connectors.base import AccountLimit, DbSession, DbUser, Probe
from tbs_emergency.dbops import connection_limits as cl
from tbs_emergency.dbops.records import UndoStore, state_key
from tbs_emergency.dbops.targets import ServerTarget
from tbs_emergency.domain.journal import Journal
from tbs_emergency.errors import Refused
from tests.unit.fakes_rollback import MemoryStore

pytestmark = pytest.mark.unit

MYSQL = ServerTarget(
    engine="mysql", name="mysql[blue,green]", server="mysql://db:3306", envs=["blue", "green"]
)
HEAVY = ServerTarget(
    engine="heavydb", name="heavydb[blue]", server="heavydb://h:6274", envs=["blue"]
)


def sess(
    sid: int,
    user: str,
    idle: float | None = None,
    busy: float | None = None,
    trx: bool = False,
    internal: bool = False,
) -> DbSession:
    return DbSession(
        id=str(sid),
        user=user,
        host="10.0.0.1:5000",
        idle_s=idle,
        busy_s=busy,
        in_transaction=trx,
        internal=internal,
    )


class FakeMySQL:
    """Holds server state in memory; records every change in `calls`."""

    name = "mysql[blue,green]"

    def __init__(self, sessions: list[DbSession], accounts: list[AccountLimit], max_conn: int):
        self._sessions = {s.id: s for s in sessions}
        self._accounts = {(a.user, a.host): a for a in accounts}
        self._max = max_conn
        self.calls: list[str] = []
        self.fail_on: str | None = None

    def login_user(self) -> str:
        return "admin"

    def ping(self) -> Probe:
        return Probe(self.name, True, 1.0, "ok")

    def sessions(self) -> list[DbSession]:
        return list(self._sessions.values())

    def end_session(self, session_id: str) -> bool:
        self.calls.append(f"kill {session_id}")
        return self._sessions.pop(session_id, None) is not None

    def max_connections(self) -> int:
        return self._max

    def set_max_connections(self, limit: int) -> None:
        if self.fail_on == "max":
            raise Refused(self.name, "set max_connections", "(1227) need SUPER")
        self.calls.append(f"max {limit}")
        self._max = limit

    def account_limits(self) -> list[AccountLimit]:
        return list(self._accounts.values())

    def set_account_limit(self, user: str, host: str, n: int) -> None:
        if self.fail_on == "cap":
            raise Refused(self.name, "set account connection limit", "(1227) need SUPER")
        self.calls.append(f"cap {user}@{host} {n}")
        self._accounts[(user, host)] = AccountLimit(user, host, n)


class FakeHeavy:
    name = "heavydb[blue]"

    def __init__(self, sessions: list[DbSession], users: list[DbUser]):
        self._sessions = {s.id: s for s in sessions}
        self._users = {u.name: u for u in users}
        self.calls: list[str] = []

    def login_user(self) -> str:
        return "admin"

    def ping(self) -> Probe:
        return Probe(self.name, True, 1.0, "ok")

    def sessions(self) -> list[DbSession]:
        return list(self._sessions.values())

    def end_session(self, session_id: str) -> bool:
        self.calls.append(f"end {session_id}")
        return self._sessions.pop(session_id, None) is not None

    def users(self) -> list[DbUser]:
        return list(self._users.values())

    def set_login(self, user: str, allowed: bool) -> None:
        self.calls.append(f"login {user} {allowed}")
        self._users[user] = replace(self._users[user], can_login=allowed)


# -- pure planning -----------------------------------------------------------------------------


def test_closing_order_is_oldest_idle_first_then_transactions_then_busy() -> None:
    order = cl.closing_order(
        [
            sess(1, "app", busy=50),
            sess(2, "app", idle=5),
            sess(3, "app", idle=100, trx=True),
            sess(4, "app", idle=30),
            sess(5, "app", busy=500),
            sess(6, "app", idle=30),
        ]
    )
    assert [s.id for s in order] == ["4", "6", "2", "3", "5", "1"]


def test_split_keeps_priority_and_internal_and_reserves_slots() -> None:
    sessions = [sess(i, "app", idle=float(i)) for i in range(1, 16)]
    sessions += [sess(100, "ops", idle=1), sess(101, "admin", busy=0, internal=True)]
    split = cl.split_sessions(sessions, max_connections=10, reserve=2, priority=["ops", "admin"])
    assert split.budget == 10 - 2 - 1
    assert len(split.close) == 15 - 7
    # the longest idle ones go, the most recently active ones stay
    assert [s.id for s in split.close] == [str(i) for i in range(15, 7, -1)]
    assert sorted(int(s.id) for s in split.keep) == list(range(1, 8))
    assert [s.id for s in split.priority] == ["100"]
    assert [s.id for s in split.internal] == ["101"]


def test_budget_never_negative() -> None:
    split = cl.split_sessions(
        [sess(1, "ops", idle=1), sess(2, "app", idle=1)],
        max_connections=2,
        reserve=2,
        priority=["ops"],
    )
    assert split.budget == 0 and [s.id for s in split.close] == ["2"]


def test_share_caps_deals_out_spare_slots_and_blocks_accounts_without_a_share() -> None:
    assert cl.share_caps({"app": 3, "bi": 1}, ["app", "bi", "etl"], budget=6) == {
        "app": 4,
        "bi": 2,
        "etl": -1,
    }
    assert cl.share_caps({"app": 1}, ["app", "etl"], budget=4) == {"app": 3, "etl": 1}
    assert cl.share_caps({"app": 2}, ["app", "etl"], budget=2) == {"app": 2, "etl": -1}
    assert cl.share_caps({}, ["app"], budget=0) == {"app": -1}


def test_mysql_plan_caps_accounts_lowers_max_and_records_previous_values() -> None:
    sessions = [sess(i, "app", idle=float(i)) for i in range(1, 13)] + [sess(50, "ops", idle=2)]
    accounts = [
        AccountLimit("app", "%", 0),
        AccountLimit("app", "localhost", 0),
        AccountLimit("etl", "%", 5),
        AccountLimit("ops", "%", 0),
        AccountLimit("mariadb.sys", "localhost", 0),
        AccountLimit("admin", "%", 0),
    ]
    plan = cl.plan_mysql_limit(
        MYSQL,
        sessions=sessions,
        accounts=accounts,
        current_max=151,
        max_connections=10,
        reserve=2,
        priority_users=["ops", "admin"],
    )
    assert plan.sessions.budget == 7 and len(plan.sessions.close) == 5
    assert plan.set_max_connections == 10
    caps = {(c.user, c.host): c.max_user_connections for c in plan.account_caps}
    # app keeps its 7 sessions, which the server does not count (no limit when they were
    # opened): no new ones; etl has no share at all.
    assert caps == {("app", "%"): -1, ("app", "localhost"): -1, ("etl", "%"): -1}
    undo = plan.record.mysql_limits
    assert undo is not None and undo.max_connections == 151
    assert {(a.user, a.host, a.max_user_connections) for a in undo.accounts} == {
        ("app", "%", 0),
        ("app", "localhost", 0),
        ("etl", "%", 5),
    }


def test_account_cap_counts_only_what_the_server_counts() -> None:
    assert cl.account_cap(current=0, share=5, kept=3) == 2  # 3 uncounted sessions stay
    assert cl.account_cap(current=0, share=3, kept=3) == -1
    assert cl.account_cap(current=10, share=3, kept=3) == 3  # counted already
    assert cl.account_cap(current=10, share=0, kept=0) == -1


def test_mysql_plan_never_raises_max_connections_or_loosens_a_cap() -> None:
    plan = cl.plan_mysql_limit(
        MYSQL,
        sessions=[sess(1, "app", idle=1)],
        accounts=[AccountLimit("app", "%", 1), AccountLimit("bi", "%", -1)],
        current_max=5,
        max_connections=10,
        reserve=2,
        priority_users=[],
    )
    assert plan.set_max_connections is None
    assert plan.account_caps == []
    assert any("unchanged" in n for n in plan.notes)


def test_rerun_keeps_the_first_recorded_previous_settings() -> None:
    store = MemoryStore()
    undo = UndoStore(store)
    db = FakeMySQL(
        [sess(i, "app", idle=float(i)) for i in range(1, 13)],
        [AccountLimit("app", "%", 0)],
        max_conn=151,
    )
    first = cl.limit_connections(db, undo, MYSQL, max_connections=10, reserve=2, priority_users=[])
    assert first.ok, first.problems
    assert first.closed == 4
    record = json.loads(store.objects[state_key("connection-limits", MYSQL)])
    assert record["mysql_limits"]["max_connections"] == 151
    assert record["mysql_limits"]["accounts"] == [
        {"user": "app", "host": "%", "max_user_connections": 0}
    ]
    db.calls.clear()
    second = cl.limit_connections(db, undo, MYSQL, max_connections=10, reserve=2, priority_users=[])
    assert second.ok and second.closed == 0
    assert db.calls == []  # nothing left to change: idempotent
    again = json.loads(store.objects[state_key("connection-limits", MYSQL)])
    assert again["mysql_limits"] == record["mysql_limits"]


def test_previous_settings_are_written_before_the_first_change() -> None:
    order: list[str] = []

    class Store(MemoryStore):
        def put(self, key, data, metadata=None):  # type: ignore[no-untyped-def]
            order.append(f"put {key}")
            return super().put(key, data, metadata)

    db = FakeMySQL(
        [sess(1, "app", idle=9), sess(2, "app", idle=1)], [AccountLimit("app", "%", 0)], 100
    )
    real_cap = db.set_account_limit
    db.set_account_limit = lambda u, h, n: (order.append("cap"), real_cap(u, h, n))  # type: ignore[method-assign]
    cl.limit_connections(
        db, UndoStore(Store()), MYSQL, max_connections=2, reserve=1, priority_users=[]
    )
    assert order[0] == f"put {state_key('connection-limits', MYSQL)}"
    assert order.index("cap") > 0


def test_a_failed_record_changes_nothing() -> None:
    class Broken(MemoryStore):
        def put(self, key, data, metadata=None):  # type: ignore[no-untyped-def]
            raise Refused("s3", "put", "AccessDenied")

    db = FakeMySQL(
        [sess(1, "app", idle=9), sess(2, "app", idle=1)], [AccountLimit("app", "%", 0)], 100
    )
    result = cl.limit_connections(
        db, UndoStore(Broken()), MYSQL, max_connections=2, reserve=1, priority_users=[]
    )
    assert db.calls == []
    assert not result.ok and "nothing was changed" in result.problems[0]
    assert "AccessDenied" in result.problems[0]


def test_no_session_is_closed_when_the_limit_cannot_be_put_in_place() -> None:
    db = FakeMySQL(
        [sess(i, "app", idle=float(i)) for i in range(1, 6)], [AccountLimit("app", "%", 0)], 100
    )
    db.fail_on = "max"
    result = cl.limit_connections(
        db, UndoStore(MemoryStore()), MYSQL, max_connections=3, reserve=1, priority_users=[]
    )
    assert not result.ok
    assert not any(c.startswith("kill") for c in db.calls)
    assert any("no session was closed" in p for p in result.problems)


def test_dry_run_changes_nothing_and_writes_nothing() -> None:
    store = MemoryStore()
    db = FakeMySQL(
        [sess(i, "app", idle=float(i)) for i in range(1, 6)], [AccountLimit("app", "%", 0)], 100
    )
    result = cl.limit_connections(
        db, UndoStore(store), MYSQL, max_connections=3, reserve=1, priority_users=[], dry_run=True
    )
    assert result.dry_run and db.calls == [] and store.objects == {}
    assert any("close session 5" in line for line in result.plan)
    assert all(a.outcome == "planned" for a in result.actions)


def test_lift_restores_exactly_the_recorded_settings_and_marks_the_record() -> None:
    store = MemoryStore()
    undo = UndoStore(store)
    db = FakeMySQL(
        [sess(i, "app", idle=float(i)) for i in range(1, 6)],
        [AccountLimit("app", "%", 0), AccountLimit("etl", "%", 3), AccountLimit("ops", "%", 0)],
        max_conn=151,
    )
    cl.limit_connections(db, undo, MYSQL, max_connections=4, reserve=1, priority_users=["ops"])
    assert db.max_connections() == 4
    lifted = cl.lift_connection_limits(db, undo, MYSQL)
    assert lifted.ok, lifted.problems
    assert db.max_connections() == 151
    assert {(a.user, a.max_user_connections) for a in db.account_limits()} == {
        ("app", 0),
        ("etl", 3),
        ("ops", 0),
    }
    record = json.loads(store.objects[state_key("connection-limits", MYSQL)])
    assert record["status"] == "lifted" and record["lifted_at"]
    # Lifting again finds nothing to do and changes nothing.
    db.calls.clear()
    again = cl.lift_connection_limits(db, undo, MYSQL)
    assert again.ok and db.calls == []
    assert any("nothing to lift" in line for line in again.plan)


def test_heavydb_limit_disables_logins_ends_sessions_and_lift_reenables_only_those() -> None:
    store = MemoryStore()
    undo = UndoStore(store)
    db = FakeHeavy(
        [
            sess(i, "analyst", busy=float(i) if i % 2 else None, idle=None if i % 2 else 1.0)
            for i in range(1, 7)
        ]
        + [sess(90, "ops", idle=1), sess(91, "admin", internal=True)],
        [
            DbUser("admin", True, True),
            DbUser("ops", True),
            DbUser("analyst", True),
            DbUser("intern", False),
        ],
    )
    result = cl.limit_connections(
        db, undo, HEAVY, max_connections=5, reserve=1, priority_users=["ops"]
    )
    assert result.ok, result.problems
    assert "login analyst False" in db.calls and "login intern False" not in db.calls
    assert len([s for s in db.sessions() if s.user == "analyst"]) == 3  # budget 5 - 1 - 1
    # idle sessions went first
    assert not any(s.idle_s is not None for s in db.sessions() if s.user == "analyst")
    record = json.loads(store.objects[state_key("connection-limits", HEAVY)])
    assert record["heavydb_logins"]["logins_enabled"] == ["analyst"]
    lifted = cl.lift_connection_limits(db, undo, HEAVY)
    assert lifted.ok
    assert {u.name: u.can_login for u in db.users()} == {
        "admin": True,
        "ops": True,
        "analyst": True,
        "intern": False,
    }


def test_record_goes_to_the_incident_journal_when_there_is_an_incident() -> None:
    store = MemoryStore()
    undo = UndoStore(store)
    db = FakeMySQL([sess(1, "app", idle=5)], [AccountLimit("app", "%", 0)], 100)
    cl.limit_connections(
        db, undo, MYSQL, max_connections=3, reserve=1, priority_users=[], incident_id="inc-1"
    )
    entries = Journal(store).entries("inc-1")
    kinds = [e.kind for e in entries]
    assert kinds[0] == "previous-settings"
    assert entries[0].data["mysql_limits"]["max_connections"] == 100
    assert entries[0].system == "mysql[blue,green]"
    assert "action" in kinds
