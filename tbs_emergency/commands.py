"""Emergency commands done directly through the connectors (no Prefect on the path).

`redirect(conn, target)` is the runbook's `curl -X POST http://load-balancer/emergency/redirect-blue`
with the checks the `traffic_redirect` flow makes: the target must be healthy (app, MySQL,
HeavyDB, probed at once) unless forced, and the load balancer must report the target active
afterwards. The CLI runs it, journals it and records the run in Prefect afterwards (best effort).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tbs_emergency.connectors import Connectors
from tbs_emergency.errors import TbsError

HEALTHY_APP = ("ok", "healthy", "degraded")


def _attempt(fn: Any) -> tuple[Any, str | None]:
    try:
        return fn(), None
    except TbsError as exc:
        return None, str(exc)
    except Exception as exc:  # a connector bug is a failed check, not a traceback
        return None, f"{type(exc).__name__}: {exc}"


def environment_health(
    conn: Connectors, env: str, bound_s: float = 10.0, direct_heavydb: bool = False
) -> dict[str, Any]:
    """App health and both databases of one environment, probed at once; a probe that does
    not answer within `bound_s` is reported as failed, not waited for.

    HeavyDB is judged as the app reports it in its /health checks (`checks.heavydb.ok`), unless
    the app reports nothing about it or `direct_heavydb`: the HeavyDB client takes seconds to
    import, which an emergency command cannot spend (MySQL is pinged directly, cheaply)."""
    jobs = {
        "app": lambda: conn.app(env).health(),
        "mysql": lambda: conn.mysql(env).ping(),
    }
    if direct_heavydb:
        jobs["heavydb"] = lambda: conn.heavydb(env).ping()
    pool = ThreadPoolExecutor(max_workers=3)
    futures = {k: pool.submit(_attempt, fn) for k, fn in jobs.items()}
    deadline = time.monotonic() + bound_s
    res: dict[str, tuple[Any, str | None]] = {}
    for k, f in futures.items():
        try:
            res[k] = f.result(timeout=max(0.0, deadline - time.monotonic()))
        except Exception:
            res[k] = (None, f"no answer within {bound_s:g} s")
    pool.shutdown(wait=False, cancel_futures=True)
    app, app_err = res["app"]
    checks: dict[str, Any] = {
        "app": {
            "ok": app_err is None and (app or {}).get("status") in HEALTHY_APP,
            "status": (app or {}).get("status"),
            "error": app_err,
        }
    }
    app_heavy = ((app or {}).get("checks") or {}).get("heavydb")
    if "heavydb" not in res:
        if isinstance(app_heavy, dict) and "ok" in app_heavy:
            checks["heavydb"] = {
                "ok": bool(app_heavy["ok"]),
                "detail": f"as the app reports it: {app_heavy.get('detail') or app_heavy}",
            }
        else:  # the app says nothing about HeavyDB: ask it directly after all
            res["heavydb"] = _attempt(lambda: conn.heavydb(env).ping())
    for db in [d for d in ("heavydb", "mysql") if d in res]:
        probe, err = res[db]
        checks[db] = {
            "ok": err is None and probe is not None and bool(probe.reachable),
            "detail": err or getattr(probe, "detail", ""),
        }
    return {"env": env, "healthy": all(c["ok"] for c in checks.values()), "checks": checks}


def _unhealthy(health: dict[str, Any]) -> str:
    bad = [
        f"{k}: {c.get('error') or c.get('detail') or c.get('status') or 'failed'}"
        for k, c in health["checks"].items()
        if not c["ok"]
    ]
    return "; ".join(bad)


def redirect(
    conn: Connectors,
    target: str,
    *,
    dry_run: bool = False,
    force: bool = False,
    verify_attempts: int = 4,
) -> dict[str, Any]:
    """Send all traffic to `target`. Keys: ok, before, after, changed, verified, error (only
    when it failed), health (only when the target is unhealthy), seconds."""
    started = time.monotonic()
    traffic = conn.traffic()
    if force:  # the operator overrides the health check: do not wait for it
        before, berr = _attempt(traffic.active)
        health: dict[str, Any] = {"healthy": None}
    else:
        with ThreadPoolExecutor(max_workers=2) as pool:
            fut_before = pool.submit(_attempt, traffic.active)
            health = environment_health(conn, target)
            before, berr = fut_before.result()
    res: dict[str, Any] = {"target": target, "before": before or "unknown"}
    if not force and not health["healthy"]:
        return {
            **res,
            "ok": False,
            "error": f"{target} is not healthy ({_unhealthy(health)}); --force to switch anyway",
            "health": health,
            "seconds": round(time.monotonic() - started, 3),
        }
    if dry_run:
        return {**res, "ok": True, "dry_run": True, "would": f"switch traffic to {target}"}
    if before != target:
        _, err = _attempt(lambda: traffic.switch_to(target))  # type: ignore[arg-type]
        if err:
            return {
                **res,
                "ok": False,
                "error": f"redirect failed: {err}",
                "seconds": round(time.monotonic() - started, 3),
            }
    active, verr = None, berr
    for i in range(verify_attempts):
        active, verr = _attempt(traffic.active)
        if active == target:
            verr = None
            break
        verr = verr or f"traffic is on {active}, expected {target}"
        time.sleep(0.2 * (i + 1))
    out = {
        **res,
        "ok": verr is None,
        "after": active or "unknown",
        "changed": before != target and active == target,
        "verified": active == target,
        "seconds": round(time.monotonic() - started, 3),
    }
    if verr:
        out["error"] = f"traffic not verified on {target}: {verr}"
    return out
