"""Archive protection (runbook: `mysql-emergency-mode.sh --protect-archive`): the archive schema
read-only for every account but the recovery account.

MySQL has no per-schema read-only switch (`read_only` is server-wide and does not stop SUPER or
READ_ONLY ADMIN accounts), so protection is done with privileges:

- every privilege that can change the archive's data or structure (`WRITE_PRIVILEGES`) granted
  on the archive schema, one of its tables or one of its columns, to any account or role except
  the recovery account, is revoked; exactly those are recorded first and granted back by `lift`;
- privileges granted globally (`ON *.*`) or through a schema pattern that also covers other
  schemas (`tbs\\_%`) cannot be withdrawn for the archive alone: those accounts are reported as
  still able to write and left alone (revoking them would break other schemas);
- MySQL keeps schema privileges cached in open connections until they change database, so the
  connections of every account that lost a privilege are closed (they reconnect read-only).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, Field

from tbs_emergency.connectors.base import MySQLEmergencyAdmin, PrivilegeGrant
from tbs_emergency.dbops.actions import Action, ActionLog
from tbs_emergency.dbops.records import ArchiveUndo, UndoRecord, UndoStore, utcnow
from tbs_emergency.dbops.targets import ServerTarget

KIND = "archive-protection"

WRITE_PRIVILEGES = frozenset(
    {
        "INSERT",
        "UPDATE",
        "DELETE",
        "CREATE",
        "DROP",
        "ALTER",
        "INDEX",
        "CREATE VIEW",
        "TRIGGER",
        "CREATE ROUTINE",
        "ALTER ROUTINE",
        "EVENT",
        "DELETE HISTORY",
        # A WRITE lock blocks every reader: not harmless on a protected archive either.
        "LOCK TABLES",
    }
)


def unescape_pattern(pattern: str) -> str:
    return re.sub(r"\\(.)", r"\1", pattern)


def pattern_matches(pattern: str, name: str) -> bool:
    """MySQL schema-grant pattern semantics: `%` any run, `_` one character, `\\` escapes."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.fullmatch("".join(out), name, re.S) is not None


def names_schema_exactly(grant: PrivilegeGrant, schema: str) -> bool:
    """The grant is on this schema (or its tables/columns) and on nothing else."""
    if grant.schema is None:
        return False
    if grant.level == "schema":
        # `GRANT ... ON tbs_archive.*` is stored as written; `_` in it is a wildcard in
        # principle, but revoking that exact row touches no other grant.
        return grant.schema == schema or unescape_pattern(grant.schema) == schema
    return grant.schema == schema


def covers_schema(grant: PrivilegeGrant, schema: str) -> bool:
    if grant.level == "global":
        return True
    if grant.schema is None:
        return False
    if grant.level == "schema":
        return pattern_matches(grant.schema, schema) or names_schema_exactly(grant, schema)
    return grant.schema == schema


class ArchivePlan(BaseModel):
    target: ServerTarget
    schema_name: str
    recovery_user: str | None
    revoke: list[PrivilegeGrant] = Field(default_factory=list)
    exempt: list[PrivilegeGrant] = Field(default_factory=list)
    unprotected: list[PrivilegeGrant] = Field(default_factory=list)
    disconnect_users: list[str] = Field(default_factory=list)
    record: UndoRecord
    notes: list[str] = Field(default_factory=list)

    def unprotected_grantees(self) -> list[str]:
        return sorted({g.grantee for g in self.unprotected})

    def summary(self) -> list[str]:
        lines = [
            f"{self.target.name}: archive schema {self.schema_name!r} read-only for every account"
            f" but {self.recovery_user or '(no recovery account configured)'}"
        ]
        for grantee, privs in _by_grantee(self.revoke).items():
            lines.append(f"revoke from {grantee}: {', '.join(privs)}")
        if self.disconnect_users:
            lines.append(
                "close the sessions of "
                + ", ".join(self.disconnect_users)
                + " (open connections keep cached privileges)"
            )
        for grantee in self.unprotected_grantees():
            how = sorted({_where(g) for g in self.unprotected if g.grantee == grantee})
            lines.append(
                f"STILL WRITABLE by {grantee}: privileges granted {', '.join(how)} cannot be"
                " withdrawn for the archive alone"
            )
        return [*lines, *self.notes]


def _where(g: PrivilegeGrant) -> str:
    return "globally (ON *.*)" if g.level == "global" else f"through pattern '{g.schema}'"


def _by_grantee(grants: Iterable[PrivilegeGrant]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for g in grants:
        obj = g.schema or "*"
        if g.table:
            obj += f".{g.table}"
        if g.column:
            obj += f"({g.column})"
        out.setdefault(g.grantee, []).append(f"{g.privilege} on {obj}")
    return out


def plan_archive_protection(
    target: ServerTarget,
    grants: Sequence[PrivilegeGrant],
    *,
    schema: str,
    recovery_user: str | None,
    admin_user: str | None = None,
    existing: UndoRecord | None = None,
    incident_id: str | None = None,
) -> ArchivePlan:
    writes = [g for g in grants if g.privilege.upper() in WRITE_PRIVILEGES]
    exempt = [g for g in writes if recovery_user and g.user == recovery_user and g.host is not None]
    others = [g for g in writes if g not in exempt]
    revoke = [g for g in others if names_schema_exactly(g, schema)]
    unprotected = [
        g for g in others if g not in revoke and covers_schema(g, schema) and g.level != "table"
    ]
    notes: list[str] = []
    if not recovery_user:
        notes.append("no recovery_user is configured: no account keeps writing the archive")
    disconnect = sorted({g.user for g in revoke if g.host is not None} - {admin_user or ""})
    if any(g.host is None for g in revoke):
        notes.append("privileges of roles are revoked too; members of those roles lose them")

    active = existing if existing is not None and existing.active else None
    if active is not None and active.archive is not None:
        known = set(active.archive.revoked)
        undo = ArchiveUndo(
            schema_name=schema,
            revoked=[*active.archive.revoked, *(g for g in revoke if g not in known)],
        )
        record = active.model_copy(update={"archive": undo})
        notes.append(
            f"protection recorded at {active.recorded_at:%Y-%m-%d %H:%M:%S}Z is active: the"
            " privileges it revoked stay recorded"
        )
    else:
        record = UndoRecord(
            kind=KIND,
            target=target,
            incident_id=incident_id,
            archive=ArchiveUndo(schema_name=schema, revoked=list(revoke)),
        )
    record = record.model_copy(
        update={
            "incident_id": record.incident_id or incident_id,
            "applied": {
                "schema": schema,
                "recovery_user": recovery_user,
                "revoked_now": len(revoke),
                "still_writable": sorted({g.grantee for g in unprotected}),
            },
        }
    )
    return ArchivePlan(
        target=target,
        schema_name=schema,
        recovery_user=recovery_user,
        revoke=revoke,
        exempt=exempt,
        unprotected=unprotected,
        disconnect_users=disconnect,
        record=record,
        notes=notes,
    )


def plan_archive_lift(
    record: UndoRecord | None, grants: Sequence[PrivilegeGrant]
) -> list[PrivilegeGrant]:
    """The recorded privileges that are not granted now (granting those restores exactly)."""
    if record is None or not record.active or record.archive is None:
        return []
    present = set(grants)
    return [g for g in record.archive.revoked if g not in present]


class ArchiveResult(BaseModel):
    target: ServerTarget
    dry_run: bool
    plan: list[str]
    still_writable: list[str] = Field(default_factory=list)
    actions: list[Action] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def protect_archive(
    admin: MySQLEmergencyAdmin,
    undo: UndoStore,
    target: ServerTarget,
    *,
    schema: str,
    recovery_user: str | None,
    dry_run: bool = False,
    incident_id: str | None = None,
    log: Any | None = None,
) -> ArchiveResult:
    plan = plan_archive_protection(
        target,
        admin.grants(),
        schema=schema,
        recovery_user=recovery_user,
        admin_user=admin.login_user(),
        existing=undo.load(KIND, target),
        incident_id=incident_id,
    )
    result = ArchiveResult(
        target=target,
        dry_run=dry_run,
        plan=plan.summary(),
        still_writable=plan.unprotected_grantees(),
    )
    if dry_run:
        result.actions = [
            Action(system=target.name, what=line, outcome="planned") for line in plan.summary()
        ]
        return result
    why = undo.save_first(plan.record, f"privileges on archive schema {schema!r} before protection")
    if why is not None:
        result.problems.append(f"{target.name}: {why}")
        return result
    actions = ActionLog(target.name, log)
    actions.add("record previous privileges", "done", f"state/{KIND}/{target.key}.json")
    if plan.revoke:
        for grantee, privs in _by_grantee(plan.revoke).items():
            mine = [g for g in plan.revoke if g.grantee == grantee]
            actions.attempt(
                f"revoke from {grantee}: {', '.join(privs)}", lambda m=mine: admin.revoke(m)
            )
    else:
        actions.add(
            "revoke write privileges", "unchanged", "no account but the exempt ones has any"
        )
    revoke_failed = bool(actions.failed)
    if plan.disconnect_users and not revoke_failed:
        users = set(plan.disconnect_users)
        for s in admin.sessions():
            if s.internal or s.user not in users:
                continue
            gone = actions.attempt(
                f"close session {s.id} of {s.user} (drops its cached privileges)",
                lambda s=s: admin.end_session(s.id),
            )
            if gone.value is False:
                actions.amend_last("unchanged", "already gone")
    result.actions = actions.actions
    result.problems = [a.line() for a in actions.failed]
    if not revoke_failed:
        left = [
            g for g in admin.grants() if g.privilege in WRITE_PRIVILEGES and g in set(plan.revoke)
        ]
        result.problems += [
            f"still granted after revoking: {g.grantee} {g.privilege}" for g in left
        ]
    undo.note(
        plan.record.incident_id,
        f"archive schema {schema!r} on {target.name} protected"
        + (
            f"; still writable by {', '.join(result.still_writable)}"
            if result.still_writable
            else ""
        ),
        target.name,
        "failed" if result.problems else "ok",
        {"actions": [a.model_dump() for a in result.actions]},
    )
    return result


def lift_archive_protection(
    admin: MySQLEmergencyAdmin,
    undo: UndoStore,
    target: ServerTarget,
    *,
    dry_run: bool = False,
    incident_id: str | None = None,
    log: Any | None = None,
) -> ArchiveResult:
    record = undo.load(KIND, target)
    if record is None or not record.active or record.archive is None:
        what = (
            "no archive protection was recorded: nothing to lift"
            if record is None
            else "the recorded archive protection was lifted already: nothing to lift"
        )
        return ArchiveResult(
            target=target,
            dry_run=dry_run,
            plan=[what],
            actions=[Action(system=target.name, what=what, outcome="unchanged")],
        )
    restore = plan_archive_lift(record, admin.grants())
    lines = [
        f"grant back to {grantee}: {', '.join(privs)}"
        for grantee, privs in _by_grantee(restore).items()
    ] or ["every recorded privilege is granted already"]
    result = ArchiveResult(target=target, dry_run=dry_run, plan=lines)
    if dry_run:
        result.actions = [Action(system=target.name, what=x, outcome="planned") for x in lines]
        return result
    actions = ActionLog(target.name, log)
    for grantee in _by_grantee(restore):
        mine = [g for g in restore if g.grantee == grantee]
        actions.attempt(
            f"grant back to {grantee}: {', '.join(_by_grantee(mine)[grantee])}",
            lambda m=mine: admin.grant(m),
        )
    result.actions = actions.actions
    result.problems = [a.line() for a in actions.failed]
    if not result.problems:
        missing = plan_archive_lift(record, admin.grants())
        result.problems = [f"not granted back: {g.grantee} {g.privilege}" for g in missing]
    if not result.problems:
        lifted = record.model_copy(
            update={
                "status": "lifted",
                "lifted_at": utcnow(),
                "incident_id": incident_id or record.incident_id,
            }
        )
        undo.save(lifted, f"archive protection on {target.name} lifted: privileges restored")
    return result
