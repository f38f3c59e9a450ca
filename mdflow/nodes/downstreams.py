"""Which nodes an element reaches: a fast, versioned view of streamz's downstream sets.

streamz keeps each node's downstreams in a ``weakref.WeakSet`` (``OrderedWeakrefSet``);
iterating one takes about 1 µs, so a ``map -> filter -> sink`` chain spends more
time listing its downstreams than running its functions. This module

* counts every change of any downstream set (a node built, connected, disconnected,
  destroyed or garbage-collected): :func:`graph_version`. A reader that remembers the
  version knows, with one comparison, that no node has been added or removed since;
* gives each node's live downstreams as a list built from a cached tuple of weak
  references: :func:`live_downstreams` (no ``WeakSet`` iteration guard);
* tells whether every node downstream of a source finishes with an element before its
  ``update`` returns (or hands back the futures of its asynchronous work):
  :func:`finishes_in_emit`. For such a graph, a source needs no reference counting
  per element: the element is done when the emit's futures are.

:func:`install` (run by ``mdflow.nodes``) makes every node built from then on use
:class:`VersionedWeakrefSet`; nodes built before are upgraded when a graph walk
meets them.

Examples
--------
>>> from streamz import Stream
>>> import mdflow
>>> from mdflow.nodes.downstreams import finishes_in_emit, graph_version
>>> source = Stream()
>>> before = graph_version()
>>> sink = source.map(abs).filter(bool).sink(print)
>>> graph_version() > before
True
>>> finishes_in_emit(source)
True
>>> _ = source.buffer(10)       # a buffer holds elements after its update returns
>>> finishes_in_emit(source)
False
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from streamz import core, sinks
from streamz.orderedweakset import OrderedSet, OrderedWeakrefSet

__all__ = [
    "PASS_THROUGH",
    "VersionedWeakrefSet",
    "finishes_in_emit",
    "graph_version",
    "has_downstreams",
    "install",
    "live_downstreams",
]

_version = 0


def graph_version() -> int:
    """A number that changes whenever any node's set of downstreams changes."""
    return _version


def _bump() -> None:
    global _version
    _version += 1  # (two threads bumping at once still change it: only equality is read)


class _VersionedOrderedSet(OrderedSet):
    """streamz's ordered set of weak references, counting its changes.

    Every change goes through ``add`` or ``discard`` (``WeakSet`` and the
    ``MutableSet`` mixins call them, and so does the callback of a dying
    reference). The global version is bumped *before* a node is added: a
    reader that sees an unchanged version after an emit knows the emit
    cannot have reached a node added meanwhile.
    """

    def __init__(self, values: Any = ()) -> None:
        super().__init__(values)
        self.version = 0

    def add(self, value: Any) -> None:
        _bump()
        self.version += 1
        super().add(value)

    def discard(self, value: Any) -> None:
        _bump()
        self.version += 1
        super().discard(value)


class VersionedWeakrefSet(OrderedWeakrefSet):
    """An ``OrderedWeakrefSet`` that lists its live members fast and counts its changes."""

    def __init__(self, values: Any = ()) -> None:
        super().__init__()
        self.data = _VersionedOrderedSet()
        self._refs: tuple[weakref.ref[Any], ...] = ()
        self._seen = -1
        for value in values:
            self.add(value)

    def members(self) -> list[Any]:
        """The live members, in order (a new list: safe to hold while the set changes)."""
        data = self.data
        if self._seen != data.version:
            self._refs = tuple(data)
            self._seen = data.version
        members = [ref() for ref in self._refs]
        if None in members:  # a member died; its removal is pending
            members = [m for m in members if m is not None]
        return members


def has_downstreams(node: core.Stream) -> bool:
    """Does ``node`` have downstreams (perhaps one that just died: then it says yes)?"""
    downstreams = node.downstreams
    if type(downstreams) is VersionedWeakrefSet:
        return bool(len(downstreams.data))
    return bool(downstreams)


def live_downstreams(node: core.Stream) -> list[Any]:
    """``list(node.downstreams)``, without ``WeakSet`` iteration when the set allows it."""
    downstreams = node.downstreams
    if type(downstreams) is VersionedWeakrefSet:
        return downstreams.members()
    return list(downstreams)


#: Node types that finish with an element before ``update`` returns, or return the
#: futures of their asynchronous work (``sink`` of an ``async`` function). Exact types:
#: a subclass may hold elements. ``accumulate`` and ``unique`` keep state, not elements.
PASS_THROUGH: frozenset[type] = frozenset(
    {
        core.Stream,
        core.map,
        core.filter,
        core.starmap,
        core.pluck,
        core.flatten,
        core.accumulate,
        core.unique,
        core.union,
        core.slice,
        sinks.sink,
        sinks.sink_to_textfile,
    }
)


def _upgrade(node: core.Stream) -> None:
    """Give a node built before :func:`install` a versioned downstream set."""
    if type(node.downstreams) is not VersionedWeakrefSet:
        node.downstreams = VersionedWeakrefSet(node.downstreams)


def _downstream_nodes(source: core.Stream) -> Iterator[Any]:
    seen = {id(source)}
    _upgrade(source)
    todo = live_downstreams(source)
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, core.Stream):
            _upgrade(node)
            todo.extend(live_downstreams(node))


def finishes_in_emit(source: core.Stream) -> bool:
    """Does every node downstream of ``source`` finish with an element within its emit?

    True when all of them are of a :data:`PASS_THROUGH` type: then, once
    ``source._emit(x)`` has returned and the futures it returned are done, no
    node holds ``x`` any more. False as soon as one node may hold elements
    (buffers, windows, ``zip``, ``rate_limit``, async nodes, writers, unknown
    types). Re-check when :func:`graph_version` changes.
    """
    return all(type(node) in PASS_THROUGH for node in _downstream_nodes(source))


def install() -> None:
    """Make nodes built from now on keep their downstreams in a :class:`VersionedWeakrefSet`."""
    core.OrderedWeakrefSet = VersionedWeakrefSet
