"""Turning what the load APIs send into Arrow tables the table storage can append.

* ``load_table_binary_arrow``: an Arrow IPC stream with exactly one record batch (what
  heavyai's ``load_table``/``load_table_arrow`` send for a DataFrame);
* ``load_table_binary_columnar``: ``TColumn`` lists, values in HeavyDB's slots (DECIMAL as a
  scaled integer, DATE as epoch seconds, TIMESTAMP in units of its precision, TIME as seconds
  since midnight, BOOL as 0/1) and a ``nulls`` list;
* ``load_table`` / ``load_table_binary``: rows of strings / ``TDatum``;
* ``COPY FROM``: a delimited file read by DuckDB.

Everything ends in :func:`append_arrow`, which casts each source column to the target
column's DuckDB type in one ``INSERT … SELECT`` and stamps the rows with the write's epoch.
Values equal to a type's HeavyDB null sentinel load as NULL, as in HeavyDB.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from heavydb.common.ttypes import TDatumType
from heavydb.thrift.ttypes import TColumn, TRow, TStringRow

from . import epochs
from . import types as ht
from .catalog import CatalogError, Table
from .epochs import q

_src_counter = itertools.count()
#: Arrow loads are handed to DuckDB in record batches of this many rows
SCAN_BATCH_ROWS = 122_880


class LoadError(CatalogError):
    """A load HeavyDB would refuse (message is HeavyDB's)."""


def read_arrow_stream(stream: bytes) -> pa.Table:
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(stream))
        batches = list(reader)
        schema = reader.schema
    except (pa.ArrowInvalid, OSError) as e:
        raise LoadError(f"Error parsing Arrow stream: {e}. Import aborted") from e
    if len(batches) != 1:
        raise LoadError("Expected a single Arrow record batch. Import aborted")
    return pa.Table.from_batches(batches, schema=schema)


def column_mapping(table: Table, names: list[str] | None, n_given: int) -> list[int | None]:
    """For each table column, the index of the source column feeding it (None = NULL).

    Mirrors ``prepare_loader_generic`` / ``check_valid_column_names`` /
    ``column_ids_by_names`` in DBHandler.
    """
    if n_given == 0:
        raise LoadError("No columns to insert")
    if not names:
        if n_given != len(table.columns):
            raise LoadError(
                f"Number of columns to load ({n_given}) does not match number of columns in "
                f"table {table.name} ({len(table.columns)})"
            )
        return list(range(len(table.columns)))
    if n_given != len(names):
        raise LoadError(
            "Number of columns specified does not match the number of columns given "
            f"({n_given} vs {len(names)})"
        )
    seen: set[str] = set()
    for n in names:
        if n.lower() in seen:
            raise LoadError(f"Column {n} is mentioned multiple times")
        seen.add(n.lower())
    known = {c.name.lower() for c in table.columns}
    for n in names:
        if n.lower() not in known:
            raise LoadError(f"Column {n.lower()} does not exist")
    lowered = [n.lower() for n in names]
    mapping: list[int | None] = []
    for c in table.columns:
        if c.name.lower() in lowered:
            mapping.append(lowered.index(c.name.lower()))
        elif c.type.nullable:
            mapping.append(None)
        else:
            raise LoadError(f"Column '{c.name}' cannot be omitted due to NOT NULL constraint")
    return mapping


def _target_expr(src: str, ht_: ht.HeavyType, arrow_type: pa.DataType | None) -> str:
    """SQL casting source column ``src`` to the target type, sentinels becoming NULL."""
    target = ht_.duckdb()
    expr = src
    if arrow_type is not None and pa.types.is_dictionary(arrow_type):
        expr = f"CAST({expr} AS VARCHAR)"
    if (
        ht_.datum == TDatumType.DATE
        and arrow_type is not None
        and (pa.types.is_timestamp(arrow_type))
    ):
        expr = f"CAST({expr} AS TIMESTAMP)"
    cast = f"CAST({expr} AS {target})"
    if ht_.datum in ht.INTEGER_TYPES:
        cast = f"NULLIF({cast}, {ht_.null_int})"
    return cast


def append_arrow(
    cur: duckdb.DuckDBPyConnection,
    table: Table,
    data: pa.Table,
    mapping: list[int | None],
    epoch: int,
) -> int:
    """Append ``data`` (source columns per ``mapping``) to ``table`` at ``epoch``."""
    view = f"__sandbox_src_{next(_src_counter)}"
    renamed = data.rename_columns([f"s{i}" for i in range(data.num_columns)])
    if renamed.num_rows > SCAN_BATCH_ROWS:
        # zero-copy slices: DuckDB scans Arrow record batches in parallel
        renamed = pa.Table.from_batches(
            renamed.to_batches(max_chunksize=SCAN_BATCH_ROWS), schema=renamed.schema
        )
    cur.register(view, renamed)
    try:
        exprs = []
        for col, src in zip(table.columns, mapping, strict=True):
            if src is None:
                default = col.default if col.default is not None else "NULL"
                exprs.append(f"CAST({default} AS {col.type.duckdb()})")
            else:
                exprs.append(_target_expr(q(f"s{src}"), col.type, renamed.schema.field(src).type))
        select = f"SELECT {', '.join(exprs)} FROM {q(view)}"
        return epochs.append_select(cur, table, select, epoch)
    finally:
        with contextlib.suppress(duckdb.Error):
            cur.unregister(view)


# --- load_table_binary_columnar ---------------------------------------------------------------
def _mask(col: TColumn, n: int) -> np.ndarray | None:
    if not col.nulls:
        return None
    m = np.asarray(col.nulls, dtype=bool)
    if len(m) != n:
        raise LoadError(
            f"load_table_binary_columnar: Inconsistent number of rows in nulls ({len(m)}, "
            f"expecting {n})"
        )
    return m if m.any() else None


def _scaled_decimal(vals: np.ndarray, scale: int, mask: np.ndarray | None) -> pa.Array:
    n = len(vals)
    buf = np.empty(2 * n, dtype="<i8")
    buf[0::2] = vals
    buf[1::2] = vals >> 63
    validity = None
    if mask is not None:
        validity = pa.array(~mask).buffers()[1]
    return pa.Array.from_buffers(
        pa.decimal128(38, scale), n, [validity, pa.py_buffer(buf.tobytes())], null_count=-1
    )


def column_to_arrow(col: TColumn, t: ht.HeavyType, name: str, expected: int) -> pa.Array:
    data = col.data
    d = t.datum
    if d in (TDatumType.FLOAT, TDatumType.DOUBLE):
        vals_r = data.real_col or []
        n = len(vals_r)
    elif d == TDatumType.STR:
        vals_s = data.str_col or []
        n = len(vals_s)
    else:
        vals_i = data.int_col or []
        n = len(vals_i)
    if n != expected:
        raise LoadError(
            f"load_table_binary_columnar: Inconsistent number of rows in column {name} ,  "
            f"expecting {expected} rows, column has {n} rows"
        )
    mask = _mask(col, n)
    if d in (TDatumType.FLOAT, TDatumType.DOUBLE):
        return pa.array(np.asarray(vals_r, dtype=np.float64), mask=mask)
    if d == TDatumType.STR:
        return pa.array(vals_s, pa.string(), mask=mask)
    ints = np.asarray(vals_i, dtype=np.int64)
    if d == TDatumType.DECIMAL:
        return _scaled_decimal(ints, t.scale, mask)
    if d == TDatumType.DATE:
        days = np.floor_divide(ints, 86400).astype(np.int32)
        return pa.array(days, pa.date32(), mask=mask)
    if d == TDatumType.TIMESTAMP:
        unit = {0: "s", 3: "ms", 6: "us", 9: "ns"}[t.precision]
        return pa.array(ints, pa.timestamp(unit), mask=mask)
    if d == TDatumType.TIME:
        return pa.array(ints.astype(np.int32), pa.time32("s"), mask=mask)
    if d == TDatumType.BOOL:
        m = ints == ht.NULL_BOOLEAN if mask is None else (mask | (ints == ht.NULL_BOOLEAN))
        return pa.array(ints != 0, pa.bool_(), mask=m if m.any() else None)
    return pa.array(ints, pa.int64(), mask=mask)


def columns_to_arrow(table: Table, cols: list[TColumn], mapping: list[int | None]) -> pa.Table:
    first = cols[0]
    if first.nulls:
        n = len(first.nulls)
    else:
        dd = first.data
        n = len(dd.int_col or []) + len(dd.real_col or []) + len(dd.str_col or [])
    arrays: list[pa.Array] = [pa.nulls(n)] * len(cols)
    for col, src in zip(table.columns, mapping, strict=True):
        if src is None:
            continue
        try:
            arrays[src] = column_to_arrow(cols[src], col.type, col.name, n)
        except (pa.ArrowInvalid, OverflowError, ValueError, TypeError) as e:
            raise LoadError(
                f"load_table_binary_columnar: Input exception thrown: {e}. Issue at column : "
                f"{src + 1}. Import aborted"
            ) from e
    return pa.table(arrays, names=[f"c{i}" for i in range(len(cols))])


# --- load_table (strings) / load_table_binary (TDatum) ----------------------------------------
def string_rows_to_arrow(
    table: Table, rows: list[TStringRow], mapping: list[int | None]
) -> pa.Table:
    width = len(rows[0].cols)
    columns: list[list[str | None]] = [[] for _ in range(width)]
    for r in rows:
        if len(r.cols) != width:
            raise LoadError(
                f"Exception: Incorrect Row (expected {width} columns, has {len(r.cols)})"
            )
        for j, v in enumerate(r.cols):
            columns[j].append(None if v.is_null else v.str_val)
    kinds = {src: c.type.datum for c, src in zip(table.columns, mapping, strict=True)}
    numeric = ht.INTEGER_TYPES | {TDatumType.FLOAT, TDatumType.DOUBLE, TDatumType.DECIMAL}
    arrays = []
    for j, vals in enumerate(columns):
        kind = kinds.get(j, TDatumType.STR)
        if kind in numeric:
            # TypedImportBuffer::add_value: a value not starting like a number loads as NULL
            vals = [v if v and (v[0].isdigit() or v[0] in ".-") else None for v in vals]
        elif kind != TDatumType.STR:
            vals = [None if (v is None or v == "" or v == "\\N") else v for v in vals]
        arrays.append(pa.array(vals, pa.string()))
    return pa.table(arrays, names=[f"c{i}" for i in range(width)])


def datum_rows_to_arrow(table: Table, rows: list[TRow], mapping: list[int | None]) -> pa.Table:
    width = len(rows[0].cols)
    types = [ht.HeavyType(TDatumType.STR)] * width
    for c, src in zip(table.columns, mapping, strict=True):
        if src is not None:
            types[src] = c.type
    arrays = []
    for j in range(width):
        t = types[j]
        vals: list[Any] = []
        for r in rows:
            dv = r.cols[j]
            if dv.is_null:
                vals.append(None)
            elif t.datum == TDatumType.STR:
                vals.append(dv.val.str_val)
            elif t.datum in (TDatumType.FLOAT, TDatumType.DOUBLE, TDatumType.DECIMAL):
                vals.append(dv.val.real_val)
            else:
                vals.append(dv.val.int_val)
        if t.datum == TDatumType.STR:
            arrays.append(pa.array(vals, pa.string()))
        elif t.datum in (TDatumType.FLOAT, TDatumType.DOUBLE, TDatumType.DECIMAL):
            arrays.append(pa.array(vals, pa.float64()))
        elif t.datum == TDatumType.DATE:
            arrays.append(
                pa.array([None if v is None else v // 86400 for v in vals], pa.int32()).cast(
                    pa.date32()
                )
            )
        elif t.datum == TDatumType.TIMESTAMP:
            unit = {0: "s", 3: "ms", 6: "us", 9: "ns"}[t.precision]
            arrays.append(pa.array(vals, pa.timestamp(unit)))
        elif t.datum == TDatumType.TIME:
            arrays.append(pa.array(vals, pa.int32()).cast(pa.time32("s")))
        elif t.datum == TDatumType.BOOL:
            arrays.append(pa.array([None if v is None else v != 0 for v in vals], pa.bool_()))
        else:
            arrays.append(pa.array(vals, pa.int64()))
    return pa.table(arrays, names=[f"c{i}" for i in range(width)])
