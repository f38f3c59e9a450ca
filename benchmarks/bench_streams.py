"""Redis-stream throughput and latency: mdflow beside plain redis-py, in one run.

Usage::

    python benchmarks/bench_streams.py              # 100k entries per case
    python benchmarks/bench_streams.py --quick      # a smoke run (well under a minute)
    python benchmarks/bench_streams.py -n 50000 --repeat 5   # medians of 5 interleaved runs

A private ``redis-server`` is started for the run (unix socket, no
persistence, in a ``mdflow-bench-*`` temp dir removed at the end), so every
case talks to the same server. The machine's speed drifts by 30-40%, so every
figure is read as a same-run *ratio* against the fastest plain redis-py, the
synchronous client (``redis.Redis``): keys ``*_vs_sync``.

Every entry is ``{"sym", "px", "qty", "n"}`` written with
:func:`mdflow.codecs.encode_entry`; every consumer decodes every entry with
:func:`~mdflow.codecs.decode_entry` and does the same map + filter work.

Throughput cases (``--repeat K`` runs them K times, interleaved, and reports
the median of each figure and of each per-run ratio):

1. raw sync consumer: ``redis.Redis`` XREADGROUP COUNT 100 + one XACK per read;
2. raw asyncio consumer (``redis.asyncio``), the same;
3. ``from_redis -> map -> filter -> sink``, *script mode*: the nodes run on
   streamz's IOLoop thread, the main thread polls ``status()["acked"]``;
4. the same in *asyncio mode* (``asynchronous=True`` inside ``asyncio.run``);
5. ``from_redis(batch=True) -> sink``, script mode; 6. the same, asyncio mode;
7. streamz alone, no Redis: ``Stream().map().filter().sink()``, µs per
   element, without metadata and with a ``streamz.RefCounter`` per element
   (streamz's own: its callback is scheduled on streamz's IOLoop thread), once
   with the ``Stream._emit`` mdflow installs (what mdflow graphs run) and once
   with streamz's original; beside them the mdflow consumers as µs/element;
8. producers: raw sync pipelined XADD x1000 (``transaction=False``), raw
   asyncio the same; ``Stream().to_redis(topic)`` fed by a plain ``emit``
   loop in script mode (the graph has no loop: a writer thread writes) and
   in asyncio mode (``await source.emit(x)``); ``Stream.engine(...,
   flatten=True)`` whose ``func`` returns 1000 records per call (each its own
   entry), and, for comparison, the engine with one record per tick
   (``push_interval=1e-6``, for a fixed time: tick-bound, each tick a
   thread-pool call plus an awaited XADD round trip).

Latency (push -> sink, p50/p99 ms, at 1k/s and 10k/s): the producer runs in a
process of its own and stamps each entry with ``time.time()``; the raw sync
consumer (XREADGROUP BLOCK, ``redis.Redis``), the raw asyncio consumer and
``from_redis -> sink`` (asyncio mode) are fed by a raw pipelined-XADD
producer; the last row is mdflow end to end (``to_redis`` producer process).

Tables are printed first; the last line is one JSON object with every figure,
every ratio, ``hiredis``, and the redis-py and redis-server versions.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import numpy as np
import redis
import redis.asyncio
from streamz import RefCounter, Stream, core

_STREAMZ_EMIT = core.Stream._emit  # before mdflow's import replaces it

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import mdflow
from mdflow.codecs import decode_entry, encode_entry
from mdflow.reservoir import RedisServer

POLL = 0.002  # seconds between status() polls from the main thread
COUNT = 100  # entries per XREADGROUP, raw and mdflow alike


def tick(n: int) -> dict:
    return {"sym": "BTC-USD", "px": 50_000.0 + n % 100, "qty": n % 7 + 1, "n": n}


def fill(url: str, topic: str, total: int) -> None:
    conn = redis.Redis.from_url(url)
    conn.delete(topic)
    for start in range(0, total, 1000):
        pipe = conn.pipeline(transaction=False)
        for n in range(start, min(total, start + 1000)):
            pipe.xadd(topic, encode_entry(tick(n)))
        pipe.execute()
    conn.close()


def delete(url: str, topic: str) -> None:
    conn = redis.Redis.from_url(url)
    conn.delete(topic)
    conn.close()


def work(msg: dict) -> bool:
    """The raw loops' equivalent of ``map(px * 2) -> filter(> 0)``."""
    return msg["qty"] > 0 and msg["px"] * 2 > 0


def wait_until(done: Callable[[], bool], timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark case did not finish")
        time.sleep(POLL)


# --- 1, 2. raw consumers -----------------------------------------------------------------------
def raw_sync_consumer(url: str, topic: str, group: str, total: int) -> float:
    conn = redis.Redis.from_url(url)
    conn.xgroup_create(topic, group, id="0")
    done = kept = 0
    began = time.perf_counter()
    while done < total:
        reply = conn.xreadgroup(group, "c", {topic: ">"}, count=COUNT, block=1000)
        ids = []
        for _, items in reply:
            for entry_id, fields in items:
                kept += work(decode_entry(fields))
                ids.append(entry_id)
        if ids:
            conn.xack(topic, group, *ids)
        done += len(ids)
    elapsed = time.perf_counter() - began
    conn.close()
    return total / elapsed


async def raw_async_consumer(url: str, topic: str, group: str, total: int) -> float:
    conn = redis.asyncio.Redis.from_url(url)
    await conn.xgroup_create(topic, group, id="0")
    done = kept = 0
    began = time.perf_counter()
    while done < total:
        reply = await conn.xreadgroup(group, "c", {topic: ">"}, count=COUNT, block=1000)
        ids = []
        for _, items in reply:
            for entry_id, fields in items:
                kept += work(decode_entry(fields))
                ids.append(entry_id)
        if ids:
            await conn.xack(topic, group, *ids)
        done += len(ids)
    elapsed = time.perf_counter() - began
    await conn.aclose()
    return total / elapsed


# --- 3-6. mdflow consumers ---------------------------------------------------------------------
def outlet(url: str, topic: str, group: str, batch: bool, asynchronous: bool) -> Stream:
    """``from_redis`` and its graph: per element map -> filter -> sink, or a batch sink."""
    options = {"asynchronous": True} if asynchronous else {}
    source = Stream.from_redis(
        topic,
        group=group,
        consumer="c",
        start_id="0",
        batch_size=COUNT,
        max_inflight=10_000,
        batch=batch,
        redis_url=url,
        **options,
    )
    kept = [0]
    if batch:

        def consume(msgs: list) -> None:
            kept[0] += sum(1 for m in msgs if work(m))

        source.sink(consume)
    else:
        source.map(lambda m: m["px"] * 2).filter(lambda px: px > 0).sink(
            lambda _: kept.__setitem__(0, kept[0] + 1)
        )
    return source


def mdflow_script_consumer(url: str, topic: str, group: str, total: int, batch: bool) -> float:
    source = outlet(url, topic, group, batch, asynchronous=False)
    began = time.perf_counter()
    source.start()
    wait_until(lambda: source.status()["acked"] >= total)
    elapsed = time.perf_counter() - began
    source.stop()
    wait_until(lambda: source.status()["state"] == "stopped")
    return total / elapsed


async def mdflow_async_consumer(url: str, topic: str, group: str, total: int, batch: bool) -> float:
    source = outlet(url, topic, group, batch, asynchronous=True)
    began = time.perf_counter()
    source.start()
    while source.status()["acked"] < total:
        await asyncio.sleep(POLL)
    elapsed = time.perf_counter() - began
    source.stop()
    while source.status()["state"] != "stopped":
        await asyncio.sleep(0.01)
    return total / elapsed


# --- 7. streamz alone --------------------------------------------------------------------------
def streamz_us(total: int, ref: bool, emit: Callable | None = None) -> float:
    """µs per element through ``map -> filter -> sink``; no Redis, no decoding.

    With ``ref``, each element carries a fresh ``streamz.RefCounter(initial=1)``
    released after its emit; the clock stops when every callback has run.
    ``emit`` swaps in another ``Stream._emit`` for the measurement.
    """
    installed = core.Stream._emit
    if emit is not None:
        core.Stream._emit = emit
    try:
        msgs = [tick(n) for n in range(total)]
        source = Stream()
        source.map(lambda m: m["px"] * 2).filter(lambda px: px > 0).sink(lambda _: None)
        called = [0]
        all_called = threading.Event()

        def cb() -> None:
            called[0] += 1
            if called[0] == total:
                all_called.set()

        began = time.perf_counter()
        if ref:
            for m in msgs:
                counter = RefCounter(initial=1, cb=cb)
                source.emit(m, metadata=[{"ref": counter}])
                counter.release()
            all_called.wait(600)
        else:
            for m in msgs:
                source.emit(m)
        return (time.perf_counter() - began) / total * 1e6
    finally:
        core.Stream._emit = installed


# --- 8. producers ------------------------------------------------------------------------------
def raw_sync_producer(url: str, topic: str, total: int) -> float:
    conn = redis.Redis.from_url(url)
    conn.delete(topic)
    began = time.perf_counter()
    for start in range(0, total, 1000):
        pipe = conn.pipeline(transaction=False)
        for n in range(start, min(total, start + 1000)):
            pipe.xadd(topic, encode_entry(tick(n)))
        pipe.execute()
    elapsed = time.perf_counter() - began
    conn.delete(topic)
    conn.close()
    return total / elapsed


async def raw_async_producer(url: str, topic: str, total: int) -> float:
    conn = redis.asyncio.Redis.from_url(url)
    await conn.delete(topic)
    began = time.perf_counter()
    for start in range(0, total, 1000):
        pipe = conn.pipeline(transaction=False)
        for n in range(start, min(total, start + 1000)):
            pipe.xadd(topic, encode_entry(tick(n)))
        await pipe.execute()
    elapsed = time.perf_counter() - began
    await conn.delete(topic)
    await conn.aclose()
    return total / elapsed


def mdflow_emit_script_producer(url: str, topic: str, total: int) -> float:
    """``Stream().to_redis(topic)`` fed by ``emit`` from the main thread (script mode)."""
    delete(url, topic)
    source = Stream()
    writer = source.to_redis(topic, redis_url=url)
    began = time.perf_counter()
    for n in range(total):
        source.emit(tick(n))
    wait_until(lambda: writer.status()["written"] >= total)
    elapsed = time.perf_counter() - began
    delete(url, topic)
    return total / elapsed


async def mdflow_emit_async_producer(url: str, topic: str, total: int) -> float:
    """``Stream(asynchronous=True).to_redis(topic)`` fed by ``await source.emit(x)``."""
    conn = redis.asyncio.Redis.from_url(url)
    await conn.delete(topic)
    source = Stream(asynchronous=True)
    writer = source.to_redis(topic, redis_url=url)
    began = time.perf_counter()
    for n in range(total):
        await source.emit(tick(n))
    await writer.flush(timeout=60)
    elapsed = time.perf_counter() - began
    written = writer.status()["written"]
    await conn.delete(topic)
    await conn.aclose()
    if written < total:
        raise RuntimeError(f"to_redis wrote {written} of {total}")
    return total / elapsed


def mdflow_engine_producer(
    url: str, topic: str, total: int, seconds: float, per_tick: int = 1
) -> float:
    """``Stream.engine`` (script mode), ``per_tick`` records per call, ``push_interval=1e-6``.

    With ``per_tick > 1`` the engine runs with ``flatten=True`` (each record its own
    entry). Runs until ``total`` entries are written or ``seconds`` have passed.
    """
    delete(url, topic)
    numbers = itertools.count()
    if per_tick == 1:
        pump = Stream.engine(topic, lambda: tick(next(numbers)), push_interval=1e-6, redis_url=url)
    else:

        def records() -> list[dict]:
            return [tick(next(numbers)) for _ in range(per_tick)]

        pump = Stream.engine(topic, records, push_interval=1e-6, flatten=True, redis_url=url)
    began = time.perf_counter()
    pump.start()
    wait_until(lambda: pump.status()["written"] >= total or time.perf_counter() - began >= seconds)
    written = pump.status()["written"]
    elapsed = time.perf_counter() - began
    pump.stop()
    wait_until(lambda: pump.status()["state"] == "stopped")
    delete(url, topic)
    return written / elapsed


# --- 9. latency --------------------------------------------------------------------------------
async def produce(mode: str, url: str, topic: str, rate: int, count: int) -> None:
    """The producer side of a latency case, run in its own process (``--produce``).

    Each message carries its send time (``time.time()``, comparable across
    processes on one machine). ``raw`` pipelines the XADDs due at each
    wake-up; ``mdflow`` emits into ``to_redis``, which pipelines one loop turn.
    """
    if mode == "raw":
        conn = redis.asyncio.Redis.from_url(url)

        async def send(n: int) -> None:
            pipe = conn.pipeline(transaction=False)
            for _ in range(n):
                pipe.xadd(topic, encode_entry({"t": time.time()}))
            await pipe.execute()
    else:
        producer = Stream(asynchronous=True)
        writer = producer.to_redis(topic, redis_url=url)

        def send(n: int) -> None:
            for _ in range(n):
                producer.emit({"t": time.time()})

    await paced(send, rate, count)
    if mode == "raw":
        await conn.aclose()
    else:
        await writer.flush(timeout=30)


def start_producer(mode: str, url: str, topic: str, rate: int, count: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, "--produce", mode, url, topic, str(rate), str(count)]
    )


def latency_deadline(rate: int, count: int) -> float:
    return time.monotonic() + count / rate + 30


def raw_sync_latency(url: str, topic: str, rate: int, count: int) -> np.ndarray:
    """Raw sync consumer: ``redis.Redis`` XREADGROUP BLOCK + XACK."""
    reader = redis.Redis.from_url(url)
    reader.delete(topic)
    reader.xgroup_create(topic, "lat", id="$", mkstream=True)
    lat: list[float] = []
    producer = start_producer("raw", url, topic, rate, count)
    deadline = latency_deadline(rate, count)
    while len(lat) < count and time.monotonic() < deadline:
        reply = reader.xreadgroup("lat", "c", {topic: ">"}, count=COUNT, block=1000)
        now = time.time()
        ids = []
        for _, items in reply:
            for entry_id, fields in items:
                lat.append(now - decode_entry(fields)["t"])
                ids.append(entry_id)
        if ids:
            reader.xack(topic, "lat", *ids)
    producer.wait()
    reader.delete(topic)
    reader.close()
    return np.array(lat) * 1000


async def raw_async_latency(url: str, topic: str, rate: int, count: int) -> np.ndarray:
    """Raw asyncio consumer: XREADGROUP BLOCK + XACK."""
    reader = redis.asyncio.Redis.from_url(url)
    await reader.delete(topic)
    await reader.xgroup_create(topic, "lat", id="$", mkstream=True)
    lat: list[float] = []
    producer = start_producer("raw", url, topic, rate, count)
    deadline = latency_deadline(rate, count)
    while len(lat) < count and time.monotonic() < deadline:
        reply = await reader.xreadgroup("lat", "c", {topic: ">"}, count=COUNT, block=1000)
        now = time.time()
        ids = []
        for _, items in reply:
            for entry_id, fields in items:
                lat.append(now - decode_entry(fields)["t"])
                ids.append(entry_id)
        if ids:
            await reader.xack(topic, "lat", *ids)
    producer.wait()
    await reader.delete(topic)
    await reader.aclose()
    return np.array(lat) * 1000


async def mdflow_latency(url: str, topic: str, rate: int, count: int, mode: str) -> np.ndarray:
    """``from_redis -> sink`` (asyncio mode), fed by a ``mode`` producer process."""
    conn = redis.asyncio.Redis.from_url(url)
    await conn.delete(topic)
    lat: list[float] = []
    source = Stream.from_redis(
        topic, group="lat", consumer="c", start_id="$", block=1.0, redis_url=url, asynchronous=True
    )
    source.sink(lambda m: lat.append(time.time() - m["t"]))
    source.start()
    while source.status()["state"] != "running":
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    producer = start_producer(mode, url, topic, rate, count)
    deadline = latency_deadline(rate, count)
    while len(lat) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    producer.wait()
    source.stop()
    while source.status()["state"] != "stopped":
        await asyncio.sleep(0.01)
    await conn.delete(topic)
    await conn.aclose()
    return np.array(lat) * 1000


async def paced(send, rate: int, count: int) -> None:
    """Send ``count`` messages at ``rate`` per second on a fixed schedule (no drift).

    ``send(n)`` sends the ``n`` messages that are due at a wake-up (the loop's
    timers are ~1 ms coarse, so at 10k/s about 10 are due each time); it may
    return an awaitable.
    """
    interval = 1.0 / rate
    began = time.perf_counter()
    sent = 0
    while sent < count:
        due = min(count, int((time.perf_counter() - began) / interval) + 1) - sent
        if due <= 0:
            await asyncio.sleep(began + sent * interval - time.perf_counter())
            continue
        result = send(due)
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            await result
        sent += due


def pct(a: np.ndarray, q: float) -> float:
    return round(float(np.percentile(a, q)), 3) if len(a) else float("nan")


# --- the run -----------------------------------------------------------------------------------
#: (key, label, baseline key) of every throughput figure, in table order.
THROUGHPUT = [
    ("raw_sync_consume_per_s", "1. raw sync XREADGROUP COUNT 100 + XACK", None),
    ("raw_async_consume_per_s", "2. raw asyncio, the same", "raw_sync_consume_per_s"),
    ("consume_script_per_s", "3. from_redis->map->filter->sink, script", "raw_sync_consume_per_s"),
    ("consume_async_per_s", "4. from_redis->map->filter->sink, asyncio", "raw_sync_consume_per_s"),
    ("batch_script_per_s", "5. from_redis(batch=True)->sink, script", "raw_sync_consume_per_s"),
    ("batch_async_per_s", "6. from_redis(batch=True)->sink, asyncio", "raw_sync_consume_per_s"),
    ("raw_sync_produce_per_s", "8. raw sync pipelined XADD x1000", None),
    ("raw_async_produce_per_s", "8. raw asyncio pipelined XADD x1000", "raw_sync_produce_per_s"),
    ("produce_emit_per_s", "8. Stream().to_redis, emit loop, script", "raw_sync_produce_per_s"),
    (
        "produce_emit_async_per_s",
        "8. to_redis, await emit loop, asyncio",
        "raw_sync_produce_per_s",
    ),
    (
        "produce_engine_per_s",
        "8. Stream.engine(flatten=True), 1000 records/call",
        "raw_sync_produce_per_s",
    ),
    (
        "produce_engine_tick_per_s",
        "8. Stream.engine, 1 entry/tick (tick-bound)",
        "raw_sync_produce_per_s",
    ),
]
RATIO_NAMES = {
    "raw_async_consume_per_s": "raw_async_consume_vs_sync",
    "consume_script_per_s": "consume_script_vs_sync",
    "consume_async_per_s": "consume_async_vs_sync",
    "batch_script_per_s": "batch_script_vs_sync",
    "batch_async_per_s": "batch_async_vs_sync",
    "raw_async_produce_per_s": "raw_async_produce_vs_sync",
    "produce_emit_per_s": "produce_emit_vs_sync",
    "produce_emit_async_per_s": "produce_emit_async_vs_sync",
    "produce_engine_per_s": "produce_engine_vs_sync",
    "produce_engine_tick_per_s": "produce_engine_tick_vs_sync",
}
MICRO = [
    ("streamz_plain_us", "7. Stream().map().filter().sink(), no metadata"),
    ("streamz_ref_us", "7. the same, RefCounter(initial=1, cb) per emit"),
    ("streamz_orig_plain_us", "7. no metadata, streamz's original _emit"),
    ("streamz_orig_ref_us", "7. RefCounter, streamz's original _emit"),
    ("consume_script_us", "7. mdflow per-element consumer, script (1/rate)"),
    ("consume_async_us", "7. mdflow per-element consumer, asyncio (1/rate)"),
    ("raw_sync_consume_us", "7. raw sync consumer (1/rate)"),
]


def one_run(url: str, run: int, total: int, engine_seconds: float) -> dict[str, float]:
    """Every throughput case once; consumers read ``bench:in`` through fresh groups."""
    topic = "bench:in"
    r: dict[str, float] = {}
    r["raw_sync_consume_per_s"] = raw_sync_consumer(url, topic, f"raw-sync-{run}", total)
    r["raw_async_consume_per_s"] = asyncio.run(
        raw_async_consumer(url, topic, f"raw-async-{run}", total)
    )
    r["consume_script_per_s"] = mdflow_script_consumer(url, topic, f"script-{run}", total, False)
    r["consume_async_per_s"] = asyncio.run(
        mdflow_async_consumer(url, topic, f"async-{run}", total, False)
    )
    r["batch_script_per_s"] = mdflow_script_consumer(url, topic, f"bscript-{run}", total, True)
    r["batch_async_per_s"] = asyncio.run(
        mdflow_async_consumer(url, topic, f"basync-{run}", total, True)
    )
    r["streamz_plain_us"] = streamz_us(total, ref=False)
    r["streamz_ref_us"] = streamz_us(total, ref=True)
    r["streamz_orig_plain_us"] = streamz_us(total, ref=False, emit=_STREAMZ_EMIT)
    r["streamz_orig_ref_us"] = streamz_us(total, ref=True, emit=_STREAMZ_EMIT)
    r["raw_sync_produce_per_s"] = raw_sync_producer(url, "bench:out-sync", total)
    r["raw_async_produce_per_s"] = asyncio.run(raw_async_producer(url, "bench:out-async", total))
    r["produce_emit_per_s"] = mdflow_emit_script_producer(url, "bench:out-emit", total)
    r["produce_emit_async_per_s"] = asyncio.run(
        mdflow_emit_async_producer(url, "bench:out-emit-async", total)
    )
    r["produce_engine_per_s"] = mdflow_engine_producer(
        url, "bench:out-engine", total, 60.0, per_tick=1000
    )
    r["produce_engine_tick_per_s"] = mdflow_engine_producer(
        url, "bench:out-engine-tick", total, engine_seconds
    )
    for key in ("consume_script", "consume_async", "raw_sync_consume"):
        r[f"{key}_us"] = 1e6 / r[f"{key}_per_s"]
    for key, _, base in THROUGHPUT:
        if base is not None:
            r[RATIO_NAMES[key]] = r[key] / r[base]
    return r


def latency(url: str, count: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for rate in (1_000, 10_000):
        samples = {
            "raw_sync": raw_sync_latency(url, f"bench:lat-sync-{rate}", rate, count),
            "raw_async": asyncio.run(
                raw_async_latency(url, f"bench:lat-async-{rate}", rate, count)
            ),
            "mdflow": asyncio.run(mdflow_latency(url, f"bench:lat-{rate}", rate, count, "raw")),
            "mdflow_e2e": asyncio.run(
                mdflow_latency(url, f"bench:lat-e2e-{rate}", rate, count, "mdflow")
            ),
        }
        for name, lat in samples.items():
            out[f"{name}_p50_ms_{rate}"] = pct(lat, 50)
            out[f"{name}_p99_ms_{rate}"] = pct(lat, 99)
            if len(lat) < count:
                out[f"{name}_lost_{rate}"] = count - len(lat)
    return out


LATENCY_ROWS = [
    ("raw_sync", "9. raw XADD | sync XREADGROUP BLOCK"),
    ("raw_async", "9. raw XADD | asyncio XREADGROUP BLOCK"),
    ("mdflow", "9. raw XADD | from_redis -> sink"),
    ("mdflow_e2e", "9. to_redis | from_redis -> sink"),
]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--produce":  # the producer process of a latency case
        mode, url, topic, rate, count = sys.argv[2:7]
        asyncio.run(produce(mode, url, topic, int(rate), int(count)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("-n", type=int, default=None, help="entries per throughput case")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run the throughput cases K times; report medians"
    )
    args = parser.parse_args()
    total = args.n or (5_000 if args.quick else 100_000)
    repeat = max(1, args.repeat)
    lat_count = 300 if args.quick else 5_000
    engine_seconds = 0.5 if args.quick else 3.0
    directory = tempfile.mkdtemp(prefix="mdflow-bench-")
    server = RedisServer(port=0, unixsocket=os.path.join(directory, "r.sock"), directory=directory)
    runs: list[dict[str, float]] = []
    try:
        server.start()
        url = server.url
        fill(url, "bench:in", total)
        for run in range(repeat):
            runs.append(one_run(url, run, total, engine_seconds))
        lat = latency(url, lat_count)
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)

    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    r = {k: round(v, 3) for k, v in median.items()}
    versions = {
        "mdflow": mdflow.__version__,
        "redis_py": redis.__version__,
        "redis_server": server.version,
        "hiredis": bool(redis.utils.HIREDIS_AVAILABLE),
    }
    print(
        f"mdflow {versions['mdflow']}, redis-py {versions['redis_py']} "
        f"(hiredis {versions['hiredis']}), redis-server {versions['redis_server']}; "
        f"{total} entries per case, median of {repeat} run(s)"
    )
    print(f"{'throughput':50s} {'rate /s':>12s} {'vs sync':>8s}")
    for key, label, base in THROUGHPUT:
        ratio = f"{r[RATIO_NAMES[key]]:8.3f}" if base else f"{'1':>8s}"
        print(f"{label:50s} {r[key]:12,.0f} {ratio}")
    print(f"{'per element, no Redis beside mdflow':50s} {'µs/elem':>12s}")
    for key, label in MICRO:
        print(f"{label:50s} {r[key]:12.2f}")
    print(f"{'latency push -> sink':50s} {'p50 ms':>12s} {'p99 ms':>8s}")
    for rate in (1_000, 10_000):
        for name, label in LATENCY_ROWS:
            lost = lat.get(f"{name}_lost_{rate}")
            note = f"  ({lost:.0f} not received)" if lost else ""
            print(
                f"{f'{label} @ {rate}/s':50s} "
                f"{lat[f'{name}_p50_ms_{rate}']:12.3f} {lat[f'{name}_p99_ms_{rate}']:8.3f}{note}"
            )
    print(
        json.dumps(
            {
                "bench": "streams",
                "entries": total,
                "repeat": repeat,
                "latency_entries": lat_count,
                **versions,
                **r,
                **lat,
            }
        )
    )


if __name__ == "__main__":
    main()
