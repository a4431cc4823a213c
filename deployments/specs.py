"""The deployments and their automations, in one place.

- `emergency-rollback` (flow emergency_rollback): event `tbs.trigger.fired`, one run per
  incident; concurrency limit 1.
- `incident-escalation` (flow incident_escalation): event `tbs.incident.opened`, severity P0/P1.
- `manual-rollback` (flow manual_rollback): a person (UI or CLI); concurrency limit 1.
- `trigger-latency-probe` (flow trigger_latency_probe): event `tbs.bench.ping` (benchmark only).
- the security procedures (docs/security.md), started by a person (UI form or CLI):
  `security-incident` (flow security_incident; also event `tbs.security.alert`, e.g. from an IDS
  or a SIEM rule, one run per alerted resource within 2 minutes), `rotate-credentials`,
  `account-compromise`, `security-lockdown`, `security-lockdown-lift`; all but
  account-compromise one at a time (concurrency limit 1, ENQUEUE).

*One rollback at a time:* the rollback deployments have a concurrency limit of 1 (collision
strategy ENQUEUE: a second incident's run waits, then joins the first incident in the journal).
*The same incident twice starts one rollback:* the automation is reactive with
`for_each = prefect.resource.id` (the incident) and `within = 2 min`: the first event for an
incident fires; further events for the same incident within two minutes are absorbed by the
automation's bucket (the watchdog re-emits every 10 s while the trigger holds, so a run the
server refused is retried two minutes later; the watchdog also starts the run itself if none
started within 3 s). The flow is idempotent as well, so even a duplicate run does nothing twice.

Event resources: `tbs.incident.<id>` with labels `tbs.incident.id`, `tbs.env`, `tbs.rule`,
`tbs.severity` (see `flows.watchdog`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

ROLLBACK_EVENT = "tbs.trigger.fired"
OPENED_EVENT = "tbs.incident.opened"
BENCH_EVENT = "tbs.bench.ping"
SECURITY_ALERT_EVENT = "tbs.security.alert"
DEDUP_WITHIN = timedelta(minutes=2)

ROLLBACK = "emergency-rollback"
ESCALATION = "incident-escalation"
MANUAL = "manual-rollback"
PROBE = "trigger-latency-probe"
SECURITY_INCIDENT = "security-incident"
ROTATE = "rotate-credentials"
ACCOUNT = "account-compromise"
LOCKDOWN = "security-lockdown"
LOCKDOWN_LIFT = "security-lockdown-lift"
SECURITY = (SECURITY_INCIDENT, ROTATE, ACCOUNT, LOCKDOWN, LOCKDOWN_LIFT)
ALL = (ROLLBACK, ESCALATION, MANUAL, PROBE, *SECURITY)


def rollback_trigger(config_path: str | None) -> Any:
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="tbs: trigger fired -> emergency rollback",
        description="Auto-rollback triggers (runbook): start the automated response sequence.",
        expect={ROLLBACK_EVENT},
        match={"prefect.resource.id": "tbs.incident.*"},
        for_each={"prefect.resource.id"},
        posture="Reactive",
        threshold=1,
        within=DEDUP_WITHIN,
        parameters={
            "params": {
                "incident_id": "{{ event.resource['tbs.incident.id'] }}",
                "event_id": "{{ event.id|string }}",
                "config_path": config_path or "",
                "decided_by": "automation: tbs.trigger.fired",
            }
        },
    )


def escalation_trigger(config_path: str | None) -> Any:
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="tbs: P0/P1 incident opened -> escalation",
        description="Unacknowledged P0/P1: primary -> secondary -> manager (runbook contacts).",
        expect={OPENED_EVENT},
        match={"prefect.resource.id": "tbs.incident.*", "tbs.severity": ["P0", "P1"]},
        for_each={"prefect.resource.id"},
        posture="Reactive",
        threshold=1,
        within=DEDUP_WITHIN,
        parameters={
            "params": {
                "incident_id": "{{ event.resource['tbs.incident.id'] }}",
                "config_path": config_path or "",
            }
        },
    )


def security_alert_trigger(config_path: str | None) -> Any:
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="tbs: security alert -> security incident response",
        description="Security Incident Response (runbook), started by an alert (IDS, SIEM).",
        expect={SECURITY_ALERT_EVENT},
        for_each={"prefect.resource.id"},
        posture="Reactive",
        threshold=1,
        within=DEDUP_WITHIN,
        parameters={
            "params": {
                "reason": "{{ event.payload.reason }}",
                "config_path": config_path or "",
                "decided_by": "automation: tbs.security.alert",
            }
        },
    )


def probe_trigger() -> Any:
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="tbs: bench ping -> latency probe",
        expect={BENCH_EVENT},
        posture="Reactive",
        threshold=1,
        within=timedelta(0),
        parameters={
            "params": {
                "event_id": "{{ event.id|string }}",
                "sent_at": "{{ event.payload.sent_at }}",
            }
        },
    )


def served_flows(
    config_path: str | None = None, only: list[str] | None = None
) -> list[tuple[Any, dict[str, Any]]]:
    """(flow, `Runner.add_flow` keyword arguments) for `deployments.runner`; flows imported here,
    lazily, so a deployment whose module is broken does not stop the others from being served."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy="ENQUEUE")
    wanted = set(only or ALL)
    out: list[tuple[Any, dict[str, Any]]] = []
    if ROLLBACK in wanted:
        from flows.emergency_rollback import emergency_rollback

        out.append(
            (
                emergency_rollback,
                {
                    "name": ROLLBACK,
                    "triggers": [rollback_trigger(config_path)],
                    "concurrency_limit": one_at_a_time,
                    "tags": ["tbs", "emergency"],
                    "description": "Automated response sequence (runbook), one at a time.",
                },
            )
        )
    if ESCALATION in wanted:
        from flows.escalation import incident_escalation

        out.append(
            (
                incident_escalation,
                {
                    "name": ESCALATION,
                    "triggers": [escalation_trigger(config_path)],
                    "tags": ["tbs", "emergency"],
                },
            )
        )
    if MANUAL in wanted:
        from flows.manual_rollback import manual_rollback

        out.append(
            (
                manual_rollback,
                {
                    "name": MANUAL,
                    "concurrency_limit": one_at_a_time,
                    "tags": ["tbs", "emergency"],
                    "description": "The 15-minute manual rollback process with its checklists.",
                },
            )
        )
    if PROBE in wanted:
        from flows.latency_probe import trigger_latency_probe

        out.append(
            (
                trigger_latency_probe,
                {"name": PROBE, "triggers": [probe_trigger()], "tags": ["bench"]},
            )
        )
    if wanted & set(SECURITY):
        out += _security_flows(config_path, wanted, one_at_a_time)
    return out


def _security_flows(
    config_path: str | None, wanted: set[str], one_at_a_time: Any
) -> list[tuple[Any, dict[str, Any]]]:
    """The security procedures (docs/security.md), as prefect.yaml declares them."""
    out: list[tuple[Any, dict[str, Any]]] = []
    tags = ("tbs", "security")
    if SECURITY_INCIDENT in wanted:
        from flows.security_incident import security_incident

        out.append(
            (
                security_incident,
                {
                    "name": SECURITY_INCIDENT,
                    "triggers": [security_alert_trigger(config_path)],
                    "concurrency_limit": one_at_a_time,
                    "tags": list(tags),
                    "description": "Security incident response (runbook): isolate, preserve,"
                    " notify; assess; contain.",
                },
            )
        )
    if ROTATE in wanted:
        from flows.rotate_credentials import rotate_credentials

        out.append(
            (
                rotate_credentials,
                {
                    "name": ROTATE,
                    "concurrency_limit": one_at_a_time,
                    "tags": list(tags),
                    "description": "Rotate the service accounts' passwords, all or nothing.",
                },
            )
        )
    if ACCOUNT in wanted:
        from flows.account_compromise import account_compromise

        out.append((account_compromise, {"name": ACCOUNT, "tags": list(tags)}))
    if LOCKDOWN in wanted:
        from flows.security_lockdown import lockdown

        out.append(
            (lockdown, {"name": LOCKDOWN, "concurrency_limit": one_at_a_time, "tags": list(tags)})
        )
    if LOCKDOWN_LIFT in wanted:
        from flows.security_lockdown import lift_lockdown

        out.append(
            (
                lift_lockdown,
                {"name": LOCKDOWN_LIFT, "concurrency_limit": one_at_a_time, "tags": list(tags)},
            )
        )
    return out
