"""Feed faults: exchanges stall, drop connections, send garbage and go away for good.

Four simulated exchanges feed four collectors under one ``CollectorManager``; every
collector writes its tickers into a Redis stream of its own (``collector -> to_redis``)
on a real server, and the manager publishes its status there. Two exchanges are left
alone ("calm"). The other two get faults at random (seeded) while the calm ones keep
flowing: stalls longer than ``max_silence``, dropped connections, bursts of garbage
frames; one of them ("doomed") then goes away for good.

What must hold: every fault on "flaky" is reported (silence, connection error, parse
errors counted exactly) and followed by data again; the calm collectors are never
restarted and their data keeps arriving in Redis during the faults; "doomed" ends
``failed`` -- in the manager, in its health issues and in the status hash in Redis --
however often the manager restarts it. The figures (recovery times, the calm streams'
largest gap) are measured and printed, never asserted: the machine may be loaded.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass, field

import pytest
import redis
import redis.asyncio
from streamtools import async_wait_for, run
from streamz import Stream
from tornado.ioloop import IOLoop

from mdflow.codecs import decode_entry
from mdflow.collectors import (
    CollectorManager,
    CollectorState,
    SimulatedExchange,
    published_status,
)
from mdflow.marketdata import DataType, MarketDataPoint

pytestmark = [pytest.mark.fault, pytest.mark.slow]

SEED = 1414
TICK = 0.05  # seconds between an exchange's market ticks
MAX_SILENCE = 1.0
NODE_OPTIONS = dict(
    heartbeat_interval=0.05, max_silence=MAX_SILENCE, backoff=(0.1, 0.5), max_restarts=3
)
FEEDS = {
    "calm-a": ["BTC-USDT"],
    "calm-b": ["ETH-USDT"],
    "flaky": ["SOL-USDT", "DOGE-USDT"],
    "doomed": ["XRP-USDT"],
}
CALM = ("calm-a", "calm-b")
# Faults in a random (seeded) order: each kind at least twice on "flaky".
FLAKY_FAULTS = ["stall", "stall", "stall", "drop", "drop", "drop", "garbage", "garbage"]
DOOMED_FAULTS = ["stall", "drop", "garbage"]
WAIT = 30.0  # generous: the machine may be loaded


@dataclass
class Fault:
    exchange: str
    kind: str
    started: float  # monotonic time of the injection
    ended: float = 0.0  # when the fault itself was over (a stall's end; else = started)
    detected: float | None = None  # seconds from injection until the node noticed
    recovered: float | None = None  # seconds from the fault's end until data flowed again
    size: float = 0.0  # stall seconds or garbage frames
    last_error: str | None = None  # the collector's last_error when it noticed
    issues: set[str] = field(default_factory=set)  # health issues sampled while it lasted
    calm_growth: dict[str, int] = field(default_factory=dict)  # calm entries meanwhile


def stats(node) -> dict:
    return node.get_status()["statistics"]


def make_node(ex: SimulatedExchange, name: str):
    feed = ex.collector(exchange=name, data_types=["ticker"])
    return Stream.collector(feed, asynchronous=True, loop=IOLoop.current(), **NODE_OPTIONS)


class World:
    """The exchanges, their supervised collectors and the writers into Redis."""

    def __init__(self, redis_url: str, prefix: str):
        self.url = redis_url
        self.prefix = prefix
        self.conn = redis.asyncio.Redis.from_url(redis_url)  # reads on the loop: never block it
        self.exchanges = {
            name: SimulatedExchange(symbols, interval=TICK, seed=SEED + i)
            for i, (name, symbols) in enumerate(FEEDS.items())
        }
        self.nodes: dict = {}
        self.writers: list = []
        self.manager = CollectorManager(
            prefix + "desk",
            global_health_check_interval=0.1,
            restart_delay=0.5,
            redis_url=redis_url,
        )
        self.faults: list[Fault] = []
        self.calm_states: dict[str, set[str]] = {name: set() for name in CALM}
        # (monotonic time, collector, health issues) whenever a collector had some
        self.issues: list[tuple[float, str, list[str]]] = []

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    async def start(self) -> None:
        for name, ex in self.exchanges.items():
            await ex.start()
            node = make_node(ex, name)
            self.writers.append(node.to_redis(self.topic(name), redis_url=self.url))
            self.nodes[name] = node
            self.manager.add_collector(node, name=name)
        await self.manager.start()
        for name, node in self.nodes.items():
            await async_wait_for(
                lambda n=node: stats(n)["points_emitted"] >= 5, WAIT, message=f"{name} flows"
            )

    async def stop(self) -> None:
        try:
            await self.manager.stop()
            for writer in self.writers:
                await writer.flush()
        finally:
            for ex in self.exchanges.values():
                await ex.stop()
            await self.conn.aclose()

    async def length(self, name: str) -> int:
        return await self.conn.xlen(self.topic(name))

    async def lengths(self, names) -> dict[str, int]:
        return {name: await self.length(name) for name in names}

    async def published(self) -> dict:
        """:func:`published_status`, off the loop (it is synchronous)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, published_status, self.manager.name, self.url)

    async def sample(self, done: asyncio.Event) -> None:
        """Until ``done``: the calm collectors' states, and every health issue of anyone."""
        while not done.is_set():
            now = time.monotonic()
            for name, node in self.nodes.items():
                if name in CALM:
                    self.calm_states[name].add(node.state.value)
                issues = node.get_health_status()["issues"]
                if issues:
                    self.issues.append((now, name, issues))
            await asyncio.sleep(0.01)

    def issues_between(self, name: str, start: float, end: float) -> set[str]:
        return {i for t, n, found in self.issues if n == name and start <= t <= end for i in found}

    # --- faults -----------------------------------------------------------------------------
    async def inject(self, name: str, kind: str, rng: random.Random) -> Fault:
        ex, node = self.exchanges[name], self.nodes[name]
        before = stats(node)
        calm_before = await self.lengths(CALM)
        fault = Fault(name, kind, started=time.monotonic())
        if kind == "stall":
            fault.size = round(rng.uniform(1.5, 2.5) * MAX_SILENCE, 2)
            ex.stall(fault.size)
            await async_wait_for(
                lambda: stats(node)["silences"] > before["silences"],
                WAIT,
                message=f"{name}: the stall noticed as silence",
            )
            fault.detected = time.monotonic() - fault.started
            # the session ends (disconnect) before the silence is recorded as the last error
            await async_wait_for(
                lambda: stats(node)["connection_errors"] > before["connection_errors"],
                WAIT,
                message=f"{name}: the silence recorded",
            )
            fault.last_error = stats(node)["last_error"]
            await async_wait_for(lambda: not ex.stats["stalled"], WAIT, message="stall over")
        elif kind == "drop":
            ex.drop_connections()
            await async_wait_for(
                lambda: stats(node)["connection_errors"] > before["connection_errors"],
                WAIT,
                message=f"{name}: the drop noticed",
            )
            fault.detected = time.monotonic() - fault.started
            fault.last_error = stats(node)["last_error"]
        else:
            fault.size = rng.randint(5, 40)
            ex.send_garbage(int(fault.size))
            await async_wait_for(
                lambda: stats(node)["parse_errors"] >= before["parse_errors"] + fault.size,
                WAIT,
                message=f"{name}: {fault.size} garbage frames counted",
            )
            fault.detected = time.monotonic() - fault.started
        # (stall() counts its seconds from the call, on the same monotonic clock)
        fault.ended = fault.started + fault.size if kind == "stall" else fault.started
        emitted = stats(node)["points_emitted"]
        await async_wait_for(
            lambda: (
                node.state is CollectorState.RUNNING and stats(node)["points_emitted"] > emitted
            ),
            WAIT,
            message=f"{name}: data again after the {kind}",
        )
        now = time.monotonic()
        fault.recovered = now - fault.ended
        fault.issues = self.issues_between(name, fault.started, now)
        calm_after = await self.lengths(CALM)
        fault.calm_growth = {c: calm_after[c] - calm_before[c] for c in CALM}
        self.faults.append(fault)
        return fault

    async def schedule(self, name: str, kinds: list[str], rng: random.Random) -> None:
        for kind in kinds:
            await asyncio.sleep(rng.uniform(0.2, 0.6))  # the schedule, not a wait for a condition
            await self.inject(name, kind, rng)

    async def go_away(self, name: str) -> dict:
        """Stop the exchange for good; wait until its collector is FAILED everywhere it shows."""
        node = self.nodes[name]
        calm_before = await self.lengths(CALM)
        started = time.monotonic()
        await self.exchanges[name].stop()
        await async_wait_for(
            lambda: node.state is CollectorState.FAILED, WAIT, message=f"{name} FAILED"
        )
        first_failed = time.monotonic() - started
        # The manager restarts a failed collector after restart_delay; the exchange stays
        # away, so each restart ends FAILED again.
        await async_wait_for(
            lambda: (
                self.manager.get_collector_status(name)["manager_restarts"] >= 2
                and node.state is CollectorState.FAILED
            ),
            WAIT,
            message=f"{name} FAILED again after two restarts by the manager",
        )
        view = self.manager.get_status()
        health = node.get_health_status()

        async def published_failed():
            snapshot = await self.published()
            return snapshot if snapshot.get(name, {}).get("status") == "failed" else None

        snapshot = await async_wait_for(published_failed, WAIT, message="published: failed")
        calm_after = await self.lengths(CALM)
        return {
            "first_failed_s": first_failed,
            "view": view,
            "health": health,
            "published": snapshot,
            "calm_growth": {c: calm_after[c] - calm_before[c] for c in CALM},
        }


def entry_times(rdb: redis.Redis, topic: str) -> list[tuple[float, MarketDataPoint]]:
    """(Redis arrival time in s, point) of every entry of ``topic``."""
    out = []
    for entry_id, fields in rdb.xrange(topic):
        ms = int(entry_id.split(b"-")[0])
        out.append((ms / 1000.0, decode_entry(fields)))
    return out


def largest_gap(times: list[float], start: float, end: float) -> float:
    inside = [t for t in times if start <= t <= end]
    return max((b - a for a, b in itertools.pairwise(inside)), default=float("inf"))


def test_feed_faults_are_survived_and_reported(redis_url, prefix):
    rng = random.Random(SEED)
    flaky_faults = rng.sample(FLAKY_FAULTS, len(FLAKY_FAULTS))
    doomed_faults = rng.sample(DOOMED_FAULTS, len(DOOMED_FAULTS))
    world = World(redis_url, prefix)

    async def body():
        done = asyncio.Event()
        watcher = None
        try:
            await world.start()
            watcher = asyncio.ensure_future(world.sample(done))
            fault_start = time.time()
            flaky = asyncio.ensure_future(
                world.schedule("flaky", flaky_faults, random.Random(f"{SEED}:flaky"))
            )
            await world.schedule("doomed", doomed_faults, random.Random(f"{SEED}:doomed"))
            gone = await world.go_away("doomed")
            await flaky
            fault_end = time.time()
            # data on the calm (and the recovered flaky) feeds after all the faults
            after = await world.lengths((*CALM, "flaky"))

            async def more_data():
                now = await world.lengths(after)
                return all(now[n] > after[n] for n in after)

            await async_wait_for(more_data, WAIT, message="data after the faults")
            final = {n: world.manager.get_collector_status(n) for n in world.nodes}

            async def published_counts():
                snapshot = await world.published()
                flaky = snapshot.get("flaky", {}).get("statistics", {})
                counts = stats(world.nodes["flaky"])
                keys = ("parse_errors", "silences", "connection_errors")
                return snapshot if all(flaky.get(k) == counts[k] for k in keys) else None

            snapshot = await async_wait_for(published_counts, WAIT, message="published counts")
            return gone, final, snapshot, (fault_start, fault_end)
        finally:
            done.set()
            if watcher is not None:
                await asyncio.wait({watcher})
            await world.stop()

    gone, final, snapshot, (fault_start, fault_end) = run(body, timeout=110)

    # --- the figures ------------------------------------------------------------------------
    rdb = redis.Redis.from_url(redis_url)
    try:
        streams = {name: entry_times(rdb, world.topic(name)) for name in FEEDS}
    finally:
        rdb.close()
    gaps = {
        name: largest_gap([t for t, _ in streams[name]], fault_start, fault_end) for name in CALM
    }
    print(f"\nfeed faults (seed {SEED}), fault phase {fault_end - fault_start:.1f}s")
    for f in world.faults:
        print(
            f"  {f.exchange:7} {f.kind:8} size={f.size:<6g} detected after {f.detected:.2f}s, "
            f"data again {f.recovered:.2f}s after it ended; calm entries meanwhile "
            f"{f.calm_growth}"
        )
    print(
        f"  doomed gone: FAILED after {gone['first_failed_s']:.2f}s, manager restarts "
        f"{final['doomed']['manager_restarts']}, calm entries meanwhile {gone['calm_growth']}"
    )
    print(f"  calm streams' largest gap during the faults: {gaps}")
    print(f"  calm states seen: {world.calm_states}")
    print(
        "  garbage counted: "
        + ", ".join(f"{n}={final[n]['statistics']['parse_errors']}" for n in FEEDS)
    )

    # --- every fault was noticed, reported and recovered from ------------------------------
    kinds = [f.kind for f in world.faults if f.exchange == "flaky"]
    assert sorted(kinds) == sorted(FLAKY_FAULTS)
    assert all(f.recovered is not None for f in world.faults)
    for f in world.faults:
        if f.kind == "stall":
            assert "DataSilence: no data for" in f.last_error, f
        if f.kind == "drop":
            assert "ConnectionClosed" in f.last_error, f
    # health shows the trouble while it lasts (sampled: a backoff is short, so over all faults)
    stall_issues = set().union(*(f.issues for f in world.faults if f.kind == "stall"))
    drop_issues = set().union(*(f.issues for f in world.faults if f.kind == "drop"))
    assert any("restarting" in i and "DataSilence" in i for i in stall_issues), stall_issues
    assert any("restarting" in i and "ConnectionClosed" in i for i in drop_issues), drop_issues
    flaky = final["flaky"]["statistics"]
    n_stalls, n_drops = kinds.count("stall"), kinds.count("drop")
    garbage = sum(
        int(f.size) for f in world.faults if f.exchange == "flaky" and f.kind == "garbage"
    )
    assert flaky["parse_errors"] == garbage, "every garbage frame counted, nothing else"
    assert flaky["silences"] >= n_stalls
    assert flaky["connection_errors"] >= n_stalls + n_drops
    assert flaky["restarts"] >= n_stalls + n_drops
    assert final["flaky"]["status"] == "running"
    assert final["flaky"]["manager_restarts"] == 0, "the node recovered by itself"
    published_flaky = snapshot["flaky"]["statistics"]
    assert published_flaky["parse_errors"] == garbage
    assert published_flaky["silences"] == flaky["silences"]

    # --- the calm feeds were never touched and kept flowing --------------------------------
    for name in CALM:
        s = final[name]["statistics"]
        assert final[name]["status"] == "running" and final[name]["manager_restarts"] == 0
        assert s["restarts"] == s["connection_errors"] == s["silences"] == s["parse_errors"] == 0
        assert world.calm_states[name] == {"running"}, world.calm_states
    for f in world.faults:
        if f.kind == "stall":  # a stall lasts longer than max_silence: calm data meanwhile
            assert all(g > 0 for g in f.calm_growth.values()), f
    assert all(g > 0 for g in gone["calm_growth"].values()), gone["calm_growth"]
    for name in FEEDS:
        points = [p for _, p in streams[name]]
        assert points and all(isinstance(p, MarketDataPoint) for p in points)
        assert {p.exchange for p in points} == {name}
        assert {p.data_type for p in points} == {DataType.TICKER}
        assert {p.symbol for p in points} == set(FEEDS[name])

    # --- the exchange that went away ends failed, and says so ------------------------------
    view, health, published = gone["view"], gone["health"], gone["published"]
    assert "doomed" in view["failed_collectors"]
    assert set(CALM) <= set(view["running_collectors"])
    assert not health["is_healthy"] and "collector is failed" in health["issues"][0]
    doomed = published["doomed"]
    assert doomed["status"] == "failed" and doomed["enabled"] is True
    assert doomed["statistics"]["connection_errors"] >= NODE_OPTIONS["max_restarts"] + 1
    last_error = doomed["statistics"]["last_error"].lower()
    assert "refused" in last_error or "connect" in last_error, last_error
    assert doomed["issues"] and "collector is failed" in doomed["issues"][0]
    assert doomed["manager_restarts"] >= 2, "the manager kept trying, and says so"
    assert final["doomed"]["manager_restarts"] >= doomed["manager_restarts"]
    for name in CALM:
        assert published[name]["status"] == "running" and published[name]["issues"] == []
        assert published[name]["manager_restarts"] == 0
