"""Cache reset and service restarts, each followed by a health probe; targets per server."""

from __future__ import annotations

import pytest

from tbs_emergency.config import RestartableService, Settings
from tbs_emergency.connectors.base import Probe
from tbs_emergency.dbops import cache
from tbs_emergency.dbops.targets import ServerTarget, resolve_engines, server_targets
from tbs_emergency.errors import ConfigError, Refused

pytestmark = pytest.mark.unit

H = ServerTarget(engine="heavydb", name="heavydb[blue]", server="heavydb://h:1", envs=["blue"])
M = ServerTarget(engine="mysql", name="mysql[blue]", server="mysql://m:1", envs=["blue"])


class FakeHeavy:
    name = "heavydb[blue]"

    def __init__(self, gpu: bool = True, healthy: bool = True) -> None:
        self.gpu, self.healthy = gpu, healthy
        self.calls: list[str] = []

    def clear_gpu_memory(self) -> None:
        if not self.gpu:
            raise Refused(self.name, "clear GPU memory", "CPU-only server")
        self.calls.append("gpu")

    def clear_cpu_memory(self) -> None:
        self.calls.append("cpu")

    def ping(self) -> Probe:
        return Probe(self.name, self.healthy, 1.0 if self.healthy else None, "probe detail")


class FakeMySQL:
    name = "mysql[blue]"

    def __init__(self, query_cache: bool) -> None:
        self.query_cache = query_cache
        self.calls: list[str] = []

    def flush_tables(self, lock_wait_s: float) -> None:
        self.calls.append(f"flush {lock_wait_s:g}")

    def reset_query_cache(self) -> bool:
        self.calls.append("reset")
        return self.query_cache

    def ping(self) -> Probe:
        return Probe(self.name, True, 1.0, "ok")


def test_heavydb_reset_clears_both_memories_and_probes() -> None:
    db = FakeHeavy()
    result = cache.reset_heavydb(db, H)  # type: ignore[arg-type]
    assert db.calls == ["gpu", "cpu"] and result.ok
    assert result.health is not None and result.health.healthy


def test_cpu_only_server_and_failed_probe_are_problems() -> None:
    db = FakeHeavy(gpu=False, healthy=False)
    result = cache.reset_heavydb(db, H)  # type: ignore[arg-type]
    assert db.calls == ["cpu"]
    assert len(result.problems) == 2
    assert "unhealthy after the reset" in result.problems[1]


def test_mysql_reset_flushes_and_says_when_the_query_cache_is_off() -> None:
    db = FakeMySQL(query_cache=False)
    result = cache.reset_mysql(db, M, clear_query_cache=True, lock_wait_s=3)  # type: ignore[arg-type]
    assert db.calls == ["flush 3", "reset"] and result.ok
    assert result.actions[-1].outcome == "unchanged"
    assert "off" in result.actions[-1].detail
    only_flush = FakeMySQL(query_cache=True)
    cache.reset_mysql(only_flush, M)  # type: ignore[arg-type]
    assert only_flush.calls == ["flush 10"]


def test_dry_run_plans_only() -> None:
    db = FakeHeavy()
    result = cache.reset_heavydb(db, H, dry_run=True)  # type: ignore[arg-type]
    assert db.calls == [] and [a.outcome for a in result.actions] == ["planned", "planned"]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


SERVICE = RestartableService(
    name="heavydb", command=["systemctl", "restart", "heavydb"], health_tcp="h:6274", timeout_s=10
)


def test_restart_then_probe_until_healthy() -> None:
    clock = Clock()
    ran: list[list[str]] = []

    def run(argv: list[str], timeout: float) -> tuple[int, str]:
        ran.append(argv)
        return 0, "restarted\n"

    result = cache.restart_service(
        SERVICE,
        run=run,
        probe=lambda: (clock() >= 3, f"t={clock():g}"),
        clock=clock,
        sleep=clock.sleep,
    )
    assert ran == [["systemctl", "restart", "heavydb"]]
    assert result.ok and result.health is not None and result.health.healthy
    assert clock() == 3


def test_restart_that_never_gets_healthy_is_a_problem() -> None:
    clock = Clock()
    result = cache.restart_service(
        SERVICE,
        run=lambda a, t: (1, "boom"),
        probe=lambda: (False, "refused"),
        clock=clock,
        sleep=clock.sleep,
    )
    assert not result.ok
    assert any("exit code 1" in p for p in result.problems)
    assert any("not healthy" in p for p in result.problems)


def test_service_needs_a_probe() -> None:
    with pytest.raises(ValueError, match="health_url or health_tcp"):
        RestartableService(name="x", command=["true"])


def settings(green_mysql_port: int = 3306, green_db: str = "tbs_archive") -> Settings:
    def env(port: int, db: str) -> dict:
        return {
            "app_url": "http://a",
            "heavydb": {"host": "h", "port": 6274},
            "mysql": {"host": "m", "port": port, "database": db},
            "redis": {"url": "redis://r:6379/0"},
        }

    return Settings(
        environments={"blue": env(3306, "tbs_archive"), "green": env(green_mysql_port, green_db)},
        traffic={"kind": "http", "url": "http://lb"},
        storage={"bucket": "b"},
        metrics={"prometheus_url": "http://p"},
    )


def test_targets_are_one_per_server_named_after_every_environment_on_it() -> None:
    shared = server_targets(settings(green_db="tbs_green"), ["mysql", "heavydb"])
    assert [(t.name, t.envs) for t in shared] == [
        ("mysql[blue,green]", ["blue", "green"]),
        ("heavydb[blue,green]", ["blue", "green"]),
    ]
    split = server_targets(settings(green_mysql_port=3307), ["mysql"], ["green"])
    assert [(t.name, t.server, t.key) for t in split] == [
        ("mysql[green]", "mysql://m:3307", "m-3307")
    ]
    assert resolve_engines(False, False) == ["mysql", "heavydb"]
    assert resolve_engines(False, True) == ["heavydb"]
    with pytest.raises(ConfigError, match="no environment 'purple'"):
        server_targets(settings(), ["mysql"], ["purple"])


def test_servers_reached_through_different_addresses_are_one_target() -> None:
    # blue and green reach one MySQL server through their own proxies (different ports)
    cfg = settings(green_mysql_port=3307)
    said = {"blue": "db1:3306", "green": "db1:3306"}
    both = server_targets(cfg, ["mysql"], identify=lambda _e, env: said[env])
    assert [(t.name, t.server, t.envs) for t in both] == [
        ("mysql[blue,green]", "mysql://m:3306", ["blue", "green"])
    ]
    # naming only green still gives the same target (and so the same record key)
    only_green = server_targets(cfg, ["mysql"], ["green"], identify=lambda _e, env: said[env])
    assert [(t.name, t.key, t.envs) for t in only_green] == [
        ("mysql[blue,green]", both[0].key, ["green"])
    ]
    # a server that cannot be asked stands for itself by its address
    unknown = server_targets(cfg, ["mysql"], identify=lambda _e, _env: None)
    assert [t.name for t in unknown] == ["mysql[blue]", "mysql[green]"]


def test_database_emergency_defaults() -> None:
    de = settings().database_emergency
    assert de.max_connections == 10 and de.transaction_timeout == 60.0
    assert de.priority_reserve == 2 and de.priority_users.mysql == []
