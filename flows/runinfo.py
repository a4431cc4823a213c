"""What the Prefect UI shows of an emergency run, and the one-at-a-time slot.

- `incident_run_name(prefix)`: a `flow_run_name` callable, `<prefix>-<incident>` from the run's
  `params.incident_id` (or `<prefix>-new-<HHMMSS>` until the flow opens one); `name_run` renames
  the running run once the incident is known and adds tags (severity, environment, incident).
- `rollback_slot(...)`: the global concurrency limit both rollback flows take around the part
  that acts (created if missing); `ensure_limit` creates it (also `tbs-emergency deploy`).

Prefect API failures here never stop a rollback: naming is cosmetic, and a slot that cannot be
taken because the API is unreachable is logged and the rollback proceeds (acting matters more
than orchestration bookkeeping); a slot held by another rollback is waited for.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("tbs.runinfo")


def _params_incident() -> str:
    try:
        from prefect.runtime import flow_run

        params: Any = flow_run.parameters.get("params")
    except Exception:
        return ""
    if params is None:
        return ""
    value = (
        params.get("incident_id")
        if isinstance(params, dict)
        else getattr(params, "incident_id", "")
    )
    return str(value or "")


def incident_run_name(prefix: str) -> Any:
    """A `flow_run_name` callable for flows whose `params` carry `incident_id`."""

    def name() -> str:
        inc = _params_incident()
        return f"{prefix}-{inc}" if inc else f"{prefix}-new-{datetime.now(UTC):%H%M%S}"

    name.__name__ = f"{prefix}_run_name"
    return name


def run_tags(severity: str, env: str, incident_id: str, *extra: str) -> list[str]:
    """`emergency` too: the paging automation watches runs with that tag, however started."""
    return ["emergency", f"severity:{severity}", f"env:{env}", f"incident:{incident_id}", *extra]


def name_run(name: str | None, tags: list[str]) -> None:
    """Rename the current flow run and add tags (kept: the tags it has). Never raises."""
    try:
        from prefect.client.orchestration import get_client
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        if ctx is None or ctx.flow_run is None:
            return
        fr = ctx.flow_run
        merged = list(dict.fromkeys([*(fr.tags or []), *tags]))
        with get_client(sync_client=True) as client:
            client.update_flow_run(fr.id, name=name or fr.name, tags=merged)
        fr.tags = merged
        if name:
            fr.name = name
    except Exception as exc:  # cosmetic: never in the way of the emergency
        log.warning("could not name the flow run: %s", exc)


def ensure_limit(name: str, limit: int = 1) -> str | None:
    """Create the global concurrency limit if missing (an existing one is left as it is, its
    limit included: an operator may have changed it). None, or why it could not."""
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
        from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

        with get_client(sync_client=True) as client:
            try:
                client.read_global_concurrency_limit_by_name(name)
                return None
            except ObjectNotFound:
                pass
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=limit)
                )
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def rollback_slot(
    name: str, lease_s: float, wait_s: float, on_wait: Any = None
) -> Iterator[dict[str, Any]]:
    """Hold the one slot of `name` (limit 1) while the body acts.

    Yields what happened (`waited_s`, `held`, `error`). TimeoutError when another holder keeps
    it longer than `wait_s`. Strict: a missing limit is created first, never silently ignored.
    """
    from prefect.concurrency.sync import concurrency

    info: dict[str, Any] = {"limit": name, "held": False, "waited_s": 0.0, "error": None}
    err = ensure_limit(name)
    if err:
        info["error"] = f"the concurrency limit could not be checked or created: {err}"
        log.error("%s; acting without the slot", info["error"])
        yield info
        return
    if on_wait is not None:
        on_wait()
    t0 = datetime.now(UTC)
    cm = concurrency(
        name,
        occupy=1,
        timeout_seconds=wait_s,
        lease_duration=lease_s,
        strict=True,
        raise_on_lease_renewal_failure=False,
    )
    try:
        cm.__enter__()
    except TimeoutError:
        raise
    except Exception as exc:  # the API went away between the check and the acquisition
        info["error"] = f"the concurrency slot could not be taken: {type(exc).__name__}: {exc}"
        log.error("%s; acting without the slot", info["error"])
        yield info
        return
    info["held"] = True
    info["waited_s"] = round((datetime.now(UTC) - t0).total_seconds(), 3)
    try:
        yield info
    except BaseException as exc:
        if not cm.__exit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        cm.__exit__(None, None, None)


VALIDATION_DEPLOYMENT = "recovery_validation/recovery-validation"


def start_validation(
    cfg: str | None, incident_id: str, env: str, scale: float, decided_by: str
) -> dict[str, Any]:
    """The full recovery validation of `env` as its own flow run, linked to the incident.

    Through the `recovery-validation` deployment (`run_deployment(..., timeout=0)`: the caller
    does not wait; the run is named `validation-<incident>` and tagged `incident:<id>`); where
    no such deployment is registered (an in-process CLI run without a Prefect server), as a
    subflow here. Either way the validation journals its verdict in the incident and, when it
    fails, reopens and escalates it. What was started: `{mode, name, flow_run_id | verdict}`.
    """
    from flows.recovery_validation import ValidationParams, validate_recovery

    vp = ValidationParams(
        config_path=cfg,
        env=env,
        incident_id=incident_id,
        escalate=True,
        decided_by=decided_by,
        time_scale=scale,
    )
    name = f"validation-{incident_id}"
    try:
        from prefect.deployments import run_deployment

        fr = run_deployment(
            VALIDATION_DEPLOYMENT,
            parameters={"params": vp.model_dump(mode="json")},
            timeout=0,
            flow_run_name=name,
            tags=["tbs", "validation", f"incident:{incident_id}", f"env:{env}"],
        )
        return {"mode": "deployment", "flow_run_id": str(fr.id), "name": name}  # type: ignore[union-attr]
    except Exception as exc:
        from prefect.exceptions import ObjectNotFound

        if not isinstance(exc, ObjectNotFound):
            from prefect import get_run_logger

            get_run_logger().warning(
                "recovery-validation deployment not started (%s): in process", exc
            )
        verdict = validate_recovery(vp)
        return {
            "mode": "in-process",
            "name": name,
            "passed": verdict.passed,
            "headline": verdict.headline(),
        }
