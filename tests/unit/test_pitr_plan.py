"""Point-in-time recovery planning: when it is possible, what it does, and why it refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tbs_emergency.recovery.heavydb_plan import DumpRecord, EpochRecord, plan_table
from tbs_emergency.recovery.manifest import BinlogCoordinates
from tbs_emergency.recovery.pitr import BackupPoint, BinlogFile, PitrRefused, plan_pitr

pytestmark = pytest.mark.unit

NOW = datetime(2025, 1, 24, 12, 0, 0, tzinfo=UTC)
ID = "mysql://db:3306/tbs"


def backup(bid: str, hours_ago: float, file: str, pos: int, **kw: object) -> BackupPoint:
    return BackupPoint(
        bid,
        NOW - timedelta(hours=hours_ago),
        BinlogCoordinates(file=file, position=pos, gtid=f"0-1-{pos}"),
        "tbs",
        ID,
        **kw,
    )  # type: ignore[arg-type]


BACKUPS = [backup("b-old", 10, "bin.000003", 500), backup("b-new", 2, "bin.000005", 900)]
LOGS = [BinlogFile(f"bin.00000{i}", 10_000) for i in range(3, 7)]
CURRENT = BinlogCoordinates(file="bin.000006", position=4000)


def plan(at: datetime, **kw: object):  # type: ignore[no-untyped-def]
    args = dict(
        target_at=at,
        server_now=NOW,
        backups=BACKUPS,
        binlogs=LOGS,
        current=CURRENT,
        source_database="tbs",
        target_database="tbs_recovered",
        identity=ID,
    )
    args.update(kw)
    return plan_pitr(**args)  # type: ignore[arg-type]


def test_the_newest_backup_before_t_is_rolled_forward_from_its_position() -> None:
    p = plan(NOW - timedelta(hours=1))
    assert p.backup_id == "b-new"
    assert p.start == BACKUPS[1].binlog
    assert p.files == ["bin.000005", "bin.000006"]
    assert p.binlog_bytes == (10_000 - 900) + 10_000
    assert p.stop_at == NOW - timedelta(hours=1)
    assert p.notes == []
    lines = "\n".join(p.describe())
    assert "b-new" in lines and "bin.000005:900" in lines and "tbs_recovered" in lines
    older = plan(NOW - timedelta(hours=5))
    assert older.backup_id == "b-old" and older.files[0] == "bin.000003"


def test_a_fractional_t_stops_at_its_second_and_says_so() -> None:
    p = plan(NOW - timedelta(hours=1, microseconds=-250_000))
    assert p.stop_at == NOW - timedelta(hours=1)
    assert "whole seconds" in p.notes[0] and "--to" in p.notes[0]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"target_at": NOW + timedelta(minutes=5)}, "in the future"),
        ({"target_at": NOW - timedelta(days=2)}, "before the oldest backup"),
        ({"binlogs": LOGS[3:]}, "past the retained binlog"),
        (
            {"binlogs": [LOGS[2], LOGS[0], LOGS[3]], "target_at": NOW - timedelta(hours=5)},
            "missing between",
        ),
        ({"target_database": "tbs"}, "not the live database"),
        ({"backups": []}, "no backup of database tbs"),
        ({"backups": [backup("p", 3, "bin.000005", 900, all_tables=False)]}, "only some tables"),
        ({"binlogs": [BinlogFile("bin.000005", 100), *LOGS[3:]]}, "was reset"),
    ],
)
def test_refusals_name_the_reason(change: dict[str, object], reason: str) -> None:
    args = {"target_at": NOW - timedelta(hours=1), **change}
    with pytest.raises(PitrRefused) as err:
        at = args.pop("target_at")
        plan(at, **args)  # type: ignore[arg-type]
    assert reason in err.value.reason


def test_a_reset_binlog_is_detected_by_its_gtid_state() -> None:
    with pytest.raises(PitrRefused, match="reset since backup b-new"):
        plan(NOW - timedelta(hours=1), gtid_at=lambda c: "0-1-7")
    assert plan(NOW - timedelta(hours=1), gtid_at=lambda c: c.gtid).backup_id == "b-new"


def test_backups_without_binlog_positions_are_skipped_with_a_note() -> None:
    no_log = BackupPoint("b-nolog", NOW - timedelta(hours=1, minutes=30), None, "tbs", ID)
    p = plan(NOW - timedelta(hours=1), backups=[*BACKUPS, no_log])
    assert p.backup_id == "b-new" and "binary logging off" in p.notes[0]


def test_a_clock_a_moment_ahead_of_the_server_is_not_the_future() -> None:
    assert plan(NOW + timedelta(milliseconds=500)).backup_id == "b-new"


# -- HeavyDB --------------------------------------------------------------------------------

T = NOW - timedelta(hours=1)


def rec(epoch: int, minutes_before_t: float) -> EpochRecord:
    return EpochRecord("hot", epoch, T - timedelta(minutes=minutes_before_t), "backup x")


DUMP = DumpRecord("b1", "hot", "k", 4, T - timedelta(hours=3), "gzip", "a" * 64, 10, 100)


def test_heavydb_rolls_back_to_the_epoch_recorded_before_t_while_retained() -> None:
    p = plan_table(
        "hot",
        T,
        current_epoch=12,
        max_rollback_epochs=3,
        records=[rec(9, 30), rec(10, 10)],
        dumps=[DUMP],
    )
    assert p.action == "rollback" and p.epoch == 10
    assert p.backfill_after == T - timedelta(minutes=10) and p.backfill_until == T
    assert "roll back to epoch 10" in p.describe()


def test_heavydb_unchanged_since_t_needs_nothing() -> None:
    p = plan_table("hot", T, 10, 3, [rec(10, 10)], [DUMP])
    assert p.action == "unchanged"


def test_heavydb_no_backfill_when_a_later_record_proves_no_write() -> None:
    later = EpochRecord("hot", 10, T + timedelta(minutes=5), "epoch record y")
    p = plan_table("hot", T, 12, 3, [rec(10, 10), later], [])
    assert p.action == "rollback" and p.backfill_after is None


def test_heavydb_falls_back_to_the_dump_when_the_epoch_rolled_off() -> None:
    p = plan_table(
        "hot", T, current_epoch=40, max_rollback_epochs=3, records=[rec(10, 10)], dumps=[DUMP]
    )
    assert p.action == "restore" and p.dump is not None and p.dump["backup_id"] == "b1"
    assert "no longer retained" in p.reason
    assert p.backfill_after == DUMP.dumped_at


def test_heavydb_refuses_without_epoch_or_dump_before_t() -> None:
    late = DumpRecord("b2", "hot", "k", 4, T + timedelta(minutes=1), "gzip", "a" * 64, 10, 100)
    p = plan_table("hot", T, 40, 3, [], [late])
    assert p.action == "refuse" and "no dump was taken" in p.reason
    p = plan_table("hot", T, None, None, [rec(10, 10)], [])
    assert p.action == "refuse" and "does not exist" in p.reason
