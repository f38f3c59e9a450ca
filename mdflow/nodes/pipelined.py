"""The shared shape of mdflow's writing sinks (``to_redis``, ``to_pubsub``, ``to_cache``).

Every element becomes one write, submitted to a batcher that sends the writes
of one loop turn in one pipelined round trip. The element's reference counts
are held until Redis confirmed its write (and the downstream emit of the
reply finished), so an upstream ``from_redis`` acknowledges it only then; a
failed write is reported to the upstream source, which will not acknowledge
it. The upstream waits only when more than :data:`MAX_OUTSTANDING_WRITES`
writes are in flight: bounded memory (backpressure) without a round trip per
element.

A sink whose graph has no event loop (a plain ``Stream()`` emitting from a
script's thread) is not given one: ``emit`` would then hop to the loop's thread
and wait, for every element. Its writes go to a writer thread instead
(:class:`~mdflow.nodes.thread_batching.ThreadBatcher`, redis-py's synchronous
pipelines) and ``emit`` returns at once; the caller waits only while more than
:data:`MAX_HANDED_OVER` writes are unconfirmed, and whatever is still unwritten
when the script ends is written before the interpreter exits.

Writes Redis refuses for good are never only counted:

* an element with a value larger than the server accepts
  (:class:`~mdflow.ElementTooLarge`) is refused before it is sent: ``emit``
  raises it at once when the server's limit is known (learned by the writer's
  first flush), else its write fails like the next case;
* a write Redis answers with an error (``WRONGTYPE``...) is reported to the
  upstream source if there is one (``from_redis`` retries the entry, then
  dead-letters it with the reason); with no one to tell (a plain ``Stream()``,
  in a script or on an event loop), the next ``emit`` into the sink raises
  :class:`~mdflow.WriteRefused` naming the refused writes (that element is not
  written), and so do :meth:`PipelinedSink.flush` and
  :meth:`PipelinedSink.wait_written`. On an event loop, a write beyond the
  window hands its future to ``emit``: awaiting it raises the error itself.

Writes Redis refuses for lack of memory (``OOM``) are not failures: they wait,
the sink's state is ``paused`` (see :mod:`.flushing`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from streamz import Stream
from streamz.sinks import Sink

from ..checks import check_node_keywords
from ..errors import WriteRefused
from ..reservoir import mask_text
from .downstreams import has_downstreams
from .emit import report_failure
from .status import NodeStatus, node_name

__all__ = ["MAX_HANDED_OVER", "MAX_OUTSTANDING_WRITES", "PipelinedSink"]

logger = logging.getLogger(__name__)

#: Writes one sink may have in flight before its upstream must wait.
MAX_OUTSTANDING_WRITES = 1000
#: Writes a thread without a loop may have handed over, unconfirmed, before ``emit`` waits.
MAX_HANDED_OVER = 10_000
#: Seconds the interpreter waits at exit for writes handed over by a script's thread.
EXIT_FLUSH_TIMEOUT = 10.0
#: Refused writes with no one to tell, kept until emit/flush/wait_written raises them.
MAX_KEPT_REFUSALS = 1000

_handing_over: weakref.WeakSet[PipelinedSink] = weakref.WeakSet()
_exit_hook = threading.Lock()


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
        self._submitted = 0
        self._confirmed = 0  # (two counters: in a script they change on two threads)
        self._flushed_at_exit = False
        # writes that failed with no upstream source to tell, nor a future handed out:
        # (what, error), raised by the next emit, flush() or wait_written()
        self._refused: deque[tuple[str, BaseException]] = deque(maxlen=MAX_KEPT_REFUSALS)

    def _check_size(self, item: Any) -> None:
        """Raise :class:`~mdflow.ElementTooLarge` if ``item`` is larger than the server
        accepts (known once the writer's first flush learned the limit; before that, the
        flush refuses it and the refusal is reported like any other)."""
        refusal = self._writer.too_large(item)
        if refusal is not None:
            self._status.error(refusal)
            logger.error("%s", refusal)
            raise refusal

    def _raise_refused(self, emitting: bool) -> None:
        """Raise :class:`~mdflow.WriteRefused` for the refused writes no one was told about."""
        refused = [self._refused.popleft() for _ in range(len(self._refused))]
        refused += [
            (self._writer.target_of(item), error) for item, error in self._writer.take_failures()
        ]
        if not refused:
            return
        what, first = refused[0]
        if len(refused) == 1 and isinstance(first, WriteRefused) and not emitting:
            raise first  # (it names the node, the target and the reason itself)
        if isinstance(first, WriteRefused):
            what = ""  # (its message names the target)
        target = f"{what}: " if what else ""
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        earlier, tail = (" earlier", " This element was not written.") if emitting else ("", "")
        msg = (
            f"{node_name(self)}: Redis refused {len(refused)}{earlier} write(s) and no upstream "
            f"source was there to retry them: {target}{mask_text(str(first))}{more}.{tail}"
        )
        raise WriteRefused(msg, node_name(self), [error for _, error in refused])

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
        the upstream gets a future to wait on. From a thread that runs no event
        loop, the writer's thread writes it and the caller waits only while more
        than :data:`MAX_HANDED_OVER` writes are unconfirmed.
        """
        if self._refused or self._writer.failed_from_threads():
            self._raise_refused(emitting=True)
        self._retain_refs(metadata)  # held until Redis confirmed the write: no early ack
        if asyncio._get_running_loop() is None:  # a script's thread
            if metadata or has_downstreams(self):
                self._submitted += 1
                send(partial(self._written, what, result, metadata))
            else:  # nothing to tell anyone: no callback per write (see ThreadBatcher)
                send(None)
            if not self._flushed_at_exit:
                self._flushed_at_exit = True
                _flush_at_exit(self)
            if self.unwritten() > MAX_HANDED_OVER:
                self._writer.wait_from_thread(MAX_HANDED_OVER // 2)
            return None
        self._submitted += 1
        done = partial(self._written, what, result, metadata)
        if self.unwritten() <= MAX_OUTSTANDING_WRITES:
            send(done)
            return None
        future = send(None)
        # Internal invariant: a writer given no callback returns a future (Batcher.submit).
        assert future is not None, "send(None) returned no future"
        told = partial(self._written, what, result, metadata, told=True)  # (the future tells)
        future.add_done_callback(lambda f: told(_outcome(f)))
        return future

    def unwritten(self) -> int:
        """Writes submitted and not yet confirmed by Redis (or failed)."""
        return self._submitted - self._confirmed + self._writer.queued_from_threads(callbacks=False)

    def _written(
        self,
        what: str,
        result: Callable[[Any], Any],
        metadata: list[dict[str, Any]] | None,
        reply: Any,
        told: bool = False,
    ) -> None:
        """The write finished (``reply`` is an exception if it failed): emit, then let go.

        A failed write that no upstream source hears of (no ``fail`` hook in the
        metadata) and no caller awaits (``told``) is kept for :meth:`_raise_refused`.
        """
        self._confirmed += 1
        if isinstance(reply, BaseException):
            if not (told or isinstance(reply, asyncio.CancelledError) or _has_fail_hook(metadata)):
                self._refused.append((what, reply))
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
        if isinstance(error, WriteRefused):  # (its message names the node and the target)
            logger.error("%s", mask_text(str(error)))
        else:
            text = mask_text(str(error))
            logger.error("%s: writing to %s failed: %s", node_name(self), what, text)
        report_failure(metadata, error)
        self._release_refs(metadata)

    def status(self) -> dict[str, Any]:
        """State, ``written``/``errors``/``reconnects`` counts, the last error and
        ``outstanding`` (writes not yet confirmed by Redis)."""
        return self._status.as_dict(target=self._label, outstanding=self.unwritten())

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every submitted write is confirmed by Redis; False on timeout.

        Raises
        ------
        WriteRefused
            Writes Redis refused that no upstream source was told about (see the module).
        """
        drained = await self._writer.drain(timeout)
        self._raise_refused(emitting=False)
        return drained

    def wait_written(self, timeout: float | None = None) -> bool:
        """Block until every write submitted so far is confirmed; False on timeout.

        For scripts (a thread without an event loop); on a loop, use :meth:`flush`.

        Raises
        ------
        WriteRefused
            Writes Redis refused that no upstream source was told about (see the module).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.unwritten():
            if deadline is not None and time.monotonic() >= deadline:
                self._raise_refused(emitting=False)
                return False
            time.sleep(0.002)
        self._raise_refused(emitting=False)
        return True

    def destroy(self, streams: list[Stream] | None = None) -> None:
        self._writer.close()
        super().destroy()


def _has_fail_hook(metadata: list[dict[str, Any]] | None) -> bool:
    """Will an upstream source hear of a failure (a ``fail`` hook travels with the element)?"""
    return any(meta.get("fail") is not None for meta in metadata or ())


def _flush_at_exit(sink: PipelinedSink) -> None:
    """Make the interpreter wait, at exit, for the writes ``sink`` was handed by a thread."""
    _handing_over.add(sink)
    with _exit_hook:
        if getattr(_flush_at_exit, "registered", False):
            return
        _flush_at_exit.registered = True  # type: ignore[attr-defined]
    # threading's exit hooks run while streamz's (daemon) loop thread still works
    register = getattr(threading, "_register_atexit", None)
    if register is None:  # pragma: no cover - CPython has it since 3.9
        import atexit

        atexit.register(_wait_for_handed_writes)
    else:
        register(_wait_for_handed_writes)


def _wait_for_handed_writes(timeout: float = EXIT_FLUSH_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    sinks = list(_handing_over)
    while any(s.unwritten() for s in sinks) and time.monotonic() < deadline:
        time.sleep(0.005)
    for sink in sinks:
        if sink.unwritten():
            logger.error(
                "%s: %d write(s) still unconfirmed by Redis at exit after %.0fs; they are lost",
                node_name(sink),
                sink.unwritten(),
                timeout,
            )
