"""Collecting each evidence source (see `evidence.SOURCES`) from the live systems.

Each collector returns a JSON-able payload and the systems it read; it raises when the source
cannot be read (the caller records that source as missing, with the reason).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from tbs_emergency.security.evidence import session_rows
from tbs_emergency.security.systems import Systems


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds")


def collect(systems: Systems, source: str, window_s: float, step_s: float) -> dict[str, Any]:
    """`{"source", "collected_at", "systems", "data"}` of one source."""
    now = datetime.now(UTC)
    since = now - timedelta(seconds=window_s)
    fn = _COLLECTORS[source]
    names, data = fn(systems, since, window_s, step_s)
    return {
        "source": source,
        "collected_at": _iso(now),
        "since": _iso(since),
        "systems": names,
        "data": data,
    }


def _mysql_processlist(sys: Systems, since: datetime, *_: Any) -> tuple[list[str], Any]:
    out, names = {}, []
    for t in sys.targets("mysql"):
        names.append(t.name)
        out[t.name] = session_rows(sys.mysql_admin(t.env).sessions())
    return names, out


def _mysql_binlog(sys: Systems, since: datetime, *_: Any) -> tuple[list[str], Any]:
    out, names = {}, []
    for t in sys.targets("mysql"):
        names.append(t.name)
        file, pos, gtid = sys.mysql_admin(t.env).binlog_position()
        out[t.name] = {"file": file, "position": pos, "gtid": gtid}
    return names, out


def _heavydb_sessions(sys: Systems, since: datetime, *_: Any) -> tuple[list[str], Any]:
    out, names = {}, []
    for t in sys.targets("heavydb"):
        names.append(t.name)
        db = sys.heavydb(t.env)
        out[t.name] = {
            "server": db.server_status(),
            "sessions": session_rows(db.sessions()),
            "users": [
                {"name": u.name, "can_login": u.can_login, "is_super": u.is_super}
                for u in db.users()
            ],
        }
    return names, out


def _redis_sessions(sys: Systems, since: datetime, *_: Any) -> tuple[list[str], Any]:
    out, names = {}, []
    for env in sys.redis_envs():
        r = sys.sessions(env)
        names.append(r.name)
        out[r.name] = {"sessions": r.session_summaries()}
    return names, out


def _lb_state(sys: Systems, since: datetime, *_: Any) -> tuple[list[str], Any]:
    t = sys.traffic()
    status = dict(t.status()) if hasattr(t, "status") else {"active": t.active()}
    status.pop("backends", None)  # URLs of the backends: configuration, not evidence
    return [t.name], status


def _lb_access_log(sys: Systems, since: datetime, *_: Any) -> tuple[list[str], Any]:
    t = sys.traffic()
    return [t.name], {"entries": t.access_log(since=_iso(since))}


def _app_health(sys: Systems, since: datetime, *_: Any) -> tuple[list[str], Any]:
    out, names = {}, []
    for env in sorted(sys.settings.environments):
        a = sys.app(env)
        names.append(a.name)
        out[env] = a.health()
    return names, out


def _app_login_audit(sys: Systems, since: datetime, *_: Any) -> tuple[list[str], Any]:
    key = sys.settings.security.login_audit_key
    out, names = {}, []
    cutoff = _iso(since)
    for env in sys.redis_envs():
        r = sys.sessions(env)
        names.append(r.name)
        entries = [e for e in r.login_audit(key) if str(e.get("at") or "") >= cutoff[:19]]
        out[r.name] = {"key": key, "entries": entries}
    return names, out


def _prometheus(
    sys: Systems, since: datetime, window_s: float, step_s: float
) -> tuple[list[str], Any]:
    m = sys.conn.metrics()
    cfg = sys.settings.metrics
    end = time.time()
    out: dict[str, Any] = {}
    for env in sorted(sys.settings.environments):
        for signal in sorted(cfg.queries):
            q = cfg.query(signal, env, 60.0)
            series = m.range(q, end - window_s, end, step_s)
            out[f"{env}/{signal}"] = {
                "query": q,
                "series": [{"labels": dict(lbl), "values": vals} for lbl, vals in series],
            }
    return [m.name], out


_COLLECTORS = {
    "mysql-processlist": _mysql_processlist,
    "mysql-binlog-position": _mysql_binlog,
    "heavydb-sessions": _heavydb_sessions,
    "redis-sessions": _redis_sessions,
    "lb-state": _lb_state,
    "lb-access-log": _lb_access_log,
    "app-health": _app_health,
    "app-login-audit": _app_login_audit,
    "prometheus-last-hour": _prometheus,
}
