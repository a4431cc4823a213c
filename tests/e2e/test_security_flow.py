"""Security procedures end to end in the sandbox world, through the flows and the CLI.

- lockdown: a new login fails, an existing session still works; after `lockdown lift` both
  work (and the archive is writable again from the app's host);
- rotation: the old password is refused by MariaDB and by the HeavyDB sandbox server, the new
  one (from the Prefect Secret block) works;
- evidence: every object matches the manifest's sha256 and size, and deleting a locked version
  is refused (moto enforces COMPLIANCE retention on version deletes; it does not refuse
  shortening a retention, which real S3 does);
- every flow run with known secrets: none of them appears in Prefect logs, artifacts, events,
  CLI output, or what the runs wrote to S3 (journal, state records, evidence).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pymysql
import pytest

from sandbox.proc import LOOPBACK
from tbs_emergency.config import load_settings
from tbs_emergency.connectors import Connectors
from tests.e2e.conftest import World
from tests.e2e.test_validation_fixtures import prefect_api

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

SECURITY_BLOCKS = ("tbs-sandbox-mysql-svc", "tbs-sandbox-heavydb-svc")


@pytest.fixture(scope="module")
def api(request: pytest.FixtureRequest, sandbox_world: World) -> str:
    return prefect_api(request)


@pytest.fixture(scope="module")
def config(sandbox_world: World, api: str) -> str:
    """The world's configuration, its service accounts provisioned (accounts and blocks)."""
    from sandbox.security import provision

    path = str(sandbox_world.info["config"])
    assert "[security]" in Path(path).read_text()
    provision(load_settings(path), log=lambda _m: None)
    return path


@pytest.fixture(autouse=True)
def restore_world(config: str) -> Iterator[None]:
    """Whatever a test did, the world is back as it was: no lockdown, green not isolated,
    traffic on green, trader accounts active."""
    yield
    from flows.account_compromise import AccountParams, restore_account
    from flows.security_isolation import IsolationParams, lift_isolation
    from flows.security_lockdown import LockdownParams, lift_lockdown

    lift_lockdown(LockdownParams(config_path=config))
    lift_isolation(IsolationParams(config_path=config, environment="green"))
    for user in ("trader07",):
        restore_account(AccountParams(config_path=config, user=user))
    with Connectors(load_settings(config)) as conn:
        conn.traffic().switch("green")


def _block(name: str) -> str:
    from prefect.blocks.system import Secret

    return str(Secret.load(name).get())


def _login(world: World, user: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{world.url('lb')}/login", json={"username": user, "password": password}, timeout=20
    )


def _me(world: World, session_id: str) -> httpx.Response:
    return httpx.get(f"{world.url('lb')}/api/me", headers={"X-Session-Id": session_id}, timeout=20)


def _port(world: World, name: str) -> int:
    from sandbox.proc import load_services

    return int(load_services(world.dir / "services.json")[name].port)


def _mariadb(world: World, user: str, password: str) -> Any:
    """Green's MariaDB server itself (the live environment; the service accounts live there)."""
    port = _port(world, "mysql-green")
    return pymysql.connect(
        host=LOOPBACK, port=port, user=user, password=password, connect_timeout=5
    )


def _heavydb(world: World, user: str, password: str) -> Any:
    import heavydb

    port = _port(world, "heavydb-green")
    return heavydb.connect(host=LOOPBACK, port=port, user=user, password=password, dbname="heavyai")


def test_lockdown_blocks_new_logins_keeps_sessions_and_lift_restores(
    sandbox_world: World, config: str
) -> None:
    from flows.security_lockdown import LockdownParams, lift_lockdown, lockdown

    first = _login(sandbox_world, "trader03", "sandbox-trader")
    assert first.status_code == 200, first.text
    session = first.json()["session_id"]

    plan = lockdown(LockdownParams(config_path=config, dry_run=True))
    assert plan.ok and all("[planned]" in line for line in plan.lines)
    assert _login(sandbox_world, "trader04", "sandbox-trader").status_code == 200

    report = lockdown(LockdownParams(config_path=config))
    assert report.ok, report.problems
    denied = _login(sandbox_world, "trader04", "sandbox-trader")
    assert denied.status_code == 403 and "lockdown" in denied.text
    me = _me(sandbox_world, session)
    assert me.status_code == 200 and me.json()["session"]["user"] == "trader03"
    # the archive is read-only for the app's TCP account (127.0.0.1 is not an authorised host)
    settings = load_settings(config)
    secrets = json.loads((sandbox_world.dir / "secrets.json").read_text())
    con = _mariadb(sandbox_world, "tbs_app", secrets["mysql_app_password"])
    with pytest.raises(pymysql.err.OperationalError) as e, con.cursor() as cur:
        cur.execute("UPDATE tbs_archive.users SET active = active WHERE username = 'nobody'")
    assert e.value.args[0] in (1142, 1044)
    con.close()
    assert settings.security.lockdown.db_authorized_hosts == ["localhost"]

    lifted = lift_lockdown(LockdownParams(config_path=config))
    assert lifted.ok, lifted.problems
    assert _login(sandbox_world, "trader04", "sandbox-trader").status_code == 200
    assert _me(sandbox_world, session).status_code == 200
    con = _mariadb(sandbox_world, "tbs_app", secrets["mysql_app_password"])
    with con.cursor() as cur:
        cur.execute("UPDATE tbs_archive.users SET active = active WHERE username = 'nobody'")
    con.close()


def test_rotation_old_password_refused_by_mariadb_and_heavydb(
    sandbox_world: World, config: str
) -> None:
    from flows.rotate_credentials import RotateParams, rotate_credentials

    old_mysql, old_heavy = (_block(b) for b in SECURITY_BLOCKS)
    _mariadb(sandbox_world, "tbs_svc", old_mysql).close()
    _heavydb(sandbox_world, "tbs_svc", old_heavy).close()
    dry = rotate_credentials(RotateParams(config_path=config, dry_run=True))
    assert dry.ok and _block(SECURITY_BLOCKS[0]) == old_mysql
    report = rotate_credentials(RotateParams(config_path=config))
    assert report.ok, report.problems
    new_mysql, new_heavy = (_block(b) for b in SECURITY_BLOCKS)
    assert new_mysql != old_mysql and new_heavy != old_heavy and len(new_mysql) == 32
    with pytest.raises(pymysql.err.OperationalError) as e:
        _mariadb(sandbox_world, "tbs_svc", old_mysql)
    assert e.value.args[0] == 1045
    _mariadb(sandbox_world, "tbs_svc", new_mysql).close()
    with pytest.raises(Exception, match="Authentication failure"):
        _heavydb(sandbox_world, "tbs_svc", old_heavy)
    _heavydb(sandbox_world, "tbs_svc", new_heavy).close()
    text = report.model_dump_json()
    for secret in (old_mysql, old_heavy, new_mysql, new_heavy):
        assert secret not in text


def test_evidence_matches_its_manifest_and_cannot_be_deleted(
    sandbox_world: World, config: str
) -> None:
    from flows.security_evidence import EvidenceParams, preserve_evidence

    report = preserve_evidence(EvidenceParams(config_path=config))
    assert report.ok, report.problems
    settings = load_settings(config)
    s3 = boto3.client(
        "s3",
        endpoint_url=settings.storage.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    bucket, prefix = settings.storage.bucket, settings.storage.prefix
    key = f"{prefix}/evidence/{report.incident_id}/manifest.json"
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    names = {i["name"] for i in manifest["items"]}
    assert names == {
        "mysql-processlist",
        "mysql-binlog-position",
        "heavydb-sessions",
        "redis-sessions",
        "lb-state",
        "lb-access-log",
        "app-health",
        "app-login-audit",
        "prometheus-last-hour",
    }, manifest["missing"]
    for item in manifest["items"]:
        full = f"{prefix}/{item['key']}"
        obj = s3.get_object(Bucket=bucket, Key=full, VersionId=item["version_id"])
        data = obj["Body"].read()
        assert hashlib.sha256(data).hexdigest() == item["sha256"] and len(data) == item["size"]
        assert obj["ObjectLockMode"] == "COMPLIANCE"
        with pytest.raises(s3.exceptions.ClientError) as e:
            s3.delete_object(Bucket=bucket, Key=full, VersionId=item["version_id"])
        assert e.value.response["Error"]["Code"] == "AccessDenied"
    # a plain delete only hides the object behind a delete marker: the locked version stays
    first = manifest["items"][0]
    s3.delete_object(Bucket=bucket, Key=f"{prefix}/{first['key']}")
    kept = s3.get_object(
        Bucket=bucket, Key=f"{prefix}/{first['key']}", VersionId=first["version_id"]
    )
    assert hashlib.sha256(kept["Body"].read()).hexdigest() == first["sha256"]


def test_an_unknown_user_changes_nothing_and_the_journal_says_so(config: str) -> None:
    from typer.testing import CliRunner

    from tbs_emergency.cli import app
    from tbs_emergency.domain.journal import Journal

    r = CliRunner().invoke(
        app, ["account", "suspend", "no-such-user", "--json", "--config", config]
    )
    assert r.exit_code == 2, r.output
    body = json.loads(r.stdout)
    assert "no account 'no-such-user' on any system" in body["problems"][0]
    with Connectors(load_settings(config)) as conn:
        entries = Journal(conn.store()).entries(body["incident_id"])
    assert any("unknown user, nothing changed" in e.what and e.result == "failed" for e in entries)


# -- secrets never leak ----------------------------------------------------------------------


def _prefect_logs(start: datetime) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTimestamp

    out: list[str] = []
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.read_logs(
                log_filter=LogFilter(timestamp=LogFilterTimestamp(after_=start)),
                limit=200,
                offset=offset,
            )
            out += [f"{lg.name} {lg.message}" for lg in page]
            if len(page) < 200:
                return out
            offset += 200


def _prefect_artifacts(start: datetime) -> list[str]:
    from prefect.client.orchestration import get_client

    out: list[str] = []
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.read_artifacts(limit=200, offset=offset)
            out += [
                json.dumps(a.model_dump(mode="json"), default=str)
                for a in page
                if a.created is None or a.created >= start
            ]
            if len(page) < 200:
                return out
            offset += 200


def _prefect_events(api: str, start: datetime) -> list[str]:
    time.sleep(3)  # events are persisted asynchronously
    body = {"filter": {"occurred": {"since": start.isoformat()}}, "limit": 50}
    out: list[str] = []
    resp = httpx.post(f"{api.rstrip('/')}/events/filter", json=body, timeout=30)
    resp.raise_for_status()
    page = resp.json()
    while True:
        out += [json.dumps(e) for e in page.get("events", [])]
        nxt = page.get("next_page")
        if not nxt:
            return out
        page = httpx.get(nxt, timeout=30).json()


def _stored_objects(config: str, start: datetime) -> list[str]:
    settings = load_settings(config)
    s3 = boto3.client(
        "s3",
        endpoint_url=settings.storage.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.storage.bucket):
        for item in page.get("Contents", []):
            if item["LastModified"] >= start:
                data = s3.get_object(Bucket=settings.storage.bucket, Key=item["Key"])
                out.append(item["Key"] + " " + data["Body"].read().decode("utf-8", "replace"))
    return out


def test_every_flow_keeps_the_secrets_out_of_everything_it_leaves_behind(
    sandbox_world: World, config: str, api: str
) -> None:
    from typer.testing import CliRunner

    from tbs_emergency.cli import app

    start = datetime.now(UTC).replace(microsecond=0)
    secrets = json.loads((sandbox_world.dir / "secrets.json").read_text())
    known = {k: v for k, v in secrets.items() if isinstance(v, str) and len(v) >= 8}
    known["heavydb admin"] = "HyperInteractive"
    known["pagerduty routing key"] = "sandbox-routing-key"
    for b in SECURITY_BLOCKS:
        known[f"{b} (before)"] = _block(b)
    # a session of the user suspended below: a bearer secret
    login = _login(sandbox_world, "trader07", "sandbox-trader")
    assert login.status_code == 200
    known["trader07 session id"] = login.json()["session_id"]

    runner = CliRunner()
    outputs: list[str] = []

    def cli(*args: str, code: int = 0) -> dict[str, Any]:
        r = runner.invoke(app, [*args, "--json", "--config", config])
        outputs.append(r.output)
        assert r.exit_code == code, r.output
        return json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}

    cli("lockdown", "--dry-run")
    cli("lockdown")
    cli("lockdown", "lift")
    cli("isolate", "--dry-run")
    cli("isolate")
    cli("isolate", "lift")
    cli("preserve-evidence")
    cli("rotate-credentials", "--dry-run")
    cli("rotate-credentials")
    suspended = cli("account", "suspend", "trader07")
    assert suspended["detail"]["sessions_ended"] >= 1
    assert _me(sandbox_world, known["trader07 session id"]).status_code == 401
    assert _login(sandbox_world, "trader07", "sandbox-trader").status_code == 403
    cli("account", "restore", "trader07")
    assert _login(sandbox_world, "trader07", "sandbox-trader").status_code == 200
    plan = cli("security-incident", "--dry-run")
    assert plan["dry_run"] and any("emergency_rollback" in line for line in plan["lines"])
    incident = cli("security-incident", "--reason", "e2e: suspicious logins")
    assert incident["detail"]["rollback"]["traffic"] == "blue"
    assert incident["detail"]["evidence"]["objects"] == 9
    assert set(incident["detail"]["stages"]) == {"1-immediate", "2-assessment", "3-containment"}
    assert incident["detail"]["rotation"]["rotated"] == ["tbs_svc", "tbs_svc"]
    for b in SECURITY_BLOCKS:
        known[f"{b} (after)"] = _block(b)

    places = {
        "CLI output": outputs,
        "Prefect logs": _prefect_logs(start),
        "Prefect artifacts": _prefect_artifacts(start),
        "Prefect events": _prefect_events(api, start),
        "S3 objects written": _stored_objects(config, start),
    }
    assert places["Prefect logs"] and places["Prefect artifacts"] and places["S3 objects written"]
    assert places["Prefect events"]
    leaks = [
        f"{what} in {where}"
        for where, texts in places.items()
        for what, secret in known.items()
        if any(secret in t for t in texts)
    ]
    assert leaks == []
