"""The project's own errors.

Connectors turn driver exceptions into these so that flows, the CLI and the incident journal
can say which system failed and how, without leaking driver types or credentials.
"""

from __future__ import annotations


class TbsError(Exception):
    """Base class for every error the project raises on purpose."""


class ConfigError(TbsError):
    """The configuration is missing or invalid. `problems` holds one line per problem."""

    def __init__(self, problems: list[str], path: str | None = None) -> None:
        self.problems = problems
        self.path = path
        where = f" in {path}" if path else ""
        super().__init__(f"invalid configuration{where}:\n" + "\n".join(problems))


class ConnectorError(TbsError):
    """An external system did not do what was asked.

    `system` names the system as configuration does (e.g. ``mysql[blue]``), `operation` what was
    being done, `detail` why it failed. Messages never contain credentials.
    """

    kind = "failed"

    def __init__(self, system: str, operation: str, detail: str) -> None:
        self.system = system
        self.operation = operation
        self.detail = detail
        super().__init__(f"{system}: {operation} {self.kind}: {detail}")


class Unreachable(ConnectorError):
    """The system could not be reached at all (refused, DNS, no route)."""

    kind = "unreachable"


class TimedOut(ConnectorError):
    """The system did not answer within the configured timeout."""

    kind = "timed out"


class Refused(ConnectorError):
    """The system answered but refused: authentication, privileges, read-only, bad request."""

    kind = "refused"


class NotFound(ConnectorError):
    """The named object (table, key, user) does not exist on that system."""

    kind = "not found"


class IntegrityError(ConnectorError):
    """Data read back does not match what was expected (checksum, size, count)."""

    kind = "integrity check failed"
