"""The pull step of every deployment: enter the project directory, or fail the run saying why.

prefect.yaml declares it as

    pull:
      - deployments.steps.enter_project:
          directory: "{{ $TBS_EMERGENCY_HOME }}"

`tbs-emergency deploy` writes the literal project directory there instead of the template.
`prefect deploy` resolves the template when it registers the deployment if TBS_EMERGENCY_HOME
is set then; otherwise the template stays and is resolved in the run's environment (which the
deployment's job variables set). Prefect calls `enter_project` before the flow is loaded.

Why not Prefect's `set_working_directory`: with the variable unset the template becomes "",
`os.chdir` lands in the run's temporary directory, the step reports success and the run
crashes later with a missing-file error that names neither the variable nor the directory.
Here the run ends Failed, its state message naming the reason.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("tbs_emergency.deployments.steps")

HOME_VAR = "TBS_EMERGENCY_HOME"
CONFIG_VAR = "TBS_CONFIG"
# What makes a directory this project: prefect.yaml's entrypoints are relative to it.
MARKERS = ("flows", "prefect.yaml")


class ProjectNotFound(RuntimeError):
    """The run cannot find the project; the message is the reason shown on the run."""


def check_project(directory: str | os.PathLike[str] | None) -> Path:
    """The project directory, resolved; ProjectNotFound (with the reason) if it is not one."""
    text = str(directory or "").strip()
    if not text:
        raise ProjectNotFound(
            "the deployment names no project directory: its pull step resolved to an empty"
            f" string ({HOME_VAR} was not set when the run started; register with"
            f" `tbs-emergency deploy`, or set {HOME_VAR} when running `prefect deploy`)"
        )
    if "{{" in text:
        raise ProjectNotFound(
            f"the project directory is the unresolved template {text!r}: {HOME_VAR} was not"
            " set when the deployment was registered (see README, Production path)"
        )
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise ProjectNotFound(f"the project directory {text!r} is not an absolute path")
    if not path.is_dir():
        raise ProjectNotFound(f"the project directory {text} does not exist on this machine")
    missing = [m for m in MARKERS if not (path / m).exists()]
    if missing:
        raise ProjectNotFound(
            f"{text} is not the tbs-emergency project (no {' and no '.join(missing)} there)"
        )
    return path.resolve()


def check_environment(env: Mapping[str, str | None]) -> None:
    """The configuration the deployment gives its runs must be usable (ProjectNotFound if not)."""
    config = env.get(CONFIG_VAR)
    if config is None or config == "":
        return  # the flows then use ./tbs.toml, as documented
    if "{{" in config:
        raise ProjectNotFound(
            f"{CONFIG_VAR} is the unresolved template {config!r}: it was not set when the"
            " deployment was registered (see README, Production path)"
        )
    if not Path(config).expanduser().is_file():
        raise ProjectNotFound(f"{CONFIG_VAR}={config}: no such file on this machine")


def fail_flow_run(reason: str, flow_run_id: str | None = None) -> bool:
    """Put the run in Failed with `reason`, from inside its pull step; True if it took.

    Without this, the exception only reaches the process's stderr and Prefect marks the run
    Crashed ("process exited with status code 1"): the reason would be lost to the UI. Prefect
    refuses Crashed after Failed, so the Failed state and its message stay.
    """
    run_id = flow_run_id or os.environ.get("PREFECT__FLOW_RUN_ID")
    if not run_id:
        return False
    try:
        from prefect.client.orchestration import get_client
        from prefect.states import Failed

        with get_client(sync_client=True) as client:
            result = client.set_flow_run_state(
                run_id, Failed(message=f"pull step enter_project: {reason}")
            )
        log.error("flow run %s cannot start: %s", run_id, reason, extra={"flow_run_id": run_id})
        return str(result.status.value).upper() == "ACCEPT"
    except Exception as exc:  # the raise below still stops the run (Crashed, not Failed)
        log.error("could not mark flow run %s failed (%s): %s", run_id, exc, reason)
        return False


def enter_project(directory: str = "") -> dict[str, str]:
    """Pull step: check the project and the run's configuration, then make the project the
    working directory (and importable) for the flow run."""
    try:
        root = check_project(directory)
        check_environment(os.environ)
    except ProjectNotFound as exc:
        fail_flow_run(str(exc))
        raise
    os.chdir(root)
    # Prefect passes sys.path entries added by pull steps on to the engine: a checkout that is
    # not installed in the environment still imports its own modules.
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return {"directory": str(root)}
