"""MySQL / MariaDB, the archive, through pymysql.

One connection per connector, opened on first use and reused; sessions are forced to UTC so
timestamps compare the same everywhere. Every network step is bounded by the configured
`timeout_s` (connect, read and write). MySQL-specific SQL (backtick quoting, binlog status)
lives here and nowhere else. pymysql is imported in this module only.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tbs_emergency.config import MySQLConfig
from tbs_emergency.connectors._common import probe, redact_text, split_qualified
from tbs_emergency.connectors.base import (
    AccountLimit,
    DbAccount,
    DbSession,
    OpenTransaction,
    PrivilegeGrant,
    Probe,
)
from tbs_emergency.errors import (
    ConnectorError,
    IntegrityError,
    NotFound,
    Refused,
    TimedOut,
    Unreachable,
)

# pymysql / MySQL error codes, by what they mean for us.
_UNREACHABLE = {2002, 2003, 2005, 2006, 2013, 2055, 1040, 1053}
_REFUSED = {
    1044,  # access denied to database
    1045,  # access denied (bad credentials)
    1142,  # command denied on table
    1143,  # column access denied
    1227,  # needs a privilege (SUPER, BINLOG MONITOR, ...)
    1290,  # server runs with --read-only
    1836,  # read-only mode
    1792,  # read-only transaction
    1064,  # syntax error
    1054,  # unknown column
    1062,  # duplicate key
    1451,  # foreign key (delete parent)
    1452,  # foreign key (insert child)
    1205,  # lock wait timeout (refused, not a network timeout)
    4151,  # the account is locked (MariaDB)
    3118,  # the account is locked (MySQL)
    1396,  # operation CREATE/ALTER/DROP USER failed (unknown account)
}
_NOT_FOUND = {1049, 1146, 1051, 1109}
# Reconnecting and repeating is safe only when nothing could have been written.
_RETRYABLE_CONNECTION = {2006, 2013, 2055}
_READ_STATEMENT = re.compile(r"^\s*(SELECT|SHOW|WITH|DESCRIBE|DESC|EXPLAIN)\b", re.I)


def quote_ident(name: str) -> str:
    """`db.table` -> `` `db`.`table` `` (backticks doubled inside names)."""
    return ".".join("`" + part.replace("`", "``") + "`" for part in split_qualified(name))


class MySQLDatabase:
    """The archive database of one environment (or of several that share it).

    `user`/`password` override the configured application account (e.g. the recovery user).
    """

    def __init__(
        self,
        config: MySQLConfig,
        name: str = "mysql",
        *,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self._user = user or config.user
        self._password_override = password
        self._con: Any = None
        self._lock = threading.RLock()

    # -- connection ---------------------------------------------------------------------------

    def _password(self) -> str:
        if self._password_override is not None:
            return self._password_override
        return self.config.password.get_secret_value() if self.config.password else ""

    def _where(self) -> str:
        c = self.config
        return f"socket {c.unix_socket}" if c.unix_socket else f"{c.host}:{c.port}"

    def _connect(self) -> Any:
        import pymysql

        c = self.config
        password = self._password()
        kwargs: dict[str, Any] = {
            "user": self._user,
            "password": password,
            "database": c.database,
            "connect_timeout": c.timeout_s,
            "read_timeout": c.timeout_s,
            "write_timeout": c.timeout_s,
            "autocommit": True,
            "charset": "utf8mb4",
            "init_command": "SET time_zone='+00:00'",
        }
        if c.unix_socket:
            kwargs["unix_socket"] = c.unix_socket
        else:
            kwargs["host"] = c.host
            kwargs["port"] = c.port
        try:
            return pymysql.connect(**kwargs)
        except Exception as exc:
            raise self._error("connect", exc, password) from None

    def _connection(self) -> Any:
        if self._con is None:
            self._con = self._connect()
        return self._con

    def _drop(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            with contextlib.suppress(Exception):
                con.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- errors -------------------------------------------------------------------------------

    def _error(
        self, operation: str, exc: BaseException, secret: str | None = None
    ) -> ConnectorError:
        """The project's error for a pymysql (or socket) exception."""
        code, text = _code_and_text(exc)
        text = redact_text(text, [secret if secret is not None else self._safe_password()])
        lowered = text.lower()
        if "timed out" in lowered or isinstance(exc, TimeoutError):
            return TimedOut(
                self.name,
                operation,
                f"no answer from {self._where()} within {self.config.timeout_s:g}s"
                + (f" ({text})" if text else ""),
            )
        detail = f"({code}) {text}" if code else text
        if code in _NOT_FOUND:
            return NotFound(self.name, operation, detail)
        if code in _REFUSED:
            return Refused(self.name, operation, detail)
        if code in _UNREACHABLE or isinstance(exc, OSError):
            return Unreachable(self.name, operation, f"{self._where()}: {detail}")
        return ConnectorError(self.name, operation, detail or type(exc).__name__)

    def _safe_password(self) -> str | None:
        try:
            return self._password()
        except Exception:
            return None

    # -- statements ---------------------------------------------------------------------------

    def _run(
        self,
        operation: str,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        *,
        retry: bool | None = None,
    ) -> tuple[list[tuple[Any, ...]], list[str]]:
        """Execute one statement; rows and column names. Reconnects once where that is safe."""
        import pymysql

        if retry is None:
            retry = bool(_READ_STATEMENT.match(sql))
        with self._lock:
            for attempt in (1, 2):
                con = self._connection()
                try:
                    with con.cursor() as cur:
                        cur.execute(sql, params)
                        rows = [tuple(r) for r in cur.fetchall()] if cur.description else []
                        cols = [d[0] for d in cur.description] if cur.description else []
                        return rows, cols
                except (pymysql.err.OperationalError, pymysql.err.InterfaceError, OSError) as exc:
                    code, text = _code_and_text(exc)
                    self._drop()
                    timed_out = "timed out" in text.lower() or isinstance(exc, TimeoutError)
                    if (
                        attempt == 1
                        and retry
                        and not timed_out
                        and (
                            code in _RETRYABLE_CONNECTION
                            or isinstance(exc, pymysql.err.InterfaceError)
                        )
                    ):
                        continue
                    raise self._error(operation, exc) from None
                except pymysql.err.MySQLError as exc:
                    raise self._error(operation, exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def query(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement (pymysql paramstyle: %s or %(name)s); the rows, [] for writes."""
        return self._run("query", sql, params)[0]

    def query_dicts(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        rows, cols = self._run("query", sql, params)
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> None:
        """A statement that changes something: never repeated on reconnect."""
        self._run("execute", sql, params, retry=False)

    # -- the SQLDatabase protocol ----------------------------------------------------------------

    def ping(self) -> Probe:
        def check() -> str:
            rows, _ = self._run("ping", "SELECT 1, VERSION(), @@global.read_only")
            _, version, ro = rows[0]
            return f"{version} at {self._where()}" + (" (read-only)" if ro else "")

        return probe(self.name, check)

    def row_count(self, table: str) -> int:
        rows, _ = self._run(f"count rows of {table}", f"SELECT COUNT(*) FROM {quote_ident(table)}")
        return int(rows[0][0])

    def tables(self) -> list[str]:
        rows, _ = self._run(
            "list tables",
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY table_name",
        )
        return [str(r[0]) for r in rows]

    def is_read_only(self) -> bool:
        rows, _ = self._run("read read_only", "SELECT @@global.read_only")
        return bool(int(rows[0][0]))

    def binlog_position(self) -> tuple[str, int, str | None]:
        """(binlog file, position, GTID position or None) of the server right now.

        Needs BINLOG MONITOR (REPLICATION CLIENT) or SUPER: use the recovery account.
        """
        rows, _ = self._run("read binlog position", "SHOW MASTER STATUS")
        if not rows:
            raise ConnectorError(
                self.name, "read binlog position", "binary logging is off on this server"
            )
        file, position = str(rows[0][0]), int(rows[0][1])
        gtid: str | None = None
        try:
            grows, _ = self._run("read binlog position", "SELECT @@global.gtid_binlog_pos")
            value = grows[0][0] if grows else None
            gtid = str(value) if value else None
        except ConnectorError:
            # MySQL proper has no gtid_binlog_pos; it reports GTIDs in SHOW MASTER STATUS.
            gtid = str(rows[0][4]) if len(rows[0]) > 4 and rows[0][4] else None
        return file, position, gtid

    def set_read_only(self, on: bool) -> None:
        """SET GLOBAL read_only (needs SUPER or READ_ONLY ADMIN; SUPER users still write)."""
        self._run("set read_only", f"SET GLOBAL read_only = {1 if on else 0}", retry=True)

    # -- database emergency procedures (docs/database-emergency.md) ---------------------------
    # Server-level steps: the account needs SUPER or CONNECTION ADMIN (KILL, SET GLOBAL,
    # ALTER USER), PROCESS (every session and transaction), RELOAD (FLUSH), SELECT on mysql.*
    # and GRANT OPTION on the archive schema (privilege steps). MariaDB semantics where they
    # differ: MAX_USER_CONNECTIONS -1, roles listed with an empty host.

    def login_user(self) -> str:
        """The account this connector logs in as."""
        return self._user

    def sessions(self) -> list[DbSession]:
        """Every connection to the server, with idle/busy time and open-transaction flag."""
        rows, _ = self._run(
            "list sessions",
            "SELECT p.ID, p.USER, p.HOST, p.DB, p.COMMAND, p.TIME, p.INFO,"
            " MAX(t.trx_id IS NOT NULL)"
            " FROM information_schema.PROCESSLIST p"
            " LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID"
            " GROUP BY p.ID, p.USER, p.HOST, p.DB, p.COMMAND, p.TIME, p.INFO",
        )
        out = []
        for sid, user, host, db, command, seconds, info, in_trx in rows:
            command = str(command or "")
            idle = command == "Sleep"
            out.append(
                DbSession(
                    id=str(sid),
                    user=str(user or ""),
                    host=str(host) if host else None,
                    database=str(db) if db else None,
                    idle_s=float(seconds or 0) if idle else None,
                    busy_s=None if idle else float(seconds or 0),
                    in_transaction=bool(in_trx),
                    statement=_text_of(info),
                    # The procedure's own connection counts like any other (its account is a
                    # priority user); server threads and replication never count or close.
                    internal=str(user or "") in _INTERNAL_USERS or command in _INTERNAL_COMMANDS,
                )
            )
        return out

    def end_session(self, session_id: str) -> bool:
        """KILL CONNECTION (its open transaction rolls back); False if it was gone already."""
        try:
            self._run("close session", f"KILL CONNECTION {int(session_id)}", retry=False)
        except ConnectorError as exc:
            if _has_code(exc, 1094):  # unknown thread id
                return False
            raise
        return True

    def max_connections(self) -> int:
        rows, _ = self._run("read max_connections", "SELECT @@global.max_connections")
        return int(rows[0][0])

    def set_max_connections(self, limit: int) -> None:
        self._run("set max_connections", f"SET GLOBAL max_connections = {int(limit)}", retry=True)

    def account_limits(self) -> list[AccountLimit]:
        """Every account (roles excluded) with its own MAX_USER_CONNECTIONS."""
        rows, _ = self._run(
            "list accounts",
            "SELECT User, Host, max_user_connections FROM mysql.user WHERE Host <> ''"
            " ORDER BY User, Host",
        )
        return [AccountLimit(str(u), str(h), int(n or 0)) for u, h, n in rows]

    def set_account_limit(self, user: str, host: str, max_user_connections: int) -> None:
        self._run(
            "set account connection limit",
            f"ALTER USER %s@%s WITH MAX_USER_CONNECTIONS {int(max_user_connections)}",
            (user, host),
            retry=True,
        )

    def open_transactions(self) -> list[OpenTransaction]:
        """Open InnoDB transactions of other sessions, oldest first."""
        rows, _ = self._run(
            "list open transactions",
            "SELECT t.trx_id, t.trx_mysql_thread_id, p.USER, p.HOST, t.trx_started,"
            " TIMESTAMPDIFF(MICROSECOND, t.trx_started, NOW(6)) / 1e6, t.trx_state,"
            " COALESCE(t.trx_query, p.INFO), t.trx_rows_modified, p.DB, p.COMMAND"
            " FROM information_schema.INNODB_TRX t"
            " LEFT JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id"
            " WHERE t.trx_mysql_thread_id <> CONNECTION_ID()"
            " ORDER BY t.trx_started, t.trx_id",
        )
        out = []
        for trx, sid, user, host, started, age, state, stmt, modified, db, command in rows:
            if str(command or "") == "Sleep" or stmt is None:
                state = f"{state}, idle"
            out.append(
                OpenTransaction(
                    id=str(trx),
                    session_id=str(sid),
                    user=str(user or "?"),
                    host=str(host) if host else None,
                    age_s=max(0.0, float(age or 0)),
                    state=str(state),
                    statement=_text_of(stmt),
                    started_at=started,
                    rows_modified=int(modified) if modified is not None else None,
                    database=str(db) if db else None,
                )
            )
        return out

    def flush_tables(self, lock_wait_s: float) -> None:
        """FLUSH TABLES, waiting at most lock_wait_s for the table locks it needs."""
        with self._lock:
            rows, _ = self._run("flush tables", "SELECT @@session.lock_wait_timeout")
            before = int(rows[0][0])
            self._run(
                "flush tables",
                f"SET SESSION lock_wait_timeout = {max(1, int(lock_wait_s))}",
                retry=True,
            )
            try:
                self._run("flush tables", "FLUSH TABLES", retry=False)
            finally:
                with contextlib.suppress(ConnectorError):
                    self._run(
                        "flush tables", f"SET SESSION lock_wait_timeout = {before}", retry=False
                    )

    def reset_query_cache(self) -> bool:
        """RESET QUERY CACHE; False when the server has no query cache switched on."""
        try:
            rows, _ = self._run(
                "reset query cache", "SELECT @@global.have_query_cache, @@global.query_cache_type"
            )
        except ConnectorError as exc:
            if _has_code(exc, 1193):  # unknown variable: MySQL 8 has no query cache
                return False
            raise
        have, kind = rows[0]
        if str(have).upper() != "YES" or str(kind).upper() in ("OFF", "0"):
            return False
        self._run("reset query cache", "RESET QUERY CACHE", retry=False)
        return True

    def grants(self) -> list[PrivilegeGrant]:
        """Every privilege of every account and role: global, schema, table and column level.

        Needs SELECT on the mysql schema, or only the login account's own are visible.
        """
        rows, _ = self._run(
            "list privileges",
            "SELECT GRANTEE, PRIVILEGE_TYPE, 'global', NULL, NULL, NULL"
            " FROM information_schema.USER_PRIVILEGES WHERE PRIVILEGE_TYPE <> 'USAGE'"
            " UNION ALL SELECT GRANTEE, PRIVILEGE_TYPE, 'schema', TABLE_SCHEMA, NULL, NULL"
            " FROM information_schema.SCHEMA_PRIVILEGES"
            " UNION ALL SELECT GRANTEE, PRIVILEGE_TYPE, 'table', TABLE_SCHEMA, TABLE_NAME, NULL"
            " FROM information_schema.TABLE_PRIVILEGES"
            " UNION ALL SELECT GRANTEE, PRIVILEGE_TYPE, 'column', TABLE_SCHEMA, TABLE_NAME,"
            " COLUMN_NAME FROM information_schema.COLUMN_PRIVILEGES",
        )
        out = []
        for grantee, privilege, level, schema, table, column in rows:
            user, host = _parse_grantee(str(grantee))
            out.append(
                PrivilegeGrant(
                    user=user,
                    host=host,
                    privilege=str(privilege).upper(),
                    level=level,
                    schema=str(schema) if schema is not None else None,
                    table=str(table) if table is not None else None,
                    column=str(column) if column is not None else None,
                )
            )
        return out

    def revoke(self, grants: Sequence[PrivilegeGrant]) -> None:
        """REVOKE exactly these privileges (one statement per grantee and object).

        A privilege that is not granted any more counts as revoked (reruns are harmless).
        """
        for sql, params in _grant_statements("REVOKE", grants):
            try:
                self._run("revoke privileges", sql, params, retry=False)
            except ConnectorError as exc:
                if not (_has_code(exc, 1141) or _has_code(exc, 1147)):
                    raise

    def grant(self, grants: Sequence[PrivilegeGrant]) -> None:
        """GRANT exactly these privileges (granting one already held changes nothing)."""
        for sql, params in _grant_statements("GRANT", grants):
            self._run("grant privileges", sql, params, retry=False)

    # -- security procedures (docs/security.md) -----------------------------------------------
    # Account changes need CREATE USER (or SUPER) and SELECT on the mysql schema. Passwords
    # given to these methods are redacted from every error they raise.

    def accounts(self, user: str | None = None) -> list[DbAccount]:
        """Every account (roles excluded), or those of one user: host and locked flag."""
        where = " WHERE User = %s" if user is not None else ""
        params = (user,) if user is not None else None
        try:
            rows, _ = self._run(
                "list accounts",
                "SELECT User, Host, COALESCE(JSON_VALUE(Priv, '$.account_locked'), 0)"
                f" FROM mysql.global_priv{where}",
                params,
            )
            rows = [r for r in rows if str(r[1]) != ""]  # roles have an empty host
        except ConnectorError as exc:
            if not (_has_code(exc, 1146) or _has_code(exc, 1305) or _has_code(exc, 1064)):
                raise
            # MySQL proper: mysql.user has the flag
            rows, _ = self._run(
                "list accounts",
                f"SELECT User, Host, account_locked = 'Y' FROM mysql.user{where}",
                params,
            )
        return sorted(DbAccount(str(u), str(h), bool(int(locked or 0))) for u, h, locked in rows)

    def set_account_locked(self, user: str, host: str, locked: bool) -> None:
        """ALTER USER ... ACCOUNT LOCK|UNLOCK (a locked account cannot log in)."""
        self._run(
            "lock account" if locked else "unlock account",
            f"ALTER USER %s@%s ACCOUNT {'LOCK' if locked else 'UNLOCK'}",
            (user, host),
            retry=False,
        )

    def set_password(self, user: str, host: str, password: str) -> None:
        """ALTER USER ... IDENTIFIED BY (the server hashes it; the old one stops at once)."""
        try:
            self._run(
                f"change the password of {user}@{host}",
                "ALTER USER %s@%s IDENTIFIED BY %s",
                (user, host, password),
                retry=False,
            )
        except ConnectorError as exc:
            raise type(exc)(
                exc.system, exc.operation, redact_text(exc.detail, [password])
            ) from None

    def account_security(self) -> list[dict[str, Any]]:
        """Every account (roles excluded): user, host, whether it has no password (native
        password plugin with an empty hash) and whether any host may use it ('%')."""
        try:
            rows, _ = self._run(
                "list account security",
                "SELECT User, Host, plugin, authentication_string = '' FROM mysql.user"
                " WHERE is_role = 'N'",
            )
        except ConnectorError as exc:
            if not _has_code(exc, 1054):
                raise
            rows, _ = self._run(
                "list account security",
                "SELECT User, Host, plugin, authentication_string = '' FROM mysql.user",
            )
        out = []
        for user, host, plugin, empty in rows:
            plugin = str(plugin or "")
            out.append(
                {
                    "user": str(user),
                    "host": str(host),
                    "no_password": bool(empty) and plugin in ("", "mysql_native_password"),
                    "any_host": str(host) == "%",
                }
            )
        return out

    def try_login(self, user: str, password: str) -> tuple[bool, str]:
        """Log in as user with password (no database): (True, "accepted") or (False, why).

        Raises when the server cannot be reached (that says nothing about the password).
        """
        import pymysql

        c = self.config
        kwargs: dict[str, Any] = {
            "user": user,
            "password": password,
            "connect_timeout": c.timeout_s,
            "read_timeout": c.timeout_s,
            "write_timeout": c.timeout_s,
        }
        if c.unix_socket:
            kwargs["unix_socket"] = c.unix_socket
        else:
            kwargs["host"], kwargs["port"] = c.host, c.port
        try:
            con = pymysql.connect(**kwargs)
        except Exception as exc:
            err = self._error(f"log in as {user}", exc, password)
            if isinstance(err, Refused):
                return False, err.detail
            raise err from None
        with contextlib.suppress(Exception):
            con.close()
        return True, "accepted"

    # -- environment sync: whole rows by key (dbops/sync.py) ------------------------------------

    def read_rows(
        self, table: str, key_columns: Sequence[str], keys: Sequence[Sequence[Any]]
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Every column of the rows with these keys (those that exist)."""
        columns: list[str] = []
        out: list[tuple[Any, ...]] = []
        for i in range(0, len(keys), _ROW_BATCH):
            chunk = keys[i : i + _ROW_BATCH]
            where, params = _keys_where(key_columns, chunk)
            rows, cols = self._run(
                f"read rows of {table}", f"SELECT * FROM {quote_ident(table)} WHERE {where}", params
            )
            columns = cols or columns
            out += rows
        if not columns:
            _, columns = self._run(
                f"read rows of {table}", f"SELECT * FROM {quote_ident(table)} WHERE 1 = 0"
            )
        return columns, out

    def write_rows(
        self,
        table: str,
        key_columns: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        delete_keys: Sequence[Sequence[Any]],
    ) -> None:
        """In ONE transaction: delete the rows with `delete_keys`, then insert `rows`.

        On any error the transaction is rolled back and the error raised: nothing of the batch
        is left behind.
        """
        import pymysql

        name = quote_ident(table)
        insert = (
            f"INSERT INTO {name} ({', '.join(quote_ident(c) for c in columns)})"
            f" VALUES ({', '.join(['%s'] * len(columns))})"
        )
        with self._lock:
            con = self._connection()
            try:
                con.begin()
                with con.cursor() as cur:
                    for i in range(0, len(delete_keys), _ROW_BATCH):
                        where, params = _keys_where(key_columns, delete_keys[i : i + _ROW_BATCH])
                        cur.execute(f"DELETE FROM {name} WHERE {where}", params)
                    if rows:
                        cur.executemany(insert, [tuple(r) for r in rows])
                con.commit()
            except (pymysql.err.MySQLError, OSError) as exc:
                try:
                    con.rollback()
                except Exception:
                    self._drop()
                raise self._error(f"write rows of {table}", exc) from None

    def snapshot_table(self, table: str, snapshot: str) -> int:
        """Copy `table` (its definition and every row) to the new table `snapshot` in the same
        database before a sync deletes from it (`CREATE TABLE ... LIKE`, `INSERT ... SELECT`);
        the rows copied. A copy that fails is dropped again and the error raised."""
        src, dst = quote_ident(table), quote_ident(snapshot)
        self._run(f"snapshot {table}", f"CREATE TABLE {dst} LIKE {src}", retry=False)
        try:
            self._run(f"snapshot {table}", f"INSERT INTO {dst} SELECT * FROM {src}", retry=False)
            rows, _ = self._run(f"snapshot {table}", f"SELECT COUNT(*) FROM {dst}")
        except Exception:
            with contextlib.suppress(Exception):
                self._run(f"snapshot {table}", f"DROP TABLE IF EXISTS {dst}", retry=False)
            raise
        return int(rows[0][0])

    def insert_rows_if_absent(
        self,
        table: str,
        key_columns: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> int:
        """Insert the rows whose key is not in the table yet; rows already there are left as
        they are (`ON DUPLICATE KEY UPDATE k = k`, a no-op: no binlog event, no change). One
        transaction per batch of 1000; the number of rows inserted."""
        import pymysql

        if not rows:
            return 0
        name = quote_ident(table)
        k = quote_ident(key_columns[0])
        insert = (
            f"INSERT INTO {name} ({', '.join(quote_ident(c) for c in columns)})"
            f" VALUES ({', '.join(['%s'] * len(columns))}) ON DUPLICATE KEY UPDATE {k} = {k}"
        )
        inserted = 0
        with self._lock:
            con = self._connection()
            for i in range(0, len(rows), _ROW_BATCH):
                batch = [tuple(r) for r in rows[i : i + _ROW_BATCH]]
                try:
                    con.begin()
                    with con.cursor() as cur:
                        cur.executemany(insert, batch)
                        inserted += max(0, int(cur.rowcount))
                    con.commit()
                except (pymysql.err.MySQLError, OSError) as exc:
                    try:
                        con.rollback()
                    except Exception:
                        self._drop()
                    raise self._error(f"insert rows into {table}", exc) from None
        return inserted


_INTERNAL_USERS = ("system user", "event_scheduler", "unauthenticated user")
_INTERNAL_COMMANDS = (
    "Daemon",
    "Binlog Dump",
    "Binlog Dump GTID",
    "Slave_IO",
    "Slave_SQL",
    "Slave_worker",
    "Killed",
)
_GRANTEE = re.compile(r"^'((?:[^']|'')*)'(?:@'((?:[^']|'')*)')?$")


_ROW_BATCH = 1000


def _keys_where(key_columns: Sequence[str], keys: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
    """`k IN (%s, ...)` or `(k1, k2) IN ((%s, %s), ...)` and its parameters."""
    cols = [quote_ident(c) for c in key_columns]
    if not keys:
        return "1 = 0", []
    if len(cols) == 1:
        return f"{cols[0]} IN ({', '.join(['%s'] * len(keys))})", [k[0] for k in keys]
    one = "(" + ", ".join(["%s"] * len(cols)) + ")"
    params = [v for k in keys for v in k]
    return f"({', '.join(cols)}) IN ({', '.join([one] * len(keys))})", params


def _has_code(exc: ConnectorError, code: int) -> bool:
    return exc.detail.startswith(f"({code})")


def _text_of(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _parse_grantee(grantee: str) -> tuple[str, str | None]:
    """`'app'@'10.%'` -> ("app", "10.%"); a role (`'writer'@''`) -> ("writer", None)."""
    m = _GRANTEE.match(grantee)
    if not m:
        return grantee, None
    user = m.group(1).replace("''", "'")
    host = m.group(2)
    return user, (host.replace("''", "'") if host else None)


def _grant_statements(
    verb: str, grants: Sequence[PrivilegeGrant]
) -> list[tuple[str, tuple[str, ...]]]:
    """GRANT/REVOKE statements for the grants, grouped by grantee and object."""
    groups: dict[tuple[Any, ...], list[PrivilegeGrant]] = {}
    for g in grants:
        level = "table" if g.level == "column" else g.level
        groups.setdefault((g.user, g.host, level, g.schema, g.table), []).append(g)
    statements = []
    for (user, host, level, schema, table), members in groups.items():
        if level == "global":
            obj = "*.*"
        elif level == "schema":
            obj = _quote_name(str(schema)) + ".*"
        else:
            obj = _quote_name(str(schema)) + "." + _quote_name(str(table))
        parts: list[str] = []
        whole = sorted({g.privilege for g in members if g.column is None})
        parts.extend(whole)
        by_priv: dict[str, list[str]] = {}
        for g in members:
            if g.column is not None:
                by_priv.setdefault(g.privilege, []).append(g.column)
        for priv, cols in sorted(by_priv.items()):
            parts.append(f"{priv} (" + ", ".join(_quote_name(c) for c in sorted(cols)) + ")")
        who = "%s" if host is None else "%s@%s"
        params = (user,) if host is None else (user, host)
        direction = "TO" if verb == "GRANT" else "FROM"
        statements.append((f"{verb} {', '.join(parts)} ON {obj} {direction} {who}", params))
    return statements


def _quote_name(name: str) -> str:
    """One identifier (or schema pattern, kept verbatim) in backticks."""
    return "`" + name.replace("`", "``") + "`"


def _code_and_text(exc: BaseException) -> tuple[int | None, str]:
    args = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        return args[0], str(args[1])
    if isinstance(exc, OSError):
        return None, exc.strerror or str(exc)
    return None, str(exc) if str(exc) else type(exc).__name__


# ============================================================================================
# Data protection (docs/recovery.md): consistent snapshots, chunk dumps and loads, table
# checksums, binary logs (mariadb-binlog) and replays (mariadb client). `MySQLRecovery(db)`
# wraps a connector; it opens its own connections (a snapshot needs several, a restore needs
# LOCAL INFILE) with the connector's account. Subprocesses get the credentials in a private
# option file (0600, deleted afterwards), never on the command line.
# ============================================================================================

_HEX_TYPES = frozenset(
    {
        "binary",
        "varbinary",
        "tinyblob",
        "blob",
        "mediumblob",
        "longblob",
        "bit",
        "geometry",
        "point",
        "linestring",
        "polygon",
        "multipoint",
        "multilinestring",
        "multipolygon",
        "geometrycollection",
    }
)
_PLAIN_TYPES = frozenset(
    {
        "tinyint",
        "smallint",
        "mediumint",
        "int",
        "integer",
        "bigint",
        "decimal",
        "numeric",
        "double",
        "real",
        "date",
        "datetime",
        "timestamp",
        "time",
        "year",
    }
)
_INTEGER_TYPES = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint"})
_SNAPSHOT_ATTEMPTS = 3
_FLASHBACK_MARK = "tbs-flashback:"
MARIADB_BINLOG = "mariadb-binlog"
MARIADB_CLIENT = "mariadb"


@dataclass(frozen=True)
class MySQLColumn:
    name: str
    data_type: str
    column_type: str
    nullable: bool
    hex: bool
    generated: bool
    charset: str | None = None


@dataclass(frozen=True)
class MySQLTableLayout:
    database: str
    name: str
    engine: str
    create_sql: str
    columns: tuple[MySQLColumn, ...]
    primary_key: tuple[str, ...]
    rows_estimate: int
    avg_row_bytes: float

    @property
    def dumped_columns(self) -> list[MySQLColumn]:
        return [c for c in self.columns if not c.generated]

    @property
    def integer_key(self) -> bool:
        if len(self.primary_key) != 1:
            return False
        col = next(c for c in self.columns if c.name == self.primary_key[0])
        return col.data_type in _INTEGER_TYPES

    @property
    def transactional(self) -> bool:
        return self.engine.lower() in ("innodb", "xtradb", "rocksdb")


@dataclass(frozen=True)
class ChunkDump:
    rows: int
    checksum: int  # BIT_XOR(CRC32(line)) over the chunk's rows (as table_checksum computes it)
    data: bytes  # the chunk's lines, LOAD DATA format, newline-terminated
    streamed: bool  # True when the rows had to be streamed one by one (chunk too big)


def lines_checksum(data: bytes) -> int:
    """BIT_XOR of CRC32 over newline-terminated lines: what `table_checksum` computes in SQL.

    Computed here rather than by the server while dumping: the server would have to evaluate
    every row's line a second time, which costs far more than this loop."""
    import zlib

    x = 0
    for line in data.split(b"\n")[:-1]:
        x ^= zlib.crc32(line)
    return x


def line_expression(columns: Sequence[MySQLColumn]) -> str:
    """SQL for one row as one LOAD DATA line (fields tab-separated, backslash-escaped, NULL as
    \\N, binary as hex, FLOAT as the DOUBLE it holds so no precision is lost).

    The same expression computes the row checksums (CRC32 of the line) on the backup's source
    and on a restore's target, so the two compare exactly. Needs the session's sql_mode without
    NO_BACKSLASH_ESCAPES (the sessions here set it).
    """
    parts = []
    for c in columns:
        ref = quote_ident(c.name)
        if c.hex:
            expr = f"HEX({ref})"
        elif c.data_type in ("float",):
            expr = f"CAST({ref} AS DOUBLE)"
        elif c.data_type in _PLAIN_TYPES:
            expr = ref
        else:
            expr = (
                f"REPLACE(REPLACE(REPLACE(REPLACE({ref},'\\\\','\\\\\\\\'),"
                f"'\\t','\\\\t'),'\\n','\\\\n'),'\\0','\\\\0')"
            )
        parts.append(f"IFNULL({expr},'\\\\N')")
    return "CONCAT_WS('\\t'," + ",".join(parts) + ")"


def _range_condition(
    key: Sequence[str], lower: Sequence[Any] | None, upper: Sequence[Any] | None
) -> tuple[str, list[Any]]:
    """`lower <= key < upper` over a (possibly composite) key, written so ranges use the index."""
    conds: list[str] = []
    params: list[Any] = []

    def compare(bound: Sequence[Any], last_op: str) -> None:
        # (a, b) >= (x, y)  ==  a > x OR (a = x AND b >= y), expanded for the optimizer
        ors = []
        for i in range(len(key)):
            ands = [f"{quote_ident(key[j])} = %s" for j in range(i)]
            params.extend(bound[:i])
            op = last_op if i == len(key) - 1 else last_op[0]
            ands.append(f"{quote_ident(key[i])} {op} %s")
            params.append(bound[i])
            ors.append("(" + " AND ".join(ands) + ")")
        conds.append("(" + " OR ".join(ors) + ")")

    if lower is not None:
        compare(lower, ">=")
    if upper is not None:
        compare(upper, "<")
    return (" AND ".join(conds) if conds else "1=1"), params


class MySQLSnapshot:
    """N connections reading one consistent snapshot, and the binlog position it corresponds to.

    How (as mydumper does, without its lock where possible): each connection starts
    `START TRANSACTION WITH CONSISTENT SNAPSHOT`; MariaDB reports each snapshot's binlog position
    (`binlog_snapshot_file/position`). Equal positions mean no transaction committed between the
    snapshots, so they see the same data: consistent without any lock. If writes keep landing
    between them, or binary logging is off, `FLUSH TABLES WITH READ LOCK` is held just while the
    snapshots start (bounded by `lock_wait_s`), as mydumper does. Non-transactional tables
    (MyISAM, Aria) are not covered by a snapshot: the backup reports them.
    """

    def __init__(self, recovery: MySQLRecovery, connections: int, lock_wait_s: float) -> None:
        self._rec = recovery
        self.name = recovery.db.name
        self.connections: list[Any] = []
        self.consistency = "binlog-snapshot"
        self.binlog: tuple[str, int, str | None] | None = None
        self.taken_at: datetime | None = None
        self.max_allowed_packet = 16 * 1024 * 1024
        self._locks = [threading.Lock() for _ in range(max(1, connections))]
        try:
            self._open(max(1, connections), lock_wait_s)
        except BaseException:
            self.close()
            raise

    def _start(self, con: Any) -> tuple[str, int]:
        with con.cursor() as cur:
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
            status = {k.decode() if isinstance(k, bytes) else k: v for k, v in cur.fetchall()}
        f = status.get("Binlog_snapshot_file") or b""
        p = status.get("Binlog_snapshot_position") or b"0"
        f = f.decode() if isinstance(f, bytes) else str(f)
        return f, int(p)

    def _open(self, n: int, lock_wait_s: float) -> None:
        rec = self._rec
        for _ in range(n):
            con = rec.connect(unicode=False, timeout_s=max(rec.db.config.timeout_s, 600.0))
            with con.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("SET SESSION group_concat_max_len = @@global.max_allowed_packet")
                cur.execute("SELECT @@global.max_allowed_packet, @@global.log_bin")
                packet, log_bin = cur.fetchone()
            self.max_allowed_packet = int(packet)
            self.connections.append(con)
        positions: list[tuple[str, int]] = []
        if int(log_bin):
            for _ in range(_SNAPSHOT_ATTEMPTS):
                positions = [self._start(c) for c in self.connections]
                if len(set(positions)) == 1:
                    break
                for c in self.connections:
                    c.rollback()
            else:
                positions = []
        if not positions:
            self.consistency = "flush-tables-with-read-lock"
            positions = self._start_locked(lock_wait_s)
        file, pos = positions[0]
        with self.connections[0].cursor() as cur:
            if file:
                cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))
                gtid = cur.fetchone()[0]
                gtid = gtid.decode() if isinstance(gtid, bytes) else gtid
                self.binlog = (file, pos, str(gtid) if gtid else None)
            cur.execute("SELECT UTC_TIMESTAMP(6)")
            self.taken_at = _as_utc(cur.fetchone()[0])

    def _start_locked(self, lock_wait_s: float) -> list[tuple[str, int]]:
        control = self._rec.connect(timeout_s=max(lock_wait_s + 5, self._rec.db.config.timeout_s))
        try:
            with control.cursor() as cur:
                cur.execute(f"SET SESSION lock_wait_timeout = {max(1, int(lock_wait_s))}")
                try:
                    cur.execute("FLUSH TABLES WITH READ LOCK")
                except Exception as exc:
                    raise self._rec.db._error("take FLUSH TABLES WITH READ LOCK", exc) from None
                try:
                    for c in self.connections:
                        c.rollback()
                    positions = [self._start(c) for c in self.connections]
                finally:
                    cur.execute("UNLOCK TABLES")
        finally:
            with contextlib.suppress(Exception):
                control.close()
        return positions

    # -- reading --------------------------------------------------------------------------

    def _run(self, worker: int, operation: str, sql: str, params: Any = None) -> list[Any]:
        i = worker % len(self.connections)
        with self._locks[i]:
            try:
                with self.connections[i].cursor() as cur:
                    cur.execute(sql, params)
                    return list(cur.fetchall())
            except Exception as exc:
                raise self._rec.db._error(operation, exc) from None

    def tables(self, database: str) -> list[str]:
        rows = self._run(
            0,
            "list tables",
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s"
            " AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
            (database,),
        )
        return [_str(r[0]) for r in rows]

    def layout(self, database: str, table: str) -> MySQLTableLayout:
        return self._rec._layout(lambda op, sql, p=None: self._run(0, op, sql, p), database, table)

    def key_bounds(self, layout: MySQLTableLayout) -> tuple[Any, Any]:
        k = quote_ident(layout.primary_key[0])
        t = f"{quote_ident(layout.database)}.{quote_ident(layout.name)}"
        lo, hi = self._run(
            0, f"read key range of {layout.name}", f"SELECT MIN({k}), MAX({k}) FROM {t}"
        )[0]
        return lo, hi

    def line_bytes(self, layout: MySQLTableLayout, sample: int = 200) -> float | None:
        """Average length of a row's dump line over the first `sample` rows (None: empty).
        InnoDB's AVG_ROW_LENGTH can be far off right after a bulk load; this is measured."""
        t = f"{quote_ident(layout.database)}.{quote_ident(layout.name)}"
        line = line_expression(layout.dumped_columns)
        rows = self._run(
            0,
            f"sample rows of {layout.name}",
            f"SELECT CAST(CEILING(AVG(LENGTH(l))) AS UNSIGNED)"
            f" FROM (SELECT {line} AS l FROM {t} LIMIT {int(sample)}) s",
        )
        value = rows[0][0] if rows else None
        return float(value) + 1.0 if value is not None else None

    def boundaries(self, layout: MySQLTableLayout, every: int) -> list[tuple[Any, ...]]:
        """Every `every`-th key in key order (server-side skipping; one pass over the index)."""
        cols = ", ".join(quote_ident(k) for k in layout.primary_key)
        t = f"{quote_ident(layout.database)}.{quote_ident(layout.name)}"
        out: list[tuple[Any, ...]] = []
        last: tuple[Any, ...] | None = None
        while True:
            where, params = _range_condition(layout.primary_key, None, None)
            if last is not None:
                # strictly after the last boundary
                where, params = _range_condition(layout.primary_key, last, None)
                where += (
                    " AND NOT ("
                    + " AND ".join(f"{quote_ident(k)} = %s" for k in layout.primary_key)
                    + ")"
                )
                params += list(last)
            rows = self._run(
                0,
                f"read chunk boundaries of {layout.name}",
                f"SELECT {cols} FROM {t} WHERE {where} ORDER BY {cols} LIMIT 1 OFFSET %s",
                (*params, every - 1),
            )
            if not rows:
                return out
            last = tuple(_plain(v) for v in rows[0])
            out.append(last)

    def dump_chunk(
        self,
        worker: int,
        layout: MySQLTableLayout,
        lower: Sequence[Any] | None,
        upper: Sequence[Any] | None,
    ) -> ChunkDump:
        """One key range as LOAD DATA lines, with its row count and checksum."""
        line = line_expression(layout.dumped_columns)
        t = f"{quote_ident(layout.database)}.{quote_ident(layout.name)}"
        where, params = (
            _range_condition(layout.primary_key, lower, upper)
            if layout.primary_key
            else ("1=1", [])
        )
        operation = f"dump {layout.name}"
        try:
            rows = self._run(
                worker,
                operation,
                f"SELECT COUNT(*), GROUP_CONCAT({line} SEPARATOR '\\n') FROM {t} WHERE {where}",
                params,
            )
            count, data = int(rows[0][0]), rows[0][1]
        except (Unreachable, TimedOut):
            raise
        except ConnectorError:
            # GROUP_CONCAT needs an internal temporary table, which a server short of tmpdir
            # space can fail to create: a statement error leaves the snapshot usable, so count
            # and stream the rows instead.
            counted = self._run(
                worker, operation, f"SELECT COUNT(*) FROM {t} WHERE {where}", params
            )
            count, data = int(counted[0][0]), None
        if count == 0:
            return ChunkDump(0, 0, b"", False)
        streamed = False
        if data is None or data.count(b"\n") + 1 != count:
            # Longer than group_concat_max_len (= max_allowed_packet): stream the rows instead.
            lines = self._run(worker, operation, f"SELECT {line} FROM {t} WHERE {where}", params)
            if len(lines) != count:
                raise IntegrityError(
                    self.name, operation, f"read {len(lines)} rows of a range that holds {count}"
                )
            data, streamed = b"\n".join(r[0] for r in lines), True
        data = bytes(data) + b"\n"
        return ChunkDump(count, lines_checksum(data), data, streamed)

    def close(self) -> None:
        for c in self.connections:
            with contextlib.suppress(Exception):
                c.rollback()
            with contextlib.suppress(Exception):
                c.close()
        self.connections = []

    def __enter__(self) -> MySQLSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MySQLRecovery:
    """The data-protection steps on one MySQL/MariaDB server, with a connector's account."""

    def __init__(self, db: MySQLDatabase) -> None:
        self.db = db

    # -- connections ----------------------------------------------------------------------

    def connect(
        self,
        *,
        database: str | None = None,
        unicode: bool = True,
        local_infile: bool = False,
        autocommit: bool = True,
        timeout_s: float | None = None,
    ) -> Any:
        """A new pymysql connection of the connector's account (UTC, known sql_mode)."""
        import pymysql

        c = self.db.config
        password = self.db._password()
        timeout = timeout_s or c.timeout_s
        kwargs: dict[str, Any] = {
            "user": self.db._user,
            "password": password,
            "database": database,
            "connect_timeout": c.timeout_s,
            "read_timeout": timeout,
            "write_timeout": timeout,
            "autocommit": autocommit,
            "charset": "utf8mb4",
            "use_unicode": unicode,
            "local_infile": local_infile,
            "init_command": "SET time_zone='+00:00', sql_mode='NO_ENGINE_SUBSTITUTION'",
        }
        if c.unix_socket:
            kwargs["unix_socket"] = c.unix_socket
        else:
            kwargs["host"] = c.host
            kwargs["port"] = c.port
        try:
            return pymysql.connect(**kwargs)
        except Exception as exc:
            raise self.db._error("connect", exc, password) from None

    def _query(self, operation: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        con = self.connect()
        try:
            with con.cursor() as cur:
                cur.execute(sql, params)
                return [tuple(r) for r in cur.fetchall()] if cur.description else []
        except Exception as exc:
            raise self.db._error(operation, exc) from None
        finally:
            with contextlib.suppress(Exception):
                con.close()

    def _script(
        self, operation: str, statements: Sequence[str], database: str | None = None
    ) -> None:
        con = self.connect(database=database)
        try:
            with con.cursor() as cur:
                for sql in statements:
                    cur.execute(sql)
        except Exception as exc:
            raise self.db._error(operation, exc) from None
        finally:
            with contextlib.suppress(Exception):
                con.close()

    # -- the server ---------------------------------------------------------------------------

    def server_info(self) -> dict[str, Any]:
        rows = self._query(
            "read server settings",
            "SELECT VERSION(), @@global.server_id, @@global.log_bin, @@global.binlog_format,"
            " @@global.binlog_row_image, @@global.max_allowed_packet, @@global.local_infile,"
            " UTC_TIMESTAMP(6)",
        )
        v, sid, log_bin, fmt, image, packet, infile, now = rows[0]
        return {
            "version": str(v),
            "server_id": int(sid),
            "log_bin": bool(int(log_bin)),
            "binlog_format": str(fmt),
            "binlog_row_image": str(image),
            "max_allowed_packet": int(packet),
            "local_infile": bool(int(infile)),
            "now": _as_utc(now),
        }

    def server_clock(self) -> datetime:
        return _as_utc(self._query("read the server clock", "SELECT UTC_TIMESTAMP(6)")[0][0])

    def snapshot(self, connections: int = 2, lock_wait_s: float = 10.0) -> MySQLSnapshot:
        return MySQLSnapshot(self, connections, lock_wait_s)

    # -- schema -------------------------------------------------------------------------------

    def database_exists(self, database: str) -> bool:
        rows = self._query(
            "look up database",
            "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
            (database,),
        )
        return bool(rows)

    def table_engines(self, database: str, tables: Sequence[str]) -> dict[str, str]:
        """Each named table's storage engine (information_schema.TABLES.ENGINE); tables that do
        not exist are left out."""
        if not tables:
            return {}
        marks = ", ".join(["%s"] * len(tables))
        rows = self._query(
            "read table engines",
            "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s"
            f" AND TABLE_NAME IN ({marks})",
            (database, *tables),
        )
        return {_str(name): _str(engine or "") for name, engine in rows}

    def table_names(self, database: str) -> list[str]:
        rows = self._query(
            "list tables",
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s"
            " AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
            (database,),
        )
        return [_str(r[0]) for r in rows]

    def layout(self, database: str, table: str) -> MySQLTableLayout:
        return self._layout(self._query, database, table)

    def _layout(self, run: Any, database: str, table: str) -> MySQLTableLayout:
        rows = run(
            f"describe {database}.{table}",
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, EXTRA, CHARACTER_SET_NAME"
            " FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
            " ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        if not rows:
            raise NotFound(self.db.name, f"describe {database}.{table}", "no such table")
        columns = tuple(
            MySQLColumn(
                name=_str(name),
                data_type=_str(dtype).lower(),
                column_type=_str(ctype),
                nullable=_str(nullable) == "YES",
                hex=_str(dtype).lower() in _HEX_TYPES,
                generated="GENERATED" in _str(extra).upper()
                or _str(extra).upper() in ("VIRTUAL", "PERSISTENT", "STORED"),
                charset=_str(cs) if cs is not None else None,
            )
            for name, dtype, ctype, nullable, extra, cs in rows
        )
        key = run(
            f"describe {database}.{table}",
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s"
            " AND TABLE_NAME = %s AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
            (database, table),
        )
        info = run(
            f"describe {database}.{table}",
            "SELECT ENGINE, TABLE_ROWS, AVG_ROW_LENGTH FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (database, table),
        )
        engine, rows_estimate, avg = info[0]
        create = run(
            f"describe {database}.{table}",
            f"SHOW CREATE TABLE {quote_ident(database)}.{quote_ident(table)}",
        )
        return MySQLTableLayout(
            database=database,
            name=table,
            engine=_str(engine or ""),
            create_sql=_str(create[0][1]),
            columns=columns,
            primary_key=tuple(_str(r[0]) for r in key),
            rows_estimate=int(rows_estimate or 0),
            avg_row_bytes=float(avg or 0) or 100.0,
        )

    def create_database(self, database: str) -> None:
        self._script(
            f"create database {database}",
            [f"CREATE DATABASE IF NOT EXISTS {quote_ident(database)} CHARACTER SET utf8mb4"],
        )

    def drop_database(self, database: str) -> None:
        self._script(
            f"drop database {database}", [f"DROP DATABASE IF EXISTS {quote_ident(database)}"]
        )

    def create_table(
        self, database: str, table: str, create_sql: str, replace: bool = False
    ) -> None:
        """Create a table from its SHOW CREATE TABLE text in `database` (dropping it first if
        `replace`)."""
        statements = ["SET SESSION foreign_key_checks = 0"]
        if replace:
            statements.append(f"DROP TABLE IF EXISTS {quote_ident(database)}.{quote_ident(table)}")
        statements.append(create_sql)
        self._script(f"create table {database}.{table}", statements, database=database)

    def truncate_table(self, database: str, table: str) -> None:
        self._script(
            f"empty table {database}.{table}",
            [
                "SET SESSION foreign_key_checks = 0",
                f"TRUNCATE TABLE {quote_ident(database)}.{quote_ident(table)}",
            ],
        )

    def rename_tables(self, pairs: Sequence[tuple[str, str]]) -> None:
        """One atomic RENAME TABLE a TO b, c TO d (qualified names)."""
        body = ", ".join(f"{quote_ident(a)} TO {quote_ident(b)}" for a, b in pairs)
        self._script("rename tables", [f"RENAME TABLE {body}"])

    # -- loading and checking -----------------------------------------------------------------

    def loader(self, database: str) -> Any:
        """A connection for load_chunk (LOCAL INFILE, no FK/unique checks); close it after."""
        con = self.connect(
            database=database, local_infile=True, timeout_s=max(self.db.config.timeout_s, 600.0)
        )
        with con.cursor() as cur:
            cur.execute("SET SESSION foreign_key_checks = 0, unique_checks = 0")
        return con

    def load_chunk(
        self, con: Any, database: str, table: str, columns: Sequence[MySQLColumn], path: str
    ) -> int:
        """LOAD DATA LOCAL INFILE of one chunk file (LOAD DATA's default format); rows loaded."""
        targets = []
        sets = []
        for i, c in enumerate(columns):
            if c.hex:
                targets.append(f"@h{i}")
                sets.append(f"{quote_ident(c.name)} = UNHEX(@h{i})")
            else:
                targets.append(quote_ident(c.name))
        sql = (
            f"LOAD DATA LOCAL INFILE %s INTO TABLE {quote_ident(database)}.{quote_ident(table)}"
            " CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\'"
            " LINES TERMINATED BY '\\n' ("
            + ", ".join(targets)
            + ")"
            + (" SET " + ", ".join(sets) if sets else "")
        )
        try:
            with con.cursor() as cur:
                loaded = cur.execute(sql, (path,))
                cur.execute("SHOW WARNINGS LIMIT 3")
                warnings = cur.fetchall()
        except Exception as exc:
            raise self.db._error(f"load {database}.{table}", exc) from None
        if warnings:
            detail = "; ".join(f"{w[0]} {w[1]}: {w[2]}" for w in warnings)
            raise IntegrityError(self.db.name, f"load {database}.{table}", detail)
        return int(loaded)

    def table_checksum(
        self, database: str, table: str, columns: Sequence[MySQLColumn]
    ) -> tuple[int, int]:
        """(rows, BIT_XOR of CRC32 of each row's line): what a backup records per table."""
        line = line_expression([c for c in columns if not c.generated])
        rows = self._query(
            f"checksum {database}.{table}",
            f"SELECT COUNT(*), BIT_XOR(CRC32({line}))"
            f" FROM {quote_ident(database)}.{quote_ident(table)}",
        )
        return int(rows[0][0]), int(rows[0][1] or 0)

    def row_digests(
        self, database: str, table: str, columns: Sequence[MySQLColumn], key: Sequence[str]
    ) -> Iterator[tuple[tuple[Any, ...], int]]:
        """(key, CRC32 of the row's line) for every row in key order, streamed."""
        import pymysql

        line = line_expression([c for c in columns if not c.generated])
        cols = ", ".join(quote_ident(k) for k in key)
        con = self.connect(timeout_s=max(self.db.config.timeout_s, 600.0))
        try:
            with con.cursor(pymysql.cursors.SSCursor) as cur:
                cur.execute(
                    f"SELECT {cols}, CRC32({line})"
                    f" FROM {quote_ident(database)}.{quote_ident(table)} ORDER BY {cols}"
                )
                for row in cur:
                    yield tuple(row[:-1]), int(row[-1])
        except Exception as exc:
            raise self.db._error(f"read rows of {database}.{table}", exc) from None
        finally:
            with contextlib.suppress(Exception):
                con.close()

    # -- binary logs --------------------------------------------------------------------------

    def binary_logs(self) -> list[tuple[str, int]]:
        """SHOW BINARY LOGS: (file, size) oldest first (BINLOG MONITOR or SUPER)."""
        rows = self._query("list binary logs", "SHOW BINARY LOGS")
        return [(_str(r[0]), int(r[1])) for r in rows]

    def master_status(self) -> tuple[str, int, str | None]:
        rows = self._query("read binlog position", "SHOW MASTER STATUS")
        if not rows:
            raise ConnectorError(self.db.name, "read binlog position", "binary logging is off")
        file, pos = _str(rows[0][0]), int(rows[0][1])
        return file, pos, self.gtid_at(file, pos)

    def gtid_at(self, file: str, position: int) -> str | None:
        """The GTID state at a binlog position, as the server sees it now (BINLOG_GTID_POS)."""
        rows = self._query("read GTID position", "SELECT BINLOG_GTID_POS(%s, %s)", (file, position))
        value = rows[0][0] if rows else None
        return _str(value) if value else None

    @contextlib.contextmanager
    def _option_file(self, database: str | None = None) -> Iterator[str]:
        """A private option file with the account, so no password is on a command line."""
        import tempfile

        c = self.db.config

        def quoted(v: str) -> str:
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

        lines = [
            "[client]",
            f"user={quoted(self.db._user)}",
            f"password={quoted(self.db._password())}",
        ]
        if c.unix_socket:
            lines.append(f"socket={quoted(c.unix_socket)}")
        else:
            lines += [f"host={c.host}", f"port={c.port}", "protocol=tcp"]
        # only the client knows connect-timeout; mariadb-binlog refuses unknown [client] options
        lines += ["[mysql]", f"connect-timeout={max(1, int(c.timeout_s))}"]
        with tempfile.TemporaryDirectory(prefix="tbs-mysql-") as d:
            path = os.path.join(d, "client.cnf")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("\n".join(lines) + "\n")
            yield path

    def _binlog_argv(
        self,
        option_file: str,
        files: Sequence[str],
        *,
        start_position: int | None = None,
        start_datetime: datetime | None = None,
        stop_position: int | None = None,
        stop_datetime: datetime | None = None,
        database: str | None = None,
        table: str | None = None,
        rewrite_db: tuple[str, str] | None = None,
        flashback: bool = False,
        verbose: bool = False,
    ) -> list[str]:
        argv = [MARIADB_BINLOG, f"--defaults-file={option_file}", "--read-from-remote-server"]
        if start_position is not None:
            argv.append(f"--start-position={start_position}")
        if start_datetime is not None:
            argv.append(f"--start-datetime={_binlog_time(start_datetime)}")
        if stop_position is not None:
            argv.append(f"--stop-position={stop_position}")
        if stop_datetime is not None:
            argv.append(f"--stop-datetime={_binlog_time(stop_datetime)}")
        if database is not None:
            argv.append(f"--database={database}")
        if table is not None:
            argv.append(f"--table={table}")
        if rewrite_db is not None:
            argv.append(f"--rewrite-db={rewrite_db[0]}->{rewrite_db[1]}")
        if flashback:
            argv.append("--flashback")
        if verbose:
            argv += ["--base64-output=decode-rows", "-vv"]
        return [*argv, *files]

    def _run_tool(self, operation: str, argv: list[str], timeout_s: float) -> bytes:
        env = {**os.environ, "TZ": "UTC"}
        try:
            done = subprocess.run(
                argv, capture_output=True, timeout=timeout_s, env=env, stdin=subprocess.DEVNULL
            )
        except FileNotFoundError:
            raise ConnectorError(self.db.name, operation, f"{argv[0]} is not installed") from None
        except subprocess.TimeoutExpired:
            raise TimedOut(
                self.db.name, operation, f"{argv[0]} ran longer than {timeout_s:g}s"
            ) from None
        if done.returncode != 0:
            raise self._tool_error(operation, argv[0], done.stderr)
        return done.stdout

    def _tool_error(self, operation: str, tool: str, stderr: bytes) -> ConnectorError:
        text = redact_text(stderr.decode("utf-8", "replace").strip(), [self.db._safe_password()])
        text = text[-600:] or "no message"
        lowered = text.lower()
        if "access denied" in lowered or "privilege" in lowered:
            return Refused(self.db.name, operation, f"{tool}: {text}")
        if "could not find" in lowered or "not found" in lowered or "unknown database" in lowered:
            return NotFound(self.db.name, operation, f"{tool}: {text}")
        if "can't connect" in lowered or "lost connection" in lowered:
            return Unreachable(self.db.name, operation, f"{tool}: {text}")
        return ConnectorError(self.db.name, operation, f"{tool}: {text}")

    def binlog_file_start(self, file: str, timeout_s: float = 60.0) -> datetime | None:
        """The timestamp of a binary log's first event (when the file was started)."""
        with self._option_file() as opt:
            out = self._run_tool(
                f"read the start of {file}",
                self._binlog_argv(opt, [file], stop_position=5, verbose=True),
                timeout_s,
            )
        for line in out.decode("latin-1").splitlines():
            m = re.match(r"^#(\d{2})(\d{2})(\d{2})\s+(\d{1,2}):(\d{2}):(\d{2})\s+server id", line)
            if m:
                y, mo, d, h, mi, s = (int(x) for x in m.groups())
                return datetime(2000 + y, mo, d, h, mi, s, tzinfo=UTC)
        return None

    def binlog_text(
        self, files: Sequence[str], timeout_s: float = 600.0, **options: Any
    ) -> list[str]:
        """Decoded binary log (`-vv`, times in UTC) as latin-1 text lines."""
        with self._option_file() as opt:
            out = self._run_tool(
                "read the binary log",
                self._binlog_argv(opt, files, verbose=True, **options),
                timeout_s,
            )
        return out.decode("latin-1").splitlines()

    def privilege_changes(self, since: datetime, timeout_s: float = 120.0) -> list[dict[str, Any]]:
        """Account and privilege statements (GRANT, REVOKE, CREATE/ALTER/DROP/RENAME USER, SET
        PASSWORD, roles) in the binary log since a time: `{"at", "statement", "account"}`.

        Only the statement's verb and the first account it names are kept: the text itself
        may hold a password and never leaves this method. Needs BINLOG MONITOR (REPLICATION
        CLIENT) and REPLICATION SLAVE (reading the log from the server).
        """
        files = [f for f, _ in self.binary_logs()]
        if not files:
            return []
        with self._option_file() as opt:
            argv = self._binlog_argv(opt, files, start_datetime=since)
            argv.insert(3, "--base64-output=decode-rows")
            out = self._run_tool("read account changes from the binary log", argv, timeout_s)
        return parse_privilege_changes(out.decode("latin-1").splitlines())

    def flashback_statements(
        self,
        files: Sequence[str],
        database: str,
        table: str,
        timeout_s: float = 600.0,
        **options: Any,
    ) -> list[str]:
        """`mariadb-binlog --flashback` for one table: BINLOG statements, newest change first.

        The first statement is the format description the others need."""
        with self._option_file() as opt:
            out = self._run_tool(
                f"read the binary log of {database}.{table} for flashback",
                self._binlog_argv(
                    opt, files, database=database, table=table, flashback=True, **options
                ),
                timeout_s,
            )
        text = out.decode("latin-1")
        return re.findall(r"(BINLOG '.*?')/\*!\*/;", text, re.S)

    def replay_binlog(
        self,
        files: Sequence[str],
        start_position: int,
        stop_datetime: datetime,
        source_database: str,
        target_database: str,
        timeout_s: float = 3600.0,
    ) -> dict[str, Any]:
        """`mariadb-binlog ... | mariadb`: apply the changes of `source_database` from the start
        position up to (not including) the first event at or after `stop_datetime`, renamed to
        `target_database`. The replay is not written to the binary log (sql_log_bin=0: it
        recreates old transactions under their old GTIDs, which must not reach replicas).
        Needs REPLICATION SLAVE (to read the binlog), BINLOG REPLAY and SUPER (to apply it)."""
        import time

        operation = f"replay the binary log into {target_database}"
        env = {**os.environ, "TZ": "UTC"}
        started = time.monotonic()
        with self._option_file() as opt:
            reader_argv = self._binlog_argv(
                opt,
                files,
                start_position=start_position,
                stop_datetime=stop_datetime,
                database=source_database,
                rewrite_db=(source_database, target_database),
            )
            client_argv = [
                MARIADB_CLIENT,
                f"--defaults-file={opt}",
                "--binary-mode",
                "--init-command=SET SESSION sql_log_bin=0",
                "--batch",
                "--silent",
            ]
            try:
                reader = subprocess.Popen(
                    reader_argv,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    stdin=subprocess.DEVNULL,
                    env=env,
                )
            except FileNotFoundError:
                raise ConnectorError(
                    self.db.name, operation, f"{MARIADB_BINLOG} is not installed"
                ) from None
            try:
                client = subprocess.Popen(
                    client_argv,
                    stdin=reader.stdout,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                )
            except FileNotFoundError:
                reader.kill()
                reader.wait()
                raise ConnectorError(
                    self.db.name, operation, f"{MARIADB_CLIENT} is not installed"
                ) from None
            assert reader.stdout is not None
            reader.stdout.close()  # the client holds the pipe now; a dead client stops the reader
            try:
                _, client_err = client.communicate(timeout=timeout_s)
                reader_err = reader.stderr.read() if reader.stderr else b""
                reader.wait(timeout=30)
            except subprocess.TimeoutExpired:
                client.kill()
                reader.kill()
                client.wait()
                reader.wait()
                raise TimedOut(
                    self.db.name, operation, f"the replay ran longer than {timeout_s:g}s"
                ) from None
            finally:
                if reader.stderr:
                    reader.stderr.close()
        if client.returncode != 0:
            raise self._tool_error(operation, MARIADB_CLIENT, client_err)
        if reader.returncode != 0:
            raise self._tool_error(operation, MARIADB_BINLOG, reader_err)
        return {"seconds": round(time.monotonic() - started, 3), "files": list(files)}

    # -- flashback ------------------------------------------------------------------------------

    def apply_flashback(
        self,
        flashback_id: str,
        database: str,
        statements: Sequence[str],
        keys: dict[str, tuple[Sequence[str], Sequence[Sequence[Any]]]],
        expected_delta: dict[str, int],
        check: Any,
        lock_wait_s: float = 10.0,
    ) -> dict[str, Any]:
        """Apply flashback BINLOG statements in one transaction, or nothing.

        In the transaction: lock the rows the flashback rewrites (so nobody changes them
        meanwhile), read the binlog position, ask `check(position)` for conflicts (changes to
        those rows since the plan; a non-empty list aborts), apply the statements (tagged
        `/* tbs-flashback:<id> */`, which the binlog keeps: a rerun can tell it was applied),
        verify every table's row count moved by `expected_delta`, commit."""
        operation = f"apply flashback {flashback_id}"
        con = self.connect(
            database=database, autocommit=False, timeout_s=max(600.0, self.db.config.timeout_s)
        )
        result: dict[str, Any] = {"applied": False, "conflicts": [], "counts": {}}
        try:
            with con.cursor() as cur:
                cur.execute(f"SET SESSION innodb_lock_wait_timeout = {max(1, int(lock_wait_s))}")
                cur.execute("START TRANSACTION")
                for table, (key_cols, key_values) in keys.items():
                    t = f"{quote_ident(database)}.{quote_ident(table)}"
                    if not key_cols:
                        cur.execute(f"SELECT 1 FROM {t} FOR UPDATE")
                        continue
                    cols = "(" + ", ".join(quote_ident(k) for k in key_cols) + ")"
                    for i in range(0, len(key_values), 500):
                        batch = key_values[i : i + 500]
                        marks = ", ".join(
                            "(" + ", ".join(["%s"] * len(key_cols)) + ")" for _ in batch
                        )
                        cur.execute(
                            f"SELECT 1 FROM {t} WHERE {cols} IN ({marks}) FOR UPDATE",
                            [v for k in batch for v in k],
                        )
                before = {}
                for table in expected_delta:
                    cur.execute(
                        f"SELECT COUNT(*) FROM {quote_ident(database)}.{quote_ident(table)}"
                    )
                    before[table] = int(cur.fetchone()[0])
                cur.execute("SHOW MASTER STATUS")
                row = cur.fetchone()
                position = (_str(row[0]), int(row[1])) if row else None
                conflicts = list(check(position)) if position else []
                if conflicts:
                    con.rollback()
                    result["conflicts"] = conflicts
                    return result
                for sql in statements:
                    cur.execute(f"/* {_FLASHBACK_MARK}{flashback_id} */ {sql}")
                counts = {}
                for table, delta in expected_delta.items():
                    cur.execute(
                        f"SELECT COUNT(*) FROM {quote_ident(database)}.{quote_ident(table)}"
                    )
                    after = int(cur.fetchone()[0])
                    counts[table] = {
                        "before": before[table],
                        "after": after,
                        "expected_delta": delta,
                    }
                    if after - before[table] != delta:
                        con.rollback()
                        result["counts"] = counts
                        result["conflicts"] = [
                            f"{table}: the row count would change by {after - before[table]:+d},"
                            f" the plan says {delta:+d}: rolled back"
                        ]
                        return result
                con.commit()
                result["counts"] = counts
                result["applied"] = True
                cur.execute("SHOW MASTER STATUS")
                row = cur.fetchone()
                if row:
                    result["position_after"] = [_str(row[0]), int(row[1])]
                return result
        except Exception as exc:
            with contextlib.suppress(Exception):
                con.rollback()
            if isinstance(exc, ConnectorError):
                raise
            raise self.db._error(operation, exc) from None
        finally:
            with contextlib.suppress(Exception):
                con.close()

    def flashback_applied(
        self, flashback_id: str, files: Sequence[str], start_position: int
    ) -> tuple[str, int] | None:
        """Where the binlog records flashback `flashback_id` as applied, else None."""
        mark = f"{_FLASHBACK_MARK}{flashback_id} */"
        position = 0
        current_file = files[0] if files else ""
        for line in self.binlog_text(files, start_position=start_position):
            if line.startswith("# at "):
                with contextlib.suppress(ValueError):
                    position = int(line[5:].strip())
            elif line.startswith("#Q> ") and mark in line:
                return current_file, position
        return None

    # -- counts and archive reads for recoveries ------------------------------------------------

    def row_count(self, database: str, table: str) -> int:
        rows = self._query(
            f"count rows of {database}.{table}",
            f"SELECT COUNT(*) FROM {quote_ident(database)}.{quote_ident(table)}",
        )
        return int(rows[0][0])

    def binlog_row_deltas(
        self,
        files: Sequence[str],
        *,
        database: str,
        start_position: int,
        stop_datetime: datetime,
        timeout_s: float = 3600.0,
    ) -> dict[str, Any]:
        """Per table of `database`: rows inserted minus rows deleted by the binlog events a
        replay with the same window applies (from the binlog's own row counts), and the tables
        statements (DDL, TRUNCATE) in the window: tables they touch cannot be checked by counts."""
        deltas: dict[str, int] = {}
        statements: list[str] = []
        maps: dict[str, str] = {}
        table_map = re.compile(
            r"Table_map: `((?:[^`]|``)+)`\.`((?:[^`]|``)+)` mapped to number (\d+)"
        )
        rows_event = re.compile(r"\t(Write|Update|Delete)_rows(?:_v1)?: table id (\d+)")
        pending: tuple[str, str] | None = None
        in_query = False
        env = {**os.environ, "TZ": "UTC"}
        with self._option_file() as opt:
            argv = self._binlog_argv(
                opt,
                files,
                start_position=start_position,
                stop_datetime=stop_datetime,
                database=database,
            )
            argv.insert(3, "--base64-output=decode-rows")
            try:
                proc = subprocess.Popen(
                    argv,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                    stdin=subprocess.DEVNULL,
                )
            except FileNotFoundError:
                raise ConnectorError(
                    self.db.name, "count binlog rows", f"{MARIADB_BINLOG} is not installed"
                ) from None
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode("latin-1")
                if line.startswith("#") and "server id" in line and "end_log_pos" in line:
                    in_query = "\tQuery\t" in line
                    m = table_map.search(line)
                    if m:
                        maps[m.group(3)] = m.group(2).replace("``", "`")
                        continue
                    m = rows_event.search(line)
                    pending = (m.group(1), maps.get(m.group(2), "?")) if m else None
                    continue
                if line.startswith("# Number of rows: ") and pending is not None:
                    n = int(line.split(":", 1)[1])
                    kind, table = pending
                    sign = {"Write": 1, "Delete": -1}.get(kind, 0)
                    deltas[table] = deltas.get(table, 0) + sign * n
                    pending = None
                    continue
                if in_query and not line.startswith(("#", "/*", "SET ", "use ")):
                    text = line.strip().upper()
                    if text and not text.startswith(
                        ("START TRANSACTION", "COMMIT", "BEGIN", "ROLLBACK")
                    ):
                        statements.append(line.strip()[:300])
            err = proc.stderr.read() if proc.stderr else b""
            proc.wait(timeout=timeout_s)
        if proc.returncode != 0:
            raise self._tool_error("count binlog rows", MARIADB_BINLOG, err)
        return {"deltas": deltas, "statements": statements}

    def rows_changed_between(
        self,
        table: str,
        columns: Sequence[str],
        updated_column: str,
        after: datetime,
        until: datetime,
    ) -> tuple[list[tuple[Any, ...]], int]:
        """Rows of the archive table with after < updated_column <= until, and how many rows
        changed after `until` (their state at `until` is not in the archive any more)."""
        t = f"{quote_ident(self.db.config.database)}.{quote_ident(table)}"
        u = quote_ident(updated_column)
        cols = ", ".join(quote_ident(c) for c in columns)
        a = after.astimezone(UTC).replace(tzinfo=None)
        b = until.astimezone(UTC).replace(tzinfo=None)
        rows = self._query(
            f"read changed rows of {table}",
            f"SELECT {cols} FROM {t} WHERE {u} > %s AND {u} <= %s",
            (a, b),
        )
        later = self._query(
            f"count later changes of {table}", f"SELECT COUNT(*) FROM {t} WHERE {u} > %s", (b,)
        )
        return rows, int(later[0][0])

    def keys_until(
        self, table: str, key: str, updated_column: str | None, until: datetime | None
    ) -> list[Any]:
        """The key of every archive row (updated at or before `until` when given)."""
        t = f"{quote_ident(self.db.config.database)}.{quote_ident(table)}"
        sql = f"SELECT {quote_ident(key)} FROM {t}"
        params: tuple[Any, ...] = ()
        if updated_column and until is not None:
            sql += f" WHERE {quote_ident(updated_column)} <= %s"
            params = (until.astimezone(UTC).replace(tzinfo=None),)
        return [r[0] for r in self._query(f"read keys of {table}", sql, params)]


_EVENT_TIME = re.compile(r"^#(\d{2})(\d{2})(\d{2})\s+(\d{1,2}):(\d{2}):(\d{2})\s")
_ACCOUNT_STATEMENT = re.compile(
    r"^\s*(GRANT|REVOKE|CREATE\s+USER|ALTER\s+USER|DROP\s+USER|RENAME\s+USER|SET\s+PASSWORD"
    r"|CREATE\s+ROLE|DROP\s+ROLE|SET\s+DEFAULT\s+ROLE)\b",
    re.I,
)
_ACCOUNT_NAME = re.compile(r"['`\"]((?:[^'`\"]|'')*)['`\"]\s*@\s*['`\"]((?:[^'`\"]|'')*)['`\"]")


def parse_privilege_changes(lines: Sequence[str]) -> list[dict[str, Any]]:
    """Account statements of `mariadb-binlog` text: time, verb, first account named."""
    out: list[dict[str, Any]] = []
    at: datetime | None = None
    for line in lines:
        m = _EVENT_TIME.match(line)
        if m:
            y, mo, d, h, mi, sec = (int(x) for x in m.groups())
            at = datetime(2000 + y, mo, d, h, mi, sec, tzinfo=UTC)
            continue
        m = _ACCOUNT_STATEMENT.match(line)
        if not m:
            continue
        verb = " ".join(m.group(1).upper().split())
        acct = _ACCOUNT_NAME.search(line)
        out.append(
            {
                "at": at.isoformat() if at else None,
                "statement": verb,
                "account": f"{acct.group(1)}@{acct.group(2)}" if acct else None,
            }
        )
    return out


def _binlog_time(t: datetime) -> str:
    """A UTC time as mariadb-binlog reads it (the tools run with TZ=UTC)."""
    if t.tzinfo is not None:
        t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S")


def _as_utc(value: Any) -> datetime:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _str(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)


def _plain(value: Any) -> Any:
    return (
        value.decode("utf-8", "surrogateescape") if isinstance(value, bytes | bytearray) else value
    )


# ============================================================================================
# Integrity checks (tbs_emergency.integrity): MySQL's SQL for normalised values and checksums
# ============================================================================================

# information_schema DATA_TYPE -> (kind, bits of the normalised value)
_INTEGRITY_INTS = {"tinyint": 8, "smallint": 16, "mediumint": 24, "int": 32, "integer": 32}
_INTEGRITY_TEXT = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"}


class MySQLIntegrityDialect:
    """MySQL pieces of the integrity checksum (see tbs_emergency.integrity.checksum)."""

    def quote(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    def table(self, name: str) -> str:
        return quote_ident(name)

    def value(self, expr: str, own: Any, spec: Any) -> str:
        from tbs_emergency.integrity.normalize import TEMPORAL, Kind, scale_of

        if spec.kind in TEMPORAL:
            if own.native == "timestamp":  # UTC seconds directly, whatever the session zone
                return f"FLOOR(UNIX_TIMESTAMP({expr}))" if own.scale else f"UNIX_TIMESTAMP({expr})"
            return f"TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', {expr})"
        scale = scale_of(spec)
        if own.kind == Kind.FLOAT:
            return f"CAST(FLOOR({expr} * 1e{scale} + 0.5) AS SIGNED)"
        if scale == 0:
            return expr if own.kind == Kind.INT else f"CAST({expr} AS SIGNED)"
        return f"CAST({expr} * {10**scale} AS SIGNED)"

    def text_bytes(self, expr: str) -> str:
        return f"LENGTH({expr})"

    def text_group(self, expr: str, group: int, groups: int) -> str:
        # The bytes themselves, zero-padded to 7 (BINARY(7) pads), as a big-endian integer.
        part = expr if groups == 1 else f"SUBSTRING(CAST({expr} AS BINARY), {7 * group + 1}, 7)"
        return f"CAST(CONV(HEX(CAST({part} AS BINARY(7))), 16, 10) AS SIGNED)"

    def sum_bigint(self, expr: str) -> str:
        return f"SUM({expr})"

    def idiv(self, a: str, b: str) -> str:
        return f"({a}) DIV ({b})"

    def literal(self, own: Any, value: Any) -> str:
        import datetime as dt
        from decimal import Decimal

        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, int | Decimal):
            return str(value)
        if isinstance(value, dt.datetime):
            return "'" + value.strftime("%Y-%m-%d %H:%M:%S") + "'"
        if isinstance(value, dt.date):
            return "'" + value.isoformat() + "'"
        return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


class MySQLIntegrity:
    """The archive as the integrity checks see it (connectors.base.IntegrityDatabase)."""

    def __init__(self, db: MySQLDatabase) -> None:
        self.db = db
        self.name = db.name

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.db.query(sql, params)

    def integrity_dialect(self) -> MySQLIntegrityDialect:
        return MySQLIntegrityDialect()

    def describe_columns(self, table: str) -> dict[str, Any]:
        from tbs_emergency.integrity.normalize import ColumnType, Kind

        parts = split_qualified(table)
        schema, name = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
        rows = self.db.query(
            "SELECT column_name, data_type, numeric_scale, datetime_precision, is_nullable"
            " FROM information_schema.columns"
            " WHERE table_schema = COALESCE(%s, DATABASE()) AND table_name = %s"
            " ORDER BY ordinal_position",
            (schema, name),
        )
        if not rows:
            raise NotFound(self.name, f"describe {table}", "no such table")
        out: dict[str, Any] = {}
        for col, dtype, nscale, dprec, nullable in rows:
            t = str(dtype).lower()
            null = str(nullable).upper() == "YES"
            if t in _INTEGRITY_INTS or t in ("bigint", "bit", "year"):
                ct = ColumnType(Kind.INT, nullable=null, native=t, bits=_INTEGRITY_INTS.get(t, 64))
            elif t in ("decimal", "numeric"):
                ct = ColumnType(Kind.DECIMAL, int(nscale or 0), null, t)
            elif t in ("float", "double", "real"):
                ct = ColumnType(Kind.FLOAT, nullable=null, native=t)
            elif t in ("timestamp", "datetime"):
                # A TIMESTAMP's seconds fit in 33 bits (MariaDB: 1970..2106).
                bits = 33 if t == "timestamp" else 64
                ct = ColumnType(Kind.TIMESTAMP, int(dprec or 0), null, t, bits)
            elif t == "date":
                ct = ColumnType(Kind.DATE, nullable=null, native=t)
            elif t in _INTEGRITY_TEXT:
                ct = ColumnType(Kind.TEXT, nullable=null, native=t)
            else:
                ct = ColumnType(Kind.OTHER, nullable=null, native=t)
            out[str(col)] = ct
        return out
