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
        assert (limit.limit if limit else None) == (yl["limit"] if yl else None), name
        if limit:
            assert limit.collision_strategy.value == yl["collision_strategy"], name
        assert kw.get("tags") == declared[name].get("tags"), name
        assert kw.get("description") == declared[name].get("description"), name
        assert len(kw.get("triggers", [])) == len(declared[name].get("triggers", [])), name


def test_the_runner_serves_every_security_deployment() -> None:
    """`tbs-emergency runner` serves what prefect.yaml declares for the security procedures."""
    declared = {n for n, d in _yaml().items() if "security" in d.get("tags", [])}
    assert declared == set(specs.SECURITY)
    served = specs.served_flows(only=list(specs.SECURITY))
    assert {kw["name"] for _, kw in served} == set(specs.SECURITY)
    assert {flow.name for flow, _ in served} == {
        "security_incident",
        "rotate_credentials",
        "account_compromise",
        "security_lockdown",
        "security_lockdown_lift",
    }


@pytest.mark.parametrize(
    ("name", "trigger"),
    [
        (specs.ROLLBACK, specs.rollback_trigger(None)),
        (specs.ESCALATION, specs.escalation_trigger(None)),
        (specs.PROBE, specs.probe_trigger()),
        (specs.SECURITY_INCIDENT, specs.security_alert_trigger(None)),
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


def test_a_security_alert_starts_one_incident_response_per_resource() -> None:
    from flows.security_incident import SecurityIncidentParams

    t = specs.security_alert_trigger("/etc/tbs.toml")
    assert t.expect == {"tbs.security.alert"} and t.posture == "Reactive" and t.threshold == 1
    assert t.for_each == {"prefect.resource.id"} and t.within.total_seconds() >= 60
    params = t.parameters["params"]
    assert params["config_path"] == "/etc/tbs.toml"
    assert set(params) <= set(SecurityIncidentParams.model_fields)  # the flow accepts them all
    _, kw = next(x for x in specs.served_flows(only=[specs.SECURITY_INCIDENT]))
    assert kw["concurrency_limit"].limit == 1 and kw["triggers"][0].name == t.name
