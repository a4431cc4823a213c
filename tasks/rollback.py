"""The external steps of a rollback, one system each (runbook: "Automated Response Sequence").

Each task does one thing to one system, bounded by a timeout and retried where repeating is
safe. Tasks that change something take `dry_run` and report what they would do instead.

Timeouts: no task here declares Prefect's `timeout_seconds` (Prefect cannot interrupt a blocked
call outside the main thread); each body is `@bounded(seconds)` (tasks/bounded.py): abandoned at
its timeout with TimeoutError, which Prefect retries like any error.

Errors: tasks that read or probe a system (`metric`, `count_sessions`, `app_second_opinion`,
`backend_window`, ...) raise on transport errors so their retries fire; only the flow turns a
final failure into "unknown" (flows.emergency_rollback._value). Checks that reach their system
and find it wanting return a result (`ok: False` and why), as do actions that need several
systems and must say which part failed.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import task

from tasks.bounded import bounded
from tasks.common import settings_for
from tasks.incident import connectors_for
from tbs_emergency.errors import TbsError

PROBE_BOUND_S = 25.0  # environment_health's probes, together (under its bound of 30 s)


def _attempt(fn: Any) -> tuple[Any, str | None]:
    try:
        return fn(), None
    except TbsError as exc:
        return None, str(exc)
    except Exception as exc:  # a connector bug must not stop the rollback
        return None, f"{type(exc).__name__}: {exc}"


# -- traffic ---------------------------------------------------------------------------------


@task(name="read-active-traffic", retries=2, retry_delay_seconds=0.5)
@bounded(20)
def active_traffic(config_path: str | None) -> str:
    return connectors_for(config_path).traffic().active()


@task(name="redirect-traffic", retries=2, retry_delay_seconds=[0.5, 1])
@bounded(30)
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


@task(name="verify-traffic", retries=3, retry_delay_seconds=0.3)
@bounded(20)
def verify_traffic(config_path: str | None, target: str) -> dict[str, Any]:
    """The load balancer reports `target` active (raises otherwise, so it is retried)."""
    active = connectors_for(config_path).traffic().active()
    if active != target:
        raise RuntimeError(f"traffic is on {active}, expected {target}")
    return {"active": active}


# -- health ----------------------------------------------------------------------------------


@task(name="environment-health", retries=1, retry_delay_seconds=0.5)
@bounded(30)
def environment_health(config_path: str | None, env: str) -> dict[str, Any]:
    """App health and both databases of one environment, probed at once (each probe bounded by
    its connector's timeout; a hung one is reported as failed, not waited for)."""
    conn = connectors_for(config_path)
    jobs = {
        "app": lambda: conn.app(env).health(),
        "heavydb": lambda: conn.heavydb(env).ping(),
        "mysql": lambda: conn.mysql(env).ping(),
    }
    pool = ThreadPoolExecutor(max_workers=3)
    futures = {k: pool.submit(_attempt, fn) for k, fn in jobs.items()}
    res: dict[str, tuple[Any, str | None]] = {}
    deadline = time.monotonic() + PROBE_BOUND_S
    for k, f in futures.items():
        try:
            res[k] = f.result(timeout=max(0.0, deadline - time.monotonic()))
        except Exception:  # concurrent.futures.TimeoutError: abandoned, reported
            res[k] = (None, f"no answer within {PROBE_BOUND_S:g} s")
    pool.shutdown(wait=False, cancel_futures=True)
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


@task(name="read-metric", retries=2, retry_delay_seconds=0.5)
@bounded(20)
def metric(config_path: str | None, signal: str, env: str, window_s: float) -> float | None:
    """One signal's current value from Prometheus (None: Prometheus has no data). Raises when
    Prometheus cannot be asked, so the retries apply."""
    settings = settings_for(config_path)
    q = settings.metrics.query(signal, env, window_s)
    value: float | None = connectors_for(config_path).metrics().value(q)
    return value


@task(name="app-second-opinion", retries=1, retry_delay_seconds=0.5)
@bounded(20)
def app_second_opinion(config_path: str | None, env: str) -> dict[str, Any]:
    """What the environment's application says about itself (`/health`). Raises when the app
    cannot be reached; the flow reads that final failure as "unreachable"."""
    health = connectors_for(config_path).app(env).health()
    return {"reachable": True, "status": health.get("status"), "health": health}


def _scrape_window(scrape: Any, window_s: float) -> tuple[Any, Any, float]:
    t0 = time.monotonic()
    before = scrape()
    time.sleep(max(0.0, window_s - (time.monotonic() - t0)))
    after = scrape()
    return before, after, time.monotonic() - t0


@task(name="lb-backend-window", retries=1, retry_delay_seconds=0.5)
@bounded(60)
def backend_window(config_path: str | None, env: str, window_s: float) -> dict[str, Any]:
    """One backend as the load balancer saw it over `window_s` seconds (two scrapes of its
    per-backend metrics): requests/s, error rate, the write feed. Raises when unreachable."""
    from tbs_emergency.domain.secondsource import backend_window as window

    settings = settings_for(config_path)
    lb = connectors_for(config_path).lb_metrics()
    before, after, took = _scrape_window(lb.scrape, window_s)
    server = settings.traffic.servers.get(env, env)
    return window(before, after, server, took)


@task(name="app-counters-window", retries=1, retry_delay_seconds=0.5)
@bounded(60)
def app_counters_window(config_path: str | None, env: str, window_s: float) -> dict[str, Any]:
    """The application's own counters (rows, requests, errors) over `window_s` seconds and the
    host gauges it reports, read from its `/metrics` directly. Raises when unreachable."""
    from tbs_emergency.domain.secondsource import app_window

    app = connectors_for(config_path).app_metrics(env)
    before, after, took = _scrape_window(app.scrape, window_s)
    return app_window(before, after, took)


# -- sessions ---------------------------------------------------------------------------------


@task(name="count-sessions", retries=2, retry_delay_seconds=0.5)
@bounded(20)
def count_sessions(config_path: str | None, env: str) -> int:
    """Active sessions in env's store; raises when the store cannot be read (retried)."""
    return int(connectors_for(config_path).sessions(env).count())


@task(name="preserve-sessions", retries=2, retry_delay_seconds=[0.5, 1])
@bounded(120)
def preserve_sessions(
    config_path: str | None, source: str, target: str, dry_run: bool = False
) -> dict[str, Any]:
    """Carry every live session (and the authentication state the application keeps beside
    them: the login lockdown flag) from source's Redis to target's, with its remaining TTL,
    verified key by key on the target (`RedisSessions.copy_to`).

    One store for both (same server and database): nothing to copy, the sessions are verified
    as shared. No session at all: `skipped` with "no sessions to carry" (a check over nothing
    is no pass). Raises when a store cannot be read or written, so the retries fire.
    """
    settings = settings_for(config_path)
    conn = connectors_for(config_path)
    src, dst = conn.sessions(source), conn.sessions(target)
    if dry_run:
        return {
            "ok": True,
            "dry_run": True,
            "sessions": src.count(),
            "shared_store": src.same_store(dst),
        }
    flag = settings.security.lockdown.login_flag_key
    res = src.copy_to(dst, extra_keys=[flag])
    out: dict[str, Any] = {"shared_store": res["shared"], **res}
    if res["before"] == 0:
        return {**out, "ok": True, "skipped": True, "reason": "no sessions to carry"}
    ok = res["missing"] == 0 and res["verified"] == res["before"] - res["expired"]
    ok = ok and res["extra"].get(flag) != "missing"
    if not ok:
        out["error"] = (
            f"{res['missing']} of {res['before']} sessions not verified on {target}"
            + (f" ({res['ttl_mismatch']} with a wrong TTL)" if res["ttl_mismatch"] else "")
            + (f"; the login flag {flag} is missing" if res["extra"].get(flag) == "missing" else "")
        )
    return {**out, "ok": ok}


# -- carrying green's acknowledged writes --------------------------------------------------------

CARRY_RETRIES = 2
CARRY_STATE_KEY = "state/carry/{source}-to-{target}.json"
REPLICA_WAIT_S = 5.0


def _carry_watermark(config_path: str | None, source: str, target: str) -> str | None:
    """The newest ledger time the last verified carry covered (None: never, or unreadable)."""
    import json

    key = CARRY_STATE_KEY.format(source=source, target=target)
    try:
        data = json.loads(connectors_for(config_path).store().get(key))
    except Exception:
        return None
    value = data.get("watermark") if isinstance(data, dict) else None
    return str(value) if value else None


def _save_carry_watermark(config_path: str | None, source: str, target: str, at: str) -> None:
    import json

    key = CARRY_STATE_KEY.format(source=source, target=target)
    body = {"watermark": at, "saved_at": time.time()}
    connectors_for(config_path).store().put(key, json.dumps(body).encode())


def _replica_settle(config_path: str | None, source: str, target: str) -> str | None:
    """When target's MySQL replicates (GTID), wait (bounded) until it has applied everything
    source's server has logged, so rows replication brings are not copied as well (a row
    copied first would stop the replica's SQL thread with a duplicate key). A note, or None
    when target does not replicate."""
    from tasks.database import admin_for
    from tbs_emergency.dbops.targets import live_identity, server_targets

    settings = settings_for(config_path)
    conn = connectors_for(config_path)
    try:
        tgt = server_targets(settings, ["mysql"], [target], identify=live_identity(settings))[0]
        admin = admin_for(config_path, tgt)
        status = admin.query_dicts("SHOW SLAVE STATUS")
    except Exception as exc:
        return f"could not tell whether {target}'s MySQL replicates: {type(exc).__name__}: {exc}"
    if not status:
        return None
    if status[0].get("Slave_SQL_Running") != "Yes":
        return f"{target}'s MySQL is a replica whose SQL thread is not running: rows are copied"
    pos = conn.mysql(source).query("SELECT @@global.gtid_binlog_pos")[0][0]
    wait_s = max(0.5, min(REPLICA_WAIT_S, settings.environment(target).mysql.timeout_s - 1))
    started = time.monotonic()
    got = admin.query("SELECT MASTER_GTID_WAIT(%s, %s)", (str(pos or ""), wait_s))[0][0]
    took = time.monotonic() - started
    if int(got) == 0:
        return f"replication {source} -> {target} caught up to {pos} ({took:.1f} s)"
    return f"replication {source} -> {target} not caught up within {wait_s:g} s: rows are copied"


def _carry_stores(config_path: str | None, source: str, target: str) -> Any:
    """`stores_for(table)` for carry_writes: blue's MySQL, and blue's HeavyDB where the table
    is there (the hot tables); sources in order of preference. A MySQL both environments
    share is only verified (no source to copy from); a shared HeavyDB is no target (green's
    application flushes its pending rows there itself). Both are said in the notes."""
    from tbs_emergency.connectors.heavydb import HeavyDBIntegrity
    from tbs_emergency.connectors.mysql import MySQLIntegrity
    from tbs_emergency.dbops.carry import CarryTarget, TableStores
    from tbs_emergency.integrity import SQLTableSource

    settings = settings_for(config_path)
    conn = connectors_for(config_path)
    configured = {t.name: t for t in settings.integrity.tables}
    notes: list[str] = []
    shared = {k: shared_server(config_path, source, target, k) for k in ("mysql", "heavydb")}
    for kind, same in shared.items():
        if same and kind == "mysql":
            notes.append(f"mysql: {source} and {target} share one server: verified, nothing copied")
        elif same:
            notes.append(
                f"{kind}: {source} and {target} share one server: nothing to carry there"
                f" ({source}'s application writes it)"
            )
        elif same is None:
            notes.append(f"{kind}: could not tell whether {source} and {target} share one server")
    heavy_tables: set[str] | None = None

    def stores_for(t: Any) -> Any:
        nonlocal heavy_tables
        cfg = configured.get(t.table)
        my_name = (cfg.mysql_name if cfg else None) or t.table
        hv_name = (cfg.heavydb_name if cfg else None) or t.table
        smy, tmy = conn.mysql(source), conn.mysql(target)
        shv, thv = conn.heavydb(source), conn.heavydb(target)
        # One MySQL for both: the ledgered keys are verified there, nothing is copied.
        targets = [
            CarryTarget(
                system=tmy.name,
                table=my_name,
                check=SQLTableSource(MySQLIntegrity(tmy), my_name),
                sink=tmy,
                sources=[] if shared["mysql"] else [(smy, my_name), (shv, hv_name)],
            )
        ]
        if not shared["heavydb"]:
            if heavy_tables is None:
                heavy_tables = {n.lower() for n in thv.tables()}
            if hv_name.lower() in heavy_tables:
                targets.append(
                    CarryTarget(
                        system=thv.name,
                        table=hv_name,
                        check=SQLTableSource(HeavyDBIntegrity(thv), hv_name),
                        sink=thv,
                        sources=[(tmy, my_name), (smy, my_name), (shv, hv_name)],
                    )
                )
        return TableStores(targets, critical=bool(cfg and cfg.critical))

    return stores_for, notes


def _key_ranges(config_path: str | None, source: str) -> tuple[list[Any], dict[str, bool]]:
    """Source's configured key ranges (`integrity.tables[].write_ranges`) as carry.KeyRange,
    and every configured table -> critical."""
    from tbs_emergency.dbops.carry import KeyRange

    tables = settings_for(config_path).integrity.tables
    ranges = [
        KeyRange(t.name, tuple(t.key), *t.write_ranges[source])
        for t in tables
        if source in t.write_ranges
    ]
    return ranges, {t.name: t.critical for t in tables}


def _range_authority(config_path: str | None, source: str) -> Any:
    """`authority_for(range)`: source's MySQL table as an integrity TableSource."""
    from tbs_emergency.connectors.mysql import MySQLIntegrity
    from tbs_emergency.integrity import SQLTableSource

    configured = {t.name: t for t in settings_for(config_path).integrity.tables}
    smy = connectors_for(config_path).mysql(source)

    def authority_for(r: Any) -> Any:
        cfg = configured.get(r.table)
        return SQLTableSource(MySQLIntegrity(smy), (cfg.mysql_name if cfg else None) or r.table)

    return authority_for


@task(name="carry-writes", retries=CARRY_RETRIES, retry_delay_seconds=[1, 2])
@bounded(150)
def carry_writes(
    config_path: str | None,
    source: str,
    target: str,
    since: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Every write source's application acknowledged (its ledger, since `since`, else since the
    last verified carry, else all) into target's MySQL and, for the hot tables, HeavyDB,
    verified with the integrity engine (tbs_emergency/dbops/carry.py). Run after source stops
    taking writes (traffic moved, databases read-only): writes accepted until then are in the
    ledger read here.

    When the ledger cannot be read (source's application down or hung, or an answer that is no
    whole ledger), source's MySQL is the authority over source's key ranges
    (`integrity.tables[].write_ranges`): the rows there that target lacks are carried and
    verified the same way. The result's `authority` says which ("ledger" or "<source> mysql
    key range") and `authority_reason` why the ledger was not used. With neither (no ranges,
    or source's MySQL unreadable too) nothing is carried: what source committed is unknown.

    Raises while attempts remain when the carry is not verified or has no authority (so a blip
    is retried); the last attempt returns the result (`ok` false, `missing` = keys not on
    target, or None when unknown) for the journal.
    """
    from prefect.runtime import task_run

    from tbs_emergency.dbops import carry

    conn = connectors_for(config_path)
    start = since or _carry_watermark(config_path, source, target)
    writes: list[Any] = []
    tables: dict[str, Any] | None = None
    ledger_error: str | None = None
    try:
        writes = conn.app(source).ledger(start)
        tables = carry.ledger_keys(writes)
    except TbsError as exc:
        ledger_error = str(exc)
    except Exception as exc:  # a malformed ledger (ValueError) or a connector bug
        ledger_error = f"{type(exc).__name__}: {exc}"
    ranges, configured = _key_ranges(config_path, source)
    mysql_error: str | None = None
    if ledger_error is not None and ranges:
        probe = conn.mysql(source).ping()
        mysql_error = None if probe.reachable else probe.detail
    choice = carry.choose_authority(source, ledger_error, ranges, mysql_error, configured)
    if choice.authority is None:
        error = choice.problems[0]
        if 0 < task_run.run_count <= CARRY_RETRIES:  # 0: called outside a task run (.fn)
            raise RuntimeError(error)
        return {
            "ok": False,
            "authority": None,
            "authority_reason": choice.reason,
            "missing": None,  # unknown: nothing says what source committed
            "copied": 0,
            "since": start,
            "watermark": start,
            "problems": choice.problems,
            "lines": choice.problems,
            "error": error,
        }
    replica = None if dry_run else _replica_settle(config_path, source, target)
    stores_for, notes = _carry_stores(config_path, source, target)
    if choice.authority == carry.LEDGER:
        result = carry.carry_writes(
            writes,
            stores_for,
            source=source,
            target=target,
            since=start,
            dry_run=dry_run,
            tables=tables,
        )
    else:
        result = carry.carry_key_ranges(
            choice,
            _range_authority(config_path, source),
            stores_for,
            source=source,
            target=target,
            since=start,
            dry_run=dry_run,
        )
        # Not advanced: the ledger's times are the application host's clock, and this carry
        # does not say which entries it covered; the next ledger carry re-reads from here
        # (insert-if-absent: what this carry brought is found present, nothing copied twice).
        result.notes.append(
            "ledger watermark "
            + (f"left at {start}" if start else "not set")
            + ": a carry by key range does not advance it"
        )
    result.notes = notes + ([replica] if replica else []) + result.notes
    ro, _ = _attempt(lambda: conn.mysql(source).is_read_only())
    if ro is False and not shared_server(config_path, source, target, "mysql"):
        result.notes.append(
            f"{source}'s MySQL is writable: writes it commits after this "
            + ("ledger read" if choice.authority == carry.LEDGER else "key-range diff")
            + " are not carried (the rollback makes it read-only first)"
        )
    summary = result.summary()
    if dry_run:
        return {**summary, "dry_run": True}
    if result.nothing_to_carry:
        reason = result.lines()[1 if result.by_key_range else 0]
        return {**summary, "ok": True, "skipped": True, "reason": reason}
    if not result.ok:
        # By key range, a table whose range could not be compared has no count: unknown.
        unknown = result.by_key_range and any(
            g.still_missing is None for t in result.tables for g in t.targets
        )
        if unknown:
            summary["missing"] = None
        summary["error"] = (
            f"{'an unknown number of' if unknown else result.missing} acknowledged writes of"
            f" {source} not verified on {target}"
            + (f" ({result.authority})" if result.by_key_range else "")
            + (f": {result.problems[0]}" if result.problems else "")
        )
        if 0 < task_run.run_count <= CARRY_RETRIES:  # 0: called outside a task run (.fn)
            raise RuntimeError(summary["error"])
        return summary
    if result.watermark and not result.by_key_range:
        try:
            _save_carry_watermark(config_path, source, target, result.watermark)
        except Exception as exc:  # the next carry then reads more of the ledger: no loss
            summary["notes"] = [*summary["notes"], f"watermark not saved: {exc}"]
    return summary


# -- databases --------------------------------------------------------------------------------


@task(name="wait-in-flight-transactions", retries=0)
@bounded(300)
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
    if fa == fb and kind == "heavydb":
        # HeavyDB reports host, start second and version only: two servers on one host started
        # in the same second look alike. One server lists the other connection's session.
        return _sees_session(config_path, a, b)
    return fa == fb


def _sees_session(config_path: str | None, a: str, b: str) -> bool | None:
    """Whether a's HeavyDB lists the session b's connection holds (then they are one server)."""
    conn = connectors_for(config_path)
    hb = conn.heavydb(b)
    _, err = _attempt(hb.ping)
    own = hb._own_public_session()
    listed, err2 = _attempt(lambda: conn.heavydb(a).sessions())
    if err or err2 or own is None or listed is None:
        return None
    return any(s.id.rsplit("-", 1)[-1] == own for s in listed)


@task(name="set-read-only", retries=1, retry_delay_seconds=1)
@bounded(60)
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


@task(name="verify-user-access", retries=1, retry_delay_seconds=0.5)
@bounded(60)
def verify_user_access(config_path: str | None, target: str, samples: int = 5) -> dict[str, Any]:
    """Up to `samples` active sessions still work through the load balancer and are served by
    `target` (runbook: `verify-user-access.sh --sample-users=5`). No session to sample is "not
    verified" (`ok: False`, `verified: False`), never a pass."""
    from tbs_emergency.connectors.useraccess import UserAccess

    settings = settings_for(config_path)
    conn = connectors_for(config_path)
    ids, err = _attempt(lambda: conn.sessions(target).list_ids(limit=samples))
    if err:
        return {"ok": False, "error": err}
    ua = UserAccess(settings.traffic.url or settings.environment(target).app_url)
    if not ids:
        # No session to sample: that is not a pass. A user without a session must still reach
        # `target` through the load balancer; that one request is checked, and said.
        ans, err = _attempt(ua.anonymous)
        served = (ans or {}).get("served_by")
        ok = err is None and served == target
        return {
            "ok": ok,
            "verified": ok,
            "checked": 0,
            "anonymous": {"ok": ok, "served_by": served, "error": err},
            "reason": f"no active session on {target} to sample; an anonymous request through"
            f" the load balancer was {'served by ' + str(served) if err is None else err}",
        }
    results = []
    for sid in ids:
        ans, err = _attempt(lambda s=sid: ua.me(s))
        served = (ans or {}).get("served_by")
        results.append({"ok": err is None and served == target, "served_by": served, "error": err})
    ok = sum(1 for r in results if r["ok"])
    return {
        "ok": ok == len(results),
        "verified": True,
        "checked": len(results),
        "passed": ok,
        "results": results,
    }
