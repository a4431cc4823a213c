"""Accounts `account suspend` refuses to suspend without `--force`.

Suspending the tool's own accounts locks the emergency tooling out of the systems it must act
on in the middle of an incident; suspending a priority user locks out the people and services
the runbook keeps connected. So these are refused unless forced:

- `database_emergency.mysql_admin` (the account server-level and security steps run as);
- each environment's MySQL account (`environments.<env>.mysql.user`, which is also the account
  the tool uses when no admin account is configured) and its `recovery_user`;
- each environment's HeavyDB login user (`environments.<env>.heavydb.user`);
- the recovery validation's MySQL account (`validation.performance.mysql_account`);
- the priority users (`database_emergency.priority_users.mysql` and `.heavydb`).

Names are compared exactly (MySQL account names are case-sensitive).
"""

from __future__ import annotations

from typing import Any


def protected_accounts(settings: Any) -> dict[str, list[str]]:
    """User name -> why it is protected (configuration paths, never a credential)."""
    out: dict[str, list[str]] = {}

    def add(user: str | None, why: str) -> None:
        if user and why not in out.setdefault(user, []):
            out[user].append(why)

    de = settings.database_emergency
    if de.mysql_admin is not None:
        add(de.mysql_admin.user, "the tool's MySQL admin account (database_emergency.mysql_admin)")
    for env in sorted(settings.environments):
        e = settings.environments[env]
        add(e.mysql.user, f"the MySQL account the tool connects as (environments.{env}.mysql.user)")
        add(e.mysql.recovery_user, f"the recovery account (environments.{env}.mysql.recovery_user)")
        add(e.heavydb.user, f"the HeavyDB login user (environments.{env}.heavydb.user)")
    perf = settings.validation.performance.mysql_account
    if perf is not None:
        add(perf.user, "the validation's MySQL account (validation.performance.mysql_account)")
    for user in de.priority_users.mysql:
        add(user, "a priority user (database_emergency.priority_users.mysql)")
    for user in de.priority_users.heavydb:
        add(user, "a priority user (database_emergency.priority_users.heavydb)")
    return out


def suspension_refusal(settings: Any, user: str) -> str | None:
    """One line saying why suspending `user` is refused without --force, or None."""
    reasons = protected_accounts(settings).get(user)
    if not reasons:
        return None
    return (
        f"refused to suspend {user!r}: it is {'; and '.join(reasons)}; suspending it would lock"
        " the emergency tooling or a priority user out; nothing was changed (--force to suspend"
        " it anyway)"
    )
