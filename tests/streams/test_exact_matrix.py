"""The exact-acknowledgement matrix: every streamz node that passes elements on, behind
``from_redis``, followed by each kind of terminal, in script and asyncio mode.

For each (node, terminal, mode) three phases run against a real Redis:

1. **held** — the terminal holds what it gets (an async function that never
   returns; ``to_redis`` to a server whose writes are paused). Every entry in an
   element the terminal got must still be pending in XPENDING, when it got it and
   while it holds it. Then the graph "crashes" (the source stops, the graph is
   abandoned with what it holds).
2. **restart** — a fresh graph with the same group and consumer name replays the
   pending entries: every entry the node is meant to pass reaches the terminal.
3. **poison** — the terminal raises on every element that contains one poisoned
   entry: that entry is retried, then dead-lettered; a second wave written
   afterwards is processed (nothing stalls); at rest nothing is pending beyond what
   the node itself holds by design (the last elements of a sliding window...).

The eight (terminal, mode) cases of one node run concurrently, each on its own
streams, so the whole matrix takes about a minute.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from helpers import async_wait_for
from streamtools import run, stop_and_wait
from streamz import Stream

from mdflow.codecs import decode_entry, encode_entry
from mdflow.reservoir import RedisServer

N = 6  # entries per source and wave


# --- the nodes ---------------------------------------------------------------------------------
@dataclass
class Node:
    build: Callable[..., Stream]  # build(*sources) -> the node the terminal hangs from
    sources: int = 1
    reach: Callable[[set], set] = lambda leaves: leaves  # what must reach the terminal
    holds: int = 0  # entries the node keeps (un-acked) at rest, by design
    poison: tuple = (0, 1)  # the (source, i) of the entry every terminal refuses
    source_kwargs: dict = field(default_factory=dict)
    dask: bool = False  # needs a dask.distributed client
    # what must reach the terminal when a new graph replays the entries a crashed one held
    restart: Callable[[set], set] | None = None

    def replay_reach(self, leaves: set) -> set:
        return (self.restart or self.reach)(leaves)


def _last(leaves: set) -> set:
    """The newest entry of each source."""
    newest: dict[int, tuple] = {}
    for s, i in leaves:
        if s not in newest or i > newest[s][1]:
            newest[s] = (s, i)
    return set(newest.values())


async def _double(x):
    return x


NODES: dict[str, Node] = {
    "map": Node(lambda a: a.map(lambda x: x)),
    "starmap": Node(lambda a: a.map(lambda x: (x,)).starmap(lambda x: x)),
    "filter": Node(
        lambda a: a.filter(lambda x: x["i"] % 2 == 0),
        reach=lambda leaves: {leaf for leaf in leaves if leaf[1] % 2 == 0},
        poison=(0, 2),
    ),
    "accumulate": Node(lambda a: a.accumulate(lambda acc, x: x, start=None)),
    "slice": Node(
        lambda a: a.slice(1),
        reach=lambda leaves: {leaf for leaf in leaves if leaf[1] % N != 0},
        # positional: the new graph skips the first entry *it* sees (the first replayed)
        restart=lambda leaves: {leaf for leaf in leaves if leaf[1] % N > 1},
    ),
    "partition": Node(lambda a: a.partition(2)),
    "partition_timeout": Node(lambda a: a.partition(4, timeout=0.05)),
    "partition_unique": Node(lambda a: a.partition_unique(2, key=lambda x: x["i"])),
    "sliding_window": Node(lambda a: a.sliding_window(3), holds=2),
    "sliding_window_full": Node(lambda a: a.sliding_window(2, return_partial=False), holds=1),
    "timed_window": Node(lambda a: a.timed_window(0.05)),
    "timed_window_unique": Node(lambda a: a.timed_window_unique(0.05, key=lambda x: x["i"])),
    "delay": Node(lambda a: a.delay(0.01)),
    "rate_limit": Node(lambda a: a.rate_limit(0.01)),
    "buffer": Node(lambda a: a.buffer(3)),
    "latest": Node(lambda a: a.latest(), reach=_last, poison=(0, N - 1)),
    "map_async": Node(lambda a: a.map_async(_double)),
    "flatten": Node(lambda a: a.map(lambda x: [x, x]).flatten()),
    "flatten_batch": Node(lambda a: a.flatten(), source_kwargs={"batch": True}),
    "unique": Node(lambda a: a.unique(key=lambda x: x["i"])),
    "pluck": Node(lambda a: a.map(lambda x: (x, 0)).pluck(0)),
    "collect": Node(lambda a: _collect(a)),
    "union": Node(lambda a, b: a.union(b), sources=2),
    "zip": Node(lambda a, b: a.zip(b), sources=2),
    "combine_latest": Node(
        lambda a, b: a.combine_latest(b), sources=2, reach=_last, holds=2, poison=(0, N - 1)
    ),
    "scatter_gather": Node(lambda a: a.scatter().map(lambda x: x).gather(), dask=True),
    "zip_latest": Node(
        lambda a, b: a.zip_latest(b),
        sources=2,
        reach=lambda leaves: {leaf for leaf in leaves if leaf[0] == 0},
        holds=1,
    ),
}


def _collect(source: Stream) -> Stream:
    node = source.collect()
    source.sink(lambda _: node.flush())  # flushed by the element that was just collected
    return node


# --- what the terminals see --------------------------------------------------------------------
def leaves_of(x: Any) -> set:
    """The (source, i) of every entry an element was built from."""
    if isinstance(x, dict) and "i" in x:
        return {(x["s"], x["i"])}
    if isinstance(x, (list, tuple)):
        return set().union(*(leaves_of(item) for item in x)) if x else set()
    return set()


class Case:
    """One (node, terminal, mode): its streams, what its terminals got, what went wrong."""

    def __init__(self, name: str, terminal: str, mode: str, url: str, out_url: str):
        self.name, self.terminal, self.mode = name, terminal, mode
        self.node = NODES[name]
        self.url, self.out_url = url, out_url
        self.prefix = f"m:{name}:{terminal}:{mode}:{uuid.uuid4().hex[:6]}:"
        self.rdb = redis.Redis.from_url(url)
        self.lock = threading.Lock()
        self.ids: dict[tuple, bytes] = {}  # (source, i) -> entry id
        self.got: set = set()  # leaves the terminal received
        self.done: set = set()  # leaves the terminal finished
        self.problems: list[str] = []
        self.held: set[int] = set()  # graphs whose terminal holds what it gets
        self.graphs = 0
        self.checking = True
        self.poison = False
        self.topics: list[str] = []
        self.group = ""

    # --- streams ---
    def use(self, phase: str) -> None:
        self.topics = [f"{self.prefix}{phase}:{s}" for s in range(self.node.sources)]
        self.group = "g"
        self.ids.clear()

    def write(self, first: int) -> None:
        for s, topic in enumerate(self.topics):
            for i in range(first, first + N):
                # the id is known before the entry exists: a terminal may get it at once
                self.ids[(s, i)] = f"{i + 1}-0".encode()
                self.rdb.xadd(topic, encode_entry({"s": s, "i": i}), id=self.ids[(s, i)])

    def pending_ids(self) -> set:
        ids = set()
        for topic in self.topics:
            for row in self.rdb.xpending_range(topic, self.group, "-", "+", 10_000):
                ids.add(row["message_id"])
        return ids

    def check_pending(self, leaves: set, when: str) -> None:
        if not self.checking:
            return
        with self.lock:
            # An entry finished before (by the crashed graph, say) may well be acked by now.
            leaves = leaves - self.done
        if leaves and self.terminal == "to_redis":
            leaves -= self.written()
        if leaves and self.poison:
            leaves -= self.dead()  # dead-lettered (with the poisoned entry it came with)
        if not leaves:
            return
        pending = self.pending_ids()
        missing = sorted(leaf for leaf in leaves if self.ids.get(leaf) not in pending)
        if missing:
            self.problems.append(f"{when}: entries {missing} were acked already")

    # --- the terminal's functions ---
    def dead(self) -> set:
        """Leaves whose entries are in a dead-letter stream."""
        ids = {f[b"id"] for t in self.topics for _, f in self.rdb.xrange(t + ":dead")}
        return {leaf for leaf, entry_id in self.ids.items() if entry_id in ids}

    def received(self, x: Any) -> set:
        leaves = leaves_of(x)
        with self.lock:
            self.got |= leaves
        self.check_pending(leaves, "when the terminal got them")
        return leaves

    def finish(self, leaves: set) -> None:
        if self.poison and self.node.poison in leaves:
            raise ValueError(f"poisoned element {sorted(leaves)}")
        with self.lock:
            self.done |= leaves

    def sync_sink(self, x: Any) -> None:
        self.finish(self.received(x))

    def async_function(self, graph: int) -> Callable:
        async def terminal(x: Any) -> Any:
            return await self._async_terminal(x, graph)

        return terminal

    async def _async_terminal(self, x: Any, graph: int) -> Any:
        leaves = self.received(x)
        while leaves and graph in self.held:  # the crashed graph's terminal never finishes
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        self.check_pending(leaves, "just before the async terminal finished")
        self.finish(leaves)
        return x

    def to_redis_topic(self, x: Any) -> str:
        leaves = self.received(x)
        if self.poison and self.node.poison in leaves:
            return self.prefix + "wrongtype"  # a string key: Redis refuses the XADD
        return self.prefix + "out"

    def written(self) -> set:
        """Leaves that to_redis wrote to the output server."""
        out = redis.Redis.from_url(self.out_url)
        try:
            entries = out.xrange(self.prefix + "out")
        finally:
            out.close()
        return set().union(set(), *(leaves_of(decode_entry(f)) for _, f in entries))

    def finished(self) -> set:
        return self.done | (self.written() if self.terminal == "to_redis" else set())

    # --- graphs ---
    def graph(self, hold: bool = False, **kwargs: Any) -> tuple[list[Stream], list[Stream]]:
        self.graphs += 1
        if hold:
            self.held.add(self.graphs)
        sources = [
            Stream.from_redis(
                topic,
                group=self.group,
                consumer="c",
                start_id="0",
                block=0.05,
                redis_url=self.url,
                asynchronous=self.mode == "asyncio",
                **self.node.source_kwargs,
                **kwargs,
            )
            for topic in self.topics
        ]
        node = self.node.build(*sources)
        if self.terminal == "sync_sink":
            ends = [node.sink(self.sync_sink)]
        elif self.terminal == "async_sink":
            ends = [node.sink(self.async_function(self.graphs))]
        elif self.terminal == "map_async":
            ends = [node.map_async(self.async_function(self.graphs)).sink(lambda x: None)]
        else:
            writer = node.to_redis(self.to_redis_topic, redis_url=self.out_url)
            ends = [writer]
        return sources, ends


def _destroy(ends: list[Stream]) -> None:
    for end in ends:
        end.destroy()


class Pause:
    """The output server's writes are paused until every to_redis case has checked."""

    def __init__(self, url: str, cases: int):
        self.out = redis.Redis.from_url(url)
        self.waiting = cases

    def __enter__(self) -> Pause:
        self.out.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
        return self

    def checked(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.out.execute_command("CLIENT", "UNPAUSE")

    def __exit__(self, *exc: object) -> None:
        self.out.execute_command("CLIENT", "UNPAUSE")
        self.out.close()


async def _run_case(case: Case, pause: Pause) -> None:
    node = case.node
    # 1. held, then a crash
    case.use("held")
    case.write(0)
    must = node.replay_reach(set(case.ids))
    sources, ends = case.graph(hold=True)
    for source in sources:
        source.start()
    await async_wait_for(
        lambda: sum(s.status()["read"] for s in sources) >= N * node.sources,
        message=f"{case.prefix}: entries read",
    )
    await asyncio.sleep(0.3)  # a premature ack has every chance to happen
    if case.terminal in ("async_sink", "map_async", "to_redis"):
        case.check_pending(case.got, "while the terminal held them")
        if case.terminal != "map_async" and not case.got:
            case.problems.append("the terminal got nothing while holding")
    if case.terminal == "to_redis":
        pause.checked()
    await stop_and_wait(*sources)  # the crash: the graph is abandoned with what it holds
    crashed = ends
    # 2. a fresh graph with the same consumer replays what is pending
    sources, ends = case.graph()
    for source in sources:
        source.start()
    await async_wait_for(
        lambda: must <= case.finished(), message=f"{case.prefix}: every entry delivered"
    )
    await stop_and_wait(*sources)
    _destroy(crashed + ends)
    # 3. poison: retried, dead-lettered, and nothing stalls
    case.use("poison")
    case.poison = True
    case.write(0)
    sources, ends = case.graph(max_deliveries=3, retry_delay=0.01)
    for source in sources:
        source.start()
    dead = case.topics[node.poison[0]] + ":dead"

    def poison_is_dead() -> bool:
        return any(f[b"id"] == case.ids[node.poison] for _, f in case.rdb.xrange(dead))

    await async_wait_for(poison_is_dead, message=f"{case.prefix}: the poisoned entry dead")
    before = set(case.ids)
    case.write(N)
    wave = node.reach(set(case.ids)) - node.reach(before)
    await async_wait_for(
        lambda: wave <= case.finished(), message=f"{case.prefix}: the second wave processed"
    )
    await async_wait_for(
        lambda: len(case.pending_ids()) <= node.holds,
        message=f"{case.prefix}: at most {node.holds} pending at rest",
    )
    await stop_and_wait(*sources)
    _destroy(ends)
    case.checking = False
    case.held.clear()  # let the crashed graph's tasks end


TERMINALS = ("sync_sink", "async_sink", "map_async", "to_redis")


@pytest.fixture(scope="module")
def out_server():
    """The to_redis target: a server of its own, so its writes can be paused."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def dask_client():
    """An in-process dask.distributed cluster (threads), for scatter/gather."""
    distributed = pytest.importorskip("distributed")
    import streamz.dask  # noqa: F401 - registers scatter/gather on Stream

    client = distributed.Client(processes=False, dashboard_address=None)
    yield client
    client.close()


@pytest.mark.parametrize("name", sorted(NODES))
def test_exact_acknowledgement(name, redis_url, out_server, request):
    if NODES[name].dask:
        request.getfixturevalue("dask_client")
    cases = [
        Case(name, terminal, mode, redis_url, out_server.url)
        for terminal in TERMINALS
        for mode in ("script", "asyncio")
    ]
    out = redis.Redis.from_url(out_server.url)
    for case in cases:
        out.set(case.prefix + "wrongtype", "not a stream")
    out.close()

    async def body():
        with Pause(out_server.url, sum(c.terminal == "to_redis" for c in cases)) as pause:
            return await asyncio.gather(
                *(_run_case(case, pause) for case in cases), return_exceptions=True
            )

    results = run(body, timeout=120)
    failures = []
    for case, result in zip(cases, results, strict=True):
        if isinstance(result, BaseException):
            failures.append(f"{case.terminal}/{case.mode}: {type(result).__name__}: {result}")
        failures += [f"{case.terminal}/{case.mode}: {p}" for p in case.problems[:3]]
        case.rdb.close()
    assert not failures, "\n".join(failures)
