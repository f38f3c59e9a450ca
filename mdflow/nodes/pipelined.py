"""The shared shape of mdflow's writing sinks (``to_redis``, ``to_pubsub``, ``to_cache``).

Every element becomes one write, submitted to a batcher that sends the writes
of one loop turn in one pipelined round trip. The element's reference counts
are held until Redis confirmed its write (and the downstream emit of the
reply finished), so an upstream ``from_redis`` acknowledges it only then; a
failed write is reported to the upstream source, which will not acknowledge
it. The upstream waits only when more than :data:`MAX_OUTSTANDING_WRITES`
writes are in flight: bounded memory (backpressure) without a round trip per
element.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from streamz import Stream
from streamz.sinks import Sink

from ..checks import check_node_keywords
from ..reservoir import mask_text
from .emit import report_failure
from .status import NodeStatus, node_name

__all__ = ["MAX_OUTSTANDING_WRITES", "PipelinedSink"]

logger = logging.getLogger(__name__)

#: Writes one sink may have in flight before its upstream must wait.
MAX_OUTSTANDING_WRITES = 1000


def _outcome(future: asyncio.Future[Any]) -> Any:
    if future.cancelled():
        return asyncio.CancelledError("the writer was closed")
    return future.exception() or future.result()


class PipelinedSink(Sink):
    """Base class: subclasses build a write in ``update`` and pass it to :meth:`_submit`."""

    _counters = ("written", "errors", "reconnects")

    def __init__(self, upstream: Stream, **kwargs: Any) -> None:
        check_node_keywords(self, kwargs)
        super().__init__(upstream, **kwargs)

    def _init_status(self) -> None:
        self._status = NodeStatus(self._counters)
        self._status.state = "running"
        self._outstanding = 0

    def _submit(
        self,
        send: Callable[[Callable[[Any], None] | None], asyncio.Future[Any] | None],
        metadata: list[dict[str, Any]] | None,
        what: str,
        result: Callable[[Any], Any] = lambda reply: reply,
    ) -> asyncio.Future[Any] | None:
        """Track one write. ``send(done)`` submits it to the writer.

        ``result(reply)`` is what goes downstream once the write is confirmed.
        Below the window the writer calls back directly (no future); above it,
        the upstream gets a future to wait on.
        """
        self._retain_refs(metadata)  # held until Redis confirmed the write: no early ack
        self._outstanding += 1
        done = partial(self._written, what, result, metadata)
        if self._outstanding <= MAX_OUTSTANDING_WRITES:
            send(done)
            return None
        future = send(None)
        # Internal invariant: a writer given no callback returns a future (Batcher.submit).
        assert future is not None, "send(None) returned no future"
        future.add_done_callback(lambda f: done(_outcome(f)))
        return future

    def _written(
        self,
        what: str,
        result: Callable[[Any], Any],
        metadata: list[dict[str, Any]] | None,
        reply: Any,
    ) -> None:
        """The write finished (``reply`` is an exception if it failed): emit, then let go."""
        self._outstanding -= 1
        if isinstance(reply, BaseException):
            self._failed(what, metadata, reply)
            return
        self._status.incr("written")
        if not self.downstreams:
            self._release_refs(metadata)
            return
        try:
            futures = self._emit(result(reply), metadata=metadata)
        except Exception as exc:  # noqa: BLE001 - a node downstream of this sink raised
            self._failed(what, metadata, exc)
            return
        if not futures:
            self._release_refs(metadata)
            return
        waiting = asyncio.gather(*futures, return_exceptions=True)
        waiting.add_done_callback(partial(self._downstream_done, what, metadata))

    def _downstream_done(
        self, what: str, metadata: list[dict[str, Any]] | None, waiting: asyncio.Future[list[Any]]
    ) -> None:
        errors = [r for r in waiting.result() if isinstance(r, BaseException)]
        if errors:
            self._failed(what, metadata, errors[0])
        else:
            self._release_refs(metadata)

    def _failed(
        self, what: str, metadata: list[dict[str, Any]] | None, error: BaseException
    ) -> None:
        # Tell the source first (it will not ack), then release: an ack can never win the race.
        self._status.error(error)
        logger.error("%s: writing to %s failed: %s", node_name(self), what, mask_text(str(error)))
        report_failure(metadata, error)
        self._release_refs(metadata)

    def status(self) -> dict[str, Any]:
        """State, ``written``/``errors``/``reconnects`` counts and the last error."""
        return self._status.as_dict(target=self._label, outstanding=self._outstanding)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every submitted write is confirmed by Redis; False on timeout."""
        return await self._writer.drain(timeout)

    def destroy(self, streams: list[Stream] | None = None) -> None:
        self._writer.close()
        super().destroy()
