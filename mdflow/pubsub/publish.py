"""Writing to Redis from a graph: ``to_pubsub`` publishes, ``to_cache`` stores.

Writes (PUBLISH, SET, LPUSH + LTRIM + PEXPIRE) submitted within one loop turn
go out in one pipelined round trip (:class:`RedisWriter`). Like ``to_redis``
(see :mod:`mdflow.nodes.pipelined`), each element is held until Redis confirmed its
write, so an upstream ``from_redis`` acknowledges its entry only then, and
upstream sources wait once too many writes are in flight (backpressure).

Examples
--------
>>> from streamz import Stream
>>> alerts = Stream()
>>> alerts.to_pubsub("alerts", codec="json")                            # doctest: +SKIP
>>> alerts.to_cache(lambda a: f"alerts:{a['symbol']}", list_max=50, ttl=3600)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, overload

from redis.exceptions import NoPermissionError
from streamz import Stream

from ..checks import check_list_max, check_name, check_ttl
from ..codecs import encode_message
from ..nodes import BatchedWriter, PipelinedSink, node_name
from ..reservoir import client
from ..reservoir import redis_url as resolve_url
from ..reservoir.fatal import with_command
from .listener import check_message_codec

__all__ = ["RedisWriter", "Write", "to_cache", "to_pubsub"]

logger = logging.getLogger(__name__)


def _label_of(value: Any) -> str:
    return value if isinstance(value, str) else f"{getattr(value, '__name__', 'key')}()"


# --- pipelined writes ----------------------------------------------------------------------
@dataclass(slots=True)
class Write:
    """What one element (or one analyzer result) writes: a cache entry and/or a PUBLISH.

    ``value`` goes to ``key`` (SET, or LPUSH + LTRIM when ``list_max`` is set,
    with a TTL of ``ttl`` seconds); ``value`` is also published on ``channel``.
    """

    value: bytes
    key: str | None = None
    ttl: float | None = None
    list_max: int | None = None
    channel: str | None = None

    def queue(self, pipe: Any) -> int:
        """Add this write's commands to ``pipe``; return how many were added."""
        n = 0
        if self.key is not None:
            ms = math.ceil(self.ttl * 1000) if self.ttl else None
            if self.list_max is not None:
                pipe.lpush(self.key, self.value)
                pipe.ltrim(self.key, 0, self.list_max - 1)
                n += 2
                if ms:
                    pipe.pexpire(self.key, ms)
                    n += 1
            else:
                pipe.set(self.key, self.value, px=ms)
                n += 1
        if self.channel is not None:
            pipe.publish(self.channel, self.value)
            n += 1
        return n


class RedisWriter(BatchedWriter):
    """Send :class:`Write` s, pipelining those submitted within one loop turn.

    Each future resolves with the number of subscribers that received the
    PUBLISH (``None`` if the write published nothing), or fails with the
    error Redis answered. Connection failures are retried with backoff by
    :class:`~mdflow.nodes.Batcher`, so a write is sent at least once.
    """

    @overload
    def send(self, write: Write, done: None = None) -> asyncio.Future[Any]: ...
    @overload
    def send(
        self, write: Write, done: Callable[[Any], None] | None
    ) -> asyncio.Future[Any] | None: ...
    def send(
        self, write: Write, done: Callable[[Any], None] | None = None
    ) -> asyncio.Future[Any] | None:
        """Queue ``write``: a future for its result, or (with ``done``) no future."""
        return self.submit(write, done)

    def _largest(self, write: Write) -> int:  # (checked against proto-max-bulk-len)
        return len(write.value)

    def _measure(self, write: Write) -> tuple[str, int, str]:
        target = f"key {write.key!r}" if write.key is not None else f"channel {write.channel!r}"
        return target, len(write.value), "encoded value"

    async def _flush(self, writes: Sequence[Write]) -> list[Any]:
        pipe = client(self._url).pipeline(transaction=False)
        sizes = [write.queue(pipe) for write in writes]
        commands = [args for args, _ in pipe.command_stack]  # (execute empties the stack)
        replies = await pipe.execute(raise_on_error=False)
        replies = [  # an ACL refusal names the command and key/channel (Redis names neither)
            with_command(r, c) if isinstance(r, NoPermissionError) else r
            for r, c in zip(replies, commands, strict=True)
        ]
        results: list[Any] = []
        at = 0
        for write, size in zip(writes, sizes, strict=True):
            mine = replies[at : at + size]
            at += size
            failed = next((r for r in mine if isinstance(r, BaseException)), None)
            if failed is not None:
                results.append(failed)
            else:
                results.append(mine[-1] if write.channel is not None else None)
        return results


# --- publishing and caching ----------------------------------------------------------------
class _WriterSink(PipelinedSink):
    """What ``to_pubsub`` and ``to_cache`` share: their codec, URL and :class:`RedisWriter`."""

    str_list: ClassVar[list[str]] = ["_label"]

    def _init_writer(self, codec: str, redis_url: str | None, where: str) -> None:
        self.codec = check_message_codec(codec, where, allow_auto=False)
        self._url = resolve_url(redis_url)
        self._init_status()

    def _start_writer(self) -> None:
        self._writer = RedisWriter(self._url, node_name(self), self._status)


@Stream.register_api()
class to_pubsub(_WriterSink):
    """PUBLISH every element on a Redis channel; emit the number of receivers.

    Elements arriving within one loop turn are published in one pipelined
    round trip. Each element is held until its PUBLISH is confirmed, so an
    upstream ``from_redis`` acknowledges its entry only then.

    Parameters
    ----------
    channel : str or callable
        The channel, or a function of the element returning it.
    codec : {"msgpack", "json"}
        How elements are encoded. ``"msgpack"`` (mdflow frames) round-trips
        any Python value through ``from_pubsub``; ``"json"`` is readable by
        any program.
    redis_url : str, optional
        Where Redis is (see :func:`mdflow.redis_url`).

    Examples
    --------
    >>> from streamz import Stream
    >>> source = Stream()
    >>> receivers = source.to_pubsub("alerts", codec="json").sink_to_list()  # doctest: +SKIP
    >>> source.emit({"symbol": "BTC-USD", "kind": "high"})                   # doctest: +SKIP
    """

    _graphviz_shape = "cds"

    def __init__(
        self,
        upstream: Stream,
        channel: str | Callable[[Any], str],
        codec: str = "msgpack",
        redis_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        where = "to_pubsub"
        self.channel = check_name(channel, where, "channel", "pub/sub channel")
        self._init_writer(codec, redis_url, where)
        self._label = _label_of(channel)
        kwargs["ensure_io_loop"] = True
        super().__init__(upstream, **kwargs)
        self._start_writer()

    def update(
        self, x: Any, who: Stream | None = None, metadata: list[dict[str, Any]] | None = None
    ) -> asyncio.Future[Any] | None:
        channel = self.channel(x) if callable(self.channel) else self.channel
        write = Write(encode_message(x, self.codec), channel=channel)  # EncodeError: to the caller
        self._check_size(write)  # ElementTooLarge: to the caller
        return self._submit(partial(self._writer.send, write), metadata, f"channel {channel!r}")


@Stream.register_api()
class to_cache(_WriterSink):
    """Cache every element in Redis: SET a key, or push it on a capped list.

    One pipelined round trip per loop turn. Each element is held until
    Redis confirmed its write; the key written is then emitted downstream.

    ============================  ==============================================
    arguments                     commands
    ============================  ==============================================
    ``ttl=None``                  ``SET key value``
    ``ttl=60``                    ``SET key value PX 60000``
    ``list_max=100``              ``LPUSH key value; LTRIM key 0 99``
    ``list_max=100, ttl=60``      the same, then ``PEXPIRE key 60000``
    ============================  ==============================================

    Parameters
    ----------
    key : str or callable
        The key, or a function of the element returning it (e.g.
        ``lambda t: f"last:{t['symbol']}"``).
    ttl : float, optional
        Seconds until the key expires (refreshed by every write).
    list_max : int, optional
        Keep a list of the newest ``list_max`` values (newest first) instead
        of a single value.
    codec : {"msgpack", "json"}
        How values are encoded. ``"msgpack"`` (the default) stores mdflow
        frames that :func:`mdflow.codecs.decode_message` (and
        :class:`mdflow.Cache`) turn back into the exact object; choose
        ``"json"`` when other programs read the cache.
    redis_url : str, optional
        Where Redis is (see :func:`mdflow.redis_url`).

    Examples
    --------
    >>> from streamz import Stream
    >>> ticks = Stream.from_pubsub("ticks")                                  # doctest: +SKIP
    >>> ticks.to_cache(lambda t: f"last:{t['symbol']}", ttl=300, codec="json")  # doctest: +SKIP
    >>> ticks.to_cache("recent-ticks", list_max=100)                         # doctest: +SKIP
    """

    _graphviz_shape = "cylinder"

    def __init__(
        self,
        upstream: Stream,
        key: str | Callable[[Any], str],
        ttl: float | None = None,
        list_max: int | None = None,
        codec: str = "msgpack",
        redis_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        where = "to_cache"
        self.key = check_name(key, where, "key", "Redis key")
        self.ttl = check_ttl(ttl, where)
        self.list_max = check_list_max(list_max, where)
        self._init_writer(codec, redis_url, where)
        # no "=" in labels: streamz shows only what follows the last "=" of a one-item label
        extras = [f"ttl {ttl:g}s" if ttl else "", f"list_max {list_max}" if list_max else ""]
        self._label = ", ".join([_label_of(key)] + [e for e in extras if e])
        kwargs["ensure_io_loop"] = True
        super().__init__(upstream, **kwargs)
        self._start_writer()

    def update(
        self, x: Any, who: Stream | None = None, metadata: list[dict[str, Any]] | None = None
    ) -> asyncio.Future[Any] | None:
        key = self.key(x) if callable(self.key) else self.key
        write = Write(encode_message(x, self.codec), key=key, ttl=self.ttl, list_max=self.list_max)
        self._check_size(write)  # ElementTooLarge: to the caller
        return self._submit(
            partial(self._writer.send, write), metadata, f"key {key!r}", lambda _: key
        )
