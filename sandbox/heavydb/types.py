"""HeavyDB <-> DuckDB type mapping and HeavyDB's wire null sentinels.

A :class:`HeavyType` is the sandbox's description of a column as HeavyDB would keep it in
its catalog (``TTypeInfo`` on the wire).  Every table column and every query result column
is described by one.  The DuckDB type used for storage follows from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
from heavydb.common.ttypes import TDatumType, TEncodingType, TTypeInfo

# --- HeavyDB null sentinels (Shared/InlineNullValues.h) -------------------------------
NULL_BOOLEAN = -128
NULL_TINYINT = -128
NULL_SMALLINT = -32768
NULL_INT = -2147483648
NULL_BIGINT = -9223372036854775808
NULL_FLOAT = 1.1754943508222875e-38  # FLT_MIN widened to double, as it travels
NULL_DOUBLE = 2.2250738585072014e-308  # DBL_MIN

INT_NULLS: dict[int, int] = {
    TDatumType.BOOL: NULL_BOOLEAN,
    TDatumType.TINYINT: NULL_TINYINT,
    TDatumType.SMALLINT: NULL_SMALLINT,
    TDatumType.INT: NULL_INT,
    TDatumType.BIGINT: NULL_BIGINT,
    TDatumType.DECIMAL: NULL_BIGINT,
    TDatumType.TIME: NULL_BIGINT,
    TDatumType.TIMESTAMP: NULL_BIGINT,
    TDatumType.DATE: NULL_BIGINT,
    TDatumType.INTERVAL_DAY_TIME: NULL_BIGINT,
    TDatumType.INTERVAL_YEAR_MONTH: NULL_BIGINT,
}

INTEGER_TYPES = frozenset(
    {TDatumType.TINYINT, TDatumType.SMALLINT, TDatumType.INT, TDatumType.BIGINT}
)
#: types whose values travel in ``int_col`` / ``TDatumVal.int_val``
INT_SLOT_TYPES = frozenset(
    {
        TDatumType.BOOL,
        TDatumType.TINYINT,
        TDatumType.SMALLINT,
        TDatumType.INT,
        TDatumType.BIGINT,
        TDatumType.TIME,
        TDatumType.TIMESTAMP,
        TDatumType.DATE,
        TDatumType.INTERVAL_DAY_TIME,
        TDatumType.INTERVAL_YEAR_MONTH,
    }
)
#: types whose values travel in ``real_col`` / ``TDatumVal.real_val``
REAL_SLOT_TYPES = frozenset({TDatumType.FLOAT, TDatumType.DOUBLE, TDatumType.DECIMAL})

INT_RANGES: dict[int, tuple[int, int]] = {
    TDatumType.TINYINT: (-127, 127),
    TDatumType.SMALLINT: (-32767, 32767),
    TDatumType.INT: (-2147483647, 2147483647),
    TDatumType.BIGINT: (-9223372036854775807, 9223372036854775807),
}

DEFAULT_DECIMAL = (14, 7)  # what DBHandler::create_table uses when none is given
MAX_DECIMAL_PRECISION = 18


class TypeError_(ValueError):
    """A HeavyDB type that the sandbox cannot represent (message is HeavyDB-shaped)."""


@dataclass(frozen=True)
class HeavyType:
    """A HeavyDB column type as kept in the catalog and sent in ``TTypeInfo``."""

    datum: int
    encoding: int = TEncodingType.NONE
    comp_param: int = 0
    precision: int = 0
    scale: int = 0
    nullable: bool = True

    # -- naming --------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return TDatumType._VALUES_TO_NAMES[self.datum]

    def sql(self) -> str:
        """HeavyDB DDL spelling, e.g. ``TEXT ENCODING DICT(32)`` or ``TIMESTAMP(3)``."""
        d = self.datum
        if d == TDatumType.BOOL:
            base = "BOOLEAN"
        elif d == TDatumType.STR:
            base = "TEXT"
        elif d == TDatumType.DECIMAL:
            base = f"DECIMAL({self.precision},{self.scale})"
        elif d == TDatumType.TIMESTAMP:
            base = f"TIMESTAMP({self.precision})"
        elif d == TDatumType.INT:
            base = "INTEGER"
        else:
            base = self.name
        parts = [base]
        if not self.nullable:
            parts.append("NOT NULL")
        if d == TDatumType.STR:
            if self.encoding == TEncodingType.DICT:
                parts.append(f"ENCODING DICT({self.comp_param or 32})")
            else:
                parts.append("ENCODING NONE")
        elif d == TDatumType.DATE:
            if self.comp_param and self.comp_param != 32:
                parts.append(f"ENCODING DAYS({self.comp_param})")
        elif self.encoding == TEncodingType.FIXED and self.comp_param:
            parts.append(f"ENCODING FIXED({self.comp_param})")
        return " ".join(parts)

    # -- DuckDB storage ---------------------------------------------------------------------
    def duckdb(self) -> str:
        d = self.datum
        if d == TDatumType.BOOL:
            return "BOOLEAN"
        if d == TDatumType.TINYINT:
            return "TINYINT"
        if d == TDatumType.SMALLINT:
            return "SMALLINT"
        if d == TDatumType.INT:
            return "INTEGER"
        if d == TDatumType.BIGINT:
            return "BIGINT"
        if d == TDatumType.FLOAT:
            return "FLOAT"
        if d == TDatumType.DOUBLE:
            return "DOUBLE"
        if d == TDatumType.DECIMAL:
            return f"DECIMAL({self.precision},{self.scale})"
        if d == TDatumType.STR:
            return "VARCHAR"
        if d == TDatumType.DATE:
            return "DATE"
        if d == TDatumType.TIME:
            return "TIME"
        if d == TDatumType.TIMESTAMP:
            return {0: "TIMESTAMP_S", 3: "TIMESTAMP_MS", 6: "TIMESTAMP", 9: "TIMESTAMP_NS"}[
                self.precision
            ]
        raise TypeError_(f"Unsupported type: {self.name}")

    # -- wire ------------------------------------------------------------------------------
    def thrift(self) -> TTypeInfo:
        """``TTypeInfo`` as ``populateThriftColumnType``/``target_meta_info_to_thrift`` set it."""
        size = -1
        comp = self.comp_param
        if self.datum == TDatumType.DATE:
            comp = comp or 32
            size = comp // 8
        return TTypeInfo(
            type=self.datum,
            encoding=self.encoding,
            nullable=self.nullable,
            is_array=False,
            precision=self.precision,
            scale=self.scale,
            comp_param=comp,
            size=size,
        )

    @property
    def null_int(self) -> int:
        return INT_NULLS.get(self.datum, NULL_BIGINT)

    def with_nullable(self, nullable: bool) -> HeavyType:
        return replace(self, nullable=nullable)


# --- constructors ---------------------------------------------------------------------------
def text_dict(nullable: bool = True) -> HeavyType:
    return HeavyType(TDatumType.STR, TEncodingType.DICT, 32, nullable=nullable)


def date_type(nullable: bool = True) -> HeavyType:
    return HeavyType(TDatumType.DATE, TEncodingType.DATE_IN_DAYS, 32, nullable=nullable)


_TYPE_ALIASES: dict[str, int] = {
    "BOOLEAN": TDatumType.BOOL,
    "BOOL": TDatumType.BOOL,
    "TINYINT": TDatumType.TINYINT,
    "SMALLINT": TDatumType.SMALLINT,
    "INT": TDatumType.INT,
    "INTEGER": TDatumType.INT,
    "BIGINT": TDatumType.BIGINT,
    "FLOAT": TDatumType.FLOAT,
    "REAL": TDatumType.FLOAT,
    "DOUBLE": TDatumType.DOUBLE,
    "DECIMAL": TDatumType.DECIMAL,
    "NUMERIC": TDatumType.DECIMAL,
    "TEXT": TDatumType.STR,
    "VARCHAR": TDatumType.STR,
    "CHAR": TDatumType.STR,
    "STRING": TDatumType.STR,
    "STR": TDatumType.STR,
    "DATE": TDatumType.DATE,
    "TIME": TDatumType.TIME,
    "TIMESTAMP": TDatumType.TIMESTAMP,
    "DATETIME": TDatumType.TIMESTAMP,
}

_GEO = {"POINT", "MULTIPOINT", "LINESTRING", "MULTILINESTRING", "POLYGON", "MULTIPOLYGON"}


def from_sql(
    type_name: str,
    args: list[int],
    encoding: str | None = None,
    encoding_param: int | None = None,
    *,
    not_null: bool = False,
    is_array: bool = False,
) -> HeavyType:
    """Build a :class:`HeavyType` from the pieces of a HeavyDB column definition."""
    name = re.sub(r"\s+", " ", type_name.strip().upper())
    if name == "DOUBLE PRECISION":
        name = "DOUBLE"
    if is_array:
        raise TypeError_("Array columns are not supported by the HeavyDB sandbox server")
    if name in _GEO:
        raise TypeError_(f"Geo type {name} is not supported by the HeavyDB sandbox server")
    if name not in _TYPE_ALIASES:
        raise TypeError_(f"Type {type_name} is not supported")
    datum = _TYPE_ALIASES[name]
    enc = (encoding or "").upper()
    nullable = not not_null
    if datum == TDatumType.STR:
        if enc in ("", "DICT"):
            bits = encoding_param or 32
            if bits not in (8, 16, 32):
                raise TypeError_("Compression parameter for string dictionary must be 8, 16 or 32")
            return HeavyType(TDatumType.STR, TEncodingType.DICT, bits, nullable=nullable)
        if enc == "NONE":
            return HeavyType(TDatumType.STR, TEncodingType.NONE, 0, nullable=nullable)
        raise TypeError_(f"Invalid string encoding: {encoding}")
    if datum == TDatumType.DECIMAL:
        precision, scale = (*args, 0, 0)[:2] if args else DEFAULT_DECIMAL
        if len(args) == 1:
            scale = 0
        if precision > MAX_DECIMAL_PRECISION:
            raise TypeError_(
                f"DECIMAL and NUMERIC precision cannot be larger than {MAX_DECIMAL_PRECISION}."
            )
        if scale > precision:
            raise TypeError_("DECIMAL and NUMERIC must have precision larger than scale.")
        return HeavyType(TDatumType.DECIMAL, precision=precision, scale=scale, nullable=nullable)
    if datum == TDatumType.TIMESTAMP:
        precision = args[0] if args else 0
        if precision not in (0, 3, 6, 9):
            raise TypeError_("Only TIMESTAMP(n) where n = (0,3,6,9) are supported now.")
        if enc == "FIXED":
            if precision != 0 or (encoding_param or 32) != 32:
                raise TypeError_("Only TIMESTAMP(0) supports ENCODING FIXED(32)")
            return HeavyType(TDatumType.TIMESTAMP, TEncodingType.FIXED, 32, nullable=nullable)
        if enc not in ("", "NONE"):
            raise TypeError_(f"Invalid encoding for TIMESTAMP: {encoding}")
        return HeavyType(TDatumType.TIMESTAMP, precision=precision, nullable=nullable)
    if datum == TDatumType.DATE:
        bits = 32
        if enc in ("DAYS", "FIXED"):
            bits = encoding_param or 32
            if bits not in (16, 32):
                raise TypeError_("Compression parameter for date must be 16 or 32")
        elif enc not in ("", "NONE"):
            raise TypeError_(f"Invalid encoding for DATE: {encoding}")
        return HeavyType(TDatumType.DATE, TEncodingType.DATE_IN_DAYS, bits, nullable=nullable)
    if enc == "FIXED":
        bits = encoding_param or 32
        return HeavyType(datum, TEncodingType.FIXED, bits, nullable=nullable)
    if enc not in ("", "NONE"):
        raise TypeError_(f"Invalid encoding {encoding} for type {name}")
    return HeavyType(datum, nullable=nullable)


def from_thrift(ti: TTypeInfo) -> HeavyType:
    """From a client-sent ``TTypeInfo`` (``create_table``)."""
    datum = ti.type
    if datum is None:
        raise TypeError_("Missing column type")
    name = TDatumType._VALUES_TO_NAMES.get(datum, str(datum))
    if ti.is_array:
        raise TypeError_("Array columns are not supported by the HeavyDB sandbox server")
    if datum in (TDatumType.INTERVAL_DAY_TIME, TDatumType.INTERVAL_YEAR_MONTH):
        raise TypeError_(f"Unsupported type: {name}")
    enc = TEncodingType._VALUES_TO_NAMES.get(ti.encoding or 0, "NONE")
    args: list[int] = []
    if datum == TDatumType.DECIMAL:
        p, s = ti.precision or 0, ti.scale or 0
        args = list(DEFAULT_DECIMAL) if (p, s) == (0, 0) else [p, s]
    elif datum == TDatumType.TIMESTAMP:
        args = [ti.precision or 0]
    if datum == TDatumType.STR and enc == "NONE":
        enc_name: str | None = "NONE"
    elif enc == "DATE_IN_DAYS":
        enc_name = "DAYS"
    elif enc == "NONE":
        enc_name = None
    else:
        enc_name = enc
    # DBHandler::create_table ignores `nullable` (Immerse never sets it).
    return from_sql(name, args, enc_name, ti.comp_param or None)


# --- results: Arrow (from DuckDB) -> HeavyDB -------------------------------------------------
def from_arrow(t: pa.DataType) -> HeavyType:
    """The HeavyDB type reported for a query result column of Arrow type ``t``."""
    if pa.types.is_dictionary(t):
        return from_arrow(t.value_type)
    if pa.types.is_boolean(t):
        return HeavyType(TDatumType.BOOL)
    if pa.types.is_int8(t):
        return HeavyType(TDatumType.TINYINT)
    if pa.types.is_int16(t) or pa.types.is_uint8(t):
        return HeavyType(TDatumType.SMALLINT)
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return HeavyType(TDatumType.INT)
    if pa.types.is_integer(t):
        return HeavyType(TDatumType.BIGINT)
    if pa.types.is_float32(t) or pa.types.is_float16(t):
        return HeavyType(TDatumType.FLOAT)
    if pa.types.is_floating(t):
        return HeavyType(TDatumType.DOUBLE)
    if pa.types.is_decimal(t):
        return HeavyType(
            TDatumType.DECIMAL,
            precision=min(t.precision, MAX_DECIMAL_PRECISION + 1),
            scale=t.scale,
        )
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return text_dict()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return HeavyType(TDatumType.STR, TEncodingType.NONE)
    if pa.types.is_date(t):
        return date_type()
    if pa.types.is_timestamp(t):
        return HeavyType(
            TDatumType.TIMESTAMP, precision={"s": 0, "ms": 3, "us": 6, "ns": 9}[t.unit]
        )
    if pa.types.is_time(t):
        return HeavyType(TDatumType.TIME)
    if pa.types.is_null(t):
        return HeavyType(TDatumType.BIGINT)
    if pa.types.is_interval(t) or pa.types.is_duration(t):
        return HeavyType(TDatumType.INTERVAL_DAY_TIME)
    return text_dict()


def describe(ht: HeavyType) -> dict[str, Any]:
    """A JSON-able form of a type (catalog persistence)."""
    return {
        "datum": ht.datum,
        "encoding": ht.encoding,
        "comp_param": ht.comp_param,
        "precision": ht.precision,
        "scale": ht.scale,
        "nullable": ht.nullable,
    }


def undescribe(d: dict[str, Any]) -> HeavyType:
    return HeavyType(
        datum=int(d["datum"]),
        encoding=int(d["encoding"]),
        comp_param=int(d["comp_param"]),
        precision=int(d["precision"]),
        scale=int(d["scale"]),
        nullable=bool(d["nullable"]),
    )


_DUCK_SIMPLE: dict[str, HeavyType] = {
    "BOOLEAN": HeavyType(TDatumType.BOOL),
    "TINYINT": HeavyType(TDatumType.TINYINT),
    "UTINYINT": HeavyType(TDatumType.SMALLINT),
    "SMALLINT": HeavyType(TDatumType.SMALLINT),
    "USMALLINT": HeavyType(TDatumType.INT),
    "INTEGER": HeavyType(TDatumType.INT),
    "UINTEGER": HeavyType(TDatumType.BIGINT),
    "BIGINT": HeavyType(TDatumType.BIGINT),
    "UBIGINT": HeavyType(TDatumType.BIGINT),
    "HUGEINT": HeavyType(TDatumType.BIGINT),
    "UHUGEINT": HeavyType(TDatumType.BIGINT),
    "FLOAT": HeavyType(TDatumType.FLOAT),
    "DOUBLE": HeavyType(TDatumType.DOUBLE),
    "DATE": date_type(),
    "TIME": HeavyType(TDatumType.TIME),
    "TIMESTAMP_S": HeavyType(TDatumType.TIMESTAMP, precision=0),
    "TIMESTAMP_MS": HeavyType(TDatumType.TIMESTAMP, precision=3),
    "TIMESTAMP": HeavyType(TDatumType.TIMESTAMP, precision=6),
    "TIMESTAMP WITH TIME ZONE": HeavyType(TDatumType.TIMESTAMP, precision=6),
    "TIMESTAMP_NS": HeavyType(TDatumType.TIMESTAMP, precision=9),
    "VARCHAR": text_dict(),
    "BLOB": HeavyType(TDatumType.STR, TEncodingType.NONE),
}


def from_duckdb(type_str: str) -> HeavyType:
    """The HeavyDB type a CTAS column gets from the DuckDB type of its expression."""
    s = type_str.upper().strip()
    if s in _DUCK_SIMPLE:
        return _DUCK_SIMPLE[s]
    m = re.match(r"DECIMAL\((\d+),\s*(\d+)\)", s)
    if m:
        p, sc = int(m.group(1)), int(m.group(2))
        p = min(p, MAX_DECIMAL_PRECISION)
        return HeavyType(TDatumType.DECIMAL, precision=p, scale=min(sc, p))
    if s.startswith("ENUM"):
        return text_dict()
    raise TypeError_(f"Unsupported type for a table column: {type_str}")
