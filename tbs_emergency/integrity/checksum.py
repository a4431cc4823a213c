"""The row checksum both databases compute identically, stated in Python and composed in SQL.

Why not MD5: HeavyDB has no MD5/SHA function (its `HASH()` appeared only in recent versions and
is its own algorithm), so no string hash exists that MariaDB and HeavyDB both compute. The
checksum is therefore integer arithmetic over normalised values (normalize.py), which every SQL
engine evaluates the same way:

    P = 68719476731 (the largest prime below 2**36),  M = 33554393 (a prime below 2**25)
    h = 0;  for each contribution x of the row (key columns first, then compared columns):
        h = MOD(h * M + x, P)            -- MOD truncates toward zero in MySQL, HeavyDB, DuckDB
    k = the same over the key columns only;  g = MOD(k, P2) + P2  (P2 = 67108859 < 2**26)
    row checksum = MOD(h * g, P);  segment checksum = (COUNT(*), SUM(row checksum))

Contributions per column: `MOD(v, P)` for a normalised number/time `v`, NULL_MARK for NULL.
Text contributes its length in bytes (NULL_MARK for NULL or '') and then, for each of
`text_groups` 7-byte groups, the big-endian integer of those bytes, zero-padded (0 past the
end). The number of groups follows the longest text of one store (plan.with_text_groups): a
longer text in the other store changes the length, so it still shows. |h * M + x| < 2**62 and
|h * g| < 2**63, so nothing overflows a BIGINT; a sum overflows only past 2**27 rows in one
bucket (chunks stay below).

h is a polynomial hash of the row, but linear in the values: summed over rows, values swapped
between two rows would cancel out. Multiplying by g, a function of the key alone (a short
expression to repeat), makes each row's share depend on its key, so swaps show. The sum over a
bucket changes when any value, key or row changes (collision chance about 1 in 2**26 for a swap
between two given rows, 1 in 2**36 otherwise). A bucket whose checksums differ is cut further
and in the end compared row by row in Python, so a checksum that differs *without* a real
difference (e.g. non-ASCII text, see below) costs time, never a false report.

Text bytes: MariaDB reads the bytes themselves (HEX/CONV of `CAST(s AS BINARY)`); HeavyDB has no
byte or code-point function, so its dialect reads each character's ASCII code as
`POSITION(char IN '<printable ASCII>') + 31`. The two agree for printable ASCII (32..126 except
the backslash, kept out of the literal because engines disagree on escaping it). Other characters
make the checksums differ and the rows are then compared in Python: correct, only slower.
Text longer than MAX_TEXT_GROUPS * 7 bytes is checksummed on its length and first 70 bytes;
row-level comparison and the sample always compare whole values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from tbs_emergency.integrity.normalize import TEMPORAL, ColumnSpec, ColumnType, Kind
from tbs_emergency.integrity.source import Key, Segment, TablePlan

P = 68719476731
M = 33554393
P2 = 67108859
# NULL's contribution: a fixed residue (not 0: MOD(v, P) of the common value 0). Only a value
# congruent to it mod P (e.g. exactly 27182818284) would look like NULL to the checksum.
NULL_MARK = 27182818284
GROUP_BYTES = 7
MAX_TEXT_GROUPS = 10
# The sample selector: a second, 31-bit modulus and a multiplier chosen per run.
Q = 2147483647
# Printable ASCII in code order, the backslash replaced by a space (never found there: the
# space at position 1 comes first), so POSITION(c IN ALPHABET) + 31 == ASCII(c).
ALPHABET = "".join(" " if chr(c) == "\\" else chr(c) for c in range(32, 127))
ALPHABET_OFFSET = 31


def tmod(a: int, p: int) -> int:
    """SQL's MOD: the remainder truncated toward zero (sign of the dividend)."""
    r = abs(a) % p
    return -r if a < 0 else r


def text_groups_for(max_bytes: int) -> int:
    return min(MAX_TEXT_GROUPS, -(-max_bytes // GROUP_BYTES))


def text_contributions(value: str | None, groups: int) -> list[int]:
    data = value.encode("utf-8") if value else b""
    out = [len(data) if data else NULL_MARK]
    for k in range(groups):
        chunk = data[k * GROUP_BYTES : (k + 1) * GROUP_BYTES]
        out.append(int.from_bytes(chunk.ljust(GROUP_BYTES, b"\0"), "big"))
    return out


def contributions(value: Any, spec: ColumnSpec) -> list[int]:
    if spec.is_text:
        return text_contributions(value, spec.text_groups)
    return [NULL_MARK if value is None else tmod(int(value), P)]


def key_hash(key: Sequence[Any]) -> int:
    h = 0
    for v in key:
        h = tmod(h * M + (NULL_MARK if v is None else tmod(v, P)), P)
    return h


def row_hash(row: Sequence[Any], specs: Sequence[ColumnSpec], nkeys: int = 1) -> int:
    """The checksum of one normalised row (its `nkeys` key values first), as the SQL has it."""
    h = 0
    for value, spec in zip(row, specs, strict=True):
        for x in contributions(value, spec):
            h = tmod(h * M + x, P)
    g = tmod(key_hash(row[:nkeys]), P2) + P2
    return tmod(h * g, P)


def sample_selector(key: Key, multiplier: int) -> int:
    """The pseudo-random rank of a key in a sample drawn with `multiplier` (0 <= rank < Q)."""
    return abs(tmod(tmod(key_hash(key), Q) * multiplier, Q))


def segment_checksum(
    rows: Iterable[Sequence[Any]], specs: Sequence[ColumnSpec], nkeys: int = 1
) -> tuple[int, int]:
    count = total = 0
    for row in rows:
        count += 1
        total += row_hash(row, specs, nkeys)
    return count, total


# --------------------------------------------------------------------------------------------
# SQL
# --------------------------------------------------------------------------------------------


class IntegrityDialect(Protocol):
    """The engine-specific pieces of SQL the queries below are built from. Each database
    connector provides one (house rule: engine SQL lives in the engine's connector)."""

    def quote(self, name: str) -> str:
        """A quoted identifier (column)."""
        ...

    def table(self, name: str) -> str:
        """A quoted, possibly qualified table name."""
        ...

    def value(self, expr: str, own: ColumnType, spec: ColumnSpec) -> str:
        """The normalised value (normalize.py) of a non-text expression of type `own` under
        `spec`, as a BIGINT; NULL stays NULL."""
        ...

    def text_bytes(self, expr: str) -> str:
        """The length of a text expression in bytes (0 for '', NULL for NULL)."""
        ...

    def text_group(self, expr: str, group: int, groups: int) -> str:
        """The big-endian integer of bytes [7*group, 7*group + 7) of the text, zero-padded;
        0 past the end, NULL for NULL. `groups` is how many groups are read in all."""
        ...

    def sum_bigint(self, expr: str) -> str:
        """SUM of a BIGINT expression, exact (sums stay below 2**63)."""
        ...

    def idiv(self, a: str, b: str) -> str:
        """Integer division of non-negative BIGINTs."""
        ...

    def literal(self, own: ColumnType, value: Any) -> str:
        """A literal of the column's own type for a native Python value (normalize.native)."""
        ...


class QueryBuilder:
    """The integrity queries for one table in one store, from that engine's dialect."""

    def __init__(
        self, dialect: IntegrityDialect, table: str, own: dict[str, ColumnType], plan: TablePlan
    ) -> None:
        self.d = dialect
        self.table = dialect.table(table)
        self.own = {k.lower(): v for k, v in own.items()}
        self.plan = plan
        self._names = {k.lower(): k for k in own}

    # -- expressions ----------------------------------------------------------------------------

    def col(self, name: str) -> str:
        return self.d.quote(self._names.get(name.lower(), name))

    def own_type(self, name: str) -> ColumnType:
        return self.own[name.lower()]

    def norm(self, spec: ColumnSpec, expr: str | None = None) -> str:
        """The normalised value of a non-text column (or of `expr` over it) as BIGINT."""
        return self.d.value(expr or self.col(spec.name), self.own_type(spec.name), spec)

    def selected(self, spec: ColumnSpec) -> str:
        """What a row query selects for a column: the normalised value; text as it is."""
        return self.col(spec.name) if spec.is_text else self.norm(spec)

    def _contributions(self, spec: ColumnSpec) -> list[str]:
        c = self.col(spec.name)
        if spec.is_text:
            own = self.own_type(spec.name)
            length = f"COALESCE(NULLIF({self.d.text_bytes(c)}, 0), {NULL_MARK})"
            groups = [self.d.text_group(c, k, spec.text_groups) for k in range(spec.text_groups)]
            if own.nullable:
                groups = [f"COALESCE({g}, 0)" for g in groups]
            return [length, *groups]
        own = self.own_type(spec.name)
        x = self.norm(spec)
        # A value the store keeps within 35 bits (INT, MySQL's TIMESTAMP seconds) is already
        # below P: MOD(x, P) == x, one operation per row saved.
        small = own.bits <= 35 and (
            (own.kind == Kind.INT and spec.kind == Kind.INT)
            or (own.kind == Kind.TIMESTAMP and spec.kind in TEMPORAL)
        )
        if not small:
            x = f"MOD({x}, {P})"
        return [f"COALESCE({x}, {NULL_MARK})" if own.nullable else x]

    def row_hash(self) -> str:
        h: str | None = None
        for spec in self.plan.specs:
            for x in self._contributions(spec):
                h = x if h is None else f"MOD({h} * {M} + {x}, {P})"
        assert h is not None
        return f"MOD({h} * (MOD({self.key_hash()}, {P2}) + {P2}), {P})"

    def key_hash(self) -> str:
        h: str | None = None
        for spec in self.plan.key:
            (x,) = self._contributions(spec)
            h = x if h is None else f"MOD({h} * {M} + {x}, {P})"
        assert h is not None
        return h

    def selector(self, multiplier: int) -> str:
        return f"ABS(MOD(MOD({self.key_hash()}, {Q}) * {int(multiplier)}, {Q}))"

    # -- predicates -----------------------------------------------------------------------------

    def _lit(self, spec: ColumnSpec, value: Any) -> str:
        return self.d.literal(self.own_type(spec.name), value)

    def _between(self, spec: ColumnSpec, lo: int, hi: int) -> list[str]:
        """Predicates selecting rows whose normalised `spec` value lies in [lo, hi], written on
        the bare column so indexes serve them."""
        from tbs_emergency.integrity import normalize as n

        c = self.col(spec.name)
        own = self.own_type(spec.name)
        if own.kind == Kind.DATE:
            first, last = n.date_ceil_seconds(lo), n.date_floor_seconds(hi)
            if first > last:
                return ["1 = 0"]
            return [f"{c} >= {self._lit(spec, first)}", f"{c} <= {self._lit(spec, last)}"]
        if own.kind == Kind.TIMESTAMP:
            return [
                f"{c} >= {self._lit(spec, n.timestamp_of(lo))}",
                f"{c} < {self._lit(spec, n.timestamp_of(hi + 1))}",
            ]
        if spec.kind == Kind.DECIMAL:
            return [
                f"{c} >= {self._lit(spec, n.native(lo, spec))}",
                f"{c} <= {self._lit(spec, n.native(hi, spec))}",
            ]
        return [f"{c} >= {int(lo)}", f"{c} <= {int(hi)}"]

    def segment_where(self, segment: Segment, bounded: bool = True) -> str:
        parts: list[str] = []
        for spec, value in zip(self.plan.key, segment.prefix, strict=False):
            parts += self._between(spec, value, value)
        if bounded and segment.depth < len(self.plan.key):
            parts += self._between(self.plan.key[segment.depth], segment.lo, segment.hi)
        return " AND ".join(parts) if parts else "1 = 1"

    def keys_where(self, keys: Sequence[Key]) -> str:
        alternatives = []
        for key in keys:
            parts: list[str] = []
            for spec, value in zip(self.plan.key, key, strict=True):
                parts += self._between(spec, value, value)
            alternatives.append("(" + " AND ".join(parts) + ")")
        return " OR ".join(alternatives) if alternatives else "1 = 0"

    # -- statements -----------------------------------------------------------------------------

    def profile_sql(self, *, count: bool, text: bool, ranges: bool) -> str:
        """One aggregate row: [COUNT(*)], MIN and MAX of the first key column, rows with a NULL
        key (0 when the key columns are NOT NULL), [MAX(bytes) of each text column],
        [MIN and MAX of each other column]. Without count/text/ranges the database answers
        from the key index alone."""
        first = self.plan.key[0]
        c0 = self.col(first.name)
        nullable = [k for k in self.plan.key if self.own_type(k.name).nullable]
        null_key = " OR ".join(f"{self.col(k.name)} IS NULL" for k in nullable)
        items = [
            "COUNT(*)" if count else "0",
            self.norm(first, f"MIN({c0})"),
            self.norm(first, f"MAX({c0})"),
            f"SUM(CASE WHEN {null_key} THEN 1 ELSE 0 END)" if nullable else "0",
        ]
        for spec in self.plan.columns:
            c = self.col(spec.name)
            if spec.is_text:
                items.append(f"MAX({self.d.text_bytes(c)})" if text else "0")
            elif ranges:
                items.append(self.norm(spec, f"MIN({c})"))
                items.append(self.norm(spec, f"MAX({c})"))
        return f"SELECT {', '.join(items)} FROM {self.table}"

    def checksums_sql(self, segment: Segment, width: int) -> str:
        spec = self.plan.key[segment.depth]
        bucket = self.d.idiv(f"({self.norm(spec)} - {int(segment.lo)})", str(int(width)))
        return (
            f"SELECT {bucket}, COUNT(*), {self.d.sum_bigint(self.row_hash())},"
            f" {self.norm(spec, f'MIN({self.col(spec.name)})')},"
            f" {self.norm(spec, f'MAX({self.col(spec.name)})')} FROM {self.table}"
            f" WHERE {self.segment_where(segment)} GROUP BY {bucket}"
        )

    def key_range_sql(self, prefix: Key) -> str:
        spec = self.plan.key[len(prefix)]
        c = self.col(spec.name)
        where = self.segment_where(Segment(prefix, 0, 0), bounded=False)
        return (
            f"SELECT {self.norm(spec, f'MIN({c})')}, {self.norm(spec, f'MAX({c})')}"
            f" FROM {self.table} WHERE {where}"
        )

    def rows_sql(self, where: str) -> str:
        cols = ", ".join(self.selected(s) for s in self.plan.specs)
        return f"SELECT {cols} FROM {self.table} WHERE {where}"

    def keys_sql(self, segment: Segment) -> str:
        cols = ", ".join(self.norm(s) for s in self.plan.key)
        return f"SELECT {cols} FROM {self.table} WHERE {self.segment_where(segment)}"

    def sample_sql(self, multiplier: int, below: int, limit: int) -> str:
        sel = self.selector(multiplier)
        cols = ", ".join(self.selected(s) for s in self.plan.specs)
        order = ", ".join([sel, *(self.norm(s) for s in self.plan.key)])
        not_null = " AND ".join(f"{self.col(k.name)} IS NOT NULL" for k in self.plan.key)
        return (
            f"SELECT {sel}, {cols} FROM {self.table} WHERE {not_null} AND {sel} < {int(below)}"
            f" ORDER BY {order} LIMIT {int(limit)}"
        )
