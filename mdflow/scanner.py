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
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Sequence

from streamz import Stream

from .base import NodeStatus, emit_and_wait, node_name, report_failure
from .codecs import decode_message, encode_message
from .connection import CONNECTION_ERRORS, client
from .errors import ConfigError, DecodeError, describe
from .publish import RedisWriter, Write, check_list_max
from .pubsub import PubSubSource, check_message_codec, note
from .record import Record
from .urls import mask_text
from .urls import redis_url as resolve_url

__all__ = ["Analyzer", "AnalyzerResult", "Cache", "scan", "scanner"]

logger = logging.getLogger(__name__)

#: Messages whose results may wait for Redis / the graph before the scanner stops reading.
MAX_PENDING_DELIVERIES = 1000
#: Seconds a stopping scanner waits for results still on their way.
DRAIN_TIMEOUT = 5.0

_COUNTERS = ("received", "processed", "decoding_errors", "empty_results", "published_results",
             "emitted", "errors", "reconnects", "restarts")


@dataclass(frozen=True, slots=True)
class AnalyzerResult:
    """One finding of an analyzer: what to emit, cache and publish.

    Parameters
    ----------
    data : Any
        The finding (emitted downstream, cached and published).
    cache_key : str, optional
        Where to cache ``data``; no caching if None.
    cache_ttl : float
        Seconds until the cache key expires; ``0`` keeps it forever.
    cache_list_max : int, optional
        Cache on a list of the newest ``cache_list_max`` findings (LPUSH +
        LTRIM) instead of a single value (SET).
    publish_key : str, optional
        The channel to PUBLISH ``data`` on; nothing is published if None.

    Examples
    --------
    >>> AnalyzerResult({"symbol": "BTC-USD", "kind": "high"}, cache_key="hod:BTC-USD",
    ...                cache_ttl=3600, cache_list_max=20, publish_key="hod")
    ... # doctest: +NORMALIZE_WHITESPACE
    AnalyzerResult(data={'symbol': 'BTC-USD', 'kind': 'high'}, cache_key='hod:BTC-USD',
                   cache_ttl=3600, cache_list_max=20, publish_key='hod')
    """

    data: Any
    cache_key: str | None = None
    cache_ttl: float = 0
    cache_list_max: int | None = None
    publish_key: str | None = None

    def __post_init__(self) -> None:
        where = "AnalyzerResult"
        for name in ("cache_key", "publish_key"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                msg = f"{where}: {name} must be None or a non-empty str; got {describe(value)}"
                raise ConfigError(msg)
        ttl = self.cache_ttl
        if (not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not math.isfinite(ttl)
                or ttl < 0):
            msg = (f"{where}: cache_ttl must be a number of seconds >= 0 (0: no expiry); "
                   f"got {describe(ttl)}")
            raise ConfigError(msg)
        check_list_max(self.cache_list_max, where, "cache_list_max")

    def write(self, codec: str) -> Write | None:
        """The cache + publish writes of this result (None if it writes nothing)."""
        if self.cache_key is None and self.publish_key is None:
            return None
        return Write(encode_message(self.data, codec), key=self.cache_key,
                     ttl=self.cache_ttl or None, list_max=self.cache_list_max,
                     channel=self.publish_key)


class Cache:
    """Async, decoding access to cached values, handed to :meth:`Analyzer.rehydrate`.

    Values are decoded with :func:`mdflow.codecs.decode_message` (``"auto"``:
    mdflow frames, JSON or text), whatever codec wrote them.

    Parameters
    ----------
    redis_url : str, optional
        Where Redis is (see :func:`mdflow.redis_url`).

    Examples
    --------
    >>> async def show(cache):                               # doctest: +SKIP
    ...     for key in await cache.keys("hod:*"):
    ...         print(key, (await cache.get_list(key, 0, 0)))
    """

    def __init__(self, redis_url: str | None = None):
        self._url = resolve_url(redis_url)

    async def get(self, key: str) -> Any:
        """The decoded value of ``key``, or None if it does not exist."""
        raw = await client(self._url).get(key)
        return None if raw is None else decode_message(raw, "auto", source=key)

    async def get_list(self, key: str, start: int = 0, stop: int = -1) -> list:
        """Decoded entries ``start..stop`` (inclusive) of list ``key``, newest first."""
        raw = await client(self._url).lrange(key, start, stop)
        return [decode_message(item, "auto", source=key) for item in raw]

    async def keys(self, pattern: str) -> list[str]:
        """Keys matching the glob ``pattern`` (SCAN, so Redis is never blocked)."""
        found = [key async for key in client(self._url).scan_iter(match=pattern, count=1000)]
        return sorted({k.decode("utf-8", errors="backslashreplace") for k in found})


class Analyzer:
    """Base class of analyzers: turn a message into findings.

    Subclasses implement :meth:`analyze` and may implement :meth:`rehydrate`.
    Both run on the node's event loop, one message at a time: keep them
    quick, and hand heavy computation to an executor
    (``await asyncio.get_running_loop().run_in_executor(None, fn, data)``).
    A plain (non-``async``) ``analyze`` is accepted too.
    Options are passed as keywords and kept in ``self.options``; a subclass
    that sets ``defaults`` (option name -> default) gets unknown names
    rejected with :class:`~mdflow.ConfigError` and missing ones filled in;
    it validates the values in its ``__init__``.

    Parameters
    ----------
    **options
        Analyzer-specific settings.

    Examples
    --------
    >>> class Threshold(Analyzer):
    ...     defaults = {"above": 100.0, "channel": "alerts"}
    ...     async def analyze(self, data):
    ...         if data["price"] > self.options["above"]:
    ...             return [AnalyzerResult(data, publish_key=self.options["channel"])]
    ...         return None
    >>> Threshold(above=5).options
    {'above': 5, 'channel': 'alerts'}
    """

    #: Short name used in labels and by :func:`mdflow.analyzers.get_analyzer`.
    name: ClassVar[str] = ""
    #: Known options and their defaults (None: accept anything).
    defaults: ClassVar[dict[str, Any] | None] = None

    def __init__(self, **options: Any) -> None:
        if self.defaults is not None:
            unknown = sorted(set(options) - set(self.defaults))
            if unknown:
                msg = (f"{type(self).__name__}: unknown option(s) {', '.join(unknown)}; "
                       f"known options are {', '.join(sorted(self.defaults)) or '(none)'}")
                raise ConfigError(msg)
            options = {**self.defaults, **options}
        self.options: dict[str, Any] = options

    async def analyze(self, data: Any) -> Iterable[AnalyzerResult] | None:
        """Analyze one message; return findings (or None / empty for nothing)."""
        raise NotImplementedError(f"{type(self).__name__} must implement analyze(data)")

    async def rehydrate(self, cache: Cache) -> None:
        """Rebuild state from the cache after a restart (default: nothing to rebuild)."""

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({shown})"


def analyzer_label(analyzer: Analyzer) -> str:
    return analyzer.name or type(analyzer).__name__


def _is_accumulator(value: Any) -> bool:
    """A plain function, as streamz's own ``scan`` (= ``accumulate``) takes, not an analyzer."""
    if isinstance(value, (Analyzer, str)) or hasattr(value, "analyze"):
        return False
    if isinstance(value, type) and issubclass(value, Analyzer):
        return False
    return callable(value)


def check_analyzer(analyzer: Any, where: str) -> Analyzer:
    """An :class:`Analyzer` instance, or the name of a registered one."""
    if isinstance(analyzer, str):
        from .analyzers import get_analyzer
        return get_analyzer(analyzer)
    if isinstance(analyzer, type) and issubclass(analyzer, Analyzer):
        msg = (f"{where}: analyzer must be an Analyzer instance; got the class "
               f"{analyzer.__name__}. Create it with its options: {analyzer.__name__}(...)")
        raise ConfigError(msg)
    if not callable(getattr(analyzer, "analyze", None)):
        msg = (f"{where}: analyzer must be an mdflow.Analyzer (with an async analyze(data) "
               f"method) or the name of a registered analyzer; got {describe(analyzer)}")
        raise ConfigError(msg)
    return analyzer


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
            except Exception as exc:  # noqa: BLE001 - a broken cache must not stop the scanner
                self._status.error(exc)
                logger.error("%s: %r could not rehydrate from the cache; starting with empty "
                             "state", self._name, self.analyzer, exc_info=exc)
            self._ready = True

    async def analyze(self, data: Any) -> list[AnalyzerResult]:
        """Run the analyzer on ``data``; raise what it raised."""
        found = self.analyzer.analyze(data)
        if inspect.isawaitable(found):
            found = await found
        results = list(found) if found else []
        for result in results:
            if not isinstance(result, AnalyzerResult):
                msg = (f"{analyzer_label(self.analyzer)}.analyze must return AnalyzerResult "
                       f"objects; got {describe(result)}")
                raise TypeError(msg)
        self._status.incr("processed")
        if not results:
            self._status.incr("empty_results")
        return results

    def store(self, results: list[AnalyzerResult]) -> asyncio.Future | None:
        """Send every result's cache + publish writes (one pipeline for this loop turn).

        The future resolves when Redis confirmed them all (None: nothing to write).
        """
        writes = [w for w in (r.write(self._codec) for r in results) if w is not None]
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
            logger.error("%s: cannot use the message from %s: %s", self._name, where,
                         mask_text(str(exc)))
        else:
            self._status.error(exc)
            logger.error("%s: %r failed on the message from %s", self._name, self.analyzer, where,
                         exc_info=exc)

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
    str_list = ["_label"]

    def __init__(self, subscriptions: str | Sequence[str], analyzer: Analyzer | str,
                 start: bool = False, codec: str = "msgpack", redis_url: str | None = None,
                 **kwargs):
        where = "scanner"
        self._init_subscriptions(subscriptions, where, "subscriptions", redis_url)
        self.analyzer = check_analyzer(analyzer, where)
        self.codec = check_message_codec(codec, where, allow_auto=False)
        self._label = f"{', '.join(self.channels)} -> {analyzer_label(self.analyzer)}"
        super().__init__(start=False, **kwargs)
        self._analysis = _Analysis(self.analyzer, self._url, self.codec, node_name(self),
                                   self._status)
        self._delivery: asyncio.Future | None = None
        self._in_delivery = 0
        if start:
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
            self._deliver(results, stored, self._delivery, channel))
        self._in_delivery += 1
        if self._in_delivery >= MAX_PENDING_DELIVERIES:
            await asyncio.wait({self._delivery})  # a slow graph or Redis slows the reader

    async def _deliver(self, results: list[AnalyzerResult], stored: asyncio.Future | None,
                       previous: asyncio.Future | None, channel: bytes) -> None:
        try:
            if stored is not None:
                try:
                    await stored
                except Exception as exc:  # noqa: BLE001 - counted and logged, results dropped
                    self._failed(exc, channel)
                    return
            self._status.incr("published_results", len(results))
            if previous is not None and not previous.done():
                await asyncio.wait({previous})
            for result in results:
                try:
                    await emit_and_wait(self, result)
                except Exception as exc:  # noqa: BLE001 - one bad element must not stop the scanner
                    self._status.error(exc)
                    logger.error("%s: the graph failed on a result from channel %r",
                                 node_name(self), self._name(channel), exc_info=exc)
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
                logger.warning("%s: %d message(s) still waiting for Redis or the graph after "
                               "%gs; not emitted", node_name(self), self._in_delivery,
                               DRAIN_TIMEOUT)
        await super()._teardown()

    def status(self) -> dict[str, Any]:
        """State; counts received/processed/decoding_errors/empty_results/published_results/
        emitted/errors/reconnects/restarts; the last error."""
        return self._status.as_dict(subscriptions=list(self.channels),
                                    analyzer=analyzer_label(self.analyzer))


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
    str_list = ["_label"]

    def __new__(cls, upstream: Stream, analyzer: Any = None, *args: Any, **kwargs: Any):
        if _is_accumulator(analyzer):
            return upstream.accumulate(analyzer, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, upstream: Stream, analyzer: Analyzer | str, codec: str = "msgpack",
                 redis_url: str | None = None, **kwargs):
        where = "scan"
        self.analyzer = check_analyzer(analyzer, where)
        self.codec = check_message_codec(codec, where, allow_auto=False)
        self._url = resolve_url(redis_url)
        self._label = analyzer_label(self.analyzer)
        self._status = NodeStatus(_COUNTERS)
        self._status.state = "running"
        kwargs["ensure_io_loop"] = True
        super().__init__(upstream, **kwargs)
        self._analysis = _Analysis(self.analyzer, self._url, self.codec, node_name(self),
                                   self._status)

    def update(self, x: Any, who: Stream | None = None, metadata: list[dict] | None = None):
        self._status.incr("received")
        self._retain_refs(metadata)  # released after analyze + write + emit: no early ack
        return asyncio.ensure_future(self._process(x, metadata))

    async def _process(self, x: Any, metadata: list[dict] | None) -> None:
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

    def destroy(self, streams=None) -> None:
        self._analysis.close()
        super().destroy()
