"""prefect.yaml is the one declaration: what it declares, and the code that reads it.

No Prefect server here (tests/integration/test_deploy.py registers it on a real one).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import pytest
import yaml
from typer.testing import CliRunner

from deployments import declared as d
from deployments.deploy import (
    DeployError,
    deploy_environment,
    pull_steps,
    resolve_env,
    schedule_for,
    triggers_for,
)
from deployments.runner import (
    PRELOAD,
    ThreadRun,
    _import_flow,
    _job_env,
    _patch_engine,
    _worker_class,
    lateness_s,
    orphaned,
)
from deployments.steps import (
    ProjectNotFound,
    check_environment,
    check_project,
    enter_project,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PROJECT = d.load()


# ------------------------------------------------------------------------------------------
# prefect.yaml
# ------------------------------------------------------------------------------------------


def test_prefect_yaml_is_the_only_declaration() -> None:
    assert PROJECT.path == ROOT / "prefect.yaml"
    assert not (ROOT / "deployments" / "specs.py").exists()
    assert not list((ROOT / "deployments").glob("*.yaml")), "a second copy of deployments"


@pytest.mark.parametrize("name", PROJECT.names)
def test_every_entrypoint_is_a_flow_of_this_project(name: str) -> None:
    dep = PROJECT.get(name)
    assert (ROOT / dep.path).is_file(), dep.entrypoint
    flow = _import_flow(dep.entrypoint)
    assert flow.fn.__module__ == dep.module and flow.fn.__name__ == dep.function
    assert dep.work_pool == "tbs-emergency"


def test_names_other_code_uses_are_declared() -> None:
    names = set(PROJECT.names)
    for const in (d.ROLLBACK, d.ESCALATION, d.MANUAL, d.PROBE, *d.SECURITY):
        assert const in names
    assert {n for n in names if "security" in PROJECT.get(n).tags} == set(d.SECURITY)
    expected = {e for dep in PROJECT.deployments for t in dep.triggers for e in t.expect}
    assert {
        d.ROLLBACK_EVENT,
        d.OPENED_EVENT,
        d.RESOLVED_EVENT,
        d.BENCH_EVENT,
        d.SECURITY_ALERT_EVENT,
        d.HEARTBEAT_EVENT,
        *d.RUN_FAILED_EVENTS,
    } == expected


def test_every_run_enters_the_project_with_its_configuration() -> None:
    raw = yaml.safe_load(PROJECT.path.read_text())
    assert raw["build"] is None and raw["push"] is None
    assert PROJECT.pull == ({d.ENTER_PROJECT_STEP: {"directory": "{{ $TBS_EMERGENCY_HOME }}"}},)
    for dep in PROJECT.deployments:
        assert "pull" not in dep.spec, dep.name
        assert dep.job_env == {
            "TBS_EMERGENCY_HOME": "{{ $TBS_EMERGENCY_HOME }}",
            "TBS_CONFIG": "{{ $TBS_CONFIG }}",
        }, dep.name


def test_triggers_are_valid_prefect_triggers_the_flows_accept() -> None:
    from flows.emergency_rollback import RollbackParams
    from flows.escalation import EscalationParams
    from flows.incident_report import IncidentReportParams
    from flows.latency_probe import ProbeParams
    from flows.page_failed_run import PageParams
    from flows.security_incident import SecurityIncidentParams
    from flows.watchdog_silent import SilentParams

    models = {
        d.ROLLBACK: RollbackParams,
        d.ESCALATION: EscalationParams,
        d.SECURITY_INCIDENT: SecurityIncidentParams,
        d.PROBE: ProbeParams,
        "incident-report": IncidentReportParams,
        d.WATCHDOG_SILENT: SilentParams,
        d.PAGE_FAILED: PageParams,
    }
    with_triggers = {dep.name for dep in PROJECT.deployments if dep.triggers}
    assert with_triggers == set(models)
    for name, model in models.items():
        dep = PROJECT.get(name)
        (trigger,) = triggers_for(dep)
        assert trigger.name == dep.triggers[0].name
        assert set(trigger.parameters["params"]) <= set(model.model_fields), name
    assert len(set(PROJECT.trigger_names())) == len(PROJECT.trigger_names())


def test_a_silent_watchdog_pages_within_a_minute() -> None:
    dep = PROJECT.get(d.WATCHDOG_SILENT)
    (trigger,) = triggers_for(dep)
    assert trigger.posture == "Proactive" and trigger.expect == {d.HEARTBEAT_EVENT}
    assert trigger.within.total_seconds() == 60 and trigger.threshold == 1


def test_the_rollback_runs_once_per_incident_and_one_at_a_time() -> None:
    dep = PROJECT.get(d.ROLLBACK)
    (t,) = dep.triggers
    assert t.posture == "Reactive" and t.threshold == 1
    assert t.for_each == ("prefect.resource.id",) and t.within_s >= 60
    assert t.match == {"prefect.resource.id": "tbs.incident.*"}
    # one at a time: the global limit tbs-rollback inside the flow, not a deployment limit
    # (whose lease a paused manual rollback lost); see test_rollback_honesty
    assert dep.concurrency is None
    params = t.parameters["params"]
    assert params["incident_id"] == "{{ event.resource['tbs.incident.id'] }}"
    assert params["config_path"] == "", "the run's TBS_CONFIG, recorded by deploy"


def test_a_security_alert_starts_one_incident_response_per_resource() -> None:
    dep = PROJECT.get(d.SECURITY_INCIDENT)
    (t,) = dep.triggers
    assert t.expect == ("tbs.security.alert",) and t.posture == "Reactive" and t.threshold == 1
    assert t.for_each == ("prefect.resource.id",) and t.within_s >= 60
    assert dep.concurrency is not None and dep.concurrency.limit == 1
    for name in d.SECURITY:
        limit = PROJECT.get(name).concurrency
        assert (limit is None) == (name == d.ACCOUNT), name


def _next(cron: str, n: int) -> list[dt.datetime]:
    from prefect.server.schemas.schedules import CronSchedule

    start = dt.datetime(2025, 1, 25, tzinfo=dt.UTC)  # after the runbook's "Last Updated"
    return asyncio.run(CronSchedule(cron=cron, timezone="UTC").get_dates(n=n, start=start))


def test_schedules_are_the_runbooks() -> None:
    scheduled = {dep.name: dep.schedules for dep in PROJECT.deployments if dep.schedules}
    slugs = [s.slug for ss in scheduled.values() for s in ss]
    assert all(slugs) and len(set(slugs)) == len(slugs), "a redeploy patches them by slug"
    for name, schedules in scheduled.items():
        (s,) = schedules
        assert s.timezone == "UTC" and s.active and s.cron, name
    drills = ("rollback-drill", "communication-drill", "recovery-drill")
    for name in drills:  # "Monthly Emergency Drills", on the 24th
        runs = _next(scheduled[name][0].cron or "", 8)
        assert all(r.day == 24 for r in runs) and [r.month for r in runs] == list(range(2, 10))
    firsts = {_next(scheduled[n][0].cron or "", 1)[0] for n in drills}
    assert len(firsts) == 3, "the monthly drills do not start together"
    weekly = _next(scheduled["contact-verification"][0].cron or "", 5)
    assert {(b - a).days for a, b in itertools.pairwise(weekly)} == {7}
    quarterly = _next(scheduled["quarterly-review"][0].cron or "", 4)
    assert [r.month for r in quarterly] == [4, 7, 10, 1]
    for name in ("recovery-validation", "incident-report", "incident-followup", d.ROLLBACK):
        assert name not in scheduled, "on demand or event driven"


def test_the_integrity_sweeps_change_nothing_and_never_pile_up() -> None:
    for name, full in (("integrity-sweep-hourly", False), ("integrity-sweep-nightly", True)):
        dep = PROJECT.get(name)
        assert dep.parameters["params"]["full"] is full
        assert dep.concurrency == d.Concurrency(limit=1, collision_strategy="CANCEL_NEW")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda doc: doc["deployments"].append(dict(doc["deployments"][0])), "declared twice"),
        (lambda doc: doc["deployments"][0].pop("work_pool"), "work_pool.name"),
        (lambda doc: doc["deployments"][0]["triggers"][0].pop("name"), "needs a name"),
        (lambda doc: doc["deployments"][0].update(entrypoint="flows/x.py"), "entrypoint"),
        (lambda doc: doc.update(deployments=[]), "empty"),
    ],
)
def test_an_unusable_prefect_yaml_names_the_problem(
    tmp_path: Path, change: Any, message: str
) -> None:
    doc = yaml.safe_load(PROJECT.path.read_text())
    change(doc)
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(d.DeclarationError, match=message):
        d.load(path)


# ------------------------------------------------------------------------------------------
# deploy: the pieces (the server side is tests/integration/test_deploy.py)
# ------------------------------------------------------------------------------------------


def test_deploy_writes_the_project_directory_into_the_pull_step() -> None:
    for dep in PROJECT.deployments:
        assert pull_steps(PROJECT, dep) == [{d.ENTER_PROJECT_STEP: {"directory": str(ROOT)}}]
    # the loaded declaration itself is left as written
    assert PROJECT.pull[0][d.ENTER_PROJECT_STEP]["directory"] == "{{ $TBS_EMERGENCY_HOME }}"


def test_deploy_resolves_env_templates_from_its_own_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TBS_CONFIG", "/elsewhere/tbs.toml")
    env = deploy_environment(ROOT, None)
    assert env["TBS_EMERGENCY_HOME"] == str(ROOT) and "TBS_CONFIG" not in env
    job = resolve_env(PROJECT.get(d.ROLLBACK).job_variables, env)
    assert job == {"env": {"TBS_EMERGENCY_HOME": str(ROOT)}}, "an unset config is left out"
    env = deploy_environment(ROOT, "/etc/tbs.toml")
    job = resolve_env(PROJECT.get(d.ROLLBACK).job_variables, env)
    assert job == {"env": {"TBS_EMERGENCY_HOME": str(ROOT), "TBS_CONFIG": "/etc/tbs.toml"}}
    assert resolve_env("a {{ $NOPE }} b {{ $X }}", {"X": "1"}) == "a {{ $NOPE }} b 1"
    assert resolve_env(["{{ $NOPE }}", 3, "{{ event.id }}"], {}) == [3, "{{ event.id }}"]


def test_schedule_entries_become_what_prefect_deploy_makes() -> None:
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    out = schedule_for({"cron": "0 3 24 * *", "timezone": "UTC", "active": True, "slug": "x"})
    assert out == {
        "schedule": CronSchedule(cron="0 3 24 * *", timezone="UTC"),
        "active": True,
        "slug": "x",
    }
    assert isinstance(schedule_for({"interval": 60})["schedule"], IntervalSchedule)
    with pytest.raises(DeployError):
        schedule_for({"timezone": "UTC"})


def test_deploy_needs_an_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tbs_emergency.cli import app

    monkeypatch.chdir(tmp_path)
    for var in ("PREFECT_API_URL", "TBS_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))  # no profile's URL
    result = CliRunner().invoke(app, ["deploy"])
    assert result.exit_code == 2
    assert "no Prefect API" in result.output


def test_deploy_against_an_unreachable_api_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sandbox.proc import free_port
    from tbs_emergency.cli import app

    # whatever configuration an earlier test of the session left in the environment
    monkeypatch.delenv("TBS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    api = f"http://127.0.0.1:{free_port()}/api"
    result = CliRunner().invoke(app, ["deploy", "--api", api])
    assert result.exit_code == 1, (result.output, result.exception)
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), repr(result.exception)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert lines == [f"error: Prefect API {api} is unreachable: All connection attempts failed"]


# ------------------------------------------------------------------------------------------
# the pull step
# ------------------------------------------------------------------------------------------


def test_the_pull_step_accepts_the_project_only(tmp_path: Path) -> None:
    assert check_project(str(ROOT)) == ROOT
    cases = {
        "": "empty string",
        "{{ $TBS_EMERGENCY_HOME }}": "unresolved template",
        "relative/dir": "not an absolute path",
        str(tmp_path / "missing"): "does not exist",
        str(tmp_path): "not the tbs-emergency project",
    }
    for directory, reason in cases.items():
        with pytest.raises(ProjectNotFound, match=reason):
            check_project(directory)


def test_the_pull_step_checks_the_runs_configuration(tmp_path: Path) -> None:
    config = tmp_path / "tbs.toml"
    config.write_text("")
    check_environment({})
    check_environment({"TBS_CONFIG": str(config)})
    with pytest.raises(ProjectNotFound, match="unresolved template"):
        check_environment({"TBS_CONFIG": "{{ $TBS_CONFIG }}"})
    with pytest.raises(ProjectNotFound, match="no such file"):
        check_environment({"TBS_CONFIG": str(tmp_path / "nope.toml")})


def test_the_pull_step_fails_instead_of_reporting_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    monkeypatch.delenv("TBS_CONFIG", raising=False)
    here = Path.cwd()
    with pytest.raises(ProjectNotFound):
        enter_project("")
    assert Path.cwd() == here
    try:
        assert enter_project(str(ROOT)) == {"directory": str(ROOT)}
        assert Path.cwd() == ROOT
    finally:
        os.chdir(here)


# ------------------------------------------------------------------------------------------
# the runner
# ------------------------------------------------------------------------------------------


def test_the_runner_leaves_prefects_process_worker_alone() -> None:
    from prefect.workers.base import BaseWorker
    from prefect.workers.process import ProcessWorker

    worker_class = _worker_class()
    assert issubclass(worker_class, ProcessWorker) and worker_class.type == "process"
    assert BaseWorker.get_worker_class_from_type("process") is ProcessWorker


def test_the_engine_patch_point_exists() -> None:
    """Thread runs need Prefect's engine to ask `_termination_intent` (see runner.py)."""
    import prefect.flow_engine as engine
    import prefect.runner._starter_direct  # noqa: F401  (the executor pieces used exist)
    from prefect.runner._flow_run_executor import FlowRunExecutorContext
    from prefect.runner._process_manager import ProcessHandle

    assert callable(engine._termination_intent)
    _patch_engine()
    assert engine._termination_intent() is None
    assert FlowRunExecutorContext and ProcessHandle
    assert "prefect.flow_engine" in PRELOAD


def _run(**kw: Any) -> SimpleNamespace:
    base: dict[str, Any] = {
        "id": uuid4(),
        "labels": {"prefect.worker.name": "tbs-emergency-runner"},
        "infrastructure_pid": None,
        "expected_start_time": None,
        "next_scheduled_start_time": None,
        "job_variables": {},
    }
    base.update(kw)
    return SimpleNamespace(**base)


def test_lateness_is_measured_from_the_original_schedule() -> None:
    now = dt.datetime(2025, 1, 24, 10, 0, tzinfo=dt.UTC)
    due = now - dt.timedelta(seconds=400)
    later = now - dt.timedelta(seconds=5)
    assert lateness_s(_run(expected_start_time=due, next_scheduled_start_time=later), now) == 400
    assert lateness_s(_run(next_scheduled_start_time=later), now) == 5
    assert lateness_s(_run(), now) is None


def test_orphans_are_runs_of_this_worker_whose_process_is_gone() -> None:
    me = os.getpid()
    assert orphaned(_run(), "tbs-emergency-runner")  # claimed, never started
    assert orphaned(_run(infrastructure_pid=str(me)), "tbs-emergency-runner", my_pid=me)
    assert not orphaned(_run(infrastructure_pid=str(os.getppid())), "tbs-emergency-runner")
    assert not orphaned(
        _run(labels={"prefect.worker.name": "ProcessWorker 1"}), "tbs-emergency-runner"
    )


def _deployment(**kw: Any) -> SimpleNamespace:
    base: dict[str, Any] = {
        "entrypoint": "flows/latency_probe.py:trigger_latency_probe",
        "pull_steps": [{d.ENTER_PROJECT_STEP: {"directory": str(ROOT)}}],
        "job_variables": {"env": {"TBS_EMERGENCY_HOME": str(ROOT)}},
    }
    base.update(kw)
    return SimpleNamespace(**base)


def _configuration(deployment: Any, env: dict[str, str] | None = None) -> Any:
    from prefect.workers.process import ProcessJobConfiguration

    cfg = ProcessJobConfiguration(env=env if env is not None else dict(os.environ))
    cfg._related_objects = {"deployment": deployment}
    return cfg


@pytest.mark.parametrize(
    ("deployment", "env", "outcome"),
    [
        (_deployment(), None, "thread"),
        (
            _deployment(pull_steps=[{d.ENTER_PROJECT_STEP: {"directory": "{{ $H }}"}}]),
            {"H": str(ROOT)},
            "thread",
        ),
        (
            _deployment(pull_steps=[{d.ENTER_PROJECT_STEP: {"directory": "/nonexistent/x"}}]),
            None,
            "failure:does not exist",
        ),
        (
            _deployment(pull_steps=[{d.ENTER_PROJECT_STEP: {"directory": "{{ $UNSET_X }}"}}]),
            {},
            "failure:empty string",
        ),
        (_deployment(), {"TBS_CONFIG": "{{ $TBS_CONFIG }}"}, "failure:unresolved template"),
        (
            _deployment(pull_steps=[{"prefect.deployments.steps.git_clone": {"repository": "x"}}]),
            None,
            "process:git_clone",
        ),
        (
            _deployment(job_variables={"env": {"TBS_RUNNER_TEST_VAR": "other"}}),
            None,
            "process:TBS_RUNNER_TEST_VAR",
        ),
        (_deployment(entrypoint="/abs/flow.py:f"), None, "process:cannot import"),
    ],
)
def test_a_run_executes_in_a_thread_only_when_it_would_run_the_same(
    deployment: Any, env: dict[str, str] | None, outcome: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TBS_EMERGENCY_HOME", str(ROOT))
    monkeypatch.delenv("TBS_CONFIG", raising=False)
    worker = _worker_class()("tbs-emergency", project_root=ROOT)
    plan = asyncio.run(worker.plan(_run(), _configuration(deployment, env)))
    kind, _, detail = outcome.partition(":")
    if kind == "thread":
        assert plan.flow is not None and plan.flow.name == "trigger_latency_probe", plan
    elif kind == "failure":
        assert plan.flow is None and plan.failure and detail in plan.failure, plan
    else:
        assert plan.flow is None and plan.failure is None and detail in plan.why, plan


def test_job_variables_of_the_run_override_the_deployments() -> None:
    dep = _deployment(job_variables={"env": {"A": "1", "B": "2"}})
    run = _run(job_variables={"env": {"B": "3"}})
    assert _job_env(dep, run) == {"A": "1", "B": "3"}


def test_a_thread_run_reports_its_exit_like_a_process() -> None:
    class Engineless:
        name = "x"

    run = ThreadRun(Engineless(), _run())
    assert run.pid == os.getpid() and run.returncode is None and not run.is_alive()
    assert run.cancel() is False  # not started: nothing to cancel
