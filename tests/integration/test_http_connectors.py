"""Traffic, app and webhook adapters against an in-test HTTP server.

The server is a TEST DOUBLE (`HttpDouble` in conftest.py) implementing the load balancer's
admin-API contract, the app's /health and a webhook receiver: these are unit-level checks of
the adapters over real HTTP, not of a real load balancer.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tbs_emergency.config import ChannelConfig, TrafficConfig
from tbs_emergency.connectors import Connectors
from tbs_emergency.connectors.app import HttpApp
from tbs_emergency.connectors.base import Notification
from tbs_emergency.connectors.notify import WebhookNotifier
from tbs_emergency.connectors.traffic import HttpTraffic, make_traffic
from tbs_emergency.errors import ConnectorError, Refused, TimedOut, Unreachable

pytestmark = pytest.mark.integration


# -- traffic ------------------------------------------------------------------------------------


def test_traffic_active_redirect_and_switch(settings: Any, http_double: Any) -> None:
    with Connectors(settings) as conn:
        lb = conn.traffic()
        assert lb.active() == "green"
        assert lb.ping().reachable
        answer = lb.redirect_blue()
        assert answer == {"active": "blue", "previous": "green", "changed": True}
        assert http_double.active == "blue"
        assert lb.redirect_blue()["changed"] is False
        assert lb.switch_to("green") == "green"
        assert http_double.active == "green"
        assert lb.switch_to("blue") == "blue"
        assert lb.status()["backends"] == {"blue": {}, "green": {}}


def test_traffic_without_token_is_refused(settings: Any, http_double: Any, known: Any) -> None:
    cfg = settings.traffic.model_copy(update={"token": None})
    lb = HttpTraffic(cfg)
    with pytest.raises(Refused) as err:
        lb.redirect_blue()
    assert "401" in str(err.value)
    assert err.value.system == "traffic"
    assert http_double.active == "green"


def test_traffic_bad_answer_is_an_error(settings: Any, http_double: Any) -> None:
    http_double.require_token = False
    lb = HttpTraffic(TrafficConfig(url=http_double.url + "/health"))  # wrong base: 404s
    with pytest.raises(ConnectorError):
        lb.active()


def test_traffic_unreachable_and_redacted(closed_port: int, known: Any) -> None:
    cfg = TrafficConfig(
        url=f"http://admin:{known.lb_token}@127.0.0.1:{closed_port}", token=known.lb_token
    )
    lb = HttpTraffic(cfg)
    with pytest.raises(Unreachable) as err:
        lb.active()
    assert known.lb_token not in str(err.value)
    assert str(err.value).startswith("traffic:")
    p = lb.ping()
    assert not p.reachable and known.lb_token not in p.detail


def test_traffic_timeout(blackhole_port: int) -> None:
    lb = HttpTraffic(TrafficConfig(url=f"http://127.0.0.1:{blackhole_port}", timeout_s=0.3))
    start = time.monotonic()
    with pytest.raises(TimedOut):
        lb.redirect_blue()
    assert time.monotonic() - start < 3


@pytest.mark.parametrize(
    "kind, extra",
    [
        ("haproxy", {"runtime_api": "127.0.0.1:9999"}),
        ("alb", {"listener_arn": "arn:x", "target_groups": {"blue": "tg"}}),
    ],
)
def test_other_traffic_kinds_are_not_implemented_yet(kind: str, extra: dict[str, Any]) -> None:
    with pytest.raises(ConnectorError, match="not implemented yet"):
        make_traffic(TrafficConfig(kind=kind, **extra))  # type: ignore[arg-type]


# -- app ----------------------------------------------------------------------------------------


def test_app_health(settings: Any, http_double: Any) -> None:
    with Connectors(settings) as conn:
        app = conn.app("blue")
        assert app.name == "app[blue]"
        health = app.health()
        assert health["status"] == "ok" and health["checks"] == {"db": "ok"}
        http_double.health = {"status": "degraded", "checks": {"db": "down"}}
        http_double.health_status = 503
        assert app.health()["status"] == "degraded"
        assert app.health()["http_status"] == 503
        p = app.ping()
        assert p.reachable and "degraded" in p.detail


def test_app_errors(http_double: Any, closed_port: int) -> None:
    http_double.health_status = 500
    with pytest.raises(ConnectorError, match="HTTP 500"):
        HttpApp(http_double.url, 2, "app[green]").health()
    with pytest.raises(Unreachable, match=r"^app\[green\]"):
        HttpApp(f"http://127.0.0.1:{closed_port}", 1, "app[green]").health()
    http_double.delay_s = 1.0
    with pytest.raises(TimedOut):
        HttpApp(http_double.url, 0.3, "app[green]").health()


# -- webhook ------------------------------------------------------------------------------------


def test_webhook_send(settings: Any, http_double: Any) -> None:
    with Connectors(settings) as conn:
        hook = conn.notifier("oncall")
        msg = Notification(
            subject="Rollback started",
            body="Traffic is moving to blue.",
            severity="P0",
            incident_id="INC-7",
            recipients=("oncall@example.com",),
            extra={"trigger": "error_rate_spike"},
        )
        delivery = hook.send(msg)
        assert delivery.ok and delivery.channel == "oncall" and delivery.message_id == "1"
        got = http_double.hooks[-1]
        assert got["path"] == "/hooks/oncall"
        assert got["json"]["subject"] == "Rollback started"
        assert got["json"]["severity"] == "P0"
        assert got["json"]["incident_id"] == "INC-7"
        assert got["json"]["recipients"] == ["oncall@example.com"]
        assert got["json"]["extra"] == {"trigger": "error_rate_spike"}
        assert got["json"]["channel"] == "oncall"
        assert hook.ping().reachable


def test_webhook_token_slack_shape_and_failure(http_double: Any) -> None:
    cfg = ChannelConfig(kind="slack", url=http_double.url + "/hooks/slack", token="hook-Secret-5")
    hook = WebhookNotifier("slack", cfg)
    hook.send(Notification(subject="Down", body="Everything", severity="P1", incident_id="I-1"))
    got = http_double.hooks[-1]
    assert got["json"] == {"text": "*[P1] Down* (I-1)\nEverything"}
    assert got["headers"]["Authorization"] == "Bearer hook-Secret-5"
    http_double.hook_status = 500
    with pytest.raises(ConnectorError) as err:
        hook.send(Notification(subject="x", body="y"))
    assert err.value.system == "notify[slack]" and "HTTP 500" in str(err.value)
    assert "hook-Secret-5" not in str(err.value)


def test_webhook_unreachable(closed_port: int) -> None:
    hook = WebhookNotifier(
        "oncall",
        ChannelConfig(kind="webhook", url=f"http://127.0.0.1:{closed_port}/h", timeout_s=1),
    )
    with pytest.raises(Unreachable, match=r"^notify\[oncall\]"):
        hook.send(Notification(subject="x", body="y"))
    assert not hook.ping().reachable
