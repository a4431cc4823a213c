"""The external steps of the database emergency procedures: one procedure on one server each.

Each task runs one procedure of `tbs_emergency.dbops` against one database server (or one
service) and returns its result model. The procedures record what they will undo before they
change anything and are idempotent, so a task that failed half-way is safe to retry: the retry
re-reads the server and finishes the job. Server-level steps on MySQL run as the configured
administrative account (`database_emergency.mysql_admin`); HeavyDB steps as the configured
HeavyDB user (a superuser).
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from typing import Any

from prefect import get_run_logger, task

from tasks.common import settings_for
from tasks.incident import connectors_for, journal_for
from tbs_emergency.config import Settings
from tbs_emergency.dbops import archive, cache, connection_limits, sync, transactions
from tbs_emergency.dbops.records import UndoStore
from tbs_emergency.dbops.targets import ServerTarget
from tbs_emergency.errors import ConfigError

_admins: dict[tuple[str | None, str], Any] = {}
_admins_lock = threading.Lock()


@atexit.register
def _close_admins() -> None:
    """Close the administrative connections when the process ends (HeavyDB keeps a session
    that is not closed until its idle timeout; MySQL a connection until wait_timeout)."""
    with _admins_lock:
        admins = list(_admins.values())
        _admins.clear()
    for db in admins:
        with contextlib.suppress(Exception):
            db.close()


def mysql_admin_for(settings: Settings, target: ServerTarget, key: str | None = None) -> Any:
    """The MySQL connector of the administrative account for one server (cached per process)."""
    from tbs_emergency.connectors.mysql import MySQLDatabase

    with _admins_lock:
        cache_key = (key, target.server)
        if cache_key not in _admins:
            cfg = settings.environment(target.env).mysql
            admin = settings.database_emergency.mysql_admin
            if admin is None:
                _admins[cache_key] = MySQLDatabase(cfg, target.name)
            else:
                password = admin.password.get_secret_value() if admin.password else ""
                _admins[cache_key] = MySQLDatabase(
                    cfg, target.name, user=admin.user, password=password
                )
        return _admins[cache_key]


def admin_for(config_path: str | None, target: ServerTarget) -> Any:
    if target.engine == "mysql":
        return mysql_admin_for(settings_for(config_path), target, config_path)
    return connectors_for(config_path).heavydb(target.env)


def undo_store_for(config_path: str | None) -> UndoStore:
    return UndoStore(connectors_for(config_path).store(), journal_for(config_path))


# -- connection limits ---------------------------------------------------------------------------


@task(name="limit-connections", retries=1, retry_delay_seconds=2, timeout_seconds=180)
def limit_connections_on(
    config_path: str | None,
    target: ServerTarget,
    max_connections: int,
    priority_users: list[str],
    reserve: int,
    dry_run: bool = False,
    incident_id: str | None = None,
) -> connection_limits.ConnectionLimitResult:
    """Record, limit, close the sessions beyond the limit, verify: one server."""
    return connection_limits.limit_connections(
        admin_for(config_path, target),
        undo_store_for(config_path),
        target,
        max_connections=max_connections,
        reserve=reserve,
        priority_users=priority_users,
        dry_run=dry_run,
        incident_id=incident_id,
        log=get_run_logger(),
    )


@task(name="lift-connection-limits", retries=1, retry_delay_seconds=2, timeout_seconds=120)
def lift_connection_limits_on(
    config_path: str | None,
    target: ServerTarget,
    dry_run: bool = False,
    incident_id: str | None = None,
) -> connection_limits.ConnectionLimitResult:
    """Restore the recorded previous settings of one server."""
    return connection_limits.lift_connection_limits(
        admin_for(config_path, target),
        undo_store_for(config_path),
        target,
        dry_run=dry_run,
        incident_id=incident_id,
        log=get_run_logger(),
    )


# -- transactions --------------------------------------------------------------------------------


@task(name="complete-transactions")
def complete_transactions_on(
    config_path: str | None,
    target: ServerTarget,
    timeout_s: float,
    force: bool,
    poll_s: float,
    dry_run: bool = False,
) -> transactions.TransactionReport:
    """Wait for the open transactions of one server; end the rest only with force.

    Not retried: a second wait would double the time the operator asked for.
    """
    admin = admin_for(config_path, target) if target.engine == "mysql" else None
    return transactions.complete_transactions(
        admin,  # type: ignore[arg-type]
        target,
        timeout_s=timeout_s,
        force=force,
        poll_s=poll_s,
        dry_run=dry_run,
        log=get_run_logger(),
    )


# -- cache and services --------------------------------------------------------------------------


@task(name="reset-database-cache", retries=1, retry_delay_seconds=2, timeout_seconds=120)
def reset_cache_on(
    config_path: str | None,
    target: ServerTarget,
    clear_query_cache: bool,
    dry_run: bool = False,
) -> cache.ResetResult:
    """HeavyDB memory clears or MySQL flushes on one server, then its health probe."""
    admin = admin_for(config_path, target)
    if target.engine == "heavydb":
        return cache.reset_heavydb(admin, target, dry_run=dry_run, log=get_run_logger())
    settings = settings_for(config_path)
    return cache.reset_mysql(
        admin,
        target,
        clear_query_cache=clear_query_cache,
        lock_wait_s=settings.database_emergency.flush_lock_wait_s,
        dry_run=dry_run,
        log=get_run_logger(),
    )


@task(name="restart-service", timeout_seconds=600)
def restart_service(config_path: str | None, name: str, dry_run: bool = False) -> cache.ResetResult:
    """Run one configured service's restart command, then probe it until healthy."""
    services = {s.name: s for s in settings_for(config_path).database_emergency.services}
    if name not in services:
        known = ", ".join(sorted(services)) or "none configured"
        raise ConfigError([f"database_emergency.services: no service {name!r} (known: {known})"])
    svc = services[name]
    return cache.restart_service(
        svc,
        run=cache.run_command,
        probe=lambda: cache.probe_service(svc.health_url, svc.health_tcp),
        dry_run=dry_run,
        log=get_run_logger(),
    )


# -- archive protection --------------------------------------------------------------------------


@task(name="protect-archive", retries=1, retry_delay_seconds=2, timeout_seconds=120)
def protect_archive_on(
    config_path: str | None,
    target: ServerTarget,
    schema: str,
    recovery_user: str | None,
    dry_run: bool = False,
    incident_id: str | None = None,
) -> archive.ArchiveResult:
    """Revoke write privileges on the archive schema from every account but the recovery one."""
    return archive.protect_archive(
        admin_for(config_path, target),
        undo_store_for(config_path),
        target,
        schema=schema,
        recovery_user=recovery_user,
        dry_run=dry_run,
        incident_id=incident_id,
        log=get_run_logger(),
    )


@task(name="lift-archive-protection", retries=1, retry_delay_seconds=2, timeout_seconds=120)
def lift_archive_protection_on(
    config_path: str | None,
    target: ServerTarget,
    dry_run: bool = False,
    incident_id: str | None = None,
) -> archive.ArchiveResult:
    """Grant back exactly the privileges the protection revoked."""
    return archive.lift_archive_protection(
        admin_for(config_path, target),
        undo_store_for(config_path),
        target,
        dry_run=dry_run,
        incident_id=incident_id,
        log=get_run_logger(),
    )


# -- traffic (the sync's guard) ------------------------------------------------------------------


@task(name="read-active-environment", retries=2, retry_delay_seconds=0.5, timeout_seconds=20)
def active_environment(config_path: str | None) -> str:
    """Which environment the load balancer sends traffic to."""
    return connectors_for(config_path).traffic().active()


# -- environment sync ----------------------------------------------------------------------------


@task(name="sync-table", retries=1, retry_delay_seconds=2, timeout_seconds=1800)
def sync_table(
    config_path: str | None,
    engine: str,
    spec: sync.TableSyncSpec,
    source_env: str,
    target_env: str,
    since: str | None,
    batch_size: int,
    verify: bool,
    dry_run: bool = False,
    max_delete_share: float | None = None,
    snapshot: bool = False,
) -> sync.TableSyncResult:
    """Bring one table of the target environment to the source's content; verify after.

    Both sides are read through the integrity engine's stores (each on a connection of its
    own); rows are read and written by the same connectors, as each environment's account.
    """
    from tasks.integrity import open_store
    from tbs_emergency.integrity import SQLTableSource

    with (
        open_store(config_path, source_env, engine) as src,  # type: ignore[arg-type]
        open_store(config_path, target_env, engine) as dst,  # type: ignore[arg-type]
    ):
        return sync.sync_table(
            SQLTableSource(src, spec.source_table),
            SQLTableSource(dst, spec.target_table),
            src.db,
            dst.db,
            spec,
            since=since,
            batch_size=batch_size,
            verify=verify,
            dry_run=dry_run,
            log=get_run_logger(),
            max_delete_share=max_delete_share,
            snapshot=snapshot,
        )
