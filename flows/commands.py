"""The emergency command reference as small flows: one action each, journaled when it acts.

- `traffic_redirect`: `curl -X POST http://load-balancer/emergency/redirect-blue` (and back).
- `database_read_only`: `./db-emergency-readonly.sh --heavydb --mysql` (on or off).
- `sessions_preserve`: `./preserve-sessions.sh --backup --verify`.

Each takes `dry_run`; each refuses what would make things worse (switching to an unhealthy
environment, making a database read-only that the live environment shares).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from flows.emergency_rollback import _value
from tasks.rollback import (
    environment_health,
    preserve_sessions,
    redirect_traffic,
    set_read_only,
    verify_traffic,
)


class CommandParams(BaseModel):
    config_path: str = ""
    target: str = "blue"
    source: str = "green"
    on: bool = True
    kinds: list[str] = Field(default_factory=lambda: ["mysql", "heavydb"])
    app_users: list[str] = Field(default_factory=list)
    dry_run: bool = False
    force: bool = False
    decided_by: str = "person"


@flow(name="traffic_redirect", log_prints=False, persist_result=False)
def traffic_redirect(params: CommandParams) -> dict[str, Any]:
    """Send all traffic to `target` after checking it is healthy (unless `force`)."""
    cfg = params.config_path or None
    logger = get_run_logger()
    health, err = _value(environment_health, cfg, params.target)
    if not params.force and not (health or {}).get("healthy"):
        return {
            "ok": False,
            "error": f"{params.target} is not healthy: {err or health}",
            "health": health,
        }
    res, err = _value(redirect_traffic, cfg, params.target, params.dry_run)
    if err:
        return {"ok": False, "error": err}
    if params.dry_run:
        return {"ok": True, **(res or {})}
    ver, verr = _value(verify_traffic, cfg, params.target)
    logger.info("traffic on %s (by %s)", params.target, params.decided_by)
    return {"ok": verr is None, **(res or {}), "verified": ver, "error": verr}


@flow(name="database_read_only", log_prints=False, persist_result=False)
def database_read_only(params: CommandParams) -> dict[str, Any]:
    cfg = params.config_path or None
    results: dict[str, Any] = {}
    for kind in params.kinds:
        res, err = _value(
            set_read_only, cfg, params.target, kind, params.on, params.app_users, params.dry_run
        )
        results[kind] = res or {"ok": False, "error": err}
    ok = all(r.get("ok") or r.get("dry_run") for r in results.values())
    return {"ok": ok, "env": params.target, "read_only": params.on, "databases": results}


@flow(name="sessions_preserve", log_prints=False, persist_result=False)
def sessions_preserve(params: CommandParams) -> dict[str, Any]:
    cfg = params.config_path or None
    res, err = _value(preserve_sessions, cfg, params.source, params.target, params.dry_run)
    return res or {"ok": False, "error": err}
