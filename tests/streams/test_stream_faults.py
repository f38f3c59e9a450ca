"""Faults: Redis restarts under a running pipeline; a consumer process killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import redis
from helpers import wait_for
from streamtools import async_wait_for, run, stop_and_wait
from streamz import Stream

from mdflow.codecs import decode_entry, encode_entry

pytestmark = [pytest.mark.fault, pytest.mark.slow]


def test_pipeline_survives_redis_restart(redis_factory, prefix):
    """engine -> Redis -> from_redis -> to_redis while the server is killed and restarted."""
    server = redis_factory(appendonly=True)
    url = server.url
    src, dst = prefix + "in", prefix + "out"
    produced = iter(range(10_000))

    async def body():
        pump = Stream.engine(
            src, lambda: {"n": next(produced)}, push_interval=0.01, redis_url=url, asynchronous=True
        )
        outlet = Stream.from_redis(
            src, group="g", consumer="c", start_id="0", block=0.1, redis_url=url, asynchronous=True
        )
        outlet.map(lambda m: m["n"]).to_redis(dst, redis_url=url)
        pump.start()
        outlet.start()
        await async_wait_for(lambda: outlet.status()["acked"] >= 20, message="flow before crash")
        server.kill()
        await asyncio.sleep(2.0)  # longer than redis-py's own retries ride out
        await asyncio.get_running_loop().run_in_executor(None, server.start)
        await async_wait_for(
            lambda: (
                outlet.status()["acked"] >= pump.status()["written"] - 5
                and pump.status()["written"] > 60
            ),
            timeout=30,
            message="flow after restart",
        )
        await stop_and_wait(pump)
        written = pump.status()["written"]
        await async_wait_for(
            lambda: outlet.status()["acked"] >= written, timeout=30, message="drain"
        )
        await stop_and_wait(outlet)
        return pump.status(), outlet.status()

    pump_status, outlet_status = run(body, timeout=90)
    assert outlet_status["reconnects"] >= 1 and pump_status["reconnects"] >= 1
    plain = redis.Redis.from_url(url)
    sent = {decode_entry(f)["n"] for _, f in plain.xrange(src)}
    copied = {decode_entry(f) for _, f in plain.xrange(dst)}
    assert sent <= copied, f"lost after restart: {sorted(sent - copied)[:10]}"
    assert plain.xpending(src, "g")["pending"] == 0
    plain.close()


CONSUMER = textwrap.dedent("""
    import asyncio, sys
    from streamz import Stream
    import mdflow

    url, src, dst = sys.argv[1:4]

    async def main():
        outlet = Stream.from_redis(src, group="g", consumer="worker", start_id="0",
                                   batch_size=20, redis_url=url, asynchronous=True)

        async def slow(x):
            await asyncio.sleep(0.002)
            return x

        outlet.map_async(slow).to_redis(dst, redis_url=url)
        outlet.start()
        while True:
            await asyncio.sleep(1)

    asyncio.run(main())
""")


def test_consumer_killed_with_sigkill_loses_nothing(redis_url, prefix, tmp_path):
    src, dst = prefix + "in", prefix + "out"
    total = 2000
    plain = redis.Redis.from_url(redis_url)
    pipe = plain.pipeline()
    for n in range(total):
        pipe.xadd(src, encode_entry(n))
    pipe.execute()
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)

    def start():
        return subprocess.Popen(
            [sys.executable, str(script), redis_url, src, dst],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    worker = start()
    wait_for(lambda: plain.xlen(dst) >= 300, timeout=60, message="progress before the kill")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    worker.stderr.close()
    at_kill = plain.xlen(dst)
    assert at_kill < total, "the consumer finished before it could be killed"
    worker = start()
    try:

        def all_done():
            seen = {decode_entry(f) for _, f in plain.xrange(dst)}
            return len(seen) == total and plain.xpending(src, "g")["pending"] == 0

        wait_for(all_done, timeout=90, interval=0.2, message="every entry after restart")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        worker.stderr.close()
    copies = [decode_entry(f) for _, f in plain.xrange(dst)]
    assert set(copies) == set(range(total))
    plain.close()
