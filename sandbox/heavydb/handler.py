"""The ``Heavy`` Thrift service (``heavydb.thrift.Heavy.Iface``) over DuckDB.

Each public method here is one Thrift method; anything the sandbox does not implement
answers with a ``TDBException`` saying so (see :meth:`Handler.__getattr__`).  Error texts
are HeavyDB's wherever the sandbox knows them (DBHandler.cpp, Catalog, FileMgr,
TableArchiver …), so client code that matches on them behaves the same.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime as dt
import gzip
import io
import json
import logging
import os
import re
import secrets
import struct
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import duckdb
import lz4.frame
import pyarrow as pa
import pyarrow.compute as pc
from heavydb.common.ttypes import TDatumType, TDeviceType, TEncodingType, TTypeInfo
from heavydb.thrift import Heavy
from heavydb.thrift.ttypes import (
    TArrowTransport,
    TClusterHardwareInfo,
    TColumn,
    TColumnType,
    TCopyParams,
    TCreateParams,
    TDataFrame,
    TDBException,
    TDBInfo,
    TDBObject,
    TDBObjectPermissions,
    TDBObjectType,
    THardwareInfo,
    TQueryInfo,
    TQueryResult,
    TQueryType,
    TRole,
    TRow,
    TServerStatus,
    TSessionInfo,
    TStringRow,
    TTableDetails,
    TTableEpochInfo,
    TTableMeta,
    TTableRefreshInfo,
)
from sqlglot import exp
from sqlglot.errors import SqlglotError

from . import epochs, loaders, results
from . import sql as hsql
from . import types as ht
from .catalog import (
    DEFAULT_DB,
    ROOT_USER,
    TABLE_PRIVILEGES,
    CatalogError,
    CatalogState,
    Column,
    Database,
    SandboxDB,
    Session,
    SessionManager,
    Table,
    User,
    check_password,
    data_schema,
    db_key,
    hash_password,
    host_name,
    table_key,
    view_schema,
)
from .epochs import q
from .results import EncodedResult, ResultSet
from .sql import SqlError
from .types import HeavyType

log = logging.getLogger("sandbox.heavydb")

VERSION = "8.0.1-sandbox"
EDITION = "os"

IFACE_METHODS = frozenset(
    name
    for name in vars(Heavy.Iface)
    if not name.startswith("_") and callable(getattr(Heavy.Iface, name))
)

_RESERVED = {
    "ALL", "ALTER", "AND", "AS", "ASC", "BETWEEN", "BY", "CASE", "CAST", "CREATE", "CROSS",
    "DATABASE", "DEFAULT", "DELETE", "DESC", "DISTINCT", "DROP", "ELSE", "END", "EXISTS",
    "FALSE", "FROM", "FULL", "GRANT", "GROUP", "HAVING", "IN", "INNER", "INSERT", "INTO", "IS",
    "JOIN", "LEFT", "LIKE", "LIMIT", "NOT", "NULL", "OFFSET", "ON", "OR", "ORDER", "OUTER",
    "REVOKE", "RIGHT", "ROLE", "SELECT", "SET", "TABLE", "THEN", "TO", "TRUE", "TRUNCATE",
    "UNION", "UPDATE", "USER", "VALUES", "VIEW", "WHEN", "WHERE", "WITH",
}  # fmt: skip
_SANE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_TABLE_OPTIONS = {
    "fragment_size",
    "max_chunk_size",
    "page_size",
    "max_rows",
    "max_rollback_epochs",
    "partitions",
    "shard_count",
    "vacuum",
    "sort_column",
    "storage_type",
}


class DBError(Exception):
    """Internal carrier for an error that must reach the client verbatim."""


def fail(msg: str) -> NoReturn:
    """Abort the current call with HeavyDB's error text.

    Raised as :class:`DBError` and turned into ``TDBException`` at the method boundary
    (thrift's exceptions are immutable, which context managers cannot re-raise).
    """
    raise DBError(msg)


def unsupported(what: str) -> str:
    return f"{what} is not supported by the HeavyDB sandbox server"


def no_privileges(user: str, obj: str) -> str:
    return f"Violation of access privileges: user {user} has no proper privileges for object {obj}"


def no_insert_privileges(user: str, table: str) -> str:
    return (
        f"Violation of access privileges: user {user} has no insert privileges for table {table}."
    )


def no_db_access(user: str, db: str) -> str:
    return f"Unauthorized Access: user {user} is not allowed to access database {db}."


def internal_command_error(code: int | str, message: str) -> str:
    return (
        "An error occurred while executing an internal command. "
        f"Error code: {code}, message: {message}"
    )


def _duck_message(e: duckdb.Error) -> str:
    msg = str(e).strip().split("\n")[0].strip()
    if isinstance(e, duckdb.ParserException | duckdb.BinderException | duckdb.CatalogException):
        return "SQL Error: " + msg
    if isinstance(e, duckdb.InterruptException):
        return "Query execution has been interrupted"
    return msg


def _convert_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Every error leaves as a TDBException carrying HeavyDB's text."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TDBException:
            raise
        except (CatalogError, SqlError, DBError, results.ResultCapError) as e:
            raise TDBException(error_msg=str(e)) from e
        except duckdb.Error as e:
            raise TDBException(error_msg=_duck_message(e)) from e
        except ht.TypeError_ as e:
            raise TDBException(error_msg=str(e)) from e
        except SqlglotError as e:
            raise TDBException(error_msg=f"SQL Error: {str(e).strip().splitlines()[0]}") from e
        except (pa.ArrowException, ValueError, OverflowError, TypeError, KeyError) as e:
            log.exception("%s failed", fn.__name__)
            raise TDBException(error_msg=f"Exception: {e}") from e

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _bool_opt(opts: dict[str, str], key: str, default: bool) -> bool:
    if key not in opts:
        return default
    return hsql.is_true(opts[key])


# --- System V shared memory for sql_execute_df(SHARED_MEMORY) ---------------------------------
class _Shm:
    IPC_CREAT = 0o1000
    IPC_EXCL = 0o2000
    IPC_RMID = 0

    def __init__(self) -> None:
        lib = ctypes.util.find_library("c")
        self.libc = ctypes.CDLL(lib) if lib else None
        if self.libc is not None:
            self.libc.shmget.restype = ctypes.c_int
            self.libc.shmget.argtypes = (ctypes.c_int, ctypes.c_size_t, ctypes.c_int)
            self.libc.shmat.restype = ctypes.c_void_p
            self.libc.shmat.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
            self.libc.shmdt.argtypes = (ctypes.c_void_p,)
            self.libc.shmctl.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_void_p)

    def put(self, data: bytes) -> int:
        if self.libc is None:
            raise DBError("Shared memory IPC is not available on this host")
        size = max(len(data), 1)
        for _ in range(16):
            key = secrets.randbelow(2**31 - 2) + 1
            shmid = self.libc.shmget(key, size, self.IPC_CREAT | self.IPC_EXCL | 0o600)
            if shmid != -1:
                break
        else:
            raise DBError(
                f"Failed to create a shared memory segment of {size} bytes "
                f"(errno {ctypes.get_errno()})"
            )
        addr = self.libc.shmat(shmid, None, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            self.libc.shmctl(shmid, self.IPC_RMID, None)
            raise DBError("Failed to attach the shared memory segment")
        ctypes.memmove(addr, data, len(data))
        self.libc.shmdt(ctypes.c_void_p(addr))
        return key

    def free(self, key: int) -> None:
        if self.libc is None:
            return
        shmid = self.libc.shmget(key, 0, 0)
        if shmid != -1:
            self.libc.shmctl(shmid, self.IPC_RMID, None)


class Handler:
    """Implements ``Heavy.Iface``; one instance serves every connection."""

    def __init__(self, db: SandboxDB, *, read_only: bool = False) -> None:
        self.db = db
        self.read_only = read_only
        self.sessions = SessionManager()
        self.start_time = int(time.time())
        self._local = threading.local()
        self._shm = _Shm()
        self._shm_keys: set[int] = set()

    # ------------------------------------------------------------------------------------------
    # plumbing
    # ------------------------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name in IFACE_METHODS:

            def not_supported(*args: Any, **kwargs: Any) -> NoReturn:
                raise TDBException(error_msg=unsupported(name))

            return not_supported
        raise AttributeError(name)

    def set_client_address(self, address: str) -> None:
        self._local.client = address

    @property
    def client_address(self) -> str:
        return getattr(self._local, "client", "")

    @property
    def cat(self) -> CatalogState:
        return self.db.state

    def _session(self, session: str | None) -> Session:
        try:
            return self.sessions.get(session or "")
        except CatalogError as e:
            fail(str(e))

    def _check_read_only(self, what: str) -> None:
        if self.read_only:
            fail(f"{what} disabled: server running in read-only mode.")

    def _sql_read_only(self) -> None:
        if self.read_only:
            fail("This SQL command is not supported in read-only mode.")

    def _db_id(self, db: str) -> int:
        d = self.cat.database(db)
        return d.id if d else 0

    def _table(self, cat: CatalogState, db: str, name: str) -> Table:
        t = cat.table(db, name)
        if t is None:
            raise DBError(f"Table/View {name} for catalog {db} does not exist")
        return t

    def _table_by_id(self, cat: CatalogState, db_id: int, table_id: int) -> Table:
        d = next((d for d in cat.databases.values() if d.id == db_id), None)
        t = cat.tables.get(table_id)
        if d is None or t is None or t.db.lower() != d.name.lower():
            raise DBError(f"Table ({db_id},{table_id}) not found")
        return t

    def _resolver(self, sess: Session, cat: CatalogState) -> hsql.Resolver:
        def resolve(name: str) -> tuple[str, Table]:
            t = cat.table(sess.db, name)
            if t is None:
                raise SqlError(f"SQL Error: Object '{name}' not found")
            return view_schema(sess.db), t

        return resolve

    def _cursor(self, sess: Session) -> duckdb.DuckDBPyConnection:
        """This thread's DuckDB cursor, resolving names in the session's database."""
        cur = self.db.cursor()
        cur.execute(f"SET search_path = '{view_schema(sess.db)}'")
        return cur

    @contextlib.contextmanager
    def _running(self, sess: Session, query: str) -> Iterator[None]:
        """Register the statement (SHOW QUERIES, get_queries_info, KILL QUERY, interrupt)."""
        entry = (query, dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S"), self.db.cursor())
        sess.running.append(entry)
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):
                sess.running.remove(entry)

    # ------------------------------------------------------------------------------------------
    # connection and server information
    # ------------------------------------------------------------------------------------------
    @_convert_errors
    def connect(self, user: str | None, passwd: str | None, dbname: str | None) -> str:
        cat = self.cat
        u = cat.user(user or "")
        if u is None or not check_password(u, passwd or ""):
            fail("Authentication failure")
        if not u.can_login:
            fail(f"Unauthorized Access: User {u.name} is deactivated.")
        db = dbname or u.default_db or DEFAULT_DB
        d = cat.database(db)
        if d is None:
            fail(f"Database name {db} does not exist.")
        if not cat.has_db_priv(u.name, d.name, "ACCESS"):
            fail(no_db_access(u.name, d.name))
        return self.sessions.create(u.name, d.name, self.client_address).id

    def krb5_connect(self, inputToken: str, dbname: str) -> NoReturn:
        raise TDBException(error_msg="Unauthrorized Access. Kerberos login not supported")

    @_convert_errors
    def disconnect(self, session: str) -> None:
        try:
            self.sessions.drop(session or "")
        except CatalogError as e:
            fail(str(e))

    @_convert_errors
    def switch_database(self, session: str, dbname: str) -> None:
        sess = self._session(session)
        d = self.cat.database(dbname)
        if d is None:
            fail(f"Database name {dbname} does not exist.")
        if not self.cat.has_db_priv(sess.user, d.name, "ACCESS"):
            fail(no_db_access(sess.user, d.name))
        sess.db = d.name

    @_convert_errors
    def clone_session(self, session: str) -> str:
        sess = self._session(session)
        return self.sessions.create(sess.user, sess.db, self.client_address).id

    def _status(self) -> TServerStatus:
        return TServerStatus(
            read_only=self.read_only,
            version=VERSION,
            rendering_enabled=False,
            start_time=self.start_time,
            edition=EDITION,
            host_name=host_name(),
            poly_rendering_enabled=False,
            role=TRole.SERVER,
            renderer_status_json="",
            host_id="",
        )

    @_convert_errors
    def get_server_status(self, session: str) -> TServerStatus:
        self._session(session)
        return self._status()

    @_convert_errors
    def get_status(self, session: str) -> list[TServerStatus]:
        self._session(session)
        return [self._status()]

    @_convert_errors
    def get_hardware_info(self, session: str) -> TClusterHardwareInfo:
        self._session(session)
        return TClusterHardwareInfo(
            hardware_info=[
                THardwareInfo(
                    num_gpu_hw=0,
                    num_cpu_hw=os.cpu_count() or 1,
                    num_gpu_allocated=0,
                    start_gpu=0,
                    host_name="",
                    gpu_info=[],
                )
            ]
        )

    def get_version(self) -> str:
        return VERSION

    @_convert_errors
    def get_session_info(self, session: str) -> TSessionInfo:
        sess = self._session(session)
        return TSessionInfo(
            user=sess.user,
            database=sess.db,
            start_time=sess.start_time,
            is_super=self.cat.is_super(sess.user),
        )

    @_convert_errors
    def get_users(self, session: str) -> list[str]:
        sess = self._session(session)
        cat = self.cat
        users = sorted(cat.users.values(), key=lambda u: u.id)
        if not cat.is_super(sess.user):
            users = [u for u in users if cat.has_db_priv(u.name, sess.db, "ACCESS")]
        return [u.name for u in users]

    @_convert_errors
    def get_databases(self, session: str) -> list[TDBInfo]:
        sess = self._session(session)
        cat = self.cat
        out = []
        for d in sorted(cat.databases.values(), key=lambda d: d.id):
            if cat.has_db_priv(sess.user, d.name, "ACCESS"):
                out.append(TDBInfo(db_name=d.name, db_owner=d.owner))
        return out

    def _require_super(self, sess: Session, msg: str) -> None:
        if not self.cat.is_super(sess.user):
            fail(msg)

    @_convert_errors
    def clear_cpu_memory(self, session: str) -> None:
        sess = self._session(session)
        self._require_super(sess, "Superuser privilege is required to run clear_cpu_memory")

    @_convert_errors
    def clear_gpu_memory(self, session: str) -> None:
        sess = self._session(session)
        self._require_super(sess, "Superuser privilege is required to run clear_gpu_memory")

    @_convert_errors
    def get_memory(self, session: str, memory_level: str) -> list[Any]:
        self._session(session)
        return []

    @_convert_errors
    def set_execution_mode(self, session: str, mode: int) -> None:
        self._session(session)
        if mode == 1:  # TExecuteMode.GPU
            fail("Cannot switch to GPU mode in a server started in CPU-only mode.")

    @_convert_errors
    def interrupt(self, query_session: str, interrupt_session: str) -> None:
        self._session(interrupt_session)
        target = next((s for s in self.sessions.all() if s.id == query_session), None)
        if target is not None:
            for _query, _submitted, cur in list(target.running):
                with contextlib.suppress(duckdb.Error):
                    cur.interrupt()

    @_convert_errors
    def get_queries_info(self, session: str) -> list[TQueryInfo]:
        sess = self._session(session)
        self._require_super(
            sess, "SHOW QUERIES failed, because it can only be executed by super user."
        )
        out = []
        for s in self.sessions.all():
            for query, submitted, _cur in list(s.running):
                out.append(
                    TQueryInfo(
                        query_session_id=s.id,
                        query_public_session_id=s.public_id,
                        current_status="RUNNING_QUERY_KERNEL",
                        executor_id=1,
                        submitted=submitted,
                        query_str=query,
                        login_name=s.user,
                        client_address=s.client_address,
                        db_name=s.db,
                        exec_device_type="CPU",
                    )
                )
        return out

    @_convert_errors
    def get_device_parameters(self, session: str) -> dict[str, str]:
        self._session(session)
        return {"cpu_name": "x86_64", "cpu_count": str(os.cpu_count() or 1), "cpu_only": "true"}

    # ------------------------------------------------------------------------------------------
    # tables and their metadata
    # ------------------------------------------------------------------------------------------
    def _visible_tables(self, sess: Session, db: str | None = None) -> list[Table]:
        cat = self.cat
        return [t for t in cat.tables_in(db or sess.db) if cat.has_any_table_priv(sess.user, t)]

    @_convert_errors
    def get_tables(self, session: str) -> list[str]:
        sess = self._session(session)
        return [t.name for t in self._visible_tables(sess)]

    @_convert_errors
    def get_tables_for_database(self, session: str, database_name: str) -> list[str]:
        sess = self._session(session)
        if self.cat.database(database_name) is None:
            fail(f"Database name {database_name} does not exist.")
        return [t.name for t in self._visible_tables(sess, database_name)]

    @_convert_errors
    def get_physical_tables(self, session: str) -> list[str]:
        return self.get_tables(session)

    @_convert_errors
    def get_views(self, session: str) -> list[str]:
        self._session(session)
        return []

    @staticmethod
    def _size_of(t: HeavyType) -> int:
        d = t.datum
        if d == TDatumType.STR:
            return t.comp_param // 8 if t.encoding == TEncodingType.DICT else -1
        if t.encoding == TEncodingType.FIXED and t.comp_param:
            return t.comp_param // 8
        return {
            TDatumType.BOOL: 1,
            TDatumType.TINYINT: 1,
            TDatumType.SMALLINT: 2,
            TDatumType.INT: 4,
            TDatumType.BIGINT: 8,
            TDatumType.FLOAT: 4,
            TDatumType.DOUBLE: 8,
            TDatumType.DECIMAL: 8,
            TDatumType.DATE: (t.comp_param or 32) // 8,
            TDatumType.TIME: 8,
            TDatumType.TIMESTAMP: 8,
        }.get(d, -1)

    @_convert_errors
    def get_tables_meta(self, session: str) -> list[TTableMeta]:
        sess = self._session(session)
        out = []
        for t in self._visible_tables(sess):
            types = []
            for c in t.columns:
                ti = c.type.thrift()
                ti.size = self._size_of(c.type)
                types.append(ti)
            out.append(
                TTableMeta(
                    table_name=t.name,
                    num_cols=len(t.columns),
                    is_view=False,
                    is_replicated=False,
                    shard_count=0,
                    max_rows=t.max_rows,
                    table_id=t.id,
                    max_table_id=0,
                    col_types=types,
                    col_names=[c.name for c in t.columns],
                )
            )
        return out

    def _column_type(self, c: Column) -> TColumnType:
        ct = TColumnType(
            col_name=c.name,
            col_type=c.type.thrift(),
            is_reserved_keyword=c.name.upper() in _RESERVED,
            src_name="",
            is_system=False,
            is_physical=False,
            col_id=c.id,
        )
        if c.default is not None:
            ct.default_value = c.default
        return ct

    def _details(self, sess: Session, table_name: str, db: str | None = None) -> TTableDetails:
        cat = self.cat
        db = db or sess.db
        if cat.database(db) is None:
            fail(f"Database {db} does not exist.")
        t = self._table(cat, db, table_name)
        if not cat.has_any_table_priv(sess.user, t):
            fail(
                f"Unable to access table {table_name}. The table may not exist, or the logged "
                "in user may not have permission to access the table."
            )
        return TTableDetails(
            row_desc=[self._column_type(c) for c in t.columns],
            fragment_size=t.fragment_size,
            page_size=t.page_size,
            max_rows=t.max_rows,
            view_sql="",
            shard_count=0,
            key_metainfo="[]",
            is_temporary=t.options.get("temporary") == "true",
            partition_detail=0,
            table_type=0,
            refresh_info=TTableRefreshInfo(
                update_type=0,
                timing_type=0,
                start_date_time="",
                interval_type=0,
                interval_count=0,
                last_refresh_time="",
                next_refresh_time="",
            ),
            sharded_column_name="",
        )

    @_convert_errors
    def get_table_details(self, session: str, table_name: str) -> TTableDetails:
        return self._details(self._session(session), table_name)

    @_convert_errors
    def get_table_details_for_database(
        self, session: str, table_name: str, database_name: str
    ) -> TTableDetails:
        return self._details(self._session(session), table_name, database_name)

    @_convert_errors
    def get_internal_table_details(
        self, session: str, table_name: str, include_system_columns: bool = False
    ) -> TTableDetails:
        return self._details(self._session(session), table_name)

    @_convert_errors
    def get_internal_table_details_for_database(
        self, session: str, table_name: str, database_name: str
    ) -> TTableDetails:
        return self._details(self._session(session), table_name, database_name)

    # ------------------------------------------------------------------------------------------
    # epochs
    # ------------------------------------------------------------------------------------------
    @_convert_errors
    def get_table_epoch(self, session: str, db_id: int, table_id: int) -> int:
        self._session(session)
        return self._table_by_id(self.cat, db_id, table_id).epoch

    @_convert_errors
    def get_table_epoch_by_name(self, session: str, table_name: str) -> int:
        sess = self._session(session)
        return self._table(self.cat, sess.db, table_name).epoch

    @_convert_errors
    def get_table_epochs(self, session: str, db_id: int, table_id: int) -> list[TTableEpochInfo]:
        self._session(session)
        t = self._table_by_id(self.cat, db_id, table_id)
        return [TTableEpochInfo(table_id=t.id, table_epoch=t.epoch, leaf_index=-1)]

    def _set_epoch(self, sess: Session, pick: Callable[[CatalogState], Table], epoch: int) -> None:
        if not self.cat.is_super(sess.user):
            fail("Only superuser can set_table_epoch")
        self._check_read_only("set_table_epoch")
        with self.db.write() as (cur, cat):
            t = pick(cat)
            epochs.set_epoch(cur, t, self._db_id(t.db), epoch)

    @_convert_errors
    def set_table_epoch(self, session: str, db_id: int, table_id: int, new_epoch: int) -> None:
        sess = self._session(session)
        self._set_epoch(sess, lambda cat: self._table_by_id(cat, db_id, table_id), new_epoch)

    @_convert_errors
    def set_table_epoch_by_name(self, session: str, table_name: str, new_epoch: int) -> None:
        sess = self._session(session)
        self._set_epoch(sess, lambda cat: self._table(cat, sess.db, table_name), new_epoch)

    @_convert_errors
    def set_table_epochs(
        self, session: str, db_id: int, table_epochs: list[TTableEpochInfo]
    ) -> None:
        sess = self._session(session)
        if not self.cat.is_super(sess.user):
            fail("Only super users can set table epochs")
        self._check_read_only("set_table_epochs")
        with self.db.write() as (cur, cat):
            for te in table_epochs:
                t = self._table_by_id(cat, db_id, te.table_id)
                epochs.set_epoch(cur, t, db_id, te.table_epoch)

    # ------------------------------------------------------------------------------------------
    # roles and privileges (read side)
    # ------------------------------------------------------------------------------------------
    @_convert_errors
    def get_roles(self, session: str) -> list[str]:
        sess = self._session(session)
        cat = self.cat
        if cat.is_super(sess.user):
            return sorted(cat.roles.values())
        return [r for r in cat.grantees_of(sess.user)[1:] if r in cat.roles]

    @_convert_errors
    def get_all_roles_for_user(self, session: str, userName: str) -> list[str]:
        sess = self._session(session)
        cat = self.cat
        if not cat.is_super(sess.user) and sess.user.lower() != userName.lower():
            fail("Only a superuser is authorized to request list of roles granted to another user.")
        if cat.user(userName) is None and userName.lower() not in cat.roles:
            fail(f"Grantee {userName} does not exist.")
        return list(cat.role_members.get(userName.lower(), []))

    @_convert_errors
    def get_all_effective_roles_for_user(self, session: str, userName: str) -> list[str]:
        sess = self._session(session)
        cat = self.cat
        if not cat.is_super(sess.user) and sess.user.lower() != userName.lower():
            fail("Only a superuser is authorized to request list of roles granted to another user.")
        return [cat.roles[g] for g in cat.grantees_of(userName) if g in cat.roles]

    @_convert_errors
    def has_role(self, session: str, granteeName: str, roleName: str) -> bool:
        self._session(session)
        return roleName.lower() in self.cat.grantees_of(granteeName)[1:]

    @_convert_errors
    def has_object_privilege(
        self,
        session: str,
        granteeName: str,
        ObjectName: str,
        objectType: int,
        permissions: TDBObjectPermissions,
    ) -> bool:
        sess = self._session(session)
        cat = self.cat
        if not cat.is_super(sess.user) and sess.user.lower() not in cat.grantees_of(granteeName):
            fail(
                "Users except superusers can only check privileges for self or roles granted "
                "to them."
            )
        if cat.user(granteeName) is None and granteeName.lower() not in cat.roles:
            fail(f"User or Role {granteeName} does not exist.")
        if objectType == TDBObjectType.DatabaseDBObjectType:
            p = permissions.database_permissions_
            wanted = (
                []
                if p is None
                else [n for n, f in (("ACCESS", p.access_), ("CREATE", p.create_)) if f]
            )
            return all(cat.has_db_priv(granteeName, ObjectName, w) for w in wanted)
        if objectType == TDBObjectType.TableDBObjectType:
            t = cat.table(sess.db, ObjectName)
            if t is None:
                fail(f"Object with name {ObjectName} does not exist.")
            tp = permissions.table_permissions_
            if tp is None:
                fail("Table permissions not set for check.")
            flags = {
                "DROP": tp.drop_,
                "SELECT": tp.select_,
                "INSERT": tp.insert_,
                "UPDATE": tp.update_,
                "DELETE": tp.delete_,
                "TRUNCATE": tp.truncate_,
                "ALTER": tp.alter_,
            }
            return all(cat.has_table_priv(granteeName, t, k) for k, v in flags.items() if v)
        fail(f"Invalid object type ({objectType}).")

    @_convert_errors
    def get_db_object_privs(self, session: str, objectName: str, type: int) -> list[TDBObject]:
        sess = self._session(session)
        cat = self.cat
        out: list[TDBObject] = []
        if type == TDBObjectType.TableDBObjectType:
            t = cat.table(sess.db, objectName)
            if t is None:
                fail(f"Object with name {objectName} does not exist.")
            for grantee in sorted(cat.grants):
                privs = set(cat.grants[grantee].get(table_key(t.db, t.id), []))
                if privs:
                    allp = "ALL" in privs
                    out.append(
                        TDBObject(
                            objectName=t.name,
                            objectType=TDBObjectType.TableDBObjectType,
                            privs=[False]
                            + [
                                allp or p in privs
                                for p in (
                                    "DROP",
                                    "SELECT",
                                    "INSERT",
                                    "UPDATE",
                                    "DELETE",
                                    "TRUNCATE",
                                    "ALTER",
                                )
                            ],
                            grantee=grantee,
                            privilegeObjectType=TDBObjectType.TableDBObjectType,
                            objectId=t.id,
                        )
                    )
        return out

    # ------------------------------------------------------------------------------------------
    # sql_execute
    # ------------------------------------------------------------------------------------------
    def sql_execute_raw(
        self,
        session: str,
        query: str,
        column_format: bool,
        nonce: str | None,
        first_n: int,
        at_most_n: int,
    ) -> TQueryResult | EncodedResult:
        """``sql_execute``; a columnar result comes back pre-encoded (see server.py)."""
        return _convert_errors(self._sql_execute)(
            session, query, column_format, nonce, first_n, at_most_n
        )

    def sql_execute(
        self,
        session: str,
        query: str,
        column_format: bool,
        nonce: str | None,
        first_n: int,
        at_most_n: int,
    ) -> TQueryResult:
        res = self.sql_execute_raw(session, query, column_format, nonce, first_n, at_most_n)
        if isinstance(res, EncodedResult):
            from thrift.protocol import TBinaryProtocol
            from thrift.transport import TTransport

            out = TQueryResult()
            out.read(
                TBinaryProtocol.TBinaryProtocolAccelerated(TTransport.TMemoryBuffer(res.payload))
            )
            return out
        return res

    def _sql_execute(
        self,
        session: str,
        query: str,
        column_format: bool,
        nonce: str | None,
        first_n: int,
        at_most_n: int,
    ) -> TQueryResult | EncodedResult:
        sess = self._session(session)
        if first_n is not None and at_most_n is not None and first_n >= 0 and at_most_n >= 0:
            fail("At most one of first_n and at_most_n can be set")
        first_n = -1 if first_n is None else first_n
        at_most_n = -1 if at_most_n is None else at_most_n
        started = time.perf_counter()
        stmt = hsql.parse(query or "")
        rs = self.execute_statement(sess, stmt)
        nonce = nonce or ""
        if rs is None:
            elapsed = int((time.perf_counter() - started) * 1000)
            return results.empty_result(nonce, self._query_type(stmt), elapsed)
        elapsed = int((time.perf_counter() - started) * 1000)
        if column_format:
            return results.encode_columnar(
                rs, nonce=nonce, total_time_ms=elapsed, first_n=first_n, at_most_n=at_most_n
            )
        return results.build_rows(
            rs, nonce=nonce, total_time_ms=elapsed, first_n=first_n, at_most_n=at_most_n
        )

    @staticmethod
    def _query_type(stmt: hsql.Statement) -> int:
        if isinstance(stmt, hsql.Query | hsql.CopyTo):
            return TQueryType.READ
        if isinstance(stmt, hsql.Insert | hsql.Update | hsql.Delete | hsql.CopyFrom):
            return TQueryType.WRITE
        if isinstance(stmt, hsql.Show):
            return TQueryType.SCHEMA_READ
        return TQueryType.SCHEMA_WRITE

    def execute_statement(self, sess: Session, stmt: hsql.Statement) -> ResultSet | None:
        with self._running(sess, stmt.sql):
            return self._dispatch(sess, stmt)

    def _dispatch(self, sess: Session, stmt: hsql.Statement) -> ResultSet | None:
        if isinstance(stmt, hsql.Query):
            return self._select(sess, stmt)
        if isinstance(stmt, hsql.Show):
            return self._show(sess, stmt)
        if isinstance(stmt, hsql.CopyTo):
            self._copy_to(sess, stmt)
            return None
        if isinstance(stmt, hsql.KillQuery):
            self._kill_query(sess, stmt)
            return None
        if isinstance(stmt, hsql.AlterSession):
            self._alter_session(sess, stmt)
            return None
        if isinstance(stmt, hsql.AlterSystemClear):
            self._require_super(
                sess, f"Superuser privilege is required to run clear_{stmt.memory.lower()}_memory"
            )
            return None
        # ---- everything below writes -----------------------------------------------------
        if isinstance(stmt, hsql.Insert) and not isinstance(stmt.source, exp.Values):
            self._check_read_only("insert_into_table")
        elif isinstance(stmt, hsql.CreateTableAs):
            self._check_read_only("create_table_as")
        else:
            self._sql_read_only()
        handlers: dict[type, Callable[[Session, Any], ResultSet | None]] = {
            hsql.Insert: self._insert,
            hsql.Update: self._update,
            hsql.Delete: self._delete,
            hsql.CreateTable: self._create_table_stmt,
            hsql.CreateTableAs: self._ctas,
            hsql.DropTable: self._drop_table,
            hsql.TruncateTable: self._truncate,
            hsql.OptimizeTable: self._optimize,
            hsql.AlterTable: self._alter_table,
            hsql.UserStmt: self._user_stmt,
            hsql.RoleStmt: self._role_stmt,
            hsql.GrantStmt: self._grant,
            hsql.DatabaseStmt: self._database_stmt,
            hsql.CopyFrom: self._copy_from,
            hsql.DumpRestore: self._dump_restore,
        }
        h = handlers.get(type(stmt))
        if h is None:
            fail("SQL Error: " + unsupported(type(stmt).__name__))
        return h(sess, stmt)

    # -- SELECT ------------------------------------------------------------------------------
    def _check_select(self, sess: Session, tables: list[Table]) -> None:
        cat = self.cat
        for t in tables:
            if not cat.has_table_priv(sess.user, t, "SELECT"):
                fail(no_privileges(sess.user, t.name))

    def _run_query(self, sess: Session, sql_text: str) -> pa.Table:
        rel = self._cursor(sess).sql(sql_text)
        if rel is None:
            return pa.table({})
        types = [str(t) for t in rel.types]
        table = rel.to_arrow_table()
        cols = []
        for i, t in enumerate(types):
            col = table.column(i)
            if t in ("HUGEINT", "UHUGEINT"):
                col = pc.cast(col, pa.int64())
            elif t.startswith(("STRUCT", "MAP", "UNION")) or t.endswith("]"):
                col = pa.array(
                    [None if v is None else json.dumps(v, default=str) for v in col.to_pylist()],
                    pa.string(),
                )
            cols.append(col)
        return pa.table(cols, names=table.column_names)

    def _result_types(self, table: pa.Table, used: list[Table]) -> list[HeavyType]:
        """Result column types; a column that is a table column keeps the catalog type."""
        out = []
        for f in table.schema:
            t = ht.from_arrow(f.type)
            for tbl in used:
                c = tbl.column(f.name)
                if c is not None and c.type.duckdb() == _duck_of_arrow(f.type):
                    t = c.type
                    break
            out.append(t)
        return out

    def _select(self, sess: Session, stmt: hsql.Query) -> ResultSet:
        cat = self.cat
        sql_text, used = hsql.translate_query(stmt.ast, self._resolver(sess, cat))
        self._check_select(sess, used)
        started = time.perf_counter()
        if stmt.explain:
            table = self._run_query(sess, "EXPLAIN " + sql_text)
            plan = "\n".join(str(v) for v in table.column(table.num_columns - 1).to_pylist())
            return results.text_result_set("Explanation", [plan], TQueryType.READ)
        table = self._run_query(sess, sql_text)
        elapsed = int((time.perf_counter() - started) * 1000)
        return ResultSet(
            table=table,
            names=list(table.column_names),
            types=self._result_types(table, used),
            query_type=TQueryType.READ,
            execution_time_ms=elapsed,
        )

    # -- INSERT / UPDATE / DELETE -------------------------------------------------------------
    def _writable_table(self, cat: CatalogState, sess: Session, name: str) -> Table:
        t = cat.table(sess.db, name)
        if t is None:
            fail(f"SQL Error: Object '{name}' not found")
        return t

    def _insert(self, sess: Session, stmt: hsql.Insert) -> None:
        with self.db.write() as (cur, cat):
            t = self._writable_table(cat, sess, stmt.table)
            if not cat.has_table_priv(sess.user, t, "INSERT"):
                fail(no_insert_privileges(sess.user, t.name))
            src_sql, used = hsql.translate_query(stmt.source, self._resolver(sess, cat))
            for u in used:
                if not cat.has_table_priv(sess.user, u, "SELECT"):
                    fail(no_privileges(sess.user, u.name))
            cur.execute(f"SET search_path = '{view_schema(sess.db)}'")
            n_src = len(cur.sql(src_sql).columns)
            names = stmt.columns or [c.name for c in t.columns]
            if n_src != len(names):
                fail(
                    f"SQL Error: Number of INSERT target columns ({len(names)}) does not equal "
                    f"number of source items ({n_src})"
                )
            for n in names:
                if t.column(n) is None:
                    fail(f"SQL Error: Unknown target column '{n}'")
            lowered = [n.lower() for n in names]
            exprs = []
            for c in t.columns:
                if c.name.lower() in lowered:
                    exprs.append(f"__s.{q('c' + str(lowered.index(c.name.lower())))}")
                elif c.default is not None:
                    exprs.append(c.default)
                elif not c.type.nullable:
                    fail(f"Column '{c.name}' cannot be omitted due to NOT NULL constraint")
                else:
                    exprs.append("NULL")
            alias = ", ".join(q(f"c{i}") for i in range(n_src))
            select = f"SELECT {', '.join(exprs)} FROM ({src_sql}) AS __s({alias})"
            epoch = epochs.next_epoch(t)
            epochs.append_select(cur, t, select, epoch)
            epochs.commit_epoch(cur, t, epoch)

    def _bind_target_exprs(
        self, sess: Session, cat: CatalogState, t: Table, alias: str, *exprs: Any
    ) -> list[str | None]:
        out: list[str | None] = []
        for e in exprs:
            if e is None:
                out.append(None)
                continue
            sql_text, used = hsql.translate_expr(e, self._resolver(sess, cat))
            for u in used:
                if not cat.has_table_priv(sess.user, u, "SELECT"):
                    fail(no_privileges(sess.user, u.name))
            out.append(sql_text)
        return out

    def _update(self, sess: Session, stmt: hsql.Update) -> None:
        with self.db.write() as (cur, cat):
            t = self._writable_table(cat, sess, stmt.table)
            if not cat.has_table_priv(sess.user, t, "UPDATE"):
                fail(no_privileges(sess.user, t.name))
            assignments: dict[str, str] = {}
            for col, e in stmt.assignments:
                if t.column(col) is None:
                    fail(f"SQL Error: Unknown target column '{col}'")
                (sql_text,) = self._bind_target_exprs(sess, cat, t, stmt.alias, e)
                assert sql_text is not None
                assignments[col.lower()] = sql_text
            (where,) = self._bind_target_exprs(sess, cat, t, stmt.alias, stmt.where)
            from_sql = None
            if stmt.from_ is not None:
                (from_sql,) = self._bind_target_exprs(sess, cat, t, stmt.alias, stmt.from_)
                from_sql = re.sub(r"^\s*FROM\s+", "", from_sql or "", flags=re.I)
            cur.execute(f"SET search_path = '{view_schema(sess.db)}'")
            epoch = epochs.next_epoch(t)
            epochs.update_where(cur, t, assignments, where, stmt.alias, from_sql, epoch)
            epochs.commit_epoch(cur, t, epoch)

    def _delete(self, sess: Session, stmt: hsql.Delete) -> None:
        with self.db.write() as (cur, cat):
            t = self._writable_table(cat, sess, stmt.table)
            if not cat.has_table_priv(sess.user, t, "DELETE"):
                fail(no_privileges(sess.user, t.name))
            (where,) = self._bind_target_exprs(sess, cat, t, stmt.alias, stmt.where)
            cur.execute(f"SET search_path = '{view_schema(sess.db)}'")
            epoch = epochs.next_epoch(t)
            epochs.delete_where(cur, t, where, stmt.alias, epoch)
            epochs.commit_epoch(cur, t, epoch)

    # -- DDL: tables -----------------------------------------------------------------------------
    def _apply_options(self, t: Table, opts: dict[str, str]) -> None:
        for k, v in opts.items():
            val = hsql.literal_option(v)
            if k not in _TABLE_OPTIONS:
                fail(
                    f"Invalid CREATE TABLE option {k.upper()}.  Should be FRAGMENT_SIZE, "
                    "MAX_CHUNK_SIZE, PAGE_SIZE, MAX_ROLLBACK_EPOCHS, MAX_ROWS, PARTITIONS, "
                    "SHARD_COUNT, VACUUM, SORT_COLUMN, STORAGE_TYPE."
                )
            if k in (
                "fragment_size",
                "page_size",
                "max_rows",
                "max_chunk_size",
                "max_rollback_epochs",
            ):
                try:
                    num = int(val)
                except ValueError:
                    fail(f"{k.upper()} must be an integer literal.")
                if k == "max_rollback_epochs":
                    if num < -1:
                        fail("MAX_ROLLBACK_EPOCHS must be a positive number or -1.")
                    t.max_rollback_epochs = num
                elif num <= 0:
                    fail(f"{k.upper()} must be a positive number.")
                else:
                    setattr(t, k, num)
            else:
                t.options[k] = val

    def _check_create(self, cat: CatalogState, sess: Session, name: str) -> None:
        if not cat.has_db_priv(sess.user, sess.db, "CREATE"):
            fail(f"Table {name} will not be created. User has no create privileges.")

    def _new_table(
        self,
        cat: CatalogState,
        sess: Session,
        name: str,
        specs: list[hsql.ColumnSpec],
        opts: dict[str, str],
    ) -> Table:
        seen: set[str] = set()
        for s in specs:
            if s.name.lower() in seen:
                fail(f"Column '{s.name}' defined more than once")
            seen.add(s.name.lower())
        if not specs:
            fail("Table must have at least one column.")
        tid = cat.next_table_id
        cat.next_table_id += 1
        cols = [Column(i + 1, s.name, s.type, s.default) for i, s in enumerate(specs)]
        t = Table(
            id=tid,
            db=sess.db,
            name=name,
            columns=cols,
            owner=sess.user,
            data_name=f"t{tid}",
            next_column_id=len(cols) + 1,
        )
        self._apply_options(t, opts)
        cat.tables[tid] = t
        return t

    def _create_table_stmt(self, sess: Session, stmt: hsql.CreateTable) -> None:
        with self.db.write() as (cur, cat):
            self._check_create(cat, sess, stmt.name)
            if cat.table(sess.db, stmt.name) is not None:
                if stmt.if_not_exists:
                    return
                fail(f"Table {stmt.name} already exists.")
            t = self._new_table(cat, sess, stmt.name, stmt.columns, stmt.options)
            if stmt.temporary:
                t.options["temporary"] = "true"
            epochs.create_storage(cur, t)

    def _ctas(self, sess: Session, stmt: hsql.CreateTableAs) -> None:
        with self.db.write() as (cur, cat):
            self._check_create(cat, sess, stmt.name)
            if cat.table(sess.db, stmt.name) is not None:
                if stmt.if_not_exists:
                    return
                fail(f"Table {stmt.name} already exists.")
            sql_text, used = hsql.translate_query(stmt.query, self._resolver(sess, cat))
            for u in used:
                if not cat.has_table_priv(sess.user, u, "SELECT"):
                    fail(no_privileges(sess.user, u.name))
            cur.execute(f"SET search_path = '{view_schema(sess.db)}'")
            rel = cur.sql(sql_text)
            specs = []
            for name, dtype in zip(rel.columns, rel.types, strict=True):
                htype = ht.from_duckdb(str(dtype))
                for u in used:
                    c = u.column(name)
                    if c is not None and c.type.duckdb() == ht.from_duckdb(str(dtype)).duckdb():
                        htype = c.type.with_nullable(True)
                        break
                specs.append(hsql.ColumnSpec(name, htype))
            t = self._new_table(cat, sess, stmt.name, specs, stmt.options)
            epochs.create_storage(cur, t)
            epoch = epochs.next_epoch(t)
            epochs.append_select(cur, t, sql_text, epoch)
            epochs.commit_epoch(cur, t, epoch)

    def _drop_table(self, sess: Session, stmt: hsql.DropTable) -> None:
        with self.db.write() as (cur, cat):
            t = cat.table(sess.db, stmt.name)
            if t is None:
                if stmt.if_exists:
                    return
                fail(f"Table {stmt.name} does not exist.")
            if not cat.has_table_priv(sess.user, t, "DROP"):
                fail(f"Table {t.name} will not be dropped. User has no proper privileges.")
            epochs.drop_storage(cur, t)
            del cat.tables[t.id]
            key = table_key(t.db, t.id)
            for g in cat.grants.values():
                g.pop(key, None)

    def _truncate(self, sess: Session, stmt: hsql.TruncateTable) -> None:
        with self.db.write() as (cur, cat):
            t = cat.table(sess.db, stmt.name)
            if t is None:
                fail(f"Table {stmt.name} does not exist.")
            if not cat.has_table_priv(sess.user, t, "TRUNCATE"):
                fail(f"Table {t.name} will not be truncated. User has no proper privileges.")
            epoch = epochs.next_epoch(t)
            epochs.truncate(cur, t, epoch)
            epochs.commit_epoch(cur, t, epoch)

    def _optimize(self, sess: Session, stmt: hsql.OptimizeTable) -> None:
        t = self.cat.table(sess.db, stmt.name)
        if t is None or not self.cat.has_table_priv(sess.user, t, "DELETE"):
            fail(f"Table {stmt.name} does not exist.")

    def _alter_table(self, sess: Session, stmt: hsql.AlterTable) -> None:
        with self.db.write() as (cur, cat):
            t = cat.table(sess.db, stmt.name)
            if t is None:
                fail(f"Table {stmt.name} does not exist.")
            if not cat.has_table_priv(sess.user, t, "ALTER"):
                fail(f"Current user does not have the privilege to alter table: {t.name}")
            if stmt.action == "rename_table":
                if cat.table(sess.db, stmt.new_name) is not None:
                    fail(f"Table or View with name {stmt.new_name} already exists.")
                cur.execute(f"DROP VIEW IF EXISTS {epochs.view_ref(t)}")
                t.name = stmt.new_name
                epochs.refresh_view(cur, t)
            elif stmt.action == "rename_column":
                c = t.column(stmt.old_column)
                if c is None:
                    fail(f"Column {stmt.old_column} does not exist.")
                if t.column(stmt.new_name) is not None:
                    fail(f"Column {stmt.new_name} already exists.")
                epochs.rename_column(cur, t, c.name, stmt.new_name)
                c.name = stmt.new_name
                epochs.refresh_view(cur, t)
            elif stmt.action == "add_columns":
                cur.execute(f"DROP VIEW IF EXISTS {epochs.view_ref(t)}")
                for spec in stmt.add:
                    if t.column(spec.name) is not None:
                        fail(f"Column {spec.name} already exists.")
                    if not spec.type.nullable and spec.default is None:
                        fail(
                            f"Column {spec.name} must have a default value: it is declared NOT NULL"
                        )
                    type_sql = spec.type.duckdb()
                    epochs.add_column(cur, t, spec.name, type_sql, spec.default)
                    t.columns.append(Column(t.next_column_id, spec.name, spec.type, spec.default))
                    t.next_column_id += 1
                epochs.refresh_view(cur, t)
                epoch = epochs.next_epoch(t)
                epochs.commit_epoch(cur, t, epoch)
            elif stmt.action == "drop_columns":
                for name in stmt.drop:
                    if t.column(name) is None:
                        fail(f"Column {name} does not exist.")
                if len(stmt.drop) >= len(t.columns):
                    fail("Cannot drop all columns of a table.")
                for name in stmt.drop:
                    c = t.column(name)
                    assert c is not None
                    epochs.drop_column(cur, t, c.name)
                    t.columns.remove(c)
                epochs.refresh_view(cur, t)
                epoch = epochs.next_epoch(t)
                epochs.commit_epoch(cur, t, epoch)
            elif stmt.action == "set_option":
                key, value = stmt.option
                if key != "max_rollback_epochs":
                    fail(unsupported(f"ALTER TABLE SET {key.upper()}"))
                self._apply_options(t, {key: value})
                epochs.commit_epoch(cur, t, t.epoch)

    # -- users, roles, privileges, databases -----------------------------------------------------
    @staticmethod
    def _user_options(u: User, opts: dict[str, str], cat: CatalogState) -> None:
        for k, v in opts.items():
            val = hsql.literal_option(v)
            if k == "password":
                u.password_hash, u.salt = hash_password(val)
            elif k == "is_super":
                u.is_super = hsql.is_true(val)
            elif k == "default_db":
                if val and cat.database(val) is None:
                    fail(f"DEFAULT_DB {val} not found.")
                u.default_db = val
            elif k == "can_login":
                u.can_login = hsql.is_true(val)
            else:
                fail(
                    f"Invalid CREATE USER option {k.upper()}. Should be PASSWORD, IS_SUPER, "
                    "CAN_LOGIN or DEFAULT_DB."
                )

    def _user_stmt(self, sess: Session, stmt: hsql.UserStmt) -> None:
        invalidate: list[str] = []
        with self.db.write() as (_cur, cat):
            is_super = cat.is_super(sess.user)
            if stmt.action == "create":
                if not is_super:
                    fail("CREATE USER failed. It can only be executed by super user.")
                if cat.user(stmt.name) is not None or stmt.name.lower() in cat.roles:
                    fail(f"User {stmt.name} already exists.")
                if "password" not in stmt.options:
                    fail("Password must be specified.")
                u = User(cat.next_user_id, stmt.name, "", "")
                cat.next_user_id += 1
                self._user_options(u, stmt.options, cat)
                cat.users[stmt.name.lower()] = u
            elif stmt.action == "alter":
                u = self._existing_user(cat, stmt.name)
                self_pw = sess.user.lower() == u.name.lower() and set(stmt.options) <= {"password"}
                if not is_super and not self_pw:
                    fail("ALTER USER failed. It can only be executed by super user.")
                if u.name == ROOT_USER and "is_super" in stmt.options:
                    fail("Cannot revoke superuser status from the root user")
                self._user_options(u, stmt.options, cat)
            elif stmt.action == "rename":
                if not is_super:
                    fail("ALTER USER failed. It can only be executed by super user.")
                u = self._existing_user(cat, stmt.name)
                if u.name == ROOT_USER:
                    fail("Cannot rename the root user")
                if cat.user(stmt.new_name) is not None:
                    fail(f"User {stmt.new_name} already exists.")
                del cat.users[u.name.lower()]
                old = u.name
                u.name = stmt.new_name
                cat.users[u.name.lower()] = u
                self._rename_grantee(cat, old, u.name)
                invalidate.append(old)
            elif stmt.action == "drop":
                if not is_super:
                    fail("DROP USER failed. It can only be executed by super user.")
                if cat.user(stmt.name) is None and stmt.if_exists:
                    return
                u = self._existing_user(cat, stmt.name)
                if u.name == ROOT_USER:
                    fail("Cannot drop root user.")
                del cat.users[u.name.lower()]
                cat.grants.pop(u.name.lower(), None)
                cat.role_members.pop(u.name.lower(), None)
                invalidate.append(u.name)
        for name in invalidate:
            self.sessions.drop_user(name)

    @staticmethod
    def _existing_user(cat: CatalogState, name: str) -> User:
        u = cat.user(name)
        if u is None:
            fail(f"User {name} does not exist.")
        return u

    @staticmethod
    def _rename_grantee(cat: CatalogState, old: str, new: str) -> None:
        if old.lower() in cat.grants:
            cat.grants[new.lower()] = cat.grants.pop(old.lower())
        if old.lower() in cat.role_members:
            cat.role_members[new.lower()] = cat.role_members.pop(old.lower())
        for t in cat.tables.values():
            if t.owner.lower() == old.lower():
                t.owner = new
        for d in cat.databases.values():
            if d.owner.lower() == old.lower():
                d.owner = new

    def _role_stmt(self, sess: Session, stmt: hsql.RoleStmt) -> None:
        with self.db.write() as (_cur, cat):
            if not cat.is_super(sess.user):
                fail(f"{stmt.action.upper()} ROLE failed. It can only be executed by super user.")
            low = stmt.name.lower()
            if stmt.action == "create":
                if low in cat.roles or cat.user(stmt.name) is not None:
                    fail(
                        f"CREATE ROLE {stmt.name} failed because role with the same name "
                        "already exists."
                    )
                cat.roles[low] = stmt.name
            else:
                if low not in cat.roles:
                    if stmt.if_exists:
                        return
                    fail(f"Cannot drop role {stmt.name} because it does not exist.")
                del cat.roles[low]
                cat.grants.pop(low, None)
                for members in cat.role_members.values():
                    if low in [m.lower() for m in members]:
                        members[:] = [m for m in members if m.lower() != low]

    def _grant(self, sess: Session, stmt: hsql.GrantStmt) -> None:
        verb = "REVOKE" if stmt.revoke else "GRANT"
        with self.db.write() as (_cur, cat):
            for g in stmt.grantees:
                if cat.user(g) is None and g.lower() not in cat.roles:
                    fail(f"User or role {g} does not exist.")
            if stmt.object_type == "ROLE":
                if not cat.is_super(sess.user):
                    fail(f"{verb} failed. It can only be executed by super user.")
                for r in stmt.roles:
                    if r.lower() not in cat.roles:
                        fail(f"Role {r} does not exist.")
                for g in stmt.grantees:
                    members = cat.role_members.setdefault(g.lower(), [])
                    for r in stmt.roles:
                        if stmt.revoke:
                            if r.lower() not in [m.lower() for m in members]:
                                fail(f"Role {r} have not been granted to {g}")
                            members[:] = [m for m in members if m.lower() != r.lower()]
                        elif r.lower() not in [m.lower() for m in members]:
                            if r.lower() in cat.grantees_of(g) or g.lower() in cat.grantees_of(r):
                                fail(f"Role {r} have been granted to {g} already.")
                            members.append(cat.roles[r.lower()])
                return
            privs = self._normalise_privs(stmt)
            if stmt.object_type == "DATABASE":
                d = cat.database(stmt.object_name)
                if d is None:
                    fail(f"Database {stmt.object_name} does not exist.")
                key = db_key(d.name)
                if not cat.is_super(sess.user) and d.owner.lower() != sess.user.lower():
                    fail(
                        f"{verb} failed. It can only be executed by super user or the owner of "
                        "the object."
                    )
            elif stmt.object_type == "TABLE":
                t = cat.table(sess.db, stmt.object_name)
                if t is None:
                    fail(f"Table/View {stmt.object_name} does not exist.")
                key = table_key(t.db, t.id)
                if not cat.is_super(sess.user) and t.owner.lower() != sess.user.lower():
                    fail(
                        f"{verb} failed. It can only be executed by super user or the owner of "
                        "the object."
                    )
            else:
                fail(unsupported(f"{verb} ON {stmt.object_type}"))
            for g in stmt.grantees:
                entry = cat.grants.setdefault(g.lower(), {})
                current = set(entry.get(key, []))
                if stmt.revoke:
                    current = set() if "ALL" in privs else current - privs
                    if "ALL" in entry.get(key, []) and "ALL" not in privs:
                        full = set(TABLE_PRIVILEGES) | (
                            {"ACCESS", "CREATE"} if stmt.object_type == "DATABASE" else set()
                        )
                        current = full - privs
                else:
                    current |= privs
                if current:
                    entry[key] = sorted(current)
                else:
                    entry.pop(key, None)

    @staticmethod
    def _normalise_privs(stmt: hsql.GrantStmt) -> set[str]:
        out: set[str] = set()
        allowed_table = set(TABLE_PRIVILEGES) | {"ALL"}
        for p in stmt.privileges:
            word = p.split()[0]
            if stmt.object_type == "TABLE":
                if p not in allowed_table:
                    fail(f"Privilege {p} is not valid for object type TABLE.")
                out.add(p)
            else:
                if p in ("CREATE TABLE", "CREATE"):
                    out.add("CREATE")
                elif p in allowed_table or p == "ACCESS":
                    out.add(p)
                elif word in ("CREATE", "DROP", "VIEW", "EDIT", "DELETE", "SELECT"):
                    # view / dashboard / server privileges: accepted, nothing to enforce here
                    out.add(p)
                else:
                    fail(f"Privilege {p} is not valid for object type DATABASE.")
        return out

    def _database_stmt(self, sess: Session, stmt: hsql.DatabaseStmt) -> None:
        invalidate: list[str] = []
        with self.db.write() as (cur, cat):
            is_super = cat.is_super(sess.user)
            if stmt.action == "create":
                if not is_super:
                    fail("CREATE DATABASE failed. It can only be executed by super user.")
                if cat.database(stmt.name) is not None:
                    if stmt.if_not_exists:
                        return
                    fail(f"Database {stmt.name} already exists.")
                owner = hsql.literal_option(stmt.options.get("owner", sess.user))
                if cat.user(owner) is None:
                    fail(f"User {owner} does not exist.")
                cat.databases[stmt.name.lower()] = Database(cat.next_db_id, stmt.name, owner)
                cat.next_db_id += 1
                SandboxDB.create_db_schemas(cur, stmt.name)
            elif stmt.action == "drop":
                d = cat.database(stmt.name)
                if d is None:
                    if stmt.if_exists:
                        return
                    fail(f"Database {stmt.name} does not exist.")
                if not is_super and d.owner.lower() != sess.user.lower():
                    fail("DROP DATABASE failed. It can only be executed by super user or owner.")
                if d.name.lower() == DEFAULT_DB:
                    fail(f"Cannot drop the default database {DEFAULT_DB}.")
                for t in cat.tables_in(d.name):
                    epochs.drop_storage(cur, t)
                    del cat.tables[t.id]
                cur.execute(f"DROP SCHEMA IF EXISTS {q(view_schema(d.name))} CASCADE")
                cur.execute(f"DROP SCHEMA IF EXISTS {q(data_schema(d.name))} CASCADE")
                del cat.databases[d.name.lower()]
                for g in cat.grants.values():
                    for k in [
                        k
                        for k in g
                        if k == db_key(d.name) or k.startswith(f"table:{d.name.lower()}:")
                    ]:
                        del g[k]
                invalidate.append(d.name)
            else:
                fail(unsupported(f"ALTER DATABASE {stmt.action.upper()}"))
        for name in invalidate:
            self.sessions.drop_db(name)

    # -- SHOW ------------------------------------------------------------------------------------
    def _text_table(self, columns: dict[str, list[Any]], types: dict[str, HeavyType]) -> ResultSet:
        """A DDL result set (``ResultSetLogicalValuesBuilder``): NOT NULL labels unless typed
        nullable, booleans as 0/1 (``genLiteralBoolean`` makes a BIGINT literal)."""
        arrays = []
        for name, vals in columns.items():
            t = types[name]
            if t.datum == TDatumType.STR:
                arrays.append(pa.array(vals, pa.string()))
            elif t.datum == TDatumType.BOOL:
                arrays.append(pa.array(vals, pa.bool_()))
            else:
                arrays.append(pa.array(vals, pa.int64()))
        table = pa.table(arrays, names=list(columns))
        return ResultSet(table, list(columns), [types[n] for n in columns], TQueryType.SCHEMA_READ)

    def _show(self, sess: Session, stmt: hsql.Show) -> ResultSet:
        cat = self.cat
        text = ht.text_dict(nullable=False)
        big = HeavyType(TDatumType.BIGINT, nullable=False)
        boolean = HeavyType(TDatumType.BOOL, nullable=False)
        if stmt.what == "tables":
            names = [t.name for t in self._visible_tables(sess)]
            return self._text_table({"table_name": names}, {"table_name": text})
        if stmt.what == "databases":
            dbs = [
                d
                for d in sorted(cat.databases.values(), key=lambda d: d.id)
                if cat.has_db_priv(sess.user, d.name, "ACCESS")
            ]
            return self._text_table(
                {"Database": [d.name for d in dbs], "Owner": [d.owner for d in dbs]},
                {"Database": text, "Owner": text},
            )
        if stmt.what == "create_table":
            t = cat.table(sess.db, stmt.names[0])
            if t is None or not cat.has_any_table_priv(sess.user, t):
                fail(f"Table/View {stmt.names[0]} for catalog {sess.db} does not exist")
            # ShowCreateTableStmt answers as a SimpleResult, labelled "Result"
            return self._text_table({"Result": [self.create_table_sql(t)]}, {"Result": text})
        if stmt.what == "table_details":
            tables = [t for t in self._visible_tables(sess) if t.options.get("temporary") != "true"]
            if stmt.names:
                visible = {t.name.lower(): t for t in self._visible_tables(sess)}
                chosen = []
                for n in stmt.names:
                    t = visible.get(n.lower())
                    if t is None:
                        fail(f"Unable to show table details for table: {n}. Table does not exist.")
                    if t.options.get("temporary") == "true":
                        fail(
                            "SHOW TABLE DETAILS is not supported for temporary tables. "
                            f"Table name: {n}."
                        )
                    chosen.append(t)
                tables = chosen
            # storage statistics (files, pages) have no DuckDB counterpart: 0 / NULL
            cols: dict[str, list[Any]] = {
                "table_id": [t.id for t in tables],
                "table_name": [t.name for t in tables],
                "column_count": [len(t.columns) for t in tables],
                "is_sharded_table": [False for _ in tables],
                "shard_count": [0 for _ in tables],
                "max_rows": [t.max_rows for t in tables],
                "fragment_size": [t.fragment_size for t in tables],
                "max_rollback_epochs": [t.max_rollback_epochs for t in tables],
                "min_epoch": [t.epoch for t in tables],
                "max_epoch": [t.epoch for t in tables],
                "min_epoch_floor": [t.floor for t in tables],
                "max_epoch_floor": [t.floor for t in tables],
                "metadata_file_count": [0 for _ in tables],
                "total_metadata_file_size": [0 for _ in tables],
                "total_metadata_page_count": [0 for _ in tables],
                "total_free_metadata_page_count": [None for _ in tables],
                "data_file_count": [0 for _ in tables],
                "total_data_file_size": [0 for _ in tables],
                "total_data_page_count": [0 for _ in tables],
                "total_free_data_page_count": [None for _ in tables],
            }
            types = dict.fromkeys(cols, big)
            types["table_name"] = text
            types["is_sharded_table"] = boolean
            types["total_free_metadata_page_count"] = HeavyType(TDatumType.BIGINT)
            types["total_free_data_page_count"] = HeavyType(TDatumType.BIGINT)
            return self._text_table(cols, types)
        if stmt.what == "user_sessions":
            self._require_super(
                sess, "SHOW USER SESSIONS failed, because it can only be executed by super user."
            )
            ss = self.sessions.all()
            cols = {
                "session_id": [s.public_id for s in ss],
                "login_name": [s.user for s in ss],
                "client_address": [s.client_address for s in ss],
                "db_name": [s.db for s in ss],
            }
            return self._text_table(cols, dict.fromkeys(cols, text))
        if stmt.what == "queries":
            self._require_super(
                sess, "SHOW QUERIES failed, because it can only be executed by super user."
            )
            rows = [
                (s, qy, sub)
                for s in self.sessions.all()
                for (qy, sub, _c) in list(s.running)
                if s.id != sess.id or qy != stmt.sql
            ]
            cols = {
                "query_session_id": [s.public_id for s, _, _ in rows],
                "current_status": ["RUNNING_QUERY_KERNEL" for _ in rows],
                "executor_id": ["1" for _ in rows],
                "submitted": [sub for _, _, sub in rows],
                "query_str": [qy for _, qy, _ in rows],
                "login_name": [s.user for s, _, _ in rows],
                "client_address": [s.client_address for s, _, _ in rows],
                "db_name": [s.db for s, _, _ in rows],
                "exec_device_type": ["CPU" for _ in rows],
            }
            return self._text_table(cols, dict.fromkeys(cols, text))
        if stmt.what in ("user_details", "users"):
            return self._show_user_details(sess, stmt.names)
        if stmt.what == "roles":
            if cat.is_super(sess.user):
                roles = sorted(cat.roles.values())
            else:
                roles = [cat.roles[g] for g in cat.grantees_of(sess.user) if g in cat.roles]
            return self._text_table({"ROLES": roles}, {"ROLES": text})
        fail(unsupported(f"SHOW {stmt.what.upper()}"))

    def _show_user_details(self, sess: Session, names: list[str]) -> ResultSet:
        """``ShowUserDetailsCommand``: every user; a superuser sees ``db(id)`` defaults."""
        cat = self.cat
        is_super = cat.is_super(sess.user)
        if names:
            users = []
            for n in names:
                u = cat.user(n)
                if u is None:
                    fail(f'User with username "{n}" does not exist. ')
                users.append(u)
        else:
            users = sorted(cat.users.values(), key=lambda u: u.id)
        default_dbs = []
        for u in users:
            d = cat.database(u.default_db) if u.default_db else None
            name = ""
            if d is not None and (is_super or cat.has_db_priv(sess.user, d.name, "ACCESS")):
                name = d.name
            if is_super:
                name += f"({d.id if d is not None else -1})"
            default_dbs.append(name)
        text = ht.text_dict(nullable=False)
        boolean = HeavyType(TDatumType.BOOL, nullable=False)
        cols: dict[str, list[Any]] = {
            "NAME": [u.name for u in users],
            "ID": [u.id for u in users],
            "IS_SUPER": [u.is_super for u in users],
            "DEFAULT_DB": default_dbs,
            "CAN_LOGIN": [u.can_login for u in users],
        }
        types = {
            "NAME": text,
            "ID": HeavyType(TDatumType.BIGINT, nullable=False),
            "IS_SUPER": boolean,
            "DEFAULT_DB": text,
            "CAN_LOGIN": boolean,
        }
        return self._text_table(cols, types)

    @staticmethod
    def create_table_sql(t: Table, name: str | None = None) -> str:
        cols = []
        for c in t.columns:
            line = f"  {c.name} {c.type.sql()}"
            if c.default is not None:
                line += f" DEFAULT {c.default}"
            cols.append(line)
        opts = []
        if t.fragment_size != 32000000:
            opts.append(f"FRAGMENT_SIZE={t.fragment_size}")
        if t.max_rollback_epochs != 3:
            opts.append(f"MAX_ROLLBACK_EPOCHS={t.max_rollback_epochs}")
        if t.max_rows != 4611686018427387904:
            opts.append(f"MAX_ROWS={t.max_rows}")
        if t.page_size != 2097152:
            opts.append(f"PAGE_SIZE={t.page_size}")
        with_clause = f"\nWITH ({', '.join(opts)})" if opts else ""
        return f"CREATE TABLE {name or t.name} (\n" + ",\n".join(cols) + f"){with_clause};"

    # -- sessions --------------------------------------------------------------------------------
    def _kill_query(self, sess: Session, stmt: hsql.KillQuery) -> None:
        if not re.fullmatch(r"[0-9]{3}-[a-zA-Z0-9]{4}", stmt.public_id):
            fail("Please provide the correct session ID of the query that you want to interrupt.")
        self._require_super(
            sess,
            "KILL QUERY failed: only super user can interrupt the query via KILL QUERY command.",
        )
        target = self.sessions.by_public_id(stmt.public_id)
        if target is None or not target.running:
            fail("KILL QUERY failed: invalid query session is given.")
        for _query, _sub, cur in list(target.running):
            with contextlib.suppress(duckdb.Error):
                cur.interrupt()

    def _alter_session(self, sess: Session, stmt: hsql.AlterSession) -> None:
        value = hsql.literal_option(stmt.value)
        if stmt.key == "CURRENT_DATABASE":
            d = self.cat.database(value)
            if d is None:
                fail(f"Database name {value} does not exist.")
            if not self.cat.has_db_priv(sess.user, d.name, "ACCESS"):
                fail(no_db_access(sess.user, d.name))
            sess.db = d.name
        elif stmt.key == "EXECUTOR_DEVICE":
            if value.upper() == "GPU":
                fail("Cannot switch to GPU mode in a server started in CPU-only mode.")
            if value.upper() != "CPU":
                fail(f"Invalid value for EXECUTOR_DEVICE: {value}")
        else:
            fail(f"Invalid session parameter {stmt.key}")

    # -- COPY ------------------------------------------------------------------------------------
    def _copy_from(self, sess: Session, stmt: hsql.CopyFrom) -> ResultSet:
        started = time.perf_counter()
        opts = {k: hsql.literal_option(v) for k, v in stmt.options.items()}
        header = _bool_opt(stmt.options, "header", True)
        delimiter = opts.get("delimiter", ",")
        delimiter = {"\\t": "\t"}.get(delimiter, delimiter)
        null_str = opts.get("nulls", "\\N")
        quote = opts.get("quote", '"')
        escape = opts.get("escape", quote)
        max_reject = int(opts.get("max_reject", "100000"))
        if not os.path.exists(stmt.path) and not any(ch in stmt.path for ch in "*?"):
            fail(f'File or directory "{stmt.path}" does not exist.')
        with self.db.write() as (cur, cat):
            t = cat.table(sess.db, stmt.table)
            if t is None:
                fail(f"Table {stmt.table} does not exist.")
            if not cat.has_table_priv(sess.user, t, "INSERT"):
                fail(no_insert_privileges(sess.user, t.name))
            n = len(t.columns)
            names = [f"c{i}" for i in range(n)]
            columns = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in names) + "}"
            src = (
                f"read_csv(?, header = {str(header).lower()}, delim = ?, quote = ?, escape = ?, "
                f"nullstr = ?, columns = {columns}, auto_detect = false, null_padding = true, "
                "strict_mode = false)"
            )
            params = [stmt.path, delimiter, quote, escape, null_str]
            cur.execute(
                f"CREATE OR REPLACE TEMP TABLE __sandbox_copy AS SELECT * FROM {src}", params
            )
            try:
                casts = []
                bad = []
                for name, col in zip(names, t.columns, strict=True):
                    src_col = q(name)
                    if col.type.datum != TDatumType.STR:
                        src_col = f"NULLIF(TRIM({src_col}), '')"
                    cast = f"TRY_CAST({src_col} AS {col.type.duckdb()})"
                    casts.append(cast)
                    bad.append(f"({src_col} IS NOT NULL AND {cast} IS NULL)")
                    if not col.type.nullable:
                        bad.append(f"({src_col} IS NULL)")
                ok_cond = "NOT (" + " OR ".join(bad) + ")"
                total = cur.execute("SELECT count(*) FROM temp.__sandbox_copy").fetchone()
                good = cur.execute(
                    f"SELECT count(*) FROM temp.__sandbox_copy WHERE {ok_cond}"
                ).fetchone()
                n_total = int(total[0]) if total else 0
                n_good = int(good[0]) if good else 0
                rejected = n_total - n_good
                if rejected > max_reject:
                    fail(
                        f"Loaded: 0 recs, Rejected: {rejected} recs in "
                        f"{time.perf_counter() - started:.6f} secs. "
                        "Load was cancelled due to max reject rows being reached"
                    )
                epoch = epochs.next_epoch(t)
                select = f"SELECT {', '.join(casts)} FROM temp.__sandbox_copy WHERE {ok_cond}"
                epochs.append_select(cur, t, select, epoch)
                epochs.commit_epoch(cur, t, epoch)
            finally:
                with contextlib.suppress(duckdb.Error):
                    cur.execute("DROP TABLE IF EXISTS temp.__sandbox_copy")
        secs = time.perf_counter() - started
        msg = f"Loaded: {n_good} recs, Rejected: {rejected} recs in {secs:.6f} secs"
        return results.text_result_set("Result", [msg], TQueryType.WRITE)

    def _copy_to(self, sess: Session, stmt: hsql.CopyTo) -> None:
        cat = self.cat
        sql_text, used = hsql.translate_query(stmt.query, self._resolver(sess, cat))
        self._check_select(sess, used)
        opts = {k: hsql.literal_option(v) for k, v in stmt.options.items()}
        header = _bool_opt(stmt.options, "header", True)
        delimiter = opts.get("delimiter", ",")
        delimiter = {"\\t": "\t"}.get(delimiter, delimiter)
        null_str = opts.get("nulls", "\\N")
        quoted = _bool_opt(stmt.options, "quoted", True)
        file_type = opts.get("file_type", "csv").lower()
        if file_type not in ("csv",):
            fail(unsupported(f"COPY TO file_type {file_type}"))
        if os.path.exists(stmt.path):
            fail(f"COPY TO: file {stmt.path} already exists.")
        parent = os.path.dirname(os.path.abspath(stmt.path))
        if not os.path.isdir(parent):
            fail(f"COPY TO: directory {parent} does not exist.")
        table = self._run_query(sess, sql_text)
        cur = self._cursor(sess)
        view = f"__sandbox_out_{secrets.token_hex(4)}"
        quoted_path = stmt.path.replace("'", "''")
        text_cols = [
            q(f.name)
            for f in table.schema
            if pa.types.is_string(f.type)
            or pa.types.is_large_string(f.type)
            or pa.types.is_string_view(f.type)
            or pa.types.is_dictionary(f.type)
        ]
        force = f", FORCE_QUOTE ({', '.join(text_cols)})" if quoted and text_cols else ""
        if not quoted:
            force = ", QUOTE ''"
        cur.register(view, table)
        try:
            cur.execute(
                f"COPY (SELECT * FROM {q(view)}) TO '{quoted_path}' "
                f"(FORMAT CSV, HEADER {str(header).lower()}, DELIMITER ?, NULLSTR ?{force})",
                [delimiter, null_str],
            )
        finally:
            with contextlib.suppress(duckdb.Error):
                cur.unregister(view)
        return None

    # -- DUMP / RESTORE ----------------------------------------------------------------------------
    def _dump_restore(self, sess: Session, stmt: hsql.DumpRestore) -> None:
        compression = hsql.literal_option(stmt.options.get("compression", "gzip")).lower()
        if compression not in ("gzip", "lz4", "none"):
            fail(f"Compression {compression} is not supported (use 'gzip', 'lz4' or 'none').")
        if stmt.restore:
            self._restore(sess, stmt.table, stmt.path, compression)
        else:
            self._dump(sess, stmt.table, stmt.path, compression)

    def _dump(self, sess: Session, name: str, path: str, compression: str) -> None:
        cat = self.cat
        t = cat.table(sess.db, name)
        if t is None:
            fail(f"Table {name} does not exist.")
        if not cat.has_table_priv(sess.user, t, "SELECT"):
            fail(no_privileges(sess.user, t.name))
        if os.path.exists(path):
            fail(f"Archive {path} already exists.")
        with self.db.write_lock:
            t = self.cat.table(sess.db, name)
            assert t is not None
            cur = self.db.cursor()
            data = cur.sql(f"SELECT * FROM {epochs.view_ref(t)}").to_arrow_table()
            epoch = t.epoch
            meta = {
                "format": "heavydb-sandbox-dump",
                "version": 1,
                "table": t.name,
                "epoch": epoch,
                "max_rollback_epochs": t.max_rollback_epochs,
                "fragment_size": t.fragment_size,
                "page_size": t.page_size,
                "max_rows": t.max_rows,
                "columns": [
                    {"name": c.name, "type": ht.describe(c.type), "default": c.default}
                    for c in t.columns
                ],
                "rows": data.num_rows,
            }
            schema_sql = self.create_table_sql(t, "@T")
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, data.schema) as w:
            w.write_table(data)
        members = {
            "_table.sql": schema_sql.encode(),
            "_table.epoch": str(epoch).encode(),
            "_table.json": json.dumps(meta, indent=1).encode(),
            "data.arrow": sink.getvalue().to_pybytes(),
        }
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            for fname, blob in members.items():
                info = tarfile.TarInfo(fname)
                info.size = len(blob)
                info.mtime = int(time.time())
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(blob))
        payload = raw.getvalue()
        if compression == "gzip":
            payload = gzip.compress(payload, compresslevel=6)
        elif compression == "lz4":
            payload = lz4.frame.compress(payload)
        try:
            with open(path, "xb") as f:
                f.write(payload)
        except FileExistsError:
            fail(f"Archive {path} already exists.")
        except OSError as e:
            fail(internal_command_error(e.errno or 0, e.strerror or str(e)))

    @staticmethod
    def _read_archive(path: str, compression: str) -> dict[str, bytes]:
        with open(path, "rb") as f:
            blob = f.read()
        if blob[:2] == b"\x1f\x8b":
            actual = "gzip"
        elif blob[:4] == b"\x04\x22\x4d\x18":
            actual = "lz4"
        else:
            actual = "none"
        if actual != compression:
            fail(
                "An error occurred while executing an internal command. Error code: 2, "
                f"message: archive {path} is not {compression}-compressed (found {actual})"
            )
        if actual == "gzip":
            blob = gzip.decompress(blob)
        elif actual == "lz4":
            blob = lz4.frame.decompress(blob)
        out: dict[str, bytes] = {}
        try:
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
                for m in tar.getmembers():
                    fh = tar.extractfile(m)
                    if fh is not None:
                        out[m.name] = fh.read()
        except tarfile.TarError as e:
            fail(internal_command_error(2, str(e)))
        if "_table.json" not in out or "data.arrow" not in out:
            fail(f"Archive {path} is not a HeavyDB sandbox table dump.")
        return out

    def _restore(self, sess: Session, name: str, path: str, compression: str) -> None:
        if not os.path.exists(path):
            fail(f"Archive {path} does not exist.")
        with self.db.write() as (cur, cat):
            if cat.table(sess.db, name) is not None:
                fail(f"Table {name} exists.")
            self._check_create(cat, sess, name)
            members = self._read_archive(path, compression)
            meta = json.loads(members["_table.json"])
            specs = [
                hsql.ColumnSpec(c["name"], ht.undescribe(c["type"]), c.get("default"))
                for c in meta["columns"]
            ]
            opts = {
                "max_rollback_epochs": str(meta["max_rollback_epochs"]),
                "fragment_size": str(meta["fragment_size"]),
                "page_size": str(meta["page_size"]),
                "max_rows": str(meta["max_rows"]),
            }
            t = self._new_table(cat, sess, name, specs, opts)
            epochs.create_storage(cur, t)
            data = pa.ipc.open_file(pa.py_buffer(members["data.arrow"])).read_all()
            epoch = int(meta["epoch"])
            loaders.append_arrow(cur, t, data, list(range(len(t.columns))), max(epoch, 0))
            t.epoch = epoch
            t.floor = epoch

    # ------------------------------------------------------------------------------------------
    # sql_execute_df / sql_validate
    # ------------------------------------------------------------------------------------------
    @_convert_errors
    def sql_execute_df(
        self,
        session: str,
        query: str,
        device_type: int,
        device_id: int,
        first_n: int,
        transport_method: int,
    ) -> TDataFrame:
        sess = self._session(session)
        if device_type == TDeviceType.GPU:
            fail("GPU mode is not allowed in this session")
        stmt = hsql.parse(query or "")
        if not isinstance(stmt, hsql.Query) or stmt.explain:
            fail("DDL or update DML are not unsupported by current thrift API")
        started = time.perf_counter()
        with self._running(sess, stmt.sql):
            rs = self._select(sess, stmt)
        exec_ms = int((time.perf_counter() - started) * 1000)
        conv_start = time.perf_counter()
        table = rs.table
        if first_n is not None and first_n >= 0:
            table = table.slice(0, first_n)
        arrays = []
        for i, t in enumerate(rs.types):
            col = table.column(i).combine_chunks()
            if t.datum == TDatumType.STR and t.encoding == TEncodingType.DICT:
                col = pc.dictionary_encode(col.cast(pa.string()))
                col = col.cast(pa.dictionary(pa.int32(), pa.string()))
            elif pa.types.is_string_view(col.type) or pa.types.is_large_string(col.type):
                col = col.cast(pa.string())
            arrays.append(col)
        out = pa.table(arrays, names=rs.names)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, out.schema) as w:
            w.write_table(out)
        buf = sink.getvalue().to_pybytes()
        conv_ms = int((time.perf_counter() - conv_start) * 1000)
        if transport_method == TArrowTransport.SHARED_MEMORY:
            key = self._shm.put(buf)
            self._shm_keys.add(key)
            return TDataFrame(
                sm_handle=b"",
                sm_size=0,
                df_handle=struct.pack("<L", key),
                df_size=len(buf),
                execution_time_ms=exec_ms,
                arrow_conversion_time_ms=conv_ms,
                df_buffer=b"",
            )
        return TDataFrame(
            sm_handle=b"",
            sm_size=0,
            df_handle=b"",
            df_size=len(buf),
            execution_time_ms=exec_ms,
            arrow_conversion_time_ms=conv_ms,
            df_buffer=buf,
        )

    @_convert_errors
    def deallocate_df(self, session: str, df: TDataFrame, device_type: int, device_id: int) -> None:
        self._session(session)
        if device_type == TDeviceType.GPU:
            fail("Current data frame handle is not bookkept or been inserted twice")
        if df.df_handle and len(df.df_handle) == 4:
            key = struct.unpack("<L", df.df_handle)[0]
            if key in self._shm_keys:
                self._shm.free(key)
                self._shm_keys.discard(key)

    @_convert_errors
    def sql_validate(self, session: str, query: str) -> list[TColumnType]:
        sess = self._session(session)
        stmt = hsql.parse(query or "")
        if not isinstance(stmt, hsql.Query) or stmt.explain:
            fail("Can only validate SELECT statements.")
        sql_text, used = hsql.translate_query(stmt.ast, self._resolver(sess, self.cat))
        self._check_select(sess, used)
        table = self._cursor(sess).sql(f"SELECT * FROM ({sql_text}) LIMIT 0").to_arrow_table()
        return results.row_descriptor(list(table.column_names), self._result_types(table, used))

    # ------------------------------------------------------------------------------------------
    # loads
    # ------------------------------------------------------------------------------------------
    def _load(
        self,
        session: str,
        table_name: str,
        what: str,
        build: Callable[[Table, list[int | None]], pa.Table],
        n_given: int,
        column_names: list[str] | None,
    ) -> None:
        sess = self._session(session)
        self._check_read_only(what)
        with self.db.write() as (cur, cat):
            t = self._table(cat, sess.db, table_name)
            if not cat.has_table_priv(sess.user, t, "INSERT"):
                fail(no_insert_privileges(sess.user, t.name))
            mapping = loaders.column_mapping(t, column_names, n_given)
            data = build(t, mapping)
            epoch = epochs.next_epoch(t)
            loaders.append_arrow(cur, t, data, mapping, epoch)
            epochs.commit_epoch(cur, t, epoch)

    @_convert_errors
    def load_table_binary_arrow(
        self, session: str, table_name: str, arrow_stream: bytes, use_column_names: bool
    ) -> None:
        self._session(session)
        self._check_read_only("load_table_binary_arrow")
        data = loaders.read_arrow_stream(arrow_stream)
        names = list(data.column_names) if use_column_names else None
        self._load(
            session,
            table_name,
            "load_table_binary_arrow",
            lambda _t, _m: data,
            data.num_columns,
            names,
        )

    @_convert_errors
    def load_table_binary_columnar(
        self, session: str, table_name: str, cols: list[TColumn], column_names: list[str] | None
    ) -> None:
        cols = cols or []
        self._load(
            session,
            table_name,
            "load_table_binary_columnar",
            lambda t, m: loaders.columns_to_arrow(t, cols, m),
            len(cols),
            column_names,
        )

    @_convert_errors
    def load_table(
        self, session: str, table_name: str, rows: list[TStringRow], column_names: list[str] | None
    ) -> None:
        self._session(session)
        if not rows:
            fail("No rows to insert")
        self._load(
            session,
            table_name,
            "load_table",
            lambda t, m: loaders.string_rows_to_arrow(t, rows, m),
            len(rows[0].cols or []),
            column_names,
        )

    @_convert_errors
    def load_table_binary(
        self, session: str, table_name: str, rows: list[TRow], column_names: list[str] | None
    ) -> None:
        self._session(session)
        if not rows:
            fail("No rows to insert")
        self._load(
            session,
            table_name,
            "load_table_binary",
            lambda t, m: loaders.datum_rows_to_arrow(t, rows, m),
            len(rows[0].cols or []),
            column_names,
        )

    @_convert_errors
    def create_table(
        self,
        session: str,
        table_name: str,
        row_desc: list[TColumnType],
        create_params: TCreateParams | None,
    ) -> None:
        sess = self._session(session)
        self._check_read_only("create_table")
        if table_name.upper() in _RESERVED:
            fail(f"Invalid table name (reserved keyword): {table_name}")
        if not _SANE_NAME.match(table_name):
            fail(f"Invalid characters in table name: {table_name}")
        specs = []
        for col in row_desc or []:
            name = col.col_name or ""
            if name.upper() in _RESERVED:
                fail(f"Invalid column name (reserved keyword): {name}")
            if not _SANE_NAME.match(name):
                fail(f"Invalid characters in column name: {name}")
            specs.append(
                hsql.ColumnSpec(
                    name, ht.from_thrift(col.col_type or TTypeInfo()), col.default_value
                )
            )
        stmt = hsql.CreateTable(f"CREATE TABLE {table_name}", table_name, specs, {})
        self._create_table_stmt(sess, stmt)

    @_convert_errors
    def import_table(
        self, session: str, table_name: str, file_name: str, copy_params: TCopyParams
    ) -> None:
        sess = self._session(session)
        self._check_read_only("import_table")
        cp = copy_params or TCopyParams()
        opts: dict[str, str] = {}
        if cp.delimiter:
            opts["delimiter"] = f"'{cp.delimiter}'"
        if cp.null_str:
            opts["nulls"] = f"'{cp.null_str}'"
        if cp.has_header == 1:  # NO_HEADER
            opts["header"] = "'false'"
        if cp.quote:
            opts["quote"] = f"'{cp.quote}'"
        self._copy_from(
            sess,
            hsql.CopyFrom(f"COPY {table_name} FROM '{file_name}'", table_name, file_name, opts),
        )


def _duck_of_arrow(t: pa.DataType) -> str:
    """The DuckDB type a result column of Arrow type ``t`` had (enough to compare with ``hint``)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    mapping = {
        pa.bool_(): "BOOLEAN",
        pa.int8(): "TINYINT",
        pa.int16(): "SMALLINT",
        pa.int32(): "INTEGER",
        pa.int64(): "BIGINT",
        pa.float32(): "FLOAT",
        pa.float64(): "DOUBLE",
        pa.date32(): "DATE",
        pa.timestamp("s"): "TIMESTAMP_S",
        pa.timestamp("ms"): "TIMESTAMP_MS",
        pa.timestamp("us"): "TIMESTAMP",
        pa.timestamp("ns"): "TIMESTAMP_NS",
        pa.time64("us"): "TIME",
    }
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "VARCHAR"
    return mapping.get(t, str(t))
