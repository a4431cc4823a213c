"""The emergency executor: a worker for the tbs-emergency work pool that starts runs fast.

    python -m deployments.runner [--pool NAME] [--start thread|process] [--poll S]
                                 [--max-lateness S] [--config tbs.toml] [--deploy]
    tbs-emergency runner ...                       (the same)

What it executes
----------------
Every run of the work pool: whatever `tbs-emergency deploy` (or `prefect deploy --all`)
registered from prefect.yaml, started by a schedule, an automation or a person. It declares
nothing itself (no `serve()`: a served deployment would be a second declaration that can drift
from prefect.yaml). `prefect worker start --pool tbs-emergency` executes the same runs, one new
process each; this executor exists because that costs seconds per run.

How
---
It is Prefect's own `ProcessWorker` (prefect.workers), subclassed: polling the pool, claiming
runs (Pending, Submitting), the server-side concurrency limits and collision strategies, the
work-pool heartbeat, job variables, labels, crash reporting and cancellation are Prefect's.
Two things change:

1. `--start thread` (default): **the run executes in this long-lived, already warm process**, in
   a thread of its own, through Prefect's engine (`prefect.flow_engine.run_flow`, the call the
   worker's child process would make), driven by Prefect's `FlowRunExecutor` like a process
   (state proposals, crash inference, cancellation through its `ProcessManager`). No
   interpreter start, no re-import of Prefect and the drivers, no new API client: measured by
   bench/trigger_latency.py, about 0.6 s from the event to the flow's first line instead of
   about 7 s with `prefect worker start` (2-core machine, local server). Connections a
   rollback needs are opened at start (`warm_connections`).
   A run goes to a process (Prefect's own path, exactly what `prefect worker start` does)
   whenever running it here could differ from running it there: a pull step other than ours,
   a project directory other than this checkout, job-variable environment values
   (TBS_CONFIG...) other than this process's, an explicit command, a flow this process cannot
   import.
   The price of a thread: no process isolation. Cancellation raises Prefect's
   TerminationSignal in the run's thread (the engine then records Cancelled and runs the
   on_cancellation hooks, as it does in a process); code blocked in a C call sees it only when
   the call returns, and a thread cannot be killed: a run that ignores it keeps its thread
   until it ends (its state is Cancelled regardless). Stopping the runner stops its runs
   (Crashed, as a worker's processes are). A crash of the interpreter takes the runner down;
   its supervisor restarts it and the runs it left behind are recovered (below). The flows'
   code is imported once: restart the runner after changing it (a process run loads it anew).
   `--start process`: every run in a process of its own, as `prefect worker start` does.
2. Stale emergencies do not run late: a run of `emergency-rollback` whose scheduled start is
   more than `--max-lateness` seconds (default 300) in the past when this executor picks it up
   is Cancelled, with a message saying why, instead of rolling back traffic for an incident
   that is long over or already handled (e.g. runs queued while no executor was up).

Polling is every 0.25 s (`--poll`, `TBS_RUNNER_POLL_S`) instead of a worker's 10 s.

At start it recovers the runs a previous instance left behind (it died mid-run): runs of the
pool labelled with this worker's name, still Pending/Running, whose process is gone, are marked
Crashed (which frees their concurrency slot: a dead rollback must not block the next one); the
idempotent emergency flows (`emergency-rollback`, `incident-escalation`) are started again with
the same parameters unless stale. Then it logs READY_LINE and polls.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import ctypes
import datetime as dt
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from deployments.declared import (
    ENTER_PROJECT_STEP,
    ESCALATION,
    ROLLBACK,
    ROOT,
    DeclarationError,
    load,
)
from deployments.steps import HOME_VAR, ProjectNotFound, check_environment, check_project

log = logging.getLogger("tbs_emergency.runner")

# flows/rollback_drill.py and bench/trigger_latency.py wait for this line in the log.
READY_LINE = "tbs runner: serving"
WORKER_NAME = "tbs-emergency-runner"
DEFAULT_POLL_S = 0.25
DEFAULT_MAX_LATENESS_S = 300.0
# How far ahead runs are claimed: polling is fast, so little is needed; a run claimed early
# waits for its scheduled time in its thread.
PREFETCH_S = 2.0
# Flows that are idempotent and worth finishing after the runner died mid-run.
RESUMABLE = (ROLLBACK, ESCALATION)
# Runs of these must not start late (see the module docstring).
NOT_LATE = (ROLLBACK,)

# What a flow run of ours imports on its way to its first line: imported at start.
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


def preload(modules: Sequence[str]) -> list[str]:
    """Import now what the first run would otherwise import; returns what could be imported
    (a missing optional driver must not stop the runner)."""
    done = []
    for name in modules:
        try:
            importlib.import_module(name)
            done.append(name)
        except Exception as exc:  # pragma: no cover - depends on what is installed
            log.warning("not preloading %s: %s", name, exc)
    return done


def poll_seconds(default: float = DEFAULT_POLL_S) -> float:
    try:
        return float(os.environ.get("TBS_RUNNER_POLL_S", default))
    except ValueError:
        return default


# ------------------------------------------------------------------------------------------
# a flow run in a thread, as Prefect's FlowRunExecutor sees a process
# ------------------------------------------------------------------------------------------

# thread ident -> the control intent the runner delivered to that run ("cancel"). Prefect
# keeps the intent of its one child per process in a process-wide flag; runs in threads need
# one each, so the engine's lookup is extended to consult this first (`_patch_engine`).
_THREAD_INTENTS: dict[int, str] = {}
_ENGINE_PATCHED = False
# Set while the worker shuts down: its process manager then stops the runs in flight, which is
# not a cancellation (nobody asked for one): they end Crashed, as a worker's child processes do.
_SHUTTING_DOWN = threading.Event()


def _patch_engine() -> None:
    """Make `prefect.flow_engine._termination_intent` see the intent of the calling thread.

    The engine asks it when a TerminationSignal interrupts a run: "cancel" -> Cancelled and the
    on_cancellation hooks; nothing -> Crashed. tests/unit/test_deployments.py fails if Prefect
    renames it.
    """
    global _ENGINE_PATCHED
    if _ENGINE_PATCHED:
        return
    import prefect.flow_engine as engine

    original = engine._termination_intent

    def termination_intent() -> Any:
        return _THREAD_INTENTS.get(threading.get_ident()) or original()

    engine._termination_intent = termination_intent
    _ENGINE_PATCHED = True


def _thread_cancelled() -> type[BaseException]:
    from prefect.exceptions import TerminationSignal

    class ThreadCancelled(TerminationSignal):
        """Raised inside a run's thread to stop it (PyThreadState_SetAsyncExc instantiates
        the class without arguments)."""

        def __init__(self) -> None:
            super().__init__(signal.SIGTERM)

    return ThreadCancelled


class ThreadRun:
    """A flow run executing in a thread of this process, with the face of a process that
    Prefect's ProcessHandle needs (pid, exitcode, is_alive)."""

    def __init__(self, flow: Any, flow_run: Any) -> None:
        self.flow = flow
        self.flow_run = flow_run
        self.pid = os.getpid()
        self.exitcode: int | None = None
        self.cancel_requested = False
        self._thread = threading.Thread(
            target=self._run, name=f"flow-run-{flow_run.id}", daemon=True
        )

    @property
    def returncode(self) -> int | None:
        return self.exitcode

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        from prefect.exceptions import TerminationSignal
        from prefect.flow_engine import run_flow

        try:
            state = run_flow(self.flow, flow_run=self.flow_run, return_type="state")
            if asyncio.iscoroutine(state):
                state = asyncio.run(state)
            # 0 = the engine recorded a final state (Completed or Failed alike), as a child
            # process exiting normally; anything else is for the executor to report as crashed.
            self.exitcode = 0 if state is None or state.is_final() else 1
        except TerminationSignal:
            self.exitcode = 0 if self.cancel_requested else 1
        except BaseException:
            log.exception("flow run %s: the engine raised", self.flow_run.id)
            self.exitcode = 1
        finally:
            _THREAD_INTENTS.pop(threading.get_ident(), None)

    def cancel(self) -> bool:
        """Deliver "cancel" to the run's thread (during shutdown: a bare termination, which the
        engine reports as a crash); False if it is not running."""
        ident = self._thread.ident
        if ident is None or not self._thread.is_alive():
            return False
        if not _SHUTTING_DOWN.is_set():
            self.cancel_requested = True
            _THREAD_INTENTS[ident] = "cancel"
        done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(ident), ctypes.py_object(_thread_cancelled())
        )
        return bool(done)


class ThreadScope:
    """Prefect's ProcessTerminationScope for a ThreadRun: "kill" means cancel the thread,
    never a signal to the pid (which is this process)."""

    wait_after_graceful_kill = True

    def __init__(self, run: ThreadRun) -> None:
        self._run = run

    def is_alive(self, pid: int) -> bool:
        return self._run.is_alive()

    def graceful_kill(self, pid: int) -> None:
        if self._run.cancel():
            log.info("flow run %s: cancellation delivered to its thread", self._run.flow_run.id)

    def hard_kill(self, pid: int) -> None:
        # Threads cannot be killed; the engine already recorded the cancellation if it could.
        log.warning(
            "flow run %s: its thread did not stop; it keeps running until its code returns",
            self._run.flow_run.id,
        )

    def close(self) -> None:
        return None


class ThreadStarter:
    """Prefect's ProcessStarter protocol, starting the run in a thread (see ThreadRun)."""

    def __init__(self, flow: Any) -> None:
        self._flow = flow

    async def start(self, flow_run: Any, task_status: Any = None) -> None:
        import anyio
        from prefect.runner._process_manager import ProcessHandle

        # A run claimed ahead of its scheduled time (prefetch) starts at that time, as the
        # schedule says, not when it was claimed.
        when = flow_run.next_scheduled_start_time or flow_run.expected_start_time
        if when is not None:
            delay = (when - dt.datetime.now(dt.UTC)).total_seconds()
            if 0 < delay <= PREFETCH_S * 5:
                await anyio.sleep(delay)
        run = ThreadRun(self._flow, flow_run)
        run.start()
        handle = ProcessHandle(run, termination_scope=ThreadScope(run))  # type: ignore[arg-type]
        if task_status is not None:
            task_status.started(handle)
        while run.is_alive():
            await anyio.sleep(0.05)


class ThreadHooks:
    """Prefect's FlowRunHookRunner for thread runs. In a thread the engine itself records a
    cancellation and runs the flow's on_cancellation hooks (a child process leaves both to its
    runner), so the executor must not run them a second time; crashed hooks stay Prefect's
    (run only when the executor, not the engine, reports the crash)."""

    def __init__(self, flow: Any) -> None:
        from prefect.runner._hook_runner import HookRunner

        async def resolve(_flow_run: Any) -> Any:
            return flow

        self._hooks = HookRunner(resolve_flow=resolve)

    async def run_cancellation_hooks(self, flow_run: Any, state: Any) -> None:
        return None

    async def run_crashed_hooks(self, flow_run: Any, state: Any) -> None:
        await self._hooks.run_crashed_hooks(flow_run, state)


# ------------------------------------------------------------------------------------------
# the worker
# ------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """How one run is executed: in a thread (`flow`), failed at once (`failure`), or in a
    process (neither; `why` says why not in a thread)."""

    flow: Any = None
    failure: str | None = None
    why: str = ""


def _same(a: str | None, b: str | None) -> bool:
    """Equal environment values; paths naming the same file count as equal."""
    if a == b:
        return True
    if not a or not b:
        return False
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


def _worker_class() -> type:
    """The worker class, built on first use (importing Prefect's workers is slow)."""
    import anyio
    from prefect.client.schemas.objects import FlowRun
    from prefect.runner._flow_run_executor import FlowRunExecutorContext
    from prefect.states import Failed
    from prefect.utilities.engine import propose_state
    from prefect.workers.process import ProcessJobConfiguration, ProcessWorker, ProcessWorkerResult

    from deployments.deploy import resolve_env

    # `abc.ABC` among the bases keeps Prefect from registering this class as *the* "process"
    # worker type of the process (prefect.utilities.dispatch skips classes that list ABC as a
    # base): `prefect worker start` in the same interpreter must still get ProcessWorker.
    class TbsWorker(ProcessWorker, abc.ABC):  # type: ignore[misc]
        type = "process"

        def __init__(
            self,
            work_pool_name: str,
            *,
            start: str = "thread",
            max_lateness_s: float = DEFAULT_MAX_LATENESS_S,
            project_root: Path = ROOT,
            name: str = WORKER_NAME,
            limit: int | None = None,
        ) -> None:
            super().__init__(
                work_pool_name=work_pool_name,
                name=name,
                limit=limit,
                prefetch_seconds=PREFETCH_S,
            )
            self.start_mode = start
            self.max_lateness_s = max_lateness_s
            self.project_root = project_root.resolve()
            self._deployment_names: dict[UUID, str] = {}
            self._ctx: Any = None
            self.declared: tuple[str, ...] = ()

        # -- lifecycle ---------------------------------------------------------------------
        async def setup(self) -> None:
            await super().setup()
            if self.start_mode == "thread":
                _patch_engine()
                # One executor context for all thread runs (not one per run as for processes):
                # its API client and cancellation observer are then warm when a run comes.
                self._ctx = await self._exit_stack.enter_async_context(FlowRunExecutorContext())
            try:
                await recover_orphans(
                    self.client, self._work_pool_name, self.name, self.max_lateness_s
                )
            except Exception as exc:  # recovery must not keep the runner from serving
                log.warning("recovering orphaned runs failed: %s", exc)
            await _report_missing(
                self.client, self._work_pool_name, self.declared, threads=self._ctx is not None
            )

        async def teardown(self, *exc_info: Any) -> None:
            _SHUTTING_DOWN.set()
            await super().teardown(*exc_info)

        async def deployment_name(self, deployment_id: UUID | None) -> str | None:
            if deployment_id is None:
                return None
            if deployment_id not in self._deployment_names:
                try:
                    d = await self.client.read_deployment(deployment_id)
                except Exception:
                    return None
                self._deployment_names[deployment_id] = d.name
            return self._deployment_names[deployment_id]

        # -- claiming ----------------------------------------------------------------------
        async def _submit_run(self, flow_run: FlowRun) -> None:
            name = await self.deployment_name(flow_run.deployment_id)
            late = lateness_s(flow_run)
            if name in NOT_LATE and late is not None and late > self.max_lateness_s:
                await self._cancel_stale(flow_run, name, late)
                return
            await super()._submit_run(flow_run)

        async def _cancel_stale(self, flow_run: FlowRun, name: str, late: float) -> None:
            message = (
                f"not started: {name} was due {late:.0f}s ago, more than the executor's"
                f" --max-lateness of {self.max_lateness_s:.0f}s; a stale emergency run must"
                " not act late (start a new one if it is still needed)"
            )
            try:
                await self._mark_flow_run_as_cancelled(flow_run, state_updates={"message": message})
                log.warning("flow run %s (%s) cancelled: %s", flow_run.name, name, message)
            finally:
                # What BaseWorker._submit_run would have released had it run.
                self._submitting_flow_run_ids.discard(flow_run.id)
                self._release_limit_slot(flow_run.id)
                if self._cancelling_observer is not None:
                    self._cancelling_observer.remove_in_flight_flow_run_id(flow_run.id)

        # -- executing ---------------------------------------------------------------------
        async def run(
            self,
            flow_run: FlowRun,
            configuration: ProcessJobConfiguration,
            task_status: Any = None,
        ) -> ProcessWorkerResult:
            plan = (
                await self.plan(flow_run, configuration)
                if self._ctx is not None
                else Plan(why="--start process")
            )
            if plan.failure is not None:
                return await self._fail(flow_run, plan.failure, task_status)
            if plan.flow is None:
                if self._ctx is not None:
                    log.info("flow run %s runs in a process: %s", flow_run.name, plan.why)
                return await super().run(flow_run, configuration, task_status)
            return await self._run_in_thread(flow_run, plan.flow, task_status)

        async def _fail(self, flow_run: FlowRun, reason: str, task_status: Any) -> Any:
            """The run cannot start here or anywhere: Failed, with the reason (what the pull
            step does in a process)."""
            if task_status is not None:
                task_status.started(os.getpid())
            try:
                await propose_state(
                    self.client,
                    Failed(message=f"pull step enter_project: {reason}"),
                    flow_run_id=flow_run.id,
                )
            except Exception as exc:
                log.error("could not mark flow run %s failed: %s", flow_run.name, exc)
            log.error("flow run %s failed before starting: %s", flow_run.name, reason)
            return ProcessWorkerResult(status_code=0, identifier=str(os.getpid()))

        async def _run_in_thread(self, flow_run: FlowRun, flow: Any, task_status: Any) -> Any:
            executor = self._ctx.create_executor(
                flow_run,
                ThreadStarter(flow),
                hook_runner=ThreadHooks(flow),
                propose_submitting=False,  # BaseWorker proposed Submitting already
            )
            result: Any = None

            async def execute(*, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
                nonlocal result
                result = await executor.submit(task_status=task_status)
                # submit() returns without starting anything when the run was cancelled
                # meanwhile or the server refused it: release whoever waits for the start.
                with contextlib.suppress(RuntimeError):
                    task_status.started(None)

            async with anyio.create_task_group() as tg:
                handle = await tg.start(execute)
                if task_status is not None:
                    task_status.started(handle.pid if handle is not None else os.getpid())
            status = result.status_code if result is not None else None
            return ProcessWorkerResult(
                status_code=0 if status is None else status, identifier=str(os.getpid())
            )

        async def plan(self, flow_run: FlowRun, configuration: ProcessJobConfiguration) -> Plan:
            """Thread, failure or process for this run (see the module docstring)."""
            deployment = configuration._related_objects.get("deployment")
            if deployment is None and flow_run.deployment_id is not None:
                deployment = await self.client.read_deployment(flow_run.deployment_id)
            if deployment is None or not deployment.entrypoint:
                return Plan(why="not a deployment run")
            if configuration._command_configured:
                return Plan(why="the deployment sets its own command")
            run_env: dict[str, str] = {
                k: str(v) for k, v in (configuration.env or {}).items() if v is not None
            }
            root: Path | None = None
            for step in deployment.pull_steps or []:
                if ENTER_PROJECT_STEP not in step:
                    return Plan(why=f"pull step {next(iter(step), '?')} runs in a process")
                inputs = resolve_env(dict(step[ENTER_PROJECT_STEP] or {}), run_env)
                try:
                    root = check_project(inputs.get("directory", ""))
                except ProjectNotFound as exc:
                    return Plan(failure=str(exc))
            try:
                check_environment(run_env)
            except ProjectNotFound as exc:
                return Plan(failure=str(exc))
            if root is None:
                return Plan(why="the deployment has no enter_project pull step")
            if root != self.project_root:
                return Plan(why=f"its project {root} is not this runner's {self.project_root}")
            job_env = _job_env(deployment, flow_run)
            differs = [k for k, v in job_env.items() if not _same(os.environ.get(k), v)]
            if differs:
                return Plan(why=f"its environment differs from the runner's: {', '.join(differs)}")
            try:
                flow = _import_flow(deployment.entrypoint)
            except Exception as exc:
                return Plan(why=f"cannot import {deployment.entrypoint} here: {exc}")
            return Plan(flow=flow)

    return TbsWorker


def _job_env(deployment: Any, flow_run: Any) -> dict[str, str]:
    """The environment a run's job variables give it (deployment, then run overrides)."""
    env: dict[str, str] = {}
    for source in (deployment.job_variables or {}, flow_run.job_variables or {}):
        for k, v in (source.get("env") or {}).items():
            if v is not None:
                env[str(k)] = str(v)
    return env


def _import_flow(entrypoint: str) -> Any:
    """The flow of "flows/x.py:fn", imported by module name: the run shares this process's
    warm modules (drivers, connection pools) instead of loading a second copy of the file."""
    path, function = entrypoint.split(":", 1)
    if Path(path).is_absolute() or ".." in Path(path).parts or not path.endswith(".py"):
        raise ValueError("not a module of this project")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, function)
    if not hasattr(flow, "fn"):
        raise TypeError(f"{function} is not a flow")
    return flow


def lateness_s(flow_run: Any, now: dt.datetime | None = None) -> float | None:
    """Seconds since the run was due (its original scheduled start), or None if unknown."""
    due = flow_run.expected_start_time or flow_run.next_scheduled_start_time
    if due is None:
        return None
    return ((now or dt.datetime.now(dt.UTC)) - due).total_seconds()


# ------------------------------------------------------------------------------------------
# recovery of runs a previous instance left behind
# ------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def orphaned(flow_run: Any, worker_name: str, my_pid: int | None = None) -> bool:
    """A run this worker's previous instance was executing and nobody executes now."""
    labels = flow_run.labels or {}
    if labels.get("prefect.worker.name") != worker_name:
        return False  # another worker's (e.g. `prefect worker start`): not ours to judge
    pid = str(flow_run.infrastructure_pid or "")
    if not pid.isdigit():
        return True  # claimed, never started
    # A live pid other than ours: a process-mode run still going, or another runner here.
    return int(pid) == (my_pid or os.getpid()) or not _pid_alive(int(pid))


async def recover_orphans(
    client: Any, pool: str, worker_name: str, max_lateness_s: float
) -> list[str]:
    """Crash the orphaned runs of the pool (freeing their concurrency slots) and start the
    idempotent emergency flows again; returns the new runs' ids."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled, Crashed

    runs = await client.read_flow_runs(
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(
                type=FlowRunFilterStateType(
                    any_=[StateType.RUNNING, StateType.PENDING, StateType.CANCELLING]
                )
            )
        ),
        limit=200,
    )
    restarted: list[str] = []
    names: dict[UUID, str] = {}
    for r in runs:
        if not orphaned(r, worker_name):
            continue
        if r.deployment_id is not None and r.deployment_id not in names:
            with contextlib.suppress(Exception):
                names[r.deployment_id] = (await client.read_deployment(r.deployment_id)).name
        name = names.get(r.deployment_id, "?") if r.deployment_id else "?"
        if r.state is not None and r.state.is_cancelling():
            await client.set_flow_run_state(
                r.id, Cancelled(message="cancelled while its runner was down"), force=True
            )
            log.warning("flow run %s (%s) was being cancelled: marked cancelled", r.name, name)
            continue
        await client.set_flow_run_state(
            r.id, Crashed(message="the runner executing it stopped; recovered"), force=True
        )
        log.warning("flow run %s (%s) was orphaned: marked crashed", r.name, name)
        late = lateness_s(r)
        if name in RESUMABLE and not (late is not None and late > max_lateness_s):
            new = await client.create_flow_run_from_deployment(
                r.deployment_id, parameters=r.parameters, tags=["recovered"]
            )
            restarted.append(str(new.id))
            log.warning("started %s again as %s (the flow is idempotent)", name, new.name)
    return restarted


# ------------------------------------------------------------------------------------------
# the process
# ------------------------------------------------------------------------------------------


async def serve_pool(
    pool: str | None = None,
    *,
    start: str = "thread",
    config_path: str | None = None,
    poll: float | None = None,
    max_lateness_s: float = DEFAULT_MAX_LATENESS_S,
    limit: int | None = None,
    name: str = WORKER_NAME,
    deploy_first: bool = False,
) -> None:
    """Execute the pool's runs until cancelled (see the module docstring)."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_WORKER_QUERY_SECONDS,
        temporary_settings,
    )

    project = load()
    pool_name = pool or project.work_pool
    interval = poll if poll is not None else poll_seconds()
    # The runs' code and configuration, as `deploy` records them for each run: a run in a
    # thread sees this process's environment, so it must be the same (see Plan).
    os.environ[HOME_VAR] = str(ROOT)
    if config_path:
        os.environ["TBS_CONFIG"] = str(Path(config_path).resolve())
    os.chdir(ROOT)
    if deploy_first:
        from deployments.deploy import adeploy

        report = await adeploy(str(PREFECT_API_URL.value()), config_path, pool_name)
        log.info(
            "deployed %d deployments, %d automations to pool %s",
            len(report.deployments),
            len([a for a in report.automations if a.status != "deleted"]),
            pool_name,
        )
    if start == "thread":
        preload(PRELOAD)
        for d in project.deployments:  # the flows' modules too: the first run imports nothing
            with contextlib.suppress(Exception):
                importlib.import_module(d.module)
        warm_connections(config_path)
    worker = _worker_class()(
        pool_name,
        start=start,
        max_lateness_s=max_lateness_s,
        name=name,
        limit=limit,
    )

    def announce(message: str) -> None:
        # BaseWorker.start prints "Worker ... started!" once its loops run: the moment to
        # say so in the line the drill and the bench wait for.
        if message.endswith("started!"):
            log.info(
                "%s pool %r, %d deployments declared in prefect.yaml (start=%s, poll %.2fs,"
                " max lateness %.0fs)",
                READY_LINE,
                pool_name,
                len(project.deployments),
                start,
                interval,
                max_lateness_s,
            )
        else:
            log.info("%s", message)

    worker.declared = project.names
    with temporary_settings(updates={PREFECT_WORKER_QUERY_SECONDS: interval}):
        await worker.start(printer=announce)


async def _report_missing(
    client: Any, pool: str, declared: Sequence[str], *, threads: bool = True
) -> None:
    """Say which prefect.yaml deployments are not registered in the pool (run `deploy`), and
    which will start their runs in a process because their recorded environment (TBS_CONFIG,
    TBS_EMERGENCY_HOME) is not this runner's: the fast path must not be lost silently."""
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    try:
        found = await client.read_deployments(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool]))
        )
    except Exception as exc:
        log.warning("could not list the pool's deployments: %s", exc)
        return
    missing = sorted(set(declared) - {d.name for d in found})
    if missing:
        log.warning(
            "not registered in pool %s (run `tbs-emergency deploy`): %s", pool, ", ".join(missing)
        )
    differ: dict[str, list[str]] = {}
    for dep in found if threads else ():
        env = (dep.job_variables or {}).get("env") or {}
        for key, value in env.items():
            if value is not None and not _same(os.environ.get(key), str(value)):
                differ.setdefault(f"{key}={value}", []).append(dep.name)
    for setting, names in differ.items():
        log.warning(
            "runs of %s start in a process: they are registered with %s, this runner has %s",
            ", ".join(sorted(names)),
            setting,
            os.environ.get(setting.split("=", 1)[0], "(unset)"),
        )


def _api_from_config(config_path: str | None, env: Mapping[str, str]) -> str | None:
    """[prefect] api_url of the config, when PREFECT_API_URL does not say."""
    if env.get("PREFECT_API_URL") or not config_path:
        return None
    try:
        from tbs_emergency.config import load_settings

        return load_settings(config_path).prefect.api_url
    except Exception:
        return None


class RunnerError(RuntimeError):
    """The runner did not come up; the message ends with the tail of its log."""


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn(
    api_url: str,
    config_path: str | None,
    log_path: Path,
    *,
    start: str = "thread",
    pool: str | None = None,
    poll: float | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 240.0,
) -> subprocess.Popen[bytes]:
    """Start `python -m deployments.runner` in a session of its own (stop it with
    `os.killpg(proc.pid, signal.SIGTERM)`), its output appended to `log_path`; return once it
    logs READY_LINE. RunnerError, with the log's tail, if it exits or `timeout` passes first.

    For the sandbox world, the drill, the bench and the tests: one way to start the executor.
    """
    argv = [sys.executable, "-m", "deployments.runner", "--start", start]
    if config_path:
        argv += ["--config", str(config_path)]
    if pool:
        argv += ["--pool", pool]
    if poll is not None:
        argv += ["--poll", str(poll)]
    argv += list(args)
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PREFECT_API_URL"] = api_url
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), full_env.get("PYTHONPATH", "")) if p
    )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start_at = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=full_env,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path, "rb") as f:
            f.seek(start_at)
            if READY_LINE.encode() in f.read():
                return proc
        if proc.poll() is not None:
            raise RunnerError(
                f"the runner exited with {proc.returncode}; {log_path}:\n{_tail(log_path)}"
            )
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    raise RunnerError(f"the runner was not ready in {timeout:.0f}s; {log_path}:\n{_tail(log_path)}")


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m deployments.runner` (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Execute the tbs-emergency work pool's runs.")
    parser.add_argument("--pool", default=None, help="work pool (default: prefect.yaml's)")
    parser.add_argument(
        "--start",
        choices=("thread", "process"),
        default=os.environ.get("TBS_RUNNER_START", "thread"),
        help="where a run executes (default: thread, see the module docstring)",
    )
    parser.add_argument("--poll", type=float, default=None, help="poll interval, seconds")
    parser.add_argument(
        "--max-lateness",
        type=float,
        default=DEFAULT_MAX_LATENESS_S,
        help="cancel emergency-rollback runs due longer ago than this (seconds)",
    )
    parser.add_argument("--limit", type=int, default=None, help="runs at once (default: any)")
    parser.add_argument("--name", default=WORKER_NAME, help="worker name")
    parser.add_argument("--config", default=None, help="tbs.toml (TBS_CONFIG for the runs)")
    parser.add_argument(
        "--deploy", action="store_true", help="register prefect.yaml first (`deploy`)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if api := _api_from_config(args.config, os.environ):
        os.environ["PREFECT_API_URL"] = api  # before Prefect reads its settings

    def stop(_signum: int, _frame: Any) -> None:
        # SIGTERM (a supervisor, stop_pid) shuts down like Ctrl-C: the worker's teardown stops
        # the runs in flight and reports them, instead of the process vanishing mid-run. Once:
        # a second SIGTERM (`uv run` forwarding the group's) must not cut that teardown short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        asyncio.run(
            serve_pool(
                args.pool,
                start=args.start,
                config_path=args.config,
                poll=args.poll,
                max_lateness_s=args.max_lateness,
                limit=args.limit,
                name=args.name,
                deploy_first=args.deploy,
            )
        )
    except DeclarationError as exc:
        raise SystemExit(f"error: {exc}") from None
    except KeyboardInterrupt:
        pass
    log.info("tbs runner: stopped")


if __name__ == "__main__":
    main()
