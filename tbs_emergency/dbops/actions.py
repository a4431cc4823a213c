"""What a procedure did, one line per action, for the report, the journal and the CLI."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from tbs_emergency.errors import ConnectorError

T = TypeVar("T")
Outcome = Literal["done", "unchanged", "failed", "planned", "skipped"]

_default_log = logging.getLogger("tbs_emergency.dbops")


class Action(BaseModel):
    """One change (or non-change) on one system."""

    system: str
    what: str
    outcome: Outcome
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"

    def line(self) -> str:
        tail = f": {self.detail}" if self.detail else ""
        return f"[{self.outcome}] {self.system}: {self.what}{tail}"


@dataclass(frozen=True)
class Attempt(Generic[T]):
    ok: bool
    value: T | None


class ActionLog:
    """Collects actions and logs each one as it happens."""

    def __init__(self, system: str, log: Any | None = None) -> None:
        self.system = system
        self.log = log or _default_log
        self.actions: list[Action] = []

    def add(self, what: str, outcome: Outcome, detail: str = "") -> Action:
        action = Action(system=self.system, what=what, outcome=outcome, detail=detail)
        self.actions.append(action)
        level = logging.WARNING if outcome == "failed" else logging.INFO
        self.log.log(level, "%s", action.line())
        return action

    def attempt(self, what: str, fn: Callable[[], T], done_detail: str = "") -> Attempt[T]:
        """Run fn; a ConnectorError becomes a failed action, not an exception."""
        try:
            result = fn()
        except ConnectorError as exc:
            self.add(what, "failed", f"{exc.kind}: {exc.detail}")
            return Attempt(False, None)
        self.add(what, "done", done_detail)
        return Attempt(True, result)

    def amend_last(self, outcome: Outcome, detail: str) -> None:
        self.actions[-1] = self.actions[-1].model_copy(
            update={"outcome": outcome, "detail": detail}
        )

    @property
    def failed(self) -> list[Action]:
        return [a for a in self.actions if a.failed]
