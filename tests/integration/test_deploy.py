"""prefect.yaml on a fresh Prefect server: `deploy`, `prefect deploy --all`, the executor.

One real `prefect server start` for the module (a fresh database: migrations take minutes on a
2-core machine), its own PREFECT_HOME under tmp; an S3 stand-in (moto) for the incident
journal; every other system of the configuration points at a closed port, so the runs here
are the ones that can complete without a sandbox world (tests/e2e/test_deploy_world.py runs
every deployment against the world).

In order: `deploy` registers the work pool, every deployment (schedules, limits, pull step,
job variables) and every trigger as an automation; a second `deploy` changes nothing;
`prefect deploy --all` with the documented environment registers the same; the executor
(`deployments.runner`, threads) runs each deployment once, the automation-started ones from
their events; a stale rollback is cancelled, a running run is cancelled on request, a run whose
pull step cannot find the project fails with the reason; `prefect worker start` and the
runner's process mode execute the same deployments.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from deployments import declared
from deployments.deploy import PullSteps, _canonical, _deployment_class, deploy
from deployments.runner import WORKER_NAME, spawn
from sandbox.proc import LOOPBACK, free_port, log_tail, stop_pid, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]
PROJECT = declared.load()
PREFECT = str(Path(sys.executable).with_name("prefect"))
BUCKET = "tbs-deploy-test"
RUN_TIMEOUT_S = 240.0

# Parameters that make each run cheap and safe without a world (dry runs, tiny windows).
# `{incident}` is replaced with an incident the test opens in the journal first.
NO_WORLD: dict[str, dict[str, Any]] = {
    "emergency-rollback": {"dry_run": True, "reason": "deploy test", "validate_recovery": False},
    "incident-escalation": {"incident_id": "{incident}", "max_wait_s": 1},
    "manual-rollback": {
        "reason": "deploy test",
        "dry_run": True,
        "authorized_by": "deploy test",
        "authorization_timeout_s": 1,
    },
    "security-incident": {"dry_run": True, "reason": "deploy test"},
    "rotate-credentials": {"dry_run": True},
    "account-compromise": {"user": "nobody", "dry_run": True},
    "security-lockdown": {"dry_run": True},
    "security-lockdown-lift": {"dry_run": True},
    "trigger-latency-probe": {},
    "rollback-drill": {"timeout_s": 1, "validate_after": False},
    "communication-drill": {"ack_wait_s": 0},
    "recovery-drill": {"take_backup_if_none": False},
    "contact-verification": {"probe_channels": False},
    "quarterly-review": {"incidents_since_days": 1},
    "incident-report": {"incident_id": "{incident}", "schedule_followups": False},
    "incident-followup": {"incident_id": "{incident}", "window": "24h"},
    "integrity-sweep-hourly": {"expectations": False, "sample_size": 1},
    "integrity-sweep-nightly": {"expectations": False, "max_chunks": 1},
    # no heartbeat ever on this server: nothing has gone silent, no page
    "watchdog-silent": {},
    "page-failed-emergency-run": {
        "flow_run_name": "rollback-inc-deploy-test",
        "state": "prefect.flow-run.Failed",
        "dry_run": True,
    },
}
# Needs the systems it validates: run by tests/e2e/test_deploy_world.py only.
NEEDS_WORLD = {"recovery-validation"}


# ------------------------------------------------------------------------------------------
# servers
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="module")
def api(home: Path) -> Iterator[str]:
    """A fresh Prefect server (nothing registered, no work pool)."""
    port = free_port()
    url = f"http://{LOOPBACK}:{port}/api"
    server_home = home / "prefect"
    server_home.mkdir()
    env = dict(
        os.environ,
        PREFECT_HOME=str(server_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_API_URL=url,
    )
    log = server_home / "server.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [PREFECT, "server", "start", "--host", LOOPBACK, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=server_home,
            env=env,
            start_new_session=True,
        )

    def healthy() -> bool:
        import httpx

        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_ready("prefect", proc, healthy, log, timeout=600)
        yield url
    finally:
        stop_pid(proc.pid)


@pytest.fixture(scope="module")
def s3(home: Path) -> Iterator[str]:
    """moto's S3 with the journal's bucket."""
    import boto3

    from sandbox.services import start_moto

    service = start_moto(home / "moto")
    try:
        boto3.client(
            "s3",
            endpoint_url=service.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        ).create_bucket(Bucket=BUCKET)
        yield service.url
    finally:
        service.stop()


@pytest.fixture(scope="module")
def config(home: Path, s3: str) -> str:
    """A configuration whose systems are all unreachable but S3 (the journal)."""
    closed = f"{LOOPBACK}:{free_port()}"
    host, port = closed.split(":")
    env = f"""
app_url = "http://{closed}"
[environments.{{env}}.heavydb]
host = "{host}"
port = {port}
password = "unused"
timeout_s = 2
[environments.{{env}}.mysql]
host = "{host}"
port = {port}
password = "unused"
timeout_s = 2
[environments.{{env}}.redis]
url = "redis://{closed}/0"
"""
    text = "".join(f"[environments.{e}]{env.replace('{env}', e)}" for e in ("blue", "green"))
    text += f"""
[traffic]
kind = "http"
url = "http://{closed}"
timeout_s = 2

[storage]
bucket = "{BUCKET}"
endpoint_url = "{s3}"
access_key_id = "testing"
secret_access_key = "testing"

[metrics]
prometheus_url = "http://{closed}"
timeout_s = 2

[channels.hook]
kind = "webhook"
url = "http://{closed}/hook"
timeout_s = 2

[[contacts]]
name = "Primary on-call"
role = "primary"
email = "oncall@example.com"
channels = ["hook"]
"""
    path = home / "tbs.toml"
    path.write_text(text)
    return str(path)


@contextlib.contextmanager
def prefect_api(url: str) -> Iterator[None]:
    """This test's Prefect API for the calling code, whatever the session's settings."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


def _run(api: str, coro_fn: Any) -> Any:
    async def go() -> Any:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            return await coro_fn(client)

    with prefect_api(api):
        return asyncio.run(go())


async def _snapshot(client: Any) -> dict[str, Any]:
    """What the server holds for our deployments, without ids and timestamps."""
    out: dict[str, Any] = {}
    for dep in await client.read_deployments():
        data = dep.model_dump(mode="json")
        for key in (
            "id", "created", "updated", "flow_id", "work_queue_id", "last_polled", "status",
            "created_by", "updated_by", "version_id",
        ):  # fmt: skip
            data.pop(key, None)
        gcl = data.pop("global_concurrency_limit", None)
        data["limit"] = gcl["limit"] if gcl else None
        data["schedules"] = sorted(
            (json.dumps(s["schedule"], sort_keys=True), s["active"], s["slug"])
            for s in data["schedules"]
        )
        autos = await client.read_resource_related_automations(f"prefect.deployment.{dep.id}")
        data["automations"] = sorted(json.dumps(_canonical(a), sort_keys=True) for a in autos)
        out[dep.name] = data
    return out


async def _ids(client: Any) -> dict[str, Any]:
    deps = {d.name: str(d.id) for d in await client.read_deployments()}
    schedules = {
        d.name: sorted(str(s.id) for s in d.schedules) for d in await client.read_deployments()
    }
    autos = sorted((a.name, str(a.id)) for a in await client.read_automations())
    return {"deployments": deps, "schedules": schedules, "automations": autos}


STATE: dict[str, Any] = {}


# ------------------------------------------------------------------------------------------
# deploy
# ------------------------------------------------------------------------------------------


def test_deploy_registers_the_pool_every_deployment_and_every_trigger(
    api: str, config: str
) -> None:
    report = deploy(api, config)
    assert report.work_pool_created and report.work_pool == "tbs-emergency"
    # one rollback at a time, everywhere: the global limit both rollback flows take
    assert report.concurrency_limits == {"tbs-rollback": "created"}
    assert [d.name for d in report.deployments] == list(PROJECT.names)
    assert {a.status for a in report.automations} == {"created"}

    async def check(client: Any) -> dict[str, Any]:
        pool = await client.read_work_pool("tbs-emergency")
        assert pool.type == "process"
        assert (await client.read_global_concurrency_limit_by_name("tbs-rollback")).limit == 1
        for dep in PROJECT.deployments:
            flow = __import__(dep.module, fromlist=[dep.function])
            full = f"{getattr(flow, dep.function).name}/{dep.name}"
            server = await client.read_deployment_by_name(full)
            assert server.work_pool_name == "tbs-emergency", full
            assert server.entrypoint == dep.entrypoint
            assert server.pull_steps == [{declared.ENTER_PROJECT_STEP: {"directory": str(ROOT)}}]
            assert server.job_variables == {
                "env": {"TBS_EMERGENCY_HOME": str(ROOT), "TBS_CONFIG": config}
            }
            assert list(server.tags) == list(dep.tags)
            assert server.parameters == dep.parameters
            if dep.concurrency is None:
                assert server.global_concurrency_limit is None, full
            else:
                assert server.global_concurrency_limit.limit == dep.concurrency.limit
                assert (
                    server.concurrency_options.collision_strategy.value
                    == dep.concurrency.collision_strategy
                )
            got = sorted(
                (s.schedule.cron, s.schedule.timezone, s.slug, s.active) for s in server.schedules
            )
            want = sorted((s.cron, s.timezone, s.slug, s.active) for s in dep.schedules)
            assert got == want, full
            autos = await client.read_resource_related_automations(
                f"prefect.deployment.{server.id}"
            )
            assert sorted(a.name for a in autos) == sorted(t.name for t in dep.triggers), full
            for a in autos:
                (action,) = a.actions
                assert action.deployment_id == server.id
                (trigger,) = [t for t in dep.triggers if t.name == a.name]
                assert set(a.trigger.expect) == set(trigger.expect)
                assert action.parameters == trigger.parameters
        return await _ids(client)

    STATE["ids"] = _run(api, check)
    assert len(STATE["ids"]["automations"]) == len(PROJECT.trigger_names())


def test_a_second_deploy_changes_nothing(api: str, config: str) -> None:
    """Through the command line this time; same deployments, schedules and automations."""
    before = _run(api, _snapshot)
    cli = str(Path(sys.executable).with_name("tbs-emergency"))
    done = subprocess.run(
        [cli, "deploy", "--api", api, "--config", config, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["work_pool"] == {"name": "tbs-emergency", "created": False}
    assert doc["concurrency_limits"] == {"tbs-rollback": "exists"}
    assert {a["status"] for a in doc["automations"]} == {"unchanged"}
    assert {d["status"] for d in doc["deployments"]} == {"updated"}
    assert doc["api"] == api and doc["config"] == config
    assert _run(api, _ids) == STATE["ids"]
    assert _run(api, _snapshot) == before


def test_prefect_deploy_all_with_the_documented_environment_registers_the_same(
    api: str, config: str, home: Path
) -> None:
    before = _run(api, _snapshot)
    cli_home = home / "prefect-cli"
    cli_home.mkdir(exist_ok=True)
    env = dict(
        os.environ,
        PREFECT_API_URL=api,
        PREFECT_HOME=str(cli_home),
        TBS_EMERGENCY_HOME=str(ROOT),
        TBS_CONFIG=config,
        PYTHONPATH=str(ROOT),
        COLUMNS="400",  # one line per message, to count them
    )
    done = subprocess.run(
        [PREFECT, "--no-prompt", "deploy", "--all"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("successfully created") == len(PROJECT.names)
    assert _run(api, _snapshot) == before
    # prefect deploy recreated the automations (new ids); ours are the same definitions:
    report = deploy(api, config)
    assert {a.status for a in report.automations} == {"unchanged"}
    assert len(_run(api, _ids)["automations"]) == len(PROJECT.trigger_names())


# ------------------------------------------------------------------------------------------
# the executor
# ------------------------------------------------------------------------------------------


class Executor:
    def __init__(self, api: str, config: str, log: Path, **kw: Any) -> None:
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = spawn(api, config, log, **kw)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid)
            self.proc = None


@pytest.fixture(scope="module")
def runner(api: str, config: str, home: Path) -> Iterator[Executor]:
    """The thread-mode executor; deploy ran before (the tests above, or here if run alone)."""
    deploy(api, config)
    executor = Executor(api, config, home / "runner.log", timeout=300)
    try:
        yield executor
    finally:
        executor.stop()


@pytest.fixture(scope="module")
def incident(config: str) -> str:
    """An incident in the journal, for the flows that work on one."""
    from tbs_emergency.config import load_settings
    from tbs_emergency.connectors import Connectors
    from tbs_emergency.domain.incident import Incident, incident_id, utcnow
    from tbs_emergency.domain.journal import Journal
    from tbs_emergency.domain.severity import Severity

    inc = Incident(
        # an id as the code makes them (flows refuse any other)
        id=incident_id("green", utcnow(), salt=f"deploytest-{uuid.uuid4().hex}"),
        severity=Severity.P2,
        trigger="deploy test",
        opened_at=utcnow(),
        decided_by="deploy test",
    )
    Journal(Connectors(load_settings(config)).store()).open(inc)
    return inc.id


def _params(name: str, incident: str) -> dict[str, Any]:
    raw = json.dumps(NO_WORLD[name]).replace("{incident}", incident)
    return {"params": json.loads(raw)} if NO_WORLD[name] else {}


async def _deployment_id(client: Any, name: str) -> Any:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    (dep,) = await client.read_deployments(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name]))
    )
    return dep.id


async def _wait_final(
    client: Any, ids: list[Any], timeout: float = RUN_TIMEOUT_S
) -> dict[Any, Any]:
    deadline = time.monotonic() + timeout
    final: dict[Any, Any] = {}
    while time.monotonic() < deadline and len(final) < len(ids):
        for run_id in ids:
            if run_id not in final:
                run = await client.read_flow_run(run_id)
                if run.state is not None and run.state.is_final():
                    final[run_id] = run
        await asyncio.sleep(0.5)
    return final


def test_the_executor_runs_every_deployment_that_needs_no_world(
    api: str, runner: Executor, incident: str
) -> None:
    assert set(NO_WORLD) | NEEDS_WORLD == set(PROJECT.names), "a deployment nobody runs"

    async def run_all(client: Any) -> dict[str, Any]:
        runs = {}
        for name in NO_WORLD:
            dep_id = await _deployment_id(client, name)
            runs[name] = await client.create_flow_run_from_deployment(
                dep_id, parameters=_params(name, incident)
            )
        final = await _wait_final(client, [r.id for r in runs.values()])
        return {name: final.get(r.id) for name, r in runs.items()}

    results = _run(api, run_all)
    # With no world to drill, the rollback drill runs and ends Failed `DrillFailed`, saying why
    # (a failed drill never ends green in the UI); every other deployment completes.
    drill = results.pop("rollback-drill")
    assert drill is not None and drill.state.is_failed(), drill
    assert drill.state.name == "DrillFailed", drill.state
    assert "could not complete" in (drill.state.message or ""), drill.state.message
    not_completed = {
        name: (run.state.type.value, run.state.message) if run else "not final"
        for name, run in results.items()
        if run is None or not run.state.is_completed()
    }
    assert not not_completed, f"{not_completed}\n{log_tail(runner.log, 40)}"
    log = runner.log.read_text(errors="replace")
    assert "runs in a process" not in log, "every run of this checkout executes in a thread"
    for run in results.values():
        assert run.labels.get("prefect.worker.name") == WORKER_NAME
    assert runner.alive()


def test_the_automations_start_their_runs_on_the_executor(
    api: str, runner: Executor, incident: str
) -> None:
    """The `tbs.incident.resolved` automation (it ran nowhere before) and the bench's."""
    from prefect.events.worker import EventsWorker

    ping = str(uuid.uuid4())
    # Prefect keeps one events worker per process, bound to the API it first saw (for a
    # self-hosted server its key holds no URL): drain it, so the events go to this server and
    # not to one an earlier test of the session used.
    EventsWorker.drain_all(timeout=5)
    try:
        _automations_start_runs(api, incident, ping)
    finally:
        # and not to this module's server, once it is gone, either
        EventsWorker.drain_all(timeout=5)


def _automations_start_runs(api: str, incident: str, ping: str) -> None:
    from prefect.events import emit_event

    with prefect_api(api):
        # The server's trigger service loads new automations within seconds; until then an
        # event can pass unseen, so each event is re-emitted until its run exists.
        async def find(client: Any) -> dict[str, Any]:
            """The runs the automations created for this test's events."""
            from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

            wanted = {
                "incident-report": ("incident_id", incident),
                declared.PROBE: ("event_id", ping),
            }
            found: dict[str, Any] = {}
            for name, (key, value) in wanted.items():
                dep_id = await _deployment_id(client, name)
                runs = await client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep_id]))
                )
                for run in runs:
                    params = (run.parameters or {}).get("params") or {}
                    by = run.created_by.type if run.created_by else None
                    if by == "AUTOMATION" and params.get(key) == value:
                        found[name] = run
            return found

        deadline = time.monotonic() + 120
        found: dict[str, Any] = {}
        while time.monotonic() < deadline and len(found) < 2:
            if "incident-report" not in found:
                emit_event(
                    declared.RESOLVED_EVENT,
                    resource={
                        "prefect.resource.id": f"tbs.incident.{incident}",
                        "tbs.incident.id": incident,
                    },
                )
            if "trigger-latency-probe" not in found:
                emit_event(
                    declared.BENCH_EVENT,
                    resource={"prefect.resource.id": "tbs.bench.deploy-test"},
                    payload={"sent_at": time.time()},
                    id=uuid.UUID(ping),
                )
            time.sleep(3)
            found = _run(api, find)
    assert set(found) == {"incident-report", "trigger-latency-probe"}, log_tail(runner.log)
    final = _run(api, lambda c: _wait_final(c, [r.id for r in found.values()]))
    assert all(r.state.is_completed() for r in final.values()), final


def test_a_stale_rollback_is_cancelled_not_run(api: str, runner: Executor) -> None:
    from prefect.states import Scheduled

    due = datetime.now(UTC) - timedelta(seconds=900)

    async def go(client: Any) -> Any:
        dep_id = await _deployment_id(client, declared.ROLLBACK)
        run = await client.create_flow_run_from_deployment(
            dep_id,
            parameters={"params": {"dry_run": True, "reason": "stale"}},
            state=Scheduled(scheduled_time=due),
        )
        final = (await _wait_final(client, [run.id], 120))[run.id]
        return final, [s.type.value for s in await client.read_flow_run_states(run.id)]

    run, history = _run(api, go)
    assert run.state.is_cancelled(), run.state
    assert "max-lateness" in (run.state.message or "")
    assert "RUNNING" not in history and "PENDING" not in history, history


def _register_extra(api: str, name: str, entrypoint: str, directory: str) -> None:
    """A deployment outside prefect.yaml, in the same pool, for what its flows cannot show."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    flow = load_flow_from_entrypoint(str(ROOT / entrypoint), use_placeholder_flow=False)
    dep = _deployment_class()(
        name=name,
        flow_name=flow.name,
        entrypoint=entrypoint,
        work_pool_name="tbs-emergency",
        storage=PullSteps([{declared.ENTER_PROJECT_STEP: {"directory": directory}}]),
        job_variables={},
    )
    dep._parameter_openapi_schema = parameter_schema(flow)
    with prefect_api(api):
        dep.apply()


def test_a_running_run_is_cancelled_on_request(api: str, runner: Executor) -> None:
    from prefect.states import Cancelling

    _register_extra(api, "sleepy", "tests/integration/test_deploy_flows.py:sleepy", str(ROOT))

    async def go(client: Any) -> Any:
        run = await client.create_flow_run_from_deployment(
            await _deployment_id(client, "sleepy"), parameters={"seconds": 300}
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            current = await client.read_flow_run(run.id)
            if current.state is not None and current.state.is_running():
                break
            await asyncio.sleep(0.25)
        await client.set_flow_run_state(run.id, Cancelling(message="deploy test"), force=True)
        return (await _wait_final(client, [run.id], 90)).get(run.id)

    run = _run(api, go)
    assert run is not None and run.state.is_cancelled(), (run and run.state, log_tail(runner.log))
    assert runner.alive(), "cancelling a thread run must not stop the runner"


def test_a_run_whose_pull_step_cannot_find_the_project_fails_with_the_reason(
    api: str, runner: Executor, home: Path
) -> None:
    probe = PROJECT.get(declared.PROBE).entrypoint
    _register_extra(api, "probe-missing-project", probe, str(home / "no-such-checkout"))

    async def go(client: Any) -> Any:
        run = await client.create_flow_run_from_deployment(
            await _deployment_id(client, "probe-missing-project")
        )
        return (await _wait_final(client, [run.id], 120))[run.id]

    run = _run(api, go)
    assert run.state.is_failed(), run.state
    assert "no-such-checkout does not exist" in (run.state.message or ""), run.state.message
    STATE["pull_failure"] = run.state.message


def _runs_in_processes(api: str, executor: Executor, incident: str) -> None:
    """The probe, a journaled dry run and the project-less probe, executed by `executor`
    (one process each): the same outcomes as in threads."""

    async def go(client: Any) -> dict[str, Any]:
        runs = {
            name: await client.create_flow_run_from_deployment(
                await _deployment_id(client, name),
                parameters=_params(name, incident) if name in NO_WORLD else {},
            )
            for name in (declared.PROBE, declared.ROLLBACK, "probe-missing-project")
        }
        final = await _wait_final(client, [r.id for r in runs.values()])
        return {name: final.get(r.id) for name, r in runs.items()}

    results = _run(api, go)
    tail = log_tail(executor.log, 40)
    assert results[declared.PROBE] and results[declared.PROBE].state.is_completed(), tail
    assert results[declared.ROLLBACK] and results[declared.ROLLBACK].state.is_completed(), tail
    failed = results["probe-missing-project"]
    assert failed and failed.state.is_failed(), tail
    assert "does not exist" in (failed.state.message or ""), failed.state.message


def test_prefect_worker_start_executes_the_same_deployments(
    api: str, runner: Executor, home: Path, incident: str
) -> None:
    runner.stop()  # one executor per pool at a time: the worker gets every run
    log = home / "prefect-worker.log"
    cli_home = home / "prefect-cli"
    cli_home.mkdir(exist_ok=True)
    env = dict(os.environ, PREFECT_API_URL=api, PREFECT_HOME=str(cli_home))
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "tbs-emergency"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=home,  # not the project: the pull step must find it
            env=env,
            start_new_session=True,
        )
    worker = Executor.__new__(Executor)
    worker.log, worker.proc = log, proc
    try:
        wait_ready("worker", proc, lambda: "started!" in log.read_text(errors="replace"), log, 120)
        _runs_in_processes(api, worker, incident)
    finally:
        worker.stop()


def test_the_runners_process_mode_executes_the_same_deployments(
    api: str, config: str, home: Path, incident: str
) -> None:
    executor = Executor(api, config, home / "runner-process.log", start="process", timeout=300)
    try:
        _runs_in_processes(api, executor, incident)
    finally:
        executor.stop()
    assert "start=process" in (home / "runner-process.log").read_text()
