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

    def head(self, key: str) -> StoredObject: ...

    def list(self, prefix: str) -> Iterator[StoredObject]: ...


class Traffic(Pingable, Protocol):
    def active(self) -> EnvName: ...

    def switch_to(self, env: EnvName) -> EnvName: ...


class Metrics(Pingable, Protocol):
    def instant(self, promql: str, at: float | None = None) -> list[MetricSample]: ...

    def range(
        self, promql: str, start: float, end: float, step_s: float
    ) -> list[tuple[Mapping[str, str], list[tuple[float, float]]]]: ...


class Sessions(Pingable, Protocol):
    def count(self) -> int: ...


class Notifier(Pingable, Protocol):
    def send(self, message: Notification) -> Delivery: ...


class App(Pingable, Protocol):
    def health(self) -> dict[str, Any]: ...
