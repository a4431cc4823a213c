"""Data integrity between the stores: row counts, samples and a checksum bisection diff.

Pure Python over a small Protocol (`source.TableSource`, like reladiff's `count_and_checksum()`
and `query_key_range()`): no Prefect, no driver. `SQLTableSource` runs the work inside a
database through a connector; `MemoryTableSource` runs it over rows in memory.

- normalize.py  the comparison rules (UTC seconds, decimals at their scale, text) in one place
- checksum.py   the row checksum both engines compute identically, in Python and as SQL
- plan.py       configuration + both catalogs -> the columns and keys compared
- diff.py       the bisection diff -> `TableDiff` (missing / extra / different keys)
- sample.py     the sampled comparison (runbook: 1000-row samples)
- expectations.py  great-expectations suites as data (no great_expectations import here)
- report.py     per-table results, JSON, exit codes
"""

from tbs_emergency.integrity.diff import DiffOptions, RowDifference, TableDiff, diff_tables
from tbs_emergency.integrity.memory import MemoryTableSource
from tbs_emergency.integrity.normalize import ColumnSpec, ColumnType, Kind, SchemaMismatch
from tbs_emergency.integrity.plan import build_plan, with_text_groups
from tbs_emergency.integrity.report import SweepReport, TableResult
from tbs_emergency.integrity.sample import SampleResult, sample_compare
from tbs_emergency.integrity.source import Profile, Segment, TablePlan, TableSource
from tbs_emergency.integrity.sql import SQLTableSource

__all__ = [
    "ColumnSpec",
    "ColumnType",
    "DiffOptions",
    "Kind",
    "MemoryTableSource",
    "Profile",
    "RowDifference",
    "SQLTableSource",
    "SampleResult",
    "SchemaMismatch",
    "Segment",
    "SweepReport",
    "TableDiff",
    "TablePlan",
    "TableResult",
    "TableSource",
    "build_plan",
    "diff_tables",
    "sample_compare",
    "with_text_groups",
]
