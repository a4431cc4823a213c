"""Notification channels written by hand: a JSON webhook and SMTP e-mail.

`send` returns a Delivery when the channel accepted the message and raises a ConnectorError
(naming `notify[<channel>]`) when it did not, so a Prefect task around it retries. Channels that
are Prefect notification blocks (`block = ...` in the config) are sent by the Prefect layer, not
here. smtplib is the standard library; HTTP goes through `_http` (httpx).
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import asdict
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import urlsplit

from tbs_emergency.config import ChannelConfig
from tbs_emergency.connectors._common import probe, redact_text, redact_url, tcp_check
from tbs_emergency.connectors._http import HttpEndpoint
from tbs_emergency.connectors.base import Delivery, Notification, Probe
from tbs_emergency.errors import ConnectorError, Refused, TimedOut, Unreachable


def notification_payload(message: Notification, channel: str) -> dict[str, Any]:
    """The JSON a generic webhook receives: the Notification's fields plus the channel name."""
    payload = asdict(message)
    payload["recipients"] = list(message.recipients)
    payload["extra"] = dict(message.extra)
    payload["channel"] = channel
    return payload


def slack_payload(message: Notification) -> dict[str, Any]:
    """Slack incoming-webhook shape: one mrkdwn text."""
    incident = f" ({message.incident_id})" if message.incident_id else ""
    return {"text": f"*[{message.severity}] {message.subject}*{incident}\n{message.body}"}


class WebhookNotifier:
    """POST the notification as JSON to the channel's URL (Bearer token if configured)."""

    def __init__(self, channel: str, config: ChannelConfig) -> None:
        if not config.url:
            raise ConnectorError(f"notify[{channel}]", "configure", "the channel has no url")
        self.channel = channel
        self.config = config
        self.name = f"notify[{channel}]"
        token = config.token.get_secret_value() if config.token else None
        self._http = HttpEndpoint(self.name, config.url, config.timeout_s, token=token)

    def payload(self, message: Notification) -> dict[str, Any]:
        if self.config.kind == "slack":
            return slack_payload(message)
        return notification_payload(message, self.channel)

    def send(self, message: Notification) -> Delivery:
        op = f"send {message.severity} {message.subject!r}"
        resp = self._http.request("POST", "", op, json=self.payload(message))
        if not 200 <= resp.status < 300:
            raise self._http.status_error(op, resp)
        message_id = None
        try:
            body = resp.json()
            if isinstance(body, dict):
                found = body.get("id") or body.get("message_id") or body.get("dedup_key")
                message_id = str(found) if found else None
        except ValueError:
            pass
        return Delivery(self.channel, True, f"HTTP {resp.status}", message_id)

    def ping(self) -> Probe:
        def check() -> str:
            parts = urlsplit(self.config.url or "")
            host = parts.hostname or ""
            port = parts.port or (443 if parts.scheme == "https" else 80)
            tcp_check(self.name, host, port, self.config.timeout_s)
            return f"accepts connections at {redact_url(self.config.url or '')}"

        return probe(self.name, check)

    def close(self) -> None:
        self._http.close()


class SmtpNotifier:
    """E-mail through an SMTP server, optional STARTTLS and login."""

    def __init__(self, channel: str, config: ChannelConfig) -> None:
        if not config.smtp_host:
            raise ConnectorError(f"notify[{channel}]", "configure", "the channel has no smtp_host")
        self.channel = channel
        self.config = config
        self.name = f"notify[{channel}]"

    def _where(self) -> str:
        return f"{self.config.smtp_host}:{self.config.smtp_port}"

    def _password(self) -> str | None:
        pw = self.config.smtp_password
        return pw.get_secret_value() if pw is not None else None

    def _error(self, operation: str, exc: BaseException) -> ConnectorError:
        try:
            secret = self._password()
        except Exception:
            secret = None
        text = redact_text(str(exc) or type(exc).__name__, [secret])
        # smtplib reports a timeout during the greeting as "Connection unexpectedly closed:
        # timed out" (SMTPServerDisconnected).
        if isinstance(exc, TimeoutError | socket.timeout) or "timed out" in text.lower():
            return TimedOut(
                self.name,
                operation,
                f"no answer from {self._where()} within {self.config.timeout_s:g}s",
            )
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return Refused(self.name, operation, f"authentication failed ({exc.smtp_code})")
        if isinstance(
            exc,
            smtplib.SMTPRecipientsRefused
            | smtplib.SMTPSenderRefused
            | smtplib.SMTPDataError
            | smtplib.SMTPNotSupportedError,
        ):
            return Refused(self.name, operation, text)
        if isinstance(exc, smtplib.SMTPServerDisconnected | smtplib.SMTPConnectError | OSError):
            return Unreachable(self.name, operation, f"{self._where()}: {text}")
        return ConnectorError(self.name, operation, text)

    def _open(self) -> smtplib.SMTP:
        c = self.config
        assert c.smtp_host is not None
        smtp = smtplib.SMTP(c.smtp_host, c.smtp_port, timeout=c.timeout_s)
        try:
            smtp.ehlo()
            if c.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if c.smtp_user:
                smtp.login(c.smtp_user, self._password() or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def build(self, message: Notification) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.config.sender
        msg["To"] = ", ".join(message.recipients)
        incident = f" [{message.incident_id}]" if message.incident_id else ""
        msg["Subject"] = f"[{message.severity}]{incident} {message.subject}"
        msg["Date"] = formatdate(usegmt=True)
        domain = self.config.sender.rpartition("@")[2] or "localhost"
        msg["Message-ID"] = make_msgid(domain=domain)
        if message.incident_id:
            msg["X-TBS-Incident"] = message.incident_id
        msg["X-TBS-Severity"] = message.severity
        msg.set_content(message.body)
        return msg

    def send(self, message: Notification) -> Delivery:
        op = f"send {message.severity} {message.subject!r}"
        if not message.recipients:
            raise Refused(self.name, op, "the notification has no recipients")
        msg = self.build(message)
        try:
            smtp = self._open()
            try:
                refused = smtp.send_message(
                    msg, from_addr=self.config.sender, to_addrs=list(message.recipients)
                )
            finally:
                try:
                    smtp.quit()
                except (smtplib.SMTPException, OSError):
                    smtp.close()
        except ConnectorError:
            raise
        except Exception as exc:
            raise self._error(op, exc) from None
        accepted = len(message.recipients) - len(refused)
        detail = f"accepted for {accepted} recipient(s)"
        if refused:
            detail += f"; refused: {', '.join(sorted(refused))}"
        return Delivery(self.channel, True, detail, str(msg["Message-ID"]))

    def ping(self) -> Probe:
        def check() -> str:
            try:
                smtp = self._open()
                try:
                    code, _ = smtp.noop()
                finally:
                    try:
                        smtp.quit()
                    except (smtplib.SMTPException, OSError):
                        smtp.close()
            except Exception as exc:
                raise self._error("connect", exc) from None
            return f"SMTP {self._where()} NOOP {code}"

        return probe(self.name, check)

    def close(self) -> None:
        pass


def make_notifier(channel: str, config: ChannelConfig) -> WebhookNotifier | SmtpNotifier:
    """The hand-written channel for a configured channel."""
    name = f"notify[{channel}]"
    if config.block:
        raise ConnectorError(
            name,
            "configure",
            f"channel {channel!r} is the Prefect block {config.block!r}:"
            " the Prefect layer sends it",
        )
    if config.kind == "smtp":
        return SmtpNotifier(channel, config)
    if config.kind in ("webhook", "slack", "sms", "in_app"):
        return WebhookNotifier(channel, config)
    raise ConnectorError(
        name, "configure", f"the {config.kind!r} channel is not implemented here yet"
    )
