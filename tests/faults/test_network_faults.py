"""Network faults between mdflow and Redis: stalls, resets, half-closed and refused connections.

Every node that talks to Redis runs at once, through a :class:`FaultProxy`:

    engine (pump) -> [in] -> from_redis -> map -> to_redis [out]
                                             +--> to_cache (a key per element)
                                             +--> to_pubsub [ticks] -> from_pubsub
                                                                    -> scanner (cache + publish)

Each test injects one fault mid-flow and checks that

* every node recovers by itself (state ``"running"`` and progress again);
* ``status()`` showed the trouble meanwhile (state ``"reconnecting"`` while a lasting
  fault lasts; ``reconnects`` grew) on the nodes that were talking to Redis;
* nothing confirmed is lost: every id the pump, ``to_redis`` and ``to_cache`` confirmed is
  in Redis, every input entry reached the output, and no entry is left pending.

Pub/sub is at-most-once: messages published while a listener is reconnecting are lost by
design; the listener must subscribe again and hear what is published after recovery.

The URL gives redis-py short timeouts (``?socket_timeout=1``), as a deployment may do:
the listeners then PING after 3 s of silence. ``MDFLOW_FAULT_URL_OPTIONS=`` (empty) runs
the same tests with mdflow's defaults (5 s, 15 s) to measure them; the figures go to stdout
(``pytest -s``).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import pytest
import redis
from faultproxy import FaultProxy
from pubsubtools import connect, wait_numsub
from streamtools import async_wait_for, run, stop_and_wait
from streamz import Stream

from mdflow import Analyzer, AnalyzerResult
from mdflow.codecs import decode_entry, encode_entry
from mdflow.reservoir import client, db, new_client, sync_client
from mdflow.reservoir.connection import SOCKET_TIMEOUT, socket_timeout_of

pytestmark = [pytest.mark.fault, pytest.mark.slow]

URL_OPTIONS = dict(
    parse_qsl(
        os.environ.get("MDFLOW_FAULT_URL_OPTIONS", "socket_timeout=1&socket_connect_timeout=1")
    )
)
# Longer than the slowest detection may take: a listener PINGs after 3 to 4 socket timeouts
# of silence and gives up 1 later; plenty of room for a loaded machine.
_TIMEOUT = float(URL_OPTIONS.get("socket_timeout", 5))
DETECT = 7 * _TIMEOUT + 20
RECOVER = 60.0
HOLD = 2.0  # seconds a refusal goes on once every node has noticed it


class Echo(Analyzer):
    """Finds every tick: caches the last one and publishes it again."""

    async def analyze(self, data):
        return [
            AnalyzerResult(
                data,
                cache_key=self.options["key"],
                cache_ttl=600,
                publish_key=self.options["channel"],
            )
        ]


@dataclass
class Flow:
    """The pipeline, its outputs as confirmed by each node, and what the sampler saw."""

    url: str
    prefix: str
    produced: list[int] = field(default_factory=lambda: [0])
    samples: list[tuple[float, dict[str, tuple[str, int, int]]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        p, url = self.prefix, self.url
        self.src, self.dst, self.channel = p + "in", p + "out", p + "ticks"

        def tick() -> dict[str, int]:
            n = self.produced[0]
            self.produced[0] += 1
            return {"n": n}

        self.pump = Stream.engine(
            self.src, tick, push_interval=0.02, redis_url=url, asynchronous=True
        )
        self.pump_ids = self.pump.sink_to_list()
        self.outlet = Stream.from_redis(
            self.src,
            group="g",
            consumer="c",
            start_id="0",
            block=0.2,
            claim_idle=2.0,
            redis_url=url,
            asynchronous=True,
        )
        numbers = self.outlet.map(lambda m: m["n"])
        self.to_redis = numbers.to_redis(self.dst, redis_url=url)
        self.copied_ids = self.to_redis.sink_to_list()
        self.to_cache = numbers.to_cache(lambda n: f"{p}cache:{n}", ttl=600, redis_url=url)
        self.cached_keys = self.to_cache.sink_to_list()
        self.to_pubsub = numbers.to_pubsub(self.channel, codec="json", redis_url=url)
        self.listener = Stream.from_pubsub(self.channel, redis_url=url, asynchronous=True)
        self.heard = self.listener.sink_to_list()
        echo = Echo(key=p + "scan:last", channel=p + "scan")
        self.scanner = Stream.scanner(self.channel, echo, redis_url=url, asynchronous=True)
        self.found = self.scanner.sink_to_list()
        self.nodes: dict[str, Any] = {
            "engine": self.pump,
            "from_redis": self.outlet,
            "to_redis": self.to_redis,
            "to_cache": self.to_cache,
            "to_pubsub": self.to_pubsub,
            "from_pubsub": self.listener,
            "scanner": self.scanner,
        }
        self.sources = [self.pump, self.outlet, self.listener, self.scanner]

    PROGRESS: ClassVar[dict[str, str]] = {
        "engine": "written",
        "from_redis": "acked",
        "to_redis": "written",
        "to_cache": "written",
        "to_pubsub": "written",
        "from_pubsub": "received",
        "scanner": "processed",
    }

    def snapshot(self) -> dict[str, tuple[str, int, int]]:
        """(state, progress, reconnects) of every node."""
        out = {}
        for name, node in self.nodes.items():
            status = node.status()
            out[name] = (status["state"], status[self.PROGRESS[name]], status["reconnects"])
        return out

    async def sample(self) -> None:
        while True:
            self.samples.append((time.monotonic(), self.snapshot()))
            await asyncio.sleep(0.02)

    def states_between(self, name: str, start: float, end: float) -> set[str]:
        return {snap[name][0] for t, snap in self.samples if start <= t <= end}

    def noticed_at(self, name: str, after: float, reconnects: int) -> float | None:
        """When ``name`` was first seen in trouble (not running, or one more reconnect)."""
        for t, snap in self.samples:
            state, _, count = snap[name]
            if t >= after and (state != "running" or count > reconnects):
                return t
        return None

    def recovered_at(self, name: str, after: float, progress: int) -> float | None:
        """When ``name`` was first seen running with more progress than ``progress``."""
        for t, snap in self.samples:
            state, done, _ = snap[name]
            if t >= after and state == "running" and done > progress:
                return t
        return None

    def running_everywhere(self) -> bool:
        return all(node.status()["state"] == "running" for node in self.nodes.values())


async def start_flow(flow: Flow) -> asyncio.Task[None]:
    flow.listener.start()
    flow.scanner.start()
    await async_wait_for(
        lambda: flow.listener.status()["state"] == flow.scanner.status()["state"] == "running",
        timeout=30,
        message="the subscriptions",
    )
    flow.outlet.start()
    flow.pump.start()
    sampler = asyncio.ensure_future(flow.sample())
    await async_wait_for(
        lambda: all(progress > 0 for _, progress, _ in flow.snapshot().values()),
        timeout=30,
        message="every node to make progress",
    )
    return sampler


def check_nothing_lost(flow: Flow, plain: redis.Redis) -> dict[str, int]:
    """Every confirmed write is in Redis; every input entry reached the output; none pending."""
    written = plain.xrange(flow.src)
    sent = {decode_entry(fields)["n"] for _, fields in written}
    copied = [decode_entry(fields) for _, fields in plain.xrange(flow.dst)]
    in_src = {entry_id.decode() for entry_id, _ in written}
    assert set(flow.pump_ids) <= in_src, "an XADD the pump confirmed is not in the stream"
    in_dst = {entry_id.decode() for entry_id, _ in plain.xrange(flow.dst)}
    assert set(flow.copied_ids) <= in_dst, "an XADD to_redis confirmed is not in the stream"
    missing = sent - set(copied)
    assert not missing, f"input entries never processed: {sorted(missing)[:10]}"
    keys = set(flow.cached_keys)
    present = sum(plain.exists(*chunk) for chunk in _chunks(sorted(keys), 500))
    assert present == len(keys), "a key to_cache confirmed is not in Redis"
    assert plain.xpending(flow.src, "g")["pending"] == 0
    return {
        "entries": len(sent),
        "copies": len(copied),
        "duplicates": len(copied) - len(set(copied)),
        "cached": len(keys),
    }


def _chunks(items: list[str], size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- the faults ----------------------------------------------------------------------------
# Each injects its fault, waits until the nodes that must notice it did (``before`` is
# ``flow.snapshot()`` before the fault) and returns their names and when the fault ended.


def reconnected(flow: Flow, before: dict, names: list[str]) -> bool:
    now = flow.snapshot()
    return all(now[name][2] > before[name][2] for name in names)


def reconnecting(flow: Flow, start: float, names: list[str]) -> bool:
    return all("reconnecting" in flow.states_between(n, start, time.monotonic()) for n in names)


LISTENERS = ["from_pubsub", "scanner"]
TALKERS = ["engine", "from_redis", "from_pubsub", "scanner"]


Fault = tuple[list[str], float]


async def stall(flow: Flow, proxy: FaultProxy, before: dict, start: float) -> Fault:
    proxy.stall()
    try:
        # silent, open connections: only timeouts (and the listeners' PINGs) can tell
        await async_wait_for(
            lambda: reconnecting(flow, start, TALKERS) and reconnected(flow, before, TALKERS),
            timeout=DETECT,
            message="every node that talks to Redis to notice the stall",
        )
    finally:
        proxy.resume()
    return TALKERS, time.monotonic()


async def reset(flow: Flow, proxy: FaultProxy, before: dict, start: float) -> Fault:
    assert proxy.reset_all() >= 3  # at least the outlet's read and the two subscriptions
    end = time.monotonic()
    await async_wait_for(
        lambda: reconnected(flow, before, LISTENERS), timeout=DETECT, message="the resets seen"
    )
    return LISTENERS, end


def half_close(towards: str):
    async def fault(flow: Flow, proxy: FaultProxy, before: dict, start: float) -> Fault:
        assert proxy.half_close(towards) >= 3
        end = time.monotonic()
        await async_wait_for(
            lambda: reconnected(flow, before, LISTENERS),
            timeout=DETECT,
            message=f"the half-close towards the {towards} seen",
        )
        return LISTENERS, end

    return fault


async def refuse(flow: Flow, proxy: FaultProxy, before: dict, start: float) -> Fault:
    proxy.refuse(True)
    try:
        proxy.reset_all()  # every node now needs a new connection, and gets none
        await async_wait_for(
            lambda: reconnecting(flow, start, TALKERS) and reconnected(flow, before, TALKERS),
            timeout=DETECT,
            message="every node that talks to Redis to be refused",
        )
        await asyncio.sleep(HOLD)  # the outage goes on: the nodes keep trying, refused
        assert proxy.stats()["refused"] >= len(TALKERS)
    finally:
        proxy.refuse(False)
    return TALKERS, time.monotonic()


FAULTS = {
    "stall": stall,
    "reset": reset,
    "half_close_towards_client": half_close("client"),
    "half_close_towards_server": half_close("server"),
    "refuse": refuse,
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_every_node_recovers_and_nothing_confirmed_is_lost(fault, redis_factory, prefix):
    server = redis_factory()
    plain = redis.Redis.from_url(server.url)
    flows: list[Flow] = []
    with FaultProxy(server.url) as proxy:

        async def body() -> dict[str, Any]:
            flow = Flow(proxy.url(**URL_OPTIONS), prefix)  # (nodes on this loop)
            flows.append(flow)
            sampler = await start_flow(flow)
            try:
                await async_wait_for(lambda: len(flow.heard) >= 50, timeout=30)
                before, start = flow.snapshot(), time.monotonic()
                saw_trouble, end = await FAULTS[fault](flow, proxy, before, start)
                at_end, mark = flow.snapshot(), flow.produced[0]
                # recovery: every node running and making progress again; the listener hears
                # what is published after the fault (what was published during it may be lost)
                await async_wait_for(
                    lambda: (
                        flow.running_everywhere()
                        and all(flow.snapshot()[n][1] > at_end[n][1] + 20 for n in flow.nodes)
                        and any(n > mark for n in flow.heard)
                    ),
                    timeout=RECOVER,
                    interval=0.05,
                    message=f"every node to recover from the {fault}",
                )
                await asyncio.sleep(0.1)  # (a few more samples)
                recovered = {
                    name: flow.recovered_at(name, end, at_end[name][1]) for name in flow.nodes
                }
                # what status() said from the fault until the node had recovered
                during = {
                    name: sorted(flow.states_between(name, start, recovered[name] or end))
                    for name in flow.nodes
                }
                reconnects = {n: flow.snapshot()[n][2] - before[n][2] for n in flow.nodes}
                noticed = {n: flow.noticed_at(n, start, before[n][2]) for n in flow.nodes}
                await stop_and_wait(flow.pump)
                written = flow.pump.status()["written"]
                # every entry processed and acknowledged (entries whose read reply was lost with
                # a connection are claimed again after claim_idle)
                await async_wait_for(
                    lambda: (
                        plain.xpending(flow.src, "g")["pending"] == 0
                        and flow.outlet.status()["lag"] == 0
                        and flow.outlet.status()["read"] >= written
                    ),
                    timeout=RECOVER,
                    interval=0.1,
                    message="the outlet to drain",
                )
                await async_wait_for(lambda: flow.outlet.status()["inflight"] == 0, timeout=30)
                return {
                    "fault": fault,
                    "fault_lasted": round(end - start, 2),
                    "states_during": during,
                    "reconnects": reconnects,
                    "noticed_after_s": {
                        n: None if t is None else round(t - start, 3) for n, t in noticed.items()
                    },
                    "recovery_s": {
                        n: None if t is None else round(t - end, 3) for n, t in recovered.items()
                    },
                    "must_show_trouble": saw_trouble,
                    "pubsub_lost": len(set(range(mark)) - set(flow.heard)),
                    "outlet": {
                        k: flow.outlet.status()[k] for k in ("read", "acked", "claimed", "failed")
                    },
                }
            finally:
                sampler.cancel()
                await stop_and_wait(*flow.sources, timeout=30)

        try:
            figures = run(body, timeout=240)
        finally:
            for node in (node for flow in flows for node in flow.sources):
                node.stop()
        flow = flows[0]
        for name in figures["must_show_trouble"]:
            assert figures["reconnects"][name] >= 1, (name, figures)
        if fault in ("stall", "refuse"):  # lasting faults: the state said so meanwhile
            for name in figures["must_show_trouble"]:
                assert "reconnecting" in figures["states_during"][name], (name, figures)
        figures["lost"] = check_nothing_lost(flow, plain)
        figures["proxy"] = proxy.stats()
    plain.close()
    print(f"\nFIGURES {figures}")


def test_a_stall_while_subscribing_is_given_up_and_the_listener_subscribes_again(
    redis_factory, prefix
):
    """The connection stalls right when SUBSCRIBE is sent: no read is left to time out, so
    the subscription must be confirmed within a deadline (it used to wait forever)."""
    server = redis_factory()
    channel = prefix + "ticks"
    with FaultProxy(server.url) as proxy:

        async def body() -> dict[str, Any]:
            proxy.stall_when(b"SUBSCRIBE")
            listener = Stream.from_pubsub(
                channel, redis_url=proxy.url(**URL_OPTIONS), asynchronous=True
            )
            heard = listener.sink_to_list()
            listener.start()
            try:
                await async_wait_for(lambda: proxy.stalled, timeout=30, message="SUBSCRIBE")
                began = time.monotonic()
                await async_wait_for(
                    lambda: listener.status()["reconnects"] >= 1,
                    timeout=DETECT,
                    message="the subscription to be given up",
                )
                during = {**listener.status(), "given_up_after": time.monotonic() - began}
                proxy.resume()
                await async_wait_for(
                    lambda: listener.status()["state"] == "running", timeout=RECOVER
                )
                async with connect(server.url) as conn:
                    await wait_numsub(conn, channel)
                    await conn.publish(channel, "after the stall")
                await async_wait_for(lambda: heard == ["after the stall"], timeout=30)
            finally:
                await stop_and_wait(listener)
            return during

        during = run(body, timeout=180)
    assert during["state"] == "reconnecting"
    assert "did not confirm the subscription" in during["last_error"], during
    print(f"\nFIGURES subscribe stall given up after {during['given_up_after']:.2f}s")


def test_entries_whose_read_reply_was_lost_are_claimed_back(redis_url, prefix):
    """A read of this consumer that the outlet never saw (a stalled network delivered it
    late, after the outlet had reconnected) leaves entries in its own pending list."""
    src = prefix + "in"
    plain = redis.Redis.from_url(redis_url)

    async def body() -> dict[str, Any]:
        outlet = Stream.from_redis(
            src,
            group="g",
            consumer="c",
            start_id="0",
            block=0.1,
            claim_idle=1.0,
            redis_url=redis_url,
            asynchronous=True,
        )
        seen = outlet.sink_to_list()
        outlet.start()
        try:
            plain.xadd(src, encode_entry(-1))
            await async_wait_for(lambda: outlet.status()["acked"] >= 1, timeout=30)
            # the late read: delivered to consumer "c" atomically, so the outlet's own reads
            # cannot get them first
            pipe = plain.pipeline(transaction=True)
            for n in range(5):
                pipe.xadd(src, encode_entry(n))
            pipe.xreadgroup("g", "c", {src: ">"})
            pipe.execute()
            assert plain.xpending(src, "g")["pending"] == 5
            await async_wait_for(
                lambda: plain.xpending(src, "g")["pending"] == 0 and len(seen) == 6,
                timeout=60,
                message="the orphaned entries to be claimed back and acknowledged",
            )
        finally:
            await stop_and_wait(outlet)
        return outlet.status()

    status = run(body, timeout=120)
    plain.close()
    assert status["claimed"] == 5
    assert status["acked"] == 6


def test_a_read_may_block_longer_than_the_socket_timeout(redis_url, prefix):
    """XREADGROUP BLOCK longer than socket_timeout is not mistaken for a dead connection."""
    src = prefix + "in"

    async def body() -> dict[str, Any]:
        outlet = Stream.from_redis(
            src,
            group="g",
            block=1.0,
            redis_url=redis_url + "?socket_timeout=0.3",
            asynchronous=True,
        )
        seen = outlet.sink_to_list()
        outlet.start()
        try:
            await async_wait_for(lambda: outlet.status()["state"] == "running", timeout=30)
            await asyncio.sleep(3.0)  # several idle reads, each longer than the socket timeout
            async with connect(redis_url) as conn:
                await conn.xadd(src, encode_entry("late"))
            await async_wait_for(lambda: seen == ["late"], timeout=30)
        finally:
            await stop_and_wait(outlet)
        return outlet.status()

    status = run(body, timeout=60)
    assert status["reconnects"] == 0, status["last_error"]


def test_every_client_times_out_a_silent_connection_and_the_url_tunes_it(redis_url):
    """redis-py < 8 had no socket timeout: mdflow sets one, whatever the version."""
    assert socket_timeout_of(sync_client(redis_url)) == SOCKET_TIMEOUT
    assert socket_timeout_of(db(redis_url)) == SOCKET_TIMEOUT

    async def body() -> tuple[float | None, float | None]:
        shared, tuned = client(redis_url), new_client(redis_url + "?socket_timeout=2")
        try:
            return socket_timeout_of(shared), socket_timeout_of(tuned)
        finally:
            await tuned.aclose()

    assert run(body) == (SOCKET_TIMEOUT, 2.0)


def test_writes_in_flight_when_the_network_stalls_are_retried_not_lost(redis_factory, prefix):
    """Sinks whose writes stall: ``reconnecting`` until the network is back, then written."""
    server = redis_factory()
    plain = redis.Redis.from_url(server.url)
    with FaultProxy(server.url) as proxy:

        async def body() -> dict[str, Any]:
            url = proxy.url(**URL_OPTIONS)
            feed = Stream(asynchronous=True)
            sinks = {
                "to_redis": feed.to_redis(prefix + "out", redis_url=url),
                "to_cache": feed.to_cache(lambda n: f"{prefix}cache:{n}", ttl=600, redis_url=url),
                "to_pubsub": feed.to_pubsub(prefix + "ticks", redis_url=url),
            }
            confirmed = {name: sink.sink_to_list() for name, sink in sinks.items()}
            await feed.emit(0)
            await async_wait_for(lambda: all(len(c) == 1 for c in confirmed.values()))
            proxy.stall()
            began = time.monotonic()
            try:
                for n in range(1, 11):
                    await feed.emit(n)
                noticed: dict[str, float] = {}

                def all_noticed() -> bool:
                    for name, sink in sinks.items():
                        if sink.status()["state"] == "reconnecting":
                            noticed.setdefault(name, round(time.monotonic() - began, 2))
                    return len(noticed) == len(sinks)

                await async_wait_for(
                    all_noticed, timeout=DETECT, message="every sink to notice the stall"
                )
            finally:
                proxy.resume()
            await async_wait_for(
                lambda: all(len(c) == 11 for c in confirmed.values()),
                timeout=RECOVER,
                message="the stalled writes to be confirmed",
            )
            states = {name: sink.status()["state"] for name, sink in sinks.items()}
            return {"noticed": noticed, "states": states, "confirmed": confirmed}

        figures = run(body, timeout=180)
    assert set(figures["states"].values()) == {"running"}
    copied = [decode_entry(fields) for _, fields in plain.xrange(prefix + "out")]
    assert set(copied) == set(range(11))  # (a write Redis applied before the stall: twice)
    ids = {entry_id.decode() for entry_id, _ in plain.xrange(prefix + "out")}
    assert set(figures["confirmed"]["to_redis"]) <= ids
    assert plain.exists(*figures["confirmed"]["to_cache"]) == 11
    plain.close()
    print(f"\nFIGURES stalled writes: reconnecting after {figures['noticed']} s")
