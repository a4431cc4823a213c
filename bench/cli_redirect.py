"""`tbs-emergency redirect blue|green` against the runbook's curl, side by side.

Against a running sandbox world (`tbs-emergency sandbox up`), alternately, `--runs` times each:

  curl     `curl -X POST <lb>/emergency/redirect-blue` (or `/emergency/switch` to green) with
           the load balancer's token: the runbook's command, the baseline;
  cli      `tbs-emergency redirect blue|green --config <dir>/tbs.toml` in a fresh process, with
           PREFECT_API_URL unset (the CLI takes `[prefect] api_url` from tbs.toml): checks the
           target's health, switches, verifies traffic on the target, journals, records the run
           in Prefect;
  cli-noprefect  the same with `[prefect] api_url` pointing at a closed port (Prefect down).

Printed: median and worst wall time of each, and the CLI's ratio to curl; the goal is the CLI
within 2 s. Not part of `make test` (it needs a running world and moves its traffic).

    uv run python bench/cli_redirect.py [--dir SANDBOX_DIR] [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.proc import LOOPBACK, free_port  # noqa: E402
from tbs_emergency.config import load_settings  # noqa: E402

GOAL_S = 2.0


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.pop("TBS_CONFIG", None)
    return env


def curl_cmd(lb: str, token: str, target: str) -> list[str]:
    auth = ["-H", f"Authorization: Bearer {token}"]
    if target == "blue":
        return ["curl", "-sf", "-X", "POST", *auth, f"{lb}/emergency/redirect-blue"]
    return [
        "curl",
        "-sf",
        "-X",
        "POST",
        *auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        json.dumps({"target": target}),
        f"{lb}/emergency/switch",
    ]


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str, float | None]:
    """(wall seconds, exit code, stderr tail, the CLI's own "verified after" seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    wall = time.perf_counter() - t0
    verified = None
    if "--json" in cmd:
        with contextlib.suppress(ValueError):
            verified = json.loads(proc.stdout).get("verified_after_s")
    return wall, proc.returncode, proc.stderr[-300:], verified


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--dir", type=Path, default=None, help="sandbox dir (default: $TBS_CONFIG's)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not shutil.which("curl"):
        print("curl is not installed", file=sys.stderr)
        return 2
    config = (args.dir / "tbs.toml") if args.dir else Path(os.environ.get("TBS_CONFIG", "tbs.toml"))
    config = config.resolve()
    settings = load_settings(config)
    token = settings.traffic.token.get_secret_value() if settings.traffic.token else ""
    lb = settings.traffic.url.rstrip("/")
    exe = str(Path(sys.executable).with_name("tbs-emergency"))
    with tempfile.TemporaryDirectory() as tmp:
        down = Path(tmp) / "tbs-prefect-down.toml"
        text = config.read_text()
        if settings.prefect.api_url:
            dead = json.dumps(f"http://{LOOPBACK}:{free_port()}/api")
            text = text.replace(json.dumps(settings.prefect.api_url), dead)
        down.write_text(text)
        os.chmod(down, 0o600)
        env = _clean_env()
        modes = {
            "curl": lambda t: curl_cmd(lb, token, t),
            "cli": lambda t: [exe, "redirect", t, "--json", "--config", str(config)],
            "cli-noprefect": lambda t: [exe, "redirect", t, "--json", "--config", str(down)],
        }
        times: dict[str, list[float]] = {m: [] for m in modes}
        verified: dict[str, list[float]] = {m: [] for m in modes}
        failures: list[str] = []
        for i in range(args.runs):
            for mode, cmd in modes.items():
                for target in ("blue", "green"):  # leave traffic where it was (green)
                    s, rc, tail, v = timed(cmd(target), env)
                    if rc != 0:
                        failures.append(f"{mode} {target} run {i}: exit {rc}: {tail.strip()}")
                    if target == "blue":
                        times[mode].append(s)
                        if v is not None:
                            verified[mode].append(v)
    base = statistics.median(times["curl"])
    doc: dict[str, Any] = {"runs": args.runs, "goal_s": GOAL_S, "failures": failures}
    for mode, ts in times.items():
        vs = verified[mode]
        doc[mode] = {
            "median_s": round(statistics.median(ts), 3),
            "worst_s": round(max(ts), 3),
            "ratio_to_curl": round(statistics.median(ts) / base, 1) if base else None,
            # the CLI's own clock: from its process start to traffic verified on blue
            "verified_median_s": round(statistics.median(vs), 3) if vs else None,
            "verified_worst_s": round(max(vs), 3) if vs else None,
        }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(
            f"redirect blue, {args.runs} runs each: wall time to exit (median / worst, ratio to"
            " curl's median); for the CLI also from its start to traffic verified on blue"
        )
        for mode in modes:
            d = doc[mode]
            line = (
                f"  {mode:14} {d['median_s']:7.3f} s / {d['worst_s']:7.3f} s"
                f"   x{d['ratio_to_curl']}"
            )
            if d["verified_median_s"] is not None:
                ok = "<=" if d["verified_worst_s"] <= GOAL_S else ">"
                line += (
                    f"   verified after {d['verified_median_s']:.3f} s /"
                    f" {d['verified_worst_s']:.3f} s ({ok} {GOAL_S:g} s)"
                )
            print(line)
        for f in failures:
            print(f"  failure: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
