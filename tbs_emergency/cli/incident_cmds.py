"""Incident, notification and journal commands (runbook: the operator's side of an incident).

    incident list [--all]              open incidents (the journal's index and its local spool)
    incident show ID                   the incident and its journal, entry by entry
    incident note ID TEXT              add a note to the journal
    incident resolve ID                close it (refused if unknown or already closed)
    notify TEMPLATE [--incident ID]    send-user-notifications: one of the runbook's templates
    journal flush                      write entries spooled while the store was down
    journal status                     what is still spooled

Every command that changes something appends to the incident's journal; a command about no
incident journals to the day's operations log (`ops-YYYYMMDD`, a journal with no `opened`
entry, so it is never listed as an incident). The journal has a local spool: with the object
store down these commands still work and their entries are flushed later.
"""

from __future__ import annotations

import getpass
import os
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tbs_emergency.cli.common import (
    ConfigOpt,
    DryRunOpt,
    JsonOpt,
    check_incident_id,
    config_path,
    emit_json,
    err,
    fail,
    load,
    out,
)

incident_app = typer.Typer(help="Incidents in the journal.", no_args_is_help=True)
journal_app = typer.Typer(help="The incident journal's local spool.", no_args_is_help=True)

IncidentArg = Annotated[str, typer.Argument(help="The incident id", callback=check_incident_id)]
ByOpt = Annotated[str, typer.Option("--by", help="Your name (default: the login name)")]


def _who(by: str = "") -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def operations_log_id(at: datetime | None = None) -> str:
    """The journal of commands taken outside any incident, one per UTC day."""
    from tbs_emergency.domain.incident import utcnow

    return f"ops-{(at or utcnow()).strftime('%Y%m%d')}"


def open_journal(settings: Any, conn: Any = None) -> Any:
    """The journal with the configured spool (store down: entries are spooled, not lost)."""
    from tbs_emergency.connectors import Connectors
    from tbs_emergency.domain.journal import Journal

    conn = conn or Connectors(settings)
    return Journal.configured(conn.store(), settings.journal)


def _spooled(j: Any, e: Any) -> bool:
    return any(
        x.seq == e.seq and x.writer == e.writer for x in (j.spool.entries(e.incident_id) or [])
    )


def journal_target(settings: Any, conn: Any, incident: str) -> tuple[Any, str]:
    """(journal, incident id) a command journals to: `incident`, else the most recently opened
    open incident, else the day's operations log."""
    j = open_journal(settings, conn)
    if incident:
        return j, incident
    opened = j.open_incidents()
    return j, str(opened[-1]["id"]) if opened else operations_log_id()


def journal_action(
    settings: Any, conn: Any, incident: str, prepared: Any = None, **entry: Any
) -> dict[str, Any]:
    """Append one entry for a command (see journal_target; `prepared` is its result, looked
    up ahead of time). Never raises: says what happened instead."""
    from tbs_emergency.domain.incident import Entry

    try:
        j, target = (
            prepared.result() if prepared is not None else journal_target(settings, conn, incident)
        )
        e = j.append(Entry(incident_id=target, **entry))
        return {"incident": target, "seq": e.seq, "spooled": _spooled(j, e)}
    except Exception as exc:
        return {"incident": incident or None, "error": f"not journaled: {exc}"}


def record_in_prefect(
    settings: Any,
    flow_name: str,
    *,
    run_name: str,
    parameters: dict[str, Any],
    tags: list[str],
    ok: bool,
    message: str,
    started: datetime,
    logs: list[tuple[str, str]],
) -> dict[str, Any]:
    """Record a command's run as a flow run in the Prefect API (best effort, short timeout)."""
    api = os.environ.get("PREFECT_API_URL") or settings.prefect.api_url
    if not api:
        return {
            "recorded": False,
            "reason": "no Prefect API configured ([prefect] api_url or PREFECT_API_URL)",
        }
    from tbs_emergency.connectors.prefect_api import PrefectRecorder

    rec = PrefectRecorder(api, connect_timeout_s=settings.prefect.connect_timeout_s)
    try:
        run_id = rec.record_flow_run(
            flow_name,
            run_name=run_name,
            parameters=parameters,
            tags=tags,
            ok=ok,
            message=message,
            started=started,
            logs=logs,
        )
        return {"recorded": True, "flow_run_id": run_id}
    except Exception as exc:
        return {"recorded": False, "reason": str(exc)}
    finally:
        rec.close()


# --------------------------------------------------------------------------------------------
# incident list | show | note | resolve
# --------------------------------------------------------------------------------------------


def _all_incident_ids(j: Any) -> list[str]:
    ids = set()
    for obj in j.store.list("incidents/"):
        parts = obj.key.split("/")
        if len(parts) >= 4 and parts[2] == "journal" and parts[1].startswith("inc-"):
            ids.add(parts[1])
    if j.spool is not None:
        ids.update(i for i in j.spool.incidents() if i.startswith("inc-"))
    return sorted(ids)


@incident_app.command("list")
def incident_list(
    all_: Annotated[bool, typer.Option("--all", help="Closed incidents too")] = False,
    limit: Annotated[int, typer.Option("--limit", help="At most this many (newest)")] = 50,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Open incidents (with --all: every incident in the journal, newest last)."""
    settings = load(config)
    j = open_journal(settings)
    if all_:
        try:
            ids = _all_incident_ids(j)[-limit:]
        except Exception as exc:
            raise fail(f"cannot list the journal: {exc}", 1) from None
        rows = []
        for i in ids:
            inc = j.incident(i)
            if inc is not None:
                rows.append(inc.index_record())
    else:
        rows = j.open_incidents()[-limit:]
    if as_json:
        emit_json({"incidents": rows, "store_down": j.store_down})
        return
    if not rows:
        out.print("no incidents" if all_ else "open incidents: none")
    else:
        t = Table("incident", "status", "severity", "env", "opened", "trigger", title="incidents")
        for r in rows:
            t.add_row(
                r.get("id", "?"),
                r.get("status", "?"),
                str(r.get("severity", "?")),
                str(r.get("env", "")),
                str(r.get("opened_at", "")),
                escape(str(r.get("trigger", ""))),
            )
        out.print(t)
    if j.store_down:
        err.print(f"[yellow]object store unreachable:[/yellow] {escape(str(j.down_reason))}")


def _read(j: Any, incident_id: str, unverified_ok: bool = False) -> tuple[Any, Any]:
    """(incident, read); exit 1 for an unknown incident. With `unverified_ok`, an incident
    that cannot be looked up because the store is unreachable gives (None, read)."""
    from tbs_emergency.domain.incident import Incident

    read = j.read(incident_id)
    inc = Incident.from_entries(read.entries)
    if inc is None and unverified_ok and read.store_error:
        err.print(
            f"[yellow]cannot check that {escape(incident_id)} exists: the object store is"
            " unreachable; journaling to the local spool anyway[/yellow]",
            highlight=False,
        )
        return None, read
    if inc is None:
        where = " (the object store is unreachable: spool only)" if read.store_error else ""
        raise fail(f"no incident {incident_id} in the journal{where}", 1)
    return inc, read


@incident_app.command("show")
def incident_show(
    incident_id: IncidentArg, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """The incident and its journal, entry by entry."""
    settings = load(config)
    j = open_journal(settings)
    inc, read = _read(j, incident_id)
    if as_json:
        emit_json(
            {
                "incident": inc.model_dump(mode="json"),
                "entries": [e.model_dump(mode="json") for e in read.entries],
                "skipped": read.skipped,
                "store_error": read.store_error,
                "spooled": read.spooled,
            }
        )
        return
    out.print(
        f"incident [bold]{inc.id}[/bold]: {inc.status}, {inc.severity.value}, {inc.env};"
        f" opened {inc.opened_at.isoformat()} by {inc.decided_by}",
        highlight=False,
    )
    out.print(f"trigger: {escape(inc.trigger)}", highlight=False)
    if inc.acknowledged_by:
        out.print(f"acknowledged by {inc.acknowledged_by}", highlight=False)
    t = Table("#", "at", "kind", "step", "result", "by", "what", title="journal")
    for e in read.entries:
        t.add_row(
            str(e.seq),
            e.at.strftime("%H:%M:%S"),
            e.kind,
            e.step or "",
            e.result,
            e.decided_by,
            escape(e.what),
        )
    out.print(t)
    for why in read.skipped:
        err.print(f"[yellow]unreadable entry skipped:[/yellow] {escape(why)}", highlight=False)
    if read.store_error:
        err.print(
            f"[yellow]object store unreachable, spool only:[/yellow] {escape(read.store_error)}",
            highlight=False,
        )


def _appended(j: Any, e: Any, as_json: bool, text: str, **extra: Any) -> None:
    spooled = _spooled(j, e)
    if as_json:
        emit_json({"incident": e.incident_id, "seq": e.seq, "spooled": spooled, **extra})
        return
    out.print(text + (" (spooled locally: the object store is down)" if spooled else ""))


@incident_app.command("note")
def incident_note(
    incident_id: IncidentArg,
    text: Annotated[str, typer.Argument(help="The note")],
    by: ByOpt = "",
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a note to the incident's journal."""
    from tbs_emergency.domain.incident import Entry

    settings = load(config)
    if not text.strip():
        raise fail("the note is empty", 2)
    who = _who(by)
    j = open_journal(settings)
    _read(j, incident_id, unverified_ok=True)
    e = j.append(
        Entry(
            incident_id=incident_id,
            kind="note",
            what=text,
            decided_by=f"person:{who}",
            result="info",
            data={"note": text},
        )
    )
    _appended(j, e, as_json, f"noted on {incident_id} (#{e.seq}) by {who}")


@incident_app.command("resolve")
def incident_resolve(
    incident_id: IncidentArg,
    note: Annotated[str, typer.Option("--note", help="Why it is resolved")] = "",
    by: ByOpt = "",
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resolve the incident (refused when it is unknown or already closed)."""
    from tbs_emergency.domain.incident import RESOLVED, Entry, Incident
    from tbs_emergency.domain.journal import report_key
    from tbs_emergency.domain.report import render_report

    settings = load(config)
    who = _who(by)
    j = open_journal(settings)
    inc, read = _read(j, incident_id)
    if not inc.is_open:
        raise fail(f"incident {incident_id} is already {inc.status}: nothing to resolve", 1)
    e = j.append(
        Entry(
            incident_id=incident_id,
            kind=RESOLVED,
            what=f"incident resolved by {who}" + (f": {note}" if note else ""),
            decided_by=f"person:{who}",
            result="ok",
            data={"note": note, "command": "incident resolve"},
        )
    )
    entries = [*read.entries, e]
    closed = Incident.from_entries(entries)
    report = None
    if closed is not None:
        j.sync_index(closed)
        try:
            j.store.put(
                report_key(incident_id),
                render_report(closed, entries).encode(),
                {"content-type": "text/markdown"},
            )
            report = report_key(incident_id)
        except Exception as exc:
            err.print(f"[yellow]report not stored:[/yellow] {escape(str(exc))}", highlight=False)
    _appended(
        j,
        e,
        as_json,
        f"resolved {incident_id} (#{e.seq}) by {who}",
        status="resolved",
        report=report,
    )


# --------------------------------------------------------------------------------------------
# notify
# --------------------------------------------------------------------------------------------


def notify(
    template: Annotated[str, typer.Argument(help="immediate | user | stakeholder | ...")],
    incident: Annotated[
        str,
        typer.Option("--incident", help="The incident it is about", callback=check_incident_id),
    ] = "",
    severity: Annotated[str, typer.Option("--severity", help="Default: the incident's")] = "",
    reason: Annotated[str, typer.Option("--reason", help="Filled into the template")] = "",
    config: ConfigOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Send one of the runbook's messages (`notify user` is send-user-notifications) to every
    contact it addresses; journaled against the incident (else the day's operations log)."""
    from tbs_emergency.domain.templates import DEFAULT_TEMPLATES, MessageContext

    settings = load(config)
    if template not in DEFAULT_TEMPLATES:
        raise fail(f"no template {template!r} (one of: {', '.join(DEFAULT_TEMPLATES)})", 2)
    j = open_journal(settings)
    sev, env = severity or "P0", "green"
    if incident:
        inc, _ = _read(j, incident)
        sev, env = severity or inc.severity.value, inc.env
    cfg = config_path(config)
    from tasks.notify import plan_messages

    ctx = MessageContext(incident_id=incident, severity=sev, env=env, reason=reason)
    planned = plan_messages(cfg, template, ctx)
    if dry_run:
        plan = [
            {"channel": ch, "recipients": list(m.recipients), "subject": m.subject}
            for ch, m in planned
        ]
        if as_json:
            emit_json({"dry_run": True, "template": template, "incident": incident, "plan": plan})
        else:
            for p in plan:
                out.print(
                    f"would send {template!r} via {p['channel']} to"
                    f" {', '.join(p['recipients']) or '(channel)'}: {p['subject']}",
                    highlight=False,
                    markup=False,
                )
            if not plan:
                out.print(f"nobody is addressed by {template!r} in this configuration")
        return
    if not planned:
        raise fail(f"nobody is addressed by {template!r} in this configuration", 1)
    results, how = _send(settings, cfg, template, incident, sev, reason, planned)
    if not incident:  # the flow journals per delivery when there is an incident
        ok = all(r["ok"] for r in results)
        journal_action(
            settings,
            None,
            operations_log_id(),
            kind="notification",
            what=f"{template} notification sent ({len(results)} channel(s))",
            result="ok" if ok else "failed",
            decided_by=f"person:{_who()}",
            data={"template": template, "results": results},
        )
    doc = {"template": template, "incident": incident or None, "via": how, "results": results}
    if as_json:
        emit_json(doc)
    else:
        for r in results:
            mark = "[green]sent[/green]" if r["ok"] else "[red]FAILED[/red]"
            out.print(f"{mark} {template} via {r['channel']}: {escape(str(r['detail']))}")
    failed = [r["channel"] for r in results if not r["ok"]]
    if failed:
        raise fail(f"not delivered via {', '.join(failed)}", 1)


def prefect_unavailable(settings: Any) -> str | None:
    """Why the Prefect API cannot be used now (None: it answers). Never boots a temporary
    local server: without a configured API the command works without Prefect."""
    api = os.environ.get("PREFECT_API_URL") or settings.prefect.api_url
    if not api:
        return "no Prefect API configured ([prefect] api_url or PREFECT_API_URL)"
    from tbs_emergency.connectors.prefect_api import PrefectRecorder

    rec = PrefectRecorder(api, connect_timeout_s=settings.prefect.connect_timeout_s)
    try:
        rec.healthy()
        return None
    except Exception as exc:
        return str(exc)
    finally:
        rec.close()


def _send(
    settings: Any,
    cfg: str | None,
    template: str,
    incident: str,
    severity: str,
    reason: str,
    planned: list[Any],
) -> tuple[list[dict[str, Any]], str]:
    """Run the `notify` flow (recorded in Prefect, journaled per delivery); if Prefect cannot
    be reached, deliver directly and journal here."""
    why = prefect_unavailable(settings)
    if why is None:
        from flows.notify import NotifyParams
        from flows.notify import notify as notify_flow

        try:
            res = notify_flow(
                NotifyParams(
                    template=template,
                    incident_id=incident,
                    severity=severity,
                    reason=reason,
                    config_path=cfg or "",
                )
            )
            return list(res), "prefect flow"
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
    err.print(
        f"[yellow]delivering directly; the run could not be recorded in Prefect:[/yellow]"
        f" {escape(why)}",
        highlight=False,
    )
    from tasks.notify import deliver

    results = []
    for ch, msg in planned:
        try:
            d = deliver.fn(cfg, ch, msg)
            results.append({"channel": ch, "ok": bool(d["ok"]), "detail": d["detail"]})
        except Exception as exc:
            results.append({"channel": ch, "ok": False, "detail": str(exc)})
    if incident:
        from tasks.common import settings_for

        for r in results:
            journal_action(
                settings_for(cfg),
                None,
                incident,
                kind="notification",
                what=f"{template} notification via {r['channel']}",
                system=r["channel"],
                result="ok" if r["ok"] else "failed",
                data={"template": template, "detail": r["detail"]},
            )
    return results, "direct"


# --------------------------------------------------------------------------------------------
# journal flush | status
# --------------------------------------------------------------------------------------------


@journal_app.command("flush")
def journal_flush(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Write every spooled journal entry to the object store (each exactly once)."""
    settings = load(config)
    j = open_journal(settings)
    res = j.flush()
    if as_json:
        emit_json(res.as_dict())
    else:
        out.print(
            f"flushed {res.written} entr{'y' if res.written == 1 else 'ies'}"
            + (f" ({res.already} already in the store)" if res.already else "")
            + (f", {res.renumbered} renumbered" if res.renumbered else "")
            + f"; {res.left} still spooled",
            highlight=False,
        )
    if res.error:
        raise fail(f"the object store is still unreachable: {res.error}", 1)


@journal_app.command("status")
def journal_status(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Entries spooled locally and not yet flushed: count, oldest, per incident."""
    settings = load(config)
    from tbs_emergency.status import journal_spool

    doc = journal_spool(settings)
    if as_json:
        emit_json(doc)
        return
    if not doc.get("count"):
        out.print(f"journal spool: empty ({doc.get('directory')})", highlight=False)
        return
    out.print(
        f"journal spool: {doc['count']} unflushed entries, oldest {doc['oldest']}"
        f" ({doc['directory']})",
        highlight=False,
    )
    for inc, n in doc["incidents"].items():
        out.print(f"  {inc}: {n}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(incident_app, name="incident")
    app.add_typer(journal_app, name="journal")
    app.command()(notify)
