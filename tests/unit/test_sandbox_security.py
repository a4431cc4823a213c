"""`sandbox up` provisions the service accounts once when the world has Prefect; `sandbox status`
says whether they are there, and what happens without Prefect (no server, no database here)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sandbox import world
from sandbox.proc import Service, save_services
from tbs_emergency.cli import app

pytestmark = pytest.mark.unit

API = "http://127.0.0.1:4200/api"


def _services(directory: Path, prefect: bool) -> None:
    def svc(name: str, port: int, **extra: str) -> Service:
        return Service(name, 1, "127.0.0.1", port, f"http://127.0.0.1:{port}", "", dict(extra))

    services = {"mysql-green": svc("mysql-green", 1, socket=str(directory / "mysql.sock"))}
    if prefect:
        services["prefect"] = svc("prefect", 4200, api_url=API)
    directory.mkdir(parents=True, exist_ok=True)
    save_services(directory / "services.json", services)


def _world(directory: Path, prefect: bool) -> world._World:
    _services(directory, prefect)
    w = world._World(directory)
    w.ports = {"mysql-green": 1}
    return w


def test_without_prefect_nothing_is_provisioned_and_status_says_why(tmp_path: Path) -> None:
    w = _world(tmp_path, prefect=False)
    lines: list[str] = []
    got = world._service_accounts(w, tmp_path / "tbs.toml", True, False, "separate", lines.append)
    assert got == {"provisioned": False, "why": world.NO_PREFECT}
    assert not (tmp_path / world.SECURITY_FILE).exists()
    assert "Secret blocks" in lines[0] and "rotate-credentials" in lines[0]
    status = world.security_status(tmp_path)
    assert status["provisioned"] is False and "Prefect API" in status["why"]

    shown = CliRunner().invoke(app, ["sandbox", "status", "--dir", str(tmp_path)])
    assert "service accounts: NOT provisioned" in shown.output
    assert "sandbox.security provision" in " ".join(shown.output.split())
    as_json = CliRunner().invoke(app, ["sandbox", "status", "--dir", str(tmp_path), "--json"])
    assert json.loads(as_json.output)["security"]["provisioned"] is False


def test_with_prefect_it_provisions_once_then_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = _world(tmp_path, prefect=True)
    assert world.security_status(tmp_path)["provisioned"] is False  # not yet
    calls: list[dict[str, Any]] = []

    def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append({"argv": argv, "env": kw["env"]})
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(world.subprocess, "run", run)
    first = world._service_accounts(
        w, tmp_path / "tbs.toml", True, False, "separate", lambda _m: None
    )
    assert first["provisioned"] is True and first["prefect_api"] == API
    assert first["blocks"] == world.SERVICE_ACCOUNT_BLOCKS
    (call,) = calls
    assert call["argv"][1:4] == ["-m", "sandbox.security", "provision"]
    assert call["env"]["PREFECT_API_URL"] == API  # the world's Prefect, not the caller's
    marker = json.loads((tmp_path / world.SECURITY_FILE).read_text())
    assert world.security_status(tmp_path) == world._security_summary(marker)

    # a later up: the accounts are still there -> no provisioning, the marker stays as it was
    again = world._service_accounts(
        w, tmp_path / "tbs.toml", True, True, "separate", lambda _m: None
    )
    assert again == first and len(calls) == 1
    assert json.loads((tmp_path / world.SECURITY_FILE).read_text()) == marker

    # they are gone (a Prefect database deleted, say): provisioned again
    world._service_accounts(w, tmp_path / "tbs.toml", True, False, "separate", lambda _m: None)
    assert len(calls) == 2

    shown = CliRunner().invoke(app, ["sandbox", "status", "--dir", str(tmp_path)])
    assert "service accounts: tbs_svc provisioned" in " ".join(shown.output.split())


def test_a_failed_provisioning_fails_up_with_its_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = _world(tmp_path, prefect=True)
    err = "Traceback...\nprovision failed: mysql service account tbs_svc: OperationalError: x\n"
    monkeypatch.setattr(
        world.subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(argv, 1, "", err)
    )
    with pytest.raises(world.WorldError, match="provision failed: mysql service account tbs_svc"):
        world._service_accounts(w, tmp_path / "tbs.toml", True, False, "separate", lambda _m: None)
    assert not (tmp_path / world.SECURITY_FILE).exists()
    assert world.security_status(tmp_path)["provisioned"] is False


def test_without_heavydb_only_the_mysql_account_is_provisioned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = _world(tmp_path, prefect=True)
    argvs: list[list[str]] = []
    monkeypatch.setattr(
        world.subprocess,
        "run",
        lambda argv, **kw: argvs.append(argv) or subprocess.CompletedProcess(argv, 0, "", ""),
    )
    got = world._service_accounts(
        w, tmp_path / "tbs.toml", False, False, "separate", lambda _m: None
    )
    assert list(got["blocks"]) == ["mysql"]
    assert argvs[0][-2:] == ["--engine", "mysql"] and "heavydb" not in argvs[0]
