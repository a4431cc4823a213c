"""The watchdog is watched: page when it has gone silent.

prefect.yaml's automation "tbs: watchdog silent -> page" is a Prefect *proactive* trigger: when
no `tbs.watchdog.heartbeat` event (emitted every `watchdog.heartbeat_every` s by
`tbs-emergency watch`, flows/watchdog.py) arrives for 60 s, it runs this flow, which pages the
primary contact through every channel (PagerDuty and e-mail included: with no watchdog, no
trigger can fire). One page per silence: a Prefect Variable remembers the silence already paged
(the proactive trigger fires again every 60 s while the silence lasts).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from tasks.common import settings_for
from tasks.notify import deliver
from tbs_emergency.connectors.base import Notification

PAGED_VARIABLE = "tbs-watchdog-silence-paged"


class SilentParams(BaseModel):
    config_path: str = Field("", description="tbs.toml; empty: $TBS_CONFIG or ./tbs.toml")
    last_heartbeat: str = Field("", description="The last heartbeat the automation saw (if any)")
    silent_s: float = 60.0


HEARTBEAT = "tbs.watchdog.heartbeat"
STOPPED = "tbs.watchdog.stopped"


def _last_word() -> tuple[str, str]:
    """The watchdog's newest event in the last day: (event name, when, ISO), ("", "") if none,
    ("?", "") if Prefect cannot be asked."""
    from datetime import timedelta

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    try:
        now = datetime.now(UTC)
        with get_client(sync_client=True) as client:
            page = client.read_events(
                EventFilter(
                    event=EventNameFilter(name=[HEARTBEAT, STOPPED]),
                    occurred=EventOccurredFilter(since=now - timedelta(days=1), until=now),
                ),
                limit=1,
            )
        if not page.events:
            return "", ""
        return page.events[0].event, page.events[0].occurred.isoformat()
    except Exception:
        return "?", ""


@flow(name="watchdog_silent", log_prints=False, persist_result=False)
def watchdog_silent(params: SilentParams | None = None) -> dict[str, Any]:
    """Page once per silence of the watchdog (see the module docstring)."""
    from prefect.variables import Variable

    p = params or SilentParams()
    cfg = p.config_path or None
    logger = get_run_logger()
    event, last = _last_word()
    if event == STOPPED:
        logger.info("the watchdog stopped cleanly at %s: a deliberate silence, no page", last)
        return {"paged": False, "last_heartbeat": last, "stopped": True}
    if event == "":
        # Nothing to watch has run here in a day (a fresh install, a sandbox without `watch`):
        # a watchdog that dies has spoken first, so its silence is paged above.
        logger.info("no watchdog has reported in the last day: nothing has gone silent")
        return {"paged": False, "last_heartbeat": "", "never_ran": True}
    last = p.last_heartbeat or last
    marker = last or "unknown"
    try:
        already = Variable.get(PAGED_VARIABLE, default=None)
    except Exception:
        already = None
    if already == marker:
        logger.info("this silence (last heartbeat %s) was paged already", marker)
        return {"paged": False, "last_heartbeat": marker}
    settings = settings_for(cfg)
    msg = Notification(
        subject="P1 WATCHDOG SILENT: no heartbeat for 60s",
        body=(
            "P1: the TBS watchdog (`tbs-emergency watch`) has not reported for"
            f" {p.silent_s:g}s (last heartbeat: {marker}). No auto-rollback trigger can fire"
            " until it runs again: check the process and its supervisor."
        ),
        severity="P1",
        extra={"template": "watchdog-silent"},
    )
    by_channel: dict[str, list[str]] = {}
    for c in settings.contacts:
        if c.role != "primary":
            continue
        for ch in c.channels:
            kind = settings.channels[ch].kind if ch in settings.channels else None
            if kind is None:
                continue
            addr = {"smtp": c.email, "sms": c.phone}.get(kind) or c.name
            by_channel.setdefault(ch, [])
            if addr and addr not in by_channel[ch]:
                by_channel[ch].append(addr)
    futures = [
        deliver.submit(cfg, ch, replace(msg, recipients=tuple(addrs)))
        for ch, addrs in by_channel.items()
    ]
    sent = 0
    for f in futures:
        try:
            f.result(timeout=60)
            sent += 1
        except Exception as exc:
            logger.warning("watchdog-silent page failed: %s", exc)
    try:
        Variable.set(PAGED_VARIABLE, marker, overwrite=True)
    except Exception as exc:
        logger.warning("could not remember the paged silence: %s", exc)
    logger.warning("watchdog silent since %s: paged on %d channel(s)", marker, sent)
    return {"paged": True, "channels": sent, "last_heartbeat": marker}
