"""What the security flows share: parameters, the report, the incident they journal to."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from tasks.incident import journal_for, open_incident
from tbs_emergency.domain.incident import Entry, Incident, OptionalIncidentId, incident_id
from tbs_emergency.domain.severity import Severity
from tbs_emergency.errors import TbsError
from tbs_emergency.security.steps import StepsResult


class SecurityParams(BaseModel):
    """Every security flow: configuration, dry run, the incident it belongs to, who decided."""

    config_path: str = Field("", description="tbs.toml; empty: $TBS_CONFIG or ./tbs.toml")
    dry_run: bool = Field(False, description="Print the plan; change nothing")
    incident_id: OptionalIncidentId = Field(
        "", description="Incident to journal to; empty opens a new one"
    )
    decided_by: str = Field("person", description="Who or what decided")


class SecurityReport(BaseModel):
    procedure: str
    incident_id: str | None = None
    dry_run: bool = False
    ok: bool = True
    lines: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    bad_input: bool = False
    detail: dict[str, Any] = Field(default_factory=dict)

    def markdown(self) -> str:
        head = f"# {self.procedure}" + (" (dry run: nothing changed)" if self.dry_run else "")
        out = [head, "", f"**Result:** {'ok' if self.ok else 'PROBLEMS'}"]
        if self.incident_id:
            out.append(f"**Incident:** {self.incident_id}")
        out.append("")
        out += [f"- note: {n}" for n in self.notes]
        out += [f"- {line}" for line in self.lines]
        out += [f"- **problem:** {p}" for p in self.problems]
        return "\n".join(out) + "\n"


def why(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, TbsError) else f"{type(exc).__name__}: {exc}"


def artifact_key(prefix: str, incident: str | None) -> str:
    """A Prefect artifact key (lower case letters, digits and dashes only)."""
    key = re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-{incident or 'none'}".lower())
    return key.strip("-")[:100]


class SecurityRun:
    """One run of a security flow: its incident, journal entries, lines and problems."""

    def __init__(self, params: SecurityParams, procedure: str) -> None:
        self.p = params
        self.cfg = params.config_path or None
        self.log = get_run_logger()
        self.report = SecurityReport(procedure=procedure, dry_run=params.dry_run)
        self.incident: Incident | None = None

    @property
    def incident_id(self) -> str | None:
        return self.incident.id if self.incident else (self.p.incident_id or None)

    def open(self, severity: Severity, trigger: str, env: str, salt: str) -> str | None:
        """Join the given incident or open one (not in a dry run: nothing is written)."""
        if self.p.dry_run:
            self.report.incident_id = self.p.incident_id or None
            return self.report.incident_id
        now = datetime.now(UTC)
        inc = Incident(
            id=self.p.incident_id or incident_id(env, now, salt=salt),
            severity=severity,
            env=env,
            rule=None,
            trigger=trigger,
            opened_at=now,
            decided_by=self.p.decided_by,
        )
        self.incident, _new = open_incident(self.cfg, inc)
        self.report.incident_id = self.incident.id
        return self.incident.id

    def entry(self, kind: str, what: str, **kw: Any) -> None:
        """Append to the incident's journal (directly, retried, never raises)."""
        if self.incident is None or self.p.dry_run:
            return
        kw.setdefault("decided_by", self.p.decided_by)
        e = Entry(incident_id=self.incident.id, kind=kind, what=what, **kw)
        last = ""
        for i in range(3):
            try:
                journal_for(self.cfg).append(e)
                return
            except Exception as exc:
                last = why(exc)
                time.sleep(0.2 * (i + 1))
        self.log.error("journal write failed (%s): %s", what, last)
        self.report.problems.append(f"journal write failed: {what}: {last}")

    def problem(self, text: str) -> None:
        self.report.problems.append(text)
        self.report.ok = False

    def steps(self, result: StepsResult, what: str, system: str) -> None:
        """A step engine result into the report and the journal."""
        self.report.lines += result.lines()
        for p in result.problems:
            self.problem(p)
        self.entry(
            "action",
            what + (" (rolled back: nothing changed)" if result.rolled_back else ""),
            system=system,
            result="failed" if result.problems else "ok",
            data={
                "actions": [a.model_dump() for a in result.actions],
                "problems": result.problems,
                "status": result.status,
                "rolled_back": result.rolled_back,
            },
        )

    def finish(self, artifact: str) -> SecurityReport:
        self.report.ok = not self.report.problems
        create_markdown_artifact(
            key=artifact_key(artifact, self.report.incident_id),
            markdown=self.report.markdown(),
            description=self.report.procedure,
        )
        return self.report
