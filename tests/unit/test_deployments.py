"""prefect.yaml and deployments/specs.py declare the same deployments and automations."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deployments import specs

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _yaml() -> dict[str, dict]:
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["name"]: d for d in doc["deployments"]}


def test_same_deployments_entrypoints_and_limits() -> None:
    declared = _yaml()
    assert set(specs.ALL) <= set(declared)  # prefect.yaml also holds the drills' deployments
    served = {kw["name"]: (flow, kw) for flow, kw in specs.served_flows()}
    assert set(served) == set(specs.ALL)
    for name, (flow, kw) in served.items():
        module, func = declared[name]["entrypoint"].split(":")
        assert flow.fn.__module__ == module.removesuffix(".py").replace("/", ".")
        assert flow.fn.__name__ == func
        limit = kw.get("concurrency_limit")
        yl = declared[name].get("concurrency_limit")
        assert (limit.limit if limit else None) == (yl["limit"] if yl else None)


@pytest.mark.parametrize(
    ("name", "trigger"),
    [
        (specs.ROLLBACK, specs.rollback_trigger(None)),
        (specs.ESCALATION, specs.escalation_trigger(None)),
        (specs.PROBE, specs.probe_trigger()),
    ],
)
def test_same_triggers(name: str, trigger: object) -> None:
    y = _yaml()[name]["triggers"][0]
    assert set(y["expect"]) == trigger.expect  # type: ignore[attr-defined]
    assert y["name"] == trigger.name  # type: ignore[attr-defined]
    assert set(y.get("for_each", [])) == trigger.for_each  # type: ignore[attr-defined]
    assert y["within"] == trigger.within.total_seconds()  # type: ignore[attr-defined]
    assert y["parameters"] == trigger.parameters  # type: ignore[attr-defined]
    match = {k: v for k, v in trigger.match.model_dump().items()}  # type: ignore[attr-defined]
    assert y.get("match", {}) == match


def test_the_rollback_runs_once_per_incident_and_one_at_a_time() -> None:
    t = specs.rollback_trigger(None)
    assert t.posture == "Reactive" and t.threshold == 1
    assert t.for_each == {"prefect.resource.id"} and t.within.total_seconds() >= 60
    _, kw = next(x for x in specs.served_flows(only=[specs.ROLLBACK]))
    assert kw["concurrency_limit"].limit == 1
