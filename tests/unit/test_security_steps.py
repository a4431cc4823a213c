"""The reversible-step engine: record first, idempotent reruns, nothing half-done, lift in
reverse order."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tbs_emergency.errors import Refused
from tbs_emergency.security.records import SecurityStore, StepSpec, record_key
from tbs_emergency.security.steps import apply_steps, lift_steps
from tests.unit.fakes_rollback import MemoryStore

pytestmark = pytest.mark.unit


class World:
    """A few switches, and the order things happened in."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {"a": "off", "b": "off", "c": "off"}
        self.calls: list[str] = []
        self.fail_apply: set[str] = set()


class Switch:
    def __init__(self, world: World, name: str) -> None:
        self.w = world
        self.name = name
        self.spec = StepSpec(kind="switch", params={"target": name})
        self.system = f"sys-{name}"
        self.what = f"turn {name} on"

    def read(self) -> dict[str, Any]:
        return {"value": self.w.state[self.name]}

    def done(self, current: dict[str, Any]) -> bool:
        return current["value"] == "on"

    def apply(self, current: dict[str, Any]) -> str:
        self.w.calls.append(f"apply {self.name}")
        self.w.state[self.name] = "half"  # a partial change before failing
        if self.name in self.w.fail_apply:
            raise Refused(self.system, self.what, "the server refused the change")
        self.w.state[self.name] = "on"
        return "on"

    def restore(self, previous: dict[str, Any]) -> str:
        self.w.calls.append(f"restore {self.name}")
        self.w.state[self.name] = previous["value"]
        return f"back to {previous['value']}"


def _setup() -> tuple[World, MemoryStore, SecurityStore, list[Switch]]:
    w = World()
    mem = MemoryStore()
    return w, mem, SecurityStore(mem), [Switch(w, n) for n in ("a", "b", "c")]


def factory(w: World) -> Any:
    return lambda spec: Switch(w, spec.params["target"])


def test_apply_records_each_previous_state_before_changing_it() -> None:
    w, mem, store, steps = _setup()
    r = apply_steps(store, "lockdown", "all", steps)
    assert r.ok and r.status == "active"
    assert w.state == {"a": "on", "b": "on", "c": "on"}
    rec = json.loads(mem.objects[record_key("lockdown", "all")])
    assert [s["previous"] for s in rec["steps"]] == [{"value": "off"}] * 3
    assert [s["status"] for s in rec["steps"]] == ["applied"] * 3
    # the record was written (applying) before each change: one save before, one after
    assert mem.puts.count(record_key("lockdown", "all")) == 6


def test_a_rerun_changes_nothing_and_lift_goes_in_reverse_order() -> None:
    w, _mem, store, steps = _setup()
    apply_steps(store, "lockdown", "all", steps)
    w.calls.clear()
    again = apply_steps(store, "lockdown", "all", steps)
    assert w.calls == [] and {a.outcome for a in again.actions} == {"unchanged"}
    lifted = lift_steps(store, "lockdown", "all", factory(w))
    assert lifted.ok and lifted.status == "lifted"
    assert w.calls == ["restore c", "restore b", "restore a"]
    assert w.state == {"a": "off", "b": "off", "c": "off"}
    twice = lift_steps(store, "lockdown", "all", factory(w))
    assert twice.ok and [a.outcome for a in twice.actions] == ["unchanged"]


def test_a_failing_step_puts_back_what_the_run_changed() -> None:
    w, mem, store, steps = _setup()
    w.fail_apply = {"b"}
    r = apply_steps(store, "lockdown", "all", steps)
    assert not r.ok and r.rolled_back
    assert "the server refused the change" in r.problems[0]
    # b was half changed and restored, a restored, c never touched
    assert w.calls == ["apply a", "apply b", "restore b", "restore a"]
    assert w.state == {"a": "off", "b": "off", "c": "off"}
    rec = json.loads(mem.objects[record_key("lockdown", "all")])
    assert rec["status"] == "rolled-back"
    # nothing to lift afterwards
    w.calls.clear()
    lift_steps(store, "lockdown", "all", factory(w))
    assert w.calls == []


def test_a_step_already_in_place_is_recorded_and_its_lift_changes_nothing() -> None:
    w, _mem, store, steps = _setup()
    w.state["b"] = "on"  # a person did this before the lockdown
    apply_steps(store, "lockdown", "all", steps)
    assert "apply b" not in w.calls
    lift_steps(store, "lockdown", "all", factory(w))
    assert w.state == {"a": "off", "b": "on", "c": "off"}


def test_dry_run_changes_and_records_nothing() -> None:
    w, mem, store, steps = _setup()
    r = apply_steps(store, "lockdown", "all", steps, dry_run=True)
    assert [a.outcome for a in r.actions] == ["planned"] * 3
    assert w.calls == [] and mem.objects == {}


def test_nothing_changes_when_the_record_cannot_be_written() -> None:
    w, mem, store, steps = _setup()

    def broken(*_a: Any, **_k: Any) -> Any:
        raise Refused("s3", "put", "access denied")

    mem.put = broken  # type: ignore[method-assign]
    r = apply_steps(store, "lockdown", "all", steps)
    assert not r.ok and w.calls == []
    assert "could not record the previous state" in r.problems[0]


def test_the_incident_journal_gets_the_previous_state() -> None:
    from tbs_emergency.domain.journal import Journal

    _w, mem, _store, steps = _setup()
    journal = Journal(mem)
    store = SecurityStore(mem, journal)
    apply_steps(store, "lockdown", "all", steps[:1], incident_id="inc-1")
    entries = journal.entries("inc-1")
    assert entries and entries[0].kind == "previous-settings"
    assert entries[0].data["steps"][0]["previous"] == {"value": "off"}
