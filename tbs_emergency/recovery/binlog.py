"""Reading `mariadb-binlog --base64-output=decode-rows -vv` output (run with TZ=UTC).

The decoded text shows each row event as pseudo-SQL with one line per column value:

    # at 2423
    #250124 10:00:05 server id 1  end_log_pos 2587 CRC32 0x76d5b7dd   Write_rows: table id 22
    ### INSERT INTO `db`.`t`
    ### SET
    ###   @1=4 /* INT meta=0 nullable=0 is_null=0 */
    ###   @2='d' /* VARSTRING(80) meta=80 nullable=1 is_null=0 */

This module turns that into row changes (table, kind, before and after images as raw values,
timestamp, binlog position, GTID) and statement events (DDL), and decodes raw values into
Python values given the column's type.

What the text cannot say exactly, and how it is handled:
- strings: bytes below 0x20 are printed as `\\xHH`, but a literal backslash-x-hex in the data
  is printed the same way; such values are decoded as control bytes and flagged `ambiguous`;
- FLOAT values are printed with 6 significant digits; they are flagged `approximate`.
The flashback applies the binlog's own row images (`mariadb-binlog --flashback`), never these
decoded values; the decoded values are for showing people what will change and for finding
the rows a change touches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

_HEADER = re.compile(
    r"^#(\d{2})(\d{2})(\d{2})\s+(\d{1,2}):(\d{2}):(\d{2})\s+server id\s+(\d+)\s+"
    r"end_log_pos\s+(\d+)\s.*?\t(.*)$"
)
_AT = re.compile(r"^# at (\d+)\s*$")
_ROW_START = re.compile(r"^### (INSERT INTO|UPDATE|DELETE FROM) `((?:[^`]|``)+)`\.`((?:[^`]|``)+)`")
_VALUE = re.compile(r"^###   @(\d+)=(.*)$")
_GTID = re.compile(r"^GTID (\d+-\d+-\d+)")
_USE = re.compile(r"^use `((?:[^`]|``)+)`", re.I)
_HEX_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
_TX_CONTROL = {"BEGIN", "COMMIT", "ROLLBACK", "START TRANSACTION", "XA START", "XA END"}

Kind = Literal["insert", "update", "delete"]


@dataclass(frozen=True)
class RawValue:
    """One column value as printed: text (bytes as latin-1) and the type comment."""

    text: str
    type_desc: str

    @property
    def is_null(self) -> bool:
        return self.text == "NULL" or "is_null=1" in self.type_desc


@dataclass
class RowChange:
    kind: Kind
    database: str
    table: str
    at: datetime
    position: int  # where the row event starts
    end_position: int
    file: str | None
    gtid: str | None
    before: list[RawValue] | None = None
    after: list[RawValue] | None = None

    @property
    def qualified(self) -> str:
        return f"{self.database}.{self.table}"


@dataclass
class StatementEvent:
    at: datetime
    position: int
    file: str | None
    database: str | None
    sql: str


@dataclass
class Decoded:
    changes: list[RowChange] = field(default_factory=list)
    statements: list[StatementEvent] = field(default_factory=list)
    transactions: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    last_end_position: int | None = None


def _ts(m: re.Match[str]) -> datetime:
    yy, mo, dd, hh, mi, ss = (int(m.group(i)) for i in range(1, 7))
    return datetime(2000 + yy, mo, dd, hh, mi, ss, tzinfo=UTC)


def _unquote_ident(s: str) -> str:
    return s.replace("``", "`")


def parse_verbose(lines: Iterable[str], file: str | None = None) -> Decoded:
    """Row changes and statements of decoded binlog text (lines as latin-1 text)."""
    out = Decoded()
    position = 0
    at: datetime | None = None
    end_pos = 0
    gtid: str | None = None
    current: RowChange | None = None
    section: Literal["before", "after"] | None = None
    event_type = ""
    in_query = False
    query_lines: list[str] = []
    use_db: str | None = None
    query_at: datetime | None = None
    query_pos = 0
    file_name = file

    def finish_query() -> None:
        nonlocal query_lines, in_query
        stmts = [q for q in query_lines if q and not q.upper().startswith("SET ")]
        sql = " ".join(stmts).strip()
        if sql and sql.rstrip(";").strip().upper() not in _TX_CONTROL and query_at is not None:
            out.statements.append(StatementEvent(query_at, query_pos, file_name, use_db, sql))
        query_lines = []
        in_query = False

    for raw_line in lines:
        line = raw_line.rstrip("\r\n")
        if line.startswith("# at "):
            if in_query:
                finish_query()
            m = _AT.match(line)
            if m:
                position = int(m.group(1))
            continue
        if line.startswith("#") and not line.startswith("###"):
            m = _HEADER.match(line)
            if not m:
                continue
            if in_query:
                finish_query()
            at = _ts(m)
            end_pos = int(m.group(8))
            event_type = m.group(9)
            out.last_end_position = end_pos
            out.first_at = out.first_at or at
            out.last_at = at
            g = _GTID.match(event_type)
            if g:
                gtid = g.group(1)
                out.transactions += 1
            elif event_type.startswith("Query"):
                in_query = True
                query_lines = []
                query_at = at
                query_pos = position
            elif event_type.startswith("Rotate to "):
                name = event_type[len("Rotate to ") :].split()[0]
                file_name = name or file_name
            current = None
            continue
        if line.startswith("### "):
            m = _ROW_START.match(line)
            if m:
                kind: Kind = {"INSERT INTO": "insert", "UPDATE": "update", "DELETE FROM": "delete"}[
                    m.group(1)  # type: ignore[index]
                ]
                current = RowChange(
                    kind=kind,
                    database=_unquote_ident(m.group(2)),
                    table=_unquote_ident(m.group(3)),
                    at=at or datetime.fromtimestamp(0, UTC),
                    position=position,
                    end_position=end_pos,
                    file=file_name,
                    gtid=gtid,
                )
                out.changes.append(current)
                section = None
                continue
            if current is None:
                continue
            if line == "### WHERE":
                section = "before"
                current.before = []
                continue
            if line == "### SET":
                section = "after"
                current.after = []
                continue
            v = _VALUE.match(line)
            if v and section is not None:
                target = current.before if section == "before" else current.after
                assert target is not None
                text, _, comment = v.group(2).rpartition(" /* ")
                if not _:
                    text, comment = v.group(2), ""
                target.append(RawValue(text.rstrip(), comment.rstrip(" */")))
            continue
        if in_query:
            body = line.strip()
            if body.endswith("/*!*/;"):
                body = body[: -len("/*!*/;")].strip()
            if not body or body.startswith(("/*", "DELIMITER", "--")):
                continue
            u = _USE.match(body)
            if u:
                use_db = _unquote_ident(u.group(1))
            else:
                query_lines.append(body)
    if in_query:
        finish_query()
    return out


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnType:
    """What decoding needs to know about a column (from information_schema.COLUMNS)."""

    name: str
    data_type: str  # lower-case DATA_TYPE
    column_type: str  # COLUMN_TYPE
    binary: bool = False  # binary/varbinary/blob types: bytes, not text

    @property
    def unsigned(self) -> bool:
        return "unsigned" in self.column_type.lower()

    @property
    def labels(self) -> list[str]:
        """ENUM/SET members in definition order."""
        m = re.match(r"^(?:enum|set)\((.*)\)$", self.column_type.strip(), re.I | re.S)
        if not m:
            return []
        return [s.replace("''", "'") for s in re.findall(r"'((?:[^']|'')*)'", m.group(1))]


@dataclass(frozen=True)
class Value:
    value: Any
    ambiguous: bool = False  # a string with \xHH escapes: control bytes or literal text
    approximate: bool = False  # FLOAT printed with 6 significant digits


def _string_bytes(text: str) -> tuple[bytes, bool]:
    inner = text[1:-1] if len(text) >= 2 and text[0] == "'" and text[-1] == "'" else text
    ambiguous = bool(_HEX_ESCAPE.search(inner))
    raw = _HEX_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), inner)
    return raw.encode("latin-1", errors="replace"), ambiguous


def decode_value(raw: RawValue, col: ColumnType) -> Value:
    """The Python value of a printed column value."""
    text = raw.text
    if raw.is_null:
        return Value(None)
    t = col.data_type.lower()
    desc = raw.type_desc.upper()
    if text.startswith("b'") and text.endswith("'"):
        bits = int(text[2:-1] or "0", 2)
        if t == "set":
            labels = col.labels
            return Value(",".join(lbl for i, lbl in enumerate(labels) if bits >> i & 1))
        return Value(bits)
    if text.startswith("'"):
        data, ambiguous = _string_bytes(text)
        if t == "datetime" or desc.startswith("DATETIME"):
            return Value(_parse_datetime(data.decode()))
        if t == "date" or desc.startswith("DATE"):
            return Value(date.fromisoformat(data.decode().replace(":", "-")))
        if t == "time" or desc.startswith("TIME"):
            return Value(_parse_time(data.decode()))
        if col.binary:
            return Value(data, ambiguous)
        return Value(data.decode("utf-8", errors="surrogateescape"), ambiguous)
    number = text.split(" (")[0].strip()
    if t in ("enum",):
        idx = int(number)
        labels = col.labels
        return Value(labels[idx - 1] if 0 < idx <= len(labels) else "")
    if t == "timestamp" or desc.startswith("TIMESTAMP"):
        d = Decimal(number)
        return Value(datetime.fromtimestamp(0, UTC) + timedelta(seconds=float(d)))
    if t in ("decimal", "numeric") or desc.startswith("DECIMAL"):
        return Value(Decimal(number))
    if t in ("float",) or desc.startswith("FLOAT"):
        return Value(float(number), approximate=True)
    if t in ("double", "real") or desc.startswith("DOUBLE"):
        return Value(float(number))
    if col.unsigned and "(" in text:
        return Value(int(text.split("(")[1].rstrip(")")))
    try:
        return Value(int(number))
    except ValueError:
        try:
            return Value(Decimal(number))
        except InvalidOperation:
            return Value(text, ambiguous=True)


def _parse_datetime(s: str) -> datetime:
    s = s.replace("T", " ")
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in s else "%Y-%m-%d %H:%M:%S"
    return datetime.strptime(s, fmt)


def _parse_time(s: str) -> timedelta:
    neg = s.startswith("-")
    h, m, rest = s.lstrip("-").split(":")
    td = timedelta(hours=int(h), minutes=int(m), seconds=float(rest))
    return -td if neg else td


def sql_literal(value: Any) -> str:
    """A MySQL literal for showing a value in a statement."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return "X'" + value.hex().upper() + "'"
    if isinstance(value, datetime):
        return "'" + value.replace(tzinfo=None).isoformat(sep=" ") + "'"
    if isinstance(value, date):
        return "'" + value.isoformat() + "'"
    if isinstance(value, timedelta):
        total = value.total_seconds()
        sign = "-" if total < 0 else ""
        total = abs(total)
        h, rem = divmod(total, 3600)
        m, s = divmod(rem, 60)
        return f"'{sign}{int(h):02d}:{int(m):02d}:{s:09.6f}'"
    s = str(value)
    escaped = (
        s.replace("\\", "\\\\")
        .replace("'", "\\'")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
        .replace("\0", "\\0")
    )
    return "'" + escaped + "'"


def iter_text(stream: Iterable[bytes]) -> Iterator[str]:
    """Bytes lines as latin-1 text (one character per byte, nothing lost)."""
    for b in stream:
        yield b.decode("latin-1")
