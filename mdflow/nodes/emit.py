"""Emitting into a graph and hearing back from it: awaited emits, failure reports, the loop.

streamz's ``_emit`` returns the futures of the graph's asynchronous nodes;
awaiting them is how a slow sink slows its source (backpressure) and how a
source learns that an element failed downstream.
"""

from __future__ import annotations

import asyncio
from typing import Any

from streamz import Stream
from tornado.ioloop import IOLoop

__all__ = ["emit_and_wait", "first_error", "on_current_loop", "report_failure"]


async def emit_and_wait(node: Stream, x: Any, metadata: list[dict] | None = None) -> None:
    """Emit ``x`` downstream and wait for every future the graph hands back.

    Synchronous graphs return no futures, so this costs no extra loop turn;
    async nodes (``rate_limit``, async sinks, ``to_redis``...) make the caller
    wait, which is how a slow sink slows its source.
    """
    futures = node._emit(x, metadata=metadata)
    if futures:
        futures = [asyncio.ensure_future(f) for f in futures]
        # asyncio.wait, unlike gather, leaves the graph's work running if this waiter is
        # cancelled (SupervisedSource.stop() interrupts a source blocked on a slow graph).
        await asyncio.wait(futures)
        error = first_error(futures)
        if error is not None:
            raise error


def on_current_loop(kwargs: dict) -> dict:
    """Make ``asynchronous=True`` mean "run on the loop that is running" for a source.

    streamz moves every source without an explicit ``loop=`` to its background
    IOLoop thread, even with ``asynchronous=True``; mdflow sources honour it.
    """
    if kwargs.get("asynchronous") and kwargs.get("loop") is None:
        kwargs["loop"] = IOLoop.current()
    return kwargs


def report_failure(metadata: list[dict] | None, exc: BaseException) -> None:
    """Tell the sources of an element that processing it failed.

    mdflow sources put a ``"fail"`` callable next to the ``"ref"`` counter in
    each element's metadata; a node that finishes its work later (after its
    ``update`` returned) calls this instead of raising, so the source does not
    acknowledge the entry and redelivers it. One failure may be reported more
    than once (by the node, and by each emit its future travels back through):
    ``fail`` callables must be idempotent.
    """
    for meta in metadata or ():
        fail = meta.get("fail")
        if fail is not None:
            fail(exc)


def first_error(futures: list[asyncio.Future]) -> BaseException | None:
    for future in futures:
        if future.cancelled():
            return asyncio.CancelledError("the graph cancelled this element")
        if future.exception() is not None:
            return future.exception()
    return None
