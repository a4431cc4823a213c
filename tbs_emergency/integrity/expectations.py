"""great-expectations suites per table, written as plain data (no great_expectations import).

The Prefect task turns these specs into `gx.expectations.*` objects and validates the sampled
rows with them (tasks/integrity.py); great_expectations costs seconds to import and is kept out
of everything else. Suites follow from the configuration and the other store:

- `<table>.sample`, run on each store's sampled rows: key columns not null; the key unique
  (compound for composite keys); each compared non-text column within the minimum and maximum
  the *other* store holds for it (normalised values, see normalize.py);
- `<table>.parity`, run on a one-row frame of both row counts: the counts are equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tbs_emergency.integrity.normalize import display
from tbs_emergency.integrity.source import Profile, Row, TablePlan


@dataclass(frozen=True)
class ExpectationSpec:
    type: str  # the great_expectations.expectations class name
    kwargs: dict[str, Any]


@dataclass
class ExpectationOutcome:
    """One validation: which suite on which data, and the expectations that failed."""

    suite: str
    data: str  # "heavydb[blue] sample", "row counts"
    success: bool
    evaluated: int
    failed: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def sample_suite(plan: TablePlan, other: Profile | None) -> list[ExpectationSpec]:
    specs = [ExpectationSpec("ExpectColumnValuesToNotBeNull", {"column": k.name}) for k in plan.key]
    if len(plan.key) == 1:
        specs.append(ExpectationSpec("ExpectColumnValuesToBeUnique", {"column": plan.key[0].name}))
    else:
        specs.append(
            ExpectationSpec("ExpectCompoundColumnsToBeUnique", {"column_list": plan.key_names})
        )
    if other is not None:
        for c in plan.columns:
            lo, hi = other.minimum.get(c.name), other.maximum.get(c.name)
            if c.is_text or lo is None or hi is None:
                continue
            specs.append(
                ExpectationSpec(
                    "ExpectColumnValuesToBeBetween",
                    {"column": c.name, "min_value": lo, "max_value": hi},
                )
            )
    return specs


def parity_suite() -> list[ExpectationSpec]:
    return [
        ExpectationSpec(
            "ExpectColumnPairValuesToBeEqual", {"column_A": "left_rows", "column_B": "right_rows"}
        )
    ]


def sample_records(plan: TablePlan, rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Sampled rows as records for a DataFrame (normalised values, text as is)."""
    names = [c.name for c in plan.specs]
    return [dict(zip(names, r, strict=True)) for r in rows]


def describe_spec(plan: TablePlan, spec: ExpectationSpec) -> str:
    """One line for people: the expectation with bounds shown as values, not normalised ints."""
    kw = dict(spec.kwargs)
    if spec.type == "ExpectColumnValuesToBeBetween":
        col = next(c for c in plan.specs if c.name == kw["column"])
        return (
            f"{col.name} between {display(kw['min_value'], col)}"
            f" and {display(kw['max_value'], col)}"
        )
    if spec.type == "ExpectColumnValuesToNotBeNull":
        return f"{kw['column']} not null"
    if spec.type == "ExpectColumnValuesToBeUnique":
        return f"{kw['column']} unique"
    if spec.type == "ExpectCompoundColumnsToBeUnique":
        return f"({', '.join(kw['column_list'])}) unique"
    if spec.type == "ExpectColumnPairValuesToBeEqual":
        return "row counts equal"
    return f"{spec.type}({kw})"
