"""Check results, the pass/fail rules, and the verdict a recovery flow acts on.

Every check ends in one of four statuses:

- `pass` / `fail`: measured, and within or outside its threshold;
- `error`: could not be measured (a system did not answer, a step raised): counts as a failure,
  because a recovery that cannot be validated is not validated;
- `skipped`: not configured (no sample users, no strategies, disabled): listed, never a pass.

The verdict passes when no *required* check failed or errored and at least one check passed.
Thresholds come from configuration (`[validation]`); the rules here only compare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from tbs_emergency.validation.stats import LatencySummary

Status = Literal["pass", "fail", "error", "skipped"]
FAILING: tuple[Status, ...] = ("fail", "error")


class CheckResult(BaseModel):
    """One line of the validation table."""

    name: str
    category: str
    status: Status
    measured: float | None = None
    unit: str = ""
    threshold: str = ""
    detail: str = ""
    required: bool = True
    source: str = "measured"  # measured here, or where the number comes from (prometheus)
    seconds: float | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.required and self.status in FAILING

    def row(self) -> dict[str, Any]:
        """The table artifact's row."""
        return {
            "check": self.name,
            "category": self.category,
            "result": self.status.upper(),
            "measured": ""
            if self.measured is None
            else f"{self.measured:,.1f} {self.unit}".strip(),
            "threshold": self.threshold,
            "source": self.source,
            "required": "yes" if self.required else "no",
            "detail": self.detail,
        }


def decide(checks: Sequence[CheckResult]) -> bool:
    """Pass iff no required check failed or errored and at least one check passed."""
    return not any(c.failed for c in checks) and any(c.status == "pass" for c in checks)


class Verdict(BaseModel):
    """The outcome of one `recovery_validation` run."""

    env: str
    passed: bool
    started_at: datetime
    finished_at: datetime
    checks: list[CheckResult]
    time_scale: float = 1.0
    incident_id: str | None = None
    notes: list[str] = Field(default_factory=list)

    @classmethod
    def of(
        cls,
        env: str,
        checks: Sequence[CheckResult],
        started_at: datetime,
        finished_at: datetime,
        **kw: Any,
    ) -> Verdict:
        return cls(
            env=env,
            passed=decide(checks),
            started_at=started_at,
            finished_at=finished_at,
            checks=list(checks),
            **kw,
        )

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.failed]

    @property
    def skipped(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "skipped"]

    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "fail": 0, "error": 0, "skipped": 0}
        for c in self.checks:
            out[c.status] += 1
        return out

    def headline(self) -> str:
        n = self.counts()
        word = "PASSED" if self.passed else "FAILED"
        parts = [f"{n['pass']} passed"]
        if n["fail"]:
            parts.append(f"{n['fail']} failed")
        if n["error"]:
            parts.append(f"{n['error']} could not be measured")
        if n["skipped"]:
            parts.append(f"{n['skipped']} skipped (not configured)")
        scaled = f", durations x{self.time_scale:g}" if self.time_scale != 1.0 else ""
        return f"recovery validation of {self.env} {word}: {', '.join(parts)}{scaled}"

    def table(self) -> list[dict[str, Any]]:
        return [c.row() for c in self.checks]

    def markdown(self) -> str:
        def cell(v: Any) -> str:
            return str(v).replace("|", "\\|").replace("\n", " ")

        lines = [f"# {self.headline()}", ""]
        if self.incident_id:
            lines += [f"Incident: `{self.incident_id}`", ""]
        took = (self.finished_at - self.started_at).total_seconds()
        lines += [f"Started {self.started_at.isoformat()}, took {took:.1f} s.", ""]
        if self.failures:
            lines += ["## What failed", ""]
            lines += [f"- **{cell(c.name)}**: {cell(c.detail)}" for c in self.failures]
            lines.append("")
        lines += [
            "## Checks",
            "",
            "| result | check | category | measured | threshold | source | detail |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in self.checks:
            r = c.row()
            lines.append(
                f"| {r['result']} | {cell(c.name)} | {c.category} | {cell(r['measured'])} |"
                f" {cell(c.threshold)} | {cell(c.source)} | {cell(c.detail)} |"
            )
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {cell(n)}" for n in self.notes]
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------


def min_rows_per_s(baseline: float, max_degradation_percent: float) -> float:
    """The lowest acceptable throughput: the baseline less the allowed degradation."""
    return baseline * (1.0 - max_degradation_percent / 100.0)


def throughput_check(
    name: str,
    rows_per_s: float | None,
    baseline: float,
    max_degradation_percent: float,
    *,
    source: str,
    detail: str = "",
    error: str | None = None,
    category: str = "performance",
    data: Mapping[str, Any] | None = None,
) -> CheckResult:
    """Rows/s against the baseline (runbook: 37,303 rows/s; a drop over 25% is a breach)."""
    floor = min_rows_per_s(baseline, max_degradation_percent)
    threshold = f">= {floor:,.0f} rows/s ({baseline:,.0f} baseline - {max_degradation_percent:g}%)"
    if error is not None or rows_per_s is None:
        return CheckResult(
            name=name,
            category=category,
            status="error",
            unit="rows/s",
            threshold=threshold,
            source=source,
            detail=error or "no measurement",
            data=dict(data or {}),
        )
    ratio = rows_per_s / baseline if baseline else 0.0
    text = f"{ratio:.1%} of baseline" + (f"; {detail}" if detail else "")
    return CheckResult(
        name=name,
        category=category,
        status="pass" if rows_per_s >= floor else "fail",
        measured=round(rows_per_s, 1),
        unit="rows/s",
        threshold=threshold,
        source=source,
        detail=text,
        data=dict(data or {}),
    )


def latency_check(
    name: str,
    summary: LatencySummary | None,
    limits_ms: Mapping[str, float | None],
    max_error_percent: float,
    *,
    category: str,
    detail: str = "",
    error: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> CheckResult:
    """Percentiles (keys `p50`, `p95`, `p99`, `mean`) within their limits and failed requests
    within `max_error_percent`. The measured value shown is the p95."""
    shown = [f"{k} <= {v:g} ms" for k, v in limits_ms.items() if v is not None]
    threshold = ", ".join([*shown, f"errors <= {max_error_percent:g}%"])
    if error is not None or summary is None or summary.samples == 0:
        return CheckResult(
            name=name,
            category=category,
            status="error",
            unit="ms",
            threshold=threshold,
            detail=error or "no samples",
            data=dict(data or {}),
        )
    problems = []
    for key, limit in limits_ms.items():
        if limit is None:
            continue
        got = getattr(summary, f"{key}_ms", None)
        if got is None:
            problems.append(f"no {key}: every request failed")
        elif got > limit:
            problems.append(f"{key} {got:.0f} ms over {limit:g} ms")
    if summary.error_percent > max_error_percent:
        problems.append(
            f"{summary.errors} of {summary.samples} requests failed"
            f" ({summary.error_percent:.1f}% > {max_error_percent:g}%)"
        )
    text = summary.line()
    if problems:
        text = "; ".join(problems) + f" ({text})"
    if detail:
        text += f"; {detail}"
    return CheckResult(
        name=name,
        category=category,
        status="fail" if problems else "pass",
        measured=summary.p95_ms if summary.p95_ms is not None else summary.mean_ms,
        unit="ms p95",
        threshold=threshold,
        detail=text,
        data={"summary": summary.model_dump(), **dict(data or {})},
    )


def skipped(name: str, category: str, why: str, required: bool = True) -> CheckResult:
    return CheckResult(
        name=name, category=category, status="skipped", detail=why, required=required
    )


def errored(name: str, category: str, why: str, required: bool = True) -> CheckResult:
    return CheckResult(name=name, category=category, status="error", detail=why, required=required)
