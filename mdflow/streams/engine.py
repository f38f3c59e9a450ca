"""The pump: ``Stream.engine`` calls a function on a fixed schedule and XADDs what it returns."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from streamz import Stream

from ..checks import (
    check_callable,
    check_flag,
    check_maxlen,
    check_positive,
    check_seconds,
    check_topic,
)
from ..codecs import check_codec, encode_entry
from ..errors import describe
from ..nodes import SupervisedSource, node_name
from ..nodes.downstreams import has_downstreams
from ..reservoir import client, is_fatal
from ..reservoir import redis_url as resolve_url
from .replies import text
from .writer import StreamWriter

__all__ = ["engine"]

logger = logging.getLogger(__name__)


def _default_func() -> dict[str, float]:
    return {"time": time.time()}


@Stream.register_api(staticmethod)
class engine(SupervisedSource):
    """Pump: every ``push_interval`` seconds call ``func()`` and XADD the result to ``topic``.

    Synchronous functions never run on the IOLoop: they run in a thread pool.
    With ``asyncflag=True`` up to ``threadcount`` calls may overlap, so a slow
    ``func`` does not delay the schedule; otherwise a tick waits for the
    previous call. ``async def`` functions are awaited. A ``None`` result
    means "nothing this tick". Ticks keep a fixed rate without drift; ticks
    that cannot be served (all workers busy, or the loop fell behind) are
    counted as ``skipped_ticks``, never queued. The id of each written entry
    is emitted downstream. Writes that fail because Redis went away are
    retried, not dropped; while Redis is out of memory (``OOM``) they wait and
    are retried, the state is ``"paused"`` and ``status()["pause_reason"]`` says
    why (ticks meanwhile are counted as ``skipped_ticks``). With
    ``flatten=True``, ``func`` returns a list of records and each becomes an
    entry of its own (all written in one round trip): a poll of an API that
    answers 500 quotes writes 500 entries.

    Parameters
    ----------
    topic : str
        The Redis stream to write to.
    func : callable, optional
        Called with no arguments; returns what to write (default: ``{"time": time.time()}``).
    push_interval : float
        Seconds between ticks.
    start : bool
        Start pumping at once.
    asyncflag : bool
        Let up to ``threadcount`` calls of ``func`` overlap.
    threadcount : int
        Size of the thread pool for synchronous ``func``.
    flatten : bool
        ``func`` returns a list (or tuple, or generator) of records: write each as its own
        entry, in order.
    maxlen : int, optional
        Trim the stream to about this many entries.
    codec : {"msgpack", "json", "fields"}
        How results are written.
    redis_url : str, optional
        Where Redis is (see :func:`mdflow.redis_url`).

    Examples
    --------
    >>> import pandas as pd
    >>> from streamz import Stream
    >>> pump = Stream.engine("quotes", lambda: pd.DataFrame({"px": [1.0, 2.0]}),
    ...                      push_interval=0.5)                          # doctest: +SKIP
    >>> pump.start()                                                    # doctest: +SKIP
    """

    _counters = (
        "ticks",
        "calls",
        "written",
        "emitted",
        "skipped_ticks",
        "empty",
        "errors",
        "reconnects",
    )
    str_list: ClassVar[list[str]] = ["topic", "func", "push_interval"]

    def __init__(
        self,
        topic: str,
        func: Callable[[], Any] | None = None,
        push_interval: float = 1,
        start: bool = False,
        asyncflag: bool = False,
        threadcount: int = 5,
        maxlen: int | None = None,
        codec: str = "msgpack",
        redis_url: str | None = None,
        flatten: bool = False,
        **kwargs: Any,
    ) -> None:
        where = "engine"
        self.topic = check_topic(topic, where)
        func = _default_func if func is None else func
        self.func = check_callable(func, where, "func", 0, "taking no arguments")
        self.push_interval = check_seconds(push_interval, where, "push_interval")
        self.asyncflag = check_flag(asyncflag, where, "asyncflag")
        self.threadcount = check_positive(threadcount, where, "threadcount", integer=True)
        self.maxlen = check_maxlen(maxlen, where)
        self.codec = check_codec(codec, allow_auto=False, where=where)
        self.flatten = check_flag(flatten, where, "flatten")
        self._url = resolve_url(redis_url)
        self._label = topic
        self._is_async = inspect.iscoroutinefunction(func)
        self._executor: ThreadPoolExecutor | None = None
        self._active: set[asyncio.Task[None]] = set()
        self._next_tick: float | None = None  # None: the schedule starts at the next cycle
        super().__init__(start=False, **kwargs)
        self._writer = StreamWriter(self._url, node_name(self), self._status)
        if check_flag(start, type(self).__name__, "start"):
            self.start()

    @property
    def _capacity(self) -> int:
        return self.threadcount if self.asyncflag else 1

    async def _setup(self) -> None:
        # Fail fast on what retrying cannot fix: a refused password, a key of another type.
        kind = text(await client(self._url).type(self.topic))
        if kind not in ("none", "stream"):
            msg = (
                f"WRONGTYPE: {self.topic!r} holds a {kind}, not a stream; "
                "use another topic or delete the key"
            )
            self.fail(msg)
            return
        if self._executor is None and not self._is_async:
            self._executor = ThreadPoolExecutor(
                self._capacity, thread_name_prefix=f"engine-{self.topic}"
            )

    async def _cycle(self) -> None:
        now = time.monotonic()
        next_tick = now if self._next_tick is None else self._next_tick
        if next_tick > now:
            await self._pause(next_tick - now)
            if self.stopped:
                return
        self._status.incr("ticks")
        if len(self._active) < self._capacity:
            task = asyncio.ensure_future(self._tick())
            self._active.add(task)
            task.add_done_callback(self._active.discard)
        else:
            self._status.incr("skipped_ticks")
        next_tick += self.push_interval
        behind = time.monotonic() - next_tick
        if behind > 0:  # the loop was blocked or we are late: skip, never queue
            missed = int(behind // self.push_interval) + 1
            self._status.incr("skipped_ticks", missed)
            next_tick += missed * self.push_interval
        self._next_tick = next_tick

    async def _tick(self) -> None:
        try:
            self._status.incr("calls")
            if self._is_async:
                result = await self.func()
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._executor, self.func)
        except Exception as exc:
            self._status.error(exc)
            logger.error(
                "%s: func %r raised; tick skipped",
                node_name(self),
                getattr(self.func, "__name__", self.func),
                exc_info=exc,
            )
            return
        if result is None:
            self._status.incr("empty")
            return
        try:
            records = self._records(result)
            entries = [encode_entry(record, self.codec) for record in records]
        except Exception as exc:  # noqa: BLE001 - bad result: log with what was returned
            self._status.error(exc)
            logger.error("%s: cannot write the result of func: %s", node_name(self), exc)
            return
        if not entries:
            self._status.incr("empty")
            return
        for entry_id in await self._writer.add_many(self.topic, entries, self.maxlen):
            if isinstance(entry_id, BaseException):
                if is_fatal(entry_id):
                    self.fail(entry_id)  # refused password, ACL, WRONGTYPE: stop, say why
                    return
                self._status.error(entry_id)
                logger.error("%s: XADD to %r failed: %s", node_name(self), self.topic, entry_id)
                continue
            self._status.incr("written")
            if has_downstreams(self):  # (emitted counts what went downstream)
                await self._emit_id(entry_id)

    def _records(self, result: Any) -> list[Any]:
        """What one call returned, as the records to write (one, or each of a list)."""
        if not self.flatten:
            return [result]
        if isinstance(result, (list, tuple)) or inspect.isgenerator(result):
            return list(result)
        msg = (
            f"flatten=True: func must return a list, tuple or generator of records; "
            f"got {describe(result)}"
        )
        raise TypeError(msg)

    async def _emit_id(self, entry_id: str) -> None:
        try:
            await self.emit_and_wait(entry_id)
            self._status.incr("emitted")
        except Exception as exc:
            self._status.error(exc)
            logger.error(
                "%s: downstream failed for entry %s", node_name(self), entry_id, exc_info=exc
            )

    async def _teardown(self) -> None:
        if self._active:  # calls and writes under way: let them finish (bounded)
            await asyncio.wait(set(self._active), timeout=max(self.stop_grace, 5.0))
        await self._writer.drain(timeout=5)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        self._next_tick = None

    def status(self) -> dict[str, Any]:
        """State and counts: ticks, calls, written, emitted, skipped_ticks, empty, errors,
        reconnects."""
        return self._status.as_dict(topic=self.topic, running_calls=len(self._active))
