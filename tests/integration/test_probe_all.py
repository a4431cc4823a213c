"""`Connectors` and `probe_all` over the running servers (what `config check` reports)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tbs_emergency.connectors import Connectors, probe_all
from tbs_emergency.connectors.objectstore import S3ObjectStore

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def bucket(settings: Any) -> None:
    S3ObjectStore(settings.storage).ensure_bucket()


def test_every_system_probed_once_shared_ones_named_together(
    settings_factory: Any, closed_port: int, known: Any
) -> None:
    settings = settings_factory(heavydb_port=closed_port)
    probes = probe_all(settings)
    by_name = {p.system: p for p in probes}
    assert len(by_name) == len(probes), "a system was probed twice"
    expected = {
        "heavydb[blue,green]",
        "mysql[blue,green]",
        "redis[blue]",
        "redis[green]",
        "app[blue]",
        "app[green]",
        "traffic",
        "s3",
        "notify[email]",
        "notify[oncall]",
        "prometheus",
    }
    assert set(by_name) == expected
    down = {p.system for p in probes if not p.reachable}
    if settings.metrics.prometheus_url.endswith(str(closed_port)):  # pragma: no cover
        down.discard("prometheus")
    assert "heavydb[blue,green]" in down
    assert down <= {"heavydb[blue,green]", "prometheus"}, {n: by_name[n].detail for n in down}
    assert "unreachable" in by_name["heavydb[blue,green]"].detail
    for p in probes:
        for secret in (known.app_password, known.lb_token, known.s3_secret, known.smtp_password):
            assert secret not in p.detail
        if p.reachable:
            assert p.latency_ms is not None


def test_separate_databases_are_probed_separately(settings_factory: Any, closed_port: int) -> None:
    settings = settings_factory(heavydb_port=closed_port, green_mysql_database="tbs_archive_green")
    names = [p.system for p in probe_all(settings)]
    assert "mysql[blue]" in names and "mysql[green]" in names
    assert "mysql[blue,green]" not in names


def test_a_hanging_system_does_not_hold_the_others(
    settings_factory: Any, blackhole_port: int
) -> None:
    settings = settings_factory(heavydb_port=blackhole_port)
    for env in settings.environments.values():
        env.heavydb.timeout_s = 0.5
    start = time.monotonic()
    probes = {p.system: p for p in probe_all(settings)}
    assert time.monotonic() - start < 8
    assert not probes["heavydb[blue,green]"].reachable
    assert "timed out" in probes["heavydb[blue,green]"].detail
    assert probes["mysql[blue,green]"].reachable


def test_configuration_problems_become_probe_answers(settings_factory: Any) -> None:
    settings = settings_factory(
        traffic={"kind": "haproxy", "runtime_api": "127.0.0.1:1"},
        channels={"pager": {"kind": "pagerduty", "block": "tbs-pagerduty"}},
    )
    settings.environments["blue"].mysql.password = type(
        settings.environments["blue"].mysql.password
    )(env="TBS_TEST_UNSET_VARIABLE_XYZ")
    probes = {p.system: p for p in probe_all(settings)}
    # A runtime API nobody listens on: an answer naming it, not an exception.
    assert not probes["traffic"].reachable and "runtime API 127.0.0.1:1" in probes["traffic"].detail
    assert probes["notify[pager]"].reachable and "not probed" in probes["notify[pager]"].detail
    assert not probes["mysql[blue,green]"].reachable
    assert "TBS_TEST_UNSET_VARIABLE_XYZ" in probes["mysql[blue,green]"].detail


def test_connectors_are_cached_and_shared(settings: Any) -> None:
    with Connectors(settings) as conn:
        assert conn.mysql("blue") is conn.mysql("green")
        assert conn.mysql("green").name == "mysql[blue,green]"
        assert conn.sessions("blue") is not conn.sessions("green")
        assert conn.store() is conn.store()
        assert conn.traffic() is conn.traffic()
        assert conn.notifier("email") is conn.notifier("email")
        assert conn.app("blue").name == "app[blue]"
