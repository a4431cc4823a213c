"""Shared pieces of the data-protection integration tests (no tests here).

- `recovery_config`: a tbs.toml over the session's real servers (MariaDB with a ROW binlog,
  moto S3, the HeavyDB sandbox server when present) whose archive database is this suite's own
  (`rec_archive`) and whose admin account is MariaDB's root;
- `serverless()`: runs the flow modules' bodies for real without a Prefect server: each task
  becomes its own function (`task.fn`; `.submit` runs it at once), artifacts are recorded in
  memory and run loggers are disabled. Orchestration (retries, states in the UI) is Prefect's
  and not under test here; the procedures' logic is.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from pydantic import BaseModel, SecretStr

from sandbox.proc import Service

REC_DB = "rec_archive"
FLOW_MODULES = (
    "flows.emergency_backup",
    "flows.restore",
    "flows.point_in_time_recovery",
    "flows.flashback",
    "flows.reconcile",
)


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Settings as plain data with secrets revealed (for writing a tbs.toml)."""
    from tbs_emergency.config import Secret

    if isinstance(value, Secret):
        if value.env:
            return {"env": value.env}
        if value.block:
            return {"block": value.block}
        return value.get_secret_value()
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        out = {}
        for name in type(value).model_fields:
            v = _plain(getattr(value, name))
            if v is not None:
                out[name] = v
        return out
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) or _is_inline(v)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict) and not _is_inline(v)}
    lines = []
    if prefix:
        lines.append(f"[{prefix}]")
    lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in scalars.items()]
    text = "\n".join(lines) + "\n"
    for k, v in tables.items():
        text += "\n" + to_toml(v, f"{prefix}.{json.dumps(k)}" if prefix else json.dumps(k))
    return text


def _is_inline(v: dict[str, Any]) -> bool:
    return set(v) <= {"env", "block"} or set(v) == {"value"}


def root_sql(mariadb: Service, *statements: str, database: str | None = None) -> list[Any]:
    con = pymysql.connect(
        unix_socket=mariadb.extra["socket"],
        user="root",
        password="",
        autocommit=True,
        database=database,
        init_command="SET time_zone='+00:00'",
    )
    try:
        rows: list[Any] = []
        with con.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
                rows = list(cur.fetchall())
        return rows
    finally:
        con.close()


def write_config(tmp: Path, settings: Any, database: str = REC_DB, **sections: Any) -> str:
    data = _plain(settings)
    for env in data["environments"].values():
        env["mysql"]["database"] = database
    data["database_emergency"] = {"mysql_admin": {"user": "root"}}
    data.update(sections)
    path = tmp / f"tbs-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(to_toml(data))
    from tbs_emergency.config import load_settings

    load_settings(path)  # fail here, not in a flow, if the file is wrong
    return str(path)


@pytest.fixture(scope="session")
def recovery_config(
    mariadb: Service, moto: Service, settings: Any, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """tbs.toml for the data-protection tests: own archive database, root as admin."""
    root_sql(mariadb, f"CREATE DATABASE IF NOT EXISTS {REC_DB}")
    from tbs_emergency.connectors.objectstore import S3ObjectStore

    S3ObjectStore(settings.storage).ensure_bucket()
    return write_config(tmp_path_factory.mktemp("rec-config"), settings)


@pytest.fixture(scope="session")
def heavy_config(
    mariadb: Service,
    moto: Service,
    heavydb_server: Any,
    settings_factory: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """As recovery_config, with HeavyDB pointing at the sandbox server and an archive
    mapping for the table `hot` (key id, updated_column updated_at)."""
    root_sql(mariadb, f"CREATE DATABASE IF NOT EXISTS {REC_DB}")
    settings = settings_factory(heavydb_port=heavydb_server.port)
    from tbs_emergency.connectors.objectstore import S3ObjectStore

    S3ObjectStore(settings.storage).ensure_bucket()
    integrity = {
        "tables": [{"name": "hot", "key": ["id"], "updated_column": "updated_at"}],
    }
    return write_config(tmp_path_factory.mktemp("heavy-config"), settings, integrity=integrity)


# --------------------------------------------------------------------------------------------
# running flows without a Prefect server
# --------------------------------------------------------------------------------------------


class _Done:
    def __init__(self, fn: Any, args: Any, kwargs: Any) -> None:
        try:
            self._value, self._error = fn(*args, **kwargs), None
        except Exception as exc:
            self._value, self._error = None, exc

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


class _Eager:
    def __init__(self, task: Any) -> None:
        self.task = task
        self.fn = task.fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> _Done:
        return _Done(self.fn, args, kwargs)


class Artifacts:
    """What a serverless run saw, and the flows to call (by name)."""

    def __init__(self) -> None:
        self.markdown: list[dict[str, Any]] = []
        self.flows: dict[str, Any] = {}

    def call(self, name: str, params: Any) -> Any:
        """Run flow `name`; its report, or raise if it failed (Failed state or exception)."""
        ok, report = unwrap(self.flows[name](params))
        if not ok:
            raise FlowFailed(report)
        return report

    def run(self, name: str, params: Any) -> tuple[bool, Any]:
        """Run flow `name`; (succeeded, report). Exceptions propagate."""
        return unwrap(self.flows[name](params))


class FlowFailed(Exception):
    def __init__(self, report: Any) -> None:
        self.report = report
        super().__init__(str(report))


@contextlib.contextmanager
def serverless(active_env: str = "green") -> Iterator[Artifacts]:
    """Flow bodies with eager tasks, in-memory artifacts, the given environment active."""
    from prefect import Flow, Task
    from prefect.logging import disable_run_logger

    seen = Artifacts()
    patches: list[tuple[Any, str, Any]] = []

    def patch(obj: Any, name: str, value: Any) -> None:
        patches.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    modules = [importlib.import_module(m) for m in FLOW_MODULES]
    for mod in modules:
        for name, value in list(vars(mod).items()):
            if isinstance(value, Task):
                patch(mod, name, _Eager(value))
        if hasattr(mod, "active_traffic"):
            patch(mod, "active_traffic", lambda _cfg: active_env)
        if hasattr(mod, "create_markdown_artifact"):
            patch(mod, "create_markdown_artifact", lambda **kw: seen.markdown.append(kw))
        if hasattr(mod, "create_progress_artifact"):
            patch(mod, "create_progress_artifact", lambda *a, **kw: None)
    for mod in modules:
        for name, value in list(vars(mod).items()):
            if isinstance(value, Flow):
                seen.flows[name] = value.fn
                patch(mod, name, value.fn)
    try:
        with disable_run_logger():
            yield seen
    finally:
        for obj, name, old in reversed(patches):
            setattr(obj, name, old)


def unwrap(result: Any) -> tuple[bool, Any]:
    """(succeeded, report) from what a flow body returned (a report or a Failed state)."""
    from prefect.client.schemas.objects import State

    if isinstance(result, State):
        return (not result.is_failed()), result.data
    return True, result


def fresh_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:6]}"


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false")
