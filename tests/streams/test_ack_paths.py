"""The outlet's two acknowledgement paths: plain (no reference counting) and counted.

A graph whose nodes all finish an element within its emit is acknowledged
without a ``RefCounter`` per element; as soon as a node that may hold elements
joins the graph (before or after ``start()``, even during an emit), the outlet
counts references again. These tests check that the switch never acknowledges
an entry a node still holds.
"""

from __future__ import annotations

import asyncio
import gc
import logging

from streamtools import async_wait_for, pending_count, run, stop_and_wait
from streamz import Stream

from mdflow.codecs import encode_entry
from mdflow.nodes.downstreams import finishes_in_emit, graph_version, live_downstreams


def outlet(url: str, topic: str, **kwargs) -> Stream:
    options = {"group": "g", "consumer": "c", "start_id": "0", "block": 0.05}
    options.update(kwargs)
    return Stream.from_redis(topic, redis_url=url, asynchronous=True, **options)


def write(rdb, topic: str, values) -> list[str]:
    return [rdb.xadd(topic, encode_entry(v)).decode() for v in values]


def pending_ids(rdb, topic: str) -> list[str]:
    return [row["message_id"].decode() for row in rdb.xpending_range(topic, "g", "-", "+", 100)]


def test_a_plain_graph_is_acknowledged_without_reference_counting(redis_url, rdb, prefix):
    topic = prefix + "s"
    write(rdb, topic, range(50))
    seen: list[int] = []

    async def body():
        source = outlet(redis_url, topic)
        source.map(lambda x: x * 2).filter(lambda x: x % 4 == 0).sink(seen.append)
        source.start()
        await async_wait_for(lambda: source.status()["acked"] == 50, message="all acked")
        status = source.status()
        await stop_and_wait(source)
        return status, await pending_count(redis_url, topic, "g")

    status, pending = run(body)
    assert status["ack_path"] == "plain"
    assert status["emitted"] == 50 and status["held"] == 0
    assert seen == [x * 2 for x in range(50) if x % 2 == 0]
    assert pending == 0


def test_a_window_added_while_running_keeps_what_it_holds_pending(redis_url, rdb, prefix):
    topic = prefix + "s"
    write(rdb, topic, range(5))
    windows: list[tuple] = []

    async def body():
        source = outlet(redis_url, topic)
        source.map(lambda x: x).sink(lambda _: None)
        source.start()
        await async_wait_for(lambda: source.status()["acked"] == 5, message="first acked")
        before = source.status()["ack_path"]
        source.sliding_window(3, return_partial=False).sink(windows.append)
        write(rdb, topic, range(5, 10))
        await async_wait_for(lambda: source.status()["acked"] == 8, message="window acked")
        await asyncio.sleep(0.2)  # nothing else is acknowledged: the window holds 8 and 9
        after = source.status()
        await stop_and_wait(source)
        return before, after

    before, after = run(body)
    assert before == "plain" and after["ack_path"] == "counted"
    assert after["acked"] == 8
    assert windows[-1] == (7, 8, 9)
    assert len(pending_ids(rdb, topic)) == 2


def test_a_holding_node_added_during_an_emit_gets_the_entry_again(redis_url, rdb, prefix, caplog):
    """The race of a node added from another thread while an element travels, made exact:
    the function of the first map attaches a window further down, so the element that is
    on its way reaches the window without a reference of its own."""
    topic = prefix + "s"
    ids = write(rdb, topic, ["a", "b", "trigger"])
    seen: list[str] = []
    windows: list[tuple] = []

    async def body():
        source = outlet(redis_url, topic)
        later = source.map(lambda x: attach(x)).map(lambda x: x)
        later.sink(seen.append)

        def attach(x):
            if x == "trigger" and not windows and not getattr(later, "attached", False):
                later.attached = True
                later.sliding_window(2, return_partial=False).sink(windows.append)
            return x

        source.start()
        await async_wait_for(lambda: seen.count("trigger") == 2, message="trigger again")
        await asyncio.sleep(0.2)
        status = source.status()
        await stop_and_wait(source)
        return status

    with caplog.at_level(logging.INFO, logger="mdflow.streams.outlet"):
        status = run(body)
    assert "the graph changed while entry" in caplog.text
    assert status["ack_path"] == "counted"
    assert seen == ["a", "b", "trigger", "trigger"]
    # the window holds the trigger (twice: without and with a reference): it stays pending
    assert pending_ids(rdb, topic) == [ids[2]]
    assert status["acked"] == 2


def test_an_async_sink_on_the_plain_path_is_awaited_before_the_ack(redis_url, rdb, prefix):
    topic = prefix + "s"
    write(rdb, topic, ["x"])
    gate = None
    stored: list[str] = []

    async def store(x):
        await gate.wait()
        stored.append(x)

    async def body():
        nonlocal gate
        gate = asyncio.Event()
        source = outlet(redis_url, topic)
        source.map(str.upper).sink(store)
        source.start()
        await async_wait_for(lambda: source.status()["emitted"] == 1, message="emitted")
        await asyncio.sleep(0.2)
        held = source.status()
        gate.set()
        await async_wait_for(lambda: source.status()["acked"] == 1, message="acked")
        await stop_and_wait(source)
        return held

    held = run(body)
    assert held["ack_path"] == "plain"
    assert held["acked"] == 0 and held["inflight"] == 1
    assert stored == ["X"]
    assert pending_ids(rdb, topic) == []


def test_a_failing_function_on_the_plain_path_is_retried_then_dead_lettered(redis_url, rdb, prefix):
    topic = prefix + "s"
    write(rdb, topic, [1, 0, 2])
    seen: list[float] = []

    async def body():
        source = outlet(redis_url, topic, max_deliveries=2, retry_delay=0.01)
        source.map(lambda x: 1 / x).sink(seen.append)
        source.start()
        await async_wait_for(
            lambda: source.status()["dead_lettered"] == 1, message="the poison dead-lettered"
        )
        await async_wait_for(lambda: len(seen) == 2, message="others processed")
        await asyncio.sleep(0.1)
        status = source.status()
        await stop_and_wait(source)
        return status

    status = run(body)
    assert status["ack_path"] == "plain"
    assert sorted(seen) == [0.5, 1.0]
    assert rdb.xlen(f"{topic}:dead") == 1
    assert pending_ids(rdb, topic) == []


def test_graph_version_follows_every_change_of_any_downstream_set():
    source = Stream()
    version = graph_version()
    mapped = source.map(abs)
    assert graph_version() != version and live_downstreams(source) == [mapped]
    version = graph_version()
    del mapped
    gc.collect()  # a node nobody refers to leaves the graph
    assert graph_version() != version and live_downstreams(source) == []
    kept = Stream()
    version = graph_version()
    source.connect(kept)
    assert graph_version() != version and finishes_in_emit(source)
    version = graph_version()
    source.disconnect(kept)
    assert graph_version() != version and live_downstreams(source) == []
    limited = source.map(abs).rate_limit(0.1)  # (a node nobody refers to is collected)
    assert not finishes_in_emit(source)
    del limited
