"""Recovery time of the automated rollback: five drills, each phase's median and spread.

Runs `tbs-emergency drill rollback` (the same `Drill` object) N times against a running sandbox
world with its Prefect server (`tbs-emergency sandbox up` first; TBS_CONFIG points at it), and
prints, per phase, the median and the spread (max - min) in seconds, beside the runbook's budget
for the automated response (180 s) as a ratio.

Phases (seconds):
  detected     fault start -> the rule fires (windows scaled by triggers.time_scale)
  started      rule fired  -> emergency_rollback's first step runs (event, automation, runner)
  redirected   rule fired  -> traffic on blue (goal in the sandbox: under 10 s)
  confirmed    rule fired  -> recovery confirmed (goal in the sandbox: under 30 s)
  step 1..4    each step of the automated response sequence, from the journal

    uv run python bench/rto.py [--runs 5] [--scenario throughput] [--json]

`--scenario outage --time-scale 1` (issue 13): green's app stopped at real time; per run,
seconds *from the fault*: rule fired, traffic on blue, recovery confirmed, and which path
started the rollback (goals: fired <= 8 s, blue <= 12 s, confirmed <= 60 s; the automation
starts at least 9 of 10). Median and worst of the runs, and side by side (where `haproxy` is
installed) the baseline: HAProxy with green active and blue as its `backup` server, `check inter
2s fall 3`, in front of the same two apps, the same fault: fault -> first answer from blue
(printed as ratios; HAProxy carries no sessions, no data and no journal).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNBOOK_BUDGET_S = 180.0
GOALS = {"redirected": 10.0, "confirmed": 30.0}
# issue 13, from the fault's start, at real time
OUTAGE_GOALS = {"fired": 8.0, "on_blue": 12.0, "confirmed": 60.0}


def haproxy_baseline(drill: Any, runs: int, log: Any) -> list[float] | None:
    """HAProxy (blue as `backup`, `inter 2s fall 3`) in front of the world's two apps: the
    seconds from `app-down` on green to the first answer served by blue, per run. None when
    haproxy is not installed."""
    from sandbox import world
    from sandbox.proc import free_port

    binary = shutil.which("haproxy")
    if binary is None:
        return None
    green = drill.settings.environment("green").app_url.split("://", 1)[1].rstrip("/")
    blue = drill.settings.environment("blue").app_url.split("://", 1)[1].rstrip("/")
    port = free_port()
    out: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "haproxy.cfg"
        cfg.write_text(
            "global\n  log stdout format raw local0 emerg\n"
            "defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n"
            "  timeout server 5s\n"
            f"frontend f\n  bind 127.0.0.1:{port}\n  default_backend b\n"
            "backend b\n  option httpchk GET /health\n"
            f"  server green {green} check inter 2s fall 3 rise 2\n"
            f"  server blue {blue} check inter 2s fall 3 rise 2 backup\n"
        )
        proc = subprocess.Popen(
            [binary, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            for n in range(runs):
                world.clear_faults(drill.dir)
                deadline = time.time() + 60
                while time.time() < deadline and _served_by(port) != "green":
                    time.sleep(0.5)
                time.sleep(5.0)  # green UP again for HAProxy (rise 2)
                t0 = time.time()
                world.fault(drill.dir, "app-down", "green")
                while time.time() - t0 < 60 and _served_by(port) != "blue":
                    time.sleep(0.1)
                took = time.time() - t0
                log(f"haproxy {n + 1}/{runs}: blue answered {took:.2f}s after the fault")
                out.append(took)
        finally:
            world.clear_faults(drill.dir)
            proc.terminate()
            proc.wait(timeout=10)
    return out


def _served_by(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1.0) as resp:
            return str(json.load(resp).get("env"))
    except Exception:
        return None


def _stats(vals: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(vals), 3),
        "worst_s": round(max(vals), 3),
        "best_s": round(min(vals), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="RTO of the automated rollback (sandbox).")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenario", default="throughput")
    parser.add_argument("--config", default=None)
    parser.add_argument("--time-scale", type=float, default=None, help="1 = real time")
    parser.add_argument("--no-haproxy", action="store_true", help="skip the HAProxy baseline")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from flows.rollback_drill import Drill
    from tbs_emergency.config import config_path

    log = (lambda _m: None) if args.json else (lambda m: print(f"  {m}", file=sys.stderr))
    drill = Drill(str(config_path(args.config).resolve()), log=log, time_scale=args.time_scale)
    if args.scenario in ("outage", "app-hang"):
        try:
            outage(drill, args, log)
        finally:
            drill.stop()
        return
    samples: list[dict[str, float | None]] = []
    try:
        for n in range(args.runs):
            print(f"drill {n + 1}/{args.runs} ({args.scenario})", file=sys.stderr)
            r = drill.run(args.scenario)
            t = r.timings
            det = t.get("detected_s")
            row: dict[str, float | None] = {
                "detected": det,
                "started": (t["rollback_started_s"] - det)
                if t.get("rollback_started_s") is not None and det is not None
                else None,
                "redirected": t.get("fired_to_redirected_s"),
                "confirmed": t.get("fired_to_confirmed_s"),
            }
            for p in r.phases:
                row[f"step {p['step']}"] = p["duration_s"]
            row["rolled_back"] = 1.0 if r.rolled_back else 0.0
            samples.append(row)
    finally:
        drill.stop()

    keys = [k for k in samples[0] if k != "rolled_back"]
    table: dict[str, dict[str, Any]] = {}
    for k in keys:
        vals = [float(s[k]) for s in samples if s.get(k) is not None]  # type: ignore[arg-type]
        if not vals:
            continue
        med = statistics.median(vals)
        table[k] = {
            "median_s": round(med, 3),
            "spread_s": round(max(vals) - min(vals), 3),
            "min_s": round(min(vals), 3),
            "max_s": round(max(vals), 3),
            "ratio_to_180s": round(med / RUNBOOK_BUDGET_S, 4),
            "goal_s": GOALS.get(k),
        }
    doc = {
        "runs": args.runs,
        "scenario": args.scenario,
        "rolled_back": sum(1 for s in samples if s["rolled_back"]),
        "phases": table,
        "samples": samples,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(f"\nRTO over {args.runs} drills ({args.scenario}); rolled back {doc['rolled_back']}")
    print(f"{'phase':<22} {'median':>8} {'spread':>8} {'vs 180 s':>9} {'goal':>8}")
    for k, v in table.items():
        goal = f"{v['goal_s']:g}s" if v["goal_s"] else ""
        flag = ""
        if v["goal_s"]:
            flag = " ok" if v["median_s"] < v["goal_s"] else " MISSED"
        print(
            f"{k:<22} {v['median_s']:>7.2f}s {v['spread_s']:>7.2f}s {v['ratio_to_180s']:>9.3f}"
            f" {goal:>8}{flag}"
        )


def outage(drill: Any, args: Any, log: Any) -> None:
    """Issue 13's measurement: seconds from the fault, median and worst, the automation's share,
    and the HAProxy baseline side by side."""
    rows: list[dict[str, Any]] = []
    for n in range(args.runs):
        print(f"drill {n + 1}/{args.runs} ({args.scenario})", file=sys.stderr)
        try:
            r = drill.run(args.scenario)
        except Exception as exc:  # a run that did not fire is a measurement too
            rows.append({"error": str(exc)})
            continue
        t = r.timings
        rows.append(
            {
                "fired": t.get("detected_s"),
                "on_blue": t.get("redirected_s"),
                "confirmed": t.get("confirmed_s"),
                "started_by": r.started_by,
                "rolled_back": r.rolled_back,
                "incident_id": r.incident_id,
            }
        )
        log(f"run {n + 1}: {rows[-1]}")
    phases: dict[str, Any] = {}
    for k, goal in OUTAGE_GOALS.items():
        vals = [float(x[k]) for x in rows if x.get(k) is not None]
        if vals:
            phases[k] = {**_stats(vals), "goal_s": goal, "met": statistics.median(vals) <= goal}
    by_automation = sum(1 for x in rows if x.get("started_by") == "automation")
    baseline = None if args.no_haproxy else haproxy_baseline(drill, args.runs, log)
    doc: dict[str, Any] = {
        "scenario": args.scenario,
        "time_scale": args.time_scale,
        "runs": args.runs,
        "rolled_back": sum(1 for x in rows if x.get("rolled_back")),
        "started_by_automation": by_automation,
        "phases": phases,
        "samples": rows,
    }
    if baseline:
        hb = _stats(baseline)
        doc["haproxy_backup_inter2s_fall3"] = {**hb, "samples": [round(b, 3) for b in baseline]}
        if "on_blue" in phases:
            doc["ratio_on_blue_to_haproxy"] = round(
                phases["on_blue"]["median_s"] / hb["median_s"], 3
            )
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(
        f"\n{args.scenario} at time scale {args.time_scale}: {doc['rolled_back']}/{args.runs}"
        f" rolled back, {by_automation}/{args.runs} started by the automation"
    )
    print(f"{'from the fault':<16} {'median':>8} {'worst':>8} {'goal':>6}")
    for k, v in phases.items():
        flag = "ok" if v["met"] else "MISSED"
        print(f"{k:<16} {v['median_s']:>7.2f}s {v['worst_s']:>7.2f}s {v['goal_s']:>5g}s {flag}")
    if baseline:
        hb = doc["haproxy_backup_inter2s_fall3"]
        print(
            f"haproxy backup   {hb['median_s']:>7.2f}s {hb['worst_s']:>7.2f}s"
            "        (first answer from blue; no sessions, data or journal)"
        )
        if "ratio_on_blue_to_haproxy" in doc:
            print(f"traffic on blue / haproxy failover: x{doc['ratio_on_blue_to_haproxy']:.2f}")


if __name__ == "__main__":
    main()
