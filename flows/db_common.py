"""What the database emergency flows share: parameters every one takes, the report, targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from tasks.common import settings_for
from tbs_emergency.dbops.actions import Action
from tbs_emergency.dbops.targets import Engine, ServerTarget, live_identity, server_targets
from tbs_emergency.domain.incident import MaybeIncidentId
from tbs_emergency.errors import TbsError

T = TypeVar("T")


class DbParams(BaseModel):
    """Every database emergency flow: which configuration, which environments, dry run."""

    config_path: str | None = None
    # Empty: every configured environment. Environments on one server are one target.
    environments: list[str] = Field(default_factory=list)
    dry_run: bool = False
    # The incident this run belongs to: its journal gets the previous settings and actions.
    incident_id: MaybeIncidentId = None


class TargetReport(BaseModel):
    """What happened on one server (or service)."""

    system: str
    ok: bool
    lines: list[str] = Field(default_factory=list)
    actions: list[Action] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    detail: dict[str, Any] = Field(default_factory=dict)


class DbReport(BaseModel):
    procedure: str
    dry_run: bool
    ok: bool
    targets: list[TargetReport] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    # refused for what was asked (a guard), not for a failure: the CLI exits 2
    bad_input: bool = False

    @property
    def problems(self) -> list[str]:
        return [p for t in self.targets for p in t.problems]

    def markdown(self) -> str:
        head = f"# {self.procedure}" + (" (dry run: nothing changed)" if self.dry_run else "")
        out = [head, "", f"**Result:** {'ok' if self.ok else 'PROBLEMS'}", ""]
        out += [f"- {n}" for n in self.notes]
        for t in self.targets:
            out += ["", f"## {t.system}: {'ok' if t.ok else 'PROBLEMS'}", ""]
            out += [f"- {line}" for line in t.lines]
            if t.actions:
                out += ["", "| outcome | what | detail |", "|---|---|---|"]
                out += [f"| {a.outcome} | {_cell(a.what)} | {_cell(a.detail)} |" for a in t.actions]
            out += [f"- **problem:** {p}" for p in t.problems]
        return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def publish(report: DbReport, key: str) -> DbReport:
    """The report as a markdown artifact (the Prefect UI shows it beside the run)."""
    create_markdown_artifact(key=key, markdown=report.markdown(), description=report.procedure)
    return report


def targets_for(params: DbParams, engines: list[Engine]) -> list[ServerTarget]:
    settings = settings_for(params.config_path)
    return server_targets(
        settings, engines, params.environments or None, identify=live_identity(settings)
    )


def failed_target(system: str, exc: BaseException) -> TargetReport:
    """A server the procedure could not run on: the error, so the other servers' results are
    still reported (one unreachable store must not hide what was done to the other)."""
    detail = str(exc) if isinstance(exc, TbsError) else f"{type(exc).__name__}: {exc}"
    return TargetReport(system=system, ok=False, problems=[f"{system}: {detail}"])


def guarded(
    system: str, call: Callable[[], T], report: Callable[[T], TargetReport]
) -> TargetReport:
    """call() turned into its TargetReport, or a failed one when it raised."""
    try:
        result = call()
    except Exception as exc:
        return failed_target(system, exc)
    return report(result)
