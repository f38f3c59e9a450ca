"""Pub/sub receive rate and latency: ``from_pubsub`` and ``scanner`` beside raw redis-py.

Usage::

    python benchmarks/bench_pubsub.py            # 100k messages per case (a minute or two)
    python benchmarks/bench_pubsub.py --quick    # a smoke run in seconds

A private ``redis-server`` is started for the run (unix socket, no
persistence, no pub/sub output-buffer limit). Publishers run in a separate
process, so they never share the consumer's event loop or GIL.

* **receive rate** — the publisher fills the subscriber's buffer while the
  consumer is held at a gate; the clock runs from opening the gate to the
  last message. Every case decodes each message (``decode_message``) and
  counts it; the raw case without decoding is shown for reference.
* **latency** — messages carry the sender's ``time.monotonic()`` (one clock
  for every process on the machine), published at a fixed rate; then, a few
  times, a silence followed by one message: its latency shows whether an
  idle listener is slow to wake up.

Read the ratios (same run), not the absolute numbers. The last line printed
is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import redis
import redis.asyncio
from streamz import Stream

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import mdflow
import mdflow.pubsub
from mdflow.analyzers import Analyzer, AnalyzerResult
from mdflow.codecs import decode_message, encode_message
from mdflow.reservoir import RedisServer


def tick(n: int) -> dict:
    return {"symbol": "BTC-USD", "price": 50_000.0 + n % 100, "volume": n % 7 + 1, "n": n}


# --- publisher process -------------------------------------------------------------------------
def publish_burst(url: str, channel: str, total: int) -> None:
    conn = redis.Redis.from_url(url)
    payloads = [encode_message(tick(n)) for n in range(total)]
    for start in range(0, total, 1000):
        pipe = conn.pipeline(transaction=False)
        for payload in payloads[start : start + 1000]:
            pipe.publish(channel, payload)
        pipe.execute()
    conn.close()


def publish_paced(
    url: str, channel: str, count: int, rate: float, silence: float, silences: int
) -> None:
    """``count`` messages at ``rate``/s; then ``silences`` times: a silence, one message."""
    conn = redis.Redis.from_url(url)
    interval = 1.0 / rate

    def send(n: int, after_silence: bool) -> None:
        message = {"t": time.monotonic(), "n": n, "quiet": after_silence}
        conn.publish(channel, encode_message(message))

    def paced(first: int, how_many: int, after_silence: bool) -> None:
        began = time.monotonic()
        for i in range(how_many):
            delay = began + i * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            send(first + i, after_silence)

    paced(0, count, False)
    for k in range(silences):
        time.sleep(silence)
        send(count + k, True)
    conn.close()


def spawn_publisher(*args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--publisher", *map(str, args)])


async def wait_subscribed(url: str, channel: str) -> None:
    conn = redis.asyncio.Redis.from_url(url)
    try:
        while not dict(await conn.pubsub_numsub(channel)).get(channel.encode()):
            await asyncio.sleep(0.005)
    finally:
        await conn.aclose()


async def wait_process(proc: subprocess.Popen) -> None:
    while proc.poll() is None:
        await asyncio.sleep(0.01)
    if proc.returncode:
        raise RuntimeError(f"publisher exited with {proc.returncode}")


# --- receive rate ------------------------------------------------------------------------------
async def raw_rate(url: str, channel: str, total: int, decode: bool) -> float:
    conn = redis.asyncio.Redis.from_url(url)
    pubsub = conn.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    await wait_subscribed(url, channel)
    await wait_process(spawn_publisher("burst", url, channel, total))
    count = 0
    began = time.perf_counter()
    async for message in pubsub.listen():
        if decode:
            decode_message(message["data"], source=channel)
        count += 1
        if count == total:
            break
    elapsed = time.perf_counter() - began
    await pubsub.aclose()
    await conn.aclose()
    return total / elapsed


class Gate:
    """Holds the first element until opened, so the publisher can fill the buffer first."""

    def __init__(self):
        self.event = asyncio.Event()
        self.began = 0.0

    async def __call__(self, _x) -> None:
        await self.event.wait()

    def open(self) -> None:
        self.began = time.perf_counter()
        self.event.set()


async def from_pubsub_rate(url: str, channel: str, total: int) -> float:
    source = Stream.from_pubsub(channel, redis_url=url, asynchronous=True)
    gate = Gate()
    count = [0]

    def consume(_x):
        count[0] += 1
        if not gate.event.is_set():
            return gate.event.wait()  # awaited by the source: it stops reading
        return None

    source.sink(consume)
    source.start()
    await wait_subscribed(url, channel)
    await wait_process(spawn_publisher("burst", url, channel, total))
    gate.open()
    while count[0] < total:
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - gate.began
    await stop(source)
    return total / elapsed


class Trivial(Analyzer):
    """One result per message: SET with a TTL and PUBLISH (the gate holds the first message)."""

    def __init__(self, gate: Gate, **options):
        super().__init__(**options)
        self.gate = gate

    async def analyze(self, data):
        if not self.gate.event.is_set():
            await self.gate.event.wait()
        return [
            AnalyzerResult(
                data,
                cache_key=f"bench:last:{data['symbol']}",
                cache_ttl=60,
                publish_key="bench:scanner-out",
            )
        ]


async def scanner_rate(url: str, channel: str, total: int) -> float:
    gate = Gate()
    node = Stream.scanner(channel, Trivial(gate), redis_url=url, asynchronous=True)
    node.start()
    await wait_subscribed(url, channel)
    await wait_process(spawn_publisher("burst", url, channel, total))
    gate.open()
    while node.status()["processed"] < total:
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - gate.began
    await stop(node)
    return total / elapsed


async def stop(node) -> None:
    node.stop()
    while node.status()["state"] != "stopped":
        await asyncio.sleep(0.01)


# --- latency -----------------------------------------------------------------------------------
async def raw_latency(
    url: str, channel: str, count: int, rate: float, silence: float, silences: int
):
    conn = redis.asyncio.Redis.from_url(url)
    pubsub = conn.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    await wait_subscribed(url, channel)
    publisher = spawn_publisher("paced", url, channel, count, rate, silence, silences)
    steady, quiet = [], []
    async for message in pubsub.listen():
        now = time.monotonic()
        msg = decode_message(message["data"])
        (quiet if msg["quiet"] else steady).append(now - msg["t"])
        if len(quiet) == silences:
            break
    await wait_process(publisher)
    await pubsub.aclose()
    await conn.aclose()
    return np.array(steady) * 1000, np.array(quiet) * 1000


async def from_pubsub_latency(
    url: str, channel: str, count: int, rate: float, silence: float, silences: int
):
    source = Stream.from_pubsub(channel, redis_url=url, asynchronous=True)
    steady, quiet = [], []
    source.sink(lambda m: (quiet if m["quiet"] else steady).append(time.monotonic() - m["t"]))
    source.start()
    await wait_subscribed(url, channel)
    publisher = spawn_publisher("paced", url, channel, count, rate, silence, silences)
    while len(quiet) < silences:
        await asyncio.sleep(0.01)
    await wait_process(publisher)
    await stop(source)
    return np.array(steady) * 1000, np.array(quiet) * 1000


def pct(a: np.ndarray, q: float) -> float:
    return round(float(np.percentile(a, q)), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run (< 15 s)")
    parser.add_argument("-n", type=int, default=None, help="messages per receive-rate case")
    parser.add_argument("--repeat", type=int, default=None, help="rounds of rate cases (best kept)")
    args = parser.parse_args()
    total = args.n or (5_000 if args.quick else 100_000)
    args.repeat = args.repeat or (2 if args.quick else 3)
    lat_count, silence, silences = (500, 1.0, 2) if args.quick else (5_000, 5.0, 3)
    rate = 1_000
    directory = tempfile.mkdtemp(prefix="mdflow-bench-")
    server = RedisServer(
        port=0,
        unixsocket=os.path.join(directory, "r.sock"),
        directory=directory,
        extra_args=("--client-output-buffer-limit", "pubsub", "0", "0", "0"),
    )
    server.start()
    url = server.url
    r: dict[str, float] = {}
    try:
        cases = {
            "raw_listen_per_s": lambda: raw_rate(url, "bench:raw", total, decode=False),
            "raw_listen_decode_per_s": lambda: raw_rate(url, "bench:raw", total, decode=True),
            "from_pubsub_per_s": lambda: from_pubsub_rate(url, "bench:mdflow", total),
            "scanner_per_s": lambda: scanner_rate(url, "bench:scan", min(total, 20_000)),
        }
        for _ in range(args.repeat):  # interleaved rounds, best of each: the machine drifts
            for key, case in cases.items():
                r[key] = max(r.get(key, 0.0), asyncio.run(case()))
        for name, case in (("raw", raw_latency), ("from_pubsub", from_pubsub_latency)):
            steady, quiet = asyncio.run(
                case(url, f"bench:lat-{name}", lat_count, rate, silence, silences)
            )
            r[f"{name}_p50_ms"], r[f"{name}_p99_ms"] = pct(steady, 50), pct(steady, 99)
            r[f"{name}_first_after_silence_ms"] = pct(quiet, 50)  # median over the silences
            r[f"{name}_max_after_silence_ms"] = round(float(quiet.max()), 3)
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)

    r = {k: round(v, 3) for k, v in r.items()}
    raw, raw_decode = r["raw_listen_per_s"], r["raw_listen_decode_per_s"]
    ratio = {
        "from_pubsub_vs_raw_decode": round(r["from_pubsub_per_s"] / raw_decode, 3),
        "from_pubsub_vs_raw": round(r["from_pubsub_per_s"] / raw, 3),
        "scanner_vs_raw_decode": round(r["scanner_per_s"] / raw_decode, 3),
    }
    print(
        f"mdflow {mdflow.__version__}, redis-server {server.version}; rates: {total} messages "
        f"per case (scanner {min(total, 20_000)}), best of {args.repeat}; latency: {lat_count} "
        f"at {rate}/s; then {silences} x ({silence:g}s of silence, 1 message)"
    )
    print(f"{'receive rate':52s} {'msg/s':>10s}")
    for label, key in (
        ("raw PubSub.listen()", "raw_listen_per_s"),
        ("raw PubSub.listen() + decode_message", "raw_listen_decode_per_s"),
        ("from_pubsub -> sink", "from_pubsub_per_s"),
        ("scanner (trivial analyzer: SET EX + PUBLISH)", "scanner_per_s"),
    ):
        print(f"{label:52s} {r[key]:10,.0f}")
    print(
        f"{'latency @ 1000/s (ms)':40s} {'p50':>8s} {'p99':>8s} {'after silence':>14s} "
        f"{'(max)':>7s}"
    )
    for label, name in (("raw PubSub.listen()", "raw"), ("from_pubsub -> sink", "from_pubsub")):
        quiet, quiet_max = r[f"{name}_first_after_silence_ms"], r[f"{name}_max_after_silence_ms"]
        print(
            f"{label:40s} {r[f'{name}_p50_ms']:8.3f} {r[f'{name}_p99_ms']:8.3f} "
            f"{quiet:14.3f} {quiet_max:7.3f}"
        )
    for key, value in ratio.items():
        print(f"ratio {key:46s} {value:8.3f}")
    print(
        json.dumps(
            {
                "bench": "pubsub",
                "messages": total,
                "latency_messages": lat_count,
                "silence_s": silence,
                "silences": silences,
                **r,
                **ratio,
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--publisher":
        mode, url, channel, *rest = sys.argv[2:]
        if mode == "burst":
            publish_burst(url, channel, int(rest[0]))
        else:
            publish_paced(url, channel, int(rest[0]), float(rest[1]), float(rest[2]), int(rest[3]))
    else:
        main()
