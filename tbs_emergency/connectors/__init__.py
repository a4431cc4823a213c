"""Connectors: one module per external system, each behind a Protocol of `base.py`.

`Connectors(settings)` hands out the connector of each system, built on first use and cached.
Databases and Redis shared by several environments (same identity in the config) are one
connector named after all of them, e.g. `mysql[blue,green]`; otherwise `mysql[blue]`.
`probe_all(settings)` probes every configured system at once (what `config check` shows).

Driver modules (pymysql, heavydb, boto3, redis, httpx) are imported inside the connector
modules only, when first used, so importing this package is cheap.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Literal

from tbs_emergency.config import Settings
from tbs_emergency.connectors.base import Notifier, Probe
from tbs_emergency.errors import TbsError

if TYPE_CHECKING:
    from tbs_emergency.connectors.app import HttpApp
    from tbs_emergency.connectors.exposition import MetricsEndpoint
    from tbs_emergency.connectors.heavydb import HeavyDBDatabase
    from tbs_emergency.connectors.metrics import PrometheusMetrics
    from tbs_emergency.connectors.mysql import MySQLDatabase
    from tbs_emergency.connectors.objectstore import S3ObjectStore
    from tbs_emergency.connectors.sessions import RedisSessions
    from tbs_emergency.connectors.traffic import HttpTraffic

__all__ = ["Connectors", "probe_all", "system_name"]

SharedKind = Literal["heavydb", "mysql", "redis"]


def _identity(settings: Settings, kind: SharedKind, env: str) -> str:
    return getattr(settings.environment(env), kind).identity


def sharing(settings: Settings, kind: SharedKind, env: str) -> list[str]:
    """The environments (sorted) that use the same system of this kind as env."""
    ident = _identity(settings, kind, env)
    return sorted(n for n in settings.environments if _identity(settings, kind, n) == ident)


def system_name(settings: Settings, kind: SharedKind, env: str) -> str:
    """`mysql[blue]`, or `mysql[blue,green]` when both use the same database."""
    return f"{kind}[{','.join(sharing(settings, kind, env))}]"


class Connectors:
    """The connectors of one configuration, built on first use and cached (thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _cached(self, key: str, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]

    def _shared(self, kind: SharedKind, env: str, build: Callable[[Any, str], Any]) -> Any:
        envs = sharing(self.settings, kind, env)
        first = envs[0]
        config = getattr(self.settings.environment(first), kind)
        name = f"{kind}[{','.join(envs)}]"
        return self._cached(f"{kind}:{config.identity}", lambda: build(config, name))

    def heavydb(self, env: str) -> HeavyDBDatabase:
        from tbs_emergency.connectors.heavydb import HeavyDBDatabase

        return self._shared("heavydb", env, HeavyDBDatabase)

    def mysql(self, env: str) -> MySQLDatabase:
        from tbs_emergency.connectors.mysql import MySQLDatabase

        return self._shared("mysql", env, MySQLDatabase)

    def sessions(self, env: str) -> RedisSessions:
        from tbs_emergency.connectors.sessions import RedisSessions

        return self._shared("redis", env, RedisSessions)

    def app(self, env: str) -> HttpApp:
        from tbs_emergency.connectors.app import HttpApp

        cfg = self.settings.environment(env)
        return self._cached(
            f"app:{env}", lambda: HttpApp(cfg.app_url, cfg.timeout_s, f"app[{env}]")
        )

    def traffic(self) -> HttpTraffic:
        from tbs_emergency.connectors.traffic import make_traffic

        cfg = self.settings.traffic
        if cfg.kind == "haproxy":  # HAProxy runtime API (connectors/traffic_haproxy.py)
            from tbs_emergency.connectors.traffic_haproxy import HAProxyTraffic

            return self._cached("traffic", lambda: HAProxyTraffic(cfg))  # type: ignore[no-any-return]
        if cfg.kind == "alb":  # AWS ALB weighted target groups (connectors/traffic_alb.py)
            from tbs_emergency.connectors.traffic_alb import AlbTraffic

            return self._cached("traffic", lambda: AlbTraffic(cfg))  # type: ignore[no-any-return]
        return self._cached("traffic", lambda: make_traffic(cfg))

    def metrics(self) -> PrometheusMetrics:
        from tbs_emergency.connectors.metrics import PrometheusMetrics

        return self._cached("metrics", lambda: PrometheusMetrics(self.settings.metrics))

    def lb_metrics(self) -> MetricsEndpoint:
        """The load balancer's per-backend metrics (traffic.metrics_url, default /_lb/metrics)."""
        from tbs_emergency.connectors.exposition import MetricsEndpoint
        from tbs_emergency.errors import ConfigError

        cfg = self.settings.traffic
        url = cfg.backend_metrics_url
        if not url:
            raise ConfigError("traffic.metrics_url is not set (the load balancer's metrics)")
        return self._cached(  # type: ignore[no-any-return]
            "lb-metrics", lambda: MetricsEndpoint(url, cfg.timeout_s, "lb-metrics")
        )

    def app_metrics(self, env: str) -> MetricsEndpoint:
        """The application's own `/metrics` of one environment (read directly)."""
        from tbs_emergency.connectors.exposition import MetricsEndpoint

        cfg = self.settings.environment(env)
        url = cfg.app_url.rstrip("/") + "/metrics"
        return self._cached(  # type: ignore[no-any-return]
            f"app-metrics:{env}", lambda: MetricsEndpoint(url, cfg.timeout_s, f"app-metrics[{env}]")
        )

    def store(self) -> S3ObjectStore:
        from tbs_emergency.connectors.objectstore import S3ObjectStore

        return self._cached("store", lambda: S3ObjectStore(self.settings.storage))

    def notifier(self, channel: str) -> Notifier:
        from tbs_emergency.connectors.pagerduty import make_extra_notifier
        from tbs_emergency.errors import ConfigError

        try:
            config = self.settings.channels[channel]
        except KeyError:
            known = ", ".join(sorted(self.settings.channels)) or "none"
            raise ConfigError([f"channels: no channel {channel!r} (known: {known})"]) from None
        return self._cached(f"notify:{channel}", lambda: make_extra_notifier(channel, config))

    def close(self) -> None:
        """Close every connection opened so far (errors while closing are ignored)."""
        with self._lock:
            items = list(self._cache.values())
            self._cache.clear()
        for item in items:
            close = getattr(item, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    def __enter__(self) -> Connectors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- probes -------------------------------------------------------------------------------

    def probe_plan(self) -> list[tuple[str, float, Callable[[], Probe]]]:
        """(system, timeout_s, probe) for every configured system, shared ones once."""
        s = self.settings
        plan: list[tuple[str, float, Callable[[], Probe]]] = []
        seen: set[str] = set()
        for kind in ("heavydb", "mysql", "redis"):
            for env in sorted(s.environments):
                name = system_name(s, kind, env)  # type: ignore[arg-type]
                if name in seen:
                    continue
                seen.add(name)
                cfg = getattr(s.environment(env), kind)
                opener = {"heavydb": self.heavydb, "mysql": self.mysql, "redis": self.sessions}[
                    kind
                ]
                plan.append((name, cfg.timeout_s, _pinger(opener, env)))
        for env in sorted(s.environments):
            plan.append((f"app[{env}]", s.environment(env).timeout_s, _pinger(self.app, env)))
        plan.append(("traffic", s.traffic.timeout_s, _pinger(self.traffic)))
        plan.append(("prometheus", s.metrics.timeout_s, _pinger(self.metrics)))
        plan.append(("s3", s.storage.timeout_s, _pinger(self.store)))
        for channel, ch in sorted(s.channels.items()):
            name = f"notify[{channel}]"
            if ch.block:
                detail = f"not probed here: sent through Prefect block {ch.block!r}"
                answer = Probe(name, True, None, detail)
                plan.append((name, ch.timeout_s, _answer(answer)))
            else:
                plan.append((name, ch.timeout_s, _pinger(self.notifier, channel)))
        return plan


def _answer(probe: Probe) -> Callable[[], Probe]:
    def run() -> Probe:
        return probe

    return run


def _pinger(opener: Callable[..., Any], *args: Any) -> Callable[[], Probe]:
    """A probe that opens the connector (inside the probe, so its errors are answers) and pings."""

    def run() -> Probe:
        result: Probe = opener(*args).ping()
        return result

    return run


def _guarded(system: str, fn: Callable[[], Probe]) -> Probe:
    """A probe never raises: configuration and connector errors become its answer."""
    try:
        return fn()
    except TbsError as exc:
        return Probe(system, False, None, str(exc))
    except Exception as exc:  # a bug in a connector must not hide the other systems
        return Probe(system, False, None, f"probe failed: {type(exc).__name__}: {exc}")


def probe_all(settings: Settings, connectors: Connectors | None = None) -> list[Probe]:
    """Probe every configured system concurrently; one Probe each, in a stable order.

    Each probe is bounded by its connector's timeouts; a probe still running after three times
    its timeout (connect, login, query) is reported unreachable and left behind.
    """
    own = connectors is None
    conn = connectors or Connectors(settings)
    plan = conn.probe_plan()
    pool = ThreadPoolExecutor(max_workers=min(16, max(1, len(plan))), thread_name_prefix="probe")
    futures: list[Any] = []
    try:
        futures = [pool.submit(_guarded, name, fn) for name, _, fn in plan]
        deadline = time.monotonic() + max(t for _, t, _ in plan) * 3 + 1.0
        wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        probes: list[Probe] = []
        for (name, timeout_s, _), future in zip(plan, futures, strict=True):
            if future.done():
                probes.append(future.result())
            else:
                probes.append(
                    Probe(name, False, None, f"timed out: no answer in {timeout_s * 3:g}s")
                )
        return probes
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        # A probe still running holds its connector's lock: leave those to the garbage collector.
        if own and all(f.done() for f in futures):
            conn.close()
