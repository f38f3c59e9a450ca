"""Redis-stream throughput and latency: mdflow beside raw redis-py, in one run.

Usage::

    python benchmarks/bench_streams.py            # 200k entries (a few minutes)
    python benchmarks/bench_streams.py --quick    # a smoke run in seconds

A private ``redis-server`` is started for the run (unix socket, no
persistence), so every case talks to the same server. In the latency cases
the producer runs in a process of its own (raw: pipelined XADD; mdflow:
``to_redis``) and the consumer here (raw: XREADGROUP BLOCK + XACK; mdflow:
``from_redis -> sink``), as in a real deployment. The machine's speed
drifts, so read the *ratios* (same run), not the absolute rates. The last line
printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import redis
import redis.asyncio
from streamz import Stream
from tornado.ioloop import IOLoop

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import mdflow
from mdflow.codecs import decode_entry, encode_entry
from mdflow.reservoir import RedisServer


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


# --- 1. raw consumer ---------------------------------------------------------------------------
async def raw_consumer(url: str, topic: str, total: int) -> float:
    conn = redis.asyncio.Redis.from_url(url)
    await conn.xgroup_create(topic, "raw", id="0")
    done = kept = 0
    began = time.perf_counter()
    while done < total:
        reply = await conn.xreadgroup("raw", "c", {topic: ">"}, count=100, block=1000)
        ids = []
        for _, items in reply:
            for entry_id, fields in items:
                msg = decode_entry(fields)
                if msg["qty"] > 0:  # the same map + filter work as the mdflow graph
                    kept += msg["px"] * 2 > 0
                ids.append(entry_id)
        await conn.xack(topic, "raw", *ids)
        done += len(ids)
    elapsed = time.perf_counter() - began
    await conn.aclose()
    return total / elapsed


# --- 2. mdflow consumer ------------------------------------------------------------------------
async def mdflow_consumer(url: str, topic: str, total: int, batch: bool = False) -> float:
    source = Stream.from_redis(
        topic,
        group="mdflow-batch" if batch else "mdflow",
        consumer="c",
        start_id="0",
        batch_size=100,
        max_inflight=10_000,
        batch=batch,
        redis_url=url,
        asynchronous=True,
    )
    count = [0]
    if batch:

        def consume(msgs):
            count[0] += sum(1 for m in msgs if m["qty"] > 0 and m["px"] * 2 > 0)

        source.sink(consume)
    else:
        source.map(lambda m: m["px"] * 2).filter(lambda px: px > 0).sink(
            lambda _: count.__setitem__(0, count[0] + 1)
        )
    began = time.perf_counter()
    source.start()
    while source.status()["acked"] < total:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - began
    source.stop()
    while source.status()["state"] != "stopped":
        await asyncio.sleep(0.01)
    return total / elapsed


# --- 5. the seed notebook's pattern -------------------------------------------------------------
async def seed_pattern(url: str, topic: str, total: int) -> float:
    """walrus consumer_group.read() polled on the loop (blocking), one entry per emit."""
    from walrus import Database

    db = Database.from_url(url)
    group = db.consumer_group("seed", [topic], consumer="c")
    group.create()
    group.set_id("0")
    source = Stream(asynchronous=True)
    got = source.map(lambda m: m).sink_to_list()
    began = time.perf_counter()
    while len(got) < total:
        batch = group.read(count=1)  # the seed reads and emits one entry at a time
        if not batch:
            await asyncio.sleep(0.1)
            continue
        for _, items in batch:
            for _entry_id, fields in items:
                await source.emit(decode_entry(fields))
    elapsed = time.perf_counter() - began
    return len(got) / elapsed


# --- 3. producers ------------------------------------------------------------------------------
async def raw_producer(url: str, topic: str, total: int) -> float:
    conn = redis.asyncio.Redis.from_url(url)
    await conn.delete(topic)
    began = time.perf_counter()
    for start in range(0, total, 1000):
        pipe = conn.pipeline(transaction=False)
        for n in range(start, min(total, start + 1000)):
            pipe.xadd(topic, encode_entry(tick(n)))
        await pipe.execute()
    elapsed = time.perf_counter() - began
    await conn.aclose()
    return total / elapsed


async def mdflow_producer(url: str, topic: str, total: int) -> float:
    conn = redis.asyncio.Redis.from_url(url)
    await conn.delete(topic)
    source = Stream.from_iterable((tick(n) for n in range(total)), loop=IOLoop.current())
    writer = source.to_redis(topic, redis_url=url)
    began = time.perf_counter()
    source.start()
    while writer.status()["written"] < total:
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - began
    await conn.aclose()
    return total / elapsed


# --- 4. latency --------------------------------------------------------------------------------
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
    if mode != "raw":
        await writer.flush(timeout=30)


def start_producer(mode: str, url: str, topic: str, rate: int, count: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, "--produce", mode, url, topic, str(rate), str(count)]
    )


async def raw_latency(url: str, topic: str, rate: int, count: int) -> np.ndarray:
    """Raw consumer: XREADGROUP BLOCK + XACK, fed by a raw producer process."""
    reader = redis.asyncio.Redis.from_url(url)
    await reader.delete(topic)
    await reader.xgroup_create(topic, "lat", id="$", mkstream=True)
    lat: list[float] = []
    producer = start_producer("raw", url, topic, rate, count)
    while len(lat) < count:
        reply = await reader.xreadgroup("lat", "c", {topic: ">"}, count=100, block=1000)
        now = time.time()
        ids = []
        for _, items in reply:
            for entry_id, fields in items:
                lat.append(now - decode_entry(fields)["t"])
                ids.append(entry_id)
        if ids:
            await reader.xack(topic, "lat", *ids)
    producer.wait()
    await reader.aclose()
    return np.array(lat) * 1000


async def mdflow_latency(url: str, topic: str, rate: int, count: int) -> np.ndarray:
    """from_redis -> sink, fed by a to_redis producer process."""
    conn = redis.asyncio.Redis.from_url(url)
    await conn.delete(topic)
    await conn.aclose()
    lat: list[float] = []
    source = Stream.from_redis(
        topic, group="lat", consumer="c", start_id="$", block=1.0, redis_url=url, asynchronous=True
    )
    source.sink(lambda m: lat.append(time.time() - m["t"]))
    source.start()
    while source.status()["state"] != "running":
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    producer = start_producer("mdflow", url, topic, rate, count)
    while len(lat) < count:
        await asyncio.sleep(0.01)
    producer.wait()
    source.stop()
    while source.status()["state"] != "stopped":
        await asyncio.sleep(0.01)
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
    return round(float(np.percentile(a, q)), 3)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--produce":  # the producer process of a latency case
        mode, url, topic, rate, count = sys.argv[2:7]
        asyncio.run(produce(mode, url, topic, int(rate), int(count)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("-n", type=int, default=None, help="entries per throughput case")
    args = parser.parse_args()
    total = args.n or (3_000 if args.quick else 200_000)
    seed_total = min(total, 2_000 if args.quick else 20_000)
    lat_count = 300 if args.quick else 5_000
    directory = tempfile.mkdtemp(prefix="mdflow-bench-")
    server = RedisServer(port=0, unixsocket=os.path.join(directory, "r.sock"), directory=directory)
    server.start()
    url = server.url
    results: dict[str, float] = {}
    try:
        fill(url, "bench:in", total)
        results["raw_consume_per_s"] = asyncio.run(raw_consumer(url, "bench:in", total))
        results["mdflow_consume_per_s"] = asyncio.run(mdflow_consumer(url, "bench:in", total))
        results["mdflow_batch_consume_per_s"] = asyncio.run(
            mdflow_consumer(url, "bench:in", total, batch=True)
        )
        fill(url, "bench:seed", seed_total)
        results["seed_consume_per_s"] = asyncio.run(seed_pattern(url, "bench:seed", seed_total))
        results["raw_produce_per_s"] = asyncio.run(raw_producer(url, "bench:out-raw", total))
        results["mdflow_produce_per_s"] = asyncio.run(mdflow_producer(url, "bench:out", total))
        for rate in (1_000, 10_000):
            raw = asyncio.run(raw_latency(url, f"bench:lat-raw-{rate}", rate, lat_count))
            mdf = asyncio.run(mdflow_latency(url, f"bench:lat-{rate}", rate, lat_count))
            results[f"raw_p50_ms_{rate}"], results[f"raw_p99_ms_{rate}"] = (
                pct(raw, 50),
                pct(raw, 99),
            )
            results[f"mdflow_p50_ms_{rate}"], results[f"mdflow_p99_ms_{rate}"] = (
                pct(mdf, 50),
                pct(mdf, 99),
            )
    finally:
        server.cleanup()

    r = {k: round(v, 3) for k, v in results.items()}
    ratio = {
        "consume_mdflow_vs_raw": round(r["mdflow_consume_per_s"] / r["raw_consume_per_s"], 3),
        "consume_batch_vs_raw": round(r["mdflow_batch_consume_per_s"] / r["raw_consume_per_s"], 3),
        "consume_mdflow_vs_seed": round(r["mdflow_consume_per_s"] / r["seed_consume_per_s"], 2),
        "produce_mdflow_vs_raw": round(r["mdflow_produce_per_s"] / r["raw_produce_per_s"], 3),
    }
    print(f"mdflow {mdflow.__version__}, redis-server {server.version}, {total} entries per case")
    print(f"{'case':48s} {'rate /s':>12s}")
    rows = [
        ("1. raw XREADGROUP COUNT 100 + batched XACK", "raw_consume_per_s"),
        ("2. from_redis -> map -> filter -> sink", "mdflow_consume_per_s"),
        ("2b. from_redis(batch=True) -> sink", "mdflow_batch_consume_per_s"),
        ("5. seed pattern (walrus read() on the loop)", "seed_consume_per_s"),
        ("3. raw pipelined XADD x1000", "raw_produce_per_s"),
        ("3. from_iterable -> to_redis", "mdflow_produce_per_s"),
    ]
    for label, key in rows:
        print(f"{label:48s} {r[key]:12,.0f}")
    print(f"{'latency':48s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for rate in (1_000, 10_000):
        print(
            f"{f'4. raw XADD | XREADGROUP BLOCK @ {rate}/s':48s} "
            f"{r[f'raw_p50_ms_{rate}']:8.3f} {r[f'raw_p99_ms_{rate}']:8.3f}"
        )
        print(
            f"{f'4. to_redis | from_redis -> sink @ {rate}/s':48s} "
            f"{r[f'mdflow_p50_ms_{rate}']:8.3f} {r[f'mdflow_p99_ms_{rate}']:8.3f}"
        )
    for key, value in ratio.items():
        print(f"ratio {key:42s} {value:8.3f}")
    print(json.dumps({"bench": "streams", "entries": total, **r, **ratio}))


if __name__ == "__main__":
    main()
