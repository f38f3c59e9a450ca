"""from_redis / to_redis against a real Redis: reading, acking, dead letters, backpressure."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest
import redis
from streamtools import async_wait_for, run, stop_and_wait
from streamz import Stream

import mdflow
from mdflow.codecs import decode_entry, encode_entry
from mdflow.errors import ConfigError
from mdflow.streams import list_dead_letters, read_payload


def outlet(url, topic, **kwargs):
    kwargs.setdefault("group", "g")
    kwargs.setdefault("consumer", "c1")
    kwargs.setdefault("start_id", "0")
    return Stream.from_redis(topic, redis_url=url, asynchronous=True, **kwargs)


def test_reads_mdflow_and_foreign_entries_and_acks_them(redis_url, rdb, prefix):
    topic = prefix + "s"
    frame = pd.DataFrame({"px": [1.5, 2.5]}, index=pd.Index(["A", "B"], name="code"))
    rdb.xadd(topic, encode_entry({"sym": "BTC", "px": 1.5}))
    rdb.xadd(topic, encode_entry(frame))
    rdb.xadd(topic, {"sym": "ETH", "px": "2.5"})  # as redis-cli or another language writes it

    async def body():
        source = outlet(redis_url, topic)
        out = source.sink_to_list()
        source.start()
        await async_wait_for(lambda: len(out) == 3, message="3 entries")
        await async_wait_for(lambda: source.status()["acked"] == 3, message="3 acks")
        await stop_and_wait(source)
        return out, source.status()

    out, status = run(body)
    assert out[0] == {"sym": "BTC", "px": 1.5}
    pd.testing.assert_frame_equal(out[1], frame)
    assert out[2] == {"sym": "ETH", "px": "2.5"}
    assert rdb.xpending(topic, "g")["pending"] == 0
    assert status["read"] == 3 and status["emitted"] == 3 and status["errors"] == 0


def test_meta_records_and_multiple_topics(redis_url, rdb, prefix):
    a, b = prefix + "a", prefix + "b"
    id_a = rdb.xadd(a, encode_entry(1)).decode()
    id_b = rdb.xadd(b, encode_entry(2)).decode()

    async def body():
        source = outlet(redis_url, [a, b], meta=True)
        out = source.sink_to_list()
        source.start()
        await async_wait_for(lambda: len(out) == 2)
        await stop_and_wait(source)
        return out

    out = sorted(run(body), key=lambda r: r.data)
    assert out[0] == mdflow.Record(a, 1, id_a, 1)
    assert out[1] == mdflow.Record(b, 2, id_b, 1)


def test_group_exists_is_fine_and_start_id_dollar_skips_old(redis_url, rdb, prefix):
    topic = prefix + "s"
    rdb.xadd(topic, encode_entry("old"))

    async def body():
        first = outlet(redis_url, topic, start_id="$")
        out = first.sink_to_list()
        first.start()
        await async_wait_for(lambda: first.status()["state"] == "running")
        await asyncio.sleep(0.1)
        conn = mdflow.client(redis_url)
        await conn.xadd(topic, encode_entry("new"))
        await async_wait_for(lambda: out == ["new"])
        await stop_and_wait(first)
        second = outlet(redis_url, topic, start_id="0")  # group exists: start_id is ignored
        out2 = second.sink_to_list()
        second.start()
        await async_wait_for(lambda: second.status()["state"] == "running")
        await asyncio.sleep(0.3)
        await stop_and_wait(second)
        return out2

    assert run(body) == []


def test_to_redis_writes_and_emits_ids(redis_url, rdb, prefix):
    topic = prefix + "out"

    async def body():
        source = Stream(asynchronous=True)
        ids = source.to_redis(topic, redis_url=redis_url, maxlen=1000).sink_to_list()
        await asyncio.gather(*(source.emit({"n": n}) for n in range(50)))
        return ids

    ids = run(body)
    entries = rdb.xrange(topic)
    assert [e[0].decode() for e in entries] == ids
    assert [mdflow.codecs.decode_entry(f) for _, f in entries] == [{"n": n} for n in range(50)]


def test_to_redis_fields_codec_is_readable_by_plain_clients(redis_url, rdb, prefix):
    topic = prefix + "out"

    async def body():
        source = Stream(asynchronous=True)
        source.to_redis(topic, codec="fields", redis_url=redis_url)
        await source.emit({"sym": "BTC", "px": 1.5})

    run(body)
    assert rdb.xrange(topic)[0][1] == {b"sym": b"BTC", b"px": b"1.5"}


def test_pipe_from_redis_to_redis_acks_after_xadd(redis_url, rdb, prefix):
    src, dst = prefix + "in", prefix + "out"
    for n in range(200):
        rdb.xadd(src, encode_entry(n))

    async def body():
        source = outlet(redis_url, src)
        source.map(lambda n: n * 2).to_redis(dst, redis_url=redis_url)
        source.start()
        await async_wait_for(lambda: source.status()["acked"] == 200, message="200 acks")
        await stop_and_wait(source)

    run(body)
    assert rdb.xlen(dst) == 200
    assert rdb.xpending(src, "g")["pending"] == 0


def test_filter_drops_are_acked_at_once(redis_url, rdb, prefix):
    topic = prefix + "s"
    for n in range(20):
        rdb.xadd(topic, encode_entry(n))

    async def body():
        source = outlet(redis_url, topic)
        out = source.filter(lambda n: n % 2 == 0).sink_to_list()
        source.start()
        await async_wait_for(lambda: source.status()["acked"] == 20)
        await stop_and_wait(source)
        return out

    assert run(body) == list(range(0, 20, 2))
    assert rdb.xpending(topic, "g")["pending"] == 0


def test_failure_is_retried_then_dead_lettered_and_pipeline_keeps_running(redis_url, rdb, prefix):
    topic = prefix + "s"
    poison_id = rdb.xadd(topic, encode_entry({"n": "poison"})).decode()
    rdb.xadd(topic, encode_entry({"n": 1}))
    calls: list = []

    def handle(msg):
        calls.append(msg["n"])
        if msg["n"] == "poison":
            raise RuntimeError("cannot handle poison")
        return msg["n"]

    async def body():
        source = outlet(redis_url, topic, max_deliveries=3)
        out = source.map(handle).sink_to_list()
        source.start()
        await async_wait_for(lambda: source.status()["dead_lettered"] == 1, timeout=20)
        await async_wait_for(lambda: source.status()["acked"] == 2)
        await stop_and_wait(source)
        return out, source.status()

    out, status = run(body)
    assert out == [1]
    assert calls.count("poison") == 3, (
        "delivered exactly max_deliveries times before dead-lettering"
    )
    dead = rdb.xrange(topic + ":dead")
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"topic"].decode() == topic and fields[b"id"].decode() == poison_id
    assert b"max_deliveries=3" in fields[b"reason"]
    assert fields[b"deliveries"] == b"4"
    assert mdflow.codecs.decode_entry(read_payload(fields)) == {"n": "poison"}
    assert rdb.xpending(topic, "g")["pending"] == 0
    assert status["failed"] == 3 and "cannot handle poison" in status["last_error"]


def test_undecodable_entry_goes_to_dead_letter_with_reason(redis_url, rdb, prefix, caplog):
    topic = prefix + "s"
    bad_id = rdb.xadd(topic, {"mdflow.msgpack": b"\xc1\xc1garbage"}).decode()
    rdb.xadd(topic, encode_entry("fine"))

    async def body():
        source = outlet(redis_url, topic, dead_letter="dlq:{topic}")
        out = source.sink_to_list()
        source.start()
        await async_wait_for(lambda: source.status()["acked"] == 2)
        await stop_and_wait(source)
        return out

    assert run(body) == ["fine"]
    dead = rdb.xrange("dlq:" + topic)
    assert dead[0][1][b"id"].decode() == bad_id
    assert bad_id.encode() in dead[0][1][b"reason"] and topic.encode() in dead[0][1][b"reason"]
    assert read_payload(dead[0][1]) == {b"mdflow.msgpack": b"\xc1\xc1garbage"}
    assert bad_id in caplog.text


def test_backpressure_bounds_inflight(redis_url, rdb, prefix):
    topic = prefix + "s"
    for n in range(60):
        rdb.xadd(topic, encode_entry(n))
    seen_inflight: list[int] = []

    async def body():
        source = outlet(redis_url, topic, max_inflight=5, batch_size=50)
        out = []

        async def slow(x):
            seen_inflight.append(source.status()["inflight"])
            await asyncio.sleep(0.005)
            out.append(x)

        source.buffer(100).sink(slow)
        source.start()
        await async_wait_for(lambda: len(out) == 60, timeout=20)
        await stop_and_wait(source)
        return out

    assert run(body) == list(range(60))
    assert max(seen_inflight) <= 5


def test_acks_are_batched(redis_url, redis_factory, prefix):
    server = redis_factory()
    url = server.url
    plain = redis.Redis.from_url(url)
    topic = prefix + "s"
    pipe = plain.pipeline()
    for n in range(1000):
        pipe.xadd(topic, encode_entry(n))
    pipe.execute()

    async def body():
        source = outlet(url, topic, batch_size=100)
        source.sink(lambda x: None)
        source.start()
        await async_wait_for(lambda: source.status()["acked"] == 1000, timeout=30)
        await stop_and_wait(source)

    run(body)
    calls = plain.info("commandstats")["cmdstat_xack"]["calls"]
    assert calls <= 100, f"{calls} XACK round trips for 1000 entries: acks are not batched"
    plain.close()


def test_batch_mode_emits_lists_acked_as_unit(redis_url, rdb, prefix):
    topic = prefix + "s"
    for n in range(30):
        rdb.xadd(topic, encode_entry(n))

    async def body():
        source = outlet(redis_url, topic, batch=True, batch_size=10)
        out = source.sink_to_list()
        source.start()
        await async_wait_for(lambda: source.status()["acked"] == 30)
        await stop_and_wait(source)
        return out

    batches = run(body)
    assert [x for b in batches for x in b] == list(range(30))
    assert all(isinstance(b, list) and len(b) <= 10 for b in batches)


def test_a_failed_batch_is_retried_and_dead_lettered_with_its_data(redis_url, rdb, prefix):
    """A batch whose processing keeps failing is retried (each entry read again by XCLAIM:
    the outlet keeps only ids while it waits), then every entry of it is dead-lettered with
    its own data. (The entries of a batch share its fate, as documented.)"""
    topic = prefix + "s"
    ids = [rdb.xadd(topic, encode_entry(n)).decode() for n in range(5)]
    deliveries: list[list[int]] = []

    def store(batch):
        deliveries.append(list(batch))
        raise ValueError("the batch holds poison")

    async def body():
        source = outlet(
            redis_url, topic, batch=True, batch_size=10, retry_delay=0.01, max_deliveries=2
        )
        source.sink(store)
        source.start()
        await async_wait_for(
            lambda: source.status()["dead_lettered"] == 5 and source.status()["held"] == 0,
            message="the batch dead-lettered",
        )
        await stop_and_wait(source)
        return source.status()

    status = run(body)
    assert deliveries == [[0, 1, 2, 3, 4]] * 2  # the retry carries the data read again
    assert status["retrying"] == 0 and status["acked"] == 5
    letters = list_dead_letters(topic, redis_url=redis_url)
    assert sorted(d.origin_id for d in letters) == ids
    assert all(decode_entry(d.fields) == ids.index(d.origin_id) for d in letters)
    assert all("ValueError: the batch holds poison" in d.reason for d in letters)


def test_claims_entries_of_dead_consumers(redis_url, rdb, prefix):
    topic = prefix + "s"
    rdb.xgroup_create(topic, "g", id="0", mkstream=True)
    for n in range(5):
        rdb.xadd(topic, encode_entry(n))
    rdb.xreadgroup("g", "dead-consumer", {topic: ">"})  # read, never acked: it "died"

    async def body():
        source = outlet(redis_url, topic, claim_idle=0.2)
        out = source.sink_to_list()
        source.start()
        await async_wait_for(lambda: len(out) == 5, timeout=15)
        await async_wait_for(lambda: source.status()["acked"] == 5)
        await stop_and_wait(source)
        return out, source.status()

    out, status = run(body)
    assert sorted(out) == list(range(5))
    assert status["claimed"] == 5
    assert rdb.xpending(topic, "g")["pending"] == 0


def test_status_reports_lag_and_pending(redis_url, rdb, prefix):
    topic = prefix + "s"
    for n in range(10):
        rdb.xadd(topic, encode_entry(n))

    async def body():
        source = outlet(redis_url, topic)
        gate = asyncio.Event()

        async def blocked(x):
            await gate.wait()

        source.sink(blocked)
        source.start()
        await async_wait_for(lambda: source.status()["pending"] == 10, timeout=5)
        status = source.status()
        gate.set()
        await async_wait_for(lambda: source.status()["acked"] == 10)
        await stop_and_wait(source)
        return status

    status = run(body)
    for key in (
        "state",
        "read",
        "emitted",
        "acked",
        "dead_lettered",
        "errors",
        "reconnects",
        "pending",
        "lag",
        "last_id",
        "last_error",
        "inflight",
    ):
        assert key in status
    assert status["inflight"] == 1  # one element is inside the graph ...
    assert status["lag"] == 0  # ... all ten were read, none acked yet


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"topics": 42}, r"topics must be a str or a non-empty list of str; got 42 \(int\)"),
        ({"topics": []}, "non-empty list"),
        ({"topics": "s", "batch_size": 0}, "batch_size must be a positive int"),
        ({"topics": "s", "max_inflight": -1}, "max_inflight must be a positive int"),
        ({"topics": "s", "max_retrying": 0}, "max_retrying must be a positive int"),
        ({"topics": "s", "codec": "pickle"}, "codec"),
        ({"topics": "s", "block": "1"}, "block must be a positive number"),
    ],
)
def test_from_redis_argument_errors(redis_url, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Stream.from_redis(redis_url=redis_url, **kwargs)


def test_to_redis_argument_errors(redis_url):
    with pytest.raises(ConfigError, match="to_redis: topic must be a non-empty str"):
        Stream().to_redis("", redis_url=redis_url)
    with pytest.raises(ConfigError, match="maxlen must be None"):
        Stream().to_redis("t", maxlen=0, redis_url=redis_url)


def test_a_key_that_becomes_another_type_fails_the_node_until_started_again(redis_url, rdb, prefix):
    """Retrying cannot fix a stream key that now holds a string (WRONGTYPE): the source stops
    in the ``failed`` state with the reason; once the key is a stream again, start() resumes."""
    topic = prefix + "s"

    async def body():
        source = outlet(redis_url, topic)
        out = source.sink_to_list()
        source.start()
        await async_wait_for(lambda: source.status()["state"] == "running")
        conn = mdflow.client(redis_url)
        await conn.delete(topic)
        await conn.set(topic, "not a stream")
        await async_wait_for(lambda: source.status()["state"] == "failed", timeout=10)
        assert "WRONGTYPE" in source.status()["failure"]
        await conn.delete(topic)
        await conn.xgroup_create(topic, "g", id="0", mkstream=True)
        await conn.xadd(topic, encode_entry("back"))
        source.start()
        await async_wait_for(lambda: out == ["back"], timeout=15)
        await stop_and_wait(source)
        return source.status()

    status = run(body)
    assert "WRONGTYPE" in status["last_error"]
    assert status["failure"] is None


def test_default_consumer_name_is_stable_per_host_and_program():
    import socket

    from mdflow.streams import default_consumer_name

    name = default_consumer_name()
    assert name == default_consumer_name()
    assert name.startswith(socket.gethostname() + ":")


def test_outlet_stop_start_is_idempotent_and_resumes(redis_url, rdb, prefix):
    topic = prefix + "s"

    async def body():
        source = outlet(redis_url, topic)
        out = source.sink_to_list()
        source.start()
        source.start()
        conn = mdflow.client(redis_url)
        await conn.xadd(topic, encode_entry(1))
        await async_wait_for(lambda: out == [1])
        await stop_and_wait(source)
        source.stop()
        await conn.xadd(topic, encode_entry(2))  # written while stopped
        source.start()
        await async_wait_for(lambda: out == [1, 2])
        await conn.xadd(topic, encode_entry(3))
        await async_wait_for(lambda: out == [1, 2, 3])
        await stop_and_wait(source)
        return source.status()

    status = run(body)
    assert status["acked"] == 3 and status["state"] == "stopped"
