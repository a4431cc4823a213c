"""Probing systems: one task, bounded by each connector's own timeouts."""

from __future__ import annotations

from prefect import task

from tasks.common import settings_for
from tbs_emergency.connectors import probe_all
from tbs_emergency.connectors.base import Probe


@task(name="probe-all-systems", retries=1, retry_delay_seconds=2, timeout_seconds=60)
def probe_systems(config_path: str | None) -> list[Probe]:
    """Probe every configured system concurrently; unreachable ones are results, not errors."""
    return probe_all(settings_for(config_path))
