"""Configuration: one `tbs.toml`, `TBS_*` environment overrides, secrets kept out of sight.

The file is found from an explicit path, else `TBS_CONFIG`, else `./tbs.toml`. Any field can be
overridden from the environment with `TBS_` and `__` between levels, for example
`TBS_STORAGE__BUCKET=dr-backups` or `TBS_ENVIRONMENTS__BLUE__MYSQL__PORT=3307`.

Secrets (passwords, tokens, keys) are `Secret` values. In the file a secret is written as a
literal string (fine for the sandbox), `{ env = "VAR" }` (read from the environment when used) or
`{ block = "name" }` (a Prefect Secret block, resolved when used by a resolver the Prefect layer
registers). A secret's value never appears in a repr, a log line or an error message.

This module has no Prefect import: it is plain pydantic.
"""

from __future__ import annotations

import itertools
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tbs_emergency.errors import ConfigError
from tbs_emergency.validation.declarations import (
    DEFAULT_STRATEGIES_QUERY,
    DEFAULT_UPLOADS,
    FunctionalCheck,
    UploadSample,
    default_functional_checks,
)

# --------------------------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------------------------

_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[_ ]?\s*([a-z]+)?\s*$")


def parse_duration(value: Any) -> float:
    """Seconds from `600`, `"600s"`, `"10m"`, `"10 minutes"` or the runbook's `"10_minutes"`."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '10m'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value.lower())
        if m:
            number, unit = float(m.group(1)), m.group(2) or "s"
            if unit in _DURATION_UNITS:
                return number * _DURATION_UNITS[unit]
        raise ValueError(f"{value!r} is not a duration (examples: 90s, 10m, 10_minutes, 2h)")
    raise ValueError("a duration is a number of seconds or a string like '10m'")


def parse_percent(value: Any) -> float:
    """A percentage from `25`, `25.0` or `"25%"`."""
    if isinstance(value, str):
        text = value.strip().rstrip("%").strip()
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a percentage (examples: 25, '25%')") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("a percentage is a number such as 25 or a string such as '25%'")
    if not 0 <= float(value) <= 100:
        raise ValueError("a percentage must lie between 0 and 100")
    return float(value)


Duration = Annotated[float, BeforeValidator(parse_duration)]
Percent = Annotated[float, BeforeValidator(parse_percent)]

SecretResolver = Callable[[str], str]
_RESOLVERS: dict[str, SecretResolver] = {}


def _prefect_secret_block(name: str) -> str:
    """The default `{ block = ... }` resolver, so every entry point (CLI `watch`, `status`,
    `config check`, flows, the drill) reads Secret blocks, not only those that import the tasks.
    Prefect is imported here, when a block is first read, never at the core's import."""
    from prefect.blocks.system import Secret as SecretBlock

    value = SecretBlock.load(name).get()
    return value if isinstance(value, str) else str(value)


def register_secret_resolver(kind: str, resolver: SecretResolver) -> None:
    """Let a layer above the core resolve `{ block = ... }` secrets (the Prefect layer does)."""
    _RESOLVERS[kind] = resolver


class Secret(BaseModel):
    """A credential: a literal, an environment variable, or a Prefect Secret block."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: SecretStr | None = None
    env: str | None = None
    block: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_literal(cls, data: Any) -> Any:
        if isinstance(data, str | SecretStr):
            return {"value": data}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> Secret:
        given = [k for k in ("value", "env", "block") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a secret is a string, { env = 'VAR' } or { block = 'name' }")
        return self

    @property
    def source(self) -> str:
        """Where the secret comes from, safe to print."""
        if self.env is not None:
            return f"env:{self.env}"
        if self.block is not None:
            return f"block:{self.block}"
        return "literal"

    def get_secret_value(self) -> str:
        if self.value is not None:
            return self.value.get_secret_value()
        if self.env is not None:
            try:
                return os.environ[self.env]
            except KeyError:
                raise ConfigError([f"secret: environment variable {self.env} is not set"]) from None
        assert self.block is not None
        resolver = _RESOLVERS.get("block", _prefect_secret_block)
        try:
            return resolver(self.block)
        except ConfigError:
            raise
        except Exception as exc:
            # A credential that cannot be read is a configuration problem, never an outage.
            kind = type(exc).__name__
            raise ConfigError(
                [f"secret: Prefect Secret block {self.block!r} cannot be read: {kind}"]
            ) from None

    def __repr__(self) -> str:
        return f"Secret({self.source})"

    __str__ = __repr__


# --------------------------------------------------------------------------------------------
# Systems
# --------------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HeavyDBConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(6274, ge=1, le=65535)
    user: str = "admin"
    password: Secret = Secret(value=SecretStr("HyperInteractive"))
    database: str = "heavyai"
    protocol: Literal["binary", "http", "https"] = "binary"
    timeout_s: float = Field(10.0, gt=0)

    @property
    def identity(self) -> str:
        return f"heavydb://{self.host}:{self.port}/{self.database}"


class MySQLConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(3306, ge=1, le=65535)
    user: str = "tbs_app"
    password: Secret | None = None
    database: str = "tbs_archive"
    unix_socket: str | None = None
    timeout_s: float = Field(10.0, gt=0)
    # The account that keeps writing while the archive is protected (runbook: recovery account).
    recovery_user: str | None = None

    @property
    def identity(self) -> str:
        return f"mysql://{self.host}:{self.port}/{self.database}"


class RedisConfig(_Model):
    url: str = "redis://127.0.0.1:6379/0"
    password: Secret | None = None
    session_prefix: str = "session:"
    timeout_s: float = Field(5.0, gt=0)

    @property
    def identity(self) -> str:
        return self.url.split("@")[-1]


class EnvironmentConfig(_Model):
    app_url: str
    heavydb: HeavyDBConfig
    mysql: MySQLConfig
    redis: RedisConfig
    timeout_s: float = Field(5.0, gt=0)


class TrafficConfig(_Model):
    """How traffic is switched between blue and green."""

    kind: Literal["http", "haproxy", "alb"] = "http"
    # http: the load balancer's admin API (POST /emergency/redirect-blue, GET /emergency/status)
    url: str | None = None
    token: Secret | None = None
    # haproxy: runtime API address ("127.0.0.1:9999" or a unix socket path) and the backend
    runtime_api: str | None = None
    backend: str = "tbs"
    servers: dict[str, str] = Field(default_factory=lambda: {"blue": "blue", "green": "green"})
    # alb: listener and the target group of each environment
    listener_arn: str | None = None
    target_groups: dict[str, str] = Field(default_factory=dict)
    region: str = "us-east-1"
    endpoint_url: str | None = None
    timeout_s: float = Field(5.0, gt=0)
    # The load balancer's per-backend metrics (Prometheus text, HAProxy exporter names): the
    # rollback's second source and its confirmation on blue. Default for kind "http":
    # `{url}/_lb/metrics`; HAProxy: its prometheus-exporter URL.
    metrics_url: str | None = None

    @property
    def backend_metrics_url(self) -> str | None:
        if self.metrics_url:
            return self.metrics_url
        return f"{self.url.rstrip('/')}/_lb/metrics" if self.kind == "http" and self.url else None

    @model_validator(mode="after")
    def _adapter_settings(self) -> TrafficConfig:
        if self.kind == "http" and not self.url:
            raise ValueError("traffic.kind 'http' needs traffic.url (the admin API base URL)")
        if self.kind == "haproxy" and not self.runtime_api:
            raise ValueError("traffic.kind 'haproxy' needs traffic.runtime_api")
        if self.kind == "alb" and (not self.listener_arn or not self.target_groups):
            raise ValueError("traffic.kind 'alb' needs traffic.listener_arn and target_groups")
        return self


class StorageConfig(_Model):
    bucket: str
    prefix: str = "tbs-emergency"
    endpoint_url: str | None = None
    region: str = "us-east-1"
    sse: Literal["AES256", "aws:kms", "none"] = "AES256"
    kms_key_id: str | None = None
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    timeout_s: float = Field(30.0, gt=0)
    multipart_threshold_mb: int = Field(64, ge=5)
    backup_retention_days: int = Field(30, ge=1)
    evidence_retention_days: int = Field(365, ge=1)

    @field_validator("prefix")
    @classmethod
    def _strip_slashes(cls, v: str) -> str:
        return v.strip("/")


_DEFAULT_QUERIES = {
    "throughput": 'sum(rate(tbs_rows_ingested_total{{env="{env}"}}[{window}]))',
    "error_rate": (
        '100 * sum(rate(tbs_http_errors_total{{env="{env}"}}[{window}]))'
        ' / clamp_min(sum(rate(tbs_http_requests_total{{env="{env}"}}[{window}])), 1e-9)'
    ),
    "cpu": 'max(tbs_cpu_usage_percent{{env="{env}"}})',
    "memory": 'max(tbs_memory_usage_percent{{env="{env}"}})',
    "disk": 'max(tbs_disk_usage_percent{{env="{env}"}})',
    "active_sessions": 'sum(tbs_active_sessions{{env="{env}"}})',
    # failed logins in percent of attempts; fewer than min_attempts attempts dilute the rate
    "login_failure_rate": (
        '100 * sum(increase(tbs_logins_total{{env="{env}",result="failed"}}[{window}]))'
        ' / clamp_min(sum(increase(tbs_logins_total{{env="{env}"}}[{window}])), {min_attempts})'
    ),
}


class MetricsConfig(_Model):
    """Prometheus and the PromQL of each signal.

    Queries are `str.format` templates with `{env}` (environment name) and `{window}` (a
    PromQL range such as `600s`); literal braces are doubled.
    """

    prometheus_url: str
    timeout_s: float = Field(5.0, gt=0)
    queries: dict[str, str] = Field(default_factory=lambda: dict(_DEFAULT_QUERIES))

    @field_validator("queries")
    @classmethod
    def _complete(cls, v: dict[str, str]) -> dict[str, str]:
        merged = dict(_DEFAULT_QUERIES)
        merged.update(v)
        for name, q in merged.items():
            try:
                q.format(env="green", window="60s", min_attempts="10")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"query {name!r} is not a valid template: {exc}") from None
        return merged

    def query(
        self, signal: str, env: str, window_s: float = 60.0, min_attempts: float = 1.0
    ) -> str:
        return self.queries[signal].format(
            env=env,
            window=f"{max(1, round(window_s))}s",
            min_attempts=f"{max(min_attempts, 1e-9):g}",
        )


# --------------------------------------------------------------------------------------------
# Triggers: the runbook's YAML blocks are the defaults
# --------------------------------------------------------------------------------------------

Action = Literal["IMMEDIATE_ROLLBACK", "ALERT", "NONE"]


class PerformanceTrigger(_Model):
    enabled: bool = True
    threshold: Percent = 25.0  # % below baseline
    baseline_rows_per_s: float = Field(37303.0, gt=0)
    measurement_period: Duration = 600.0
    consecutive_failures: int = Field(3, ge=1)
    p0_threshold: Percent = 50.0  # degradation over this is P0, else P1
    action: Action = "IMMEDIATE_ROLLBACK"


class ErrorRateTrigger(_Model):
    enabled: bool = True
    threshold: Percent = 5.0
    measurement_period: Duration = 300.0
    consecutive_measurements: int = Field(3, ge=1)
    action: Action = "IMMEDIATE_ROLLBACK"


class ResourceTrigger(_Model):
    enabled: bool = True
    cpu_threshold: Percent = 95.0
    memory_threshold: Percent = 95.0
    disk_threshold: Percent = 90.0
    sustained_period: Duration = 120.0
    action: Action = "IMMEDIATE_ROLLBACK"


class DatabaseTrigger(_Model):
    enabled: bool = True
    connection_failures: int = Field(3, ge=1)
    time_window: Duration = 60.0
    response_time: Duration = 10.0
    action: Action = "IMMEDIATE_ROLLBACK"


class OutageTrigger(_Model):
    """An environment is down: the load balancer's health checks and the watchdog's own direct
    probes of the app (connect + GET /health) fail `failures` times within `window`. P0 at once.

    Probes run every `probe_interval` s of real time (never scaled: an outage is judged in real
    seconds); `window` is not scaled either."""

    enabled: bool = True
    failures: int = Field(3, ge=1)
    window: Duration = 10.0
    probe_interval: Duration = 2.0
    probe_timeout: Duration = 1.5
    action: Action = "IMMEDIATE_ROLLBACK"


class FastP0Trigger(_Model):
    """Multi-window alerting: a P0-grade breach (throughput more than `degradation`% below the
    baseline, or an error rate of `error_rate`% or more) sustained over `consecutive` windows of
    `measurement_period` (scaled by time_scale) fires P0 without waiting for the runbook's
    (P1-grade) windows."""

    enabled: bool = True
    degradation: Percent = 50.0
    error_rate: Percent = 50.0
    measurement_period: Duration = 60.0
    consecutive: int = Field(3, ge=1)


class AuthFailureTrigger(_Model):
    """Login failure rate (percent of login attempts, from the app's `tbs_logins_total`) above
    `threshold` for `consecutive` windows of `measurement_period`, with at least `min_attempts`
    attempts per window (a handful of typos is not an attack). P1."""

    enabled: bool = True
    threshold: Percent = 30.0
    measurement_period: Duration = 300.0
    consecutive: int = Field(2, ge=1)
    min_attempts: float = Field(10.0, ge=0)
    action: Action = "IMMEDIATE_ROLLBACK"


class WatchdogConfig(_Model):
    """The watchdog's own behaviour and the P1 decision gate of the rollback.

    `p1_veto_window`: how long a P1 rollback waits for the on-call engineer (approve or veto)
    before it proceeds; scaled by triggers.time_scale, never below `min_scaled_veto_window`
    when scaled down; 0 = immediate. `stale_after`: an emergency rollback run scheduled longer
    ago than this is cancelled, never executed late (real time). `fallback_after`: how long the
    watchdog waits for the automation's rollback run before it starts one itself (at least as
    long as a cold executor needs). `heartbeat_every`: seconds between `tbs.watchdog.heartbeat`
    events. `blind_page_after`: a rule blind this long pages through the incident channels."""

    p1_veto_window: Duration = 300.0
    min_scaled_veto_window: Duration = 10.0
    stale_after: Duration = 300.0
    fallback_after: Duration = 20.0
    heartbeat_every: Duration = 15.0
    blind_page_after: Duration = 300.0
    # watched when the load balancer cannot be read and no environment was seen live yet
    assume_live: str = "green"

    def veto_window_s(self, time_scale: float) -> float:
        if self.p1_veto_window <= 0:
            return 0.0
        scaled = self.p1_veto_window * time_scale
        if time_scale < 1.0:
            scaled = min(self.p1_veto_window, max(self.min_scaled_veto_window, scaled))
        return scaled


class TriggersConfig(_Model):
    # Multiplies every trigger duration: 1.0 in production, e.g. 0.01 in drills (10 min -> 6 s).
    time_scale: float = Field(1.0, gt=0)
    performance_degradation: PerformanceTrigger = PerformanceTrigger()
    error_rate_spike: ErrorRateTrigger = ErrorRateTrigger()
    resource_exhaustion: ResourceTrigger = ResourceTrigger()
    database_failures: DatabaseTrigger = DatabaseTrigger()
    outage: OutageTrigger = OutageTrigger()
    fast_p0: FastP0Trigger = FastP0Trigger()
    auth_failures: AuthFailureTrigger = AuthFailureTrigger()

    def scaled(self, seconds: float) -> float:
        return seconds * self.time_scale


# --------------------------------------------------------------------------------------------
# People and channels
# --------------------------------------------------------------------------------------------

ChannelKind = Literal["webhook", "slack", "pagerduty", "smtp", "sms", "statuspage", "in_app"]


class ChannelConfig(_Model):
    kind: ChannelKind
    url: str | None = None
    # A Prefect notification block (SlackWebhook, PagerDutyWebHook, ...) used instead of url.
    block: str | None = None
    token: Secret | None = None
    # smtp
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: Secret | None = None
    smtp_starttls: bool = False
    sender: str = "tbs-emergency@localhost"
    timeout_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _target(self) -> ChannelConfig:
        if self.kind == "smtp":
            if not self.smtp_host:
                raise ValueError("an smtp channel needs smtp_host")
        elif not (self.url or self.block):
            raise ValueError(f"a {self.kind} channel needs url or block")
        return self


Role = Literal["primary", "secondary", "escalation", "security", "stakeholder", "users"]


class ContactConfig(_Model):
    name: str
    role: Role
    phone: str | None = None
    email: str | None = None
    channels: list[str] = Field(default_factory=list)
    response_minutes: float | None = None
    verified_at: str | None = None


# --------------------------------------------------------------------------------------------
# Integrity and drills
# --------------------------------------------------------------------------------------------


class IntegrityTable(_Model):
    name: str
    key: list[str]
    columns: list[str] = Field(default_factory=list)  # empty: every column
    critical: bool = False
    heavydb_name: str | None = None
    mysql_name: str | None = None
    updated_column: str | None = None  # watermark for environment sync
    # The keys each environment's application mints in this table: inclusive ranges of the
    # first key column (integers), e.g. `{ blue = [1e15, 2e15 - 1], green = [2e15, 3e15 - 1] }`
    # written out. Without green's ledger a rollback carries, from green's MySQL, the rows of
    # green's range that blue lacks (docs/rollback.md "No lost writes, sessions moved").
    write_ranges: dict[str, tuple[int, int]] = Field(default_factory=dict)

    @field_validator("write_ranges")
    @classmethod
    def _ranges_disjoint(cls, v: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        for env, (lo, hi) in v.items():
            if lo >= hi:
                raise ValueError(f"write_ranges.{env}: [{lo}, {hi}] is empty or a single key")
        spans = sorted((lo, hi, env) for env, (lo, hi) in v.items())
        for (_, hi, a), (lo, _, b) in itertools.pairwise(spans):
            if lo <= hi:
                raise ValueError(f"write_ranges: {a} and {b} overlap (keys must never collide)")
        return v

    @field_validator("key", mode="before")
    @classmethod
    def _key_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("key")
    @classmethod
    def _key_nonempty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("a table needs at least one key column")
        return v


class IntegrityConfig(_Model):
    sample_size: int = Field(1000, ge=1)
    tables: list[IntegrityTable] = Field(default_factory=list)


class DrillsConfig(_Model):
    target: Literal["sandbox", "staging", "production"] = "sandbox"
    allow_production: bool = False
    time_scale: float = Field(1.0, gt=0)
    rto_manual_s: float = 900.0
    rto_automated_s: float = 180.0
    # The runbook sets no RPO target; drill charts draw one only when this is set.
    rpo_target_s: float | None = Field(None, gt=0)
    # Contacts whose details were confirmed (verified_at) longer ago than this are stale.
    contact_stale_days: float = Field(30.0, gt=0)
    # Communication drill: how long to wait for acknowledgements, and what it never posts to
    # (a public status page, every user) - those are listed as skipped, not tested.
    communication_ack_wait: Duration = 900.0
    communication_skip_kinds: list[ChannelKind] = Field(default_factory=lambda: ["statuspage"])
    communication_skip_roles: list[Role] = Field(default_factory=lambda: ["users"])
    # "Last Updated" of the emergency procedures (runbook footer), for the quarterly review.
    procedures_updated: str | None = "2025-01-24"
    # Recovery drill: where the newest backup is restored (always a scratch target).
    recovery_environment: str = "blue"

    @model_validator(mode="after")
    def _production_is_explicit(self) -> DrillsConfig:
        if self.target == "production" and not self.allow_production:
            raise ValueError("drills.target is production but drills.allow_production is false")
        return self


class PrefectConfig(_Model):
    api_url: str | None = None
    work_pool: str = "tbs-emergency"
    # How long the CLI waits for the Prefect API before acting without it (connect, seconds).
    connect_timeout_s: float = Field(1.0, gt=0)


def default_spool_dir() -> Path:
    """A per-user state directory: $XDG_STATE_HOME/tbs-emergency/journal-spool."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tbs-emergency" / "journal-spool"


class JournalConfig(_Model):
    """The incident journal's local spool: where entries go while the object store is down
    (files fsync'd, mode 0600, directory 0700), flushed to the store when it is back."""

    spool_dir: Path | None = None  # default: default_spool_dir()
    # After a store failure, appends go straight to the spool for this long before the store
    # is tried again (no emergency step waits on a store known to be down).
    retry_after_s: float = Field(30.0, ge=0)
    # Each journal call to the store is abandoned after this long (a hung store, not only a
    # refused one, must not hold a rollback step); 0: only the store's own timeouts.
    store_timeout_s: float = Field(5.0, ge=0)

    @property
    def spool_path(self) -> Path:
        return Path(self.spool_dir).expanduser() if self.spool_dir else default_spool_dir()


# --------------------------------------------------------------------------------------------
# Database emergency procedures (docs/database-emergency.md)
# --------------------------------------------------------------------------------------------


class PriorityUsers(_Model):
    """Accounts whose connections are never closed and whose logins are never disabled."""

    mysql: list[str] = Field(default_factory=list)
    heavydb: list[str] = Field(default_factory=list)


class DatabaseAdminAccount(_Model):
    """The account server-level steps run as (MySQL: SUPER or CONNECTION ADMIN, RELOAD,
    PROCESS, SELECT on mysql.*, and GRANT OPTION on the archive schema)."""

    user: str
    password: Secret | None = None


class RestartableService(_Model):
    """A service `db reset-cache --restart-services` may restart, with its health probe."""

    name: str
    # argv, run without a shell, e.g. ["systemctl", "restart", "heavydb"]
    command: list[str] = Field(min_length=1)
    # healthy when GET health_url answers 2xx, or when health_tcp ("host:port") accepts
    health_url: str | None = None
    health_tcp: str | None = None
    timeout_s: Duration = 60.0

    @model_validator(mode="after")
    def _has_probe(self) -> RestartableService:
        if not (self.health_url or self.health_tcp):
            raise ValueError(f"service {self.name!r} needs health_url or health_tcp")
        return self


class DatabaseEmergencyConfig(_Model):
    priority_users: PriorityUsers = PriorityUsers()
    max_connections: int = Field(10, ge=1)
    # Slots of max_connections kept free so priority users can always log in.
    priority_reserve: int = Field(2, ge=0)
    transaction_timeout: Duration = 60.0
    poll_interval: Duration = 1.0
    # None: the environment's own MySQL account (usually lacks the privileges: say so).
    mysql_admin: DatabaseAdminAccount | None = None
    # The schema `db protect-archive` makes read-only (default: each environment's database).
    archive_schema: str | None = None
    # FLUSH TABLES waits at most this long for table locks.
    flush_lock_wait_s: Duration = 10.0
    services: list[RestartableService] = Field(default_factory=list)
    # Environment sync: integrity.tables names (empty: the ones marked critical).
    sync_tables: list[str] = Field(default_factory=list)
    sync_batch_size: int = Field(1000, ge=1, le=100_000)
    # `db sync` refuses (exit 2, nothing written) to delete more than this share of a target
    # table's rows unless --allow-mass-delete: an empty or truncated source never wipes it.
    sync_max_delete_share: float = Field(0.01, ge=0, le=1)


# --------------------------------------------------------------------------------------------
# Recovery validation (docs/validation-and-drills.md)
# --------------------------------------------------------------------------------------------


class ValidationUser(_Model):
    """A sample account the functional and concurrent-user checks log in as."""

    username: str
    password: Secret
    role: str | None = None


class DbPerformanceValidation(_Model):
    """`test-db-performance.sh --duration=60s`: a real insert + read-back workload on a scratch
    table (`tbs_validation_*`, dropped afterwards) in each engine, in rows/s, against a baseline.

    The runbook's 37,303 rows/s is the platform's throughput; set `baseline_rows_per_s` to what
    this workload achieves on a healthy environment of the same size (the sandbox on 2 cores
    is far below it). `platform_throughput` also reports the rate Prometheus has for the
    environment (the signal the rollback triggers compare with triggers.performance_degradation).
    """

    enabled: bool = True
    duration: Duration = 60.0
    engines: list[Literal["heavydb", "mysql"]] = Field(default_factory=lambda: ["heavydb", "mysql"])
    batch_rows: int = Field(1000, ge=1, le=100_000)
    baseline_rows_per_s: float = Field(37303.0, gt=0)
    max_degradation_percent: Percent = 25.0
    # MySQL account with CREATE/DROP on the archive schema (the application account usually
    # lacks them); None: database_emergency.mysql_admin, else the environment's account.
    mysql_account: DatabaseAdminAccount | None = None
    platform_throughput: bool = True


class ApiValidation(_Model):
    """`test-api-response.sh --endpoints=critical --samples=100`."""

    enabled: bool = True
    samples: int = Field(100, ge=1)
    endpoints: list[str] = Field(
        default_factory=lambda: ["/health", "/api/trades?limit=20", "/"], min_length=1
    )
    p50_ms: float | None = Field(250.0, gt=0)
    p95_ms: float | None = Field(1000.0, gt=0)
    p99_ms: float | None = Field(2000.0, gt=0)
    max_error_percent: Percent = 1.0
    timeout_s: float = Field(10.0, gt=0)


class UiValidation(_Model):
    """`test-ui-load.sh --pages=critical --samples=10`: the page and its same-origin assets."""

    enabled: bool = True
    samples: int = Field(10, ge=1)
    pages: list[str] = Field(default_factory=lambda: ["/"], min_length=1)
    mean_ms: float | None = Field(2000.0, gt=0)
    p95_ms: float | None = Field(3000.0, gt=0)
    max_error_percent: Percent = 0.0
    timeout_s: float = Field(15.0, gt=0)


class ConcurrencyValidation(_Model):
    """`test-concurrent-users.sh --users=20 --duration=300s`: each simulated user logs in (as a
    sample user, in turn) and repeats the critical requests until the time is up."""

    enabled: bool = True
    users: int = Field(20, ge=1, le=1000)
    duration: Duration = 300.0
    think_time: Duration = 0.2
    requests: list[str] = Field(
        default_factory=lambda: ["/api/me", "/api/trades?limit=20", "/health"], min_length=1
    )
    p95_ms: float | None = Field(2000.0, gt=0)
    max_error_percent: Percent = 1.0
    timeout_s: float = Field(10.0, gt=0)


class ValidationConfig(_Model):
    performance: DbPerformanceValidation = DbPerformanceValidation()
    api: ApiValidation = ApiValidation()
    ui: UiValidation = UiValidation()
    concurrency: ConcurrencyValidation = ConcurrencyValidation()
    users: list[ValidationUser] = Field(default_factory=list)
    # Strategies the trading checks cover; empty: every strategy `strategies_query` finds (MySQL).
    strategies: list[int | str] = Field(default_factory=list)
    strategies_query: str | None = DEFAULT_STRATEGIES_QUERY
    uploads: list[UploadSample] = Field(default_factory=lambda: list(DEFAULT_UPLOADS))
    functional: list[FunctionalCheck] = Field(default_factory=default_functional_checks)
    http_timeout_s: float = Field(10.0, gt=0)


# --------------------------------------------------------------------------------------------
# Security incident response, compromised accounts, lockdown (docs/security.md)
# --------------------------------------------------------------------------------------------


class LockdownConfig(_Model):
    """`lockdown` (runbook: "System-Wide Security Lockdown"); every step is lifted in reverse."""

    # The key the application checks before a login (exists: new logins are refused, sessions
    # that exist keep working); set in every distinct Redis of the environments.
    login_flag_key: str = "tbs:lockdown"
    # `restrict-network-access.sh --internal-only`: the load balancer serves these only.
    internal_networks: list[str] = Field(
        default_factory=lambda: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8"],
        min_length=1,
    )
    # `protect-api-endpoints.sh --rate-limit-aggressive`: requests per minute per client.
    rate_limit_per_minute: int = Field(60, ge=1)
    rate_limit_paths: list[str] = Field(default_factory=lambda: ["/api/", "/login", "/upload"])
    # `restrict-db-access.sh --read-only --authorized-ips-only`: MySQL accounts whose host is
    # one of these (and the users named below) keep their write privileges; every other
    # account loses them on the schemas (default: each environment's MySQL database).
    db_authorized_hosts: list[str] = Field(default_factory=lambda: ["localhost"])
    db_authorized_users: list[str] = Field(default_factory=list)
    db_schemas: list[str] = Field(default_factory=list)

    @field_validator("internal_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        import ipaddress

        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not a network (CIDR such as 10.0.0.0/8)") from None
        return v


class ServiceAccount(_Model):
    """A database service account `rotate-credentials` rotates. Its password must live in a
    Prefect Secret block (`{ block = "name" }`): the new one is written there."""

    engine: Literal["mysql", "heavydb"]
    user: str
    password: Secret
    # The environment whose configuration reaches the server (shared servers: any of them).
    environment: str = "blue"
    # MySQL: the account hosts to change (empty: every host the user exists at).
    hosts: list[str] = Field(default_factory=list)


class PrivilegePolicy(_Model):
    """What `account_compromise` reviews an account's privileges against."""

    # MySQL user -> privileges it may hold (upper case, "ALL" allows anything). A user not named
    # here may hold no global privilege and nothing beyond SELECT, INSERT, UPDATE, DELETE.
    mysql: dict[str, list[str]] = Field(default_factory=dict)
    # HeavyDB users that may be superusers.
    heavydb_superusers: list[str] = Field(default_factory=lambda: ["admin"])
    # Application roles that are privileged, and the users allowed to hold them.
    app_privileged_roles: list[str] = Field(default_factory=lambda: ["admin", "security"])
    app_privileged_users: list[str] = Field(default_factory=list)


class AssessmentConfig(_Model):
    """Thresholds of the access-log and database-activity analysis."""

    window: Duration = 3600.0  # security assessment: the last hour
    user_window: Duration = 86400.0  # compromised account: the last 24 hours
    failed_login_burst: int = Field(5, ge=1)  # failed logins of one user or source ...
    burst_window: Duration = 60.0  # ... within this long
    volume_spike_factor: float = Field(3.0, gt=1)  # requests in a minute over N x the median
    volume_min_requests: int = Field(30, ge=1)  # ... and at least this many


class AppDbUsers(_Model):
    """The application's database accounts, whose privileges isolation revokes."""

    mysql: list[str] = Field(default_factory=list)  # empty: the environment's mysql.user
    heavydb: list[str] = Field(default_factory=list)  # empty: the environment's heavydb.user


class SecurityConfig(_Model):
    # Evidence: `<evidence_prefix>/<incident>/...` in storage.bucket (or evidence_bucket, which
    # must have S3 Object Lock enabled), locked for evidence_retention_days (default:
    # storage.evidence_retention_days) in evidence_lock_mode.
    evidence_prefix: str = "evidence"
    evidence_bucket: str | None = None
    evidence_retention_days: int | None = Field(None, ge=1)
    evidence_lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = "COMPLIANCE"
    metrics_window: Duration = 3600.0  # the Prometheus snapshot: the last hour ...
    metrics_step: Duration = 15.0  # ... at this resolution
    # The environment a security incident isolates (green = the new release).
    affected_environment: str = "green"
    # Revoke the app accounts' privileges also where the affected environment's database is
    # shared with the other one (that cuts the other environment off too).
    isolate_shared_databases: bool = False
    app_db_users: AppDbUsers = AppDbUsers()
    # The application's login audit (a Redis list of JSON entries, newest first).
    login_audit_key: str = "tbs:audit:logins"
    # Who the security notification goes to (contacts by role); none configured: primary and
    # escalation, and the journal says so.
    notify_roles: list[Role] = Field(default_factory=lambda: ["security"])
    password_length: int = Field(32, ge=16, le=128)
    service_accounts: list[ServiceAccount] = Field(default_factory=list)
    privilege_policy: PrivilegePolicy = PrivilegePolicy()
    assessment: AssessmentConfig = AssessmentConfig()
    lockdown: LockdownConfig = LockdownConfig()

    @field_validator("evidence_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        v = v.strip("/")
        if not v:
            raise ValueError("evidence_prefix cannot be empty")
        return v

    def retention_days(self, storage: StorageConfig) -> int:
        return self.evidence_retention_days or storage.evidence_retention_days


# --------------------------------------------------------------------------------------------
# The whole file
# --------------------------------------------------------------------------------------------


class Settings(BaseSettings):
    """Everything `tbs.toml` holds."""

    model_config = SettingsConfigDict(
        env_prefix="TBS_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    environments: dict[str, EnvironmentConfig]
    traffic: TrafficConfig
    storage: StorageConfig
    metrics: MetricsConfig
    triggers: TriggersConfig = TriggersConfig()
    watchdog: WatchdogConfig = WatchdogConfig()
    channels: dict[str, ChannelConfig] = Field(default_factory=dict)
    contacts: list[ContactConfig] = Field(default_factory=list)
    integrity: IntegrityConfig = IntegrityConfig()
    drills: DrillsConfig = DrillsConfig()
    prefect: PrefectConfig = PrefectConfig()
    journal: JournalConfig = JournalConfig()
    database_emergency: DatabaseEmergencyConfig = DatabaseEmergencyConfig()
    validation: ValidationConfig = ValidationConfig()
    security: SecurityConfig = SecurityConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (the file arrives as init kwargs).
        return (env_settings, init_settings)

    @field_validator("environments")
    @classmethod
    def _blue_and_green(cls, v: dict[str, EnvironmentConfig]) -> dict[str, EnvironmentConfig]:
        missing = [n for n in ("blue", "green") if n not in v]
        if missing:
            raise ValueError(
                f"environments must define blue and green (missing: {', '.join(missing)})"
            )
        return v

    @model_validator(mode="after")
    def _references(self) -> Settings:
        for i, contact in enumerate(self.contacts):
            for ch in contact.channels:
                if ch not in self.channels:
                    raise ValueError(f"contacts[{i}] ({contact.name}) names unknown channel {ch!r}")
        sec = self.security
        envs = set(self.environments)
        if sec.affected_environment not in envs:
            raise ValueError(
                f"security.affected_environment: no environment {sec.affected_environment!r}"
            )
        for i, acct in enumerate(sec.service_accounts):
            if acct.environment not in envs:
                raise ValueError(
                    f"security.service_accounts[{i}] ({acct.user}): no environment"
                    f" {acct.environment!r}"
                )
        return self

    def environment(self, name: str) -> EnvironmentConfig:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments))
            raise ConfigError([f"environments: no environment {name!r} (known: {known})"]) from None

    def shares_database(self, a: str, b: str, kind: Literal["mysql", "heavydb"]) -> bool:
        """Whether two environments point at the same database (sync is then a no-op)."""
        ea, eb = self.environment(a), self.environment(b)
        return getattr(ea, kind).identity == getattr(eb, kind).identity


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    if path:
        return Path(path)
    return Path(os.environ.get("TBS_CONFIG") or "tbs.toml")


def _format_errors(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"] if p not in ("function-after", "function-before")]
        loc = ".".join(parts)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{loc or '(top level)'}: {msg}{_from_environment(parts)}")
    return lines


def _from_environment(parts: list[str]) -> str:
    """Where a value came from the environment (TBS_A__B... set for it or a level above), say
    which variable: its value is never shown (it may hold a secret)."""
    for n in range(len(parts), 0, -1):
        name = "TBS_" + "__".join(parts[:n]).upper()
        if any(k.upper() == name for k in os.environ):
            return f" (from the environment variable {name})"
    return ""


_SETTINGS_ERROR_FIELD = re.compile(r'field "([^"]+)"')


def _settings_error(exc: Exception) -> list[str]:
    """pydantic-settings' parse error (a complex field's TBS_* value that is not JSON) as one
    line naming the variable; the value is never shown (it may hold a secret)."""
    m = _SETTINGS_ERROR_FIELD.search(str(exc))
    field = m.group(1) if m else None
    var = f"TBS_{field.upper()}" if field else "a TBS_* environment variable"
    return [
        f"{var}: not valid JSON (a section from the environment is a JSON object; or set one"
        f" field, e.g. TBS_ENVIRONMENTS__GREEN__MYSQL__PORT=3307)"
    ]


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read and validate the configuration; raise ConfigError with one line per problem."""
    from pydantic_settings import SettingsError

    p = config_path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            [f"{p}: no such file (give --config PATH or set TBS_CONFIG)"], str(p)
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"{p}: not UTF-8 text (byte {exc.start}): save it as UTF-8"], str(p)
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{p}: not valid TOML: {exc}"], str(p)) from None
    except IsADirectoryError:
        raise ConfigError([f"{p}: is a directory, not a tbs.toml"], str(p)) from None
    except OSError as exc:
        raise ConfigError([f"{p}: cannot be read: {exc.strerror}"], str(p)) from None
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc), str(p)) from None
    except SettingsError as exc:
        raise ConfigError(_settings_error(exc), str(p)) from None
