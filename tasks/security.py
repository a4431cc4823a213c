"""The external steps of the security procedures (docs/security.md), one system each.

Reversible changes (isolation, lockdown, account suspension) go through the step engine of
`tbs_emergency.security.steps`: the previous state is recorded (object store, then the incident
journal) before anything changes, reruns change nothing, a failure puts back what the run
changed, and lifting restores in reverse order. Passwords are never task parameters or results:
rotation reads and writes them inside the task.
"""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from prefect import get_run_logger, task

from tasks.common import settings_for
from tasks.incident import connectors_for, journal_for
from tbs_emergency.errors import ConfigError, ConnectorError, Refused
from tbs_emergency.security import rotation
from tbs_emergency.security.assessment import Finding
from tbs_emergency.security.collect import collect
from tbs_emergency.security.evidence import (
    MANIFEST,
    EvidenceItem,
    EvidenceManifest,
    MissingEvidence,
    encode,
    evidence_key,
    evidence_prefix,
    retain_until,
    verify_manifest,
)
from tbs_emergency.security.hardening import HardeningReport, evidence_store, run_checks
from tbs_emergency.security.passwords import generate_password
from tbs_emergency.security.privileges import review_app, review_heavydb, review_mysql
from tbs_emergency.security.records import RecordKind, SecurityStore, StepSpec
from tbs_emergency.security.steps import StepsResult, apply_steps, lift_steps
from tbs_emergency.security.systems import Systems, build_step, find_user

_lock = threading.Lock()


@lru_cache(maxsize=8)
def systems_for(config_path: str | None) -> Systems:
    """One Systems per process and configuration (connections reused across tasks)."""
    return Systems(settings_for(config_path), connectors_for(config_path))


def security_store_for(config_path: str | None) -> SecurityStore:
    return SecurityStore(connectors_for(config_path).store(), journal_for(config_path))


# -- reversible steps --------------------------------------------------------------------------


@task(name="apply-security-steps", retries=1, retry_delay_seconds=2, timeout_seconds=300)
def apply_security_steps(
    config_path: str | None,
    kind: RecordKind,
    key: str,
    specs: list[StepSpec],
    dry_run: bool = False,
    incident_id: str | None = None,
) -> StepsResult:
    """Apply the steps in order, each recorded first; on a failure, undo this run's steps."""
    sys = systems_for(config_path)
    steps = [build_step(sys, s) for s in specs]
    return apply_steps(
        security_store_for(config_path),
        kind,
        key,
        steps,
        dry_run=dry_run,
        incident_id=incident_id,
        log=get_run_logger(),
    )


@task(name="lift-security-steps", retries=1, retry_delay_seconds=2, timeout_seconds=300)
def lift_security_steps(
    config_path: str | None,
    kind: RecordKind,
    key: str,
    dry_run: bool = False,
    incident_id: str | None = None,
) -> StepsResult:
    """Restore every applied step of the active record, in reverse order."""
    sys = systems_for(config_path)
    return lift_steps(
        security_store_for(config_path),
        kind,
        key,
        lambda spec: build_step(sys, spec),
        dry_run=dry_run,
        incident_id=incident_id,
        log=get_run_logger(),
    )


# -- evidence ----------------------------------------------------------------------------------


@task(name="collect-evidence", retries=2, retry_delay_seconds=[1, 3], timeout_seconds=180)
def collect_evidence(config_path: str | None, source: str) -> dict[str, Any]:
    """One evidence source from the live systems (process lists, sessions, logs, metrics)."""
    s = settings_for(config_path).security
    return collect(systems_for(config_path), source, s.metrics_window, s.metrics_step)


@task(name="store-evidence", retries=3, retry_delay_seconds=[0.5, 1, 2], timeout_seconds=120)
def store_evidence(
    config_path: str | None, incident_id: str, name: str, payload: dict[str, Any]
) -> EvidenceItem:
    """Write one evidence object under Object Lock; its manifest entry."""
    settings = settings_for(config_path)
    sec = settings.security
    store = evidence_store(systems_for(config_path))
    _require_lock(store)
    key = evidence_key(sec.evidence_prefix, incident_id, f"{name}.json")
    stored = store.put_locked(
        key,
        encode(payload),
        mode=sec.evidence_lock_mode,
        retain_until=retain_until(sec.retention_days(settings.storage)),
        metadata={"content-type": "application/json", "incident": incident_id},
    )
    return EvidenceItem(
        name=name,
        key=key,
        size=stored.size,
        sha256=stored.sha256 or "",
        version_id=stored.version_id,
        collected_at=datetime.fromisoformat(str(payload.get("collected_at")))
        if payload.get("collected_at")
        else datetime.now(UTC),
        systems=list(payload.get("systems") or []),
    )


def _require_lock(store: Any) -> None:
    if not store.object_lock_enabled():
        raise Refused(
            store.name,
            "preserve evidence",
            f"bucket {store.config.bucket} has no S3 Object Lock (it can only be enabled when a"
            " bucket is created): set security.evidence_bucket to a bucket created with Object"
            " Lock enabled",
        )


@task(
    name="write-evidence-manifest", retries=3, retry_delay_seconds=[0.5, 1, 2], timeout_seconds=60
)
def write_manifest(
    config_path: str | None,
    incident_id: str,
    items: list[EvidenceItem],
    missing: list[MissingEvidence],
) -> EvidenceManifest:
    """The sha256 manifest, written last and locked like the objects it lists."""
    settings = settings_for(config_path)
    sec = settings.security
    store = evidence_store(systems_for(config_path))
    until = retain_until(sec.retention_days(settings.storage))
    manifest = EvidenceManifest(
        incident_id=incident_id,
        created_at=datetime.now(UTC),
        bucket=store.config.bucket,
        prefix=f"{store.config.prefix}/{evidence_prefix(sec.evidence_prefix, incident_id)}",
        lock_mode=sec.evidence_lock_mode,
        retain_until=until,
        items=items,
        missing=missing,
    )
    store.put_locked(
        evidence_key(sec.evidence_prefix, incident_id, MANIFEST),
        manifest.model_dump_json(indent=2).encode(),
        mode=sec.evidence_lock_mode,
        retain_until=until,
        metadata={"content-type": "application/json", "incident": incident_id},
    )
    return manifest


@task(name="verify-evidence", retries=1, retry_delay_seconds=1, timeout_seconds=120)
def verify_evidence(config_path: str | None, incident_id: str) -> list[str]:
    """Read the manifest and every object back; the problems (sha256, size, lock)."""
    sec = settings_for(config_path).security
    store = evidence_store(systems_for(config_path))
    manifest = EvidenceManifest.model_validate_json(
        store.get(evidence_key(sec.evidence_prefix, incident_id, MANIFEST))
    )
    problems = verify_manifest(manifest, lambda key: store.get(key, verify=False))
    for item in manifest.items:
        head = store.head(item.key)
        if head.lock_mode != sec.evidence_lock_mode or head.retain_until is None:
            problems.append(f"{item.name}: not under Object Lock ({head.lock_mode or 'none'})")
    return problems


@task(name="read-privilege-log", retries=1, retry_delay_seconds=2, timeout_seconds=180)
def privilege_log(config_path: str | None, since: datetime) -> list[dict[str, Any]]:
    """Account and privilege statements of every MySQL server's binary log since a time."""
    from tbs_emergency.connectors.mysql import MySQLRecovery

    sys = systems_for(config_path)
    out: list[dict[str, Any]] = []
    for t in sys.targets("mysql"):
        for c in MySQLRecovery(sys.mysql_admin(t.env)).privilege_changes(since):
            out.append({**c, "server": t.name})
    return out


# -- credentials -------------------------------------------------------------------------------


class PrefectSecretBlocks:
    """Prefect Secret blocks, read and overwritten by name."""

    def read(self, name: str) -> str:
        from prefect.blocks.system import Secret

        try:
            value = Secret.load(name).get()
        except ValueError as exc:
            raise ConfigError([f"Prefect Secret block {name!r} cannot be loaded: {exc}"]) from None
        return value if isinstance(value, str) else str(value)

    def write(self, name: str, value: str) -> None:
        from prefect.blocks.system import Secret

        Secret(value=value).save(name, overwrite=True)


class _MySQLAccounts:
    def __init__(self, admin: Any, login: Any, name: str) -> None:
        self.admin, self.login, self.name = admin, login, name

    def hosts(self, user: str, wanted: Any) -> list[str]:
        hosts = [a.host for a in self.admin.accounts(user)]
        return [h for h in hosts if h in wanted] if wanted else hosts

    def set_password(self, user: str, host: str, password: str) -> None:
        self.admin.set_password(user, host, password)

    def try_login(self, user: str, password: str) -> tuple[bool, str]:
        return tuple(self.login.try_login(user, password))  # type: ignore[return-value]


class _HeavyDBAccounts:
    def __init__(self, db: Any, name: str) -> None:
        self.db, self.name = db, name

    def hosts(self, user: str, wanted: Any) -> list[str]:
        return [""] if any(u.name == user for u in self.db.users()) else []

    def set_password(self, user: str, host: str, password: str) -> None:
        self.db.set_password(user, password)

    def try_login(self, user: str, password: str) -> tuple[bool, str]:
        return tuple(self.db.try_login(user, password))  # type: ignore[return-value]


def rotation_inputs(
    config_path: str | None, users: list[str] | None = None
) -> tuple[list[rotation.AccountToRotate], dict[str, Any]]:
    """The configured service accounts (or those named) and their servers."""
    settings = settings_for(config_path)
    sys = systems_for(config_path)
    chosen = [a for a in settings.security.service_accounts if not users or a.user in users]
    unknown = sorted(set(users or []) - {a.user for a in chosen})
    if unknown:
        known = ", ".join(a.user for a in settings.security.service_accounts) or "none"
        raise ConfigError(
            [f"security.service_accounts: no account {u!r} (configured: {known})" for u in unknown]
        )
    accounts, servers = [], {}
    for a in chosen:
        if a.engine == "mysql":
            t = sys.mysql_target(a.environment)
            if t.name not in servers:
                servers[t.name] = _MySQLAccounts(
                    sys.mysql_admin(a.environment), sys.conn.mysql(a.environment), t.name
                )
        else:
            t = sys.heavydb_target(a.environment)
            if t.name not in servers:
                servers[t.name] = _HeavyDBAccounts(sys.heavydb(a.environment), t.name)
        accounts.append(
            rotation.AccountToRotate(
                engine=a.engine,
                user=a.user,
                block=a.password.block,
                source=a.password.source,
                server=t.name,
                hosts=a.hosts,
            )
        )
    return accounts, servers


@task(name="rotate-credentials", timeout_seconds=600)
def rotate_service_accounts(
    config_path: str | None, users: list[str] | None = None, dry_run: bool = False
) -> rotation.RotationReport:
    """Rotate every configured service account, or none (not retried: a retry would rotate a
    second time; the task's own rollback already put everything back)."""
    settings = settings_for(config_path)
    accounts, servers = rotation_inputs(config_path, users)
    length = settings.security.password_length
    with _lock:
        return rotation.rotate_accounts(
            accounts,
            servers,
            PrefectSecretBlocks(),
            lambda: generate_password(length),
            dry_run=dry_run,
            log=get_run_logger(),
        )


# -- hardening, accounts -----------------------------------------------------------------------


@task(name="hardening-checks", retries=1, retry_delay_seconds=2, timeout_seconds=180)
def hardening_checks(config_path: str | None) -> HardeningReport:
    return run_checks(systems_for(config_path))


@task(name="locate-user", retries=2, retry_delay_seconds=[1, 2], timeout_seconds=60)
def locate_user(config_path: str | None, user: str) -> dict[str, Any]:
    """Where the user has an account: {system: detail or None}."""
    return find_user(systems_for(config_path), user)


@task(name="end-user-sessions", retries=2, retry_delay_seconds=[0.5, 1], timeout_seconds=60)
def end_user_sessions(config_path: str | None, user: str) -> dict[str, int]:
    """Delete every session of the user in every Redis; how many per Redis."""
    sys = systems_for(config_path)
    out = {}
    for env in sys.redis_envs():
        r = sys.sessions(env)
        out[r.name] = r.end_user_sessions(user)
    return out


@task(name="user-access-records", retries=2, retry_delay_seconds=[1, 2], timeout_seconds=120)
def user_access_records(config_path: str | None, user: str, since: datetime) -> dict[str, Any]:
    """The user's login attempts (app audit), requests are not per user at the load balancer;
    the user's database sessions now."""
    sys = systems_for(config_path)
    key = sys.settings.security.login_audit_key
    cutoff = since.astimezone(UTC).isoformat()[:19]
    logins: list[dict[str, Any]] = []
    for env in sys.redis_envs():
        logins += [
            e
            for e in sys.sessions(env).login_audit(key)
            if e.get("user") == user and str(e.get("at") or "") >= cutoff
        ]
    db_sessions: list[dict[str, Any]] = []
    for t in sys.targets("mysql"):
        db_sessions += [
            {"server": t.name, "id": s.id, "host": s.host, "database": s.database}
            for s in sys.mysql_admin(t.env).sessions()
            if s.user == user
        ]
    for t in sys.targets("heavydb"):
        with contextlib.suppress(ConnectorError):
            db_sessions += [
                {"server": t.name, "id": s.id, "host": s.host, "database": s.database}
                for s in sys.heavydb(t.env).sessions()
                if s.user == user
            ]
    return {"logins": logins, "db_sessions": db_sessions}


@task(name="review-user-privileges", retries=2, retry_delay_seconds=[1, 2], timeout_seconds=120)
def review_user_privileges(
    config_path: str | None, user: str, where: dict[str, Any]
) -> list[Finding]:
    sys = systems_for(config_path)
    policy = sys.settings.security.privilege_policy
    out: list[Finding] = []
    for t in sys.targets("mysql"):
        if where.get(t.name):
            out += review_mysql(user, sys.mysql_admin(t.env).grants(), policy)
    for t in sys.targets("heavydb"):
        out += review_heavydb(user, where.get(t.name), policy)
    for env in sys.app_envs():
        out += review_app(user, where.get(f"app[{env}]"), policy)
    return out


def since(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)
