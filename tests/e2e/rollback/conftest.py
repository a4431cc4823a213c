"""A sandbox world with its Prefect server, a runner and a watchdog, for the rollback drills.

The session world of tests/e2e/conftest.py runs without Prefect; the rollback needs the whole
loop (event -> automation -> flow run), so this folder brings up its own world once per session
(`prefect=True`) and one `Drill` (runner + watchdog) that every test reuses.

Set TBS_E2E_ROLLBACK_DIR to reuse a running world (it is then left running).
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.rollback_drill import Drill
from sandbox import world


@pytest.fixture(scope="session")
def rollback_drill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drill]:
    given = os.environ.get("TBS_E2E_ROLLBACK_DIR")
    directory = Path(given) if given else tmp_path_factory.mktemp("rollback-world")
    info = world.up(directory.resolve(), rows=2000, prefect=True, log=lambda _m: None)
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "TBS_CONFIG")}
    drill = Drill(str(info["config"]), directory.resolve())
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
        if not given:
            world.down(directory.resolve())


def deliveries(drill: Drill, incident_id: str) -> list[dict[str, Any]]:
    """What the notification sink recorded about one incident."""
    from sandbox.proc import load_services

    sink = load_services(drill.dir / "services.json")["sink"].url
    with urllib.request.urlopen(f"{sink}/deliveries", timeout=10) as resp:
        items = json.load(resp)["deliveries"]
    return [d for d in items if incident_id in json.dumps(d)]
