"""The sampled comparison (runbook: `verify-cross-db-consistency.sh --sample-size=1000`).

Both stores rank their rows by the same pseudo-random function of the key
(checksum.sample_selector, with a multiplier drawn from the run's seed) and return the first N.
A row both stores hold has the same rank on both sides, so the two samples are the same keys
except where a store lacks a row: after cutting both at the smaller of the two last ranks, a key
on one side only is missing on the other, and keys on both sides are compared column by column
(normalised values). One query per store; no key lists travel between them.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from tbs_emergency.integrity.checksum import Q
from tbs_emergency.integrity.diff import TableDiff, compare_rows
from tbs_emergency.integrity.source import Row, TablePlan, TableSource


@dataclass
class SampleResult:
    """The sample's findings (a TableDiff restricted to the sampled keys) and the sampled rows
    of each side (normalised), for expectation suites."""

    diff: TableDiff
    seed: int
    compared: int  # distinct keys looked at
    left_rows: list[Row] = field(default_factory=list)
    right_rows: list[Row] = field(default_factory=list)


def multiplier_for(seed: int) -> int:
    """A multiplier spread over the whole range whatever the seed (a small multiplier would
    rank small keys in key order)."""
    digest = hashlib.sha256(str(seed).encode()).digest()
    return 2 + int.from_bytes(digest[:8], "big") % (Q - 3)


def new_seed() -> int:
    return random.SystemRandom().randrange(1, Q - 1)


def selection(size: int, seed: int, rows_hint: int | None) -> tuple[int, int]:
    """(multiplier, below) for the sample queries: rows ranked under `below` are about four
    times `size`, so each store sorts few rows (`rows_hint`: the larger row count, if known)."""
    below = Q
    if rows_hint:
        below = max(1, min(Q, -(-Q * 4 * size // rows_hint)))
    return multiplier_for(seed), below


def compare_samples(
    plan: TablePlan,
    left_name: str,
    right_name: str,
    left_sample: list[Row],
    right_sample: list[Row],
    size: int,
    seed: int,
) -> SampleResult:
    """Cut both stores' samples (rows of (rank, *row)) at the common rank and compare them."""
    nk = len(plan.key)

    def rank(r: Row) -> tuple[Any, ...]:
        return (r[0], *r[1 : nk + 1])

    sa, sb = left_sample, right_sample
    cuts = [rank(s[-1]) for s in (sa, sb) if s and len(s) >= size]
    if cuts:
        cut = min(cuts)
        sa = [r for r in sa if rank(r) <= cut]
        sb = [r for r in sb if rank(r) <= cut]
    la = [r[1:] for r in sa]
    lb = [r[1:] for r in sb]
    diff = TableDiff(plan, left_name, right_name)
    compare_rows(plan, la, lb, diff)
    compared = len({tuple(r[:nk]) for r in la} | {tuple(r[:nk]) for r in lb})
    return SampleResult(diff, seed, compared, la, lb)


def sample_compare(
    left: TableSource,
    right: TableSource,
    plan: TablePlan,
    size: int,
    *,
    seed: int | None = None,
    rows_hint: int | None = None,
    executor: Any = None,
) -> SampleResult:
    """Compare about `size` pseudo-randomly chosen keys of both stores.

    `rows_hint` (the larger row count, if known) lets each store skip most rows before
    sorting. `executor` (anything with submit()) runs the two stores' queries concurrently.
    """
    seed = new_seed() if seed is None else seed
    mult, below = selection(size, seed, rows_hint)

    def run(src: TableSource) -> list[Row]:
        return src.sample(plan, mult, below, size)

    if executor is not None:
        fut = executor.submit(run, right)
        sa, sb = run(left), fut.result()
    else:
        sa, sb = run(left), run(right)
    return compare_samples(plan, left.name, right.name, sa, sb, size, seed)
