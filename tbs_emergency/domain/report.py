"""The incident report (runbook "Required Documentation"), rendered from the journal as markdown.

Sections: summary (with RTO), timeline of events, automated response steps against their
budgets, actions taken (who or what decided, result), communication timeline, what could not be
done, impact, and the review checklist. Everything comes from journal entries, so the report can
be rendered again at any time, from any machine, even when both databases are gone.

RTO is measured from the incident's detection (`opened_at`) to the end of the last successful
confirmation step (`4-confirmation` or manual `phase-5-validation`); None while unconfirmed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tbs_emergency.domain.incident import Entry, Incident
from tbs_emergency.domain.plan import AUTOMATED_STEPS, MANUAL_PHASES, Step

CONFIRMING_STEPS = ("4-confirmation", "phase-5-validation")


def _t(at: datetime | None) -> str:
    return at.strftime("%H:%M:%S.%f")[:-3] if at else "-"


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def rto_s(incident: Incident, entries: list[Entry]) -> float | None:
    done = [
        e.finished_at or e.at
        for e in entries
        if e.kind == "step" and e.step in CONFIRMING_STEPS and e.result == "ok"
    ]
    if not done:
        return None
    return (max(done) - incident.opened_at).total_seconds()


def step_timings(incident: Incident, entries: list[Entry]) -> list[dict[str, Any]]:
    """Per step: start and end (seconds from detection), duration, budget, overrun."""
    rows = []
    steps: tuple[Step, ...] = AUTOMATED_STEPS + MANUAL_PHASES
    for st in steps:
        done = [e for e in entries if e.kind == "step" and e.step == st.key and e.finished_at]
        if not done:
            continue
        e = done[-1]
        start = ((e.started_at or e.at) - incident.opened_at).total_seconds()
        end = (e.finished_at - incident.opened_at).total_seconds() if e.finished_at else None
        scale = float(e.data.get("budget_scale", 1.0))
        rows.append(
            {
                "step": st.key,
                "title": st.title,
                "result": e.result,
                "start_s": round(start, 3),
                "end_s": round(end, 3) if end is not None else None,
                "duration_s": round(e.duration_s or 0.0, 3),
                "window_end_s": st.ends_s * scale,
                "overrun_s": round(max(0.0, (end or 0.0) - st.ends_s * scale), 3),
            }
        )
    return rows


def render_report(incident: Incident, entries: list[Entry]) -> str:
    entries = sorted(entries, key=Entry.sort_key)
    rto = rto_s(incident, entries)
    lines = [
        f"# Incident {incident.id}",
        "",
        "| | |",
        "|---|---|",
        f"| Severity | {incident.severity.value} |",
        f"| Status | {incident.status} |",
        f"| Environment | {incident.env} |",
        f"| Trigger | {_md(incident.trigger)} |",
        f"| Opened (detected) | {incident.opened_at.isoformat()} |",
        f"| Decided by | {_md(incident.decided_by)} |",
        f"| Resolved | {incident.resolved_at.isoformat() if incident.resolved_at else '-'} |",
        f"| RTO (detection to confirmed recovery) | {f'{rto:.1f} s' if rto is not None else '-'} |",
    ]
    if incident.acknowledged_by:
        lines.append(f"| Acknowledged by | {_md(incident.acknowledged_by)} |")
    if incident.joined:
        lines.append(f"| Joined incidents | {', '.join(incident.joined)} |")
    if incident.merged_into:
        lines.append(f"| Merged into | {incident.merged_into} |")

    timings = step_timings(incident, entries)
    if timings:
        lines += [
            "",
            "## Response steps against the runbook's budgets",
            "",
            "| step | result | start (s) | end (s) | duration (s) | window ends (s) | overrun |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in timings:
            over = f"**{r['overrun_s']:.1f} s late**" if r["overrun_s"] > 0 else "on time"
            lines.append(
                f"| {r['step']} {r['title']} | {r['result']} | {r['start_s']:.1f} |"
                f" {r['end_s'] if r['end_s'] is not None else '-'} | {r['duration_s']:.2f} |"
                f" {r['window_end_s']:g} | {over} |"
            )

    lines += [
        "",
        "## Timeline of events",
        "",
        "| time (UTC) | +s | step | what | system | decided by | result | took (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        rel = (e.at - incident.opened_at).total_seconds()
        took = f"{e.duration_s:.2f}" if e.duration_s is not None else ""
        lines.append(
            f"| {_t(e.at)} | {rel:+.2f} | {e.step or ''} | {_md(e.what)} | {_md(e.system or '')}"
            f" | {_md(e.decided_by)} | {e.result} | {took} |"
        )

    actions = [e for e in entries if e.kind == "action"]
    lines += ["", "## Actions taken", ""]
    if actions:
        for e in actions:
            lines.append(
                f"- {_t(e.at)} **{_md(e.what)}** on {_md(e.system or '-')}: {e.result}"
                f" (decided by {_md(e.decided_by)})"
            )
    else:
        lines.append("- none")

    comms = [e for e in entries if e.kind == "notification"]
    lines += ["", "## Communication timeline", ""]
    if comms:
        for e in comms:
            lines.append(
                f"- {_t(e.at)} {_md(e.data.get('template', ''))} via {_md(e.system or '-')}:"
                f" {e.result}{' - ' + _md(e.data['detail']) if e.data.get('detail') else ''}"
            )
    else:
        lines.append("- none")

    problems = [e for e in entries if e.result in ("failed", "skipped")]
    lines += ["", "## What could not be done", ""]
    if problems:
        for e in problems:
            reason = e.data.get("reason") or e.data.get("error") or ""
            lines.append(
                f"- {e.result.upper()}: {_md(e.what)}{': ' + _md(reason) if reason else ''}"
            )
    else:
        lines.append("- nothing: every step completed")

    impact = next((e.data for e in entries if e.data.get("impact")), None)
    lines += ["", "## Impact assessment", ""]
    if impact:
        for k, v in impact["impact"].items():
            lines.append(f"- {k}: {v}")
    else:
        lines.append("- not assessed")

    lines += [
        "",
        "## Review",
        "",
        "- [ ] Root cause analysis (72 h)",
        "- [ ] What worked well / areas for improvement (24 h debrief)",
        "- [ ] Process and monitoring improvements (1 week)",
        "",
    ]
    return "\n".join(lines)
