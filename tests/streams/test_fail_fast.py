"""Errors retrying cannot fix stop a node at once: state ``failed``, the reason, one log line.

Wrong password, missing password, an ACL user without the commands (NOPERM),
a stream id Redis rejects and a key of the wrong type — against real servers.
A lost connection is still retried, and an engine that cannot write says so.
"""

from __future__ import annotations

import logging
import uuid

import pytest
import redis
from helpers import wait_for
from streamz import Stream

import mdflow
from mdflow.errors import NodeFailed, RedisAccessDenied, RedisUnavailable
from mdflow.reservoir import free_port

SECRET = "s3cr3t-pw"


@pytest.fixture(scope="module")
def locked_server():
    """A server that requires a password (``requirepass``)."""
    from mdflow.reservoir import RedisServer

    server = RedisServer(extra_args=("--requirepass", SECRET)).start()
    yield server
    server.cleanup()


@pytest.fixture
def noperm_url(redis_url, rdb):
    """A URL for an ACL user that may connect, PING and TYPE but not use streams."""
    user = f"limited{uuid.uuid4().hex[:6]}"
    rdb.execute_command(
        "ACL", "SETUSER", user, "on", f">{SECRET}", "~*", "+ping", "+type", "+client|setname"
    )
    yield redis_url.replace("redis://", f"redis://{user}:{SECRET}@")
    rdb.execute_command("ACL", "DELUSER", user)


def _outlet(url, prefix, **kwargs):
    return Stream.from_redis(
        f"{prefix}in", group="g", redis_url=url, block=0.1, asynchronous=False, **kwargs
    )


def _engine(url, prefix):
    return Stream.engine(f"{prefix}in", push_interval=0.05, redis_url=url, asynchronous=False)


def _failed_once(node, caplog, secret: str | None = SECRET) -> str:
    """Wait for ``failed``; check one error line that names the node; return the reason."""
    try:
        wait_for(lambda: node.status()["state"] == "failed", timeout=10, message="state failed")
    finally:
        node.stop()
    status = node.status()
    reason = status["failure"]
    assert reason, status
    lines = [r for r in caplog.records if "failed, not retrying" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert lines[0].levelno == logging.ERROR
    everything = " ".join(r.getMessage() for r in caplog.records) + str(status)
    if secret:
        assert secret not in everything
    return reason


def _url_with(server_url: str, userinfo: str) -> str:
    return server_url.replace("redis://", f"redis://{userinfo}@")


@pytest.mark.parametrize("make", [_outlet, _engine], ids=["from_redis", "engine"])
def test_wrong_password_fails_at_once(locked_server, prefix, caplog, make):
    node = make(_url_with(locked_server.url, ":wrong-password"), prefix)
    node.start()
    reason = _failed_once(node, caplog, secret="wrong-password")
    assert "refused the credentials" in reason
    assert ":***@" in reason


@pytest.mark.parametrize("make", [_outlet, _engine], ids=["from_redis", "engine"])
def test_missing_password_fails_at_once(locked_server, prefix, caplog, make):
    node = make(locked_server.url, prefix)
    node.start()
    reason = _failed_once(node, caplog)
    assert "requires a password" in reason


@pytest.mark.parametrize("make", [_outlet, _engine], ids=["from_redis", "engine"])
def test_acl_denial_fails_at_once(noperm_url, prefix, caplog, make):
    node = make(noperm_url, prefix)
    node.start()
    reason = _failed_once(node, caplog)
    assert "denied a command by ACL" in reason
    assert "NOPERM" in reason


def test_start_id_redis_rejects_fails_at_once(redis_url, prefix, caplog):
    node = _outlet(redis_url, prefix, start_id="99999999999999999999999-0")
    node.start()
    reason = _failed_once(node, caplog)
    assert "stream id" in reason


def test_start_id_that_is_no_id_or_time_is_refused_at_construction(redis_url, prefix):
    with pytest.raises(mdflow.ConfigError, match=r"start_id must be .* got 'yesterday'"):
        _outlet(redis_url, prefix, start_id="yesterday")


@pytest.mark.parametrize("make", [_outlet, _engine], ids=["from_redis", "engine"])
def test_wrongtype_fails_at_once(redis_url, rdb, prefix, caplog, make):
    rdb.set(f"{prefix}in", "not a stream")
    node = make(redis_url, prefix)
    node.start()
    reason = _failed_once(node, caplog)
    assert "WRONGTYPE" in reason


def test_run_raises_node_failed_with_the_reason(locked_server, prefix, caplog):
    node = _outlet(_url_with(locked_server.url, ":nope"), prefix)
    with pytest.raises(NodeFailed) as info:
        mdflow.run(node, grace=1)
    assert "refused the credentials" in str(info.value)
    assert list(info.value.failures) == ["from_redis<" + f"{prefix}in>"]


def test_failed_node_can_be_started_again_once_fixed(redis_url, rdb, prefix, caplog):
    rdb.set(f"{prefix}in", "not a stream")
    node = _outlet(redis_url, prefix, start_id="0")
    out = node.sink_to_list()
    node.start()
    wait_for(lambda: node.status()["state"] == "failed", message="failed")
    rdb.delete(f"{prefix}in")
    rdb.xadd(f"{prefix}in", {"a": "1"})
    node.start()
    try:
        wait_for(lambda: out, message="the entry after the fix")
        assert node.status()["failure"] is None
    finally:
        node.stop()


def test_db_and_client_raise_redis_unavailable_with_masked_url():
    url = f"redis://user:{SECRET}@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable, match="is not reachable") as info:
        mdflow.db(url).ping()
    assert SECRET not in str(info.value)
    assert "user:***@" in str(info.value)
    assert isinstance(info.value, ConnectionError)  # still caught by `except ConnectionError`

    import asyncio

    async def ping():
        return await mdflow.client(url).ping()

    with pytest.raises(RedisUnavailable, match="is not reachable") as info:
        asyncio.run(ping())
    assert SECRET not in str(info.value)


def test_db_says_when_the_password_is_refused(locked_server):
    with pytest.raises(RedisAccessDenied, match="refused the credentials") as info:
        mdflow.db(_url_with(locked_server.url, ":bad-one")).ping()
    assert "bad-one" not in str(info.value)
    with pytest.raises(RedisAccessDenied, match="requires a password"):
        mdflow.db(locked_server.url).ping()


def test_engine_that_cannot_write_says_so(redis_factory, prefix):
    server = redis_factory()
    pump = Stream.engine(
        f"{prefix}in", push_interval=0.05, redis_url=server.url, asynchronous=False
    )
    pump.start()
    try:
        wait_for(lambda: pump.status()["written"] > 0, message="first writes")
        server.kill()
        wait_for(
            lambda: pump.status()["state"] == "reconnecting",
            message="state reconnecting while Redis is down",
        )
        written = pump.status()["written"]
        assert pump.status()["reconnects"] > 0
        server.start()
        wait_for(lambda: pump.status()["written"] > written, timeout=20, message="writes again")
        wait_for(lambda: pump.status()["state"] == "running", message="running again")
    finally:
        pump.stop()
    with redis.Redis.from_url(server.url) as conn:
        assert conn.ping()
