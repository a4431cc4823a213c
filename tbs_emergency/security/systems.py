"""The systems the security procedures act on, and their reversible steps.

`Systems(settings)` hands out the connectors (the MySQL ones as `database_emergency.mysql_admin`
where account and privilege changes need it). The steps (`build_step(systems, spec)`):

| kind                | system            | does                                               |
|---------------------|-------------------|----------------------------------------------------|
| `lb-drain`          | load balancer     | mark an environment draining                       |
| `lb-deny`           | load balancer     | deny an environment (network isolation)            |
| `lb-allowlist`      | load balancer     | serve internal networks only                       |
| `lb-rate-limit`     | load balancer     | per-client rate limit on the API                   |
| `login-flag`        | Redis             | the app's lockdown key: no new logins              |
| `mysql-revoke`      | MySQL             | revoke recorded privileges (isolation, lockdown)   |
| `heavydb-access`    | HeavyDB           | revoke ACCESS on the database from users           |
| `mysql-lock`        | MySQL             | ACCOUNT LOCK every host of a user                  |
| `heavydb-login`     | HeavyDB           | can_login = false                                  |
| `app-user`          | the application   | disable the user                                   |

and the plans: `isolation_plan`, `lockdown_plan`, `suspension_plan`.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from tbs_emergency.config import Settings
from tbs_emergency.connectors import Connectors, sharing
from tbs_emergency.connectors.base import PrivilegeGrant
from tbs_emergency.dbops.archive import WRITE_PRIVILEGES, covers_schema, names_schema_exactly
from tbs_emergency.dbops.targets import (
    Identify,
    ServerTarget,
    live_identity,
    server_targets,
)
from tbs_emergency.errors import ConnectorError, NotFound, Refused
from tbs_emergency.security.records import StepSpec


class Systems:
    """The connectors of one configuration for the security procedures."""

    def __init__(self, settings: Settings, connectors: Connectors | None = None) -> None:
        self.settings = settings
        self.conn = connectors or Connectors(settings)
        self._own = connectors is None
        self._admins: dict[str, Any] = {}
        self._lock = threading.Lock()
        # Environments reaching one server through different addresses (a proxy each) are one
        # server: grouped by what the servers say they are (asked once per address).
        self.identify: Identify = live_identity(settings)

    def targets(self, engine: Any, envs: list[str] | None = None) -> list[ServerTarget]:
        return server_targets(self.settings, [engine], envs, identify=self.identify)

    def mysql_admin(self, env: str) -> Any:
        """The MySQL connector of `database_emergency.mysql_admin` (else the environment's
        account) for env's server, cached per server."""
        from tbs_emergency.connectors.mysql import MySQLDatabase

        target = self.mysql_target(env)
        with self._lock:
            if target.server not in self._admins:
                cfg = self.settings.environment(target.env).mysql
                admin = self.settings.database_emergency.mysql_admin
                if admin is None:
                    self._admins[target.server] = MySQLDatabase(cfg, target.name)
                else:
                    password = admin.password.get_secret_value() if admin.password else ""
                    self._admins[target.server] = MySQLDatabase(
                        cfg, target.name, user=admin.user, password=password
                    )
            return self._admins[target.server]

    def mysql_target(self, env: str) -> ServerTarget:
        return self.targets("mysql", [env])[0]

    def heavydb_target(self, env: str) -> ServerTarget:
        return self.targets("heavydb", [env])[0]

    def heavydb(self, env: str) -> Any:
        return self.conn.heavydb(env)

    def traffic(self) -> Any:
        return self.conn.traffic()

    def sessions(self, env: str) -> Any:
        return self.conn.sessions(env)

    def app(self, env: str) -> Any:
        return self.conn.app(env)

    def redis_envs(self) -> list[str]:
        """One environment per distinct Redis."""
        seen: set[str] = set()
        out = []
        for env in sorted(self.settings.environments):
            group = ",".join(sharing(self.settings, "redis", env))
            if group not in seen:
                seen.add(group)
                out.append(env)
        return out

    def app_envs(self) -> list[str]:
        """One environment per distinct application user database (the archive MySQL)."""
        out: list[str] = []
        for env in sorted(self.settings.environments):
            if not any(self.settings.shares_database(env, o, "mysql") for o in out):
                out.append(env)
        return out

    def close(self) -> None:
        with self._lock:
            admins = list(self._admins.values())
            self._admins.clear()
        for a in admins:
            with contextlib.suppress(Exception):
                a.close()
        if self._own:
            self.conn.close()


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------


class _Base:
    kind = ""

    def __init__(self, systems: Systems, spec: StepSpec) -> None:
        self.sys = systems
        self.spec = spec
        self.p = spec.params
        self.system = "?"
        self.what = spec.kind


class LbFlag(_Base):
    """lb-drain / lb-deny: one environment on one of the load balancer's lists."""

    def __init__(self, systems: Systems, spec: StepSpec) -> None:
        super().__init__(systems, spec)
        self.env = str(self.p["target"])
        self.field = "draining" if spec.kind == "lb-drain" else "denied"
        self.system = "traffic"
        self.what = (
            f"drain {self.env} (no new sessions)"
            if self.field == "draining"
            else f"deny {self.env} at the load balancer (network isolation)"
        )

    def read(self) -> dict[str, Any]:
        return {"on": self.env in self.sys.traffic().security_state()[self.field]}

    def done(self, current: dict[str, Any]) -> bool:
        return bool(current.get("on"))

    def _set(self, on: bool) -> dict[str, Any]:
        t = self.sys.traffic()
        if self.field == "draining":
            return dict(t.set_draining(self.env, on))
        return dict(t.set_denied(self.env, on))

    def apply(self, current: dict[str, Any]) -> str:
        self._set(True)
        if not self.read()["on"]:
            raise ConnectorError("traffic", self.what, "the load balancer does not show it after")
        return f"{self.env} {self.field}"

    def restore(self, previous: dict[str, Any]) -> str:
        on = bool(previous.get("on"))
        self._set(on)
        return f"{self.env} {'stays ' + self.field if on else 'no longer ' + self.field}"


class LbAllowlist(_Base):
    def __init__(self, systems: Systems, spec: StepSpec) -> None:
        super().__init__(systems, spec)
        self.networks = list(self.p.get("networks") or [])
        self.system = "traffic"
        self.what = f"serve internal networks only ({', '.join(self.networks)})"

    def read(self) -> dict[str, Any]:
        return {"allowlist": self.sys.traffic().security_state()["allowlist"]}

    def done(self, current: dict[str, Any]) -> bool:
        return sorted(current.get("allowlist") or []) == sorted(self.networks)

    def apply(self, current: dict[str, Any]) -> str:
        self.sys.traffic().set_allowlist(self.networks)
        return "other sources get 403 (logged)"

    def restore(self, previous: dict[str, Any]) -> str:
        value = previous.get("allowlist")
        self.sys.traffic().set_allowlist(value or None)
        return f"allowlist back to {value or 'none (everyone)'}"


class LbRateLimit(_Base):
    def __init__(self, systems: Systems, spec: StepSpec) -> None:
        super().__init__(systems, spec)
        self.rpm = int(self.p["requests_per_minute"])
        self.paths = list(self.p.get("paths") or [])
        self.system = "traffic"
        self.what = (
            f"rate limit {self.rpm}/min per client on {', '.join(self.paths) or 'every path'}"
        )

    def read(self) -> dict[str, Any]:
        return {"rate_limit": self.sys.traffic().security_state()["rate_limit"]}

    def done(self, current: dict[str, Any]) -> bool:
        rl = current.get("rate_limit") or {}
        return rl.get("requests_per_minute") == self.rpm and list(rl.get("paths") or []) == list(
            self.paths
        )

    def apply(self, current: dict[str, Any]) -> str:
        self.sys.traffic().set_rate_limit(self.rpm, self.paths)
        return "clients above it get 429 (logged)"

    def restore(self, previous: dict[str, Any]) -> str:
        rl = previous.get("rate_limit")
        if rl and rl.get("requests_per_minute"):
            self.sys.traffic().set_rate_limit(int(rl["requests_per_minute"]), rl.get("paths"))
            return f"rate limit back to {rl['requests_per_minute']}/min"
        self.sys.traffic().set_rate_limit(None)
        return "rate limit removed"


class LoginFlag(_Base):
    """The application's lockdown key in one Redis: new logins refused, sessions kept."""

    def __init__(self, systems: Systems, spec: StepSpec) -> None:
        super().__init__(systems, spec)
        self.env = str(self.p["target"])
        self.key = str(self.p["key"])
        self.system = self.sys.sessions(self.env).name
        self.what = f"disable new logins (set {self.key}; active sessions keep working)"

    def read(self) -> dict[str, Any]:
        return {"flag": self.sys.sessions(self.env).flag(self.key)}

    def done(self, current: dict[str, Any]) -> bool:
        return current.get("flag") is not None

    def apply(self, current: dict[str, Any]) -> str:
        value = str(self.p.get("value") or "security lockdown")
        self.sys.sessions(self.env).set_flag(self.key, value)
        return "new logins are refused"

    def restore(self, previous: dict[str, Any]) -> str:
        flag = previous.get("flag")
        r = self.sys.sessions(self.env)
        if flag is None:
            r.delete_flag(self.key)
            return f"{self.key} removed: new logins allowed"
        r.set_flag(self.key, str(flag.get("value")), flag.get("ttl_s"))
        return f"{self.key} back to its previous value"


def _grant_dict(g: PrivilegeGrant) -> dict[str, Any]:
    return {
        "user": g.user,
        "host": g.host,
        "privilege": g.privilege,
        "level": g.level,
        "schema": g.schema,
        "table": g.table,
        "column": g.column,
    }


def _by_grantee(grants: list[PrivilegeGrant]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for g in grants:
        out.setdefault(g.grantee, []).append(g.privilege)
    return {k: sorted(set(v)) for k, v in out.items()}


class MySQLRevoke(_Base):
    """Revoke privileges on schemas, recorded exactly, and close the sessions of the accounts
    that lost them (MySQL caches schema privileges in open connections).

    mode `app-access`: every privilege of the named users on the schemas (isolation);
    mode `writers`: the write privileges of every account whose host is not authorised and
    whose user is not authorised (lockdown: read-only except authorised hosts).
    Privileges granted globally or through patterns covering other schemas cannot be withdrawn
    for these schemas alone: they are reported, not revoked.
    """

    def __init__(self, systems: Systems, spec: StepSpec) -> None:
        super().__init__(systems, spec)
        self.env = str(self.p["env"])
        self.schemas = list(self.p["schemas"])
        self.mode = str(self.p["mode"])
        self.users = set(self.p.get("users") or [])
        self.hosts = set(self.p.get("authorized_hosts") or [])
        self.auth_users = set(self.p.get("authorized_users") or [])
        self.system = str(self.p["target"])
        if self.mode == "app-access":
            self.what = (
                f"revoke the privileges of {', '.join(sorted(self.users))} on"
                f" {', '.join(self.schemas)}"
            )
        else:
            self.what = (
                f"{', '.join(self.schemas)} read-only except accounts at"
                f" {', '.join(sorted(self.hosts)) or 'no host'}"
                + (f" and {', '.join(sorted(self.auth_users))}" if self.auth_users else "")
            )

    def _admin(self) -> Any:
        return self.sys.mysql_admin(self.env)

    def _selected(self, g: PrivilegeGrant) -> bool:
        if g.host is None:  # roles: their members are accounts, handled through them
            return False
        if self.mode == "app-access":
            return g.user in self.users
        if g.privilege not in WRITE_PRIVILEGES:
            return False
        admin = self._admin().login_user()
        return g.user != admin and g.host not in self.hosts and g.user not in self.auth_users

    def read(self) -> dict[str, Any]:
        grants = self._admin().grants()
        chosen = [g for g in grants if self._selected(g)]
        revoke = [g for g in chosen if any(names_schema_exactly(g, s) for s in self.schemas)]
        kept = [
            g
            for g in chosen
            if g not in revoke
            and g.level != "table"
            and any(covers_schema(g, s) for s in self.schemas)
        ]
        return {
            "revoked": [_grant_dict(g) for g in revoke],
            "not_revocable": sorted({g.grantee for g in kept}),
        }

    def done(self, current: dict[str, Any]) -> bool:
        return not current.get("revoked")

    def apply(self, current: dict[str, Any]) -> str:
        admin = self._admin()
        grants = [PrivilegeGrant(**g) for g in current.get("revoked") or []]
        admin.revoke(grants)
        left = set(admin.grants()) & set(grants)
        if left:
            raise Refused(
                self.system, self.what, f"{len(left)} privilege(s) still granted after REVOKE"
            )
        users = {g.user for g in grants}
        closed = 0
        for s in admin.sessions():
            if s.internal or s.user not in users:
                continue
            with contextlib.suppress(ConnectorError):
                closed += 1 if admin.end_session(s.id) else 0
        parts = [f"revoked from {k}: {', '.join(v)}" for k, v in _by_grantee(grants).items()]
        if closed:
            parts.append(f"{closed} session(s) closed")
        if current.get("not_revocable"):
            parts.append(
                "STILL ABLE (global or pattern grants): " + ", ".join(current["not_revocable"])
            )
        return "; ".join(parts)

    def restore(self, previous: dict[str, Any]) -> str:
        admin = self._admin()
        grants = [PrivilegeGrant(**g) for g in previous.get("revoked") or []]
        present = set(admin.grants())
        missing = [g for g in grants if g not in present]
        if missing:
            admin.grant(missing)
        return f"granted back {len(missing)} privilege(s)" if missing else "nothing to grant back"


class HeavyDBAccess(_Base):
    """REVOKE ACCESS ON DATABASE from users who have it (superusers cannot be restricted)."""

    def __init__(self, systems: Systems, spec: StepSpec) -> None:
        super().__init__(systems, spec)
        self.env = str(self.p["env"])
        self.users = list(self.p.get("users") or [])
        self.database = str(self.p["database"])
        self.system = str(self.p["target"])
        self.what = f"revoke access to {self.database} from {', '.join(self.users)}"

    def read(self) -> dict[str, Any]:
        db = self.sys.heavydb(self.env)
        supers = {u.name for u in db.users() if u.is_super}
        access = {}
        for u in self.users:
            if u in supers:
                continue
            access[u] = db.has_database_access(u, self.database)
        return {"access": access, "superusers": sorted(set(self.users) & supers)}

    def done(self, current: dict[str, Any]) -> bool:
        return not any((current.get("access") or {}).values())

    def apply(self, current: dict[str, Any]) -> str:
        db = self.sys.heavydb(self.env)
        revoked = [u for u, has in (current.get("access") or {}).items() if has]
        for u in revoked:
            db.set_database_access(u, False, self.database)
        still = [u for u in revoked if db.has_database_access(u, self.database)]
        if still:
            raise Refused(
                self.system,
                self.what,
                f"{', '.join(still)} still have access (through a role or as the owner)",
            )
        out = f"revoked from {', '.join(revoked)}"
        if current.get("superusers"):
            out += f"; superusers not restricted: {', '.join(current['superusers'])}"
        return out

    def restore(self, previous: dict[str, Any]) -> str:
        db = self.sys.heavydb(self.env)
        back = [u for u, had in (previous.get("access") or {}).items() if had]
        for u in back:
            db.set_database_access(u, True, self.database)
        return f"access granted back to {', '.join(back)}" if back else "nothing to grant back"


class MySQLLock(_Base):
    def __init__(self, systems: Systems, spec: StepSpec) -> None:
        super().__init__(systems, spec)
        self.env = str(self.p["env"])
        self.user = str(self.p["user"])
        self.system = str(self.p["target"])
        self.what = f"lock the MySQL accounts of {self.user}"

    def read(self) -> dict[str, Any]:
        accounts = self.sys.mysql_admin(self.env).accounts(self.user)
        return {"accounts": [{"host": a.host, "locked": a.locked} for a in accounts]}

    def done(self, current: dict[str, Any]) -> bool:
        return all(a["locked"] for a in current.get("accounts") or [])

    def apply(self, current: dict[str, Any]) -> str:
        admin = self.sys.mysql_admin(self.env)
        hosts = [a["host"] for a in current.get("accounts") or [] if not a["locked"]]
        for host in hosts:
            admin.set_account_locked(self.user, host, True)
        return f"locked {self.user}@{', '.join(hosts)}"

    def restore(self, previous: dict[str, Any]) -> str:
        admin = self.sys.mysql_admin(self.env)
        hosts = [a["host"] for a in previous.get("accounts") or [] if not a["locked"]]
        for host in hosts:
            admin.set_account_locked(self.user, host, False)
        return f"unlocked {self.user}@{', '.join(hosts)}" if hosts else "nothing to unlock"


class HeavyDBLogin(_Base):
    def __init__(self, systems: Systems, spec: StepSpec) -> None:
        super().__init__(systems, spec)
        self.env = str(self.p["env"])
        self.user = str(self.p["user"])
        self.system = str(self.p["target"])
        self.what = f"disable the HeavyDB login of {self.user}"

    def read(self) -> dict[str, Any]:
        found = [u for u in self.sys.heavydb(self.env).users() if u.name == self.user]
        return {"exists": bool(found), "can_login": bool(found and found[0].can_login)}

    def done(self, current: dict[str, Any]) -> bool:
        return not current.get("can_login")

    def apply(self, current: dict[str, Any]) -> str:
        self.sys.heavydb(self.env).set_login(self.user, False)
        return f"{self.user} cannot log in"

    def restore(self, previous: dict[str, Any]) -> str:
        if previous.get("exists") and previous.get("can_login"):
            self.sys.heavydb(self.env).set_login(self.user, True)
            return f"{self.user} may log in again"
        return "nothing to restore"


class AppUser(_Base):
    def __init__(self, systems: Systems, spec: StepSpec) -> None:
        super().__init__(systems, spec)
        self.env = str(self.p["env"])
        self.user = str(self.p["user"])
        self.system = f"app[{self.env}]"
        self.what = f"disable {self.user} in the application"

    def read(self) -> dict[str, Any]:
        try:
            doc = self.sys.app(self.env).user(self.user)
        except NotFound:
            return {"exists": False, "active": False}
        return {"exists": True, "active": bool(doc.get("active")), "role": doc.get("role")}

    def done(self, current: dict[str, Any]) -> bool:
        return not current.get("active")

    def apply(self, current: dict[str, Any]) -> str:
        doc = self.sys.app(self.env).set_user_active(self.user, False)
        if doc.get("active"):
            raise ConnectorError(self.system, self.what, "the user is still active after")
        return f"{self.user} disabled (cannot log in)"

    def restore(self, previous: dict[str, Any]) -> str:
        if previous.get("exists") and previous.get("active"):
            self.sys.app(self.env).set_user_active(self.user, True)
            return f"{self.user} enabled again"
        return "nothing to restore"


STEP_KINDS: dict[str, type[_Base]] = {
    "lb-drain": LbFlag,
    "lb-deny": LbFlag,
    "lb-allowlist": LbAllowlist,
    "lb-rate-limit": LbRateLimit,
    "login-flag": LoginFlag,
    "mysql-revoke": MySQLRevoke,
    "heavydb-access": HeavyDBAccess,
    "mysql-lock": MySQLLock,
    "heavydb-login": HeavyDBLogin,
    "app-user": AppUser,
}


def build_step(systems: Systems, spec: StepSpec) -> Any:
    try:
        cls = STEP_KINDS[spec.kind]
    except KeyError:
        raise ValueError(f"unknown security step {spec.kind!r}") from None
    return cls(systems, spec)


# --------------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------------


def isolation_plan(
    settings: Settings, env: str, identify: Identify | None = None
) -> tuple[list[StepSpec], list[str]]:
    """(steps, notes) to isolate env: drain and deny it at the load balancer, revoke the app
    accounts' privileges on its databases (not where another environment shares them, unless
    security.isolate_shared_databases)."""
    sec = settings.security
    cfg = settings.environment(env)
    steps = [
        StepSpec(kind="lb-drain", params={"target": env}),
        StepSpec(kind="lb-deny", params={"target": env}),
    ]
    notes: list[str] = []
    for engine in ("mysql", "heavydb"):
        group = next(
            t
            for t in server_targets(settings, [engine], None, identify=identify)  # type: ignore[list-item]
            if env in t.envs
        )
        target = group.model_copy(update={"envs": [env]})
        others = [e for e in group.envs if e != env]
        if others and not sec.isolate_shared_databases:
            notes.append(
                f"{target.name}: shared with {', '.join(others)}: the application accounts keep"
                " their privileges there (revoking them would cut the other environment off;"
                " security.isolate_shared_databases = true does it anyway)"
            )
            continue
        if engine == "mysql":
            users = sec.app_db_users.mysql or [cfg.mysql.user]
            steps.append(
                StepSpec(
                    kind="mysql-revoke",
                    params={
                        "target": target.name,
                        "env": env,
                        "mode": "app-access",
                        "schemas": [cfg.mysql.database],
                        "users": users,
                    },
                )
            )
        else:
            users = sec.app_db_users.heavydb or [cfg.heavydb.user]
            steps.append(
                StepSpec(
                    kind="heavydb-access",
                    params={
                        "target": target.name,
                        "env": env,
                        "database": cfg.heavydb.database,
                        "users": users,
                    },
                )
            )
    return steps, notes


def lockdown_plan(
    settings: Settings, systems: Systems | None = None, identify: Identify | None = None
) -> list[StepSpec]:
    """The runbook's four lockdown commands, in order (lift runs them backwards)."""
    lk = settings.security.lockdown
    steps: list[StepSpec] = []
    redis_envs = systems.redis_envs() if systems else _redis_envs(settings)
    for env in redis_envs:
        steps.append(
            StepSpec(
                kind="login-flag",
                params={"target": env, "key": lk.login_flag_key, "value": "security lockdown"},
            )
        )
    steps.append(
        StepSpec(kind="lb-allowlist", params={"target": "lb", "networks": lk.internal_networks})
    )
    steps.append(
        StepSpec(
            kind="lb-rate-limit",
            params={
                "target": "lb",
                "requests_per_minute": lk.rate_limit_per_minute,
                "paths": lk.rate_limit_paths,
            },
        )
    )
    if systems is not None and identify is None:
        identify = systems.identify
    for target in server_targets(settings, ["mysql"], identify=identify):
        schemas = lk.db_schemas or sorted(
            {settings.environment(e).mysql.database for e in target.envs}
        )
        steps.append(
            StepSpec(
                kind="mysql-revoke",
                params={
                    "target": target.name,
                    "env": target.env,
                    "mode": "writers",
                    "schemas": schemas,
                    "authorized_hosts": lk.db_authorized_hosts,
                    "authorized_users": lk.db_authorized_users,
                },
            )
        )
    return steps


def _redis_envs(settings: Settings) -> list[str]:
    seen: set[str] = set()
    out = []
    for env in sorted(settings.environments):
        group = ",".join(sharing(settings, "redis", env))
        if group not in seen:
            seen.add(group)
            out.append(env)
    return out


def suspension_plan(
    settings: Settings, user: str, present: dict[str, bool], identify: Identify | None = None
) -> list[StepSpec]:
    """Lock the user's database accounts and disable it in the app, where it exists
    (`present`: system name -> whether the user exists there)."""
    steps: list[StepSpec] = []
    for target in server_targets(settings, ["mysql"], identify=identify):
        if present.get(target.name):
            steps.append(
                StepSpec(
                    kind="mysql-lock",
                    params={"target": target.name, "env": target.env, "user": user},
                )
            )
    for target in server_targets(settings, ["heavydb"], identify=identify):
        if present.get(target.name):
            steps.append(
                StepSpec(
                    kind="heavydb-login",
                    params={"target": target.name, "env": target.env, "user": user},
                )
            )
    seen: list[str] = []
    for env in sorted(settings.environments):
        if any(settings.shares_database(env, o, "mysql") for o in seen):
            continue
        seen.append(env)
        if present.get(f"app[{env}]"):
            steps.append(
                StepSpec(kind="app-user", params={"target": env, "env": env, "user": user})
            )
    return steps


def find_user(systems: Systems, user: str) -> dict[str, Any]:
    """Where the user exists: {system name: detail or None}; errors are raised."""
    found: dict[str, Any] = {}
    for target in systems.targets("mysql"):
        accts = systems.mysql_admin(target.env).accounts(user)
        found[target.name] = [a.host for a in accts] or None
    for target in systems.targets("heavydb"):
        users = [u for u in systems.heavydb(target.env).users() if u.name == user]
        found[target.name] = (
            {"can_login": users[0].can_login, "is_super": users[0].is_super} if users else None
        )
    for env in systems.app_envs():
        try:
            found[f"app[{env}]"] = systems.app(env).user(user)
        except NotFound:
            found[f"app[{env}]"] = None
    return found
