"""Fault: a consumer process SIGKILLed at random moments, again and again, and restarted.

A live producer writes 50 000 numbered entries while a consumer *process* runs
``from_redis -> rate_limit -> buffer -> partition -> async sink`` (the sink RPUSHes
what it received to a results list) under ``mdflow.run``. It is SIGKILLed at
seeded random moments (at least ten times) and restarted with the same consumer
name, so each new process replays its own pending entries first. At the end a
SIGTERM stops the last one gracefully (the last partitions are flushed and
acknowledged). Afterwards every entry reached the sink, nothing is pending, no
entry was dead-lettered, and the duplicates are bounded by ``max_inflight`` per kill.

The one-line summary (kills, duplicates, time to resume after each restart) is
printed; see it with ``pytest -s tests/faults/test_consumer_kills.py``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from helpers import finish, wait_for

from mdflow.codecs import encode_entry

pytestmark = [pytest.mark.fault, pytest.mark.slow]

TOTAL = 50_000
MAX_INFLIGHT = 200
KILLS = 12
SEED = 14
TAIL = 2500  # entries written only after the last restart
CHUNK = 500  # entries per producer pipeline
CHUNK_PAUSE = 0.1  # seconds between producer chunks: ~10 s of live production

CONSUMER = textwrap.dedent("""
    import json, sys, time
    from streamz import Stream
    import mdflow
    from mdflow.reservoir import client

    url, src, results, incarnation, max_inflight = sys.argv[1:6]
    ready = time.time()  # imports done
    outlet = Stream.from_redis(
        src, group="g", consumer="worker", start_id="0", batch_size=50,
        max_inflight=int(max_inflight), block=0.2, redis_url=url,
    )

    async def record(batch):
        row = [int(incarnation), ready, time.time(), [m["n"] for m in batch]]
        await client(url).rpush(results, json.dumps(row))

    outlet.rate_limit(0.00002).buffer(50).partition(20, timeout=0.2).sink(record)
    mdflow.run(outlet, grace=10)
""")


@dataclass
class Results:
    """What the sinks of all incarnations wrote, read incrementally from the results list."""

    conn: redis.Redis
    key: str
    read: int = 0
    counts: Counter[int] = field(default_factory=Counter)
    first_output: dict[int, float] = field(default_factory=dict)
    ready: dict[int, float] = field(default_factory=dict)

    def poll(self) -> Results:
        for raw in self.conn.lrange(self.key, self.read, -1):
            self.read += 1
            incarnation, ready, at, numbers = json.loads(raw)
            self.first_output.setdefault(incarnation, at)
            self.ready.setdefault(incarnation, ready)
            self.counts.update(numbers)
        return self

    @property
    def distinct(self) -> int:
        return len(self.counts)


class Producer(threading.Thread):
    """Writes ``TOTAL`` numbered entries in paced pipelines while the consumer runs.

    The last ``TAIL`` wait for ``release``: written only once the last consumer process
    runs, so that one surely has work to show it resumed before its graceful stop.
    """

    def __init__(self, url: str, topic: str):
        super().__init__(daemon=True)
        self.url, self.topic = url, topic
        self.halt = threading.Event()
        self.release = threading.Event()
        self.written = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        conn = redis.Redis.from_url(self.url)
        try:
            while self.written < TOTAL and not self.halt.is_set():
                if self.written >= TOTAL - TAIL:
                    self.release.wait()
                pipe = conn.pipeline(transaction=False)
                upto = min(TOTAL, self.written + CHUNK)
                for n in range(self.written, upto):
                    pipe.xadd(self.topic, encode_entry({"n": n}))
                pipe.execute()
                self.written = upto
                self.halt.wait(CHUNK_PAUSE)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            conn.close()


class Consumers:
    """Start consumer processes (one at a time), kill them, remember when each started."""

    def __init__(self, script: Path, url: str, src: str, results: str, env: dict, logs: Path):
        self.script, self.url, self.src, self.results = script, url, src, results
        self.env, self.logs = env, logs
        self.process: subprocess.Popen | None = None
        self.spawned: dict[int, float] = {}
        self.incarnation = -1

    def spawn(self) -> None:
        self.incarnation += 1
        log = open(self.logs / f"consumer-{self.incarnation}.log", "w")
        args = [self.script, self.url, self.src, self.results, self.incarnation, MAX_INFLIGHT]
        self.spawned[self.incarnation] = time.time()
        self.process = subprocess.Popen(
            [sys.executable, *map(str, args)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
            env=self.env,
        )
        log.close()  # the child has its own descriptor

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        path = self.logs / f"consumer-{self.incarnation}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def test_consumer_sigkilled_repeatedly_loses_nothing(redis_factory, prefix, tmp_path, isolated_env):
    server = redis_factory()
    url = server.url
    src, results = prefix + "in", prefix + "results"
    conn = redis.Redis.from_url(url)
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    consumers = Consumers(script, url, src, results, isolated_env, tmp_path)
    producer = Producer(url, src)
    seen = Results(conn, results)
    rng = random.Random(SEED)
    # Kill points in terms of progress, so every kill lands mid-flow however fast the machine
    # is; each kill comes a random moment after the new process produced its first output.
    thresholds = sorted(rng.sample(range(TOTAL // 25, TOTAL * 4 // 5), KILLS))
    held_at_kill: list[int] = []

    def pending() -> int:
        return int(conn.xpending(src, "g")["pending"])

    try:
        producer.start()
        consumers.spawn()
        for threshold in thresholds:
            incarnation = consumers.incarnation

            def due(i: int = incarnation, t: int = threshold) -> bool:
                if seen.poll().distinct < t:
                    return False
                # It resumed; or there is nothing left for it to do (the producer holds back
                # its tail and everything written was taken): then the kill is "idle". While
                # the producer still writes, always wait for the new process's first output:
                # between two chunks a caught-up consumer can have nothing pending for an
                # instant, and a kill then would land on a process still importing.
                if i in seen.first_output:
                    return True
                parked = producer.written >= TOTAL - TAIL
                return parked and seen.distinct >= producer.written and pending() == 0

            wait_for(
                due,
                timeout=60,
                interval=0.02,
                message=f"consumer {incarnation} to pass {threshold} entries "
                f"(got {seen.distinct}); its log: {consumers.log_tail()}",
            )
            time.sleep(rng.uniform(0.0, 0.5))
            held = pending()  # (may still shrink before the kill lands: an upper bound)
            consumers.kill()
            held_at_kill.append(held)
            consumers.spawn()
        producer.release.set()
        producer.join(timeout=60)
        assert producer.error is None, producer.error
        assert producer.written == TOTAL
        wait_for(
            lambda: seen.poll().distinct == TOTAL,
            timeout=60,
            interval=0.05,
            message=f"every entry at the sink (got {seen.distinct}); log: {consumers.log_tail()}",
        )
        last = consumers.incarnation
        wait_for(lambda: last in seen.poll().first_output, timeout=30, message="last resumed")
        consumers.process.send_signal(signal.SIGTERM)  # graceful: flush windows, acks
        code, _, _ = finish(consumers.process, timeout=60)
        assert code == 0, consumers.log_tail()
    finally:
        producer.halt.set()
        producer.release.set()
        consumers.kill()
        producer.join(timeout=10)

    seen.poll()
    assert set(seen.counts) == set(range(TOTAL)), (
        f"missing: {sorted(set(range(TOTAL)) - set(seen.counts))[:10]}"
    )
    assert pending() == 0
    assert conn.xlen(src + ":dead") == 0, "entries were dead-lettered"
    assert [c["name"] for c in conn.xinfo_consumers(src, "g")] == [b"worker"]
    kills = len(held_at_kill)
    mid_flow = sum(1 for held in held_at_kill if held)
    assert kills >= 10 and mid_flow >= 10, held_at_kill
    duplicates = sum(seen.counts.values()) - TOTAL
    assert duplicates <= kills * MAX_INFLIGHT, (duplicates, kills)

    # (an idle kill's process may never have written anything: no resume time for it)
    resumed = [i for i in range(1, last + 1) if i in seen.first_output]
    resume = [seen.first_output[i] - consumers.spawned[i] for i in resumed]
    imports = [seen.ready[i] - consumers.spawned[i] for i in resumed]
    print(
        f"\nconsumer kills: kills={kills} entries={TOTAL} max_inflight={MAX_INFLIGHT} "
        f"duplicates={duplicates} (bound {kills * MAX_INFLIGHT}, "
        f"{duplicates / kills:.1f}/kill) pending=0 dead=0 idle_kills={kills - mid_flow}; "
        f"pending at each kill "
        f"{held_at_kill}; time to resume after restart "
        f"(spawn -> first sink output): median {statistics.median(resume):.2f}s "
        f"max {max(resume):.2f}s, of which python+imports median "
        f"{statistics.median(imports):.2f}s; each: {' '.join(f'{r:.2f}' for r in resume)}"
    )
    conn.close()
