"""Escalation policy: who to page next for an unacknowledged incident (pure).

The runbook's contact matrix: primary on-call responds in under 5 minutes for P0 (15 for P1);
secondary in under 15 minutes for escalated issues; the engineering manager in under 30.
An unacknowledged P0 (or P1) therefore goes up the chain when the previous contact's response
time has run out:

    P0: primary at 0, secondary at 5 min, manager at 5 + 15 = 20 min
    P1: primary at 0, secondary at 15 min, manager at 15 + 15 = 30 min
    P2: primary only (next business day), never escalated

A contact's own `response_minutes` (configuration) replaces the runbook's default for its role.
Times are multiplied by `time_scale`. Acknowledgement by anyone stops the escalation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tbs_emergency.domain.severity import Severity

CHAIN = ("primary", "secondary", "escalation")
DEFAULT_RESPONSE_MINUTES: dict[str, dict[Severity, float]] = {
    "primary": {Severity.P0: 5.0, Severity.P1: 15.0, Severity.P2: 15.0},
    "secondary": {Severity.P0: 15.0, Severity.P1: 15.0, Severity.P2: 15.0},
    "escalation": {Severity.P0: 30.0, Severity.P1: 30.0, Severity.P2: 30.0},
}


class _ContactLike(Protocol):
    name: str
    role: str
    response_minutes: float | None


@dataclass(frozen=True)
class Page:
    """Page `contact` (by name) once the incident is `at_s` seconds old."""

    contact: str
    role: str
    at_s: float


def response_minutes(contact: _ContactLike, severity: Severity) -> float:
    # A configured value is the P0 response time of that contact; P1 never shortens it.
    default = DEFAULT_RESPONSE_MINUTES.get(contact.role, {}).get(severity, 15.0)
    if contact.response_minutes is None:
        return default
    if contact.role == "primary" and severity != Severity.P0:
        return max(contact.response_minutes, default)
    return contact.response_minutes


def schedule(
    contacts: Sequence[_ContactLike], severity: Severity, time_scale: float = 1.0
) -> list[Page]:
    """When each contact of the chain is paged if nobody acknowledges."""
    pages: list[Page] = []
    at = 0.0
    for role in CHAIN:
        people = [c for c in contacts if c.role == role]
        if not people:
            continue
        for c in people:
            pages.append(Page(c.name, role, at * 60.0 * time_scale))
        if severity == Severity.P2:
            break
        at += min(response_minutes(c, severity) for c in people)
    return pages


def due(
    contacts: Sequence[_ContactLike],
    severity: Severity,
    age_s: float,
    acknowledged: bool,
    already_paged: set[str],
    time_scale: float = 1.0,
) -> list[Page]:
    """Pages due now: scheduled at or before `age_s`, not yet sent, and nobody acknowledged."""
    if acknowledged:
        return []
    return [
        p
        for p in schedule(contacts, severity, time_scale)
        if p.at_s <= age_s and p.contact not in already_paged
    ]


def next_page_at(
    contacts: Sequence[_ContactLike],
    severity: Severity,
    already_paged: set[str],
    time_scale: float = 1.0,
) -> float | None:
    """Incident age (s) at which the next page falls due; None when the chain is exhausted."""
    pending = [
        p.at_s for p in schedule(contacts, severity, time_scale) if p.contact not in already_paged
    ]
    return min(pending) if pending else None
