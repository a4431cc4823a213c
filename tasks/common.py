"""What every task needs: the settings, with Prefect Secret blocks wired in as a secret source."""

from __future__ import annotations

from functools import lru_cache

from tbs_emergency.config import Settings, load_settings, register_secret_resolver


def _read_secret_block(name: str) -> str:
    from prefect.blocks.system import Secret

    value = Secret.load(name).get()
    return value if isinstance(value, str) else str(value)


register_secret_resolver("block", _read_secret_block)


@lru_cache(maxsize=8)
def settings_for(config_path: str | None) -> Settings:
    """Load (once per process and path) the settings a flow run was given."""
    return load_settings(config_path)
