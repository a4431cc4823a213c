"""The operator's commands against moto S3 and the notification doubles: `incident list | show |
note | resolve`, `notify`, `journal flush`, and `redirect` without a reachable Prefect; the
journal's local spool with the object store stopped (a moto server of the test's own, restarted on
the same URL with its data), then back.

Each command runs as the operator runs it (the CLI app, a tbs.toml on disk). `[prefect] api_url`
points at a closed port: the commands must act without Prefect, never boot a temporary server,
and say the run was not recorded.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sandbox.proc import LOOPBACK, free_port
from tbs_emergency.cli import app
from tbs_emergency.config import load_settings
from tbs_emergency.connectors.objectstore import S3ObjectStore
from tbs_emergency.domain.incident import Entry, Incident
from tbs_emergency.domain.journal import (
    Journal,
    Spool,
    index_key,
    journal_prefix,
    report_key,
    spool_for,
)
from tbs_emergency.domain.severity import Severity
from tests.integration.conftest import HttpDouble, SmtpDouble
from tests.integration.test_backup_support import _plain, to_toml

pytestmark = pytest.mark.integration


def _write(path: Path, data: dict[str, Any]) -> str:
    path.write_text(to_toml(data))
    load_settings(path)
    return str(path)


class S3:
    """A moto server of the test's own (sandbox.s3store: its state survives a restart), so
    the store can go down and come back on the same URL, as in production."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.service: Any = None
        self.port: int | None = None

    def start(self) -> Any:
        from sandbox.services import start_moto

        self.service = start_moto(self.state_dir, self.port)
        self.port = self.service.port
        return self.service

    def stop(self) -> None:
        from sandbox.services import wait_stopped

        if self.service is not None:
            wait_stopped(self.service)
            self.service = None


@pytest.fixture
def configs(
    settings: Any, tmp_path: Path, http_double: HttpDouble, smtp_double: SmtpDouble
) -> Iterator[dict[str, Any]]:
    """`up`: a tbs.toml on an S3 of the test's own (`s3`: stop and start it); one spool."""
    s3 = S3(tmp_path / "s3")
    service = s3.start()
    data = _plain(settings)
    data["storage"]["endpoint_url"] = service.url
    data["storage"]["timeout_s"] = 2
    data["storage"]["prefix"] = f"cli-{uuid.uuid4().hex[:8]}"
    data["journal"] = {"spool_dir": str(tmp_path / "spool"), "retry_after_s": 30.0}
    data["prefect"] = {"api_url": f"http://{LOOPBACK}:{free_port()}/api", "connect_timeout_s": 1.0}
    data["contacts"] = [
        {
            "name": "On-call",
            "role": "primary",
            "email": "oncall@example.test",
            "channels": ["oncall", "email"],
        },
        {"name": "Users", "role": "users", "email": "users@example.test", "channels": ["email"]},
    ]
    up = _write(tmp_path / "tbs.toml", data)
    S3ObjectStore(load_settings(up).storage).ensure_bucket()
    saved = os.environ.pop("PREFECT_API_URL", None)
    try:
        spool = spool_for(load_settings(up).journal, load_settings(up).storage)
        yield {"up": up, "spool": str(spool.dir), "s3": s3}
    finally:
        s3.stop()
        os.environ.pop("PREFECT_API_URL", None)
        if saved is not None:
            os.environ["PREFECT_API_URL"] = saved
        if "prefect.context" in sys.modules:  # the CLI refreshed Prefect's settings: undo it
            from prefect.context import refresh_global_settings_context

            refresh_global_settings_context()


def cli(*args: str) -> Any:
    os.environ.pop("PREFECT_API_URL", None)  # each run decides from its configuration
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def journal(config: str) -> Journal:
    s = load_settings(config)
    return Journal.configured(S3ObjectStore(s.storage), s.journal)


def open_one(config: str, env: str = "green") -> str:
    inc = Incident(
        id=f"inc-20250124T100000Z-{env}-{uuid.uuid4().hex[:4]}",
        severity=Severity.P1,
        env=env,
        rule="error_rate_spike",
        trigger="error rate 9% for 3 windows",
        opened_at=time.time(),  # type: ignore[arg-type]
    )
    journal(config).open(inc)
    return inc.id


def test_list_show_note_resolve_are_journaled(configs: dict[str, Any]) -> None:
    cfg = configs["up"]
    inc = open_one(cfg)
    listed = cli("incident", "list", "--config", cfg, "--json")
    assert listed.exit_code == 0, listed.output
    assert inc in [r["id"] for r in json.loads(listed.stdout)["incidents"]]

    noted = cli(
        "incident", "note", inc, "blue verified by hand", "--by", "ana", "-c", cfg, "--json"
    )
    assert noted.exit_code == 0, noted.output
    assert json.loads(noted.stdout)["spooled"] is False

    shown = cli("incident", "show", inc, "--config", cfg, "--json")
    doc = json.loads(shown.stdout)
    assert doc["incident"]["status"] == "open"
    note = doc["entries"][-1]
    assert note["kind"] == "note" and note["what"] == "blue verified by hand"
    assert note["decided_by"] == "person:ana"
    text = cli("incident", "show", inc, "--config", cfg)
    assert "blue verified by hand" in text.output and "error: None" not in text.output

    resolved = cli("incident", "resolve", inc, "--note", "fixed", "--by", "ana", "-c", cfg)
    assert resolved.exit_code == 0, resolved.output
    j = journal(cfg)
    closed = j.incident(inc)
    assert closed is not None and closed.status == "resolved"
    assert closed.id not in [r["id"] for r in j.open_incidents()]
    assert b"# Incident" in j.store.get(report_key(inc))

    again = cli("incident", "resolve", inc, "-c", cfg)
    assert again.exit_code == 1 and "already resolved" in again.output
    unknown = cli("incident", "resolve", "inc-20990101T000000Z-green-0000", "-c", cfg)
    assert unknown.exit_code == 1 and "no incident" in unknown.output
    assert cli("incident", "note", "inc-20990101T000000Z-green-0000", "x", "-c", cfg).exit_code == 1
    malformed = cli("incident", "note", "../inc-nope", "x", "-c", cfg)
    assert malformed.exit_code == 2 and "'../inc-nope' is not an incident id" in malformed.output
    all_ = json.loads(cli("incident", "list", "--all", "-c", cfg, "--json").stdout)
    assert any(r["id"] == inc and r["status"] == "resolved" for r in all_["incidents"])


def test_notify_delivers_journals_and_dry_run_sends_nothing(
    configs: dict[str, Any], http_double: HttpDouble, smtp_double: SmtpDouble
) -> None:
    cfg = configs["up"]
    inc = open_one(cfg)
    before_mail = len(smtp_double.messages)

    dry = cli("notify", "immediate", "--incident", inc, "--dry-run", "--json", "-c", cfg)
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)["plan"]
    assert {p["channel"] for p in plan} == {"oncall", "email"}
    assert not http_double.hooks and len(smtp_double.messages) == before_mail
    assert [e.kind for e in journal(cfg).entries(inc)] == ["opened"]

    bad = cli("notify", "nonsense", "-c", cfg)
    assert bad.exit_code == 2 and "no template" in bad.output

    t0 = time.monotonic()
    sent = cli("notify", "immediate", "--incident", inc, "--json", "-c", cfg)
    assert sent.exit_code == 0, sent.output
    # Prefect is configured but unreachable: delivered directly, said so, no temporary server
    assert time.monotonic() - t0 < 15
    assert "could not be recorded in Prefect" in sent.stderr
    doc = json.loads(sent.stdout)
    assert doc["via"] == "direct" and all(r["ok"] for r in doc["results"])
    assert len(http_double.hooks) == 1 and inc in json.dumps(http_double.hooks[0]["json"])
    assert len(smtp_double.messages) == before_mail + 1
    notes = [e for e in journal(cfg).entries(inc) if e.kind == "notification"]
    assert {e.system for e in notes} == {"oncall", "email"}
    assert all(e.result == "ok" for e in notes)

    # no incident: journaled in the day's operations log
    user = cli("notify", "user", "--reason", "maintenance", "-c", cfg)
    assert user.exit_code == 0, user.output
    from tbs_emergency.cli.incident_cmds import operations_log_id

    ops = journal(cfg).entries(operations_log_id())
    assert ops and ops[-1].kind == "notification" and ops[-1].data["template"] == "user"


def test_store_down_commands_spool_then_flush_writes_each_entry_once(
    configs: dict[str, Any],
) -> None:
    cfg, s3, spool_dir = configs["up"], configs["s3"], Path(configs["spool"])
    inc = open_one(cfg)
    stored = journal(cfg).entries(inc)

    # the object store stops: the note is spooled, fsync'd and private; the incident cannot
    # be looked up, which the command says
    s3.stop()
    t0 = time.monotonic()
    noted = cli("incident", "note", inc, "written while S3 is down", "-c", cfg, "--json")
    assert noted.exit_code == 0, noted.output
    assert "cannot check" in noted.stderr and json.loads(noted.stdout)["spooled"] is True
    e = journal(cfg).append(Entry(incident_id=inc, kind="note", what="second while down"))
    assert time.monotonic() - t0 < 30
    assert e.seq == json.loads(noted.stdout)["seq"] + 1
    # resolving needs the incident's state: refused while the store is down
    refused = cli("incident", "resolve", inc, "-c", cfg)
    assert refused.exit_code == 1 and "unreachable" in refused.output
    files = sorted((spool_dir / inc).glob("*.json"))
    assert len(files) == 2
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(spool_dir.parent.stat().st_mode) == 0o700

    status = cli("journal", "status", "-c", cfg, "--json")
    assert json.loads(status.stdout)["count"] == 2
    failed = cli("journal", "flush", "-c", cfg)
    assert failed.exit_code == 1 and "unreachable" in failed.output
    assert len(list((spool_dir / inc).glob("*.json"))) == 2

    # the store is back (same URL, its data kept)
    s3.start()
    flushed = cli("journal", "flush", "-c", cfg, "--json")
    assert flushed.exit_code == 0, flushed.output
    assert json.loads(flushed.stdout)["written"] == 2
    entries = journal(cfg).entries(inc)
    assert [x.what for x in entries][-2:] == ["written while S3 is down", "second while down"]
    seqs = [x.seq for x in entries]
    assert len(seqs) == len(set(seqs)) == len(stored) + 2
    again = json.loads(cli("journal", "flush", "-c", cfg, "--json").stdout)
    assert again["written"] == 0 and again["left"] == 0
    keys = list(S3ObjectStore(load_settings(cfg).storage).list(journal_prefix(inc)))
    assert len(keys) == len(stored) + 2
    assert json.loads(cli("journal", "status", "-c", cfg, "--json").stdout)["count"] == 0


def test_incident_opened_while_the_store_is_down_is_indexed_after_the_flush(
    configs: dict[str, Any],
) -> None:
    cfg, s3 = configs["up"], configs["s3"]
    s3.stop()
    inc_id = open_one(cfg)  # no exception: the opening is spooled
    listed = cli("incident", "list", "-c", cfg, "--json")
    assert inc_id in [r["id"] for r in json.loads(listed.stdout)["incidents"]]
    assert json.loads(listed.stdout)["store_down"] is True
    noted = cli("incident", "note", inc_id, "still down", "-c", cfg, "--json")
    assert noted.exit_code == 0, noted.output
    assert json.loads(noted.stdout)["spooled"] is True
    s3.start()
    store = S3ObjectStore(load_settings(cfg).storage)
    assert not store.exists(index_key(inc_id))
    # the next append with the store back flushes first
    ok = cli("incident", "note", inc_id, "store back", "-c", cfg, "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["spooled"] is False
    entries = journal(cfg).entries(inc_id)
    assert [e.kind for e in entries] == ["opened", "note", "note"]
    assert [e.seq for e in entries] == [0, 1, 2]
    assert store.exists(index_key(inc_id))
    assert Spool(configs["spool"]).pending() == 0


def test_a_spool_is_flushed_only_to_its_own_store(configs: dict[str, Any], tmp_path: Path) -> None:
    """Two configurations sharing a spool directory never get each other's entries."""
    cfg, s3 = configs["up"], configs["s3"]
    s3.stop()
    inc_id = open_one(cfg)
    s3.start()
    other = load_settings(cfg)
    text = Path(cfg).read_text().replace(other.storage.prefix, other.storage.prefix + "-other")
    other_cfg = tmp_path / "tbs-other.toml"
    other_cfg.write_text(text)
    res = cli("journal", "flush", "-c", str(other_cfg), "--json")
    assert json.loads(res.stdout)["written"] == 0
    assert journal(str(other_cfg)).incident(inc_id) is None
    assert json.loads(cli("journal", "flush", "-c", cfg, "--json").stdout)["written"] == 1


def test_an_unreadable_journal_object_is_skipped_and_named(configs: dict[str, Any]) -> None:
    cfg = configs["up"]
    inc = open_one(cfg)
    s = load_settings(cfg)
    raw = S3ObjectStore(s.storage)
    raw.put(f"{journal_prefix(inc)}00000001-broken.json", b"{not json")
    shown = cli("incident", "show", inc, "-c", cfg, "--json")
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert doc["incident"]["id"] == inc
    assert len(doc["skipped"]) == 1 and "00000001-broken.json" in doc["skipped"][0]
    noted = cli("incident", "note", inc, "after the broken one", "-c", cfg, "--json")
    assert json.loads(noted.stdout)["seq"] == 2


def test_redirect_acts_and_journals_when_prefect_is_unreachable(
    configs: dict[str, Any], http_double: HttpDouble
) -> None:
    cfg = configs["up"]
    inc = open_one(cfg)
    http_double.active = "green"
    t0 = time.monotonic()
    res = cli("redirect", "blue", "--force", "--incident", inc, "-c", cfg)
    elapsed = time.monotonic() - t0
    assert res.exit_code == 0, res.output
    assert http_double.active == "blue"
    assert "error: None" not in res.stdout
    assert "verified: True" in res.stdout
    assert "could not be recorded in Prefect" in res.stderr
    assert elapsed < 10
    entries = journal(cfg).entries(inc)
    assert entries[-1].kind == "action" and entries[-1].system == "traffic"
    assert entries[-1].result == "ok" and entries[-1].data["target"] == "blue"
    # JSON says the same
    doc = json.loads(cli("redirect", "blue", "--force", "--json", "-c", cfg).stdout)
    assert doc["ok"] and doc["prefect"]["recorded"] is False and "error" not in doc
