"""The watchdog (runbook: "Auto-Rollback Triggers"): detect, record, emit; never act.

`Watchdog.run()` loops until stopped. Every rule is evaluated at its own interval against the
environment that has the traffic (`tbs_emergency.domain.triggers` has the exact semantics):

- windowed rules (performance, error rate, resources) ask Prometheus for their last N windows, so
  a restarted watchdog resumes a streak where it was;
- both databases of the live environment are probed actively in background threads, each probe
  a fresh connection (connect + `SELECT 1`, never a cached connection: a server that refuses new
  connections must look down), bounded by the rule's response time;
- the live app is probed directly (connect + `GET /health`, short timeout, every 2 s of real
  time) and the load balancer's health view is read with the traffic state: the outage rule
  fires P0 on 3 failures within 10 s (defaults), with no measurement window to wait for. When the
  load balancer cannot be read, the last known (else `watchdog.assume_live`) environment is
  probed directly and "no live environment readable" is a blind evaluation with its alert.

Configuration and credential problems (a Secret block that cannot be read, access denied) make
an evaluation `misconfigured`, paged at once through the incident channels; they never fire.
A rule blind for `watchdog.blind_page_after` (5 min) pages through the incident channels
(PagerDuty, e-mail), not only chat. The watchdog itself is watched: it emits
`tbs.watchdog.heartbeat` every `watchdog.heartbeat_every` s, and an automation of prefect.yaml
pages when none arrives for 60 s.

What it emits (Prefect events, resource `tbs.watchdog` or `tbs.incident.<id>`):

- `tbs.measurement.<rule>` per evaluation, payload = the evaluation (throttled by default: on
  every status change, otherwise at most every `TBS_WATCH_MEASUREMENT_EVERY_S` = 10 s per rule
  and signal; 0 emits every evaluation);
- `tbs.monitoring.blind` / `tbs.monitoring.restored` when a rule loses / regains its data, with
  a P1 "monitoring blind" notification on the way in;
- `tbs.incident.opened` and `tbs.trigger.fired` (rule, values, severity, reason) when a rule
  fires. The incident is opened in the journal (detection record) *before* the event is emitted,
  so the rollback that the automation starts always finds it.

Grouping: while an incident is open for an environment, further firings for it (another rule, or
the same rule again) are recorded in that incident and re-emitted with the same incident id; the
automation deduplicates per incident, so they never start a second rollback. When a firing shows
a higher severity than the incident has (the newest window decides), the raise is journaled
(`severity` entry), emitted (`tbs.incident.severity`) and, for P0, a rollback run waiting in its
P1 veto window is told to proceed (flows/rollback_gate.py). A vetoed incident is never re-emitted.

The fallback under the automation: `watchdog.fallback_after` s (at least what a cold executor
needs) after the event, the watchdog looks for a flow run of the rollback deployment for the
incident (its parameters) and starts one only if there is none (idempotency key
`tbs-rollback:<incident>`); the rollback gate ends any duplicate run without acting.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from tbs_emergency.config import Settings
from tbs_emergency.connectors import Connectors
from tbs_emergency.connectors.base import Notification
from tbs_emergency.domain.gate import decision_of
from tbs_emergency.domain.incident import Entry, Incident, as_utc, incident_id
from tbs_emergency.domain.journal import Journal
from tbs_emergency.domain.severity import Severity
from tbs_emergency.domain.templates import MessageContext, render
from tbs_emergency.domain.triggers import (
    BLIND,
    Evaluation,
    ProbeResult,
    RuleSet,
    collect_windows,
    is_misconfiguration,
)
from tbs_emergency.errors import ConfigError

log = logging.getLogger("tbs_emergency.watchdog")

Emit = Callable[[str, dict[str, str], dict[str, Any]], None]

WATCHDOG_RESOURCE = {"prefect.resource.id": "tbs.watchdog", "prefect.resource.name": "watchdog"}
STOPPED_EVENT = "tbs.watchdog.stopped"
REEMIT_EVERY_S = 10.0
# 0 emits one event per evaluation; the default keeps a SQLite Prefect server breathing (in the
# sandbox the rules evaluate about seven times a second).
MEASUREMENT_EVENT_EVERY_S = float(os.environ.get("TBS_WATCH_MEASUREMENT_EVERY_S", "10"))
# If the automation has not started the rollback this long after the event (the server refused
# the run, the automation was disabled...), the watchdog starts it itself, once per incident.
# The environment overrides `watchdog.fallback_after` (tests); it is never below what a cold
# executor needs to pick a run up.
FALLBACK_AFTER_ENV = "TBS_WATCH_FALLBACK_S"
ROLLBACK_DEPLOYMENT = "emergency_rollback/emergency-rollback"
INDEX_REFRESH_S = 2.0
MAX_IN_FLIGHT = 3
VETO_CHECK_S = 5.0


def send_page(settings: Settings, msg: Any, *, incident_channels: bool) -> int:
    """Send msg to the primary contact's channels; `incident_channels` includes PagerDuty and
    e-mail (an incident), else chat and webhooks only. Channels sent through a Prefect block are
    left to the Prefect layer. Returns how many channels took it."""
    from tbs_emergency.connectors.pagerduty import make_extra_notifier

    sent = 0
    for c in settings.contacts:
        if c.role != "primary":
            continue
        for ch in c.channels:
            cfg = settings.channels.get(ch)
            if cfg is None or cfg.block:
                continue
            if not incident_channels and cfg.kind in ("pagerduty", "smtp"):
                continue
            for attempt in range(3):
                try:
                    make_extra_notifier(ch, cfg).send(msg)
                    sent += 1
                    break
                except Exception as exc:
                    log.warning("page on %s failed (%s): %s", ch, attempt + 1, exc)
                    time.sleep(0.5 * (attempt + 1))
    return sent


def fresh_db_probe(settings: Settings, kind: str, env: str) -> Any:
    """One probe as the runbook means it: a new connection, `SELECT 1`, closed again (a cached
    connection would hide a server that refuses new ones). A configuration or credential error
    raises (ConfigError), so the caller can tell it from an outage."""
    from tbs_emergency.connectors import system_name

    cfg = getattr(settings.environment(env), kind)
    name = system_name(settings, kind, env)  # type: ignore[arg-type]
    db: Any
    if kind == "mysql":
        from tbs_emergency.connectors.mysql import MySQLDatabase

        db = MySQLDatabase(cfg, name)
    else:
        from tbs_emergency.connectors.heavydb import HeavyDBDatabase

        db = HeavyDBDatabase(cfg, name)
    try:
        first = db.ping()  # connect + login + SELECT 1: any failure here is a failure
        if not first.reachable:
            return first
        # The response time is the database's answer on that fresh connection, not the
        # connection set-up (which a loaded machine stretches well past the drills' floor).
        second = db.ping()
        return second if not second.reachable else replace(second, detail=first.detail)
    finally:
        with contextlib.suppress(Exception):
            db.close()


def direct_app_probe(settings: Settings, env: str, timeout_s: float) -> ProbeResult:
    """Connect + `GET /health` of env's app within timeout_s (a fresh connection each time).
    A refused connection, a timeout (a hung app) or an app that says it is down (503) fail."""
    from tbs_emergency.connectors.app import HttpApp

    started = time.time()
    app = HttpApp(settings.environment(env).app_url, timeout_s, f"app[{env}]")
    try:
        body = app.health()
        lat = time.time() - started
        if body.get("http_status") == 503 or body.get("status") == "down":
            return ProbeResult(started, "app", False, lat, f"app[{env}] reports down")
        return ProbeResult(started, "app", True, lat, f"status {body.get('status', '?')}")
    except Exception as exc:
        return ProbeResult(started, "app", False, None, str(exc)[:300])
    finally:
        with contextlib.suppress(Exception):
            app.close()


def prefect_emit(event: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
    from prefect.events import emit_event

    emit_event(event, resource=resource, payload=payload)


@dataclass
class _Due:
    next_at: float = 0.0
    last_status: str | None = None
    last_event_at: float = 0.0


@dataclass
class WatchStats:
    evaluations: int = 0
    fired: list[dict[str, Any]] = field(default_factory=list)
    blind: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[str] = field(default_factory=list)
    misconfigured: list[dict[str, Any]] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)
    heartbeats: int = 0
    fallbacks: list[str] = field(default_factory=list)


class Watchdog:
    def __init__(
        self,
        settings: Settings,
        connectors: Connectors | None = None,
        emit: Emit | None = None,
        journal: Journal | None = None,
        clock: Callable[[], float] = time.time,
        notify_blind: bool = True,
        app_prober: Callable[[str], ProbeResult] | None = None,
    ) -> None:
        self.settings = settings
        self.conn = connectors or Connectors(settings)
        self.emit = emit or prefect_emit
        self.journal = journal or Journal.configured(self.conn.store(), settings.journal)
        self.clock = clock
        self.rules = RuleSet.from_config(settings.triggers)
        self.notify_blind = notify_blind
        wcfg = settings.watchdog
        self.fallback_after_s = float(os.environ.get(FALLBACK_AFTER_ENV) or wcfg.fallback_after)
        self.app_prober = app_prober or (
            lambda env: direct_app_probe(
                settings, env, self.rules.outage.probe_timeout_s if self.rules.outage else 1.5
            )
        )
        self._app_probes: dict[str, deque[ProbeResult]] = {}
        self._app_thread: threading.Thread | None = None
        self._blind_since: dict[str, float] = {}
        self._blind_paged: set[str] = set()
        self._last_heartbeat = 0.0
        self._vetoed: dict[str, tuple[float, bool]] = {}
        self._live_readable: bool | None = None
        self._first_app_probe: float | None = None
        self.stats = WatchStats()
        self._due: dict[str, _Due] = {}
        self._probes: deque[ProbeResult] = deque(maxlen=2000)
        self._probe_pool = ThreadPoolExecutor(
            max_workers=2 * MAX_IN_FLIGHT + 2, thread_name_prefix="db-probe"
        )
        self._pending: dict[str, list[tuple[float, Future[Any], bool]]] = {}
        self._probe_thread: threading.Thread | None = None
        self._first_probe: float | None = None
        self._eval_pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="rule")
        self._active: dict[str, str] = {}  # env -> open incident id
        self._last_emit: dict[str, float] = {}
        self._index_checked = 0.0
        self._live: str | None = None
        self._awaiting: dict[str, float] = {}
        self._seen: dict[str, set[str]] = {}  # incident -> rule[signal] already journaled
        self._worst: dict[str, Severity] = {}  # incident -> when its rollback was requested
        self._stop = threading.Event()
        self._paused = threading.Event()

    # -- the loop --------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def pause(self) -> None:
        """Stop evaluating (probes keep running) until `resume()`; drills pause while they reset
        the world, so the reset itself is not taken for an incident."""
        self._paused.set()

    def resume(self) -> None:
        """Evaluate again, from a clean slate (open incidents are re-read from the journal)."""
        self._due.clear()
        self._awaiting.clear()
        self._active.clear()
        self._index_checked = 0.0
        self._app_probes.clear()
        self._first_app_probe = self.clock()
        self._paused.clear()

    def run(self, max_seconds: float | None = None, stop_when_fired: bool = False) -> WatchStats:
        start = self.clock()
        self._load_open_incidents()
        tick = min(
            [r.interval_s for r in self.rules.windowed]
            + ([self.rules.database.interval_s] if self.rules.database else [])
            + [1.0]
        )
        while not self._stop.is_set():
            try:
                if not self._paused.is_set():
                    self.tick()
            except Exception:  # the watchdog must outlive any one bad evaluation
                log.exception("watchdog tick failed; carrying on")
            self.heartbeat()
            if stop_when_fired and self.stats.fired:
                break
            if max_seconds is not None and self.clock() - start >= max_seconds:
                break
            self._stop.wait(max(0.05, tick / 2))
        self._probe_pool.shutdown(wait=False, cancel_futures=True)
        self._eval_pool.shutdown(wait=False, cancel_futures=True)
        # A clean stop says so: the silence that follows is deliberate, not a dead watchdog
        # (flows/watchdog_silent.py pages only when the last word was a heartbeat).
        self._safe_emit(
            STOPPED_EVENT,
            WATCHDOG_RESOURCE,
            {"at": self.clock(), "evaluations": self.stats.evaluations},
        )
        return self.stats

    def heartbeat(self, force: bool = False) -> None:
        """`tbs.watchdog.heartbeat` every `watchdog.heartbeat_every` s: an automation pages when
        none arrives for 60 s (prefect.yaml)."""
        now = self.clock()
        if not force and now - self._last_heartbeat < self.settings.watchdog.heartbeat_every:
            return
        self._last_heartbeat = now
        self.stats.heartbeats += 1
        self._safe_emit(
            "tbs.watchdog.heartbeat",
            WATCHDOG_RESOURCE,
            {
                "at": now,
                "live": self._live,
                "evaluations": self.stats.evaluations,
                "paused": self._paused.is_set(),
                "open_incidents": sorted(set(self._active.values())),
            },
        )

    def tick(self) -> list[Evaluation]:
        now = self.clock()
        live, readable = self._live_env(now)
        out: list[Evaluation] = []
        key = f"{BLIND}:live"
        due = self._due.setdefault(key, _Due())
        # Whether the live environment can be read at all (the load balancer answers): blind
        # while it cannot, and "ok" once, when it answers again.
        if not readable or due.last_status == "blind":
            reason = (
                "no live environment readable: the load balancer does not answer;"
                f" watching {live} by direct probes"
                if not readable
                else f"the load balancer answers again: {live} has the traffic"
            )
            extra: dict[str, Any] = {"severity": Severity.P1} if not readable else {}
            live_eval = Evaluation(
                rule=BLIND,
                env=live,
                at=now,
                status="blind" if not readable else "ok",
                threshold=0.0,
                required=0,
                streak=0,
                values=(),
                reason=reason,
                signal="live_environment",
                **extra,
            )
            out.append(self._handle(key, due, live_eval))
        if self.rules.outage:
            out.extend(self._outage(live, now))
        due_rules = []
        for rule in self.rules.windowed:
            key = f"{rule.name}:{rule.signal}"
            due = self._due.setdefault(key, _Due())
            if now < due.next_at:
                continue
            due.next_at = now + rule.interval_s
            due_rules.append((key, due, rule))
        futures = [
            (key, due, self._eval_pool.submit(self._evaluate, rule, live, now))
            for key, due, rule in due_rules
        ]
        out += [self._handle(key, due, f.result()) for key, due, f in futures]
        if self.rules.database:
            out.extend(self._database(live, now))
        self._check_rollbacks_started(now)
        return out

    def _check_rollbacks_started(self, now: float) -> None:
        """The safety net under the automation (see `watchdog.fallback_after`): a flow run of
        the rollback deployment for the incident, whoever created it, is enough."""
        for inc_id, since in list(self._awaiting.items()):
            if now - since < self.fallback_after_s:
                continue
            del self._awaiting[inc_id]
            try:
                runs = self.find_rollback_runs(inc_id)
            except Exception as exc:
                log.error("cannot look for the rollback run of %s: %s", inc_id, exc)
                runs = []
            if runs:
                continue
            if self._is_vetoed(inc_id, now):
                continue
            self.stats.fallbacks.append(inc_id)
            log.error(
                "no rollback started for %s %.0fs after the event: starting it", inc_id, now - since
            )
            try:
                self.start_rollback(inc_id)
                what, result = "watchdog started the rollback (the automation did not)", "ok"
            except Exception as exc:
                what, result = f"watchdog could not start the rollback either: {exc}", "failed"
                log.error("%s", what)
            with contextlib.suppress(Exception):
                self.journal.append(
                    Entry(
                        incident_id=inc_id,
                        kind="decision",
                        what=what,
                        decided_by="watchdog",
                        result=result,
                    )  # type: ignore[arg-type]
                )

    def find_rollback_runs(self, inc_id: str) -> list[Any]:
        """Flow runs of the rollback deployment for this incident (any state)."""
        from flows.rollback_gate import rollback_runs_for

        return rollback_runs_for(inc_id)

    def start_rollback(self, inc_id: str) -> None:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name(ROLLBACK_DEPLOYMENT)
            client.create_flow_run_from_deployment(
                dep.id,
                parameters={
                    "params": {
                        "incident_id": inc_id,
                        "config_path": os.environ.get("TBS_CONFIG", ""),
                        "decided_by": "watchdog (automation fallback)",
                    }
                },
                idempotency_key=f"tbs-rollback:{inc_id}",
                tags=["fallback", f"tbs-incident:{inc_id}"],
            )

    def _evaluate(self, rule: Any, live: str, now: float) -> Evaluation:
        try:
            windows = collect_windows(
                rule, live, self.conn.metrics(), self.settings.metrics.query, now
            )
            return rule.evaluate(live, windows, now)
        except Exception as exc:
            text = "; ".join(exc.problems) if isinstance(exc, ConfigError) else str(exc)
            misconfigured = isinstance(exc, ConfigError) or is_misconfiguration(text)
            return Evaluation(
                rule=rule.name,
                env=live,
                at=now,
                status="misconfigured" if misconfigured else "blind",
                threshold=rule.threshold,
                required=rule.required,
                streak=0,
                values=(),
                reason=(
                    f"Prometheus cannot be queried with this configuration: {text}"
                    if misconfigured
                    else f"Prometheus unavailable: {text}"
                ),
                signal=rule.signal,
                severity=Severity.P1,
            )

    # -- database probes ---------------------------------------------------------------------------

    def _probe_loop(self) -> None:
        """Probe both databases of the live environment every `interval_s`, in the background.

        Each system gets one warm-up probe first (driver import, connection, login: not what the
        rule measures). A probe still unanswered after `probe_timeout_s` is recorded as a
        failure once, and another probe is started beside it (at most `MAX_IN_FLIGHT`), so a
        hanging database keeps producing failures without piling up threads.
        """
        rule = self.rules.database
        assert rule is not None
        openers: dict[str, Callable[[str], Any]] = {
            system: (lambda env, k=system: fresh_db_probe(self.settings, k, env))
            for system in ("heavydb", "mysql")
        }
        warm = {
            system: self._probe_pool.submit(lambda o=opener: o(self._live or "green"))
            for system, opener in openers.items()
        }
        for fut in warm.values():
            # a failing warm-up is measured by the real probes that follow
            with contextlib.suppress(Exception):
                fut.result(timeout=30)
        while not self._stop.is_set():
            now = self.clock()
            live = self._live
            for system, opener in openers.items():
                flights = self._pending.setdefault(system, [])
                for flight in list(flights):
                    started, fut, reported = flight
                    if fut.done():
                        flights.remove(flight)
                        if not reported:
                            self._record(system, started, fut)
                    elif not reported and now - started > rule.probe_timeout_s:
                        flights[flights.index(flight)] = (started, fut, True)
                        self._probes.append(
                            ProbeResult(
                                started,
                                system,
                                False,
                                None,
                                f"no answer in {rule.probe_timeout_s:g}s",
                            )
                        )
                waiting = [f for f in flights if not f[2]]
                if live is not None and not waiting and len(flights) < MAX_IN_FLIGHT:
                    fut = self._probe_pool.submit(lambda o=opener, e=live: o(e))
                    flights.append((now, fut, False))
            deadline = now + rule.interval_s
            while not self._stop.is_set() and self.clock() < deadline:
                self._stop.wait(min(0.02, rule.interval_s / 5))
                for system, flights in self._pending.items():
                    for flight in list(flights):
                        started, fut, reported = flight
                        if fut.done():
                            flights.remove(flight)
                            if not reported:
                                self._record(system, started, fut)

    def _record(self, system: str, started: float, fut: Future[Any]) -> None:
        try:
            p = fut.result()
            lat = (p.latency_ms or 0.0) / 1000.0 if p.reachable else None
            self._probes.append(ProbeResult(started, system, p.reachable, lat, p.detail))
        except ConfigError as exc:
            # a Secret that cannot be read is the configuration, not the database
            detail = "invalid configuration: " + "; ".join(exc.problems)
            self._probes.append(ProbeResult(started, system, False, None, detail))
        except Exception as exc:
            self._probes.append(ProbeResult(started, system, False, None, str(exc)))
        if self._first_probe is None:
            self._first_probe = started

    def _database(self, live: str, now: float) -> list[Evaluation]:
        rule = self.rules.database
        assert rule is not None
        if self._probe_thread is None:
            self._probe_thread = threading.Thread(
                target=self._probe_loop, name="db-probes", daemon=True
            )
            self._probe_thread.start()
        out = []
        for system in ("heavydb", "mysql"):
            key = f"{rule.name}:{system}"
            d = self._due.setdefault(key, _Due())
            ev = rule.evaluate(live, system, list(self._probes), now)
            if ev.blind and (self._first_probe is None or now - self._first_probe < rule.window_s):
                continue  # not probed long enough to say anything yet
            if ev.blind and any(not reported for _, _, reported in self._pending.get(system, [])):
                # a probe is on its way and not yet past its timeout (at scaled time the window
                # can be shorter than the timeout): not blind, the answer is coming
                continue
            out.append(self._handle(key, d, ev))
        return out

    # -- the outage rule: direct probes of the live app + the load balancer's health view --------

    def _app_probe_loop(self) -> None:
        """Probe the live app every `probe_interval_s` of real time, each probe in its own
        thread (bounded by its timeout), so a hung app does not delay the next probe."""
        rule = self.rules.outage
        assert rule is not None
        while not self._stop.is_set():
            started = time.monotonic()
            env = self._live
            if env is not None and not self._paused.is_set():
                self._probe_pool.submit(self._app_probe_once, env)
            self._stop.wait(max(0.05, rule.probe_interval_s - (time.monotonic() - started)))

    def _app_probe_once(self, env: str) -> None:
        try:
            result = self.app_prober(env)
        except Exception as exc:
            result = ProbeResult(self.clock(), "app", False, None, str(exc)[:300])
        self._app_probes.setdefault(env, deque(maxlen=200)).append(result)

    def record_lb_health(self, env: str, status: dict[str, Any], now: float) -> None:
        """One reading of the load balancer's health view of env (`/emergency/status`)."""
        health = (status.get("health") or {}).get(env) if isinstance(status, dict) else None
        if not isinstance(health, dict):
            return
        failures = int(health.get("consecutive_failures") or 0)
        state = str(health.get("state", "?"))
        ok = state == "UP" and failures == 0
        detail = f"failures={failures} state={state}"
        if not ok and health.get("last_error"):
            detail += f" (load balancer: {health['last_error']})"
        self._app_probes.setdefault(env, deque(maxlen=200)).append(
            ProbeResult(now, "lb", ok, None, detail)
        )

    def _outage(self, live: str, now: float) -> list[Evaluation]:
        rule = self.rules.outage
        assert rule is not None
        if self._app_thread is None:
            self._first_app_probe = now
            self._app_thread = threading.Thread(
                target=self._app_probe_loop, name="app-probes", daemon=True
            )
            self._app_thread.start()
        key = f"{rule.name}:{live}"
        due = self._due.setdefault(key, _Due())
        if now < due.next_at:
            return []
        due.next_at = now + rule.interval_s
        ev = rule.evaluate(live, list(self._app_probes.get(live, ())), now)
        if ev.blind and now - (self._first_app_probe or now) < rule.window_s:
            return []  # not probed long enough to say anything yet
        return [self._handle(key, due, ev)]

    # -- outcomes ----------------------------------------------------------------------------------

    def _handle(self, key: str, due: _Due, ev: Evaluation) -> Evaluation:
        self.stats.evaluations += 1
        changed = ev.status != due.last_status
        if changed or ev.at - due.last_event_at >= MEASUREMENT_EVENT_EVERY_S:
            due.last_event_at = ev.at
            self._safe_emit(f"tbs.measurement.{ev.rule}", WATCHDOG_RESOURCE, ev.payload())
        if ev.blind and due.last_status != "blind":
            self._blind(ev)
            self._blind_since[key] = ev.at
        elif due.last_status == "blind" and not ev.blind:
            self._safe_emit("tbs.monitoring.restored", WATCHDOG_RESOURCE, ev.payload())
            self._blind_since.pop(key, None)
            self._blind_paged.discard(key)
        if ev.blind:
            since = self._blind_since.setdefault(key, ev.at)
            after = self.settings.watchdog.blind_page_after
            if ev.at - since >= after and key not in self._blind_paged:
                self._blind_paged.add(key)
                self._page(
                    f"P1 MONITORING BLIND FOR {after:g}s: {ev.reason}",
                    f"P1: TBS monitoring has been blind for {ev.at - since:.0f}s ({ev.reason})."
                    " Automatic rollback cannot see this signal; check the monitoring path.",
                    incident_channels=True,
                )
        if ev.misconfigured and due.last_status != "misconfigured":
            log.error("misconfigured: %s", ev.reason)
            self.stats.misconfigured.append(ev.payload())
            self._safe_emit("tbs.monitoring.misconfigured", WATCHDOG_RESOURCE, ev.payload())
            self._page(
                f"P1 WATCHDOG MISCONFIGURED: {ev.reason}",
                "P1: the TBS watchdog cannot evaluate a rule because of its configuration or a"
                f" credential ({ev.reason}). This is not an outage, and automatic rollback cannot"
                " see this signal until it is fixed (`tbs-emergency config check`).",
                incident_channels=True,
            )
        due.last_status = ev.status
        if ev.fired:
            self._fired(ev)
        return ev

    def _blind(self, ev: Evaluation) -> None:
        log.warning("monitoring blind: %s", ev.reason)
        self.stats.blind.append(ev.payload())
        self._safe_emit("tbs.monitoring.blind", WATCHDOG_RESOURCE, ev.payload())
        if self.notify_blind:
            threading.Thread(target=self._send_blind, args=(ev,), daemon=True).start()

    def _send_blind(self, ev: Evaluation) -> None:
        # a blind signal is not (yet) an incident: chat only; after blind_page_after it pages
        msg = render("blind", MessageContext(incident_id="", severity="P1", reason=ev.reason))
        send_page(self.settings, msg, incident_channels=False)

    def _page(self, subject: str, body: str, *, incident_channels: bool) -> None:
        """Page the primary contact in the background (never blocks an evaluation)."""
        self.stats.pages.append(subject)
        if not self.notify_blind:
            return
        msg = Notification(subject=subject, body=body, severity="P1", extra={"template": "page"})
        threading.Thread(
            target=send_page,
            args=(self.settings, msg),
            kwargs={"incident_channels": incident_channels},
            daemon=True,
        ).start()

    def _fired(self, ev: Evaluation) -> None:
        env = ev.env
        current = self._active.get(env)
        if current is None:
            first = ev.streak_start if ev.streak_start is not None else ev.at
            inc = Incident(
                id=incident_id(env, first),
                severity=ev.severity or Severity.P1,
                env=env,
                rule=ev.rule,
                trigger=ev.reason,
                opened_at=as_utc(ev.at),
                decided_by="watchdog",
                evaluation=ev.payload(),
            )
            try:
                inc, new = self.journal.open(inc)
            except Exception as exc:
                # The journal is unreachable: still emit, the rollback opens it again.
                log.error("journal unavailable while opening %s: %s", inc.id, exc)
                new = True
            self._active[env] = inc.id
            self.stats.incidents.append(inc.id)
            self.stats.fired.append(ev.payload())
            log.warning("trigger fired: %s -> incident %s", ev.reason, inc.id)
            labels = self._labels(inc.id, ev)
            if new:
                self._safe_emit(
                    "tbs.incident.opened", labels, {**ev.payload(), "incident_id": inc.id}
                )
            self._safe_emit("tbs.trigger.fired", labels, {**ev.payload(), "incident_id": inc.id})
            self._last_emit[f"{inc.id}:{ev.rule}:{ev.signal}"] = ev.at
            self._awaiting[inc.id] = self.clock()
            self._seen[inc.id] = {f"{ev.rule}[{ev.signal}]"}
            self._worst[inc.id] = inc.severity
            return
        # An open incident for this environment: a worse severity is raised at once (the newest
        # window decides), then the firing is recorded there and re-emitted now and then.
        worst = self._worst.get(current)
        if ev.severity is not None and (worst is None or ev.severity.rank < worst.rank):
            self._raise_severity(current, ev, worst)
        rkey = f"{current}:{ev.rule}:{ev.signal}"
        last = self._last_emit.get(rkey)
        if last is not None and ev.at - last < REEMIT_EVERY_S:
            return
        self._last_emit[rkey] = ev.at
        self.stats.fired.append(ev.payload())
        seen = self._seen.setdefault(current, set())
        sig = f"{ev.rule}[{ev.signal}]"
        try:
            if sig not in seen:
                self.journal.append(
                    Entry(
                        incident_id=current,
                        kind="detection",
                        what=f"another trigger fired for this incident: {ev.reason}",
                        system=sig,
                        decided_by="watchdog",
                        result="info",
                        data={"evaluation": ev.payload()},
                    )
                )
        except Exception as exc:
            log.error("journal unavailable for %s: %s", current, exc)
        seen.add(sig)
        if self._is_vetoed(current, ev.at):
            return  # the on-call engineer vetoed automatic action for this incident
        self._safe_emit(
            "tbs.trigger.fired", self._labels(current, ev), {**ev.payload(), "incident_id": current}
        )

    def _raise_severity(self, inc_id: str, ev: Evaluation, was: Severity | None) -> None:
        """Journal the raise, emit it and, for P0, let a rollback waiting in its P1 veto window
        proceed at once (P0 never waits)."""
        assert ev.severity is not None
        self._worst[inc_id] = ev.severity
        log.warning(
            "incident %s: severity %s -> %s (%s)",
            inc_id,
            was.value if was else "?",
            ev.severity.value,
            ev.reason,
        )
        try:
            self.journal.append(
                Entry(
                    incident_id=inc_id,
                    kind="severity",
                    what=f"severity now {ev.severity.value}: {ev.reason}",
                    decided_by="watchdog",
                    data={
                        "severity": ev.severity.value,
                        "previous": was.value if was else None,
                        "evaluation": ev.payload(),
                    },
                )
            )
        except Exception as exc:
            log.error("journal unavailable for %s: %s", inc_id, exc)
        self._safe_emit(
            "tbs.incident.severity",
            self._labels(inc_id, ev),
            {**ev.payload(), "incident_id": inc_id, "previous": was.value if was else None},
        )
        if ev.severity is Severity.P0:
            threading.Thread(
                target=self._approve_waiting,
                args=(inc_id, f"severity raised to P0: {ev.reason}"),
                daemon=True,
            ).start()

    def _approve_waiting(self, inc_id: str, reason: str) -> None:
        try:
            from flows.rollback_gate import send_decision

            n = send_decision(inc_id, "approve", reason, by="watchdog")
            if n:
                log.warning("told %d waiting rollback run(s) of %s to proceed", n, inc_id)
        except Exception as exc:
            log.error("could not tell the waiting rollback of %s to proceed: %s", inc_id, exc)

    def _is_vetoed(self, inc_id: str, now: float) -> bool:
        """Whether the on-call engineer vetoed automatic action (journal; cached a few s)."""
        cached = self._vetoed.get(inc_id)
        if cached is not None and now - cached[0] < VETO_CHECK_S:
            return cached[1]
        try:
            decision = decision_of(self.journal.entries(inc_id))
            vetoed = decision is not None and decision.decision == "veto"
        except Exception:
            vetoed = False
        self._vetoed[inc_id] = (now, vetoed)
        return vetoed

    @staticmethod
    def _labels(inc_id: str, ev: Evaluation) -> dict[str, str]:
        return {
            "prefect.resource.id": f"tbs.incident.{inc_id}",
            "prefect.resource.name": inc_id,
            "tbs.incident.id": inc_id,
            "tbs.env": ev.env,
            "tbs.rule": ev.rule,
            "tbs.severity": (ev.severity or Severity.P1).value,
        }

    # -- state -------------------------------------------------------------------------------------

    def _live_env(self, now: float) -> tuple[str, bool]:
        """(the environment to watch, whether the load balancer said so just now). Unreadable:
        the last known one, else `watchdog.assume_live`; the load balancer's health view of the
        live environment is recorded for the outage rule on the way."""
        readable = True
        try:
            traffic = self.conn.traffic()
            status_of = getattr(traffic, "status", None)
            if status_of is not None:
                status = status_of()
                live = str(status["active"])
                self.record_lb_health(live, status, now)
            else:
                live = traffic.active()
        except Exception as exc:
            if self._live_readable is not False:
                log.error("cannot read which environment has traffic: %s", exc)
            readable = False
            live = self._live or self.settings.watchdog.assume_live
        self._live_readable = readable
        if live != self._live:
            log.info("watching %s", live)
            self._live = live
            self._due.clear()
        if now - self._index_checked >= INDEX_REFRESH_S:
            self._index_checked = now
            self._refresh_active()
        return live, readable

    def _load_open_incidents(self) -> None:
        self._refresh_active()

    def _refresh_active(self) -> None:
        try:
            records = self.journal.open_incidents()
        except Exception as exc:
            log.error("cannot read open incidents: %s", exc)
            return
        open_ids = {r["id"]: r.get("env", "green") for r in records}
        self._active = {env: i for env, i in self._active.items() if i in open_ids}
        for i, env in open_ids.items():
            self._active.setdefault(env, i)
        for r in records:
            sev = r.get("severity")
            if r["id"] not in self._worst and sev:
                with contextlib.suppress(ValueError):
                    self._worst[r["id"]] = Severity(sev)

    def _safe_emit(self, event: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
        try:
            self.emit(event, resource, payload)
        except Exception as exc:  # events are best effort; the journal has the record
            log.error("could not emit %s: %s", event, exc)
