"""DUMP TABLE / RESTORE TABLE with the sandbox's archive format."""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import heavydb
import lz4.frame
import pytest
from sandbox_helpers import rows, run

pytestmark = pytest.mark.integration


@pytest.fixture
def source(con: Any, name: str) -> str:
    run(
        con,
        f"CREATE TABLE {name} (id INT NOT NULL, s TEXT ENCODING DICT(8), n TEXT ENCODING NONE, "
        "d DECIMAL(12,3), t TIMESTAMP(6), dt DATE) WITH (max_rollback_epochs = 6)",
    )
    run(
        con,
        f"INSERT INTO {name} VALUES "
        "(1, 'a', 'x', 1.5, '2020-01-01 00:00:00.000001', '2020-02-03'), "
        "(2, NULL, NULL, NULL, NULL, NULL)",
    )
    run(con, f"UPDATE {name} SET s = 'b' WHERE id = 2")
    return name


@pytest.mark.parametrize("compression", ["gzip", "lz4", "none"])
def test_dump_and_restore(con: Any, source: str, tmp_path: Path, compression: str) -> None:
    archive = tmp_path / f"t.{compression}.tar"
    assert (
        rows(con, f"DUMP TABLE {source} TO '{archive}' WITH (compression = '{compression}')") == []
    )
    blob = archive.read_bytes()
    raw = {"gzip": gzip.decompress, "lz4": lz4.frame.decompress, "none": lambda b: b}[compression](
        blob
    )
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile("_table.json").read())  # type: ignore[union-attr]
        schema = tar.extractfile("_table.sql").read().decode()  # type: ignore[union-attr]
    assert names == ["_table.sql", "_table.epoch", "_table.json", "data.arrow"]
    assert schema.startswith("CREATE TABLE @T (")
    assert meta["format"] == "heavydb-sandbox-dump" and meta["epoch"] == 2 and meta["rows"] == 2

    restored = f"{source}_r_{compression}"
    run(con, f"RESTORE TABLE {restored} FROM '{archive}' WITH (compression = '{compression}')")
    assert rows(con, f"SELECT * FROM {restored} ORDER BY id") == rows(
        con, f"SELECT * FROM {source} ORDER BY id"
    )
    assert con._client.get_table_epoch_by_name(con._session, restored) == 2
    orig = con._client.get_table_details(con._session, source).row_desc
    back = con._client.get_table_details(con._session, restored).row_desc
    assert [(c.col_name, c.col_type) for c in orig] == [(c.col_name, c.col_type) for c in back]
    (create,) = rows(con, f"SHOW CREATE TABLE {restored}")[0]
    assert "MAX_ROLLBACK_EPOCHS=6" in create


def test_dump_refuses_existing_archive(con: Any, source: str, tmp_path: Path) -> None:
    archive = tmp_path / "exists.tgz"
    archive.write_bytes(b"old")
    with pytest.raises(heavydb.Error, match=f"Archive {archive} already exists."):
        run(con, f"DUMP TABLE {source} TO '{archive}'")
    assert archive.read_bytes() == b"old"


def test_restore_refuses_existing_table_and_missing_archive(
    con: Any, source: str, tmp_path: Path
) -> None:
    archive = tmp_path / "a.tgz"
    run(con, f"DUMP TABLE {source} TO '{archive}'")
    with pytest.raises(heavydb.Error, match=f"Table {source} exists."):
        run(con, f"RESTORE TABLE {source} FROM '{archive}'")
    with pytest.raises(heavydb.Error, match="does not exist"):
        run(con, f"RESTORE TABLE {source}_x FROM '{tmp_path / 'missing.tgz'}'")
    with pytest.raises(heavydb.Error, match="not lz4-compressed"):
        run(con, f"RESTORE TABLE {source}_y FROM '{archive}' WITH (compression = 'lz4')")
    assert f"{source}_y" not in con._client.get_tables(con._session)


def test_dump_missing_table(con: Any, tmp_path: Path) -> None:
    with pytest.raises(heavydb.Error, match=re.escape("Table nosuch does not exist.")):
        run(con, f"DUMP TABLE nosuch TO '{tmp_path / 'x.tgz'}'")
