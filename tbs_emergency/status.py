"""What `tbs-emergency status` reports: who has traffic, how each environment is, read-only state.

Every read is bounded by its connector's timeout and a failure becomes part of the answer
("unknown" plus the reason) instead of an exception: at 3 a.m. a partial picture that says
what it could not see beats a traceback.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tbs_emergency.config import Settings
from tbs_emergency.connectors import Connectors
from tbs_emergency.errors import TbsError


def _attempt(fn: Any) -> tuple[Any, str | None]:
    try:
        return fn(), None
    except TbsError as exc:
        return None, str(exc)


def database_groups(settings: Settings, kind: str) -> dict[str, list[str]]:
    """Databases of one kind by identity, with the environments that use each."""
    groups: dict[str, list[str]] = {}
    for name, env in sorted(settings.environments.items()):
        groups.setdefault(getattr(env, kind).identity, []).append(name)
    return groups


def collect_status(settings: Settings, connectors: Connectors | None = None) -> dict[str, Any]:
    """The status document; keys: traffic, environments, databases, incidents, problems."""
    conn = connectors or Connectors(settings)
    problems: list[str] = []
    jobs: dict[str, Any] = {"traffic": lambda: conn.traffic().active()}
    for env in settings.environments:
        jobs[f"app:{env}"] = lambda env=env: conn.app(env).health()
    for kind in ("mysql", "heavydb"):
        for identity, envs in database_groups(settings, kind).items():
            opener = getattr(conn, kind)
            jobs[f"{kind}:{identity}"] = lambda opener=opener, env=envs[0]: opener(
                env
            ).is_read_only()

    with ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
        futures = {name: pool.submit(_attempt, fn) for name, fn in jobs.items()}
        results = {name: f.result() for name, f in futures.items()}

    traffic, err = results["traffic"]
    if err:
        problems.append(err)

    environments: dict[str, Any] = {}
    for env, cfg in sorted(settings.environments.items()):
        health, err = results[f"app:{env}"]
        if err:
            problems.append(err)
        environments[env] = {
            "app_url": cfg.app_url,
            "has_traffic": traffic == env,
            "health": (health or {}).get("status", "unknown") if not err else "unreachable",
            "checks": (health or {}).get("checks", {}),
            "error": err,
        }

    databases: list[dict[str, Any]] = []
    for kind in ("mysql", "heavydb"):
        for identity, envs in database_groups(settings, kind).items():
            ro, err = results[f"{kind}:{identity}"]
            if err:
                problems.append(err)
            databases.append(
                {
                    "system": f"{kind}[{','.join(envs)}]",
                    "kind": kind,
                    "environments": envs,
                    "target": identity,
                    "read_only": ro,
                    "error": err,
                }
            )

    incidents, err = _attempt(lambda: open_incidents(conn))
    if err:
        problems.append(err)
    return {
        "traffic": traffic or "unknown",
        "environments": environments,
        "databases": databases,
        "incidents": incidents if incidents is not None else [],
        "journal_spool": journal_spool(settings),
        "problems": problems,
    }


def journal_spool(settings: Settings) -> dict[str, Any]:
    """Journal entries written to the local spool while the object store was down and not yet
    flushed to it: count, oldest, per incident (`tbs-emergency journal flush` writes them)."""
    from tbs_emergency.domain.journal import spool_for

    try:
        return spool_for(settings.journal, settings.storage).summary().as_dict()
    except OSError as exc:
        return {"count": None, "error": f"cannot read the journal spool: {exc.strerror}"}


def open_incidents(conn: Connectors) -> list[dict[str, Any]]:
    """Open incidents as recorded in the journal's index (`incidents/open/<id>.json`)."""
    import json

    store = conn.store()
    found = []
    for obj in store.list("incidents/open/"):
        if obj.key.endswith(".json"):
            rec = json.loads(store.get(obj.key))
            # A closed incident's index record is deleted, or rewritten as closed where the
            # store cannot delete (see tbs_emergency.domain.journal).
            if rec.get("status", "open") in ("open", "escalated", "degraded"):
                found.append(rec)
    return found
