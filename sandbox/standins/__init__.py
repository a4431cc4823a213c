"""Stand-ins for the systems the sandbox cannot run for real.

Each module is a small asyncio server runnable as `python -m sandbox.standins.<name> --port P`:

- `lb`: the load balancer's emergency admin API plus a reverse proxy to the active environment,
  with HAProxy-style health checks and metrics, and the users' write feed to the live backend.
- `app`: the TBS application of one environment (writes and their ledger, API, login, metrics,
  app faults).
- `netpath`: one environment's network path to its stores: the TCP proxies its configuration
  points at, where database faults act (a process of its own, so stopping the app does not cut
  anyone else's path to the databases).
- `sink`: records webhook, PagerDuty Events v2 and SMTP deliveries for tests to read.
- `tcpproxy`: the fault-injecting TCP proxy the network path runs (usable on its own).

They are single-process, single-threaded event loops (plus a few worker threads for the blocking
database drivers): the sandbox runs on two cores next to real databases.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any


def run_uvicorn(app: Any, host: str, port: int) -> None:
    """Serve a Starlette app with one uvicorn worker (asyncio loop, h11, no access log)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        loop="asyncio",
        http="h11",
        timeout_graceful_shutdown=2,
    )
    # uvicorn handles SIGTERM/SIGINT itself; SIGHUP should just stop the process too.
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    asyncio.run(uvicorn.Server(config).serve())
