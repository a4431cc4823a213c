"""HeavyDB, the hot store, through pyheavydb (module `heavydb`).

One connection per connector, opened on first use and reused; a call that finds its session
dead (server restarted, session expired) reconnects once and repeats, which is safe because the
server refused the call. Every socket step, the login included, is bounded by `timeout_s`.
HeavyDB-specific SQL (identifier quoting, parameter style) lives here. `heavydb` and thrift are
imported in this module only.

Timeouts: pyheavydb builds its thrift socket inside `connect()` without a timeout, so a server
that accepts and then hangs would hang the login. This module installs, once, a small factory in
place of `heavydb.connection.TSocket`/`THttpClient` that applies the timeout of the connector
that is connecting in the current thread (a thread-local; no timeout elsewhere, as before).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from tbs_emergency.config import HeavyDBConfig
from tbs_emergency.connectors._common import (
    is_simple_identifier,
    probe,
    redact_text,
    split_qualified,
)
from tbs_emergency.connectors.base import DbSession, DbUser, Probe
from tbs_emergency.errors import ConnectorError, NotFound, Refused, TimedOut, Unreachable

_READ_STATEMENT = re.compile(r"^\s*(SELECT|SHOW|WITH|EXPLAIN)\b", re.I)
_DEAD_SESSION = re.compile(
    r"session\b.*\b(not valid|invalid|expired)|invalid session|session timeout|re-authenticate",
    re.I,
)
_TIMED_OUT = re.compile(r"timed out|read timeout|connect timeout|write timeout", re.I)
_NOT_FOUND = re.compile(r"not found|does not exist|doesn't exist", re.I)
_REFUSED = re.compile(
    r"(authentication|credential|password|privilege|not authorized|permission|read.only"
    r"|sql error|parse|syntax|exception: )",
    re.I,
)

_local = threading.local()
_shim_lock = threading.Lock()


def _install_timeout_shim() -> None:
    import heavydb.connection as hc

    with _shim_lock:
        if getattr(hc, "_tbs_timeout_shim", False):
            return
        real_tsocket_module = hc.TSocket
        real_http_module = hc.THttpClient

        class _Delegate:
            def __init__(self, module: Any, attr: str) -> None:
                self._module = module
                self._attr = attr

            def __getattr__(self, item: str) -> Any:
                return getattr(self._module, item)

        class _TSocketShim(_Delegate):
            def TSocket(self, *args: Any, **kwargs: Any) -> Any:
                sock = self._module.TSocket(*args, **kwargs)
                ms = getattr(_local, "timeout_ms", None)
                if ms:
                    sock.setTimeout(ms)
                return sock

        class _HttpShim(_Delegate):
            def THttpClient(self, *args: Any, **kwargs: Any) -> Any:
                client = self._module.THttpClient(*args, **kwargs)
                ms = getattr(_local, "timeout_ms", None)
                if ms:
                    client.setTimeout(ms)
                return client

        hc.TSocket = _TSocketShim(real_tsocket_module, "TSocket")
        hc.THttpClient = _HttpShim(real_http_module, "THttpClient")
        hc._tbs_timeout_shim = True
        # thrift logs every failed connect at ERROR; the connector's own error says it once.
        logging.getLogger("thrift.transport.TSocket").setLevel(logging.CRITICAL)


def quote_ident(name: str) -> str:
    """Plain names stay bare (HeavyDB folds nothing); others are double-quoted."""
    parts = split_qualified(name)
    return ".".join(
        p if is_simple_identifier(p) else '"' + p.replace('"', '""') + '"' for p in parts
    )


def bind_positional(sql: str, params: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """`?` placeholders (outside quotes) -> `:p0, :p1, ...` as pyheavydb binds named params."""
    out: list[str] = []
    quote: str | None = None
    n = 0
    for ch in sql:
        if quote:
            out.append(ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append(f":p{n}")
            n += 1
        else:
            out.append(ch)
    if n != len(params):
        raise ValueError(f"the statement has {n} '?' placeholders but {len(params)} parameters")
    return "".join(out), {f"p{i}": v for i, v in enumerate(params)}


class HeavyDBDatabase:
    """The HeavyDB server of one environment (or of several that share it)."""

    def __init__(self, config: HeavyDBConfig, name: str = "heavydb") -> None:
        self.config = config
        self.name = name
        self._con: Any = None
        self._lock = threading.RLock()

    # -- connection ---------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def _connect(self) -> Any:
        import heavydb

        _install_timeout_shim()
        c = self.config
        password = c.password.get_secret_value()
        _local.timeout_ms = c.timeout_s * 1000.0
        try:
            return heavydb.connect(
                host=c.host,
                port=c.port,
                user=c.user,
                password=password,
                dbname=c.database,
                protocol=c.protocol,
            )
        except Exception as exc:
            raise self._error("connect", exc, password) from None
        finally:
            _local.timeout_ms = None

    def _connection(self) -> Any:
        if self._con is None:
            self._con = self._connect()
        return self._con

    def _drop(self, graceful: bool = False) -> None:
        """Forget the connection; graceful ends the session, else only the socket is closed
        (after a failure the stream may be out of step and a disconnect call would wait)."""
        con, self._con = self._con, None
        if con is None:
            return
        try:
            if graceful:
                con.close()
            else:
                con._closed = 1  # so pyheavydb's __del__ does not call disconnect either
                con._transport.close()
        except Exception:
            pass

    def close(self) -> None:
        with self._lock:
            self._drop(graceful=True)

    # -- errors -------------------------------------------------------------------------------

    def _error(
        self, operation: str, exc: BaseException, secret: str | None = None
    ) -> ConnectorError:
        text = _text(exc)
        if secret is None:
            try:
                secret = self.config.password.get_secret_value()
            except Exception:
                secret = None
        text = redact_text(text, [secret])
        lowered = text.lower()
        if _timed_out(exc):
            return TimedOut(
                self.name,
                operation,
                f"no answer from {self._where()} within {self.config.timeout_s:g}s",
            )
        if _is_transport(exc) or "could not connect" in lowered or "connection failed" in lowered:
            return Unreachable(self.name, operation, f"{self._where()}: {text}")
        if _NOT_FOUND.search(text):
            return NotFound(self.name, operation, text)
        if _REFUSED.search(text):
            return Refused(self.name, operation, text)
        return ConnectorError(self.name, operation, text)

    # -- calls --------------------------------------------------------------------------------

    def _call(self, operation: str, fn: Any, *, retry_transport: bool) -> Any:
        """fn(con) with one reconnect on a dead session (and on a broken socket if allowed)."""
        with self._lock:
            for attempt in (1, 2):
                con = self._connection()
                try:
                    return fn(con)
                except Exception as exc:
                    text = _text(exc)
                    timed_out = _timed_out(exc)
                    dead_session = bool(_DEAD_SESSION.search(text))
                    broken = _is_transport(exc) or isinstance(exc, OSError | EOFError)
                    if timed_out or broken or dead_session:
                        # A timed-out thrift call leaves the stream out of step: never reuse it.
                        self._drop()
                    if (
                        attempt == 1
                        and not timed_out
                        and (dead_session or (broken and retry_transport))
                    ):
                        continue
                    raise self._error(operation, exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _run(
        self,
        operation: str,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
    ) -> list[tuple[Any, ...]]:
        bound: Mapping[str, Any] | None
        if params is None or isinstance(params, Mapping):
            bound = params
        else:
            sql, bound = bind_positional(sql, params)

        def run(con: Any) -> list[tuple[Any, ...]]:
            cur = con.cursor()
            try:
                cur.execute(sql, parameters=bound)
                return [tuple(r) for r in cur] if cur.description else []
            finally:
                cur.close()

        return self._call(operation, run, retry_transport=bool(_READ_STATEMENT.match(sql)))

    def query(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement: named `:name` parameters (mapping) or `?` (sequence)."""
        return self._run("query", sql, params)

    # -- the SQLDatabase protocol ----------------------------------------------------------------

    def ping(self) -> Probe:
        def check() -> str:
            self._run("ping", "SELECT 1")
            status = self._call(
                "ping",
                lambda con: con._client.get_server_status(con._session),
                retry_transport=True,
            )
            ro = " (read-only)" if status.read_only else ""
            return f"HeavyDB {status.version} at {self._where()}{ro}"

        return probe(self.name, check)

    def row_count(self, table: str) -> int:
        rows = self._run(f"count rows of {table}", f"SELECT COUNT(*) FROM {quote_ident(table)}")
        return int(rows[0][0])

    def tables(self) -> list[str]:
        names = self._call(
            "list tables", lambda con: con._client.get_tables(con._session), retry_transport=True
        )
        return sorted(str(n) for n in names)

    def is_read_only(self) -> bool:
        """The server's read-only flag (HeavyDB sets it at start: `--read-only`)."""
        status = self._call(
            "read server status",
            lambda con: con._client.get_server_status(con._session),
            retry_transport=True,
        )
        return bool(status.read_only)

    def server_status(self) -> dict[str, Any]:
        status = self._call(
            "read server status",
            lambda con: con._client.get_server_status(con._session),
            retry_transport=True,
        )
        return {
            "read_only": bool(status.read_only),
            "version": status.version,
            "start_time": status.start_time,
            "edition": status.edition,
            "host_name": status.host_name,
            "role": status.role,
        }

    # -- database emergency procedures (docs/database-emergency.md) ---------------------------
    # The connecting user must be a superuser (SHOW USER SESSIONS, ALTER USER, clear_*_memory).

    def login_user(self) -> str:
        return self.config.user

    def _rows_with_columns(
        self, operation: str, sql: str
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        def run(con: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
            cur = con.cursor()
            try:
                cur.execute(sql)
                cols = [str(d[0]).lower() for d in cur.description or []]
                return cols, [tuple(r) for r in cur] if cur.description else []
            finally:
                cur.close()

        return self._call(operation, run, retry_transport=True)

    def _own_public_session(self) -> str | None:
        con = self._con
        sid = getattr(con, "_session", None) if con is not None else None
        # HeavyDB's public session id is "<minute%10><seconds>-<first 4 characters of the
        # session id>"; the part after the dash is what identifies our own session.
        return sid[:4] if isinstance(sid, str) and len(sid) >= 4 else None

    def sessions(self) -> list[DbSession]:
        """`SHOW USER SESSIONS` (public session ids), busy ones from the running queries."""
        cols, rows = self._rows_with_columns("list sessions", "SHOW USER SESSIONS")
        own = self._own_public_session()
        busy: dict[str, float] = {}
        try:
            qcols, qrows = self._rows_with_columns("list running queries", "SHOW QUERIES")
            for q in qrows:
                rec = dict(zip(qcols, q, strict=False))
                sid = str(rec.get("query_session_id") or "")
                if sid and sid.rsplit("-", 1)[-1] != own:
                    busy[sid] = max(busy.get(sid, 0.0), _seconds_since(rec.get("submitted")))
        except ConnectorError:
            pass  # older servers: every session counts as idle, with unknown idle time
        out = []
        for r in rows:
            rec = dict(zip(cols, r, strict=False))
            sid = str(rec.get("session_id") or "")
            idle = rec.get("idle_seconds", rec.get("idle_s"))
            out.append(
                DbSession(
                    id=sid,
                    user=str(rec.get("login_name") or ""),
                    host=str(rec.get("client_address") or "") or None,
                    database=str(rec.get("db_name") or "") or None,
                    idle_s=None if sid in busy or idle is None else float(idle),
                    busy_s=busy.get(sid),
                )
            )
        return out

    def end_session(self, session_id: str) -> bool:
        """End another session (by its public id); False if it was gone already.

        HeavyDB ends a session on `disconnect(<full session id>)`; a superuser learns the full
        id of a session that runs a query from `get_queries_info`. An idle session's full id is
        not published, so it cannot be ended from outside: that raises Refused, saying so.
        """
        if not any(s.id == session_id for s in self.sessions()):
            return False
        infos = self._call(
            "end session",
            lambda con: con._client.get_queries_info(con._session),
            retry_transport=True,
        )
        full = next(
            (
                str(q.query_session_id)
                for q in infos or []
                if str(getattr(q, "query_public_session_id", "")) == session_id
                and q.query_session_id
            ),
            None,
        )
        if full is None:
            raise Refused(
                self.name,
                "end session",
                f"session {session_id} is idle and HeavyDB does not publish an idle session's"
                " id: it cannot be ended from outside (its user's login is disabled, so it"
                " cannot come back once it ends)",
            )

        def end(con: Any) -> bool:
            # Stop its running statement first (a dropped session's query would run on).
            try:
                con._client.interrupt(full, con._session)
            except Exception as exc:
                if _is_transport(exc) or isinstance(exc, OSError):
                    raise  # the stream is out of step: let _call drop the connection
            try:
                con._client.disconnect(full)
            except Exception as exc:
                # "Session not valid or expired" is about the session being ended (gone
                # already), not about ours: answer here, before the dead-session retry.
                if not _is_transport(exc) and _DEAD_SESSION.search(_text(exc)):
                    return False
                raise
            return True

        return bool(self._call("end session", end, retry_transport=False))

    def users(self) -> list[DbUser]:
        """`SHOW USER DETAILS`: every user with its can_login and is_super flags."""
        cols, rows = self._rows_with_columns("list users", "SHOW USER DETAILS")
        out = []
        for r in rows:
            rec = dict(zip(cols, r, strict=False))
            out.append(
                DbUser(
                    name=str(rec.get("name")),
                    can_login=_truthy(rec.get("can_login", True)),
                    is_super=_truthy(rec.get("is_super", False)),
                )
            )
        return out

    def set_login(self, user: str, allowed: bool) -> None:
        """ALTER USER ... (can_login = 'true'|'false')."""
        self._run(
            "set login",
            f"ALTER USER {_quote_name(user)} (can_login = '{'true' if allowed else 'false'}')",
        )

    # -- security procedures (docs/security.md) -----------------------------------------------
    # The connecting user must be a superuser. Passwords given here are redacted from errors.

    def set_password(self, user: str, password: str) -> None:
        """ALTER USER u (password = '...'): the old password stops working at once."""
        literal = _sql_string(password)
        try:
            self._run(
                f"change the password of {user}",
                f"ALTER USER {_quote_name(user)} (password = {literal})",
            )
        except ConnectorError as exc:
            raise type(exc)(
                exc.system, exc.operation, redact_text(exc.detail, [password])
            ) from None

    def try_login(self, user: str, password: str) -> tuple[bool, str]:
        """Log in as user with password: (True, "accepted") or (False, why). Raises when the
        server cannot be reached (that says nothing about the password)."""
        import heavydb

        _install_timeout_shim()
        c = self.config
        _local.timeout_ms = c.timeout_s * 1000.0
        try:
            con = heavydb.connect(
                host=c.host,
                port=c.port,
                user=user,
                password=password,
                dbname=c.database,
                protocol=c.protocol,
            )
        except Exception as exc:
            err = self._error(f"log in as {user}", exc, password)
            if isinstance(err, Unreachable | TimedOut):
                raise err from None
            return False, err.detail  # the server answered: wrong password, deactivated, ...
        finally:
            _local.timeout_ms = None
        with contextlib.suppress(Exception):
            con.close()
        return True, "accepted"

    def has_database_access(self, user: str, database: str | None = None) -> bool:
        """Whether user may connect to the database (ACCESS, directly, by role or as owner or
        superuser)."""
        from heavydb.thrift.ttypes import (
            TDatabasePermissions,
            TDBObjectPermissions,
            TDBObjectType,
        )

        db = database or self.config.database
        perms = TDBObjectPermissions(database_permissions_=TDatabasePermissions(access_=True))
        return bool(
            self._call(
                f"check {user}'s access to {db}",
                lambda con: con._client.has_object_privilege(
                    con._session, user, db, TDBObjectType.DatabaseDBObjectType, perms
                ),
                retry_transport=True,
            )
        )

    def set_database_access(self, user: str, allowed: bool, database: str | None = None) -> None:
        """GRANT|REVOKE ACCESS ON DATABASE d TO|FROM u."""
        db = database or self.config.database
        verb, direction = ("GRANT", "TO") if allowed else ("REVOKE", "FROM")
        self._run(
            f"{verb.lower()} access to {db}",
            f"{verb} ACCESS ON DATABASE {_quote_name(db)} {direction} {_quote_name(user)}",
        )

    def clear_cpu_memory(self) -> None:
        self._call(
            "clear CPU memory",
            lambda con: con._client.clear_cpu_memory(con._session),
            retry_transport=False,
        )

    def clear_gpu_memory(self) -> None:
        self._call(
            "clear GPU memory",
            lambda con: con._client.clear_gpu_memory(con._session),
            retry_transport=False,
        )

    # -- environment sync: whole rows by key (dbops/sync.py) ------------------------------------

    def read_rows(
        self, table: str, key_columns: Sequence[str], keys: Sequence[Sequence[Any]]
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Every column of the rows with these keys (those that exist)."""
        name = quote_ident(table)
        columns: list[str] = []
        out: list[tuple[Any, ...]] = []
        for i in range(0, max(1, len(keys)), _ROW_BATCH):
            where = _keys_where(key_columns, keys[i : i + _ROW_BATCH])

            def run(con: Any, where: str = where) -> tuple[list[str], list[tuple[Any, ...]]]:
                cur = con.cursor()
                try:
                    cur.execute(f"SELECT * FROM {name} WHERE {where}")
                    cols = [str(d[0]) for d in cur.description or []]
                    return cols, [tuple(r) for r in cur] if cur.description else []
                finally:
                    cur.close()

            cols, rows = self._call(f"read rows of {table}", run, retry_transport=True)
            columns = cols or columns
            out += rows
        return columns, out

    def write_rows(
        self,
        table: str,
        key_columns: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        delete_keys: Sequence[Sequence[Any]],
    ) -> None:
        """Delete the rows with `delete_keys`, then load `rows` (thrift `load_table`).

        HeavyDB has no multi-statement transactions: if the load fails after the delete, the
        deleted rows are missing until the batch is applied again (a sync rerun does that).
        """
        from heavydb.thrift.ttypes import TStringRow, TStringValue

        name = quote_ident(table)
        for i in range(0, len(delete_keys), _ROW_BATCH):
            where = _keys_where(key_columns, delete_keys[i : i + _ROW_BATCH])
            self._run(f"delete rows of {table}", f"DELETE FROM {name} WHERE {where}")
        if not rows:
            return
        string_rows = [
            TStringRow(
                cols=[
                    TStringValue(str_val="", is_null=True)
                    if v is None
                    else TStringValue(str_val=_load_text(v), is_null=False)
                    for v in r
                ]
            )
            for r in rows
        ]
        names = list(columns)
        for i in range(0, len(string_rows), _ROW_BATCH):
            chunk = string_rows[i : i + _ROW_BATCH]
            self._call(
                f"load rows into {table}",
                lambda con, c=chunk: con._client.load_table(con._session, table, c, names),
                retry_transport=False,
            )

    def snapshot_table(self, table: str, snapshot: str) -> int:
        """Copy `table` to the new table `snapshot` (`CREATE TABLE ... AS SELECT`) before a sync
        deletes from it; the rows copied. A copy that fails is dropped again, the error raised."""
        src, dst = quote_ident(table), quote_ident(snapshot)
        try:
            self._run(f"snapshot {table}", f"CREATE TABLE {dst} AS SELECT * FROM {src}")
            rows = self._run(f"snapshot {table}", f"SELECT COUNT(*) FROM {dst}")
        except Exception:
            with contextlib.suppress(Exception):
                self._run(f"snapshot {table}", f"DROP TABLE IF EXISTS {dst}")
            raise
        return int(rows[0][0])

    def insert_rows_if_absent(
        self,
        table: str,
        key_columns: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> int:
        """Load the rows whose key the table does not hold yet (HeavyDB has no keys to refuse
        a duplicate: the keys present are read first); the number of rows loaded."""
        if not rows:
            return 0
        lowered = [c.lower() for c in columns]
        at = [lowered.index(k.lower()) for k in key_columns]
        keys = [tuple(r[i] for i in at) for r in rows]
        cols, present_rows = self.read_rows(table, key_columns, keys)
        pl = [c.lower() for c in cols]
        pat = [pl.index(k.lower()) for k in key_columns] if cols else []
        present = {tuple(r[i] for i in pat) for r in present_rows}
        todo = [r for r, k in zip(rows, keys, strict=True) if k not in present]
        self.write_rows(table, key_columns, columns, todo, [])
        return len(todo)


def _text(exc: BaseException) -> str:
    msg = getattr(exc, "error_msg", None) or getattr(exc, "message", None) or str(exc)
    return str(msg).strip() or type(exc).__name__


def _timed_out(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError):
        return True
    if _is_transport(exc) and getattr(exc, "type", None) == 3:  # TTransportException.TIMED_OUT
        return True
    return bool(_TIMED_OUT.search(_text(exc)))


def _is_transport(exc: BaseException) -> bool:
    try:
        from thrift.transport.TTransport import TTransportException
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, TTransportException)


def _quote_name(name: str) -> str:
    """A user name for ALTER USER: bare when simple, else double-quoted."""
    return name if is_simple_identifier(name) else '"' + name.replace('"', '""') + '"'


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "t", "1", "yes")
    return bool(value)


def _seconds_since(submitted: Any) -> float:
    """Seconds since a `SHOW QUERIES` submitted time ('YYYY-MM-DD HH:MM:SS', server-local)."""
    import datetime as dt
    import time

    try:
        at = dt.datetime.strptime(str(submitted), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return 0.0
    return max(0.0, time.time() - time.mktime(at.timetuple()))


# ============================================================================================
# Data protection (docs/recovery.md): DUMP/RESTORE archives, table epochs, and the few
# statements a recovery needs. `HeavyDBRecovery(db)` wraps a connector. DUMP and RESTORE
# read and write files on the HeavyDB server's filesystem: the path given must be one the
# server can write (DUMP) or read (RESTORE) and the backup task can read/write too (the same
# machine, or a shared directory; HeavyDB also restricts them with allowed-import/export-paths).
# ============================================================================================


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class HeavyDBRecovery:
    """Backup and recovery steps on one HeavyDB server, as the connector's (super)user."""

    def __init__(self, db: HeavyDBDatabase) -> None:
        self.db = db

    def table_epoch(self, table: str) -> int:
        return int(
            self.db._call(
                f"read the epoch of {table}",
                lambda con: con._client.get_table_epoch_by_name(con._session, table),
                retry_transport=True,
            )
        )

    def set_table_epoch(self, table: str, epoch: int) -> None:
        """Roll the table back to `epoch` (refused below its rollback floor)."""
        self.db._call(
            f"set the epoch of {table} to {epoch}",
            lambda con: con._client.set_table_epoch_by_name(con._session, table, int(epoch)),
            retry_transport=False,
        )

    def table_details(self, table: str) -> dict[str, int]:
        """Epoch, floor (the oldest epoch it can roll back to) and max_rollback_epochs."""

        def run(con: Any) -> list[dict[str, Any]]:
            cur = con.cursor()
            try:
                cur.execute(f"SHOW TABLE DETAILS {quote_ident(table)}")
                names = [d[0] for d in cur.description]
                return [dict(zip(names, r, strict=False)) for r in cur]
            finally:
                cur.close()

        rows = self.db._call(f"read details of {table}", run, retry_transport=True)
        if not rows:
            raise NotFound(self.db.name, f"read details of {table}", "no such table")
        row = rows[0]
        return {
            "epoch": int(row["max_epoch"]),
            "floor": int(row["min_epoch_floor"]),
            "max_rollback_epochs": int(row["max_rollback_epochs"]),
        }

    def columns(self, table: str) -> list[tuple[str, str]]:
        """(name, type) of each column, in order."""
        details = self.db._call(
            f"describe {table}",
            lambda con: con._client.get_table_details(con._session, table),
            retry_transport=True,
        )
        from heavydb.common.ttypes import TDatumType

        return [
            (c.col_name, TDatumType._VALUES_TO_NAMES.get(c.col_type.type, "?"))
            for c in details.row_desc
        ]

    def dump_table(self, table: str, path: str, compression: str) -> None:
        """DUMP TABLE t TO 'path' WITH (compression=...): an archive on the server's disk."""
        self.db.query(
            f"DUMP TABLE {quote_ident(table)} TO {_sql_string(path)}"
            f" WITH (compression={_sql_string(compression)})"
        )

    def restore_table(self, table: str, path: str, compression: str) -> None:
        """RESTORE TABLE t FROM 'path' (the table must not exist)."""
        self.db.query(
            f"RESTORE TABLE {quote_ident(table)} FROM {_sql_string(path)}"
            f" WITH (compression={_sql_string(compression)})"
        )

    def rename_table(self, old: str, new: str) -> None:
        self.db.query(f"ALTER TABLE {quote_ident(old)} RENAME TO {quote_ident(new)}")

    def drop_table(self, table: str) -> None:
        self.db.query(f"DROP TABLE IF EXISTS {quote_ident(table)}")

    def exists(self, table: str) -> bool:
        return table in self.db.tables()

    def delete_keys(self, table: str, key: str, values: Sequence[Any]) -> None:
        """DELETE the rows whose single-column key is in values (batches of 500)."""
        for i in range(0, len(values), 500):
            batch = list(values[i : i + 500])
            marks = ", ".join("?" for _ in batch)
            self.db.query(
                f"DELETE FROM {quote_ident(table)} WHERE {quote_ident(key)} IN ({marks})", batch
            )

    def load_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        """Append rows through the load_table call (values sent as text, NULLs marked)."""
        from heavydb.thrift.ttypes import TStringRow, TStringValue

        def text(v: Any) -> TStringValue:
            if v is None:
                return TStringValue(str_val="", is_null=True)
            if isinstance(v, bool):
                return TStringValue(str_val="true" if v else "false", is_null=False)
            if hasattr(v, "hour") and hasattr(v, "isoformat"):
                return TStringValue(str_val=v.isoformat(sep=" "), is_null=False)
            if hasattr(v, "isoformat"):
                return TStringValue(str_val=v.isoformat(), is_null=False)
            return TStringValue(str_val=str(v), is_null=False)

        done = 0
        for i in range(0, len(rows), 5000):
            batch = [TStringRow(cols=[text(v) for v in r]) for r in rows[i : i + 5000]]
            if not batch:
                continue
            self.db._call(
                f"load rows into {table}",
                lambda con, b=batch: con._client.load_table(con._session, table, b, list(columns)),
                retry_transport=False,
            )
            done += len(batch)
        return done

    def keys(self, table: str, key: str) -> list[Any]:
        return [r[0] for r in self.db.query(f"SELECT {quote_ident(key)} FROM {quote_ident(table)}")]


# ============================================================================================
# Integrity checks (tbs_emergency.integrity): HeavyDB's SQL for normalised values and checksums
# ============================================================================================

_INTEGRITY_INT_BITS = {"BOOL": 8, "TINYINT": 8, "SMALLINT": 16, "INT": 32, "BIGINT": 64}


class HeavyDBIntegrityDialect:
    """HeavyDB pieces of the integrity checksum (see tbs_emergency.integrity.checksum).

    HeavyDB has no MD5 and no byte or code-point function, so a text's bytes are read as
    `POSITION(SUBSTRING(s FROM i FOR 1) IN '<printable ASCII>') + 31` (the ASCII code for
    printable ASCII; other characters make the checksum differ and the rows are then compared
    one by one). Integer arithmetic is BIGINT throughout (INT * INT would overflow INT).
    """

    def quote(self, name: str) -> str:
        return quote_ident(name)

    def table(self, name: str) -> str:
        return quote_ident(name)

    def value(self, expr: str, own: Any, spec: Any) -> str:
        from tbs_emergency.integrity.normalize import TEMPORAL, Kind, scale_of

        if spec.kind in TEMPORAL:
            return f"DATEDIFF('second', TIMESTAMP '1970-01-01 00:00:00', {expr})"
        scale = scale_of(spec)
        if own.kind == Kind.FLOAT:
            return f"CAST(FLOOR({expr} * CAST({10**scale} AS DOUBLE) + 0.5) AS BIGINT)"
        if scale == 0:
            return f"CAST({expr} AS BIGINT)"
        return f"CAST({expr} * {10**scale} AS BIGINT)"

    def text_bytes(self, expr: str) -> str:
        return f"CHAR_LENGTH({expr})"

    def text_group(self, expr: str, group: int, groups: int) -> str:
        from tbs_emergency.integrity.checksum import ALPHABET, ALPHABET_OFFSET, GROUP_BYTES

        alphabet = _sql_string(ALPHABET)
        terms = []
        for i in range(GROUP_BYTES):
            pos = group * GROUP_BYTES + i + 1
            code = (
                f"CASE WHEN CHAR_LENGTH({expr}) >= {pos} THEN"
                f" POSITION(SUBSTRING({expr} FROM {pos} FOR 1) IN {alphabet}) + {ALPHABET_OFFSET}"
                " ELSE 0 END"
            )
            weight = 256 ** (GROUP_BYTES - 1 - i)
            terms.append(f"CAST({code} AS BIGINT)" + (f" * {weight}" if weight > 1 else ""))
        return "(" + " + ".join(terms) + ")"

    def sum_bigint(self, expr: str) -> str:
        return f"SUM({expr})"

    def idiv(self, a: str, b: str) -> str:
        return f"({a}) / ({b})"  # BIGINT / BIGINT is integer division in HeavyDB

    def literal(self, own: Any, value: Any) -> str:
        import datetime as dt
        from decimal import Decimal

        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, int | Decimal):
            return str(value)
        if isinstance(value, dt.datetime):
            return "TIMESTAMP '" + value.strftime("%Y-%m-%d %H:%M:%S") + "'"
        if isinstance(value, dt.date):
            return "DATE '" + value.isoformat() + "'"
        return _sql_string(str(value))


class HeavyDBIntegrity:
    """The hot store as the integrity checks see it (connectors.base.IntegrityDatabase)."""

    def __init__(self, db: HeavyDBDatabase) -> None:
        self.db = db
        self.name = db.name

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.db.query(sql, params)

    def integrity_dialect(self) -> HeavyDBIntegrityDialect:
        return HeavyDBIntegrityDialect()

    def describe_columns(self, table: str) -> dict[str, Any]:
        from heavydb.common.ttypes import TDatumType

        from tbs_emergency.integrity.normalize import ColumnType, Kind

        details = self.db._call(
            f"describe {table}",
            lambda con: con._client.get_table_details(con._session, table),
            retry_transport=True,
        )
        out: dict[str, Any] = {}
        for c in details.row_desc:
            t = c.col_type
            name = TDatumType._VALUES_TO_NAMES.get(t.type, "?")
            null = bool(t.nullable)
            native = name.lower()
            if t.is_array:
                ct = ColumnType(Kind.OTHER, nullable=null, native=f"{native}[]")
            elif name in _INTEGRITY_INT_BITS:
                bits = _INTEGRITY_INT_BITS[name]
                ct = ColumnType(Kind.INT, nullable=null, native=native, bits=bits)
            elif name == "DECIMAL":
                ct = ColumnType(Kind.DECIMAL, int(t.scale or 0), null, native)
            elif name in ("FLOAT", "DOUBLE"):
                ct = ColumnType(Kind.FLOAT, nullable=null, native=native)
            elif name == "TIMESTAMP":
                ct = ColumnType(Kind.TIMESTAMP, int(t.precision or 0), null, native)
            elif name == "DATE":
                ct = ColumnType(Kind.DATE, nullable=null, native=native)
            elif name == "STR":
                ct = ColumnType(Kind.TEXT, nullable=null, native="text")
            else:
                ct = ColumnType(Kind.OTHER, nullable=null, native=native)
            out[str(c.col_name)] = ct
        return out


_ROW_BATCH = 1000


def _literal(value: Any) -> str:
    """A SQL literal for a key value (HeavyDB binds no parameters server-side)."""
    import datetime as dt
    from decimal import Decimal

    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dt.datetime):
        return f"TIMESTAMP '{value.strftime('%Y-%m-%d %H:%M:%S')}'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


def _keys_where(key_columns: Sequence[str], keys: Sequence[Sequence[Any]]) -> str:
    cols = [quote_ident(c) for c in key_columns]
    if not keys:
        return "1 = 0"
    if len(cols) == 1:
        return f"{cols[0]} IN ({', '.join(_literal(k[0]) for k in keys)})"
    return " OR ".join(
        "(" + " AND ".join(f"{c} = {_literal(v)}" for c, v in zip(cols, k, strict=True)) + ")"
        for k in keys
    )


def _load_text(value: Any) -> str:
    """A value as `load_table` reads it from text."""
    import datetime as dt

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)
