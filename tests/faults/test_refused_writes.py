"""Writes Redis refuses: an element too large, a key of another type, a server out of memory.

Against real servers started with the configuration each case needs:

* ``proto-max-bulk-len 1mb``: Redis answers a larger value with ``Protocol error:
  invalid bulk length`` and closes the connection. The writers learn the limit
  and refuse the element before sending it (``ElementTooLarge``: node, target,
  size, limit, knob); the other elements of its batch are written once, and
  nothing spins reconnecting;
* ``WRONGTYPE``: the key is a string; the refusal reaches the upstream
  ``from_redis`` (retried, then dead-lettered with the reason) or, from a plain
  ``Stream()``, the code that emits (``WriteRefused``);
* ``maxmemory`` + ``noeviction``: ``OOM`` answers pause the writers (state
  ``paused``, ``pause_reason``), which retry until the test frees memory; then
  everything is written exactly once and they run again.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest
import redis
from helpers import wait_for
from streamtools import async_wait_for, run, stop_and_wait
from streamz import Stream

from mdflow.codecs import decode_entry, encode_entry
from mdflow.errors import ElementTooLarge, WriteRefused
from mdflow.reservoir import sync_client
from mdflow.reservoir.limits import DEFAULT_MAX_VALUE, write_limits

pytestmark = [pytest.mark.fault, pytest.mark.slow]

MB = 1024 * 1024
BIG = 2 * MB  # over a proto-max-bulk-len of 1mb


@pytest.fixture
def small_bulk(redis_factory):
    """A server that accepts values of at most 1 MB (``proto-max-bulk-len 1mb``)."""
    return redis_factory(extra_args=("--proto-max-bulk-len", "1mb"))


def _plain(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def _mdflow_errors(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("mdflow") and r.levelno >= logging.ERROR
    ]


# --- a. values over proto-max-bulk-len -------------------------------------------------------
def test_oversized_element_from_a_script_raises_from_emit(small_bulk, prefix, caplog):
    """Once the writer knows the limit, emit raises; the elements around it are written once."""
    topic = prefix + "out"
    source = Stream()
    sink = source.to_redis(topic, codec="fields", redis_url=small_bulk.url)
    source.emit({"n": b"1"})
    assert sink.wait_written(timeout=30)  # (the first flush learned the server's limit)
    with pytest.raises(ElementTooLarge) as refused:
        source.emit({"n": b"2", "blob": b"x" * BIG})
    source.emit({"n": b"3"})
    assert sink.wait_written(timeout=30)
    message = str(refused.value)
    print(f"\nrefusal from emit: {message}")
    for part in (f"to_redis<{topic}>", repr(topic), "'blob'", "2,097,152", "1,048,576"):
        assert part in message, (part, message)
    assert "proto-max-bulk-len" in message and "CONFIG SET" in message
    assert refused.value.limit == MB and refused.value.largest == BIG
    plain = _plain(small_bulk.url)
    assert [f[b"n"] for _, f in plain.xrange(topic)] == [b"1", b"3"]
    status = sink.status()
    assert status["state"] == "running" and status["reconnects"] == 0, status
    assert status["written"] == 2 and status["errors"] == 1, status
    assert len([m for m in _mdflow_errors(caplog) if "element too large" in m]) == 1
    plain.close()
    source.destroy()


def test_oversized_element_in_the_first_batch_is_refused_not_spun(small_bulk, prefix, caplog):
    """Before the limit is known: the first flush learns it and refuses the element only.

    Before the fix, Redis closed the connection on the big value, the whole pipeline was
    retried for ever (``reconnecting``), and the small entries were written again and again.
    """
    topic = prefix + "out"
    source = Stream()
    sink = source.to_redis(topic, codec="fields", redis_url=small_bulk.url)
    for n in range(5):
        source.emit({"n": str(n).encode(), "blob": b"x" * (BIG if n == 2 else 10)})
    with pytest.raises(ElementTooLarge, match=r"field 'blob' is 2,097,152 bytes"):
        sink.wait_written(timeout=30)
    plain = _plain(small_bulk.url)
    assert [f[b"n"] for _, f in plain.xrange(topic)] == [b"0", b"1", b"3", b"4"]
    status = sink.status()
    assert status["reconnects"] == 0 and status["state"] == "running", status
    source.emit({"n": b"5"})  # the refusal was raised once: the sink goes on
    assert sink.wait_written(timeout=30)
    assert plain.xlen(topic) == 5
    plain.close()
    source.destroy()


def test_oversized_element_from_redis_is_dead_lettered_with_the_reason(
    redis_url, small_bulk, prefix, caplog
):
    """from_redis -> map (inflates) -> to_redis: retried, then dead-lettered; others written."""
    src, dst = prefix + "in", prefix + "out"
    plain_src = _plain(redis_url)
    for n, size in enumerate([10, 10, BIG, 10, 10]):
        plain_src.xadd(src, encode_entry({"n": n, "size": size}))

    async def body():
        outlet = Stream.from_redis(
            src,
            group="g",
            start_id="0",
            block=0.1,
            max_deliveries=2,
            retry_delay=0.05,
            redis_url=redis_url,
            asynchronous=True,
        )
        sink = outlet.map(lambda m: {"n": m["n"], "blob": b"x" * m["size"]}).to_redis(
            dst, redis_url=small_bulk.url
        )
        outlet.start()
        await async_wait_for(
            lambda: outlet.status()["dead_lettered"] == 1 and outlet.status()["acked"] == 5,
            timeout=30,
            message="4 written and 1 dead-lettered",
        )
        await stop_and_wait(outlet)
        return outlet.status(), sink.status()

    outlet_status, sink_status = run(body, timeout=60)
    plain_dst = _plain(small_bulk.url)
    assert sorted(decode_entry(f)["n"] for _, f in plain_dst.xrange(dst)) == [0, 1, 3, 4]
    [(_, letter)] = plain_src.xrange(src + ":dead")
    reason = letter[b"reason"].decode()
    print(f"\ndead letter reason: {reason}")
    assert "ElementTooLarge" in reason and "proto-max-bulk-len" in reason, reason
    assert "2,097,1" in reason and "1,048,576" in reason, reason
    assert sink_status["reconnects"] == 0 and sink_status["state"] == "running", sink_status
    assert outlet_status["state"] == "stopped", outlet_status
    assert plain_src.xpending(src, "g")["pending"] == 0
    plain_src.close()
    plain_dst.close()


@pytest.mark.parametrize("kind", ["to_pubsub", "to_cache"])
def test_oversized_publish_or_cache_write_raises_from_emit(small_bulk, prefix, kind):
    """to_pubsub / to_cache share the risk (a PUBLISH or SET of a big value): refused too."""
    name = prefix + kind
    source = Stream()
    sink = getattr(source, kind)(name, codec="json", redis_url=small_bulk.url)
    source.emit({"n": 1})
    wait_for(lambda: sink.status()["written"] == 1, timeout=30, message="first write")
    with pytest.raises(ElementTooLarge, match=r"proto-max-bulk-len") as refused:
        source.emit({"n": 2, "blob": "x" * BIG})
    print(f"\n{kind} refusal: {refused.value}")
    source.emit({"n": 3})
    wait_for(lambda: sink.status()["written"] == 2, timeout=30, message="write after refusal")
    status = sink.status()
    assert status["reconnects"] == 0 and status["errors"] == 1, status
    if kind == "to_cache":
        assert json.loads(_plain(small_bulk.url).get(name)) == {"n": 3}
    source.destroy()


def test_a_limit_raised_at_runtime_is_seen(small_bulk, prefix, monkeypatch):
    """CONFIG SET proto-max-bulk-len 4mb while the sink runs: asked again before refusing."""
    import mdflow.nodes.batching

    monkeypatch.setattr(mdflow.nodes.batching, "RELEARN_AFTER", 0.0)
    topic = prefix + "out"
    source = Stream()
    sink = source.to_redis(topic, codec="fields", redis_url=small_bulk.url)
    source.emit({"n": b"1"})
    assert sink.wait_written(timeout=30)
    plain = _plain(small_bulk.url)
    plain.config_set("proto-max-bulk-len", str(4 * MB))
    plain.config_set("client-query-buffer-limit", str(8 * MB))
    source.emit({"n": b"2", "blob": b"x" * BIG})
    assert sink.wait_written(timeout=30)
    assert plain.xlen(topic) == 2 and sink.status()["errors"] == 0
    plain.close()
    source.destroy()


def test_limit_assumed_when_config_is_denied(small_bulk):
    """An ACL user without CONFIG: Redis' default (512 MB) is assumed, logged, writes work."""
    admin = _plain(small_bulk.url)
    user, password = f"w{uuid.uuid4().hex[:6]}", "pw-" + uuid.uuid4().hex[:6]
    admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@all", "-config")
    url = small_bulk.url.replace("redis://", f"redis://{user}:{password}@")
    try:
        limits = write_limits(sync_client(url), url)
        assert limits.assumed and limits.max_value == DEFAULT_MAX_VALUE, limits
        learned = write_limits(sync_client(small_bulk.url), small_bulk.url)
        assert not learned.assumed and learned.max_value == MB, learned
        assert learned.knob == "proto-max-bulk-len", learned
        # a value must also fit in the query buffer (measured: 1 MiB - 2 passes, - 1 does not)
        admin.config_set("proto-max-bulk-len", str(2 * MB))
        admin.config_set("client-query-buffer-limit", str(MB))
        learned = write_limits(sync_client(small_bulk.url), small_bulk.url)
        assert (learned.max_value, learned.knob) == (MB - 2, "client-query-buffer-limit")
    finally:
        admin.close()


# --- b. WRONGTYPE ----------------------------------------------------------------------------
def test_wrongtype_from_a_script_is_raised_by_the_next_emit(small_bulk, prefix, caplog):
    key = prefix + "string"
    plain = _plain(small_bulk.url)
    plain.set(key, "not a stream")
    source = Stream()
    sink = source.to_redis(key, redis_url=small_bulk.url)
    source.emit({"n": 1})
    wait_for(lambda: sink.status()["errors"] == 1, timeout=30, message="the refused write")
    with pytest.raises(WriteRefused, match="WRONGTYPE") as refused:
        source.emit({"n": 2})
    message = str(refused.value)
    print(f"\nWRONGTYPE from the next emit: {message}")
    assert f"to_redis<{key}>" in message and "not written" in message, message
    assert len(refused.value.errors) == 1
    assert sink.wait_written(timeout=30)  # (raised once; element 2 was not submitted)
    assert plain.get(key) == b"not a stream"
    assert sink.status()["written"] == 0
    source.emit({"n": 3})  # refused again: this time wait_written says so
    with pytest.raises(WriteRefused, match="WRONGTYPE"):
        sink.wait_written(timeout=30)
    assert len([m for m in _mdflow_errors(caplog) if "WRONGTYPE" in m]) == 2
    plain.close()
    source.destroy()


def test_wrongtype_in_asyncio_reaches_flush_and_the_next_emit(small_bulk, prefix):
    key = prefix + "hash"
    plain = _plain(small_bulk.url)
    plain.hset(key, "f", "v")

    async def body():
        source = Stream(asynchronous=True)
        sink = source.to_redis(key, redis_url=small_bulk.url)
        await source.emit({"n": 1})  # (below the window: no future to wait on)
        with pytest.raises(WriteRefused, match="WRONGTYPE"):
            await sink.flush(timeout=30)
        await source.emit({"n": 2})
        await async_wait_for(lambda: sink.status()["errors"] == 2, timeout=30)
        with pytest.raises(WriteRefused, match=r"WRONGTYPE.*not written"):
            await source.emit({"n": 3})
        assert await sink.flush(timeout=30)
        source.destroy()

    run(body, timeout=60)
    plain.close()


def test_wrongtype_from_redis_is_retried_then_dead_lettered(redis_url, prefix):
    """A computed topic that is a string key: that entry dead-letters, the rest flows."""
    src, good, bad = prefix + "in", prefix + "good", prefix + "bad"
    plain = _plain(redis_url)
    plain.set(bad, "a string")
    for n in range(6):
        plain.xadd(src, encode_entry({"n": n, "to": bad if n == 3 else good}))

    async def body():
        outlet = Stream.from_redis(
            src,
            group="g",
            start_id="0",
            block=0.1,
            max_deliveries=2,
            retry_delay=0.05,
            redis_url=redis_url,
            asynchronous=True,
        )
        outlet.to_redis(lambda m: m["to"], redis_url=redis_url)
        outlet.start()
        await async_wait_for(
            lambda: outlet.status()["acked"] == 6, timeout=30, message="all acked or dead"
        )
        await stop_and_wait(outlet)
        return outlet.status()

    status = run(body, timeout=60)
    assert status["dead_lettered"] == 1 and status["state"] == "stopped", status
    assert sorted(decode_entry(f)["n"] for _, f in plain.xrange(good)) == [0, 1, 2, 4, 5]
    [(_, letter)] = plain.xrange(src + ":dead")
    assert b"WRONGTYPE" in letter[b"reason"], letter
    assert plain.get(bad) == b"a string"
    plain.close()


# --- c. out of memory ------------------------------------------------------------------------
@pytest.fixture
def full_server(redis_factory):
    """A ``maxmemory 2mb`` / ``noeviction`` server holding ~2.5 MB of ballast: out of memory.

    The ballast is written with the limit lifted, then the limit is put back: the server is
    well over it, so that no buffer Redis frees meanwhile lets a write through by chance.
    """
    server = redis_factory(extra_args=("--maxmemory", "2mb", "--maxmemory-policy", "noeviction"))
    plain = _plain(server.url)
    plain.config_set("maxmemory", "0")
    for n in range(80):
        plain.set(f"ballast:{n}", b"b" * 32_768)
    plain.config_set("maxmemory", "2mb")
    with pytest.raises(redis.ResponseError, match="maxmemory"):
        plain.set("probe", "x")
    yield server
    plain.close()


def _free(server) -> float:
    """Delete the ballast; return when it was done (time.monotonic())."""
    plain = _plain(server.url)
    plain.delete(*plain.keys("ballast:*"))
    plain.close()
    return time.monotonic()


def _check_paused(status: dict) -> None:
    assert status["state"] == "paused", status
    reason = status["pause_reason"]
    assert reason.startswith("OOM: Redis is out of memory (maxmemory 2097152 bytes"), reason
    assert "noeviction" in reason and "maxmemory" in reason, reason


def _pause_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "paused: OOM" in r.getMessage()]


def test_out_of_memory_pauses_a_script_writer_until_memory_frees(full_server, prefix, caplog):
    caplog.set_level(logging.INFO, logger="mdflow")
    topic = prefix + "out"
    source = Stream()
    sink = source.to_redis(topic, redis_url=full_server.url)
    began = time.monotonic()
    for n in range(200):
        source.emit({"n": n, "pad": "p" * 500})
    wait_for(lambda: sink.status()["state"] == "paused", timeout=30, message="paused")
    paused_after = time.monotonic() - began
    status = sink.status()
    _check_paused(status)
    print(f"\nscript writer paused after {paused_after:.3f}s: {status['pause_reason']}")
    time.sleep(1.0)  # (a paused writer keeps retrying, quietly)
    assert sink.status()["state"] == "paused" and sink.status()["written"] == 0
    freed = _free(full_server)
    assert sink.wait_written(timeout=60)
    resumed = time.monotonic() - freed
    status = sink.status()
    print(f"script writer: all 200 written {resumed:.3f}s after memory was freed; {status}")
    assert status["state"] == "running" and status["pause_reason"] is None, status
    assert status["written"] == 200 and status["errors"] == 1, status  # (one: the pause)
    plain = _plain(full_server.url)
    assert [decode_entry(f)["n"] for _, f in plain.xrange(topic)] == list(range(200))
    assert len(_pause_lines(caplog)) == 1, _pause_lines(caplog)
    assert not _mdflow_errors(caplog), _mdflow_errors(caplog)
    assert any("resumed after" in r.getMessage() for r in caplog.records)
    plain.close()
    source.destroy()


def test_out_of_memory_pauses_to_redis_and_engine_not_dead_letters(
    redis_url, full_server, prefix, caplog
):
    """from_redis -> to_redis (full server) and an engine into the full server: both pause,
    nothing is dead-lettered or lost, both run again once memory frees."""
    caplog.set_level(logging.INFO, logger="mdflow")
    src, dst, pumped = prefix + "in", prefix + "out", prefix + "pumped"
    total = 300
    plain_src = _plain(redis_url)
    for n in range(total):
        plain_src.xadd(src, encode_entry({"n": n}))
    counter = iter(range(10**6))
    figures: dict[str, float] = {}

    async def body():
        outlet = Stream.from_redis(
            src,
            group="g",
            start_id="0",
            block=0.1,
            max_deliveries=2,
            retry_delay=0.05,
            redis_url=redis_url,
            asynchronous=True,
        )
        sink = outlet.map(lambda m: {"n": m["n"], "pad": "p" * 500}).to_redis(
            dst, redis_url=full_server.url
        )
        pump = Stream.engine(
            pumped,
            lambda: {"n": next(counter)},
            push_interval=0.02,
            redis_url=full_server.url,
            asynchronous=True,
        )
        began = time.monotonic()
        outlet.start()
        pump.start()
        await async_wait_for(
            lambda: sink.status()["state"] == "paused" and pump.status()["state"] == "paused",
            timeout=30,
            message="to_redis and engine paused",
        )
        figures["paused_after"] = time.monotonic() - began
        _check_paused(sink.status())
        _check_paused(pump.status())
        await async_wait_for(lambda: pump.status()["skipped_ticks"] > 10, timeout=30)
        assert outlet.status()["dead_lettered"] == 0 and outlet.status()["failed"] == 0
        assert pump.status()["written"] == 0 and sink.status()["written"] == 0
        freed = _free(full_server)
        await async_wait_for(
            lambda: outlet.status()["acked"] == total, timeout=60, message="all copied"
        )
        figures["copied_after_free"] = time.monotonic() - freed
        await async_wait_for(
            lambda: pump.status()["state"] == "running" and pump.status()["written"] > 5,
            timeout=30,
            message="engine running again",
        )
        figures["engine_after_free"] = time.monotonic() - freed
        await stop_and_wait(outlet, pump)
        return outlet.status(), sink.status(), pump.status()

    outlet_status, sink_status, pump_status = run(body, timeout=80)
    print(f"\nOOM pause/resume (asyncio): {figures}")
    print(f"to_redis: {sink_status}\nengine: {pump_status}")
    assert outlet_status["dead_lettered"] == 0 and outlet_status["failed"] == 0, outlet_status
    assert sink_status["state"] == "running" and sink_status["pause_reason"] is None
    assert sink_status["written"] == total, sink_status
    plain = _plain(full_server.url)
    assert sorted(decode_entry(f)["n"] for _, f in plain.xrange(dst)) == list(range(total))
    written = [decode_entry(f)["n"] for _, f in plain.xrange(pumped)]
    assert written == sorted(written) and len(written) == pump_status["written"], pump_status
    assert plain_src.xpending(src, "g")["pending"] == 0
    assert len(_pause_lines(caplog)) == 2, _pause_lines(caplog)  # one per writer
    assert not _mdflow_errors(caplog), _mdflow_errors(caplog)
    plain.close()
    plain_src.close()
