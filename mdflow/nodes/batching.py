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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, overload

from ..reservoir import CONNECTION_ERRORS, Backoff, is_fatal, mask_text
from .status import NodeStatus

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
                self._backoff.reset()
                if self._status.state == "reconnecting":
                    self._status.state = "running"
                return results
            except CONNECTION_ERRORS as exc:
                if self.closed:
                    raise
                if is_fatal(exc):  # e.g. the password was refused: retrying cannot fix it
                    self._status.error(exc)
                    return [exc] * len(items)
                self._status.error(exc)
                self._status.incr("reconnects")
                if self._status.state == "running":
                    self._status.state = "reconnecting"
                delay = self._backoff.next_delay()
                logger.warning(
                    "%s: Redis unavailable while writing %d item(s) (%s); retry %d in %.2fs",
                    self._name,
                    len(items),
                    mask_text(str(exc)),
                    self._backoff.failures,
                    delay,
                )
                await asyncio.sleep(delay)
            except Exception as exc:  # noqa: BLE001 - fail this batch's futures, keep the batcher
                logger.error(
                    "%s: writing %d item(s) failed: %s", self._name, len(items), mask_text(str(exc))
                )
                self._status.error(exc)
                return [exc] * len(items)


class BatchedWriter:
    """Base of mdflow's Redis writers: a :class:`Batcher` made on first use, on the loop.

    Subclasses implement ``async _flush(items) -> results`` (one pipelined round
    trip for all items) and call :meth:`submit`.
    """

    def __init__(self, url: str, name: str, status: NodeStatus):
        self._url = url
        self._name = name
        self._status = status
        self._batcher: Batcher | None = None

    @overload
    def submit(self, item: Any, done: None = None) -> asyncio.Future[Any]: ...
    @overload
    def submit(self, item: Any, done: Callable[[Any], None]) -> None: ...
    def submit(
        self, item: Any, done: Callable[[Any], None] | None = None
    ) -> asyncio.Future[Any] | None:
        """Queue ``item`` on the batcher: see :meth:`Batcher.submit`."""
        if self._batcher is None:
            self._batcher = Batcher(self._flush, self._name, self._status)
        return self._batcher.submit(item, done)

    async def _flush(self, items: Sequence[Any]) -> Sequence[Any]:
        raise NotImplementedError

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every item submitted so far is written; False on timeout."""
        return True if self._batcher is None else await self._batcher.drain(timeout)

    def close(self) -> None:
        """Stop retrying; writes still pending fail with ``CancelledError``."""
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None
