"""The journal's local spool: a store that is down or an unreadable object never blocks an
append or a read; the spool is flushed once, without colliding sequence numbers."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tbs_emergency.connectors.base import StoredObject
from tbs_emergency.domain.incident import RESOLVED, Entry, Incident
from tbs_emergency.domain.journal import Journal, Spool, index_key, journal_prefix
from tbs_emergency.domain.severity import Severity
from tbs_emergency.errors import Unreachable
from tests.unit.fakes_rollback import MemoryStore

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 24, 10, 0, 0, tzinfo=UTC)


class FlakyStore(MemoryStore):
    """A MemoryStore that can be down (every call raises Unreachable) and counts calls."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.down = False
        self.calls = 0
        if hasattr(self, "put_if_absent"):
            inner = self.put_if_absent

            def guarded(key: str, data: bytes) -> bool:
                self._call("put_if_absent")
                return inner(key, data)

            self.put_if_absent = guarded

    def _call(self, op: str) -> None:
        self.calls += 1
        if self.down:
            raise Unreachable("memory", op, "cannot connect")

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> StoredObject:
        self._call("put")
        return super().put(key, data, metadata)

    def get(self, key: str) -> bytes:
        self._call("get")
        return super().get(key)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        self._call("list")
        return super().list(prefix)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def incident(id_: str = "inc-1") -> Incident:
    return Incident(
        id=id_,
        severity=Severity.P1,
        env="green",
        rule="error_rate_spike",
        trigger="error rate 9% for 3 windows",
        opened_at=T0,
    )


def note(what: str, id_: str = "inc-1") -> Entry:
    return Entry(incident_id=id_, kind="note", what=what)


def journal(store: MemoryStore, spool_dir: Path, clock: Clock, writer: str = "w1") -> Journal:
    return Journal(store, writer=writer, spool=Spool(spool_dir), retry_after_s=10, clock=clock)


def journal_keys(store: MemoryStore, id_: str = "inc-1") -> list[str]:
    return sorted(k for k in store.objects if k.startswith(journal_prefix(id_)))


def test_store_down_appends_go_to_the_spool_fsynced_private(tmp_path: Path) -> None:
    store, clock = FlakyStore(), Clock()
    j = journal(store, tmp_path / "spool", clock)
    j.open(incident())
    store.down = True
    e = j.append(note("redirected"))
    assert e.seq == 1
    files = list((tmp_path / "spool" / "inc-1").glob("*.json"))
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "spool" / "inc-1").stat().st_mode) == 0o700
    assert Entry.model_validate_json(files[0].read_bytes()).what == "redirected"
    # while the store is known to be down, it is not asked again
    calls = store.calls
    j.append(note("second"))
    assert store.calls == calls
    assert j.spool is not None and j.spool.summary().count == 2


def test_reads_merge_store_and_spool_and_survive_a_down_store(tmp_path: Path) -> None:
    store, clock = FlakyStore(), Clock()
    j = journal(store, tmp_path / "spool", clock)
    j.open(incident())
    store.down = True
    j.append(note("spooled"))
    read = j.read("inc-1")
    # the store is down: what this journal saw of the store, and the spool; said so
    assert [e.kind for e in read.entries] == ["opened", "note"]
    assert read.store_error and "down" in read.store_error
    # another process (a fresh journal) has the spool alone
    fresh = journal(store, tmp_path / "spool", clock, writer="w2").read("inc-1")
    assert [e.what for e in fresh.entries] == ["spooled"] and fresh.store_error
    store.down = False
    clock.t += 11
    read = j.read("inc-1")
    assert [e.kind for e in read.entries] == ["opened", "note"]
    assert read.spooled == 1 and read.store_error is None


def test_an_unreadable_object_is_skipped_and_reported(tmp_path: Path) -> None:
    store, clock = FlakyStore(), Clock()
    j = journal(store, tmp_path / "spool", clock)
    j.open(incident())
    j.append(note("good"))
    store.objects[f"{journal_prefix('inc-1')}00000002-zz.json"] = b"{not json"
    read = j.read("inc-1")
    assert [e.what for e in read.entries][-1] == "good"
    assert len(read.skipped) == 1 and "00000002-zz.json" in read.skipped[0]
    assert j.incident("inc-1") is not None
    # the broken object's number is still taken: the next entry does not reuse it
    j2 = journal(store, tmp_path / "spool", clock, writer="w2")
    assert j2.append(note("after")).seq == 3


def test_open_while_the_store_is_down_then_flush_writes_everything_once(tmp_path: Path) -> None:
    store, clock = FlakyStore(), Clock()
    store.down = True
    j = journal(store, tmp_path / "spool", clock)
    inc, new = j.open(incident())  # no exception: spooled, index skipped
    assert new and inc.id == "inc-1"
    j.append(note("a"))
    assert [r["id"] for r in j.open_incidents()] == ["inc-1"]  # from the spool
    store.down = False
    res = j.flush()
    assert res.error is None and res.written == 2 and res.left == 0
    assert len(journal_keys(store)) == 2
    assert json.loads(store.objects[index_key("inc-1")])["id"] == "inc-1"
    # a second flush (and a second journal) writes nothing again
    again = journal(store, tmp_path / "spool", clock, writer="w2").flush()
    assert again.written == 0 and again.left == 0
    assert len(journal_keys(store)) == 2
    assert not (tmp_path / "spool" / "inc-1").exists()


def test_the_next_successful_append_flushes_first(tmp_path: Path) -> None:
    store, clock = FlakyStore(), Clock()
    j = journal(store, tmp_path / "spool", clock)
    j.open(incident())
    store.down = True
    j.append(note("while down"))
    store.down = False
    j.append(note("still within retry_after_s"))  # spooled: the store is not retried yet
    assert len(journal_keys(store)) == 1
    clock.t += 11
    e = j.append(note("back"))
    assert e.seq == 3
    assert j.spool is not None and j.spool.pending() == 0
    seqs = [x.seq for x in j.entries("inc-1")]
    assert seqs == [0, 1, 2, 3]
    assert [x.what for x in j.entries("inc-1")][1:] == [
        "while down",
        "still within retry_after_s",
        "back",
    ]


def test_numbers_taken_meanwhile_are_renumbered_without_collision(tmp_path: Path) -> None:
    store, clock = FlakyStore(), Clock()
    a = journal(store, tmp_path / "spool-a", clock, writer="a")
    a.open(incident())
    store.down = True
    a.append(note("a1"))  # spooled as #1
    a.append(note("a2"))  # spooled as #2
    store.down = False
    b = journal(store, tmp_path / "spool-b", clock, writer="b")
    b.append(note("b1"))  # #1 in the store, written while a's store looked down
    res = a.flush()
    assert res.written == 2 and res.renumbered >= 1
    entries = a.entries("inc-1")
    seqs = [e.seq for e in entries]
    assert len(seqs) == len(set(seqs)) == 4
    whats = [e.what for e in entries]
    assert whats.index("a1") < whats.index("a2")
    assert a.append(note("next")).seq == max(seqs) + 1


def test_conditional_store_flush_is_idempotent_after_an_interruption(tmp_path: Path) -> None:
    store, clock = FlakyStore(conditional=True), Clock()
    j = journal(store, tmp_path / "spool", clock)
    j.open(incident())
    store.down = True
    j.append(note("x"))
    j.append(note("y"))
    store.down = False
    spool = Spool(tmp_path / "spool")
    # an earlier flush wrote "x" to the store and died before removing it from the spool
    path, x = spool.items("inc-1")[0]
    store.objects[f"{journal_prefix('inc-1')}{x.seq:08d}.json"] = x.model_dump_json().encode()
    res = journal(store, tmp_path / "spool", clock, writer="w2").flush()
    assert res.already == 1 and res.written == 1 and res.left == 0
    clock.t += 11
    assert [e.what for e in j.entries("inc-1")] == [
        "incident opened: error rate 9% for 3 windows",
        "x",
        "y",
    ]
    assert not path.exists()


def test_resolving_while_down_updates_the_index_on_flush(tmp_path: Path) -> None:
    store, clock = FlakyStore(deletable=True), Clock()
    j = journal(store, tmp_path / "spool", clock)
    j.open(incident())
    assert index_key("inc-1") in store.objects
    store.down = True
    j.append(Entry(incident_id="inc-1", kind=RESOLVED, what="resolved", result="ok"))
    inc = j.incident("inc-1")
    assert inc is not None and inc.status == "resolved"
    j.sync_index(inc)  # down: skipped with a warning, no exception
    assert j.open_incidents() == []
    store.down = False
    j.flush()
    assert index_key("inc-1") not in store.objects


def test_guarded_store_fails_fast_while_down(tmp_path: Path) -> None:
    store, clock = FlakyStore(), Clock()
    j = journal(store, tmp_path / "spool", clock)
    store.down = True
    with pytest.raises(Unreachable):
        j.store.put("incidents/last-rollback.json", b"{}")
    calls = store.calls
    with pytest.raises(Unreachable, match="local spool"):
        j.store.get("incidents/last-rollback.json")
    assert store.calls == calls
    clock.t += 11
    store.down = False
    j.store.put("incidents/last-rollback.json", b"{}")
    assert not j.store_down


def test_summary_counts_and_oldest(tmp_path: Path) -> None:
    store, clock = FlakyStore(), Clock()
    store.down = True
    j = journal(store, tmp_path / "spool", clock)
    j.append(Entry(incident_id="inc-1", kind="note", what="1", at=T0))
    j.append(Entry(incident_id="inc-2", kind="note", what="2"))
    s = Spool(tmp_path / "spool").summary()
    assert s.count == 2 and s.oldest == T0 and s.incidents == {"inc-1": 1, "inc-2": 1}
    assert Spool(tmp_path / "nothing").summary().count == 0


def test_without_a_spool_failures_raise_as_before(tmp_path: Path) -> None:
    store = FlakyStore()
    j = Journal(store)
    store.down = True
    with pytest.raises(Unreachable):
        j.append(note("x"))
    with pytest.raises(Unreachable):
        j.entries("inc-1")


def test_after_an_outage_the_next_number_is_read_again(tmp_path: Path) -> None:
    """Another process flushed (and renumbered) this writer's spooled entries: its next
    append must not reuse a number the flush gave away."""
    store, clock = FlakyStore(), Clock()
    a = journal(store, tmp_path / "spool", clock, writer="a")
    a.open(incident())
    store.down = True
    a.append(note("a1"))  # spooled as #1
    store.down = False
    b = journal(store, tmp_path / "other", clock, writer="b")
    b.append(note("b1"))  # #1 in the store
    journal(store, tmp_path / "spool", clock, writer="c").flush()  # a1 -> #2
    clock.t += 11
    e = a.append(note("a2"))
    seqs = [x.seq for x in a.entries("inc-1")]
    assert len(seqs) == len(set(seqs)) == 4 and e.seq == 3


def test_a_hung_store_is_abandoned_at_the_timeout_and_the_entry_spooled(tmp_path: Path) -> None:
    import threading
    import time as _time

    store, clock = FlakyStore(), Clock()
    j = Journal(
        store,
        writer="w1",
        spool=Spool(tmp_path / "spool"),
        retry_after_s=10,
        clock=clock,
        store_timeout_s=0.2,
    )
    j.open(incident())
    release = threading.Event()
    real_put = store.put

    def hung_put(*a: Any, **kw: Any) -> Any:
        release.wait(5)
        return real_put(*a, **kw)

    store.put = hung_put  # type: ignore[method-assign]
    t0 = _time.monotonic()
    e = j.append(note("while the store hangs"))
    assert _time.monotonic() - t0 < 2
    assert j.store_down and Spool(tmp_path / "spool").entries("inc-1")[0].seq == e.seq
    release.set()
