"""A sink 100x slower than the producer: the consumer's memory stays bounded (backpressure).

The producer writes 200k distinct entries at full speed (hiredis-packed XADD
pipelines of 1000, the fastest way to write from Python), timed: that gives
its cost per entry. A consumer *process* (so its RSS is its own) then drains
the stream: ``from_redis(batch=True) -> map -> async sink``, the sink paced to
100x the producer's cost per entry (it sleeps per batch until the consumer is
no faster than that). The whole stream is the backlog, so an outlet that read
ahead without bound would hold it in memory; it must hold at most
``max_inflight`` entries, and its RSS must stay flat:

    max RSS in the second half <= 1.1 x max RSS in the first quarter + 4 MiB

Test time is 200k x the sink's cost: with a producer at ~2-3 us/entry, 40-60 s.
On a machine so loaded that 100x would take more than :data:`SINK_BUDGET`
seconds, the sink's cost is capped there and the factor achieved is reported.
The figures are printed (``-s``) as one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import wait_for

from mdflow.reservoir import sync_client
from mdflow.reservoir.pipelines import send_commands

pytestmark = [pytest.mark.fault, pytest.mark.slow]

TOTAL = 200_000
FACTOR = 100.0  # the sink's cost per entry / the producer's
SINK_BUDGET = 60.0  # seconds: at most this much pacing in all (see the module docstring)
BATCH = 100
MAX_INFLIGHT = 1000
SLACK_MB = 4.0
# The 200k entries held at once would take far more (each a dict of three str: ~400 bytes,
# 80 MiB in all): growth above this means the outlet read ahead of the sink.
MAX_GROWTH_MB = 32.0

CONSUMER = textwrap.dedent("""
    import asyncio, json, os, sys, time
    from streamz import Stream
    import mdflow

    url, topic, total, sink_us, samples_path = sys.argv[1:6]
    total, sink_s = int(total), float(sink_us) / 1e6

    try:
        import psutil
        _me = psutil.Process()
        def rss():
            return _me.memory_info().rss
    except ImportError:
        _page = os.sysconf("SC_PAGE_SIZE")
        def rss():
            with open("/proc/self/statm") as statm:
                return int(statm.read().split()[1]) * _page

    async def main():
        outlet = Stream.from_redis(topic, group="slow", consumer="c", start_id="0",
                                   batch=True, batch_size=%(batch)d,
                                   max_inflight=%(max_inflight)d, redis_url=url,
                                   asynchronous=True)
        pace = {"began": None, "done": 0, "sum": 0}

        async def slow(batch):  # paced: never faster than sink_s per entry
            count, checksum = batch
            if pace["began"] is None:
                pace["began"] = time.monotonic()
            pace["done"] += count
            pace["sum"] += checksum
            delay = pace["began"] + pace["done"] * sink_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

        outlet.map(lambda b: (len(b), sum(int(m["n"]) for m in b))).sink(slow)
        with open(samples_path, "w") as out:
            def sample(**extra):
                status = outlet.status()
                row = {"t": round(time.monotonic(), 3), "acked": status["acked"],
                       "held": status["held"], "rss": rss(), "state": status["state"], **extra}
                out.write(json.dumps(row) + "\\n")
                out.flush()
                return status
            sample(phase="before")
            outlet.start()
            while True:
                status = sample()
                if status["acked"] >= total or status["state"] in ("failed", "stopped"):
                    break
                await asyncio.sleep(0.25)
            outlet.stop()
            while outlet.status()["state"] != "stopped":
                await asyncio.sleep(0.05)
            sample(phase="done", seen=pace["done"], checksum=pace["sum"],
                   failure=outlet.status()["failure"])

    asyncio.run(main())
""") % {"batch": BATCH, "max_inflight": MAX_INFLIGHT}


def produce(url: str, topic: str, total: int) -> float:
    """XADD ``total`` distinct entries at full speed; return the cost in µs per entry."""
    conn = sync_client(url)
    began = time.perf_counter()
    for start in range(0, total, 1000):
        commands = [
            ("XADD", topic, "*", "n", str(n), "px", "101.25", "sym", "BTC-USD")
            for n in range(start, min(total, start + 1000))
        ]
        replies = send_commands(conn, commands)
        errors = [r for r in replies if isinstance(r, Exception)]
        assert not errors, errors[:3]
    return (time.perf_counter() - began) / total * 1e6


def test_slow_sink_keeps_the_consumer_memory_bounded(redis_factory, tmp_path, isolated_env):
    server = redis_factory()
    topic = "slow:sink"
    producer_us = produce(server.url, topic, TOTAL)
    sink_us = min(FACTOR * producer_us, SINK_BUDGET / TOTAL * 1e6)
    factor = sink_us / producer_us
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    samples_path = tmp_path / "samples.jsonl"
    stderr_path = tmp_path / "consumer.err"

    def samples() -> list[dict]:
        if not samples_path.exists():
            return []
        lines = samples_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    with open(stderr_path, "w") as stderr:
        consumer = subprocess.Popen(
            [sys.executable, str(script), server.url, topic, str(TOTAL), str(sink_us),
             str(samples_path)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=isolated_env,
        )  # fmt: skip
        try:
            wait_for(
                lambda: (
                    consumer.poll() is not None or any(s.get("phase") == "done" for s in samples())
                ),
                timeout=SINK_BUDGET + 90,
                interval=0.5,
                message="the consumer to drain 200k entries",
            )
            consumer.wait(timeout=30)
        finally:
            if consumer.poll() is None:
                consumer.kill()
                consumer.wait()
    rows = samples()
    assert rows and rows[-1].get("phase") == "done", (rows[-3:], stderr_path.read_text()[-3000:])
    assert consumer.returncode == 0, stderr_path.read_text()[-3000:]
    final = rows[-1]
    assert final["failure"] is None and final["acked"] == TOTAL, final
    assert final["seen"] == TOTAL and final["checksum"] == TOTAL * (TOTAL - 1) // 2, final

    running = [r for r in rows if "phase" not in r]
    began = next(r["t"] for r in running if r["acked"] > 0)
    elapsed = final["t"] - began
    first_quarter = [r["rss"] for r in running if r["acked"] <= TOTAL // 4]
    second_half = [r["rss"] for r in running if r["acked"] > TOTAL // 2]
    mib = 1024 * 1024
    figures = {
        "entries": TOTAL,
        "producer_us": round(producer_us, 2),
        "sink_us": round(sink_us, 1),
        "factor": round(factor, 1),
        "consume_s": round(elapsed, 1),
        "consume_per_s": round(TOTAL / elapsed),
        "held_max": max(r["held"] for r in running),
        "rss_before_mib": round(rows[0]["rss"] / mib, 1),
        "rss_min_mib": round(min(r["rss"] for r in running) / mib, 1),
        "rss_max_mib": round(max(r["rss"] for r in running) / mib, 1),
        "rss_first_quarter_max_mib": round(max(first_quarter) / mib, 1),
        "rss_second_half_max_mib": round(max(second_half) / mib, 1),
        "samples": len(running),
    }
    print("\nslow sink memory:", json.dumps(figures))
    assert figures["held_max"] <= MAX_INFLIGHT, figures
    assert len(first_quarter) >= 5 and len(second_half) >= 5, figures
    bound = 1.1 * max(first_quarter) + SLACK_MB * mib
    assert max(second_half) <= bound, figures
    assert max(r["rss"] for r in running) <= rows[0]["rss"] + MAX_GROWTH_MB * mib, figures
