"""Severity classification (runbook: "Severity Classification").

| Severity | Response           | Authority                                   |
|----------|--------------------|---------------------------------------------|
| P0       | immediate, 0-5 min | automatic rollback + immediate escalation   |
| P1       | 5-15 min           | on-call engineer decision                   |
| P2       | next business day  | standard support procedures                 |

Performance degradation: over 50% is P0, 25-50% is P1, under 25% is P2. The boundaries follow
the runbook's words: "> 50%" is strictly over, so exactly 50% is P1; exactly 25% is P1 ("25-50%")
for classification, although the performance *trigger* only fires strictly beyond 25% (see
`triggers`).
"""

from __future__ import annotations

from enum import StrEnum


class Severity(StrEnum):
    P0 = "P0"
    P1 = "P1"
    P2 = "P2"

    @property
    def rank(self) -> int:
        """0 is the most severe."""
        return int(self.value[1])

    def at_least(self, other: Severity) -> bool:
        """True when self is as severe as other or more."""
        return self.rank <= other.rank

    @property
    def response_minutes(self) -> float | None:
        """How fast the runbook wants a response (upper bound); None: next business day."""
        return RESPONSE_MINUTES[self]

    @property
    def authority(self) -> str:
        return AUTHORITY[self]


RESPONSE_MINUTES: dict[Severity, float | None] = {
    Severity.P0: 5.0,
    Severity.P1: 15.0,
    Severity.P2: None,
}

AUTHORITY: dict[Severity, str] = {
    Severity.P0: "automatic rollback + immediate escalation",
    Severity.P1: "on-call engineer decision",
    Severity.P2: "standard support procedures",
}

# Error rate at or beyond which the system counts as "completely inaccessible" (P0).
ERROR_RATE_P0_PERCENT = 50.0


def most_severe(*severities: Severity) -> Severity:
    return min(severities, key=lambda s: s.rank)


def performance_severity(degradation_percent: float, p0_over: float = 50.0) -> Severity:
    """P0 strictly over `p0_over`% degradation, P1 from 25% up to it, P2 below 25%."""
    if degradation_percent > p0_over:
        return Severity.P0
    if degradation_percent >= 25.0:
        return Severity.P1
    return Severity.P2


def error_rate_severity(error_rate_percent: float) -> Severity:
    """P0 when at least half the requests fail ("system inaccessible"), else P1 ("key features
    unavailable")."""
    return Severity.P0 if error_rate_percent >= ERROR_RATE_P0_PERCENT else Severity.P1


def database_severity(all_probes_failed: bool) -> Severity:
    """P0 when the database did not answer at all in the window ("system down"), else P1
    ("database connectivity issues")."""
    return Severity.P0 if all_probes_failed else Severity.P1
