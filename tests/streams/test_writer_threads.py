"""Writing from a script's thread (no event loop), and many entries per engine tick.

A plain ``Stream()`` in a script has no event loop: ``to_redis`` hands its
writes to a writer thread (redis-py's synchronous connection) instead of
making every ``emit`` wait for a loop. These tests check that nothing is lost
or reordered that way: not at exit, not while Redis is down, not under
backpressure.
"""

from __future__ import annotations

import doctest
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import redis
from helpers import finish, wait_for
from streamtools import async_wait_for, run, stop_and_wait
from streamz import Stream

import mdflow.nodes.downstreams
import mdflow.nodes.exact
import mdflow.nodes.flushing
import mdflow.nodes.pipelined
import mdflow.nodes.thread_batching
from mdflow.codecs import decode_entry
from mdflow.reservoir import sync_client
from mdflow.reservoir.pipelines import send_commands


def numbers(rdb, topic: str) -> list[int]:
    return [decode_entry(fields)["n"] for _, fields in rdb.xrange(topic)]


def test_a_script_thread_writes_in_order_without_an_event_loop(redis_url, rdb, prefix):
    topic = prefix + "s"
    source = Stream()
    writer = source.to_redis(topic, redis_url=redis_url)
    for n in range(5000):
        source.emit({"n": n})
    assert writer.loop is None and source.loop is None  # no loop was forced on the graph
    assert writer.wait_written(timeout=20)
    assert numbers(rdb, topic) == list(range(5000))
    status = writer.status()
    assert status["written"] == 5000 and status["outstanding"] == 0 and status["errors"] == 0


def test_ids_go_downstream_from_the_writer_thread(redis_url, rdb, prefix):
    topic = prefix + "s"
    source = Stream()
    writer = source.to_redis(topic, redis_url=redis_url)
    ids = writer.sink_to_list()
    for n in range(300):
        source.emit({"n": n})
    assert writer.wait_written(timeout=20)
    assert ids == [entry_id.decode() for entry_id, _ in rdb.xrange(topic)]
    assert writer.status()["written"] == 300


def test_writes_left_when_a_script_ends_are_written_before_it_exits(
    redis_url, rdb, prefix, isolated_env
):
    topic = prefix + "s"
    script = textwrap.dedent(
        f"""
        from streamz import Stream
        import mdflow

        source = Stream()
        source.to_redis({topic!r}, redis_url={redis_url!r})
        for n in range(20_000):
            source.emit({{"n": n}})
        # the script ends here, with writes still queued
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        env=isolated_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    code, _, err = finish(process, timeout=60)
    assert code == 0, err
    assert rdb.xlen(topic) == 20_000


@pytest.mark.slow
@pytest.mark.fault
def test_a_script_writer_waits_for_redis_and_bounds_what_it_holds(
    redis_factory, prefix, monkeypatch
):
    """Redis goes away: the writer retries, the emitting thread blocks once the handed-over
    writes reach their bound (memory stays bounded), and everything is written after."""
    monkeypatch.setattr(mdflow.nodes.pipelined, "MAX_HANDED_OVER", 200)
    server = redis_factory(appendonly=True)
    url, topic = server.url, prefix + "s"
    source = Stream()
    writer = source.to_redis(topic, redis_url=url)
    for n in range(100):
        source.emit({"n": n})
    assert writer.wait_written(timeout=20)
    server.stop()
    emitted = [0]

    def produce():
        for n in range(100, 1100):
            source.emit({"n": n})
            emitted[0] += 1

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    wait_for(lambda: writer.status()["state"] == "reconnecting", 20, message="reconnecting")
    time.sleep(0.5)
    blocked_at = emitted[0]
    assert blocked_at < 1000 and writer.unwritten() <= 201  # the producer waits: bounded
    server.start()
    producer.join(30)
    assert not producer.is_alive()
    assert writer.wait_written(timeout=30)
    conn = redis.Redis.from_url(url)
    assert numbers(conn, topic) == list(range(1100))
    assert writer.status()["state"] == "running" and writer.status()["reconnects"] >= 1


def test_an_engine_writes_each_record_of_a_list_as_its_own_entry(redis_url, rdb, prefix):
    topic = prefix + "s"
    calls = [0]

    def poll():
        calls[0] += 1
        if calls[0] == 1:
            return [{"n": n} for n in range(500)]
        if calls[0] == 2:
            return []  # nothing this time
        if calls[0] == 3:
            return {"n": -1}  # not a list: an error naming what came back
        return None

    async def body():
        pump = Stream.engine(
            topic, poll, push_interval=0.02, flatten=True, redis_url=redis_url, asynchronous=True
        )
        ids = pump.sink_to_list()
        pump.start()
        await async_wait_for(lambda: calls[0] >= 4, message="four calls")
        await async_wait_for(lambda: len(ids) == 500, message="ids emitted")
        await stop_and_wait(pump)
        return pump.status(), ids

    status, ids = run(body)
    assert numbers(rdb, topic) == list(range(500))
    assert ids == [entry_id.decode() for entry_id, _ in rdb.xrange(topic)]
    assert status["written"] == 500 and status["emitted"] == 500
    assert status["errors"] == 1 and "flatten=True" in status["last_error"]
    assert status["empty"] >= 1


def test_send_commands_gives_each_reply_and_survives_a_restart(redis_factory, prefix):
    server = redis_factory()
    client = sync_client(server.url)
    client.set(prefix + "str", "x")
    replies = send_commands(
        client,
        [
            ("XADD", prefix + "s", "*", "a", b"1"),
            ("XADD", prefix + "str", "*", "a", b"2"),  # WRONGTYPE: that reply only
            ("XADD", prefix + "s", "MAXLEN", "~", 10, "*", "a", 3.5),
        ],
    )
    assert isinstance(replies[0], bytes) and isinstance(replies[2], bytes)
    assert isinstance(replies[1], redis.ResponseError) and "WRONGTYPE" in str(replies[1])
    server.restart()
    try:  # the pooled connection died with the server: redis-py reconnects, or it raises
        send_commands(client, [("XLEN", prefix + "s")])
    except redis.ConnectionError:
        pass
    assert send_commands(client, [("PING",)]) == [b"PONG"]


def test_module_examples():
    for module in (
        mdflow.nodes.downstreams,
        mdflow.nodes.exact,
        mdflow.nodes.flushing,
        mdflow.nodes.thread_batching,
    ):
        assert doctest.testmod(module).failed == 0, module.__name__
