"""HeavyDB recovery to an instant T, per table.

HeavyDB has no binlog. What exists: table epochs (each write moves a table to the next epoch;
`set_table_epoch` rolls a table back as long as the epoch is within its `max_rollback_epochs`)
and DUMP archives. Epochs are recorded with a time by every backup (in its manifest) and by
epoch records (`heavydb-epochs/`). Per table the plan is:

- unchanged: the epoch recorded at or before T is still the current one (no write since);
- rollback: roll back to the epoch recorded at or before T, if it is still retained;
- restore: otherwise restore the newest dump taken at or before T (into a new table, swapped in);
- then, after a rollback or a restore, backfill from the MySQL archive the rows changed between
  the time of that epoch or dump and T (unless a record after T shows no write happened);
- refuse, with the reason, if neither an epoch nor a dump from before T is usable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel


@dataclass(frozen=True)
class EpochRecord:
    table: str
    epoch: int
    at: datetime
    source: str  # "backup <id>" or "epoch record <id>"


@dataclass(frozen=True)
class DumpRecord:
    backup_id: str
    table: str
    key: str
    epoch: int
    dumped_at: datetime
    compression: str
    sha256: str
    size: int
    rows: int


class HeavyTablePlan(BaseModel):
    table: str
    action: Literal["unchanged", "rollback", "restore", "refuse"]
    current_epoch: int | None
    epoch: int | None = None
    point_at: datetime | None = None
    source: str | None = None
    dump: dict[str, Any] | None = None
    backfill_after: datetime | None = None
    backfill_until: datetime | None = None
    reason: str

    def describe(self) -> str:
        if self.action == "unchanged":
            return f"{self.table}: unchanged since {self.source} ({self.reason})"
        if self.action == "refuse":
            return f"{self.table}: cannot be recovered: {self.reason}"
        what = (
            f"roll back to epoch {self.epoch} ({self.source})"
            if self.action == "rollback"
            else f"restore the dump of backup {self.dump['backup_id'] if self.dump else '?'}"
            f" (epoch {self.epoch}, taken {self.point_at.isoformat() if self.point_at else '?'})"
        )
        if self.backfill_after:
            what += (
                f", then backfill rows changed after {self.backfill_after.isoformat()} up to"
                f" {self.backfill_until.isoformat() if self.backfill_until else '?'} from MySQL"
            )
        return f"{self.table}: {what}"


def plan_table(
    table: str,
    target_at: datetime,
    current_epoch: int | None,
    max_rollback_epochs: int | None,
    records: Sequence[EpochRecord],
    dumps: Sequence[DumpRecord],
) -> HeavyTablePlan:
    mine = sorted((r for r in records if r.table == table), key=lambda r: r.at)
    before = [r for r in mine if r.at <= target_at]
    after = [r for r in mine if r.at > target_at]
    last = before[-1] if before else None
    base = {"table": table, "current_epoch": current_epoch}

    def no_write_until_t(epoch: int) -> bool:
        return bool(after) and after[0].epoch == epoch

    if last is not None and current_epoch is not None and last.epoch == current_epoch:
        return HeavyTablePlan(
            **base,
            action="unchanged",
            epoch=last.epoch,
            point_at=last.at,
            source=last.source,
            reason=f"epoch {last.epoch} recorded at {last.at.isoformat()} is still current",
        )
    why_not_epoch = "no epoch was recorded at or before T"
    if last is not None and current_epoch is not None:
        if last.epoch > current_epoch:
            why_not_epoch = (
                f"epoch {last.epoch} recorded at {last.at.isoformat()} is ahead of the current"
                f" epoch {current_epoch} (the table was recreated)"
            )
        elif max_rollback_epochs is not None and 0 <= max_rollback_epochs < (
            current_epoch - last.epoch
        ):
            why_not_epoch = (
                f"epoch {last.epoch} recorded at {last.at.isoformat()} is no longer retained"
                f" (current epoch {current_epoch}, max_rollback_epochs {max_rollback_epochs})"
            )
        else:
            exact = no_write_until_t(last.epoch)
            return HeavyTablePlan(
                **base,
                action="rollback",
                epoch=last.epoch,
                point_at=last.at,
                source=last.source,
                backfill_after=None if exact else last.at,
                backfill_until=None if exact else target_at,
                reason=f"epoch {last.epoch} recorded at {last.at.isoformat()} is retained",
            )
    elif current_epoch is None:
        why_not_epoch = "the table does not exist now"
    usable = sorted(
        (d for d in dumps if d.table == table and d.dumped_at <= target_at),
        key=lambda d: d.dumped_at,
    )
    if usable:
        d = usable[-1]
        exact = no_write_until_t(d.epoch) and not any(
            r.at > d.dumped_at and r.at <= target_at and r.epoch != d.epoch for r in mine
        )
        return HeavyTablePlan(
            **base,
            action="restore",
            epoch=d.epoch,
            point_at=d.dumped_at,
            source=f"backup {d.backup_id}",
            dump=asdict(d),
            backfill_after=None if exact else d.dumped_at,
            backfill_until=None if exact else target_at,
            reason=f"{why_not_epoch}; the dump of backup {d.backup_id} is from before T",
        )
    return HeavyTablePlan(
        **base,
        action="refuse",
        reason=f"{why_not_epoch}, and no dump was taken at or before {target_at.isoformat()}",
    )
