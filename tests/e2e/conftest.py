"""One sandbox world per e2e session, shaped as production runs it.

Under pytest-xdist each worker that runs e2e tests has a world of its own (`make test` splits
them into two groups, below). The world is brought up once, in a temporary directory, with a
small dataset (2000 trades), separate stores per environment and its Prefect server, deployed
from prefect.yaml with the executor running (the production path); every e2e test of the
worker shares it, the rollback drills (tests/e2e/rollback) last, since they move traffic and
inject faults. At the end it is brought down and the session fails if any port of its services
still accepts connections.

`shared_world` (on demand) is a second, smaller world in the shared topology (one MariaDB,
HeavyDB and Redis for both environments), for the behaviour that differs there.

Set TBS_E2E_SANDBOX_DIR to reuse a directory (a warm world starts in about a second); under
xdist each worker uses a subdirectory named after it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sandbox import world
from sandbox.proc import LOOPBACK, load_services, port_open
from tbs_emergency.config import Settings, load_settings

E2E_ROWS = 2000


@dataclass
class World:
    dir: Path
    info: dict[str, Any]
    settings: Settings
    up_seconds: float
    lines: list[str] = field(default_factory=list)

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        return self.info["services"]

    @property
    def api_url(self) -> str:
        """The world's Prefect API."""
        return str(load_services(self.dir / "services.json")["prefect"].extra["api_url"])

    @property
    def config(self) -> str:
        return str(self.info["config"])

    def url(self, name: str) -> str:
        return str(self.services[name]["url"])

    def ports(self) -> list[int]:
        """Every port of every recorded service (main ports and proxies, SMTP, ...)."""
        out = []
        for service in load_services(self.dir / "services.json").values():
            out.append(service.port)
            out += [int(v) for k, v in service.extra.items() if k.endswith("_port") and int(v)]
        return out


def listening(ports: list[int]) -> list[int]:
    return [p for p in ports if port_open(LOOPBACK, p)]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """On a world, the rollback drills, which move traffic and inject faults, run after every
    other e2e test (a stable sort keeps the order within each part). Under xdist each world's
    tests keep this order on their worker (tests/conftest.py decides which world)."""

    def rank(item: pytest.Item) -> int:
        if "tests/e2e/rollback/" in item.nodeid:
            return 1
        return 0 if "tests/e2e/" in item.nodeid else 2

    items.sort(key=rank)


def _world(directory: Path, **kw: Any) -> Iterator[World]:
    lines: list[str] = []
    started = time.monotonic()
    try:
        info = world.up(directory, rows=E2E_ROWS, log=lines.append, **kw)
    except Exception:
        world.down(directory)
        raise
    elapsed = time.monotonic() - started
    settings = load_settings(info["config"])
    handle = World(directory, info, settings, elapsed, lines)
    ports = handle.ports()
    yield handle
    ports = sorted(set(ports + handle.ports()))
    world.down(directory, purge_outside=not os.environ.get("TBS_E2E_SANDBOX_DIR"))
    left = listening(ports)
    assert not left, f"ports still listening after down: {left}"


@pytest.fixture(scope="session")
def sandbox_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    given = os.environ.get("TBS_E2E_SANDBOX_DIR")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if given:
        directory = Path(given) / worker if worker else Path(given)
    else:
        directory = tmp_path_factory.mktemp("world")
    yield from _world(directory, prefect=True, topology="separate")


@pytest.fixture(scope="session")
def prefect_world(sandbox_world: World) -> World:
    """The session world, named for the tests that need its Prefect server and executor."""
    return sandbox_world


@pytest.fixture(scope="module")
def shared_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The shared topology (no Prefect: its tests run no deployment), for one module at a time."""
    yield from _world(tmp_path_factory.mktemp("shared-world"), prefect=False, topology="shared")
