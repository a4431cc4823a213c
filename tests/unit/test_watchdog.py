"""The watchdog with hand-written fakes: firing opens one incident and emits, a second rule joins
it, missing data raises one blind alert, a restarted watchdog resumes the open incident."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from flows.watchdog import Watchdog
from tbs_emergency.config import load_settings
from tbs_emergency.domain.journal import Journal
from tests.unit.fakes_rollback import MemoryStore

pytestmark = pytest.mark.unit

CONFIG = """
[environments.blue]
app_url = "http://127.0.0.1:1"
[environments.blue.heavydb]
[environments.blue.mysql]
[environments.blue.redis]
[environments.green]
app_url = "http://127.0.0.1:2"
[environments.green.heavydb]
[environments.green.mysql]
[environments.green.redis]
[traffic]
url = "http://127.0.0.1:3"
[storage]
bucket = "b"
[metrics]
prometheus_url = "http://127.0.0.1:4"
[triggers]
time_scale = 0.01
[triggers.database_failures]
enabled = false
"""


class FakeMetrics:
    def __init__(self) -> None:
        self.values: dict[str, float | None] = {
            "throughput": 40000.0,
            "error_rate": 0.5,
            "cpu": 20.0,
            "memory": 30.0,
            "disk": 40.0,
        }

    def range(
        self, promql: str, start: float, end: float, step_s: float
    ) -> list[tuple[Mapping[str, str], list[tuple[float, float]]]]:
        signal = promql.split(":", 1)[0]
        v = self.values[signal]
        if v is None:
            return []
        pts, t = [], start
        while t <= end + 1e-9:
            pts.append((t, v))
            t += step_s
        return [({}, pts)]


class FakeTraffic:
    def active(self) -> str:
        return "green"


class FakeConnectors:
    def __init__(self) -> None:
        self.m = FakeMetrics()

    def metrics(self) -> FakeMetrics:
        return self.m

    def traffic(self) -> FakeTraffic:
        return FakeTraffic()

    def heavydb(self, env: str) -> Any:
        raise AssertionError("database rule is disabled here")

    mysql = heavydb

    def store(self) -> Any:
        raise AssertionError("the journal is given")


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = tmp_path / "tbs.toml"
    cfg.write_text(CONFIG)
    settings = load_settings(cfg)
    settings.metrics.queries.update({k: f"{k}:{{env}}:{{window}}" for k in FakeMetrics().values})
    events: list[tuple[str, dict[str, str], dict[str, Any]]] = []
    conn = FakeConnectors()
    journal = Journal(MemoryStore())
    clock = Clock()

    def make() -> Watchdog:
        wd = Watchdog(
            settings,
            conn,  # type: ignore[arg-type]
            emit=lambda e, r, p: events.append((e, r, p)),
            journal=journal,
            clock=clock,
            notify_blind=False,
        )
        wd.start_rollback = lambda inc: events.append(("fallback", {}, {"incident": inc}))  # type: ignore[method-assign]
        return wd

    return make, conn, events, journal, clock


def names(events: list[tuple[str, dict[str, str], dict[str, Any]]]) -> list[str]:
    return [e[0] for e in events]


def test_quiet_system_emits_measurements_only(setup) -> None:  # type: ignore[no-untyped-def]
    make, _conn, events, journal, _clock = setup
    wd = make()
    wd.tick()
    assert names(events) and all(n.startswith("tbs.measurement.") for n in names(events))
    assert journal.open_incidents() == []


def test_fire_opens_one_incident_and_a_second_rule_joins_it(setup) -> None:  # type: ignore[no-untyped-def]
    make, conn, events, journal, clock = setup
    wd = make()
    conn.m.values["throughput"] = 10000.0
    wd.tick()
    fired = [e for e in events if e[0] == "tbs.trigger.fired"]
    assert len(fired) == 1 and "tbs.incident.opened" in names(events)
    inc_id = fired[0][1]["tbs.incident.id"]
    assert fired[0][1]["tbs.severity"] == "P0" and fired[0][2]["rule"] == "performance_degradation"
    assert [r["id"] for r in journal.open_incidents()] == [inc_id]
    # the error rate fires too, a little later: same incident, no new one
    conn.m.values["error_rate"] = 30.0
    clock.t += 11.0
    wd.tick()
    fired = [e for e in events if e[0] == "tbs.trigger.fired"]
    assert {f[1]["tbs.incident.id"] for f in fired} == {inc_id}
    assert names(events).count("tbs.incident.opened") == 1
    kinds = [e.kind for e in journal.entries(inc_id)]
    assert kinds.count("detection") == 1  # the second rule is recorded once


def test_fallback_starts_the_rollback_when_nothing_started_it(setup) -> None:  # type: ignore[no-untyped-def]
    make, conn, events, journal, clock = setup
    wd = make()
    conn.m.values["throughput"] = 10000.0
    wd.tick()
    clock.t += 5.0
    wd.tick()
    assert "fallback" in names(events)
    inc_id = next(e for e in events if e[0] == "fallback")[2]["incident"]
    assert any("watchdog started the rollback" in e.what for e in journal.entries(inc_id))


def test_missing_data_is_one_blind_alert_not_a_breach(setup) -> None:  # type: ignore[no-untyped-def]
    make, conn, events, _journal, clock = setup
    wd = make()
    conn.m.values["cpu"] = None
    wd.tick()
    clock.t += 1.0
    wd.tick()
    assert names(events).count("tbs.monitoring.blind") == 1
    assert "tbs.trigger.fired" not in names(events)
    conn.m.values["cpu"] = 20.0
    clock.t += 1.0
    wd.tick()
    assert "tbs.monitoring.restored" in names(events)


def test_a_restarted_watchdog_keeps_the_open_incident(setup) -> None:  # type: ignore[no-untyped-def]
    make, conn, _events, journal, clock = setup
    conn.m.values["throughput"] = 10000.0
    make().tick()
    first = journal.open_incidents()[0]["id"]
    clock.t += 30.0
    fresh = make()
    fresh._load_open_incidents()
    fresh.tick()
    assert {r["id"] for r in journal.open_incidents()} == {first}
