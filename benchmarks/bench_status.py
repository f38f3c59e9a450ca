"""What publishing a graph's topology and status costs a per-element consumer: on beside off.

Usage::

    python benchmarks/bench_status.py            # 100k entries x 5 rounds (about a minute)
    python benchmarks/bench_status.py --quick    # a smoke run in seconds

A private ``redis-server`` is started for the run (unix socket, no
persistence) and one stream is pre-filled with ``--n`` entries. Each run reads
all of them with a new consumer group through ``from_redis -> map -> filter ->
sink`` in script mode (the source on streamz's loop thread) and is timed until
every entry is acknowledged, once with topology publishing off
(``set_publishing(False)``) and once on (``set_publishing(True)``), round by
round. The order inside a round alternates (off/on, on/off, ...), so the
machine's drift hits both alike, and each run starts after ``gc.collect()`` (a
full collection falling on every k-th run would otherwise alias with one mode).
Read the ratio of the medians (goal: on/off >= 0.97); the median of the
per-round ratios is printed too. Runs differ by a few per cent from one another
on a shared machine, so one 5-round result can miss by noise alone: more
``--rounds`` narrow it. ``--quick`` publishes every 0.02 s (its runs last ~0.1 s),
the full run at the publisher's own interval (1 s).

Publishing is proven to have been on: while each run goes, the main thread
reads every ``mdflow:topology:*`` key with a plain client (in both modes, so
both pay the same) and keeps the documents of this run's graph; the number of
SETs the server executed (``INFO commandstats``) during the timed part of each
run is counted too. An off run must see neither. Also printed: what building
one graph's documents costs the loop once per tick (status of every node, the
topology, masking, JSON), timed directly, and the share of the on runs' time
that many ticks would take. The last line printed is one JSON object with
every figure.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

import redis
from streamz import Stream

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench_streams import fill  # the same pre-filled entries as the streams benchmark

import mdflow
from mdflow.pictures import publish
from mdflow.pictures.publish import PATTERN, publisher, set_publishing
from mdflow.reservoir import RedisServer

GOAL = 0.97
TOPIC = "bench:status"
LOOK_EVERY = 0.1  # seconds between two reads of the published keys (both modes)


def sets_done(conn: redis.Redis) -> int:
    """How many SETs the server has executed (INFO commandstats; no MONITOR)."""
    stats = conn.info("commandstats")
    return int(stats.get("cmdstat_set", {}).get("calls", 0))


def documents_of(conn: redis.Redis, group: str) -> list[dict]:
    """Every published topology document whose graph reads ``TOPIC`` with ``group``."""
    out = []
    for key in conn.scan_iter(match=PATTERN, count=100):
        text = conn.get(key)
        if text is None:
            continue  # expired in between
        doc = json.loads(text)
        edges = doc.get("topology", {}).get("edges", [])
        if any(e.get("kind") == "read" and e.get("group") == group for e in edges):
            out.append(doc)
    return out


@dataclass
class Run:
    publishing: bool
    per_s: float
    sets: int  # SETs the server executed during the timed part of the run
    seen: int  # distinct publications of this run's graph the reader saw
    running_at_end: bool  # the key existed at the end, its source reading "running"


def consume(
    url: str, conn: redis.Redis, total: int, group: str, publishing: bool
) -> tuple[Run, Stream]:
    """One timed run: a new group reads all ``total`` entries; entries/s until all are acked.
    Also returns the (stopped) source."""
    set_publishing(publishing)
    source = Stream.from_redis(
        TOPIC,
        group=group,
        consumer="c",
        start_id="0",
        batch_size=100,
        max_inflight=10_000,
        redis_url=url,
    )
    count = [0]
    source.map(lambda m: m["px"] * 2).filter(lambda px: px > 0).sink(
        lambda _: count.__setitem__(0, count[0] + 1)
    )
    times: set[float] = set()
    # Every run starts from the same collector state: without this, a full collection
    # (~30 ms here) falls on every k-th run, which the alternation can alias with one mode.
    gc.collect()
    sets_before = sets_done(conn)
    began = time.perf_counter()
    look_at = began + LOOK_EVERY
    source.start()
    while source.status()["acked"] < total:
        time.sleep(0.005)
        if time.perf_counter() >= look_at:
            times.update(float(d["time"]) for d in documents_of(conn, group))
            look_at = time.perf_counter() + LOOK_EVERY
    elapsed = time.perf_counter() - began
    sets = sets_done(conn) - sets_before
    docs = documents_of(conn, group)
    times.update(float(d["time"]) for d in docs)
    running = any(
        n.get("status", {}).get("state") == "running"
        for d in docs
        for n in d["topology"]["nodes"].values()
        if n.get("kind") == "outlet"
    )
    source.stop()
    while source.status()["state"] != "stopped":
        time.sleep(0.01)
    if count[0] < total:
        raise RuntimeError(f"{group}: {count[0]} of {total} entries reached the sink")
    return Run(publishing, total / elapsed, sets, len(times), running), source


def tick_cost(source: Stream, repeat: int) -> tuple[float, int]:
    """µs the loop spends per tick building the documents of ``source``'s graph, as the
    publisher does (find the graph, every node's status, topology, masking, JSON); and the
    size of the document in bytes."""
    state = publish._LoopState()
    graph = publish._Graph("bench:0:0", time.time())
    size = 0
    began = time.perf_counter()
    for _ in range(repeat):
        for nodes, _sources in publish._components([source]):
            size = sum(len(text) for _url, _key, text in publisher._documents(state, graph, nodes))
    return (time.perf_counter() - began) / repeat * 1e6, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("-n", "--n", type=int, default=None, help="entries per run")
    parser.add_argument("--rounds", type=int, default=None, help="off/on pairs of runs")
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help="seconds between publications (default: the publisher's; --quick: 0.02)",
    )
    args = parser.parse_args()
    total = args.n or (3_000 if args.quick else 100_000)
    rounds = args.rounds or (2 if args.quick else 5)
    if args.interval is not None:
        publisher.interval = args.interval
    elif args.quick:
        publisher.interval = 0.02  # a quick run lasts ~0.1 s: publish within it
    directory = tempfile.mkdtemp(prefix="mdflow-bench-")
    server = RedisServer(port=0, unixsocket=os.path.join(directory, "r.sock"), directory=directory)
    server.start()
    url = server.url
    runs: list[tuple[Run, Run]] = []  # (off, on) per round
    try:
        fill(url, TOPIC, total)
        conn = redis.Redis.from_url(url)
        # A warm-up run (not counted): imports, connections, the loop thread.
        consume(url, conn, min(total, 1_000), "warm-up", publishing=False)
        for r in range(rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            done = {}
            for p in order:
                done[p], source = consume(url, conn, total, f"g{r}-{'on' if p else 'off'}", p)
                if p:
                    last_on = source  # the tick is timed on a graph that has run
                del source  # no run keeps an earlier graph alive
            runs.append((done[False], done[True]))
        tick_us, doc_bytes = tick_cost(last_on, 100 if args.quick else 1_000)
        conn.close()
    finally:
        set_publishing(None)
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)

    off = statistics.median(o.per_s for o, _ in runs)
    on = statistics.median(p.per_s for _, p in runs)
    ratio = on / off
    round_ratios = [round(p.per_s / o.per_s, 4) for o, p in runs]
    paired = statistics.median(round_ratios)
    publications = sum(p.sets for _, p in runs)
    seen = sum(p.seen for _, p in runs)
    off_sets = sum(o.sets for o, _ in runs) + sum(o.seen for o, _ in runs)
    proven = all(p.sets > 0 and p.seen > 0 and p.running_at_end for _, p in runs)
    print(
        f"mdflow {mdflow.__version__}, redis-server {server.version}; "
        f"from_redis -> map -> filter -> sink (script mode), {total} entries x {rounds} rounds, "
        f"publishing every {publisher.interval:g} s"
    )
    print(f"{'round':>5s} {'off /s':>12s} {'on /s':>12s} {'on/off':>8s} {'SETs':>5s} {'seen':>5s}")
    for r, ((o, p), rr) in enumerate(zip(runs, round_ratios, strict=True)):
        first = "off" if r % 2 == 0 else "on"
        print(
            f"{r + 1:>5d} {o.per_s:12,.0f} {p.per_s:12,.0f} {rr:8.3f} {p.sets:5d} {p.seen:5d}"
            f"  ({first} first)"
        )
    print(f"{'median':>5s} {off:12,.0f} {on:12,.0f} {ratio:8.3f}")
    print(f"publications during the on runs: {publications} SETs, {seen} seen by the reader")
    print(f"publications during the off runs: {off_sets} (must be 0)")
    print(f"one tick (build one graph's documents): {tick_us:.1f} µs ({doc_bytes} bytes of JSON)")
    on_seconds = sum(total / p.per_s for _, p in runs)
    estimate = publications * tick_us / 1e6 / on_seconds  # share of the on runs' time
    print(f"median of the per-round ratios: {paired:.3f}")
    print(
        f"estimated cost: {publications} ticks x {tick_us:.0f} µs in {on_seconds:.1f} s "
        f"of on runs = {estimate:.4%} (the SETs' round trips not counted)"
    )
    goal_met = ratio >= GOAL
    print(f"goal on/off >= {GOAL}: {'met' if goal_met else 'NOT met'} (ratio {ratio:.3f})")
    if not proven or off_sets:
        print("WARNING: publishing was not on in every on run, or not off in every off run")
    figures = {
        "bench": "status",
        "n": total,
        "rounds": rounds,
        "interval": publisher.interval,
        "off_per_s": round(off, 1),
        "on_per_s": round(on, 1),
        "ratio": round(ratio, 4),
        "round_ratios": round_ratios,
        "median_round_ratio": round(paired, 4),
        "publications": publications,
        "publications_seen": seen,
        "off_publications": off_sets,
        "publishing_proven": proven and not off_sets,
        "tick_us": round(tick_us, 1),
        "doc_bytes": doc_bytes,
        "estimated_overhead": round(estimate, 6),
        "goal_ratio": GOAL,
        "goal_met": goal_met,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
