"""Which database servers a procedure acts on.

Server-level settings (max_connections, logins, caches) belong to a server, not to one of its
databases, so two environments whose databases live on the same server (same host and port,
even with different database names) are one target named after both: `mysql[blue,green]`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel

from tbs_emergency.config import Settings
from tbs_emergency.errors import ConfigError

Engine = Literal["mysql", "heavydb"]
ENGINES: tuple[Engine, ...] = ("mysql", "heavydb")


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
    settings: Settings, engines: Iterable[Engine], envs: Iterable[str] | None = None
) -> list[ServerTarget]:
    """One target per distinct server of each engine, in a stable order."""
    chosen_envs = resolve_envs(settings, envs)
    targets: list[ServerTarget] = []
    for engine in engines:
        by_server: dict[str, list[str]] = {}
        for env in chosen_envs:
            by_server.setdefault(server_identity(settings, engine, env), []).append(env)
        for server, server_envs in by_server.items():
            # Name the target after every configured environment on that server, so the
            # operator sees that acting on "blue" also acts on green when they share it.
            sharing = sorted(
                e for e in settings.environments if server_identity(settings, engine, e) == server
            )
            targets.append(
                ServerTarget(
                    engine=engine,
                    name=f"{engine}[{','.join(sharing)}]",
                    server=server,
                    envs=sorted(server_envs),
                )
            )
    return targets
