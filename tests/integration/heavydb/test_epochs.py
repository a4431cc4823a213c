"""Table epochs: counting, rollback within max_rollback_epochs, refusal beyond it."""

from __future__ import annotations

import re
from typing import Any

import heavydb
import pandas as pd
import pytest
from heavydb.thrift.ttypes import TColumn, TColumnData, TDBException, TStringRow, TStringValue
from sandbox_helpers import rows, run

pytestmark = [
    pytest.mark.integration,
    # heavyai 1.3 on pandas 3 warns about select_dtypes(include="object") inside load_table
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),
]


def epoch(con: Any, table: str) -> int:
    return con._client.get_table_epoch_by_name(con._session, table)


def table_id(con: Any, table: str) -> int:
    return next(
        m.table_id for m in con._client.get_tables_meta(con._session) if m.table_name == table
    )


def content(con: Any, table: str) -> list[tuple[Any, ...]]:
    return rows(con, f"SELECT * FROM {table} ORDER BY id, v")


def test_every_successful_write_adds_one(con: Any, hcon: Any, name: str, tmp_path: Any) -> None:
    run(con, f"CREATE TABLE {name} (id INT, v TEXT)")
    assert epoch(con, name) == 0
    run(con, f"INSERT INTO {name} VALUES (1, 'a')")
    assert epoch(con, name) == 1
    run(con, f"UPDATE {name} SET v = 'b'")
    run(con, f"DELETE FROM {name} WHERE id = 99")
    assert epoch(con, name) == 3
    hcon.load_table_arrow(name, pd.DataFrame({"id": pd.array([2], dtype="Int32"), "v": ["c"]}))
    con._client.load_table_binary_columnar(
        con._session,
        name,
        [TColumn(TColumnData(int_col=[3]), [False]), TColumn(TColumnData(str_col=["d"]), [False])],
        [],
    )
    con._client.load_table(
        con._session, name, [TStringRow([TStringValue("4", False), TStringValue("e", False)])], []
    )
    csv = tmp_path / "e.csv"
    csv.write_text("5,f\n")
    run(con, f"COPY {name} FROM '{csv}' WITH (header='false')")
    run(con, f"TRUNCATE TABLE {name}")
    assert epoch(con, name) == 8
    # reads and failed writes leave it alone
    rows(con, f"SELECT * FROM {name}")
    with pytest.raises(heavydb.Error):
        run(con, f"INSERT INTO {name} VALUES ('not a number', 'x')")
    with pytest.raises(TDBException):
        con._client.load_table_binary_columnar(
            con._session, name, [TColumn(TColumnData(int_col=[1, 2]), [False, False])], []
        )
    assert epoch(con, name) == 8


def test_get_table_epoch_by_id_and_epochs(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (id INT)")
    run(con, f"INSERT INTO {name} VALUES (1)")
    tid = table_id(con, name)
    assert con._client.get_table_epoch(con._session, 1, tid) == 1
    (info,) = con._client.get_table_epochs(con._session, 1, tid)
    assert (info.table_id, info.table_epoch, info.leaf_index) == (tid, 1, -1)


def test_rollback_appends_updates_and_deletes(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (id INT, v TEXT) WITH (max_rollback_epochs = 10)")
    snapshots = {0: content(con, name)}
    statements = [
        f"INSERT INTO {name} VALUES (1, 'a'), (2, 'b'), (3, 'c')",
        f"UPDATE {name} SET v = 'B' WHERE id = 2",
        f"DELETE FROM {name} WHERE id = 1",
        f"INSERT INTO {name} VALUES (4, 'd')",
        f"UPDATE {name} SET v = v || '!'",
        f"TRUNCATE TABLE {name}",
        f"INSERT INTO {name} VALUES (9, 'z')",
    ]
    for i, stmt in enumerate(statements, start=1):
        run(con, stmt)
        assert epoch(con, name) == i
        snapshots[i] = content(con, name)
    for target in (6, 4, 2, 1, 0):
        con._client.set_table_epoch_by_name(con._session, name, target)
        assert epoch(con, name) == target
        assert content(con, name) == snapshots[target], f"epoch {target}"
    # writing after a rollback continues from the epoch set
    run(con, f"INSERT INTO {name} VALUES (7, 'x')")
    assert epoch(con, name) == 1
    assert content(con, name) == [(7, "x")]


def test_rollback_is_refused_past_max_rollback_epochs(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (id INT)")  # HeavyDB's default: 3 epochs
    for i in range(6):
        run(con, f"INSERT INTO {name} VALUES ({i})")
    assert epoch(con, name) == 6
    tid = table_id(con, name)
    with pytest.raises(TDBException) as err:
        con._client.set_table_epoch(con._session, 1, tid, 2)
    assert err.value.error_msg == (
        f"Cannot set epoch for table (1, {tid}) lower than the minimum rollback epoch (3)."
    )
    assert epoch(con, name) == 6 and len(rows(con, f"SELECT * FROM {name}")) == 6
    con._client.set_table_epoch(con._session, 1, tid, 3)
    assert sorted(r[0] for r in rows(con, f"SELECT id FROM {name}")) == [0, 1, 2]
    (row,) = rows(con, f"SHOW TABLE DETAILS {name}")
    assert row[8:12] == (3, 3, 3, 3)  # min/max epoch, min/max epoch floor


def test_max_rollback_epochs_can_be_changed(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (id INT) WITH (max_rollback_epochs = 1)")
    for i in range(3):
        run(con, f"INSERT INTO {name} VALUES ({i})")
    with pytest.raises(TDBException, match=re.escape("lower than the minimum rollback epoch (2)")):
        con._client.set_table_epoch_by_name(con._session, name, 1)
    run(con, f"ALTER TABLE {name} SET MAX_ROLLBACK_EPOCHS = 5")
    for i in range(3):
        run(con, f"INSERT INTO {name} VALUES ({i + 10})")
    con._client.set_table_epoch_by_name(con._session, name, 2)
    assert sorted(r[0] for r in rows(con, f"SELECT id FROM {name}")) == [0, 1]


def test_epochs_survive_in_table_details(con: Any, name: str) -> None:
    run(con, f"CREATE TABLE {name} (id INT) WITH (max_rollback_epochs = 0)")
    run(con, f"INSERT INTO {name} VALUES (1)")
    run(con, f"INSERT INTO {name} VALUES (2)")
    with pytest.raises(TDBException, match=re.escape("minimum rollback epoch (2)")):
        con._client.set_table_epoch_by_name(con._session, name, 1)


def test_set_table_epochs(con: Any, name: str) -> None:
    from heavydb.thrift.ttypes import TTableEpochInfo

    run(con, f"CREATE TABLE {name} (id INT)")
    run(con, f"INSERT INTO {name} VALUES (1)")
    run(con, f"INSERT INTO {name} VALUES (2)")
    tid = table_id(con, name)
    con._client.set_table_epochs(con._session, 1, [TTableEpochInfo(tid, 1, -1)])
    assert rows(con, f"SELECT id FROM {name}") == [(1,)]
