"""What an analyzer is: :class:`Analyzer`, its findings and its view of the cache.

An :class:`Analyzer` turns one message into zero or more
:class:`AnalyzerResult` s (what to emit, cache and publish); before its first
message it may rebuild state through a :class:`Cache`. The nodes that run
analyzers (``Stream.scanner``, ``stream.scan``) live in :mod:`mdflow.pubsub.scanner`.

Examples
--------
>>> class Big(Analyzer):
...     async def analyze(self, data):
...         if data["volume"] > 1000:
...             return [AnalyzerResult(data, cache_key="big", cache_list_max=50,
...                                    publish_key="alerts:big")]
...         return None
>>> Big()
Big()
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from ..checks import check_list_max
from ..codecs import decode_message
from ..errors import ConfigError, describe
from ..reservoir import client
from ..reservoir import redis_url as resolve_url

__all__ = ["Analyzer", "AnalyzerResult", "Cache", "analyzer_label"]


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
        if (
            not isinstance(ttl, (int, float))
            or isinstance(ttl, bool)
            or not math.isfinite(ttl)
            or ttl < 0
        ):
            msg = (
                f"{where}: cache_ttl must be a number of seconds >= 0 (0: no expiry); "
                f"got {describe(ttl)}"
            )
            raise ConfigError(msg)
        check_list_max(self.cache_list_max, where, "cache_list_max")


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
                msg = (
                    f"{type(self).__name__}: unknown option(s) {', '.join(unknown)}; "
                    f"known options are {', '.join(sorted(self.defaults)) or '(none)'}"
                )
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
