"""The quarterly comprehensive review (runbook: "Quarterly Comprehensive Review").

The review is a checklist a person works through; this module fills in what the records can
tell: contacts (stale, missing roles), the drill history (each drill's last run, overdue ones,
RTO/RPO against targets), the procedures' age, and incidents whose follow-ups are still open.
Items that only a person can do (training refresher, emergency access methods) stay unticked.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel

from tbs_emergency.validation.contacts import ContactFinding
from tbs_emergency.validation.drills import DrillRecord, latest

Status = Literal["ok", "attention", "manual"]

# How often the runbook wants each drill (with a few days of grace before it is overdue).
CADENCE: dict[str, timedelta] = {
    "rollback": timedelta(days=31),
    "communication": timedelta(days=31),
    "recovery": timedelta(days=31),
    "contact_verification": timedelta(days=7),
}
GRACE = timedelta(days=3)
PROCEDURE_MAX_AGE = timedelta(days=92)


class ReviewItem(BaseModel):
    area: str
    item: str
    status: Status
    detail: str = ""

    def row(self) -> dict[str, Any]:
        return {
            "area": self.area,
            "item": self.item,
            "status": self.status.upper(),
            "detail": self.detail,
        }


class OpenFollowUps(BaseModel):
    incident_id: str
    pending: list[str]
    overdue: list[str]


def review_items(
    now: datetime,
    contacts: Sequence[ContactFinding],
    missing_roles: Sequence[str],
    history: Sequence[DrillRecord],
    procedures_updated: date | None,
    open_followups: Sequence[OpenFollowUps],
) -> list[ReviewItem]:
    items: list[ReviewItem] = []

    # Review all emergency procedures
    if procedures_updated is None:
        items.append(
            ReviewItem(
                area="procedures",
                item="Review all emergency procedures",
                status="attention",
                detail="no date of last update configured (drills.procedures_updated)",
            )
        )
    else:
        age = now.date() - procedures_updated
        items.append(
            ReviewItem(
                area="procedures",
                item="Review all emergency procedures",
                status="attention" if age > PROCEDURE_MAX_AGE else "manual",
                detail=f"last updated {procedures_updated.isoformat()} ({age.days} days ago)"
                + (" - older than a quarter" if age > PROCEDURE_MAX_AGE else ""),
            )
        )

    # Update contact information
    stale = [c for c in contacts if c.stale]
    detail = []
    if missing_roles:
        detail.append(f"nobody holds: {', '.join(missing_roles)}")
    if stale:
        detail.append(
            "stale: " + "; ".join(f"{c.contact} ({', '.join(c.problems)})" for c in stale)
        )
    items.append(
        ReviewItem(
            area="contacts",
            item="Update contact information",
            status="attention" if detail else "ok",
            detail=" / ".join(detail) or f"{len(contacts)} contacts, none stale",
        )
    )

    # Drill history
    for drill, every in CADENCE.items():
        last = latest(history, drill)
        label = drill.replace("_", " ")
        if last is None:
            items.append(
                ReviewItem(
                    area="drills",
                    item=f"{label} drill held",
                    status="attention",
                    detail="never run (no record in drills/history)",
                )
            )
            continue
        age = now - last.started_at
        overdue = age > every + GRACE
        parts = [
            f"last {last.started_at.strftime('%Y-%m-%d')} ({age.days} days ago),"
            f" {'ok' if last.ok else 'FAILED'}"
        ]
        if last.rto_s is not None:
            parts.append(
                f"RTO {last.rto_s:.1f} s"
                + (f" vs {last.rto_target_s:g} s" if last.rto_target_s is not None else "")
            )
        if last.rpo_s is not None:
            parts.append(f"RPO {last.rpo_s:.1f} s")
        items.append(
            ReviewItem(
                area="drills",
                item=f"{label} drill held",
                status="attention" if overdue or not last.ok or last.rto_met is False else "ok",
                detail=", ".join(parts) + (" - overdue" if overdue else ""),
            )
        )

    # Validate automation systems: the rollback drill exercises the whole automated sequence.
    rb = latest(history, "rollback")
    items.append(
        ReviewItem(
            area="automation",
            item="Validate automation systems",
            status="ok" if rb is not None and rb.ok and rb.rto_met is not False else "attention",
            detail="last rollback drill "
            + (
                "missing"
                if rb is None
                else f"{'ok' if rb.ok else 'failed'} on {rb.started_at:%Y-%m-%d}"
            ),
        )
    )

    # Open follow-ups
    late = [f for f in open_followups if f.overdue]
    items.append(
        ReviewItem(
            area="follow-ups",
            item="Post-incident follow-ups closed",
            status="attention" if open_followups else "ok",
            detail=(
                "; ".join(
                    f"{f.incident_id}: {', '.join(f.pending)} open"
                    + (f" ({', '.join(f.overdue)} overdue)" if f.overdue else "")
                    for f in open_followups
                )
                or "none open"
            )
            + (f" - {len(late)} incident(s) with overdue reviews" if late else ""),
        )
    )

    items.append(
        ReviewItem(
            area="access",
            item="Test all emergency access methods",
            status="manual",
            detail="VPN, jump server, database and load-balancer access: a person checks each",
        )
    )
    items.append(
        ReviewItem(
            area="training",
            item="Conduct team training refresher",
            status="manual",
            detail="schedule it; record who attended",
        )
    )
    return items


def review_markdown(now: datetime, items: Sequence[ReviewItem], trend: str = "") -> str:
    attention = [i for i in items if i.status == "attention"]
    lines = [
        f"# Quarterly comprehensive review ({now.strftime('%Y-%m-%d')})",
        "",
        f"{len(attention)} item(s) need attention; manual items are for a person to tick.",
        "",
    ]
    for i in items:
        box = "x" if i.status == "ok" else " "
        flag = " **(attention)**" if i.status == "attention" else ""
        lines.append(f"- [{box}] **{i.item}**{flag}: {i.detail}")
    if trend:
        lines += ["", "## RTO and RPO of recent drills", "", trend]
    return "\n".join(lines) + "\n"
