"""Memory of one process draining a Redis stream through a sink 10x slower than the source.

Usage::

    python benchmarks/bench_memory.py             # 1M entries (about a minute or two)
    python benchmarks/bench_memory.py --quick     # 100k entries (seconds)
    python benchmarks/bench_memory.py -n 300000

A private ``redis-server`` is started for the run (unix socket, no
persistence, in a ``mdflow-bench-*`` temp dir removed at the end). The graph
runs in *script mode* (no ``asynchronous=True``: the nodes run on streamz's
IOLoop thread, the main thread only watches)::

    Stream.from_redis(topic) -> map -> sink(slow)

The source is the stream itself, **pre-filled** before the consumer starts
with plain pipelined XADD (``redis.Redis``, 1000 per round trip); the
producer's cost per entry is measured on that fill, and ``slow`` busy-waits
10x that cost per entry (``--factor``), so the backlog the process faces is
the whole stream. Why not a producer thread feeding ``Stream().to_redis``: in
script mode each ``emit`` is a hop onto streamz's IOLoop thread (~5k
emits/s, see ``bench_streams.py``), and that thread is the one the busy sink
keeps busy, so such a producer is starved (measured: ~2k entries/s) and never
outruns a sink meant to be 10x slower than it: the to_redis path would
dominate and there would be no backlog to hold in memory.

The process's RSS (``VmRSS`` of ``/proc/self/status``) is sampled before the
start and at every 5% of acknowledged entries. The warm-up (samples at 10%
and before) is excluded from ``rss_min_mb``/``rss_max_mb``;
``flat_pct = (max - min) / min * 100``. The last line printed is one JSON
object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import redis
from streamz import Stream

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench_streams import fill  # the same pre-filled entries as the streams benchmark

import mdflow
from mdflow.reservoir import RedisServer

TOPIC = "bench:mem"
STEP = 5  # percent of progress between RSS samples
WARM_UP = 10  # samples at or below this percent are excluded from min/max


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    raise RuntimeError("no VmRSS in /proc/self/status")


def prefill(url: str, total: int) -> float:
    """XADD ``total`` entries, pipelined by 1000; return the cost in µs per entry."""
    began = time.perf_counter()
    fill(url, TOPIC, total)  # (the streams benchmark's fill: the same entries)
    return (time.perf_counter() - began) / total * 1e6


def busy_sink(cost_us: float):
    cost = cost_us / 1e6

    def slow(_: object) -> None:
        end = time.perf_counter() + cost
        while time.perf_counter() < end:
            pass

    return slow


def drain(url: str, total: int, sink_us: float) -> tuple[list[dict], float]:
    """Run ``from_redis -> map -> sink(slow)`` over the backlog, sampling RSS every 5%."""
    source = Stream.from_redis(TOPIC, group="mem", consumer="c", start_id="0", redis_url=url)
    source.map(lambda m: m["px"] * 2).sink(busy_sink(sink_us))
    samples = [{"pct": 0, "acked": 0, "seconds": 0.0, "held": 0, "rss_mb": rss_mb()}]
    began = time.perf_counter()
    source.start()
    next_pct = STEP
    while next_pct <= 100:
        time.sleep(0.01)
        status = source.status()
        if status["state"] in ("failed", "stopped"):
            raise RuntimeError(f"from_redis {status['state']}: {status['failure']}")
        if status["acked"] * 100 >= next_pct * total:
            samples.append(
                {
                    "pct": next_pct,
                    "acked": status["acked"],
                    "seconds": round(time.perf_counter() - began, 2),
                    "held": status["held"],
                    "rss_mb": rss_mb(),
                }
            )
            next_pct += STEP
    elapsed = time.perf_counter() - began
    source.stop()
    while source.status()["state"] != "stopped":
        time.sleep(0.01)
    return samples, total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k entries: a smoke run")
    parser.add_argument("-n", type=int, default=None, help="entries (default 1M)")
    parser.add_argument(
        "--factor", type=float, default=10.0, help="sink cost / producer cost per entry"
    )
    args = parser.parse_args()
    total = args.n or (100_000 if args.quick else 1_000_000)
    directory = tempfile.mkdtemp(prefix="mdflow-bench-")
    server = RedisServer(port=0, unixsocket=os.path.join(directory, "r.sock"), directory=directory)
    try:
        server.start()
        rss_start = rss_mb()
        producer_us = prefill(server.url, total)
        sink_us = producer_us * args.factor
        samples, consume_per_s = drain(server.url, total, sink_us)
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)

    steady = [s["rss_mb"] for s in samples if s["pct"] > WARM_UP]
    low, high = min(steady), max(steady)
    flat_pct = (high - low) / low * 100
    print(
        f"mdflow {mdflow.__version__}, redis-py {redis.__version__}, "
        f"redis-server {server.version}; {total} entries pre-filled at "
        f"{producer_us:.2f} µs/entry; sink busy-waits {sink_us:.2f} µs/entry "
        f"({args.factor:g}x); from_redis -> map -> sink, script mode"
    )
    print(f"{'progress':>8s} {'acked':>10s} {'seconds':>8s} {'held':>6s} {'RSS MiB':>9s}")
    for s in samples:
        print(
            f"{s['pct']:7d}% {s['acked']:10d} {s['seconds']:8.2f} {s['held']:6d} {s['rss_mb']:9.1f}"
        )
    print(
        f"after warm-up (> {WARM_UP}%): RSS min {low:.1f} MiB, max {high:.1f} MiB, "
        f"flat_pct {flat_pct:.2f}%; consumed {consume_per_s:,.0f} entries/s "
        f"(source {1e6 / producer_us:,.0f}/s)"
    )
    print(
        json.dumps(
            {
                "bench": "memory",
                "entries": total,
                "mdflow": mdflow.__version__,
                "redis_py": redis.__version__,
                "redis_server": server.version,
                "hiredis": bool(redis.utils.HIREDIS_AVAILABLE),
                "producer_us": round(producer_us, 3),
                "sink_us": round(sink_us, 3),
                "factor": args.factor,
                "consume_per_s": round(consume_per_s, 1),
                "rss_start_mb": round(rss_start, 1),
                "rss_min_mb": round(low, 1),
                "rss_max_mb": round(high, 1),
                "flat_pct": round(flat_pct, 2),
                "samples": [[s["pct"], s["acked"], round(s["rss_mb"], 1)] for s in samples],
            }
        )
    )


if __name__ == "__main__":
    main()
