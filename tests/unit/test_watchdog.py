"""The watchdog with hand-written fakes: firing opens one incident and emits, a second rule joins
it, missing data raises one blind alert, a restarted watchdog resumes the open incident."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from flows.watchdog import Watchdog
from tbs_emergency.config import load_settings
from tbs_emergency.domain.journal import Journal
from tbs_emergency.domain.severity import Severity
from tbs_emergency.domain.triggers import ProbeResult, RuleSet
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
            "login_failure_rate": 0.0,
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
    """The load balancer's status document; `fail` makes it unreadable."""

    def __init__(self) -> None:
        self.fail = False
        self.health = {"blue": {"state": "UP", "consecutive_failures": 0}}
        self.health["green"] = {"state": "UP", "consecutive_failures": 0}

    def status(self) -> dict[str, Any]:
        if self.fail:
            raise ConnectionError("load balancer unreachable")
        return {"active": "green", "health": self.health}

    def active(self) -> str:
        return str(self.status()["active"])


class FakeConnectors:
    def __init__(self) -> None:
        self.m = FakeMetrics()
        self.t = FakeTraffic()

    def metrics(self) -> FakeMetrics:
        return self.m

    def traffic(self) -> FakeTraffic:
        return self.t

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
            app_prober=lambda env: ProbeResult(clock.t, "app", True, 0.01, "status ok"),
        )
        wd.start_rollback = lambda inc: events.append(("fallback", {}, {"incident": inc}))  # type: ignore[method-assign]
        wd.find_rollback_runs = lambda inc: []  # type: ignore[method-assign]
        wd._app_thread = object()  # type: ignore[assignment]  # probes are recorded by hand here
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
    # the runbook window and the fast P0 window fire together: one incident
    assert len({f[1]["tbs.incident.id"] for f in fired}) == 1
    assert names(events).count("tbs.incident.opened") == 1
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
    # each further rule is recorded once (the fast throughput window, then the error rate)
    systems = [e.system for e in journal.entries(inc_id) if e.kind == "detection"]
    assert sorted(systems) == [
        "error_rate_spike[error_rate]",
        "performance_degradation[throughput_fast]",
    ]


def test_fallback_starts_the_rollback_when_nothing_started_it(setup) -> None:  # type: ignore[no-untyped-def]
    make, conn, events, journal, clock = setup
    wd = make()
    conn.m.values["throughput"] = 10000.0
    wd.tick()
    clock.t += wd.fallback_after_s - 1.0
    wd.tick()
    assert "fallback" not in names(events)  # a cold executor gets its time
    clock.t += 2.0
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


# -- issue 13: outage, misconfiguration, severity from the present, veto, heartbeat -----------


def test_three_failed_direct_probes_fire_an_outage_p0(setup) -> None:  # type: ignore[no-untyped-def]
    make, _conn, events, journal, clock = setup
    wd = make()
    wd.tick()  # the app probes start with the first tick
    for _i in range(3):
        clock.t += 2.0
        wd._app_probes.setdefault("green", deque()).append(
            ProbeResult(clock.t, "app", False, None, "app[green]: connection refused")
        )
    clock.t += 0.1
    wd.tick()
    fired = [e for e in events if e[0] == "tbs.trigger.fired"]
    assert fired and fired[0][2]["rule"] == "outage" and fired[0][1]["tbs.severity"] == "P0"
    assert len(journal.open_incidents()) == 1


def test_the_load_balancer_health_view_counts_too(setup) -> None:  # type: ignore[no-untyped-def]
    make, conn, events, _journal, clock = setup
    wd = make()
    for n in (1, 2, 3):
        conn.t.health["green"] = {"state": "UP" if n < 3 else "DOWN", "consecutive_failures": n}
        clock.t += 2.0
        wd.tick()
    assert any(e[0] == "tbs.trigger.fired" and e[2]["rule"] == "outage" for e in events)


def test_an_unreadable_load_balancer_is_a_blind_evaluation_and_direct_probes_go_on(setup) -> None:  # type: ignore[no-untyped-def]
    make, conn, events, _journal, clock = setup
    conn.t.fail = True
    wd = make()
    wd.tick()
    blind = [e for e in events if e[0] == "tbs.monitoring.blind"]
    assert blind and "no live environment readable" in blind[0][2]["reason"]
    assert wd._live == "green"  # watched by direct probes (watchdog.assume_live)
    for _ in range(3):
        clock.t += 2.0
        wd._app_probes.setdefault("green", deque()).append(
            ProbeResult(clock.t, "app", False, None, "refused")
        )
    clock.t += 0.1
    wd.tick()
    assert any(e[0] == "tbs.trigger.fired" and e[2]["rule"] == "outage" for e in events)


def test_a_credential_error_is_misconfigured_paged_never_an_incident(setup) -> None:  # type: ignore[no-untyped-def]
    make, _conn, events, journal, clock = setup
    wd = make()
    cfg = wd.settings.triggers.model_copy(deep=True)
    cfg.database_failures.enabled = True
    wd.rules = RuleSet.from_config(cfg)
    wd._probe_thread = object()  # probes recorded by hand
    wd._first_probe = clock.t
    detail = (
        "invalid configuration: secret: Prefect Secret block 'tbs-mysql-app' cannot be read:"
        " ValueError"
    )
    for system in ("mysql", "heavydb"):
        for i in range(6):
            wd._probes.append(ProbeResult(clock.t + i * 0.1, system, False, None, detail))
    clock.t += 1.0
    wd.tick()
    assert "tbs.monitoring.misconfigured" in names(events)
    assert "tbs.trigger.fired" not in names(events) and journal.open_incidents() == []
    assert any("MISCONFIGURED" in p for p in wd.stats.pages)


def test_a_raise_to_p0_is_journaled_and_releases_a_waiting_p1_rollback(setup) -> None:  # type: ignore[no-untyped-def]
    make, conn, events, journal, clock = setup
    wd = make()
    approved: list[str] = []
    wd._approve_waiting = lambda inc, reason: approved.append(inc)  # type: ignore[method-assign]
    conn.m.values["throughput"] = 26000.0  # 30% below: P1
    wd.tick()
    inc_id = journal.open_incidents()[0]["id"]
    assert journal.incident(inc_id).severity == Severity.P1  # type: ignore[union-attr]
    conn.m.values["throughput"] = 0.0  # total outage now: the newest window decides
    clock.t += 1.0
    wd.tick()
    import time as _time

    _time.sleep(0.2)  # the approval is sent from a thread
    sev = [e for e in journal.entries(inc_id) if e.kind == "severity"]
    assert sev and sev[-1].data["severity"] == "P0" and sev[-1].data["previous"] == "P1"
    assert journal.incident(inc_id).severity == Severity.P0  # type: ignore[union-attr]
    assert "tbs.incident.severity" in names(events) and approved == [inc_id]


def test_a_vetoed_incident_is_not_re_emitted(setup) -> None:  # type: ignore[no-untyped-def]
    from tbs_emergency.domain.gate import decision_entry

    make, conn, events, journal, clock = setup
    wd = make()
    conn.m.values["throughput"] = 26000.0
    wd.tick()
    inc_id = journal.open_incidents()[0]["id"]
    journal.append(decision_entry(inc_id, "veto", "alice", "known load test", "cli"))
    before = names(events).count("tbs.trigger.fired")
    clock.t += 30.0
    wd.tick()
    assert names(events).count("tbs.trigger.fired") == before
    clock.t += wd.fallback_after_s + 1
    wd.tick()
    assert "fallback" not in names(events)  # nor does the watchdog start one itself


def test_heartbeat_and_a_long_blind_rule_pages_the_incident_channels(setup) -> None:  # type: ignore[no-untyped-def]
    make, conn, events, _journal, clock = setup
    wd = make()
    wd.heartbeat(force=True)
    assert names(events).count("tbs.watchdog.heartbeat") == 1
    conn.m.values["cpu"] = None
    wd.tick()
    assert not any("BLIND FOR" in p for p in wd.stats.pages)
    clock.t += wd.settings.watchdog.blind_page_after + 1
    wd.tick()
    assert sum("BLIND FOR" in p for p in wd.stats.pages) >= 1


def test_config_check_says_misconfigured_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Secret block that cannot be read is a configuration problem (exit 2), not an outage."""
    import json

    from typer.testing import CliRunner

    from tbs_emergency import config as config_module
    from tbs_emergency.cli import app

    def unreadable(name: str) -> str:
        raise ValueError(f"Unable to find block document named {name}")

    # the block store answers "no such block" (what Prefect's Secret.load raises)
    monkeypatch.setitem(config_module._RESOLVERS, "block", unreadable)

    cfg = tmp_path / "tbs.toml"
    text = CONFIG
    for env in ("blue", "green"):
        text = text.replace(
            f"[environments.{env}.mysql]",
            f'[environments.{env}.mysql]\npassword = {{ block = "tbs-no-such-block-13" }}',
        )
    cfg.write_text(text)
    r = CliRunner().invoke(app, ["--config", str(cfg), "config", "check", "--json"])
    assert r.exit_code == 2, r.output[-2000:]
    doc = json.loads(r.stdout[r.stdout.index("{") :])
    mysql = next(s for s in doc["systems"] if s["system"].startswith("mysql"))
    assert mysql["misconfigured"] and "tbs-no-such-block-13" in mysql["detail"], mysql
    assert "Secret block" in mysql["detail"] and not mysql["reachable"]


def test_prometheus_refusing_the_credentials_is_misconfigured_not_blind(setup) -> None:  # type: ignore[no-untyped-def]
    make, conn, events, _journal, _clock = setup
    wd = make()

    def refused(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("prometheus: query refused: HTTP 401 authentication required")

    conn.m.range = refused  # type: ignore[method-assign]
    wd.tick()
    assert "tbs.monitoring.misconfigured" in names(events)
    assert wd.stats.misconfigured and not wd.stats.fired
