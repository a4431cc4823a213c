"""Pure connector logic: URL redaction, quoting, parameter binding, driver-error mapping."""

from __future__ import annotations

from typing import Any

import pytest

from tbs_emergency.config import HeavyDBConfig, MySQLConfig, Secret, StorageConfig
from tbs_emergency.connectors import _common
from tbs_emergency.connectors._http import HttpEndpoint, HttpResponse
from tbs_emergency.connectors.base import Probe
from tbs_emergency.errors import (
    ConnectorError,
    IntegrityError,
    NotFound,
    Refused,
    TimedOut,
    Unreachable,
)

pytestmark = pytest.mark.unit


# -- redaction ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, expected",
    [
        ("redis://:pw@127.0.0.1:6379/0", "redis://***@127.0.0.1:6379/0"),
        ("mysql://app:s3cret@db:3306/tbs", "mysql://***@db:3306/tbs"),
        ("http://127.0.0.1:9090", "http://127.0.0.1:9090"),
        ("https://h/x?token=abc&q=1", "https://h/x?token=***&q=1"),
        ("https://h/x?X-Amz-Signature=abc", "https://h/x?X-Amz-Signature=***"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert _common.redact_url(url) == expected


def test_redact_text_masks_userinfo_and_given_secrets() -> None:
    text = "cannot reach redis://u:pw-9x@h:1/0 with password hunter2-long"
    out = _common.redact_text(text, ["hunter2-long", None, ""])
    assert "pw-9x" not in out and "hunter2-long" not in out
    assert "redis://***@h:1/0" in out


def test_short_secrets_are_not_used_to_mangle_text() -> None:
    assert _common.redact_text("a b c", ["a"]) == "a b c"


# -- probes -------------------------------------------------------------------------------------


def test_probe_turns_connector_errors_into_answers() -> None:
    def boom() -> str:
        raise Unreachable("mysql[blue]", "connect", "h:1: refused")

    p = _common.probe("mysql[blue]", boom)
    assert p == Probe("mysql[blue]", False, None, "unreachable: h:1: refused")
    ok = _common.probe("s3", lambda: "fine")
    assert ok.reachable and ok.detail == "fine" and ok.latency_ms is not None


# -- quoting and binding ------------------------------------------------------------------------


def test_mysql_quoting() -> None:
    from tbs_emergency.connectors.mysql import quote_ident

    assert quote_ident("trades") == "`trades`"
    assert quote_ident("tbs.trades") == "`tbs`.`trades`"
    assert quote_ident("we`ird") == "`we``ird`"
    for bad in ("", "a..b", "a.b.c", "a\x00b"):
        with pytest.raises(ValueError):
            quote_ident(bad)


def test_heavydb_quoting_and_binding() -> None:
    from tbs_emergency.connectors.heavydb import bind_positional, quote_ident

    assert quote_ident("trades") == "trades"
    assert quote_ident("my table") == '"my table"'
    assert quote_ident('a"b') == '"a""b"'
    sql, params = bind_positional("SELECT '?' FROM t WHERE a = ? AND b = ?", (1, "x"))
    assert sql == "SELECT '?' FROM t WHERE a = :p0 AND b = :p1"
    assert params == {"p0": 1, "p1": "x"}
    with pytest.raises(ValueError):
        bind_positional("SELECT ?", ())


# -- MySQL error mapping ------------------------------------------------------------------------


def _mysql(password: str = "pw-Secret-1") -> Any:
    from tbs_emergency.connectors.mysql import MySQLDatabase

    return MySQLDatabase(
        MySQLConfig(host="db", port=3306, password=Secret(value=password)), "mysql[blue]"
    )


@pytest.mark.parametrize(
    "code, text, kind",
    [
        (
            2003,
            "Can't connect to MySQL server on 'db' ([Errno 111] Connection refused)",
            Unreachable,
        ),
        (2003, "Can't connect to MySQL server on 'db' (timed out)", TimedOut),
        (2013, "Lost connection to MySQL server during query (timed out)", TimedOut),
        (1045, "Access denied for user 'tbs_app'@'h' (using password: YES)", Refused),
        (1290, "The MariaDB server is running with the --read-only option", Refused),
        (1146, "Table 'tbs.nope' doesn't exist", NotFound),
        (1049, "Unknown database 'tbs'", NotFound),
        (1213, "Deadlock found", ConnectorError),
    ],
)
def test_mysql_error_mapping(code: int, text: str, kind: type[ConnectorError]) -> None:
    import pymysql

    err = _mysql()._error("count rows", pymysql.err.OperationalError(code, text))
    assert type(err) is kind
    assert err.system == "mysql[blue]"
    assert str(err).startswith("mysql[blue]: count rows")


def test_mysql_error_never_shows_the_password() -> None:
    import pymysql

    exc = pymysql.err.OperationalError(1045, "bad login with pw-Secret-1 for mysql://u:pw@db/x")
    text = str(_mysql()._error("connect", exc))
    assert "pw-Secret-1" not in text and "u:pw@" not in text


# -- HeavyDB error mapping ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc_text, kind",
    [
        ("Could not connect to database", Unreachable),
        ("Connection failed with port 6274 ... Error encountered: read timeout", TimedOut),
        ("SQL Error: Object 'nope' not found", NotFound),
        ("Table/View nope for catalog heavyai does not exist", NotFound),
        ("Authentication failure", Refused),
        ("Cannot execute: server is in read-only mode", Refused),
        ("Idle Session Timeout. User should re-authenticate.", ConnectorError),
    ],
)
def test_heavydb_error_mapping(exc_text: str, kind: type[ConnectorError]) -> None:
    from tbs_emergency.connectors.heavydb import HeavyDBDatabase

    db = HeavyDBDatabase(HeavyDBConfig(password=Secret(value="pw-Secret-2")), "heavydb[green]")
    err = db._error("query", RuntimeError(exc_text))
    assert type(err) is kind
    assert err.system == "heavydb[green]"


def test_heavydb_dead_session_pattern() -> None:
    from tbs_emergency.connectors.heavydb import _DEAD_SESSION

    assert _DEAD_SESSION.search("Session not valid or expired.")
    assert _DEAD_SESSION.search("Idle Session Timeout. User should re-authenticate.")
    assert not _DEAD_SESSION.search("SQL Error: Object 'session' not found")


# -- S3 error mapping ---------------------------------------------------------------------------


def _client_error(code: str, status: int, message: str = "msg") -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "GetObject",
    )


@pytest.mark.parametrize(
    "exc, kind",
    [
        (lambda: _client_error("NoSuchKey", 404), NotFound),
        (lambda: _client_error("404", 404), NotFound),
        (lambda: _client_error("AccessDenied", 403), Refused),
        (lambda: _client_error("InternalError", 500), ConnectorError),
        (
            lambda: __import__("botocore.exceptions").exceptions.EndpointConnectionError(
                endpoint_url="http://u:pw-Secret-3@h:1"
            ),
            Unreachable,
        ),
        (
            lambda: __import__("botocore.exceptions").exceptions.ReadTimeoutError(
                endpoint_url="http://h:1"
            ),
            TimedOut,
        ),
    ],
)
def test_s3_error_mapping(exc: Any, kind: type[ConnectorError]) -> None:
    from tbs_emergency.connectors.objectstore import S3ObjectStore

    store = S3ObjectStore(
        StorageConfig(bucket="b", endpoint_url="http://u:pw-Secret-3@h:1", secret_access_key="sk")
    )
    err = store._error("get s3://b/k", exc())
    assert type(err) is kind
    assert err.system == "s3"
    assert "pw-Secret-3" not in str(err)


def test_s3_keys_are_under_the_prefix() -> None:
    from tbs_emergency.connectors.objectstore import S3ObjectStore

    store = S3ObjectStore(StorageConfig(bucket="b", prefix="/tbs/dr/"))
    assert store.full_key("incidents/x.json") == "tbs/dr/incidents/x.json"
    assert store.full_key("/a") == "tbs/dr/a"
    assert store._relative("tbs/dr/a/b") == "a/b"
    with pytest.raises(ValueError):
        store.full_key("")


def test_s3_verify() -> None:
    from tbs_emergency.connectors.objectstore import S3ObjectStore

    store = S3ObjectStore(StorageConfig(bucket="b"))
    store._verify("s3://b/k", "aa", "aa")
    with pytest.raises(IntegrityError, match="s3://b/k"):
        store._verify("s3://b/k", "aa", "bb")
    with pytest.raises(IntegrityError, match="no recorded sha256"):
        store._verify("s3://b/k", None, "bb")


# -- HTTP status and Prometheus error mapping ---------------------------------------------------


@pytest.mark.parametrize(
    "status, kind",
    [
        (401, Refused),
        (403, Refused),
        (400, Refused),
        (404, NotFound),
        (503, Unreachable),
        (500, ConnectorError),
    ],
)
def test_http_status_mapping(status: int, kind: type[ConnectorError]) -> None:
    ep = HttpEndpoint("traffic", "http://admin:tok-Secret-4@lb:8080", 1, token="tok-Secret-4")
    err = ep.status_error("redirect", HttpResponse(status, {}, b'{"error": "tok-Secret-4"}'))
    assert type(err) is kind
    assert "tok-Secret-4" not in str(err)
    assert f"HTTP {status}" in str(err)


def _prom_body(status: int, body: Any) -> HttpResponse:
    import json

    return HttpResponse(status, {}, json.dumps(body).encode())


@pytest.mark.parametrize(
    "status, error_type, kind",
    [
        (400, "bad_data", Refused),
        (503, "timeout", TimedOut),
        (503, "unavailable", Unreachable),
        (422, "execution", ConnectorError),
    ],
)
def test_prometheus_errors(status: int, error_type: str, kind: type[ConnectorError]) -> None:
    from tbs_emergency.config import MetricsConfig
    from tbs_emergency.connectors.metrics import PrometheusMetrics

    m = PrometheusMetrics(MetricsConfig(prometheus_url="http://p:9090"))
    resp = _prom_body(status, {"status": "error", "errorType": error_type, "error": "boom"})
    with pytest.raises(kind) as err:
        m._data("query 'x'", resp)
    assert type(err.value) is kind
    assert str(err.value).endswith(f"{error_type}: boom")
    ok = _prom_body(200, {"status": "success", "data": {"resultType": "vector", "result": []}})
    assert m._data("q", ok) == {"resultType": "vector", "result": []}
    with pytest.raises(ConnectorError, match="not Prometheus JSON"):
        m._data("q", HttpResponse(200, {}, b"<html>"))
