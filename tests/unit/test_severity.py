"""Severity classification per the runbook."""

from __future__ import annotations

import pytest

from tbs_emergency.domain.severity import (
    Severity,
    database_severity,
    error_rate_severity,
    most_severe,
    performance_severity,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("degradation", "expected"),
    [(50.01, "P0"), (50.0, "P1"), (25.0, "P1"), (24.99, "P2"), (99.0, "P0"), (0.0, "P2")],
)
def test_performance_severity_boundaries(degradation: float, expected: str) -> None:
    assert performance_severity(degradation) == Severity(expected)


def test_other_severities_and_ordering() -> None:
    assert error_rate_severity(50.0) == Severity.P0
    assert error_rate_severity(49.9) == Severity.P1
    assert database_severity(True) == Severity.P0 and database_severity(False) == Severity.P1
    assert most_severe(Severity.P2, Severity.P0, Severity.P1) == Severity.P0
    assert Severity.P0.at_least(Severity.P1) and not Severity.P2.at_least(Severity.P1)
    assert Severity.P0.response_minutes == 5 and Severity.P2.response_minutes is None
    assert "automatic rollback" in Severity.P0.authority
