"""The blocked-loop watchdog: a slow synchronous node is named, once per episode, no leaks.

Real pipelines on the test Redis: an outlet reads entries the test writes, each
entry says how long the mapped function sleeps; a pump on the same loop is the
"other source" that could not run.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time

import pytest
from helpers import wait_for
from streamtools import async_wait_for, run, stop_and_wait
from streamz import Stream
from tornado.ioloop import IOLoop

from mdflow.codecs import encode_entry
from mdflow.nodes import loop_blocks, watchdog

LOGGER = "mdflow.nodes.watchdog"
SLEEP = 1.2  # well above the default threshold (0.5 s), so a loaded machine still sees it
# The warning's duration is how late the loop's heartbeat was: at most one heartbeat
# interval (0.1 s) less than the block itself.
SLACK = 0.25


def slow(x):
    time.sleep(x.get("sleep", 0))
    return x


async def aslow(x):
    time.sleep(x.get("sleep", 0))  # a synchronous call inside an async function


def user_blocking():
    time.sleep(SLEEP)


def warnings_of(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING
    ]


def blocked_seconds(message: str) -> float:
    match = re.search(r"blocked the event loop for ([0-9.]+)s", message)
    assert match, message
    return float(match.group(1))


def watchdog_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("mdflow-watchdog")}


class Graph:
    """An outlet with ``.map(slow)`` and a pump on the same loop (the other source).

    With ``asynchronous=True``, build it inside the running loop's coroutine.
    """

    def __init__(self, url: str, prefix: str, **kwargs):
        counter = iter(range(10**6))
        self.topic = prefix + "in"
        self.pump = Stream.engine(
            prefix + "ticks",
            lambda: {"n": next(counter)},
            push_interval=0.05,
            redis_url=url,
            **kwargs,
        )
        self.outlet = Stream.from_redis(
            self.topic, group="g", start_id="0", redis_url=url, **kwargs
        )
        self.mapped = self.outlet.map(slow)
        self.got = self.mapped.sink_to_list()

    def start(self) -> None:
        self.pump.start()
        self.outlet.start()


@pytest.fixture
def caplog(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    return caplog


@pytest.fixture(autouse=True)
def default_threshold(monkeypatch):
    monkeypatch.delenv(watchdog.BLOCKED_LOOP_ENV, raising=False)


def test_slow_map_warns_once_naming_the_node_and_function(redis_url, rdb, prefix, caplog):
    topic = prefix + "in"
    for sleep in (0, SLEEP, 0):
        rdb.xadd(topic, encode_entry({"sleep": sleep}))

    async def body():
        graph = Graph(redis_url, prefix, asynchronous=True)
        graph.start()
        await async_wait_for(lambda: len(graph.got) == 3, 30, message="3 elements")
        await async_wait_for(
            lambda: loop_blocks(graph.mapped)["blocked_loop_episodes"] == 1, 30, message="report"
        )
        state = watchdog._watches[asyncio.get_running_loop()]
        assert state.thread is not None and state.thread.is_alive()
        await stop_and_wait(graph.pump, graph.outlet)
        return graph, state.thread

    graph, thread = run(body)
    (message,) = warnings_of(caplog)
    assert message.startswith("map<slow>: a synchronous call blocked the event loop for ")
    assert "(in slow at " in message and "test_watchdog.py" in message
    assert f"other sources on this loop (engine<{prefix}ticks>)" in message
    assert ".map_async(...)" in message and "run_in_executor" in message
    assert blocked_seconds(message) >= SLEEP - SLACK
    blocks = loop_blocks(graph.mapped)
    assert blocks["blocked_loop_episodes"] == 1
    assert blocks["blocked_loop_s"] >= SLEEP - SLACK
    assert loop_blocks(graph.outlet)["blocked_loop_episodes"] == 0
    # The loop is closed: its watchdog thread ended with it.
    wait_for(lambda: not thread.is_alive(), message="watchdog thread to end")


def test_fast_pipeline_logs_nothing(redis_url, rdb, prefix, caplog):
    for _ in range(200):
        rdb.xadd(prefix + "in", encode_entry({"sleep": 0}))

    async def body():
        graph = Graph(redis_url, prefix, asynchronous=True)
        graph.start()
        await async_wait_for(lambda: len(graph.got) == 200, 30, message="200 elements")
        await asyncio.sleep(1.0)  # a few heartbeats with nothing to report
        await stop_and_wait(graph.pump, graph.outlet)
        return graph

    graph = run(body)
    assert warnings_of(caplog) == []
    assert loop_blocks(graph.mapped)["blocked_loop_episodes"] == 0


def test_repeats_are_counted_and_logged_at_most_once_a_minute(
    redis_url, rdb, prefix, caplog, monkeypatch
):
    async def body():
        graph = Graph(redis_url, prefix, asynchronous=True)

        async def episode(number: int) -> None:
            rdb.xadd(graph.topic, encode_entry({"sleep": SLEEP}))
            await async_wait_for(
                lambda: loop_blocks(graph.mapped)["blocked_loop_episodes"] == number,
                30,
                message=f"episode {number}",
            )

        graph.start()
        await episode(1)
        await episode(2)  # within a minute of the first: counted, not logged
        assert len(warnings_of(caplog)) == 1
        monkeypatch.setattr(watchdog, "REPEAT_INTERVAL", 0.0)
        await episode(3)  # logged, with the episode that was not
        await stop_and_wait(graph.pump, graph.outlet)
        return graph

    graph = run(body)
    first, third = warnings_of(caplog)
    assert first.startswith("map<slow>") and third.startswith("map<slow>")
    assert "more episode" not in first
    assert "1 more episode(s)" in third
    blocks = loop_blocks(graph.mapped)
    assert blocks["blocked_loop_episodes"] == 3
    assert blocks["blocked_loop_s"] >= 3 * (SLEEP - SLACK)


def test_disabled_by_environment(redis_url, rdb, prefix, caplog, monkeypatch):
    monkeypatch.setenv(watchdog.BLOCKED_LOOP_ENV, "0")
    before = watchdog_threads()
    rdb.xadd(prefix + "in", encode_entry({"sleep": SLEEP}))
    rdb.xadd(prefix + "in", encode_entry({"sleep": 0}))

    async def body():
        graph = Graph(redis_url, prefix, asynchronous=True)
        graph.start()
        await async_wait_for(lambda: len(graph.got) == 2, 30, message="2 elements")
        started = watchdog_threads() - before
        await stop_and_wait(graph.pump, graph.outlet)
        return graph, started

    graph, started = run(body)
    assert started == set()
    assert warnings_of(caplog) == []
    assert loop_blocks(graph.mapped)["blocked_loop_episodes"] == 0


def test_threshold_from_environment(monkeypatch, caplog):
    monkeypatch.setenv(watchdog.BLOCKED_LOOP_ENV, "2.5")
    assert watchdog.blocked_loop_threshold() == 2.5
    monkeypatch.setenv(watchdog.BLOCKED_LOOP_ENV, "soon")
    assert watchdog.blocked_loop_threshold() == watchdog.DEFAULT_THRESHOLD
    (message,) = warnings_of(caplog)
    assert "MDFLOW_BLOCKED_LOOP_WARNING must be a number of seconds" in message
    assert "'soon'" in message


def backtracking_length(seconds: float) -> int:
    """A length of "aaa..." on which ``(a+)+b`` backtracks (in C, holding the GIL) ``seconds``."""
    length = 16
    while True:
        began = time.perf_counter()
        re.match(r"(a+)+b", "a" * length)
        if time.perf_counter() - began >= seconds / 4:
            return length + 3  # each "a" doubles the work: ~2x seconds, margin for load
        length += 1


def test_call_that_holds_the_interpreter_lock_is_named(redis_url, rdb, prefix, caplog):
    length = backtracking_length(SLEEP)

    def hold_gil(x):
        if x.get("sleep"):
            re.match(r"(a+)+b", "a" * length)
        return x

    rdb.xadd(prefix + "in", encode_entry({"sleep": 1}))

    async def body():
        outlet = Stream.from_redis(
            prefix + "in", group="g", start_id="0", redis_url=redis_url, asynchronous=True
        )
        mapped = outlet.map(hold_gil)
        outlet.start()
        await async_wait_for(lambda: loop_blocks(mapped)["blocked_loop_episodes"] == 1, 60)
        await stop_and_wait(outlet)

    run(body)
    (message,) = warnings_of(caplog)
    # The watchdog thread could look only once the call returned, still inside the map.
    assert message.startswith("map<hold_gil>: a synchronous call blocked the event loop")
    assert "(in test_call_that_holds_the_interpreter_lock_is_named.<locals>.hold_gil at " in message


def test_async_function_that_blocks_is_named(redis_url, rdb, prefix, caplog):
    rdb.xadd(prefix + "in", encode_entry({"sleep": SLEEP}))

    async def body():
        outlet = Stream.from_redis(
            prefix + "in", group="g", start_id="0", redis_url=redis_url, asynchronous=True
        )
        sink = outlet.sink(aslow)
        outlet.start()
        await async_wait_for(lambda: loop_blocks(sink)["blocked_loop_episodes"] == 1, 30)
        await stop_and_wait(outlet)

    run(body)
    (message,) = warnings_of(caplog)
    assert message.startswith("sink<aslow>: a synchronous call blocked the event loop")
    assert "(in aslow at " in message
    assert "nothing else on this loop" in message  # its own source is the only one
    assert "async but makes a synchronous call" in message


def test_code_outside_the_graph_is_named_by_place(redis_url, prefix, caplog):
    async def body():
        outlet = Stream.from_redis(
            prefix + "in", group="g", start_id="0", redis_url=redis_url, asynchronous=True
        )
        outlet.start()
        await async_wait_for(lambda: outlet.status()["state"] == "running", 30)
        await asyncio.sleep(0.3)  # the heartbeat is on
        asyncio.get_running_loop().call_soon(user_blocking)
        await async_wait_for(lambda: warnings_of(caplog), 30, message="the warning")
        await stop_and_wait(outlet)

    run(body)
    (message,) = warnings_of(caplog)
    assert message.startswith("user_blocking at ") and "test_watchdog.py:" in message
    assert f"other sources on this loop (from_redis<{prefix}in>)" in message
    assert "run_in_executor" in message


@pytest.fixture
def loop_thread():
    """A tornado IOLoop running in a thread of its own, as in a script (closed afterwards)."""
    loop = IOLoop(make_current=False)
    thread = threading.Thread(target=loop.start, name="test-loop", daemon=True)
    thread.start()
    yield loop
    loop.add_callback(loop.stop)
    thread.join(10)
    loop.close(all_fds=True)


def test_loop_thread_watchdog_ends_when_sources_stop(redis_url, rdb, prefix, caplog, loop_thread):
    graph = Graph(redis_url, prefix, loop=loop_thread)
    rdb.xadd(graph.topic, encode_entry({"sleep": SLEEP}))
    graph.start()
    wait_for(lambda: warnings_of(caplog), 30, message="the warning")
    state = watchdog._watches[loop_thread.asyncio_loop]
    assert state.thread is not None and state.thread.is_alive()
    graph.pump.stop()
    graph.outlet.stop()
    # The loop goes on running: the heartbeat and the thread end with its last source.
    wait_for(lambda: not state.thread.is_alive(), 30, message="watchdog thread to end")
    assert not state.active
    (message,) = warnings_of(caplog)
    assert message.startswith("map<slow>:") and f"engine<{prefix}ticks>" in message


def test_watchdog_ends_when_its_loop_stops(redis_url, prefix, caplog, loop_thread):
    outlet = Stream.from_redis(prefix + "in", group="g", redis_url=redis_url, loop=loop_thread)
    outlet.start()
    wait_for(lambda: loop_thread.asyncio_loop in watchdog._watches, 30)
    state = watchdog._watches[loop_thread.asyncio_loop]
    wait_for(lambda: state.thread is not None and state.thread.is_alive(), 30)
    thread = state.thread
    loop_thread.add_callback(loop_thread.stop)  # the source still "runs", its loop does not
    wait_for(lambda: not thread.is_alive(), 30, message="watchdog thread to end")
    assert warnings_of(caplog) == []
