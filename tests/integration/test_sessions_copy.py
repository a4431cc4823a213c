"""Carrying sessions between two real Redis servers (rollback step 3, `RedisSessions.copy_to`).

Two redis-server processes on free ports stand for green's and blue's session stores; a third
connector reaches green's server under another URL (localhost instead of 127.0.0.1) to show that
"the same store" is decided by what the server says, not by the address.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sandbox.services import start_redis
from tbs_emergency.config import RedisConfig
from tbs_emergency.connectors.sessions import RedisSessions

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    root: Path = tmp_path_factory.mktemp("redis-pair")
    green = start_redis(root / "green", name="redis-green")
    try:
        blue = start_redis(root / "blue", name="redis-blue")
    except Exception:
        green.stop()
        raise
    try:
        yield green, blue
    finally:
        blue.stop()
        green.stop()


@pytest.fixture
def pair(two_redis: tuple[Any, Any]) -> Iterator[tuple[redis.Redis, redis.Redis]]:
    g, b = (redis.Redis.from_url(s.url) for s in two_redis)
    g.flushdb()
    b.flushdb()
    yield g, b
    g.flushdb()
    b.flushdb()
    g.close()
    b.close()


def _conn(url: str, name: str) -> RedisSessions:
    return RedisSessions(RedisConfig(url=url, timeout_s=2), name)


def test_copy_to_carries_every_session_with_its_ttl(
    two_redis: tuple[Any, Any], pair: tuple[redis.Redis, redis.Redis]
) -> None:
    g, b = pair
    for i in range(1200):  # more than one pipeline batch
        g.set(f"session:s{i}", json.dumps({"user": f"u{i % 7}"}), ex=3600 - i)
    g.hset("session:hash", mapping={"user": "alice"})  # a hash session without expiry
    g.set("tbs:lockdown", "on", ex=600)
    g.set("other:key", "not a session")
    b.set("session:blue-own", "x", ex=100)
    src, dst = _conn(two_redis[0].url, "redis[green]"), _conn(two_redis[1].url, "redis[blue]")
    try:
        res = src.copy_to(dst, extra_keys=["tbs:lockdown", "tbs:absent"])
    finally:
        src.close()
        dst.close()
    assert res["shared"] is False
    assert res["before"] == 1201
    assert res["copied"] == res["verified"] == 1201
    assert res["missing"] == res["expired"] == res["ttl_mismatch"] == 0
    assert res["extra"] == {"tbs:lockdown": "copied", "tbs:absent": "absent"}
    # key by key: content and remaining TTL as on green
    for i in (0, 599, 1199):
        key = f"session:s{i}"
        assert b.get(key) == g.get(key)
        assert abs(b.pttl(key) - g.pttl(key)) < 2000
        assert b.pttl(key) <= (3600 - i) * 1000
    assert b.hgetall("session:hash") == {b"user": b"alice"}
    assert b.pttl("session:hash") == -1
    assert 0 < b.ttl("tbs:lockdown") <= 600
    assert b.get("other:key") is None  # only sessions and the named keys
    assert b.get("session:blue-own") == b"x"  # blue's own sessions stay
    # a rerun is idempotent (REPLACE) and verifies again
    src, dst = _conn(two_redis[0].url, "redis[green]"), _conn(two_redis[1].url, "redis[blue]")
    try:
        again = src.copy_to(dst)
    finally:
        src.close()
        dst.close()
    assert again["verified"] == 1201 and again["missing"] == 0


def test_copy_to_with_no_sessions_copies_nothing(
    two_redis: tuple[Any, Any], pair: tuple[redis.Redis, redis.Redis]
) -> None:
    src, dst = _conn(two_redis[0].url, "redis[green]"), _conn(two_redis[1].url, "redis[blue]")
    try:
        res = src.copy_to(dst)
    finally:
        src.close()
        dst.close()
    assert res["before"] == res["copied"] == res["verified"] == res["missing"] == 0


def test_copy_to_one_store_is_shared_not_copied(
    two_redis: tuple[Any, Any], pair: tuple[redis.Redis, redis.Redis]
) -> None:
    g, _ = pair
    g.set("session:a", "1", ex=60)
    g.set("session:b", "2", ex=60)
    url = two_redis[0].url
    other_address = url.replace("127.0.0.1", "localhost")
    assert other_address != url
    src, dst = _conn(url, "redis[green]"), _conn(other_address, "redis[blue]")
    try:
        res = src.copy_to(dst)
    finally:
        src.close()
        dst.close()
    assert res["shared"] is True
    assert res["before"] == res["verified"] == 2 and res["copied"] == 0


def test_copy_to_reports_a_target_that_loses_keys(
    two_redis: tuple[Any, Any], pair: tuple[redis.Redis, redis.Redis]
) -> None:
    """Verification reads the target again: a target that does not keep what it was given
    (here: maxmemory 1 byte with noeviction refuses the RESTORE) is an error, not a pass."""
    g, b = pair
    g.set("session:a", "1", ex=60)
    b.config_set("maxmemory", "1")
    src, dst = _conn(two_redis[0].url, "redis[green]"), _conn(two_redis[1].url, "redis[blue]")
    try:
        with pytest.raises(Exception, match=r"(?i)memory|OOM"):
            src.copy_to(dst)
    finally:
        b.config_set("maxmemory", "256mb")
        src.close()
        dst.close()
