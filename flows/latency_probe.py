"""A flow that does nothing but start: what `bench/trigger_latency.py` measures.

Its parameters are a pydantic model filled by the automation from the event (Jinja templates
in nested parameters), so the bench also proves the parameter path the rollback uses.
"""

from __future__ import annotations

import time

from prefect import flow
from pydantic import BaseModel


class ProbeParams(BaseModel):
    event_id: str = ""
    sent_at: float = 0.0


@flow(name="trigger_latency_probe", log_prints=False, persist_result=False)
def trigger_latency_probe(params: ProbeParams | None = None) -> float:
    """Return how long after the event's emission this flow's first line ran (seconds)."""
    started = time.time()
    params = params or ProbeParams()
    return started - params.sent_at if params.sent_at else 0.0
