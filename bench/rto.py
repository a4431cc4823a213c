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
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNBOOK_BUDGET_S = 180.0
GOALS = {"redirected": 10.0, "confirmed": 30.0}


def main() -> None:
    parser = argparse.ArgumentParser(description="RTO of the automated rollback (sandbox).")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenario", default="throughput")
    parser.add_argument("--config", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from flows.rollback_drill import Drill
    from tbs_emergency.config import config_path

    log = (lambda _m: None) if args.json else (lambda m: print(f"  {m}", file=sys.stderr))
    drill = Drill(str(config_path(args.config).resolve()), log=log)
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


if __name__ == "__main__":
    main()
