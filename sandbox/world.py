"""The whole TBS world on one machine: start it, describe it, break it, stop it.

`up(dir)` starts (or reuses) every service below, seeds the dataset once per store, and writes
`dir/tbs.toml` (and `dir/env.sh`) pointing at them; `down(dir)` stops them and keeps their data,
so the next `up` resumes. All of it listens on free loopback ports, chosen once and remembered in
`dir/ports.json`, so the configuration stays valid across restarts.

Topology `separate` (the default, as in production): each environment has its own stores.

| name                        | what                                                          |
|-----------------------------|---------------------------------------------------------------|
| mysql-blue, mysql-green     | a MariaDB server each (own datadir, ROW binlog, GTID domain)  |
| heavydb-blue, heavydb-green | the HeavyDB-wire-compatible server (`python -m sandbox.heavydb`) |
| redis-blue, redis-green     | each environment's session store (append-only file)           |
| netpath-blue, netpath-green | the environment's network path to its stores: TCP proxies that |
|                             | the environment's configuration points at (db-down, db-slow)  |
| app-blue, app-green         | the TBS app stand-in of each environment                      |
| lb                          | the load balancer stand-in: admin API, health checks, metrics, |
|                             | and the users' write feed, which goes to the live environment |
| s3                          | the S3 stand-in (moto), persistent across restarts            |
| sink                        | records webhook / PagerDuty / SMTP deliveries                 |
| prometheus                  | Debian's Prometheus scraping apps, LB and network paths       |
| prefect, executor           | a Prefect server with its own SQLite, the deployments of      |
|                             | prefect.yaml registered on it, and the executor (optional)    |

Topology `shared` (`up(topology="shared")`): one `mysql`, one `heavydb` and one `redis` serve both
environments, as at sites that run blue and green on one data tier.

The world starts as after a cut-over: both environments' stores hold the seeded dataset, green
is live and takes the new writes, blue holds the data as of the cut-over. With
`replicate="green-to-blue"` blue's MariaDB replicates green's (GTID, from the moment it is set up).

Faults (`fault()`): the app's own (throughput, errors, cpu, memory, disk, app-hang), the network
path's (db-down, db-slow), and the world's: `app-down` (the app process stopped, its port closed;
the stores and their paths stay), `s3-down`, `prometheus-down`, `redis-down` (the service
stopped; `clear` starts it again with its data), `mysql-lost` (the environment's MariaDB killed and
its data directory deleted; `clear` brings up an empty server on the same port).

With its Prefect server, `up` also provisions the service accounts `rotate-credentials` rotates
(`tbs_svc` on green's MariaDB and HeavyDB, their passwords in Prefect Secret blocks:
sandbox.security), once: `dir/security.json` records it, and a later `up` only checks that the
blocks and the MariaDB account are still there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import hashlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sandbox.proc import (
    LOOPBACK,
    Service,
    ServiceError,
    free_port,
    load_services,
    pid_alive,
    port_open,
    save_services,
    start_listening,
    stop_pid,
)
from sandbox.standins.faults import FAULT_KINDS, FaultSpecError, validate_fault

Log = Callable[[str], None]

ENVIRONMENTS = ("blue", "green")
TOPOLOGIES = ("separate", "shared")
REPLICATIONS = ("green-to-blue",)
STORE_KINDS = ("mysql", "heavydb", "redis")
SERVER_IDS = {"blue": 1, "green": 2}  # also the GTID domain of each environment's MariaDB
SERVICE_ORDER = (
    "mysql",
    "mysql-blue",
    "mysql-green",
    "heavydb",
    "heavydb-blue",
    "heavydb-green",
    "redis",
    "redis-blue",
    "redis-green",
    "s3",
    "sink",
    "netpath-blue",
    "netpath-green",
    "app-blue",
    "app-green",
    "lb",
    "prometheus",
    "prefect-db",
    "prefect",
    "executor",
)
# down() stops these layers one after the other (services within a layer at once); services
# of no layer (an older world's names) go with the first.
STOP_LAYERS = (
    ("executor", "prefect", "prometheus", "lb"),
    ("app-blue", "app-green", "sink"),
    ("netpath-blue", "netpath-green"),
    (
        "redis",
        "redis-blue",
        "redis-green",
        "s3",
        "heavydb",
        "heavydb-blue",
        "heavydb-green",
        "mysql",
        "mysql-blue",
        "mysql-green",
        "prefect-db",
    ),
)
# Faults the world itself carries out (the others go to an app or a network path).
WORLD_FAULTS = ("app-down", "s3-down", "prometheus-down", "redis-down", "mysql-lost")
PATH_FAULTS = ("db-down", "db-slow")
ALL_FAULT_KINDS = (*FAULT_KINDS, *(k for k in WORLD_FAULTS if k not in FAULT_KINDS))
VERSIONS = {"blue": "1.8.2", "green": "1.9.0"}  # green = the new release, blue = last good
LIVE_AT_CUTOVER = "green"
DATABASE = "tbs_archive"
APP_USER = "tbs_app"
RECOVERY_USER = "tbs_recovery"
REPLICATION_USER = "tbs_repl"
HEAVYDB_PASSWORD = "HyperInteractive"
BUCKET = "tbs-sandbox"
S3_KEYS = ("testing", "testing")  # moto accepts anything; dummy keys keep boto3 off real AWS
PAGERDUTY_ROUTING_KEY = "sandbox-routing-key"
PROMETHEUS = "/usr/bin/prometheus"
# LB health checks at real time, as HAProxy's `inter 2s fall 3 rise 2`.
LB_HEALTH = {"interval": 2.0, "timeout": 1.0, "fall": 3, "rise": 2}
# The service accounts `rotate-credentials` rotates (docs/security.md): the same user on green's
# servers (the live environment), each password in a Prefect Secret block; provisioned by `up`
# when Prefect runs.
SERVICE_ACCOUNT = "tbs_svc"
SERVICE_ACCOUNT_ENV = "green"
SERVICE_ACCOUNT_BLOCKS = {"mysql": "tbs-sandbox-mysql-svc", "heavydb": "tbs-sandbox-heavydb-svc"}
SECURITY_FILE = "security.json"
WORLD_FILE = "world.json"  # the topology and replication this directory was brought up with
FAULTS_FILE = "faults.json"  # the world faults in force
SEED_FILE = "seeded.json"  # store -> rows seeded
NO_PREFECT = (
    "this world runs without its Prefect server, and the service accounts' passwords live in"
    " Prefect Secret blocks, which need a Prefect API: rotate-credentials (and the rotation step"
    " of security-incident) fail ('Prefect Secret block ... cannot be loaded') until the world"
    " is brought up with Prefect (`tbs-emergency sandbox up`, not --no-prefect), or"
    " `PREFECT_API_URL=<api> python -m sandbox.security provision --config <dir>/tbs.toml`"
    " provisions them against another Prefect server"
)
REQUIRED_BINARIES = {
    # binary -> Debian package
    "prometheus": "prometheus",
    "haproxy": "haproxy",
    "mariadbd": "mariadb-server",
    "redis-server": "redis-server",
    "postgres": "postgresql",  # the Prefect server's database
}
ROOT = Path(__file__).resolve().parents[1]


# Where the sandbox's Python processes keep compiled bytecode (see _bytecode_cache).
PYCACHE_DIR = Path.home() / ".cache" / "tbs-emergency" / "pycache"


class WorldError(ServiceError):
    """The sandbox world cannot do what was asked; the message is one line."""


def store_service(kind: str, env: str, topology: str) -> str:
    """The name of the service that holds `kind` (mysql, heavydb, redis) for `env`."""
    return kind if topology == "shared" else f"{kind}-{env}"


def store_services(kind: str, topology: str) -> list[str]:
    """The services of one kind of store, each once."""
    return [kind] if topology == "shared" else [f"{kind}-{env}" for env in ENVIRONMENTS]


def topology_of(sandbox_dir: Path) -> dict[str, Any]:
    """`{"topology", "replicate"}` this directory was brought up with (defaults if never)."""
    data = _read_json(Path(sandbox_dir).resolve() / WORLD_FILE)
    return {"topology": data.get("topology", "separate"), "replicate": data.get("replicate")}


# ------------------------------------------------------------------------------------------------
# Binaries
# ------------------------------------------------------------------------------------------------


def _which(binary: str) -> str | None:
    if binary == "postgres":
        from sandbox.services import pg_binary

        return pg_binary(binary)
    return shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin:/bin")


def ensure_binaries(log: Log = print) -> None:
    """Make sure Prometheus, HAProxy, MariaDB, Redis and PostgreSQL are installed (apt-get
    when root)."""
    missing = sorted({pkg for binary, pkg in REQUIRED_BINARIES.items() if not _which(binary)})
    if not missing:
        return
    command = "apt-get install -y " + " ".join(missing)
    if os.geteuid() != 0:
        raise WorldError(f"missing Debian packages; install them with: sudo {command}")
    log(f"installing {', '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT, "env": env}
    if subprocess.run(install, **quiet).returncode != 0:  # type: ignore[call-overload]
        subprocess.run(["apt-get", "update"], **quiet)  # type: ignore[call-overload]
        if subprocess.run(install, **quiet).returncode != 0:  # type: ignore[call-overload]
            raise WorldError(f"apt-get could not install {', '.join(missing)}; try: {command}")
    still = sorted({pkg for binary, pkg in REQUIRED_BINARIES.items() if not _which(binary)})
    if still:
        raise WorldError(f"still missing after apt-get: {', '.join(still)}")


def heavydb_available() -> bool:
    """Whether the project's HeavyDB-wire-compatible server is present in this checkout."""
    try:
        return importlib.util.find_spec("sandbox.heavydb.__main__") is not None
    except (ImportError, ValueError):
        return False


@contextlib.contextmanager
def _bytecode_cache() -> Iterator[None]:
    """Let the Python servers `up` starts (and this process) cache their compiled bytecode.

    With PYTHONDONTWRITEBYTECODE set, every start of a stand-in, moto or Prefect recompiles every
    module it imports: measured here, importing Prefect's server costs 17 s of CPU that way and
    8 s from a cache; the app stand-in's imports 4 s against 1.5 s. The cache lives outside the
    checkout (PYTHONPYCACHEPREFIX); TBS_SANDBOX_PYCACHE=off keeps the caller's setting,
    TBS_SANDBOX_PYCACHE=DIR moves the cache.
    """
    choice = os.environ.get("TBS_SANDBOX_PYCACHE", "")
    if choice == "off" or os.environ.get("PYTHONPYCACHEPREFIX"):
        yield
        return
    prefix = str(Path(choice) if choice else PYCACHE_DIR)
    saved_env = os.environ.get("PYTHONDONTWRITEBYTECODE")
    saved_sys = (sys.dont_write_bytecode, sys.pycache_prefix)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    sys.dont_write_bytecode, sys.pycache_prefix = False, prefix
    try:
        yield
    finally:
        os.environ.pop("PYTHONPYCACHEPREFIX", None)
        if saved_env is not None:
            os.environ["PYTHONDONTWRITEBYTECODE"] = saved_env
        sys.dont_write_bytecode, sys.pycache_prefix = saved_sys


# ------------------------------------------------------------------------------------------------
# State files under the sandbox directory
# ------------------------------------------------------------------------------------------------


class _World:
    """One sandbox directory: its recorded services, ports and secrets."""

    def __init__(self, sandbox_dir: Path) -> None:
        self.dir = Path(sandbox_dir).resolve()
        self.services_file = self.dir / "services.json"
        self.ports_file = self.dir / "ports.json"
        self.secrets_file = self.dir / "secrets.json"
        self.services = load_services(self.services_file)
        self.ports: dict[str, int] = _read_json(self.ports_file)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Only one up/down at a time per directory (another process waits)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def record(self, service: Service) -> None:
        with self._lock:
            self.services[service.name] = service
            save_services(self.services_file, self._ordered())

    def forget(self, name: str) -> None:
        with self._lock:
            self.services.pop(name, None)
            save_services(self.services_file, self._ordered())

    def _ordered(self) -> dict[str, Service]:
        rank = {n: i for i, n in enumerate(SERVICE_ORDER)}
        return dict(sorted(self.services.items(), key=lambda kv: rank.get(kv[0], 99)))

    def port(self, key: str) -> int:
        """The remembered port for key, or a new free one (remembered from now on)."""
        with self._lock:
            port = self.ports.get(key)
            if port is None or (port_open(LOOPBACK, port) and not self._ours(port)):
                port = free_port()
                while port in self.ports.values():
                    port = free_port()
                self.ports[key] = port
                _write_json(self.ports_file, self.ports)
            return port

    def _ours(self, port: int) -> bool:
        return any(port in _ports_of(s) and s.alive() for s in self.services.values())

    def secrets(self) -> dict[str, str]:
        data = _read_json(self.secrets_file)
        wanted = {
            "mysql_app_password": lambda: secrets.token_urlsafe(18),
            "mysql_recovery_password": lambda: secrets.token_urlsafe(18),
            "lb_token": lambda: secrets.token_urlsafe(24),
            # root over TCP (the administration account `up --json` names in the database URLs)
            "mysql_root_password": lambda: secrets.token_urlsafe(18),
            "mysql_repl_password": lambda: secrets.token_urlsafe(18),
            "prefect_db_password": lambda: secrets.token_urlsafe(18),
        }
        changed = False
        for key, make in wanted.items():
            if not data.get(key):
                data[key] = make()
                changed = True
        if changed:
            _write_json(self.secrets_file, data)
            os.chmod(self.secrets_file, 0o600)
        return data


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def _ports_of(service: Service) -> list[int]:
    ports = [service.port] if service.port else []
    for key, value in service.extra.items():
        if key.endswith("_port") and str(value).isdigit() and int(value) > 0:
            ports.append(int(value))
    return ports


def _healthy(service: Service) -> bool:
    # The main port only: a network path's proxies are closed on purpose during a db-down fault.
    # A service without a port (the executor polls its work pool) is healthy while it runs.
    if not service.port:
        return service.alive()
    return service.alive() and port_open(service.host, service.port)


def _signature(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(200 <= resp.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False


# ------------------------------------------------------------------------------------------------
# up
# ------------------------------------------------------------------------------------------------


def _shape(world: _World, topology: str | None, replicate: str | None) -> dict[str, Any]:
    """The topology and replication to bring up: the ones asked for, else the ones this
    directory had, else the defaults (`separate`, no replication). Recorded in world.json.
    `replicate="none"` turns replication off."""
    recorded = topology_of(world.dir)
    topo = topology or recorded["topology"]
    if topo not in TOPOLOGIES:
        raise WorldError(f"unknown topology {topo!r} (known: {', '.join(TOPOLOGIES)})")
    repl = recorded["replicate"] if replicate is None else replicate
    if repl == "none":
        repl = None
    if repl is not None and repl not in REPLICATIONS:
        raise WorldError(f"unknown replication {repl!r} (known: {', '.join(REPLICATIONS)}, none)")
    if repl is not None and topo == "shared":
        raise WorldError("replication needs separate stores: the shared topology has one MariaDB")
    shape = {"topology": topo, "replicate": repl}
    _write_json(world.dir / WORLD_FILE, shape)
    return shape


def _wanted(topology: str, prefect: bool, with_heavydb: bool) -> list[str]:
    kinds = [k for k in STORE_KINDS if k != "heavydb" or with_heavydb]
    names = [name for kind in kinds for name in store_services(kind, topology)]
    names += ["s3", "sink", "lb", "prometheus"]
    names += [f"{p}-{env}" for p in ("netpath", "app") for env in ENVIRONMENTS]
    if prefect:
        names += ["prefect-db", "prefect", "executor"]
    return names


def _retire(world: _World, wanted: list[str], log: Log) -> None:
    """Stop the recorded services this `up` does not want: an older world's names, the other
    topology's stores, the Prefect server of an `up --no-prefect`. Their data stays on disk."""
    for name in [n for n in world.services if n not in wanted]:
        service = world.services[name]
        if pid_alive(service.pid):
            log(f"{name}: not part of this world any more; stopping (pid {service.pid})")
            _stop(service)
        world.forget(name)


def up(
    sandbox_dir: Path,
    rows: int = 100_000,
    *,
    prefect: bool = True,
    topology: str | None = None,
    replicate: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Start (or reuse) the whole world, seed it once, write tbs.toml; return where things are.

    Returns `{"services": {name: {"url", "pid"}}, "config": "<abs path of tbs.toml>",
    "topology", "replicate", "security", "deployed"}`; the services are named per environment
    (`mysql-blue`, `mysql-green`, ...) whatever the topology (shared: both names, one server).
    Idempotent: services still running from an earlier `up` are reused, dead ones restarted
    (which also ends any world fault in force).
    """
    if rows < 1:
        raise WorldError("rows must be at least 1")
    world = _World(Path(sandbox_dir))
    started = time.monotonic()
    with world.locked(), _bytecode_cache():
        world.services = load_services(world.services_file)
        shape = _shape(world, topology, replicate)
        topo = shape["topology"]
        ensure_binaries(log)
        sec = world.secrets()
        with_heavydb = heavydb_available()
        if not with_heavydb:
            log("heavydb: not available (sandbox.heavydb server missing); skipped")
        wanted = _wanted(topo, prefect, with_heavydb)
        _retire(world, wanted, log)
        ports = {name: world.port(name) for name in wanted if name != "executor"}
        ports["sink_smtp"] = world.port("sink_smtp")
        for env in ENVIRONMENTS:
            ports[f"{env}_mysql_proxy"] = world.port(f"{env}_mysql_proxy")
            ports[f"{env}_heavydb_proxy"] = world.port(f"{env}_heavydb_proxy")

        starter = _Starter(world, ports, sec, log, topo)
        seeded = _read_json(world.dir / SEED_FILE)
        for store, info in seeded.items():
            if info.get("rows") != rows:
                log(f"{store}: seeded earlier with {info.get('rows')} rows; keeping that dataset")
        mysqls = store_services("mysql", topo)
        heavys = store_services("heavydb", topo) if with_heavydb else []
        with ThreadPoolExecutor(max_workers=12, thread_name_prefix="world-up") as pool:
            futures: dict[str, Future[Service]] = {}
            if any(n not in seeded for n in mysqls + heavys):
                # Generating the data (and importing pandas and heavyai) overlaps server start-up.
                pool.submit(_preload, rows, with_heavydb)

            def submit(name: str, fn: Callable[[], Service]) -> None:
                futures[name] = pool.submit(fn)

            # Prefect is the slowest to start and depends on nothing: first.
            if prefect:
                submit("prefect", starter.prefect)
            for name in mysqls:
                submit(name, functools.partial(starter.mysql, name))
            for name in heavys:
                submit(name, functools.partial(starter.heavydb, name))
            for name in store_services("redis", topo):
                submit(name, functools.partial(starter.redis, name))
            submit("s3", starter.s3)
            submit("sink", starter.sink)
            submit("lb", starter.lb)
            submit("prometheus", starter.prometheus)

            errors: list[str] = []

            def settle(names: list[str]) -> bool:
                ok = True
                for name in names:
                    try:
                        futures[name].result()
                    except Exception as exc:
                        errors.append(f"{name}: {exc}")
                        ok = False
                return ok

            stores_ok = settle(mysqls + heavys)
            # Are the service accounts still there? Checked while the rest starts (cheap).
            prefect_service = futures.get("prefect")
            if prefect_service is None and "prefect" in world.services:  # kept from earlier
                prefect_service = Future()
                prefect_service.set_result(world.services["prefect"])
            accounts_present = (
                pool.submit(_service_accounts_present, world, prefect_service, with_heavydb, topo)
                if stores_ok
                and prefect_service is not None
                and (world.dir / SECURITY_FILE).exists()
                else None
            )
            bucket = pool.submit(starter.bucket, futures["s3"])
            if stores_ok:
                seeding = [pool.submit(starter.seed_mysql, n, rows) for n in mysqls]
                seeding += [
                    pool.submit(starter.seed_heavydb, n, rows) for n in heavys if n not in seeded
                ]
                for f in seeding:
                    try:
                        f.result()
                    except Exception as exc:
                        errors.append(f"seeding: {exc}")
            if stores_ok and not errors:
                try:
                    _replication(world, shape, sec, log)
                except Exception as exc:
                    errors.append(f"replication: {exc}")
                for env in ENVIRONMENTS:
                    submit(f"netpath-{env}", functools.partial(starter.netpath, env))
                paths_ok = settle([f"netpath-{env}" for env in ENVIRONMENTS])
                if paths_ok and settle(store_services("redis", topo)):
                    for env in ENVIRONMENTS:
                        submit(f"app-{env}", functools.partial(starter.app, env))
            try:
                bucket.result()
            except Exception as exc:
                errors.append(f"s3 bucket: {exc}")
            for name, fut in futures.items():
                try:
                    fut.result()
                except Exception as exc:
                    message = f"{name}: {exc}"
                    if message not in errors:
                        errors.append(message)
            if errors:
                raise WorldError("; ".join(errors))

        config = write_config(world, ports, sec, with_heavydb=with_heavydb, topology=topo)
        present = accounts_present is not None and accounts_present.result()
        security = _service_accounts(world, config, with_heavydb, present, topo, log)
        deployed = _deploy_and_execute(world, config, log) if prefect else None
        _forget_world_faults(world, log)
        log(f"world up in {time.monotonic() - started:.1f}s ({topo} stores); config: {config}")
        return {
            "services": describe(world, sec, topo),
            "config": str(config),
            "topology": topo,
            "replicate": shape["replicate"],
            "security": security,
            "deployed": deployed,
        }


def describe(world: _World, sec: dict[str, str], topology: str) -> dict[str, dict[str, Any]]:
    """Every service by its per-environment name, `{url, pid}`; database URLs carry the
    sandbox's administration account (MariaDB's root over TCP, HeavyDB's admin)."""
    out: dict[str, dict[str, Any]] = {}
    for kind in STORE_KINDS:
        for env in ENVIRONMENTS:
            service = world.services.get(store_service(kind, env, topology))
            if service is not None:
                out[f"{kind}-{env}"] = {"url": _admin_url(kind, service, sec), "pid": service.pid}
    for name, service in world._ordered().items():
        if name.split("-")[0] in STORE_KINDS:
            continue
        out[name] = {"url": service.url, "pid": service.pid}
    return out


def _admin_url(kind: str, service: Service, sec: dict[str, str]) -> str:
    if kind == "mysql":
        password = urllib.parse.quote(sec["mysql_root_password"], safe="")
        return f"mysql://root:{password}@{LOOPBACK}:{service.port}/"
    if kind == "heavydb":
        return f"heavydb://admin:{HEAVYDB_PASSWORD}@{LOOPBACK}:{service.port}/heavyai"
    return service.url


def _replication(world: _World, shape: dict[str, Any], sec: dict[str, str], log: Log) -> None:
    """Blue's MariaDB replicates green's (GTID) when asked for; else no replication runs.

    Set up once: blue starts from green's position at that moment (both hold the same seeded
    dataset), so what green wrote before replication was turned on is not carried over.
    """
    if shape["topology"] != "separate":
        return
    blue = world.services["mysql-blue"]
    with contextlib.closing(_root(blue)) as con, con.cursor() as cur:
        cur.execute("SHOW SLAVE STATUS")
        status = cur.fetchone()
        columns = [d[0] for d in cur.description or ()]
        current = dict(zip(columns, status, strict=False)) if status else {}
        if shape["replicate"] is None:
            if current:
                cur.execute("STOP SLAVE")
                cur.execute("RESET SLAVE ALL")
                log("replication: green -> blue turned off")
            return
        green = world.services["mysql-green"]
        if current and int(current.get("Master_Port") or 0) == green.port:
            if (
                current.get("Slave_IO_Running") != "Yes"
                or current.get("Slave_SQL_Running") != "Yes"
            ):
                cur.execute("START SLAVE")
            log("replication: green -> blue running")
            return
        password = sec["mysql_repl_password"]
        with contextlib.closing(_root(green)) as gcon, gcon.cursor() as gcur:
            for host in ("127.0.0.1", "localhost"):
                gcur.execute(
                    "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s",
                    (REPLICATION_USER, host, password),
                )
                gcur.execute(
                    "ALTER USER %s@%s IDENTIFIED BY %s", (REPLICATION_USER, host, password)
                )
                gcur.execute("GRANT REPLICATION SLAVE ON *.* TO %s@%s", (REPLICATION_USER, host))
            gcur.execute("SELECT @@gtid_binlog_pos")
            row = gcur.fetchone()
            position = str(row[0] if row else "")
        if current:
            cur.execute("STOP SLAVE")
            cur.execute("RESET SLAVE ALL")
        cur.execute("SET GLOBAL gtid_slave_pos = %s", (position,))
        cur.execute(
            "CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = %s, MASTER_USER = %s,"
            " MASTER_PASSWORD = %s, MASTER_USE_GTID = slave_pos",
            (LOOPBACK, green.port, REPLICATION_USER, password),
        )
        cur.execute("START SLAVE")
        log(f"replication: green -> blue set up from GTID {position or '(empty)'}")


def _root(mysql: Service) -> Any:
    """Root over the server's socket (the sandbox's own administration path)."""
    import pymysql

    return pymysql.connect(
        unix_socket=mysql.extra["socket"], user="root", password="", connect_timeout=5,
        autocommit=True,
    )  # fmt: skip


def _engines(with_heavydb: bool) -> dict[str, str]:
    """engine -> Secret block of the service accounts this world has."""
    return {e: b for e, b in SERVICE_ACCOUNT_BLOCKS.items() if e != "heavydb" or with_heavydb}


def _service_accounts(
    world: _World, config: Path, with_heavydb: bool, present: bool, topology: str, log: Log
) -> dict:
    """Provision the service accounts and their Secret blocks when the world has its Prefect
    server, once (`security.json`); a later `up` (`present`: they are still there) changes
    nothing. Returns what `security_status` returns."""
    marker_path = world.dir / SECURITY_FILE
    prefect = world.services.get("prefect")
    if prefect is None:
        log(f"service accounts: not provisioned: {NO_PREFECT}")
        return {"provisioned": False, "why": NO_PREFECT}
    api = str(prefect.extra["api_url"])
    blocks = _engines(with_heavydb)
    engines = list(blocks)
    mysql = store_service("mysql", SERVICE_ACCOUNT_ENV, topology)
    signature = _signature(api, SERVICE_ACCOUNT, blocks, world.ports.get(mysql), topology)
    marker = _read_json(marker_path)
    if marker.get("signature") == signature and present:
        log(f"service accounts: provisioned ({SERVICE_ACCOUNT} on {', '.join(engines)})")
        return _security_summary(marker)
    marker_path.unlink(missing_ok=True)
    t0 = time.monotonic()
    argv = [sys.executable, "-m", "sandbox.security", "provision", "--config", str(config)]
    for engine in engines:
        argv += ["--engine", engine]
    env = dict(os.environ, PREFECT_API_URL=api, PREFECT_LOGGING_LEVEL="WARNING")
    try:
        done = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
        )
    except subprocess.TimeoutExpired:
        raise WorldError("service accounts: provisioning took over 600 s") from None
    if done.returncode != 0:
        # the provisioning's own error (it names the account and never holds a password)
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        raise WorldError(f"service accounts: {lines[-1] if lines else f'exit {done.returncode}'}")
    marker = {
        "signature": signature,
        "prefect_api": api,
        "user": SERVICE_ACCOUNT,
        "blocks": blocks,
        "provisioned_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    _write_json(marker_path, marker)
    log(
        f"service accounts: provisioned in {time.monotonic() - t0:.1f}s ({SERVICE_ACCOUNT} on"
        f" {', '.join(engines)}; passwords in Prefect Secret blocks {', '.join(blocks.values())})"
    )
    return _security_summary(marker)


def _service_accounts_present(
    world: _World, prefect_future: Future[Service], with_heavydb: bool, topology: str
) -> bool:
    """The Secret blocks exist (read without their values) and so does the MariaDB account.
    HeavyDB's is not checked (that would cost its driver's import, seconds): the sandbox server
    keeps its catalog in this directory, as MariaDB its data."""
    import urllib.parse

    try:
        api = str(prefect_future.result().extra["api_url"])
    except Exception:  # the Prefect server did not start: up reports that itself
        return False
    blocks = _engines(with_heavydb)
    for name in blocks.values():
        path = "block_types/slug/secret/block_documents/name/" + urllib.parse.quote(name)
        if not _http_ok(f"{api}/{path}", timeout=5):
            return False
    if "mysql" not in blocks:
        return True
    import pymysql

    try:
        con = pymysql.connect(
            unix_socket=world.services[store_service("mysql", SERVICE_ACCOUNT_ENV, topology)].extra[
                "socket"
            ],
            user="root",
            password="",
            connect_timeout=5,
        )
        try:
            with con.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM mysql.user WHERE user = %s", (SERVICE_ACCOUNT,))
                row = cur.fetchone()
        finally:
            con.close()
    except (pymysql.MySQLError, KeyError, OSError):
        return False
    return bool(row and row[0])


def _security_summary(marker: dict[str, Any]) -> dict[str, Any]:
    return {
        "provisioned": True,
        "user": marker.get("user"),
        "blocks": marker.get("blocks", {}),
        "prefect_api": marker.get("prefect_api"),
        "provisioned_at": marker.get("provisioned_at"),
    }


class _Starter:
    """Starts one service each (reusing a healthy one); runs on worker threads."""

    def __init__(
        self,
        world: _World,
        ports: dict[str, int],
        sec: dict[str, str],
        log: Log,
        topology: str,
    ) -> None:
        self.world = world
        self.ports = ports
        self.sec = sec
        self.log = log
        self.topology = topology

    @classmethod
    def of(cls, world: _World, log: Log) -> _Starter:
        """A starter for a running world (fault clearing restarts services with it)."""
        ports = {k: int(v) for k, v in world.ports.items()}
        return cls(world, ports, world.secrets(), log, topology_of(world.dir)["topology"])

    def _reuse(self, name: str, signature: str | None = None) -> Service | None:
        """The recorded service if it is healthy (and started the same way); else stop it."""
        service = self.world.services.get(name)
        if service is None:
            return None
        same = signature is None or service.extra.get("signature") == signature
        if same and _healthy(service):
            self.log(f"{name}: running (pid {service.pid}, {service.url})")
            return service
        why = "configuration changed" if not same else "not healthy"
        if pid_alive(service.pid):
            self.log(f"{name}: {why}; restarting (pid {service.pid})")
            _resume(service.pid)
            stop_pid(service.pid)
        else:
            self.log(f"{name}: not running; starting again")
        self.world.forget(name)
        return None

    def _started(self, service: Service, t0: float) -> Service:
        self.world.record(service)
        self.log(f"{service.name}: started in {time.monotonic() - t0:.1f}s ({service.url})")
        return service

    def _logs(self, name: str) -> Path:
        path = self.world.dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _store(self, kind: str, env: str) -> Service:
        return self.world.services[store_service(kind, env, self.topology)]

    # real servers -----------------------------------------------------------------------------
    def mysql(self, name: str) -> Service:
        from sandbox.services import start_mariadb

        if (s := self._reuse(name)) is not None:
            return s
        t0 = time.monotonic()
        env = name.partition("-")[2]
        service = start_mariadb(
            self.world.dir / name,
            self.ports[name],
            server_id=SERVER_IDS.get(env, 1),
            root_password=self.sec["mysql_root_password"],
            name=name,
        )
        return self._started(service, t0)

    def redis(self, name: str) -> Service:
        from sandbox.services import start_redis

        if (s := self._reuse(name)) is not None:
            return s
        t0 = time.monotonic()
        service = start_redis(self.world.dir / name, self.ports[name], persistent=True, name=name)
        return self._started(service, t0)

    def s3(self) -> Service:
        from sandbox.services import start_moto

        if (s := self._reuse("s3")) is not None:
            return s
        t0 = time.monotonic()
        service = start_moto(self.world.dir / "s3", self.ports["s3"])
        service.name = "s3"
        return self._started(service, t0)

    def heavydb(self, name: str) -> Service:
        if (s := self._reuse(name)) is not None:
            return s
        t0 = time.monotonic()
        port = self.ports[name]
        data_dir = self._logs(name) / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "sandbox.heavydb", "--port", str(port)]
        argv += ["--data-dir", str(data_dir), "--admin-password", HEAVYDB_PASSWORD]
        service = start_listening(
            name,
            argv,
            port,
            self.world.dir / name / "heavydb.log",
            url=f"heavydb://admin@{LOOPBACK}:{port}/heavyai",
            cwd=ROOT,
            env={"PYTHONUNBUFFERED": "1"},
            timeout=60,
            extra={"data_dir": str(data_dir)},
        )
        return self._started(service, t0)

    def prometheus(self) -> Service:
        base = self._logs("prometheus")
        config = base / "prometheus.yml"
        text = _prometheus_config(
            apps={env: f"{LOOPBACK}:{self.ports[f'app-{env}']}" for env in ENVIRONMENTS},
            paths={env: f"{LOOPBACK}:{self.ports[f'netpath-{env}']}" for env in ENVIRONMENTS},
            lb=f"{LOOPBACK}:{self.ports['lb']}",
        )
        port = self.ports["prometheus"]
        argv = [
            _which("prometheus") or PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={base / 'tsdb'}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
        signature = _signature(argv, text)
        if (s := self._reuse("prometheus", signature)) is not None:
            return s
        config.write_text(text)
        t0 = time.monotonic()
        url = f"http://{LOOPBACK}:{port}"
        service = start_listening(
            "prometheus",
            argv,
            port,
            base / "prometheus.log",
            url=url,
            cwd=base,
            ready=lambda: _http_ok(f"{url}/-/ready"),
            timeout=60,
            extra={"signature": signature},
        )
        return self._started(service, t0)

    def prefect_db(self) -> Service:
        """PostgreSQL for the Prefect server, as in production: on SQLite, one writer at a time
        held the automations' RunDeployment actions back for seconds under a drill's events."""
        from sandbox.services import start_postgres

        if (s := self._reuse("prefect-db")) is not None:
            return s
        t0 = time.monotonic()
        service = start_postgres(
            self.world.dir / "prefect-db",
            self.ports["prefect-db"],
            user="prefect",
            password=self.sec["prefect_db_password"],
            database="prefect",
        )
        service.name = "prefect-db"
        return self._started(service, t0)

    def prefect(self) -> Service:
        db = self.prefect_db()
        home = self._logs("prefect")
        port = self.ports["prefect"]
        binary = Path(sys.executable).with_name("prefect")
        argv = [str(binary), "server", "start", "--host", LOOPBACK, "--port", str(port)]
        database = db.url.replace("postgresql://", "postgresql+asyncpg://", 1)
        signature = _signature(argv, database)
        if (s := self._reuse("prefect", signature)) is not None:
            return s
        t0 = time.monotonic()
        url = f"http://{LOOPBACK}:{port}"
        env = {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_API_URL": f"{url}/api",
            "PREFECT_UI_API_URL": f"{url}/api",
            # The shortest deployment-slot lease Prefect allows (production: 300 s): a run that
            # lost its lease in a pause would end within ~25 s here, so the manual rollback's
            # pause test needs to wait only a little longer than that to prove it does not.
            "PREFECT_SERVER_CONCURRENCY_INITIAL_DEPLOYMENT_LEASE_DURATION": "30",
            # in the environment only: never in argv, services.json or the log
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": database.replace(
                "@", ":" + urllib.parse.quote(self.sec["prefect_db_password"], safe="") + "@", 1
            ),
        }
        service = start_listening(
            "prefect",
            argv,
            port,
            home / "prefect.log",
            url=url,
            cwd=home,
            env=env,
            ready=lambda: _http_ok(f"{url}/api/health"),
            timeout=300,  # minutes on a busy 2-core machine with a fresh database
            extra={"signature": signature, "api_url": f"{url}/api", "home": str(home)},
        )
        return self._started(service, t0)

    # stand-ins --------------------------------------------------------------------------------
    def sink(self) -> Service:
        base = self._logs("sink")
        port, smtp = self.ports["sink"], self.ports["sink_smtp"]
        argv = [sys.executable, "-m", "sandbox.standins.sink", "--port", str(port)]
        argv += ["--smtp-port", str(smtp), "--store", str(base / "deliveries.jsonl")]
        signature = _signature(argv)
        if (s := self._reuse("sink", signature)) is not None:
            return s
        t0 = time.monotonic()
        url = f"http://{LOOPBACK}:{port}"
        service = start_listening(
            "sink",
            argv,
            port,
            base / "sink.log",
            url=url,
            cwd=ROOT,
            ready=lambda: _http_ok(f"{url}/health") and port_open(LOOPBACK, smtp),
            timeout=60,
            extra={"signature": signature, "smtp_port": str(smtp)},
        )
        return self._started(service, t0)

    def lb(self) -> Service:
        base = self._logs("lb")
        port = self.ports["lb"]
        argv = [sys.executable, "-m", "sandbox.standins.lb", "--port", str(port)]
        for env in ENVIRONMENTS:
            argv += [f"--{env}", f"http://{LOOPBACK}:{self.ports[f'app-{env}']}"]
        argv += ["--state-file", str(base / "state.json"), "--token-env", "TBS_LB_TOKEN"]
        argv += ["--health-interval", str(LB_HEALTH["interval"])]
        argv += ["--health-timeout", str(LB_HEALTH["timeout"])]
        argv += ["--health-fall", str(LB_HEALTH["fall"]), "--health-rise", str(LB_HEALTH["rise"])]
        signature = _signature(argv, self.sec["lb_token"])
        if (s := self._reuse("lb", signature)) is not None:
            return s
        t0 = time.monotonic()
        url = f"http://{LOOPBACK}:{port}"
        service = start_listening(
            "lb",
            argv,
            port,
            base / "lb.log",
            url=url,
            cwd=ROOT,
            env={"TBS_LB_TOKEN": self.sec["lb_token"]},
            timeout=60,
            extra={"signature": signature, "state_file": str(base / "state.json")},
        )
        return self._started(service, t0)

    def netpath(self, env: str) -> Service:
        """The environment's network path to its stores: the proxies its configuration names."""
        name = f"netpath-{env}"
        port = self.ports[name]
        mysql_port = self.ports[f"{env}_mysql_proxy"]
        heavydb_port = self.ports[f"{env}_heavydb_proxy"]
        argv = [sys.executable, "-m", "sandbox.standins.netpath", "--env", env]
        argv += ["--port", str(port), "--mysql-port", str(mysql_port)]
        argv += ["--mysql-upstream", f"{LOOPBACK}:{self._store('mysql', env).port}"]
        heavydb = self.world.services.get(store_service("heavydb", env, self.topology))
        if heavydb is not None:
            argv += ["--heavydb-port", str(heavydb_port)]
            argv += ["--heavydb-upstream", f"{LOOPBACK}:{heavydb.port}"]
        signature = _signature(argv)
        if (s := self._reuse(name, signature)) is not None:
            return s
        t0 = time.monotonic()
        url = f"http://{LOOPBACK}:{port}"
        service = start_listening(
            name,
            argv,
            port,
            self._logs("netpath") / f"{name}.log",
            url=url,
            cwd=ROOT,
            timeout=60,
            extra={
                "signature": signature,
                "env": env,
                "mysql_proxy_port": str(mysql_port),
                "heavydb_proxy_port": str(heavydb_port if heavydb is not None else 0),
            },
        )
        return self._started(service, t0)

    def app(self, env: str) -> Service:
        name = f"app-{env}"
        base = self._logs("apps")
        port = self.ports[name]
        path = self.world.services[f"netpath-{env}"]
        argv = [sys.executable, "-m", "sandbox.standins.app", "--env", env, "--port", str(port)]
        argv += ["--version", VERSIONS[env]]
        argv += ["--mysql", f"{LOOPBACK}:{self.ports[f'{env}_mysql_proxy']}"]
        argv += ["--mysql-user", APP_USER, "--mysql-database", DATABASE]
        argv += ["--redis-url", self._store("redis", env).url, "--netpath-url", path.url]
        argv += ["--ledger-file", str(base / f"{name}.ledger.jsonl")]
        if int(path.extra.get("heavydb_proxy_port", 0)):
            argv += ["--heavydb", f"{LOOPBACK}:{self.ports[f'{env}_heavydb_proxy']}"]
        env_vars = {
            "TBS_APP_MYSQL_PASSWORD": self.sec["mysql_app_password"],
            "TBS_APP_HEAVYDB_PASSWORD": HEAVYDB_PASSWORD,
        }
        signature = _signature(argv, env_vars)
        if (s := self._reuse(name, signature)) is not None:
            return s
        t0 = time.monotonic()
        url = f"http://{LOOPBACK}:{port}"
        service = start_listening(
            name,
            argv,
            port,
            base / f"{name}.log",
            url=url,
            cwd=ROOT,
            env=env_vars,
            timeout=120,
            extra={"signature": signature, "env": env},
        )
        return self._started(service, t0)

    # data -------------------------------------------------------------------------------------
    def seed_mysql(self, name: str, rows: int) -> None:
        import pymysql

        from sandbox import seed
        from sandbox.services import ensure_mysql_accounts

        mysql = self.world.services[name]
        ensure_mysql_accounts(
            mysql,
            DATABASE,
            APP_USER,
            self.sec["mysql_app_password"],
            RECOVERY_USER,
            self.sec["mysql_recovery_password"],
        )
        con = pymysql.connect(
            unix_socket=mysql.extra["socket"],
            user="root",
            password="",
            database=DATABASE,
            local_infile=True,
            autocommit=False,
        )
        try:
            if not set(seed.TABLES) <= seed.mysql_tables_present(con):
                t0 = time.monotonic()
                seed.seed_mysql(con, _frames(rows), log=self.log)
                self.log(f"{name}: seeded in {time.monotonic() - t0:.1f}s")
        finally:
            con.close()
        _note_seed(self.world, name, rows)

    def seed_heavydb(self, name: str, rows: int) -> None:
        from sandbox import seed

        t0 = time.monotonic()
        loaded = seed.seed_heavydb(
            LOOPBACK, self.world.services[name].port, HEAVYDB_PASSWORD, _frames(rows), log=self.log
        )
        if loaded:
            self.log(f"{name}: seeded in {time.monotonic() - t0:.1f}s")
        _note_seed(self.world, name, rows)

    def bucket(self, s3_future: Future[Service]) -> None:
        import boto3
        from botocore.exceptions import ClientError

        s3 = s3_future.result()
        client = boto3.client(
            "s3",
            endpoint_url=s3.url,
            region_name="us-east-1",
            aws_access_key_id=S3_KEYS[0],
            aws_secret_access_key=S3_KEYS[1],
        )
        try:
            client.head_bucket(Bucket=BUCKET)
        except ClientError:
            # Object Lock needs to be enabled at creation; without a default retention rule it
            # changes nothing until a writer asks for retention (the incident journal does).
            client.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
            self.log(f"s3: bucket {BUCKET} created")


def _resume(pid: int) -> None:
    """A stopped (SIGSTOP) process cannot act on SIGTERM: let it run first."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGCONT)


def _deploy_and_execute(world: _World, config: Path, log: Log) -> dict[str, Any]:
    """Register prefect.yaml on the world's Prefect server with the command production uses
    (`tbs-emergency deploy`), then run the executor of its work pool (`tbs-emergency runner`).

    The registration is skipped while prefect.yaml, the configuration path and the server are
    those of the last one and the executor still runs (a warm `up` stays fast); `deploy` is
    idempotent anyway.
    """
    from deployments import runner

    prefect = world.services["prefect"]
    api = str(prefect.extra["api_url"])
    project = ROOT / "prefect.yaml"
    signature = _signature(api, str(config), project.read_text(), prefect.pid)
    marker_path = world.dir / "deployed.json"
    marker = _read_json(marker_path)
    executor = world.services.get("executor")
    executor_ok = executor is not None and executor.alive() and executor.extra.get("api") == api
    if marker.get("signature") != signature or not executor_ok:
        t0 = time.monotonic()
        argv = [str(Path(sys.executable).with_name("tbs-emergency")), "deploy"]
        argv += ["--api", api, "--config", str(config), "--json"]
        env = dict(os.environ, PREFECT_API_URL=api, PREFECT_LOGGING_LEVEL="WARNING")
        env.pop("TBS_CONFIG", None)
        try:
            done = subprocess.run(
                argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
            )
        except subprocess.TimeoutExpired:
            raise WorldError("deploy: took over 600 s") from None
        if done.returncode != 0:
            lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
            raise WorldError(f"deploy: {lines[-1] if lines else f'exit {done.returncode}'}")
        try:
            report = json.loads(done.stdout[done.stdout.index("{") :])
        except ValueError:
            raise WorldError(f"deploy: unreadable answer: {done.stdout[-200:]}") from None
        marker = {
            "signature": signature,
            "api": api,
            "deployments": [d.get("name") for d in report.get("deployments", [])],
            "automations": len(report.get("automations", [])),
            "work_pool": report.get("work_pool"),
        }
        _write_json(marker_path, marker)
        log(
            f"deploy: {len(marker['deployments'])} deployments, {marker['automations']}"
            f" automations on {api} in {time.monotonic() - t0:.1f}s (work pool"
            f" {marker['work_pool']})"
        )
    if not executor_ok:
        if executor is not None:
            if pid_alive(executor.pid):
                _resume(executor.pid)
                stop_pid(executor.pid)
            world.forget("executor")
        t0 = time.monotonic()
        log_path = world.dir / "executor" / "executor.log"
        proc = runner.spawn(api, str(config), log_path, env={"PREFECT_LOGGING_LEVEL": "INFO"})
        service = Service(
            "executor",
            proc.pid,
            LOOPBACK,
            0,  # it listens nowhere: it polls the work pool
            api,
            str(log_path),
            {"api": api, "log": str(log_path)},
        )
        world.record(service)
        log(f"executor: started in {time.monotonic() - t0:.1f}s (pid {proc.pid}, log {log_path})")
    else:
        log(f"executor: running (pid {world.services['executor'].pid})")
    return {**marker, "executor": world.services["executor"].pid}


def _preload(rows: int, with_heavydb: bool) -> None:
    with contextlib.suppress(Exception):
        _frames(rows)
        if with_heavydb:
            import heavyai  # noqa: F401


_FRAMES: dict[int, dict[str, Any]] = {}
_FRAMES_LOCK = threading.Lock()


def _frames(rows: int) -> dict[str, Any]:
    """The seed data, generated once per process even when several stores need it."""
    from sandbox import seed

    with _FRAMES_LOCK:
        if rows not in _FRAMES:
            _FRAMES.clear()
            _FRAMES[rows] = seed.frames(rows)
        return _FRAMES[rows]


def _note_seed(world: _World, store: str, rows: int) -> None:
    with world._lock:
        path = world.dir / SEED_FILE
        data = _read_json(path)
        data[store] = {"rows": rows, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        _write_json(path, data)


def _forget_seed(world: _World, store: str) -> None:
    with world._lock:
        path = world.dir / SEED_FILE
        data = _read_json(path)
        if data.pop(store, None) is not None:
            _write_json(path, data)


def _prometheus_config(apps: dict[str, str], paths: dict[str, str], lb: str) -> str:
    """Scrape config: each target labelled with its environment, so `up{env=...}` tells which
    environment's scrape failed (a hung or stopped app)."""

    def job(name: str, targets: dict[str, str], path: str = "/metrics") -> list[str]:
        lines = [
            f"  - job_name: {name}",
            "    honor_labels: true",
            f"    metrics_path: {path}",
            "    static_configs:",
        ]
        for env, target in targets.items():
            lines += [f'      - targets: ["{target}"]']
            if env:
                lines += ["        labels:", f"          env: {env}"]
        return lines

    lines = [
        "# Written by sandbox.world: scrape the apps, the network paths and the load balancer",
        "# every second.",
        "global:",
        "  scrape_interval: 1s",
        "  scrape_timeout: 1s",
        "  evaluation_interval: 1s",
        "scrape_configs:",
        *job("tbs-app", apps),
        *job("tbs-netpath", paths),
        *job("tbs-lb", {"": lb}, "/_lb/metrics"),
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# tbs.toml
# ------------------------------------------------------------------------------------------------


def _q(value: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML for these values)."""
    return json.dumps(value)


#: one account per role the validation's functional checks log in as (sandbox.seed's users)
VALIDATION_SAMPLE_USERS = (
    ("trader01", "sandbox-trader", "trader"),
    ("analyst01", "sandbox-analyst", "analyst"),
)


def _validation_lines(recovery_password: str) -> list[str]:
    """The `[validation]` section sized for the sandbox: what its real workload reaches on a
    small shared machine, and the sample users it seeds with their documented passwords.
    Production keeps the runbook's figures (docs/tbs.example.toml)."""
    return [
        "[validation]",
        "http_timeout_s = 20",
        "[validation.performance]",
        "# the sandbox's workload on 2 shared cores reaches a few thousand rows/s; the runbook's",
        "# 37,303 rows/s baseline is a production figure",
        'duration = "60s"',
        "baseline_rows_per_s = 100",
        "[validation.performance.mysql_account]",
        f"user = {_q(RECOVERY_USER)}",
        f"password = {_q(recovery_password)}",
        "[validation.api]",
        "p50_ms = 3000",
        "p95_ms = 8000",
        "p99_ms = 10000",
        "[validation.ui]",
        "mean_ms = 5000",
        "p95_ms = 8000",
        "[validation.concurrency]",
        "users = 4",
        "p95_ms = 8000",
        "max_error_percent = 5",
        *[
            line
            for username, password, role in VALIDATION_SAMPLE_USERS
            for line in (
                "[[validation.users]]",
                f"username = {_q(username)}",
                f"password = {_q(password)}",
                f"role = {_q(role)}",
            )
        ],
        "",
    ]


def write_config(
    world: _World,
    ports: dict[str, int],
    sec: dict[str, str],
    *,
    with_heavydb: bool,
    topology: str = "separate",
) -> Path:
    """Write tbs.toml and env.sh for the running world; return tbs.toml's absolute path."""
    services = world.services
    sink = services["sink"]
    sink_url = sink.url
    servers = ", ".join(
        f"{name} 127.0.0.1:{services[name].port} (socket {services[name].extra.get('socket', '')})"
        for name in store_services("mysql", topology)
    )
    lines = [
        "# The sandbox world's configuration, written by `tbs-emergency sandbox up`",
        f"# (sandbox.world) at {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}.",
        "# Regenerated on every `up`: edit a copy, not this file. Secrets are literals here",
        "# because this is the sandbox; see docs/tbs.example.toml for a real deployment.",
        "# Stores: "
        + (
            "one set for both environments (shared)"
            if topology == "shared"
            else "each environment its own (separate)"
        ),
        f"# MariaDB servers (root over TCP: password in {world.secrets_file}): {servers}.",
        f"# The {RECOVERY_USER} password is in {world.secrets_file} (mysql_recovery_password)",
        "# and in env.sh.",
        "",
    ]
    for env in ENVIRONMENTS:
        app = services[f"app-{env}"]
        lines += [
            f"[environments.{env}]",
            f"app_url = {_q(app.url)}",
            f"[environments.{env}.heavydb]",
            "# this environment's network path (netpath) to its HeavyDB server"
            + ("" if with_heavydb else " (HeavyDB not available in this sandbox yet)"),
            f'host = "{LOOPBACK}"',
            f"port = {ports[f'{env}_heavydb_proxy']}",
            'user = "admin"',
            f"password = {_q(HEAVYDB_PASSWORD)}",
            'database = "heavyai"',
            f"[environments.{env}.mysql]",
            "# this environment's network path (netpath) to its MariaDB server",
            f'host = "{LOOPBACK}"',
            f"port = {ports[f'{env}_mysql_proxy']}",
            f"user = {_q(APP_USER)}",
            f"password = {_q(sec['mysql_app_password'])}",
            f"database = {_q(DATABASE)}",
            f"recovery_user = {_q(RECOVERY_USER)}",
            f"[environments.{env}.redis]",
            f"url = {_q(services[store_service('redis', env, topology)].url)}",
            "",
        ]
    lines += [
        "[traffic]",
        'kind = "http"',
        f"url = {_q(services['lb'].url)}",
        f"token = {_q(sec['lb_token'])}",
        "",
        "[storage]",
        f"bucket = {_q(BUCKET)}",
        'prefix = "tbs-emergency"',
        f"endpoint_url = {_q(services['s3'].url)}",
        'region = "us-east-1"',
        'sse = "AES256"',
        f"access_key_id = {_q(S3_KEYS[0])}",
        f"secret_access_key = {_q(S3_KEYS[1])}",
        "",
        "[metrics]",
        f"prometheus_url = {_q(services['prometheus'].url)}",
        "",
        "[triggers]",
        "# drills run in seconds: every trigger duration is multiplied by this",
        "time_scale = 0.01",
        "",
        "[drills]",
        'target = "sandbox"',
        "time_scale = 0.01",
        "",
        "# server-level emergency steps (connection limits, archive protection, backups, the",
        "# recovery drill's scratch database) run as the sandbox MariaDB servers' root",
        "[database_emergency.mysql_admin]",
        'user = "root"',
        f"password = {_q(sec['mysql_root_password'])}",
        "",
        *_validation_lines(sec["mysql_recovery_password"]),
        "# security incident response, compromised accounts, lockdown (docs/security.md);",
        "# the service accounts and their Secret blocks: created by `sandbox up` when the world",
        "# has its Prefect server (else: python -m sandbox.security provision, see its doc)",
        "[security]",
        "# evidence is locked (COMPLIANCE) for a day in the sandbox; moto refuses deleting it",
        "evidence_retention_days = 1",
        "[security.lockdown]",
        'internal_networks = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]',
        "rate_limit_per_minute = 120",
        "# accounts at these hosts keep writing during a lockdown (the socket, on the server)",
        'db_authorized_hosts = ["localhost"]',
        "[security.privilege_policy]",
        'app_privileged_users = ["admin", "security"]',
        "[security.privilege_policy.mysql]",
        f'{APP_USER} = ["SELECT", "INSERT", "UPDATE", "DELETE"]',
        f'{RECOVERY_USER} = ["ALL"]',
        'root = ["ALL"]',
        f'{SERVICE_ACCOUNT} = ["SELECT"]',
        "[[security.service_accounts]]",
        'engine = "mysql"',
        f"user = {_q(SERVICE_ACCOUNT)}",
        f"environment = {_q(SERVICE_ACCOUNT_ENV)}",
        f"password = {{ block = {_q(SERVICE_ACCOUNT_BLOCKS['mysql'])} }}",
        "[[security.service_accounts]]",
        'engine = "heavydb"',
        f"user = {_q(SERVICE_ACCOUNT)}",
        f"environment = {_q(SERVICE_ACCOUNT_ENV)}",
        f"password = {{ block = {_q(SERVICE_ACCOUNT_BLOCKS['heavydb'])} }}",
        "[channels.security]",
        'kind = "webhook"',
        f"url = {_q(sink_url + '/hooks/security')}",
        "[[contacts]]",
        'name = "Security team (sandbox)"',
        'role = "security"',
        'email = "security@sandbox.local"',
        'channels = ["security", "email"]',
        "response_minutes = 5",
        "",
        "[channels.oncall]",
        'kind = "webhook"',
        f"url = {_q(sink_url + '/hooks/oncall')}",
        "[channels.stakeholders]",
        'kind = "webhook"',
        f"url = {_q(sink_url + '/hooks/stakeholders')}",
        "[channels.pagerduty]",
        'kind = "pagerduty"',
        f"url = {_q(sink_url + '/pagerduty/v2/enqueue')}",
        f"token = {_q(PAGERDUTY_ROUTING_KEY)}",
        "[channels.sms]",
        'kind = "sms"',
        f"url = {_q(sink_url + '/hooks/sms')}",
        "[channels.statuspage]",
        'kind = "statuspage"',
        f"url = {_q(sink_url + '/hooks/statuspage')}",
        "[channels.in_app]",
        'kind = "in_app"',
        f"url = {_q(sink_url + '/hooks/in-app')}",
        "[channels.email]",
        'kind = "smtp"',
        f'smtp_host = "{LOOPBACK}"',
        f"smtp_port = {sink.extra['smtp_port']}",
        'sender = "tbs-emergency@sandbox.local"',
        "",
    ]
    contacts = [
        ("Primary on-call (sandbox)", "primary", "+15550100001", "oncall@sandbox.local",
         ["oncall", "pagerduty", "sms", "email"], 5),
        ("Secondary on-call (sandbox)", "secondary", "+15550100002", "secondary@sandbox.local",
         ["oncall", "sms", "email"], 15),
        ("Engineering manager (sandbox)", "escalation", "+15550100003", "manager@sandbox.local",
         ["pagerduty", "email"], 30),
        ("Stakeholders (sandbox)", "stakeholder", None, "stakeholders@sandbox.local",
         ["stakeholders", "email"], None),
        ("All users (sandbox)", "users", None, "users@sandbox.local",
         ["in_app", "email", "statuspage"], None),
    ]  # fmt: skip
    for name, role, phone, email, channels, minutes in contacts:
        lines += ["[[contacts]]", f"name = {_q(name)}", f"role = {_q(role)}"]
        if phone:
            lines.append(f"phone = {_q(phone)}")
        lines.append(f"email = {_q(email)}")
        lines.append("channels = [" + ", ".join(_q(c) for c in channels) + "]")
        if minutes is not None:
            lines.append(f"response_minutes = {minutes}")
        lines.append("")
    from sandbox import seed as _seed

    lines += [
        "[integrity]",
        "sample_size = 1000",
        "[[integrity.tables]]",
        'name = "trades"',
        'key = "trade_id"',
        "critical = true",
        'updated_column = "updated_at"',
        "# the keys each app mints (sandbox.seed.ENV_ID_BASE): a rollback that cannot read",
        "# green's ledger carries green's range from green's MySQL (docs/rollback.md)",
        "write_ranges = { "
        + ", ".join(
            f"{e} = [{_seed.ENV_ID_BASE[e]}, {_seed.ENV_ID_BASE[e] + _seed.LIVE_ID_BASE - 1}]"
            for e in ("blue", "green")
        )
        + " }",
        "[[integrity.tables]]",
        'name = "strategy_results"',
        'key = ["strategy_id", "run_date"]',
        "",
    ]
    prefect_service = services.get("prefect")
    if prefect_service is not None:
        lines += ["[prefect]", f"api_url = {_q(prefect_service.extra['api_url'])}", ""]
    # the journal's local spool (entries written while the object store is down), per world
    lines += ["[journal]", f"spool_dir = {_q(str(world.dir / 'journal-spool'))}", ""]
    path = world.dir / "tbs.toml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    os.chmod(path, 0o600)

    env_lines = [
        "# source this file: the sandbox world's configuration for this shell",
        f"export TBS_CONFIG={_q(str(path))}",
    ]
    if prefect_service is not None:
        env_lines.append(f"export PREFECT_API_URL={_q(prefect_service.extra['api_url'])}")
    else:
        env_lines.append("# no sandbox Prefect server running (up with prefect=True to get one)")
    recovery = sec["mysql_recovery_password"]
    env_lines.append(f"export TBS_SANDBOX_MYSQL_RECOVERY_PASSWORD={_q(recovery)}")
    (world.dir / "env.sh").write_text("\n".join(env_lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------------
# down, status
# ------------------------------------------------------------------------------------------------


def down(sandbox_dir: Path, *, purge_outside: bool = False) -> list[str]:
    """Stop every service `up` started (in layers), keep the data; return the names stopped.

    `purge_outside` also removes the data kept outside the directory (the Prefect server's
    PostgreSQL cluster, when root started it from a directory its account cannot reach), so
    that removing the directory afterwards leaves nothing behind.
    Raises WorldError if a port of theirs still accepts connections afterwards.
    """
    world = _World(Path(sandbox_dir))
    if not world.services_file.exists():
        return []
    with world.locked():
        world.services = load_services(world.services_file)
        stopped: list[str] = []
        failures: list[str] = []
        known = {n for layer in STOP_LAYERS for n in layer}
        for i, layer in enumerate(STOP_LAYERS):
            names = [n for n in layer if n in world.services]
            if i == 0:
                names += [n for n in world.services if n not in known]
            with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
                results = {n: pool.submit(_stop, world.services[n]) for n in names}
            for name in names:
                try:
                    if results[name].result():
                        stopped.append(name)
                except Exception as exc:
                    failures.append(f"{name}: {exc}")
                    continue
                world.forget(name)
        if failures:
            raise WorldError("could not stop: " + "; ".join(failures))
        # Nothing runs any more, so no fault is in force: the next `up` starts clean.
        (world.dir / FAULTS_FILE).unlink(missing_ok=True)
        if purge_outside:
            from sandbox.services import purge_postgres

            purge_postgres(world.dir / "prefect-db")
        return stopped


def _stop(service: Service) -> bool:
    """Stop one service; True if it was running. Raises if a port of it still listens."""
    was_alive = pid_alive(service.pid)
    if was_alive:
        _resume(service.pid)
        stop_pid(service.pid, timeout=15)
    ports = _ports_of(service)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        still = [p for p in ports if port_open(service.host, p)]
        if not still:
            return was_alive
        time.sleep(0.05)
    raise WorldError(f"still listening on {', '.join(map(str, still))} after stop")


def security_status(sandbox_dir: Path) -> dict[str, Any]:
    """Whether the service accounts `rotate-credentials` rotates are provisioned for this world's
    Prefect server (from what `up` recorded; nothing is contacted). `{"provisioned": bool,
    "why"}`, or with `user`, `blocks`, `prefect_api`, `provisioned_at`."""
    directory = Path(sandbox_dir).resolve()
    prefect = load_services(directory / "services.json").get("prefect")
    if prefect is None:
        return {"provisioned": False, "why": NO_PREFECT}
    marker = _read_json(directory / SECURITY_FILE)
    if not marker or marker.get("prefect_api") != prefect.extra.get("api_url"):
        why = "not provisioned for this world's Prefect server yet: run `tbs-emergency sandbox up`"
        return {"provisioned": False, "why": why}
    return _security_summary(marker)


def status(sandbox_dir: Path) -> dict[str, dict]:
    """Per service: url, pid, port, alive (pid alive and its ports open)."""
    services = load_services(Path(sandbox_dir).resolve() / "services.json")
    out: dict[str, dict] = {}
    for name, service in services.items():
        out[name] = {
            "url": service.url,
            "pid": service.pid,
            "port": service.port,
            "alive": _healthy(service),
        }
        for key, value in service.extra.items():
            if key.endswith("_port") or key in ("api_url", "socket"):
                out[name][key] = value
    return out


def world_faults(sandbox_dir: Path) -> dict[str, dict[str, Any]]:
    """The world faults in force: `{"kind[:env]": {"kind", "env", "since", "until"}}`."""
    return _read_json(Path(sandbox_dir).resolve() / FAULTS_FILE)


# ------------------------------------------------------------------------------------------------
# faults
# ------------------------------------------------------------------------------------------------


def _services(sandbox_dir: Path) -> dict[str, Service]:
    return load_services(Path(sandbox_dir).resolve() / "services.json")


def _check_env(env: str) -> None:
    if env not in ENVIRONMENTS:
        raise WorldError(f"unknown environment {env!r} (known: {', '.join(ENVIRONMENTS)})")


def _running_url(sandbox_dir: Path, name: str) -> str:
    service = _services(sandbox_dir).get(name)
    if service is None or not service.alive():
        raise WorldError(f"{name} is not running in {sandbox_dir} (run sandbox up first)")
    return service.url


def _call(method: str, url: str, body: Any = None) -> dict:
    import httpx

    try:
        resp = httpx.request(method, url, json=body, timeout=10)
    except httpx.HTTPError as exc:
        raise WorldError(f"{method} {url}: {type(exc).__name__}: {exc}") from None
    try:
        data = resp.json()
    except ValueError:
        data = {"text": resp.text}
    if resp.status_code >= 400:
        message = data.get("error") if isinstance(data, dict) else None
        raise WorldError(f"{method} {url}: HTTP {resp.status_code}: {message or resp.text[:200]}")
    return data


def _world_spec(kind: str, env: str | None, magnitude: Any, duration: Any) -> str | None:
    """Validate a world fault; returns the environment it applies to (None: world-wide)."""
    if magnitude is not None:
        raise WorldError(f"{kind} takes no magnitude")
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, int | float) or duration <= 0
    ):
        raise WorldError("duration must be a positive number of seconds")
    if kind in ("app-down", "mysql-lost"):
        target = env or LIVE_AT_CUTOVER
        _check_env(target)
        return target
    if env is not None:
        raise WorldError(f"{kind} is world-wide: it takes no --env")
    return None


def fault(
    sandbox_dir: Path,
    kind: str,
    env: str | None = None,
    magnitude: float | None = None,
    duration: float | None = None,
) -> dict:
    """Inject a fault: into an environment's app (throughput, errors, cpu, memory, disk,
    app-hang), its network path to the stores (db-down, db-slow), or the world (app-down,
    s3-down, prometheus-down, redis-down, mysql-lost). `env` defaults to green (the live
    environment) where a fault needs one."""
    if kind in WORLD_FAULTS:
        target = _world_spec(kind, env, magnitude, duration)
        return _world_fault(Path(sandbox_dir), kind, target, duration)
    try:
        spec = validate_fault(kind, magnitude, duration)
    except FaultSpecError as exc:
        raise WorldError(str(exc)) from None
    target = env or LIVE_AT_CUTOVER
    _check_env(target)
    body = {k: spec[k] for k in ("kind", "magnitude", "duration", "db")}
    name = f"netpath-{target}" if kind in PATH_FAULTS else f"app-{target}"
    return _call("POST", f"{_running_url(sandbox_dir, name)}/_faults", body)


def clear_faults(sandbox_dir: Path, env: str | None = None) -> dict:
    """Clear every fault of one environment (and the world-wide ones when env is None):
    returns {what: what it said}. World faults are cleared first (an app that was stopped is
    started again), then the apps' and the network paths' own."""
    directory = Path(sandbox_dir).resolve()
    envs = ENVIRONMENTS if env is None else (env,)
    for e in envs:
        _check_env(e)
    out: dict[str, Any] = {}
    for key, record in list(world_faults(directory).items()):
        if env is None or record.get("env") == env:
            out[key] = clear_world_fault(directory, record["kind"], record.get("env"))
    for e in envs:
        for name in (f"netpath-{e}", f"app-{e}"):
            out[name if name.startswith("netpath") else e] = _call(
                "DELETE", f"{_running_url(directory, name)}/_faults"
            )
    return out


def _world_fault(directory: Path, kind: str, env: str | None, duration: float | None) -> dict:
    world = _World(directory)
    key = f"{kind}:{env}" if env else kind
    with world.locked():
        world.services = load_services(world.services_file)
        topo = topology_of(directory)["topology"]
        if kind == "app-down":
            targets = [f"app-{env}"]
        elif kind == "s3-down":
            targets = ["s3"]
        elif kind == "prometheus-down":
            targets = ["prometheus"]
        elif kind == "redis-down":
            targets = store_services("redis", topo)
        else:  # mysql-lost
            targets = [store_service("mysql", str(env), topo)]
        missing = [t for t in targets if t not in world.services]
        if missing:
            raise WorldError(f"{', '.join(missing)} is not part of this world (run sandbox up)")
        t0 = time.time()
        for name in targets:
            service = world.services[name]
            if kind == "mysql-lost":
                _lose_mysql(world, service)
            elif pid_alive(service.pid):
                _resume(service.pid)
                stop_pid(service.pid, timeout=10)
        faults = world_faults(directory)
        until = t0 + duration if duration else None
        faults[key] = {
            "kind": kind,
            "env": env,
            "services": targets,
            "since": dt.datetime.fromtimestamp(t0, dt.UTC).isoformat(timespec="milliseconds"),
            "until": None
            if until is None
            else dt.datetime.fromtimestamp(until, dt.UTC).isoformat(timespec="milliseconds"),
        }
        _write_json(directory / FAULTS_FILE, faults)
    if duration:
        _clear_later(directory, kind, env, float(duration))
    return {"fault": faults[key], "faults": faults}


def _lose_mysql(world: _World, service: Service) -> None:
    """The disaster case: the server is killed (no clean shutdown) and its data is gone,
    binary logs included."""
    if pid_alive(service.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(service.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(service.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    datadir = service.extra.get("datadir")
    if datadir:
        shutil.rmtree(datadir, ignore_errors=True)
    socket_path = service.extra.get("socket")
    if socket_path:
        Path(socket_path).unlink(missing_ok=True)
    _forget_seed(world, service.name)


def _clear_later(directory: Path, kind: str, env: str | None, after: float) -> None:
    """A fault with a duration ends by itself: a detached process clears it then."""
    argv = [sys.executable, "-m", "sandbox.world", "clear-after", str(directory), kind]
    argv += [str(after)] + ([env] if env else [])
    log = directory / "logs" / "faults.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def clear_world_fault(sandbox_dir: Path, kind: str, env: str | None = None) -> dict[str, Any]:
    """End one world fault: start again what it stopped (a lost MariaDB comes back empty, on
    the same port). A fault that is not in force is a no-op."""
    directory = Path(sandbox_dir).resolve()
    world = _World(directory)
    key = f"{kind}:{env}" if env else kind
    with world.locked():
        world.services = load_services(world.services_file)
        faults = world_faults(directory)
        record = faults.get(key)
        if record is None:
            return {"cleared": False, "why": f"{key} is not in force"}
        starter = _Starter.of(world, log=lambda _m: None)
        restarted = []
        for name in record.get("services", []):
            start = _restart_fn(starter, name)
            if start is not None:
                start()
                restarted.append(name)
        faults.pop(key, None)
        _write_json(directory / FAULTS_FILE, faults)
    return {"cleared": True, "restarted": restarted}


def _restart_fn(starter: _Starter, name: str) -> Callable[[], Service] | None:
    kind, _, env = name.partition("-")
    if kind in ("mysql", "heavydb", "redis"):
        return functools.partial(getattr(starter, kind), name)
    if kind == "app":
        return functools.partial(starter.app, env)
    if name in ("s3", "prometheus"):
        return getattr(starter, name)
    return None


def _forget_world_faults(world: _World, log: Log) -> None:
    """`up` started again whatever a world fault had stopped: no world fault is in force."""
    faults = world_faults(world.dir)
    if faults:
        log(f"world faults ended by up: {', '.join(sorted(faults))}")
        (world.dir / FAULTS_FILE).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    """`python -m sandbox.world clear-after DIR KIND SECONDS [ENV]`: end a world fault later."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 4 or args[0] != "clear-after":
        raise SystemExit("usage: python -m sandbox.world clear-after DIR KIND SECONDS [ENV]")
    directory, kind, after = Path(args[1]), args[2], float(args[3])
    env = args[4] if len(args) > 4 else None
    time.sleep(after)
    print(json.dumps(clear_world_fault(directory, kind, env)), flush=True)


__all__ = [
    "ALL_FAULT_KINDS",
    "FAULT_KINDS",
    "TOPOLOGIES",
    "WORLD_FAULTS",
    "WorldError",
    "clear_faults",
    "clear_world_fault",
    "describe",
    "down",
    "ensure_binaries",
    "fault",
    "heavydb_available",
    "security_status",
    "status",
    "store_service",
    "topology_of",
    "up",
    "world_faults",
]


if __name__ == "__main__":
    main()
