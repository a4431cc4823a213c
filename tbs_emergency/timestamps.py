"""Points in time given by people: ISO 8601 with an explicit time zone, parsed in one place.

A timestamp without a zone is ambiguous (the operator's local time? the server's? UTC?) and a
recovery to the wrong hour is a silent disaster, so every CLI option and flow parameter that
takes a point in time refuses one: `timestamp '2026-12-07 10:00' has no time zone; add one,
e.g. 2026-12-07T10:00:00Z or +00:00`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BeforeValidator

EXAMPLE = "2026-12-07T10:00:00Z"


def _no_zone(text: str, parsed: datetime) -> ValueError:
    example = parsed.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%S")
    return ValueError(
        f"timestamp {text!r} has no time zone; add one, e.g. {example}Z or {example}+00:00"
    )


def parse_instant(value: str | datetime) -> datetime:
    """An aware datetime from ISO 8601 text with a zone (`Z`, `+01:00`), or ValueError with one
    line saying what is wrong. A datetime is checked the same way (it must carry a zone)."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise _no_zone(value.isoformat(sep=" "), value)
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a timestamp (ISO 8601 with a zone, e.g. {EXAMPLE})")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a timestamp (ISO 8601 with a time zone, e.g. {EXAMPLE})"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise _no_zone(value, parsed)
    return parsed


def _instant(value: Any) -> Any:
    if isinstance(value, str | datetime):
        return parse_instant(value)
    return value


# A pydantic field type for flow parameters: text or datetime, always with a zone.
Instant = Annotated[datetime, BeforeValidator(_instant)]
