"""Contact verification (runbook: "Emergency Contact Verification: Weekly", "Verify contact
information accuracy").

A contact is *stale* when a person must look at it: its details were last confirmed longer ago
than `drills.contact_stale_days` (or never), an address its channels need is missing or
malformed, one of its channels could not be reached or did not accept a message, or (in a
communication drill) it did not acknowledge in time. The contact matrix is *incomplete* when a
role of the escalation chain (primary, secondary, escalation) has nobody.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from typing import Any, Protocol

from pydantic import BaseModel, Field

CHAIN_ROLES = ("primary", "secondary", "escalation")
_PHONE = re.compile(r"^\+[1-9]\d{6,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class _Contact(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def phone(self) -> str | None: ...

    @property
    def email(self) -> str | None: ...

    @property
    def channels(self) -> list[str]: ...

    @property
    def verified_at(self) -> str | None: ...


class ContactFinding(BaseModel):
    contact: str
    role: str
    channels: list[str] = Field(default_factory=list)
    verified_at: str | None = None
    verified_age_days: float | None = None
    problems: list[str] = Field(default_factory=list)

    @property
    def stale(self) -> bool:
        return bool(self.problems)

    def row(self) -> dict[str, Any]:
        return {
            "contact": self.contact,
            "role": self.role,
            "channels": ", ".join(self.channels) or "-",
            "verified": self.verified_at or "never",
            "status": "STALE" if self.stale else "ok",
            "problems": "; ".join(self.problems) or "-",
        }


def parse_verified_at(value: str | None) -> datetime | None:
    """`verified_at` as written in the config: an ISO date or date-time; None if absent/bad."""
    if not value:
        return None
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), tzinfo=None)
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def verify_contacts(
    contacts: Sequence[_Contact],
    channel_kinds: Mapping[str, str],
    now: datetime,
    stale_after_days: float,
    channel_problems: Mapping[str, str] | None = None,
) -> list[ContactFinding]:
    """One finding per contact. `channel_kinds`: channel name -> kind (smtp, sms, ...);
    `channel_problems`: channel name -> why it could not be reached (from probes or deliveries)."""
    channel_problems = channel_problems or {}
    out = []
    for c in contacts:
        f = ContactFinding(
            contact=c.name, role=c.role, channels=list(c.channels), verified_at=c.verified_at
        )
        when = parse_verified_at(c.verified_at)
        if c.verified_at and when is None:
            f.problems.append(f"verified_at {c.verified_at!r} is not a date")
        elif when is None:
            f.problems.append("details never confirmed (no verified_at)")
        else:
            ref = now if when.tzinfo else now.replace(tzinfo=None)
            age = (ref - when).total_seconds() / 86400.0
            f.verified_age_days = round(age, 1)
            if age > stale_after_days:
                f.problems.append(
                    f"details last confirmed {age:.0f} days ago (limit {stale_after_days:g})"
                )
        if not c.channels:
            f.problems.append("no channel: this contact cannot be reached")
        kinds = {ch: channel_kinds.get(ch) for ch in c.channels}
        if "smtp" in kinds.values():
            if not c.email:
                f.problems.append("an e-mail channel but no e-mail address")
            elif not _EMAIL.match(c.email):
                f.problems.append(f"e-mail address {c.email!r} is malformed")
        if "sms" in kinds.values():
            if not c.phone:
                f.problems.append("an SMS channel but no phone number")
            elif not _PHONE.match(c.phone):
                f.problems.append(f"phone {c.phone!r} is not in international format (+...)")
        for ch in c.channels:
            if ch in channel_problems:
                f.problems.append(f"channel {ch}: {channel_problems[ch]}")
        out.append(f)
    return out


def missing_roles(contacts: Sequence[_Contact]) -> list[str]:
    """Roles of the escalation chain nobody holds."""
    held = {c.role for c in contacts}
    return [r for r in CHAIN_ROLES if r not in held]


def add_problem(findings: Sequence[ContactFinding], contact: str, problem: str) -> None:
    for f in findings:
        if f.contact == contact and problem not in f.problems:
            f.problems.append(problem)
