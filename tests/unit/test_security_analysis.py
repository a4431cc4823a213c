"""Assessment findings, privilege review, evidence helpers, plans and configuration."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tbs_emergency.config import AssessmentConfig, PrivilegePolicy, load_settings
from tbs_emergency.connectors.base import PrivilegeGrant
from tbs_emergency.connectors.mysql import parse_privilege_changes
from tbs_emergency.errors import ConfigError
from tbs_emergency.security.assessment import assess, is_internal
from tbs_emergency.security.evidence import (
    EvidenceItem,
    EvidenceManifest,
    encode,
    mask_statement,
    verify_manifest,
)
from tbs_emergency.security.privileges import review_app, review_heavydb, review_mysql
from tbs_emergency.security.systems import isolation_plan, lockdown_plan, suspension_plan
from tests.unit.test_config import MINIMAL

pytestmark = pytest.mark.unit

NETS = ["10.0.0.0/8", "127.0.0.0/8"]


def _t(sec: int) -> str:
    return f"2026-01-01T10:{sec // 60:02d}:{sec % 60:02d}.000Z"


def test_failed_login_burst_and_a_success_after_it_are_found() -> None:
    logins = [
        {
            "at": _t(i),
            "user": "trader01",
            "ok": False,
            "reason": "bad credentials",
            "remote": "203.0.113.9",
        }
        for i in range(6)
    ]
    logins.append(
        {"at": _t(30), "user": "trader01", "ok": True, "reason": "ok", "remote": "203.0.113.9"}
    )
    logins += [
        {
            "at": _t(100 + 40 * i),
            "user": "analyst01",
            "ok": False,
            "reason": "bad credentials",
            "remote": "10.0.0.5",
        }
        for i in range(6)
    ]
    f = assess(
        window_start="a",
        window_end="b",
        access_log=[],
        login_audit=logins,
        db_sessions={},
        privilege_log=[],
        networks=NETS,
        known_users=set(),
        cfg=AssessmentConfig(),
    )
    bursts = [x for x in f.findings if x.kind == "failed-login-burst"]
    # trader01 (user) and 203.0.113.9 (source): 6 within a minute, then a success: high.
    # analyst01 failed 6 times but 40 s apart: no burst.
    assert {x.detail.get("user") or x.detail.get("source") for x in bursts} == {
        "trader01",
        "203.0.113.9",
    }
    assert {x.severity for x in bursts} == {"high"}
    unusual = [x for x in f.findings if x.kind == "unusual-source"]
    assert [x.detail["source"] for x in unusual] == ["203.0.113.9"]


def test_volume_spikes_blocked_requests_privilege_changes_and_sessions() -> None:
    access = []
    for minute in range(6):
        n = 200 if minute == 4 else 10
        access += [
            {
                "at": f"2026-01-01T10:{minute:02d}:{i % 60:02d}Z",
                "client": "127.0.0.1",
                "outcome": "forwarded",
            }
            for i in range(n)
        ]
    access += [
        {"at": "2026-01-01T10:05:00Z", "client": "198.51.100.7", "outcome": "denied-network"}
    ]
    changes = [
        {
            "at": "2026-01-01T10:03:00+00:00",
            "statement": "GRANT",
            "account": "evil@%",
            "server": "mysql[blue]",
        }
    ]
    sessions = {
        "mysql[blue]": [
            {"id": "1", "user": "tbs_app", "host": "127.0.0.1:5000", "internal": False},
            {"id": "2", "user": "mallory", "host": "198.51.100.7:4000", "internal": False},
            {"id": "3", "user": "system user", "host": None, "internal": True},
        ]
    }
    f = assess(
        window_start="a",
        window_end="b",
        access_log=access,
        login_audit=[],
        db_sessions=sessions,
        privilege_log=changes,
        networks=NETS,
        known_users={"tbs_app"},
        cfg=AssessmentConfig(),
    )
    kinds = [x.kind for x in f.findings]
    assert kinds.count("volume-spike") == 1
    assert "blocked-requests" in kinds and "privilege-change" in kinds
    db = [x for x in f.findings if x.kind == "database-session"]
    assert [x.detail["user"] for x in db] == ["mallory"]
    assert f.worst == "medium" and "volume-spike" in f.markdown()


def test_internal_addresses() -> None:
    assert is_internal("127.0.0.1", NETS) and is_internal("127.0.0.1:3306", NETS)
    assert is_internal("localhost", NETS) and is_internal(None, NETS)
    assert not is_internal("8.8.8.8", NETS)


def test_binlog_account_statements_keep_no_statement_text() -> None:
    lines = [
        "#260101 10:00:01 server id 1  end_log_pos 500 Query thread_id=5",
        "SET TIMESTAMP=1767261601/*!*/;",
        "ALTER USER 'svc'@'127.0.0.1' IDENTIFIED BY 'Hunter2-Secret'",
        "/*!*/;",
        "#260101 10:00:02 server id 1  end_log_pos 700 Query thread_id=5",
        "GRANT SELECT ON `tbs`.* TO `evil`@`%`",
        "INSERT INTO trades VALUES (1)",
    ]
    found = parse_privilege_changes(lines)
    assert [(c["statement"], c["account"]) for c in found] == [
        ("ALTER USER", "svc@127.0.0.1"),
        ("GRANT", "evil@%"),
    ]
    assert found[0]["at"].startswith("2026-01-01T10:00:01")
    assert "Hunter2" not in str(found)


def test_password_literals_are_masked_in_statements() -> None:
    assert "s3cr3t" not in mask_statement("ALTER USER 'a'@'b' IDENTIFIED BY 's3cr3t'")
    assert "s3cr3t" not in mask_statement("SET PASSWORD FOR a = PASSWORD('s3cr3t')")
    assert "s3cr3t" not in mask_statement("ALTER USER svc (password = 's3cr3t')")
    assert mask_statement("SELECT 1") == "SELECT 1" and mask_statement(None) is None


def test_manifest_verification_finds_a_changed_object() -> None:
    data = {"k1": encode({"a": 1}), "k2": encode({"b": 2})}
    items = [
        EvidenceItem(
            name=k,
            key=k,
            size=len(v),
            sha256=hashlib.sha256(v).hexdigest(),
            collected_at="2026-01-01T00:00:00Z",
        )
        for k, v in data.items()
    ]
    m = EvidenceManifest(
        incident_id="inc-1",
        created_at="2026-01-01T00:00:00Z",
        bucket="b",
        prefix="p",
        lock_mode="COMPLIANCE",
        retain_until="2027-01-01T00:00:00Z",
        items=items,
    )
    assert verify_manifest(m, data.__getitem__) == []
    data["k2"] = b"tampered"
    assert [p.split(":")[0] for p in verify_manifest(m, data.__getitem__)] == ["k2"]


def test_privilege_review_against_the_policy() -> None:
    policy = PrivilegePolicy(
        mysql={"tbs_app": ["SELECT", "INSERT"]}, app_privileged_users=["admin"]
    )
    grants = [
        PrivilegeGrant(user="tbs_app", host="%", privilege="SELECT", level="schema", schema="s"),
        PrivilegeGrant(user="tbs_app", host="%", privilege="DROP", level="schema", schema="s"),
        PrivilegeGrant(user="eve", host="%", privilege="SUPER", level="global"),
        PrivilegeGrant(user="eve", host="%", privilege="UPDATE", level="schema", schema="s"),
    ]
    app = review_mysql("tbs_app", grants, policy)
    assert [a.detail["privilege"] for a in app] == ["DROP"]
    eve = review_mysql("eve", grants, policy)
    assert [(a.detail["privilege"], a.severity) for a in eve] == [("SUPER", "high")]
    assert review_heavydb("bob", {"is_super": True}, policy)[0].severity == "high"
    assert review_heavydb("admin", {"is_super": True}, policy) == []
    assert review_app("mallory", {"role": "admin"}, policy)
    assert review_app("admin", {"role": "admin"}, policy) == []


def _settings(tmp_path: Path, extra: str = ""):  # type: ignore[no-untyped-def]
    p = tmp_path / "tbs.toml"
    p.write_text(MINIMAL + extra)
    return load_settings(p)


def test_lockdown_plan_order_and_defaults(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    assert s.security.lockdown.rate_limit_per_minute == 60
    assert s.security.retention_days(s.storage) == 365
    kinds = [x.kind for x in lockdown_plan(s)]
    # the runbook's order: logins, network, API, databases (one Redis, one MySQL: shared)
    assert kinds == ["login-flag", "lb-allowlist", "lb-rate-limit", "mysql-revoke"]


def test_isolation_leaves_shared_databases_alone_unless_told(tmp_path: Path) -> None:
    s = _settings(tmp_path)  # blue and green share MySQL (same host/port); HeavyDB differs
    specs, notes = isolation_plan(s, "green")
    assert [x.kind for x in specs] == ["lb-drain", "lb-deny", "heavydb-access"]
    assert "shared with blue" in notes[0]
    s2 = _settings(tmp_path, "[security]\nisolate_shared_databases = true\n")
    specs2, _ = isolation_plan(s2, "green")
    assert "mysql-revoke" in [x.kind for x in specs2]


def test_suspension_plan_only_where_the_user_exists(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    specs = suspension_plan(
        s,
        "eve",
        {
            "mysql[blue,green]": True,
            "heavydb[blue]": False,
            "heavydb[green]": True,
            "app[blue]": True,
        },
    )
    assert [(x.kind, x.params["target"]) for x in specs] == [
        ("mysql-lock", "mysql[blue,green]"),
        ("heavydb-login", "heavydb[green]"),
        ("app-user", "blue"),
    ]


def test_security_configuration_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        _settings(tmp_path, '[security.lockdown]\ninternal_networks = ["nope"]\n')
    assert "security.lockdown.internal_networks" in e.value.problems[0]
    with pytest.raises(ConfigError) as e:
        _settings(tmp_path, '[security]\naffected_environment = "purple"\n')
    assert "affected_environment" in e.value.problems[0]


def test_security_deployments_point_at_the_flows() -> None:
    import importlib

    import yaml

    root = Path(__file__).resolve().parents[2]
    doc = yaml.safe_load((root / "prefect.yaml").read_text())
    mine = {d["name"]: d for d in doc["deployments"] if "security" in d.get("tags", [])}
    assert set(mine) == {
        "security-incident",
        "rotate-credentials",
        "account-compromise",
        "security-lockdown",
        "security-lockdown-lift",
    }
    for d in mine.values():
        module, func = d["entrypoint"].split(":")
        f = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), func)
        assert hasattr(f, "fn"), d["name"]  # a Prefect flow
    from flows.security_incident import SecurityIncidentParams

    params = mine["security-incident"]["triggers"][0]["parameters"]["params"]
    SecurityIncidentParams(**{**params, "reason": "alert"})
