"""Register prefect.yaml with a Prefect server: `tbs-emergency deploy` and `deploy()`.

What it does, in order:

1. the work pool (prefect.yaml's, or `pool`) is created as a `process` pool if missing, with
   Prefect's default process job template (what `prefect work-pool create --type process` makes);
2. every deployment of prefect.yaml is registered the way `prefect deploy --all` registers it:
   the same `RunnerDeployment` built from the same fields (entrypoint, parameters and their
   schema, tags, description, version, concurrency limit and collision strategy, schedules,
   work pool and job variables), applied with the same call; prefect.yaml's `{{ $VAR }}` in
   the work pool's job variables are resolved as `prefect deploy` resolves them, with
   TBS_EMERGENCY_HOME = the project directory and TBS_CONFIG = the config given here;
3. the pull step (`deployments.steps.enter_project`) gets the literal project directory, and the
   job variables' env TBS_EMERGENCY_HOME and TBS_CONFIG: a run knows where its code and its
   configuration are whoever executes it;
4. each trigger becomes the automation `prefect deploy` would create (owned by its deployment),
   but reconciled instead of deleted and recreated: an unchanged automation keeps its id and
   its state. Why: `prefect deploy` deletes a deployment's automations and creates them again,
   so an event arriving in between is lost, and the reactive triggers forget their `for_each`
   buckets (a redeploy during an incident could start a second rollback for it).

Rerunning changes nothing: deployments are updated in place (same ids), schedules carry slugs
(so the server patches them instead of replacing them), automations are left as they are.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from deployments.declared import (
    ENTER_PROJECT_STEP,
    ROOT,
    DeclarationError,
    Declared,
    Project,
    load,
)
from deployments.steps import CONFIG_VAR, HOME_VAR

POOL_TYPE = "process"


class DeployError(RuntimeError):
    """A deploy that cannot be done; `code` is the exit code (1: a system, 2: bad input)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class AutomationRecord:
    name: str
    id: str
    deployment: str
    status: str  # created | updated | unchanged | deleted


@dataclass
class DeploymentRecord:
    name: str
    flow_name: str
    id: str
    status: str  # created | updated
    entrypoint: str
    work_pool: str
    schedules: list[str] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    concurrency_limit: int | None = None
    collision_strategy: str | None = None


@dataclass
class DeployReport:
    api_url: str
    work_pool: str
    work_pool_created: bool
    project_dir: str
    config_path: str | None
    deployments: list[DeploymentRecord] = field(default_factory=list)
    automations: list[AutomationRecord] = field(default_factory=list)
    # global concurrency limits the flows take (name -> created | exists)
    concurrency_limits: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "api": self.api_url,
            "concurrency_limits": dict(self.concurrency_limits),
            "work_pool": {"name": self.work_pool, "created": self.work_pool_created},
            "project_dir": self.project_dir,
            "config": self.config_path,
            "deployments": [asdict(d) for d in self.deployments],
            "automations": [asdict(a) for a in self.automations],
        }

    def lines(self) -> list[str]:
        pool = "created" if self.work_pool_created else "exists"
        out = [
            f"api: {self.api_url}",
            f"work pool: {self.work_pool} ({POOL_TYPE}, {pool})",
            f"project: {self.project_dir}; config: {self.config_path or '(none: ./tbs.toml)'}",
            f"deployments ({len(self.deployments)}):",
        ]
        for d in self.deployments:
            extra = []
            if d.concurrency_limit is not None:
                extra.append(f"limit {d.concurrency_limit} {d.collision_strategy}")
            extra += [f"schedule {s}" for s in d.schedules]
            extra += [f"trigger {t!r}" for t in d.triggers]
            out.append(
                f"  {d.flow_name}/{d.name} {d.status}" + (f" ({'; '.join(extra)})" if extra else "")
            )
        for name, status in self.concurrency_limits.items():
            out.append(f"global concurrency limit: {name} ({status})")
        live = [a for a in self.automations if a.status != "deleted"]
        out.append(f"automations ({len(live)}):")
        out += [f"  {a.name!r} -> {a.deployment} {a.status}" for a in self.automations]
        return out


# ------------------------------------------------------------------------------------------
# templating: `{{ $VAR }}` the way `prefect deploy` resolves it, from a given environment
# ------------------------------------------------------------------------------------------

_ENV_PLACEHOLDER = re.compile(r"\{\{\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_DROP = object()


def resolve_env(value: Any, env: Mapping[str, str]) -> Any:
    """`{{ $VAR }}` replaced from `env` (not os.environ: the deploy's own values win). A value
    that is only an unset placeholder is dropped (an unset TBS_CONFIG must not travel as the
    literal template); text around an unset placeholder is kept as written, as Prefect does."""
    if isinstance(value, str):
        whole = _ENV_PLACEHOLDER.fullmatch(value.strip())
        if whole:
            return env.get(whole.group(1), _DROP)
        return _ENV_PLACEHOLDER.sub(lambda m: env.get(m.group(1), m.group(0)), value)
    if isinstance(value, dict):
        out = {k: resolve_env(v, env) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _DROP}
    if isinstance(value, list):
        return [v for v in (resolve_env(x, env) for x in value) if v is not _DROP]
    return value


def deploy_environment(project_dir: Path, config_path: str | None) -> dict[str, str]:
    """The environment prefect.yaml's templates are resolved from: this process's, with the
    project directory and the config this deploy records."""
    env = dict(os.environ)
    env[HOME_VAR] = str(project_dir)
    if config_path:
        env[CONFIG_VAR] = config_path
    else:
        env.pop(CONFIG_VAR, None)
    return env


def pull_steps(project: Project, declared: Declared) -> list[dict[str, Any]]:
    """The deployment's pull steps with the project directory written in (not a template)."""
    steps = copy.deepcopy(declared.spec.get("pull", list(project.pull)))
    for step in steps:
        if ENTER_PROJECT_STEP in step:
            inputs = dict(step[ENTER_PROJECT_STEP] or {})
            inputs["directory"] = str(project.root)
            step[ENTER_PROJECT_STEP] = inputs
    return steps


# ------------------------------------------------------------------------------------------
# the pieces `prefect deploy` builds a deployment from
# ------------------------------------------------------------------------------------------


def schedule_for(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A prefect.yaml schedule entry as `prefect deploy` turns it into a deployment schedule."""
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

    tz = spec.get("timezone")
    schedule: Any
    if spec.get("cron"):
        kwargs = {"cron": spec["cron"], "timezone": tz, "day_or": spec.get("day_or")}
        schedule = CronSchedule(**{k: v for k, v in kwargs.items() if v is not None})
    elif spec.get("interval") is not None:
        interval = spec["interval"]
        if isinstance(interval, int | float):
            interval = timedelta(seconds=interval)
        kwargs = {"interval": interval, "anchor_date": spec.get("anchor_date"), "timezone": tz}
        schedule = IntervalSchedule(**{k: v for k, v in kwargs.items() if v is not None})
    elif spec.get("rrule"):
        schedule = RRuleSchedule(rrule=spec["rrule"], timezone=tz)
    else:
        raise DeployError(f"schedule {dict(spec)} has no cron, interval or rrule", 2)
    out: dict[str, Any] = {"schedule": schedule}
    for key in ("active", "slug", "replaces"):
        if spec.get(key) is not None:
            out[key] = spec[key]
    if spec.get("parameters"):
        out["parameters"] = spec["parameters"]
    return out


def triggers_for(declared: Declared) -> list[Any]:
    """prefect.yaml's trigger entries as the deployment triggers `prefect deploy` validates."""
    from prefect.events import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(DeploymentTriggerTypes)
    return [adapter.validate_python(copy.deepcopy(t.spec)) for t in declared.triggers]


def load_flow(project: Project, declared: Declared) -> Any:
    """The flow object of an entrypoint. Our own checkout: imported by module name, so a process
    that already imported the flows (the world, a test) does not load a second copy; another
    directory: loaded from its file, as `prefect deploy` does."""
    if project.root == ROOT:
        module = importlib.import_module(declared.module)
        return getattr(module, declared.function)
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(
        f"{project.root / declared.path}:{declared.function}", use_placeholder_flow=False
    )


def _deployment_class() -> Any:
    from prefect.deployments.runner import RunnerDeployment

    class _TbsDeployment(RunnerDeployment):
        """A RunnerDeployment whose apply leaves the deployment's automations alone:
        `deploy()` reconciles them afterwards (see the module docstring)."""

        async def _create_triggers(self, deployment_id: UUID, client: Any) -> None:
            return None

        def _create_triggers_sync(self, deployment_id: UUID, client: Any) -> None:
            return None

    return _TbsDeployment


class PullSteps:
    """What RunnerDeployment records as the deployment's pull steps: the same shim
    `prefect deploy` hands it (prefect.cli.deploy._storage._PullStepStorage), written out
    because that one is private to Prefect's command line."""

    def __init__(self, steps: list[dict[str, Any]]) -> None:
        self.pull_steps = steps
        self._base_path = Path.cwd()

    def set_base_path(self, path: Path) -> None:
        self._base_path = path

    @property
    def destination(self) -> Path:
        return self._base_path

    @property
    def pull_interval(self) -> int:
        return 60

    async def pull_code(self) -> None:
        return None

    def to_pull_step(self) -> list[dict[str, Any]]:
        return self.pull_steps

    def __eq__(self, other: object) -> bool:
        return self.pull_steps == getattr(other, "pull_steps", None)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value


# ------------------------------------------------------------------------------------------
# automations
# ------------------------------------------------------------------------------------------


def _canonical(automation: Any) -> dict[str, Any]:
    """An automation's definition, for comparison: ids and ownership left out (the server
    assigns trigger ids, and does not return the owner)."""
    from prefect.events.schemas.automations import AutomationCore

    data = AutomationCore.model_validate(automation.model_dump()).model_dump(mode="json")
    data.pop("owner_resource", None)

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            # sets (a trigger's `expect`, `after`, `for_each`) serialize in hash order
            return {
                k: sorted(v) if k in ("expect", "after", "for_each") else strip(v)
                for k, v in value.items()
                if k != "id"
            }
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(data)


def _deployed_by_us(name: str, deployment_name: str) -> bool:
    """Whether an automation that runs this deployment but is no longer declared was made by a
    deploy (then it goes, as `prefect deploy` would delete it) or by a person (then it stays).
    The API does not say which automations a deployment owns, so the names tell: ours start
    with "tbs: ", Prefect names unnamed triggers "<deployment>__automation_<n>"."""
    return name.startswith("tbs: ") or name.startswith(f"{deployment_name}__automation_")


async def reconcile_automations(
    client: Any, deployment_id: UUID, deployment_name: str, triggers: list[Any]
) -> list[AutomationRecord]:
    """Make the deployment's automations exactly its triggers, touching only those that
    differ: matched by name, compared by definition; duplicates and undeclared ones of ours
    deleted."""
    existing = await client.read_resource_related_automations(f"prefect.deployment.{deployment_id}")
    records: list[AutomationRecord] = []
    kept: set[UUID] = set()
    declared: set[str] = set()
    for trigger in triggers:
        trigger.set_deployment_id(deployment_id)
        wanted = trigger.as_automation()
        declared.add(wanted.name)
        same_name = [a for a in existing if a.name == wanted.name and a.id not in kept]
        match = next((a for a in same_name if _canonical(a) == _canonical(wanted)), None)
        if match is not None:
            automation_id, status = match.id, "unchanged"
        elif same_name:
            # Replaced, not updated in place: Prefect 3.9's client.update_automation sends
            # `owner_resource`, which its own server refuses (422 extra_forbidden).
            await client.delete_automation(same_name[0].id)
            kept.add(same_name[0].id)  # gone: not to be deleted again below
            automation_id, status = await client.create_automation(wanted), "updated"
        else:
            automation_id, status = await client.create_automation(wanted), "created"
        kept.add(automation_id)
        records.append(AutomationRecord(wanted.name, str(automation_id), deployment_name, status))
    for other in existing:
        if other.id in kept:
            continue
        if other.name in declared or _deployed_by_us(other.name, deployment_name):
            await client.delete_automation(other.id)
            records.append(AutomationRecord(other.name, str(other.id), deployment_name, "deleted"))
    return records


# ------------------------------------------------------------------------------------------
# work pool
# ------------------------------------------------------------------------------------------


async def ensure_work_pool(client: Any, name: str) -> bool:
    """Create the process work pool if it is missing; True if created."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        pool = await client.read_work_pool(name)
    except ObjectNotFound:
        try:
            await client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=POOL_TYPE,
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
            return True
        except ObjectAlreadyExists:  # created meanwhile (a worker starting): fine
            pool = await client.read_work_pool(name)
    if pool.type != POOL_TYPE:
        raise DeployError(
            f"work pool {name!r} exists with type {pool.type!r}; the deployments need a"
            f" {POOL_TYPE!r} pool (give another one with --pool)",
            2,
        )
    return False


# The global limit both rollback flows take (flows/emergency_rollback.py ROLLBACK_LIMIT): one
# rollback at a time whoever starts it. Created here and, if missing, at first use.
GLOBAL_LIMITS = {"tbs-rollback": 1}


async def ensure_global_limits(client: Any) -> dict[str, str]:
    """Create the global concurrency limits if missing (an existing one is left as it is)."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    out: dict[str, str] = {}
    for name, limit in GLOBAL_LIMITS.items():
        try:
            await client.read_global_concurrency_limit_by_name(name)
            out[name] = "exists"
        except ObjectNotFound:
            try:
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=limit)
                )
                out[name] = "created"
            except ObjectAlreadyExists:
                out[name] = "exists"
    return out


# ------------------------------------------------------------------------------------------
# deploy
# ------------------------------------------------------------------------------------------


def _config_path(config_path: str | os.PathLike[str] | None) -> str | None:
    if not config_path:
        return None
    path = Path(config_path).expanduser()
    if not path.is_file():
        raise DeployError(f"{config_path}: no such file (the config the runs are to use)", 2)
    return str(path.resolve())


async def _check_api(client: Any, api_url: str) -> None:
    failure = await client.api_healthcheck()
    if failure is not None:
        reason = str(failure).splitlines()[0] if str(failure) else type(failure).__name__
        raise DeployError(f"Prefect API {api_url} is unreachable: {reason}", 1)


async def _deploy_one(
    client: Any,
    project: Project,
    declared: Declared,
    pool: str,
    env: Mapping[str, str],
    report: DeployReport,
) -> None:
    from prefect.exceptions import ObjectNotFound
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.templating import (
        resolve_block_document_references,
        resolve_variables,
    )

    spec = copy.deepcopy(declared.spec)
    spec.pop("triggers", None)  # templated at run time by the automation, never here
    spec.pop("pull", None)
    spec = resolve_env(spec, env)
    spec = await resolve_block_document_references(spec, client=client)
    spec = await resolve_variables(spec, client=client)
    try:
        flow = load_flow(project, declared)
    except Exception as exc:
        raise DeployError(f"{declared.name}: cannot load {declared.entrypoint}: {exc}", 1) from exc
    schedules = [schedule_for(s) for s in spec.get("schedules") or []]
    concurrency = declared.concurrency
    options: dict[str, Any] | None = None
    if concurrency is not None:
        options = {"collision_strategy": concurrency.collision_strategy}
        if concurrency.grace_period_seconds is not None:
            options["grace_period_seconds"] = concurrency.grace_period_seconds
    work_pool = spec.get("work_pool") or {}
    deployment = _deployment_class()(
        name=declared.name,
        flow_name=flow.name,
        entrypoint=declared.entrypoint,
        work_pool_name=pool,
        work_queue_name=work_pool.get("work_queue_name"),
        parameters=spec.get("parameters") or {},
        description=spec.get("description"),
        version=spec.get("version"),
        version_type=spec.get("version_type"),
        tags=list(spec.get("tags") or []),
        concurrency_limit=concurrency.limit if concurrency else None,
        concurrency_options=options,
        paused=spec.get("paused"),
        storage=PullSteps(pull_steps(project, declared)),
        job_variables=work_pool.get("job_variables") or {},
    )
    deployment._set_defaults_from_flow(flow)
    deployment._parameter_openapi_schema = parameter_schema(flow)
    if spec.get("enforce_parameter_schema") is not None:
        deployment.enforce_parameter_schema = spec["enforce_parameter_schema"]
    try:
        await client.read_deployment_by_name(f"{flow.name}/{declared.name}")
        status = "updated"
    except ObjectNotFound:
        status = "created"
    deployment_id = await deployment.aapply(schedules=schedules or None)
    report.automations += await reconcile_automations(
        client, deployment_id, declared.name, triggers_for(declared)
    )
    report.deployments.append(
        DeploymentRecord(
            name=declared.name,
            flow_name=flow.name,
            id=str(deployment_id),
            status=status,
            entrypoint=declared.entrypoint,
            work_pool=pool,
            schedules=[s.slug or s.cron or s.rrule or str(s.interval) for s in declared.schedules],
            triggers=[t.name for t in declared.triggers],
            concurrency_limit=concurrency.limit if concurrency else None,
            collision_strategy=concurrency.collision_strategy if concurrency else None,
        )
    )


async def adeploy(
    api_url: str,
    config_path: str | os.PathLike[str] | None = None,
    pool: str | None = None,
    *,
    prefect_file: str | os.PathLike[str] | None = None,
    names: Sequence[str] | None = None,
) -> DeployReport:
    """`deploy`, for callers already in an event loop."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if not api_url:
        raise DeployError("no Prefect API URL given", 2)
    try:
        project = load(prefect_file)
    except DeclarationError as exc:
        raise DeployError(str(exc), 2) from None
    config = _config_path(config_path)
    pool_name = pool or project.work_pool
    unknown = sorted(set(names or ()) - set(project.names))
    if unknown:
        raise DeployError(f"not declared in {project.path}: {', '.join(unknown)}", 2)
    chosen = [d for d in project.deployments if names is None or d.name in names]
    env = deploy_environment(project.root, config)
    if str(project.root) not in sys.path:  # entrypoints of another checkout import its modules
        sys.path.insert(0, str(project.root))
    report = DeployReport(
        api_url=api_url,
        work_pool=pool_name,
        work_pool_created=False,
        project_dir=str(project.root),
        config_path=config,
    )
    # The API URL is this call's, not the process's: a settings context around everything the
    # Prefect client (and RunnerDeployment.aapply's own client) reads.
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        async with get_client() as client:
            await _check_api(client, api_url)
            report.work_pool_created = await ensure_work_pool(client, pool_name)
            report.concurrency_limits = await ensure_global_limits(client)
            for declared in chosen:
                await _deploy_one(client, project, declared, pool_name, env, report)
    return report


def deploy(
    api_url: str,
    config_path: str | os.PathLike[str] | None = None,
    pool: str | None = None,
    *,
    prefect_file: str | os.PathLike[str] | None = None,
    names: Sequence[str] | None = None,
) -> DeployReport:
    """Register prefect.yaml (work pool, deployments, schedules, concurrency limits,
    automations) with the Prefect API at `api_url`; DeployError on failure (`.code`: 1 the API
    or a flow, 2 bad input). Safe to call again: nothing changes the second time.

    `config_path`: the tbs.toml the runs use (TBS_CONFIG in their environment); `pool`: another
    work pool than prefect.yaml's; `names`: only these deployments (the bench registers its
    probe alone)."""
    coro = adeploy(api_url, config_path, pool, prefect_file=prefect_file, names=names)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from inside an event loop (a flow, a notebook): run on a loop of our own.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool_:
        return pool_.submit(asyncio.run, coro).result()
