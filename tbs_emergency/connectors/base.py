"""The small Protocols every connector implements, and the values they return.

Nothing here imports a driver. Each module beside this one implements one Protocol with one
driver, imported inside that module only, and turns driver errors into `tbs_emergency.errors`.
Later procedures extend these Protocols; keep each method one external step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

EnvName = Literal["blue", "green"]


@dataclass(frozen=True)
class Probe:
    """The answer to "is it there": reachable, round-trip latency, and a line of detail."""

    system: str
    reachable: bool
    latency_ms: float | None
    detail: str


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str | None = None
    last_modified: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    sse: str | None = None  # the server-side encryption S3 reports (AES256, aws:kms)
    version_id: str | None = None  # versioned buckets (Object Lock needs versioning)
    lock_mode: str | None = None  # Object Lock: COMPLIANCE or GOVERNANCE
    retain_until: datetime | None = None  # Object Lock: the version cannot be deleted before


@dataclass(frozen=True)
class MetricSample:
    labels: Mapping[str, str]
    value: float
    timestamp: float


@dataclass(frozen=True)
class Delivery:
    """What a notification channel accepted."""

    channel: str
    ok: bool
    detail: str
    message_id: str | None = None


@dataclass(frozen=True)
class Notification:
    subject: str
    body: str
    severity: str = "P2"
    incident_id: str | None = None
    recipients: Sequence[str] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Pingable(Protocol):
    name: str

    def ping(self) -> Probe: ...


class SQLDatabase(Pingable, Protocol):
    """What HeavyDB and MySQL have in common for the procedures."""

    def row_count(self, table: str) -> int: ...

    def tables(self) -> list[str]: ...

    def is_read_only(self) -> bool: ...

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]: ...

    def close(self) -> None: ...


class ObjectStore(Pingable, Protocol):
    def put(
        self, key: str, data: bytes, metadata: Mapping[str, str] | None = None
    ) -> StoredObject: ...

    def put_file(
        self, key: str, path: str, metadata: Mapping[str, str] | None = None
    ) -> StoredObject: ...

    def get(self, key: str) -> bytes: ...

    def get_file(self, key: str, path: str) -> StoredObject: ...

    def head(self, key: str) -> StoredObject: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str) -> Iterator[StoredObject]: ...


class Traffic(Pingable, Protocol):
    def active(self) -> EnvName: ...

    def switch_to(self, env: EnvName) -> EnvName: ...

    def redirect_blue(self) -> Mapping[str, Any]: ...


class Metrics(Pingable, Protocol):
    def instant(self, promql: str, at: float | None = None) -> list[MetricSample]: ...

    def range(
        self, promql: str, start: float, end: float, step_s: float
    ) -> list[tuple[Mapping[str, str], list[tuple[float, float]]]]: ...


class Sessions(Pingable, Protocol):
    def count(self) -> int: ...

    def list_ids(self, limit: int = 100) -> list[str]: ...

    def get(self, session_id: str) -> Mapping[str, Any] | None: ...


class Notifier(Pingable, Protocol):
    def send(self, message: Notification) -> Delivery: ...


class App(Pingable, Protocol):
    def health(self) -> dict[str, Any]: ...


# -- database emergency procedures (docs/database-emergency.md) -------------------------------


@dataclass(frozen=True)
class DbSession:
    """One client connection (MySQL) or session (HeavyDB) as the server lists it.

    `idle_s` is set when the session waits for its client (seconds since its last statement),
    `busy_s` when it runs a statement (seconds so far); either may be None when unknown.
    `internal` sessions (server threads, replication, the procedure's own) are never closed.
    """

    id: str
    user: str
    host: str | None = None
    database: str | None = None
    idle_s: float | None = None
    busy_s: float | None = None
    in_transaction: bool = False
    statement: str | None = None
    internal: bool = False

    @property
    def busy(self) -> bool:
        return self.busy_s is not None


@dataclass(frozen=True)
class OpenTransaction:
    """A transaction still open on a server: who holds it, since when, doing what."""

    id: str
    session_id: str
    user: str
    host: str | None
    age_s: float
    state: str
    statement: str | None = None
    started_at: datetime | None = None
    rows_modified: int | None = None
    database: str | None = None


@dataclass(frozen=True)
class AccountLimit:
    """An account's own connection cap (MySQL MAX_USER_CONNECTIONS: 0 none, -1 no login)."""

    user: str
    host: str
    max_user_connections: int


@dataclass(frozen=True, order=True)
class DbAccount:
    """A MySQL account (user@host) and whether it is locked (cannot log in)."""

    user: str
    host: str
    locked: bool = False


@dataclass(frozen=True)
class DbUser:
    name: str
    can_login: bool
    is_super: bool = False


PrivilegeLevel = Literal["global", "schema", "table", "column"]


@dataclass(frozen=True)
class PrivilegeGrant:
    """One privilege of one grantee at one level (schema as stored: it may be a pattern)."""

    user: str
    host: str | None  # None: a role
    privilege: str  # upper case, as the server names it: INSERT, DELETE HISTORY, ...
    level: PrivilegeLevel
    schema: str | None = None
    table: str | None = None
    column: str | None = None

    @property
    def grantee(self) -> str:
        return self.user if self.host is None else f"{self.user}@{self.host}"


class SessionAdmin(Protocol):
    """Listing and ending the sessions of a database server."""

    name: str

    def login_user(self) -> str: ...

    def sessions(self) -> list[DbSession]: ...

    def end_session(self, session_id: str) -> bool: ...


class MySQLEmergencyAdmin(SessionAdmin, Protocol):
    """What the MySQL emergency procedures do to a server (an administrative account)."""

    def ping(self) -> Probe: ...

    def max_connections(self) -> int: ...

    def set_max_connections(self, limit: int) -> None: ...

    def account_limits(self) -> list[AccountLimit]: ...

    def set_account_limit(self, user: str, host: str, max_user_connections: int) -> None: ...

    def open_transactions(self) -> list[OpenTransaction]: ...

    def flush_tables(self, lock_wait_s: float) -> None: ...

    def reset_query_cache(self) -> bool: ...

    def grants(self) -> list[PrivilegeGrant]: ...

    def revoke(self, grants: Sequence[PrivilegeGrant]) -> None: ...

    def grant(self, grants: Sequence[PrivilegeGrant]) -> None: ...


class HeavyDBEmergencyAdmin(SessionAdmin, Protocol):
    """What the HeavyDB emergency procedures do to a server (a superuser)."""

    def ping(self) -> Probe: ...

    def users(self) -> list[DbUser]: ...

    def set_login(self, user: str, allowed: bool) -> None: ...

    def clear_cpu_memory(self) -> None: ...

    def clear_gpu_memory(self) -> None: ...


class IntegrityDatabase(Protocol):
    """A database as the integrity checks see it (tbs_emergency.integrity.SQLTableSource): the
    statements are composed there from this engine's dialect; they run through `query`.
    Implemented by `connectors.mysql.MySQLIntegrity` and `connectors.heavydb.HeavyDBIntegrity`."""

    name: str

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]: ...

    def describe_columns(self, table: str) -> dict[str, Any]:
        """Column name -> tbs_emergency.integrity.ColumnType, in table order."""
        ...

    def integrity_dialect(self) -> Any:
        """This engine's tbs_emergency.integrity.checksum.IntegrityDialect."""
        ...
