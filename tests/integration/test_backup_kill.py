"""Faults on a MariaDB of its own (the session's server is shared): the server is killed in the
middle of a backup, and binary logs a backup needs are purged.

A killed backup must fail clearly, leave no manifest (so it does not exist), and a rerun with the
same id must finish it. A point-in-time recovery whose binlog was purged must be refused.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sandbox.services import start_mariadb
from tests.integration.test_backup_support import root_sql, serverless, write_config

pytestmark = pytest.mark.integration

DB = "kill_archive"


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, settings_factory: Any, moto: Any) -> Any:
    root = tmp_path_factory.mktemp("private-mariadb")
    svc = start_mariadb(root / "m")
    root_sql(svc, f"CREATE DATABASE {DB}")
    root_sql(
        svc,
        "CREATE TABLE big (id INT PRIMARY KEY, payload VARCHAR(200), n BIGINT)",
        "INSERT INTO big SELECT seq, REPEAT(CHAR(97 + seq % 26), 150), seq * seq"
        " FROM seq_1_to_30000",
        database=DB,
    )
    settings = settings_factory(mysql_port=svc.port)
    from tbs_emergency.connectors.objectstore import S3ObjectStore

    S3ObjectStore(settings.storage).ensure_bucket()
    cfg = write_config(root, settings, database=DB)
    state = {"svc": svc, "root": root / "m"}
    yield cfg, state
    state["svc"].stop()


def _store(cfg: str) -> Any:
    from tasks.incident import connectors_for

    return connectors_for(cfg).store()


def test_killed_mid_backup_leaves_no_manifest_and_a_rerun_finishes_it(private: Any) -> None:
    from flows.emergency_backup import BackupParams
    from tbs_emergency.recovery import catalog, layout
    from tbs_emergency.recovery.ids import new_id

    cfg, state = private
    store = _store(cfg)
    backup_id = new_id(datetime.now(UTC))
    params = BackupParams(
        config_path=cfg,
        heavydb=False,
        backup_id=backup_id,
        connections=1,
        chunk_bytes=64 * 1024,
        apply_retention=False,
    )
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            with serverless() as s:
                outcome["report"] = s.call("emergency_backup", params)
        except Exception as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len(list(store.list(layout.backup_prefix(backup_id)))) >= 2:
            break
        time.sleep(0.05)
    os.kill(state["svc"].pid, signal.SIGKILL)
    worker.join(120)
    assert not worker.is_alive()
    assert "error" in outcome, "the backup must fail when its server dies"
    message = str(outcome["error"])
    assert "mysql" in message and "big" in message, message
    assert not store.exists(layout.manifest_key(backup_id)), "no manifest: it does not exist"
    cat = catalog.scan(store)
    assert backup_id in [b.backup_id for b in cat.incomplete]
    assert backup_id not in [m.backup_id for m in cat.complete]
    # the server comes back; the same backup id finishes the job
    state["svc"] = start_mariadb(Path(state["root"]), port=state["svc"].port)
    with serverless() as s:
        report = s.call("emergency_backup", params)
    assert report.backup_id == backup_id and not report.already_existed
    manifest = catalog.load_manifest(store, backup_id)
    assert manifest.mysql is not None and manifest.mysql.tables[0].rows == 30000
    keys = {o.key for o in store.list(layout.backup_prefix(backup_id))}
    assert keys == {o.key for o in manifest.objects} | {manifest.key}, "no stray objects"


def test_recovery_past_the_retained_binlog_is_refused(private: Any) -> None:
    from flows.emergency_backup import BackupParams
    from flows.point_in_time_recovery import PitrParams

    cfg, state = private
    svc = state["svc"]
    with serverless() as s:
        s.call(
            "emergency_backup", BackupParams(config_path=cfg, heavydb=False, apply_retention=False)
        )
    root_sql(svc, "INSERT INTO big VALUES (70000, 'after', 1)", database=DB)
    root_sql(svc, "FLUSH BINARY LOGS")
    (newest,) = root_sql(svc, "SHOW MASTER STATUS")[0][:1]
    # MariaDB keeps a log until its binlog checkpoint moves on: purge until it is gone
    deadline = time.monotonic() + 30
    while len(root_sql(svc, "SHOW BINARY LOGS")) > 1 and time.monotonic() < deadline:
        root_sql(svc, f"PURGE BINARY LOGS TO '{newest}'")
        time.sleep(0.2)
    assert [f for f, *_ in root_sql(svc, "SHOW BINARY LOGS")] == [newest]
    (now,) = root_sql(svc, "SELECT UTC_TIMESTAMP()")[0]
    with serverless() as s:
        ok, report = s.run(
            "point_in_time_recovery",
            PitrParams(
                config_path=cfg, target_at=now.replace(tzinfo=UTC), target_database="kill_recovered"
            ),
        )
    assert not ok, report.plan
    assert "past the retained binlog" in (report.refused or ""), report
