"""Configuration: defaults from the runbook, durations, overrides, secrets, error lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from tbs_emergency.config import Secret, load_settings, parse_duration, parse_percent
from tbs_emergency.errors import ConfigError

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "tbs.example.toml"

MINIMAL = """
[environments.blue]
app_url = "http://127.0.0.1:8001"
[environments.blue.heavydb]
[environments.blue.mysql]
password = "app-secret-1"
[environments.blue.redis]
[environments.green]
app_url = "http://127.0.0.1:8002"
[environments.green.heavydb]
port = 7000
[environments.green.mysql]
[environments.green.redis]
[traffic]
url = "http://127.0.0.1:8080"
[storage]
bucket = "b"
[metrics]
prometheus_url = "http://127.0.0.1:9090"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "tbs.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (600, 600.0),
        ("600s", 600.0),
        ("10m", 600.0),
        ("10_minutes", 600.0),
        ("10 minutes", 600.0),
        ("2h", 7200.0),
        ("1.5s", 1.5),
        ("250ms", 0.25),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["ten minutes", "10 fortnights", -1, True, None, ""])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_percent() -> None:
    assert parse_percent("25%") == 25.0
    assert parse_percent(5.0) == 5.0
    with pytest.raises(ValueError):
        parse_percent("150%")
    with pytest.raises(ValueError):
        parse_percent("lots")


def test_runbook_defaults(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL))
    perf = s.triggers.performance_degradation
    assert (perf.threshold, perf.baseline_rows_per_s) == (25.0, 37303.0)
    assert (perf.measurement_period, perf.consecutive_failures) == (600.0, 3)
    err = s.triggers.error_rate_spike
    assert (err.threshold, err.measurement_period, err.consecutive_measurements) == (5.0, 300.0, 3)
    res = s.triggers.resource_exhaustion
    assert (res.cpu_threshold, res.memory_threshold, res.disk_threshold) == (95.0, 95.0, 90.0)
    assert res.sustained_period == 120.0
    db = s.triggers.database_failures
    assert (db.connection_failures, db.time_window, db.response_time) == (3, 60.0, 10.0)
    assert s.integrity.sample_size == 1000


def test_example_file_loads_and_knows_shared_databases() -> None:
    s = load_settings(EXAMPLE)
    assert s.shares_database("blue", "green", "mysql")
    assert s.shares_database("blue", "green", "heavydb")


def test_green_with_its_own_heavydb_is_not_shared(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL))
    assert not s.shares_database("blue", "green", "heavydb")
    assert s.shares_database("blue", "green", "mysql")


def test_time_scale_scales(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL + "[triggers]\ntime_scale = 0.01\n"))
    assert s.triggers.scaled(
        s.triggers.performance_degradation.measurement_period
    ) == pytest.approx(6)


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TBS_STORAGE__BUCKET", "from-env")
    monkeypatch.setenv("TBS_ENVIRONMENTS__GREEN__MYSQL__PORT", "3399")
    s = load_settings(write(tmp_path, MINIMAL))
    assert s.storage.bucket == "from-env"
    assert s.environments["green"].mysql.port == 3399
    assert s.environments["green"].app_url == "http://127.0.0.1:8002"


def test_config_path_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TBS_CONFIG", str(write(tmp_path, MINIMAL)))
    assert load_settings().storage.bucket == "b"


def test_secrets_never_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(write(tmp_path, MINIMAL))
    pw = s.environments["blue"].mysql.password
    assert pw is not None and pw.get_secret_value() == "app-secret-1"
    assert "app-secret-1" not in repr(s) and "app-secret-1" not in str(pw)
    assert "app-secret-1" not in s.model_dump_json()
    monkeypatch.setenv("MY_PW", "from-env-pw")
    assert Secret.model_validate({"env": "MY_PW"}).get_secret_value() == "from-env-pw"


def test_missing_env_secret_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        Secret.model_validate({"env": "NOT_SET_ANYWHERE"}).get_secret_value()


def test_secret_needs_exactly_one_source() -> None:
    with pytest.raises(ValueError):
        Secret.model_validate({"env": "A", "block": "b"})


def test_one_line_per_problem(tmp_path: Path) -> None:
    bad = (
        MINIMAL.replace("port = 7000", 'port = "seven"').replace(
            "[traffic]\n", '[traffic]\nkind = "alb"\n'
        )
        + '[triggers.error_rate_spike]\nmeasurement_period = "soon"\nbogus = 1\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, bad))
    lines = info.value.problems
    assert any(line.startswith("environments.green.heavydb.port:") for line in lines)
    assert any("listener_arn" in line for line in lines)
    assert any(line.startswith("triggers.error_rate_spike.measurement_period:") for line in lines)
    assert "triggers.error_rate_spike.bogus: unknown field" in lines
    assert len(lines) == 4


def test_missing_blue_and_bad_toml(tmp_path: Path) -> None:
    no_blue = MINIMAL.replace("environments.blue", "environments.purple")
    with pytest.raises(ConfigError, match=r"must define blue and green \(missing: blue\)"):
        load_settings(write(tmp_path, no_blue))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[environments\n"))
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.toml")


def test_contact_naming_unknown_channel(tmp_path: Path) -> None:
    text = MINIMAL + '[[contacts]]\nname = "A"\nrole = "primary"\nchannels = ["nope"]\n'
    with pytest.raises(ConfigError, match="unknown channel 'nope'"):
        load_settings(write(tmp_path, text))


def test_production_drills_need_explicit_consent(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allow_production"):
        load_settings(write(tmp_path, MINIMAL + '[drills]\ntarget = "production"\n'))


def test_metric_query_templates(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL))
    assert s.metrics.query("throughput", "green", 600) == (
        'sum(rate(tbs_rows_ingested_total{env="green"}[600s]))'
    )
    with pytest.raises(ConfigError, match="not a valid template"):
        load_settings(write(tmp_path, MINIMAL + '[metrics.queries]\ncpu = "x{nope}"\n'))
