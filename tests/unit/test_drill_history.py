"""Drill records, their history layout, RTO/RPO and the trend against the runbook's targets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tbs_emergency.validation.drills import (
    DrillRecord,
    Phase,
    ack_key,
    drill_id,
    history_key,
    latest,
    load_history,
    report_markdown,
    rpo_seconds,
    rto_target_for,
    save,
    trend,
    trend_table,
)

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 24, 3, 0, tzinfo=UTC)


@dataclass
class Obj:
    key: str
    size: int = 0


class Store:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, data: bytes, metadata: Any = None) -> Obj:
        self.objects[key] = data
        return Obj(key, len(data))

    def get(self, key: str) -> bytes:
        return self.objects[key]

    def list(self, prefix: str) -> Iterator[Obj]:
        for k in sorted(self.objects):
            if k.startswith(prefix):
                yield Obj(k, len(self.objects[k]))


def record(drill: str, at: datetime, **kw: Any) -> DrillRecord:
    return DrillRecord(
        drill=drill,  # type: ignore[arg-type]
        id=drill_id(drill, at),
        started_at=at,
        finished_at=at + timedelta(seconds=30),
        ok=kw.pop("ok", True),
        **kw,
    )


def test_keys_are_timestamped_and_sortable() -> None:
    at = T0.replace(microsecond=123456)
    assert history_key("recovery", at) == "drills/history/recovery/20250124T030000123Z.json"
    assert drill_id("contact_verification", at) == "drill-contact-verification-20250124T030000123Z"
    assert (
        ack_key("drill-x", "Primary on-call (sandbox)")
        == "drills/acks/drill-x/primary-on-call-sandbox.json"
    )
    later = history_key("recovery", at + timedelta(milliseconds=1))
    assert later > history_key("recovery", at)


def test_targets_and_rpo() -> None:
    assert rto_target_for("rollback", 900, 180) == 180
    assert rto_target_for("recovery", 900, 180) == 900
    assert rto_target_for("communication", 900, 180) is None
    assert rpo_seconds(T0, T0 + timedelta(minutes=5)) == 300
    assert rpo_seconds(T0 + timedelta(seconds=5), T0) == 0
    assert rpo_seconds(None, T0) is None


def test_met_flags() -> None:
    r = record("rollback", T0, rto_s=150, rto_target_s=180, rpo_s=10, rpo_target_s=5)
    assert r.rto_met is True and r.rpo_met is False
    assert record("communication", T0).rto_met is None


def test_history_round_trip_never_overwrites_and_skips_unreadable() -> None:
    store = Store()
    a = record("recovery", T0, rto_s=40, rto_target_s=900, rpo_s=120)
    b = record("recovery", T0 + timedelta(days=31), rto_s=35, rto_target_s=900, rpo_s=60)
    c = record("communication", T0 + timedelta(days=1))
    for r in (b, a, c):
        save(store, r)
    assert len(store.objects) == 3
    store.objects["drills/history/recovery/broken.json"] = b"{"
    problems: list[str] = []
    history = load_history(store, problems=problems)
    assert [r.id for r in history] == [a.id, c.id, b.id]
    assert problems and "broken.json" in problems[0]
    assert latest(history, "recovery") == b
    assert latest(history, "rollback") is None


def test_trend_only_measured_runs_last_n_and_table() -> None:
    runs = [
        record("recovery", T0 + timedelta(days=i), rto_s=100 + i, rto_target_s=900, rpo_s=10.0 * i)
        for i in range(15)
    ] + [record("communication", T0)]
    points = trend(runs, last=12)
    assert len(points) == 12 and points[0].rto_s == 103 and points[-1].rto_s == 114
    rows = trend_table(points)
    assert rows[0]["RTO"] == "met" and rows[0]["RTO target (s)"] == "900.0"
    assert rows[0]["RPO target (s)"] == "-"


def test_report_markdown_has_outcome_phases_trend_and_chart() -> None:
    r = record(
        "recovery",
        T0,
        ok=False,
        rto_s=1000,
        rto_target_s=900,
        phases=[Phase(name="restore", start_s=0, end_s=12.5, detail="2 tables")],
        problems=["no HeavyDB restore directory"],
        findings=["RPO 3600 s: backups are hourly"],
    )
    md = report_markdown(r, trend([r]), chart="![trend](data:image/png;base64,AAAA)")
    assert md.startswith(f"# recovery drill {r.id}: FAILED")
    assert "**missed**" in md and "| restore | yes | 0.0 | 12.5 | 12.5 | 2 tables |" in md
    assert "## What could not be done" in md and "![trend]" in md
