"""PagerDuty Events API v2 and a status-page API: the channels the notify module lacks.

PagerDuty: `POST {url}` (`https://events.pagerduty.com/v2/enqueue` in production) with the
integration's routing key (the channel's `token`, a secret: it is sent in the body, as the API
requires, and never logged or returned). One dedup key per incident (the incident id), so the
trigger, acknowledge and resolve of an incident address the same PagerDuty alert, and a repeated
trigger is deduplicated by PagerDuty itself. `acknowledge` and `resolve` are what the Events API
offers; reading an alert's acknowledgement needs the REST API with a user token, which this
module does not hold (acknowledgement is taken from a Prefect input instead, see the escalation
flow).

Status page: `POST {url}` with `{"status", "message", "incident_id", "components"}` (a generic
status-page webhook; Atlassian Statuspage and similar take the same fields through a relay).
"""

from __future__ import annotations

from typing import Any, Literal

from tbs_emergency.config import ChannelConfig
from tbs_emergency.connectors._common import probe, tcp_check
from tbs_emergency.connectors._http import HttpEndpoint
from tbs_emergency.connectors.base import Delivery, Notification, Probe
from tbs_emergency.errors import ConnectorError

PD_SEVERITY = {"P0": "critical", "P1": "error", "P2": "warning"}
Action = Literal["trigger", "acknowledge", "resolve"]


class PagerDutyNotifier:
    def __init__(self, channel: str, config: ChannelConfig, source: str = "tbs-emergency") -> None:
        if not config.url:
            raise ConnectorError(f"notify[{channel}]", "configure", "the channel has no url")
        if config.token is None:
            raise ConnectorError(
                f"notify[{channel}]", "configure", "a pagerduty channel needs token (routing key)"
            )
        self.channel = channel
        self.config = config
        self.source = source
        self.name = f"notify[{channel}]"
        self._key = config.token
        self._http = HttpEndpoint(
            self.name, config.url, config.timeout_s, secrets=[config.token.get_secret_value()]
        )

    def event(
        self, action: Action, dedup_key: str | None, message: Notification | None = None
    ) -> Delivery:
        body: dict[str, Any] = {
            "routing_key": self._key.get_secret_value(),
            "event_action": action,
        }
        if dedup_key:
            body["dedup_key"] = dedup_key
        if action == "trigger":
            if message is None:
                raise ValueError("a trigger needs a message")
            body["payload"] = {
                "summary": f"{message.subject}: {message.body}"[:1024],
                "source": self.source,
                "severity": PD_SEVERITY.get(message.severity, "error"),
                "custom_details": {"incident_id": message.incident_id, **dict(message.extra)},
            }
        op = f"pagerduty {action}"
        resp = self._http.request("POST", "", op, json=body)
        if not 200 <= resp.status < 300:
            raise self._http.status_error(op, resp)
        answer = self._http.json_of(op, resp)
        key = answer.get("dedup_key") if isinstance(answer, dict) else None
        return Delivery(self.channel, True, f"HTTP {resp.status} {action}", key or dedup_key)

    def send(self, message: Notification) -> Delivery:
        """Trigger (dedup key = incident id)."""
        return self.event("trigger", message.incident_id, message)

    def acknowledge(self, incident_id: str) -> Delivery:
        return self.event("acknowledge", incident_id)

    def resolve(self, incident_id: str) -> Delivery:
        return self.event("resolve", incident_id)

    def ping(self) -> Probe:
        def check() -> str:
            from urllib.parse import urlsplit

            u = urlsplit(self.config.url or "")
            port = u.port or (443 if u.scheme == "https" else 80)
            tcp_check(self.name, u.hostname or "", port, self.config.timeout_s)
            return f"PagerDuty Events v2 at {self._http.redacted()} (TCP ok)"

        return probe(self.name, check)

    def close(self) -> None:
        self._http.close()


class StatusPageNotifier:
    def __init__(self, channel: str, config: ChannelConfig) -> None:
        if not config.url:
            raise ConnectorError(f"notify[{channel}]", "configure", "the channel has no url")
        self.channel = channel
        self.name = f"notify[{channel}]"
        token = config.token.get_secret_value() if config.token else None
        self._http = HttpEndpoint(self.name, config.url, config.timeout_s, token=token)

    def send(self, message: Notification) -> Delivery:
        template = str(message.extra.get("template", ""))
        status = "resolved" if template == "post_resolution" else "investigating"
        op = f"status page {status}"
        resp = self._http.request(
            "POST",
            "",
            op,
            json={
                "status": status,
                "title": message.subject,
                "message": message.body,
                "incident_id": message.incident_id,
                "components": {"tbs": "operational" if status == "resolved" else "degraded"},
            },
        )
        if not 200 <= resp.status < 300:
            raise self._http.status_error(op, resp)
        return Delivery(self.channel, True, f"HTTP {resp.status} {status}")

    def ping(self) -> Probe:
        return probe(self.name, lambda: f"status page at {self._http.redacted()}")

    def close(self) -> None:
        self._http.close()


def make_extra_notifier(channel: str, config: ChannelConfig) -> Any:
    """The notifier for the kinds `connectors.notify` does not build (pagerduty, statuspage)."""
    from tbs_emergency.connectors.notify import make_notifier

    if config.block:  # the Prefect layer sends it: make_notifier says so
        return make_notifier(channel, config)
    if config.kind == "pagerduty":
        return PagerDutyNotifier(channel, config)
    if config.kind == "statuspage":
        return StatusPageNotifier(channel, config)
    return make_notifier(channel, config)
