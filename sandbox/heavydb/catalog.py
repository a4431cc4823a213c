"""The sandbox's system catalog: databases, users, roles, privileges, tables, sessions.

Everything but the sessions is persisted as one JSON document in the DuckDB file itself
(``_sandbox.catalog``), written in the same DuckDB transaction as the data change it
describes, so a table's rows, its epoch and its catalog entry never disagree after a crash
or a failed statement.  Sessions live in memory only, as in HeavyDB.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import hmac
import json
import os
import secrets
import string
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import duckdb

from . import types as ht
from .types import HeavyType

ROOT_USER = "admin"
DEFAULT_DB = "heavyai"
DEFAULT_PASSWORD = "HyperInteractive"
DEFAULT_MAX_ROLLBACK_EPOCHS = 3
DEFAULT_FRAGMENT_SIZE = 32000000
DEFAULT_PAGE_SIZE = 2097152
DEFAULT_MAX_ROWS = 4611686018427387904
DEFAULT_MAX_CHUNK_SIZE = 1073741824

#: privileges that can be granted on a table (or on a database, for all its tables)
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "DROP", "ALTER")
#: database-level privileges (besides the table ones above)
DATABASE_PRIVILEGES = ("ACCESS", "CREATE")

IDLE_SESSION_SECONDS = 60 * 60  # --idle-session-duration default (minutes)
MAX_SESSION_SECONDS = 43200 * 60  # --max-session-duration default (minutes)


class CatalogError(Exception):
    """An error whose message is what HeavyDB reports to the client."""


# --- persisted objects ----------------------------------------------------------------------
@dataclass
class Column:
    id: int
    name: str
    type: HeavyType
    default: str | None = None  # SQL literal, as written in CREATE TABLE


@dataclass
class Table:
    id: int
    db: str
    name: str
    columns: list[Column]
    owner: str
    data_name: str
    max_rollback_epochs: int = DEFAULT_MAX_ROLLBACK_EPOCHS
    fragment_size: int = DEFAULT_FRAGMENT_SIZE
    page_size: int = DEFAULT_PAGE_SIZE
    max_rows: int = DEFAULT_MAX_ROWS
    max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE
    epoch: int = 0
    floor: int = 0
    next_column_id: int = 1
    options: dict[str, str] = field(default_factory=dict)

    def column(self, name: str) -> Column | None:
        low = name.lower()
        for c in self.columns:
            if c.name.lower() == low:
                return c
        return None


@dataclass
class User:
    id: int
    name: str
    password_hash: str
    salt: str
    is_super: bool = False
    can_login: bool = True
    default_db: str = ""


@dataclass
class Database:
    id: int
    name: str
    owner: str


@dataclass
class CatalogState:
    users: dict[str, User] = field(default_factory=dict)  # lower(name) -> User
    roles: dict[str, str] = field(default_factory=dict)  # lower(name) -> name
    role_members: dict[str, list[str]] = field(default_factory=dict)  # lower(grantee) -> roles
    databases: dict[str, Database] = field(default_factory=dict)  # lower(name) -> Database
    tables: dict[int, Table] = field(default_factory=dict)
    grants: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # grantee -> key
    next_user_id: int = 1
    next_db_id: int = 1
    next_table_id: int = 1

    # -- lookups ---------------------------------------------------------------------------
    def user(self, name: str) -> User | None:
        return self.users.get(name.lower())

    def database(self, name: str) -> Database | None:
        return self.databases.get(name.lower())

    def table(self, db: str, name: str) -> Table | None:
        low, dlow = name.lower(), db.lower()
        for t in self.tables.values():
            if t.db.lower() == dlow and t.name.lower() == low:
                return t
        return None

    def tables_in(self, db: str) -> list[Table]:
        dlow = db.lower()
        return sorted((t for t in self.tables.values() if t.db.lower() == dlow), key=lambda t: t.id)

    # -- privileges ------------------------------------------------------------------------
    def grantees_of(self, user: str) -> list[str]:
        """The user and every role granted to it, transitively (lower-case)."""
        out: list[str] = []
        todo = [user.lower()]
        while todo:
            g = todo.pop()
            if g in out:
                continue
            out.append(g)
            todo.extend(r.lower() for r in self.role_members.get(g, []))
        return out

    def _privs(self, user: str, key: str) -> set[str]:
        privs: set[str] = set()
        for g in self.grantees_of(user):
            privs.update(self.grants.get(g, {}).get(key, []))
        return privs

    def is_super(self, user: str) -> bool:
        u = self.user(user)
        return bool(u and u.is_super)

    def has_db_priv(self, user: str, db: str, priv: str) -> bool:
        if self.is_super(user):
            return True
        d = self.database(db)
        if d is None:
            return False
        if d.owner.lower() == user.lower():
            return True
        privs = self._privs(user, db_key(db))
        return priv in privs or "ALL" in privs

    def has_table_priv(self, user: str, table: Table, priv: str) -> bool:
        if self.is_super(user) or table.owner.lower() == user.lower():
            return True
        for key in (table_key(table.db, table.id), db_key(table.db)):
            privs = self._privs(user, key)
            if priv in privs or "ALL" in privs:
                return True
        return False

    def has_any_table_priv(self, user: str, table: Table) -> bool:
        return any(self.has_table_priv(user, table, p) for p in TABLE_PRIVILEGES)

    # -- persistence -----------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(
            {
                "users": {k: vars(u) for k, u in self.users.items()},
                "roles": self.roles,
                "role_members": self.role_members,
                "databases": {k: vars(d) for k, d in self.databases.items()},
                "tables": {
                    str(t.id): {
                        **{k: v for k, v in vars(t).items() if k != "columns"},
                        "columns": [
                            {
                                "id": c.id,
                                "name": c.name,
                                "type": ht.describe(c.type),
                                "default": c.default,
                            }
                            for c in t.columns
                        ],
                    }
                    for t in self.tables.values()
                },
                "grants": self.grants,
                "next_user_id": self.next_user_id,
                "next_db_id": self.next_db_id,
                "next_table_id": self.next_table_id,
            }
        )

    @classmethod
    def from_json(cls, doc: str) -> CatalogState:
        d = json.loads(doc)
        tables: dict[int, Table] = {}
        for tid, td in d["tables"].items():
            cols = [
                Column(c["id"], c["name"], ht.undescribe(c["type"]), c.get("default"))
                for c in td["columns"]
            ]
            rest = {k: v for k, v in td.items() if k != "columns"}
            tables[int(tid)] = Table(columns=cols, **rest)
        return cls(
            users={k: User(**u) for k, u in d["users"].items()},
            roles=d["roles"],
            role_members=d["role_members"],
            databases={k: Database(**v) for k, v in d["databases"].items()},
            tables=tables,
            grants=d["grants"],
            next_user_id=d["next_user_id"],
            next_db_id=d["next_db_id"],
            next_table_id=d["next_table_id"],
        )


def db_key(db: str) -> str:
    return f"db:{db.lower()}"


def table_key(db: str, table_id: int) -> str:
    return f"table:{db.lower()}:{table_id}"


def hash_password(password: str, salt: str | None = None) -> tuple[str, str]:
    salt = salt or secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), 10_000)
    return digest.hex(), salt


def check_password(user: User, password: str) -> bool:
    digest, _ = hash_password(password, user.salt)
    return hmac.compare_digest(digest, user.password_hash)


def data_schema(db: str) -> str:
    """DuckDB schema holding a HeavyDB database's versioned row storage."""
    return f"hdb_{db.lower()}_data"


def view_schema(db: str) -> str:
    """DuckDB schema holding one view per HeavyDB table (the visible rows)."""
    return f"hdb_{db.lower()}"


# --- the DuckDB side ------------------------------------------------------------------------
class SandboxDB:
    """One DuckDB database: a cursor per thread, one writer at a time, the catalog inside."""

    def __init__(self, path: str, admin_password: str) -> None:
        self.path = path
        self._con = duckdb.connect(path)
        self._local = threading.local()
        self.write_lock = threading.RLock()
        self._closed = False
        cur = self.cursor()
        cur.execute("CREATE SCHEMA IF NOT EXISTS _sandbox")
        cur.execute("CREATE TABLE IF NOT EXISTS _sandbox.catalog (id INTEGER, doc VARCHAR)")
        row = cur.execute("SELECT doc FROM _sandbox.catalog WHERE id = 1").fetchone()
        if row is None:
            self.state = self._initial_state(admin_password)
            with self.write_lock:
                cur.execute("BEGIN")
                self.create_db_schemas(cur, DEFAULT_DB)
                cur.execute("INSERT INTO _sandbox.catalog VALUES (1, ?)", [self.state.to_json()])
                cur.execute("COMMIT")
        else:
            self.state = CatalogState.from_json(row[0])
            admin = self.state.user(ROOT_USER)
            if admin is not None and not check_password(admin, admin_password):
                # --admin-password is authoritative at start-up, like a fresh initdb.
                new = copy.deepcopy(self.state)
                u = new.user(ROOT_USER)
                assert u is not None
                u.password_hash, u.salt = hash_password(admin_password)
                with self.write_lock:
                    cur.execute("BEGIN")
                    cur.execute("UPDATE _sandbox.catalog SET doc = ? WHERE id = 1", [new.to_json()])
                    cur.execute("COMMIT")
                self.state = new

    @staticmethod
    def _initial_state(admin_password: str) -> CatalogState:
        st = CatalogState()
        pw, salt = hash_password(admin_password)
        st.users[ROOT_USER] = User(0, ROOT_USER, pw, salt, is_super=True, default_db="")
        st.databases[DEFAULT_DB] = Database(1, DEFAULT_DB, ROOT_USER)
        st.next_user_id = 1
        st.next_db_id = 2
        return st

    @staticmethod
    def create_db_schemas(cur: duckdb.DuckDBPyConnection, db: str) -> None:
        cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{data_schema(db)}"')
        cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{view_schema(db)}"')

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's DuckDB cursor (created on first use)."""
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            if self._closed:
                raise CatalogError("The HeavyDB sandbox server is shutting down")
            cur = self._con.cursor()
            cur.execute("SET TimeZone = 'UTC'")
            cur.execute("SET integer_division = true")
            self._local.cursor = cur
        return cur

    @contextmanager
    def write(self) -> Iterator[tuple[duckdb.DuckDBPyConnection, CatalogState]]:
        """A write transaction: data changes and a new catalog state commit together.

        The body gets the cursor (inside ``BEGIN``) and a private copy of the catalog to
        change; on success both are committed and the copy becomes the live catalog.
        """
        with self.write_lock:
            cur = self.cursor()
            new = copy.deepcopy(self.state)
            cur.execute("BEGIN")
            try:
                yield cur, new
                cur.execute("UPDATE _sandbox.catalog SET doc = ? WHERE id = 1", [new.to_json()])
                cur.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    cur.execute("ROLLBACK")
                raise
            self.state = new

    def close(self) -> None:
        with self.write_lock:
            self._closed = True
            with contextlib.suppress(duckdb.Error):
                self._con.execute("CHECKPOINT")
            self._con.close()


# --- sessions -------------------------------------------------------------------------------
_ALNUM = string.ascii_letters + string.digits


@dataclass
class Session:
    id: str
    user: str
    db: str
    start_time: int
    client_address: str
    last_used: float = field(default_factory=time.time)
    running: list[Any] = field(default_factory=list)  # (query, submitted, cursor)

    @property
    def public_id(self) -> str:
        """HeavyDB's public session id (``SessionInfo::public_session_id``), e.g. ``819-4RDo``.

        The start time's minute (last digit) and second, in local time, then the first four
        characters of the session id.
        """
        st = time.localtime(self.start_time)
        return f"{st.tm_min % 10}{st.tm_sec:02d}-{self.id[:4]}"


class SessionManager:
    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: str, db: str, client_address: str) -> Session:
        with self._lock:
            while True:
                sid = "".join(secrets.choice(_ALNUM) for _ in range(32))
                if sid not in self._sessions:
                    break
            s = Session(sid, user, db, int(time.time()), client_address)
            self._sessions[sid] = s
            return s

    def get(self, session_id: str) -> Session:
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None:
                raise CatalogError("Session not valid or expired.")
            now = time.time()
            if not s.running:
                if now - s.last_used > IDLE_SESSION_SECONDS:
                    del self._sessions[session_id]
                    raise CatalogError("Idle Session Timeout. User should re-authenticate.")
                if now - s.start_time > MAX_SESSION_SECONDS:
                    del self._sessions[session_id]
                    raise CatalogError(
                        "Maximum active Session Timeout. User should re-authenticate."
                    )
            s.last_used = now
            return s

    def drop(self, session_id: str) -> Session:
        with self._lock:
            s = self._sessions.pop(session_id, None)
            if s is None:
                raise CatalogError("Session not valid or expired.")
            return s

    def drop_user(self, user: str) -> int:
        with self._lock:
            ids = [k for k, s in self._sessions.items() if s.user.lower() == user.lower()]
            for k in ids:
                del self._sessions[k]
            return len(ids)

    def drop_db(self, db: str) -> None:
        with self._lock:
            for k in [k for k, s in self._sessions.items() if s.db.lower() == db.lower()]:
                del self._sessions[k]

    def all(self) -> list[Session]:
        with self._lock:
            return sorted(self._sessions.values(), key=lambda s: s.start_time)

    def by_public_id(self, public_id: str) -> Session | None:
        with self._lock:
            for s in self._sessions.values():
                if s.public_id == public_id:
                    return s
            return None


def host_name() -> str:
    return os.uname().nodename
