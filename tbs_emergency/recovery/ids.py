"""Backup and recovery-run identifiers: sortable by time, safe as object-key components.

`20250124T100000Z-3fa2c1`: the UTC start time to the second, then six hex digits so that two
backups started in the same second never collide. Sorting ids sorts backups by start time.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

_ID_RE = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{6})$")
_STAMP = "%Y%m%dT%H%M%SZ"


def new_id(now: datetime, token: str | None = None) -> str:
    """A new identifier for something started at `now` (UTC; naive times are taken as UTC)."""
    at = now if now.tzinfo else now.replace(tzinfo=UTC)
    token = token or secrets.token_hex(3)
    if not re.fullmatch(r"[0-9a-f]{6}", token):
        raise ValueError("the token is six lowercase hex digits")
    return f"{at.astimezone(UTC).strftime(_STAMP)}-{token}"


def validate_id(value: str, what: str = "backup id") -> str:
    """The id itself, or ValueError saying what a valid one looks like (keeps keys safe)."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ValueError(
            f"{value!r} is not a {what} (expected e.g. 20250124T100000Z-3fa2c1;"
            " `tbs-emergency backup list` shows them)"
        )
    return value


def id_time(value: str) -> datetime:
    """The start time an id encodes (UTC, whole seconds)."""
    m = _ID_RE.match(validate_id(value))
    assert m is not None
    return datetime.strptime(m.group(1), _STAMP).replace(tzinfo=UTC)


def is_id(value: str) -> bool:
    return bool(_ID_RE.match(value))
