"""The external steps of a rollback, one system each (runbook: "Automated Response Sequence").

Each task does one thing to one system, bounded by a timeout and retried where repeating is
safe. Tasks that change something take `dry_run` and report what they would do instead. Results
are plain dicts (what the journal records); failures of checks are results, not exceptions,
because a rollback must be able to say "could not verify X" and carry on or stop on purpose.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import task

from tasks.common import settings_for
from tasks.incident import connectors_for
from tbs_emergency.errors import TbsError


def _attempt(fn: Any) -> tuple[Any, str | None]:
    try:
        return fn(), None
    except TbsError as exc:
        return None, str(exc)
    except Exception as exc:  # a connector bug must not stop the rollback
        return None, f"{type(exc).__name__}: {exc}"


# -- traffic ---------------------------------------------------------------------------------


@task(name="read-active-traffic", retries=2, retry_delay_seconds=0.5, timeout_seconds=20)
def active_traffic(config_path: str | None) -> str:
    return connectors_for(config_path).traffic().active()


@task(name="redirect-traffic", retries=2, retry_delay_seconds=[0.5, 1], timeout_seconds=30)
def redirect_traffic(config_path: str | None, target: str, dry_run: bool = False) -> dict[str, Any]:
    """Send all traffic to `target` (runbook: `POST /emergency/redirect-blue`). Idempotent."""
    traffic = connectors_for(config_path).traffic()
    before = traffic.active()
    if dry_run:
        return {"dry_run": True, "before": before, "would": f"switch traffic to {target}"}
    if before == target:
        return {"before": before, "after": target, "changed": False}
    after = traffic.switch_to(target)  # type: ignore[arg-type]
    return {"before": before, "after": after, "changed": before != after}


@task(name="verify-traffic", retries=3, retry_delay_seconds=0.3, timeout_seconds=20)
def verify_traffic(config_path: str | None, target: str) -> dict[str, Any]:
    """The load balancer reports `target` active (raises otherwise, so it is retried)."""
    active = connectors_for(config_path).traffic().active()
    if active != target:
        raise RuntimeError(f"traffic is on {active}, expected {target}")
    return {"active": active}


# -- health ----------------------------------------------------------------------------------


@task(name="environment-health", retries=1, retry_delay_seconds=0.5, timeout_seconds=30)
def environment_health(config_path: str | None, env: str) -> dict[str, Any]:
    """App health and both databases of one environment, probed at once."""
    conn = connectors_for(config_path)
    jobs = {
        "app": lambda: conn.app(env).health(),
        "heavydb": lambda: conn.heavydb(env).ping(),
        "mysql": lambda: conn.mysql(env).ping(),
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {k: pool.submit(_attempt, fn) for k, fn in jobs.items()}
        res = {k: f.result() for k, f in futures.items()}
    app, app_err = res["app"]
    checks: dict[str, Any] = {}
    app_ok = app_err is None and (app or {}).get("status") in ("ok", "healthy", "degraded")
    checks["app"] = {
        "ok": bool(app_ok),
        "status": (app or {}).get("status") if app else None,
        "error": app_err,
    }
    for db in ("heavydb", "mysql"):
        probe, err = res[db]
        ok = err is None and probe is not None and probe.reachable
        checks[db] = {
            "ok": bool(ok),
            "latency_ms": getattr(probe, "latency_ms", None),
            "detail": err or getattr(probe, "detail", ""),
        }
    return {"env": env, "healthy": all(c["ok"] for c in checks.values()), "checks": checks}


@task(name="read-metric", retries=2, retry_delay_seconds=0.5, timeout_seconds=20)
def metric(config_path: str | None, signal: str, env: str, window_s: float) -> float | None:
    """One signal's current value from Prometheus (None: no data)."""
    settings = settings_for(config_path)
    q = settings.metrics.query(signal, env, window_s)
    value, err = _attempt(lambda: connectors_for(config_path).metrics().value(q))
    return None if err else value


@task(name="app-second-opinion", retries=1, retry_delay_seconds=0.5, timeout_seconds=20)
def app_second_opinion(config_path: str | None, env: str) -> dict[str, Any]:
    """What the environment says about itself (the second source beside Prometheus)."""
    health, err = _attempt(lambda: connectors_for(config_path).app(env).health())
    if err:
        return {"reachable": False, "error": err}
    return {"reachable": True, "status": health.get("status"), "health": health}


# -- sessions ---------------------------------------------------------------------------------


@task(name="count-sessions", retries=2, retry_delay_seconds=0.5, timeout_seconds=20)
def count_sessions(config_path: str | None, env: str) -> int | None:
    value, err = _attempt(lambda: connectors_for(config_path).sessions(env).count())
    return None if err else value


@task(name="preserve-sessions", retries=1, retry_delay_seconds=1, timeout_seconds=120)
def preserve_sessions(
    config_path: str | None, source: str, target: str, dry_run: bool = False
) -> dict[str, Any]:
    """Carry the active sessions from source to target and verify the count.

    Environments that share one session store (same Redis) need no copy: the count seen from the
    target is verified against the source. Separate stores are copied with the sessions
    connector's `copy_to` when it has one; otherwise the step reports that it could not copy.
    """
    settings = settings_for(config_path)
    conn = connectors_for(config_path)
    shared = (
        settings.environment(source).redis.identity == settings.environment(target).redis.identity
    )
    before, err = _attempt(lambda: conn.sessions(source).count())
    if err:
        return {"ok": False, "error": err}
    if dry_run:
        return {"dry_run": True, "sessions": before, "shared_store": shared}
    if shared:
        after, err = _attempt(lambda: conn.sessions(target).count())
        return {
            "ok": err is None,
            "shared_store": True,
            "copied": 0,
            "source_count": before,
            "target_count": after,
            "error": err,
        }
    copy_to = getattr(conn.sessions(source), "copy_to", None)
    if copy_to is None:
        return {
            "ok": False,
            "shared_store": False,
            "source_count": before,
            "error": "separate session stores and the sessions connector cannot copy (no copy_to)",
        }
    copied, err = _attempt(lambda: copy_to(conn.sessions(target)))
    after, err2 = _attempt(lambda: conn.sessions(target).count())
    return {
        "ok": err is None and err2 is None and (after or 0) >= (before or 0),
        "shared_store": False,
        "copied": copied,
        "source_count": before,
        "target_count": after,
        "error": err or err2,
    }


# -- databases --------------------------------------------------------------------------------


@task(name="wait-in-flight-transactions", retries=0, timeout_seconds=300)
def wait_transactions(config_path: str | None, env: str, timeout_s: float) -> dict[str, Any]:
    """Wait (bounded) for the open transactions on `env`'s MySQL server, ending none.

    Uses the database procedures' transaction check (`tbs_emergency.dbops.transactions`, run as
    the administrative account, which can see every session). HeavyDB has no multi-statement
    transactions to wait for.
    """
    from tasks.database import admin_for
    from tbs_emergency.dbops import transactions
    from tbs_emergency.dbops.targets import live_identity, server_targets

    settings = settings_for(config_path)
    target = server_targets(settings, ["mysql"], [env], identify=live_identity(settings))[0]
    report = transactions.complete_transactions(
        admin_for(config_path, target), target, timeout_s=timeout_s, force=False, poll_s=0.25
    )
    return {
        "ok": report.complete,
        "target": target.name,
        "open_at_start": len(report.at_start),
        "still_open": len(report.still_open),
        "waited_s": round(report.waited_s, 2),
        "lines": report.lines(),
        "heavydb": "no multi-statement transactions",
    }


def _fingerprint(config_path: str | None, env: str, kind: str) -> str | None:
    """What the server itself says it is (not the address we reach it by: proxies differ)."""
    conn = connectors_for(config_path)
    if kind == "mysql":
        rows, err = _attempt(
            lambda: conn.mysql(env).query("SELECT @@hostname, @@port, @@datadir, @@server_id")
        )
        return None if err or not rows else "|".join(str(v) for v in rows[0])
    st, err = _attempt(lambda: conn.heavydb(env).server_status())
    if err or not st:
        return None
    return f"{st.get('host_name')}|{st.get('start_time')}|{st.get('version')}"


def shared_server(config_path: str | None, a: str, b: str, kind: str) -> bool | None:
    """Whether environments a and b reach the same database server (None: cannot tell)."""
    if settings_for(config_path).shares_database(a, b, kind):  # type: ignore[arg-type]
        return True
    fa, fb = _fingerprint(config_path, a, kind), _fingerprint(config_path, b, kind)
    if fa is None or fb is None:
        return None
    return fa == fb


@task(name="set-read-only", retries=1, retry_delay_seconds=1, timeout_seconds=60)
def set_read_only(
    config_path: str | None,
    env: str,
    kind: str,
    on: bool,
    app_users: list[str] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Make one database of `env` read-only (or writable again).

    MySQL/MariaDB: `SET GLOBAL read_only`. HeavyDB (read-only is a server start flag there):
    revoke (or grant back) INSERT, UPDATE, DELETE and TRUNCATE on the database from the
    application users. Refuses to make read-only a server that the other environment uses too
    (compared by what the servers report, since environments may reach one server through
    different proxies), or one it cannot tell apart: that would stop the other environment.
    """
    settings = settings_for(config_path)
    other = "blue" if env == "green" else "green"
    shared = shared_server(config_path, env, other, kind)
    if shared is not False and on:
        why = "is the same server as" if shared else "could not be told apart from"
        return {
            "ok": True,
            "skipped": True,
            "reason": f"{kind} of {env} {why} {other}'s: left writable (read-only would stop"
            f" {other})",
        }
    conn = connectors_for(config_path)
    if dry_run:
        return {"dry_run": True, "would": f"{kind}[{env}] read_only={'on' if on else 'off'}"}
    if kind == "mysql":
        # As the administrative account (database_emergency.mysql_admin) when one is configured:
        # SET GLOBAL read_only needs SUPER or READ_ONLY ADMIN. MariaDB has no super_read_only, so
        # accounts with SUPER keep writing; `db protect-archive` covers those.
        from tasks.database import admin_for
        from tbs_emergency.dbops.targets import live_identity, server_targets

        target = server_targets(settings, ["mysql"], [env], identify=live_identity(settings))[0]
        db = admin_for(config_path, target)
        _, err = _attempt(lambda: db.set_read_only(on))
        ro, err2 = _attempt(lambda: db.is_read_only())
        return {"ok": err is None and ro == on, "read_only": ro, "error": err or err2}
    users = app_users or []
    if not users:
        return {"ok": False, "skipped": True, "reason": "no HeavyDB application users configured"}
    db = conn.heavydb(env)
    dbname = settings.environment(env).heavydb.database
    verb = "REVOKE {p} ON DATABASE {d} FROM {u}" if on else "GRANT {p} ON DATABASE {d} TO {u}"
    errors = []
    for user in users:
        for priv in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
            _, err = _attempt(lambda p=priv, u=user: db.query(verb.format(p=p, d=dbname, u=u)))
            if err:
                errors.append(err)
    return {"ok": not errors, "users": users, "errors": errors}


# -- user access ------------------------------------------------------------------------------


@task(name="verify-user-access", retries=1, retry_delay_seconds=0.5, timeout_seconds=60)
def verify_user_access(config_path: str | None, target: str, samples: int = 5) -> dict[str, Any]:
    """Up to `samples` active sessions still work through the load balancer and are served by
    `target` (runbook: `verify-user-access.sh --sample-users=5`)."""
    from tbs_emergency.connectors.useraccess import UserAccess

    settings = settings_for(config_path)
    conn = connectors_for(config_path)
    ids, err = _attempt(lambda: conn.sessions(target).list_ids(limit=samples))
    if err:
        return {"ok": False, "error": err}
    if not ids:
        return {"ok": True, "checked": 0, "note": "no active sessions to sample"}
    ua = UserAccess(settings.traffic.url or settings.environment(target).app_url)
    results = []
    for sid in ids:
        ans, err = _attempt(lambda s=sid: ua.me(s))
        served = (ans or {}).get("served_by")
        results.append({"ok": err is None and served == target, "served_by": served, "error": err})
    ok = sum(1 for r in results if r["ok"])
    return {"ok": ok == len(results), "checked": len(results), "passed": ok, "results": results}
