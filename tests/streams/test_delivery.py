"""Ack-after-processing, node by node.

For every node type that can hold an element (or finish it later), an entry
is caught *inside* that node; we check it is not acknowledged, then "crash"
(the source is stopped and its graph abandoned) and start a new consumer with
the same name: the entry is delivered again from the group's pending list.
"""

from __future__ import annotations

import asyncio

import pytest
from streamtools import async_wait_for, pending_count, run, stop_and_wait
from streamz import Stream
from streamz.sinks import Sink

from mdflow.codecs import encode_entry


class Gate:
    """An async function that never finishes until released."""

    def __init__(self):
        self.event = asyncio.Event()

    async def __call__(self, x):
        await self.event.wait()
        return x


def hold_rate_limit(source):
    return source.rate_limit(60)  # the 1st element passes, the 2nd waits 60 s inside


def hold_async_sink(source):
    return source.sink(Gate())


def hold_async_map(source):
    return source.map_async(Gate())


def hold_buffer(source):
    return source.buffer(10).sink(Gate())


def hold_zip(source):
    return source.zip(Stream(asynchronous=True))  # the partner never arrives


def hold_combine_latest(source):
    return source.combine_latest(Stream(asynchronous=True), emit_on=0)


def hold_sliding_window(source):
    return source.sliding_window(3, return_partial=False)


def hold_partition(source):
    return source.partition(3)


def hold_timed_window(source):
    return source.timed_window(60)


def hold_delay(source):
    return source.delay(60)


def hold_union_branches(source):
    source.sink(lambda x: None)  # one branch finishes at once ...
    return source.sink(Gate())  # ... the other never does


HOLDERS = {
    "rate_limit": (hold_rate_limit, 2, 1),  # (builder, entries written, entries that get stuck)
    "async_sink": (hold_async_sink, 1, 1),
    "async_map": (hold_async_map, 1, 1),
    "buffer": (hold_buffer, 3, 3),
    "zip": (hold_zip, 2, 2),
    "combine_latest": (hold_combine_latest, 1, 1),
    "sliding_window": (hold_sliding_window, 2, 2),
    "partition": (hold_partition, 2, 2),
    "timed_window": (hold_timed_window, 2, 2),
    "delay": (hold_delay, 2, 1),  # streamz delays *between* elements: the 1st passes
    "two_branches": (hold_union_branches, 1, 1),
}


@pytest.mark.parametrize("name", sorted(HOLDERS))
def test_entry_inside_node_is_not_acked_and_is_redelivered(name, redis_url, rdb, prefix):
    build, written, stuck = HOLDERS[name]
    topic = prefix + "s"
    for n in range(written):
        rdb.xadd(topic, encode_entry(n))

    async def body():
        first = Stream.from_redis(
            topic, group="g", consumer="c", start_id="0", redis_url=redis_url, asynchronous=True
        )
        tail = build(first)
        # streamz holds downstream nodes weakly: a sink at the end keeps the chain alive
        keep = tail if isinstance(tail, Sink) else tail.sink_to_list()
        first.start()
        await async_wait_for(
            lambda: first.status()["emitted"] + first.status()["inflight"] >= written,
            message="entries read",
        )
        await asyncio.sleep(0.3)  # give a premature ack every chance to happen
        assert first.status()["acked"] == written - stuck
        assert await pending_count(redis_url, topic, "g") == stuck
        await stop_and_wait(first)  # the "crash": its graph is abandoned with the element
        del keep
        second = Stream.from_redis(
            topic, group="g", consumer="c", start_id="0", redis_url=redis_url, asynchronous=True
        )
        replayed = second.sink_to_list()
        second.start()
        await async_wait_for(lambda: len(replayed) == stuck, message="replay")
        await async_wait_for(lambda: second.status()["acked"] == stuck, message="replay acked")
        await stop_and_wait(second)
        return replayed

    replayed = run(body)
    assert replayed == list(range(written - stuck, written))
    assert rdb.xpending(topic, "g")["pending"] == 0


def test_entry_inside_to_redis_is_acked_only_after_xadd(redis_url, redis_factory, rdb, prefix):
    topic = prefix + "s"
    target = redis_factory()
    target.stop()  # the sink's Redis is down: its XADD keeps retrying
    rdb.xadd(topic, encode_entry("x"))

    async def body():
        source = Stream.from_redis(
            topic, group="g", consumer="c", start_id="0", redis_url=redis_url, asynchronous=True
        )
        writer = source.to_redis("copy", redis_url=target.url)
        source.start()
        await async_wait_for(lambda: writer.status()["reconnects"] >= 1, message="retries")
        assert source.status()["acked"] == 0
        assert await pending_count(redis_url, topic, "g") == 1
        target.start()  # the sink's Redis comes back: write, then ack
        await async_wait_for(lambda: source.status()["acked"] == 1, timeout=20)
        await stop_and_wait(source)

    run(body)
    import redis

    assert redis.Redis.from_url(target.url).xlen("copy") == 1


def test_sync_exception_is_not_acked_and_is_retried(redis_url, rdb, prefix):
    topic = prefix + "s"
    rdb.xadd(topic, encode_entry("flaky"))
    attempts = []

    def flaky(x):
        attempts.append(x)
        if len(attempts) < 3:
            raise ValueError("transient")
        return x

    async def body():
        source = Stream.from_redis(
            topic, group="g", consumer="c", start_id="0", redis_url=redis_url, asynchronous=True
        )
        out = source.map(flaky).sink_to_list()
        source.start()
        await async_wait_for(lambda: out == ["flaky"], timeout=15)
        await async_wait_for(lambda: source.status()["acked"] == 1)
        await stop_and_wait(source)
        return source.status()

    status = run(body)
    assert len(attempts) == 3 and status["failed"] == 2 and status["dead_lettered"] == 0
    assert rdb.xpending(topic, "g")["pending"] == 0


def test_late_finish_of_a_failed_delivery_does_not_ack_its_retry(redis_url, rdb, prefix):
    """Delivery 1 fails in one branch (an async write error) while another branch still holds
    it; delivery 2 is in flight when delivery 1's last branch finishes. That late finish must
    not acknowledge delivery 2, which is still being processed."""
    topic, bad, good = prefix + "s", prefix + "wrongtype", prefix + "copy"
    rdb.set(bad, "not a stream")  # XADD to it fails: WRONGTYPE
    rdb.xadd(topic, encode_entry("x"))
    gates: list[asyncio.Event] = []
    targets = iter([bad, good, good, good])

    async def hold(x):
        gate = asyncio.Event()
        gates.append(gate)
        await gate.wait()

    async def body():
        source = Stream.from_redis(
            topic, group="g", consumer="c", start_id="0", redis_url=redis_url, asynchronous=True
        )
        source.to_redis(lambda x: next(targets), redis_url=redis_url)
        source.buffer(10).sink(hold)  # holds the element's refs without blocking the source
        source.start()
        await async_wait_for(lambda: source.status()["failed"] == 1, message="1st fails")
        await async_wait_for(
            lambda: source.status()["emitted"] == 2, timeout=15, message="retry in flight"
        )  # delivery 2 waits in the buffer
        gates[0].set()  # delivery 1's last branch finishes late
        await async_wait_for(lambda: len(gates) == 2, message="delivery 2 reaches the sink")
        await asyncio.sleep(0.3)
        assert source.status()["acked"] == 0, "the retry was acked before it finished"
        assert await pending_count(redis_url, topic, "g") == 1
        gates[1].set()  # delivery 2 finishes: now it is acked
        await async_wait_for(lambda: source.status()["acked"] == 1)
        await stop_and_wait(source)

    run(body)
    assert rdb.xlen(good) == 1
