"""Post-incident review follow-ups (runbook: "Post-Incident Review Process").

Three reviews after every incident, each a checklist with an owner:

| window | review                | due                       |
|--------|-----------------------|---------------------------|
| 24h    | Immediate Review      | incident opened + 24 h    |
| 72h    | Comprehensive Review  | incident opened + 72 h    |
| 1w     | Follow-up Actions     | incident opened + 1 week  |

Their state lives in the incident's journal as `followup` entries (`data.followup` = window,
`data.event` = `scheduled` | `posted` | `done`). A follow-up is done when a `done` entry exists
(recorded by a person: `tbs-emergency followup done INCIDENT WINDOW --by NAME`). The incident's
review closes when all three are done: a `closed` entry is journaled once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

Window = Literal["24h", "72h", "1w"]
WINDOWS: tuple[Window, ...] = ("24h", "72h", "1w")
FOLLOWUP = "followup"
CLOSED = "closed"


@dataclass(frozen=True)
class Review:
    window: Window
    title: str
    after: timedelta
    items: tuple[str, ...]


REVIEWS: dict[str, Review] = {
    "24h": Review(
        "24h",
        "Immediate Review (24 hours)",
        timedelta(hours=24),
        (
            "Complete incident timeline documentation",
            "Gather all logs and technical evidence",
            "Conduct initial team debrief session",
            "Identify immediate process improvements",
        ),
    ),
    "72h": Review(
        "72h",
        "Comprehensive Review (72 hours)",
        timedelta(hours=72),
        (
            "Root cause analysis completion",
            "Process improvement recommendations",
            "System enhancement requirements",
            "Training needs assessment",
        ),
    ),
    "1w": Review(
        "1w",
        "Follow-up Actions (1 week)",
        timedelta(weeks=1),
        (
            "Implement identified improvements",
            "Update emergency procedures",
            "Conduct team training on lessons learned",
            "Schedule preventive measures implementation",
        ),
    ),
}


def review(window: str) -> Review:
    try:
        return REVIEWS[window]
    except KeyError:
        raise ValueError(f"no follow-up {window!r} (known: {', '.join(WINDOWS)})") from None


def due_at(opened_at: datetime, window: str) -> datetime:
    return opened_at + review(window).after


def schedule_time(opened_at: datetime, window: str, now: datetime) -> datetime:
    """When the follow-up run should start: its due time, or now if that has passed."""
    return max(due_at(opened_at, window), now)


class FollowUpState(BaseModel):
    window: Window
    title: str
    due_at: datetime
    scheduled: bool = False
    flow_run_id: str | None = None
    posted_at: datetime | None = None
    done_at: datetime | None = None
    done_by: str | None = None
    items_done: list[str] = Field(default_factory=list)
    note: str = ""

    @property
    def done(self) -> bool:
        return self.done_at is not None

    @property
    def status(self) -> str:
        if self.done:
            return "done"
        if self.posted_at:
            return "posted"
        if self.scheduled:
            return "scheduled"
        return "not scheduled"


def states(opened_at: datetime, entries: Sequence[Any]) -> dict[str, FollowUpState]:
    """The state of each follow-up from the journal (entries in journal order)."""
    out: dict[str, FollowUpState] = {
        w: FollowUpState(window=w, title=REVIEWS[w].title, due_at=due_at(opened_at, w))
        for w in WINDOWS
    }
    for e in entries:
        if e.kind != FOLLOWUP:
            continue
        w = e.data.get("followup")
        if w not in out:
            continue
        st = out[w]
        event = e.data.get("event")
        if event == "scheduled":
            st.scheduled = True
            st.flow_run_id = e.data.get("flow_run_id") or st.flow_run_id
        elif event == "posted" and st.posted_at is None:
            st.posted_at = e.at
        elif event == "done" and st.done_at is None:
            st.done_at = e.at
            st.done_by = e.decided_by
            st.items_done = list(e.data.get("items") or REVIEWS[w].items)
            st.note = str(e.data.get("note") or "")
    return out


def pending(opened_at: datetime, entries: Sequence[Any]) -> list[str]:
    """Windows whose follow-up is not done yet."""
    return [w for w, st in states(opened_at, entries).items() if not st.done]


def all_done(opened_at: datetime, entries: Sequence[Any]) -> bool:
    return not pending(opened_at, entries)


def is_closed(entries: Sequence[Any]) -> bool:
    return any(e.kind == CLOSED for e in entries)


def checklist_markdown(
    incident_id: str,
    window: str,
    state: FollowUpState,
    owner: str | None,
    all_states: dict[str, FollowUpState] | None = None,
) -> str:
    """The checklist a follow-up run posts (ticked when done)."""
    r = review(window)
    tick = "x" if state.done else " "
    lines = [
        f"# {r.title}: incident {incident_id}",
        "",
        f"- Due: {state.due_at.isoformat()}",
        f"- Owner: {owner or 'not assigned (no primary on-call contact configured)'}",
        f"- Status: {state.status}"
        + (f" (by {state.done_by} at {state.done_at.isoformat()})" if state.done_at else ""),
        "",
        "## Checklist",
        "",
    ]
    lines += [
        f"- [{tick if item in state.items_done or state.done else ' '}] {item}" for item in r.items
    ]
    lines += [
        "",
        f"Record completion: `tbs-emergency followup done {incident_id} {window} --by NAME`",
    ]
    if all_states:
        lines += [
            "",
            "## All follow-ups",
            "",
            "| window | review | due | status |",
            "|---|---|---|---|",
        ]
        for w, st in all_states.items():
            lines.append(
                f"| {w} | {st.title} | {st.due_at.strftime('%Y-%m-%d %H:%M')} | {st.status} |"
            )
    return "\n".join(lines) + "\n"
