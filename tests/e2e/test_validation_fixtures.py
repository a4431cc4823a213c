"""Shared pieces of the validation/drill/report e2e tests (no tests here).

- `prefect_api(request)`: the Prefect API for a module's flow runs: `PREFECT_API_URL` when set,
  else the session world's own Prefect server (deployed from prefect.yaml, the production path).
- `validation_config(world, tmp)`: a copy of the world's `tbs.toml`, whose `[validation]` section
  is sized for the sandbox (sandbox.world), with extra sections or a narrower strategy list.
- sink and store helpers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import World


def prefect_api(request: pytest.FixtureRequest) -> str:
    """The Prefect API for the calling module's flow runs: `PREFECT_API_URL` when set, else the
    session world's own server (deployed from prefect.yaml: the production path). The setting
    holds until the requesting fixture's scope ends (a module), never beyond: other modules
    (the unit tests' "no API configured" cases, say) must not inherit it."""
    given = os.environ.get("PREFECT_API_URL")
    if given:
        return given
    from prefect.settings import PREFECT_API_URL, temporary_settings

    world: World = request.getfixturevalue("sandbox_world")
    settings = temporary_settings(updates={PREFECT_API_URL: world.api_url})
    settings.__enter__()
    request.addfinalizer(lambda: settings.__exit__(None, None, None))
    return world.api_url


def validation_config(
    world: World, directory: Path, extra: str = "", strategies: list[int] | None = None
) -> str:
    """A copy of the world's configuration (which carries the sandbox's `[validation]` and
    `database_emergency.mysql_admin` sections) plus `extra`; `strategies`: the trading checks
    cover only these instead of every strategy found."""
    text = Path(world.info["config"]).read_text()
    assert "[validation]\n" in text, "the sandbox config lost its [validation] section"
    if strategies is not None:
        text = text.replace("[validation]\n", f"[validation]\nstrategies = {strategies}\n", 1)
    text += extra
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
