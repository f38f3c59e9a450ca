"""Clients, backoff and RedisUnavailable against real servers."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio

import mdflow
from mdflow.errors import RedisUnavailable
from mdflow.reservoir import connection, free_port


def test_shared_async_client_per_url_and_loop(redis_url):
    async def two_clients():
        a = mdflow.client(redis_url)
        b = mdflow.client(redis_url)
        assert await a.ping()
        return a, b

    a1, b1 = asyncio.run(two_clients())
    a2, _ = asyncio.run(two_clients())
    assert a1 is b1
    assert a2 is not a1, "a client must not be shared across event loops"
    assert isinstance(a1, redis.asyncio.Redis)


def test_db_is_walrus(redis_url, prefix):
    database = mdflow.db(redis_url)
    stream = database.Stream(prefix + "s")
    stream.add({"a": "1"})
    assert len(stream) == 1


def test_unavailable_names_masked_url_and_hint():
    url = f"redis://user:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable, match=r"redis://user:\*\*\*@127\.0\.0\.1") as info:
        connection.ensure_available(url, deadline=0.3)
    message = str(info.value)
    assert "hunter2" not in message
    assert "Check that redis-server is running" in message
    assert isinstance(info.value, ConnectionError)


def test_async_unavailable_after_deadline():
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable, match=r"did not answer within 0\.3s"):
        asyncio.run(connection.wait_available(url, deadline=0.3))


def test_wait_available_rides_out_a_restart(redis_factory):
    server = redis_factory()
    server.stop()

    async def scenario():
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, server.start)
        conn = await connection.wait_available(server.url, deadline=10)
        return await conn.ping()

    assert asyncio.run(scenario())


def test_backoff_grows_and_is_capped():
    backoff = mdflow.Backoff(base=0.1, cap=1.0)
    ceilings = [min(1.0, 0.1 * 2**n) for n in range(1, 10)]
    for ceiling in ceilings:
        assert 0 <= backoff.next_delay() <= ceiling
    assert backoff.failures == 9
    backoff.reset()
    assert backoff.failures == 0


def test_server_kill_and_restart_with_aof_keeps_data(redis_factory):
    server = redis_factory(appendonly=True)
    client = mdflow.db(server.url)
    client.set("k", "v")
    server.kill()
    server.start()
    assert mdflow.db(server.url).get("k") == b"v"
    server.kill()
    server.start()
    without = redis_factory(appendonly=False)
    mdflow.db(without.url).set("k", "v")
    without.kill()
    without.start()
    assert mdflow.db(without.url).get("k") is None


def test_acl_user_password_and_db_number(redis_factory, caplog):
    import logging

    server = redis_factory(
        extra_args=(
            "--requirepass",
            "adminpw",
            "--user",
            "alice",
            "on",
            ">s3cret",
            "~*",
            "&*",
            "+@all",
        )
    )
    url = f"redis://alice:s3cret@127.0.0.1:{server.port}/3"
    caplog.set_level(logging.INFO, logger="mdflow")
    database = connection.ensure_available(url, deadline=5)
    database.set("k", "v")
    plain = redis.Redis(
        host="127.0.0.1", port=server.port, db=3, username="alice", password="s3cret"
    )
    assert plain.get("k") == b"v"  # db number honoured
    assert (
        redis.Redis(
            host="127.0.0.1", port=server.port, db=0, username="alice", password="s3cret"
        ).get("k")
        is None
    )
    plain.close()
    assert "alice:***@" in caplog.text and "s3cret" not in caplog.text

    async def via_async():
        conn = await connection.wait_available(url, deadline=5)
        return await conn.get("k")

    assert asyncio.run(via_async()) == b"v"
    with pytest.raises(RedisUnavailable) as info:
        connection.ensure_available(f"redis://alice:wrong@127.0.0.1:{server.port}/0", deadline=1)
    assert "wrong" not in str(info.value) and "alice:***@" in str(info.value)
