"""Pipelined XADD and the ``to_redis`` node (a pump into another reservoir)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, ClassVar, cast, overload

from redis.typing import EncodableT, FieldT
from streamz import Stream

from ..checks import check_flag, check_maxlen, check_topic
from ..codecs import check_codec, encode_entry
from ..nodes import BatchedWriter, PipelinedSink, node_name
from ..reservoir import client
from ..reservoir import redis_url as resolve_url

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

    async def _flush(
        self, items: Sequence[tuple[str, dict[str, bytes], int | None, bool]]
    ) -> list[BaseException | str]:
        pipe = client(self._url).pipeline(transaction=False)
        for topic, fields, maxlen, approximate in items:
            # cast: redis-py hints `dict[FieldT, EncodableT]`; dict is invariant, so mypy rejects
            # the dict[str, bytes] that xadd accepts (it only reads the pairs).
            entry = cast("dict[FieldT, EncodableT]", fields)
            pipe.xadd(topic, entry, maxlen=maxlen, approximate=approximate)
        results = await pipe.execute(raise_on_error=False)
        return [r if isinstance(r, BaseException) else r.decode() for r in results]


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
        kwargs["ensure_io_loop"] = True
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
