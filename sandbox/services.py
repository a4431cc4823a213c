"""Real servers for the sandbox and the integration tests: MariaDB, Redis and moto's S3.

Each `start_*` function starts one server on loopback (127.0.0.1) on a free port (or the given
one), detached in its own session, with its state and log under `state_dir`, and returns a
`sandbox.proc.Service` once the server answers; `service.stop()` stops it and leaves no listener
behind. Calling a `start_*` function on a fresh directory initialises it; calling it again on an
existing directory (after a stop) restarts the server on the data already there; starting
MariaDB on a directory whose server is still running raises ServiceError (check with
`sandbox.proc.load_services` / `Service.alive()` first).

- MariaDB: its own datadir, socket and pid file; ROW binlog with full row images (so binlog-based
  point-in-time recovery and flashback can be drilled), GTIDs in the domain of its server id;
  root has an empty password over the socket and the given one (default empty) over TCP from
  loopback only (the server binds 127.0.0.1 and skips name resolution).
  `ensure_mysql_accounts` creates the archive database and the application and recovery users.
- Redis: no persistence by default (`--save "" --appendonly no`); `persistent=True` keeps an
  append-only file (the sandbox world's session stores survive a restart).
- PostgreSQL: the database of the sandbox's Prefect server (Prefect's production backend; on
  SQLite its single writer delays the automations' actions under a drill's event load). One
  account with a password (scram-sha-256), TCP on loopback only, no Unix socket; run as the
  `postgres` account (else `nobody`) when started by root, since PostgreSQL refuses root.
- moto: the S3 stand-in, moto's server run by `sandbox.s3store`, which keeps S3's state on disk
  under `state_dir/data`: a stop and start (or a crash, minus the last 2 seconds) keeps every
  bucket and object version. moto's other AWS mocks stay in memory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sandbox.proc import (
    LOOPBACK,
    Service,
    ServiceError,
    free_port,
    primary_group,
    start_listening,
)

MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB_CANDIDATES = ("mariadb-install-db", "mysql_install_db")

# Kept small on purpose: the machine is shared with many services.
_MARIADB_MEMORY = (
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=16M",
    "--innodb-log-buffer-size=4M",
    "--key-buffer-size=4M",
    "--aria-pagecache-buffer-size=8M",
    "--max-connections=100",
    "--performance-schema=OFF",
    "--table-open-cache=256",
    "--thread-cache-size=4",
)


def _install_db_binary() -> str:
    for name in INSTALL_DB_CANDIDATES:
        found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin")
        if found:
            return found
    raise ServiceError("mariadb: neither mariadb-install-db nor mysql_install_db is installed")


def _initialise_mariadb(datadir: Path, log_path: Path) -> None:
    """Create the system tables once; a datadir that already has them is left alone."""
    if (datadir / "mysql" / "user.frm").exists() or (
        datadir / "mysql" / "global_priv.MAI"
    ).exists():
        return
    datadir.mkdir(parents=True, exist_ok=True)
    tmpdir = _private_tmpdir(datadir)
    argv = [
        _install_db_binary(),
        "--no-defaults",
        f"--datadir={datadir}",
        # passed on to the bootstrap server: see _private_tmpdir
        f"--tmpdir={tmpdir}",
        "--user=root",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        "--skip-name-resolve",
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=180
        )
    if done.returncode != 0:
        raise ServiceError(f"mariadb: {argv[0]} failed with code {done.returncode}; see {log_path}")


def _private_tmpdir(datadir: Path) -> Path:
    """A temporary directory of this server's own, beside its datadir.

    A MariaDB server deletes every `#sql*` file in its tmpdir when it starts; with the shared
    /tmp, one server starting (the other environment's, or the machine's own) deleted another
    one's bootstrap tables mid-initialisation ("Unknown table 'mysql.tmp_user_sys'").
    """
    tmpdir = datadir.parent / "tmp"
    tmpdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return tmpdir


def _mysql_connect(socket_path: str, **kwargs: object):  # type: ignore[no-untyped-def]
    import pymysql

    return pymysql.connect(
        unix_socket=socket_path,
        user="root",
        password="",
        connect_timeout=5,
        read_timeout=30,
        write_timeout=30,
        autocommit=True,
        **kwargs,  # type: ignore[arg-type]
    )


def _socket_answers(socket_path: str) -> bool:
    try:
        con = _mysql_connect(socket_path)
    except Exception:
        return False
    try:
        with con.cursor() as cur:
            cur.execute("SELECT 1")
        return True
    except Exception:
        return False
    finally:
        con.close()


def start_mariadb(
    state_dir: Path,
    port: int | None = None,
    *,
    server_id: int = 1,
    root_password: str = "",
    name: str = "mariadb",
) -> Service:
    """Start a MariaDB server of its own under state_dir (initialising the datadir if needed).

    Root connects with an empty password over `extra["socket"]` (the local administration path
    of the sandbox) and over TCP on 127.0.0.1 with `root_password` (empty by default, for the
    integration tests). `server_id` is also the server's GTID domain, so two servers of one
    world (blue and green, possibly replicating) never mint the same GTIDs.
    """
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    datadir = state_dir / "data"
    socket_path = state_dir / "mariadb.sock"
    pid_file = state_dir / "mariadb.pid"
    log_path = state_dir / "mariadb.log"
    port = port or free_port()

    _initialise_mariadb(datadir, log_path)
    # A stale socket file from a killed server would make the readiness check lie.
    if socket_path.exists() and not _socket_answers(str(socket_path)):
        socket_path.unlink(missing_ok=True)
    elif socket_path.exists():
        raise ServiceError(f"mariadb: a server is already running on {socket_path}")

    argv = [
        MARIADBD,
        "--no-defaults",
        f"--datadir={datadir}",
        f"--tmpdir={_private_tmpdir(datadir)}",
        f"--socket={socket_path}",
        f"--pid-file={pid_file}",
        f"--port={port}",
        f"--bind-address={LOOPBACK}",
        "--user=root",
        "--skip-name-resolve",
        "--log-bin=mariadb-bin",
        "--binlog-format=ROW",
        "--binlog-row-image=FULL",
        f"--server-id={server_id}",
        f"--gtid-domain-id={server_id}",
        "--log-slave-updates",
        "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_unicode_ci",
        "--default-time-zone=+00:00",
        f"--log-error={log_path}",
        *_MARIADB_MEMORY,
    ]
    service = start_listening(
        name,
        argv,
        port,
        state_dir / "mariadb.stdout.log",
        url=f"mysql://root@{LOOPBACK}:{port}/",
        ready=lambda: _socket_answers(str(socket_path)),
        timeout=90,
        extra={"socket": str(socket_path), "datadir": str(datadir), "error_log": str(log_path)},
    )
    try:
        _ensure_root_over_tcp(str(socket_path), root_password)
    except Exception:
        service.stop()
        raise
    return service


def _ensure_root_over_tcp(socket_path: str, password: str = "") -> None:
    """With skip-name-resolve, TCP clients match IP hosts only: make root@127.0.0.1 exist, with
    the given password (set again on every start, so the server and the caller agree)."""
    con = _mysql_connect(socket_path)
    try:
        with con.cursor() as cur:
            cur.execute(
                "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY %s", (password,)
            )
            cur.execute("ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY %s", (password,))
            cur.execute("GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION")
    finally:
        con.close()


_IDENT = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def _ident(value: str, what: str) -> str:
    if not _IDENT.match(value):
        raise ValueError(f"{what} {value!r}: only letters, digits and underscores are allowed")
    return value


def ensure_mysql_accounts(
    service: Service,
    database: str,
    app_user: str,
    app_password: str,
    recovery_user: str,
    recovery_password: str,
) -> None:
    """Create the archive database, the application user and the recovery user (idempotent).

    The application user gets SELECT, INSERT, UPDATE, DELETE on the database and nothing global
    (no SUPER, so `read_only` stops it). The recovery user gets ALL on the database plus RELOAD,
    PROCESS, REPLICATION CLIENT and BINLOG MONITOR (MariaDB 10.11's name for reading binlog
    positions). Both may connect from loopback over TCP and over the socket. Passwords are reset
    to the given ones on every call.
    """
    db = _ident(database, "database")
    users = [
        (_ident(app_user, "user"), app_password),
        (_ident(recovery_user, "user"), recovery_password),
    ]
    con = _mysql_connect(service.extra["socket"])
    try:
        with con.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4")
            for host in ("127.0.0.1", "localhost"):
                for user, password in users:
                    cur.execute(
                        "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s", (user, host, password)
                    )
                    cur.execute("ALTER USER %s@%s IDENTIFIED BY %s", (user, host, password))
                cur.execute(
                    f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{db}`.* TO %s@%s", (app_user, host)
                )
                cur.execute(f"GRANT ALL PRIVILEGES ON `{db}`.* TO %s@%s", (recovery_user, host))
                cur.execute(
                    "GRANT RELOAD, PROCESS, REPLICATION CLIENT, BINLOG MONITOR ON *.* TO %s@%s",
                    (recovery_user, host),
                )
    finally:
        con.close()


def start_redis(
    state_dir: Path, port: int | None = None, *, persistent: bool = False, name: str = "redis"
) -> Service:
    """Start a Redis server; url is redis://127.0.0.1:P/0.

    Without persistence by default (the integration tests); `persistent` keeps an append-only
    file in state_dir (fsync every second, rewritten on stop), so a restart keeps the sessions:
    the sandbox world's `redis-down` fault and `down`/`up` lose nothing.
    """
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        LOOPBACK,
        "--save",
        "",
        "--appendonly",
        "yes" if persistent else "no",
        "--appendfsync",
        "everysec",
        "--dir",
        str(state_dir),
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        "--maxmemory",
        "256mb",
        "--pidfile",
        str(state_dir / "redis.pid"),
    ]
    return start_listening(
        name,
        argv,
        port,
        state_dir / "redis.log",
        url=f"redis://{LOOPBACK}:{port}/0",
        ready=lambda: _redis_answers(port),
        timeout=30,
    )


def _redis_answers(port: int) -> bool:
    import socket

    try:
        with socket.create_connection((LOOPBACK, port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_moto(state_dir: Path, port: int | None = None) -> Service:
    """Start the S3 stand-in (moto's server, `python -m sandbox.s3store`) on loopback.

    S3's state persists in `state_dir/data` (see sandbox/s3store.py): restored before the port
    opens, snapshotted at most 2 s after a change and on SIGTERM, so a stop and start on the
    same state_dir (or a crash, minus the last 2 s) keeps every bucket, object version and
    retention. The log is `state_dir/moto.log`; the URL and the readiness check (`/moto-api/`
    answers) are moto's own. `extra["data_dir"]` names the data directory.
    """
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    data_dir = state_dir / "data"
    port = port or free_port()
    argv = [
        sys.executable,
        "-m",
        "sandbox.s3store",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]
    root = Path(__file__).resolve().parents[1]
    env = {
        # moto's own dummy credentials so nothing reaches for real AWS configuration.
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "PYTHONUNBUFFERED": "1",
        # `-m sandbox.s3store` must import this checkout's package whatever the caller's cwd.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    url = f"http://{LOOPBACK}:{port}"
    return start_listening(
        "moto",
        argv,
        port,
        state_dir / "moto.log",
        url=url,
        env=env,
        # restoring happens before the port opens; a large store only makes this slower
        ready=lambda: _http_answers(f"{url}/moto-api/"),
        timeout=120,
        extra={"data_dir": str(data_dir)},
    )


# Kept small on purpose, like MariaDB's: Prefect's server needs a handful of connections.
_POSTGRES_SETTINGS = (
    "shared_buffers=32MB",
    "max_connections=60",
    "unix_socket_directories=",
    "listen_addresses=127.0.0.1",
    "logging_collector=off",
    "log_min_messages=warning",
)


def pg_binary(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, else the newest Debian one (Debian keeps them in
    /usr/lib/postgresql/<version>/bin, off PATH)."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
        reverse=True,
    )
    return str(versions[0]) if versions else None


def _pg_binary(name: str) -> str:
    found = pg_binary(name)
    if found is None:
        raise ServiceError(f"postgres: {name} is not installed (Debian package postgresql)")
    return found


def _postgres_user() -> str | None:
    """The account to run PostgreSQL as: None (ourselves) unless we are root."""
    import pwd

    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise ServiceError("postgres: running as root and neither a postgres nor a nobody account")


def _chown(paths: list[Path], user: str) -> None:
    """Give these paths (not their contents) to `user`: what initdb needs to write."""
    import pwd

    entry = pwd.getpwnam(user)
    for path in paths:
        os.chown(path, entry.pw_uid, entry.pw_gid)


def start_postgres(
    state_dir: Path, port: int | None = None, *, user: str, password: str, database: str
) -> Service:
    """Start a PostgreSQL server on loopback with `database` owned by `user` (password auth).

    The cluster lives in `state_dir/data` (initialised on first start, reused after); the log
    is `state_dir/postgres.log`. The password never reaches argv or the log: initdb reads it
    from a file that is removed at once. url is postgresql://user@127.0.0.1:P/database.
    """
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "postgres.log"
    port = port or free_port()
    run_as = _postgres_user()
    data = _pg_data_dir(state_dir, run_as)
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)
        pwfile = data.parent / "initdb.pw"
        pwfile.write_text(password + "\n")
        os.chmod(pwfile, 0o600)
        if run_as:  # initdb writes the cluster under data.parent and reads the password file
            _chown(list(dict.fromkeys([state_dir, data.parent, pwfile])), run_as)
        try:
            argv = [_pg_binary("initdb"), "-D", str(data), "-U", user, "-A", "scram-sha-256"]
            argv += [f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale", "--no-sync"]
            with open(log_path, "ab") as log:
                done = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=str(state_dir),
                    timeout=120,
                    **({"user": run_as, "group": primary_group(run_as)} if run_as else {}),
                )
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            raise ServiceError("postgres: initdb failed; log tail:\n" + _tail(log_path))
    argv = [_pg_binary("postgres"), "-D", str(data), "-p", str(port)]
    for setting in _POSTGRES_SETTINGS:
        argv += ["-c", setting]
    service = start_listening(
        "postgres",
        argv,
        port,
        log_path,
        url=f"postgresql://{user}@{LOOPBACK}:{port}/{database}",
        cwd=state_dir,
        ready=lambda: _postgres_answers(port, user, password, "postgres"),
        timeout=60,
        extra={"data_dir": str(data), "user": user, "database": database},
        user=run_as,
    )
    _ensure_pg_database(port, user, password, database)
    return service


PG_DATA_LOCATION = "data-location"


def _pg_data_dir(state_dir: Path, run_as: str | None) -> Path:
    """Where the cluster lives: `state_dir/data`, unless PostgreSQL runs as another account
    (we are root) that cannot reach state_dir (a parent such as pytest's 0700 base directory);
    then a private directory of its own under the system temp dir, named in
    `state_dir/data-location` (found again by the next start, removed by `purge_postgres`)."""
    recorded = state_dir / PG_DATA_LOCATION
    if recorded.exists():
        return Path(recorded.read_text().strip())
    if run_as is None or _reachable_by(state_dir, run_as):
        return state_dir / "data"
    import tempfile

    outside = Path(tempfile.mkdtemp(prefix="tbs-prefect-db-"))
    os.chmod(outside, 0o700)
    recorded.write_text(str(outside / "data") + "\n")
    return outside / "data"


def _reachable_by(directory: Path, user: str) -> bool:
    import pwd

    entry = pwd.getpwnam(user)
    os.chown(directory, entry.pw_uid, entry.pw_gid)
    probe = subprocess.run(
        ["test", "-w", str(directory), "-a", "-x", str(directory)],
        user=user,
        group=entry.pw_gid,
        extra_groups=[],
        check=False,
    )
    return probe.returncode == 0


def purge_postgres(state_dir: Path) -> None:
    """Remove a cluster that lives outside state_dir (see `_pg_data_dir`); the server must be
    stopped. Nothing to do when the data is inside state_dir."""
    recorded = Path(state_dir) / PG_DATA_LOCATION
    if recorded.exists():
        outside = Path(recorded.read_text().strip()).parent
        if outside.name.startswith("tbs-prefect-db-"):
            shutil.rmtree(outside, ignore_errors=True)
        recorded.unlink(missing_ok=True)


def _tail(path: Path) -> str:
    from sandbox.proc import log_tail

    return log_tail(path)


def _pg_run(port: int, user: str, password: str, database: str, sql: str | None) -> Any:
    import asyncio

    import asyncpg

    async def go() -> Any:
        conn = await asyncpg.connect(
            host=LOOPBACK, port=port, user=user, password=password, database=database, timeout=2
        )
        try:
            return await conn.fetchval(sql or "SELECT 1")
        finally:
            await conn.close()

    return asyncio.run(go())


def _postgres_answers(port: int, user: str, password: str, database: str) -> bool:
    try:
        return _pg_run(port, user, password, database, None) == 1
    except Exception:
        return False


def _ensure_pg_database(port: int, user: str, password: str, database: str) -> None:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", database):
        raise ServiceError(f"postgres: database name {database!r} is not a plain identifier")
    exists = _pg_run(
        port,
        user,
        password,
        "postgres",
        f"SELECT count(*) FROM pg_database WHERE datname = '{database}'",
    )
    if not exists:
        _pg_run(port, user, password, "postgres", f"CREATE DATABASE {database}")


def _http_answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status < 500)
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def wait_stopped(service: Service, timeout: float = 10.0) -> None:
    """Stop a service and wait until its port no longer accepts connections."""
    from sandbox.proc import port_open

    service.stop(timeout)
    deadline = time.monotonic() + timeout
    while port_open(service.host, service.port) and time.monotonic() < deadline:
        time.sleep(0.05)
    if port_open(service.host, service.port):
        raise ServiceError(f"{service.name}: still listening on {service.port} after stop")
