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
from ..nodes import BatchedWriter, Batcher, PipelinedSink, node_name
from ..reservoir import redis_url as resolve_url
from ..reservoir import sync_client
from ..reservoir.pipelines import send_commands

__all__ = ["StreamWriter", "to_redis"]

logger = logging.getLogger(__name__)


class StreamWriter(BatchedWriter):
    """XADD entries, pipelining those submitted within one loop turn.

    Each XADD's future resolves with the new entry id (``str``). Connection
    failures are retried with backoff (see :class:`~mdflow.nodes.Batcher`),
    so an entry is written at least once; a retried pipeline may write an
    entry twice if the connection dropped after Redis applied it.
    """

    @overload
    def add(
        self,
        topic: str,
        fields: dict[str, bytes],
        maxlen: int | None = None,
        approximate: bool = True,
        done: None = None,
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
    ) -> None: ...
    @overload
    def add(
        self,
        topic: str,
        fields: dict[str, bytes],
        maxlen: int | None,
        approximate: bool,
        done: Callable[[Any], None],
    ) -> None: ...
    def add(
        self,
        topic: str,
        fields: dict[str, bytes],
        maxlen: int | None = None,
        approximate: bool = True,
        done: Callable[[Any], None] | None = None,
    ) -> asyncio.Future[Any] | None:
        """Queue one XADD; see :meth:`~mdflow.nodes.Batcher.submit` for ``done``."""
        return self.submit((topic, fields, maxlen, approximate), done)

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
        if self._batcher is None:
            self._batcher = Batcher(self._flush, self._name, self._status)
        return self._batcher.submit_many([(topic, f, maxlen, approximate) for f in entries])

    async def _flush(
        self, items: Sequence[tuple[str, dict[str, bytes], int | None, bool]]
    ) -> list[BaseException | str]:
        # The synchronous connection in a worker thread: redis.asyncio's pipeline costs
        # ~9 µs per XADD on the loop, this ~2 µs off it (benchmarks/bench_streams.py).
        return await asyncio.get_running_loop().run_in_executor(
            _writer_thread(), self._flush_sync, items
        )

    def _flush_sync(
        self, items: Sequence[tuple[str, dict[str, bytes], int | None, bool]]
    ) -> list[BaseException | str]:
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
    topic: str, fields: dict[str, bytes], maxlen: int | None, approximate: bool
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
        return self._submit(
            partial(self._writer.add, topic, fields, self.maxlen, self.approximate),
            metadata,
            f"stream {topic!r}",
        )
