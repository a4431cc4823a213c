"""Results of an integrity sweep: per table, per environment; JSON for people and machines.

Exit codes (CLI): 0 every table consistent; 1 a discrepancy was found in at least one table
(even if another could not be checked: a known discrepancy is the more urgent news; `complete`
is false then); 2 nothing inconsistent was found but at least one table could not be checked
(a store unreachable, a schema that cannot be compared, an error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tbs_emergency.integrity.diff import TableDiff
from tbs_emergency.integrity.expectations import ExpectationOutcome

DEFAULT_CAP = 100
Status = Literal["consistent", "discrepancies", "error"]


def capped(items: list[Any], cap: int) -> tuple[list[Any], bool]:
    return (items[:cap], len(items) > cap) if cap >= 0 else (items, False)


@dataclass
class TableResult:
    """One table in one environment: HeavyDB (left of the diff) against MySQL (right)."""

    table: str
    environment: str
    heavydb: str
    mysql: str
    critical: bool = False
    mode: Literal["sample", "full"] = "sample"
    heavydb_rows: int | None = None
    mysql_rows: int | None = None
    null_key_rows: dict[str, int] = field(default_factory=dict)
    sample_seed: int | None = None
    sampled: int = 0
    sample: TableDiff | None = None
    full: TableDiff | None = None
    expectations: list[ExpectationOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def findings(self) -> TableDiff | None:
        """The most complete diff: the full one when it ran, else the sample's."""
        return self.full or self.sample

    def problems(self) -> list[str]:
        """Every discrepancy found, one line each."""
        out = []
        if (
            self.heavydb_rows is not None
            and self.mysql_rows is not None
            and self.heavydb_rows != self.mysql_rows
        ):
            out.append(f"row counts differ: heavydb {self.heavydb_rows}, mysql {self.mysql_rows}")
        for store, n in self.null_key_rows.items():
            if n:
                out.append(f"{n} rows with a NULL key in {store}")
        d = self.findings
        if d is not None:
            for what, keys in (
                ("missing in heavydb", d.only_right),
                ("missing in mysql", d.only_left),
                ("duplicate keys in heavydb", d.duplicate_left),
                ("duplicate keys in mysql", d.duplicate_right),
            ):
                if keys:
                    out.append(f"{len(keys)} keys {what}")
            if d.different:
                out.append(f"{len(d.different)} rows differ")
        for e in self.expectations:
            if not e.success:
                out.append(f"expectations failed on {e.data}: {len(e.failed) or 'error'}")
        return out

    @property
    def status(self) -> Status:
        if self.problems():
            return "discrepancies"
        if self.error:
            return "error"
        return "consistent"

    def to_json(self, cap: int = DEFAULT_CAP) -> dict[str, Any]:
        d = self.findings
        out: dict[str, Any] = {
            "table": self.table,
            "environment": self.environment,
            "status": self.status,
            "consistent": self.status == "consistent",
            "critical": self.critical,
            "mode": self.mode,
            "heavydb": self.heavydb,
            "mysql": self.mysql,
            "heavydb_rows": self.heavydb_rows,
            "mysql_rows": self.mysql_rows,
        }
        for name, keys in (
            ("missing_in_heavydb", d.only_right if d else []),
            ("missing_in_mysql", d.only_left if d else []),
            ("different", [x.key for x in d.different] if d else []),
        ):
            shown, cut = capped(keys, cap)
            out[name] = d.display_keys(shown) if d else []
            out[f"{name}_count"] = len(keys)
            out[f"{name}_truncated"] = cut
        if d is not None:
            shown, cut = capped(d.different, min(cap, 20) if cap >= 0 else cap)
            out["different_detail"] = [d.describe(x) for x in shown]
            out["duplicate_keys"] = {
                "heavydb": d.display_keys(d.duplicate_left[: max(cap, 0)]),
                "mysql": d.display_keys(d.duplicate_right[: max(cap, 0)]),
            }
        out["null_key_rows"] = self.null_key_rows
        out["sample"] = {"seed": self.sample_seed, "keys_compared": self.sampled}
        if self.full is not None:
            out["full_diff"] = {
                "segments_compared": self.full.segments,
                "rows_compared": self.full.rows_compared,
                "queries": self.full.queries,
                "seconds": self.full.seconds,
            }
        out["expectations"] = [
            {
                "suite": e.suite,
                "data": e.data,
                "success": e.success,
                "evaluated": e.evaluated,
                "failed": e.failed,
                "error": e.error,
            }
            for e in self.expectations
        ]
        out["problems"] = self.problems()
        out["notes"] = self.notes
        out["error"] = self.error
        out["seconds"] = self.seconds
        return out


@dataclass
class SweepReport:
    tables: list[TableResult]
    mode: Literal["sample", "full"] = "sample"
    sample_size: int = 0
    seconds: float = 0.0

    @property
    def consistent(self) -> bool:
        return bool(self.tables) and all(t.status == "consistent" for t in self.tables)

    @property
    def complete(self) -> bool:
        return all(t.error is None for t in self.tables)

    @property
    def exit_code(self) -> int:
        if any(t.status == "discrepancies" for t in self.tables):
            return 1
        if not self.tables or any(t.error for t in self.tables):
            return 2
        return 0

    def to_json(self, cap: int = DEFAULT_CAP) -> dict[str, Any]:
        return {
            "consistent": self.consistent,
            "complete": self.complete,
            "exit_code": self.exit_code,
            "mode": self.mode,
            "sample_size": self.sample_size,
            "seconds": self.seconds,
            "tables": [t.to_json(cap) for t in self.tables],
        }
