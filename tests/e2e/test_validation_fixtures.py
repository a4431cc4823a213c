"""Shared pieces of the validation/drill/report e2e tests (no tests here).

- `prefect_api(request)`: a Prefect API for flow runs, one per test session: `PREFECT_API_URL`
  when set (a running server: fastest), else `prefect_test_harness` (a temporary server; its
  start-up costs minutes on a loaded 2-core machine, once per session).
- `validation_config(world, tmp)`: the world's `tbs.toml` plus a `[validation]` section sized for
  the sandbox (baselines it can reach on 2 cores, sample users with their documented passwords)
  and `database_emergency.mysql_admin` (MariaDB root, for the recovery drill's scratch database).
  Set in configuration, never a hard-coded pass.
- sink and store helpers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import World

_HARNESS: dict[str, Any] = {}

SANDBOX_VALIDATION = """
[database_emergency.mysql_admin]
# MariaDB root (empty password in the sandbox): creates and drops the recovery drill's database
user = "root"

[validation]
http_timeout_s = 20
[validation.performance]
# The sandbox's real workload on 2 shared cores reaches a few thousand rows/s: its baseline is
# set here, in configuration (production keeps the runbook's 37,303).
duration = "60s"
baseline_rows_per_s = 100
[validation.performance.mysql_account]
user = "tbs_recovery"
password = "{recovery_password}"
[validation.api]
p50_ms = 3000
p95_ms = 8000
p99_ms = 10000
[validation.ui]
mean_ms = 5000
p95_ms = 8000
[validation.concurrency]
users = 4
p95_ms = 8000
max_error_percent = 5
[[validation.users]]
username = "trader01"
password = "sandbox-trader"
role = "trader"
[[validation.users]]
username = "analyst01"
password = "sandbox-analyst"
role = "analyst"
"""


def prefect_api(request: pytest.FixtureRequest) -> str:
    """A Prefect API URL for this session's flow runs (see the module docstring)."""
    given = os.environ.get("PREFECT_API_URL")
    if given:
        return given
    if "url" not in _HARNESS:
        from prefect.settings import PREFECT_API_URL
        from prefect.testing.utilities import prefect_test_harness

        started = time.monotonic()
        harness = prefect_test_harness(server_startup_timeout=900)
        harness.__enter__()
        _HARNESS["harness"] = harness
        _HARNESS["url"] = PREFECT_API_URL.value()
        _HARNESS["startup_s"] = round(time.monotonic() - started, 1)
        request.config.add_cleanup(lambda: harness.__exit__(None, None, None))
    return str(_HARNESS["url"])


def recovery_password(world: World) -> str:
    text = (world.dir / "env.sh").read_text()
    value = text.split("TBS_SANDBOX_MYSQL_RECOVERY_PASSWORD=", 1)[1].split()[0]
    return value.strip("'\"")


def validation_config(
    world: World, directory: Path, extra: str = "", strategies: list[int] | None = None
) -> str:
    """A copy of the world's configuration with the sandbox's validation section (`strategies`:
    the trading checks cover only these instead of every strategy found)."""
    base = Path(world.info["config"]).read_text()
    section = SANDBOX_VALIDATION.format(recovery_password=recovery_password(world))
    if strategies is not None:
        section = section.replace("[validation]\n", f"[validation]\nstrategies = {strategies}\n", 1)
    text = base + section + extra
    path = directory / "tbs-validation.toml"
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def sink_url(world: World) -> str:
    return world.url("sink")


def deliveries(world: World, since_id: int = 0, **params: Any) -> list[dict[str, Any]]:
    resp = httpx.get(
        f"{sink_url(world)}/deliveries", params={"since_id": since_id, **params}, timeout=10
    )
    resp.raise_for_status()
    body = resp.json()
    return list(body["deliveries"] if isinstance(body, dict) else body)


def last_delivery_id(world: World) -> int:
    found = deliveries(world)
    return max((int(d.get("id", 0)) for d in found), default=0)
