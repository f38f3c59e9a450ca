"""The supervised source: a streamz ``Source`` whose run loop survives its own failures.

A streamz ``Source`` whose ``run()`` raised cannot be restarted by
``start()``; :class:`SupervisedSource` keeps supervision *inside* the loop:
an exception in one cycle is logged with the node's name, counted, and the
cycle is retried after a backoff, so the node never dies silently.

Examples
--------
>>> class from_clock(SupervisedSource):                  # doctest: +SKIP
...     async def _cycle(self):
...         await self.emit_and_wait(time.time())
...         await asyncio.sleep(1)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from streamz.sources import Source

from ..checks import check_node_keywords
from ..reservoir import CONNECTION_ERRORS, Backoff, fatal_reason, mask_text
from .emit import first_error, on_current_loop
from .lifecycle import source_started
from .status import NodeStatus, node_name

__all__ = ["SupervisedSource"]

logger = logging.getLogger(__name__)


class SupervisedSource(Source):
    """A streamz source whose run loop survives its own failures.

    Subclasses implement ``async _cycle()`` (one unit of work) and may
    override ``_setup()`` / ``_teardown()``. ``start()`` and ``stop()`` are
    idempotent; a stopped node can be started again.

    Errors retrying cannot fix (refused credentials, ACL denials, a key of the
    wrong type, an invalid stream id; see :func:`mdflow.reservoir.fatal_reason`)
    stop the node at once: its state becomes ``"failed"``, ``status()["failure"]``
    says why, and one error line is logged. A lost connection is retried.
    """

    _counters: tuple[str, ...] = ("emitted", "errors", "reconnects")
    _backoff_base = 0.05
    _backoff_cap = 5.0
    #: Seconds ``stop()`` lets elements already in the graph finish (then they stay pending,
    #: replayed by the next run) before acks and writes are flushed. A plain ``stop()`` does
    #: not wait (prompt in notebooks); :func:`mdflow.run` stops with ``grace=10`` by default.
    stop_grace = 0.0
    # Set by streamz's Source (untyped): declared here for the type checker.
    stopped: bool
    started: bool

    def __init__(self, start: bool = False, **kwargs: Any):
        check_node_keywords(self, kwargs)
        self._status = NodeStatus(self._counters)
        self._generation = 0
        self._task: asyncio.Task[Any] | None = None
        self._waiting_on_graph = False
        self._interrupted = False
        self._failure: str | None = None
        self._wake: asyncio.Event | None = None
        self._backoff = Backoff(self._backoff_base, self._backoff_cap)
        # Set up again before the next cycle (at start, after a lost connection). A flag of its
        # own, not the state: the node's writers and ackers share its status and set it back to
        # "running" when one of their writes goes through, before the loop has set up again
        # (an outlet then skipped the replay of reads whose replies were lost with Redis).
        self._needs_setup = True
        super().__init__(start=start, **on_current_loop(kwargs))

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the node's loop (no-op if it is running)."""
        if not self.stopped:
            return
        self.stopped = False
        self.started = True
        self._generation += 1
        self._needs_setup = True
        self._failure = None
        self._status.failure = None
        self._status.state = "starting"
        source_started(self)
        self.loop.add_callback(self.run)

    def stop(self, grace: float | None = None) -> None:
        """Ask the loop to stop after the current cycle (prompt: cycles are short).

        Reading stops at once; elements already in the graph get ``grace``
        seconds (default :attr:`stop_grace`) to finish before acks and writes
        are flushed; what did not finish stays pending and is replayed later.
        """
        if grace is not None:
            self.stop_grace = grace
        if self.stopped:
            return
        self.stopped = True
        self._status.state = "stopping"
        self.loop.add_callback(self._interrupt_graph_wait)

    def fail(self, exc: BaseException | str) -> None:
        """Stop for good on an error retrying cannot fix: state ``failed``, reason in status.

        Safe to call from the node's loop more than once (the first reason wins).
        """
        if self._failure is not None:
            return
        reason = (
            exc
            if isinstance(exc, str)
            else (fatal_reason(exc, getattr(self, "_url", None)) or str(exc))
        )
        reason = mask_text(reason)
        self._failure = reason
        self._status.failure = reason
        if not isinstance(exc, str):
            self._status.error(exc)
        logger.error("%s: failed, not retrying: %s", node_name(self), reason)
        self.stopped = True
        self._status.state = "stopping"
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            self._interrupted = True  # wherever the run loop waits, end it now
            task.cancel()

    @property
    def failure(self) -> str | None:
        """Why the node failed for good (state ``failed``), else None."""
        return self._failure

    def _interrupt_graph_wait(self) -> None:
        if self._wake is not None:
            self._wake.set()  # end a pause (see `_pause`)
        # A source waiting for a blocked graph would never see `stopped`: stop waiting.
        # The element stays where it is; it is acknowledged only if the graph finishes it.
        if self._waiting_on_graph and self._task is not None and not self._task.done():
            self._interrupted = True
            self._task.cancel()

    async def run(self) -> None:
        generation = self._generation
        previous, self._task = self._task, asyncio.current_task()
        self._interrupted = False
        self._wake = asyncio.Event()
        self._status.started_at = time.time()
        try:
            if previous is not None and not previous.done():
                # Restarted while the previous run was still ending (its last cycle or its
                # teardown): let it finish first, or its teardown would release what this run
                # sets up (an engine then failed every cycle, reporting "stopped").
                await asyncio.wait({previous})
            while not self.stopped and generation == self._generation:
                try:
                    if self._needs_setup or self._status.state in ("starting", "reconnecting"):
                        self._needs_setup = True  # (until _setup went through)
                        await self._setup()
                        if self._failure is not None:
                            break  # _setup called fail()
                        self._needs_setup = False
                        self._status.state = "running"
                    await self._cycle()
                    self._backoff.reset()
                except asyncio.CancelledError:
                    if self.stopped and self._interrupted:
                        break  # stop() interrupted a wait on the graph
                    raise
                except Exception as exc:  # noqa: BLE001 - supervision: log, count, retry
                    if fatal_reason(exc) is not None:
                        self.fail(exc)
                        break
                    await self._on_failure(exc, reconnect=isinstance(exc, CONNECTION_ERRORS))
        finally:
            if generation == self._generation:
                try:
                    await self._teardown()
                finally:
                    if generation == self._generation:  # not restarted during the teardown
                        self._status.state = "failed" if self._failure else "stopped"

    async def _on_failure(self, exc: BaseException, reconnect: bool) -> None:
        self._status.error(exc)
        delay = self._backoff.next_delay()
        if reconnect:
            self._status.incr("reconnects")
            self._status.state = "reconnecting"
            self._needs_setup = True
            logger.warning(
                "%s: Redis connection lost (%s); reconnect attempt %d in %.2fs",
                node_name(self),
                mask_text(str(exc)),
                self._backoff.failures,
                delay,
            )
        else:
            logger.error(
                "%s: error in run loop, retrying in %.2fs", node_name(self), delay, exc_info=exc
            )
        await self._pause(delay)

    async def _pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``; ``stop()`` ends the pause at once."""
        wake = self._wake
        if wake is None or seconds <= 0:
            await asyncio.sleep(max(seconds, 0))
            return
        try:
            await asyncio.wait_for(wake.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _setup(self) -> None:
        """Connect / subscribe. Called at start and after a connection failure."""

    async def _cycle(self) -> None:
        raise NotImplementedError

    async def _teardown(self) -> None:
        """Release resources when the loop ends."""

    # --- helpers ---------------------------------------------------------------------------
    async def emit_and_wait(
        self,
        x: Any,
        metadata: list[dict] | None = None,
        finished: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        """Emit ``x`` and wait until the graph's async work on it is done.

        With ``finished``, asynchronous failures are passed to it (with
        ``None`` on success) instead of raised, exactly once; if ``stop()``
        interrupts the wait, ``finished`` runs later, when the graph really is
        done. Exceptions raised synchronously by the graph always propagate.
        """
        await self.wait_for_graph(self._emit(x, metadata=metadata), finished)

    async def wait_for_graph(
        self,
        futures: list[Any] | None,
        finished: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        """Wait for the futures an emit returned (see :meth:`emit_and_wait`)."""
        futures = [asyncio.ensure_future(f) for f in futures] if futures else []
        if not futures:
            if finished is not None:
                finished(None)
            return
        self._waiting_on_graph = True
        began = time.monotonic()
        try:
            await asyncio.wait(futures)
        except asyncio.CancelledError:
            if finished is not None:
                later = asyncio.ensure_future(asyncio.wait(futures))
                later.add_done_callback(lambda _: finished(first_error(futures)))
            raise
        finally:
            self._waiting_on_graph = False
            self._status.waited += time.monotonic() - began
        error = first_error(futures)
        if finished is not None:
            finished(error)
        elif error is not None:
            raise error

    def status(self) -> dict[str, Any]:
        """A plain dict: state, counters, last error (see each node for extras)."""
        return self._status.as_dict()
