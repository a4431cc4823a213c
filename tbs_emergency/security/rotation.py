"""Credential rotation (runbook: `reset-compromised-credentials.sh --all-service-accounts
--force-rotation`), all or nothing.

For each service account (`security.service_accounts`): read the current password from its
Prefect Secret block and check that it logs in (preflight, every account before any change);
then, account by account: generate a strong password, change it on the server (every host of a
MySQL account), check that the new one logs in and the old one is refused, write it to the
Secret block and read it back. When any of that fails, the account is put back (old password on
the server, old value in the block) and so is every account this run rotated before it: the run
changes nothing or everything. Passwords never appear in a result, a log line or an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from tbs_emergency.connectors._common import redact_text
from tbs_emergency.dbops.actions import Action
from tbs_emergency.errors import TbsError

_log = logging.getLogger("tbs_emergency.security")


class AccountServer(Protocol):
    """One database server as rotation sees it (MySQL or HeavyDB, as a privileged account)."""

    name: str

    def hosts(self, user: str, wanted: Sequence[str]) -> list[str]:
        """The account's hosts to change (MySQL); `[""]` for HeavyDB; [] when no such user."""
        ...

    def set_password(self, user: str, host: str, password: str) -> None: ...

    def try_login(self, user: str, password: str) -> tuple[bool, str]: ...


class SecretBlocks(Protocol):
    def read(self, name: str) -> str: ...

    def write(self, name: str, value: str) -> None: ...


class AccountToRotate(BaseModel):
    engine: Literal["mysql", "heavydb"]
    user: str
    block: str | None  # None: the password is not in a Secret block (cannot be rotated)
    source: str  # where the password comes from, safe to print
    server: str  # the server's system name
    hosts: list[str] = Field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.engine} account {self.user} on {self.server}"


class AccountOutcome(BaseModel):
    account: str
    server: str
    block: str | None
    status: Literal["rotated", "rolled-back", "failed", "planned", "not-rotated"]
    hosts: list[str] = Field(default_factory=list)
    detail: str = ""


class RotationReport(BaseModel):
    dry_run: bool = False
    accounts: list[AccountOutcome] = Field(default_factory=list)
    actions: list[Action] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def rotated(self) -> list[str]:
        return [a.account for a in self.accounts if a.status == "rotated"]

    def markdown(self) -> str:
        head = "# Credential rotation" + (" (dry run: nothing changed)" if self.dry_run else "")
        out = [head, "", f"**Result:** {'ok' if self.ok else 'FAILED: nothing rotated'}", ""]
        out += ["| account | server | secret block | status | detail |", "|---|---|---|---|---|"]
        for a in self.accounts:
            out.append(f"| {a.account} | {a.server} | {a.block or '-'} | {a.status} | {a.detail} |")
        out += [f"- **problem:** {p}" for p in self.problems]
        return "\n".join(out) + "\n"


class RotationFailed(TbsError):
    pass


def _why(exc: BaseException, secrets: Sequence[str | None]) -> str:
    text = str(exc) if isinstance(exc, TbsError) else f"{type(exc).__name__}: {exc}"
    return redact_text(text, secrets)


def rotate_accounts(
    accounts: Sequence[AccountToRotate],
    servers: dict[str, AccountServer],
    blocks: SecretBlocks,
    generate: Callable[[], str],
    *,
    dry_run: bool = False,
    log: Any | None = None,
) -> RotationReport:
    """Rotate every account or none (see the module docstring)."""
    log = log or _log
    report = RotationReport(dry_run=dry_run)

    def act(system: str, what: str, outcome: Any, detail: str = "") -> None:
        a = Action(system=system, what=what, outcome=outcome, detail=detail)
        report.actions.append(a)
        log.log(logging.WARNING if outcome == "failed" else logging.INFO, "%s", a.line())

    # -- preflight: every account, before anything changes ------------------------------------
    old: dict[str, str] = {}
    hosts: dict[str, list[str]] = {}
    for acct in accounts:
        server = servers[acct.server]
        outcome = AccountOutcome(
            account=acct.user, server=acct.server, block=acct.block, status="not-rotated"
        )
        report.accounts.append(outcome)
        if acct.block is None:
            outcome.detail = (
                f"its password comes from {acct.source}, not a Prefect Secret block: the new"
                ' one could not be stored (configure password = { block = "name" })'
            )
            report.problems.append(f"{acct.label}: {outcome.detail}")
            continue
        secret: str | None = None
        try:
            secret = blocks.read(acct.block)
            found = server.hosts(acct.user, acct.hosts)
            if not found:
                raise RotationFailed(f"no account {acct.user!r} on {acct.server}")
            ok, why = server.try_login(acct.user, secret)
            if not ok:
                raise RotationFailed(
                    f"the password in block {acct.block!r} does not log in ({why})"
                )
        except Exception as exc:
            outcome.detail = _why(exc, [secret])
            report.problems.append(f"{acct.label}: {outcome.detail}")
            act(acct.server, f"preflight {acct.user}", "failed", outcome.detail)
            continue
        old[acct.user + "@" + acct.server] = secret
        hosts[acct.user + "@" + acct.server] = found
        outcome.hosts = found
        act(
            acct.server,
            f"preflight {acct.user}",
            "done",
            f"current password logs in; hosts {', '.join(h or '-' for h in found)}",
        )
    if report.problems:
        report.problems.append("preflight failed: no account was changed")
        return report
    if dry_run:
        for acct, outcome in zip(accounts, report.accounts, strict=True):
            outcome.status = "planned"
            outcome.detail = (
                f"new password on {', '.join(h or acct.server for h in outcome.hosts)};"
                f" block {acct.block}"
            )
            act(acct.server, f"rotate {acct.user}", "planned", outcome.detail)
        return report

    # -- rotate, account by account ------------------------------------------------------------
    done: list[tuple[AccountToRotate, AccountOutcome, str]] = []
    for acct, outcome in zip(accounts, report.accounts, strict=True):
        ident = acct.user + "@" + acct.server
        previous, server = old[ident], servers[acct.server]
        new = generate()
        changed: list[str] = []
        block_written = False
        try:
            for host in hosts[ident]:
                server.set_password(acct.user, host, new)
                changed.append(host)
            ok, why = server.try_login(acct.user, new)
            if not ok:
                raise RotationFailed(f"the new password does not log in ({why})")
            ok, _ = server.try_login(acct.user, previous)
            if ok:
                raise RotationFailed("the old password still logs in after the change")
            block_written = True
            blocks.write(acct.block or "", new)
            if blocks.read(acct.block or "") != new:
                raise RotationFailed(f"block {acct.block!r} does not hold the new password")
        except Exception as exc:
            why = _why(exc, [new, previous])
            outcome.status, outcome.detail = "failed", why
            act(acct.server, f"rotate {acct.user}", "failed", why)
            report.problems.append(f"{acct.label}: {why}")
            undo = [
                (acct, outcome, changed, block_written),
                *((a, o, hosts[a.user + "@" + a.server], True) for a, o, _n in reversed(done)),
            ]
            for a, o, on_hosts, in_block in undo:
                _put_back(
                    a,
                    o,
                    on_hosts,
                    in_block,
                    old[a.user + "@" + a.server],
                    servers[a.server],
                    blocks,
                    report,
                    act,
                )
            report.problems.append("rotation rolled back: no account keeps a new password")
            return report
        outcome.status, outcome.detail = (
            "rotated",
            (
                f"new password on {len(changed)} host(s), old one refused,"
                f" block {acct.block} updated"
            ),
        )
        act(acct.server, f"rotate {acct.user}", "done", outcome.detail)
        done.append((acct, outcome, new))
    return report


def _put_back(
    acct: AccountToRotate,
    outcome: AccountOutcome,
    on_hosts: list[str],
    in_block: bool,
    previous: str,
    server: AccountServer,
    blocks: SecretBlocks,
    report: RotationReport,
    act: Callable[..., None],
) -> None:
    """The old password back on the server and in the block; verified."""
    problems: list[str] = []
    for host in on_hosts:
        try:
            server.set_password(acct.user, host, previous)
        except Exception as exc:
            problems.append(f"host {host or '-'}: {_why(exc, [previous])}")
    if in_block and acct.block:
        try:
            blocks.write(acct.block, previous)
        except Exception as exc:
            problems.append(f"block {acct.block}: {_why(exc, [previous])}")
    try:
        ok, why = server.try_login(acct.user, previous)
        if not ok:
            problems.append(f"the old password does not log in after the rollback ({why})")
    except Exception as exc:
        problems.append(_why(exc, [previous]))
    if problems:
        detail = "ROLLBACK INCOMPLETE: " + "; ".join(problems)
        report.problems.append(f"{acct.label}: {detail}")
        act(acct.server, f"roll back {acct.user}", "failed", detail)
        outcome.detail = f"{outcome.detail}; {detail}" if outcome.detail else detail
        return
    if outcome.status == "rotated":
        outcome.status = "rolled-back"
        outcome.detail = "rotated, then put back because another account failed"
    elif outcome.status == "failed":
        outcome.detail += "; old password restored"
    act(acct.server, f"roll back {acct.user}", "done", "old password restored and verified")
