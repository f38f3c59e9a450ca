"""scanner / scan: analyze, cache + publish, rehydrate, survive bad input and Redis restarts."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar

import pytest
from pubsubtools import connect, wait_numpat, wait_numsub
from streamtools import async_wait_for, run, stop_and_wait
from streamz import RefCounter, Stream

import mdflow.pubsub  # noqa: F401 - registers the nodes
from mdflow.analyzers import Analyzer, AnalyzerResult, Cache, HighLowOfDay
from mdflow.codecs import decode_message, encode_message
from mdflow.errors import ConfigError, DecodeError
from mdflow.record import Record


class Echo(Analyzer):
    """Caches and publishes each message's ``n``; raises on ``"boom"``; nothing for ``"skip"``."""

    defaults: ClassVar[dict[str, Any] | None] = {"prefix": "", "list_max": None, "ttl": 0}

    def __init__(self, **options):
        super().__init__(**options)
        self.calls: list = []
        self.rehydrated_with: list | None = None

    async def rehydrate(self, cache):
        self.calls.append("rehydrate")
        self.rehydrated_with = await cache.get_list(self.options["prefix"] + "list")

    async def analyze(self, data):
        self.calls.append(data)
        if data == "boom":
            raise RuntimeError("analyzer cannot handle boom")
        if data == "skip":
            return None
        if not isinstance(data, dict):
            raise DecodeError(f"expected a dict; got {data!r}")
        p = self.options["prefix"]
        return [
            AnalyzerResult(
                {"n": data["n"]},
                cache_key=p + "list",
                cache_ttl=self.options["ttl"],
                cache_list_max=self.options["list_max"],
                publish_key=p + "out",
            ),
            AnalyzerResult({"last": data["n"]}, cache_key=p + "last", cache_ttl=30),
        ]


def scanner(url, subscriptions, analyzer, **kwargs):
    return Stream.scanner(subscriptions, analyzer, redis_url=url, asynchronous=True, **kwargs)


def test_scanner_caches_publishes_and_emits_results(redis_factory, prefix):
    url = redis_factory().url
    analyzer = Echo(prefix=prefix, list_max=3, ttl=60)

    async def body():
        node = scanner(url, [prefix + "in", prefix + "ticks:*"], analyzer)
        results = node.sink_to_list()
        async with connect(url) as conn:
            raw = conn.pubsub(ignore_subscribe_messages=True)  # another program, listening
            await raw.subscribe(prefix + "out")
            node.start()
            await wait_numsub(conn, prefix + "in")
            await wait_numpat(conn, 1)
            for n in range(5):
                channel = prefix + ("in" if n % 2 else "ticks:x")
                await conn.publish(channel, encode_message({"n": n}))
            await async_wait_for(lambda: len(results) == 10, message="10 results")
            published = []
            while len(published) < 5:
                message = await raw.get_message(timeout=1.0)
                if message is not None:
                    published.append(decode_message(message["data"]))
            await raw.aclose()
            cached = [decode_message(v) for v in await conn.lrange(prefix + "list", 0, -1)]
            ttls = (await conn.ttl(prefix + "list"), await conn.ttl(prefix + "last"))
            last = decode_message(await conn.get(prefix + "last"))
        await stop_and_wait(node)
        return results, published, cached, ttls, last, node.status()

    results, published, cached, ttls, last, status = run(body)
    assert all(isinstance(r, AnalyzerResult) for r in results)
    assert [r.data for r in results[::2]] == [{"n": n} for n in range(5)]
    assert published == [{"n": n} for n in range(5)]
    assert cached == [{"n": 4}, {"n": 3}, {"n": 2}]  # capped at list_max, newest first
    assert 30 < ttls[0] <= 60 and 0 < ttls[1] <= 30  # EXPIRE on the list, SETEX
    assert last == {"last": 4}
    assert status["processed"] == 5 and status["published_results"] == 10
    assert status["errors"] == 0 and status["decoding_errors"] == 0 and status["empty_results"] == 0
    assert status["subscriptions"] == [prefix + "in", prefix + "ticks:*"]
    assert analyzer.calls[0] == "rehydrate"


def test_bad_messages_and_analyzer_errors_are_counted_and_skipped(redis_url, prefix, caplog):
    channel = prefix + "in"

    async def body():
        node = scanner(redis_url, channel, Echo(prefix=prefix))
        results = node.sink_to_list()
        node.start()
        async with connect(redis_url) as conn:
            await wait_numsub(conn, channel)
            for payload in (
                b"\xc1MDF\xc1garbage",
                "boom",
                "skip",
                "not a dict",
                b"\xff\xfe",
                encode_message({"n": 7}),
            ):
                await conn.publish(channel, payload)
            await async_wait_for(lambda: len(results) == 2, message="the good message")
        await stop_and_wait(node)
        return results, node.status()

    with caplog.at_level(logging.ERROR, logger="mdflow.pubsub.scanner"):
        results, status = run(body)
    assert [r.data for r in results] == [{"n": 7}, {"last": 7}]
    assert status["received"] == 6
    assert status["decoding_errors"] == 3  # bad frame, text and bytes that are no dict
    assert status["errors"] == 1 and "expected a dict" in status["last_error"]
    assert status["empty_results"] == 1 and status["processed"] == 2
    assert status["state"] == "stopped"
    failures = [r.getMessage() for r in caplog.records]
    assert any("scanner<" in m and repr(channel) in m and "Echo" in m for m in failures)
    assert any(
        r.exc_info and "analyzer cannot handle boom" in str(r.exc_info[1]) for r in caplog.records
    )


def test_rehydration_restores_high_low_of_day_after_a_restart(redis_url, prefix):
    channel = prefix + "ticks"
    options = {"key_prefix": prefix + "hod", "publish_key": prefix + "alerts"}
    first, second = HighLowOfDay(**options), HighLowOfDay(**options)
    now = time.time()

    async def feed(node, prices):
        results = node.sink_to_list()
        node.start()
        async with connect(redis_url) as conn:
            await wait_numsub(conn, channel)
            for price in prices:
                await conn.publish(
                    channel, encode_message({"symbol": "BTC-USD", "price": price, "ts": now})
                )
            await async_wait_for(lambda: node.status()["processed"] == len(prices))
        await stop_and_wait(node)
        return [r.data["kind"] for r in results], node.status()

    async def body():
        kinds, _ = await feed(scanner(redis_url, channel, first), [100, 105, 95, 101])
        restarted = scanner(redis_url, channel, second)
        restarted.start()
        await async_wait_for(lambda: "BTC-USD" in second.ranges, message="rehydration")
        await stop_and_wait(restarted)
        later, status = await feed(restarted, [102, 106])  # inside the range, then above it
        return kinds, later, status

    kinds, later, status = run(body)
    assert kinds == ["open", "high", "low"]
    assert later == ["high"], "the rehydrated range must suppress 102 and see 106 as a new high"
    assert second.ranges["BTC-USD"][1:] == [106, 95]
    assert status["empty_results"] == 1


@pytest.mark.fault
def test_scanner_resubscribes_after_its_redis_restarts(redis_factory, prefix):
    server = redis_factory()
    channel = prefix + "in"

    async def body():
        node = scanner(server.url, channel, Echo(prefix=prefix))
        results = node.sink_to_list()
        node.start()
        for n in range(2):
            async with connect(server.url) as conn:
                await wait_numsub(conn, channel)
                await conn.publish(channel, encode_message({"n": n}))
                await async_wait_for(lambda n=n: len(results) == 2 * (n + 1))
            if n == 0:
                await asyncio.get_running_loop().run_in_executor(None, server.restart)
                await async_wait_for(lambda: node.status()["restarts"] >= 1, timeout=15)
        await stop_and_wait(node)
        return node.status()

    status = run(body)
    assert status["processed"] == 2 and status["reconnects"] >= 1 and status["restarts"] >= 1


def test_scan_node_awaits_analysis_and_holds_refs(redis_url, rdb, prefix):
    analyzer = Echo(prefix=prefix, list_max=10)
    released = []

    async def body():
        source = Stream(asynchronous=True)
        node = source.scan(analyzer, redis_url=redis_url)
        out = node.sink_to_list()
        ref = RefCounter(initial=1, cb=lambda: released.append(True), loop=node.loop)
        pending = source.emit({"n": 1}, metadata=[{"ref": ref}])
        ref.release()
        assert ref.count >= 1, "scan holds the element until its work is done"
        await pending
        await asyncio.sleep(0)
        assert released == [True]
        await asyncio.gather(*(source.emit({"n": n}) for n in range(2, 5)))
        await source.emit(Record("ticks", {"n": 5}, id="1-0"))
        return out, node.status()

    out, status = run(body)
    assert [r.data for r in out[::2]] == [{"n": n} for n in range(1, 6)]
    assert [decode_message(v)["n"] for v in rdb.lrange(prefix + "list", 0, -1)] == [5, 4, 3, 2, 1]
    assert status["processed"] == 5 and status["published_results"] == 10
    assert analyzer.calls[0] == "rehydrate" and analyzer.calls.count("rehydrate") == 1


def test_scan_on_a_plain_stream_fed_asynchronously(redis_url, prefix):
    async def body():
        source = Stream()
        node = source.scan(Echo(prefix=prefix), redis_url=redis_url)
        out = node.sink_to_list()
        for n in range(3):
            await source.emit({"n": n}, asynchronous=True)
        return out, node.status()

    out, status = run(body)
    assert [r.data for r in out] == [
        {"n": 0},
        {"last": 0},
        {"n": 1},
        {"last": 1},
        {"n": 2},
        {"last": 2},
    ]
    assert status["processed"] == 3 and status["emitted"] == 6


def test_scan_failure_reaches_the_source_so_the_entry_is_not_acked(redis_url, prefix, caplog):
    failures = []

    async def body():
        source = Stream(asynchronous=True)
        node = source.scan(Echo(prefix=prefix), redis_url=redis_url)
        with pytest.raises(RuntimeError, match="analyzer cannot handle boom"):
            await source.emit("boom", metadata=[{"fail": failures.append}])
        with pytest.raises(DecodeError):
            await source.emit(["not", "a", "dict"])
        await source.emit({"n": 1})  # the node goes on
        return node.status()

    with caplog.at_level(logging.ERROR, logger="mdflow.pubsub.scanner"):
        status = run(body)
    # Reported by the node and again by the emit that carried its future: sources' `fail`
    # callbacks are idempotent.
    assert failures and all("boom" in str(f) for f in failures)
    assert status["errors"] == 1 and status["decoding_errors"] == 1 and status["processed"] == 1
    assert any("scan<Echo>" in r.getMessage() for r in caplog.records)


def test_cache_helper_reads_what_writers_wrote(redis_url, rdb, prefix):
    rdb.set(prefix + "a", encode_message({"x": 1}))
    rdb.set(prefix + "b", '{"json": true}')
    rdb.rpush(prefix + "list", encode_message(1), encode_message(2), "three")

    async def body():
        cache = Cache(redis_url)
        return (
            await cache.get(prefix + "a"),
            await cache.get(prefix + "b"),
            await cache.get(prefix + "missing"),
            await cache.get_list(prefix + "list"),
            await cache.get_list(prefix + "list", 0, 0),
            await cache.keys(prefix + "*"),
        )

    a, b, missing, items, newest, keys = run(body)
    assert (a, b, missing) == ({"x": 1}, {"json": True}, None)
    assert items == [1, 2, "three"] and newest == [1]
    assert keys == [prefix + "a", prefix + "b", prefix + "list"]


def test_rehydration_failure_is_logged_and_the_scanner_runs_on(redis_url, prefix, caplog):
    class Broken(Echo):
        async def rehydrate(self, cache):
            raise ValueError("corrupt cache")

    async def body():
        node = scanner(redis_url, prefix + "in", Broken(prefix=prefix))
        out = node.sink_to_list()
        node.start()
        async with connect(redis_url) as conn:
            await wait_numsub(conn, prefix + "in")
            await conn.publish(prefix + "in", encode_message({"n": 1}))
            await async_wait_for(lambda: len(out) == 2)
        await stop_and_wait(node)
        return node.status()

    with caplog.at_level(logging.ERROR, logger="mdflow.pubsub.scanner"):
        status = run(body)
    assert status["errors"] == 1 and "corrupt cache" in status["last_error"]
    assert any("could not rehydrate" in r.getMessage() for r in caplog.records)


def test_streamz_scan_with_a_function_is_still_accumulate():
    source = Stream()
    totals = source.scan(lambda acc, x: acc + x, start=0).sink_to_list()
    counts = source.frequencies().sink_to_list()  # streamz calls self.scan(...) inside
    for x in (1, 2, 2):
        source.emit(x)
    assert totals == [1, 3, 5]
    assert counts[-1] == {1: 1, 2: 2}


def test_analyzer_by_name_and_labels(redis_url):
    node = Stream.scanner(["ticks:*"], "spike", redis_url=redis_url)
    assert str(node) == "<scanner: ticks:* -> spike>"
    assert str(Stream().scan(HighLowOfDay(), redis_url=redis_url)) == "<scan: high_low_of_day>"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda: Stream.scanner(42, Echo()),
            r"scanner: subscriptions must be a str or a list of str; got 42 \(int\)",
        ),
        (lambda: Stream.scanner("c", object()), r"scanner: analyzer must be an mdflow.Analyzer"),
        (
            lambda: Stream.scanner("c", Echo),
            r"scanner: analyzer must be an Analyzer instance; got the class Echo",
        ),
        (
            lambda: Stream.scanner("c", "no-such"),
            r"unknown analyzer 'no-such'; known analyzers: .*high_low_of_day",
        ),
        (lambda: Stream().scan(Echo(), codec="pickle"), r"scan.*codec"),
        (
            lambda: Echo(colour="red"),
            r"Echo: unknown option\(s\) colour; known options are list_max, prefix, ttl",
        ),
        (
            lambda: AnalyzerResult(1, cache_list_max=0),
            r"AnalyzerResult: cache_list_max must be None .* got 0",
        ),
        (
            lambda: AnalyzerResult(1, cache_ttl=-5),
            r"AnalyzerResult: cache_ttl must be .* got -5 \(int\)",
        ),
        (
            lambda: AnalyzerResult(1, publish_key=7),
            r"AnalyzerResult: publish_key must be None or a non-empty str",
        ),
    ],
)
def test_arguments_are_checked(make, match, redis_url, monkeypatch):
    monkeypatch.setenv("MDFLOW_REDIS_URL", redis_url)
    with pytest.raises(ConfigError, match=match):
        make()
