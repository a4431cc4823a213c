"""The watchdog (runbook: "Auto-Rollback Triggers"): detect, record, emit; never act.

`Watchdog.run()` loops until stopped. Every rule is evaluated at its own interval against the
environment that has the traffic (`tbs_emergency.domain.triggers` has the exact semantics):

- windowed rules (performance, error rate, resources) ask Prometheus for their last N windows, so
  a restarted watchdog resumes a streak where it was;
- both databases of the live environment are probed actively (connect + `SELECT 1`) in
  background threads, each probe bounded by the rule's response time.

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
automation deduplicates per incident, so they never start a second rollback.
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
from dataclasses import dataclass, field
from typing import Any

from tbs_emergency.config import Settings
from tbs_emergency.connectors import Connectors
from tbs_emergency.domain.incident import Entry, Incident, as_utc, incident_id
from tbs_emergency.domain.journal import Journal
from tbs_emergency.domain.severity import Severity
from tbs_emergency.domain.templates import MessageContext, render
from tbs_emergency.domain.triggers import (
    Evaluation,
    ProbeResult,
    RuleSet,
    collect_windows,
)

log = logging.getLogger("tbs_emergency.watchdog")

Emit = Callable[[str, dict[str, str], dict[str, Any]], None]

WATCHDOG_RESOURCE = {"prefect.resource.id": "tbs.watchdog", "prefect.resource.name": "watchdog"}
REEMIT_EVERY_S = 10.0
# 0 emits one event per evaluation; the default keeps a SQLite Prefect server breathing (in the
# sandbox the rules evaluate about seven times a second).
MEASUREMENT_EVENT_EVERY_S = float(os.environ.get("TBS_WATCH_MEASUREMENT_EVERY_S", "10"))
# If the automation has not started the rollback this long after the event (the server refused
# the run, the automation was disabled...), the watchdog starts it itself, once per incident.
FALLBACK_AFTER_S = float(os.environ.get("TBS_WATCH_FALLBACK_S", "3"))
ROLLBACK_DEPLOYMENT = "emergency_rollback/emergency-rollback"
INDEX_REFRESH_S = 2.0
MAX_IN_FLIGHT = 3


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


class Watchdog:
    def __init__(
        self,
        settings: Settings,
        connectors: Connectors | None = None,
        emit: Emit | None = None,
        journal: Journal | None = None,
        clock: Callable[[], float] = time.time,
        notify_blind: bool = True,
    ) -> None:
        self.settings = settings
        self.conn = connectors or Connectors(settings)
        self.emit = emit or prefect_emit
        self.journal = journal or Journal(self.conn.store())
        self.clock = clock
        self.rules = RuleSet.from_config(settings.triggers)
        self.notify_blind = notify_blind
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
            if stop_when_fired and self.stats.fired:
                break
            if max_seconds is not None and self.clock() - start >= max_seconds:
                break
            self._stop.wait(max(0.05, tick / 2))
        self._probe_pool.shutdown(wait=False, cancel_futures=True)
        self._eval_pool.shutdown(wait=False, cancel_futures=True)
        return self.stats

    def tick(self) -> list[Evaluation]:
        now = self.clock()
        live = self._live_env(now)
        if live is None:
            return []
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
        out: list[Evaluation] = [self._handle(key, due, f.result()) for key, due, f in futures]
        if self.rules.database:
            out.extend(self._database(live, now))
        self._check_rollbacks_started(now)
        return out

    def _check_rollbacks_started(self, now: float) -> None:
        """The safety net under the automation (see FALLBACK_AFTER_S)."""
        for inc_id, since in list(self._awaiting.items()):
            if now - since < FALLBACK_AFTER_S:
                continue
            del self._awaiting[inc_id]
            try:
                started = self.journal.has_kind(inc_id, "decision", "1-detection")
            except Exception as exc:
                log.error("cannot read the journal of %s: %s", inc_id, exc)
                started = False
            if started:
                continue
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
                idempotency_key=f"tbs-fallback:{inc_id}",
                tags=["fallback"],
            )

    def _evaluate(self, rule: Any, live: str, now: float) -> Evaluation:
        try:
            windows = collect_windows(
                rule, live, self.conn.metrics(), self.settings.metrics.query, now
            )
            return rule.evaluate(live, windows, now)
        except Exception as exc:
            return Evaluation(
                rule=rule.name,
                env=live,
                at=now,
                status="blind",
                threshold=rule.threshold,
                required=rule.required,
                streak=0,
                values=(),
                reason=f"Prometheus unavailable: {exc}",
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
        openers = {"heavydb": self.conn.heavydb, "mysql": self.conn.mysql}
        warm = {
            system: self._probe_pool.submit(lambda o=opener: o(self._live or "green").ping())
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
                    fut = self._probe_pool.submit(lambda o=opener, e=live: o(e).ping())
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
            out.append(self._handle(key, d, ev))
        return out

    # -- outcomes ----------------------------------------------------------------------------------

    def _handle(self, key: str, due: _Due, ev: Evaluation) -> Evaluation:
        self.stats.evaluations += 1
        changed = ev.status != due.last_status
        if changed or ev.at - due.last_event_at >= MEASUREMENT_EVENT_EVERY_S:
            due.last_event_at = ev.at
            self._safe_emit(f"tbs.measurement.{ev.rule}", WATCHDOG_RESOURCE, ev.payload())
        if ev.blind and due.last_status != "blind":
            self._blind(ev)
        elif due.last_status == "blind" and not ev.blind:
            self._safe_emit("tbs.monitoring.restored", WATCHDOG_RESOURCE, ev.payload())
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
        from tbs_emergency.connectors.pagerduty import make_extra_notifier

        msg = render("blind", MessageContext(incident_id="", severity="P1", reason=ev.reason))
        for c in self.settings.contacts:
            if c.role != "primary":
                continue
            for ch in c.channels:
                cfg = self.settings.channels.get(ch)
                if cfg is None or cfg.block or cfg.kind in ("pagerduty", "smtp"):
                    continue  # a blind signal is not an incident: no PagerDuty alert
                for attempt in range(3):
                    try:
                        make_extra_notifier(ch, cfg).send(msg)
                        break
                    except Exception as exc:
                        log.warning("blind alert on %s failed (%s): %s", ch, attempt + 1, exc)
                        time.sleep(0.5 * (attempt + 1))

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
        # An open incident for this environment: record the firing there, re-emit now and then.
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
            worst = self._worst.get(current)
            if ev.severity is not None and (worst is None or ev.severity.rank < worst.rank):
                self._worst[current] = ev.severity
                self.journal.append(
                    Entry(
                        incident_id=current,
                        kind="severity",
                        what=f"severity now {ev.severity.value}: {ev.reason}",
                        decided_by="watchdog",
                        data={"severity": ev.severity.value},
                    )
                )
        except Exception as exc:
            log.error("journal unavailable for %s: %s", current, exc)
        seen.add(sig)
        self._safe_emit(
            "tbs.trigger.fired", self._labels(current, ev), {**ev.payload(), "incident_id": current}
        )

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

    def _live_env(self, now: float) -> str | None:
        try:
            live = self.conn.traffic().active()
        except Exception as exc:
            log.error("cannot read which environment has traffic: %s", exc)
            live = self._live
        if live != self._live:
            log.info("watching %s", live)
            self._live = live
            self._due.clear()
        if now - self._index_checked >= INDEX_REFRESH_S:
            self._index_checked = now
            self._refresh_active()
        return live

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

    def _safe_emit(self, event: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
        try:
            self.emit(event, resource, payload)
        except Exception as exc:  # events are best effort; the journal has the record
            log.error("could not emit %s: %s", event, exc)
