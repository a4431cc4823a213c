"""The SMTP channel against a small in-test SMTP server (a TEST DOUBLE, `SmtpDouble`)."""

from __future__ import annotations

import email
import time
from typing import Any

import pytest

from tbs_emergency.config import ChannelConfig, Secret
from tbs_emergency.connectors import Connectors
from tbs_emergency.connectors.base import Notification
from tbs_emergency.connectors.notify import SmtpNotifier
from tbs_emergency.errors import Refused, TimedOut, Unreachable

pytestmark = pytest.mark.integration

MESSAGE = Notification(
    subject="Emergency rollback completed",
    body="Blue has the traffic. Integrity verified.",
    severity="P1",
    incident_id="INC-42",
    recipients=("oncall@example.com", "lead@example.com"),
)


def test_send_with_login(settings: Any, smtp_double: Any) -> None:
    with Connectors(settings) as conn:
        mail = conn.notifier("email")
        delivery = mail.send(MESSAGE)
    assert delivery.ok and delivery.channel == "email"
    assert delivery.message_id and delivery.message_id.startswith("<")
    got = smtp_double.messages[-1]
    assert got["from"] == "tbs-emergency@localhost"
    assert got["to"] == ["oncall@example.com", "lead@example.com"]
    parsed = email.message_from_string(got["data"])
    assert parsed["Subject"] == "[P1] [INC-42] Emergency rollback completed"
    assert parsed["X-TBS-Incident"] == "INC-42"
    assert parsed["Message-ID"] == delivery.message_id
    assert "Integrity verified." in parsed.get_payload()


def test_partly_refused_recipients_are_reported(settings: Any, smtp_double: Any) -> None:
    mail = SmtpNotifier("email", settings.channels["email"])
    msg = Notification(subject="s", body="b", recipients=("a@example.com", "nobody@example.com"))
    delivery = mail.send(msg)
    assert delivery.ok and "nobody@example.com" in delivery.detail
    with pytest.raises(Refused):
        mail.send(Notification(subject="s", body="b", recipients=("nobody@example.com",)))


def test_bad_password_is_refused_and_not_shown(settings: Any, smtp_double: Any) -> None:
    cfg = settings.channels["email"].model_copy(
        update={"smtp_password": Secret(value="bad-Secret-31")}
    )
    with pytest.raises(Refused) as err:
        SmtpNotifier("email", cfg).send(MESSAGE)
    assert "bad-Secret-31" not in str(err.value)
    assert err.value.system == "notify[email]"


def test_no_recipients_is_refused(settings: Any) -> None:
    with pytest.raises(Refused, match="no recipients"):
        SmtpNotifier("email", settings.channels["email"]).send(Notification(subject="s", body="b"))


def test_ping(settings: Any, smtp_double: Any) -> None:
    p = SmtpNotifier("email", settings.channels["email"]).ping()
    assert p.reachable and "NOOP 250" in p.detail, p.detail


def test_unreachable_and_timeout(closed_port: int, blackhole_port: int) -> None:
    closed = ChannelConfig(kind="smtp", smtp_host="127.0.0.1", smtp_port=closed_port, timeout_s=1)
    with pytest.raises(Unreachable, match=r"^notify\[email\]"):
        SmtpNotifier("email", closed).send(MESSAGE)
    assert not SmtpNotifier("email", closed).ping().reachable
    silent = ChannelConfig(
        kind="smtp", smtp_host="127.0.0.1", smtp_port=blackhole_port, timeout_s=0.3
    )
    start = time.monotonic()
    with pytest.raises(TimedOut):
        SmtpNotifier("email", silent).send(MESSAGE)
    assert time.monotonic() - start < 3
