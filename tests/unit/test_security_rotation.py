"""Credential rotation: strong passwords, verified change, all or nothing, no secret anywhere."""

from __future__ import annotations

import itertools
import string
from collections.abc import Sequence

import pytest

from tbs_emergency.errors import Refused
from tbs_emergency.security.passwords import PUNCT, generate_password
from tbs_emergency.security.rotation import AccountToRotate, rotate_accounts

pytestmark = pytest.mark.unit

OLD = {"svc_a": "old-Secret-A-1", "svc_b": "old-Secret-B-2"}


class FakeServer:
    def __init__(self, name: str, passwords: dict[str, str]) -> None:
        self.name = name
        self.pw = dict(passwords)  # user -> password (every host the same here)
        self.refuse_user: str | None = None
        self.sticky_old = False  # the server keeps accepting the old password

    def hosts(self, user: str, wanted: Sequence[str]) -> list[str]:
        return ["127.0.0.1", "localhost"] if user in self.pw else []

    def set_password(self, user: str, host: str, password: str) -> None:
        if user == self.refuse_user:
            raise Refused(
                self.name, f"change the password of {user}", f"(1227) denied near '{password}'"
            )
        self.pw[user] = password

    def try_login(self, user: str, password: str) -> tuple[bool, str]:
        if self.sticky_old and password == OLD.get(user):
            return True, "accepted"
        return (
            self.pw.get(user) == password,
            "accepted" if self.pw.get(user) == password else "(1045) Access denied",
        )


class FakeBlocks:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = dict(values)
        self.writes: list[str] = []

    def read(self, name: str) -> str:
        return self.values[name]

    def write(self, name: str, value: str) -> None:
        self.writes.append(name)
        self.values[name] = value


def _accounts() -> list[AccountToRotate]:
    return [
        AccountToRotate(
            engine="mysql",
            user="svc_a",
            block="blk-a",
            source="block:blk-a",
            server="mysql[blue,green]",
        ),
        AccountToRotate(
            engine="heavydb",
            user="svc_b",
            block="blk-b",
            source="block:blk-b",
            server="heavydb[blue,green]",
        ),
    ]


def _setup() -> tuple[dict[str, FakeServer], FakeBlocks]:
    servers = {
        "mysql[blue,green]": FakeServer("mysql[blue,green]", {"svc_a": OLD["svc_a"]}),
        "heavydb[blue,green]": FakeServer("heavydb[blue,green]", {"svc_b": OLD["svc_b"]}),
    }
    return servers, FakeBlocks({"blk-a": OLD["svc_a"], "blk-b": OLD["svc_b"]})


def _gen() -> tuple[list[str], object]:
    made: list[str] = []
    counter = itertools.count()

    def gen() -> str:
        made.append(f"New-Secret-{next(counter)}-xyz")
        return made[-1]

    return made, gen


def _no_secret_in(report: object, secrets: list[str]) -> None:
    text = report.model_dump_json() + report.markdown()  # type: ignore[attr-defined]
    for s in secrets:
        assert s not in text


def test_every_account_rotated_verified_and_stored() -> None:
    servers, blocks = _setup()
    made, gen = _gen()
    r = rotate_accounts(_accounts(), servers, blocks, gen)  # type: ignore[arg-type]
    assert r.ok and r.rotated == ["svc_a", "svc_b"]
    assert servers["mysql[blue,green]"].pw["svc_a"] == made[0] == blocks.values["blk-a"]
    assert servers["heavydb[blue,green]"].pw["svc_b"] == made[1] == blocks.values["blk-b"]
    _no_secret_in(r, [*OLD.values(), *made])


def test_a_refused_change_puts_every_account_back() -> None:
    servers, blocks = _setup()
    servers["heavydb[blue,green]"].refuse_user = "svc_b"
    made, gen = _gen()
    r = rotate_accounts(_accounts(), servers, blocks, gen)  # type: ignore[arg-type]
    assert not r.ok
    assert servers["mysql[blue,green]"].pw["svc_a"] == OLD["svc_a"]
    assert blocks.values == {"blk-a": OLD["svc_a"], "blk-b": OLD["svc_b"]}
    status = {a.account: a.status for a in r.accounts}
    assert status == {"svc_a": "rolled-back", "svc_b": "failed"}
    assert any("rolled back" in p for p in r.problems)
    # the error text echoed the new password: it is redacted
    _no_secret_in(r, [*OLD.values(), *made])


def test_old_password_still_working_is_a_failure_and_rolled_back() -> None:
    servers, blocks = _setup()
    servers["mysql[blue,green]"].sticky_old = True
    _made, gen = _gen()
    r = rotate_accounts(_accounts(), servers, blocks, gen)  # type: ignore[arg-type]
    assert not r.ok and "old password still logs in" in r.problems[0]
    assert blocks.values["blk-a"] == OLD["svc_a"] and "blk-a" not in blocks.writes
    assert servers["heavydb[blue,green]"].pw["svc_b"] == OLD["svc_b"]


def test_preflight_failure_changes_nothing() -> None:
    servers, blocks = _setup()
    blocks.values["blk-b"] = "stale-value-9"  # the block does not match the server
    made, gen = _gen()
    r = rotate_accounts(_accounts(), servers, blocks, gen)  # type: ignore[arg-type]
    assert not r.ok and made == [] and blocks.writes == []
    assert "does not log in" in r.problems[0] and "stale-value-9" not in r.problems[0]
    assert "no account was changed" in r.problems[-1]


def test_unknown_account_and_password_outside_a_block_are_refused() -> None:
    servers, blocks = _setup()
    accounts = [
        AccountToRotate(
            engine="mysql",
            user="nobody",
            block="blk-a",
            source="block:blk-a",
            server="mysql[blue,green]",
        ),
        AccountToRotate(
            engine="mysql", user="svc_a", block=None, source="env:PW", server="mysql[blue,green]"
        ),
    ]
    r = rotate_accounts(accounts, servers, blocks, lambda: "x" * 32)  # type: ignore[arg-type]
    assert not r.ok and blocks.writes == []
    assert "no account 'nobody'" in r.problems[0]
    assert "env:PW" in r.problems[1] and "Secret block" in r.problems[1]


def test_dry_run_checks_but_changes_nothing() -> None:
    servers, blocks = _setup()
    made, gen = _gen()
    r = rotate_accounts(_accounts(), servers, blocks, gen, dry_run=True)  # type: ignore[arg-type]
    assert r.ok and made == [] and blocks.writes == []
    assert {a.status for a in r.accounts} == {"planned"}


def test_generated_passwords_are_strong() -> None:
    seen = set()
    for _ in range(200):
        pw = generate_password(32)
        assert len(pw) == 32
        assert any(c in string.ascii_lowercase for c in pw)
        assert any(c in string.ascii_uppercase for c in pw)
        assert any(c in string.digits for c in pw)
        assert any(c in PUNCT for c in pw)
        assert not set(pw) & set("'\"\\%@:/# ")
        seen.add(pw)
    assert len(seen) == 200
    with pytest.raises(ValueError):
        generate_password(8)
