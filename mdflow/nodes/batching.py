"""Batch the Redis writes that arrive within one loop turn into one round trip.

:class:`Batcher` is the mechanism behind ``to_redis`` / ``engine`` writes
(pipelined XADD) and ``from_redis`` acknowledgements (batched XACK): callers
``submit`` items and get a future; the first submit of a loop turn schedules a
flush, and everything submitted until that flush runs goes out together.
While a flush is in flight, new items pile up for the next one, so batches
grow with load and no item waits longer than one round trip.

A flush that fails because Redis went away is retried, with backoff, until
it succeeds or the batcher is closed: writes are retried, not dropped; the
node's state says ``reconnecting`` meanwhile. Errors retrying cannot fix
(refused credentials, ACL denials) fail the batch at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, overload

from ..reservoir import CONNECTION_ERRORS, Backoff
from .flushing import flush_failed, flush_succeeded
from .status import NodeStatus
from .thread_batching import ThreadBatcher

__all__ = ["BatchedWriter", "Batcher"]

logger = logging.getLogger(__name__)

FlushFn = Callable[[Sequence[Any]], Awaitable[Sequence[Any]]]
#: Who hears about one item's result: a future, or a ``done(result)`` callback.
Waiter = asyncio.Future[Any] | Callable[[Any], None]


def _deliver(waiter: Waiter, result: Any) -> None:
    """Hand one item's result to its future or its callback."""
    if isinstance(waiter, asyncio.Future):
        if waiter.done():
            return
        if isinstance(result, asyncio.CancelledError):
            waiter.cancel()
        elif isinstance(result, BaseException):
            waiter.set_exception(result)
        else:
            waiter.set_result(result)
        return
    try:
        waiter(result)
    except Exception:  # one caller's bug must not stop the others' results (logged)
        logger.exception("callback for a batched write raised")


class _Collector:
    """The waiter of a :meth:`Batcher.submit_many`: gathers the results, in order."""

    __slots__ = ("future", "results", "size")

    def __init__(self, future: asyncio.Future[list[Any]], size: int):
        self.future, self.size = future, size
        self.results: list[Any] = []

    def __call__(self, result: Any) -> None:
        self.results.append(result)
        if len(self.results) == self.size and not self.future.done():
            self.future.set_result(self.results)


class Batcher:
    """Collect items and flush them in batches on the running loop.

    Parameters
    ----------
    flush : async callable
        Takes the list of items, returns one result per item (an exception
        instance as a result fails only that item's future). Raising a
        connection error retries the whole batch after a backoff.
    name : str
        Used in log lines (the owning node).
    status : NodeStatus
        Where reconnects and errors are counted.
    max_batch : int
        Largest batch sent in one round trip.
    """

    def __init__(self, flush: FlushFn, name: str, status: NodeStatus, max_batch: int = 1000):
        self._flush_fn = flush
        self._name = name
        self._status = status
        self._max_batch = max_batch
        self._items: list[tuple[Any, Waiter]] = []
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(base=0.05, cap=2.0)
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def submit(self, item: Any, done: None = None) -> asyncio.Future[Any]: ...
    @overload
    def submit(self, item: Any, done: Callable[[Any], None]) -> None: ...
    def submit(
        self, item: Any, done: Callable[[Any], None] | None = None
    ) -> asyncio.Future[Any] | None:
        """Queue ``item``.

        Without ``done``, return a future that resolves with the item's flush
        result. With ``done``, call ``done(result)`` right after the flush
        instead (the result is an exception instance if the write failed, or
        ``CancelledError`` if the batcher was closed): no future, no extra
        loop turn, for callers that write many items.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] | None = None
        if done is None:
            future = loop.create_future()
            self._items.append((item, future))
        else:
            self._items.append((item, done))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return future

    def submit_many(self, items: Sequence[Any]) -> asyncio.Future[list[Any]]:
        """Queue several items; one future resolves with their results, in order.

        No future and no callback per item: what a write of many records needs.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if not items:
            future.set_result([])
            return future
        collect = _Collector(future, len(items))
        self._items.extend([(item, collect) for item in items])
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return future

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is flushed; False on timeout."""
        task = self._task
        if task is None or task.done():
            return True
        done, _ = await asyncio.wait({task}, timeout=timeout)
        return bool(done)

    def close(self) -> None:
        """Stop retrying: pending items fail with ``asyncio.CancelledError``."""
        self.closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        items, self._items = self._items, []
        for _, waiter in items:
            _deliver(waiter, asyncio.CancelledError("the writer was closed"))

    async def _run(self) -> None:
        await asyncio.sleep(0)  # let the rest of this loop turn submit too
        while self._items and not self.closed:
            batch, self._items = self._items[: self._max_batch], self._items[self._max_batch :]
            results = await self._flush_with_retry([item for item, _ in batch])
            for (_, waiter), result in zip(batch, results, strict=True):
                _deliver(waiter, result)

    async def _flush_with_retry(self, items: list[Any]) -> Sequence[Any]:
        while True:
            try:
                results = await self._flush_fn(items)
                flush_succeeded(self._status, self._backoff)
                return results
            except Exception as exc:
                if self.closed and isinstance(exc, CONNECTION_ERRORS):
                    raise
                delay = flush_failed(exc, self._status, self._backoff, self._name, len(items))
                if delay is None:
                    return [exc] * len(items)
                await asyncio.sleep(delay)


class BatchedWriter:
    """Base of mdflow's Redis writers: a :class:`Batcher` made on first use, on the loop.

    Subclasses implement ``async _flush(items) -> results`` (one pipelined round
    trip for all items) and call :meth:`submit`. Those that also implement the
    blocking ``_flush_sync(items) -> results`` accept items from threads that run
    no event loop (a script's ``emit``): a
    :class:`~mdflow.nodes.thread_batching.ThreadBatcher` writes them.
    """

    def __init__(self, url: str, name: str, status: NodeStatus):
        self._url = url
        self._name = name
        self._status = status
        self._batcher: Batcher | None = None
        self._threaded: ThreadBatcher | None = None

    @overload
    def submit(self, item: Any, done: None = None) -> asyncio.Future[Any]: ...
    @overload
    def submit(self, item: Any, done: Callable[[Any], None]) -> None: ...
    def submit(
        self, item: Any, done: Callable[[Any], None] | None = None
    ) -> asyncio.Future[Any] | None:
        """Queue ``item`` on the batcher: see :meth:`Batcher.submit`.

        From a thread that runs no event loop, ``done`` is called on the writer's
        own thread, and without it nothing is returned (see :meth:`submit_from_thread`).
        """
        if asyncio._get_running_loop() is None:
            self.submit_from_thread(item, done)
            return None
        if self._batcher is None:
            self._batcher = Batcher(self._flush, self._name, self._status)
        return self._batcher.submit(item, done)

    @property
    def writes_from_threads(self) -> bool:
        """Can items come from threads that run no event loop (``_flush_sync`` exists)?"""
        return type(self)._flush_sync is not BatchedWriter._flush_sync

    def submit_from_thread(self, item: Any, done: Callable[[Any], None] | None = None) -> None:
        """Queue ``item`` from a thread without a loop; ``done(result)`` runs on the writer's
        thread (without it, the write is counted as ``written`` or logged if it failed)."""
        if not self.writes_from_threads:
            msg = (
                f"{self._name}: writes must come from the node's event loop; "
                f"{type(self).__name__} has no synchronous flush"
            )
            raise RuntimeError(msg)
        if self._threaded is None:
            self._threaded = ThreadBatcher(self._flush_sync, self._name, self._status)
        self._threaded.submit(item, done)

    def queued_from_threads(self, callbacks: bool = True) -> int:
        """Items submitted from threads and not yet written (``callbacks=False``: only
        those submitted without ``done``)."""
        if self._threaded is None:
            return 0
        return len(self._threaded) if callbacks else self._threaded.unowned()

    def wait_from_thread(self, most: int) -> None:
        """Block the calling thread while more than ``most`` of its items are unwritten."""
        if self._threaded is not None:
            self._threaded.wait_below(most)

    async def _flush(self, items: Sequence[Any]) -> Sequence[Any]:
        raise NotImplementedError

    def _flush_sync(self, items: Sequence[Any]) -> Sequence[Any]:
        raise NotImplementedError

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every item submitted so far is written; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._batcher is not None and not await self._batcher.drain(timeout):
            return False
        while self.queued_from_threads():  # (written on the writer's thread)
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    def close(self) -> None:
        """Stop retrying; writes still pending fail with ``CancelledError``."""
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None
        if self._threaded is not None:
            self._threaded.close()
            self._threaded = None
