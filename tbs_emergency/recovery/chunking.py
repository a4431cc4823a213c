"""Splitting a table into key ranges that are dumped in parallel.

A chunk is a half-open range of the primary key, `lower <= key < upper`, where a missing bound
means "from the start" or "to the end", so the chunks of a table always cover every row however
the key values are spread. Integer keys are split arithmetically between their minimum and
maximum; other keys (composite, text, dates) by boundary keys read from the table in key order.
A table without a primary key is one chunk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MIN_ROWS_PER_CHUNK = 1_000
MAX_ROWS_PER_CHUNK = 1_000_000


@dataclass(frozen=True)
class KeyRange:
    index: int
    lower: tuple[Any, ...] | None = None  # inclusive
    upper: tuple[Any, ...] | None = None  # exclusive

    @property
    def whole_table(self) -> bool:
        return self.lower is None and self.upper is None

    def describe(self) -> str:
        lo = "start" if self.lower is None else _fmt(self.lower)
        hi = "end" if self.upper is None else _fmt(self.upper)
        return f"[{lo}, {hi})"


def _fmt(key: tuple[Any, ...]) -> str:
    return str(key[0]) if len(key) == 1 else "(" + ", ".join(str(k) for k in key) + ")"


def rows_per_chunk(
    avg_row_bytes: float,
    target_bytes: int,
    minimum: int = MIN_ROWS_PER_CHUNK,
    maximum: int = MAX_ROWS_PER_CHUNK,
) -> int:
    """How many rows make a chunk of about target_bytes (text form) for rows of this size."""
    if target_bytes <= 0:
        raise ValueError("target_bytes must be positive")
    per = int(target_bytes / max(avg_row_bytes, 1.0))
    return max(minimum, min(maximum, per))


def integer_ranges(
    lowest: int | None, highest: int | None, rows_estimate: int, per_chunk: int
) -> list[KeyRange]:
    """Ranges of a single integer key between its lowest and highest value.

    The first range has no lower bound and the last no upper bound, so rows outside
    [lowest, highest] (there should be none in a snapshot) are still dumped.
    """
    if per_chunk <= 0:
        raise ValueError("per_chunk must be positive")
    if lowest is None or highest is None or highest <= lowest:
        return [KeyRange(0)]
    n = max(1, math.ceil(max(rows_estimate, 0) / per_chunk))
    span = highest - lowest + 1
    step = max(1, math.ceil(span / n))
    bounds = [lowest + step * i for i in range(1, n) if lowest + step * i <= highest]
    return boundary_ranges([(b,) for b in bounds])


def boundary_ranges(boundaries: Sequence[tuple[Any, ...]]) -> list[KeyRange]:
    """Ranges between sorted boundary keys: (start, b1), [b1, b2), ..., [bn, end)."""
    unique: list[tuple[Any, ...]] = []
    for b in boundaries:
        if unique and b <= unique[-1]:
            if b == unique[-1]:
                continue
            raise ValueError("boundary keys must be sorted")
        unique.append(tuple(b))
    if not unique:
        return [KeyRange(0)]
    edges: list[tuple[Any, ...] | None] = [None, *unique, None]
    return [KeyRange(i, edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def schedule(work: Sequence[tuple[str, int, float]]) -> list[tuple[str, int]]:
    """Order (table, chunk index, estimated cost) so the costliest start first.

    Longest-first keeps parallel workers busy until the end instead of leaving one big
    table's last chunk running alone.
    """
    return [(t, i) for t, i, _ in sorted(work, key=lambda w: (-w[2], w[0], w[1]))]
