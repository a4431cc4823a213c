"""Transaction completion on MariaDB: a long open transaction is reported with its age, user and
statement, and ended (rolled back) only with force."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tbs_emergency.dbops.transactions import complete_transactions
from tests.integration.test_db_emergency_support import alive, connection_id

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.integration.test_db_emergency_support"]


@pytest.fixture
def ledger(root_sql: Any, known: Any) -> Iterator[str]:
    table = f"{known.database}.dbops_ledger"
    root_sql(
        f"DROP TABLE IF EXISTS {table}",
        f"CREATE TABLE {table} (id INT PRIMARY KEY, qty INT) ENGINE=InnoDB",
        f"INSERT INTO {table} VALUES (1, 10), (2, 20), (3, 30)",
    )
    yield table
    root_sql(f"DROP TABLE IF EXISTS {table}")


def test_open_transactions_are_reported_and_ended_only_with_force(
    ledger: str,
    mysql_admin: Any,
    mysql_target: Any,
    mysql_connect: Any,
    known: Any,
    root_sql: Any,
) -> None:
    # An idle transaction holding a row change, and one that finishes by itself meanwhile.
    holder = mysql_connect("tbs_app", known.app_password, autocommit=False)
    with holder.cursor() as cur:
        cur.execute(f"UPDATE {ledger} SET qty = 999 WHERE id = 1")
    quick = mysql_connect("tbs_app", known.app_password, autocommit=False)
    with quick.cursor() as cur:
        cur.execute(f"UPDATE {ledger} SET qty = 21 WHERE id = 2")
    # A transaction whose statement is still running at the timeout.
    busy = mysql_connect("tbs_app", known.app_password, autocommit=False)
    with busy.cursor() as cur:
        cur.execute(f"UPDATE {ledger} SET qty = 31 WHERE id = 3")
    busy_id = connection_id(busy)

    def run_sleep() -> None:
        try:
            with busy.cursor() as cur:
                cur.execute("SELECT SLEEP(20)")
        except Exception:
            pass  # ended by force below

    sleeper = threading.Thread(target=run_sleep, daemon=True)
    sleeper.start()
    time.sleep(1.1)
    committer = threading.Timer(0.7, quick.commit)  # finishes while the procedure waits
    committer.start()

    report = complete_transactions(mysql_admin, mysql_target, timeout_s=2.0, poll_s=0.25)
    committer.join()
    assert not report.complete
    assert len(report.at_start) == 3 and len(report.finished) == 1
    still = {t.session_id: t for t in report.still_open}
    assert set(still) == {connection_id(holder), busy_id}
    for t in still.values():
        assert t.user == "tbs_app" and t.age_s >= 2.0
    assert "SLEEP(20)" in (still[busy_id].statement or "")
    text = "\n".join(report.lines())
    assert "idle in transaction" in text and "--force" in text
    # Without force nothing was ended: the sessions and their changes are still there.
    assert alive(holder)
    assert root_sql(f"SELECT qty FROM {ledger} WHERE id = 1") == [(10,)]  # not committed

    forced = complete_transactions(
        mysql_admin, mysql_target, timeout_s=0.5, poll_s=0.25, force=True
    )
    assert forced.forced and forced.complete, forced.lines()
    assert set(forced.ended) == {t.id for t in report.still_open}
    assert not alive(holder)
    sleeper.join(timeout=10)
    assert not sleeper.is_alive()
    # Ended means rolled back; the transaction that committed by itself stays committed.
    assert root_sql(f"SELECT id, qty FROM {ledger} ORDER BY id") == [(1, 10), (2, 21), (3, 30)]
    assert complete_transactions(mysql_admin, mysql_target, timeout_s=0.5).complete
