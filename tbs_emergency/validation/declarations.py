"""Functional checks as configuration (runbook: "Functionality Verification").

A functional check is a named list of steps run in order against one environment; the check
passes when every step meets its expectations. Two kinds of step:

- `http`: a request to the environment's application (method, path, headers, JSON or raw body)
  and what the answer must be: status, JSON fields (dotted paths, list indices allowed: `a.0.b`),
  fields present, numeric minimums (a list counts as its length), text contained, a time limit.
  `save` keeps a JSON field of the answer for later steps (`{session}`).
- `sql`: one statement on the environment's MySQL or HeavyDB, as the application account
  (`app`) or the configured administrative one (`admin`), and what must come back: row counts,
  the first value, text in the rows, or `refused = true` (a permission check: the statement must
  be refused). Validation must never change application data: statements are limited to reads,
  and writes are allowed only to tables whose names start with `tbs_validation_`
  (`sql_is_safe`). A `cleanup` statement (same rule) runs when a statement expected to be
  refused was accepted.

`for_each` repeats a check: `user` once per sample user ({username}, {password}, {role}),
`first_user` for the first one only, `strategy` per strategy ({strategy}), `upload` per upload
sample ({format}, {content_type}, {upload_body}, {upload_rows}). `{name}` placeholders are filled
in every string of a step; a string that is exactly one placeholder takes the value's own type.
Passwords are filled in when the request is sent and never appear in a result.

The defaults (`default_functional_checks`) are the runbook's four scripts against the TBS API:
authentication (password login, session by header and by bearer token, wrong password and
missing session refused), trading workflows (recent trades, every strategy's results), database
connectivity with permissions (both stores readable, the application account's grants), and
file upload per format.

This module imports no project module: `tbs_emergency.config` imports it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Category = Literal["authentication", "trading", "database", "upload", "other"]
ForEach = Literal["user", "first_user", "strategy", "upload"]
SECRET_VARIABLES = frozenset({"password"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _status_list(v: Any) -> Any:
    return [v] if isinstance(v, int) else v


class HttpExpect(_Model):
    status: list[int] = Field(default_factory=lambda: [200])
    json_equals: dict[str, Any] = Field(default_factory=dict)
    present: list[str] = Field(default_factory=list)
    minimum: dict[str, float] = Field(default_factory=dict)
    contains: str | None = None
    max_ms: float | None = Field(None, gt=0)

    _status = field_validator("status", mode="before")(_status_list)


class HttpStep(_Model):
    kind: Literal["http"] = "http"
    method: Literal["GET", "POST", "PUT", "DELETE", "HEAD"] = "GET"
    path: str
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = None
    body: str | None = None
    content_type: str | None = None
    expect: HttpExpect = HttpExpect()
    save: dict[str, str] = Field(default_factory=dict)

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str) -> str:
        if "://" in v:
            raise ValueError("an http step's path is relative to the environment's app_url")
        return v if v.startswith("/") or v.startswith("{") else "/" + v

    def describe(self) -> str:
        return f"{self.method} {self.path}"


class SqlExpect(_Model):
    rows: int | None = Field(None, ge=0)
    rows_min: int | None = Field(None, ge=0)
    value: Any = None
    value_min: float | None = None
    contains: list[str] = Field(default_factory=list)
    matches: list[str] = Field(default_factory=list)  # regular expressions, each must match
    refused: bool = False
    # A refusal counts only for a reason like these (a syntax error is not a permission check).
    refused_because: str = r"(?i)denied|privilege|permission|read.only|not authorized|access"

    @field_validator("matches", "refused_because")
    @classmethod
    def _patterns(cls, v: list[str] | str) -> list[str] | str:
        for pattern in [v] if isinstance(v, str) else v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return v


class SqlStep(_Model):
    kind: Literal["sql"] = "sql"
    engine: Literal["mysql", "heavydb"]
    query: str
    account: Literal["app", "admin"] = "app"
    expect: SqlExpect = SqlExpect()
    cleanup: str | None = None

    @model_validator(mode="after")
    def _safe(self) -> SqlStep:
        for sql in (self.query, self.cleanup):
            if sql is not None and not sql_is_safe(sql):
                raise ValueError(
                    f"validation never changes application data: {sql!r} is not a read and does"
                    f" not only touch tables named {SCRATCH_PREFIX}*"
                )
        return self

    def describe(self) -> str:
        return f"{self.engine} as {self.account}: {self.query}"


Step = Annotated[HttpStep | SqlStep, Field(discriminator="kind")]


class FunctionalCheck(_Model):
    name: str
    category: Category = "other"
    steps: list[Step] = Field(min_length=1)
    for_each: ForEach | None = None
    required: bool = True


class UploadSample(_Model):
    format: str
    content_type: str
    body: str
    rows: int = Field(ge=0)


# --------------------------------------------------------------------------------------------
# Safety of SQL steps
# --------------------------------------------------------------------------------------------

SCRATCH_PREFIX = "tbs_validation_"
_READ = re.compile(r"^\s*(SELECT|SHOW|WITH|DESCRIBE|DESC|EXPLAIN)\b", re.I)
_WRITE_TARGET = re.compile(
    r"^\s*(?:CREATE\s+(?:TEMPORARY\s+)?TABLE(?:\s+IF\s+NOT\s+EXISTS)?"
    r"|DROP\s+TABLE(?:\s+IF\s+EXISTS)?"
    r"|INSERT\s+(?:IGNORE\s+)?INTO"
    r"|DELETE\s+FROM"
    r"|UPDATE"
    r"|TRUNCATE(?:\s+TABLE)?)\s+[`\"]?([A-Za-z0-9_.$]+)",
    re.I,
)
_WRITE_SELECT = re.compile(r"\b(INTO\s+OUTFILE|INTO\s+DUMPFILE|FOR\s+UPDATE)\b", re.I)


def sql_is_safe(sql: str) -> bool:
    """A single statement that reads, or writes only a `tbs_validation_*` scratch table."""
    text = sql.strip().rstrip(";").strip()
    if not text or ";" in text:
        return False
    if _READ.match(text):
        return not _WRITE_SELECT.search(text)
    m = _WRITE_TARGET.match(text)
    if m is None:
        return False
    table = m.group(1).rsplit(".", 1)[-1].strip('`"').lower()
    return table.startswith(SCRATCH_PREFIX)


# --------------------------------------------------------------------------------------------
# Placeholders and JSON paths
# --------------------------------------------------------------------------------------------

_WHOLE = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_ANY = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill(value: Any, variables: Mapping[str, Any]) -> Any:
    """`{name}` placeholders filled from variables, recursively; unknown names stay as they are.

    A string that is exactly one known placeholder becomes the variable's value (any type).
    """
    if isinstance(value, str):
        whole = _WHOLE.match(value)
        if whole and whole.group(1) in variables:
            return variables[whole.group(1)]

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            return str(variables[name]) if name in variables else m.group(0)

        return _ANY.sub(sub, value)
    if isinstance(value, list):
        return [fill(v, variables) for v in value]
    if isinstance(value, dict):
        return {fill(k, variables): fill(v, variables) for k, v in value.items()}
    return value


def placeholders(value: Any) -> set[str]:
    """Every `{name}` used in a value (recursively)."""
    if isinstance(value, str):
        return set(_ANY.findall(value))
    if isinstance(value, list):
        return set().union(*(placeholders(v) for v in value)) if value else set()
    if isinstance(value, dict):
        out: set[str] = set()
        for k, v in value.items():
            out |= placeholders(k) | placeholders(v)
        return out
    return set()


_MISSING = object()


def json_path(doc: Any, path: str) -> Any:
    """The value at a dotted path (`a.b.0.c`); `_MISSING` (see `has_path`) when absent."""
    cur = doc
    for part in path.split(".") if path else []:
        if isinstance(cur, Mapping):
            if part not in cur:
                return _MISSING
            cur = cur[part]
        elif isinstance(cur, list) and re.fullmatch(r"-?\d+", part):
            i = int(part)
            if not -len(cur) <= i < len(cur):
                return _MISSING
            cur = cur[i]
        else:
            return _MISSING
    return cur


def has_path(doc: Any, path: str) -> bool:
    return json_path(doc, path) is not _MISSING


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual or expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return float(expected) == float(actual)
    if isinstance(expected, int | float) and isinstance(actual, str):
        try:
            return float(actual) == float(expected)
        except ValueError:
            return False
    return bool(expected == actual)


def _short(v: Any, limit: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Evaluating answers
# --------------------------------------------------------------------------------------------


def evaluate_http(
    expect: HttpExpect, status: int, body: Any, text: str, elapsed_ms: float
) -> list[str]:
    """What is wrong with an HTTP answer (empty: it meets every expectation).

    `body` is the parsed JSON (None when the answer is not JSON).
    """
    problems: list[str] = []
    if status not in expect.status:
        want = " or ".join(str(s) for s in expect.status)
        problems.append(f"HTTP {status}, expected {want}")
    needs_json = expect.json_equals or expect.present or expect.minimum
    if needs_json and body is None:
        problems.append("the answer is not JSON")
        return problems
    for path, want in expect.json_equals.items():
        got = json_path(body, path)
        if got is _MISSING:
            problems.append(f"{path} missing (expected {_short(want)})")
        elif not _same(want, got):
            problems.append(f"{path} = {_short(got)}, expected {_short(want)}")
    for path in expect.present:
        if not has_path(body, path):
            problems.append(f"{path} missing")
    for path, least in expect.minimum.items():
        got = json_path(body, path)
        if got is _MISSING:
            problems.append(f"{path} missing (expected at least {least:g})")
            continue
        n: Any = len(got) if isinstance(got, list | dict | str) else got
        try:
            ok = float(n) >= least
        except (TypeError, ValueError):
            problems.append(f"{path} = {_short(got)} is not a number")
            continue
        if not ok:
            problems.append(f"{path} = {n}, expected at least {least:g}")
    if expect.contains is not None and expect.contains not in text:
        problems.append(f"the answer does not contain {expect.contains!r}")
    if expect.max_ms is not None and elapsed_ms > expect.max_ms:
        problems.append(f"took {elapsed_ms:.0f} ms, limit {expect.max_ms:g} ms")
    return problems


def evaluate_sql(
    expect: SqlExpect, rows: Sequence[Sequence[Any]] | None, refused: str | None
) -> list[str]:
    """What is wrong with a statement's outcome: its rows, or why the server refused it."""
    if expect.refused:
        if refused is None:
            return ["the statement was accepted; expected a refusal"]
        if not re.search(expect.refused_because, refused):
            return [f"refused, but not for lack of permission: {refused}"]
        return []
    if refused is not None:
        return [f"refused: {refused}"]
    rows = list(rows or [])
    problems: list[str] = []
    if expect.rows is not None and len(rows) != expect.rows:
        problems.append(f"{len(rows)} rows, expected {expect.rows}")
    if expect.rows_min is not None and len(rows) < expect.rows_min:
        problems.append(f"{len(rows)} rows, expected at least {expect.rows_min}")
    first: Any = rows[0][0] if rows and len(rows[0]) else _MISSING
    if expect.value is not None:
        if first is _MISSING:
            problems.append(f"no value, expected {_short(expect.value)}")
        elif not _same(expect.value, first):
            problems.append(f"first value {_short(first)}, expected {_short(expect.value)}")
    if expect.value_min is not None:
        try:
            if first is _MISSING or float(first) < expect.value_min:
                shown = "none" if first is _MISSING else _short(first)
                problems.append(f"first value {shown}, expected at least {expect.value_min:g}")
        except (TypeError, ValueError):
            problems.append(f"first value {_short(first)} is not a number")
    text = "\n".join(" ".join(str(c) for c in r) for r in rows)
    for needle in expect.contains:
        if needle not in text:
            problems.append(f"no row contains {needle!r}")
    for pattern in expect.matches:
        if not re.search(pattern, text):
            problems.append(f"no row matches {pattern!r}")
    return problems


# --------------------------------------------------------------------------------------------
# Expansion
# --------------------------------------------------------------------------------------------


class SampleAccount(_Model):
    """A sample user as the checks see it (the password is resolved by the caller)."""

    username: str
    role: str | None = None


class ConcreteCheck(_Model):
    """One check with its `for_each` resolved: the name filled in and its variables."""

    name: str
    category: Category
    required: bool
    steps: list[Step]
    variables: dict[str, Any] = Field(default_factory=dict)
    skipped: str | None = None


def expand(
    check: FunctionalCheck,
    users: Sequence[SampleAccount],
    strategies: Sequence[int | str],
    uploads: Sequence[UploadSample],
) -> list[ConcreteCheck]:
    """The concrete checks of one declaration. Without anything to repeat over, one skipped
    check says why. `{password}` is not filled in here: the runner resolves it per user."""
    base: dict[str, Any] = {
        "name": check.name,
        "category": check.category,
        "required": check.required,
    }
    per: list[dict[str, Any]]
    if check.for_each is None:
        per = [{}]
    elif check.for_each in ("user", "first_user"):
        chosen = list(users)[:1] if check.for_each == "first_user" else list(users)
        per = [{"username": u.username, "role": u.role or ""} for u in chosen]
        why = "no sample users configured (validation.users)"
    elif check.for_each == "strategy":
        per = [{"strategy": s} for s in strategies]
        why = "no strategies configured or found (validation.strategies)"
    else:
        per = [
            {
                "format": u.format,
                "content_type": u.content_type,
                "upload_body": u.body,
                "upload_rows": u.rows,
            }
            for u in uploads
        ]
        why = "no upload samples configured (validation.uploads)"
    if not per:
        return [ConcreteCheck(**base, steps=list(check.steps), skipped=why)]
    out = []
    for variables in per:
        name = fill(check.name, variables)
        out.append(
            ConcreteCheck(
                **{**base, "name": str(name)}, steps=list(check.steps), variables=variables
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# The runbook's checks against the TBS API
# --------------------------------------------------------------------------------------------

DEFAULT_UPLOADS = (
    UploadSample(
        format="csv",
        content_type="text/csv",
        body="trade_id,symbol,side,quantity\n1,AAPL,BUY,10\n2,MSFT,SELL,5\n",
        rows=2,
    ),
    UploadSample(
        format="json",
        content_type="application/json",
        body='[{"trade_id": 1, "symbol": "AAPL"}, {"trade_id": 2, "symbol": "MSFT"}]',
        rows=2,
    ),
)

DEFAULT_STRATEGIES_QUERY = "SELECT DISTINCT strategy_id FROM strategy_results ORDER BY strategy_id"


def default_functional_checks() -> list[FunctionalCheck]:
    """`test-authentication.sh --all-methods`, `test-trading-workflows.sh --all-strategies`,
    `test-database-connectivity.sh --all-databases --verify-permissions`,
    `test-file-upload.sh --all-formats`, as declarations over the TBS API."""
    http, sql = HttpStep, SqlStep
    return [
        FunctionalCheck(
            name="password login and session ({username})",
            category="authentication",
            for_each="user",
            steps=[
                http(
                    method="POST",
                    path="/login",
                    json_body={"username": "{username}", "password": "{password}"},
                    expect=HttpExpect(present=["session_id"], json_equals={"user": "{username}"}),
                    save={"session": "session_id"},
                ),
                http(
                    path="/api/me",
                    headers={"X-Session-Id": "{session}"},
                    expect=HttpExpect(json_equals={"session.user": "{username}"}),
                ),
                http(
                    path="/api/me",
                    headers={"Authorization": "Bearer {session}"},
                    expect=HttpExpect(json_equals={"session.user": "{username}"}),
                ),
            ],
        ),
        FunctionalCheck(
            name="wrong password refused",
            category="authentication",
            for_each="first_user",
            steps=[
                http(
                    method="POST",
                    path="/login",
                    json_body={"username": "{username}", "password": "not-the-password"},
                    expect=HttpExpect(status=[401]),
                )
            ],
        ),
        FunctionalCheck(
            name="request without a session refused",
            category="authentication",
            steps=[http(path="/api/me", expect=HttpExpect(status=[401]))],
        ),
        FunctionalCheck(
            name="recent trades",
            category="trading",
            steps=[http(path="/api/trades?limit=10", expect=HttpExpect(minimum={"trades": 1}))],
        ),
        FunctionalCheck(
            name="strategy {strategy} results",
            category="trading",
            for_each="strategy",
            steps=[
                http(
                    path="/api/strategies/{strategy}/results?limit=5",
                    expect=HttpExpect(minimum={"results": 1}),
                )
            ],
        ),
        FunctionalCheck(
            name="MySQL archive reachable and readable",
            category="database",
            steps=[
                sql(
                    engine="mysql",
                    query="SELECT COUNT(*) FROM trades",
                    expect=SqlExpect(value_min=1),
                )
            ],
        ),
        FunctionalCheck(
            name="HeavyDB reachable and readable",
            category="database",
            steps=[
                sql(
                    engine="heavydb",
                    query="SELECT COUNT(*) FROM trades",
                    expect=SqlExpect(value_min=1),
                )
            ],
        ),
        FunctionalCheck(
            name="MySQL application account permissions",
            category="database",
            steps=[
                sql(
                    engine="mysql",
                    query="SHOW GRANTS FOR CURRENT_USER()",
                    expect=SqlExpect(
                        rows_min=1, matches=[r"ALL PRIVILEGES|SELECT", r"ALL PRIVILEGES|INSERT"]
                    ),
                )
            ],
        ),
        FunctionalCheck(
            name="file upload ({format})",
            category="upload",
            for_each="upload",
            steps=[
                http(
                    method="POST",
                    path="/upload?filename=tbs-validation.{format}",
                    body="{upload_body}",
                    content_type="{content_type}",
                    expect=HttpExpect(json_equals={"format": "{format}", "rows": "{upload_rows}"}),
                )
            ],
        ),
    ]
