"""Which database servers a procedure acts on.

Server-level settings (max_connections, logins, caches) belong to a server, not to one of its
databases, so two environments whose databases live on the same server are one target named
after both: `mysql[blue,green]`. "The same server" is decided by the configured address (host
and port, or socket) and, when `identify` is given, by what the servers say about themselves:
environments that reach one server through different addresses (a proxy or load balancer per
environment) are one target too, so a limit is recorded once and `lift` restores it once.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import BaseModel

from tbs_emergency.config import Settings
from tbs_emergency.errors import ConfigError

Engine = Literal["mysql", "heavydb"]
ENGINES: tuple[Engine, ...] = ("mysql", "heavydb")

#: (engine, env) -> the server's own identity, or None when it cannot be asked
Identify = Callable[[Engine, str], "str | None"]


class ServerTarget(BaseModel):
    """One database server and the environments that use it."""

    engine: Engine
    name: str  # mysql[blue,green]
    server: str  # mysql://127.0.0.1:3306 (no database, no credentials)
    envs: list[str]

    @property
    def env(self) -> str:
        """The environment whose configuration reaches the server."""
        return self.envs[0]

    @property
    def key(self) -> str:
        """A file-name-safe identity for state keys: `mysql-127.0.0.1-3306`."""
        return safe_key(self.server)


def safe_key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.split("://", 1)[-1]).strip("-") or "server"


def server_identity(settings: Settings, engine: Engine, env: str) -> str:
    cfg = getattr(settings.environment(env), engine)
    if engine == "mysql" and cfg.unix_socket:
        return f"mysql://{cfg.unix_socket}"
    return f"{engine}://{cfg.host}:{cfg.port}"


def resolve_envs(settings: Settings, envs: Iterable[str] | None) -> list[str]:
    """The environments asked for (all configured ones when none), validated."""
    chosen = list(dict.fromkeys(envs or [])) or sorted(settings.environments)
    unknown = [e for e in chosen if e not in settings.environments]
    if unknown:
        known = ", ".join(sorted(settings.environments))
        raise ConfigError([f"environments: no environment {e!r} (known: {known})" for e in unknown])
    return chosen


def resolve_engines(mysql: bool, heavydb: bool) -> list[Engine]:
    """`--mysql`/`--heavydb`; neither means both."""
    chosen: list[Engine] = [e for e, on in (("mysql", mysql), ("heavydb", heavydb)) if on]
    return chosen or list(ENGINES)


def server_targets(
    settings: Settings,
    engines: Iterable[Engine],
    envs: Iterable[str] | None = None,
    identify: Identify | None = None,
) -> list[ServerTarget]:
    """One target per distinct server of each engine, in a stable order.

    Every configured environment is grouped (not only the chosen ones) so a target's name, its
    address and the key of its records are the same whichever environments a run names.
    """
    chosen_envs = resolve_envs(settings, envs)
    targets: list[ServerTarget] = []
    for engine in engines:
        groups = _server_groups(settings, engine, identify)
        for server_envs in groups:
            picked = sorted(e for e in server_envs if e in chosen_envs)
            if not picked:
                continue
            targets.append(
                ServerTarget(
                    engine=engine,
                    # every environment on that server, so the operator sees that acting on
                    # "blue" also acts on green when they share it
                    name=f"{engine}[{','.join(server_envs)}]",
                    server=server_identity(settings, engine, server_envs[0]),
                    envs=picked,
                )
            )
    return targets


def _server_groups(
    settings: Settings, engine: Engine, identify: Identify | None
) -> list[list[str]]:
    """The configured environments of `engine` grouped by server (each group sorted)."""
    groups: dict[str, list[str]] = {}
    for env in sorted(settings.environments):
        address = server_identity(settings, engine, env)
        own = identify(engine, env) if identify is not None else None
        groups.setdefault(f"{engine}@{own}" if own else address, []).append(env)
    return sorted(groups.values(), key=lambda g: g[0])


def live_identity(settings: Settings) -> Identify:
    """`identify` that asks each server who it is (MySQL `@@hostname:@@port`, HeavyDB host name
    and start time), once per configured address; None when it cannot be reached (the address
    then stands for the server, and the procedure reports the unreachable server itself)."""
    seen: dict[str, str | None] = {}

    def identify(engine: Engine, env: str) -> str | None:
        address = server_identity(settings, engine, env)
        if address not in seen:
            seen[address] = _ask_identity(settings, engine, env)
        return seen[address]

    return identify


def _ask_identity(settings: Settings, engine: Engine, env: str) -> str | None:
    config = getattr(settings.environment(env), engine)
    db: Any = None
    try:
        if engine == "mysql":
            from tbs_emergency.connectors.mysql import MySQLDatabase

            db = MySQLDatabase(config, f"mysql[{env}]")
            rows = db.query("SELECT @@hostname, @@port")
            return f"{rows[0][0]}:{rows[0][1]}" if rows else None
        from tbs_emergency.connectors.heavydb import HeavyDBDatabase

        db = HeavyDBDatabase(config, f"heavydb[{env}]")
        status = db.server_status()
        return f"{status['host_name']}@{status['start_time']}"
    except Exception:
        return None
    finally:
        if db is not None:
            with contextlib.suppress(Exception):
                db.close()
