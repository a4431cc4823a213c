"""Second sources: what systems other than Prometheus say, read directly over a short window.

The watchdog fires from Prometheus; the rollback confirms from a different system:

- throughput and errors: the application's own counters (`tbs_rows_ingested_total`,
  `tbs_http_requests_total`, `tbs_http_errors_total` scraped from its `/metrics`, two scrapes a
  few seconds apart) and the load balancer's per-backend counters
  (`haproxy_backend_http_requests_total`, `haproxy_server_http_responses_total{code="5xx"}`,
  `haproxy_server_connection_errors_total`, the feed's `tbs_feed_*`);
- resources: the host's own gauges as the application reports them (`tbs_cpu_usage_percent`,
  ...), read from the application, not from Prometheus;
- authentication failures: the application's own login counter (`tbs_logins_total{result}`):
  failed logins in percent of all attempts over the window, the rule's `min_attempts` scaled to
  the window as the denominator's floor (`login_failure_rate`).

Pure functions over parsed samples; the connectors scrape (tbs_emergency.connectors.exposition).
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple


class Sample(NamedTuple):
    name: str
    labels: dict[str, str]
    value: float


_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> list[Sample]:
    """Samples of a Prometheus text exposition (comments and malformed lines skipped)."""
    out: list[Sample] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        labels = {
            k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(m[3] or "")
        }
        try:
            value = float(m[4])
        except ValueError:
            continue
        out.append(Sample(m[1], labels, value))
    return out


def total(samples: list[Sample], name: str, **match: str) -> float | None:
    """Sum of `name` over the samples whose labels include `match` (None: no such series)."""
    hits = [
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in match.items())
    ]
    return sum(hits) if hits else None


def _delta(before: list[Sample], after: list[Sample], name: str, **match: str) -> float | None:
    a, b = total(before, name, **match), total(after, name, **match)
    if a is None or b is None:
        return None
    return max(0.0, b - a)  # a counter reset (restart) reads as 0, never negative


def _rate(delta: float | None, seconds: float) -> float | None:
    return None if delta is None or seconds <= 0 else delta / seconds


def _percent(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None  # no requests in the window: no rate (not 0 %)
    return 100.0 * part / whole


def backend_window(
    before: list[Sample], after: list[Sample], server: str, seconds: float
) -> dict[str, Any]:
    """One backend as the load balancer saw it between two scrapes `seconds` apart."""
    requests = _delta(before, after, "haproxy_backend_http_requests_total", server=server)
    r5xx = _delta(before, after, "haproxy_server_http_responses_total", server=server, code="5xx")
    conn = _delta(before, after, "haproxy_server_connection_errors_total", server=server)
    errors = None if r5xx is None and conn is None else (r5xx or 0.0) + (conn or 0.0)
    feed_ok = _delta(before, after, "tbs_feed_batches_total", server=server, result="ok")
    feed_failed = _delta(before, after, "tbs_feed_batches_total", server=server, result="failed")
    feed_rows = _delta(before, after, "tbs_feed_rows_total", server=server)
    up = total(after, "haproxy_server_status", server=server, state="UP")
    return {
        "source": "load balancer",
        "server": server,
        "window_s": round(seconds, 3),
        "requests": requests,
        "requests_per_s": _rate(requests, seconds),
        "errors": errors,
        "error_rate_percent": _percent(errors, requests),
        "feed_batches_ok": feed_ok,
        "feed_batches_failed": feed_failed,
        "feed_rows_per_s": _rate(feed_rows, seconds),
        "up": None if up is None else up >= 1,
    }


def app_window(before: list[Sample], after: list[Sample], seconds: float) -> dict[str, Any]:
    """The application's own counters and host gauges between two scrapes."""
    rows = _delta(before, after, "tbs_rows_ingested_total")
    requests = _delta(before, after, "tbs_http_requests_total")
    errors = _delta(before, after, "tbs_http_errors_total")
    gauges = {k: total(after, f"tbs_{k}_usage_percent") for k in ("cpu", "memory", "disk")}
    return {
        "source": "app counters",
        "window_s": round(seconds, 3),
        "rows_per_s": _rate(rows, seconds),
        "requests": requests,
        "errors": errors,
        "error_rate_percent": _percent(errors, requests),
        # every result (ok, failed, denied) is an attempt, as in the rule's query
        "login_attempts": _delta(before, after, "tbs_logins_total"),
        "login_failures": _delta(before, after, "tbs_logins_total", result="failed"),
        **{f"{k}_percent": v for k, v in gauges.items()},
    }


MIN_LB_REQUESTS = 20  # fewer requests in the window: the balancer's error rate says nothing


def login_failure_rate(app: dict[str, Any] | None, min_attempts_per_s: float) -> float | None:
    """Failed logins in percent of attempts over the app's window, as the rule computes it:
    the denominator never below the rule's `min_attempts` per window, here scaled to this
    window (`min_attempts_per_s` x seconds, at least 1). None when the counter is missing or
    nobody tried to log in during the window (no attempt says nothing, it is not 0 %)."""
    attempts = (app or {}).get("login_attempts")
    if attempts is None or not attempts:
        return None
    failures = (app or {}).get("login_failures") or 0.0
    seconds = float((app or {}).get("window_s") or 0.0)
    floor = max(1.0, min_attempts_per_s * seconds)
    return 100.0 * failures / max(attempts, floor)


def confirm(
    rule: str,
    signal: str | None,
    app: dict[str, Any] | None,
    lb: dict[str, Any] | None,
    breaches: Any,
    min_attempts_per_s: float = 0.0,
) -> tuple[bool | None, str | None]:
    """Does a second source see the breach? (confirmed, which system) — None: could not tell.

    `breaches(value) -> bool` is the rule's own threshold test. Throughput: the app's row
    counter. Errors: the app's request counters, or the load balancer's backend when it carried
    at least MIN_LB_REQUESTS requests in the window. Resources: the host gauge the app reports.
    Authentication failures: the app's login counter (`login_failure_rate`, with the rule's
    `min_attempts` / its window as `min_attempts_per_s`).
    """
    if rule == "authentication_failures":
        v = login_failure_rate(app, min_attempts_per_s)
        return (None, None) if v is None else (bool(breaches(v)), "app counters (logins)")
    if rule == "performance_degradation":
        v = (app or {}).get("rows_per_s")
        return (None, None) if v is None else (bool(breaches(v)), "app counters")
    if rule == "error_rate_spike":
        seen: list[tuple[bool, str]] = []
        v = (app or {}).get("error_rate_percent")
        if v is not None:
            seen.append((bool(breaches(v)), "app counters"))
        lb_v = (lb or {}).get("error_rate_percent")
        if lb_v is not None and ((lb or {}).get("requests") or 0) >= MIN_LB_REQUESTS:
            seen.append((bool(breaches(lb_v)), "load balancer"))
        for ok, who in seen:
            if ok:
                return True, who
        return (False, seen[0][1]) if seen else (None, None)
    if rule == "resource_exhaustion":
        v = (app or {}).get(f"{signal or 'cpu'}_percent")
        return (None, None) if v is None else (bool(breaches(v)), "host (reported by the app)")
    return None, None


def blue_checks(
    lb: dict[str, Any] | None, error_threshold_percent: float | None
) -> dict[str, tuple[bool | None, str]]:
    """Step 4's throughput and error checks on blue from the load balancer's window.

    throughput: blue took requests (and the write feed's batches landed) in the window; no
    request at all is "not verified" (None), never a pass. errors: blue's error rate below the
    rule's threshold; no request: not verified.
    """
    if lb is None:
        return {
            "throughput": (None, "no load balancer metrics"),
            "errors": (None, "no load balancer metrics"),
        }
    req = lb.get("requests")
    failed_feed = lb.get("feed_batches_failed") or 0
    ok_feed = lb.get("feed_batches_ok") or 0
    if not req:
        tp: tuple[bool | None, str] = (None, "no request reached blue in the window: not verified")
    elif failed_feed and not ok_feed:
        tp = (False, f"every write batch to blue failed ({failed_feed:g})")
    else:
        tp = (True, f"{lb.get('requests_per_s') or 0:.2f} requests/s on blue")
    rate = lb.get("error_rate_percent")
    if rate is None or (isinstance(rate, float) and math.isnan(rate)):
        er: tuple[bool | None, str] = (None, "no request reached blue in the window: not verified")
    else:
        limit = error_threshold_percent if error_threshold_percent is not None else 5.0
        er = (rate < limit, f"{rate:.2f} % errors on blue (limit {limit:g} %)")
    return {"throughput": tp, "errors": er}
