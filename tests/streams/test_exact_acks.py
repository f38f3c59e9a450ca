"""The cases that broke exact acknowledgement, one test each (see the matrix for all nodes).

Each reproduces a report: a ``timed_window`` whose coroutines were awaited
twice, a batch flattened and filtered, a window that outlived ``claim_idle``,
``map_async`` swallowing exceptions, a ``buffer`` stalled by one failure,
``max_inflight`` not bounding a failing graph, and poison taking the slots of good entries.
"""

from __future__ import annotations

import asyncio
import logging

from streamtools import async_wait_for, pending_count, run, stop_and_wait
from streamz import Stream

from mdflow.codecs import encode_entry


def outlet(url: str, topic: str, **kwargs) -> Stream:
    options = {"group": "g", "consumer": "c", "start_id": "0", "block": 0.05}
    options.update(kwargs)
    return Stream.from_redis(topic, redis_url=url, asynchronous=True, **options)


def write(rdb, topic: str, values) -> list[bytes]:
    return [rdb.xadd(topic, encode_entry(v)) for v in values]


def test_timed_window_into_async_sink_processes_each_entry_once(redis_url, rdb, prefix, caplog):
    topic = prefix + "s"
    write(rdb, topic, range(5))
    seen: list[int] = []

    async def store(window):
        await asyncio.sleep(0.01)
        seen.extend(window)

    async def body():
        source = outlet(redis_url, topic)
        source.timed_window(0.05).sink(store)
        source.start()
        await async_wait_for(lambda: source.status()["acked"] == 5, message="all acked")
        await asyncio.sleep(0.2)
        await stop_and_wait(source)
        return source.status()

    with caplog.at_level(logging.ERROR):
        status = run(body)
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert status["failed"] == 0 and status["dead_lettered"] == 0
    assert not [r for r in caplog.records if "already awaited" in r.getMessage()]


def test_batch_flatten_filter_buffer_keeps_what_passed_the_filter(redis_url, rdb, prefix):
    topic = prefix + "s"
    write(rdb, topic, range(10))
    gate = asyncio.Event()

    async def hold(x):
        await gate.wait()

    async def body():
        first = outlet(redis_url, topic, batch=True)
        first.flatten().filter(lambda x: x % 2 == 0).buffer(3).sink(hold)
        first.start()
        await async_wait_for(lambda: first.status()["read"] == 10, message="batch read")
        await asyncio.sleep(0.3)  # a premature ack has every chance to happen
        held = await pending_count(redis_url, topic, "g")
        await stop_and_wait(first)  # the crash
        second = outlet(redis_url, topic, batch=True)
        replayed = second.flatten().filter(lambda x: x % 2 == 0).sink_to_list()
        second.start()
        await async_wait_for(lambda: len(replayed) == 5, message="replayed")
        await async_wait_for(lambda: second.status()["acked"] == 10, message="acked")
        await stop_and_wait(second)
        gate.set()
        return held, replayed

    held, replayed = run(body)
    assert held == 10
    assert replayed == [0, 2, 4, 6, 8]


def test_window_held_for_ten_claim_idles_is_neither_reclaimed_nor_stolen(redis_url, rdb, prefix):
    """claim_idle=0.3 s, a window holding two entries for 3 s, a second live consumer."""
    topic = prefix + "s"
    ids = write(rdb, topic, [0, 1])
    options = {"claim_idle": 0.3, "max_deliveries": 3}

    async def body():
        holder = outlet(redis_url, topic, consumer="holder", **options)
        windows = holder.sliding_window(3, return_partial=False).sink_to_list()
        other = outlet(redis_url, topic, consumer="other", **options)
        stolen = other.sink_to_list()
        holder.start()
        await async_wait_for(lambda: holder.status()["read"] == 2, message="read")
        other.start()
        await asyncio.sleep(3.0)
        rows = rdb.xpending_range(topic, "g", "-", "+", 10)
        during = (holder.status(), other.status(), list(stolen), rows)
        await stop_and_wait(other)
        write(rdb, topic, [2])  # the window fills and finishes all three
        await async_wait_for(lambda: windows == [(0, 1, 2)], message="the full window")
        # the window keeps its last two (it still needs them): the first is done
        await async_wait_for(lambda: holder.status()["acked"] == 1, message="first acked")
        await stop_and_wait(holder)
        return during

    (holder, other, stolen, rows) = run(body)
    assert stolen == [] and other["claimed"] == 0 and holder["claimed"] == 0
    assert [(r["message_id"], r["consumer"], r["times_delivered"]) for r in rows] == [
        (ids[0], b"holder", 1),
        (ids[1], b"holder", 1),
    ]
    assert rdb.xlen(topic + ":dead") == 0


def test_entries_of_a_stopped_consumer_are_claimed_by_a_live_one(redis_url, rdb, prefix):
    topic = prefix + "s"
    write(rdb, topic, [0, 1])
    options = {"claim_idle": 0.3, "max_deliveries": 3}

    async def body():
        gone = outlet(redis_url, topic, consumer="gone", **options)
        gone.sliding_window(3, return_partial=False).sink_to_list()
        gone.start()
        await async_wait_for(lambda: gone.status()["read"] == 2, message="read")
        await stop_and_wait(gone)  # it left without finishing them
        live = outlet(redis_url, topic, consumer="live", **options)
        got = live.sink_to_list()
        live.start()
        await async_wait_for(lambda: len(got) == 2, message="claimed and processed")
        await async_wait_for(lambda: live.status()["acked"] == 2, message="acked")
        await stop_and_wait(live)
        return got, live.status()

    got, status = run(body)
    assert sorted(got) == [0, 1] and status["claimed"] == 2
    assert rdb.xpending(topic, "g")["pending"] == 0


def test_exception_in_map_async_is_retried_then_dead_lettered(redis_url, rdb, prefix):
    topic = prefix + "s"
    write(rdb, topic, range(20))
    done: list[int] = []

    async def check(x):
        if x in (3, 11):
            raise ValueError(f"cannot handle {x}")
        return x

    async def body():
        source = outlet(redis_url, topic, max_deliveries=2, retry_delay=0.01)
        source.map_async(check).sink(done.append)
        source.start()
        await async_wait_for(
            lambda: source.status()["dead_lettered"] == 2, message="2 dead-lettered"
        )
        await async_wait_for(lambda: len(done) == 18, message="18 processed")
        await async_wait_for(
            lambda: rdb.xpending(topic, "g")["pending"] == 0, message="nothing pending"
        )
        await stop_and_wait(source)
        return source.status()

    status = run(body)
    assert sorted(done) == [x for x in range(20) if x not in (3, 11)]
    assert status["failed"] == 4  # two deliveries each
    dead = [f[b"reason"].decode() for _, f in rdb.xrange(topic + ":dead")]
    assert len(dead) == 2 and all("max_deliveries=2" in r for r in dead)


def test_buffer_goes_on_after_its_sink_raised(redis_url, rdb, prefix):
    topic = prefix + "s"
    write(rdb, topic, range(18))
    done: list[int] = []
    raised: list[int] = []

    def store(x):
        if x == 2 and not raised:
            raised.append(x)
            raise RuntimeError("the database blinked")
        done.append(x)

    async def body():
        source = outlet(redis_url, topic, retry_delay=0.01)
        source.buffer(5).sink(store)
        source.start()
        await async_wait_for(lambda: source.status()["acked"] == 18, message="all acked")
        write(rdb, topic, [100])  # new entries still flow
        await async_wait_for(lambda: 100 in done, message="a new entry processed")
        await stop_and_wait(source)

    run(body)
    assert sorted(done) == [*range(18), 100]
    assert rdb.xpending(topic, "g")["pending"] == 0


def test_max_inflight_bounds_a_graph_that_always_fails(redis_url, rdb, prefix):
    topic = prefix + "s"
    pipe = rdb.pipeline()
    for n in range(2000):
        pipe.xadd(topic, encode_entry(n))
    pipe.execute()

    def refuse(x):
        raise RuntimeError("downstream is down")

    async def body():
        source = outlet(
            redis_url, topic, max_inflight=20, max_retrying=30, batch_size=10, retry_delay=0.05
        )
        source.sink(refuse)
        source.start()
        most = retrying = 0
        for _ in range(30):  # 3 s
            await asyncio.sleep(0.1)
            most = max(most, await pending_count(redis_url, topic, "g"))
            retrying = max(retrying, source.status()["retrying"])
            assert source.status()["held"] <= 20 + 30
        await stop_and_wait(source)
        return most, retrying, source.status()

    most, retrying, status = run(body)
    # held: at most max_inflight in the graph plus max_retrying waiting; (one read of
    # batch_size may be on its way when the bound is reached)
    assert 0 < most <= 20 + 30 + 10
    assert retrying == 30  # reading paused once max_retrying entries waited
    assert status["held"] <= 20 + 30
    assert status["max_retrying"] == 30


def test_entries_waiting_for_a_retry_leave_their_slots_to_good_ones(redis_url, rdb, prefix):
    """Poison that the function rejects waits for its retries outside max_inflight: the good
    entries behind it flow on; each retry reads the entry again (its data is not kept)."""
    topic = prefix + "s"
    write(rdb, topic, [-1] * 30 + list(range(200)))  # 30 poison entries first
    seen: list[int] = []

    def check(x):
        if x < 0:
            raise ValueError(f"negative: {x}")
        seen.append(x)

    async def body():
        source = outlet(redis_url, topic, max_inflight=10, batch_size=10, retry_delay=1.0)
        source.sink(check)
        source.start()
        # every good entry is through while the poison still waits for its first retry
        # (retries come after 1, 2, 4 and 5 s: the first dead letter only after 12 s)
        await async_wait_for(
            lambda: source.status()["acked"] == 200, timeout=10, message="good entries acked"
        )
        status = source.status()
        waiting = [entry.fields for entry in source._retry.values()]
        await stop_and_wait(source)
        return status, waiting

    status, waiting = run(body)
    assert sorted(seen) == list(range(200))
    assert status["retrying"] == 30 and status["held"] == 30 and status["dead_lettered"] == 0
    assert waiting == [{}] * 30  # ids only
    assert status["acked"] == 200


def test_a_retry_reads_the_entry_again(redis_url, rdb, prefix):
    topic = prefix + "s"
    write(rdb, topic, [1])
    calls: list[int] = []

    def flaky(x):
        calls.append(x)
        if len(calls) == 1:
            raise RuntimeError("first delivery fails")

    async def body():
        source = outlet(redis_url, topic, retry_delay=0.05)
        source.sink(flaky)
        source.start()
        await async_wait_for(lambda: source.status()["acked"] == 1, message="acked on retry")
        await stop_and_wait(source)
        return source.status()

    status = run(body)
    assert calls == [1, 1]
    assert status["failed"] == 1 and status["held"] == 0 and status["retrying"] == 0
