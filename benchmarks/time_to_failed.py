"""How long a node takes to give up on what retrying cannot fix, and how long a graceful stop takes.

Usage::

    python benchmarks/time_to_failed.py

Starts two private ``redis-server`` processes (one with ``requirepass``), then,
for a wrong password, a missing password, an ACL user without stream commands
(NOPERM), a key of the wrong type and a ``start_id`` Redis rejects, starts a
``from_redis`` and an ``engine`` and times ``start()`` until ``status()["state"]
== "failed"`` (the issue's goal: within a second). It also times
``Runner.stop(grace=10)`` of a running engine -> from_redis -> sink pipeline.
Prints a table, then one JSON line with every figure. Not a speed comparison
with redis-py: there is no redis-py equivalent of "give up and say why".
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("MDFLOW_KEEP_ALIVE", "0")

import redis
from streamz import Stream

import mdflow
from mdflow.reservoir import RedisServer


def time_to_failed(node: Stream, timeout: float = 10.0) -> float:
    began = time.monotonic()
    node.start()
    while node.status()["state"] != "failed":
        if time.monotonic() - began > timeout:
            node.stop()
            return float("inf")
        time.sleep(0.001)
    elapsed = time.monotonic() - began
    node.stop()
    return elapsed


def main() -> None:
    logging.disable(logging.CRITICAL)  # the one error line per node is the point, not here
    locked = RedisServer(extra_args=("--requirepass", "pw")).start()
    plain = RedisServer().start()
    try:
        conn = redis.Redis.from_url(plain.url)
        conn.execute_command(
            "ACL", "SETUSER", "bench", "on", ">pw", "~*", "+ping", "+type", "+client|setname"
        )
        conn.set("a-string", "not a stream")
        cases = {
            "wrong password": (locked.url.replace("redis://", "redis://:bad@"), "s", "$"),
            "missing password": (locked.url, "s", "$"),
            "NOPERM user": (plain.url.replace("redis://", "redis://bench:pw@"), "s", "$"),
            "WRONGTYPE": (plain.url, "a-string", "$"),
            "start_id Redis rejects": (plain.url, "s2", "99999999999999999999999-0"),
        }
        figures: dict[str, float] = {}
        print(f"{'cause':24s} {'node':11s} seconds to 'failed'")
        for cause, (url, topic, start_id) in cases.items():
            kinds = ["from_redis"] + (["engine"] if start_id == "$" else [])
            for kind in kinds:
                node = (
                    Stream.from_redis(topic, group="g", start_id=start_id, redis_url=url)
                    if kind == "from_redis"
                    else Stream.engine(topic, push_interval=0.05, redis_url=url)
                )
                seconds = time_to_failed(node)
                figures[f"{cause} / {kind}"] = round(seconds, 4)
                print(f"{cause:24s} {kind:11s} {seconds:.4f}")
        pump = Stream.engine("flow", push_interval=0.01, redis_url=plain.url)
        source = Stream.from_redis("flow", group="g", start_id="0", redis_url=plain.url)
        source.sink(lambda x: None)
        runner = mdflow.Runner(pump, source, grace=10).start()
        time.sleep(2)
        began = time.monotonic()
        runner.stop()
        figures["graceful stop of a running pipeline"] = round(time.monotonic() - began, 4)
        print(f"graceful stop (engine -> from_redis -> sink): {time.monotonic() - began:.4f} s")
        print(json.dumps({"time_to_failed": figures}))
    finally:
        locked.cleanup()
        plain.cleanup()


if __name__ == "__main__":
    main()
