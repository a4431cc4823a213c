"""Recovery validation tasks (runbook: "Recovery Validation Procedures"): one measurement each.

Every task measures one thing against one environment and returns a `CheckResult`; it never
raises for a finding (a failed check, an unreachable system): those are results. Measurements
are not retried: a retry would hide the very flakiness validation is there to see.

- `db_performance`: a real insert + read-back workload on a scratch table `tbs_validation_*`
  in HeavyDB or MySQL, dropped afterwards (the drop is reported if it fails).
- `platform_throughput`: the platform's rows/s as Prometheus has it (`metrics.queries.throughput`,
  what the rollback triggers compare with their baseline).
- `api_latency`, `ui_load`, `concurrent_users`: timed HTTP requests to the environment's app.
- `functional_check`: one declared check (HTTP and SQL steps with expectations).

HTTP goes through the connectors' `HttpEndpoint` (no driver import here); SQL through the
MySQL/HeavyDB connectors.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from typing import Any
from urllib.parse import urljoin, urlsplit

from prefect import task

from tasks.common import settings_for
from tasks.incident import connectors_for
from tbs_emergency.config import Settings
from tbs_emergency.connectors._http import HttpEndpoint
from tbs_emergency.errors import ConfigError, ConnectorError, Refused, TbsError
from tbs_emergency.validation.declarations import (
    SCRATCH_PREFIX,
    SECRET_VARIABLES,
    ConcreteCheck,
    HttpStep,
    SqlStep,
    evaluate_http,
    evaluate_sql,
    fill,
    json_path,
)
from tbs_emergency.validation.stats import summarize
from tbs_emergency.validation.verdict import (
    CheckResult,
    errored,
    latency_check,
    skipped,
    throughput_check,
)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConfigError):
        return "; ".join(exc.problems)
    if isinstance(exc, TbsError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def app_endpoint(settings: Settings, env: str, timeout_s: float) -> HttpEndpoint:
    """A fresh HTTP client for the environment's application (one per simulated user)."""
    return HttpEndpoint(f"app[{env}]", settings.environment(env).app_url, timeout_s)


def _password(settings: Settings, username: str) -> str | None:
    for u in settings.validation.users:
        if u.username == username:
            return u.password.get_secret_value()
    return None


def _mysql_as(settings: Settings, config_path: str | None, env: str, account: str) -> Any:
    """The environment's MySQL as the app account, or as an administrative account."""
    from tbs_emergency.connectors import system_name
    from tbs_emergency.connectors.mysql import MySQLDatabase

    if account == "app":
        return connectors_for(config_path).mysql(env)
    chosen = (
        settings.validation.performance.mysql_account if account == "performance" else None
    ) or settings.database_emergency.mysql_admin
    if chosen is None:
        return connectors_for(config_path).mysql(env)
    password = chosen.password.get_secret_value() if chosen.password else ""
    return MySQLDatabase(
        settings.environment(env).mysql,
        f"{system_name(settings, 'mysql', env)} as {chosen.user}",
        user=chosen.user,
        password=password,
    )


# --------------------------------------------------------------------------------------------
# Database performance
# --------------------------------------------------------------------------------------------


def measure_db_workload(db: Any, engine: str, duration_s: float, batch_rows: int) -> dict[str, Any]:
    """Insert batches into a new scratch table and read each back until the time is up.

    Returns rows/s (rows inserted and read back per second of workload), the insert and select
    rates separately, and the scratch table's fate. Raises when the workload cannot start.
    """
    table = f"{SCRATCH_PREFIX}perf_{uuid.uuid4().hex[:10]}"
    run = db.execute if engine == "mysql" else db.query
    # Portable DDL: BIGINT and DOUBLE mean the same in HeavyDB and MySQL.
    run(f"CREATE TABLE {table} (id BIGINT, v DOUBLE)")
    written = read = 0
    insert_s = select_s = 0.0
    mismatches = 0
    dropped, drop_error = False, None
    started = time.perf_counter()
    try:
        deadline = started + duration_s
        lo = 0
        while True:
            rows = [(i, i * 0.5) for i in range(lo, lo + batch_rows)]
            t0 = time.perf_counter()
            db.write_rows(table, ["id"], ["id", "v"], rows, [])
            t1 = time.perf_counter()
            got = db.query(f"SELECT id, v FROM {table} WHERE id >= {lo} AND id < {lo + batch_rows}")
            t2 = time.perf_counter()
            insert_s += t1 - t0
            select_s += t2 - t1
            written += len(rows)
            read += len(got)
            if len(got) != len(rows):
                mismatches += 1
            lo += batch_rows
            if t2 >= deadline:
                break
        elapsed = time.perf_counter() - started
    finally:
        try:
            run(f"DROP TABLE IF EXISTS {table}")
            dropped = True
        except Exception as exc:
            drop_error = _why(exc)
    return {
        "table": table,
        "rows_written": written,
        "rows_read": read,
        "seconds": round(elapsed, 3),
        "rows_per_s": written / elapsed if elapsed > 0 else 0.0,
        "insert_rows_per_s": written / insert_s if insert_s > 0 else None,
        "select_rows_per_s": read / select_s if select_s > 0 else None,
        "batches_short": mismatches,
        "dropped": dropped,
        "drop_error": drop_error,
    }


@task(name="validate-db-performance", retries=0, timeout_seconds=3600)
def db_performance(
    config_path: str | None, env: str, engine: str, duration_s: float
) -> CheckResult:
    """`test-db-performance.sh`: rows/s of a real workload against the configured baseline."""
    settings = settings_for(config_path)
    p = settings.validation.performance
    name = f"database performance ({engine})"
    source = f"measured: insert + read-back of {p.batch_rows}-row batches, {duration_s:g} s"
    try:
        if engine == "mysql":
            db = _mysql_as(settings, config_path, env, "performance")
        else:
            db = connectors_for(config_path).heavydb(env)
        m = measure_db_workload(db, engine, duration_s, p.batch_rows)
    except Exception as exc:
        hint = ""
        if engine == "mysql" and isinstance(exc, Refused):
            hint = (
                " (the account needs CREATE and DROP on the archive schema:"
                " set validation.performance.mysql_account or database_emergency.mysql_admin)"
            )
        return throughput_check(
            name,
            None,
            p.baseline_rows_per_s,
            p.max_degradation_percent,
            source=source,
            error=f"workload could not run: {_why(exc)}{hint}",
        )
    notes = [
        f"{m['rows_written']:,} rows in {m['seconds']:.1f} s",
        f"insert {m['insert_rows_per_s'] or 0:,.0f} rows/s,"
        f" select {m['select_rows_per_s'] or 0:,.0f} rows/s",
    ]
    if m["batches_short"]:
        notes.append(f"{m['batches_short']} batch(es) read back short: data was lost")
    if not m["dropped"]:
        notes.append(f"scratch table {m['table']} NOT dropped ({m['drop_error']}): drop it by hand")
    result = throughput_check(
        name,
        m["rows_per_s"],
        p.baseline_rows_per_s,
        p.max_degradation_percent,
        source=source,
        detail="; ".join(notes),
        data=m,
    )
    if m["batches_short"]:
        result = result.model_copy(update={"status": "fail"})
    return result


@task(name="validate-platform-throughput", retries=0, timeout_seconds=60)
def platform_throughput(config_path: str | None, env: str, window_s: float) -> CheckResult:
    """The environment's rows/s as Prometheus reports it, against the trigger's baseline."""
    settings = settings_for(config_path)
    perf = settings.triggers.performance_degradation
    query = settings.metrics.query("throughput", env, window_s)
    name = "platform throughput (Prometheus)"
    source = f"prometheus: {query}"
    try:
        samples = connectors_for(config_path).metrics().instant(query)
    except Exception as exc:
        return throughput_check(
            name, None, perf.baseline_rows_per_s, perf.threshold, source=source, error=_why(exc)
        )
    if not samples:
        return throughput_check(
            name,
            None,
            perf.baseline_rows_per_s,
            perf.threshold,
            source=source,
            error="Prometheus has no data for this query (monitoring blind?)",
        )
    value = sum(s.value for s in samples)
    return throughput_check(
        name,
        value,
        perf.baseline_rows_per_s,
        perf.threshold,
        source=source,
        detail=f"over the last {window_s:g} s; the signal the rollback triggers compare",
        data={"query": query},
    )


# --------------------------------------------------------------------------------------------
# HTTP timings
# --------------------------------------------------------------------------------------------


def timed_get(
    http: HttpEndpoint, path: str, headers: dict[str, str] | None = None
) -> tuple[int | None, float, str | None]:
    """(status or None, milliseconds, error text) of one GET."""
    t0 = time.perf_counter()
    try:
        resp = http.request("GET", path, f"GET {path}", headers=headers)
    except ConnectorError as exc:
        return None, (time.perf_counter() - t0) * 1000.0, exc.detail
    ms = (time.perf_counter() - t0) * 1000.0
    return resp.status, ms, None if resp.status < 400 else f"HTTP {resp.status}"


@task(name="validate-api-latency", retries=0, timeout_seconds=1800)
def api_latency(config_path: str | None, env: str, samples: int) -> CheckResult:
    """`test-api-response.sh --endpoints=critical --samples=100`: sequential, round-robin."""
    settings = settings_for(config_path)
    a = settings.validation.api
    http = app_endpoint(settings, env, a.timeout_s)
    lat: list[float] = []
    per: dict[str, list[float]] = {e: [] for e in a.endpoints}
    errors: dict[str, int] = {e: 0 for e in a.endpoints}
    last_error: dict[str, str] = {}
    try:
        for i in range(samples):
            path = a.endpoints[i % len(a.endpoints)]
            _status, ms, err = timed_get(http, path)
            if err is None:
                lat.append(ms)
                per[path].append(ms)
            else:
                errors[path] += 1
                last_error[path] = err
    finally:
        http.close()
    breakdown = {
        p: summarize(per[p], errors[p]).model_dump()
        | ({"error": last_error[p]} if p in last_error else {})
        for p in a.endpoints
    }
    failing = [f"{p}: {last_error[p]}" for p in a.endpoints if p in last_error]
    return latency_check(
        "API response time",
        summarize(lat, sum(errors.values())),
        {"p50": a.p50_ms, "p95": a.p95_ms, "p99": a.p99_ms},
        a.max_error_percent,
        category="api",
        detail=("errors: " + "; ".join(failing))
        if failing
        else f"endpoints: {', '.join(a.endpoints)}",
        data={"endpoints": breakdown},
    )


_ASSET = re.compile(
    r"""(?:src|href)\s*=\s*["']([^"'#?]+\.(?:js|css|png|jpg|jpeg|gif|svg|ico|woff2?))(?:[?#][^"']*)?["']""",
    re.I,
)


def page_assets(base_url: str, page_path: str, html: str) -> list[str]:
    """Same-origin scripts, stylesheets, images and fonts a page references (paths)."""
    page = urljoin(base_url.rstrip("/") + "/", page_path.lstrip("/"))
    origin = urlsplit(base_url)
    out = []
    for ref in _ASSET.findall(html):
        url = urlsplit(urljoin(page, ref))
        if (url.scheme, url.netloc) == (origin.scheme, origin.netloc) and url.path not in out:
            out.append(url.path)
    return out


@task(name="validate-ui-load", retries=0, timeout_seconds=1800)
def ui_load(config_path: str | None, env: str, samples: int) -> CheckResult:
    """`test-ui-load.sh --pages=critical --samples=10`: the page plus its same-origin assets,
    fetched one after another (an upper bound of what a browser, fetching in parallel, sees)."""
    settings = settings_for(config_path)
    u = settings.validation.ui
    http = app_endpoint(settings, env, u.timeout_s)
    loads: list[float] = []
    errors = 0
    last_error = ""
    assets_seen: dict[str, int] = {}
    try:
        for i in range(samples):
            page = u.pages[i % len(u.pages)]
            t0 = time.perf_counter()
            try:
                resp = http.request("GET", page, f"load page {page}")
            except ConnectorError as exc:
                errors += 1
                last_error = f"{page}: {exc.detail}"
                continue
            if resp.status >= 400:
                errors += 1
                last_error = f"{page}: HTTP {resp.status}"
                continue
            assets = page_assets(http.base_url, page, resp.text)
            assets_seen[page] = len(assets)
            bad = None
            for asset in assets:
                _status, _, err = timed_get(http, asset)
                if err is not None:
                    bad = f"{page}: asset {asset}: {err}"
                    break
            if bad:
                errors += 1
                last_error = bad
                continue
            loads.append((time.perf_counter() - t0) * 1000.0)
    finally:
        http.close()
    detail = f"pages: {', '.join(f'{p} (+{n} assets)' for p, n in assets_seen.items()) or '-'}"
    if last_error:
        detail += f"; last error: {last_error}"
    return latency_check(
        "UI load time",
        summarize(loads, errors),
        {"mean": u.mean_ms, "p95": u.p95_ms},
        u.max_error_percent,
        category="ui",
        detail=detail,
    )


def simulate_users(settings: Settings, env: str, users: int, duration_s: float) -> dict[str, Any]:
    """N threads, each a user: log in (sample users in turn), then repeat the configured
    requests with a think time until the duration is up. Returns latencies and failures."""
    c = settings.validation.concurrency
    accounts = settings.validation.users
    requests = list(c.requests)
    notes: list[str] = []
    if not accounts and any(p.startswith("/api/me") for p in requests):
        requests = [p for p in requests if not p.startswith("/api/me")] or ["/health"]
        notes.append("no sample users: requests needing a session left out")
    lock = threading.Lock()
    lat: list[float] = []
    failures: dict[str, int] = {}
    logins = {"ok": 0, "failed": 0}
    start = time.monotonic()
    deadline = start + duration_s

    def fail(why: str) -> None:
        with lock:
            failures[why] = failures.get(why, 0) + 1

    def user(n: int) -> None:
        http = app_endpoint(settings, env, c.timeout_s)
        headers: dict[str, str] = {}
        try:
            if accounts:
                acct = accounts[n % len(accounts)]
                t0 = time.perf_counter()
                try:
                    resp = http.request(
                        "POST",
                        "/login",
                        "log in",
                        json={
                            "username": acct.username,
                            "password": acct.password.get_secret_value(),
                        },
                    )
                    ok = resp.status == 200
                    sid = http.json_of("log in", resp).get("session_id") if ok else None
                except (ConnectorError, AttributeError) as exc:
                    ok, sid = False, None
                    fail(f"login: {getattr(exc, 'detail', exc)}")
                with lock:
                    logins["ok" if ok and sid else "failed"] += 1
                    if ok and sid:
                        lat.append((time.perf_counter() - t0) * 1000.0)
                if not (ok and sid):
                    fail("login refused")
                    return
                headers = {"X-Session-Id": str(sid)}
            i = 0
            while time.monotonic() < deadline:
                path = requests[i % len(requests)]
                i += 1
                _, ms, err = timed_get(http, path, headers)
                if err is None:
                    with lock:
                        lat.append(ms)
                else:
                    fail(f"{path}: {err}")
                if c.think_time:
                    time.sleep(c.think_time)
        finally:
            http.close()

    threads = [
        threading.Thread(target=user, args=(n,), name=f"vu-{n}", daemon=True) for n in range(users)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=duration_s + c.timeout_s * 3 + 10)
    elapsed = time.monotonic() - start
    stuck = sum(1 for t in threads if t.is_alive())
    if stuck:
        notes.append(f"{stuck} simulated user(s) still waiting for an answer at the end")
    return {
        "latencies": lat,
        "failures": failures,
        "logins": logins,
        "seconds": round(elapsed, 3),
        "requests": requests,
        "notes": notes,
    }


@task(name="validate-concurrent-users", retries=0, timeout_seconds=7200)
def concurrent_users(
    config_path: str | None, env: str, users: int, duration_s: float
) -> CheckResult:
    """`test-concurrent-users.sh --users=20 --duration=300s`."""
    settings = settings_for(config_path)
    c = settings.validation.concurrency
    try:
        r = simulate_users(settings, env, users, duration_s)
    except Exception as exc:
        return errored("concurrent users", "concurrency", _why(exc))
    n_fail = sum(r["failures"].values())
    summary = summarize(r["latencies"], n_fail)
    rate = len(r["latencies"]) / r["seconds"] if r["seconds"] else 0.0
    worst = sorted(r["failures"].items(), key=lambda kv: -kv[1])[:3]
    detail = f"{users} users for {duration_s:g} s, {rate:.1f} requests/s"
    if worst:
        detail += "; failures: " + ", ".join(f"{k} x{v}" for k, v in worst)
    if r["notes"]:
        detail += "; " + "; ".join(r["notes"])
    result = latency_check(
        "concurrent users",
        summary,
        {"p95": c.p95_ms},
        c.max_error_percent,
        category="concurrency",
        detail=detail,
        data={"logins": r["logins"], "requests_per_s": round(rate, 2), "users": users},
    )
    return result.model_copy(update={"measured": summary.p95_ms})


# --------------------------------------------------------------------------------------------
# Functional checks
# --------------------------------------------------------------------------------------------


@task(name="validate-strategies", retries=1, retry_delay_seconds=1, timeout_seconds=60)
def strategies(config_path: str | None, env: str) -> tuple[list[int | str], str | None]:
    """The strategies the trading checks cover: configured, else found in MySQL."""
    settings = settings_for(config_path)
    v = settings.validation
    if v.strategies or not v.strategies_query:
        return list(v.strategies), None
    try:
        rows = connectors_for(config_path).mysql(env).query(v.strategies_query)
    except Exception as exc:
        return [], f"could not list strategies: {_why(exc)}"
    return [r[0] for r in rows], None


def _run_http(
    http: HttpEndpoint, step: HttpStep, variables: dict[str, Any]
) -> tuple[list[str], dict[str, Any]]:
    s = step.model_copy(
        update={
            "path": fill(step.path, variables),
            "headers": fill(step.headers, variables),
            "json_body": fill(step.json_body, variables),
            "body": fill(step.body, variables),
            "content_type": fill(step.content_type, variables),
            "expect": step.expect.model_copy(
                update={"json_equals": fill(step.expect.json_equals, variables)}
            ),
        }
    )
    headers = dict(s.headers)
    if s.content_type:
        headers["Content-Type"] = str(s.content_type)
    kwargs: dict[str, Any] = {"headers": headers}
    if s.json_body is not None:
        kwargs["json"] = s.json_body
    t0 = time.perf_counter()
    if s.body is not None:
        # raw bodies go through the shared client; HttpEndpoint.request has no `content` arg
        resp = _raw(http, s.method, str(s.path), str(s.body).encode(), headers)
    else:
        resp = http.request(s.method, str(s.path), f"{s.method} {s.path}", **kwargs)
    ms = (time.perf_counter() - t0) * 1000.0
    try:
        body = resp.json()
    except ValueError:
        body = None
    problems = evaluate_http(s.expect, resp.status, body, resp.text, ms)
    saved = {}
    for var, path in s.save.items():
        value = json_path(body, path) if body is not None else None
        if value is None or not isinstance(value, str | int | float):
            problems.append(f"cannot save {var}: {path} not in the answer")
        else:
            saved[var] = value
    return [f"{s.method} {s.path}: {p}" for p in problems], saved


def _raw(http: HttpEndpoint, method: str, path: str, data: bytes, headers: dict[str, str]) -> Any:
    """A request with a raw body (CSV upload) through the endpoint's own pooled client.

    `HttpEndpoint.request` takes JSON or form data only; until it takes raw content this uses
    its client directly and maps transport failures the way it does (no driver import here).
    """
    from tbs_emergency.connectors._http import HttpResponse
    from tbs_emergency.errors import TimedOut, Unreachable

    op = f"{method} {path}"
    try:
        r = http._http().request(method, http.url(path), content=data, headers=headers)
    except Exception as exc:
        if "Timeout" in type(exc).__name__:
            raise TimedOut(http.system, op, f"no answer within {http.timeout_s:g}s") from None
        raise Unreachable(http.system, op, f"{http.redacted(path)}: {type(exc).__name__}") from None
    return HttpResponse(r.status_code, dict(r.headers), r.content)


def _run_sql(settings: Settings, config_path: str | None, env: str, step: SqlStep) -> list[str]:
    if step.engine == "mysql":
        db = _mysql_as(settings, config_path, env, step.account)
    else:
        db = connectors_for(config_path).heavydb(env)
    rows, refused = None, None
    try:
        rows = db.query(step.query)
    except Refused as exc:
        refused = exc.detail
    problems = evaluate_sql(step.expect, rows, refused)
    if step.expect.refused and refused is None and step.cleanup:
        try:
            db.query(step.cleanup)
        except Exception as exc:
            problems.append(f"cleanup {step.cleanup!r} failed: {_why(exc)}")
    return [f"{step.engine} `{step.query}`: {p}" for p in problems]


# No task timeout: these run in worker threads, where Prefect cannot interrupt them; every step
# is bounded by its HTTP (validation.http_timeout_s) or database connector timeout instead.
@task(name="validate-functional-check", retries=0)
def functional_check(config_path: str | None, env: str, check: ConcreteCheck) -> CheckResult:
    """Run one declared check's steps in order; stop at the first step that fails."""
    settings = settings_for(config_path)
    if check.skipped:
        return skipped(check.name, check.category, check.skipped, check.required)
    variables: dict[str, Any] = dict(check.variables)
    if "username" in variables:
        pw = _password(settings, str(variables["username"]))
        if pw is not None:
            variables["password"] = pw
    shown = {k: v for k, v in variables.items() if k not in SECRET_VARIABLES}
    http = app_endpoint(settings, env, settings.validation.http_timeout_s)
    t0 = time.perf_counter()
    done = 0
    try:
        for step in check.steps:
            if isinstance(step, HttpStep):
                problems, saved = _run_http(http, step, variables)
                variables.update(saved)
            else:
                problems = _run_sql(settings, config_path, env, step)
            if problems:
                return CheckResult(
                    name=check.name,
                    category=check.category,
                    status="fail",
                    required=check.required,
                    detail=f"step {done + 1}/{len(check.steps)}: " + "; ".join(problems),
                    seconds=round(time.perf_counter() - t0, 3),
                )
            done += 1
    except Exception as exc:
        return CheckResult(
            name=check.name,
            category=check.category,
            status="error",
            required=check.required,
            detail=f"step {done + 1}/{len(check.steps)} could not run: {_why(exc)}",
            seconds=round(time.perf_counter() - t0, 3),
        )
    finally:
        http.close()
    return CheckResult(
        name=check.name,
        category=check.category,
        status="pass",
        required=check.required,
        detail=f"{len(check.steps)} step(s): "
        + ", ".join(str(fill(s.describe(), shown)) for s in check.steps)[:300],
        seconds=round(time.perf_counter() - t0, 3),
    )
