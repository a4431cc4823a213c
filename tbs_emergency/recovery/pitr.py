"""Point-in-time recovery of MySQL: when it is possible, and what it would do.

The recovery restores the newest backup taken before T into a new database and replays the
binary log from the backup's recorded position up to T. This module decides, from the backups
and the binary logs the server still holds, whether that is possible and, if so, the plan;
otherwise it refuses with the reason, in words an on-call engineer can act on.

Time resolution: binlog events carry whole-second timestamps (the time the statement started on
the server). Replay stops at the first event stamped at or after `stop_at`, which is T truncated
to the second: events during T's own second are not replayed when T has a fraction, because
nothing proves they happened before T. Replay follows commit order, so a transaction that
started before T but committed after a transaction that started after T is not replayed.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel

from tbs_emergency.recovery.manifest import BinlogCoordinates

# The server's clock and ours may differ slightly: a T this far ahead of the server's "now" is
# taken as "now", further ahead as the future.
CLOCK_TOLERANCE = timedelta(seconds=1)
_SEQ = re.compile(r"^(.*)\.(\d+)$")


@dataclass(frozen=True)
class BackupPoint:
    backup_id: str
    taken_at: datetime
    binlog: BinlogCoordinates | None
    database: str
    identity: str
    all_tables: bool = True


@dataclass(frozen=True)
class BinlogFile:
    name: str
    size: int


class PitrRefused(Exception):
    """Point-in-time recovery to this instant is not possible; `reason` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class PitrPlan(BaseModel):
    target_at: datetime
    stop_at: datetime
    source_database: str
    target_database: str
    backup_id: str
    backup_taken_at: datetime
    start: BinlogCoordinates
    files: list[str]
    binlog_bytes: int
    server_now: datetime
    notes: list[str]

    def describe(self) -> list[str]:
        lines = [
            f"recover MySQL database {self.source_database} as of {self.target_at.isoformat()}"
            f" into new database {self.target_database}",
            f"1. check backup {self.backup_id} (taken {self.backup_taken_at.isoformat()}):"
            " manifest and every object's sha256, before touching anything",
            f"2. restore it into {self.target_database}",
            f"3. replay the binary log from {self.start} through {len(self.files)} file(s)"
            f" ({', '.join(self.files)}; at most {self.binlog_bytes:,} bytes), stopping at the"
            f" first event at or after {self.stop_at.isoformat()}",
            f"4. verify: row counts and checksums of {self.target_database} against the backup"
            " plus the replayed changes; report what differs from the live database",
        ]
        return lines + [f"note: {n}" for n in self.notes]


def truncate_to_second(t: datetime) -> datetime:
    return t.replace(microsecond=0)


def _seq(name: str) -> tuple[str, int] | None:
    m = _SEQ.match(name)
    return (m.group(1), int(m.group(2))) if m else None


def choose_backup(
    target_at: datetime, backups: Sequence[BackupPoint], database: str, identity: str
) -> tuple[BackupPoint, list[str]]:
    """The newest backup of this database on this server taken before the replay stop time."""
    stop_at = truncate_to_second(target_at)
    mine = sorted(
        (b for b in backups if b.database == database and b.identity == identity),
        key=lambda b: b.taken_at,
    )
    if mine and not any(b.all_tables for b in mine):
        raise PitrRefused(
            f"every backup of database {database} on {identity} holds only some tables: rolling"
            " forward needs a backup of the whole database (`tbs-emergency backup --mysql`)"
        )
    mine = [b for b in mine if b.all_tables]
    if not mine:
        raise PitrRefused(
            f"there is no backup of database {database} on {identity}:"
            " take one with `tbs-emergency backup --mysql`"
        )
    before = [b for b in mine if b.taken_at < stop_at]
    if not before:
        oldest = mine[0]
        raise PitrRefused(
            f"{target_at.isoformat()} is before the oldest backup"
            f" ({oldest.backup_id}, taken {oldest.taken_at.isoformat()}):"
            " nothing older is kept to start from"
        )
    notes: list[str] = []
    for b in reversed(before):
        if b.binlog is not None:
            return b, notes
        notes.append(
            f"backup {b.backup_id} was taken with binary logging off and cannot be rolled"
            " forward; an older one is used"
        )
    raise PitrRefused(
        f"no backup before {target_at.isoformat()} recorded a binlog position"
        " (binary logging was off): point-in-time recovery needs one"
    )


def plan_pitr(
    target_at: datetime,
    server_now: datetime,
    backups: Sequence[BackupPoint],
    binlogs: Sequence[BinlogFile],
    current: BinlogCoordinates,
    source_database: str,
    target_database: str,
    identity: str,
    gtid_at: Callable[[BinlogCoordinates], str | None] | None = None,
) -> PitrPlan:
    """The plan, or PitrRefused with the reason.

    `binlogs` is SHOW BINARY LOGS (oldest first), `current` SHOW MASTER STATUS, `server_now`
    the server's UTC clock. `gtid_at(coordinates)` asks the server which GTID state that
    position has now (BINLOG_GTID_POS); it detects a binlog that was reset since the backup.
    """
    if target_at.tzinfo is None:
        raise ValueError("target_at must be timezone-aware")
    if target_database == source_database:
        raise PitrRefused(
            f"the target database must be a new one, not the live database {source_database}"
        )
    if target_at > server_now + CLOCK_TOLERANCE:
        raise PitrRefused(
            f"{target_at.isoformat()} is in the future (the MySQL server's clock says"
            f" {server_now.isoformat()})"
        )
    base, notes = choose_backup(target_at, backups, source_database, identity)
    assert base.binlog is not None
    stop_at = truncate_to_second(target_at)
    if stop_at != target_at:
        notes.append(
            f"binlog timestamps are whole seconds: events stamped {stop_at.isoformat()}"
            f" (the second of T) are not replayed; use --to {stop_at + timedelta(seconds=1)}"
            " to include them"
        )
    names = [f.name for f in binlogs]
    start = base.binlog
    if start.file not in names:
        oldest = names[0] if names else "none"
        raise PitrRefused(
            f"{target_at.isoformat()} is past the retained binlog: backup {base.backup_id}"
            f" starts at {start} but binary log {start.file} has been purged (oldest retained:"
            f" {oldest}); the changes between the backup and T are gone"
        )
    i = names.index(start.file)
    files = names[i:]
    seqs = [_seq(n) for n in files]
    if any(s is None for s in seqs) or len({s[0] for s in seqs if s}) != 1:
        raise PitrRefused(f"unexpected binary log names: {', '.join(files)}")
    numbers = [s[1] for s in seqs if s]
    gaps = [n for a, b in itertools.pairwise(numbers) for n in range(a + 1, b)]
    if gaps:
        raise PitrRefused(
            f"binary logs are missing between {files[0]} and {files[-1]}"
            f" (numbers {', '.join(map(str, gaps))}): the replay would skip changes"
        )
    size = binlogs[i].size
    if start.position > size:
        raise PitrRefused(
            f"backup {base.backup_id} records position {start.position} in {start.file}, which"
            f" is only {size} bytes now: the binary log was reset since the backup"
        )
    if gtid_at is not None and start.gtid:
        now_gtid = gtid_at(start)
        if now_gtid is not None and now_gtid != start.gtid:
            raise PitrRefused(
                f"the binary log was reset since backup {base.backup_id}: position {start.file}:"
                f"{start.position} had GTID state {start.gtid} and now has {now_gtid}"
            )
    if current.file not in names:
        notes.append(f"the current binary log {current.file} is not listed by SHOW BINARY LOGS")
    total = (size - start.position) + sum(f.size for f in binlogs[i + 1 :])
    return PitrPlan(
        target_at=target_at,
        stop_at=stop_at,
        source_database=source_database,
        target_database=target_database,
        backup_id=base.backup_id,
        backup_taken_at=base.taken_at,
        start=start,
        files=files,
        binlog_bytes=max(total, 0),
        server_now=server_now,
        notes=notes,
    )
