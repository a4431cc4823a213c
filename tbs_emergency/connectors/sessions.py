"""User sessions in Redis, through redis-py.

Sessions are the keys under the configured prefix (`session:` by default). Counting walks them
with SCAN, never KEYS, so a large keyspace is not blocked. Connect and socket timeouts are
`timeout_s`. redis is imported in this module only.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Sequence
from typing import Any

from tbs_emergency.config import RedisConfig
from tbs_emergency.connectors._common import probe, redact_text, redact_url
from tbs_emergency.connectors.base import Probe
from tbs_emergency.errors import ConnectorError, Refused, TimedOut, Unreachable

_SCAN_BATCH = 1000
_COPY_BATCH = 500


class RedisSessions:
    def __init__(self, config: RedisConfig, name: str = "redis") -> None:
        self.config = config
        self.name = name
        self._client: Any = None
        self._lock = threading.Lock()

    def _redis(self) -> Any:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        with self._lock:
            if self._client is None:
                c = self.config
                kwargs: dict[str, Any] = {
                    "socket_timeout": c.timeout_s,
                    "socket_connect_timeout": c.timeout_s,
                    # One quick retry on a dropped connection; none on a timeout, which would
                    # multiply the time a caller waits (redis-py's default is 3 with backoff).
                    "retry": Retry(
                        ExponentialBackoff(cap=0.2, base=0.05),
                        1,
                        supported_errors=(redis.exceptions.ConnectionError,),
                    ),
                    "health_check_interval": 30,
                }
                if c.password is not None:
                    kwargs["password"] = c.password.get_secret_value()
                try:
                    self._client = redis.Redis.from_url(c.url, **kwargs)
                except ValueError as exc:
                    raise ConnectorError(
                        self.name, "configure", f"invalid URL {redact_url(c.url)}: {exc}"
                    ) from None
            return self._client

    def _error(self, operation: str, exc: BaseException) -> ConnectorError:
        import redis.exceptions as rx

        secrets: list[str | None] = []
        if self.config.password is not None:
            with contextlib.suppress(Exception):
                secrets.append(self.config.password.get_secret_value())
        where = redact_url(self.config.url)
        text = redact_text(str(exc) or type(exc).__name__, secrets)
        if isinstance(exc, rx.TimeoutError | TimeoutError):
            return TimedOut(
                self.name, operation, f"no answer from {where} within {self.config.timeout_s:g}s"
            )
        if isinstance(exc, rx.AuthenticationError | rx.NoPermissionError | rx.ReadOnlyError):
            return Refused(self.name, operation, text)
        if isinstance(exc, rx.ConnectionError | OSError):
            if "timed out" in text.lower():
                return TimedOut(
                    self.name,
                    operation,
                    f"no answer from {where} within {self.config.timeout_s:g}s",
                )
            return Unreachable(self.name, operation, f"{where}: {text}")
        if isinstance(exc, rx.ResponseError) and (
            "NOAUTH" in text or "WRONGPASS" in text or "NOPERM" in text
        ):
            return Refused(self.name, operation, text)
        return ConnectorError(self.name, operation, text)

    def _do(self, operation: str, fn: Any) -> Any:
        try:
            return fn(self._redis())
        except ConnectorError:
            raise
        except Exception as exc:
            raise self._error(operation, exc) from None

    def _pattern(self) -> str:
        # SCAN MATCH is a glob: escape the prefix's own glob characters.
        prefix = self.config.session_prefix
        escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix)
        return escaped + "*"

    # -- the Sessions protocol ------------------------------------------------------------------

    def count(self) -> int:
        """How many session keys there are now (SCAN over the prefix)."""

        def run(r: Any) -> int:
            return sum(1 for _ in r.scan_iter(match=self._pattern(), count=_SCAN_BATCH))

        return int(self._do("count sessions", run))

    def list_ids(self, limit: int = 100) -> list[str]:
        """Up to limit session ids (keys without the prefix), in no particular order."""
        prefix = self.config.session_prefix

        def run(r: Any) -> list[str]:
            ids: list[str] = []
            for key in r.scan_iter(match=self._pattern(), count=_SCAN_BATCH):
                k = key.decode("utf-8", errors="replace") if isinstance(key, bytes) else str(key)
                ids.append(k[len(prefix) :])
                if len(ids) >= limit:
                    break
            return ids

        return list(self._do("list sessions", run))

    def get(self, session_id: str) -> dict[str, Any] | None:
        """A session's content: a hash as a dict, a JSON string decoded, else {"value": ...}.

        None when there is no such session.
        """
        key = self.config.session_prefix + session_id

        def run(r: Any) -> dict[str, Any] | None:
            kind = r.type(key)
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            if kind == "none":
                return None
            if kind == "hash":
                return {_s(k): _s(v) for k, v in r.hgetall(key).items()}
            if kind == "string":
                raw = _s(r.get(key))
                try:
                    value = json.loads(raw)
                except ValueError:
                    return {"value": raw}
                return value if isinstance(value, dict) else {"value": value}
            return {"type": kind}

        return self._do(f"read session {session_id}", run)

    # -- security procedures (docs/security.md) ---------------------------------------------
    # Session ids are bearer secrets: they never leave this module; evidence and reports get
    # `id_sha256` (the first 16 hex digits of the id's sha256) instead.

    def flag(self, key: str) -> dict[str, Any] | None:
        """A plain string key: `{"value", "ttl_s"}` (ttl_s None: no expiry), None if absent."""

        def run(r: Any) -> dict[str, Any] | None:
            value = r.get(key)
            if value is None:
                return None
            ttl = int(r.ttl(key))
            return {"value": _s(value), "ttl_s": ttl if ttl > 0 else None}

        return self._do(f"read {key}", run)

    def set_flag(self, key: str, value: str, ttl_s: int | None = None) -> None:
        self._do(f"set {key}", lambda r: r.set(key, value, ex=ttl_s))

    def delete_flag(self, key: str) -> bool:
        return bool(self._do(f"delete {key}", lambda r: r.delete(key)))

    def _walk(self, r: Any) -> Any:
        """(key, session id, content dict or None) of every session (string sessions only)."""
        prefix = self.config.session_prefix
        for key in r.scan_iter(match=self._pattern(), count=_SCAN_BATCH):
            k = _s(key)
            raw = r.get(key)
            content: dict[str, Any] | None = None
            if raw is not None:
                try:
                    loaded = json.loads(_s(raw))
                    content = loaded if isinstance(loaded, dict) else None
                except ValueError:
                    content = None
            yield k, k[len(prefix) :], content

    def session_summaries(self, limit: int = 10000) -> list[dict[str, Any]]:
        """Every session (up to limit) without its id: id_sha256, user, role, env, created_at."""

        def run(r: Any) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for _key, sid, content in self._walk(r):
                c = content or {}
                out.append(
                    {
                        "id_sha256": session_digest(sid),
                        "user": c.get("user") or c.get("username"),
                        "role": c.get("role"),
                        "env": c.get("env"),
                        "created_at": c.get("created_at"),
                    }
                )
                if len(out) >= limit:
                    break
            return out

        return list(self._do("list sessions", run))

    def end_user_sessions(self, user: str) -> int:
        """Delete every session of this user; how many there were."""

        def run(r: Any) -> int:
            keys = [key for key, _sid, c in self._walk(r) if c and _owner(c) == user]
            return int(r.delete(*keys)) if keys else 0

        return int(self._do(f"end the sessions of {user}", run))

    def user_session_count(self, user: str) -> int:
        def run(r: Any) -> int:
            return sum(1 for _k, _sid, c in self._walk(r) if c and _owner(c) == user)

        return int(self._do(f"count the sessions of {user}", run))

    def login_audit(self, key: str, limit: int = 10000) -> list[dict[str, Any]]:
        """The application's login audit list (JSON entries, newest first), decoded."""

        def run(r: Any) -> list[dict[str, Any]]:
            out = []
            for raw in r.lrange(key, 0, max(0, limit - 1)):
                try:
                    entry = json.loads(_s(raw))
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    out.append(entry)
            return out

        return list(self._do(f"read {key}", run))

    # -- carrying sessions to another environment (rollback step 3) ------------------------------

    def server_identity(self) -> str:
        """What the server itself says it is: run id and database number (two URLs that reach
        one server through different addresses are the same store)."""

        def run(r: Any) -> str:
            info = r.info("server")
            db = r.connection_pool.connection_kwargs.get("db", 0)
            return f"{info.get('run_id', '?')}/{db}"

        return str(self._do("identify the server", run))

    def same_store(self, other: RedisSessions) -> bool:
        if self.config.identity == other.config.identity:
            return True
        return self.server_identity() == other.server_identity()

    def copy_to(
        self,
        target: RedisSessions,
        *,
        extra_keys: Sequence[str] = (),
        ttl_tolerance_ms: int = 2000,
    ) -> dict[str, Any]:
        """Copy every session key (and `extra_keys` that exist, e.g. the login lockdown flag)
        to `target` with its remaining TTL (DUMP + PTTL here, RESTORE ... REPLACE there), then
        verify key by key on the target: present, and its TTL no longer than the source's and
        no shorter than the source's minus the time the copy took and `ttl_tolerance_ms`
        (keys without expiry must have none).

        `{"shared", "before", "copied", "verified", "missing", "expired", "ttl_mismatch",
        "extra": {key: "copied"|"absent"|"missing"}, "seconds"}`; `missing` counts keys
        that are not on the target (or not as they should be) after the copy; `expired`
        counts keys that expired on the source between SCAN and DUMP (not carried, not
        missing). With one store for both (same server and database) nothing is copied and
        every key is verified as shared. Session ids never leave this method.
        """
        started = time.monotonic()
        if self.same_store(target):
            n = self.count()
            return {
                "shared": True,
                "before": n,
                "copied": 0,
                "verified": n,
                "missing": 0,
                "expired": 0,
                "ttl_mismatch": 0,
                "extra": {},
                "seconds": round(time.monotonic() - started, 3),
            }

        def read(r: Any) -> list[tuple[bytes, int, bytes | None, float]]:
            keys = list(r.scan_iter(match=self._pattern(), count=_SCAN_BATCH))
            keys += [k.encode() for k in extra_keys]
            out: list[tuple[bytes, int, bytes | None, float]] = []
            for i in range(0, len(keys), _COPY_BATCH):
                chunk = keys[i : i + _COPY_BATCH]
                pipe = r.pipeline(transaction=False)
                for k in chunk:
                    pipe.pttl(k)
                    pipe.dump(k)
                at = time.monotonic()
                answers = pipe.execute()
                for j, k in enumerate(chunk):
                    out.append((k, int(answers[2 * j]), answers[2 * j + 1], at))
            return out

        items = self._do("read sessions to copy", read)
        extra_names = {k.encode() for k in extra_keys}
        sessions = [it for it in items if it[0] not in extra_names]
        # PTTL -1: no expiry; -2 (gone) or 0 (expiring now): not carried. RESTORE's ttl 0
        # means "no expiry", so a key about to expire must not be restored with it.
        live = [it for it in items if it[2] is not None and (it[1] == -1 or it[1] > 0)]
        expired = sum(1 for it in sessions if it[2] is None or not (it[1] == -1 or it[1] > 0))

        def write(r: Any) -> int:
            done = 0
            for i in range(0, len(live), _COPY_BATCH):
                chunk = live[i : i + _COPY_BATCH]
                pipe = r.pipeline(transaction=False)
                for key, pttl, payload, _at in chunk:
                    pipe.restore(key, max(0, pttl), payload, replace=True)
                pipe.execute()
                done += len(chunk)
            return done

        copied = int(target._do("restore sessions", write)) if live else 0

        def check(r: Any) -> list[int]:
            out: list[int] = []
            for i in range(0, len(live), _COPY_BATCH):
                pipe = r.pipeline(transaction=False)
                for key, *_ in live[i : i + _COPY_BATCH]:
                    pipe.pttl(key)
                out += [int(v) for v in pipe.execute()]
            return out

        after = target._do("verify copied sessions", check) if live else []
        now, tol = time.monotonic(), ttl_tolerance_ms
        verified = missing = mismatch = 0
        extra: dict[str, str] = {k: "absent" for k in extra_keys}
        for (key, pttl, _payload, at), got in zip(live, after, strict=True):
            ok = got != -2 and (
                (pttl == -1 and got == -1)
                or (pttl >= 0 and 0 <= got <= pttl and got >= pttl - (now - at) * 1000 - tol)
            )
            if key in extra_names:
                extra[_s(key)] = "copied" if ok else "missing"
                continue
            if ok:
                verified += 1
            else:
                missing += 1
                mismatch += got != -2
        return {
            "shared": False,
            "before": len(sessions),
            "copied": sum(1 for it in live if it[0] not in extra_names) if copied else 0,
            "verified": verified,
            "missing": missing,
            "expired": expired,
            "ttl_mismatch": mismatch,
            "extra": extra,
            "seconds": round(time.monotonic() - started, 3),
        }

    def ping(self) -> Probe:
        def check() -> str:
            info = self._do("ping", lambda r: (r.ping(), r.info("server"))[1])
            return f"Redis {info.get('redis_version', '?')} at {redact_url(self.config.url)}"

        return probe(self.name, check)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                finally:
                    self._client = None


def _s(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _owner(content: dict[str, Any]) -> str | None:
    user = content.get("user") or content.get("username")
    return str(user) if user is not None else None


def session_digest(session_id: str) -> str:
    """A session id's stand-in for evidence and reports (the id itself is a bearer secret)."""
    import hashlib

    return hashlib.sha256(session_id.encode()).hexdigest()[:16]
