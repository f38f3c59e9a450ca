"""The pump: schedule, thread pool, async functions, skipped ticks, restartability."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from streamtools import async_wait_for, run, stop_and_wait
from streamz import Stream

import mdflow
from mdflow.errors import ConfigError


def pump(url, topic, func, **kwargs):
    return Stream.engine(topic, func, redis_url=url, asynchronous=True, **kwargs)


def test_engine_writes_results_and_emits_ids(redis_url, rdb, prefix):
    topic = prefix + "s"
    counter = iter(range(1000))
    threads = set()

    def produce():
        threads.add(threading.current_thread().name)
        return {"n": next(counter)}

    async def body():
        source = pump(redis_url, topic, produce, push_interval=0.02)
        ids = source.sink_to_list()
        source.start()
        await async_wait_for(lambda: len(ids) >= 5)
        await stop_and_wait(source)
        return ids, threading.current_thread().name

    ids, loop_thread = run(body)
    entries = rdb.xrange(topic)
    assert [e[0].decode() for e in entries][: len(ids)] == ids
    assert [mdflow.codecs.decode_entry(f)["n"] for _, f in entries] == list(range(len(entries)))
    assert loop_thread not in threads, "a sync func must never run on the IOLoop thread"


def test_none_means_nothing_this_tick(redis_url, rdb, prefix):
    topic = prefix + "s"
    values = iter([None, {"a": 1}, None, {"a": 2}] + [None] * 1000)

    async def body():
        source = pump(redis_url, topic, lambda: next(values), push_interval=0.01)
        source.start()
        await async_wait_for(lambda: source.status()["calls"] >= 6)
        await stop_and_wait(source)
        return source.status()

    status = run(body)
    assert rdb.xlen(topic) == 2
    assert status["written"] == 2 and status["empty"] >= 4


def test_async_function_is_awaited(redis_url, rdb, prefix):
    topic = prefix + "s"

    async def fetch():
        await asyncio.sleep(0.001)
        return {"ok": True}

    async def body():
        source = pump(redis_url, topic, fetch, push_interval=0.01)
        source.start()
        await async_wait_for(lambda: source.status()["written"] >= 3)
        await stop_and_wait(source)

    run(body)
    assert mdflow.codecs.decode_entry(rdb.xrange(topic)[0][1]) == {"ok": True}


class SlowFunc:
    """A blocking func that records how many of its calls overlap."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.active = self.peak = 0
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(self.seconds)
        with self.lock:
            self.active -= 1
        return {"x": 1}


def test_slow_func_skips_ticks_without_asyncflag(redis_url, prefix):
    slow = SlowFunc(0.1)

    async def body():
        source = pump(redis_url, prefix + "s", slow, push_interval=0.01)
        source.start()
        await async_wait_for(lambda: source.status()["calls"] >= 3)
        await stop_and_wait(source)
        return source.status()

    status = run(body)
    assert slow.peak == 1, "without asyncflag the next call waits for the previous one"
    assert status["skipped_ticks"] > 0


def test_asyncflag_overlaps_up_to_threadcount(redis_url, prefix):
    slow = SlowFunc(0.2)

    async def body():
        source = pump(
            redis_url, prefix + "s", slow, push_interval=0.01, asyncflag=True, threadcount=3
        )
        source.start()
        await async_wait_for(lambda: source.status()["calls"] >= 9, timeout=15)
        await stop_and_wait(source)
        return source.status()

    status = run(body)
    assert slow.peak == 3
    assert status["skipped_ticks"] > 0


def test_ticks_keep_a_fixed_rate(redis_url, prefix):
    stamps = []

    def stamp():
        stamps.append(time.monotonic())
        time.sleep(0.004)  # work inside the tick must not push the schedule back
        return None

    async def body():
        source = pump(redis_url, prefix + "s", stamp, push_interval=0.02)
        source.start()
        await async_wait_for(lambda: len(stamps) >= 26, timeout=15)
        await stop_and_wait(source)

    run(body)
    span = stamps[25] - stamps[0]
    # 25 intervals of 20 ms; drift would accumulate 25 x 4 ms of work (+100 ms)
    assert span < 25 * 0.02 + 0.08, f"schedule drifted: 25 ticks took {span:.3f}s"


def test_func_errors_are_counted_and_pumping_continues(redis_url, rdb, prefix):
    topic = prefix + "s"
    calls = [0]

    def sometimes():
        calls[0] += 1
        if calls[0] % 2:
            raise RuntimeError("feed hiccup")
        return {"n": calls[0]}

    async def body():
        source = pump(redis_url, topic, sometimes, push_interval=0.01)
        source.start()
        await async_wait_for(lambda: source.status()["written"] >= 3)
        await stop_and_wait(source)
        return source.status()

    status = run(body)
    assert status["errors"] >= 3 and "feed hiccup" in status["last_error"]


def test_start_stop_idempotent_and_restartable(redis_url, rdb, prefix):
    topic = prefix + "s"

    async def body():
        source = pump(redis_url, topic, lambda: {"t": 1}, push_interval=0.01)
        source.start()
        source.start()
        await async_wait_for(lambda: source.status()["written"] >= 2)
        await stop_and_wait(source)
        source.stop()
        written = source.status()["written"]
        source.start()
        await async_wait_for(lambda: source.status()["written"] >= written + 2)
        await stop_and_wait(source)
        return source.status()

    status = run(body)
    assert status["state"] == "stopped"
    assert rdb.xlen(topic) == status["written"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"topic": 3},
            r"engine: topic must be a non-empty str naming a Redis stream; got 3 \(int\)",
        ),
        ({"topic": "t", "func": "nope"}, "func must be a callable"),
        ({"topic": "t", "push_interval": 0}, "push_interval must be a positive number"),
        ({"topic": "t", "threadcount": 0}, "threadcount must be a positive int"),
        ({"topic": "t", "codec": "auto"}, "codec"),
    ],
)
def test_engine_argument_errors(redis_url, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Stream.engine(redis_url=redis_url, **kwargs)
