"""Cache and performance reset (runbook: `heavydb-reset-cache.sh --clear-query-cache
--restart-services`).

- HeavyDB: `clear_gpu_memory` then `clear_cpu_memory` (the buffer pools, and with them the cached
  query data); a server without GPUs answers the GPU call with an error, reported as such.
- MySQL: `FLUSH TABLES` (closes and reopens every table, writes the MyISAM/Aria key buffers),
  bounded by a lock wait; with `clear_query_cache` also `RESET QUERY CACHE` (when the server has
  a query cache switched on; otherwise the report says there was nothing to clear).
- Services: only when asked, each configured service's restart command, then its health probe
  until healthy or its timeout.

Every reset is followed by a probe of what was reset; a reset whose probe fails is a problem.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from tbs_emergency.config import RestartableService
from tbs_emergency.connectors.base import HeavyDBEmergencyAdmin, MySQLEmergencyAdmin, Probe
from tbs_emergency.dbops.actions import Action, ActionLog
from tbs_emergency.dbops.targets import ServerTarget


class HealthAfter(BaseModel):
    system: str
    healthy: bool
    detail: str
    latency_ms: float | None = None


class ResetResult(BaseModel):
    system: str
    dry_run: bool
    actions: list[Action] = Field(default_factory=list)
    health: HealthAfter | None = None
    problems: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _health(p: Probe) -> HealthAfter:
    return HealthAfter(
        system=p.system, healthy=p.reachable, detail=p.detail, latency_ms=p.latency_ms
    )


def _finish(result: ResetResult, actions: ActionLog, probe: Probe) -> ResetResult:
    result.actions = actions.actions
    result.health = _health(probe)
    result.problems = [a.line() for a in actions.failed]
    if not probe.reachable:
        result.problems.append(f"{probe.system} unhealthy after the reset: {probe.detail}")
    return result


def reset_heavydb(
    admin: HeavyDBEmergencyAdmin,
    target: ServerTarget,
    *,
    dry_run: bool = False,
    log: Any | None = None,
) -> ResetResult:
    result = ResetResult(system=target.name, dry_run=dry_run)
    steps = [
        ("clear GPU memory", admin.clear_gpu_memory),
        ("clear CPU memory", admin.clear_cpu_memory),
    ]
    if dry_run:
        result.actions = [Action(system=target.name, what=w, outcome="planned") for w, _ in steps]
        return result
    actions = ActionLog(target.name, log)
    for what, fn in steps:
        actions.attempt(what, fn)
    return _finish(result, actions, admin.ping())


def reset_mysql(
    admin: MySQLEmergencyAdmin,
    target: ServerTarget,
    *,
    clear_query_cache: bool = False,
    lock_wait_s: float = 10.0,
    dry_run: bool = False,
    log: Any | None = None,
) -> ResetResult:
    result = ResetResult(system=target.name, dry_run=dry_run)
    planned = [f"FLUSH TABLES (waiting at most {lock_wait_s:g}s for table locks)"]
    if clear_query_cache:
        planned.append("RESET QUERY CACHE")
    if dry_run:
        result.actions = [Action(system=target.name, what=w, outcome="planned") for w in planned]
        return result
    actions = ActionLog(target.name, log)
    actions.attempt(planned[0], lambda: admin.flush_tables(lock_wait_s))
    if clear_query_cache:
        cleared = actions.attempt("RESET QUERY CACHE", admin.reset_query_cache)
        if cleared.ok and cleared.value is False:
            actions.amend_last("unchanged", "the query cache is off: nothing to clear")
    return _finish(result, actions, admin.ping())


CommandRunner = Callable[[list[str], float], tuple[int, str]]
HealthProbe = Callable[[], tuple[bool, str]]


def run_command(argv: list[str], timeout_s: float) -> tuple[int, str]:
    """Run a restart command without a shell: (exit code, combined output)."""
    import subprocess

    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout_s,
        check=False,
    )
    return done.returncode, done.stdout.decode("utf-8", errors="replace")


def probe_service(url: str | None, tcp: str | None, timeout_s: float = 5.0) -> tuple[bool, str]:
    """(healthy, detail): GET url answers 2xx, else host:port accepts a TCP connection."""
    from tbs_emergency.connectors._common import tcp_check
    from tbs_emergency.connectors._http import HttpEndpoint
    from tbs_emergency.errors import ConnectorError

    try:
        if url:
            endpoint = HttpEndpoint("service", url, timeout_s)
            try:
                resp = endpoint.request("GET", "", "health probe")
            finally:
                endpoint.close()
            return 200 <= resp.status < 300, f"HTTP {resp.status} from {endpoint.redacted()}"
        if not tcp:
            return False, "no health probe configured"
        host, _, port = tcp.rpartition(":")
        tcp_check("service", host, int(port), timeout_s)
        return True, f"{tcp} accepts connections"
    except ConnectorError as exc:
        return False, f"{exc.kind}: {exc.detail}"


def restart_service(
    service: RestartableService,
    *,
    run: CommandRunner,
    probe: HealthProbe,
    dry_run: bool = False,
    poll_s: float = 1.0,
    log: Any | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ResetResult:
    """Run the service's restart command, then probe it until healthy or its timeout."""
    system = f"service[{service.name}]"
    result = ResetResult(system=system, dry_run=dry_run)
    command = " ".join(service.command)
    if dry_run:
        result.actions = [
            Action(system=system, what=f"run {command}", outcome="planned"),
            Action(
                system=system,
                what=f"probe {service.health_url or service.health_tcp} until healthy",
                outcome="planned",
                detail=f"at most {service.timeout_s:g}s",
            ),
        ]
        return result
    actions = ActionLog(system, log)
    start = clock()
    try:
        code, output = run(service.command, service.timeout_s)
    except Exception as exc:  # the command could not even start (missing binary, timeout)
        code, output = -1, f"{type(exc).__name__}: {exc}"
    tail = output.strip().splitlines()[-1][:200] if output.strip() else ""
    if code != 0:
        actions.add(f"run {command}", "failed", f"exit code {code}" + (f": {tail}" if tail else ""))
    else:
        actions.add(f"run {command}", "done", tail)
    healthy, detail = False, "not probed"
    while True:
        healthy, detail = probe()
        if healthy or clock() - start >= service.timeout_s:
            break
        sleep(poll_s)
    waited = clock() - start
    result.actions = actions.actions
    result.health = HealthAfter(system=system, healthy=healthy, detail=detail)
    result.problems = [a.line() for a in actions.failed]
    if healthy:
        actions.add("health probe", "done", f"healthy after {waited:.1f}s: {detail}")
    else:
        actions.add("health probe", "failed", f"not healthy after {waited:.1f}s: {detail}")
        result.problems.append(f"{system} not healthy {waited:.0f}s after the restart: {detail}")
    result.actions = actions.actions
    return result
