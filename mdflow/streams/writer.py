"""Pipelined XADD and the ``to_redis`` node (a pump into another reservoir)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, ClassVar, overload

from streamz import Stream

from ..checks import check_flag, check_maxlen, check_topic
from ..codecs import check_codec, encode_entry
from ..nodes import BatchedWriter, PipelinedSink, node_name
from ..reservoir import redis_url as resolve_url
from ..reservoir import sync_client
from ..reservoir.limits import WriteLimits
from ..reservoir.pipelines import send_commands

__all__ = ["StreamWriter", "to_redis"]

logger = logging.getLogger(__name__)

#: One XADD: topic, fields, maxlen, approximate trimming, and the bytes of its largest value.
_Item = tuple[str, dict[str, bytes], int | None, bool, int]


def largest_value(fields: dict[str, bytes]) -> int:
    """Bytes of the largest value among an entry's fields (what Redis' limit applies to)."""
    largest = 0
    for value in fields.values():  # (a loop: 3x faster than max(map(len, ...)) on 1-4 fields)
        if len(value) > largest:
            largest = len(value)
    return largest


class StreamWriter(BatchedWriter):
    """XADD entries, pipelining those submitted within one loop turn.

    Each XADD's future resolves with the new entry id (``str``). Connection
    failures are retried with backoff (see :class:`~mdflow.nodes.Batcher`),
    so an entry is written at least once; a retried pipeline may write an
    entry twice if the connection dropped after Redis applied it. Entries
    Redis refuses for lack of memory wait until it has memory again (the
    node is ``paused``); an entry with a field larger than the server accepts
    fails with :class:`~mdflow.ElementTooLarge` without being sent.
    """

    @overload
    def add(
        self,
        topic: str,
        fields: dict[str, bytes],
        maxlen: int | None = None,
        approximate: bool = True,
        done: None = None,
        largest: int | None = None,
    ) -> asyncio.Future[Any]: ...
    @overload
    def add(
        self,
        topic: str,
        fields: dict[str, bytes],
        maxlen: int | None = None,
        approximate: bool = True,
        *,
        done: Callable[[Any], None],
        largest: int | None = None,
    ) -> None: ...
    @overload
    def add(
        self,
        topic: str,
        fields: dict[str, bytes],
        maxlen: int | None,
        approximate: bool,
        done: Callable[[Any], None],
        largest: int | None = None,
    ) -> None: ...
    def add(
        self,
        topic: str,
        fields: dict[str, bytes],
        maxlen: int | None = None,
        approximate: bool = True,
        done: Callable[[Any], None] | None = None,
        largest: int | None = None,
    ) -> asyncio.Future[Any] | None:
        """Queue one XADD; see :meth:`~mdflow.nodes.Batcher.submit` for ``done``.

        ``largest``: :func:`largest_value` of ``fields``, if the caller knows it already.
        """
        size = largest_value(fields) if largest is None else largest
        return self.submit((topic, fields, maxlen, approximate, size), done)

    def add_many(
        self,
        topic: str,
        entries: Sequence[dict[str, bytes]],
        maxlen: int | None = None,
        approximate: bool = True,
    ) -> asyncio.Future[list[Any]]:
        """Queue one XADD per entry; the future gives each new id (or its exception), in order.

        Must be called on the loop (see :meth:`~mdflow.nodes.Batcher.submit_many`).
        """
        return self._loop_batcher().submit_many(
            [(topic, f, maxlen, approximate, largest_value(f)) for f in entries]
        )

    async def _flush(self, items: Sequence[_Item]) -> list[BaseException | str]:
        # The synchronous connection in a worker thread: redis.asyncio's pipeline costs
        # ~9 µs per XADD on the loop, this ~2 µs off it (benchmarks/bench_streams.py).
        return await asyncio.get_running_loop().run_in_executor(
            _writer_thread(), self._flush_sync, items
        )

    async def _checked_flush(self, items: Sequence[_Item]) -> Sequence[Any]:
        # the size check (and learning the server's limit) on the writer thread too: one hop
        return await asyncio.get_running_loop().run_in_executor(
            _writer_thread(), self._checked_flush_sync, items
        )

    def _largest(self, item: _Item) -> int:
        return item[4]

    def _oversized(self, items: Sequence[_Item], limits: WriteLimits) -> dict[int, BaseException]:
        limit = limits.max_value  # (no method call per item: this runs for every XADD)
        return {i: self._refusal(items[i], limits) for i, it in enumerate(items) if it[4] > limit}

    def _measure(self, item: _Item) -> tuple[str, int, str]:
        topic, fields = item[0], item[1]
        name = max(fields, key=lambda field: len(fields[field]))
        size = sum(len(field) + len(value) for field, value in fields.items())
        return f"stream {topic!r}", size, f"field {name!r}"

    def _flush_sync(self, items: Sequence[_Item]) -> list[BaseException | str]:
        """The same XADDs on a writer thread, with redis-py's synchronous connection."""
        commands = [_xadd(*item) for item in items]
        replies = send_commands(sync_client(self._url), commands)
        return [r if isinstance(r, BaseException) else r.decode() for r in replies]


_pool: ThreadPoolExecutor | None = None


def _writer_thread() -> ThreadPoolExecutor:
    """The thread that runs the XADD pipelines of writers on event loops (one: in order)."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(1, thread_name_prefix="mdflow-xadd")
    return _pool


def _xadd(
    topic: str, fields: dict[str, bytes], maxlen: int | None, approximate: bool, _: int = 0
) -> list[str | bytes | int]:
    command: list[str | bytes | int] = ["XADD", topic]
    if maxlen is not None:
        command += ["MAXLEN", "~" if approximate else "=", maxlen]
    command.append("*")
    for name, value in fields.items():
        command += (name, value)
    return command


@Stream.register_api()
class to_redis(PipelinedSink):
    """XADD every element to a Redis stream; emit the new entry id downstream.

    Writes that arrive within one loop turn go out in one pipelined round
    trip. The element is held (its reference counts retained) until Redis
    confirmed the XADD, so an upstream ``from_redis`` acknowledges its entry
    only then; a failed write is reported to that source, which retries the
    entry. Writes that fail because Redis went away are retried with backoff,
    not dropped. The upstream waits only when more than
    ``MAX_OUTSTANDING_WRITES`` writes are in flight (backpressure).

    Writes Redis refuses are never only counted: an element with a field
    larger than the server accepts raises :class:`~mdflow.ElementTooLarge`
    from ``emit`` (once the writer learned the server's limit), and a write
    Redis answers with an error (``WRONGTYPE``...) goes to the upstream
    ``from_redis`` (retried, then dead-lettered with the reason) or, from a
    plain ``Stream()``, is raised as :class:`~mdflow.WriteRefused` by the next
    ``emit``, :meth:`flush` or :meth:`wait_written`. When Redis is out of
    memory, writes wait: ``status()["state"]`` is ``"paused"`` and
    ``status()["pause_reason"]`` says why (see :mod:`mdflow.nodes.pipelined`).

    Parameters
    ----------
    topic : str or callable
        The stream to write to, or a function of the element returning it.
    maxlen : int, optional
        Trim the stream to about this many entries (``XADD MAXLEN ~``).
    approximate : bool
        Use ``~`` trimming (much cheaper); ``False`` trims exactly.
    codec : {"msgpack", "json", "fields"}
        How elements are written (see the wire-format table in the README).
    redis_url : str, optional
        Where Redis is (see :func:`mdflow.redis_url`).

    Examples
    --------
    >>> from streamz import Stream
    >>> source = Stream()
    >>> ids = source.map(lambda x: {"px": x}).to_redis("prices").sink_to_list()  # doctest: +SKIP
    """

    _graphviz_shape = "cylinder"
    str_list: ClassVar[list[str]] = ["topic", "maxlen", "codec"]

    def __init__(
        self,
        upstream: Stream,
        topic: str | Callable[[Any], str],
        maxlen: int | None = None,
        approximate: bool = True,
        codec: str = "msgpack",
        redis_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        where = "to_redis"
        if not callable(topic):
            check_topic(topic, where)
        self.topic = topic
        self.maxlen = check_maxlen(maxlen, where)
        self.approximate = check_flag(approximate, where, "approximate")
        self.codec = check_codec(codec, allow_auto=False, where=where)
        self._url = resolve_url(redis_url)
        self._label = topic if isinstance(topic, str) else getattr(topic, "__name__", "topic()")
        self._init_status()
        super().__init__(upstream, **kwargs)
        self._writer = StreamWriter(self._url, node_name(self), self._status)

    def update(
        self, x: Any, who: Stream | None = None, metadata: list[dict[str, Any]] | None = None
    ) -> asyncio.Future[Any] | None:
        topic = self.topic(x) if callable(self.topic) else self.topic
        fields = encode_entry(x, self.codec)  # EncodeError surfaces to the upstream source
        largest = largest_value(fields)
        if largest > self._writer.max_value > 0:  # ElementTooLarge surfaces to the caller
            self._check_size((topic, fields, self.maxlen, self.approximate, largest))
        return self._submit(
            partial(
                self._writer.add, topic, fields, self.maxlen, self.approximate, largest=largest
            ),
            metadata,
            f"stream {topic!r}",
        )
