"""Splitting tables into key ranges, retention, and the chunk object format."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tbs_emergency.recovery import chunkfile
from tbs_emergency.recovery.chunking import (
    KeyRange,
    boundary_ranges,
    integer_ranges,
    rows_per_chunk,
    schedule,
)
from tbs_emergency.recovery.retention import StoredBackup, plan_retention

pytestmark = pytest.mark.unit


def covers(ranges: list[KeyRange], keys: list[int]) -> bool:
    """Every key falls in exactly one range."""
    for k in keys:
        hits = [
            r
            for r in ranges
            if (r.lower is None or (k,) >= r.lower) and (r.upper is None or (k,) < r.upper)
        ]
        if len(hits) != 1:
            return False
    return True


def test_integer_ranges_cover_every_key_once_including_outliers() -> None:
    ranges = integer_ranges(1, 1_000_000, 1_000_000, 40_000)
    assert len(ranges) == 25
    assert ranges[0].lower is None and ranges[-1].upper is None
    assert [r.index for r in ranges] == list(range(25))
    assert covers(ranges, [-5, 0, 1, 39_999, 40_000, 40_001, 999_999, 1_000_000, 5_000_000])


def test_sparse_and_tiny_tables() -> None:
    assert integer_ranges(None, None, 0, 1000) == [KeyRange(0)]
    assert integer_ranges(7, 7, 1, 1000) == [KeyRange(0)]
    ranges = integer_ranges(1, 10**15, 3000, 1000)
    assert len(ranges) == 3 and covers(ranges, [1, 10**12, 10**15])


def test_boundary_ranges_for_composite_keys() -> None:
    bounds = [("eu", "b"), ("us", "a"), ("us", "a"), ("za", "z")]
    ranges = boundary_ranges(bounds)
    assert [(r.lower, r.upper) for r in ranges] == [
        (None, ("eu", "b")),
        (("eu", "b"), ("us", "a")),
        (("us", "a"), ("za", "z")),
        (("za", "z"), None),
    ]
    with pytest.raises(ValueError, match="sorted"):
        boundary_ranges([("b",), ("a",)])
    assert ranges[1].describe() == "[(eu, b), (us, a))"


def test_rows_per_chunk_is_bounded() -> None:
    assert rows_per_chunk(100, 4 * 1024 * 1024) == 41943
    assert rows_per_chunk(10**9, 4 * 1024 * 1024) == 1000
    assert rows_per_chunk(1, 10**12) == 1_000_000
    with pytest.raises(ValueError):
        rows_per_chunk(100, 0)


def test_the_costliest_chunks_start_first() -> None:
    order = schedule([("small", 0, 1.0), ("big", 0, 50.0), ("big", 1, 50.0), ("mid", 0, 9.0)])
    assert order == [("big", 0), ("big", 1), ("mid", 0), ("small", 0)]


def test_chunk_objects_detect_damage_and_count_rows() -> None:
    lines = b"1\ta\\tb\n2\t\\N\n"
    blob = chunkfile.encode(lines)
    assert chunkfile.decode(blob) == lines
    assert chunkfile.count_rows(lines) == 2
    damaged = bytearray(blob)
    damaged[len(damaged) // 2] ^= 0x55
    with pytest.raises(chunkfile.ChunkFormatError):
        chunkfile.decode(bytes(damaged))
    with pytest.raises(chunkfile.ChunkFormatError):
        chunkfile.count_rows(b"1\tunterminated")


NOW = datetime(2025, 3, 1, tzinfo=UTC)


def b(bid: str, days_ago: float, complete: bool = True) -> StoredBackup:
    at = NOW - timedelta(days=days_ago)
    return StoredBackup(bid, at, complete, at if complete else None)


def test_retention_keeps_the_window_the_newest_and_the_pitr_anchor() -> None:
    backups = [
        b("new", 1),
        b("mid", 20),
        b("anchor", 31),
        b("old", 40),
        b("older", 60),
        b("running", 0.1, complete=False),
        b("abandoned", 3, complete=False),
    ]
    decisions = {d.backup_id: d for d in plan_retention(backups, NOW, 30)}
    assert decisions["new"].action == "keep" and decisions["mid"].action == "keep"
    assert decisions["anchor"].action == "keep" and "point-in-time" in decisions["anchor"].reason
    assert decisions["old"].action == "delete" and decisions["older"].action == "delete"
    assert decisions["running"].action == "keep", "a backup still being written is left alone"
    assert decisions["abandoned"].action == "delete"


def test_retention_never_deletes_the_only_backups() -> None:
    decisions = plan_retention([b("ancient", 400), b("older", 500)], NOW, 30, keep_last=1)
    kept = {d.backup_id for d in decisions if d.action == "keep"}
    assert kept == {"ancient"}
    with pytest.raises(ValueError):
        plan_retention([], NOW, 0)
