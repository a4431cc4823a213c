"""Security assessment (runbook: `analyze-security-logs.sh --since="last 1 hour"
--suspicious-activity`, `assess-system-compromise.sh`): findings from the access logs and the
database activity of a window. Pure functions over what the evidence collected.

Findings:
- `failed-login-burst`: at least N failed logins of one user, or from one source, within the
  burst window (high when a login of that user or source succeeded afterwards);
- `unusual-source`: requests or logins from addresses outside the internal networks;
- `volume-spike`: a minute with more requests than factor x the median minute (and a minimum);
- `blocked-requests`: requests the load balancer refused (network restriction, rate limit);
- `privilege-change`: account and privilege statements in the MySQL binary log;
- `database-session`: database sessions from outside the internal networks, or of users the
  privilege policy does not know.
"""

from __future__ import annotations

import ipaddress
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from tbs_emergency.config import AssessmentConfig

Severity = Literal["high", "medium", "low", "info"]


class Finding(BaseModel):
    kind: str
    severity: Severity
    summary: str
    detail: dict[str, Any] = Field(default_factory=dict)


class Findings(BaseModel):
    window_start: str
    window_end: str
    findings: list[Finding] = Field(default_factory=list)
    inputs: dict[str, int] = Field(default_factory=dict)
    unavailable: list[str] = Field(default_factory=list)

    @property
    def worst(self) -> Severity | None:
        order = ["high", "medium", "low", "info"]
        present = [f.severity for f in self.findings]
        return next((s for s in order if s in present), None)  # type: ignore[return-value]

    def markdown(self, title: str = "Security assessment") -> str:
        out = [
            f"# {title}",
            "",
            f"Window {self.window_start} to {self.window_end}; inputs: "
            + ", ".join(f"{k} {v}" for k, v in self.inputs.items()),
            "",
        ]
        if not self.findings:
            out.append("No suspicious activity found.")
        else:
            out += ["| severity | kind | finding |", "|---|---|---|"]
            order = {"high": 0, "medium": 1, "low": 2, "info": 3}
            for f in sorted(self.findings, key=lambda f: order[f.severity]):
                out.append(f"| {f.severity} | {f.kind} | {f.summary.replace('|', '/')} |")
        out += [f"- **not analysed:** {u}" for u in self.unavailable]
        return "\n".join(out) + "\n"


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    text = str(value).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def is_internal(address: str | None, networks: Sequence[str]) -> bool:
    if not address:
        return True  # a local socket: no network address
    try:
        addr = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        host = address.rsplit(":", 1)[0]
        if host in ("localhost", ""):
            return True
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
    return any(addr in ipaddress.ip_network(n, strict=False) for n in networks)


def failed_login_bursts(logins: Iterable[dict[str, Any]], cfg: AssessmentConfig) -> list[Finding]:
    """Bursts of failed logins per user and per source, and whether a success followed."""
    entries = sorted(
        ((t, e) for e in logins if (t := _parse_time(e.get("at"))) is not None),
        key=lambda x: x[0],
    )
    out: list[Finding] = []
    for field, label in (("user", "user"), ("remote", "source")):
        fails: dict[str, list[datetime]] = defaultdict(list)
        for t, e in entries:
            if not e.get("ok") and e.get("reason") != "lockdown":
                fails[str(e.get(field) or "?")].append(t)
        for who, times in fails.items():
            best, j = 0, 0
            for i in range(len(times)):
                while (times[i] - times[j]).total_seconds() > cfg.burst_window:
                    j += 1
                best = max(best, i - j + 1)
            if best < cfg.failed_login_burst:
                continue
            last_fail = times[-1]
            success = any(
                e.get("ok") and str(e.get(field) or "?") == who and t >= times[0]
                for t, e in entries
            )
            out.append(
                Finding(
                    kind="failed-login-burst",
                    severity="high" if success else "medium",
                    summary=f"{best} failed logins of {label} {who} within"
                    f" {cfg.burst_window:g}s ({len(times)} in the window)"
                    + ("; a login succeeded afterwards" if success else ""),
                    detail={
                        label: who,
                        "failed": len(times),
                        "burst": best,
                        "last_failure": last_fail.isoformat(),
                        "succeeded_after": success,
                    },
                )
            )
    return out


def unusual_sources(
    access: Iterable[dict[str, Any]],
    logins: Iterable[dict[str, Any]],
    networks: Sequence[str],
) -> list[Finding]:
    counts: Counter[str] = Counter()
    for e in access:
        client = str(e.get("client") or "")
        if not is_internal(client, networks):
            counts[client] += 1
    login_counts: Counter[str] = Counter()
    for e in logins:
        remote = str(e.get("remote") or "")
        if not is_internal(remote, networks):
            login_counts[remote] += 1
    out = []
    for src in sorted(set(counts) | set(login_counts)):
        out.append(
            Finding(
                kind="unusual-source",
                severity="medium" if login_counts[src] else "low",
                summary=f"{src}: {counts[src]} request(s), {login_counts[src]} login attempt(s)"
                " from outside the internal networks",
                detail={"source": src, "requests": counts[src], "logins": login_counts[src]},
            )
        )
    return out


def volume_spikes(access: Iterable[dict[str, Any]], cfg: AssessmentConfig) -> list[Finding]:
    per_minute: Counter[str] = Counter()
    for e in access:
        t = _parse_time(e.get("at"))
        if t is not None:
            per_minute[t.strftime("%Y-%m-%dT%H:%M")] += 1
    if len(per_minute) < 3:
        return []
    median = statistics.median(per_minute.values())
    out = []
    for minute, n in sorted(per_minute.items()):
        if n >= cfg.volume_min_requests and n > cfg.volume_spike_factor * max(median, 1):
            out.append(
                Finding(
                    kind="volume-spike",
                    severity="medium",
                    summary=f"{n} requests in the minute {minute}Z (median {median:g}/min)",
                    detail={"minute": minute, "requests": n, "median": median},
                )
            )
    return out


def blocked_requests(access: Iterable[dict[str, Any]]) -> list[Finding]:
    by: Counter[tuple[str, str]] = Counter()
    for e in access:
        outcome = str(e.get("outcome") or "")
        if outcome in ("denied-network", "rate-limited"):
            by[(outcome, str(e.get("client") or "?"))] += 1
    return [
        Finding(
            kind="blocked-requests",
            severity="low",
            summary=f"{n} request(s) from {client} refused ({outcome})",
            detail={"outcome": outcome, "client": client, "count": n},
        )
        for (outcome, client), n in sorted(by.items())
    ]


def privilege_changes(changes: Iterable[dict[str, Any]]) -> list[Finding]:
    return [
        Finding(
            kind="privilege-change",
            severity="medium",
            summary=f"{c.get('statement')} {c.get('account') or ''} at {c.get('at') or '?'}"
            + (f" on {c['server']}" if c.get("server") else ""),
            detail=dict(c),
        )
        for c in changes
    ]


def database_sessions(
    sessions: dict[str, list[dict[str, Any]]],
    networks: Sequence[str],
    known_users: set[str],
) -> list[Finding]:
    out = []
    for server, rows in sessions.items():
        for s in rows:
            if s.get("internal"):
                continue
            host = str(s.get("host") or "")
            user = str(s.get("user") or "")
            reasons = []
            if not is_internal(host, networks):
                reasons.append("from outside the internal networks")
            if known_users and user not in known_users:
                reasons.append("user not in the privilege policy or configuration")
            if reasons:
                out.append(
                    Finding(
                        kind="database-session",
                        severity="medium",
                        summary=f"{server}: session {s.get('id')} of {user} at {host or '-'}: "
                        + ", ".join(reasons),
                        detail={"server": server, "user": user, "host": host},
                    )
                )
    return out


def assess(
    *,
    window_start: str,
    window_end: str,
    access_log: list[dict[str, Any]],
    login_audit: list[dict[str, Any]],
    db_sessions: dict[str, list[dict[str, Any]]],
    privilege_log: list[dict[str, Any]],
    networks: Sequence[str],
    known_users: set[str],
    cfg: AssessmentConfig,
    unavailable: Sequence[str] = (),
) -> Findings:
    findings = [
        *failed_login_bursts(login_audit, cfg),
        *unusual_sources(access_log, login_audit, networks),
        *volume_spikes(access_log, cfg),
        *blocked_requests(access_log),
        *privilege_changes(privilege_log),
        *database_sessions(db_sessions, networks, known_users),
    ]
    return Findings(
        window_start=window_start,
        window_end=window_end,
        findings=findings,
        inputs={
            "requests": len(access_log),
            "login attempts": len(login_audit),
            "database sessions": sum(len(v) for v in db_sessions.values()),
            "privilege statements": len(privilege_log),
        },
        unavailable=list(unavailable),
    )
