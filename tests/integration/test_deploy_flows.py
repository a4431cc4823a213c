"""Flows for tests/integration/test_deploy.py, no tests: the test registers them as extra
deployments of its work pool to exercise the executor where prefect.yaml's flows cannot
(a run that lasts until it is cancelled)."""

from __future__ import annotations

import time

from prefect import flow


@flow(name="tbs_test_sleepy", log_prints=False, persist_result=False)
def sleepy(seconds: float = 120.0) -> float:
    """Sleep in short steps (a cancellation delivered to its thread lands between two)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        time.sleep(0.05)
    return time.monotonic() - started
