"""The read-only command `backup list`, time parsing, and credentials kept out of errors."""

# ruff: noqa: F401, F811  (fixtures imported from the support module)
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from sandbox.proc import Service
from tbs_emergency.cli import app
from tests.integration.test_backup_support import REC_DB, recovery_config, root_sql, serverless

pytestmark = pytest.mark.integration


def test_backup_list_shows_complete_backups_only(recovery_config: str, mariadb: Service) -> None:
    from flows.emergency_backup import BackupParams
    from tasks.incident import connectors_for
    from tbs_emergency.recovery import layout

    root_sql(
        mariadb,
        "CREATE TABLE IF NOT EXISTS cli_t (id INT PRIMARY KEY)",
        "INSERT IGNORE INTO cli_t VALUES (1), (2)",
        database=REC_DB,
    )
    with serverless() as s:
        report = s.call(
            "emergency_backup",
            BackupParams(
                config_path=recovery_config, heavydb=False, tables=["cli_t"], apply_retention=False
            ),
        )
    connectors_for(recovery_config).store().put(
        layout.mysql_chunk_key("20200202T000000Z-aaaaaa", REC_DB, "cli_t", 0), b"partial"
    )
    result = CliRunner().invoke(app, ["backup", "list", "--config", recovery_config, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    ids = [b["backup_id"] for b in doc["backups"]]
    assert report.backup_id in ids and "20200202T000000Z-aaaaaa" not in ids
    assert doc["incomplete"] >= 1
    mine = next(b for b in doc["backups"] if b["backup_id"] == report.backup_id)
    assert mine["mysql_rows"] == 2 and mine["manifest"].endswith("manifest.json")
    table = CliRunner().invoke(app, ["backup", "list", "--config", recovery_config])
    assert table.exit_code == 0 and report.backup_id in table.stdout
    assert "without a manifest are not listed" in table.stderr


def test_times_need_a_zone_and_nonsense_is_refused() -> None:
    from tbs_emergency.cli.recovery_cmds import parse_time

    t = parse_time("2025-01-24 10:00:00Z", "--to")
    assert t.isoformat() == "2025-01-24T10:00:00+00:00"
    assert parse_time("2025-01-24T11:00:00+01:00", "--to").hour == 11
    for bad in ("2025-01-24 10:00:00", "yesterday"):
        with pytest.raises(Exception) as err:
            parse_time(bad, "--to")
        assert getattr(err.value, "exit_code", None) == 2


def test_tool_errors_never_show_the_password(mariadb: Service, known: SimpleNamespace) -> None:
    """The recovery account lacks REPLICATION SLAVE: mariadb-binlog is refused; the error says
    why and does not contain the password (it was in a private option file)."""
    from tbs_emergency.config import MySQLConfig
    from tbs_emergency.connectors.mysql import MySQLDatabase, MySQLRecovery
    from tbs_emergency.errors import Refused

    cfg = MySQLConfig(
        host="127.0.0.1",
        port=mariadb.port,
        user="tbs_recovery",
        password=known.recovery_password,
        database="tbs_archive",
    )
    rec = MySQLRecovery(MySQLDatabase(cfg, "mysql[test]"))
    (file, _size) = rec.binary_logs()[-1]
    with pytest.raises(Refused) as err:
        rec.binlog_text([file], stop_position=1000)
    text = str(err.value)
    assert "REPLICATION SLAVE" in text or "privilege" in text.lower()
    assert known.recovery_password not in text
    bad = MySQLRecovery(MySQLDatabase(cfg.model_copy(update={"user": "nobody"}), "mysql[x]"))
    with pytest.raises(Exception) as err2:
        bad.server_info()
    assert known.recovery_password not in str(err2.value)
