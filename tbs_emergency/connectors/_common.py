"""Small pure helpers every connector uses: redaction, timing, probes, identifier checks.

No driver is imported here.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from tbs_emergency.connectors.base import Probe
from tbs_emergency.errors import ConnectorError, TimedOut, Unreachable

T = TypeVar("T")

# user:password@ inside any URL-looking text (scheme://user:pw@host)
_USERINFO_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/@\s]+)@")


def redact_url(url: str) -> str:
    """The URL with any userinfo replaced: `redis://:pw@h:1/0` -> `redis://***@h:1/0`.

    Query parameters that look like credentials (password, token, key, secret, signature) are
    masked too. A string that is not a URL is returned unchanged.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if not parts.scheme or not parts.netloc:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        query = "&".join(_mask_param(p) for p in query.split("&"))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_SECRET_PARAM = re.compile(r"(pass|pwd|token|secret|key|signature|credential|auth)", re.I)


def _mask_param(param: str) -> str:
    name, sep, _value = param.partition("=")
    if sep and _SECRET_PARAM.search(name):
        return f"{name}=***"
    return param


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Text with URL userinfo and each given secret value (if non-trivial) masked."""
    out = _USERINFO_RE.sub(lambda m: m.group("scheme") + "***@", text)
    for secret in secrets:
        if secret and len(secret) >= 3:
            out = out.replace(secret, "***")
    return out


def elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 2)


def probe(system: str, check: Callable[[], str]) -> Probe:
    """Run check() (which returns a line of detail or raises) and turn it into a Probe.

    Never raises for a ConnectorError or OSError: an unreachable system is an answer here.
    """
    start = time.perf_counter()
    try:
        detail = check()
    except ConnectorError as exc:
        return Probe(system, False, None, f"{exc.kind}: {exc.detail}")
    except OSError as exc:  # pragma: no cover - connectors map these already
        return Probe(system, False, None, f"unreachable: {exc.strerror or exc}")
    return Probe(system, True, elapsed_ms(start), detail)


def tcp_check(
    system: str, host: str, port: int, timeout_s: float, operation: str = "connect"
) -> None:
    """Open and close a TCP connection; Unreachable or TimedOut if that fails."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except TimeoutError:
        raise TimedOut(
            system, operation, f"no TCP answer from {host}:{port} in {timeout_s:g}s"
        ) from None
    except OSError as exc:
        raise Unreachable(
            system, operation, f"{host}:{port}: {exc.strerror or type(exc).__name__}"
        ) from None


_SIMPLE_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def is_simple_identifier(name: str) -> bool:
    return bool(_SIMPLE_IDENT.match(name))


def split_qualified(name: str) -> list[str]:
    """`db.table` -> ["db", "table"]; rejects empty parts and control characters."""
    parts = name.split(".")
    if not name or any(not p for p in parts) or len(parts) > 2:
        raise ValueError(f"{name!r} is not a table name (table or schema.table)")
    for p in parts:
        if any(ord(c) < 32 for c in p):
            raise ValueError(f"{name!r} contains control characters")
    return parts
