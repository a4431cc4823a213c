"""Hardening checks (runbook: `emergency-security-hardening.sh --all-services
--verify-implementation`): what is off, per system. Each check reads; none changes anything.
A check that cannot be made is reported as `unknown` with the reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from tbs_emergency.errors import TbsError
from tbs_emergency.security.privileges import review_mysql
from tbs_emergency.security.systems import Systems

Status = Literal["ok", "off", "unknown"]
DEFAULT_HEAVYDB_PASSWORD = "HyperInteractive"  # HeavyDB's documented default admin password


class HardeningCheck(BaseModel):
    name: str
    system: str
    status: Status
    detail: str = ""
    severity: Literal["high", "medium", "low"] = "medium"


class HardeningReport(BaseModel):
    checks: list[HardeningCheck] = Field(default_factory=list)

    @property
    def off(self) -> list[HardeningCheck]:
        return [c for c in self.checks if c.status != "ok"]

    def markdown(self) -> str:
        out = [
            "# Hardening checks",
            "",
            f"{len(self.off)} of {len(self.checks)} need attention",
            "",
        ]
        out += ["| status | severity | system | check | detail |", "|---|---|---|---|---|"]
        order = {"off": 0, "unknown": 1, "ok": 2}
        for c in sorted(self.checks, key=lambda c: (order[c.status], c.system, c.name)):
            out.append(
                f"| {c.status} | {c.severity} | {c.system} | {c.name} |"
                f" {c.detail.replace('|', '/')} |"
            )
        return "\n".join(out) + "\n"


def _secrets_of(settings: Any) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for env, cfg in settings.environments.items():
        found += [
            (f"environments.{env}.heavydb.password", cfg.heavydb.password),
            (f"environments.{env}.mysql.password", cfg.mysql.password),
            (f"environments.{env}.redis.password", cfg.redis.password),
        ]
    found += [("traffic.token", settings.traffic.token)]
    found += [
        ("storage.secret_access_key", settings.storage.secret_access_key),
    ]
    for name, ch in settings.channels.items():
        found += [
            (f"channels.{name}.token", ch.token),
            (f"channels.{name}.smtp_password", ch.smtp_password),
        ]
    return [(k, v) for k, v in found if v is not None]


def run_checks(systems: Systems) -> HardeningReport:
    s = systems.settings
    report = HardeningReport()

    def check(
        name: str,
        system: str,
        fn: Callable[[], tuple[bool, str]],
        severity: Literal["high", "medium", "low"] = "medium",
    ) -> None:
        try:
            ok, detail = fn()
            status: Status = "ok" if ok else "off"
        except TbsError as exc:
            status, detail = "unknown", str(exc)
        except Exception as exc:
            status, detail = "unknown", f"{type(exc).__name__}: {exc}"
        report.checks.append(
            HardeningCheck(
                name=name, system=system, status=status, detail=detail, severity=severity
            )
        )

    for t in systems.targets("mysql"):
        admin = systems.mysql_admin(t.env)

        def no_empty(admin: Any = admin) -> tuple[bool, str]:
            bad = [f"{a['user']}@{a['host']}" for a in admin.account_security() if a["no_password"]]
            return not bad, ("accounts without a password: " + ", ".join(bad)) if bad else (
                "every account has a password or socket authentication"
            )

        def no_any_host(admin: Any = admin) -> tuple[bool, str]:
            bad = [f"{a['user']}@%" for a in admin.account_security() if a["any_host"]]
            return not bad, ("accounts any host may use: " + ", ".join(bad)) if bad else (
                "no account is open to any host"
            )

        def policy(admin: Any = admin) -> tuple[bool, str]:
            grants = admin.grants()
            me = admin.login_user()
            users = sorted({g.user for g in grants if g.host is not None and g.user != me})
            found = [
                f
                for u in users
                for f in review_mysql(u, grants, s.security.privilege_policy)
                if f.detail.get("on") == "*.*"
            ]
            return not found, "; ".join(f.summary for f in found) or (
                "no account beyond the policy holds global privileges"
            )

        check("no account without a password", t.name, no_empty, "high")
        check("no account open to any host", t.name, no_any_host)
        check("global privileges within the policy", t.name, policy, "high")

    for t in systems.targets("heavydb"):
        db = systems.heavydb(t.env)

        def default_password(db: Any = db) -> tuple[bool, str]:
            ok, _ = db.try_login("admin", DEFAULT_HEAVYDB_PASSWORD)
            return not ok, (
                "admin still logs in with HeavyDB's default password"
                if ok
                else "the default admin password is refused"
            )

        def superusers(db: Any = db) -> tuple[bool, str]:
            allowed = set(s.security.privilege_policy.heavydb_superusers)
            bad = [u.name for u in db.users() if u.is_super and u.name not in allowed]
            return not bad, ("superusers beyond the policy: " + ", ".join(bad)) if bad else (
                "superusers as the policy says"
            )

        check("default admin password changed", t.name, default_password, "high")
        check("superusers within the policy", t.name, superusers, "high")

    def lb_token() -> tuple[bool, str]:
        ok = s.traffic.kind != "http" or s.traffic.token is not None
        return ok, "admin API needs a token" if ok else "the load balancer admin API has no token"

    def redis_auth() -> tuple[bool, str]:
        bad = [
            env
            for env, c in s.environments.items()
            if c.redis.password is None and "@" not in c.redis.url
        ]
        return not bad, ("Redis without a password: " + ", ".join(sorted(bad))) if bad else (
            "every Redis needs a password"
        )

    def encryption() -> tuple[bool, str]:
        return s.storage.sse != "none", f"server-side encryption: {s.storage.sse}"

    def evidence_lock() -> tuple[bool, str]:
        store = evidence_store(systems)
        ok = store.object_lock_enabled()
        return ok, f"bucket {store.config.bucket}: Object Lock " + ("on" if ok else "OFF")

    def literal_secrets() -> tuple[bool, str]:
        bad = [k for k, v in _secrets_of(s) if v.source == "literal"]
        return not bad, (
            "secrets written in the configuration file: " + ", ".join(bad)
        ) if bad else "every secret comes from the environment or a Prefect Secret block"

    def accounts_in_blocks() -> tuple[bool, str]:
        bad = [a.user for a in s.security.service_accounts if a.password.block is None]
        if not s.security.service_accounts:
            return False, "no service accounts configured for rotation"
        return not bad, (
            "service accounts outside Secret blocks: " + ", ".join(bad)
        ) if bad else "every service account's password is in a Prefect Secret block"

    check("admin API token", "traffic", lb_token, "high")
    check("Redis authentication", "redis", redis_auth)
    check("storage encryption", "s3", encryption)
    check("evidence bucket has Object Lock", "s3", evidence_lock, "high")
    check("no secrets in the configuration file", "config", literal_secrets)
    check("service accounts rotatable", "config", accounts_in_blocks)
    return report


def evidence_store(systems: Systems) -> Any:
    """The object store evidence goes to (security.evidence_bucket, else storage.bucket)."""
    from tbs_emergency.connectors.objectstore import S3ObjectStore

    s = systems.settings
    bucket = s.security.evidence_bucket
    if not bucket or bucket == s.storage.bucket:
        return systems.conn.store()
    return systems.conn._cached(
        f"store:{bucket}",
        lambda: S3ObjectStore(s.storage.model_copy(update={"bucket": bucket}), f"s3[{bucket}]"),
    )
