"""The documented configuration, `password = { block = ... }`, in every entry point.

The world's database passwords are put into Prefect Secret blocks and a copy of its config names
the blocks instead of the literals. `config check` and `status` read them (no tasks imported),
and the watchdog, run against the healthy world, raises nothing: no incident, no
`misconfigured`, no database failure (each probe a fresh connection).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.e2e.conftest import World

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

WATCH_S = float(os.environ.get("TBS_E2E_WATCH_S", "45"))


@pytest.fixture(scope="module")
def block_config(sandbox_world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A copy of the world's config whose database passwords are Secret blocks."""
    from prefect.blocks.system import Secret
    from prefect.context import refresh_global_settings_context

    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = sandbox_world.api_url
    refresh_global_settings_context()
    text = Path(sandbox_world.config).read_text()
    out: list[str] = []
    section = ""
    suffix = uuid.uuid4().hex[:6]
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip()
        m = re.match(r'^password = "(.*)"$', line)
        kind = re.match(r"^\[environments\.(blue|green)\.(mysql|heavydb)\]$", section)
        if m and kind:
            name = f"tbs-e2e-{kind.group(1)}-{kind.group(2)}-{suffix}"
            Secret(value=json.loads(f'"{m.group(1)}"')).save(name, overwrite=True)
            line = f'password = {{ block = "{name}" }}'
        out.append(line)
    path = tmp_path_factory.mktemp("block-config") / "tbs.toml"
    path.write_text("\n".join(out) + "\n")
    path.chmod(0o600)
    assert path.read_text().count("block = ") >= 4
    try:
        yield str(path)
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved
        refresh_global_settings_context()


def _cli(config: str, *args: str) -> tuple[int, dict[str, Any]]:
    from tbs_emergency.cli import app

    r = CliRunner().invoke(app, ["--config", config, *args, "--json"])
    out = r.stdout
    return r.exit_code, (json.loads(out[out.index("{") :]) if "{" in out else {"raw": r.output})


def test_config_check_and_status_read_secret_blocks(block_config: str) -> None:
    _code, doc = _cli(block_config, "config", "check")
    text = json.dumps(doc)
    assert "no Prefect secret resolver" not in text and "cannot be read" not in text, text[:2000]
    assert not any(sys.get("misconfigured") for sys in doc["systems"]), text[:2000]
    dbs = [s for s in doc["systems"] if s["system"].startswith(("mysql", "heavydb"))]
    assert dbs and all(s["reachable"] for s in dbs), dbs
    _code, doc = _cli(block_config, "status")
    assert "cannot be read" not in json.dumps(doc), json.dumps(doc)[:2000]


def test_watch_with_secret_blocks_runs_clean_against_healthy_databases(block_config: str) -> None:
    from flows.watchdog import Watchdog
    from tbs_emergency.config import load_settings

    settings = load_settings(block_config)
    assert settings.environment("green").mysql.password.source.startswith("block:")  # type: ignore[union-attr]
    events: list[tuple[str, dict[str, str], dict[str, Any]]] = []
    wd = Watchdog(settings, emit=lambda e, r, p: events.append((e, r, p)), notify_blind=False)
    stats = wd.run(max_seconds=WATCH_S)
    names = [e[0] for e in events]
    assert stats.incidents == [] and stats.fired == [], stats.fired[:3]
    assert stats.misconfigured == [], stats.misconfigured[:3]
    assert "tbs.trigger.fired" not in names and "tbs.monitoring.misconfigured" not in names
    probes = list(wd._probes)
    assert len(probes) > 20, len(probes)
    assert {p.system for p in probes} == {"mysql", "heavydb"}
    failed = [p for p in probes if not p.ok]
    assert not failed, failed[:3]
    db_blind = [b for b in stats.blind if b["rule"] in ("database_failures", "outage")]
    assert not db_blind, db_blind[:3]
    assert stats.evaluations > 200 and stats.heartbeats >= 2
    assert names.count("tbs.watchdog.heartbeat") == stats.heartbeats


def _last_watchdog_event(client: Any) -> str:
    from datetime import UTC, datetime, timedelta

    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    now = datetime.now(UTC)
    page = client.read_events(
        EventFilter(
            event=EventNameFilter(name=["tbs.watchdog.heartbeat", "tbs.watchdog.stopped"]),
            occurred=EventOccurredFilter(since=now - timedelta(hours=1), until=now),
        ),
        limit=1,
    )
    return page.events[0].event if page.events else ""


def test_a_silent_watchdog_is_paged_once_per_silence(sandbox_world: World) -> None:
    """A watchdog that dies (SIGKILL: no word of goodbye) after its first heartbeat: no
    heartbeat for 60 s, so prefect.yaml's proactive automation runs `watchdog_silent`, which
    pages the primary contact on every channel (PagerDuty and e-mail included), once for this
    silence. (A clean stop says `tbs.watchdog.stopped` and is not paged.)"""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    sink = sandbox_world.url("sink")
    pages: list[dict[str, Any]] = []
    runs: list[Any] = []
    env = {**os.environ, "PREFECT_API_URL": sandbox_world.api_url}
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("tbs-emergency")),
            "watch",
            "--config",
            sandbox_world.config,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with temporary_settings(updates={PREFECT_API_URL: sandbox_world.api_url}):
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                with get_client(sync_client=True) as client:
                    if _last_watchdog_event(client) == "tbs.watchdog.heartbeat":
                        break
                assert proc.poll() is None, "the watchdog exited by itself"
                time.sleep(1)
            else:
                pytest.fail("the watchdog never sent a heartbeat")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{sink}/deliveries", timeout=10) as resp:
                items = json.load(resp)["deliveries"]
            pages = [d for d in items if "WATCHDOG SILENT" in json.dumps(d)]
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(
                        name=DeploymentFilterName(any_=["watchdog-silent"])
                    )
                )
            if pages and any(r.state_type and r.state_type.value == "COMPLETED" for r in runs):
                break
            time.sleep(5)
    assert runs, "the proactive automation never ran watchdog-silent"
    # one page per silence: the body names the silence (its last heartbeat)
    silences: dict[str, list[str]] = {}

    def silence(d: dict[str, Any]) -> str:
        m = re.search(r"last heartbeat: ([^)]*)\)", json.dumps(d))
        return m.group(1) if m else "?"

    for d in pages:
        silences.setdefault(silence(d), []).append(d["channel"])
    newest = silence(pages[-1])
    assert {"pagerduty", "email"} <= set(silences[newest]), silences[newest]
    # every further run finds the silence paged already (two runs racing may both page)
    for channels in silences.values():
        assert max(channels.count(ch) for ch in channels) <= 2, silences
