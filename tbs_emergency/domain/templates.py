"""The runbook's four communication templates ("Emergency Communication Procedures").

| Template        | Moment (runbook) | Recipients (roles)                 | Channels (kinds)      |
|-----------------|------------------|------------------------------------|-----------------------|
| immediate       | 0-5 min          | primary, secondary, escalation     | phone/sms, e-mail     |
| user            | 5-10 min         | users                              | in-app, e-mail        |
| stakeholder     | 10-15 min        | stakeholder, escalation            | e-mail, slack         |
| post_resolution | 15-30 min        | users, stakeholder                 | e-mail, status page   |

Texts are `str.format` templates over `MessageContext` fields; the defaults are the runbook's
words exactly (the immediate one with the incident's severity in place of "P0"). Two more are
not in the runbook but are needed to say what the automation could *not* do: `escalation`
(rollback blocked or failed, a person must act) and `blind` (monitoring has no data). `security`
is the immediate (P0) template for the security incident response team (runbook:
`notify-security-team.sh --incident-type=security --severity=critical`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tbs_emergency.connectors.base import Notification


@dataclass(frozen=True)
class Template:
    key: str
    subject: str
    body: str
    roles: tuple[str, ...]
    channel_kinds: tuple[str, ...]
    moment: str


DEFAULT_TEMPLATES: dict[str, Template] = {
    t.key: t
    for t in (
        Template(
            "immediate",
            "{severity} EMERGENCY: TBS incident {incident_id}",
            "{severity} EMERGENCY: TBS deployment issue detected. Rollback initiated."
            " Response required immediately.",
            ("primary", "secondary", "escalation"),
            ("sms", "pagerduty", "smtp", "webhook", "slack"),
            "0-5 minutes: on detection",
        ),
        Template(
            "user",
            "TBS maintenance in progress",
            "System maintenance in progress. Service will be restored within 15 minutes."
            " Your data is secure.",
            ("users",),
            ("in_app", "smtp", "webhook"),
            "5-10 minutes: when the rollback executes",
        ),
        Template(
            "stakeholder",
            "TBS emergency rollback executed ({incident_id})",
            "Emergency rollback executed successfully. System operational."
            " Full incident report within 24 hours.",
            ("stakeholder", "escalation"),
            ("smtp", "slack", "webhook"),
            "10-15 minutes: when recovery is confirmed",
        ),
        Template(
            "post_resolution",
            "TBS fully restored",
            "System fully restored. All services operational. Thank you for your patience.",
            ("users", "stakeholder"),
            ("smtp", "statuspage", "webhook"),
            "15-30 minutes: when the incident is resolved",
        ),
        Template(
            "escalation",
            "{severity} ESCALATION: TBS incident {incident_id} needs a person",
            "{severity} ESCALATION: automatic rollback could not complete: {reason}."
            " Incident {incident_id} stays open. Response required immediately.",
            ("primary", "secondary", "escalation"),
            ("sms", "pagerduty", "smtp", "webhook", "slack"),
            "whenever the automation stops short",
        ),
        Template(
            "security",
            "{severity} SECURITY EMERGENCY: TBS incident {incident_id}",
            "{severity} EMERGENCY: TBS security incident detected ({reason})."
            " Affected systems isolated, system state preserved. Security incident response"
            " team: response required immediately.",
            ("security",),
            ("sms", "pagerduty", "smtp", "webhook", "slack"),
            "0-5 minutes: security incident response (runbook: notify-security-team.sh)",
        ),
        Template(
            "blind",
            "P1 MONITORING BLIND: {reason}",
            "P1: TBS monitoring is blind ({reason}). Automatic rollback cannot see this signal;"
            " check the monitoring path.",
            ("primary",),
            ("sms", "pagerduty", "smtp", "webhook", "slack"),
            "whenever a rule has no data",
        ),
    )
}


@dataclass(frozen=True)
class MessageContext:
    incident_id: str
    severity: str = "P0"
    env: str = "green"
    reason: str = ""
    trigger: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "severity": self.severity,
            "env": self.env,
            "reason": self.reason,
            "trigger": self.trigger,
            **dict(self.extra),
        }


class _SafeDict(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render(
    key: str, ctx: MessageContext, templates: Mapping[str, Template] | None = None
) -> Notification:
    """The notification for template `key` (KeyError for an unknown template)."""
    t = (templates or DEFAULT_TEMPLATES)[key]
    values = _SafeDict(ctx.fields())
    return Notification(
        subject=t.subject.format_map(values),
        body=t.body.format_map(values),
        severity=ctx.severity,
        incident_id=ctx.incident_id,
        extra={"template": key, "env": ctx.env},
    )
