"""Service health check (runbook: `./health-check-all.sh --emergency --detailed`).

Probes every configured system and records the result as a table artifact. It changes nothing,
so it is safe to run at any time, and it always finishes: an unreachable system is a finding.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel

from tasks.probes import probe_systems


class HealthCheckParams(BaseModel):
    config_path: str | None = None


class SystemHealth(BaseModel):
    system: str
    reachable: bool
    latency_ms: float | None
    detail: str


class HealthReport(BaseModel):
    healthy: bool
    systems: list[SystemHealth]


@flow(name="health_check", log_prints=False)
def health_check(params: HealthCheckParams | None = None) -> HealthReport:
    """Probe every system the configuration names; healthy only if all are reachable."""
    params = params or HealthCheckParams()
    probes = probe_systems(params.config_path)
    systems = [
        SystemHealth(
            system=p.system, reachable=p.reachable, latency_ms=p.latency_ms, detail=p.detail
        )
        for p in probes
    ]
    create_table_artifact(
        key="health-check",
        table=[s.model_dump() for s in systems],
        description="Reachability and latency of every configured system",
    )
    return HealthReport(healthy=all(s.reachable for s in systems), systems=systems)
