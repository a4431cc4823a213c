"""Undo records: the well-known key, a round trip through the store, journal only with an
incident; sync table selection from the configuration."""

from __future__ import annotations

import json

import pytest

from tbs_emergency.config import Settings
from tbs_emergency.connectors.base import AccountLimit, PrivilegeGrant
from tbs_emergency.dbops.records import (
    ArchiveUndo,
    MySQLLimitUndo,
    UndoRecord,
    UndoStore,
    state_key,
)
from tbs_emergency.dbops.sync import sync_specs
from tbs_emergency.dbops.targets import ServerTarget
from tbs_emergency.domain.journal import Journal
from tbs_emergency.errors import ConfigError
from tests.unit.fakes_rollback import MemoryStore

pytestmark = pytest.mark.unit

T = ServerTarget(
    engine="mysql", name="mysql[blue,green]", server="mysql://10.0.0.5:3306", envs=["blue"]
)


def test_state_key_is_file_name_safe() -> None:
    assert state_key("connection-limits", T) == "state/connection-limits/10.0.0.5-3306.json"
    sock = T.model_copy(update={"server": "mysql:///run/mysqld/mysqld.sock"})
    assert state_key("archive-protection", sock) == (
        "state/archive-protection/run-mysqld-mysqld.sock.json"
    )


def test_round_trip_keeps_dataclass_values() -> None:
    store = MemoryStore()
    undo = UndoStore(store)
    grant = PrivilegeGrant("app", "%", "INSERT", "column", "tbs_archive", "t", "qty")
    record = UndoRecord(
        kind="archive-protection",
        target=T,
        mysql_limits=MySQLLimitUndo(max_connections=151, accounts=[AccountLimit("a", "%", 0)]),
        archive=ArchiveUndo(schema_name="tbs_archive", revoked=[grant]),
    )
    undo.save(record, "before")
    back = undo.load("archive-protection", T)
    assert back is not None and back.archive is not None and back.mysql_limits is not None
    assert back.archive.revoked == [grant] and isinstance(back.archive.revoked[0], PrivilegeGrant)
    assert back.mysql_limits.accounts == [AccountLimit("a", "%", 0)]
    assert undo.load("connection-limits", T) is None
    # Without an incident nothing goes to any journal.
    assert not any(k.startswith("incidents/") for k in store.objects)


def test_journal_entry_when_the_run_belongs_to_an_incident() -> None:
    store = MemoryStore()
    undo = UndoStore(store)
    undo.save(UndoRecord(kind="connection-limits", target=T, incident_id="inc-9"), "before")
    undo.note("inc-9", "did it", T.name, "ok", {"n": 1})
    undo.note(None, "nowhere", T.name, "ok")
    (first, second) = Journal(store).entries("inc-9")
    assert first.kind == "previous-settings" and first.data["kind"] == "connection-limits"
    assert second.kind == "action" and second.data == {"n": 1}
    assert json.loads(store.objects[state_key("connection-limits", T)])["status"] == "active"


def settings(tables: list[dict], sync_tables: list[str] | None = None) -> Settings:
    env = {
        "app_url": "http://a",
        "heavydb": {},
        "mysql": {},
        "redis": {"url": "redis://r:6379/0"},
    }
    return Settings(
        environments={"blue": env, "green": env},
        traffic={"kind": "http", "url": "http://lb"},
        storage={"bucket": "b"},
        metrics={"prometheus_url": "http://p"},
        integrity={"tables": tables},
        database_emergency={"sync_tables": sync_tables or []},
    )


TABLES = [
    {"name": "trades", "key": "trade_id", "critical": True, "mysql_name": "archive_trades"},
    {"name": "results", "key": ["strategy_id", "run_date"], "heavydb_name": "hot_results"},
]


def test_sync_specs_pick_critical_tables_and_engine_names() -> None:
    (spec,) = sync_specs(settings(TABLES), [], "mysql")
    assert (spec.table, spec.source_table, spec.key) == ("trades", "archive_trades", ["trade_id"])
    (named,) = sync_specs(settings(TABLES), ["results"], "heavydb")
    assert named.source_table == "hot_results" and named.key == ["strategy_id", "run_date"]
    (configured,) = sync_specs(settings(TABLES, ["results"]), [], "mysql")
    assert configured.table == "results"
    with pytest.raises(ConfigError, match="no table 'nope'"):
        sync_specs(settings(TABLES), ["nope"], "mysql")
    with pytest.raises(ConfigError, match="nothing to sync"):
        sync_specs(settings([TABLES[1]]), [], "mysql")
