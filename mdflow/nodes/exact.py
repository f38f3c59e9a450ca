"""Exact acknowledgement for any streamz graph: references held for as long as work goes on.

streamz counts references to an element (a ``RefCounter`` in its metadata) while
a node *holds* it (a buffer, a window, a zip); a node's ``_emit`` releases its
count as soon as the downstream ``update`` calls *return*. Asynchronous work
(an async sink, ``rate_limit``, ``map_async``) goes on after that, and only the
futures that travel back up tell when it is done. In streamz 0.6.6 those
futures reach only the caller that triggered the emit; every other element in
a window, a zip or a ``combine_latest`` is released while the sink still works
on it, and its Redis entry is acknowledged too early.

:func:`exact_emit` is a drop-in ``Stream._emit`` that closes the gap for every
node at once, whoever holds the element:

* the references of **every** element whose metadata travelled with an emit
  are held until all the futures that emit returned are done;
* a failure (raised at once, or by one of those futures) is reported to the
  sources of every such element (``"fail"`` in the metadata), so none of them is
  acknowledged;
* coroutines are turned into tasks once, so a node that hands the same
  result to several callers (``timed_window``) never has a coroutine awaited
  twice.

It changes nothing for elements without metadata, nor for graphs whose nodes
are all synchronous, except one empty-list check per emit. It is written as a
change that could be offered to streamz itself; :func:`install` puts it in place
of ``Stream._emit`` (mdflow's import does that).

Examples
--------
>>> import asyncio
>>> from streamz import RefCounter, Stream
>>> async def main():
...     done = []
...     ref = RefCounter(initial=1, cb=lambda: done.append("acked"))
...     a, b = Stream(asynchronous=True), Stream(asynchronous=True)
...     gate = asyncio.Event()
...     async def slow(pair):
...         await gate.wait()
...     a.zip(b).sink(slow)
...     await a.emit("a0", metadata=[{"ref": ref}])
...     ref.release()                   # the source is done with a0; the zip holds it
...     task = asyncio.ensure_future(b.emit("b0"))
...     await asyncio.sleep(0.01)
...     held = list(done)               # the sink still works on (a0, b0)
...     gate.set()
...     await task
...     await asyncio.sleep(0.01)
...     return held, done
>>> asyncio.run(main())
([], ['acked'])
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable
from typing import Any

from streamz import Stream
from tornado import gen

from .downstreams import install as use_versioned_downstreams
from .downstreams import live_downstreams
from .emit import first_error, report_failure

__all__ = ["as_futures", "exact_emit", "hold_until_done", "install"]


def exact_emit(self: Stream, x: Any, metadata: list[dict] | None = None) -> list[Any]:
    """``Stream._emit`` that holds references until the downstream's async work is done.

    Parameters
    ----------
    x : object
        The element.
    metadata : list of dict, optional
        One dict per source element; ``"ref"`` (a ``RefCounter``) and mdflow's
        ``"fail"`` (a callable taking the exception) are used here.

    Returns
    -------
    list
        The futures of the downstream's asynchronous work (coroutines already
        wrapped in tasks when a loop is running).
    """
    self.current_value = x
    self.current_metadata = metadata
    downstreams = live_downstreams(self)
    if metadata:
        self._retain_refs(metadata, len(downstreams))
    else:
        metadata = []
    result: list[Any] = []
    for position, downstream in enumerate(downstreams):
        try:
            returned = downstream.update(x, who=self, metadata=metadata)
        except Exception as exc:
            if metadata:
                # streamz leaves these counts retained forever on an exception.
                self._release_refs(metadata, len(downstreams) - position)
                report_failure(metadata, exc)
            raise
        if returned:
            futures = as_futures(returned)
            if futures:
                if metadata:
                    hold_until_done(self, metadata, futures)
                result.extend(futures)
        if metadata:
            self._release_refs(metadata)
    return result


def as_futures(returned: Any) -> list[Any]:
    """What a node's ``update`` returned, as a flat list of futures.

    ``None`` and ``gen.moment`` are dropped; coroutines become tasks (once: the
    task is what every caller shares); concurrent futures are wrapped. Without
    a running loop, awaitables are passed on as they are.
    """
    items = returned if type(returned) is list else [returned]
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return [item for item in items if item is not None and item is not gen.moment]
    futures = []
    for item in items:
        if item is None or item is gen.moment:
            continue
        if isinstance(item, asyncio.Future):
            futures.append(item)
        elif isinstance(item, concurrent.futures.Future):
            futures.append(asyncio.wrap_future(item))
        elif isinstance(item, Awaitable):
            futures.append(asyncio.ensure_future(item))
        else:
            futures.append(item)
    return futures


def hold_until_done(node: Stream, metadata: list[dict], futures: list[Any]) -> None:
    """Retain the references in ``metadata`` until every future is done; report a failure.

    Futures that are not asyncio futures (no loop was running) cannot be
    watched; nothing is held for them.
    """
    watched = [f for f in futures if isinstance(f, asyncio.Future)]
    if not watched:
        return
    node._retain_refs(metadata)
    remaining = [len(watched)]

    def one_done(_: asyncio.Future[Any]) -> None:
        remaining[0] -= 1
        if remaining[0]:
            return
        error = first_error(watched)
        if error is not None:
            report_failure(metadata, error)
        node._release_refs(metadata)

    for future in watched:
        future.add_done_callback(one_done)


def install() -> None:
    """Put :func:`exact_emit` in place of ``Stream._emit`` and fix the nodes with loops.

    Idempotent; mdflow calls it on import. See :mod:`mdflow.nodes.exact_nodes`.
    """
    from .exact_nodes import install_node_fixes

    use_versioned_downstreams()
    Stream._emit = exact_emit
    install_node_fixes()
