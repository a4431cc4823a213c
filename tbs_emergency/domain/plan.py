"""The runbook's two rollback procedures as data: steps, budgets and checklists.

- `AUTOMATED_STEPS`: "Automated Response Sequence", four steps, 180 s in all.
- `MANUAL_PHASES`: "15-Minute Manual Rollback Process", five phases with their checklists.

Budgets are the runbook's (seconds from the start of the procedure); `scaled(...)` multiplies
them for drills. `overrun(...)` says whether a step or phase finished after its window closed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    starts_s: float
    ends_s: float
    checklist: tuple[str, ...] = ()

    @property
    def budget_s(self) -> float:
        return self.ends_s - self.starts_s

    def scaled(self, scale: float) -> Step:
        return Step(
            self.key, self.title, self.starts_s * scale, self.ends_s * scale, self.checklist
        )


AUTOMATED_STEPS: tuple[Step, ...] = (
    Step(
        "1-detection",
        "Detection",
        0,
        30,
        (
            "Monitoring systems detect threshold breach",
            "Multiple validation checks confirm issue",
            "Automated alert generation begins",
            "Pre-rollback health checks initiated",
        ),
    ),
    Step(
        "2-validation",
        "Validation",
        30,
        60,
        (
            "Cross-system validation of issue severity",
            "Impact assessment (users affected, data integrity)",
            "Rollback feasibility check",
            "Notification preparation",
        ),
    ),
    Step(
        "3-execution",
        "Execution",
        60,
        120,
        (
            "Load balancer traffic redirect to Blue environment",
            "Database transaction completion verification",
            "User session preservation protocols",
            "Real-time monitoring of rollback progress",
        ),
    ),
    Step(
        "4-confirmation",
        "Confirmation",
        120,
        180,
        (
            "System health validation post-rollback",
            "User access verification",
            "Performance metric confirmation",
            "Incident logging and alert notifications",
        ),
    ),
)
AUTOMATED_BUDGET_S = 180.0

MANUAL_PHASES: tuple[Step, ...] = (
    Step(
        "phase-1-assessment",
        "Assessment & Authorization",
        0,
        120,
        (
            "Verify rollback necessity with secondary on-call",
            "Document incident trigger and timestamp",
            "Authorize rollback execution",
            "Notify emergency response team",
        ),
    ),
    Step(
        "phase-2-traffic",
        "Traffic Redirection",
        120,
        300,
        (
            "Redirect load balancer to Blue environment",
            "Verify traffic redirection successful",
            "Monitor Blue environment health",
            "Confirm user request routing",
        ),
    ),
    Step(
        "phase-3-data",
        "Database & Data Management",
        300,
        600,
        (
            "Complete pending database transactions",
            "Synchronize critical data between environments",
            "Verify data integrity across systems",
            "Create rollback checkpoint",
        ),
    ),
    Step(
        "phase-4-sessions",
        "Session & User Management",
        600,
        720,
        (
            "Preserve active user sessions",
            "Transfer authentication states",
            "Verify user access continuity",
            "Update session routing",
        ),
    ),
    Step(
        "phase-5-validation",
        "Validation & Communication",
        720,
        900,
        (
            "Execute comprehensive health checks",
            "Validate system performance metrics",
            "Send user notifications",
            "Update monitoring systems",
        ),
    ),
)
MANUAL_BUDGET_S = 900.0


def overrun(step: Step, finished_at_s: float, scale: float = 1.0) -> float:
    """Seconds past the step's window (0.0 when on time); times from the procedure's start."""
    return max(0.0, finished_at_s - step.ends_s * scale)


def step(key: str) -> Step:
    for s in (*AUTOMATED_STEPS, *MANUAL_PHASES):
        if s.key == key:
            return s
    raise KeyError(key)
