"""Archive protection: which privileges are revoked, which cannot be, how lifting restores."""

from __future__ import annotations

import json

import pytest

from tbs_emergency.connectors.base import DbSession, PrivilegeGrant, Probe
from tbs_emergency.dbops import archive as ar
from tbs_emergency.dbops.records import UndoStore, state_key
from tbs_emergency.dbops.targets import ServerTarget
from tests.unit.fakes_rollback import MemoryStore

pytestmark = pytest.mark.unit

T = ServerTarget(engine="mysql", name="mysql[blue,green]", server="mysql://db:3306", envs=["blue"])


def g(
    user: str,
    priv: str,
    level: str = "schema",
    schema: str | None = "tbs_archive",
    table: str | None = None,
    column: str | None = None,
    host: str | None = "%",
) -> PrivilegeGrant:
    return PrivilegeGrant(
        user=user,
        host=host,
        privilege=priv,
        level=level,  # type: ignore[arg-type]
        schema=schema,
        table=table,
        column=column,
    )


GRANTS = [
    g("app", "SELECT"),
    g("app", "INSERT"),
    g("app", "UPDATE"),
    g("app", "DELETE"),
    g("tbs_recovery", "INSERT"),
    g("tbs_recovery", "DROP"),
    g("bi", "SELECT", schema="tbs\\_%"),
    g("etl", "INSERT", schema="tbs\\_%"),
    g("root", "INSERT", level="global", schema=None, host="localhost"),
    g("root", "SELECT", level="global", schema=None, host="localhost"),
    g("loader", "INSERT", level="table", table="trades"),
    g("loader", "UPDATE", level="column", table="trades", column="qty"),
    g("writer", "INSERT", host=None),
    g("other", "INSERT", schema="tbs_other"),
    g("esc", "DELETE", schema="tbs\\_archive"),
]


def test_pattern_semantics() -> None:
    assert ar.pattern_matches("tbs\\_%", "tbs_archive")
    assert not ar.pattern_matches("tbs\\_%", "tbsXarchive")
    assert ar.pattern_matches("tbs_archive", "tbsXarchive")  # `_` is a wildcard
    assert ar.pattern_matches("%", "anything")
    assert ar.unescape_pattern("tbs\\_archive") == "tbs_archive"


def test_plan_revokes_exact_grants_exempts_recovery_and_reports_global_and_patterns() -> None:
    plan = ar.plan_archive_protection(T, GRANTS, schema="tbs_archive", recovery_user="tbs_recovery")
    revoked = {(x.user, x.privilege, x.level) for x in plan.revoke}
    assert revoked == {
        ("app", "INSERT", "schema"),
        ("app", "UPDATE", "schema"),
        ("app", "DELETE", "schema"),
        ("loader", "INSERT", "table"),
        ("loader", "UPDATE", "column"),
        ("writer", "INSERT", "schema"),
        ("esc", "DELETE", "schema"),
    }
    assert {x.user for x in plan.exempt} == {"tbs_recovery"}
    assert plan.unprotected_grantees() == ["etl@%", "root@localhost"]
    assert plan.disconnect_users == ["app", "esc", "loader"]
    text = "\n".join(plan.summary())
    assert "STILL WRITABLE by root@localhost" in text and "globally" in text
    assert "STILL WRITABLE by etl@%" in text and "pattern 'tbs\\_%'" in text
    assert plan.record.archive is not None and len(plan.record.archive.revoked) == 7


def test_no_recovery_user_is_said() -> None:
    plan = ar.plan_archive_protection(T, GRANTS, schema="tbs_archive", recovery_user=None)
    assert any("no recovery_user" in n for n in plan.notes)
    assert {x.user for x in plan.revoke} >= {"tbs_recovery"}


class FakeAdmin:
    name = "mysql[blue,green]"

    def __init__(self, grants: list[PrivilegeGrant], sessions: list[DbSession]):
        self._grants = list(grants)
        self._sessions = {s.id: s for s in sessions}
        self.calls: list[str] = []

    def login_user(self) -> str:
        return "root"

    def ping(self) -> Probe:
        return Probe(self.name, True, 1.0, "ok")

    def grants(self) -> list[PrivilegeGrant]:
        return list(self._grants)

    def revoke(self, grants: list[PrivilegeGrant]) -> None:
        self.calls.append(
            "revoke " + ",".join(sorted(f"{x.grantee}:{x.privilege}" for x in grants))
        )
        self._grants = [x for x in self._grants if x not in grants]

    def grant(self, grants: list[PrivilegeGrant]) -> None:
        self.calls.append("grant " + ",".join(sorted(f"{x.grantee}:{x.privilege}" for x in grants)))
        self._grants += [x for x in grants if x not in self._grants]

    def sessions(self) -> list[DbSession]:
        return list(self._sessions.values())

    def end_session(self, sid: str) -> bool:
        self.calls.append(f"kill {sid}")
        return self._sessions.pop(sid, None) is not None


def test_protect_then_lift_restores_exactly_and_reruns_change_nothing() -> None:
    store = MemoryStore()
    undo = UndoStore(store)
    sessions = [
        DbSession(id="1", user="app"),
        DbSession(id="2", user="bi"),
        DbSession(id="3", user="root", internal=True),
        DbSession(id="4", user="tbs_recovery"),
    ]
    db = FakeAdmin(GRANTS, sessions)
    before = set(db.grants())
    result = ar.protect_archive(db, undo, T, schema="tbs_archive", recovery_user="tbs_recovery")
    assert result.ok, result.problems
    assert "kill 1" in db.calls and "kill 2" not in db.calls and "kill 4" not in db.calls
    assert result.still_writable == ["etl@%", "root@localhost"]
    assert not any(x.user == "app" and x.privilege == "INSERT" for x in db.grants())
    assert any(x.user == "app" and x.privilege == "SELECT" for x in db.grants())
    record = json.loads(store.objects[state_key("archive-protection", T)])
    assert len(record["archive"]["revoked"]) == 7

    # A rerun revokes nothing new and keeps the first record.
    db.calls.clear()
    again = ar.protect_archive(db, undo, T, schema="tbs_archive", recovery_user="tbs_recovery")
    assert again.ok and not any(c.startswith("revoke") for c in db.calls)
    assert (
        json.loads(store.objects[state_key("archive-protection", T)])["archive"]
        == record["archive"]
    )

    lifted = ar.lift_archive_protection(db, undo, T)
    assert lifted.ok, lifted.problems
    assert set(db.grants()) == before
    assert json.loads(store.objects[state_key("archive-protection", T)])["status"] == "lifted"
    db.calls.clear()
    assert ar.lift_archive_protection(db, undo, T).ok and db.calls == []


def test_dry_run_touches_nothing() -> None:
    store = MemoryStore()
    db = FakeAdmin(GRANTS, [DbSession(id="1", user="app")])
    result = ar.protect_archive(
        db, UndoStore(store), T, schema="tbs_archive", recovery_user="tbs_recovery", dry_run=True
    )
    assert db.calls == [] and store.objects == {}
    assert any("revoke from app@%" in line for line in result.plan)
