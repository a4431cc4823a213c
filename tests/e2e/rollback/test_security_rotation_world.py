"""Credential rotation in a world just brought up with its Prefect server: nothing provisioned by
hand (`sandbox up` did it), the world's executor runs `rotate-credentials` (prefect.yaml) with
the `tbs.security.alert` automation, the CLI rotates too, and a second `up` changes nothing.

Passwords stay inside `_Passwords` (its repr hides them), so no assertion message shows one.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from flows.rollback_drill import Drill
from sandbox import world
from sandbox.proc import LOOPBACK, load_services

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[3]
ENGINES = ("mysql", "heavydb")
SERVER = {
    engine: world.store_service(engine, world.SERVICE_ACCOUNT_ENV, "separate") for engine in ENGINES
}  # engine -> the world's server holding the service accounts


class _Passwords:
    """Block values by label (`before`, `deployed`, `cli`) and engine; never printed."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], str] = {}

    def __repr__(self) -> str:
        return "<passwords>"

    def read(self, label: str) -> None:
        from prefect.blocks.system import Secret

        for engine in ENGINES:
            value = Secret.load(world.SERVICE_ACCOUNT_BLOCKS[engine]).get()
            self._values[(label, engine)] = str(value)

    def shown_in(self, label: str, engine: str, text: str) -> bool:
        return self._values[(label, engine)] in text

    def digest(self, label: str, engine: str) -> str:
        return hashlib.sha256(self._values[(label, engine)].encode()).hexdigest()

    def logs_in(self, drill: Drill, label: str, engine: str) -> bool:
        """Does the password `label` of `engine` log in as tbs_svc, directly at the server?"""
        port = int(load_services(drill.dir / "services.json")[SERVER[engine]].port)
        password = self._values[(label, engine)]
        if engine == "mysql":
            import pymysql

            try:
                pymysql.connect(
                    host=LOOPBACK,
                    port=port,
                    user=world.SERVICE_ACCOUNT,
                    password=password,
                    connect_timeout=10,
                ).close()
            except pymysql.err.OperationalError as exc:
                assert exc.args[0] == 1045, "MariaDB failed otherwise than refusing the login"
                return False
            return True
        import heavydb

        try:
            heavydb.connect(
                host=LOOPBACK,
                port=port,
                user=world.SERVICE_ACCOUNT,
                password=password,
                dbname="heavyai",
            ).close()
        except Exception as exc:
            assert "Authentication failure" in str(exc), "HeavyDB failed otherwise"
            return False
        return True


def _api(drill: Drill) -> Any:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: drill.api_url})


def test_rotate_credentials_works_in_a_freshly_brought_up_world(rollback_drill: Drill) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.deployments import run_deployment

    drill = rollback_drill
    # 1. `up` provisioned the service accounts and their blocks (no `sandbox.security` by hand)
    status = world.security_status(drill.dir)
    assert status["provisioned"] is True, status
    assert status["prefect_api"] == drill.api_url
    marker = (drill.dir / world.SECURITY_FILE).read_text()
    pw = _Passwords()
    with _api(drill):
        pw.read("before")
        for engine in ENGINES:
            assert pw.logs_in(drill, "before", engine), engine

        # 2. the runner serves the security deployments and creates the security alert automation
        drill.start_runner()
        with get_client(sync_client=True) as client:
            names = {a.name for a in client.read_automations()}
            assert "tbs: security alert -> security incident response" in names
            for name in ("security-incident", "account-compromise", "security-lockdown"):
                assert client.read_deployment_by_name(f"{name.replace('-', '_')}/{name}")
            assert client.read_deployment_by_name("security_lockdown_lift/security-lockdown-lift")

        # 3. rotate-credentials through its deployment: the runner runs it
        run = run_deployment(
            "rotate_credentials/rotate-credentials",
            parameters={"params": {"config_path": drill.config_path}},
            timeout=600,
        )
        assert run.state is not None and run.state.is_completed(), run.state
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
        report = "\n".join(a.data for a in artifacts if isinstance(a.data, str))
        assert "**Result:** ok" in report, report
        pw.read("deployed")
        for engine in ENGINES:
            assert pw.digest("deployed", engine) != pw.digest("before", engine), engine
            assert not pw.logs_in(drill, "before", engine), f"{engine}: old password accepted"
            assert pw.logs_in(drill, "deployed", engine), f"{engine}: new password refused"

        # 4. and through the command line
        env = dict(os.environ, PREFECT_API_URL=drill.api_url)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        command = str(Path(sys.executable).with_name("tbs-emergency"))
        cli = subprocess.run(
            [command, "rotate-credentials", "--config", drill.config_path, "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-2000:]
        body = json.loads(cli.stdout)
        accounts = body["detail"]["rotation"]["accounts"]
        assert body["ok"] and [a["status"] for a in accounts] == ["rotated", "rotated"]
        pw.read("cli")
        for engine in ENGINES:
            assert not pw.logs_in(drill, "deployed", engine), f"{engine}: old password accepted"
            assert pw.logs_in(drill, "cli", engine), f"{engine}: new password refused"
            for label in ("before", "deployed", "cli"):  # never in the command's output
                assert not pw.shown_in(label, engine, cli.stdout + cli.stderr), label

        # 5. a second `up` is fast and changes nothing: same marker, the rotated passwords stay
        t0 = time.monotonic()
        again = world.up(drill.dir, rows=2000, prefect=True, log=lambda _m: None)
        took = time.monotonic() - t0
        assert again["security"]["provisioned"] is True
        assert (drill.dir / world.SECURITY_FILE).read_text() == marker
        pw.read("after-up")
        for engine in ENGINES:
            assert pw.digest("after-up", engine) == pw.digest("cli", engine), engine
            assert pw.logs_in(drill, "cli", engine), f"{engine}: up reset the rotated password"
        assert took < 30, f"a second up took {took:.1f}s"
