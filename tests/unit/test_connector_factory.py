"""The connector factory's naming and sharing rules, and the notification payloads."""

from __future__ import annotations

from typing import Any

import pytest

from tbs_emergency.config import ChannelConfig, Settings
from tbs_emergency.connectors import Connectors, sharing, system_name
from tbs_emergency.connectors.base import Notification
from tbs_emergency.connectors.notify import make_notifier, notification_payload, slack_payload
from tbs_emergency.errors import ConfigError, ConnectorError

pytestmark = pytest.mark.unit


def _settings(**green: Any) -> Settings:
    def env(**changes: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "app_url": "http://127.0.0.1:1",
            "heavydb": {},
            "mysql": {"password": "x"},
            "redis": {},
        }
        for key, value in changes.items():
            base[key] = value
        return base

    return Settings(
        environments={"blue": env(), "green": env(**green)},
        traffic={"url": "http://127.0.0.1:2"},
        storage={"bucket": "b"},
        metrics={"prometheus_url": "http://127.0.0.1:3"},
        channels={
            "ops": {"kind": "webhook", "url": "http://127.0.0.1:4/h"},
            "pd": {"kind": "pagerduty", "block": "tbs-pd"},
        },
    )


def test_shared_systems_are_named_after_every_environment() -> None:
    s = _settings(heavydb={"port": 7000})
    assert system_name(s, "mysql", "green") == "mysql[blue,green]"
    assert system_name(s, "heavydb", "green") == "heavydb[green]"
    assert sharing(s, "heavydb", "blue") == ["blue"]
    conn = Connectors(s)
    assert conn.mysql("blue") is conn.mysql("green")
    assert conn.heavydb("blue") is not conn.heavydb("green")
    assert conn.heavydb("green").name == "heavydb[green]"


def test_probe_plan_names_each_system_once() -> None:
    names = [n for n, _, _ in Connectors(_settings()).probe_plan()]
    assert len(names) == len(set(names))
    assert names[:3] == ["heavydb[blue,green]", "mysql[blue,green]", "redis[blue,green]"]
    assert {"app[blue]", "app[green]", "traffic", "prometheus", "s3", "notify[ops]"} <= set(names)


def test_unknown_names_are_config_errors() -> None:
    conn = Connectors(_settings())
    with pytest.raises(ConfigError):
        conn.mysql("purple")
    with pytest.raises(ConfigError):
        conn.notifier("nope")
    with pytest.raises(ConnectorError, match="Prefect block"):
        conn.notifier("pd")


def test_importing_the_factory_loads_no_driver() -> None:
    import subprocess
    import sys

    code = (
        "import sys, tbs_emergency.connectors;"
        "bad=[m for m in ('pymysql','heavydb','boto3','httpx','redis') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_payloads() -> None:
    n = Notification(subject="S", body="B", severity="P0", incident_id="I-1", recipients=["a"])
    p = notification_payload(n, "ops")
    assert p["subject"] == "S" and p["channel"] == "ops" and p["recipients"] == ["a"]
    assert slack_payload(n) == {"text": "*[P0] S* (I-1)\nB"}
    with pytest.raises(ConnectorError, match="not implemented"):
        make_notifier("st", ChannelConfig(kind="statuspage", url="http://x"))
    # the factory builds every kind, PagerDuty and status page included (`config check` probes
    # them all)
    from tbs_emergency.connectors.pagerduty import make_extra_notifier

    status_page = make_extra_notifier("st", ChannelConfig(kind="statuspage", url="http://x"))
    assert status_page.channel == "st"
