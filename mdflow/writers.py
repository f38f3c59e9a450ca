"""Pipelined XADD and the ``to_redis`` node (a pump into another reservoir)."""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any, Callable, Sequence

from streamz import Stream
from streamz.sinks import Sink

from .base import NodeStatus, node_name, report_failure
from .batching import Batcher
from .codecs import check_codec, encode_entry
from .connection import client
from .errors import ConfigError, describe
from .urls import redis_url as resolve_url

__all__ = ["StreamWriter", "to_redis", "check_topic"]

logger = logging.getLogger(__name__)

#: Writes a ``to_redis`` node may have in flight before its upstream must wait.
MAX_OUTSTANDING_WRITES = 1000


def check_topic(topic: Any, where: str, param: str = "topic") -> str:
    """Validate a stream name: a non-empty str."""
    if not isinstance(topic, str) or not topic:
        msg = f"{where}: {param} must be a non-empty str naming a Redis stream; got {describe(topic)}"
        raise ConfigError(msg)
    return topic


def check_maxlen(maxlen: Any, where: str) -> int | None:
    if maxlen is not None and (not isinstance(maxlen, int) or isinstance(maxlen, bool) or maxlen < 1):
        msg = (f"{where}: maxlen must be None (keep everything) or a positive int; "
               f"got {describe(maxlen)}")
        raise ConfigError(msg)
    return maxlen


class StreamWriter:
    """XADD entries, pipelining those submitted within one loop turn.

    Each XADD's future resolves with the new entry id (``str``). Connection
    failures are retried with backoff (see :class:`~mdflow.batching.Batcher`),
    so an entry is written at least once; a retried pipeline may write an
    entry twice if the connection dropped after Redis applied it.
    """

    def __init__(self, url: str, name: str, status: NodeStatus):
        self._url = url
        self._batcher: Batcher | None = None
        self._name = name
        self._status = status

    def add(self, topic: str, fields: dict, maxlen: int | None = None,
            approximate: bool = True) -> asyncio.Future:
        if self._batcher is None:
            self._batcher = Batcher(self._flush, self._name, self._status)
        return self._batcher.submit((topic, fields, maxlen, approximate))

    async def _flush(self, items: Sequence[tuple]) -> list:
        pipe = client(self._url).pipeline(transaction=False)
        for topic, fields, maxlen, approximate in items:
            pipe.xadd(topic, fields, maxlen=maxlen, approximate=approximate)
        results = await pipe.execute(raise_on_error=False)
        return [r if isinstance(r, BaseException) else r.decode() for r in results]

    async def drain(self, timeout: float | None = None) -> bool:
        return True if self._batcher is None else await self._batcher.drain(timeout)

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None


@Stream.register_api()
class to_redis(Sink):
    """XADD every element to a Redis stream; emit the new entry id downstream.

    Writes that arrive within one loop turn go out in one pipelined round
    trip. The node's future completes only after Redis confirmed the XADD, so
    an upstream ``from_redis`` acknowledges its entry only then, and a slow
    Redis slows the source. Writes that fail because Redis went away are
    retried with backoff, not dropped.

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
    _counters = ("written", "errors", "reconnects")
    str_list = ["topic", "maxlen", "codec"]

    def __init__(self, upstream: Stream, topic: str | Callable[[Any], str], maxlen: int | None = None,
                 approximate: bool = True, codec: str = "msgpack", redis_url: str | None = None,
                 **kwargs):
        where = "to_redis"
        if not callable(topic):
            check_topic(topic, where)
        self.topic = topic
        self.maxlen = check_maxlen(maxlen, where)
        self.approximate = bool(approximate)
        self.codec = check_codec(codec, allow_auto=False, where=where)
        self._url = resolve_url(redis_url)
        self._label = topic if isinstance(topic, str) else getattr(topic, "__name__", "topic()")
        self._status = NodeStatus(self._counters)
        self._status.state = "running"
        kwargs["ensure_io_loop"] = True
        super().__init__(upstream, **kwargs)
        self._writer = StreamWriter(self._url, node_name(self), self._status)
        self._outstanding = 0

    def update(self, x: Any, who: Stream | None = None, metadata: list[dict] | None = None):
        topic = self.topic(x) if callable(self.topic) else self.topic
        fields = encode_entry(x, self.codec)  # EncodeError surfaces to the upstream source
        self._retain_refs(metadata)  # held until Redis confirmed the XADD: no early ack
        future = self._writer.add(topic, fields, self.maxlen, self.approximate)
        future.add_done_callback(partial(self._written, topic, metadata))
        self._outstanding += 1
        # Writes issued in one loop turn share a round trip, so the upstream only waits when
        # too many are outstanding: bounded memory (backpressure) without one trip per element.
        return future if self._outstanding > MAX_OUTSTANDING_WRITES else None

    def _written(self, topic: str, metadata: list[dict] | None, future: asyncio.Future) -> None:
        """The XADD finished: count it, emit the id downstream, then let go of the element."""
        self._outstanding -= 1
        error = asyncio.CancelledError("to_redis was closed") if future.cancelled() else future.exception()
        if error is not None:
            self._failed(topic, metadata, error)
            return
        self._status.incr("written")
        if not self.downstreams:
            self._release_refs(metadata)
            return
        try:
            futures = self._emit(future.result(), metadata=metadata)
        except Exception as exc:  # noqa: BLE001 - downstream of to_redis raised
            self._failed(topic, metadata, exc)
            return
        if not futures:
            self._release_refs(metadata)
            return
        waiting = asyncio.gather(*futures, return_exceptions=True)
        waiting.add_done_callback(partial(self._downstream_done, topic, metadata))

    def _downstream_done(self, topic: str, metadata: list[dict] | None, waiting) -> None:
        errors = [r for r in waiting.result() if isinstance(r, BaseException)]
        if errors:
            self._failed(topic, metadata, errors[0])
        else:
            self._release_refs(metadata)

    def _failed(self, topic: str, metadata: list[dict] | None, error: BaseException) -> None:
        # Tell the source first (it will not ack), then release: an ack can never win the race.
        self._status.error(error)
        logger.error("%s: writing to %r failed: %s", node_name(self), topic, error)
        report_failure(metadata, error)
        self._release_refs(metadata)

    def status(self) -> dict[str, Any]:
        """State, ``written``/``errors``/``reconnects`` counts and the last error."""
        return self._status.as_dict(topic=self._label)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every submitted write is confirmed by Redis."""
        return await self._writer.drain(timeout)

    def destroy(self, streams=None) -> None:
        self._writer.close()
        super().destroy()
