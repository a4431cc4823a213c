"""Delivering one message on one channel (runbook: "Emergency Communication Procedures").

A delivery is retried on the task (transient failures: 0.5 s, then 2 s); when it still fails the
caller records the failure and carries on: a notification never stops a rollback. Channels
configured with a Prefect notification `block` are sent through that block; the others through
the project's notifiers (webhook, Slack, SMS webhook, in-app, SMTP, PagerDuty Events v2,
status page).
"""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks.bounded import bounded
from tasks.common import settings_for
from tbs_emergency.connectors.base import Notification
from tbs_emergency.domain.templates import DEFAULT_TEMPLATES, MessageContext, render

_NOTIFIERS: dict[tuple[str | None, str], Any] = {}


def notifier(config_path: str | None, channel: str) -> Any:
    from tbs_emergency.connectors.pagerduty import make_extra_notifier

    key = (config_path, channel)
    if key not in _NOTIFIERS:
        _NOTIFIERS[key] = make_extra_notifier(channel, settings_for(config_path).channels[channel])
    return _NOTIFIERS[key]


@task(name="deliver-notification", retries=2, retry_delay_seconds=[0.5, 2])
@bounded(30)  # enforced in worker threads too (tasks/bounded.py); deliveries are `.submit`ted
def deliver(config_path: str | None, channel: str, message: Notification) -> dict[str, Any]:
    """Send one message on one channel; raises on failure (so the task retries)."""
    cfg = settings_for(config_path).channels[channel]
    if cfg.block:
        from prefect.blocks.core import Block

        block = Block.load(cfg.block)
        block.notify(body=message.body, subject=message.subject)  # type: ignore[attr-defined]
        return {"channel": channel, "ok": True, "detail": f"via block {cfg.block}"}
    d = notifier(config_path, channel).send(message)
    return {"channel": channel, "ok": d.ok, "detail": d.detail, "message_id": d.message_id}


@task(name="pagerduty-event", retries=2, retry_delay_seconds=[0.5, 2])
@bounded(30)
def pagerduty_event(config_path: str | None, channel: str, action: str, incident_id: str) -> str:
    """Acknowledge or resolve the incident's PagerDuty alert (dedup key = incident id)."""
    n = notifier(config_path, channel)
    d = n.acknowledge(incident_id) if action == "acknowledge" else n.resolve(incident_id)
    return d.detail


def addressed(
    config_path: str | None, channel: str, contact: Any, msg: Notification
) -> Notification:
    """`msg` addressed to one contact on one channel (e-mail for SMTP, phone for SMS)."""
    cfg = settings_for(config_path).channels[channel]
    addr = {"smtp": contact.email, "sms": contact.phone}.get(cfg.kind) or contact.name
    return Notification(
        subject=msg.subject,
        body=msg.body,
        severity=msg.severity,
        incident_id=msg.incident_id,
        recipients=(addr,) if addr else (),
        extra=dict(msg.extra),
    )


def plan_messages(
    config_path: str | None,
    template: str,
    ctx: MessageContext,
    roles: tuple[str, ...] | list[str] | None = None,
) -> list[tuple[str, Notification]]:
    """(channel, message) for every channel of every contact the template addresses.

    Recipients are the contacts whose role the template names (or `roles`, when given); each
    channel is used once, with the addresses of the contacts reached through it (e-mail for
    SMTP, phone for SMS, names otherwise). Channels whose kind the template does not use are
    left out.
    """
    settings = settings_for(config_path)
    t = DEFAULT_TEMPLATES[template]
    wanted = tuple(roles) if roles else t.roles
    by_channel: dict[str, list[str]] = {}
    for c in settings.contacts:
        if c.role not in wanted:
            continue
        for ch in c.channels:
            cfg = settings.channels.get(ch)
            if cfg is None or cfg.kind not in t.channel_kinds:
                continue
            addr = {"smtp": c.email, "sms": c.phone}.get(cfg.kind) or c.name
            by_channel.setdefault(ch, [])
            if addr and addr not in by_channel[ch]:
                by_channel[ch].append(addr)
    base = render(template, ctx)
    return [
        (
            ch,
            Notification(
                subject=base.subject,
                body=base.body,
                severity=base.severity,
                incident_id=base.incident_id,
                recipients=tuple(addrs),
                extra=dict(base.extra),
            ),
        )
        for ch, addrs in by_channel.items()
    ]
