"""The rollback drill (runbook: "Monthly Emergency Drills", rollback drill checklist), unattended.

`run_drill(scenario)` does, against a running sandbox world with its Prefect server:

1. reset: faults cleared, traffic back on green, the trigger rules quiet (their windows clean);
2. the executor: the world's own (`sandbox up` registered prefect.yaml with `tbs-emergency
   deploy` and started it), else one started here with `--deploy`; the watchdog is started
   unless already running;
3. the scenario's fault is injected into green (or blue, for the negative cases) -> `t_fault`;
4. the watchdog fires -> automation -> `emergency_rollback` run; the drill waits for the
   incident's journal to say resolved or escalated;
5. it returns the timings (`detected_s`, `redirected_s`, `confirmed_s`, from the fault's start),
   the phase timings from the journal, and the rendered incident report.

Scenarios: throughput, errors, resources, database (the four trigger families); `blue-down`
(green throughput fault while blue's databases are down: expect escalation, no redirect);
`short` (a throughput fault shorter than the shortest fault that can fire any rule: expect
nothing); `double` (errors and throughput at once: expect one incident, one rollback);
`outage` (green's app process stopped: the outage rule, P0); `app-hang` (green's app accepts
connections and answers nothing: also an outage); `p1-veto` (a 30% throughput loss, P1: the drill
vetoes it with `tbs-emergency ack INCIDENT --veto` as soon as the incident opens: no rollback,
traffic stays on green, the incident stays open); `p1-timeout` (the same fault, nobody answers:
the rollback starts when the veto window ends).

`time_scale` (CLI `--time-scale X`) sets the watchdog's trigger time scale (1 = real time); the
executor's runs keep the world's configuration (its P1 veto window included). The result says
which path started the rollback (`started_by`: `automation` when the run was created by the
automation, `fallback` when by the watchdog) and times detection, redirect and confirmation from
the fault's start (`timings`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.watchdog import Watchdog
from tbs_emergency.config import Settings, load_settings
from tbs_emergency.connectors import Connectors
from tbs_emergency.domain.incident import Incident
from tbs_emergency.domain.journal import Journal
from tbs_emergency.domain.report import render_report, step_timings
from tbs_emergency.domain.triggers import RuleSet

ROOT = Path(__file__).resolve().parents[1]
READY_LINE = "tbs runner: serving"

# scenario -> [(env, fault kind, magnitude)]
SCENARIOS: dict[str, list[tuple[str, str, float | None]]] = {
    "throughput": [("green", "throughput", 0.6)],
    "errors": [("green", "errors", 20.0)],
    "resources": [("green", "cpu", 98.0)],
    "database": [("green", "db-down", None)],
    "blue-down": [("blue", "db-down", None), ("green", "throughput", 0.6)],
    "short": [("green", "throughput", 0.6)],
    "double": [("green", "errors", 20.0), ("green", "throughput", 0.6)],
    "outage": [("green", "app-down", None)],
    "app-hang": [("green", "app-hang", None)],
    # 40% below the baseline: inside the P1 band (25-50%) with a margin on both sides, so the
    # second source's short window confirms it and no window reads it as P0
    "p1-veto": [("green", "throughput", 0.4)],
    "p1-timeout": [("green", "throughput", 0.4)],
}
EXPECT_ROLLBACK = {
    "throughput",
    "errors",
    "resources",
    "database",
    "double",
    "outage",
    "app-hang",
    "p1-timeout",
}


class DrillError(RuntimeError):
    pass


@dataclass
class DrillResult:
    scenario: str
    incident_id: str | None
    rolled_back: bool
    traffic: str
    status: str
    timings: dict[str, float | None]
    phases: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[str] = field(default_factory=list)
    rollback_runs: int = 0
    problems: list[str] = field(default_factory=list)
    report: str = ""
    # Which path created the rollback run that acted: automation | fallback | person | None.
    started_by: str | None = None
    severity: str | None = None
    decision: str | None = None  # p1 scenarios: veto | approve | timeout (journal)
    # Measured by the drill on the systems, not taken from the flow: green's ledger keys
    # missing in blue's MySQL after the rollback (None: no rollback to measure), and the
    # sessions live in green at the fault against those on blue afterwards.
    lost_writes: int | None = None
    sessions: dict[str, Any] | None = None
    # Each step of the response as its journal says (last run wins): result, real duration,
    # the runbook's budget, and what in it was not ok (see `step_results`).
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "scenario": self.scenario,
            "rolled_back": self.rolled_back,
            "traffic": self.traffic,
            "status": self.status,
            "timings": self.timings,
            "phases": self.phases,
            "incidents": self.incidents,
            "rollback_runs": self.rollback_runs,
            "problems": self.problems,
            "started_by": self.started_by,
            "severity": self.severity,
            "decision": self.decision,
            "lost_writes": self.lost_writes,
            "sessions": self.sessions,
            "steps": self.steps,
        }


def step_results(entries: list[Any]) -> dict[str, dict[str, Any]]:
    """`{step: {"result", "duration_s", "budget_s", "within_budget", "not_ok"}}` from the
    incident's `step` entries; a rerun's entry of the same step replaces the earlier one."""
    from tbs_emergency.domain.plan import AUTOMATED_STEPS

    budgets = {s.key: s.budget_s for s in AUTOMATED_STEPS}
    out: dict[str, dict[str, Any]] = {}
    for e in entries:
        if e.kind != "step" or not e.step:
            continue
        dur = e.duration_s
        budget = budgets.get(e.step)
        out[e.step] = {
            "result": e.result,
            "duration_s": None if dur is None else round(dur, 3),
            "budget_s": budget,
            "within_budget": None if dur is None or budget is None else dur <= budget,
            "not_ok": list(e.data.get("not_ok") or []),
        }
    return dict(sorted(out.items()))


def prefect_api_url(sandbox_dir: Path) -> str | None:
    from sandbox.proc import load_services

    svc = load_services(sandbox_dir / "services.json").get("prefect")
    return svc.extra.get("api_url") if svc else None


class Drill:
    """One sandbox world, a runner and a watchdog; drills run one after another."""

    def __init__(
        self,
        config_path: str,
        sandbox_dir: Path | None = None,
        log: Any = None,
        time_scale: float | None = None,
    ) -> None:
        self.config_path = str(Path(config_path).resolve())
        self.settings: Settings = load_settings(self.config_path)
        if time_scale is not None:  # the watchdog's trigger time scale (1 = real time)
            triggers = self.settings.triggers.model_copy(update={"time_scale": time_scale})
            self.settings = self.settings.model_copy(update={"triggers": triggers})
        self.dir = Path(sandbox_dir or Path(self.config_path).parent).resolve()
        self.log = log or (lambda m: None)
        api = os.environ.get("PREFECT_API_URL") or prefect_api_url(self.dir)
        if not api:
            raise DrillError(f"no Prefect server in {self.dir} and PREFECT_API_URL is not set")
        os.environ["PREFECT_API_URL"] = api
        os.environ["TBS_CONFIG"] = self.config_path
        self.api_url = api
        # Prefect reads its settings once, at import: threads (the watchdog) see the process's
        # global settings, refreshed here; the calling thread may hold a settings context of
        # its own (a test harness), so every public method also enters `_api()`.
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()
        # Prefect keeps one events worker per process, bound to the first self-hosted API it
        # sent to: drained here, the watchdog's events go to this drill's server.
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=5)
        self.conn = Connectors(self.settings)
        # with the configured local spool: a drill with the object store down still follows
        # (and journals) its incident; entries are flushed when the store is back
        self.journal = Journal.configured(self.conn.store(), self.settings.journal)
        self.rules = RuleSet.from_config(self.settings.triggers)
        self.runner: subprocess.Popen[bytes] | None = None
        self.watchdog: Watchdog | None = None
        self._wd_thread: threading.Thread | None = None

    # -- services --------------------------------------------------------------------------------

    def _api(self) -> Any:
        """This drill's Prefect API for the calling thread, whatever context it is in."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        return temporary_settings(updates={PREFECT_API_URL: self.api_url})

    def start_runner(self, timeout: float = 240.0) -> None:
        with self._api():
            self._start_runner(timeout)

    def _start_runner(self, timeout: float) -> None:
        from prefect.client.orchestration import get_client

        if self.runner is not None and self.runner.poll() is None:
            return
        from sandbox.proc import load_services

        executor = load_services(self.dir / "services.json").get("executor")
        if executor is not None and executor.alive():
            # The world's own executor (sandbox up deployed prefect.yaml and started it): the
            # production path. The drill only checks that the automation is there.
            with get_client(sync_client=True) as client:
                names = {a.name for a in client.read_automations()}
            if "tbs: trigger fired -> emergency rollback" not in names:
                raise DrillError(
                    "the world's Prefect server has no rollback automation: run sandbox up"
                )
            self.log(f"the world's executor runs (pid {executor.pid}); automations applied")
            return
        log_path = self.dir / "logs" / "rollback-runner.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_bytes(b"")
        env = dict(os.environ, PREFECT_API_URL=self.api_url, TBS_CONFIG=self.config_path)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        with open(log_path, "ab") as out:
            self.runner = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "deployments.runner",
                    "--config",
                    self.config_path,
                    "--deploy",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )
        self.log(f"runner started (pid {self.runner.pid}, log {log_path})")
        deadline = time.monotonic() + timeout
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                if self.runner.poll() is not None:
                    raise DrillError(
                        f"the runner exited with {self.runner.returncode}; see {log_path}"
                    )
                if READY_LINE in log_path.read_text(errors="replace"):
                    names = {a.name for a in client.read_automations()}
                    if "tbs: trigger fired -> emergency rollback" in names:
                        self.log("deployments and automations applied; runner polling")
                        return
                time.sleep(0.5)
        raise DrillError(
            f"the runner did not apply the deployments in {timeout:.0f}s; see {log_path}"
        )

    def start_watchdog(self) -> None:
        if self._wd_thread is not None and self._wd_thread.is_alive():
            return
        self.watchdog = Watchdog(self.settings, Connectors(self.settings), journal=self.journal)
        self._wd_thread = threading.Thread(target=self.watchdog.run, name="watchdog", daemon=True)
        self._wd_thread.start()
        self.log("watchdog started")

    def stop(self) -> None:
        from sandbox.proc import stop_pid

        if self.watchdog is not None:
            self.watchdog.stop()
        if self._wd_thread is not None:
            self._wd_thread.join(timeout=10)
        if self.runner is not None and self.runner.poll() is None:
            stop_pid(self.runner.pid)
        self.runner = None

    # -- one drill ---------------------------------------------------------------------------------

    def reset(self, timeout: float = 120.0) -> None:
        """Faults cleared, green writable, traffic on green, no open incident, every rule quiet.

        The watchdog is paused meanwhile: switching traffic back to green while green's last
        windows still hold the previous fault would (rightly) fire a new incident.
        """
        if self.watchdog is not None:
            self.watchdog.pause()
        try:
            with self._api():
                self._reset(timeout)
        finally:
            if self.watchdog is not None:
                self.watchdog.resume()

    def _reset(self, timeout: float) -> None:
        from sandbox import world

        world.clear_faults(self.dir)
        self._writable_green()
        traffic = self.conn.traffic()
        if traffic.active() != "green":
            traffic.switch_to("green")
        for rec in self.journal.open_incidents():
            inc = self.journal.incident(rec["id"])
            if inc is not None:
                from tbs_emergency.domain.incident import Entry

                self.journal.append(
                    Entry(
                        incident_id=inc.id,
                        kind="resolved",
                        what="closed by drill reset",
                        decided_by="drill",
                        result="info",
                    )
                )
                closed = self.journal.incident(inc.id)
                if closed is not None:
                    self.journal.sync_index(closed)
        # Quiet must hold for a whole detection span (N windows), not just at one instant:
        # a single look can land between scrapes while the old fault still fills the windows.
        span = max((r.period_s * r.required for r in self.rules.windowed), default=0.0)
        # At real time the runbook's windows span 30 minutes: quiet there means "nothing would
        # fire" (a rule may still be in breach) over a capped span.
        strict = span <= 60.0
        span = min(span, 60.0)
        deadline = time.monotonic() + timeout + span
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            evs = [r.evaluate("green", self._windows(r), time.time()) for r in self.rules.windowed]
            if all(e.status == "ok" if strict else not e.fired for e in evs):
                if traffic.active() != "green":
                    traffic.switch_to("green")
                    quiet_since = None
                    continue
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= span:
                    return
            else:
                quiet_since = None
            time.sleep(1.0)
        raise DrillError("the trigger rules did not quiet down after clearing the faults")

    def _writable_green(self) -> None:
        """An earlier rollback left green's MariaDB read-only (runbook step 3): the world as
        after a cut-over has green taking writes again. Nothing happens where green shares its
        server with blue (it was never made read-only)."""
        from tasks.rollback import set_read_only

        result = set_read_only.fn(self.config_path, "green", "mysql", False)
        if not result.get("ok") and not result.get("skipped"):
            raise DrillError(f"green's MySQL could not be made writable again: {result}")

    def _windows(self, rule: Any) -> Any:
        from tbs_emergency.domain.triggers import collect_windows

        return collect_windows(
            rule, "green", self.conn.metrics(), self.settings.metrics.query, time.time()
        )

    def run(self, scenario: str, timeout: float = 180.0) -> DrillResult:
        with self._api():
            return self._run(scenario, timeout)

    def _run(self, scenario: str, timeout: float) -> DrillResult:
        from sandbox import world

        if scenario not in SCENARIOS:
            raise DrillError(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")
        self.reset()
        self.start_runner()
        self.start_watchdog()
        assert self.watchdog is not None
        fired_before = len(self.watchdog.stats.incidents)
        short_s = self._short_fault_s()
        pre = self._sessions_before()
        t_fault = time.time()
        for env, kind, magnitude in SCENARIOS[scenario]:
            duration = short_s if scenario == "short" else None
            world.fault(self.dir, kind, env, magnitude, duration)
        self.log(f"fault injected: {SCENARIOS[scenario]} at {t_fault:.3f}")
        try:
            if scenario == "short":
                return self._expect_nothing(scenario, t_fault, short_s)
            if scenario == "p1-veto":
                return self._follow_veto(scenario, t_fault, fired_before, timeout)
            result = self._follow(scenario, t_fault, fired_before, timeout)
            self._data_after(result, pre)
            if result.rolled_back and result.lost_writes is None:
                # Green's ledger was unreadable during the fault (`app-down` stops the app):
                # the app comes back with its ledger intact once the fault ends. It takes no
                # writes by then (traffic on blue, its MySQL read-only).
                world.clear_faults(self.dir)
                self._lost_writes(result, wait_s=30.0)
            return result
        finally:
            world.clear_faults(self.dir)

    # -- what the rollback carried, measured on the systems -----------------------------------

    DRILL_USERS = 3

    def _sessions_before(self) -> dict[str, Any]:
        """Log a few sandbox users in through the load balancer (green is live), then note every
        session in green's Redis: what the rollback must carry."""
        from sandbox.seed import SANDBOX_USERS
        from tbs_emergency.connectors.useraccess import UserAccess

        users = [u for u in SANDBOX_USERS if u[1] == "trader" and u[3]][: self.DRILL_USERS]
        ua = UserAccess(self.settings.traffic.url or self.settings.environment("green").app_url)
        own: list[str] = []
        problems: list[str] = []
        try:
            for name, _role, password, _active in users:
                try:
                    own.append(ua.login(name, password))
                except Exception as exc:
                    problems.append(f"login {name}: {exc}")
        finally:
            ua.close()
        try:
            ids = set(self.conn.sessions("green").list_ids(limit=1_000_000))
        except Exception as exc:
            ids = set()
            problems.append(f"green's sessions unreadable: {exc}")
        self.log(f"sessions before the fault: {len(ids)} in green ({len(own)} logged in now)")
        return {"ids": ids, "own": own, "problems": problems}

    def _data_after(self, result: DrillResult, pre: dict[str, Any]) -> None:
        """`lost_writes` from green's whole ledger against blue's MySQL, `sessions` from the
        session ids noted before the fault against blue's Redis and the load balancer."""
        from tbs_emergency.connectors.useraccess import UserAccess

        if not result.rolled_back:
            return
        self._lost_writes(result)
        ids: set[str] = pre["ids"]
        try:
            on_blue = len(ids & set(self.conn.sessions("blue").list_ids(limit=1_000_000)))
        except Exception as exc:
            on_blue = None
            result.problems.append(f"drill: blue's sessions unreadable: {exc}")
        ua = UserAccess(self.settings.traffic.url or self.settings.environment("blue").app_url)
        lb_ok = 0
        try:
            for sid in pre["own"]:
                try:
                    lb_ok += ua.me(sid).get("served_by") == "blue"
                except Exception as exc:
                    result.problems.append(f"drill: a pre-rollback session fails on blue: {exc}")
        finally:
            ua.close()
        result.sessions = {
            **(result.sessions or {}),
            "before": len(ids),
            "on_blue": on_blue,
            "logged_in_by_drill": len(pre["own"]),
            "drill_users_served_by_blue": lb_ok,
        }
        result.problems += [f"drill: {p}" for p in pre["problems"]]

    def _lost_writes(self, result: DrillResult, wait_s: float = 0.0) -> None:
        """`lost_writes`: green's whole ledger against blue's MySQL (per table in
        `sessions["writes"]`). With `wait_s`, the ledger is read again until it answers (an app
        starting again); a ledger still unreadable leaves `lost_writes` None, with the reason."""
        from tbs_emergency.dbops.carry import ledger_keys

        deadline = time.monotonic() + wait_s
        while True:
            try:
                tables = ledger_keys(self.conn.app("green").ledger())
                break
            except Exception as exc:
                if time.monotonic() < deadline:
                    time.sleep(1.0)
                    continue
                result.problems.append(f"drill: lost writes not measured: {exc}")
                return
        lost = 0
        detail: dict[str, Any] = {}
        try:
            for name, t in tables.items():
                cols, rows = self.conn.mysql("blue").read_rows(name, t.key_columns, t.keys)
                at = [[c.lower() for c in cols].index(k.lower()) for k in t.key_columns]
                present = {tuple(r[i] for i in at) for r in rows}
                missing = [k for k in t.keys if k not in present]
                lost += len(missing)
                detail[name] = {"ledgered": len(t.keys), "missing_in_blue": len(missing)}
        except Exception as exc:
            result.problems.append(f"drill: lost writes not measured: {exc}")
            return
        # A failed first attempt's reason is no longer true: drop it.
        result.problems = [
            p for p in result.problems if not p.startswith("drill: lost writes not measured")
        ]
        result.lost_writes = lost
        result.sessions = {**(result.sessions or {}), "writes": detail}

    def _short_fault_s(self) -> float:
        """Well below the shortest 60% throughput loss that can fire any rule (the runbook's
        window or the fast P0 one: windows end at evaluation time, so a fault shorter than
        N x P can fire; see tbs_emergency.domain.triggers)."""
        from tbs_emergency.domain.triggers import shortest_fault_s

        rules = [r for r in (self.rules.performance, self.rules.fast_performance) if r]
        if not rules:
            return 2.0
        return 0.6 * min(shortest_fault_s(r, 0.6) for r in rules)

    def _new_incident(self, t_fault: float, fired_before: int, timeout: float) -> str:
        """The first incident the watchdog opened after the fault (never a leftover)."""
        assert self.watchdog is not None
        deadline = time.time() + timeout
        while time.time() < deadline:
            for cand in self.watchdog.stats.incidents[fired_before:]:
                inc = self.journal.incident(cand)
                if inc is not None and inc.opened_at.timestamp() >= t_fault - 1.0:
                    return cand
            time.sleep(0.1)
        raise DrillError(f"no trigger fired within {timeout:.0f}s of the fault")

    def started_by(self, incident_id: str) -> str | None:
        """Who created the rollback run that acted for this incident: `automation` (created by
        an automation), `fallback` (the watchdog), `person`; None when there is no such run."""
        from flows.rollback_gate import rollback_runs_for
        from tbs_emergency.domain.gate import run_info

        try:
            runs = rollback_runs_for(incident_id)
        except Exception as exc:
            self.log(f"cannot read the rollback runs of {incident_id}: {exc}")
            return None
        acted = [r for r in runs if run_info(r).state in ("COMPLETED", "RUNNING", "FAILED")]
        if not acted:
            return None
        run = min(acted, key=lambda r: run_info(r).created)
        creator = getattr(run, "created_by", None)
        kind = str(getattr(creator, "type", "") or "").upper()
        decided = str(((run.parameters or {}).get("params") or {}).get("decided_by", ""))
        if kind == "AUTOMATION" or decided.startswith("automation"):
            return "automation"
        if "fallback" in decided or decided.startswith("watchdog"):
            return "fallback"
        return "person"

    def _follow_veto(
        self, scenario: str, t_fault: float, fired_before: int, timeout: float
    ) -> DrillResult:
        """P1: veto as soon as the incident opens, then check that nothing moved."""
        from tbs_emergency.cli import app

        inc_id = self._new_incident(t_fault, fired_before, timeout)
        detected = self.journal.incident(inc_id)
        self.log(f"incident {inc_id}: vetoing with `tbs-emergency ack {inc_id} --veto`")
        try:
            app(
                [
                    "--config",
                    self.config_path,
                    "ack",
                    inc_id,
                    "--veto",
                    "--by",
                    "drill",
                    "--reason",
                    "rollback drill: p1-veto",
                ],
                standalone_mode=False,
            )
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise DrillError(f"ack --veto exited with {exc.code}") from None
        # The rollback run (the automation's) ends Cancelled by the veto; give it the veto
        # window and then some to do anything else.
        world = load_settings(self.config_path)  # the executor's runs use the world's config
        veto_s = world.watchdog.veto_window_s(world.triggers.time_scale)
        deadline = time.time() + min(timeout, veto_s + 30.0)
        gate_seen = False
        while time.time() < deadline:
            entries = self.journal.entries(inc_id)
            if any(e.step == "gate" and e.data.get("verdict") == "vetoed" for e in entries):
                gate_seen = True
                break
            time.sleep(0.5)
        time.sleep(2.0)
        entries = self.journal.entries(inc_id)
        inc = Incident.from_entries(entries)
        traffic = self.conn.traffic().active()
        redirected = any(e.data.get("action") == "redirect" and e.result == "ok" for e in entries)
        problems = [] if gate_seen else ["no rollback run reached the gate's veto"]
        return DrillResult(
            scenario=scenario,
            incident_id=inc_id,
            rolled_back=traffic == "blue" or redirected,
            traffic=traffic,
            status=inc.status if inc else "unknown",
            timings={
                "detected_s": round(detected.opened_at.timestamp() - t_fault, 3)
                if detected
                else None,
                "redirected_s": None,
                "confirmed_s": None,
            },
            incidents=self.watchdog.stats.incidents[fired_before:] if self.watchdog else [],
            problems=problems + [e.what for e in entries if e.result == "failed"],
            started_by=self.started_by(inc_id),
            severity=inc.severity.value if inc else None,
            decision=_decision(entries),
            report="",
        )

    def _expect_nothing(self, scenario: str, t_fault: float, short_s: float) -> DrillResult:
        assert self.watchdog is not None
        perf = self.rules.performance
        wait = (perf.period_s * (perf.required + 1) if perf else 10.0) + short_s
        before = list(self.watchdog.stats.incidents)
        time.sleep(wait)
        new = [i for i in self.watchdog.stats.incidents if i not in before]
        traffic = self.conn.traffic().active()
        return DrillResult(
            scenario=scenario,
            incident_id=new[0] if new else None,
            rolled_back=traffic == "blue",
            traffic=traffic,
            status="fired" if new else "no incident",
            timings={"fault_s": short_s, "watched_s": wait},
            incidents=new,
        )

    def _follow(
        self, scenario: str, t_fault: float, fired_before: int, timeout: float
    ) -> DrillResult:
        assert self.watchdog is not None
        deadline = time.time() + timeout
        inc_id: str | None = None
        while time.time() < deadline and inc_id is None:
            # The first incident the watchdog opened after the fault (never a leftover).
            for cand in self.watchdog.stats.incidents[fired_before:]:
                inc = self.journal.incident(cand)
                if inc is not None and inc.opened_at.timestamp() >= t_fault:
                    inc_id = cand
                    break
            time.sleep(0.1)
        if inc_id is None:
            raise DrillError(f"no trigger fired within {timeout:.0f}s of the fault")
        inc: Incident | None = None
        while time.time() < deadline:
            inc = self.journal.incident(inc_id)
            if inc is not None and (
                inc.status in ("resolved", "merged")
                or self.journal.has_kind(inc_id, "step", "4-confirmation")
                or self.journal.has_kind(inc_id, "escalated")
            ):
                break
            time.sleep(0.2)
        entries = self.journal.entries(inc_id)
        inc = Incident.from_entries(entries)
        if inc is None:
            raise DrillError(f"incident {inc_id} has no journal")
        time.sleep(0.5)  # let the flow finish journaling (report, index)
        entries = self.journal.entries(inc_id)
        inc = Incident.from_entries(entries) or inc

        def at(pred: Any) -> float | None:
            hits = [e for e in entries if pred(e)]
            if not hits:
                return None
            e = hits[0]
            return round((e.finished_at or e.at).timestamp() - t_fault, 3)

        detected = round(inc.opened_at.timestamp() - t_fault, 3)
        redirected = at(lambda e: e.data.get("action") == "redirect" and e.result == "ok")
        confirmed = at(
            lambda e: e.step == "4-confirmation" and e.kind == "step" and e.result == "ok"
        )
        started = at(lambda e: e.kind == "decision" and e.step == "1-detection")
        traffic = self.conn.traffic().active()
        runs = sum(1 for e in entries if e.kind == "decision" and e.step == "1-detection")
        return DrillResult(
            scenario=scenario,
            incident_id=inc.id,
            rolled_back=traffic == "blue" and redirected is not None,
            traffic=traffic,
            status=inc.status,
            timings={
                "detected_s": detected,
                "rollback_started_s": started,
                "redirected_s": redirected,
                "confirmed_s": confirmed,
                "fired_to_redirected_s": round(redirected - detected, 3) if redirected else None,
                "fired_to_confirmed_s": round(confirmed - detected, 3) if confirmed else None,
            },
            phases=step_timings(inc, entries),
            steps=step_results(entries),
            incidents=self.watchdog.stats.incidents[fired_before:],
            rollback_runs=runs,
            problems=[e.what for e in entries if e.result == "failed"],
            report=render_report(inc, entries),
            started_by=self.started_by(inc.id),
            severity=inc.severity.value,
            decision=_decision(entries),
        )


def _decision(entries: list[Any]) -> str | None:
    """The P1 decision the journal records: veto | approve | timeout (None: no P1 wait)."""
    for e in reversed(entries):
        if e.kind == "decision" and e.step == "p1-decision":
            return str(e.data.get("decision"))
    return None
