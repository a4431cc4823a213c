"""Privilege review (runbook: `review-user-privileges.sh --report-anomalies`): an account's
privileges against `security.privilege_policy`. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tbs_emergency.config import PrivilegePolicy
from tbs_emergency.connectors.base import PrivilegeGrant
from tbs_emergency.security.assessment import Finding

DEFAULT_MYSQL_ALLOWED = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})


def review_mysql(
    user: str, grants: Sequence[PrivilegeGrant], policy: PrivilegePolicy
) -> list[Finding]:
    mine = [g for g in grants if g.user == user and g.host is not None]
    allowed = {p.upper() for p in policy.mysql.get(user, [])}
    named = user in policy.mysql
    out = []
    for g in mine:
        if "ALL" in allowed or "ALL PRIVILEGES" in allowed:
            break
        where = "*.*" if g.level == "global" else f"{g.schema}" + (f".{g.table}" if g.table else "")
        if named and g.privilege in allowed:
            continue
        if not named and g.level != "global" and g.privilege in DEFAULT_MYSQL_ALLOWED:
            continue
        why = (
            "not in the policy for this user"
            if named
            else (
                "a global privilege"
                if g.level == "global"
                else "beyond SELECT/INSERT/UPDATE/DELETE"
            )
        )
        out.append(
            Finding(
                kind="privilege-anomaly",
                severity="high" if g.level == "global" else "medium",
                summary=f"MySQL {g.grantee}: {g.privilege} on {where} ({why})",
                detail={
                    "engine": "mysql",
                    "grantee": g.grantee,
                    "privilege": g.privilege,
                    "on": where,
                },
            )
        )
    return out


def review_heavydb(
    user: str, facts: dict[str, Any] | None, policy: PrivilegePolicy
) -> list[Finding]:
    if not facts or not facts.get("is_super"):
        return []
    if user in policy.heavydb_superusers:
        return []
    return [
        Finding(
            kind="privilege-anomaly",
            severity="high",
            summary=f"HeavyDB {user} is a superuser (not in privilege_policy.heavydb_superusers)",
            detail={"engine": "heavydb", "user": user},
        )
    ]


def review_app(user: str, doc: dict[str, Any] | None, policy: PrivilegePolicy) -> list[Finding]:
    if not doc:
        return []
    role = str(doc.get("role") or "")
    if role in policy.app_privileged_roles and user not in policy.app_privileged_users:
        return [
            Finding(
                kind="privilege-anomaly",
                severity="high",
                summary=f"application user {user} holds the privileged role {role!r}"
                " (not in privilege_policy.app_privileged_users)",
                detail={"engine": "app", "user": user, "role": role},
            )
        ]
    return []
