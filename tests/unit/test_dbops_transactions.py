"""Transaction completion: wait for the ones open at the start, report, end only with force."""

from __future__ import annotations

import pytest

from tbs_emergency.connectors.base import OpenTransaction, Probe
from tbs_emergency.dbops import transactions as tx
from tbs_emergency.dbops.targets import ServerTarget

pytestmark = pytest.mark.unit

MYSQL = ServerTarget(engine="mysql", name="mysql[blue]", server="mysql://db:3306", envs=["blue"])
HEAVY = ServerTarget(engine="heavydb", name="heavydb[blue]", server="heavydb://h:1", envs=["blue"])


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def trx(
    i: int, age: float = 5.0, stmt: str | None = "UPDATE trades SET qty = 1"
) -> OpenTransaction:
    return OpenTransaction(
        id=str(i),
        session_id=str(100 + i),
        user="app",
        host="10.0.0.9:4000",
        age_s=age,
        state="RUNNING",
        statement=stmt,
    )


class FakeServer:
    """Transactions finish at given clock times; ended sessions roll back after `rollback_s`."""

    name = "mysql[blue]"

    def __init__(self, clock: Clock, finishes: dict[str, float | None], rollback_s: float = 0.0):
        self.clock = clock
        self.finishes = finishes  # id -> clock time it commits (None: never)
        self.rollback_s = rollback_s
        self.ended: dict[str, float] = {}
        self.calls: list[str] = []

    def login_user(self) -> str:
        return "admin"

    def ping(self) -> Probe:
        return Probe(self.name, True, 1.0, "ok")

    def open_transactions(self) -> list[OpenTransaction]:
        out = []
        for i, at in self.finishes.items():
            if at is not None and self.clock() >= at:
                continue
            if i in self.ended and self.clock() >= self.ended[i] + self.rollback_s:
                continue
            out.append(trx(int(i), age=self.clock() + 10))
        return out

    def end_session(self, session_id: str) -> bool:
        self.calls.append(f"kill {session_id}")
        i = str(int(session_id) - 100)
        self.ended[i] = self.clock()
        return True


def test_format_age() -> None:
    assert tx.format_age(45) == "45s"
    assert tx.format_age(125) == "2m 05s"
    assert tx.format_age(3720) == "1h 02m"


def test_waits_until_the_transactions_open_at_start_finish() -> None:
    clock = Clock()
    server = FakeServer(clock, {"1": 2.0, "2": 3.5})
    report = tx.complete_transactions(
        server, MYSQL, timeout_s=60, poll_s=1, clock=clock, sleep=clock.sleep
    )
    assert report.complete and not report.still_open
    assert sorted(report.finished) == ["1", "2"]
    assert 3.5 <= report.waited_s < 5
    assert server.calls == []


def test_new_transactions_started_meanwhile_are_not_waited_for() -> None:
    clock = Clock()
    server = FakeServer(clock, {"1": 2.0})
    orig = server.open_transactions

    def with_newcomer() -> list[OpenTransaction]:
        rows = orig()
        return [*rows, trx(9)] if clock() > 0 else rows

    at_start, still, waited = tx.wait_for_transactions(
        with_newcomer, 60, 1, clock=clock, sleep=clock.sleep
    )
    assert [t.id for t in at_start] == ["1"] and still == [] and waited < 3


def test_reports_the_ones_still_open_at_the_timeout_without_force() -> None:
    clock = Clock()
    server = FakeServer(clock, {"1": 2.0, "2": None})
    report = tx.complete_transactions(
        server, MYSQL, timeout_s=10, poll_s=1, clock=clock, sleep=clock.sleep
    )
    assert not report.complete
    assert [t.id for t in report.still_open] == ["2"]
    assert report.waited_s == pytest.approx(10, abs=0.01)
    assert server.calls == []  # nothing ended without force
    text = "\n".join(report.lines())
    assert "still open: transaction 2 (session 102) of app@10.0.0.9:4000" in text
    assert "UPDATE trades SET qty = 1" in text and "--force" in text


def test_force_ends_the_rest_and_waits_for_the_rollback() -> None:
    clock = Clock()
    server = FakeServer(clock, {"1": 2.0, "2": None}, rollback_s=1.5)
    report = tx.complete_transactions(
        server, MYSQL, timeout_s=5, force=True, poll_s=1, clock=clock, sleep=clock.sleep
    )
    assert server.calls == ["kill 102"]
    assert report.forced and report.ended == ["2"] and report.complete


def test_force_reports_a_transaction_that_does_not_go_away() -> None:
    clock = Clock()
    server = FakeServer(clock, {"2": None}, rollback_s=1e9)
    report = tx.complete_transactions(
        server,
        MYSQL,
        timeout_s=2,
        force=True,
        poll_s=1,
        clock=clock,
        sleep=clock.sleep,
        rollback_grace_s=3,
    )
    assert not report.complete
    assert [t.id for t in report.not_ended] == ["2"]
    assert any(a.outcome == "failed" for a in report.actions)


def test_heavydb_has_nothing_to_complete() -> None:
    report = tx.complete_transactions(None, HEAVY, timeout_s=5)  # type: ignore[arg-type]
    assert not report.applicable and report.complete
    assert "no multi-statement transactions" in report.lines()[0]


def test_idle_transaction_is_described_as_such() -> None:
    assert "idle in transaction" in tx.describe(trx(1, stmt=None))
