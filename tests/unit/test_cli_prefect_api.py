"""The CLI points Prefect at `[prefect] api_url` (the shell's PREFECT_API_URL wins), so no
command boots a temporary Prefect server."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tbs_emergency.cli.common import use_prefect_api

pytestmark = pytest.mark.unit


def _settings(url: str | None) -> SimpleNamespace:
    return SimpleNamespace(prefect=SimpleNamespace(api_url=url))


def test_configured_api_is_used_when_the_shell_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert use_prefect_api(_settings("http://127.0.0.1:4200/api")) == "http://127.0.0.1:4200/api"
    import os

    assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"


def test_the_shell_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://shell:4200/api")
    assert use_prefect_api(_settings("http://config:4200/api")) == "http://shell:4200/api"
    import os

    assert os.environ["PREFECT_API_URL"] == "http://shell:4200/api"


def test_nothing_configured_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert use_prefect_api(_settings(None)) is None
    import os

    assert "PREFECT_API_URL" not in os.environ


def test_prefect_already_imported_sees_the_configured_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    from prefect.context import refresh_global_settings_context
    from prefect.settings import get_current_settings

    try:
        use_prefect_api(_settings("http://127.0.0.1:4299/api"))
        assert get_current_settings().api.url == "http://127.0.0.1:4299/api"
    finally:
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
        refresh_global_settings_context()
