"""What the integrity algorithms see of a table: a small Protocol and the values it trades in.

Like reladiff's `count_and_checksum()` / `query_key_range()`, the diff never talks to a driver:
it asks a `TableSource` for segment checksums, key ranges and rows. `SQLTableSource` (sql.py)
answers with SQL run inside the database; `MemoryTableSource` (memory.py) answers from Python
lists, for tests and for data already in memory.

Keys and values travel *normalised* (normalize.py): a key is a tuple of integers, one per key
column, so key ranges can be cut into segments whatever the key's type (BIGINT, DATE, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol

from tbs_emergency.integrity.normalize import ColumnSpec, ColumnType

Key = tuple[int, ...]
Row = tuple[Any, ...]  # normalised: key values first, then the compared columns in plan order


@dataclass(frozen=True)
class TablePlan:
    """How one table is compared: its key columns and compared columns, as specs both stores
    agree on. `table` is the configured (logical) name."""

    table: str
    key: tuple[ColumnSpec, ...]
    columns: tuple[ColumnSpec, ...]

    @property
    def specs(self) -> tuple[ColumnSpec, ...]:
        """Key specs then column specs: the layout of a `Row`."""
        return self.key + self.columns

    @property
    def key_names(self) -> list[str]:
        return [c.name for c in self.key]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def with_text_groups(self, groups: dict[str, int]) -> TablePlan:
        cols = tuple(
            replace(c, text_groups=groups.get(c.name, 0)) if c.is_text else c for c in self.columns
        )
        return replace(self, columns=cols)


@dataclass(frozen=True)
class Segment:
    """A slice of the key space: key columns before `depth` fixed to `prefix`, the next one
    between `lo` and `hi` (normalised, inclusive)."""

    prefix: Key
    lo: int
    hi: int

    @property
    def depth(self) -> int:
        return len(self.prefix)

    def __str__(self) -> str:
        fixed = "".join(f"{v}/" for v in self.prefix)
        return f"[{fixed}{self.lo}..{self.hi}]"


class Bucket(NamedTuple):
    """One bucket of a segment: rows, checksum, and the smallest and largest key value."""

    rows: int
    checksum: int
    lo: int
    hi: int


@dataclass(frozen=True)
class Profile:
    """One store's view of a table from one aggregate query: row count (None if not asked),
    the first key column's range, rows whose key has a NULL, the longest value of each text
    column in bytes (if asked), and each other column's minimum and maximum (if asked)."""

    rows: int | None
    key_min: int | None
    key_max: int | None
    null_key_rows: int = 0
    text_bytes: dict[str, int] = field(default_factory=dict)
    minimum: dict[str, Any] = field(default_factory=dict)
    maximum: dict[str, Any] = field(default_factory=dict)


class TableSource(Protocol):
    """One table in one store, as the integrity algorithms see it."""

    name: str  # the store, e.g. "heavydb[blue]"

    def describe(self) -> dict[str, ColumnType]:
        """Every column of the table and its type (names in the store's catalog case)."""
        ...

    def profile(
        self, plan: TablePlan, *, count: bool = True, text: bool = False, ranges: bool = False
    ) -> Profile: ...

    def checksums(self, plan: TablePlan, segment: Segment, width: int) -> dict[int, Bucket]:
        """The segment cut into buckets of `width` key values (bucket i holds key values
        lo + i*width .. lo + (i+1)*width - 1): {i: Bucket} of the non-empty buckets."""
        ...

    def key_range(self, plan: TablePlan, prefix: Key) -> tuple[int, int] | None:
        """Min and max of key column `len(prefix)` among rows whose first key columns equal
        `prefix`; None if there are none."""
        ...

    def rows(self, plan: TablePlan, segment: Segment) -> list[Row]:
        """Every row of the segment, normalised (text as stored: callers treat '' as NULL)."""
        ...

    def keys(self, plan: TablePlan, segment: Segment) -> list[Key]: ...

    def sample(self, plan: TablePlan, multiplier: int, below: int, limit: int) -> list[Row]:
        """Up to `limit` rows whose sample selector (checksum.sample_selector) is below
        `below`, ordered by (selector, key); each row is (selector, *row)."""
        ...

    def fetch(self, plan: TablePlan, keys: Sequence[Key]) -> list[Row]:
        """The rows with these keys (those that exist), normalised."""
        ...
