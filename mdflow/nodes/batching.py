"""Batch the Redis writes that arrive within one loop turn into one round trip.

:class:`Batcher` is the mechanism behind ``to_redis`` / ``engine`` writes
(pipelined XADD) and ``from_redis`` acknowledgements (batched XACK): callers
``submit`` items and get a future; the first submit of a loop turn schedules a
flush, and everything submitted until that flush runs goes out together.
While a flush is in flight, new items pile up for the next one, so batches
grow with load and no item waits longer than one round trip.

A flush that fails because Redis went away is retried, with backoff, until
it succeeds or the batcher is closed: writes are retried, not dropped; the
node's state says ``reconnecting`` meanwhile. Items Redis refuses because it
is out of memory (``OOM``) are retried, with backoff, until memory frees; the
node's state says ``paused`` meanwhile (see :mod:`.flushing`). Errors retrying
cannot fix (refused credentials, ACL denials) fail the batch at once.

:class:`BatchedWriter` is what mdflow's writers build on: it also refuses, before
sending it, an item with a value larger than the server accepts
(:mod:`mdflow.reservoir.limits`), which Redis would answer by closing the
connection; the other items of its batch are written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, overload

import redis

from ..errors import ElementTooLarge
from ..reservoir import (
    CONNECTION_ERRORS,
    Backoff,
    mask_text,
    mask_url,
    sync_client,
    translate_error,
)
from ..reservoir.limits import (
    RELEARN_AFTER,
    WriteLimits,
    is_out_of_memory,
    memory_report,
    write_limits,
)
from .flushing import (
    Pause,
    flush_failed,
    flush_succeeded,
    out_of_memory_reason,
    refused_for_memory,
)
from .status import NodeStatus
from .thread_batching import ThreadBatcher

__all__ = ["BatchedWriter", "Batcher"]

logger = logging.getLogger(__name__)

FlushFn = Callable[[Sequence[Any]], Awaitable[Sequence[Any]]]
#: Says how full Redis is when it answered ``OOM`` (for the pause reason).
ExplainFn = Callable[[BaseException], Awaitable[str]]
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
    explain : async callable, optional
        Given an ``OOM`` refusal, says how full Redis is (for the pause reason).
    """

    def __init__(
        self,
        flush: FlushFn,
        name: str,
        status: NodeStatus,
        max_batch: int = 1000,
        explain: ExplainFn | None = None,
    ):
        self._flush_fn = flush
        self._name = name
        self._status = status
        self._max_batch = max_batch
        self._explain = explain
        self._items: list[tuple[Any, Waiter]] = []
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(base=0.05, cap=2.0)
        self._pause = Pause(status, name)
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
        """Flush; retry the whole batch while Redis is away, and the items it refused for
        lack of memory (``OOM``) until it has memory again (paused meanwhile)."""
        results = await self._flush_until_sent(items)
        full = refused_for_memory(results)
        if not full:
            if self._pause.active:
                self._pause.end()
            return results
        results = list(results)
        while full and not self.closed:
            oom = results[full[0]]
            if self._pause.active and self._status.pause_reason:
                reason = self._status.pause_reason
            else:
                report = await self._explain(oom) if self._explain is not None else ""
                reason = out_of_memory_reason(oom, report)
            await asyncio.sleep(self._pause.begin(reason, len(full)))
            if self.closed:
                break
            again = await self._flush_until_sent([items[i] for i in full])
            for i, result in zip(full, again, strict=True):
                results[i] = result
            full = [i for i in full if is_out_of_memory(results[i])]
        if full:  # closed while paused
            for i in full:
                results[i] = asyncio.CancelledError("the writer was closed")
        else:
            self._pause.end()
        return results

    async def _flush_until_sent(self, items: list[Any]) -> Sequence[Any]:
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

    Subclasses that implement ``_largest(item)`` (the bytes of the item's largest
    value) and ``_measure(item)`` (where it goes, its size, what its largest value
    is) have each item checked against the largest value the server accepts
    (:func:`~mdflow.reservoir.limits.write_limits`, learned once per server): an
    item over it fails with :class:`~mdflow.ElementTooLarge` and is not sent.
    """

    def __init__(self, url: str, name: str, status: NodeStatus):
        self._url = url
        self._name = name
        self._status = status
        self._batcher: Batcher | None = None
        self._threaded: ThreadBatcher | None = None
        # What the server accepts in one value: asked by the first flush, forgotten when the
        # connection is lost (the server may come back with another configuration)
        self._limits: WriteLimits | None = None
        #: The largest value the server accepts, once a flush learned it (0: not yet).
        self.max_value = 0
        self._relearning = False

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
        return self._loop_batcher().submit(item, done)

    def _loop_batcher(self) -> Batcher:
        if self._batcher is None:
            self._batcher = Batcher(
                self._checked_flush, self._name, self._status, explain=self._explain
            )
        return self._batcher

    @property
    def writes_from_threads(self) -> bool:
        """Can items come from threads that run no event loop (``_flush_sync`` exists)?"""
        return type(self)._flush_sync is not BatchedWriter._flush_sync

    def submit_from_thread(self, item: Any, done: Callable[[Any], None] | None = None) -> None:
        """Queue ``item`` from a thread without a loop; ``done(result)`` runs on the writer's
        thread (without it, the write is counted as ``written``, or kept for
        :meth:`take_failures` and logged if it failed)."""
        if not self.writes_from_threads:
            msg = (
                f"{self._name}: writes must come from the node's event loop; "
                f"{type(self).__name__} has no synchronous flush"
            )
            raise RuntimeError(msg)
        if self._threaded is None:
            self._threaded = ThreadBatcher(
                self._checked_flush_sync, self._name, self._status, explain=self._explain_sync
            )
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

    def take_failures(self) -> list[tuple[Any, BaseException]]:
        """The items submitted from threads without ``done`` whose writes failed since the
        last call, with their errors (no one else was told about them)."""
        return [] if self._threaded is None else self._threaded.take_failures()

    def failed_from_threads(self) -> bool:
        """Are there failures for :meth:`take_failures`? (cheap: checked on every emit)"""
        return self._threaded is not None and self._threaded.has_failures()

    def target_of(self, item: Any) -> str:
        """Where ``item`` was to be written, for messages (``stream 'prices'``)."""
        return self._measure(item)[0]

    # --- what subclasses provide ---------------------------------------------------------
    async def _flush(self, items: Sequence[Any]) -> Sequence[Any]:
        raise NotImplementedError

    def _flush_sync(self, items: Sequence[Any]) -> Sequence[Any]:
        raise NotImplementedError

    def _largest(self, item: Any) -> int:
        """Bytes of the item's largest value (one argument of its commands); 0: no check."""
        return 0

    def _measure(self, item: Any) -> tuple[str, int, str]:
        """Where the item goes (``stream 'prices'``), its size in bytes, and what its
        largest value is (``field 'px'``): for the message of a refusal."""
        return "Redis", self._largest(item), "largest value"

    # --- values too large for the server --------------------------------------------------
    def too_large(self, item: Any) -> ElementTooLarge | None:
        """The refusal of ``item`` if it is larger than the server accepts and its limit is
        known already (the first flush learns it), else None.

        A limit learned more than :data:`~mdflow.reservoir.limits.RELEARN_AFTER` seconds
        ago may have been raised since: a thread without a loop asks the server again
        before refusing; on a loop (no blocking there), the item is refused and the server
        is asked in the background, for the items that follow.
        """
        limits = self._limits
        if limits is None or self._largest(item) <= limits.max_value:
            return None
        if time.monotonic() - limits.learned_at > RELEARN_AFTER:
            loop = asyncio._get_running_loop()
            if loop is not None:
                self._relearn_soon(loop)
                return self._refusal(item, limits)
            try:
                limits = self._learned(write_limits(sync_client(self._url), self._url))
            except (redis.RedisError, OSError):
                return None  # (the flush will know)
            if self._largest(item) <= limits.max_value:
                return None
        return self._refusal(item, limits)

    def _learned(self, limits: WriteLimits) -> WriteLimits:
        """Keep what the server said; return it."""
        self._limits, self.max_value = limits, limits.max_value
        return limits

    def _forget_limits(self) -> None:
        """The connection was lost: the server may come back with another configuration."""
        self._limits, self.max_value = None, 0

    def _current_limits(self, conn: redis.Redis, refresh: bool = False) -> WriteLimits:
        """What the server accepts: asked once; with ``refresh``, asked again if old."""
        limits = self._limits
        if limits is None or (refresh and time.monotonic() - limits.learned_at > RELEARN_AFTER):
            limits = self._learned(write_limits(conn, self._url))
        return limits

    def _relearn_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ask the server for its limit again, off the loop (one question at a time)."""
        if self._relearning:
            return
        self._relearning = True
        learn = partial(write_limits, sync_client(self._url), self._url)

        def learned(future: asyncio.Future[WriteLimits]) -> None:
            self._relearning = False
            if future.cancelled():
                return
            error = future.exception()
            if error is None:
                self._learned(future.result())
            else:  # (the next flush learns it)
                logger.debug(
                    "%s: asking Redis its limits failed: %s", self._name, mask_text(str(error))
                )

        loop.run_in_executor(None, learn).add_done_callback(learned)

    def _refusal(self, item: Any, limits: WriteLimits) -> ElementTooLarge:
        target, size, what = self._measure(item)
        largest = self._largest(item)
        assumed = " (Redis' default: CONFIG GET was refused)" if limits.assumed else ""
        msg = (  # (the figures first: a dead letter's reason keeps the first 300 characters)
            f"{self._name}: element too large: its {what} is {largest:,} bytes, more than the "
            f"{limits.max_value:,} bytes Redis accepts in one value ({limits.knob}{assumed} at "
            f"{mask_url(self._url)}); not written to {target} (element: {size:,} bytes). "
            "Write smaller elements, or raise the limit on the server: "
            f"CONFIG SET {limits.knob} <bytes>"
        )
        return ElementTooLarge(
            msg, self._name, target, size, largest, limits.max_value, limits.knob
        )

    def _oversized(self, items: Sequence[Any], limits: WriteLimits) -> dict[int, BaseException]:
        limit, largest = limits.max_value, self._largest
        return {
            i: self._refusal(item, limits) for i, item in enumerate(items) if largest(item) > limit
        }

    def _checked_flush_sync(self, items: Sequence[Any]) -> Sequence[Any]:
        """:meth:`_flush_sync`, except that items too large for the server are refused."""
        conn = sync_client(self._url)
        try:
            refused = self._oversized(items, self._current_limits(conn))
            if refused:  # (the limit may have been raised since it was learned: ask again)
                refused = self._oversized(items, self._current_limits(conn, refresh=True))
            if not refused:
                return self._flush_sync(items)
            rest = [item for i, item in enumerate(items) if i not in refused]
            return _merge(len(items), refused, self._flush_sync(rest) if rest else [])
        except CONNECTION_ERRORS:
            self._forget_limits()
            raise

    async def _checked_flush(self, items: Sequence[Any]) -> Sequence[Any]:
        """:meth:`_flush`, except that items too large for the server are refused."""
        try:
            refused = self._oversized(items, await self._limits_async(refresh=False))
            if refused:  # (the limit may have been raised since it was learned: ask again)
                refused = self._oversized(items, await self._limits_async(refresh=True))
            if not refused:
                return await self._flush(items)
            rest = [item for i, item in enumerate(items) if i not in refused]
            return _merge(len(items), refused, await self._flush(rest) if rest else [])
        except CONNECTION_ERRORS:
            self._forget_limits()
            raise

    async def _limits_async(self, refresh: bool) -> WriteLimits:
        """:meth:`_current_limits` off the loop (asked only the first time, or when old)."""
        limits = self._limits
        if limits is not None and not (
            refresh and time.monotonic() - limits.learned_at > RELEARN_AFTER
        ):
            return limits
        learn = partial(self._current_limits, sync_client(self._url), refresh)
        try:
            return await asyncio.get_running_loop().run_in_executor(None, learn)
        except redis.RedisError as exc:  # (as the loop's client says it: URL masked, a hint)
            raise translate_error(exc, self._url) from exc

    # --- Redis out of memory ----------------------------------------------------------------
    def _explain_sync(self, _: BaseException) -> str:
        return memory_report(sync_client(self._url))

    async def _explain(self, oom: BaseException) -> str:
        return await asyncio.get_running_loop().run_in_executor(None, self._explain_sync, oom)

    # --- draining and closing -------------------------------------------------------------
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


def _merge(count: int, refused: dict[int, BaseException], sent: Sequence[Any]) -> list[Any]:
    """The results of ``count`` items: the refusals in their places, the replies of the
    items sent (in order) in the others."""
    replies = iter(sent)
    return [refused[i] if i in refused else next(replies) for i in range(count)]
