"""Which backups the retention policy keeps (`storage.backup_retention_days`).

Rules, in order:
- a backup without a manifest does not exist; its objects are deleted once it is older than
  `abandon_after` (a running backup has no manifest yet either, so younger ones are left alone);
- the newest `keep_last` complete backups are kept whatever their age;
- complete backups taken within the retention window are kept;
- the newest complete backup taken before the window starts is kept too: point-in-time
  recovery to an instant near the start of the window needs a backup from before it;
- every other complete backup is deleted (its manifest first, so it stops existing at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal


@dataclass(frozen=True)
class StoredBackup:
    backup_id: str
    started_at: datetime
    complete: bool  # has a manifest
    taken_at: datetime | None = None  # from the manifest
    objects: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class RetentionDecision:
    backup_id: str
    action: Literal["keep", "delete"]
    reason: str
    complete: bool
    objects: int = 0
    bytes: int = 0


def plan_retention(
    backups: Sequence[StoredBackup],
    now: datetime,
    retention_days: int,
    keep_last: int = 1,
    abandon_after: timedelta = timedelta(hours=24),
) -> list[RetentionDecision]:
    """One decision per backup, newest first."""
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")
    cutoff = now - timedelta(days=retention_days)
    ordered = sorted(backups, key=lambda b: b.taken_at or b.started_at, reverse=True)
    complete = [b for b in ordered if b.complete]
    newest = {b.backup_id for b in complete[: max(keep_last, 0)]}
    older = [b for b in complete if (b.taken_at or b.started_at) < cutoff]
    anchor = older[0].backup_id if older else None
    out: list[RetentionDecision] = []
    for b in ordered:
        when = b.taken_at or b.started_at

        def decide(action: Literal["keep", "delete"], reason: str, b: StoredBackup = b) -> None:
            out.append(
                RetentionDecision(b.backup_id, action, reason, b.complete, b.objects, b.bytes)
            )

        if not b.complete:
            if now - b.started_at > abandon_after:
                decide("delete", "no manifest: an abandoned or failed backup")
            else:
                decide("keep", "no manifest yet: it may still be running")
        elif b.backup_id in newest:
            decide("keep", "one of the newest complete backups")
        elif when >= cutoff:
            decide("keep", f"taken within the last {retention_days} days")
        elif b.backup_id == anchor:
            decide(
                "keep",
                f"newest backup before the {retention_days}-day window: the base for"
                " point-in-time recovery to its start",
            )
        else:
            decide("delete", f"older than {retention_days} days")
    return out
