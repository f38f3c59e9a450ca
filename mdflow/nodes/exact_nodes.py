"""Corrected methods for the streamz nodes that lose, stall or swallow (streamz 0.6.6).

Each function here is a drop-in for the streamz method of the same name,
written so it could be offered upstream. :func:`install_node_fixes` sets them
on streamz's own classes, so every instance is fixed, including the Dask
variants that inherit them and nodes built before mdflow was imported:

========================  ==================================================================
node / method             what streamz does, and the fix
========================  ==================================================================
``buffer.cb``             the loop dies on the first exception downstream (the graph stalls
``delay.cb``              for good); the fixed loops log it, release the element's
``timed_window.cb``       references and go on. Failures reach the element's sources
``timed_window_unique``   through :func:`mdflow.nodes.exact.exact_emit`.
``latest.cb``             also keeps the last element's references until the next one
                          arrives, and misses an element that arrives while it emits (it
                          waits for the next); fixed: released once emitted, never missed.
``map_async``             an exception in the function is logged and swallowed (the entry
                          is acknowledged after one try); fixed: reported to the sources.
``flatten.update``        emits every item but the last *without metadata*: if a filter
                          drops the last, the batch is acknowledged while the others are
                          still in flight; fixed: every item carries the metadata.
``slice.update``          calls the public ``emit`` (a blocking call on the loop's own
                          thread in script mode) and drops the futures; fixed: ``_emit``.
``partition._flush``      leaks references when the downstream raises; fixed.
``collect.flush``         keeps the cache when the downstream raises, so every later flush
                          fails on the same element (a stall); fixed: the cache is emptied
                          first and the references released even on failure.
``partition_unique``      emits a list of metadata *lists* where streamz expects dicts: no
                          reference is counted, and a failure report cannot reach the
                          sources; fixed: the metadata is flattened.
``unique.update``         remembers an element even when the downstream failed on it, so
                          its retry is dropped as a duplicate and acknowledged unprocessed;
                          fixed: a failed element is forgotten.
``sink.update``           (speed, same behaviour) asks ``inspect.isawaitable`` of every
                          result, also ``None``: about a tenth of a ``map -> filter -> sink``
                          chain; the fixed one returns at once when the function returned None.
``map.update``            logs the traceback of *every* exception of the function, then
                          raises it (to the source, which logs it too): a stream of poison
                          entries spends most of its time formatting tracebacks (~1 ms
                          each). Fixed: the first 10 of each node, then one in 1000, are
                          logged as before (logger ``streamz.core``); the others at DEBUG.
========================  ==================================================================
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

from streamz import core, sinks
from tornado import gen

from .emit import report_failure
from .status import node_name, sampled_level, sampled_note

__all__ = ["install_node_fixes"]

logger = logging.getLogger(__name__)


async def _settle(node: core.Stream, futures: list[Any] | None) -> None:
    """Wait for the futures of an emit; log a failure instead of raising it.

    The failure has already been reported to the element's sources by
    ``exact_emit``; a loop that raised here would stop for good.
    """
    if not futures:
        return
    waiting = [f for f in futures if isinstance(f, asyncio.Future)]
    if waiting:
        await asyncio.wait(waiting)
    for future in waiting:
        if future.cancelled():
            continue
        if future.exception() is not None:
            _log_downstream_error(node, future.exception())


def _log_downstream_error(node: core.Stream, exc: BaseException | None) -> None:
    logger.error(
        "%s: an element failed downstream (%s: %s); it is not acknowledged, the node goes on",
        node_name(node),
        type(exc).__name__,
        exc,
    )


async def _emit_and_settle(node: core.Stream, x: Any, metadata: list[dict] | None) -> None:
    try:
        futures = node._emit(x, metadata=metadata)
    except Exception as exc:  # noqa: BLE001 - reported to the sources by exact_emit; go on
        _log_downstream_error(node, exc)
        return
    await _settle(node, futures)


# --- loops that must survive a failing downstream --------------------------------------------
async def buffer_cb(self: core.buffer) -> None:
    """``buffer``'s loop: emit what was queued, one element at a time, forever."""
    while True:
        x, metadata = await self.queue.get()
        try:
            await _emit_and_settle(self, x, metadata)
        finally:
            self._release_refs(metadata)


async def delay_cb(self: core.delay) -> None:
    """``delay``'s loop: emit each element ``interval`` seconds after the previous one."""
    loop_time = self.loop.time
    while True:
        last = loop_time()
        x, metadata = await self.queue.get()
        try:
            await _emit_and_settle(self, x, metadata)
        finally:
            self._release_refs(metadata)
        duration = self.interval - (loop_time() - last)
        if duration > 0:
            await asyncio.sleep(duration)


async def timed_window_cb(self: core.timed_window) -> None:
    """``timed_window``'s loop: every ``interval``, emit what arrived since the last one."""
    while True:
        window, self._buffer = self._buffer, []
        held, self.metadata_buffer = self.metadata_buffer, []
        metadata = [m for ml in held for m in ml]
        await _window_emit(self, window, metadata)
        await asyncio.sleep(self.interval)


async def timed_window_unique_cb(self: core.timed_window_unique) -> None:
    """``timed_window_unique``'s loop: like ``timed_window``, one element per key."""
    while True:
        window, self._buffer = tuple(self._buffer.values()), {}
        held, self._metadata_buffer = list(self._metadata_buffer.values()), {}
        metadata = [m for ml in held for m in ml]
        await _window_emit(self, window, metadata)
        await asyncio.sleep(self.interval)


async def _window_emit(node: Any, window: Any, metadata: list[dict]) -> None:
    # `last` is what update() returns to callers (backpressure): the futures of this emit.
    try:
        try:
            node.last = node._emit(window, metadata)
        except Exception as exc:  # noqa: BLE001 - reported to the sources by exact_emit
            node.last = []
            _log_downstream_error(node, exc)
        await _settle(node, node.last)
    finally:
        node._release_refs(metadata)


def latest_update(self: core.latest, x: Any, who: Any = None, metadata: Any = None) -> None:
    """Keep only the newest element; the one it replaces is dropped (and released)."""
    if self.next_metadata:
        self._release_refs(self.next_metadata)
    self._retain_refs(metadata)
    self.next = [x]
    self.next_metadata = metadata
    self.loop.add_callback(self.condition.notify)


async def latest_cb(self: core.latest) -> None:
    """``latest``'s loop: emit the newest element whenever the downstream is free."""
    while True:
        if not self.next:
            # streamz waits even when an element arrived while it was emitting (its notify
            # found no waiter): that element then waits for the next one, or forever.
            await self.condition.wait()
            continue
        [x], metadata = self.next, self.next_metadata
        self.next, self.next_metadata = [], None
        try:
            await _emit_and_settle(self, x, metadata)
        finally:
            if metadata:
                self._release_refs(metadata)


# --- map_async: failures reach the source ---------------------------------------------------
async def map_async_work_callback(self: core.map_async, stop_work: asyncio.Event) -> None:
    """``map_async``'s worker: await each job in order, emit its result, report failures."""
    while not stop_work.is_set():
        task, metadata = await self.work_queue.get()
        self.work_queue.task_done()
        try:
            try:
                result = await task
            except Exception as exc:  # noqa: BLE001 - the user's function: report, go on
                logger.error(
                    "%s: %s raised %s: %s; the element is not acknowledged",
                    node_name(self),
                    getattr(self.func, "__name__", self.func),
                    type(exc).__name__,
                    exc,
                )
                report_failure(metadata, exc)
                if self.stop_on_exception:
                    self.stop()
                continue
            await _emit_and_settle(self, result, metadata)
        finally:
            self._release_refs(metadata)


# --- pass-through nodes ----------------------------------------------------------------------
def flatten_update(self: core.flatten, x: Any, who: Any = None, metadata: Any = None) -> list:
    """Emit each item of ``x``; every item carries the metadata of ``x``."""
    futures: list[Any] = []
    for item in x:
        returned = self._emit(item, metadata=metadata)
        if type(returned) is list:
            futures.extend(returned)
        elif returned is not None:
            futures.append(returned)
    return futures


def slice_update(self: core.slice, x: Any, who: Any = None, metadata: Any = None) -> list:
    """Pass on the elements whose position the slice selects."""
    futures: list[Any] = []
    if self.state >= self.star and self.state % self.step == 0:
        futures = self._emit(x, metadata=metadata)
    self.state += 1
    self._check_end()
    return futures


@gen.coroutine
def partition_flush(self: core.partition, key: Any) -> Any:
    """Emit the partition of ``key``; its references are released even if the emit fails."""
    result, self._buffer[key] = self._buffer[key], []
    metadata_result, self._metadata_buffer[key] = self._metadata_buffer[key], []
    try:
        yield self._emit(tuple(result), list(metadata_result))
    finally:
        self._release_refs(metadata_result)


def partition_unique_update(
    self: core.partition_unique, x: Any, who: Any = None, metadata: Any = None
) -> list:
    """Collect up to ``n`` elements with distinct keys, then emit them as one tuple."""
    self._retain_refs(metadata)
    key = self._get_key(x)
    if self.keep == "last":
        # re-insert so the emitted tuple follows the elements' actual order
        self._buffer.pop(key, None)
        old = self._metadata_buffer.pop(key, None)
        if old:
            self._release_refs(old)  # replaced: dropped, like a filtered element
        self._buffer[key] = x
        self._metadata_buffer[key] = metadata
    elif key not in self._buffer:
        self._buffer[key] = x
        self._metadata_buffer[key] = metadata
    else:
        self._release_refs(metadata)  # a duplicate key is dropped
    if len(self._buffer) < self.n:
        return []
    result, self._buffer = tuple(self._buffer.values()), {}
    held, self._metadata_buffer = list(self._metadata_buffer.values()), {}
    flat = [m for ml in held if ml for m in ml]
    try:
        return self._emit(result, flat)
    finally:
        self._release_refs(flat)


def collect_flush(self: core.collect, _: Any = None) -> list:
    """Emit everything collected so far as one tuple and start a new collection."""
    out = tuple(self.cache)
    metadata = list(self.metadata_cache)
    self.cache.clear()
    self.metadata_cache.clear()
    try:
        return self._emit(out, metadata)
    finally:
        self._release_refs(metadata)


_unique_update = core.unique.update  # streamz's own, wrapped below


def unique_update(self: core.unique, x: Any, who: Any = None, metadata: Any = None) -> Any:
    """Pass on elements not seen before; forget an element the downstream failed on.

    The failure may come at once or much later (an async sink, ``to_redis``):
    a ``"fail"`` hook travels in the element's metadata, so every failure
    report reaches it.
    """
    forget = {"fail": partial(_forget, self, self.key(x))}
    return _unique_update(self, x, who=who, metadata=[*(metadata or ()), forget])


def _forget(node: core.unique, key: Any, _: BaseException | None = None) -> None:
    if isinstance(node.seen, list):
        if key in node.seen:
            node.seen.remove(key)
    else:
        node.seen.pop(key, None)


_streamz_logger = logging.getLogger(core.__name__)  # where streamz's map logs its failures


def map_update(self: core.map, x: Any, who: Any = None, metadata: Any = None) -> Any:
    try:
        result = self.func(x, *self.args, **self.kwargs)
    except Exception as exc:
        failures = self.__dict__.get("_failures", 0) + 1
        self._failures = failures  # (a streamz map has no slots)
        level = sampled_level(failures, logging.ERROR)
        _streamz_logger.log(level, "%s%s", exc, sampled_note(failures), exc_info=exc)
        raise
    return self._emit(result, metadata=metadata)


def sink_update(self: sinks.sink, x: Any, who: Any = None, metadata: Any = None) -> Any:
    result = self.func(x, *self.args, **self.kwargs)
    if result is None:  # (most sinks: print, list.append, a plain function)
        return []
    return result if gen.isawaitable(result) else []


_FIXES: dict[tuple[type, str], Any] = {
    (sinks.sink, "update"): sink_update,
    (core.map, "update"): map_update,
    (core.buffer, "cb"): buffer_cb,
    (core.delay, "cb"): delay_cb,
    (core.timed_window, "cb"): timed_window_cb,
    (core.timed_window_unique, "cb"): timed_window_unique_cb,
    (core.latest, "update"): latest_update,
    (core.latest, "cb"): latest_cb,
    (core.map_async, "work_callback"): map_async_work_callback,
    (core.flatten, "update"): flatten_update,
    (core.slice, "update"): slice_update,
    (core.partition, "_flush"): partition_flush,
    (core.unique, "update"): unique_update,
    (core.collect, "flush"): collect_flush,
    (core.partition_unique, "update"): partition_unique_update,
}


def install_node_fixes() -> None:
    """Set the corrected methods on streamz's classes (idempotent)."""
    for (cls, name), method in _FIXES.items():
        setattr(cls, name, method)
