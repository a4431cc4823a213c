"""The post-incident report (runbook: "Required Documentation"), complete.

Built on the domain's report (`tbs_emergency.domain.report.render_report`: summary, response
steps against their budgets, timeline, actions, communication timeline, what could not be done),
with the runbook's remaining sections filled from the journal or left as clearly marked fields:

1. Timeline of events: initial detection, response actions, resolution, communication (domain).
2. Technical details: root cause analysis, systems affected, data impact assessment, recovery
   actions taken.
3. Impact assessment: users affected, service downtime, data integrity status, business impact.
4. Lessons learned: what worked well, areas for improvement, process enhancements, tool and
   monitoring improvements (suggestions from the journal; a person writes the rest).
5. Post-incident review: the 24 h / 72 h / 1 week follow-ups and their state.

Journal conventions read here: any entry's `data.root_cause` (latest wins), `data.impact`
(the rollback's impact assessment: `active_sessions`, `error_rate_percent`, ...),
`data.users_affected`, `data.business_impact`, `data.lessons` (mapping section -> text), and
data-integrity evidence in entries of kind `check`/`step`/`validation` (`data.integrity`,
`data.data_impact`, or a recovery-validation verdict in `data.verdict`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tbs_emergency.domain.incident import Entry, Incident
from tbs_emergency.domain.report import render_report, rto_s
from tbs_emergency.validation.followups import states

TO_FILL = "_to be completed by the incident owner_"
LESSONS = (
    ("what_worked", "What worked well"),
    ("improvements", "Areas for improvement"),
    ("process", "Process enhancements needed"),
    ("tools", "Tool/monitoring improvements"),
)
# Domain sections this report replaces with fuller ones.
_REPLACED = ("Impact assessment", "Review")


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def split_sections(markdown: str) -> tuple[str, list[tuple[str, str]]]:
    """(text before the first `## `, [(heading, body)]) of a markdown document."""
    head, *rest = ("\n" + markdown).split("\n## ")
    sections = []
    for chunk in rest:
        title, _, body = chunk.partition("\n")
        sections.append((title.strip(), body))
    return head.lstrip("\n"), sections


def _latest(entries: Sequence[Entry], key: str) -> Any:
    for e in reversed(entries):
        if e.data.get(key) not in (None, "", {}):
            return e.data[key]
    return None


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def downtime_s(incident: Incident, entries: Sequence[Entry]) -> tuple[float | None, str]:
    """Service downtime: detection to confirmed recovery (else to resolution); None if ongoing."""
    rto = rto_s(incident, list(entries))
    if rto is not None:
        return rto, "detection to confirmed recovery"
    if incident.resolved_at is not None:
        return (
            incident.resolved_at - incident.opened_at
        ).total_seconds(), "detection to resolution"
    return None, "ongoing: no confirmed recovery yet"


def systems_affected(incident: Incident, entries: Sequence[Entry]) -> tuple[list[str], list[str]]:
    """(systems with failures, systems acted upon)."""
    failing = sorted({e.system for e in entries if e.system and e.result == "failed"})
    acted = sorted({e.system for e in entries if e.system and e.kind == "action"})
    return failing, acted


def integrity_status(entries: Sequence[Entry]) -> tuple[str, list[str]]:
    """(one line, evidence lines) about data integrity from the journal."""
    evidence: list[str] = []
    verdict_ok: bool | None = None
    for e in entries:
        for key in ("integrity", "data_impact"):
            if e.data.get(key) not in (None, "", {}):
                value = e.data[key]
                evidence.append(f"{e.at:%H:%M:%S} {e.what}: {_md(value)}"[:300])
        v = e.data.get("verdict")
        if isinstance(v, dict) and "passed" in v:
            db = [c for c in v.get("checks", []) if c.get("category") == "database"]
            bad = [c["name"] for c in db if c.get("status") in ("fail", "error")]
            verdict_ok = not bad if db else verdict_ok
            if db:
                evidence.append(
                    f"{e.at:%H:%M:%S} recovery validation: database checks "
                    + ("passed" if not bad else f"FAILED ({', '.join(bad)})")
                )
    failed_integrity = [
        e for e in entries if e.result == "failed" and "integrity" in (e.what or "").lower()
    ]
    if failed_integrity or verdict_ok is False:
        return "**integrity problems found** (see evidence)", evidence
    if evidence:
        return "verified (see evidence)", evidence
    return (
        "not verified: no integrity check is in the journal (run `tbs-emergency integrity check`)",
        evidence,
    )


def lesson_hints(incident: Incident, entries: Sequence[Entry]) -> dict[str, list[str]]:
    """Suggestions from the record; a person confirms, rejects or adds."""
    hints: dict[str, list[str]] = {k: [] for k, _ in LESSONS}
    steps = [
        e for e in entries if e.kind == "step" and e.result == "ok" and e.duration_s is not None
    ]
    if steps:
        hints["what_worked"].append(
            f"{len(steps)} response step(s) completed: "
            + ", ".join(f"{e.step} ({e.duration_s:.1f} s)" for e in steps)
        )
    sent = [e for e in entries if e.kind == "notification" and e.result == "ok"]
    if sent:
        hints["what_worked"].append(f"{len(sent)} notification(s) delivered")
    for e in entries:
        if e.result != "failed":
            continue
        reason = e.data.get("reason") or e.data.get("error") or ""
        text = f"{e.what}" + (f": {reason}" if reason else "")
        if e.kind == "notification":
            hints["tools"].append(f"notification failed: {text}")
        elif e.kind in ("check", "validation"):
            hints["improvements"].append(f"check failed: {text}")
        elif e.kind == "escalated":
            hints["process"].append(f"automation stopped short: {text}")
        else:
            hints["improvements"].append(text)
    blind = [e for e in entries if "blind" in (e.what or "").lower()]
    if blind:
        hints["tools"].append("monitoring was blind at least once: check the metrics path")
    return {k: [h[:300] for h in v] for k, v in hints.items()}


def extra_sections(incident: Incident, entries: Sequence[Entry], now: datetime) -> str:
    entries = sorted(entries, key=Entry.sort_key)
    lines: list[str] = []

    # -- Technical details
    root = _latest(entries, "root_cause")
    failing, acted = systems_affected(incident, entries)
    integrity_line, evidence = integrity_status(entries)
    lines += ["## Technical details", "", "### Root cause analysis", ""]
    if root:
        lines.append(_md(root))
    else:
        lines += [
            f"{TO_FILL} (due with the 72 h comprehensive review).",
            "",
            f"Symptom that opened the incident: {_md(incident.trigger)}"
            + (f" (rule `{incident.rule}`)" if incident.rule else ""),
        ]
    lines += ["", "### Systems affected", ""]
    lines.append(f"- environment: {incident.env}")
    lines.append(f"- with failures: {', '.join(failing) or 'none recorded'}")
    lines.append(f"- acted upon: {', '.join(acted) or 'none'}")
    lines += ["", "### Data impact assessment", "", f"- data integrity: {integrity_line}"]
    lines += [f"  - {x}" for x in evidence[:20]]
    lines += ["", "### Recovery actions taken", ""]
    actions = [e for e in entries if e.kind == "action"]
    if actions:
        for e in actions:
            took = f", {e.duration_s:.2f} s" if e.duration_s is not None else ""
            lines.append(
                f"- {e.at:%H:%M:%S} {_md(e.what)} on {_md(e.system or '-')}: {e.result}{took}"
                f" (decided by {_md(e.decided_by)})"
            )
    else:
        lines.append("- none recorded")

    # -- Impact
    impact = _latest(entries, "impact") or {}
    users = _latest(entries, "users_affected")
    if users is None and isinstance(impact, dict):
        users = impact.get("users_affected", impact.get("active_sessions"))
    down, how = downtime_s(incident, entries)
    business = _latest(entries, "business_impact")
    lines += ["", "## Impact assessment", ""]
    lines.append(
        "- users affected: "
        + (
            f"{users}" + (" (active sessions at detection)" if "active_sessions" in impact else "")
            if users is not None
            else f"not measured: {TO_FILL}"
        )
    )
    lines.append(
        "- service downtime: "
        + (f"{_duration(down)} ({how})" if down is not None else f"{how} (at {now:%H:%M:%S} UTC)")
    )
    lines.append(f"- data integrity status: {integrity_line}")
    if isinstance(impact, dict):
        for k, v in impact.items():
            if k not in ("active_sessions", "users_affected"):
                lines.append(f"- {k.replace('_', ' ')}: {v}")
    lines.append(f"- business impact evaluation: {_md(business) if business else TO_FILL}")

    # -- Lessons learned
    given = _latest(entries, "lessons") or {}
    hints = lesson_hints(incident, entries)
    lines += ["", "## Lessons learned", ""]
    for key, title in LESSONS:
        lines += [f"### {title}", ""]
        if isinstance(given, dict) and given.get(key):
            lines.append(_md(given[key]))
        else:
            lines.append(TO_FILL)
            if hints[key]:
                lines += ["", "Suggested by the record:"] + [f"- {_md(h)}" for h in hints[key]]
        lines.append("")

    # -- Follow-ups
    st = states(incident.opened_at, entries)
    lines += [
        "## Post-incident review",
        "",
        "| review | due (UTC) | status |",
        "|---|---|---|",
    ]
    for _w, s in st.items():
        lines.append(f"| {s.title} | {s.due_at:%Y-%m-%d %H:%M} | {s.status} |")
    lines.append("")
    return "\n".join(lines)


def render_full_report(incident: Incident, entries: Sequence[Entry], now: datetime) -> str:
    """The domain's report with the runbook's remaining sections; the domain's thinner
    "Impact assessment" and "Review" sections are replaced by fuller ones."""
    entries = sorted(entries, key=Entry.sort_key)
    base = render_report(incident, list(entries))
    head, sections = split_sections(base)
    kept = [(t, b) for t, b in sections if t not in _REPLACED]
    body = head.rstrip("\n") + "\n"
    for title, text in kept:
        body += f"\n## {title}\n{text.rstrip()}\n"
    return body + "\n" + extra_sections(incident, entries, now)
