"""Guards against destructive or ambiguous input: protected accounts, mass deletes in a sync,
non-transactional flashback, naive timestamps, incident ids, malformed configuration."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tbs_emergency.cli import app
from tbs_emergency.config import load_settings
from tests.unit.test_config import MINIMAL
from tests.unit.test_dbops_sync import SPEC, Store, pair, row

pytestmark = pytest.mark.unit

GOOD_ID = "inc-20261207T235449Z-green-cf01"


def _config(tmp_path: Path, extra: str = "") -> Path:
    p = tmp_path / "tbs.toml"
    p.write_text(MINIMAL + extra)
    return p


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


# -- 1. protected accounts ------------------------------------------------------------------------

PROTECTING = """
[database_emergency]
priority_users = { mysql = ["dba_on_call"], heavydb = ["hd_ops"] }
mysql_admin = { user = "tbs_admin", password = "admin-secret-9" }
[validation.performance]
mysql_account = { user = "tbs_bench" }
"""


def test_the_tools_own_accounts_and_priority_users_are_protected(tmp_path: Path) -> None:
    from tbs_emergency.security.protected import protected_accounts, suspension_refusal

    settings = load_settings(_config(tmp_path, PROTECTING))
    protected = protected_accounts(settings)
    assert set(protected) == {"tbs_admin", "tbs_app", "admin", "tbs_bench", "dba_on_call", "hd_ops"}
    assert any("database_emergency.mysql_admin" in r for r in protected["tbs_admin"])
    assert any("environments.blue.mysql.user" in r for r in protected["tbs_app"])
    assert any("heavydb.user" in r for r in protected["admin"])
    assert any("priority_users.mysql" in r for r in protected["dba_on_call"])
    assert suspension_refusal(settings, "mallory") is None
    assert suspension_refusal(settings, "TBS_ADMIN") is None  # MySQL names are case-sensitive
    why = suspension_refusal(settings, "tbs_admin")
    assert why is not None and "\n" not in why and "--force" in why
    assert "admin-secret-9" not in why


@pytest.mark.parametrize("user", ["tbs_admin", "tbs_app", "admin", "dba_on_call"])
def test_account_suspend_refuses_a_protected_account_in_one_line(tmp_path: Path, user: str) -> None:
    cfg = _config(tmp_path, PROTECTING)
    r = CliRunner().invoke(app, ["account", "suspend", user, "--config", str(cfg)])
    assert r.exit_code == 2, r.output
    errors = _error_lines(r.output)
    assert len(errors) == 1 and f"refused to suspend '{user}'" in errors[0], r.output
    assert "nothing was changed" in errors[0] and "admin-secret-9" not in r.output


def test_account_params_carry_force() -> None:
    from flows.account_compromise import AccountParams

    assert AccountParams(user="tbs_app").force is False
    assert AccountParams(user="tbs_app", force=True).force is True


# -- 2. db sync: mass deletes -------------------------------------------------------------------


class SnapStore(Store):
    def __init__(self, name: str, rows: list[dict[str, Any]]) -> None:
        super().__init__(name, rows)
        self.snapshots: dict[str, list[dict[str, Any]]] = {}
        self.fail_snapshot = False

    def snapshot_table(self, table: str, snapshot: str) -> int:
        from tbs_emergency.errors import Refused

        if self.fail_snapshot:
            raise Refused(self.name, "snapshot", "(1142) CREATE command denied")
        self.snapshots[snapshot] = [dict(r) for r in self.data]
        return len(self.data)


NOW = dt.datetime(2026, 12, 7, 10, 15, 0, tzinfo=dt.UTC)


def _sync(blue: Store, green: Store, **kw: Any) -> Any:
    from tbs_emergency.dbops import sync

    return sync.sync_table(blue.source, green.source, blue, green, SPEC, now=NOW, **kw)


def test_mass_delete_refusal_names_table_counts_and_share() -> None:
    from tbs_emergency.dbops.sync import mass_delete_refusal

    assert mass_delete_refusal("trades", "mysql[green]", 0, 0, 0, 0.01) is None
    assert mass_delete_refusal("trades", "mysql[green]", 1, 100, 99, 0.01) is None
    why = mass_delete_refusal("trades", "mysql[green]", 2, 100, 98, 0.01)
    assert why is not None
    assert "trades" in why and "delete 2 of 100 rows of mysql[green]" in why
    assert "--allow-mass-delete" in why and "nothing was written" in why


def test_an_empty_source_never_wipes_the_target() -> None:
    blue = SnapStore("mysql[blue]", [])
    green = SnapStore("mysql[green]", [row(i) for i in range(1, 501)])
    before = [dict(r) for r in green.data]
    result = _sync(blue, green, max_delete_share=0.01, snapshot=True)
    assert not result.ok and result.refused is not None
    assert "delete 500 of 500 rows" in result.refused and "the source has 0 rows" in result.refused
    assert green.writes == 0 and green.data == before and not green.snapshots


def test_a_dry_run_says_a_real_run_would_refuse() -> None:
    blue = SnapStore("mysql[blue]", [])
    green = SnapStore("mysql[green]", [row(i) for i in range(1, 11)])
    result = _sync(blue, green, max_delete_share=0.01, snapshot=True, dry_run=True)
    assert result.ok and result.refused is not None
    assert any(n.startswith("a real run would refuse") for n in result.notes)
    assert green.writes == 0


def test_allowed_deletes_are_preceded_by_a_snapshot() -> None:
    blue, green = pair(100)
    blue, green = SnapStore(blue.name, blue.data), SnapStore(green.name, green.data)
    before = [dict(r) for r in green.data]
    result = _sync(blue, green, max_delete_share=None, snapshot=True)
    assert result.ok, result.problems
    assert result.snapshot == "trades__pre_sync_20261207T101500Z"
    assert green.snapshots[result.snapshot] == before and result.snapshot_rows == len(before)
    assert any(result.snapshot in line for line in result.lines())
    assert result.actions[0].what.startswith("snapshot trades")


def test_no_snapshot_no_write() -> None:
    blue, green = pair(100)
    blue, green = SnapStore(blue.name, blue.data), SnapStore(green.name, green.data)
    green.fail_snapshot = True
    before = [dict(r) for r in green.data]
    result = _sync(blue, green, snapshot=True)
    assert not result.ok and "could not be copied" in result.problems[0]
    assert green.writes == 0 and green.data == before


def test_within_the_share_the_sync_goes_ahead() -> None:
    blue = SnapStore("b", [row(i) for i in range(1, 201)])
    green = SnapStore("g", [row(i) for i in range(1, 202)])  # one extra of 201: 0.5%
    result = _sync(blue, green, max_delete_share=0.01, snapshot=True)
    assert result.ok and result.deleted == 1 and result.snapshot


def test_snapshot_names_fit_mysql_identifiers() -> None:
    from tbs_emergency.dbops.sync import snapshot_name

    name = snapshot_name("t" * 80, NOW)
    assert len(name) == 64 and name.endswith("__pre_sync_20261207T101500Z")


def test_sync_config_default_and_cli_option(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path))
    assert settings.database_emergency.sync_max_delete_share == 0.01
    help_text = CliRunner().invoke(app, ["db", "sync", "--help"]).output
    assert "--allow-mass-delete" in help_text


# -- 3. flashback: non-transactional tables -----------------------------------------------------


def test_non_transactional_tables_are_named_with_their_engine() -> None:
    from tbs_emergency.recovery.flashback import non_transactional, non_transactional_refusals

    bad = non_transactional({"a": "InnoDB", "b": "MyISAM", "c": "Aria", "d": "MEMORY"})
    assert bad == {"b": "MyISAM", "c": "Aria", "d": "MEMORY"}
    lines = non_transactional_refusals("arch", bad)
    assert lines[0].startswith("table arch.b uses the MyISAM engine, which is not transactional")


def test_a_bad_input_refusal_exits_2_and_a_failure_exits_1() -> None:
    from flows.flashback import FlashbackReport
    from tbs_emergency.cli.recovery_cmds import _failure

    refused = FlashbackReport(flashback_id="x", ok=False, dry_run=True, bad_input=True)
    refused.refusals = ["table a.b uses the MyISAM engine"]
    assert _failure(refused, False, "flashback").exit_code == 2
    failed = FlashbackReport(flashback_id="x", ok=False, dry_run=True, refusals=["binlog off"])
    assert _failure(failed, False, "flashback").exit_code == 1


# -- 4. naive timestamps --------------------------------------------------------------------------


def test_one_parser_refuses_timestamps_without_a_zone() -> None:
    from tbs_emergency.timestamps import parse_instant

    assert parse_instant("2026-12-07T10:00:00Z") == dt.datetime(2026, 12, 7, 10, tzinfo=dt.UTC)
    assert parse_instant("2026-12-07 11:00+01:00").astimezone(dt.UTC).hour == 10
    with pytest.raises(ValueError) as naive:
        parse_instant("2026-12-07 10:00")
    assert str(naive.value) == (
        "timestamp '2026-12-07 10:00' has no time zone; add one, e.g. 2026-12-07T10:00:00Z"
        " or 2026-12-07T10:00:00+00:00"
    )
    with pytest.raises(ValueError, match="has no time zone"):
        parse_instant(dt.datetime(2026, 12, 7, 10))
    with pytest.raises(ValueError, match="is not a timestamp"):
        parse_instant("yesterday")


@pytest.mark.parametrize(
    "args",
    [
        ["recover", "mysql", "--to", "2026-12-07 10:00", "--target-database", "x"],
        ["recover", "heavydb", "--to", "2026-12-07 10:00"],
        ["flashback", "--since", "2026-12-07 10:00", "--tables", "t"],
        ["db", "sync", "--since", "2026-12-07 10:00"],
    ],
)
def test_every_time_option_refuses_a_naive_timestamp(args: list[str], tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["--config", str(tmp_path / "none.toml"), *args])
    assert r.exit_code == 2, r.output
    errors = _error_lines(r.output)
    assert len(errors) == 1 and "timestamp '2026-12-07 10:00' has no time zone" in errors[0]


def test_flow_parameters_refuse_naive_timestamps() -> None:
    from flows.db_sync import SyncParams
    from flows.flashback import FlashbackParams
    from flows.point_in_time_recovery import HeavyPitrParams, PitrParams

    naive = "2026-12-07T10:00:00"
    for make in (
        lambda: FlashbackParams(since=naive, tables=["t"]),
        lambda: FlashbackParams(since=dt.datetime(2026, 12, 7, 10), tables=["t"]),
        lambda: PitrParams(target_at=naive, target_database="x"),
        lambda: HeavyPitrParams(target_at=naive),
        lambda: SyncParams(since=naive),
    ):
        with pytest.raises(ValueError, match="has no time zone"):
            make()
    ok = PitrParams(target_at="2026-12-07T10:00:00Z", target_database="x")
    assert ok.target_at.tzinfo is not None
    assert SyncParams(since="2026-12-07T10:00:00+00:00").since


# -- 5. incident ids ------------------------------------------------------------------------------


def test_the_ids_the_code_makes_are_valid_and_nothing_else() -> None:
    from tbs_emergency.cli.incident_cmds import operations_log_id
    from tbs_emergency.domain.incident import incident_id, is_incident_id, validate_incident_id

    now = dt.datetime.now(dt.UTC)
    for made in (
        incident_id("green", now),
        incident_id("blue", now, salt="manual"),
        incident_id("all", now, salt="account:x"),
        incident_id("green-2", now),
        operations_log_id(now),
        GOOD_ID,
    ):
        assert validate_incident_id(made) == made
    for bad in ("open", "../x", "inc-1", f"{GOOD_ID}\n", f"{GOOD_ID}/../x", "", "ops-2026"):
        assert not is_incident_id(bad)
    with pytest.raises(ValueError, match=re.escape("'../x' is not an incident id")):
        validate_incident_id("../x")


@pytest.mark.parametrize(
    "args",
    [
        ["incident", "show", "open"],
        ["incident", "note", "../x", "text"],
        ["incident", "resolve", "open"],
        ["notify", "immediate", "--incident", "open"],
        ["ack", "../x"],
        ["rollback", "--incident", "open"],
        ["redirect", "blue", "--incident", "open"],
        ["db", "sync", "--incident", "../x"],
        ["account", "suspend", "mallory", "--incident", "open"],
        ["flashback", "--since", "2026-12-07T10:00:00Z", "--tables", "t", "--incident", "open"],
        ["report", "open"],
        ["validate", "--incident", "open"],
    ],
)
def test_every_incident_id_input_refuses_a_bad_id(args: list[str], tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["--config", str(tmp_path / "none.toml"), *args])
    assert r.exit_code == 2, r.output
    errors = _error_lines(r.output)
    assert len(errors) == 1 and "is not an incident id" in errors[0], r.output


def test_flow_parameters_refuse_bad_incident_ids() -> None:
    from flows.account_compromise import AccountParams
    from flows.db_sync import SyncParams
    from flows.escalation import EscalationParams
    from flows.flashback import FlashbackParams
    from flows.followups import FollowUpParams
    from flows.incident_report import IncidentReportParams
    from flows.notify import NotifyParams

    since = "2026-12-07T10:00:00Z"
    for make in (
        lambda bad: AccountParams(user="u", incident_id=bad),
        lambda bad: SyncParams(incident_id=bad),
        lambda bad: EscalationParams(incident_id=bad),
        lambda bad: FlashbackParams(since=since, tables=["t"], incident_id=bad),
        lambda bad: FollowUpParams(incident_id=bad, window="24h"),
        lambda bad: IncidentReportParams(incident_id=bad),
        lambda bad: NotifyParams(template="immediate", incident_id=bad),
    ):
        with pytest.raises(ValueError, match=re.escape("'../x' is not an incident id")):
            make("../x")
        assert make(GOOD_ID).incident_id == GOOD_ID
    assert AccountParams(user="u").incident_id == ""  # none given: a new incident
    assert SyncParams().incident_id is None


# -- 6. malformed configuration -------------------------------------------------------------------


def _config_check(env: dict[str, str]) -> Any:
    return CliRunner().invoke(app, ["config", "check"], env=env)


def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "tbs.toml"
    bad.write_bytes(MINIMAL.encode() + b'\nx = "\xff\xfe"\n')
    r = _config_check({"TBS_CONFIG": str(bad)})
    assert r.exit_code == 2 and not isinstance(r.exception, UnicodeDecodeError), r.output
    at = len(MINIMAL.encode()) + len(b'\nx = "')
    assert _error_lines(r.output) == [f"error: {bad}: not UTF-8 text (byte {at}): save it as UTF-8"]


def test_a_config_that_is_not_toml_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "tbs.toml"
    bad.write_text("[environments.blue\napp_url = 1\n")
    r = _config_check({"TBS_CONFIG": str(bad)})
    assert r.exit_code == 2, r.output
    (line,) = _error_lines(r.output)
    assert "not valid TOML" in line and "Traceback" not in r.output


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("TBS_ENVIRONMENTS", '{"blue": {"mysql": {"password": "sekret-77"', "TBS_ENVIRONMENTS"),
        ("TBS_ENVIRONMENTS__BLUE", "{not json sekret-77", "TBS_ENVIRONMENTS__BLUE"),
        ("TBS_ENVIRONMENTS__BLUE__MYSQL__PORT", "sekret-77", "TBS_ENVIRONMENTS__BLUE__MYSQL__PORT"),
    ],
)
def test_a_malformed_environment_override_is_one_line_without_its_value(
    tmp_path: Path, name: str, value: str, expected: str
) -> None:
    r = _config_check({"TBS_CONFIG": str(_config(tmp_path)), name: value})
    assert r.exit_code == 2, r.output
    (line,) = _error_lines(r.output)
    assert expected in line and "sekret-77" not in r.output and "Traceback" not in r.output
