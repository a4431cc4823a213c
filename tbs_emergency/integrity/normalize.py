"""Normalisation: how a value of one store is made comparable with the same value of the other.

This module is the one place the comparison rules are written down. Every comparison (sample,
row-level diff, checksum) works on *normalised* values:

- `int`: the integer (booleans are 0/1);
- `decimal`: the value times 10**scale as an integer (scale: the larger of both stores');
- `float`: floor(value * 10**FLOAT_DIGITS + 0.5) in IEEE double arithmetic;
- `timestamp`: whole seconds since 1970-01-01 UTC (naive values are UTC; fractions dropped);
- `date`: the seconds of its midnight, so a DATE equals a midnight TIMESTAMP;
- `text`: the string; '' counts as NULL (HeavyDB's string functions treat '' as NULL).

NULL stays NULL (None). The two stores' column types are merged into one `ColumnSpec` per column
(`merge_types`): a DECIMAL in one store and a DOUBLE in the other compare as decimals at the
DECIMAL's scale; a DATE and a TIMESTAMP compare as timestamps. Types that cannot be compared
(text against a number, say) are a `SchemaMismatch`.

Both databases compute the same normalised values in SQL (each connector's integrity dialect);
`normalize()` is the Python statement of the same rules, used by the in-memory source and by
tests that hold the SQL to it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any

FLOAT_DIGITS = 6  # floating-point columns compare at 6 decimal places
EPOCH = dt.datetime(1970, 1, 1)
EPOCH_DATE = dt.date(1970, 1, 1)
DAY_S = 86400


class Kind(StrEnum):
    INT = "int"
    DECIMAL = "decimal"
    FLOAT = "float"
    TIMESTAMP = "timestamp"
    DATE = "date"
    TEXT = "text"
    OTHER = "other"  # a type integrity does not compare (blob, json, time, ...)


NUMERIC = frozenset({Kind.INT, Kind.DECIMAL, Kind.FLOAT})
TEMPORAL = frozenset({Kind.TIMESTAMP, Kind.DATE})
# Kinds a key column may have: they normalise to integers, so key ranges can be bisected.
KEY_KINDS = frozenset({Kind.INT, Kind.DECIMAL, Kind.TIMESTAMP, Kind.DATE})


class SchemaMismatch(ValueError):
    """The two stores' columns cannot be compared (missing column, incompatible types)."""


@dataclass(frozen=True)
class ColumnType:
    """What one store's catalog says about a column."""

    kind: Kind
    scale: int = 0  # decimals: digits after the point
    nullable: bool = True
    native: str = ""  # the store's own type name (lower case), for messages and dialects
    bits: int = 64  # integers: storage width (a 32-bit value needs no reduction mod 2**36)

    def __str__(self) -> str:
        if self.native:
            return self.native
        return f"decimal(*,{self.scale})" if self.kind == Kind.DECIMAL else str(self.kind)


@dataclass(frozen=True)
class ColumnSpec:
    """How one column is compared: the kind (and scale) both stores normalise to."""

    name: str
    kind: Kind
    scale: int = 0  # decimal: the scale; float: FLOAT_DIGITS; otherwise 0
    text_groups: int = 0  # text: how many 7-byte groups the checksum reads (see checksum.py)

    @property
    def is_text(self) -> bool:
        return self.kind == Kind.TEXT


def merge_types(name: str, left: ColumnType, right: ColumnType) -> ColumnSpec:
    """The comparison spec for a column typed `left` in one store and `right` in the other."""
    kinds = {left.kind, right.kind}
    if Kind.OTHER in kinds:
        raise SchemaMismatch(
            f"column {name}: type {left} / {right} is not one integrity can compare"
        )
    if kinds <= NUMERIC:
        if Kind.DECIMAL in kinds:
            scale = max(t.scale for t in (left, right) if t.kind == Kind.DECIMAL)
            return ColumnSpec(name, Kind.DECIMAL, scale)
        if Kind.FLOAT in kinds:
            return ColumnSpec(name, Kind.FLOAT, FLOAT_DIGITS)
        return ColumnSpec(name, Kind.INT)
    if kinds <= TEMPORAL:
        return ColumnSpec(name, Kind.DATE if kinds == {Kind.DATE} else Kind.TIMESTAMP)
    if kinds == {Kind.TEXT}:
        return ColumnSpec(name, Kind.TEXT)
    raise SchemaMismatch(f"column {name}: {left} in one store cannot be compared with {right}")


def scale_of(spec: ColumnSpec) -> int:
    return spec.scale if spec.kind in (Kind.DECIMAL, Kind.FLOAT) else 0


def _scaled(value: Any, scale: int) -> int:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"{value!r} has no normalised value")
        # The same IEEE operations every engine performs: x * 10^s + 0.5, then floor.
        return math.floor(value * float(10**scale) + 0.5)
    d = value if isinstance(value, Decimal) else Decimal(value)
    return int(d.scaleb(scale).to_integral_value(rounding=ROUND_HALF_UP))


def epoch_seconds(value: dt.datetime | dt.date) -> int:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        delta = value - EPOCH
        return delta.days * DAY_S + delta.seconds  # whole seconds; microseconds dropped
    return (value - EPOCH_DATE).days * DAY_S


def normalize(value: Any, spec: ColumnSpec) -> int | str | None:
    """The normalised value of `value` (a Python value as a driver returns it) under `spec`."""
    if value is None:
        return None
    kind = spec.kind
    if kind == Kind.TEXT:
        text = value if isinstance(value, str) else str(value)
        return text or None
    if kind == Kind.INT:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, float):
            return _scaled(value, 0)
        return int(value)
    if kind in (Kind.DECIMAL, Kind.FLOAT):
        if isinstance(value, bool):
            value = int(value)
        return _scaled(value, spec.scale)
    if kind in TEMPORAL:
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        return epoch_seconds(value)
    raise ValueError(f"unknown kind {kind}")  # pragma: no cover


def normalize_row(values: Sequence[Any], specs: Sequence[ColumnSpec]) -> tuple[Any, ...]:
    return tuple(normalize(v, s) for v, s in zip(values, specs, strict=True))


def display(value: int | str | None, spec: ColumnSpec) -> Any:
    """A normalised value as people (and JSON) read it: 12.3400, 2025-01-24T10:00:00Z, ..."""
    if value is None or spec.kind in (Kind.TEXT, Kind.INT):
        return value
    assert isinstance(value, int)
    if spec.kind == Kind.DECIMAL:
        return str(Decimal(value).scaleb(-spec.scale))
    if spec.kind == Kind.FLOAT:
        return value / 10**spec.scale
    if spec.kind == Kind.DATE:
        return (EPOCH_DATE + dt.timedelta(seconds=value)).isoformat()
    return (EPOCH + dt.timedelta(seconds=value)).isoformat() + "Z"


def native(value: int | str | None, spec: ColumnSpec) -> Any:
    """A normalised value as a Python value a driver accepts as a parameter (for writes/sync):
    int, Decimal, float, naive UTC datetime, date or str."""
    if value is None or spec.kind in (Kind.TEXT, Kind.INT):
        return value
    assert isinstance(value, int)
    if spec.kind == Kind.DECIMAL:
        return Decimal(value).scaleb(-spec.scale)
    if spec.kind == Kind.FLOAT:
        return value / 10**spec.scale
    if spec.kind == Kind.DATE:
        return EPOCH_DATE + dt.timedelta(seconds=value)
    return EPOCH + dt.timedelta(seconds=value)


def display_key(key: tuple[Any, ...], specs: Sequence[ColumnSpec]) -> Any:
    """A key for people and JSON: the bare value for one key column, else a list."""
    shown = [display(v, s) for v, s in zip(key, specs, strict=True)]
    return shown[0] if len(shown) == 1 else shown


def date_floor_seconds(seconds: int) -> dt.date:
    """The latest date whose midnight is at or before `seconds`."""
    return EPOCH_DATE + dt.timedelta(days=seconds // DAY_S)


def date_ceil_seconds(seconds: int) -> dt.date:
    """The earliest date whose midnight is at or after `seconds`."""
    return EPOCH_DATE + dt.timedelta(days=-(-seconds // DAY_S))


def timestamp_of(seconds: int) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=seconds)
