"""Event -> flow-run start latency: Prefect's process worker against the tbs-emergency runner.

The probe deployment and its automation (a custom event `tbs.bench.ping` -> run the
deployment) are prefect.yaml's `trigger-latency-probe`, registered by `deployments.deploy`
into a work pool of the bench's own (`tbs-bench`, so a world's executor does not take its
runs), on a local Prefect server this script starts with a temporary PREFECT_HOME (or the one
in --api-url). The same deployment is then executed by, one at a time:

  plain    `prefect worker start` (Prefect's executor for a work pool: a new process per run,
           which imports Prefect and the flow again), polling every second: the baseline;
  process  `tbs-emergency runner --start process` (the same process per run, polling 0.25 s);
  fast     `tbs-emergency runner` (the run executes in the warm runner process, in a thread;
           poll 0.25 s), the default.

Measured per run, from the event's emission (wall clock, same machine):
  created  - the automation created the flow run (Prefect's automation service: same for all)
  started  - the flow run entered Running (its first line runs right after)
  runner   - started - created: the part the executor decides (poll + claim + start + engine)

    uv run python bench/trigger_latency.py [--runs 5] [--api-url URL] [--modes ...] [--json]
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

from deployments.declared import PROBE, load  # noqa: E402
from sandbox.proc import free_port, log_tail, spawn, stop_pid, wait_ready  # noqa: E402

GOAL_S = 2.0
MODES = ("plain", "process", "fast")
POOL = "tbs-bench"
NAMES = {
    "plain": "prefect worker (process, poll 1 s)",
    "process": "tbs runner --start process",
    "fast": "tbs runner (thread, poll 0.25 s)",
}
_PROBE = load().get(PROBE)
(_TRIGGER,) = _PROBE.triggers
AUTOMATION = _TRIGGER.name
(EVENT,) = _TRIGGER.expect


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
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    proc = spawn(
        "prefect-server",
        [*argv, "--port", str(port)],
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
        wait_ready("prefect-server", proc, healthy, log, timeout=600)
    except Exception:
        stop_pid(proc.pid)
        raise
    return proc, url


def start_executor(mode: str, api_url: str, home: Path) -> subprocess.Popen[bytes]:
    """The mode's executor for the bench pool, once it polls."""
    log = home / f"executor-{mode}.log"
    if mode == "plain":
        prefect = str(Path(sys.executable).with_name("prefect"))
        proc = spawn(
            "prefect-worker",
            [prefect, "worker", "start", "--pool", POOL],
            log,
            env={
                "PREFECT_API_URL": api_url,
                "PREFECT_WORKER_QUERY_SECONDS": "1",
                "PREFECT_HOME": str(home / "worker-home"),
            },
            cwd=home,
        )
        wait_ready("worker", proc, lambda: "started!" in log.read_text(errors="replace"), log, 300)
        return proc
    from deployments.runner import spawn as spawn_runner

    return spawn_runner(
        api_url,
        None,
        log,
        start="thread" if mode == "fast" else "process",
        pool=POOL,
        poll=0.25,
        timeout=300,
    )


def measure_once(client: Any, n: int) -> dict[str, float]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.events import emit_event

    event_id = uuid.uuid4()
    sent = time.time()
    emit_event(
        EVENT,
        resource={"prefect.resource.id": f"tbs.bench.{n}"},
        payload={"sent_at": sent},
        id=event_id,
    )
    deadline = time.monotonic() + 120
    dep_filter = DeploymentFilter(name=DeploymentFilterName(any_=[PROBE]))
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

    executor = start_executor(mode, api_url, home)
    try:
        with get_client(sync_client=True) as client:
            time.sleep(2.0)  # let the executor settle (first polls, imports)
            # One unmeasured run first: the first run after an executor starts pays for
            # one-time work (and the automation service's first look at a new automation).
            try:
                measure_once(client, -1)
            except RuntimeError as exc:
                print(f"{mode} warm-up run: {exc}", file=sys.stderr)
            out = []
            for n in range(runs):
                if executor.poll() is not None:
                    tail = log_tail(home / f"executor-{mode}.log")
                    raise RuntimeError(f"executor ({mode}) exited; log tail:\n{tail}")
                try:
                    out.append(measure_once(client, n))
                except RuntimeError as exc:  # reported, not fatal: the other runs still count
                    print(f"{mode} run {n}: {exc}", file=sys.stderr)
                time.sleep(0.5)
            return out
    finally:
        stop_pid(executor.pid)


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
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; known: {', '.join(MODES)}")

    with tempfile.TemporaryDirectory(prefix="tbs-latency-") as tmp:
        home = Path(tmp)
        server = None
        api_url = args.api_url
        if api_url is None:
            server, api_url = start_server(home)
        os.environ["PREFECT_API_URL"] = api_url
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        try:
            from deployments.deploy import deploy

            # The probe alone, into the bench's pool: prefect.yaml's entry, nothing else
            # (other deployments' schedules would put unrelated runs in front of the executor).
            deploy(api_url, None, POOL, names=[PROBE])
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
            "runner": summary(samples, "runner_s"),
            "samples": samples,
        }
    if "plain" in doc["modes"] and "fast" in doc["modes"]:
        plain = doc["modes"]["plain"]["started"]["median"]
        fast = doc["modes"]["fast"]["started"]["median"]
        rp = doc["modes"]["plain"]["runner"]["median"]
        rf = doc["modes"]["fast"]["runner"]["median"]
        doc["ratio_fast_to_plain"] = fast / plain if plain else None
        doc["runner_ratio_fast_to_plain"] = rf / rp if rp else None
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(
        f"event -> flow-run start, {args.runs} runs each (goal: under {GOAL_S:g} s);"
        f" load average {doc['load_average']:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"{'executor':<36} {'created (med)':>14} {'started (med)':>14} {'min':>7} {'max':>7}"
        f" {'runner part (med)':>18}"
    )
    for mode, m in doc["modes"].items():
        s, c = m["started"], m["created"]
        print(
            f"{NAMES[mode]:<36} {c['median']:>13.2f}s {s['median']:>13.2f}s"
            f" {s['min']:>6.2f}s {s['max']:>6.2f}s {m['runner']['median']:>17.2f}s"
        )
    if doc.get("ratio_fast_to_plain"):
        fast = doc["modes"]["fast"]["started"]["median"]
        plain = doc["modes"]["plain"]["started"]["median"]
        print(
            f"ratio tbs/plain (event -> start): {doc['ratio_fast_to_plain']:.2f}"
            f" ({plain / fast:.1f}x faster); runner part:"
            f" {doc['runner_ratio_fast_to_plain']:.2f};"
            f" goal {'met' if fast < GOAL_S else 'NOT met'} (under {GOAL_S:g} s)"
        )


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
