"""The runbook's three timed stages of the security incident response."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    key: str
    title: str
    ends_at_s: float  # the stage is due this long after the incident opened
    checklist: tuple[str, ...]


STAGES = (
    Stage(
        "1-immediate",
        "Immediate response (0-5 minutes)",
        300.0,
        (
            "Isolate affected systems from network",
            "Preserve system state for forensic analysis",
            "Activate security incident response team",
            "Document initial findings and timeline",
        ),
    ),
    Stage(
        "2-assessment",
        "Assessment phase (5-15 minutes)",
        900.0,
        (
            "Analyze attack vectors and entry points",
            "Assess data exposure and system compromise",
            "Determine rollback vs. containment strategy",
            "Evaluate user impact and data integrity",
        ),
    ),
    Stage(
        "3-containment",
        "Containment & recovery (15-30 minutes)",
        1800.0,
        (
            "Execute rollback to secure environment",
            "Patch identified vulnerabilities",
            "Reset compromised credentials",
            "Implement additional security measures",
        ),
    ),
)
