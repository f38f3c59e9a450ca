"""Batch writes submitted from threads that run no event loop: a script's ``emit``.

A plain ``Stream()`` in a script has no event loop. Giving its writing sink one
would make every ``emit`` hop to the loop's thread and wait (about 100 µs per
element). :class:`ThreadBatcher` lets the emitting thread queue the write and
go on; a writer thread of its own sends everything queued meanwhile in one
pipelined round trip with redis-py's synchronous client (the fastest plain
redis-py), then calls each item's ``done(result)`` on that thread. Items
submitted without ``done`` cost no callback: their successes are counted in
bulk (``written``), their failures logged and counted as errors.

Failures follow :class:`~mdflow.nodes.Batcher`: a flush that fails because Redis
went away is retried with backoff until it succeeds (the node is
``reconnecting`` meanwhile); items Redis refuses for lack of memory (``OOM``)
are retried until it has memory again (the node is ``paused``); refused
credentials and other errors fail the batch; :meth:`ThreadBatcher.close` fails
what is still queued with ``CancelledError``. The failures of items submitted
without ``done`` are kept for :meth:`ThreadBatcher.take_failures`: the sink
raises them to the script that emitted.

Examples
--------
>>> from mdflow.nodes import NodeStatus
>>> from mdflow.nodes.thread_batching import ThreadBatcher
>>> batches = []
>>> def flush(items):
...     batches.append(list(items))
...     return [item * 10 for item in items]
>>> batcher = ThreadBatcher(flush, "example", NodeStatus(("written",)))
>>> results = []
>>> for item in (1, 2, 3):
...     batcher.submit(item, results.append)
>>> batcher.drain(timeout=5)
True
>>> results
[10, 20, 30]
>>> batcher.close()
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ..reservoir import Backoff, mask_text
from ..reservoir.limits import is_out_of_memory
from .flushing import (
    Pause,
    flush_failed,
    flush_succeeded,
    out_of_memory_reason,
    refused_for_memory,
)
from .status import NodeStatus

__all__ = ["ThreadBatcher"]

logger = logging.getLogger(__name__)

SyncFlushFn = Callable[[Sequence[Any]], Sequence[Any]]
#: Failures of items submitted without ``done`` kept for take_failures() (the oldest dropped).
MAX_KEPT_FAILURES = 1000


class ThreadBatcher:
    """Queue items from any thread; a daemon writer thread flushes them in batches.

    Parameters
    ----------
    flush : callable
        Takes the list of items, returns one result per item (an exception
        instance fails only that item). Runs on the writer thread; it may block.
    name : str
        Used in log lines and as the thread's name (the owning node).
    status : NodeStatus
        Where reconnects and errors are counted.
    max_batch : int
        Largest batch sent in one round trip.
    explain : callable, optional
        Given an ``OOM`` refusal, says how full Redis is (for the pause reason); runs on
        the writer thread.
    """

    def __init__(
        self,
        flush: SyncFlushFn,
        name: str,
        status: NodeStatus,
        max_batch: int = 1000,
        explain: Callable[[BaseException], str] | None = None,
    ):
        self._flush_fn = flush
        self._name = name
        self._status = status
        self._max_batch = max_batch
        self._explain = explain
        self._pause = Pause(status, name)
        # failures of items submitted without `done` (no one was told): for take_failures()
        self._failures: deque[tuple[Any, BaseException]] = deque(maxlen=MAX_KEPT_FAILURES)
        self._items: deque[tuple[Any, Callable[[Any], None] | None]] = deque()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._busy = 0  # items taken from the queue whose results are not delivered yet
        # items submitted without `done`, and those of them delivered (one counter per thread)
        self._unowned_in = 0
        self._unowned_out = 0
        self._backoff = Backoff(base=0.05, cap=2.0)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closing = threading.Event()
        self.closed = False

    def __len__(self) -> int:
        """Items submitted and not yet delivered (queued or being written)."""
        return len(self._items) + self._busy

    def submit(self, item: Any, done: Callable[[Any], None] | None = None) -> None:
        """Queue ``item``; ``done(result)`` runs on the writer thread once it is written
        (without ``done``: counted as ``written``, or logged if it failed)."""
        if self.closed:
            raise RuntimeError(f"{self._name}: the writer was closed")
        if self._thread is None:
            self._start()
        if done is None:
            self._unowned_in += 1
        self._items.append((item, done))
        if not self._wake.is_set():
            self._wake.set()

    def take_failures(self) -> list[tuple[Any, BaseException]]:
        """Items submitted without ``done`` whose writes failed since the last call, with
        their errors (at most the last :data:`MAX_KEPT_FAILURES`)."""
        taken = []
        while self._failures:
            taken.append(self._failures.popleft())
        return taken

    def has_failures(self) -> bool:
        """Is there anything for :meth:`take_failures`?"""
        return bool(self._failures)

    def unowned(self) -> int:
        """Items submitted without ``done`` that are not delivered yet."""
        return self._unowned_in - self._unowned_out

    def drain(self, timeout: float | None = None) -> bool:
        """Block until everything submitted so far is delivered; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while len(self):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(0.05 if left is None else min(left, 0.05))
        return True

    def wait_below(self, most: int) -> None:
        """Block while more than ``most`` items are unwritten (backpressure for the caller)."""
        with self._idle:
            while len(self) > most and not self.closed:
                self._idle.wait(0.05)

    def close(self) -> None:
        """Stop: the writer thread ends; queued items fail with ``asyncio.CancelledError``."""
        self.closed = True
        self._closing.set()
        self._wake.set()
        while self._items:
            _, done = self._items.popleft()
            if done is None:
                self._unowned_out += 1
            self._deliver(done, asyncio.CancelledError("the writer was closed"))

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"mdflow-writer {self._name}", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        items = self._items
        while not self.closed:
            if not items:
                self._wake.clear()
                if not items:  # (checked after clearing: a submit meanwhile sets it again)
                    self._wake.wait(1.0)
                continue
            count = min(len(items), self._max_batch)
            self._busy = count
            batch = [items.popleft() for _ in range(count)]
            results = self._flush_with_retry([item for item, _ in batch])
            written = unowned = 0
            for (item, done), result in zip(batch, results, strict=True):
                if done is not None:
                    self._deliver(done, result)
                    continue
                unowned += 1
                if isinstance(result, BaseException):
                    self._status.error(result)
                    logger.error("%s: a write failed: %s", self._name, mask_text(str(result)))
                    if not isinstance(result, asyncio.CancelledError):
                        self._failures.append((item, result))
                else:
                    written += 1
            if written:
                self._status.incr("written", written)
            self._unowned_out += unowned
            with self._idle:
                self._busy = 0
                self._idle.notify_all()

    def _flush_with_retry(self, items: list[Any]) -> Sequence[Any]:
        """Flush; retry the whole batch while Redis is away, and the items it refused for
        lack of memory (``OOM``) until it has memory again (paused meanwhile)."""
        results = self._flush_until_sent(items)
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
                report = self._explain(oom) if self._explain is not None else ""
                reason = out_of_memory_reason(oom, report)
            self._closing.wait(self._pause.begin(reason, len(full)))  # (close() ends the wait)
            if self.closed:
                break
            again = self._flush_until_sent([items[i] for i in full])
            for i, result in zip(full, again, strict=True):
                results[i] = result
            full = [i for i in full if is_out_of_memory(results[i])]
        if full:  # closed while paused
            for i in full:
                results[i] = asyncio.CancelledError("the writer was closed")
        else:
            self._pause.end()
        return results

    def _flush_until_sent(self, items: list[Any]) -> Sequence[Any]:
        while True:
            try:
                results = self._flush_fn(items)
                flush_succeeded(self._status, self._backoff)
                return results
            except Exception as exc:  # noqa: BLE001 - sorted by flush_failed: retry or fail
                if self.closed:
                    return [asyncio.CancelledError("the writer was closed")] * len(items)
                delay = flush_failed(exc, self._status, self._backoff, self._name, len(items))
                if delay is None:
                    return [exc] * len(items)
                self._closing.wait(delay)  # (close() ends the wait)

    def _deliver(self, done: Callable[[Any], None] | None, result: Any) -> None:
        if done is None:
            return
        try:
            done(result)
        except Exception:  # one caller's bug must not stop the others' results (logged)
            logger.exception("%s: callback for a batched write raised", self._name)
