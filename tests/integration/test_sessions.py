"""The sessions connector against a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tbs_emergency.config import RedisConfig, Secret
from tbs_emergency.connectors import Connectors
from tbs_emergency.connectors.sessions import RedisSessions
from tbs_emergency.errors import Refused, TimedOut, Unreachable

pytestmark = pytest.mark.integration


@pytest.fixture
def raw(redis_server: Any) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_server.url)
    r.flushdb()
    yield r
    r.flushdb()
    r.close()


@pytest.fixture
def sessions(settings: Any, raw: redis.Redis) -> Iterator[RedisSessions]:
    conn = Connectors(settings)
    yield conn.sessions("blue")
    conn.close()


def test_ping(sessions: RedisSessions) -> None:
    p = sessions.ping()
    assert p.reachable, p.detail
    assert p.system == "redis[blue]"
    assert "Redis 7" in p.detail


def test_count_list_and_get(sessions: RedisSessions, raw: redis.Redis) -> None:
    assert sessions.count() == 0
    for i in range(2500):  # several SCAN batches
        raw.set(f"session:{i}", json.dumps({"user": f"u{i}"}))
    raw.hset("session:h1", mapping={"user": "alice", "role": "admin"})
    raw.set("other:1", "not a session")
    raw.set("session:plain", "opaque")
    assert sessions.count() == 2502
    ids = sessions.list_ids(limit=10)
    assert len(ids) == 10 and all(not i.startswith("session:") for i in ids)
    assert sessions.get("7") == {"user": "u7"}
    assert sessions.get("h1") == {"user": "alice", "role": "admin"}
    assert sessions.get("plain") == {"value": "opaque"}
    assert sessions.get("missing") is None


def test_prefix_with_glob_characters_is_literal(redis_server: Any, raw: redis.Redis) -> None:
    raw.set("s[1]:a", "x")
    raw.set("s1:b", "x")
    s = RedisSessions(RedisConfig(url=redis_server.url, session_prefix="s[1]:"))
    assert s.count() == 1


def test_green_uses_its_own_database(settings: Any, raw: redis.Redis) -> None:
    raw.set("session:blue-only", "1")
    with Connectors(settings) as conn:
        assert conn.sessions("blue").count() == 1
        assert conn.sessions("green").count() == 0
        assert conn.sessions("green").name == "redis[green]"


def test_closed_port_is_unreachable_without_password(closed_port: int) -> None:
    cfg = RedisConfig(
        url=f"redis://:url-Secret-77@127.0.0.1:{closed_port}/0",
        password=Secret(value="pw-Secret-77"),
        timeout_s=1,
    )
    s = RedisSessions(cfg, "redis[blue]")
    with pytest.raises(Unreachable) as err:
        s.count()
    text = str(err.value)
    assert text.startswith("redis[blue]:")
    assert "url-Secret-77" not in text and "pw-Secret-77" not in text
    p = s.ping()
    assert not p.reachable and "Secret-77" not in p.detail


def test_wrong_password_is_refused(redis_server: Any, raw: redis.Redis) -> None:
    raw.config_set("requirepass", "right-Secret-77")
    try:
        cfg = RedisConfig(url=redis_server.url, password=Secret(value="pw-Secret-77"))
        with pytest.raises(Refused) as err:
            RedisSessions(cfg, "redis[blue]").count()
        assert "pw-Secret-77" not in str(err.value)
        cfg = RedisConfig(url=redis_server.url)  # no password at all
        with pytest.raises(Refused):
            RedisSessions(cfg, "redis[blue]").count()
        cfg = RedisConfig(url=redis_server.url, password=Secret(value="right-Secret-77"))
        assert RedisSessions(cfg, "redis[blue]").count() == 0
    finally:
        admin = redis.Redis.from_url(redis_server.url, password="right-Secret-77")
        admin.config_set("requirepass", "")
        admin.close()


def test_silent_server_times_out(blackhole_port: int) -> None:
    s = RedisSessions(RedisConfig(url=f"redis://127.0.0.1:{blackhole_port}/0", timeout_s=0.3))
    start = time.monotonic()
    with pytest.raises(TimedOut) as err:
        s.count()
    assert time.monotonic() - start < 5
    assert err.value.system == "redis"
