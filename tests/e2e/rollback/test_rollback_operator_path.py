"""The operator's path on the session world: the journal never blocks a rollback, and the CLI
uses the configured Prefect API (no temporary server), acting even when Prefect is down.

- A rollback drill with `sandbox fault s3-down` active (injected with the scenario's fault, so
  the incident is opened, handled and resolved while the object store is down) still redirects
  traffic to blue; its journal is spooled locally (fsync'd, mode 0600); after the fault is
  cleared, `journal flush` writes it to S3, where it reads complete, once.
- `tbs-emergency redirect` in a fresh process, with `[prefect] api_url` set and PREFECT_API_URL
  unset, records its run on the world's Prefect server; with the configured server unreachable
  the redirect still happens, is journaled, and the output says the run was not recorded.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.rollback_drill import Drill
from sandbox import world
from sandbox.proc import LOOPBACK, free_port
from tbs_emergency.connectors.objectstore import S3ObjectStore
from tbs_emergency.domain.incident import Entry
from tbs_emergency.domain.journal import Journal, spool_for
from tests.e2e.conftest import World

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[3]


def _cli(*args: str, config: str, env: dict[str, str] | None = None) -> tuple[Any, float]:
    """Run the installed command as an operator does (a fresh process, no PREFECT_API_URL)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    environ.pop("TBS_CONFIG", None)
    environ.update(env or {})
    exe = Path(sys.executable).with_name("tbs-emergency")
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(exe), *args, "--config", config],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
        cwd=ROOT,
    )
    return proc, time.monotonic() - t0


def _s3_journal(w: World) -> Journal:
    """The journal as S3 alone holds it (no spool)."""
    return Journal(S3ObjectStore(w.settings.storage))


def test_rollback_with_the_object_store_down_redirects_spools_and_flushes(
    rollback_drill: Drill, sandbox_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = sandbox_world
    spool = spool_for(w.settings.journal, w.settings.storage)
    assert spool.dir.resolve().is_relative_to(w.dir.resolve())
    real_fault, real_clear = world.fault, world.clear_faults
    seen: dict[str, Any] = {}

    def fault_with_s3_down(directory: Path, kind: str, *args: Any, **kw: Any) -> dict:
        out = real_fault(directory, kind, *args, **kw)
        if kind != "s3-down":  # with the scenario's fault: before any detection
            real_fault(directory, "s3-down")
            seen["s3_down_at"] = time.time()
        return out

    def clear_and_look(directory: Path, *args: Any, **kw: Any) -> dict:
        # the drill clears its faults when it is done: look at the spool while S3 is still down
        if "s3_down_at" in seen and "spool" not in seen:
            seen["still_down"] = "s3-down" in world.world_faults(directory)
            seen["spool"] = {i: spool.entries(i) for i in spool.incidents()}
            seen["files"] = [p for i in spool.incidents() for p in (spool.dir / i).glob("*.json")]
            status, _ = _cli("status", "--json", config=w.config)
            seen["status"] = json.loads(status.stdout)["journal_spool"]
        return real_clear(directory, *args, **kw)

    monkeypatch.setattr(world, "fault", fault_with_s3_down)
    monkeypatch.setattr(world, "clear_faults", clear_and_look)
    try:
        r = rollback_drill.run("errors")
    finally:
        monkeypatch.undo()
        world.clear_faults(w.dir)
    print(f"drill with s3-down: {json.dumps(r.timings)} status {r.status}")
    t0 = seen.get("s3_down_at", 0.0)
    for e in seen.get("spool", {}).get(r.incident_id, []):
        print(
            f"  {e.at.timestamp() - t0:7.2f}s #{e.seq} {e.writer} {e.kind} {e.step} {e.what[:80]}"
        )
    # the rollback acted with the store down
    assert r.incident_id and r.rolled_back and r.traffic == "blue", r.as_dict()
    assert seen.get("still_down"), "the object store came back before the drill ended"
    # its journal was in the local spool, private and durable, and `status` said so
    spooled = seen["spool"].get(r.incident_id) or []
    assert spooled, f"nothing spooled for {r.incident_id}: {list(seen['spool'])}"
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in seen["files"] if f.exists())
    assert stat.S_IMODE(spool.dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(spool.dir.parent.stat().st_mode) == 0o700
    kinds = {e.kind for e in spooled}
    assert "opened" in kinds and "action" in kinds
    assert any(e.data.get("action") == "redirect" and e.result == "ok" for e in spooled)
    assert seen["status"]["count"] >= len(spooled)
    assert seen["status"]["incidents"].get(r.incident_id, 0) >= len(spooled)

    # the store is back: flush on demand (what an append did not flush already), read from S3
    flushed, _ = _cli("journal", "flush", "--json", config=w.config)
    assert flushed.returncode == 0, flushed.stdout + flushed.stderr
    assert json.loads(flushed.stdout)["error"] is None
    # the flow may still be appending (follow-ups, validation) and, for `retry_after_s` after
    # its last failure, spooling: those entries are flushed by its next append or here
    deadline = time.monotonic() + w.settings.journal.retry_after_s + 60
    while spool.pending() and time.monotonic() < deadline:
        time.sleep(5)
        _cli("journal", "flush", config=w.config)
    assert spool.pending() == 0
    from_s3 = _s3_journal(w).read(r.incident_id)
    assert not from_s3.skipped and from_s3.store_error is None
    in_s3 = {(e.writer, e.at, e.what) for e in from_s3.entries}
    missing = [e.what for e in spooled if (e.writer, e.at, e.what) not in in_s3]
    assert not missing, f"spooled entries not in S3 after the flush: {missing}"
    seqs = [e.seq for e in from_s3.entries]
    assert len(seqs) == len(set(seqs)), "sequence numbers collide after the flush"
    # each entry once (the flow may still be appending: compare entries, not key counts)
    ids = [(e.writer, e.at, e.kind, e.what) for e in from_s3.entries]
    assert len(ids) == len(set(ids)), "an entry was written twice"
    assert any(e.data.get("action") == "redirect" and e.result == "ok" for e in from_s3.entries)
    # a second flush writes nothing
    again, _ = _cli("journal", "flush", "--json", config=w.config)
    assert json.loads(again.stdout)["written"] == 0


def _flow_run(api: str, run_id: str) -> dict[str, Any]:
    run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
    flow = httpx.get(f"{api}/flows/{run['flow_id']}", timeout=10).json()
    return {**run, "flow_name": flow["name"]}


def test_redirect_uses_the_configured_prefect_api_and_acts_without_it(
    sandbox_world: World, tmp_path: Path
) -> None:
    w = sandbox_world
    world.clear_faults(w.dir)
    assert w.settings.prefect.api_url, "the world's tbs.toml sets [prefect] api_url"
    traffic = w.url("lb")
    try:
        # configured API, PREFECT_API_URL unset: the run is recorded on the world's server
        res, elapsed = _cli("redirect", "blue", config=w.config)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "error: None" not in res.stdout
        assert "verified: True" in res.stdout
        recorded = [x for x in res.stdout.splitlines() if x.startswith("prefect: recorded")]
        assert recorded, res.stdout + res.stderr
        line = recorded[0]
        run = _flow_run(w.api_url, line.rsplit(" ", 1)[-1])
        assert run["flow_name"] == "traffic_redirect" and run["state_type"] == "COMPLETED"
        assert run["parameters"]["params"]["target"] == "blue"
        print(f"redirect blue with the configured API: {elapsed:.2f} s\n{res.stdout}{res.stderr}")
        assert elapsed < 20, f"{elapsed:.1f}s: a temporary Prefect server was started?"

        # the configured server is unreachable: still acts, journals, says it
        cfg = tmp_path / "tbs-prefect-down.toml"
        text = Path(w.config).read_text()
        dead = f"http://{LOOPBACK}:{free_port()}/api"
        cfg.write_text(text.replace(json.dumps(w.settings.prefect.api_url), json.dumps(dead)))
        res, elapsed = _cli("redirect", "green", "--json", config=str(cfg))
        assert res.returncode == 0, res.stdout + res.stderr
        doc = json.loads(res.stdout)
        assert doc["ok"] and doc["after"] == "green" and "error" not in doc
        assert doc["prefect"]["recorded"] is False
        print(f"redirect green, Prefect unreachable: {elapsed:.2f} s\n{res.stdout}{res.stderr}")
        assert doc["journal"]["incident"] and "error" not in doc["journal"]
        assert elapsed < 20
        if doc["journal"]["spooled"]:  # the store was slow to answer: flushed here
            _cli("journal", "flush", config=w.config)
        entries = _s3_journal(w).entries(doc["journal"]["incident"])
        assert any(
            isinstance(e, Entry) and e.data.get("command") == "redirect" and e.result == "ok"
            for e in entries
        )
        text_out, _ = _cli("redirect", "green", config=str(cfg))
        assert "could not be recorded in Prefect" in text_out.stderr
        lb_token = w.settings.traffic.token
        assert lb_token is not None
        active = httpx.get(
            f"{traffic}/emergency/status",
            headers={"Authorization": f"Bearer {lb_token.get_secret_value()}"},
            timeout=10,
        ).json()["active"]
        assert active == "green"
    finally:
        _cli("redirect", "green", "--force", config=w.config)
