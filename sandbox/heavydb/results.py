"""``TQueryResult`` encoding, columnar and row-wise, as ``DBHandler::convertRows`` does it.

Columnar results are serialised straight to Thrift binary-protocol bytes with numpy (one
``tobytes`` per column instead of one Python call per value); the small fixed parts
(``row_desc``, timings) go through thrift's C encoder.  The layout written here is exactly
what the generated ``TQueryResult.read`` expects:

* ``TColumn.data`` always carries all four lists (``int_col``, ``real_col``, ``str_col``,
  ``arr_col``), empty ones included, as the C++ server writes them;
* a NULL value carries HeavyDB's sentinel in its slot (``NULL_INT`` …, ``FLT_MIN`` for
  FLOAT, ``DBL_MIN`` for DOUBLE, ``NULL_BIGINT/10^scale`` for DECIMAL, ``""`` for text) and
  ``nulls[i]`` is true;
* DATE travels as epoch seconds, TIMESTAMP(p) in units of its precision, TIME as seconds
  since midnight, DECIMAL as a double.
"""

from __future__ import annotations

import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from heavydb.common.ttypes import TDatumType
from heavydb.thrift.ttypes import (
    TColumnType,
    TDatum,
    TDatumVal,
    TQueryResult,
    TQueryType,
    TRow,
    TRowSet,
)
from thrift.protocol import fastbinary
from thrift.Thrift import TType

from . import types as ht
from .types import HeavyType

_STOP = b"\x00"


def _field(ttype: int, fid: int) -> bytes:
    return struct.pack(">bh", ttype, fid)


def _list(etype: int, n: int) -> bytes:
    return struct.pack(">bi", etype, n)


def _encode(obj: object) -> bytes:
    return fastbinary.encode_binary(obj, [obj.__class__, obj.thrift_spec])  # type: ignore[attr-defined]


@dataclass
class ResultSet:
    """A query result ready for encoding: Arrow data plus the HeavyDB column types."""

    table: pa.Table
    names: list[str]
    types: list[HeavyType]
    query_type: int = TQueryType.READ
    execution_time_ms: int = 0


Buffer = bytes | memoryview


@dataclass
class EncodedResult:
    """A fully serialised ``TQueryResult`` struct (field bytes + STOP), as buffer pieces.

    The pieces are written to the socket one after the other (no concatenation copy).
    """

    parts: list[Buffer]
    rows: int

    @property
    def nbytes(self) -> int:
        return sum(memoryview(p).nbytes for p in self.parts)

    @property
    def payload(self) -> bytes:
        return b"".join(self.parts)


def row_descriptor(names: list[str], types: list[HeavyType]) -> list[TColumnType]:
    return [
        TColumnType(
            col_name=name,
            col_type=t.thrift(),
            is_reserved_keyword=False,
            src_name="",
            is_system=False,
            is_physical=False,
            col_id=0,
        )
        for name, t in zip(names, types, strict=True)
    ]


# --- per-column conversion -------------------------------------------------------------------
def _plain(arr: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.large_string())
    if pa.types.is_binary_view(arr.type):
        arr = arr.cast(pa.large_binary())
    return arr


def _valid_mask(arr: pa.Array) -> np.ndarray | None:
    if arr.null_count == 0:
        return None
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def int_values(arr: pa.Array, t: HeavyType) -> np.ndarray:
    """int64 values as HeavyDB sends them (sentinel for NULL)."""
    arr = _plain(arr)
    typ = arr.type
    sentinel = t.null_int
    if pa.types.is_boolean(typ):
        vals = pc.cast(arr, pa.int64())
    elif pa.types.is_date32(typ):
        vals = pc.multiply(pc.cast(arr.cast(pa.int32()), pa.int64()), 86400)
    elif pa.types.is_date64(typ):
        vals = pc.divide(arr.cast(pa.int64()), 1000)
    elif pa.types.is_timestamp(typ):
        vals = arr.cast(pa.int64())
    elif pa.types.is_time(typ):
        per_sec = {"s": 1, "ms": 1000, "us": 1_000_000, "ns": 1_000_000_000}[typ.unit]
        raw = arr.cast(pa.int64() if typ.bit_width == 64 else pa.int32()).cast(pa.int64())
        vals = pc.divide(raw, per_sec) if per_sec != 1 else raw
    elif pa.types.is_duration(typ):
        per_ms = {"s": 0.001, "ms": 1, "us": 1000, "ns": 1_000_000}[typ.unit]
        vals = pc.cast(arr.cast(pa.int64()), pa.int64())
        vals = pc.divide(vals, int(per_ms)) if per_ms >= 1 else pc.multiply(vals, 1000)
    elif pa.types.is_interval(typ):
        vals = pa.array([None if v is None else 0 for v in arr.to_pylist()], pa.int64())
    elif pa.types.is_decimal(typ):
        vals = pc.cast(arr, pa.int64())
    elif pa.types.is_null(typ):
        return np.full(len(arr), sentinel, dtype=np.int64)
    else:
        vals = pc.cast(arr, pa.int64())
    if vals.null_count:
        vals = pc.fill_null(vals, sentinel)
    return np.asarray(vals.to_numpy(zero_copy_only=False), dtype=np.int64)


def real_values(arr: pa.Array, t: HeavyType) -> np.ndarray:
    arr = _plain(arr)
    if t.datum == TDatumType.DECIMAL:
        sentinel = ht.NULL_BIGINT / (10.0 ** abs(t.scale)) if t.scale else float(ht.NULL_BIGINT)
    elif t.datum == TDatumType.FLOAT:
        sentinel = ht.NULL_FLOAT
    else:
        sentinel = ht.NULL_DOUBLE
    if pa.types.is_null(arr.type):
        return np.full(len(arr), sentinel, dtype=np.float64)
    vals = pc.cast(arr, pa.float64())
    if vals.null_count:
        vals = pc.fill_null(vals, sentinel)
    return np.asarray(vals.to_numpy(zero_copy_only=False), dtype=np.float64)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def str_values(arr: pa.Array) -> pa.Array:
    """A string/binary array (32- or 64-bit offsets) with NULLs as empty strings."""
    arr = _plain(arr)
    if pa.types.is_null(arr.type):
        return pa.array([""] * len(arr), pa.string())
    if not (
        _is_text(arr.type) or pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)
    ):
        arr = arr.cast(pa.string())
    if arr.null_count:
        arr = pc.fill_null(arr, pa.scalar("" if _is_text(arr.type) else b"", arr.type))
    return arr


def _encode_strings(arr: pa.Array) -> Buffer:
    """Thrift list<string> element bytes: for each value a big-endian i32 length + bytes.

    The 4-byte headers are built with numpy and glued to the values by Arrow's
    ``binary_join_element_wise``: the joined array's data buffer is the wire layout.
    ``arr`` is a string/binary array (32- or 64-bit offsets) without NULLs.
    """
    n = len(arr)
    if n == 0:
        return b""
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    otype = np.int64 if large else np.int32
    offsets = np.frombuffer(
        arr.buffers()[1], dtype=otype, count=n + 1, offset=arr.offset * otype().itemsize
    )
    headers = np.diff(offsets).astype(">i4")
    btype = pa.large_binary() if large else pa.binary()
    hdr = pa.FixedSizeBinaryArray.from_buffers(pa.binary(4), n, [None, pa.py_buffer(headers)])
    joined = pc.binary_join_element_wise(hdr.cast(btype), arr.cast(btype), pa.scalar(b"", btype))
    jo = np.frombuffer(
        joined.buffers()[1], dtype=otype, count=1, offset=joined.offset * otype().itemsize
    )
    start = int(jo[0])
    size = 4 * n + int(offsets[-1] - offsets[0])
    return memoryview(joined.buffers()[2])[start : start + size]


def _bytes_view(a: np.ndarray) -> memoryview:
    """The array's memory as bytes, without a copy."""
    return memoryview(a.view(np.uint8))  # type: ignore[arg-type]


def _chunk_values(arr: pa.Array, t: HeavyType) -> Buffer:
    """The list elements of one chunk, in the slot ``t`` travels in."""
    if t.datum in ht.REAL_SLOT_TYPES:
        return _bytes_view(real_values(arr, t).astype(">f8"))
    if t.datum == TDatumType.STR:
        return _encode_strings(str_values(arr))
    return _bytes_view(int_values(arr, t).astype(">i8"))


def _chunk_nulls(arr: pa.Array, t: HeavyType) -> Buffer:
    valid = _valid_mask(_plain(arr))
    if t.nullable and valid is not None:
        return _bytes_view(~valid)
    return bytes(len(arr))


def _chunk_parts(arr: pa.Array, t: HeavyType) -> tuple[Buffer, Buffer]:
    """(values, nulls) bytes of one chunk."""
    return _chunk_values(arr, t), _chunk_nulls(arr, t)


def _column_parts(n: int, t: HeavyType, chunks: list[tuple[Buffer, Buffer]]) -> list[Buffer]:
    """One ``TColumn`` struct as buffer pieces (chunk by chunk, nothing concatenated)."""
    if t.datum in ht.REAL_SLOT_TYPES:
        slot, etype = 2, TType.DOUBLE
    elif t.datum == TDatumType.STR:
        slot, etype = 3, TType.STRING
    else:
        slot, etype = 1, TType.I64
    empty = {1: TType.I64, 2: TType.DOUBLE, 3: TType.STRING}
    parts: list[Buffer] = [_field(TType.STRUCT, 1)]
    for fid in (1, 2, 3):
        if fid == slot:
            parts.append(_field(TType.LIST, fid) + _list(etype, n))
            parts.extend(values for values, _ in chunks)
        else:
            parts.append(_field(TType.LIST, fid) + _list(empty[fid], 0))
    parts.append(_field(TType.LIST, 4) + _list(TType.STRUCT, 0) + _STOP)
    parts.append(_field(TType.LIST, 2) + _list(TType.BOOL, n))
    parts.extend(nulls for _, nulls in chunks)
    parts.append(_STOP)
    return parts


_POOL = ThreadPoolExecutor(
    max_workers=max(2, min(4, os.cpu_count() or 2)), thread_name_prefix="encode"
)
#: below this many values a column is encoded on the calling thread
_PARALLEL_MIN_ROWS = 50_000


def _limit(table: pa.Table, first_n: int, at_most_n: int) -> pa.Table:
    if at_most_n >= 0 and table.num_rows > at_most_n:
        raise ResultCapError(f"The result contains more rows than the specified cap of {at_most_n}")
    if first_n >= 0 and table.num_rows > first_n:
        table = table.slice(0, first_n)
    return table


class ResultCapError(Exception):
    """``at_most_n`` exceeded (the message is HeavyDB's)."""


def encode_columnar(
    rs: ResultSet,
    *,
    nonce: str,
    total_time_ms: int,
    first_n: int = -1,
    at_most_n: int = -1,
) -> EncodedResult:
    table = _limit(rs.table, first_n, at_most_n)
    head = _encode(
        TRowSet(
            row_desc=row_descriptor(rs.names, rs.types),
            rows=[],
            columns=None,
            is_columnar=True,
        )
    )[:-1]
    columns = [table.column(i) for i in range(len(rs.types))]
    # every (column, chunk) is an independent task: numpy and Arrow release the GIL
    tasks = [(i, c) for i, col in enumerate(columns) for c in col.chunks if len(c)]
    if table.num_rows >= _PARALLEL_MIN_ROWS and len(tasks) > 1:
        done = list(_POOL.map(lambda task: _chunk_parts(task[1], rs.types[task[0]]), tasks))
    else:
        done = [_chunk_parts(c, rs.types[i]) for i, c in tasks]
    per_column: list[list[tuple[Buffer, Buffer]]] = [[] for _ in columns]
    for (i, _), piece in zip(tasks, done, strict=True):
        per_column[i].append(piece)
    encoded = [
        _column_parts(len(col), t, pieces)
        for col, t, pieces in zip(columns, rs.types, per_column, strict=True)
    ]
    outer = _encode(
        TQueryResult(
            row_set=None,
            execution_time_ms=rs.execution_time_ms,
            total_time_ms=total_time_ms,
            nonce=nonce,
            success=True,
            query_type=rs.query_type,
        )
    )[:-1]
    parts: list[Buffer] = [
        outer + _field(TType.STRUCT, 1) + head + _field(TType.LIST, 3),
        _list(TType.STRUCT, len(encoded)),
    ]
    for col in encoded:
        parts.extend(col)
    parts.append(_STOP + _STOP)  # end of TRowSet, end of TQueryResult
    return EncodedResult(parts, table.num_rows)


def build_rows(
    rs: ResultSet, *, nonce: str, total_time_ms: int, first_n: int = -1, at_most_n: int = -1
) -> TQueryResult:
    """Row-wise result (``column_format=False``): one ``TRow`` of ``TDatum`` per row."""
    table = _limit(rs.table, first_n, at_most_n)
    columns: list[list[TDatum]] = []
    for i, t in enumerate(rs.types):
        arr = table.column(i).combine_chunks()
        plain = _plain(arr)
        valid = _valid_mask(plain)
        is_null = [False] * len(arr) if valid is None else list(~valid)
        if t.datum in ht.REAL_SLOT_TYPES:
            vals: list[object] = real_values(arr, t).tolist()
            datums = [
                TDatum(TDatumVal(int_val=0, real_val=v, str_val="", arr_val=[]), bool(nl))
                for v, nl in zip(vals, is_null, strict=True)
            ]
        elif t.datum == TDatumType.STR:
            svals = str_values(arr).to_pylist()
            datums = [
                TDatum(
                    TDatumVal(
                        int_val=0,
                        real_val=0.0,
                        str_val=v.decode("utf-8", "replace") if isinstance(v, bytes) else v,
                        arr_val=[],
                    ),
                    bool(nl),
                )
                for v, nl in zip(svals, is_null, strict=True)
            ]
        else:
            ivals = int_values(arr, t).tolist()
            datums = [
                TDatum(TDatumVal(int_val=v, real_val=0.0, str_val="", arr_val=[]), bool(nl))
                for v, nl in zip(ivals, is_null, strict=True)
            ]
        columns.append(datums)
    rows = [TRow(cols=list(r)) for r in zip(*columns, strict=True)] if columns else []
    return TQueryResult(
        row_set=TRowSet(
            row_desc=row_descriptor(rs.names, rs.types),
            rows=rows,
            columns=[],
            is_columnar=False,
        ),
        execution_time_ms=rs.execution_time_ms,
        total_time_ms=total_time_ms,
        nonce=nonce,
        success=True,
        query_type=rs.query_type,
    )


def empty_result(nonce: str, query_type: int, execution_time_ms: int = 0) -> TQueryResult:
    """What DDL and DML statements return: a row set with no columns."""
    return TQueryResult(
        row_set=TRowSet(row_desc=[], rows=[], columns=[], is_columnar=True),
        execution_time_ms=execution_time_ms,
        total_time_ms=execution_time_ms,
        nonce=nonce,
        success=True,
        query_type=query_type,
    )


def text_result_set(label: str, values: list[str], query_type: int) -> ResultSet:
    """A one-column text result (``createSimpleResult``: e.g. ``Result`` of COPY)."""
    return ResultSet(
        table=pa.table({label: pa.array(values, pa.string())}),
        names=[label],
        types=[ht.HeavyType(TDatumType.STR, nullable=False)],
        query_type=query_type,
    )
