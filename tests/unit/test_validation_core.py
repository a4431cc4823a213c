"""Recovery validation, pure core: percentiles, declarations, expectations, verdict rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from tbs_emergency.config import Settings, ValidationConfig
from tbs_emergency.validation.declarations import (
    FunctionalCheck,
    HttpExpect,
    HttpStep,
    SampleAccount,
    SqlExpect,
    SqlStep,
    UploadSample,
    default_functional_checks,
    evaluate_http,
    evaluate_sql,
    expand,
    fill,
    json_path,
    sql_is_safe,
)
from tbs_emergency.validation.stats import percentile, summarize
from tbs_emergency.validation.verdict import (
    CheckResult,
    Verdict,
    decide,
    latency_check,
    min_rows_per_s,
    throughput_check,
)

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 24, 10, 0, tzinfo=UTC)


# -- percentiles ------------------------------------------------------------------------------


def test_percentile_interpolates_like_numpy_linear() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([4, 1, 3, 2], 0) == 1
    assert percentile([4, 1, 3, 2], 100) == 4
    assert percentile(list(range(1, 101)), 95) == pytest.approx(95.05)
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1], 101)


def test_summary_counts_failures_in_samples_but_not_in_latencies() -> None:
    s = summarize([10, 20, 30, 40], errors=1)
    assert s.samples == 5 and s.errors == 1
    assert s.p50_ms == 25 and s.max_ms == 40 and s.mean_ms == 25
    assert s.error_percent == 20
    assert "1 failed" in s.line()
    empty = summarize([], errors=3)
    assert empty.p95_ms is None and empty.samples == 3


# -- declarations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT COUNT(*) FROM trades",
        "  with x as (select 1) select * from x",
        "SHOW GRANTS FOR CURRENT_USER()",
        "CREATE TABLE tbs_validation_probe (x INT)",
        "DROP TABLE IF EXISTS tbs_validation_probe",
        "INSERT INTO tbs_archive.tbs_validation_probe VALUES (1)",
        "DELETE FROM `tbs_validation_x` WHERE 1=1",
    ],
)
def test_safe_sql(sql: str) -> None:
    assert sql_is_safe(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE trades",
        "DELETE FROM trades",
        "UPDATE users SET active = 0",
        "TRUNCATE trades",
        "SELECT 1; DROP TABLE trades",
        "SELECT * FROM trades INTO OUTFILE '/tmp/x'",
        "GRANT ALL ON *.* TO x",
        "CREATE TABLE trades_copy (x INT)",
        "",
    ],
)
def test_unsafe_sql_is_refused_at_configuration_time(sql: str) -> None:
    assert not sql_is_safe(sql)
    with pytest.raises(ValidationError):
        SqlStep(engine="mysql", query=sql or "x")


def test_fill_keeps_types_of_whole_placeholders_and_leaves_unknown_ones() -> None:
    vars_ = {"n": 2, "user": "trader01"}
    assert fill("{n}", vars_) == 2
    assert fill("rows={n} for {user}", vars_) == "rows=2 for trader01"
    assert fill({"a": ["{user}", "{other}"]}, vars_) == {"a": ["trader01", "{other}"]}
    assert fill(5, vars_) == 5


def test_json_path() -> None:
    doc = {"a": {"b": [{"c": 1}, {"c": 2}]}, "n": None}
    assert json_path(doc, "a.b.1.c") == 2
    assert json_path(doc, "a.b.-1.c") == 2
    assert json_path(doc, "n") is None
    assert json_path(doc, "a.b.5.c") is not None and json_path(doc, "a.x") is not None


def test_http_expectations_name_every_problem() -> None:
    exp = HttpExpect(
        status=200,
        json_equals={"user": "trader01", "rows": 2},
        present=["session_id"],
        minimum={"trades": 2},
        contains="ok",
        max_ms=100,
    )
    good = {"user": "trader01", "rows": 2, "session_id": "x", "trades": [1, 2]}
    assert evaluate_http(exp, 200, good, "ok", 50) == []
    problems = evaluate_http(exp, 500, {"user": "x", "rows": "3", "trades": [1]}, "no", 150)
    text = "; ".join(problems)
    for needle in (
        "HTTP 500",
        "user = 'x'",
        "rows = '3'",
        "session_id missing",
        "trades = 1",
        "does not contain",
        "took 150 ms",
    ):
        assert needle in text
    assert evaluate_http(exp, 200, None, "<html>", 1)[-1] == "the answer is not JSON"
    # numeric strings compare as numbers
    assert evaluate_http(HttpExpect(json_equals={"rows": 2}), 200, {"rows": "2"}, "", 1) == []


def test_sql_expectations_and_permission_checks() -> None:
    assert evaluate_sql(SqlExpect(value_min=1), [(2000,)], None) == []
    assert "expected at least 1" in evaluate_sql(SqlExpect(value_min=1), [(0,)], None)[0]
    assert evaluate_sql(SqlExpect(rows=2), [(1,)], None) == ["1 rows, expected 2"]
    grants = [("GRANT SELECT, INSERT ON `tbs_archive`.* TO `tbs_app`@`%`",)]
    exp = SqlExpect(matches=[r"ALL PRIVILEGES|SELECT", r"ALL PRIVILEGES|DELETE"])
    assert evaluate_sql(exp, grants, None) == ["no row matches 'ALL PRIVILEGES|DELETE'"]
    assert evaluate_sql(SqlExpect(refused=True), None, "(1142) CREATE command denied") == []
    assert evaluate_sql(SqlExpect(refused=True), [], None) == [
        "the statement was accepted; expected a refusal"
    ]
    assert evaluate_sql(SqlExpect(), None, "(1045) denied") == ["refused: (1045) denied"]
    syntax = evaluate_sql(SqlExpect(refused=True), None, "(1064) You have an error in your SQL")
    assert syntax == [
        "refused, but not for lack of permission: (1064) You have an error in your SQL"
    ]


def test_expand_repeats_per_user_strategy_and_upload_or_says_why_not() -> None:
    checks = {c.name: c for c in default_functional_checks()}
    users = [SampleAccount(username="trader01", role="trader"), SampleAccount(username="admin")]
    uploads = [UploadSample(format="csv", content_type="text/csv", body="a\n1\n", rows=1)]
    login = expand(checks["password login and session ({username})"], users, [], uploads)
    assert [c.name for c in login] == [
        "password login and session (trader01)",
        "password login and session (admin)",
    ]
    assert "password" not in login[0].variables
    wrong = expand(checks["wrong password refused"], users, [], uploads)
    assert len(wrong) == 1 and wrong[0].variables["username"] == "trader01"
    strategies = expand(checks["strategy {strategy} results"], users, [3, 7], uploads)
    assert [c.name for c in strategies] == ["strategy 3 results", "strategy 7 results"]
    none = expand(checks["strategy {strategy} results"], users, [], uploads)
    assert len(none) == 1 and "no strategies" in (none[0].skipped or "")
    up = expand(checks["file upload ({format})"], users, [], uploads)
    assert up[0].variables["upload_rows"] == 1
    no_users = expand(checks["wrong password refused"], [], [], uploads)
    assert no_users[0].skipped and "validation.users" in no_users[0].skipped


def test_defaults_cover_the_runbooks_four_scripts() -> None:
    cats = {c.category for c in default_functional_checks()}
    assert cats == {"authentication", "trading", "database", "upload"}


def test_validation_config_defaults_are_the_runbooks_numbers() -> None:
    v = ValidationConfig()
    assert v.performance.duration == 60 and v.performance.baseline_rows_per_s == 37303
    assert v.api.samples == 100 and v.ui.samples == 10
    assert v.concurrency.users == 20 and v.concurrency.duration == 300
    assert v.uploads and v.functional


def test_validation_config_from_toml_shapes() -> None:
    v = ValidationConfig.model_validate(
        {
            "performance": {"duration": "5s", "baseline_rows_per_s": 800},
            "users": [{"username": "trader01", "password": {"env": "X"}, "role": "trader"}],
            "functional": [
                {
                    "name": "archive is read-only for the app",
                    "category": "database",
                    "steps": [
                        {
                            "kind": "sql",
                            "engine": "mysql",
                            "query": "CREATE TABLE tbs_validation_denied (x INT)",
                            "expect": {"refused": True},
                            "cleanup": "DROP TABLE IF EXISTS tbs_validation_denied",
                        }
                    ],
                },
                {
                    "name": "h",
                    "steps": [{"kind": "http", "path": "health", "expect": {"status": 200}}],
                },
            ],
        }
    )
    assert v.performance.duration == 5
    assert repr(v.users[0].password) == "Secret(env:X)"
    step = v.functional[1].steps[0]
    assert isinstance(step, HttpStep) and step.path == "/health" and step.expect.status == [200]
    with pytest.raises(ValidationError):
        ValidationConfig.model_validate(
            {"functional": [{"name": "x", "steps": [{"kind": "http", "path": "http://evil/"}]}]}
        )
    with pytest.raises(ValidationError):
        FunctionalCheck(name="empty", steps=[])


def test_settings_accept_a_validation_section(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert "validation" in Settings.model_fields


# -- verdict rules -----------------------------------------------------------------------------


def test_throughput_against_baseline() -> None:
    assert min_rows_per_s(37303, 25) == pytest.approx(27977.25)
    ok = throughput_check("db", 30000, 37303, 25, source="measured")
    assert ok.status == "pass" and "80.4% of baseline" in ok.detail
    low = throughput_check("db", 20000, 37303, 25, source="measured")
    assert low.status == "fail" and low.measured == 20000
    err = throughput_check("db", None, 37303, 25, source="measured", error="mysql unreachable")
    assert err.status == "error" and err.failed and err.detail == "mysql unreachable"


def test_latency_rule() -> None:
    s = summarize([10.0] * 94 + [900.0] * 6)
    ok = latency_check("api", s, {"p50": 100, "p95": 1000, "p99": None}, 1.0, category="api")
    assert ok.status == "pass"
    slow = latency_check("api", s, {"p50": 100, "p95": 500}, 1.0, category="api")
    assert slow.status == "fail" and "p95" in slow.detail
    errs = latency_check("api", summarize([10.0] * 9, errors=1), {"p95": 500}, 1.0, category="api")
    assert errs.status == "fail" and "10.0% > 1%" in errs.detail
    none = latency_check("api", None, {"p95": 5}, 0, category="api", error="refused")
    assert none.status == "error"


def test_verdict_rules() -> None:
    ok = CheckResult(name="a", category="x", status="pass")
    skip = CheckResult(name="b", category="x", status="skipped")
    bad_optional = CheckResult(name="c", category="x", status="fail", required=False)
    bad = CheckResult(name="d", category="x", status="error", detail="unreachable")
    assert decide([ok, skip, bad_optional])
    assert not decide([ok, bad])
    assert not decide([skip]), "nothing measured is not a pass"
    v = Verdict.of("blue", [ok, skip, bad], T0, T0 + timedelta(seconds=3), time_scale=0.1)
    assert not v.passed and v.failures == [bad]
    assert v.headline() == (
        "recovery validation of blue FAILED: 1 passed, 1 could not be measured,"
        " 1 skipped (not configured), durations x0.1"
    )
    md = v.markdown()
    assert "## What failed" in md and "**d**: unreachable" in md
    assert [r["result"] for r in v.table()] == ["PASS", "SKIPPED", "ERROR"]
