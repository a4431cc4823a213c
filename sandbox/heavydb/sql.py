"""HeavyDB SQL: statement recognition and translation to DuckDB.

Queries and DML (SELECT, INSERT, UPDATE, DELETE, the SELECT of CTAS and COPY TO) are parsed
with sqlglot using a small HeavyDB dialect (``DATEADD``/``TIMESTAMPADD``,
``DATEDIFF``/``TIMESTAMPDIFF``, ``DATEPART``, ``SAMPLE``, ``APPROX_COUNT_DISTINCT`` …) and
rewritten into DuckDB SQL: table names are bound to the catalog's views, unnamed result
columns are named ``EXPR$<n>`` as Calcite does, HeavyDB-only functions become their DuckDB
equivalents.  Integer division keeps HeavyDB semantics through DuckDB's
``integer_division`` setting on every cursor.

HeavyDB-only statements that sqlglot cannot parse (CREATE TABLE with ENCODING/WITH, users,
privileges, DUMP/RESTORE, COPY, SHOW, ALTER SYSTEM, KILL QUERY …) are read by a small
recursive-descent parser over sqlglot's tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import sqlglot
from sqlglot import exp, parser
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, Tokenizer, TokenType

from . import types as ht
from .types import HeavyType


class SqlError(Exception):
    """A statement HeavyDB would reject; the message goes to the client as is."""


# =============================================================================================
# sqlglot dialect for HeavyDB's query language
# =============================================================================================
def _unit_of(e: exp.Expr) -> str:
    if isinstance(e, exp.Literal):
        return str(e.this).upper()
    if isinstance(e, exp.Column | exp.Var | exp.Identifier):
        return e.name.upper()
    raise SqlError(f"SQL Error: Invalid date part: {e.sql()}")


# unit -> (DuckDB interval constructor, multiplier, argument type)
_ADD_UNITS: dict[str, tuple[str, int, str]] = {
    "YEAR": ("to_years", 1, "INTEGER"),
    "YY": ("to_years", 1, "INTEGER"),
    "YYYY": ("to_years", 1, "INTEGER"),
    "SQL_TSI_YEAR": ("to_years", 1, "INTEGER"),
    "QUARTER": ("to_months", 3, "INTEGER"),
    "QQ": ("to_months", 3, "INTEGER"),
    "Q": ("to_months", 3, "INTEGER"),
    "SQL_TSI_QUARTER": ("to_months", 3, "INTEGER"),
    "MONTH": ("to_months", 1, "INTEGER"),
    "MM": ("to_months", 1, "INTEGER"),
    "M": ("to_months", 1, "INTEGER"),
    "SQL_TSI_MONTH": ("to_months", 1, "INTEGER"),
    "WEEK": ("to_days", 7, "INTEGER"),
    "WW": ("to_days", 7, "INTEGER"),
    "W": ("to_days", 7, "INTEGER"),
    "SQL_TSI_WEEK": ("to_days", 7, "INTEGER"),
    "DAY": ("to_days", 1, "INTEGER"),
    "DD": ("to_days", 1, "INTEGER"),
    "D": ("to_days", 1, "INTEGER"),
    "DAYOFYEAR": ("to_days", 1, "INTEGER"),
    "DY": ("to_days", 1, "INTEGER"),
    "Y": ("to_days", 1, "INTEGER"),
    "WEEKDAY": ("to_days", 1, "INTEGER"),
    "DW": ("to_days", 1, "INTEGER"),
    "SQL_TSI_DAY": ("to_days", 1, "INTEGER"),
    "QUARTERDAY": ("to_hours", 6, "BIGINT"),
    "HOUR": ("to_hours", 1, "BIGINT"),
    "HH": ("to_hours", 1, "BIGINT"),
    "SQL_TSI_HOUR": ("to_hours", 1, "BIGINT"),
    "MINUTE": ("to_minutes", 1, "BIGINT"),
    "MI": ("to_minutes", 1, "BIGINT"),
    "N": ("to_minutes", 1, "BIGINT"),
    "SQL_TSI_MINUTE": ("to_minutes", 1, "BIGINT"),
    "SECOND": ("to_seconds", 1, "DOUBLE"),
    "SS": ("to_seconds", 1, "DOUBLE"),
    "S": ("to_seconds", 1, "DOUBLE"),
    "SQL_TSI_SECOND": ("to_seconds", 1, "DOUBLE"),
    "MILLISECOND": ("to_milliseconds", 1, "DOUBLE"),
    "MS": ("to_milliseconds", 1, "DOUBLE"),
    "MICROSECOND": ("to_microseconds", 1, "BIGINT"),
    "US": ("to_microseconds", 1, "BIGINT"),
    "NANOSECOND": ("to_microseconds", 1, "BIGINT"),  # divided by 1000 below
    "NS": ("to_microseconds", 1, "BIGINT"),
    "DECADE": ("to_years", 10, "INTEGER"),
    "CENTURY": ("to_years", 100, "INTEGER"),
    "MILLENNIUM": ("to_years", 1000, "INTEGER"),
}

# unit -> DuckDB date part name (date_part / date_sub / date_trunc)
_PARTS: dict[str, str] = {
    "YEAR": "year",
    "YY": "year",
    "YYYY": "year",
    "SQL_TSI_YEAR": "year",
    "QUARTER": "quarter",
    "QQ": "quarter",
    "Q": "quarter",
    "SQL_TSI_QUARTER": "quarter",
    "MONTH": "month",
    "MM": "month",
    "M": "month",
    "SQL_TSI_MONTH": "month",
    "WEEK": "week",
    "WW": "week",
    "W": "week",
    "SQL_TSI_WEEK": "week",
    "DAY": "day",
    "DD": "day",
    "D": "day",
    "SQL_TSI_DAY": "day",
    "DAYOFYEAR": "doy",
    "DY": "doy",
    "Y": "doy",
    "DOY": "doy",
    "WEEKDAY": "dow",
    "DW": "dow",
    "DOW": "dow",
    "ISODOW": "isodow",
    "HOUR": "hour",
    "HH": "hour",
    "SQL_TSI_HOUR": "hour",
    "MINUTE": "minute",
    "MI": "minute",
    "N": "minute",
    "SQL_TSI_MINUTE": "minute",
    "SECOND": "second",
    "SS": "second",
    "S": "second",
    "SQL_TSI_SECOND": "second",
    "MILLISECOND": "millisecond",
    "MS": "millisecond",
    "MICROSECOND": "microsecond",
    "US": "microsecond",
    "NANOSECOND": "nanosecond",
    "NS": "nanosecond",
    "DECADE": "decade",
    "CENTURY": "century",
    "MILLENNIUM": "millennium",
    "EPOCH": "epoch",
}


def _fn(name: str, *args: exp.Expr) -> exp.Anonymous:
    return exp.Anonymous(this=name, expressions=list(args))


def _date_add(args: list[exp.Expr]) -> exp.Expr:
    if len(args) != 3:
        raise SqlError("SQL Error: DATEADD/TIMESTAMPADD take (date_part, interval, datetime)")
    unit = _unit_of(args[0])
    if unit not in _ADD_UNITS:
        raise SqlError(f"SQL Error: Invalid date part for DATEADD: {unit}")
    fn, mult, arg_type = _ADD_UNITS[unit]
    n: exp.Expr = args[1]
    if mult != 1:
        n = exp.Mul(this=exp.Paren(this=n), expression=exp.Literal.number(mult))
    if unit in ("NANOSECOND", "NS"):
        n = exp.Div(this=exp.Paren(this=n), expression=exp.Literal.number(1000))
    interval = _fn(fn, exp.Cast(this=n, to=exp.DataType.build(arg_type)))
    return exp.Paren(this=exp.Add(this=args[2], expression=interval))


def _date_diff(args: list[exp.Expr]) -> exp.Expr:
    if len(args) != 3:
        raise SqlError("SQL Error: DATEDIFF/TIMESTAMPDIFF take (date_part, start, end)")
    unit = _unit_of(args[0])
    if unit in ("QUARTERDAY",):
        hours = _fn(
            "date_sub",
            exp.Literal.string("hour"),
            exp.Cast(this=args[1], to=exp.DataType.build("TIMESTAMP")),
            exp.Cast(this=args[2], to=exp.DataType.build("TIMESTAMP")),
        )
        return exp.Paren(this=exp.IntDiv(this=hours, expression=exp.Literal.number(6)))
    part = _PARTS.get(unit)
    if part is None or part in ("doy", "dow", "isodow", "epoch"):
        part = "day" if part in ("doy", "dow", "isodow") else None
    if part is None:
        raise SqlError(f"SQL Error: Invalid date part for DATEDIFF: {unit}")
    ts_type = "TIMESTAMP_NS" if part == "nanosecond" else "TIMESTAMP"
    return _fn(
        "date_sub",
        exp.Literal.string(part),
        exp.Cast(this=args[1], to=exp.DataType.build(ts_type, dialect="duckdb")),
        exp.Cast(this=args[2], to=exp.DataType.build(ts_type, dialect="duckdb")),
    )


def _date_part(args: list[exp.Expr]) -> exp.Expr:
    if len(args) != 2:
        raise SqlError("SQL Error: DATEPART takes (date_part, datetime)")
    unit = _unit_of(args[0])
    part = _PARTS.get(unit)
    if part is None:
        raise SqlError(f"SQL Error: Invalid date part for DATEPART: {unit}")
    return exp.Cast(
        this=_fn("date_part", exp.Literal.string(part), args[1]),
        to=exp.DataType.build("BIGINT"),
    )


def _rename(name: str, keep: int | None = None) -> Callable[[list[exp.Expr]], exp.Expr]:
    def build(args: list[exp.Expr]) -> exp.Expr:
        return _fn(name, *(args if keep is None else args[:keep]))

    return build


def _identity(args: list[exp.Expr]) -> exp.Expr:
    return args[0]


def _approx_quantile(args: list[exp.Expr]) -> exp.Expr:
    q = args[1] if len(args) > 1 else exp.Literal.number(0.5)
    return _fn("approx_quantile", args[0], q)


def _now(args: list[exp.Expr]) -> exp.Expr:
    return exp.Cast(
        this=exp.Cast(this=exp.CurrentTimestamp(), to=exp.DataType.build("TIMESTAMP")),
        to=exp.DataType.build("TIMESTAMP_S", dialect="duckdb"),
    )


class HeavySQL(Dialect):
    """HeavyDB's Calcite-based SQL as far as the sandbox needs to translate it."""

    # Calcite's default null collation (HIGH): NULLs sort last ascending, first descending.
    NULL_ORDERING = "nulls_are_large"

    class Parser(parser.Parser):
        FUNCTIONS: ClassVar[dict[str, Callable[..., exp.Expr]]] = {
            **parser.Parser.FUNCTIONS,
            "DATEADD": _date_add,
            "TIMESTAMPADD": _date_add,
            "DATEDIFF": _date_diff,
            "TIMESTAMPDIFF": _date_diff,
            "DATEPART": _date_part,
            "APPROX_COUNT_DISTINCT": _rename("approx_count_distinct", 1),
            "SAMPLE": _rename("any_value", 1),
            "LAST_SAMPLE": _rename("any_value", 1),
            "SINGLE_VALUE": _rename("any_value", 1),
            "APPROX_MEDIAN": _approx_quantile,
            "APPROX_PERCENTILE": _approx_quantile,
            "APPROX_QUANTILE": _approx_quantile,
            "NOW": _now,
            "LENGTH": _rename("strlen"),
            "CHAR_LENGTH": _rename("length"),
            "CHARACTER_LENGTH": _rename("length"),
            "LOG": _rename("ln"),
            "LIKELY": _identity,
            "UNLIKELY": _identity,
            "ENCODE_TEXT": _identity,
        }


# =============================================================================================
# token-level parser for HeavyDB-only statements
# =============================================================================================
class _StatementTokenizer(Tokenizer):
    """sqlglot's tokenizer without its "rest of the statement is one string" commands."""

    COMMANDS: ClassVar[set[TokenType]] = set()


class _Tokens:
    def __init__(self, sql: str) -> None:
        try:
            toks = _StatementTokenizer().tokenize(sql)
        except TokenError as e:
            raise SqlError(f"SQL Error: {e}") from e
        while toks and toks[-1].token_type == TokenType.SEMICOLON:
            toks.pop()
        if any(t.token_type == TokenType.SEMICOLON for t in toks):
            raise SqlError("multiple SQL statements not allowed")
        self.toks: list[Token] = toks
        self.i = 0
        self.sql = sql

    # -- primitives -----------------------------------------------------------------------
    def peek(self, k: int = 0) -> Token | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def word(self, k: int = 0) -> str:
        t = self.peek(k)
        if t is None or t.token_type in (TokenType.STRING, TokenType.IDENTIFIER):
            return ""
        return t.text.upper()

    def at_end(self) -> bool:
        return self.i >= len(self.toks)

    def next(self) -> Token:
        t = self.peek()
        if t is None:
            raise SqlError('SQL Error: Encountered "<EOF>" at end of statement')
        self.i += 1
        return t

    def accept(self, *words: str) -> bool:
        for k, w in enumerate(words):
            if self.word(k) != w:
                return False
        self.i += len(words)
        return True

    def expect(self, *words: str) -> None:
        if not self.accept(*words):
            got = self.peek()
            where = f'"{got.text}" at line {got.line}, column {got.col}' if got else '"<EOF>"'
            raise SqlError(f"SQL Error: Encountered {where}. Was expecting: {' '.join(words)}")

    def accept_tok(self, tt: TokenType) -> bool:
        t = self.peek()
        if t is not None and t.token_type == tt:
            self.i += 1
            return True
        return False

    def expect_tok(self, tt: TokenType, what: str) -> Token:
        t = self.peek()
        if t is None or t.token_type != tt:
            where = f'"{t.text}" at line {t.line}, column {t.col}' if t else '"<EOF>"'
            raise SqlError(f"SQL Error: Encountered {where}. Was expecting: {what}")
        self.i += 1
        return t

    def ident(self) -> str:
        t = self.next()
        if t.token_type == TokenType.STRING:
            raise SqlError(f"SQL Error: Encountered \"'{t.text}'\". Was expecting an identifier")
        if t.token_type in (TokenType.L_PAREN, TokenType.R_PAREN, TokenType.COMMA):
            raise SqlError(f'SQL Error: Encountered "{t.text}". Was expecting an identifier')
        return t.text

    def string(self) -> str:
        return self.expect_tok(TokenType.STRING, "a string literal").text

    def number(self) -> int:
        t = self.next()
        try:
            return int(t.text)
        except ValueError as e:
            raise SqlError(f'SQL Error: Encountered "{t.text}". Was expecting a number') from e

    def literal(self) -> str:
        """A string, number or bare word value (``WITH (k = v)`` option values)."""
        t = self.next()
        neg = ""
        if t.token_type == TokenType.DASH:
            neg = "-"
            t = self.next()
        return neg + t.text

    def rest_sql(self) -> str:
        if self.at_end():
            return ""
        start = self.toks[self.i].start
        return self.sql[start:]

    def done(self) -> None:
        if not self.at_end():
            t = self.toks[self.i]
            raise SqlError(f'SQL Error: Encountered "{t.text}" at line {t.line}, column {t.col}.')

    def options(self) -> dict[str, str]:
        """``( key = value [, ...] )`` -> lower-case keys."""
        opts: dict[str, str] = {}
        self.expect_tok(TokenType.L_PAREN, "(")
        if self.accept_tok(TokenType.R_PAREN):
            return opts
        while True:
            key = self.ident().lower()
            self.expect_tok(TokenType.EQ, "=")
            opts[key] = self.literal()
            if self.accept_tok(TokenType.COMMA):
                continue
            self.expect_tok(TokenType.R_PAREN, ")")
            return opts

    def name_list(self) -> list[str]:
        names = [self.ident()]
        while self.accept_tok(TokenType.COMMA):
            names.append(self.ident())
        return names


# =============================================================================================
# statements
# =============================================================================================
@dataclass
class ColumnSpec:
    name: str
    type: HeavyType
    default: str | None = None


@dataclass
class Statement:
    sql: str


@dataclass
class Query(Statement):
    """A SELECT (incl. WITH/UNION/VALUES); ``ast`` is the sqlglot tree (HeavySQL)."""

    ast: exp.Expr
    explain: bool = False


@dataclass
class Insert(Statement):
    table: str
    columns: list[str] | None
    source: exp.Expr  # Select / Values / Union


@dataclass
class Update(Statement):
    table: str
    alias: str
    assignments: list[tuple[str, exp.Expr]]
    where: exp.Expr | None
    from_: exp.Expr | None


@dataclass
class Delete(Statement):
    table: str
    alias: str
    where: exp.Expr | None


@dataclass
class CreateTable(Statement):
    name: str
    columns: list[ColumnSpec]
    options: dict[str, str]
    if_not_exists: bool = False
    temporary: bool = False


@dataclass
class CreateTableAs(Statement):
    name: str
    query: exp.Expr
    options: dict[str, str]
    if_not_exists: bool = False


@dataclass
class DropTable(Statement):
    name: str
    if_exists: bool = False


@dataclass
class TruncateTable(Statement):
    name: str


@dataclass
class OptimizeTable(Statement):
    name: str


@dataclass
class AlterTable(Statement):
    name: str
    action: str  # rename_table | rename_column | add_columns | drop_columns | set_option
    new_name: str = ""
    old_column: str = ""
    add: list[ColumnSpec] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)
    option: tuple[str, str] = ("", "")


@dataclass
class UserStmt(Statement):
    action: str  # create | alter | drop | rename
    name: str
    options: dict[str, str] = field(default_factory=dict)
    new_name: str = ""
    if_exists: bool = False


@dataclass
class RoleStmt(Statement):
    action: str  # create | drop
    name: str
    if_exists: bool = False


@dataclass
class GrantStmt(Statement):
    revoke: bool
    privileges: list[str]  # empty for role grants
    object_type: str  # TABLE | DATABASE | VIEW | DASHBOARD | SERVER | ROLE
    object_name: str
    grantees: list[str]
    roles: list[str] = field(default_factory=list)


@dataclass
class DatabaseStmt(Statement):
    action: str  # create | drop | rename
    name: str
    options: dict[str, str] = field(default_factory=dict)
    if_exists: bool = False
    if_not_exists: bool = False
    new_name: str = ""


@dataclass
class Show(Statement):
    what: str  # tables | databases | create_table | table_details | user_sessions | queries |
    # users | roles | user_details
    names: list[str] = field(default_factory=list)


@dataclass
class CopyFrom(Statement):
    table: str
    path: str
    options: dict[str, str]


@dataclass
class CopyTo(Statement):
    query: exp.Expr
    path: str
    options: dict[str, str]


@dataclass
class DumpRestore(Statement):
    restore: bool
    table: str
    path: str
    options: dict[str, str]


@dataclass
class AlterSystemClear(Statement):
    memory: str  # CPU | GPU | RENDER


@dataclass
class KillQuery(Statement):
    public_id: str


@dataclass
class AlterSession(Statement):
    key: str
    value: str


# =============================================================================================
# statement recognition
# =============================================================================================
def parse(sql: str) -> Statement:
    text = sql.strip()
    if not text:
        raise SqlError("empty SQL statment not allowed")
    tk = _Tokens(text)
    if tk.at_end():
        raise SqlError("empty SQL statment not allowed")
    body = text if not text.endswith(";") else text.rstrip(";").rstrip()
    w0 = tk.word()
    if w0 in ("SELECT", "WITH", "VALUES") or tk.peek().token_type == TokenType.L_PAREN:  # type: ignore[union-attr]
        return Query(body, _parse_query(body))
    if w0 == "EXPLAIN":
        tk.next()
        tk.accept("CALCITE")
        tk.accept("OPTIMIZED")
        inner = tk.rest_sql()
        return Query(body, _parse_query(inner.rstrip(";")), explain=True)
    if w0 == "INSERT":
        return _parse_insert(body)
    if w0 == "UPDATE":
        return _parse_update(body)
    if w0 == "DELETE":
        return _parse_delete(body)
    if w0 == "CREATE":
        return _parse_create(tk, body)
    if w0 == "DROP":
        return _parse_drop(tk, body)
    if w0 == "TRUNCATE":
        tk.next()
        tk.accept("TABLE")
        name = tk.ident()
        tk.done()
        return TruncateTable(body, name)
    if w0 == "ALTER":
        return _parse_alter(tk, body)
    if w0 in ("GRANT", "REVOKE"):
        return _parse_grant(tk, body)
    if w0 == "SHOW":
        return _parse_show(tk, body)
    if w0 == "COPY":
        return _parse_copy(tk, body)
    if w0 in ("DUMP", "RESTORE"):
        restore = tk.next().text.upper() == "RESTORE"
        tk.expect("TABLE")
        table = tk.ident()
        tk.expect("FROM" if restore else "TO")
        path = tk.string()
        opts = tk.options() if tk.accept("WITH") else {}
        tk.done()
        return DumpRestore(body, restore, table, path, opts)
    if w0 == "KILL":
        tk.next()
        tk.expect("QUERY")
        pid = tk.string()
        tk.done()
        return KillQuery(body, pid)
    if w0 == "OPTIMIZE":
        tk.next()
        tk.expect("TABLE")
        name = tk.ident()
        if tk.accept("WITH"):
            tk.options()
        tk.done()
        return OptimizeTable(body, name)
    t0 = tk.peek()
    assert t0 is not None
    raise SqlError(
        f'SQL Error: Encountered "{t0.text}" at line {t0.line}, column {t0.col - len(t0.text) + 1}.'
    )


def _parse_query(sql: str) -> exp.Expr:
    try:
        asts = sqlglot.parse(sql, dialect=HeavySQL)
    except (ParseError, TokenError) as e:
        raise SqlError(f"SQL Error: {_first_line(str(e))}") from e
    found = [a for a in asts if a is not None]
    if len(found) != 1:
        raise SqlError("multiple SQL statements not allowed")
    return found[0]


def _first_line(msg: str) -> str:
    return msg.strip().splitlines()[0] if msg.strip() else msg


def _table_name(t: exp.Expr) -> tuple[str, str]:
    """(name, alias) of an ``exp.Table`` target."""
    if not isinstance(t, exp.Table):
        raise SqlError(f"SQL Error: Invalid target table: {t.sql()}")
    if t.args.get("db") or t.args.get("catalog"):
        raise SqlError(f"SQL Error: Object '{t.sql()}' not found")
    return t.name, t.alias_or_name


def _parse_insert(sql: str) -> Insert:
    ast = _parse_query(sql)
    if not isinstance(ast, exp.Insert):
        raise SqlError("SQL Error: Invalid INSERT statement")
    target = ast.this
    columns: list[str] | None = None
    if isinstance(target, exp.Schema):
        columns = [c.name for c in target.expressions]
        target = target.this
    name, _alias = _table_name(target)
    src = ast.expression
    if src is None:
        raise SqlError("SQL Error: INSERT without VALUES or SELECT")
    return Insert(sql, name, columns, src)


def _parse_update(sql: str) -> Update:
    ast = _parse_query(sql)
    if not isinstance(ast, exp.Update):
        raise SqlError("SQL Error: Invalid UPDATE statement")
    name, alias = _table_name(ast.this)
    assignments: list[tuple[str, exp.Expr]] = []
    for a in ast.expressions:
        if not isinstance(a, exp.EQ) or not isinstance(a.this, exp.Column):
            raise SqlError(f"SQL Error: Invalid SET clause: {a.sql()}")
        assignments.append((a.this.name, a.expression))
    where = ast.args.get("where")
    from_ = ast.args.get("from_") or ast.args.get("from")
    return Update(sql, name, alias, assignments, where.this if where else None, from_)


def _parse_delete(sql: str) -> Delete:
    ast = _parse_query(sql)
    if not isinstance(ast, exp.Delete):
        raise SqlError("SQL Error: Invalid DELETE statement")
    name, alias = _table_name(ast.this)
    where = ast.args.get("where")
    return Delete(sql, name, alias, where.this if where else None)


_TYPE_WORDS_2 = {("DOUBLE", "PRECISION")}


def _parse_column_spec(tk: _Tokens) -> ColumnSpec:
    name = tk.ident()
    type_name = tk.next().text
    if (type_name.upper(), tk.word()) in _TYPE_WORDS_2:
        type_name += " " + tk.next().text
    args: list[int] = []
    if tk.accept_tok(TokenType.L_PAREN):
        args.append(tk.number())
        while tk.accept_tok(TokenType.COMMA):
            args.append(tk.number())
        tk.expect_tok(TokenType.R_PAREN, ")")
    is_array = False
    if tk.accept_tok(TokenType.L_BRACKET):
        if not tk.accept_tok(TokenType.R_BRACKET):
            tk.number()
            tk.expect_tok(TokenType.R_BRACKET, "]")
        is_array = True
    not_null = False
    encoding: str | None = None
    enc_param: int | None = None
    default: str | None = None
    while True:
        if tk.accept("NOT", "NULL"):
            not_null = True
        elif tk.accept("NULL"):
            pass
        elif tk.accept("ENCODING"):
            encoding = tk.next().text.upper()
            if tk.accept_tok(TokenType.L_PAREN):
                enc_param = tk.number()
                tk.expect_tok(TokenType.R_PAREN, ")")
        elif tk.accept("DEFAULT"):
            t = tk.next()
            if t.token_type == TokenType.STRING:
                default = "'" + t.text.replace("'", "''") + "'"
            elif t.token_type == TokenType.DASH:
                default = "-" + tk.next().text
            else:
                default = t.text
        else:
            break
    try:
        htype = ht.from_sql(
            type_name, args, encoding, enc_param, not_null=not_null, is_array=is_array
        )
    except ht.TypeError_ as e:
        raise SqlError(str(e)) from e
    return ColumnSpec(name, htype, default)


def _strip_with_options(tk: _Tokens) -> tuple[int, dict[str, str]]:
    """Find a trailing ``WITH ( k = v, ... )``; return (end token index, options)."""
    toks = tk.toks
    if not toks or toks[-1].token_type != TokenType.R_PAREN:
        return len(toks), {}
    depth = 0
    for j in range(len(toks) - 1, -1, -1):
        if toks[j].token_type == TokenType.R_PAREN:
            depth += 1
        elif toks[j].token_type == TokenType.L_PAREN:
            depth -= 1
            if depth == 0:
                if j > 0 and toks[j - 1].text.upper() == "WITH":
                    sub = _Tokens.__new__(_Tokens)
                    sub.toks = toks[j:]
                    sub.i = 0
                    sub.sql = tk.sql
                    try:
                        opts = sub.options()
                    except SqlError:
                        return len(toks), {}
                    return j - 1, opts
                return len(toks), {}
    return len(toks), {}


def _parse_create(tk: _Tokens, sql: str) -> Statement:
    tk.expect("CREATE")
    temporary = tk.accept("TEMPORARY")
    if tk.accept("TABLE"):
        if_not_exists = tk.accept("IF", "NOT", "EXISTS")
        name = tk.ident()
        if tk.word() == "AS" or (
            tk.peek() is not None
            and tk.peek().token_type == TokenType.L_PAREN  # type: ignore[union-attr]
            and tk.word(1) in ("SELECT", "WITH")
        ):
            tk.accept("AS")
            end, opts = _strip_with_options(tk)
            start = tk.toks[tk.i].start
            stop = tk.toks[end - 1].end + 1 if end > tk.i else start
            query_sql = tk.sql[start:stop]
            return CreateTableAs(sql, name, _parse_query(query_sql), opts, if_not_exists)
        tk.expect_tok(TokenType.L_PAREN, "(")
        cols: list[ColumnSpec] = []
        while True:
            if tk.word() in ("SHARD", "SHARED", "PRIMARY", "UNIQUE", "CONSTRAINT"):
                # table constraints: accepted and ignored (single node, no dictionaries shared)
                depth = 0
                while not tk.at_end():
                    t = tk.peek()
                    assert t is not None
                    if t.token_type == TokenType.L_PAREN:
                        depth += 1
                    elif t.token_type == TokenType.R_PAREN:
                        if depth == 0:
                            break
                        depth -= 1
                    elif t.token_type == TokenType.COMMA and depth == 0:
                        break
                    tk.next()
            else:
                cols.append(_parse_column_spec(tk))
            if tk.accept_tok(TokenType.COMMA):
                continue
            tk.expect_tok(TokenType.R_PAREN, ")")
            break
        opts = tk.options() if tk.accept("WITH") else {}
        tk.done()
        return CreateTable(sql, name, cols, opts, if_not_exists, temporary)
    if tk.accept("USER"):
        name = tk.ident()
        opts = tk.options() if not tk.at_end() else {}
        tk.done()
        return UserStmt(sql, "create", name, opts)
    if tk.accept("ROLE"):
        name = tk.ident()
        tk.done()
        return RoleStmt(sql, "create", name)
    if tk.accept("DATABASE"):
        if_not_exists = tk.accept("IF", "NOT", "EXISTS")
        name = tk.ident()
        opts = tk.options() if not tk.at_end() else {}
        tk.done()
        return DatabaseStmt(sql, "create", name, opts, if_not_exists=if_not_exists)
    if tk.word() == "VIEW" or tk.word(0) == "OR":
        raise SqlError("CREATE VIEW is not supported by the HeavyDB sandbox server")
    t = tk.peek()
    raise SqlError(f'SQL Error: Encountered "{t.text if t else "<EOF>"}" after CREATE')


def _parse_drop(tk: _Tokens, sql: str) -> Statement:
    tk.expect("DROP")
    if tk.accept("TABLE"):
        if_exists = tk.accept("IF", "EXISTS")
        name = tk.ident()
        tk.done()
        return DropTable(sql, name, if_exists)
    if tk.accept("USER"):
        if_exists = tk.accept("IF", "EXISTS")
        name = tk.ident()
        tk.done()
        return UserStmt(sql, "drop", name, if_exists=if_exists)
    if tk.accept("ROLE"):
        if_exists = tk.accept("IF", "EXISTS")
        name = tk.ident()
        tk.done()
        return RoleStmt(sql, "drop", name, if_exists)
    if tk.accept("DATABASE"):
        if_exists = tk.accept("IF", "EXISTS")
        name = tk.ident()
        tk.done()
        return DatabaseStmt(sql, "drop", name, if_exists=if_exists)
    t = tk.peek()
    raise SqlError(f'SQL Error: Encountered "{t.text if t else "<EOF>"}" after DROP')


def _parse_alter(tk: _Tokens, sql: str) -> Statement:
    tk.expect("ALTER")
    if tk.accept("TABLE"):
        name = tk.ident()
        if tk.accept("RENAME", "TO"):
            new = tk.ident()
            tk.done()
            return AlterTable(sql, name, "rename_table", new_name=new)
        if tk.accept("RENAME"):
            tk.accept("COLUMN")
            old = tk.ident()
            tk.expect("TO")
            new = tk.ident()
            tk.done()
            return AlterTable(sql, name, "rename_column", new_name=new, old_column=old)
        if tk.accept("ADD"):
            tk.accept("COLUMN")
            specs: list[ColumnSpec] = []
            if tk.accept_tok(TokenType.L_PAREN):
                specs.append(_parse_column_spec(tk))
                while tk.accept_tok(TokenType.COMMA):
                    specs.append(_parse_column_spec(tk))
                tk.expect_tok(TokenType.R_PAREN, ")")
            else:
                specs.append(_parse_column_spec(tk))
                while tk.accept_tok(TokenType.COMMA):
                    tk.accept("ADD")
                    tk.accept("COLUMN")
                    specs.append(_parse_column_spec(tk))
            tk.done()
            return AlterTable(sql, name, "add_columns", add=specs)
        if tk.accept("DROP"):
            tk.accept("COLUMN")
            drops = [tk.ident()]
            while tk.accept_tok(TokenType.COMMA):
                tk.accept("DROP")
                tk.accept("COLUMN")
                drops.append(tk.ident())
            tk.done()
            return AlterTable(sql, name, "drop_columns", drop=drops)
        if tk.accept("SET"):
            key = tk.ident().lower()
            tk.expect_tok(TokenType.EQ, "=")
            value = tk.literal()
            tk.done()
            return AlterTable(sql, name, "set_option", option=(key, value))
        t = tk.peek()
        raise SqlError(f'SQL Error: Encountered "{t.text if t else "<EOF>"}" in ALTER TABLE')
    if tk.accept("USER"):
        name = tk.ident()
        if tk.accept("RENAME", "TO"):
            new = tk.ident()
            tk.done()
            return UserStmt(sql, "rename", name, new_name=new)
        opts = tk.options()
        tk.done()
        return UserStmt(sql, "alter", name, opts)
    if tk.accept("DATABASE"):
        name = tk.ident()
        if tk.accept("RENAME", "TO"):
            new = tk.ident()
            tk.done()
            return DatabaseStmt(sql, "rename", name, new_name=new)
        if tk.accept("OWNER", "TO"):
            owner = tk.ident()
            tk.done()
            return DatabaseStmt(sql, "owner", name, options={"owner": owner})
        raise SqlError("SQL Error: Invalid ALTER DATABASE statement")
    if tk.accept("SYSTEM", "CLEAR"):
        mem = tk.next().text.upper()
        tk.expect("MEMORY")
        tk.done()
        if mem not in ("CPU", "GPU", "RENDER"):
            raise SqlError(f'SQL Error: Encountered "{mem}". Was expecting CPU, GPU or RENDER')
        return AlterSystemClear(sql, mem)
    if tk.accept("SESSION", "SET"):
        key = tk.ident().upper()
        tk.expect_tok(TokenType.EQ, "=")
        value = tk.literal()
        tk.done()
        return AlterSession(sql, key, value)
    t = tk.peek()
    raise SqlError(f'SQL Error: Encountered "{t.text if t else "<EOF>"}" after ALTER')


_PRIV_WORDS = {
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "DROP",
    "ALTER",
    "ALL",
    "ACCESS",
    "CREATE",
    "VIEW",
    "EDIT",
    "USAGE",
}


def _parse_grant(tk: _Tokens, sql: str) -> GrantStmt:
    revoke = tk.next().text.upper() == "REVOKE"
    # role grant: GRANT r1, r2 TO u ; privilege grant: GRANT p ON <type> obj TO u
    j = tk.i
    is_priv = False
    while j < len(tk.toks):
        w = tk.toks[j].text.upper()
        if w == "ON" and tk.toks[j].token_type not in (TokenType.STRING, TokenType.IDENTIFIER):
            is_priv = True
            break
        if w in ("TO", "FROM") and tk.toks[j].token_type != TokenType.IDENTIFIER:
            break
        j += 1
    if not is_priv:
        roles = tk.name_list()
        tk.expect("FROM" if revoke else "TO")
        grantees = tk.name_list()
        tk.done()
        return GrantStmt(sql, revoke, [], "ROLE", "", grantees, roles)
    privs: list[str] = []
    while True:
        words: list[str] = []
        while tk.word() not in ("ON", "") and tk.peek() is not None:
            t = tk.peek()
            assert t is not None
            if t.token_type == TokenType.COMMA:
                break
            words.append(tk.next().text.upper())
        if not words:
            raise SqlError("SQL Error: Expected a privilege")
        priv = " ".join(words)
        if priv == "ALL PRIVILEGES":
            priv = "ALL"
        if words[0] not in _PRIV_WORDS:
            raise SqlError(f"Invalid privilege {priv}")
        privs.append(priv)
        if tk.accept_tok(TokenType.COMMA):
            continue
        break
    tk.expect("ON")
    obj_type = tk.next().text.upper()
    if obj_type not in ("TABLE", "DATABASE", "VIEW", "DASHBOARD", "SERVER"):
        raise SqlError(f"SQL Error: Invalid object type {obj_type}")
    obj = tk.ident()
    tk.expect("FROM" if revoke else "TO")
    grantees = tk.name_list()
    tk.done()
    return GrantStmt(sql, revoke, privs, obj_type, obj, grantees)


def _parse_show(tk: _Tokens, sql: str) -> Show:
    tk.expect("SHOW")
    if tk.accept("TABLES"):
        tk.done()
        return Show(sql, "tables")
    if tk.accept("DATABASES"):
        tk.done()
        return Show(sql, "databases")
    if tk.accept("CREATE", "TABLE"):
        name = tk.ident()
        tk.done()
        return Show(sql, "create_table", [name])
    if tk.accept("TABLE", "DETAILS"):
        names = tk.name_list() if not tk.at_end() else []
        tk.done()
        return Show(sql, "table_details", names)
    if tk.accept("USER", "SESSIONS"):
        tk.done()
        return Show(sql, "user_sessions")
    if tk.accept("USER", "DETAILS"):
        names = tk.name_list() if not tk.at_end() else []
        tk.done()
        return Show(sql, "user_details", names)
    if tk.accept("QUERIES"):
        tk.done()
        return Show(sql, "queries")
    if tk.accept("ROLES"):
        tk.done()
        return Show(sql, "roles")
    if tk.accept("USERS"):
        tk.done()
        return Show(sql, "users")
    t = tk.peek()
    raise SqlError(
        f'SQL Error: Encountered "{t.text if t else "<EOF>"}" after SHOW. '
        "(SHOW TABLES, DATABASES, CREATE TABLE, TABLE DETAILS, USER SESSIONS, QUERIES, "
        "USER DETAILS and ROLES are supported by the HeavyDB sandbox server)"
    )


def _parse_copy(tk: _Tokens, sql: str) -> Statement:
    tk.expect("COPY")
    if tk.accept_tok(TokenType.L_PAREN):
        # COPY ( <select> ) TO 'path' [WITH (...)]
        depth = 1
        start = tk.toks[tk.i].start
        stop = start
        while depth and not tk.at_end():
            t = tk.next()
            if t.token_type == TokenType.L_PAREN:
                depth += 1
            elif t.token_type == TokenType.R_PAREN:
                depth -= 1
                if depth == 0:
                    stop = t.start
        if depth:
            raise SqlError("SQL Error: Unbalanced parentheses in COPY")
        query = _parse_query(tk.sql[start:stop])
        tk.expect("TO")
        path = tk.string()
        opts = tk.options() if tk.accept("WITH") else {}
        tk.done()
        return CopyTo(sql, query, path, opts)
    table = tk.ident()
    tk.expect("FROM")
    path = tk.string()
    opts = tk.options() if tk.accept("WITH") else {}
    tk.done()
    return CopyFrom(sql, table, path, opts)


# =============================================================================================
# translation of queries to DuckDB
# =============================================================================================
#: resolves a HeavyDB table name to (DuckDB schema, catalog table) or raises SqlError
Resolver = Callable[[str], tuple[str, Any]]


def _cte_names(ast: exp.Expr) -> set[str]:
    return {cte.alias_or_name.lower() for cte in ast.find_all(exp.CTE)}


def bind_tables(ast: exp.Expr, resolve: Resolver, *, skip: exp.Table | None = None) -> list[Any]:
    """Point every table reference at its catalog view; return the catalog tables used."""
    ctes = _cte_names(ast)
    used: list[Any] = []
    for t in list(ast.find_all(exp.Table)):
        if t is skip:
            continue
        if not isinstance(t.this, exp.Identifier):
            name = t.this.sql() if t.this is not None else t.sql()
            raise SqlError(f"SQL Error: Object '{name}' not found")
        if t.args.get("catalog") or t.args.get("db"):
            raise SqlError(f"SQL Error: Object '{t.sql()}' not found")
        if t.name.lower() in ctes:
            continue
        schema, table = resolve(t.name)
        if table not in used:
            used.append(table)
        alias = t.alias_or_name
        t.set("db", exp.to_identifier(schema, quoted=True))
        t.set("this", exp.to_identifier(table.name, quoted=True))
        if not t.args.get("alias"):
            t.set("alias", exp.TableAlias(this=exp.to_identifier(alias, quoted=True)))
    return used


_TS_TYPES = {0: "TIMESTAMP_S", 3: "TIMESTAMP_MS", 6: "TIMESTAMP", 9: "TIMESTAMP_NS"}


def _fix_types(ast: exp.Expr) -> None:
    for dt in list(ast.find_all(exp.DataType)):
        if dt.this == exp.DType.TIMESTAMP and dt.expressions:
            try:
                p = int(dt.expressions[0].name)
            except ValueError:
                continue
            if p not in _TS_TYPES:
                raise SqlError("Only TIMESTAMP(n) where n = (0,3,6,9) are supported now.")
            dt.replace(exp.DataType.build(_TS_TYPES[p], dialect="duckdb"))
        elif dt.this == exp.DType.TEXT and dt.expressions:
            dt.set("expressions", [])


def name_expressions(select: exp.Expr) -> None:
    """Calcite names unnamed projections ``EXPR$<position>``."""
    target = select
    while isinstance(target, exp.SetOperation):
        target = target.this
    if isinstance(target, exp.Subquery):
        target = target.this
    if not isinstance(target, exp.Select):
        return
    new = []
    for i, e in enumerate(target.expressions):
        if isinstance(e, exp.Alias | exp.Column | exp.Star) or (
            isinstance(e, exp.Dot) and isinstance(e.expression, exp.Star)
        ):
            new.append(e)
        else:
            new.append(exp.Alias(this=e, alias=exp.to_identifier(f"EXPR${i}", quoted=True)))
    target.set("expressions", new)


def to_duckdb(ast: exp.Expr) -> str:
    _fix_types(ast)
    try:
        return ast.sql(dialect="duckdb")
    except Exception as e:  # sqlglot generation problems
        raise SqlError(f"SQL Error: {e}") from e


def translate_query(ast: exp.Expr, resolve: Resolver) -> tuple[str, list[Any]]:
    """DuckDB SQL for a SELECT plus the catalog tables it reads."""
    ast = ast.copy()
    used = bind_tables(ast, resolve)
    name_expressions(ast)
    return to_duckdb(ast), used


def translate_expr(e: exp.Expr, resolve: Resolver) -> tuple[str, list[Any]]:
    e = e.copy()
    used = bind_tables(e, resolve)
    return to_duckdb(e), used


def literal_option(value: str) -> str:
    return value.strip().strip("'")


def is_true(value: str) -> bool:
    return literal_option(value).lower() in ("true", "t", "1", "yes", "on")
