"""Security procedures against real servers: the load balancer stand-in's security API,
lockdown and isolation steps on MariaDB, the HeavyDB sandbox server, Redis and moto (recorded,
reversible, nothing half-done), credential rotation on both engines, S3 Object Lock, the
binary log's account statements."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pymysql
import pytest

from sandbox.proc import LOOPBACK, Service, free_port, start_listening, stop_pid
from tbs_emergency.config import DatabaseAdminAccount
from tbs_emergency.connectors import Connectors
from tbs_emergency.connectors.heavydb import HeavyDBDatabase
from tbs_emergency.connectors.mysql import MySQLDatabase, MySQLRecovery
from tbs_emergency.errors import Refused
from tbs_emergency.security.records import SecurityStore
from tbs_emergency.security.rotation import AccountToRotate, rotate_accounts
from tbs_emergency.security.steps import apply_steps, lift_steps
from tbs_emergency.security.systems import (
    Systems,
    build_step,
    isolation_plan,
    lockdown_plan,
    suspension_plan,
)
from tests.integration.conftest import APP_PASSWORD, LB_TOKEN

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The load balancer stand-in (token protected) in front of a plain HTTP backend."""
    d = tmp_path_factory.mktemp("sec-lb")
    (d / "ok.txt").write_text("ok")
    bport = free_port()
    backend = start_listening(
        "backend",
        [sys.executable, "-m", "http.server", str(bport), "--bind", LOOPBACK],
        bport,
        d / "backend.log",
        cwd=d,
    )
    port = free_port()
    url = f"http://{LOOPBACK}:{bport}"
    argv = [
        sys.executable,
        "-m",
        "sandbox.standins.lb",
        "--port",
        str(port),
        "--blue",
        url,
        "--green",
        url,
        "--state-file",
        str(d / "state.json"),
        "--token-env",
        "SEC_LB_TOKEN",
    ]
    service = start_listening(
        "lb", argv, port, d / "lb.log", cwd=ROOT, env={"SEC_LB_TOKEN": LB_TOKEN}
    )
    yield service
    stop_pid(service.pid)
    stop_pid(backend.pid)


@pytest.fixture
def sec_settings(settings_factory: Any, lb: Service, heavydb_server: Any) -> Any:
    def build(**security: Any) -> Any:
        s = settings_factory(
            heavydb_port=heavydb_server.port,
            traffic={"kind": "http", "url": lb.url, "token": LB_TOKEN, "timeout_s": 5},
            database_emergency={"mysql_admin": {"user": "root"}},
            security=security,
        )
        return s

    return build


@pytest.fixture
def systems(sec_settings: Any) -> Iterator[Any]:
    made: list[Systems] = []

    def build(**security: Any) -> Systems:
        sys_ = Systems(sec_settings(**security))
        made.append(sys_)
        return sys_

    yield build
    for s in made:
        s.close()


def _store(sys_: Systems) -> SecurityStore:
    store = sys_.conn.store()
    store.ensure_bucket()
    return SecurityStore(store)


def _tcp(user: str, password: str, mariadb: Service) -> Any:
    return pymysql.connect(
        host=LOOPBACK,
        port=mariadb.port,
        user=user,
        password=password,
        database="tbs_archive",
        autocommit=True,
        connect_timeout=5,
    )


def _can_insert(con: Any, table: str) -> bool:
    try:
        with con.cursor() as cur:
            cur.execute(f"INSERT INTO {table} VALUES (%s)", (int(time.time() * 1000) % 10**9,))
        return True
    except pymysql.err.OperationalError as exc:
        assert exc.args[0] in (1142, 1044), exc
        return False


@pytest.fixture
def scratch(root_sql: Any) -> Iterator[str]:
    table = "tbs_archive.sec_scratch"
    root_sql(f"DROP TABLE IF EXISTS {table}", f"CREATE TABLE {table} (id BIGINT PRIMARY KEY)")
    yield table
    for host in ("127.0.0.1", "localhost"):
        root_sql(f"GRANT SELECT, INSERT, UPDATE, DELETE ON tbs_archive.* TO 'tbs_app'@'{host}'")
    root_sql(f"DROP TABLE IF EXISTS {table}")


def _grants(root_sql: Any) -> list[Any]:
    return sorted(
        root_sql(
            "SELECT GRANTEE, PRIVILEGE_TYPE, TABLE_SCHEMA FROM information_schema.SCHEMA_PRIVILEGES"
        )
    )


# -- load balancer ------------------------------------------------------------------------------


def test_lb_allowlist_rate_limit_and_access_log(systems: Any, lb: Service) -> None:
    t = systems().traffic()
    t.set_allowlist(None)
    t.set_rate_limit(None)
    assert httpx.get(f"{lb.url}/ok.txt").status_code == 200
    answer = t.set_allowlist(["10.0.0.0/8"])
    assert answer["changed"] and answer["previous"] is None
    assert httpx.get(f"{lb.url}/ok.txt").status_code == 403  # we are 127.0.0.1
    # the admin API stays reachable: lift it
    t.set_allowlist(None)
    t.set_rate_limit(3, ["/ok"])
    codes = [httpx.get(f"{lb.url}/ok.txt").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    assert httpx.get(f"{lb.url}/other.txt").status_code == 404  # not limited: forwarded
    assert t.security_state()["rate_limit"] == {"requests_per_minute": 3, "paths": ["/ok"]}
    t.set_rate_limit(None)
    outcomes = [e["outcome"] for e in t.access_log()]
    assert {"forwarded", "denied-network", "rate-limited"} <= set(outcomes)
    assert httpx.get(f"{lb.url}/_admin/users/admin").status_code == 404  # never forwarded
    with pytest.raises(Refused, match="not a network"):
        t.set_allowlist(["not-a-network"])


# -- lockdown -----------------------------------------------------------------------------------


def test_lockdown_steps_apply_and_lift_in_reverse(
    systems: Any, scratch: str, mariadb: Service, root_sql: Any, redis_server: Service, lb: Service
) -> None:
    sys_ = systems(lockdown={"db_authorized_hosts": ["localhost"], "rate_limit_per_minute": 50})
    store = _store(sys_)
    lift_steps(store, "lockdown", "itest", lambda s: build_step(sys_, s))  # leftovers
    before = _grants(root_sql)
    app = _tcp("tbs_app", APP_PASSWORD, mariadb)
    assert _can_insert(app, scratch)
    steps = [build_step(sys_, s) for s in lockdown_plan(sys_.settings)]
    r = apply_steps(store, "lockdown", "itest", steps)
    assert r.ok, r.problems
    # logins flag in Redis, network and rate limits at the load balancer
    redis = sys_.sessions("blue")
    assert redis.flag("tbs:lockdown") is not None
    state = sys_.traffic().security_state()
    assert state["allowlist"] and state["rate_limit"]["requests_per_minute"] == 50
    # tbs_app over TCP (127.0.0.1) is read-only now; its socket account (localhost) still writes
    assert not _can_insert(_tcp("tbs_app", APP_PASSWORD, mariadb), scratch)
    sock = pymysql.connect(
        unix_socket=mariadb.extra["socket"],
        user="tbs_app",
        password=APP_PASSWORD,
        database="tbs_archive",
        autocommit=True,
    )
    assert _can_insert(sock, scratch)
    revoked = next(a for a in r.actions if "read-only" in a.what)
    assert "tbs_app@127.0.0.1" in revoked.detail and "tbs_app@localhost" not in revoked.detail
    # a rerun changes nothing
    again = apply_steps(store, "lockdown", "itest", steps)
    assert {a.outcome for a in again.actions} == {"unchanged"}
    lifted = lift_steps(store, "lockdown", "itest", lambda s: build_step(sys_, s))
    assert lifted.ok, lifted.problems
    assert [a.what.split(":")[0] for a in lifted.actions] == ["lift"] * len(steps)
    assert "read-only" in lifted.actions[0].what  # last applied, first lifted
    assert redis.flag("tbs:lockdown") is None
    state = sys_.traffic().security_state()
    assert state["allowlist"] is None and state["rate_limit"] is None
    assert _grants(root_sql) == before
    assert _can_insert(_tcp("tbs_app", APP_PASSWORD, mariadb), scratch)


def test_a_missing_privilege_leaves_nothing_half_done(
    sec_settings: Any, scratch: str, root_sql: Any
) -> None:
    # the account making the database change can see every grant but may not REVOKE
    pw = "weak-Secret-" + uuid.uuid4().hex[:6]
    root_sql(
        f"CREATE USER IF NOT EXISTS 'sec_weak'@'127.0.0.1' IDENTIFIED BY '{pw}'",
        "GRANT SELECT ON mysql.* TO 'sec_weak'@'127.0.0.1'",
        "GRANT SELECT ON tbs_archive.* TO 'sec_weak'@'127.0.0.1'",
        "GRANT PROCESS ON *.* TO 'sec_weak'@'127.0.0.1'",
    )
    s = sec_settings(lockdown={"db_authorized_hosts": ["localhost"]})
    s = s.model_copy(
        update={
            "database_emergency": s.database_emergency.model_copy(
                update={"mysql_admin": DatabaseAdminAccount(user="sec_weak", password=pw)}
            )
        }
    )
    sys_ = Systems(s)
    try:
        store = _store(sys_)
        before = _grants(root_sql)
        steps = [build_step(sys_, x) for x in lockdown_plan(s)]
        r = apply_steps(store, "lockdown", "itest-fail", steps)
        assert not r.ok and r.rolled_back
        assert any("refused" in p for p in r.problems), r.problems
        assert pw not in str(r.model_dump())
        undone = [a.what for a in r.actions if a.what.startswith("undo:")]
        # the failed step (whatever it revoked before failing), then rate limit, allowlist,
        # the login flag of each Redis: last first
        assert len(undone) == len(steps), undone
        assert "read-only" in undone[0] and "logins" in undone[-1]
        assert sys_.sessions("blue").flag("tbs:lockdown") is None
        assert sys_.traffic().security_state()["allowlist"] is None
        assert _grants(root_sql) == before
        record = store.load("lockdown", "itest-fail")
        assert record is not None and record.status == "rolled-back"
    finally:
        sys_.close()
        root_sql("DROP USER IF EXISTS 'sec_weak'@'127.0.0.1'")


# -- isolation ----------------------------------------------------------------------------------


@pytest.fixture
def iso_accounts(root_sql: Any, heavydb_server: Any, known: Any) -> Iterator[dict[str, str]]:
    pw = "iso-Secret-" + uuid.uuid4().hex[:8]
    for host in ("127.0.0.1", "localhost"):
        root_sql(
            f"CREATE USER IF NOT EXISTS 'tbs_iso'@'{host}' IDENTIFIED BY '{pw}'",
            f"ALTER USER 'tbs_iso'@'{host}' IDENTIFIED BY '{pw}'",
            f"GRANT SELECT, INSERT ON tbs_archive.* TO 'tbs_iso'@'{host}'",
        )
    db = _heavy_admin(heavydb_server, known)
    if not any(u.name == "iso_h" for u in db.users()):
        db.query(f"CREATE USER iso_h (password = '{pw}', is_super = 'false')")
    db.set_password("iso_h", pw)
    db.set_login("iso_h", True)
    db.query("GRANT ACCESS ON DATABASE heavyai TO iso_h")
    yield {"password": pw}
    for host in ("127.0.0.1", "localhost"):
        root_sql(f"DROP USER IF EXISTS 'tbs_iso'@'{host}'")
    # the HeavyDB server is shared by the session: other tests count its users
    db.query("DROP USER IF EXISTS iso_h")
    db.close()


def _heavy_admin(server: Any, known: Any) -> HeavyDBDatabase:
    from tbs_emergency.config import HeavyDBConfig

    return HeavyDBDatabase(
        HeavyDBConfig(host=server.host, port=server.port, password=known.heavydb_password),
        "heavydb[test]",
    )


def test_isolation_revokes_app_access_and_lift_restores_it(
    systems: Any,
    iso_accounts: dict[str, str],
    mariadb: Service,
    heavydb_server: Any,
    known: Any,
) -> None:
    sys_ = systems(
        isolate_shared_databases=True, app_db_users={"mysql": ["tbs_iso"], "heavydb": ["iso_h"]}
    )
    store = _store(sys_)
    lift_steps(store, "isolation", "green", lambda s: build_step(sys_, s))
    pw = iso_accounts["password"]
    heavy = _heavy_admin(heavydb_server, known)
    assert heavy.try_login("iso_h", pw)[0]
    specs, notes = isolation_plan(sys_.settings, "green")
    assert notes == [] and [s.kind for s in specs][-2:] == ["mysql-revoke", "heavydb-access"]
    r = apply_steps(store, "isolation", "green", [build_step(sys_, s) for s in specs])
    assert r.ok, r.problems
    state = sys_.traffic().security_state()
    assert "green" in state["draining"] and "green" in state["denied"]
    with pytest.raises(pymysql.err.OperationalError):  # no privilege on the schema: no access
        _tcp("tbs_iso", pw, mariadb)
    ok, why = heavy.try_login("iso_h", pw)
    assert not ok and "not allowed to access database" in why
    lifted = lift_steps(store, "isolation", "green", lambda s: build_step(sys_, s))
    assert lifted.ok, lifted.problems
    _tcp("tbs_iso", pw, mariadb).close()
    assert heavy.try_login("iso_h", pw)[0]
    state = sys_.traffic().security_state()
    assert "green" not in state["draining"] and "green" not in state["denied"]
    heavy.close()


# -- account suspension -------------------------------------------------------------------------


def test_suspension_locks_mysql_and_heavydb_and_restore_unlocks(
    systems: Any,
    iso_accounts: dict[str, str],
    mariadb: Service,
    heavydb_server: Any,
    known: Any,
    root_sql: Any,
) -> None:
    pw = iso_accounts["password"]
    root_sql(
        f"CREATE USER IF NOT EXISTS 'iso_h'@'127.0.0.1' IDENTIFIED BY '{pw}'",
        "GRANT SELECT ON tbs_archive.* TO 'iso_h'@'127.0.0.1'",
    )
    try:
        sys_ = systems()
        store = _store(sys_)
        heavy = _heavy_admin(heavydb_server, known)
        present = {"mysql[blue,green]": True, "heavydb[blue,green]": True}
        specs = suspension_plan(sys_.settings, "iso_h", present)
        r = apply_steps(store, "account-suspension", "iso_h", [build_step(sys_, s) for s in specs])
        assert r.ok, r.problems
        with pytest.raises(pymysql.err.OperationalError) as e:
            _tcp("iso_h", pw, mariadb)
        assert e.value.args[0] == 4151  # the account is locked
        ok, why = heavy.try_login("iso_h", pw)
        assert not ok and "deactivated" in why
        lifted = lift_steps(store, "account-suspension", "iso_h", lambda s: build_step(sys_, s))
        assert lifted.ok, lifted.problems
        _tcp("iso_h", pw, mariadb).close()
        assert heavy.try_login("iso_h", pw)[0]
        heavy.close()
    finally:
        root_sql("DROP USER IF EXISTS 'iso_h'@'127.0.0.1'")


# -- credential rotation ------------------------------------------------------------------------


class MemoryBlocks:
    """Secret blocks in memory (the Prefect block store is exercised end to end in e2e)."""

    def __init__(self, values: dict[str, str], refuse: str | None = None) -> None:
        self.values = dict(values)
        self.refuse = refuse

    def read(self, name: str) -> str:
        return self.values[name]

    def write(self, name: str, value: str) -> None:
        if name == self.refuse:
            raise Refused("prefect", f"save block {name}", "the block store refused the write")
        self.values[name] = value


def _rotation_servers(sys_: Systems) -> dict[str, Any]:
    from tasks.security import _HeavyDBAccounts, _MySQLAccounts

    m, h = sys_.mysql_target("blue"), sys_.heavydb_target("blue")
    return {
        m.name: _MySQLAccounts(sys_.mysql_admin("blue"), sys_.conn.mysql("blue"), m.name),
        h.name: _HeavyDBAccounts(sys_.heavydb("blue"), h.name),
    }


def _accounts(sys_: Systems) -> list[AccountToRotate]:
    m, h = sys_.mysql_target("blue"), sys_.heavydb_target("blue")
    return [
        AccountToRotate(
            engine="mysql", user="tbs_iso", block="mysql-iso", source="block", server=m.name
        ),
        AccountToRotate(
            engine="heavydb", user="iso_h", block="heavy-iso", source="block", server=h.name
        ),
    ]


def test_rotation_changes_both_engines_and_the_old_password_is_refused(
    systems: Any,
    iso_accounts: dict[str, str],
    mariadb: Service,
    heavydb_server: Any,
    known: Any,
) -> None:
    sys_ = systems()
    old = iso_accounts["password"]
    blocks = MemoryBlocks({"mysql-iso": old, "heavy-iso": old})
    r = rotate_accounts(
        _accounts(sys_), _rotation_servers(sys_), blocks, lambda: "Rot-" + uuid.uuid4().hex + "-x"
    )
    assert r.ok and r.rotated == ["tbs_iso", "iso_h"], r.problems
    new_m, new_h = blocks.values["mysql-iso"], blocks.values["heavy-iso"]
    assert new_m != old and new_h != old and new_m != new_h
    with pytest.raises(pymysql.err.OperationalError) as e:
        _tcp("tbs_iso", old, mariadb)
    assert e.value.args[0] == 1045
    _tcp("tbs_iso", new_m, mariadb).close()
    heavy = _heavy_admin(heavydb_server, known)
    assert not heavy.try_login("iso_h", old)[0] and heavy.try_login("iso_h", new_h)[0]
    heavy.close()
    text = r.model_dump_json() + r.markdown()
    assert old not in text and new_m not in text and new_h not in text


def test_a_failure_puts_every_account_back(
    systems: Any,
    iso_accounts: dict[str, str],
    mariadb: Service,
    heavydb_server: Any,
    known: Any,
) -> None:
    sys_ = systems()
    old = iso_accounts["password"]
    blocks = MemoryBlocks({"mysql-iso": old, "heavy-iso": old}, refuse="heavy-iso")
    r = rotate_accounts(
        _accounts(sys_), _rotation_servers(sys_), blocks, lambda: "Rot-" + uuid.uuid4().hex + "-x"
    )
    assert not r.ok
    assert {a.account: a.status for a in r.accounts} == {
        "tbs_iso": "rolled-back",
        "iso_h": "failed",
    }
    assert blocks.values == {"mysql-iso": old, "heavy-iso": old}
    _tcp("tbs_iso", old, mariadb).close()  # MariaDB: the old password again
    heavy = _heavy_admin(heavydb_server, known)
    assert heavy.try_login("iso_h", old)[0]  # HeavyDB too
    heavy.close()


# -- evidence: Object Lock on moto -----------------------------------------------------------


def test_object_lock_refuses_deleting_a_locked_version(
    settings_factory: Any, moto: Service
) -> None:
    raw = boto3.client(
        "s3",
        endpoint_url=moto.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    locked, plain = "sec-locked-" + uuid.uuid4().hex[:6], "sec-plain-" + uuid.uuid4().hex[:6]
    raw.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    raw.create_bucket(Bucket=plain)
    s = settings_factory()
    with Connectors(
        s.model_copy(update={"storage": s.storage.model_copy(update={"bucket": locked})})
    ) as c1:
        store = c1.store()
        assert store.object_lock_enabled()
        until = datetime.now(UTC) + timedelta(days=1)
        obj = store.put_locked(
            "evidence/i/x.json", b'{"a": 1}', mode="COMPLIANCE", retain_until=until
        )
        head = store.head("evidence/i/x.json")
        assert head.lock_mode == "COMPLIANCE" and head.retain_until is not None
        assert head.version_id == obj.version_id
        with pytest.raises(Refused, match="AccessDenied"):
            store.delete_version("evidence/i/x.json", obj.version_id or "")
        # a plain delete only hides it behind a delete marker; the locked version stays
        store.delete("evidence/i/x.json")
        kept = raw.get_object(
            Bucket=locked, Key=store.full_key("evidence/i/x.json"), VersionId=obj.version_id
        )
        assert kept["Body"].read() == b'{"a": 1}'
    with Connectors(
        s.model_copy(update={"storage": s.storage.model_copy(update={"bucket": plain})})
    ) as c2:
        store = c2.store()
        assert not store.object_lock_enabled()
        with pytest.raises(Refused, match="ObjectLockConfiguration"):
            store.put_locked("x", b"x", mode="COMPLIANCE", retain_until=datetime.now(UTC))


# -- Redis ----------------------------------------------------------------------------------------


def test_redis_flag_sessions_and_login_audit(systems: Any) -> None:
    import json

    import redis

    sys_ = systems()
    r = sys_.sessions("blue")
    client = redis.Redis.from_url(sys_.settings.environment("blue").redis.url)
    secret_ids = [f"sid-{uuid.uuid4().hex}" for _ in range(3)]
    for sid, user in zip(secret_ids, ["eve", "eve", "bob"], strict=True):
        client.set(f"session:{sid}", json.dumps({"user": user, "role": "trader"}))
    client.lpush(
        "tbs:audit:logins", json.dumps({"at": "2026-01-01T00:00:00Z", "user": "eve", "ok": False})
    )
    summaries = r.session_summaries()
    assert not any(sid in json.dumps(summaries) for sid in secret_ids)
    assert r.user_session_count("eve") == 2
    assert r.end_user_sessions("eve") == 2 and r.user_session_count("eve") == 0
    assert r.user_session_count("bob") == 1
    assert r.login_audit("tbs:audit:logins")[0]["user"] == "eve"
    r.set_flag("tbs:test-flag", "x", 60)
    assert r.flag("tbs:test-flag")["value"] == "x"
    assert r.delete_flag("tbs:test-flag") and r.flag("tbs:test-flag") is None
    client.delete(*[f"session:{s}" for s in secret_ids], "tbs:audit:logins")


# -- binary log -----------------------------------------------------------------------------------


def test_account_statements_are_read_from_the_binlog_without_their_text(
    settings: Any, root_sql: Any
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    pw = "binlog-Secret-" + uuid.uuid4().hex[:6]
    root_sql(
        f"CREATE USER IF NOT EXISTS 'tbs_bl'@'127.0.0.1' IDENTIFIED BY '{pw}'",
        "GRANT SELECT ON tbs_archive.* TO 'tbs_bl'@'127.0.0.1'",
    )
    try:
        admin = MySQLDatabase(
            settings.environment("blue").mysql, "mysql[test]", user="root", password=""
        )
        changes = MySQLRecovery(admin).privilege_changes(since)
        admin.close()
        mine = [c for c in changes if c["account"] == "tbs_bl@127.0.0.1"]
        assert {c["statement"] for c in mine} >= {"CREATE USER", "GRANT"}
        assert pw not in str(changes)
    finally:
        root_sql("DROP USER IF EXISTS 'tbs_bl'@'127.0.0.1'")
