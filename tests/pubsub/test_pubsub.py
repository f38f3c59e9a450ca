"""from_pubsub / to_pubsub / to_cache against a real Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib
import subprocess
import sys

import pytest
from pubsubtools import connect, wait_numpat, wait_numsub
from streamtools import async_wait_for, run, stop_and_wait
from streamz import RefCounter, Stream

import mdflow.pubsub  # noqa: F401 - registers from_pubsub, to_pubsub, to_cache
from mdflow.codecs import decode_message, encode_message
from mdflow.errors import ConfigError
from mdflow.record import Record


def listen(url, channels, **kwargs):
    return Stream.from_pubsub(channels, redis_url=url, asynchronous=True, **kwargs)


def test_channel_receives_json_text_and_bytes_from_a_plain_client(redis_url, prefix):
    channel = prefix + "quotes"

    async def body():
        source = listen(redis_url, channel)
        out = source.sink_to_list()
        source.start()
        async with connect(redis_url) as conn:
            await wait_numsub(conn, channel)
            await conn.publish(channel, json.dumps({"symbol": "BTC-USD", "price": "101.5"}))
            await conn.publish(channel, "[1, 2.5, null]")
            await conn.publish(channel, "plain text")
            await conn.publish(channel, b"\xff\xfe\x00raw")
            await async_wait_for(lambda: len(out) == 4, message="4 messages")
        await stop_and_wait(source)
        return out, source.status()

    out, status = run(body)
    assert out == [
        {"symbol": "BTC-USD", "price": "101.5"},
        [1, 2.5, None],
        "plain text",
        b"\xff\xfe\x00raw",
    ]
    assert status["received"] == 4 and status["emitted"] == 4 and status["errors"] == 0
    assert status["state"] == "stopped"


def test_patterns_and_channels_with_meta_records(redis_factory, prefix):
    url = redis_factory().url  # NUMPAT counts the whole server: use one of our own
    plain, pattern = prefix + "a", prefix + "p:*"

    async def body():
        source = listen(url, [plain, pattern], meta=True)
        out = source.sink_to_list()
        source.start()
        async with connect(url) as conn:
            await wait_numsub(conn, plain)
            await wait_numpat(conn, 1)
            await conn.publish(plain, "hello")
            await conn.publish(prefix + "p:BTC", '{"px": 2}')
            await conn.publish(prefix + "other", "3")  # matches neither
            await async_wait_for(lambda: len(out) == 2)
            await asyncio.sleep(0.05)
        await stop_and_wait(source)
        return out

    out = run(body)
    assert out == [Record(plain, "hello"), Record(prefix + "p:BTC", {"px": 2}, pattern=pattern)]
    assert out[1].id is None and out[1].deliveries is None


def test_to_pubsub_round_trips_mdflow_objects_and_emits_receivers(redis_url, prefix):
    channel = prefix + "objs"
    objects = [
        {"symbol": "ETH", "px": 2.5, "tags": ["a", "b"], "none": None},
        b"\x00bytes",
        "text",
        42,
        [1, {"nested": True}],
    ]

    async def body():
        listener = listen(redis_url, channel)
        got = listener.sink_to_list()
        listener.start()
        source = Stream(asynchronous=True)
        receivers = source.to_pubsub(channel, redis_url=redis_url).sink_to_list()
        async with connect(redis_url) as conn:
            await wait_numsub(conn, channel)
        # emitted within one loop turn: they share one pipelined round trip
        await asyncio.gather(*(source.emit(obj) for obj in objects))
        await async_wait_for(lambda: len(got) == len(objects))
        await stop_and_wait(listener)
        return got, receivers

    got, receivers = run(body)
    assert got == objects
    assert receivers == [1] * len(objects)


def test_to_pubsub_json_is_readable_by_a_plain_subscriber_and_channel_may_be_a_function(
    redis_url, prefix
):
    async def body():
        source = Stream(asynchronous=True)
        source.to_pubsub(lambda t: prefix + t["symbol"], codec="json", redis_url=redis_url)
        async with connect(redis_url) as conn:
            pubsub = conn.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(prefix + "BTC")
            await wait_numsub(conn, prefix + "BTC")
            await source.emit({"symbol": "BTC", "px": 1.5})
            message = None
            while message is None:
                message = await pubsub.get_message(timeout=1.0)
            await pubsub.aclose()
        return message

    message = run(body)
    assert message["channel"] == (prefix + "BTC").encode()
    assert json.loads(message["data"]) == {"symbol": "BTC", "px": 1.5}


def test_to_pubsub_holds_metadata_refs_until_published(redis_url, prefix):
    released = []

    async def body():
        source = Stream(asynchronous=True)
        node = source.to_pubsub(prefix + "refs", redis_url=redis_url)
        ref = RefCounter(initial=1, cb=lambda: released.append(True), loop=node.loop)
        node.update("x", metadata=[{"ref": ref}])
        ref.release()  # the source lets go at once...
        assert ref.count == 1 and not released  # ...but the sink still holds it
        assert await node.flush(timeout=5)
        await asyncio.sleep(0)  # RefCounter calls back on the loop
        return ref.count, node.status()

    count, status = run(body)
    assert count == 0 and released == [True]
    assert status["written"] == 1 and status["errors"] == 0


def test_to_cache_set_ttl_list_cap_and_expire(redis_url, rdb, prefix):
    async def body():
        source = Stream(asynchronous=True)
        source.to_cache(prefix + "plain", redis_url=redis_url)
        source.to_cache(prefix + "ttl", ttl=30, redis_url=redis_url)
        source.to_cache(prefix + "list", list_max=3, ttl=60, redis_url=redis_url)
        keys = source.to_cache(
            lambda x: f"{prefix}by:{x['n']}", codec="json", redis_url=redis_url
        ).sink_to_list()
        for n in range(5):
            await source.emit({"n": n})
        return keys

    keys = run(body)
    assert keys == [f"{prefix}by:{n}" for n in range(5)]
    assert decode_message(rdb.get(prefix + "plain")) == {"n": 4}
    assert rdb.ttl(prefix + "plain") == -1
    assert 0 < rdb.ttl(prefix + "ttl") <= 30
    assert rdb.type(prefix + "list") == b"list"
    assert [decode_message(v) for v in rdb.lrange(prefix + "list", 0, -1)] == [
        {"n": 4},
        {"n": 3},
        {"n": 2},
    ]
    assert 30 < rdb.ttl(prefix + "list") <= 60
    assert json.loads(rdb.get(prefix + "by:3")) == {"n": 3}  # json: readable by anyone


def test_cache_write_errors_reach_the_source_and_are_counted(redis_url, rdb, prefix, caplog):
    key = prefix + "stream-key"
    rdb.xadd(key, {"a": "1"})  # LPUSH on a stream: WRONGTYPE
    failures: list = []

    async def body():
        source = Stream(asynchronous=True)
        sink = source.to_cache(key, list_max=5, redis_url=redis_url)
        # mdflow sources put a "fail" hook in the metadata: the sink reports to it, so the
        # source does not acknowledge the element
        await source.emit({"n": 1}, metadata=[{"fail": failures.append}])
        await sink.flush(timeout=5)
        return sink.status()

    with caplog.at_level(logging.ERROR, logger="mdflow"):
        status = run(body)
    assert len(failures) == 1 and "WRONGTYPE" in str(failures[0])
    assert status["errors"] == 1 and "WRONGTYPE" in status["last_error"]
    assert any(key in r.getMessage() and "to_cache" in r.getMessage() for r in caplog.records)


def test_bad_frames_and_graph_errors_are_counted_and_listening_goes_on(redis_url, prefix, caplog):
    channel = prefix + "mixed"

    def handle(x):
        if x == "boom":
            raise RuntimeError("graph cannot handle boom")
        return x

    async def body():
        source = listen(redis_url, channel)
        out = source.map(handle).sink_to_list()
        source.start()
        async with connect(redis_url) as conn:
            await wait_numsub(conn, channel)
            await conn.publish(channel, b"\xc1MDF\xc1\xc1 not msgpack")
            await conn.publish(channel, "boom")
            await conn.publish(channel, encode_message({"ok": True}))
            await async_wait_for(lambda: out == [{"ok": True}])
        await stop_and_wait(source)
        return source.status()

    with caplog.at_level(logging.ERROR, logger="mdflow.pubsub.listener"):
        status = run(body)
    assert status["received"] == 3 and status["emitted"] == 1
    assert status["decoding_errors"] == 1 and status["errors"] == 1
    assert "graph cannot handle boom" in status["last_error"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("from_pubsub<" in m and channel in m for m in messages)


@pytest.mark.fault
def test_resubscribes_after_its_redis_restarts(redis_factory, prefix):
    server = redis_factory()
    channel = prefix + "live"

    async def body():
        source = listen(server.url, channel)
        out = source.sink_to_list()
        source.start()
        async with connect(server.url) as conn:
            await wait_numsub(conn, channel)
            await conn.publish(channel, "before")
            await async_wait_for(lambda: out == ["before"])
        await asyncio.get_running_loop().run_in_executor(None, server.restart)
        await async_wait_for(
            lambda: source.status()["restarts"] >= 1, timeout=15, message="a new subscription"
        )
        async with connect(server.url) as conn:
            await wait_numsub(conn, channel)
            await conn.publish(channel, "after")
            await async_wait_for(lambda: out == ["before", "after"])
        await stop_and_wait(source)
        return source.status()

    status = run(body)
    assert status["reconnects"] >= 1 and status["restarts"] >= 1
    assert "Connection" in status["last_error"] or "connect" in status["last_error"].lower()


def test_stop_is_prompt_and_start_again_resubscribes(redis_url, prefix):
    channel = prefix + "again"

    async def body():
        source = listen(redis_url, channel)
        out = source.sink_to_list()
        async with connect(redis_url) as conn:
            for word in ("one", "two"):
                source.start()
                await wait_numsub(conn, channel)
                await conn.publish(channel, word)
                await async_wait_for(lambda w=word: out[-1:] == [w])
                await stop_and_wait(source, timeout=2)
                assert dict(await conn.pubsub_numsub(channel))[channel.encode()] == 0
        return out

    assert run(body) == ["one", "two"]


def test_labels_say_what_nodes_are(redis_url):
    source = Stream.from_pubsub(["quotes", "trades:*"], redis_url=redis_url)
    assert str(source) == "<from_pubsub: quotes, trades:*>"
    assert str(source.to_pubsub("alerts", redis_url=redis_url)) == "<to_pubsub: alerts>"
    cache = source.to_cache("last", ttl=60, list_max=10, redis_url=redis_url)
    assert str(cache) == "<to_cache: last, ttl 60s, list_max 10>"
    assert cache._graphviz_shape == "cylinder"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda: Stream.from_pubsub(42),
            r"from_pubsub: channels must be a str or a list of str; got 42 \(int\)",
        ),
        (
            lambda: Stream.from_pubsub([]),
            r"channels must be a str or a list of str; got \[\] \(list\)",
        ),
        (
            lambda: Stream.from_pubsub(["ok", 3]),
            r"every entry of channels must be a non-empty str; got 3",
        ),
        (lambda: Stream.from_pubsub("c", codec="yaml"), r"from_pubsub.*codec"),
        (lambda: Stream().to_pubsub(""), r"to_pubsub: channel must be a non-empty str"),
        (lambda: Stream().to_cache("k", ttl=-1), r"to_cache: ttl must be None .* got -1 \(int\)"),
        (lambda: Stream().to_cache("k", list_max=0), r"to_cache: list_max must be None .* got 0"),
        (lambda: Stream().to_cache(None), r"to_cache: key must be a non-empty str"),
    ],
)
def test_arguments_are_checked_before_any_io(make, match, redis_url, monkeypatch):
    monkeypatch.setenv("MDFLOW_REDIS_URL", redis_url)
    with pytest.raises(ConfigError, match=match):
        make()


def test_fields_codec_is_for_streams_only(redis_url):
    with pytest.raises(ConfigError, match=r"to_pubsub: parameter 'codec' must be 'msgpack' or 'js"):
        Stream().to_pubsub("c", codec="fields", redis_url=redis_url)
    with pytest.raises(ConfigError, match=r"from_pubsub: parameter 'codec' must be 'auto'"):
        Stream.from_pubsub("c", codec="fields", redis_url=redis_url)


@pytest.mark.fault
def test_a_connection_that_stops_answering_is_given_up_and_renewed(redis_factory, prefix):
    """The watchdog PINGs a silent subscription; no answer (CLIENT PAUSE) means reconnect."""
    server = redis_factory()
    channel = prefix + "quiet"

    async def body():
        source = listen(server.url, channel)
        source.liveness_interval = 0.2
        out = source.sink_to_list()
        source.start()
        async with connect(server.url) as conn:
            await wait_numsub(conn, channel)
            await conn.execute_command("CLIENT", "PAUSE", "1000", "ALL")
            await async_wait_for(
                lambda: source.status()["reconnects"] >= 1,
                timeout=10,
                message="the watchdog to give the connection up",
            )
            await async_wait_for(lambda: source.status()["restarts"] >= 1, timeout=10)
            await wait_numsub(conn, channel)
            await conn.publish(channel, "still here")
            await async_wait_for(lambda: out == ["still here"])
        await stop_and_wait(source)
        return source.status()

    status = run(body)
    assert "no answer to PING" in status["last_error"]


@pytest.mark.slow
def test_benchmark_quick_run_prints_its_json_line(isolated_env):
    script = pathlib.Path(__file__).parents[2] / "benchmarks" / "bench_pubsub.py"
    result = subprocess.run(
        [sys.executable, str(script), "--quick", "--repeat", "1"],
        env=isolated_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith('{"bench": "pubsub"')
    figures = json.loads(lines[-1])
    for key in (
        "raw_listen_per_s",
        "from_pubsub_per_s",
        "scanner_per_s",
        "from_pubsub_p99_ms",
        "from_pubsub_first_after_silence_ms",
        "from_pubsub_vs_raw_decode",
    ):
        assert figures[key] > 0, key
    assert any(line.startswith("from_pubsub -> sink") for line in lines)


def test_running_means_redis_confirmed_the_subscriptions(redis_factory, prefix):
    url = redis_factory().url

    async def body():
        source = listen(url, [prefix + "a", prefix + "b", prefix + "p:*"])
        out = source.sink_to_list()
        source.start()
        await async_wait_for(lambda: source.status()["state"] == "running")
        async with connect(url) as conn:  # no waiting for NUMSUB here: that is the point
            counts = dict(await conn.pubsub_numsub(prefix + "a", prefix + "b"))
            patterns = await conn.pubsub_numpat()
            await conn.publish(prefix + "p:x", "hello")
            await async_wait_for(lambda: out == ["hello"])
        await stop_and_wait(source)
        return counts, patterns

    counts, patterns = run(body)
    assert set(counts.values()) == {1} and patterns == 1
