"""Table epochs as HeavyDB keeps them, on top of a per-table version log in DuckDB.

Every HeavyDB table is stored as one DuckDB table (``hdb_<db>_data.t<id>``) whose rows carry
two hidden columns: ``__ins`` (the epoch whose write added the row) and ``__del`` (the epoch
whose write removed it, NULL while the row is live).  A view ``hdb_<db>.<name>`` shows the
live rows; every query reads the view.

* a new table is at epoch 0; each successful write (INSERT, load, UPDATE, DELETE, TRUNCATE,
  ADD/DROP COLUMN) runs in one DuckDB transaction and moves the table to ``epoch + 1``; a
  failed write rolls back and leaves the epoch as it was;
* an UPDATE retires the old row versions and appends the new ones in the same epoch;
* ``set_table_epoch(e)`` removes rows added after ``e`` and revives rows removed after
  ``e``: the table's data is exactly what it was when epoch ``e`` was current;
* as in HeavyDB's ``FileMgr::rollOffOldData``, after a write at epoch ``E`` the epoch floor
  becomes ``max(floor, E - max_rollback_epochs)`` and the row versions that no epoch at or
  above the floor can see are deleted for good; an epoch below the floor is refused.
  ``max_rollback_epochs = -1`` keeps every version.
"""

from __future__ import annotations

import contextlib

import duckdb

from .catalog import CatalogError, Table, data_schema, view_schema

INS = "__ins"
DEL = "__del"


def q(name: str) -> str:
    """Quote a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def data_ref(table: Table) -> str:
    return f"{q(data_schema(table.db))}.{q(table.data_name)}"


def view_ref(table: Table) -> str:
    return f"{q(view_schema(table.db))}.{q(table.name)}"


def column_list(table: Table) -> str:
    return ", ".join(q(c.name) for c in table.columns)


def create_storage(cur: duckdb.DuckDBPyConnection, table: Table) -> None:
    cols = [
        f"{q(c.name)} {c.type.duckdb()}" + ("" if c.type.nullable else " NOT NULL")
        for c in table.columns
    ]
    cols += [f"{INS} INTEGER NOT NULL", f"{DEL} INTEGER"]
    cur.execute(f"CREATE TABLE {data_ref(table)} ({', '.join(cols)})")
    refresh_view(cur, table)


def refresh_view(cur: duckdb.DuckDBPyConnection, table: Table) -> None:
    cur.execute(
        f"CREATE OR REPLACE VIEW {view_ref(table)} AS "
        f"SELECT {column_list(table)} FROM {data_ref(table)} WHERE {DEL} IS NULL"
    )


def drop_storage(cur: duckdb.DuckDBPyConnection, table: Table) -> None:
    cur.execute(f"DROP VIEW IF EXISTS {view_ref(table)}")
    cur.execute(f"DROP TABLE IF EXISTS {data_ref(table)}")


def next_epoch(table: Table) -> int:
    return table.epoch + 1


def commit_epoch(cur: duckdb.DuckDBPyConnection, table: Table, epoch: int) -> None:
    """Record a successful write at ``epoch`` and roll off versions past the rollback window."""
    table.epoch = epoch
    if table.max_rollback_epochs < 0:
        return
    floor = max(table.floor, epoch - table.max_rollback_epochs)
    if floor > table.floor:
        table.floor = floor
        cur.execute(
            f"DELETE FROM {data_ref(table)} WHERE {DEL} IS NOT NULL AND {DEL} <= ?", [floor]
        )


def append_select(cur: duckdb.DuckDBPyConnection, table: Table, select_sql: str, epoch: int) -> int:
    """Append the rows of ``select_sql`` (one output column per table column, in order)."""
    names = [f"__c{i}" for i in range(len(table.columns))]
    casts = ", ".join(
        f"CAST(__src.{q(n)} AS {c.type.duckdb()})"
        for n, c in zip(names, table.columns, strict=True)
    )
    alias = ", ".join(q(n) for n in names)
    sql = (
        f"INSERT INTO {data_ref(table)} ({column_list(table)}, {INS}, {DEL}) "
        f"SELECT {casts}, {epoch}, NULL FROM ({select_sql}) AS __src({alias})"
    )
    res = cur.execute(sql).fetchone()
    return int(res[0]) if res else 0


def delete_where(
    cur: duckdb.DuckDBPyConnection, table: Table, where_sql: str | None, alias: str, epoch: int
) -> int:
    cond = f" AND ({where_sql})" if where_sql else ""
    res = cur.execute(
        f"UPDATE {data_ref(table)} AS {q(alias)} SET {DEL} = {epoch} WHERE {DEL} IS NULL{cond}"
    ).fetchone()
    return int(res[0]) if res else 0


def update_where(
    cur: duckdb.DuckDBPyConnection,
    table: Table,
    assignments: dict[str, str],
    where_sql: str | None,
    alias: str,
    from_sql: str | None,
    epoch: int,
) -> int:
    """UPDATE as retire-and-append: the new versions are written in the same epoch."""
    exprs = []
    for c in table.columns:
        src = assignments.get(c.name.lower())
        value = (
            f"CAST(({src}) AS {c.type.duckdb()})" if src is not None else f"{q(alias)}.{q(c.name)}"
        )
        exprs.append(f"{value} AS {q(c.name)}")
    cond = f" AND ({where_sql})" if where_sql else ""
    extra_from = f", {from_sql}" if from_sql else ""
    cur.execute("DROP TABLE IF EXISTS temp.__sandbox_upd")
    cur.execute(
        f"CREATE TEMP TABLE __sandbox_upd AS SELECT {q(alias)}.rowid AS __rid, {', '.join(exprs)} "
        f"FROM {data_ref(table)} AS {q(alias)}{extra_from} WHERE {q(alias)}.{DEL} IS NULL{cond}"
    )
    try:
        dup = cur.execute(
            "SELECT count(*) - count(DISTINCT __rid) FROM temp.__sandbox_upd"
        ).fetchone()
        if dup and dup[0]:
            raise CatalogError("UPDATE matched a row more than once (ambiguous UPDATE ... FROM)")
        cur.execute(
            f"UPDATE {data_ref(table)} SET {DEL} = {epoch} "
            "WHERE rowid IN (SELECT __rid FROM temp.__sandbox_upd)"
        )
        res = cur.execute(
            f"INSERT INTO {data_ref(table)} ({column_list(table)}, {INS}, {DEL}) "
            f"SELECT {column_list(table)}, {epoch}, NULL FROM temp.__sandbox_upd"
        ).fetchone()
    finally:
        with contextlib.suppress(duckdb.Error):
            cur.execute("DROP TABLE IF EXISTS temp.__sandbox_upd")
    return int(res[0]) if res else 0


def truncate(cur: duckdb.DuckDBPyConnection, table: Table, epoch: int) -> None:
    cur.execute(f"UPDATE {data_ref(table)} SET {DEL} = {epoch} WHERE {DEL} IS NULL")


def set_epoch(cur: duckdb.DuckDBPyConnection, table: Table, db_id: int, new_epoch: int) -> None:
    """``set_table_epoch``: roll the table's data back (or the counter forward)."""
    if new_epoch < table.floor:
        raise CatalogError(
            f"Cannot set epoch for table ({db_id}, {table.id}) lower than the minimum "
            f"rollback epoch ({table.floor})."
        )
    if new_epoch < table.epoch:
        cur.execute(f"DELETE FROM {data_ref(table)} WHERE {INS} > ?", [new_epoch])
        cur.execute(f"UPDATE {data_ref(table)} SET {DEL} = NULL WHERE {DEL} > ?", [new_epoch])
    table.epoch = new_epoch


def add_column(
    cur: duckdb.DuckDBPyConnection, table: Table, name: str, type_sql: str, default_sql: str | None
) -> None:
    default = f" DEFAULT {default_sql}" if default_sql is not None else ""
    cur.execute(f"ALTER TABLE {data_ref(table)} ADD COLUMN {q(name)} {type_sql}{default}")
    if default_sql is not None:
        # later inserts must not inherit the default silently; HeavyDB fills existing rows only
        cur.execute(f"ALTER TABLE {data_ref(table)} ALTER COLUMN {q(name)} DROP DEFAULT")


def drop_column(cur: duckdb.DuckDBPyConnection, table: Table, name: str) -> None:
    cur.execute(f"DROP VIEW IF EXISTS {view_ref(table)}")
    cur.execute(f"ALTER TABLE {data_ref(table)} DROP COLUMN {q(name)}")


def rename_column(cur: duckdb.DuckDBPyConnection, table: Table, old: str, new: str) -> None:
    cur.execute(f"DROP VIEW IF EXISTS {view_ref(table)}")
    cur.execute(f"ALTER TABLE {data_ref(table)} RENAME COLUMN {q(old)} TO {q(new)}")
