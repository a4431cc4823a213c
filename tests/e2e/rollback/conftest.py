"""The rollback drills' `Drill` (the watchdog beside the world's executor), on the session world.

The session world of tests/e2e/conftest.py runs its Prefect server with prefect.yaml deployed
and the executor running, the whole loop a rollback needs (event -> automation -> flow run);
these tests run after every other e2e test (they move traffic and inject faults) and share one
`Drill`.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from flows.rollback_drill import Drill
from tests.e2e.conftest import World


@pytest.fixture(scope="session")
def rollback_drill(sandbox_world: World) -> Iterator[Drill]:
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "TBS_CONFIG")}
    drill = Drill(sandbox_world.config, sandbox_world.dir.resolve())
    try:
        yield drill
    finally:
        drill.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


def deliveries(drill: Drill, incident_id: str) -> list[dict[str, Any]]:
    """What the notification sink recorded about one incident."""
    from sandbox.proc import load_services

    sink = load_services(drill.dir / "services.json")["sink"].url
    with urllib.request.urlopen(f"{sink}/deliveries", timeout=10) as resp:
        items = json.load(resp)["deliveries"]
    return [d for d in items if incident_id in json.dumps(d)]
