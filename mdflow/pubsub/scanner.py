"""Scanners: analyzers that watch market data, cache what they find and publish it again.

An :class:`Analyzer` turns one message into zero or more
:class:`AnalyzerResult` s. Each result is written to the cache (a plain
value or a capped list, with a TTL) **and** published, in one pipelined
round trip, then emitted downstream. Two nodes run analyzers:

* ``Stream.scanner(subscriptions, analyzer)`` — a pub/sub source
  (at-most-once). A message the analyzer cannot handle is counted, logged
  and skipped; the scanner keeps running.
* ``stream.scan(analyzer)`` — the same analysis inside any pipeline, e.g.
  ``from_redis(...).scan(...)`` when no message may be lost: a failure
  reaches the source, which does not acknowledge the entry (redelivery).

Before the first message an analyzer may rebuild its state from the cache
(:meth:`Analyzer.rehydrate`), so a restarted scanner carries on where it was.

Examples
--------
>>> class Big(Analyzer):                                        # doctest: +SKIP
...     async def analyze(self, data):
...         if data["volume"] > 1000:
...             return [AnalyzerResult(data, cache_key="big", cache_list_max=50,
...                                    publish_key="alerts:big")]
>>> Stream.scanner("ticks:*", Big(), start=True)                # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, ClassVar

from streamz import Stream

from ..analyzers.base import Analyzer, AnalyzerResult, Cache, analyzer_label
from ..analyzers.registry import check_analyzer
from ..checks import check_flag, check_node_keywords
from ..codecs import decode_message, encode_message
from ..errors import DecodeError, describe
from ..nodes import NodeStatus, emit_and_wait, node_name, report_failure
from ..record import Record
from ..reservoir import CONNECTION_ERRORS, fatal_reason, mask_text
from ..reservoir import redis_url as resolve_url
from .listener import PubSubSource, check_message_codec, note
from .publish import RedisWriter, Write

__all__ = ["scan", "scanner"]

logger = logging.getLogger(__name__)

#: Messages whose results may wait for Redis / the graph before the scanner stops reading.
MAX_PENDING_DELIVERIES = 1000
#: Seconds a stopping scanner waits for results still on their way.
DRAIN_TIMEOUT = 5.0

_COUNTERS = (
    "received",
    "processed",
    "decoding_errors",
    "empty_results",
    "published_results",
    "emitted",
    "errors",
    "reconnects",
    "restarts",
)


def _is_accumulator(value: Any) -> bool:
    """A plain function, as streamz's own ``scan`` (= ``accumulate``) takes, not an analyzer."""
    if isinstance(value, (Analyzer, str)) or hasattr(value, "analyze"):
        return False
    if isinstance(value, type) and issubclass(value, Analyzer):
        return False
    return callable(value)


def write_of(result: AnalyzerResult, codec: str) -> Write | None:
    """The cache + publish writes of one finding (None if it writes nothing)."""
    if result.cache_key is None and result.publish_key is None:
        return None
    return Write(
        encode_message(result.data, codec),
        key=result.cache_key,
        ttl=result.cache_ttl or None,
        list_max=result.cache_list_max,
        channel=result.publish_key,
    )


class _Analysis:
    """Rehydrate once, analyze, then cache + publish every result in one round trip."""

    def __init__(self, analyzer: Analyzer, url: str, codec: str, name: str, status: NodeStatus):
        self.analyzer = analyzer
        self._url = url
        self._codec = codec
        self._name = name
        self._status = status
        self._writer = RedisWriter(url, name, status)
        self._ready = False
        self._lock = asyncio.Lock()

    async def ready(self) -> None:
        """Call ``analyzer.rehydrate`` once, before the first message."""
        if self._ready:
            return
        async with self._lock:
            if self._ready:
                return
            try:
                await self.analyzer.rehydrate(Cache(self._url))
            except CONNECTION_ERRORS:
                raise  # Redis is away: the caller retries (supervision or redelivery)
            except Exception as exc:
                self._status.error(exc)
                logger.error(
                    "%s: %r could not rehydrate from the cache; starting with empty state",
                    self._name,
                    self.analyzer,
                    exc_info=exc,
                )
            self._ready = True

    async def analyze(self, data: Any) -> list[AnalyzerResult]:
        """Run the analyzer on ``data``; raise what it raised."""
        # A plain (non-async) analyze is accepted too (see Analyzer), and check_analyzer lets
        # through any object with an analyze method: the outcome is findings or an awaitable.
        outcome: Awaitable[Iterable[AnalyzerResult] | None] | Iterable[AnalyzerResult] | None
        outcome = self.analyzer.analyze(data)
        found = await outcome if inspect.isawaitable(outcome) else outcome
        results = list(found) if found else []
        for result in results:
            if not isinstance(result, AnalyzerResult):
                msg = (
                    f"{analyzer_label(self.analyzer)}.analyze must return AnalyzerResult "
                    f"objects; got {describe(result)}"
                )
                raise TypeError(msg)
        self._status.incr("processed")
        if not results:
            self._status.incr("empty_results")
        return results

    def store(self, results: list[AnalyzerResult]) -> asyncio.Future[list[Any]] | None:
        """Send every result's cache + publish writes (one pipeline for this loop turn).

        The future resolves when Redis confirmed them all (None: nothing to write).
        """
        writes = [w for w in (write_of(r, self._codec) for r in results) if w is not None]
        if not writes:
            return None
        return asyncio.gather(*(self._writer.send(w) for w in writes))

    async def run(self, data: Any) -> list[AnalyzerResult]:
        """Analyze ``data`` and store its results; raise what the analyzer or Redis raised."""
        results = await self.analyze(data)
        stored = self.store(results) if results else None
        if stored is not None:
            await stored
        self._status.incr("published_results", len(results))
        return results

    def failed(self, exc: BaseException, where: str) -> None:
        """Count and log a message the analysis could not handle."""
        if isinstance(exc, DecodeError):
            note(self._status, "decoding_errors", exc)
            logger.error(
                "%s: cannot use the message from %s: %s", self._name, where, mask_text(str(exc))
            )
        else:
            self._status.error(exc)
            logger.error(
                "%s: %r failed on the message from %s",
                self._name,
                self.analyzer,
                where,
                exc_info=exc,
            )

    def close(self) -> None:
        self._writer.close()


@Stream.register_api(staticmethod)
class scanner(PubSubSource):
    """Subscribe to channels, run every message through an analyzer, cache and publish results.

    Before the first message the analyzer's ``rehydrate`` rebuilds its state
    from the cache. Each :class:`AnalyzerResult` is written to the cache
    (SET with PX, or LPUSH + LTRIM + PEXPIRE) and PUBLISHed in one pipelined
    round trip, then emitted downstream, in message order. While Redis
    confirms one message's writes the scanner already analyzes the next ones
    (at most ``MAX_PENDING_DELIVERIES`` ahead: beyond that a slow graph or
    Redis slows the reader); ``stop()`` waits up to ``DRAIN_TIMEOUT`` s for
    results on their way. A message that cannot be decoded
    or that the analyzer raises on is counted (``decoding_errors`` /
    ``errors``), logged with the channel, and skipped. Pub/sub is
    at-most-once; use ``from_redis(...).scan(analyzer)`` when no message
    may be lost.

    Parameters
    ----------
    subscriptions : str or list of str
        Channels; names with ``*``, ``?`` or ``[`` are patterns (PSUBSCRIBE).
    analyzer : Analyzer or str
        An :class:`Analyzer` instance, or the name of a registered one
        (see :func:`mdflow.analyzers.get_analyzer`).
    start : bool
        Start at once.
    codec : {"msgpack", "json"}
        How results are cached and published (messages in are decoded with
        ``"auto"``). Use ``"json"`` when non-Python programs read them.
    redis_url : str, optional
        Where Redis is (see :func:`mdflow.redis_url`).

    Examples
    --------
    >>> from streamz import Stream
    >>> from mdflow.analyzers import HighLowOfDay
    >>> alerts = Stream.scanner("ticks:*", HighLowOfDay(tz="America/New_York",
    ...                                                 day_end="20:00"))   # doctest: +SKIP
    >>> alerts.sink(print)                                                  # doctest: +SKIP
    >>> alerts.start()                                                      # doctest: +SKIP
    >>> alerts.status()["published_results"]                                # doctest: +SKIP
    3
    """

    _graphviz_shape = "doubleoctagon"
    _counters = _COUNTERS
    str_list: ClassVar[list[str]] = ["_label"]

    def __init__(
        self,
        subscriptions: str | Sequence[str],
        analyzer: Analyzer | str,
        start: bool = False,
        codec: str = "msgpack",
        redis_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        where = "scanner"
        self._init_subscriptions(subscriptions, where, "subscriptions", redis_url)
        self.analyzer = check_analyzer(analyzer, where)
        self.codec = check_message_codec(codec, where, allow_auto=False)
        self._label = f"{', '.join(self.channels)} -> {analyzer_label(self.analyzer)}"
        super().__init__(start=False, **kwargs)
        self._analysis = _Analysis(
            self.analyzer, self._url, self.codec, node_name(self), self._status
        )
        self._delivery: asyncio.Future[None] | None = None
        self._in_delivery = 0
        if check_flag(start, type(self).__name__, "start"):
            self.start()

    async def _after_subscribe(self) -> None:
        await self._analysis.ready()

    async def _on_message(self, channel: bytes, pattern: bytes | None, data: bytes) -> None:
        try:
            results = await self._analysis.analyze(decode_message(data, "auto"))
            stored = self._analysis.store(results) if results else None
        except Exception as exc:  # noqa: BLE001 - counted and logged; the scanner keeps running
            self._failed(exc, channel)
            return
        if not results:
            return
        # The next message is read while Redis confirms this one's writes: one round trip per
        # message would cap a scanner at a few thousand messages a second. Results still reach
        # the graph in order, each after its own writes.
        self._delivery = asyncio.ensure_future(
            self._deliver(results, stored, self._delivery, channel)
        )
        self._in_delivery += 1
        if self._in_delivery >= MAX_PENDING_DELIVERIES:
            await asyncio.wait({self._delivery})  # a slow graph or Redis slows the reader

    async def _deliver(
        self,
        results: list[AnalyzerResult],
        stored: asyncio.Future[list[Any]] | None,
        previous: asyncio.Future[None] | None,
        channel: bytes,
    ) -> None:
        try:
            if stored is not None:
                try:
                    await stored
                except Exception as exc:  # noqa: BLE001 - counted and logged, results dropped
                    if fatal_reason(exc) is not None:  # an ACL, WRONGTYPE: every write would fail
                        self.fail(exc)
                        return
                    self._failed(exc, channel)
                    return
            self._status.incr("published_results", len(results))
            if previous is not None and not previous.done():
                await asyncio.wait({previous})
            for result in results:
                try:
                    await emit_and_wait(self, result)
                except Exception as exc:
                    self._status.error(exc)
                    logger.error(
                        "%s: the graph failed on a result from channel %r",
                        node_name(self),
                        self._name(channel),
                        exc_info=exc,
                    )
                else:
                    self._status.counts["emitted"] += 1
        finally:
            self._in_delivery -= 1

    def _failed(self, exc: BaseException, channel: bytes) -> None:
        name = self._name(channel)
        if isinstance(exc, DecodeError) and exc.source is None:
            exc = exc.at(name)
        self._analysis.failed(exc, f"channel {name!r}")

    async def _teardown(self) -> None:
        delivery = self._delivery
        if delivery is not None and not delivery.done():
            done, _ = await asyncio.wait({delivery}, timeout=DRAIN_TIMEOUT)
            if not done:
                logger.warning(
                    "%s: %d message(s) still waiting for Redis or the graph after %gs; not emitted",
                    node_name(self),
                    self._in_delivery,
                    DRAIN_TIMEOUT,
                )
        await super()._teardown()

    def status(self) -> dict[str, Any]:
        """State; counts received/processed/decoding_errors/empty_results/published_results/
        emitted/errors/reconnects/restarts; the last error."""
        return self._status.as_dict(
            subscriptions=list(self.channels), analyzer=analyzer_label(self.analyzer)
        )


@Stream.register_api()
class scan(Stream):
    """Run every element through an analyzer; cache + publish the results; emit them.

    The analysis of ``scanner`` as a node of any pipeline, so analyzers also
    run on reliable streams (``from_redis(...).scan(...)``). ``update``
    returns a future that completes after analyze, the cache/publish round
    trip and the downstream emit; the element's metadata references are
    held until then, so an upstream ``from_redis`` acknowledges the entry
    only after the analysis. If the analyzer (or Redis) fails, the failure
    is counted, logged and raised into that future: the entry is not
    acknowledged and will be redelivered. An :class:`mdflow.Record`
    element is analyzed by its ``data``.

    streamz itself defines ``scan`` as an alias of ``accumulate``; given a
    plain function instead of an analyzer (``scan(func, start=...)``),
    ``scan`` still builds that ``accumulate`` node, so existing graphs (and
    streamz's ``frequencies``) keep working.

    Parameters
    ----------
    analyzer : Analyzer or str
        An :class:`Analyzer` instance, or the name of a registered one.
    codec : {"msgpack", "json"}
        How results are cached and published.
    redis_url : str, optional
        Where Redis is (see :func:`mdflow.redis_url`).

    Examples
    --------
    >>> from streamz import Stream
    >>> from mdflow.analyzers import PriceVolumeSpike
    >>> ticks = Stream.from_redis("ticks", group="spikes")                  # doctest: +SKIP
    >>> ticks.scan(PriceVolumeSpike(window=50)).to_redis("spikes")          # doctest: +SKIP
    >>> ticks.start()                                                       # doctest: +SKIP
    """

    _graphviz_shape = "octagon"
    str_list: ClassVar[list[str]] = ["_label"]

    def __new__(cls, upstream: Stream, analyzer: Any = None, *args: Any, **kwargs: Any) -> Stream:
        if _is_accumulator(analyzer):
            return upstream.accumulate(analyzer, *args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        upstream: Stream,
        analyzer: Analyzer | str,
        codec: str = "msgpack",
        redis_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        where = "scan"
        self.analyzer = check_analyzer(analyzer, where)
        self.codec = check_message_codec(codec, where, allow_auto=False)
        self._url = resolve_url(redis_url)
        self._label = analyzer_label(self.analyzer)
        self._status = NodeStatus(_COUNTERS)
        self._status.state = "running"
        check_node_keywords(self, kwargs)
        kwargs["ensure_io_loop"] = True
        super().__init__(upstream, **kwargs)
        self._analysis = _Analysis(
            self.analyzer, self._url, self.codec, node_name(self), self._status
        )

    def update(
        self, x: Any, who: Stream | None = None, metadata: list[dict[str, Any]] | None = None
    ) -> asyncio.Future[None]:
        self._status.incr("received")
        self._retain_refs(metadata)  # released after analyze + write + emit: no early ack
        return asyncio.ensure_future(self._process(x, metadata))

    async def _process(self, x: Any, metadata: list[dict[str, Any]] | None) -> None:
        if isinstance(x, Record):
            data, where = x.data, f"{x.topic!r} entry {x.id}"
        else:
            data, where = x, "upstream"
        try:
            await self._analysis.ready()
            try:
                results = await self._analysis.run(data)
            except Exception as exc:
                self._analysis.failed(exc, where)
                raise
            for result in results:
                await emit_and_wait(self, result, metadata)
                self._status.incr("emitted")
        except Exception as exc:
            report_failure(metadata, exc)
            raise
        finally:
            self._release_refs(metadata)

    def status(self) -> dict[str, Any]:
        """State; counts processed/decoding_errors/empty_results/published_results/errors..."""
        return self._status.as_dict(analyzer=self._label)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every cache/publish write submitted so far is confirmed."""
        return await self._analysis._writer.drain(timeout)

    def destroy(self, streams: Iterable[Stream] | None = None) -> None:
        self._analysis.close()
        super().destroy()
