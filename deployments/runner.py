"""The emergency runner: serves the deployments and starts triggered runs in well under 2 s.

Why a runner of our own
-----------------------
A plain `serve()` runner (Prefect 3.9) starts every flow run in a brand-new Python process
(`multiprocessing` "spawn"), which must import Prefect and our code again before the flow's
first line runs: measured here, 3.5-4.3 s from the event to the flow-run start, most of it that
import. `bench/trigger_latency.py` measures it.

What this runner changes, and nothing else (the start mode is `--start`):

1. `thread` (default): **the run executes in this long-lived, already warm process**, in a
   thread of its own, through Prefect's own engine (`prefect.flow_engine.run_flow`, the very call
   the child process would make). No interpreter start, no re-import, no new API client: the
   flow's first line runs a few hundred milliseconds after the runner claims the run. This is
   Prefect's documented patch point for the direct starter
   (`prefect.runner._starter_direct.run_flow_in_subprocess`). The price: no process isolation.
   A run cannot be killed (Prefect's cancellation marks it cancelled; the runner cannot stop
   the thread), and a crash of the interpreter takes the runner with it. Our emergency flows are
   short, bounded by task timeouts, and the runner is restarted by its supervisor.
2. `forkserver`: each run is still its own process, forked from a pre-warmed `forkserver` that
   has imported Prefect, the flows and the drivers (`PRELOAD`). Isolation as with `serve`,
   faster than `spawn`, but the child still builds its settings, API client and logging from
   scratch (measured: seconds under load, see the bench).
3. `spawn`: Prefect's default, the baseline.

In every mode the poll interval is short (`query_seconds`, default 0.25 s; `TBS_RUNNER_POLL_S`).

Everything else is Prefect's `Runner`: deployments are created with their triggers (which
become automations), deployment concurrency limits are enforced by the server, and state
changes, logs and cancellation behave as with `serve`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import threading
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("tbs_emergency.runner")

# What a flow run of ours imports on its way to its first line: preloaded in the forkserver.
PRELOAD = (
    "prefect",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.events",
    "prefect.artifacts",
    "prefect.input",
    "pymysql",
    "heavydb",
    "httpx",
    "boto3",
    "redis",
    "tbs_emergency.config",
    "tbs_emergency.connectors",
    "tbs_emergency.domain.triggers",
    "tasks.common",
    "tasks.rollback",
    "tbs_emergency.connectors.heavydb",
    "tbs_emergency.connectors.mysql",
    "tbs_emergency.connectors.sessions",
    "tbs_emergency.connectors.objectstore",
    "tbs_emergency.connectors.traffic",
    "tbs_emergency.connectors.metrics",
)


def warm_connections(config_path: str | None) -> None:
    """Open every connection a rollback uses, now, in this process (thread mode only): the
    first emergency then pays for no driver import, TCP connect or database login."""
    from tasks.incident import connectors_for
    from tbs_emergency.connectors import probe_all

    try:
        conn = connectors_for(config_path)
        probes = probe_all(conn.settings, conn)
        down = [p.system for p in probes if not p.reachable]
        log.info("warmed %d connections%s", len(probes), f"; unreachable: {down}" if down else "")
    except Exception as exc:  # a warm-up failure is not an emergency: the flows will say
        log.warning("warm-up failed: %s", exc)


_FAST_START_ENABLED = False


class _ForkserverOnly:
    """Stands in for the `multiprocessing` module inside `prefect.flow_engine` only."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx

    def get_context(self, method: str | None = None) -> Any:
        if method in (None, "spawn"):
            return self._ctx
        return multiprocessing.get_context(method)

    def __getattr__(self, name: str) -> Any:
        return getattr(multiprocessing, name)


def enable_fast_start(preload: Sequence[str] = PRELOAD) -> list[str]:
    """Start flow runs from a pre-warmed forkserver; returns the modules actually preloaded.

    Modules that cannot be imported here are left out (and logged) rather than failing: a
    missing optional driver must not stop the runner.
    """
    global _FAST_START_ENABLED
    import prefect.flow_engine as flow_engine

    usable = []
    for name in preload:
        try:
            importlib.import_module(name)
            usable.append(name)
        except Exception as exc:  # pragma: no cover - depends on what is installed
            log.warning("not preloading %s: %s", name, exc)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(usable)
    if not hasattr(flow_engine, "multiprocessing"):  # pragma: no cover - Prefect changed
        log.warning("prefect.flow_engine has no multiprocessing attribute; fast start is off")
        return []
    flow_engine.multiprocessing = _ForkserverOnly(ctx)  # type: ignore[attr-defined]
    # Start the server now, so the first emergency does not pay for the imports.
    multiprocessing.forkserver.ensure_running()
    _FAST_START_ENABLED = True
    return usable


class _ThreadProcess:
    """What the runner needs of a child process, for a flow run executed in a thread.

    `pid` is None, so the runner's kill paths do nothing to this process; `exitcode` is 0 once
    the engine returned (a failed flow is a Failed state, not an exit code), 1 if it raised.
    """

    def __init__(self, target: Any, kwargs: dict[str, Any], name: str) -> None:
        self.pid: int | None = None
        self.exitcode: int | None = None
        self._thread = threading.Thread(
            target=self._run, args=(target, kwargs), name=name, daemon=True
        )

    def _run(self, target: Any, kwargs: dict[str, Any]) -> None:
        try:
            target(**kwargs)
            self.exitcode = 0
        except BaseException:
            log.exception("flow run thread %s raised", self._thread.name)
            self.exitcode = 1

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()


def run_flow_in_thread(
    flow: Any,
    flow_run: Any = None,
    parameters: dict[str, Any] | None = None,
    wait_for: Any = None,
    context: dict[str, Any] | None = None,
    env: dict[str, str | None] | None = None,
) -> _ThreadProcess:
    """Stand-in for `run_flow_in_subprocess`: the same engine call, in a thread of this process."""
    from prefect.flow_engine import run_flow

    kwargs: dict[str, Any] = {"flow": flow, "flow_run": flow_run}
    if parameters is not None:
        kwargs["parameters"] = parameters
    elif flow_run is not None and flow_run.parameters:
        kwargs["parameters"] = flow_run.parameters
    proc = _ThreadProcess(run_flow, kwargs, name=f"flow-run-{getattr(flow_run, 'id', '?')}")
    proc.start()
    return proc


def enable_thread_start() -> None:
    """Start flow runs in threads of this process (see the module docstring)."""
    import prefect.runner._starter_direct as starter

    starter.run_flow_in_subprocess = run_flow_in_thread  # type: ignore[assignment]
    for name in PRELOAD:  # warm now, not on the first emergency
        try:
            importlib.import_module(name)
        except Exception as exc:  # pragma: no cover - depends on what is installed
            log.warning("not preloading %s: %s", name, exc)


def poll_seconds(default: float = 0.25) -> float:
    try:
        return float(os.environ.get("TBS_RUNNER_POLL_S", default))
    except ValueError:
        return default


RESUMABLE = ("emergency-rollback", "incident-escalation")


async def recover_orphans(deployment_ids: dict[str, Any]) -> list[str]:
    """Runs of our deployments left Running/Pending by a runner that died: crash them (which
    frees the deployment's concurrency slot: a dead rollback must not block the next one) and,
    for the idempotent flows, start them again with the same parameters so they finish the job.

    Assumes one runner per Prefect server for these deployments (as deployed here).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    names = {v: k for k, v in deployment_ids.items()}
    restarted: list[str] = []
    async with get_client() as client:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=list(names))),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(
                        any_=[StateType.RUNNING, StateType.PENDING, StateType.CANCELLING]
                    )
                )
            ),
            limit=100,
        )
        for r in runs:
            name = names.get(r.deployment_id, "?")
            await client.set_flow_run_state(
                r.id, Crashed(message="the runner executing it stopped; recovered"), force=True
            )
            log.warning("flow run %s (%s) was orphaned: marked crashed", r.name, name)
            if name in RESUMABLE:
                new = await client.create_flow_run_from_deployment(
                    r.deployment_id, parameters=r.parameters, tags=["recovered"]
                )
                restarted.append(str(new.id))
                log.warning("started %s again as %s (the flow is idempotent)", name, new.name)
    return restarted


async def serve_flows(
    flows: Sequence[tuple[Any, dict[str, Any]]],
    *,
    start: str = "thread",
    config_path: str | None = None,
    query_seconds: float | None = None,
    limit: int | None = None,
    name: str = "tbs-emergency-runner",
) -> None:
    """Serve (flow, add_flow kwargs) pairs until cancelled.

    Flows are added as objects (`Runner.add_flow`), not as deployments loaded from storage: that
    is what lets Prefect start a run by calling the flow object in a child process instead of
    running `python -m prefect.engine` (a fresh interpreter that imports everything again).
    """
    from prefect.runner import Runner

    if start == "thread":
        enable_thread_start()
        warm_connections(config_path)
    elif start == "forkserver":
        enable_fast_start()
    runner = Runner(
        name=name,
        query_seconds=query_seconds if query_seconds is not None else poll_seconds(),
        limit=limit,
        pause_on_shutdown=False,
    )
    ids: dict[str, Any] = {}
    for flow, kwargs in flows:
        ids[kwargs["name"]] = await runner.aadd_flow(flow, **kwargs)
    await recover_orphans(ids)
    # The drill waits for this line: deployments and automations exist, polling starts now.
    log.info(
        "tbs runner: serving %s (start=%s, poll %.2fs)",
        ", ".join(kw["name"] for _, kw in flows),
        start,
        runner.query_seconds,
    )
    await runner.start()


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m deployments.runner [--start thread|forkserver|spawn] [--poll S] [--only ...]`."""
    parser = argparse.ArgumentParser(description="Serve the tbs-emergency deployments.")
    parser.add_argument(
        "--start",
        choices=("thread", "forkserver", "spawn"),
        default=os.environ.get("TBS_RUNNER_START", "thread"),
        help="how a flow run starts (default: thread, see the module docstring)",
    )
    parser.add_argument("--poll", type=float, default=None, help="poll interval, seconds")
    parser.add_argument("--only", nargs="*", default=None, help="deployment names to serve")
    parser.add_argument("--config", default=None, help="tbs.toml given to triggered runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from deployments.specs import served_flows

    flows = served_flows(config_path=args.config, only=args.only)
    asyncio.run(
        serve_flows(flows, start=args.start, config_path=args.config, query_seconds=args.poll)
    )


if __name__ == "__main__":
    main()
