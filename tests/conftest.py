"""Session-wide test configuration: how pytest-xdist shares the tests among its workers.

`make test` runs `pytest -n 3 --dist loadgroup`. The e2e tests need a sandbox world, one per
worker that runs them (tests/e2e/conftest.py), so they go in two groups, each run by one worker
in collection order with a world of its own, while the third worker takes the unit and
integration tests, test by test. The groups are decided here from the test's path, by a
scheduler of our own: xdist 3.8's `xdist_group` marker grouped nothing under pytest 9.2 here
(checked on a minimal project: marked tests still went to every worker), and an e2e test on
any worker starts a world there.
"""

from __future__ import annotations

from typing import Any

# `world-a`: every e2e test outside tests/e2e/rollback, then the rollback modules not named
# here; `world-b`: these rollback modules (about 13 minutes each at the last count).
WORLD_B_MODULES = (
    "test_rollback_drills.py",
    "test_rollback_behaviour.py",
    "test_rollback_idempotent.py",
    "test_rollback_operator_path.py",
    "test_zz_drill_flow.py",
)


def world_group(nodeid: str) -> str | None:
    """The world an e2e test runs on (None: not an e2e test)."""
    path = nodeid.split("::", 1)[0]
    if not path.startswith("tests/e2e/"):
        return None
    module = path.rsplit("/", 1)[-1]
    rollback = path.startswith("tests/e2e/rollback/")
    return "world-b" if rollback and module in WORLD_B_MODULES else "world-a"


def pytest_xdist_make_scheduler(config: Any, log: Any) -> Any:
    """`--dist loadgroup`: the e2e tests by world (above), every other test on its own."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class WorldScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return world_group(nodeid) or nodeid

    return WorldScheduling(config, log)
