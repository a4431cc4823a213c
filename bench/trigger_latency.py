"""Event -> flow-run start latency: a plain `serve` runner against the tbs-emergency runner.

Baseline: Prefect's own runner as `serve()` sets it up (a new Python process per run, "spawn"),
polling every second. Ours: `deployments.runner` in its default mode (the run executes in the
warm runner process, in a thread; poll 0.25 s), and its `forkserver` mode (a process per run,
forked from a pre-warmed server) for comparison. All serve the same deployment with the same
automation (a custom event `tbs.bench.ping` -> run deployment), against a local Prefect
server this script starts with a temporary PREFECT_HOME (or the one in --api-url).

Measured per run, from the event's emission (wall clock, same machine):
  created  - the automation created the flow run (Prefect's automation service: same for all)
  started  - the flow run entered Running (its first line runs right after)
  runner   - started - created: the part the runner decides (poll + process start + engine)

    uv run python bench/trigger_latency.py [--runs 5] [--api-url URL] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.proc import free_port, log_tail, spawn, stop_pid, wait_ready  # noqa: E402

GOAL_S = 2.0
MODES = ("plain", "forkserver", "fast")


def start_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    log = home / "server.log"
    proc = spawn(
        "prefect-server",
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        log,
        env=env,
    )
    import httpx

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_ready("prefect-server", proc, healthy, log, timeout=240)
    except Exception:
        stop_pid(proc.pid)
        raise
    return proc, url


def start_runner(mode: str, api_url: str, home: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "deployments.runner", "--only", "trigger-latency-probe"]
    argv += {
        "plain": ["--start", "spawn", "--poll", "1"],
        "forkserver": ["--start", "forkserver", "--poll", "0.25"],
        "fast": ["--start", "thread", "--poll", "0.25"],
    }[mode]
    return spawn(
        f"runner-{mode}",
        argv,
        home / f"runner-{mode}.log",
        env={"PREFECT_API_URL": api_url, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )


def wait_for_automation(client: Any, log: Path, timeout: float = 300.0) -> None:
    """Until the runner says it serves (deployments and automation created, polling)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = log.exists() and "tbs runner: serving" in log.read_text(errors="replace")
        if ready and client.read_automations_by_name("tbs: bench ping -> latency probe"):
            return
        time.sleep(0.2)
    raise RuntimeError("the runner did not create the latency-probe automation in time")


def measure_once(client: Any, n: int) -> dict[str, float]:
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
    )
    from prefect.events import emit_event

    event_id = uuid.uuid4()
    sent = time.time()
    emit_event(
        "tbs.bench.ping",
        resource={"prefect.resource.id": f"tbs.bench.{n}"},
        payload={"sent_at": sent},
        id=event_id,
    )
    deadline = time.monotonic() + 120
    dep_filter = DeploymentFilter(name=DeploymentFilterName(any_=["trigger-latency-probe"]))
    while time.monotonic() < deadline:
        for run in client.read_flow_runs(deployment_filter=dep_filter, limit=50):
            params = (run.parameters or {}).get("params") or {}
            if params.get("event_id") != str(event_id):
                continue
            if run.start_time is not None and run.state and run.state.is_final():
                return {
                    "created_s": run.created.timestamp() - sent,
                    "started_s": run.start_time.timestamp() - sent,
                    "runner_s": run.start_time.timestamp() - run.created.timestamp(),
                }
        time.sleep(0.05)
    raise RuntimeError(f"no completed flow run for event {event_id} within 120 s")


def run_mode(mode: str, api_url: str, home: Path, runs: int) -> list[dict[str, float]]:
    from prefect.client.orchestration import get_client

    runner = start_runner(mode, api_url, home)
    try:
        with get_client(sync_client=True) as client:
            wait_for_automation(client, home / f"runner-{mode}.log")
            time.sleep(2.0)  # let the runner finish starting (forkserver warm-up included)
            # One unmeasured run first: after an automation is (re)created the server's trigger
            # service takes a moment to load it, which would be charged to whichever mode runs
            # after the first (0.05 s vs 2 s "created" in the same run otherwise).
            try:
                measure_once(client, -1)
            except RuntimeError as exc:
                print(f"{mode} warm-up run: {exc}", file=sys.stderr)
            out = []
            for n in range(runs):
                if runner.poll() is not None:
                    tail = log_tail(home / f"runner-{mode}.log")
                    raise RuntimeError(f"runner ({mode}) exited; log tail:\n{tail}")
                try:
                    out.append(measure_once(client, n))
                except RuntimeError as exc:  # reported, not fatal: the other runs still count
                    print(f"{mode} run {n}: {exc}", file=sys.stderr)
                time.sleep(0.5)
            # the next mode re-creates the deployment and its automation
            for a in client.read_automations_by_name("tbs: bench ping -> latency probe"):
                client.delete_automation(a.id)
            return out
    finally:
        stop_pid(runner.pid)


def summary(samples: list[dict[str, float]], key: str) -> dict[str, float]:
    vals = [s[key] for s in samples] or [float("nan")]
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "spread": max(vals) - min(vals),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--api-url", default=None, help="use this Prefect server")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated, in order (default {MODES})"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tbs-latency-") as tmp:
        home = Path(tmp)
        server = None
        api_url = args.api_url
        if api_url is None:
            server, api_url = start_server(home)
        os.environ["PREFECT_API_URL"] = api_url
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        try:
            modes = [m for m in args.modes.split(",") if m]
            unknown = [m for m in modes if m not in MODES]
            if unknown:
                parser.error(f"unknown mode(s) {unknown}; known: {', '.join(MODES)}")
            results = {m: run_mode(m, api_url, home, args.runs) for m in modes}
        finally:
            if server is not None:
                stop_pid(server.pid)

    doc: dict[str, Any] = {
        "runs": args.runs,
        "goal_s": GOAL_S,
        "load_average": os.getloadavg()[0],
        "modes": {},
    }
    for mode, samples in results.items():
        doc["modes"][mode] = {
            "created": summary(samples, "created_s"),
            "started": summary(samples, "started_s"),
            "samples": samples,
        }
    for mode in doc["modes"]:
        doc["modes"][mode]["runner"] = summary(results[mode], "runner_s")
    plain = doc["modes"]["plain"]["started"]["median"]
    fast = doc["modes"]["fast"]["started"]["median"]
    doc["ratio_fast_to_plain"] = fast / plain if plain else None
    rp, rf = doc["modes"]["plain"]["runner"]["median"], doc["modes"]["fast"]["runner"]["median"]
    doc["runner_ratio_fast_to_plain"] = rf / rp if rp else None
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(
        f"event -> flow-run start, {args.runs} runs each (goal: under {GOAL_S:g} s);"
        f" load average {doc['load_average']:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"{'runner':<34} {'created (med)':>14} {'started (med)':>14} {'min':>7} {'max':>7}"
        f" {'runner part (med)':>18}"
    )
    names = {
        "plain": "plain serve (spawn, poll 1 s)",
        "forkserver": "tbs runner --start forkserver",
        "fast": "tbs runner (thread, poll 0.25 s)",
    }
    for mode, m in doc["modes"].items():
        s, c = m["started"], m["created"]
        print(
            f"{names[mode]:<34} {c['median']:>13.2f}s {s['median']:>13.2f}s"
            f" {s['min']:>6.2f}s {s['max']:>6.2f}s {m['runner']['median']:>17.2f}s"
        )
    print(
        f"ratio tbs/plain (event -> start): {doc['ratio_fast_to_plain']:.2f}"
        f" ({plain / fast:.1f}x faster); runner part: {doc['runner_ratio_fast_to_plain']:.2f};"
        f" goal {'met' if fast < GOAL_S else 'NOT met'} (under {GOAL_S:g} s)"
    )


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
