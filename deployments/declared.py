"""prefect.yaml, read into typed records: the one declaration of the deployments.

Everything that needs the list of deployments (`deployments.deploy`, `deployments.runner`, the
tests, bench/trigger_latency.py) reads it here, so there is no second copy to keep in step.
No Prefect import: the records are plain data; `deployments.deploy` turns them into Prefect
objects.

    from deployments.declared import load
    project = load()                      # <repository>/prefect.yaml
    project.get("emergency-rollback").triggers[0].expect
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PREFECT_YAML = ROOT / "prefect.yaml"

# Names other code refers to. prefect.yaml is their source; tests/unit/test_deployments.py fails
# if one of them is no longer declared there.
ROLLBACK = "emergency-rollback"
ESCALATION = "incident-escalation"
MANUAL = "manual-rollback"
PROBE = "trigger-latency-probe"
SECURITY_INCIDENT = "security-incident"
ROTATE = "rotate-credentials"
ACCOUNT = "account-compromise"
LOCKDOWN = "security-lockdown"
LOCKDOWN_LIFT = "security-lockdown-lift"
SECURITY = (SECURITY_INCIDENT, ROTATE, ACCOUNT, LOCKDOWN, LOCKDOWN_LIFT)

ROLLBACK_EVENT = "tbs.trigger.fired"
OPENED_EVENT = "tbs.incident.opened"
RESOLVED_EVENT = "tbs.incident.resolved"
BENCH_EVENT = "tbs.bench.ping"
SECURITY_ALERT_EVENT = "tbs.security.alert"
# The watchdog is watched: a proactive trigger pages when its heartbeat stops.
WATCHDOG_SILENT = "watchdog-silent"
HEARTBEAT_EVENT = "tbs.watchdog.heartbeat"
PAGE_FAILED = "page-failed-emergency-run"
RUN_FAILED_EVENTS = tuple(
    f"prefect.flow-run.{state}"
    for state in (
        "Failed",
        "Crashed",
        "TimedOut",
        "Escalated",
        "Degraded",
        "NotAuthorized",
        "Incomplete",
    )
)

# The pull step every deployment runs first (deployments/steps.py).
ENTER_PROJECT_STEP = "deployments.steps.enter_project"


class DeclarationError(ValueError):
    """prefect.yaml cannot be used as it is; the message names the file and the entry."""


@dataclass(frozen=True)
class Schedule:
    cron: str | None = None
    interval: float | None = None
    rrule: str | None = None
    timezone: str | None = None
    active: bool = True
    slug: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)  # the entry as written


@dataclass(frozen=True)
class Trigger:
    name: str
    type: str
    expect: tuple[str, ...]
    match: dict[str, Any]
    for_each: tuple[str, ...]
    posture: str
    threshold: int
    within_s: float
    enabled: bool
    parameters: dict[str, Any]
    spec: dict[str, Any]  # the entry as written: what Prefect turns into the automation


@dataclass(frozen=True)
class Concurrency:
    limit: int
    collision_strategy: str = "ENQUEUE"
    grace_period_seconds: int | None = None


@dataclass(frozen=True)
class Declared:
    """One deployment of prefect.yaml."""

    name: str
    entrypoint: str  # "flows/x.py:function", relative to the project directory
    description: str | None
    parameters: dict[str, Any]
    tags: tuple[str, ...]
    schedules: tuple[Schedule, ...]
    triggers: tuple[Trigger, ...]
    concurrency: Concurrency | None
    work_pool: str
    job_variables: dict[str, Any]
    spec: dict[str, Any]  # the entry as written (anchors expanded)

    @property
    def path(self) -> str:
        return self.entrypoint.split(":", 1)[0]

    @property
    def function(self) -> str:
        return self.entrypoint.split(":", 1)[1]

    @property
    def module(self) -> str:
        """The importable module of the entrypoint (the project is on sys.path)."""
        return self.path.removesuffix(".py").replace("/", ".")

    @property
    def job_env(self) -> dict[str, str]:
        env = self.job_variables.get("env") or {}
        return {str(k): str(v) for k, v in env.items() if v is not None}


@dataclass(frozen=True)
class Project:
    """prefect.yaml as a whole."""

    path: Path
    name: str
    pull: tuple[dict[str, Any], ...]
    deployments: tuple[Declared, ...]

    @property
    def root(self) -> Path:
        """The project directory: where prefect.yaml is, and what entrypoints are relative to."""
        return self.path.parent

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.deployments)

    @property
    def work_pool(self) -> str:
        """The work pool the deployments name (prefect.yaml uses one)."""
        return self.deployments[0].work_pool

    def get(self, name: str) -> Declared:
        for d in self.deployments:
            if d.name == name:
                return d
        raise KeyError(f"{self.path}: no deployment named {name!r}")

    def trigger_names(self) -> list[str]:
        return [t.name for d in self.deployments for t in d.triggers]


def _fail(path: Path, where: str, what: str) -> DeclarationError:
    return DeclarationError(f"{path}: {where}: {what}")


def _schedule(path: Path, where: str, spec: Any) -> Schedule:
    if not isinstance(spec, dict):
        raise _fail(path, where, "a schedule must be a mapping")
    kinds = [k for k in ("cron", "interval", "rrule") if spec.get(k) is not None]
    if len(kinds) != 1:
        raise _fail(path, where, "a schedule needs exactly one of cron, interval, rrule")
    interval = spec.get("interval")
    return Schedule(
        cron=spec.get("cron"),
        interval=float(interval) if interval is not None else None,
        rrule=spec.get("rrule"),
        timezone=spec.get("timezone"),
        active=bool(spec.get("active", True)),
        slug=spec.get("slug"),
        parameters=dict(spec.get("parameters") or {}),
        spec=copy.deepcopy(spec),
    )


def _trigger(path: Path, where: str, spec: Any) -> Trigger:
    if not isinstance(spec, dict):
        raise _fail(path, where, "a trigger must be a mapping")
    if not spec.get("name"):
        # Prefect would name it "<deployment>__automation_<n>"; ours are found by name (drills,
        # bench, the idempotent deploy), so a name is required.
        raise _fail(path, where, "a trigger needs a name")
    within = spec.get("within", 0)
    return Trigger(
        name=str(spec["name"]),
        type=str(spec.get("type", "event")),
        expect=tuple(spec.get("expect") or ()),
        match=dict(spec.get("match") or {}),
        for_each=tuple(spec.get("for_each") or ()),
        posture=str(spec.get("posture", "Reactive")),
        threshold=int(spec.get("threshold", 1)),
        within_s=float(within),
        enabled=bool(spec.get("enabled", True)),
        parameters=copy.deepcopy(spec.get("parameters") or {}),
        spec=copy.deepcopy(spec),
    )


def _concurrency(path: Path, where: str, spec: Any) -> Concurrency | None:
    if spec is None:
        return None
    if isinstance(spec, int):
        return Concurrency(limit=spec)
    if not isinstance(spec, dict) or not isinstance(spec.get("limit"), int):
        raise _fail(path, where, "concurrency_limit needs an integer limit")
    return Concurrency(
        limit=spec["limit"],
        collision_strategy=str(spec.get("collision_strategy") or "ENQUEUE"),
        grace_period_seconds=spec.get("grace_period_seconds"),
    )


def _declared(path: Path, i: int, spec: Any) -> Declared:
    where = f"deployments[{i}]"
    if not isinstance(spec, dict):
        raise _fail(path, where, "a deployment must be a mapping")
    name = spec.get("name")
    if not name:
        raise _fail(path, where, "a deployment needs a name")
    where = f"deployment {name!r}"
    entrypoint = spec.get("entrypoint")
    if not entrypoint or ":" not in str(entrypoint):
        raise _fail(path, where, "entrypoint must be 'path/to/file.py:function'")
    pool = spec.get("work_pool") or {}
    if not isinstance(pool, dict) or not pool.get("name"):
        raise _fail(path, where, "work_pool.name is required (runs go to a work pool)")
    tags = spec.get("tags") or []
    return Declared(
        name=str(name),
        entrypoint=str(entrypoint),
        description=spec.get("description"),
        parameters=copy.deepcopy(spec.get("parameters") or {}),
        tags=tuple(str(t) for t in ([tags] if isinstance(tags, str) else tags)),
        schedules=tuple(
            _schedule(path, f"{where} schedules[{j}]", s)
            for j, s in enumerate(spec.get("schedules") or [])
        ),
        triggers=tuple(
            _trigger(path, f"{where} triggers[{j}]", t)
            for j, t in enumerate(spec.get("triggers") or [])
        ),
        concurrency=_concurrency(path, where, spec.get("concurrency_limit")),
        work_pool=str(pool["name"]),
        job_variables=copy.deepcopy(pool.get("job_variables") or {}),
        spec=copy.deepcopy(spec),
    )


def load(path: str | Path | None = None) -> Project:
    """Read and check prefect.yaml (default: the repository's); DeclarationError if unusable."""
    p = Path(path) if path else PREFECT_YAML
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeclarationError(f"{p}: no such file") from None
    except yaml.YAMLError as exc:
        raise DeclarationError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("deployments"), list):
        raise DeclarationError(f"{p}: no `deployments:` list")
    deployments = tuple(_declared(p, i, d) for i, d in enumerate(doc["deployments"]))
    if not deployments:
        raise DeclarationError(f"{p}: `deployments:` is empty")
    seen: set[str] = set()
    for d in deployments:
        if d.name in seen:
            raise _fail(p, f"deployment {d.name!r}", "declared twice")
        seen.add(d.name)
    triggers = [t for d in deployments for t in d.triggers]
    if len({t.name for t in triggers}) != len(triggers):
        raise DeclarationError(f"{p}: two triggers share a name (automations are found by name)")
    pull = doc.get("pull") or []
    return Project(
        path=p.resolve(),
        name=str(doc.get("name") or p.parent.name),
        pull=tuple(copy.deepcopy(s) for s in (pull if isinstance(pull, list) else [pull])),
        deployments=deployments,
    )
