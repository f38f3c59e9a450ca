"""Every running mdflow graph tells Redis what it is and how it is doing, about once a second.

When an mdflow source starts (``engine``, ``from_redis``, ``from_pubsub``,
``scanner``, ``collector``, ...), :func:`track` remembers it (weakly) on the
source's own event loop. One task per loop then, every ``interval`` seconds,
groups the live sources into connected graphs, builds each graph's
:func:`~mdflow.pictures.topology.topology` with live status, and writes it
with ``SET key value PX ttl`` to every Redis the graph's nodes use. So any
process that can reach that Redis can see every live graph (see
:func:`mdflow.pictures.inspect.inspect`); a dead process's key expires.

Key and value
-------------
Key ``mdflow:topology:{graph_id}`` with ``graph_id = "{hostname}:{pid}:{n}"``
(``n`` counts the graphs of the process; the id stays the same while the graph
lives, also across a stop and restart of its sources). The value is JSON::

    {"version": 1, "id": graph_id, "host": hostname, "pid": pid,
     "program": "app.py", "started": 1700000000.1, "time": 1700000042.3,
     "interval": 1.0, "ttl": 5.0, "redis": "redis://:***@host:6379/0",
     "topology": {"nodes": {...}, "edges": [...]}}

``time``/``started`` are Unix times; node ids in ``topology`` are prefixed
with ``"{graph_id}/"`` (reservoir ids such as ``stream:<name>`` are not, so
graphs of different processes join through them). URLs are masked and every
password a status text might mention is masked too.

A graph whose sources all stopped is published once more (its states read
``stopped``) and then no longer: its key expires after ``ttl``. A graph
without any Redis URL (e.g. only a collector and plain streamz nodes) is not
published. Failures to publish (Redis down) are logged at debug level once
per distinct error and never touch the pipeline.

Opting out: ``MDFLOW_PUBLISH_TOPOLOGY=0`` (also ``false``/``no``/``off``) in
the environment, or :func:`set_publishing` ``(False)`` in code (which wins over
the environment; ``set_publishing(None)`` follows the environment again).
Sources started while publishing is off are not tracked.

Cost: per tick and graph, one ``status()`` per mdflow node, one JSON
document and one SET per Redis URL, on the graph's own loop.

Examples
--------
>>> import mdflow.pictures.publish as publish
>>> publish.KEY.format(graph_id="host:4242:1")
'mdflow:topology:host:4242:1'
>>> publish.set_publishing(False); publish.publishing_enabled()
False
>>> publish.set_publishing(None)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import socket
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from streamz import Stream

from ..nodes.lifecycle import on_source_started
from ..reservoir import client, mask_text, mask_url
from .health import Sampler
from .topology import connected_nodes, topology

__all__ = [
    "ENV",
    "KEY",
    "PATTERN",
    "VERSION",
    "TopologyPublisher",
    "publisher",
    "publishing_enabled",
    "set_publishing",
    "track",
]

logger = logging.getLogger(__name__)

#: Where a graph's topology is published (``graph_id`` is ``host:pid:n``).
KEY = "mdflow:topology:{graph_id}"
#: A ``SCAN MATCH`` pattern for every published graph.
PATTERN = "mdflow:topology:*"
#: Version of the published JSON document.
VERSION = 1
#: Environment variable that turns publishing off with ``0``/``false``/``no``/``off``.
ENV = "MDFLOW_PUBLISH_TOPOLOGY"

_OFF = {"0", "false", "no", "off"}
_FINAL_PUBLISH_TIMEOUT = 0.5  # seconds a closing loop grants the last publish
_MAX_REMEMBERED_ERRORS = 256
_FIRST_TICK = 0.2  # seconds from the first start on a loop to its first publication

_explicit: bool | None = None
_graph_numbers = itertools.count(1)


def set_publishing(enabled: bool | None) -> None:
    """Turn topology publishing on or off in this process (``None``: follow the environment).

    Examples
    --------
    >>> set_publishing(False)
    >>> publishing_enabled()
    False
    >>> set_publishing(None)
    """
    global _explicit
    _explicit = None if enabled is None else bool(enabled)


def publishing_enabled() -> bool:
    """Whether graphs are published: :func:`set_publishing` if called, else the environment.

    Examples
    --------
    >>> import os
    >>> publishing_enabled() == (os.environ.get("MDFLOW_PUBLISH_TOPOLOGY", "1") not in
    ...                          {"0", "false", "no", "off"})
    True
    """
    if _explicit is not None:
        return _explicit
    return os.environ.get(ENV, "1").strip().lower() not in _OFF


def _program() -> str:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    return os.path.basename(argv0) or "python"


@dataclass
class _Graph:
    """One connected graph as the publisher knows it."""

    id: str
    started: float


@dataclass
class _LoopState:
    """What one event loop's publishing task works on (touched only on that loop)."""

    tracked: dict[int, weakref.ref[Stream]] = field(default_factory=dict)
    graph_of: weakref.WeakKeyDictionary[Stream, _Graph] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    sampler: Sampler = field(default_factory=Sampler)
    task: asyncio.Task[None] | None = None


class TopologyPublisher:
    """Publish the topology and status of every started mdflow graph to its Redis.

    Parameters
    ----------
    interval : float
        Seconds between two publications of a graph.
    ttl : float
        Seconds a published key lives without being refreshed.

    Examples
    --------
    >>> from streamz import Stream
    >>> pub = TopologyPublisher(interval=0.5, ttl=3)
    >>> pump = Stream.engine("quotes", redis_url="redis://localhost:6379/0")  # doctest: +SKIP
    >>> pub.track(pump)     # what starting a source does for the default one  # doctest: +SKIP
    """

    def __init__(self, interval: float = 1.0, ttl: float = 5.0) -> None:
        self.interval = float(interval)
        self.ttl = float(ttl)
        self._lock = threading.Lock()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._errors: set[str] = set()

    # --- tracking ---------------------------------------------------------------------------
    def track(self, node: Stream) -> None:
        """Publish the graph of ``node`` (a started source) from now on; safe from any thread."""
        if not publishing_enabled():
            return
        loop = getattr(node, "loop", None)
        if loop is None:
            return
        loop.add_callback(self._adopt, weakref.ref(node))

    def _adopt(self, ref: weakref.ref[Stream]) -> None:
        """On the node's loop: remember the node; start this loop's task if it is not running."""
        node = ref()
        if node is None:
            return
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._loops.get(loop)
            if state is None:
                state = self._loops[loop] = _LoopState()
        state.tracked[id(node)] = ref
        if state.task is None or state.task.done():
            state.task = loop.create_task(self._run(state))

    # --- the loop's task --------------------------------------------------------------------
    async def _run(self, state: _LoopState) -> None:
        try:
            # A moment first: sources started together are published together, and running.
            await asyncio.sleep(min(self.interval, _FIRST_TICK))
            while True:
                began = time.monotonic()
                if not await self._tick(state):
                    return  # nothing left to publish on this loop; a new start begins again
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - began)))
        except asyncio.CancelledError:
            # The loop is closing: graphs that just stopped still get their last word.
            try:
                await asyncio.wait_for(
                    self._tick(state, only_finished=True), _FINAL_PUBLISH_TIMEOUT
                )
            except (Exception, asyncio.CancelledError):  # noqa: BLE001 - best effort at shutdown
                pass
            raise
        finally:
            state.task = None  # the state must not keep its (closed) loop alive

    async def _tick(self, state: _LoopState, only_finished: bool = False) -> bool:
        """Publish every graph of this loop once; False when nothing is tracked any more."""
        alive: list[Stream] = []
        for key, ref in list(state.tracked.items()):
            node = ref()
            if node is None:
                del state.tracked[key]
            else:
                alive.append(node)
        if not alive:
            return False
        enabled = publishing_enabled()
        writes = []
        for nodes, sources in _components(alive):
            graph = self._graph(state, sources)
            finished = all(_finished(s) for s in sources)
            if finished:
                for source in sources:
                    state.tracked.pop(id(source), None)
            elif only_finished:
                continue
            if not enabled:
                continue
            try:
                writes.extend(self._documents(state, graph, nodes))
            except Exception as exc:  # noqa: BLE001 - a node whose status() fails: skip a tick
                self._failed(f"graph {graph.id}", exc)
        if writes:
            await asyncio.gather(*(self._set(url, key, text) for url, key, text in writes))
        return bool(state.tracked)

    def _graph(self, state: _LoopState, sources: list[Stream]) -> _Graph:
        graph = next((state.graph_of[s] for s in sources if s in state.graph_of), None)
        if graph is None:
            number = next(_graph_numbers)
            graph = _Graph(f"{socket.gethostname()}:{os.getpid()}:{number}", time.time())
        for source in sources:
            state.graph_of[source] = graph
        return graph

    def _documents(
        self, state: _LoopState, graph: _Graph, nodes: list[Stream]
    ) -> list[tuple[str, str, str]]:
        """(url, key, JSON text) for every Redis the graph's mdflow nodes use."""
        urls: list[str] = []
        for node in nodes:
            url = getattr(node, "_url", None)
            if isinstance(url, str) and url not in urls and _is_mdflow(node):
                urls.append(url)
        if not urls:
            return []
        body: dict[str, Any] = {
            "version": VERSION,
            "id": graph.id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "program": _program(),
            "started": graph.started,
            "time": time.time(),
            "interval": self.interval,
            "ttl": self.ttl,
            "redis": None,
            "topology": topology(nodes, status=True, prefix=f"{graph.id}/", sampler=state.sampler),
        }
        body = _masked(body)
        key = KEY.format(graph_id=graph.id)
        out = []
        for url in urls:
            body["redis"] = mask_url(url)
            out.append((url, key, json.dumps(body, default=str, separators=(",", ":"))))
        return out

    async def _set(self, url: str, key: str, text: str) -> None:
        try:
            await client(url).set(key, text, px=max(1, int(self.ttl * 1000)))
        except Exception as exc:  # noqa: BLE001 - publishing never affects the pipeline
            self._failed(url, exc)

    def _failed(self, where: str, exc: BaseException) -> None:
        why = f"{mask_url(where)}: {type(exc).__name__}: {mask_text(str(exc))}"
        with self._lock:
            if why in self._errors:
                return
            if len(self._errors) >= _MAX_REMEMBERED_ERRORS:
                self._errors.clear()
            self._errors.add(why)
        logger.debug("cannot publish a topology (%s)", why)


def _masked(value: Any) -> Any:
    """``value`` with every password in every string masked (one string at a time: masking
    the JSON text as a whole could join a URL in one string to an ``@`` in another)."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(v) for v in value]
    return value


def _is_mdflow(node: Stream) -> bool:
    return type(node).__module__.startswith("mdflow.")


def _components(sources: list[Stream]) -> list[tuple[list[Stream], list[Stream]]]:
    """Group ``sources`` into connected graphs: (all nodes, its sources), in tracking order."""
    out = []
    seen: set[int] = set()
    for source in sources:
        if id(source) in seen:
            continue
        nodes = connected_nodes(source)
        ids = {id(n) for n in nodes}
        members = [s for s in sources if id(s) in ids]
        seen.update(id(s) for s in members)
        out.append((nodes, members))
    return out


def _finished(source: Stream) -> bool:
    """Stopped, and its loop has ended (``stopping`` is not finished yet)."""
    if not getattr(source, "stopped", True):
        return False
    status = getattr(source, "status", None)
    if not callable(status):
        return True
    return str(status().get("state", "stopped")).lower() != "stopping"


#: The process's publisher: every mdflow source that starts is tracked by it.
publisher = TopologyPublisher()


def track(node: Stream) -> None:
    """Publish the graph of the started source ``node`` (the hook every mdflow source calls).

    Examples
    --------
    >>> from streamz import Stream
    >>> track(Stream.engine("quotes", redis_url="redis://localhost:6379/0"))  # doctest: +SKIP
    """
    publisher.track(node)


on_source_started(track)
