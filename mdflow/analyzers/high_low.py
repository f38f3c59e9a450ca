"""``HighLowOfDay``: alert when a symbol trades at a new high or low of its trading day."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from datetime import time as dtime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis

from ..checks import check_positive, check_text
from ..errors import ConfigError, describe
from .base import Analyzer, AnalyzerResult, Cache
from .ticks import parse_tick

__all__ = ["HighLowOfDay"]


class HighLowOfDay(Analyzer):
    """Alert when a symbol trades at a new high or low of its trading day.

    The first tick of a day opens the range (a result of kind ``"open"``,
    cached but not published); every later tick above the high or below
    the low produces a ``"high"`` / ``"low"`` alert, cached on the symbol's
    list ``{key_prefix}:{symbol}`` (newest first, at most ``list_max``,
    expiring at the end of the trading day) and published on
    ``publish_key``. Each cached entry carries the day's ``high`` and
    ``low``, so :meth:`rehydrate` restores every symbol's range after a
    restart.

    Options
    -------
    tz : str
        Time zone of the trading day (IANA name), default ``"UTC"``.
    day_end : str
        ``"HH:MM"`` local time at which a trading day ends (``"00:00"``:
        midnight; ``"20:00"`` for US equities incl. after-hours).
    key_prefix : str
        Cache lists are ``{key_prefix}:{symbol}``; default ``"mdflow:hod"``.
    publish_key : str or None
        Channel for alerts; default ``"mdflow:hod:alerts"``.
    list_max : int
        Newest alerts kept per symbol; default 100.
    min_change_pct : float
        Ignore new extremes that beat the old one by less than this many
        percent (0: every new extreme alerts).

    Examples
    --------
    >>> import asyncio
    >>> hod = HighLowOfDay(key_prefix="hod")
    >>> async def feed(prices):
    ...     out = []
    ...     for p in prices:
    ...         found = await hod.analyze({"symbol": "BTC-USD", "price": p})
    ...         out += [r.data["kind"] for r in found or []]
    ...     return out
    >>> asyncio.run(feed([100, 101, 100.5, 99]))
    ['open', 'high', 'low']
    """

    name = "high_low_of_day"
    defaults: ClassVar[dict[str, Any] | None] = {
        "tz": "UTC",
        "day_end": "00:00",
        "key_prefix": "mdflow:hod",
        "publish_key": "mdflow:hod:alerts",
        "list_max": 100,
        "min_change_pct": 0.0,
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        where = "HighLowOfDay"
        opts = self.options
        try:
            self._tz = ZoneInfo(check_text(opts["tz"], where, "option tz"))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            msg = (
                f"{where}: option tz must be an IANA time zone like 'America/New_York'; "
                f"got {opts['tz']!r}"
            )
            raise ConfigError(msg) from exc
        try:
            self._day_end = dtime.fromisoformat(
                check_text(opts["day_end"], where, "option day_end")
            )
        except ValueError as exc:
            msg = (
                f"{where}: option day_end must be a local time 'HH:MM' like '20:00'; "
                f"got {opts['day_end']!r}"
            )
            raise ConfigError(msg) from exc
        self._prefix = check_text(opts["key_prefix"], where, "option key_prefix")
        self._channel = (
            None
            if opts["publish_key"] is None
            else check_text(opts["publish_key"], where, "option publish_key")
        )
        self._list_max = check_positive(opts["list_max"], where, "option list_max", integer=True)
        change = opts["min_change_pct"]
        if not isinstance(change, (int, float)) or isinstance(change, bool) or change < 0:
            msg = f"{where}: option min_change_pct must be a number >= 0; got {describe(change)}"
            raise ConfigError(msg)
        self._min_change = change / 100.0
        #: symbol -> [day, high, low] (a list of mixed types: a date and two prices)
        self.ranges: dict[str, list[Any]] = {}

    def trading_day(self, ts: float) -> tuple[date, float]:
        """The trading day ``ts`` belongs to and the epoch time at which that day ends."""
        local = datetime.fromtimestamp(ts, self._tz)
        end = datetime.combine(local.date(), self._day_end, tzinfo=self._tz)
        if end <= local:
            end = datetime.combine(local.date() + timedelta(days=1), self._day_end, tzinfo=self._tz)
        # The day a range belongs to is the date on which it ends (just before midnight ends).
        day = (end - timedelta(microseconds=1)).date()
        return day, end.timestamp()

    async def analyze(self, data: Any) -> list[AnalyzerResult] | None:
        tick = parse_tick(data)
        day, day_ends = self.trading_day(tick.ts)
        current = self.ranges.get(tick.symbol)
        if current is None or current[0] != day:
            if current is not None and current[0] > day:
                return None  # a late tick of a day that is already over
            self.ranges[tick.symbol] = [day, tick.price, tick.price]
            kind, previous = "open", None
        elif tick.price > current[1] * (1 + self._min_change):
            kind, previous = "high", current[1]
            current[1] = tick.price
        elif tick.price < current[2] * (1 - self._min_change):
            kind, previous = "low", current[2]
            current[2] = tick.price
        else:
            return None
        _, high, low = self.ranges[tick.symbol]
        alert = {
            "symbol": tick.symbol,
            "kind": kind,
            "price": tick.price,
            "previous": previous,
            "high": high,
            "low": low,
            "day": day.isoformat(),
            "ts": tick.ts,
        }
        ttl = max(1, math.ceil(day_ends - time.time()))
        return [
            AnalyzerResult(
                alert,
                cache_key=f"{self._prefix}:{tick.symbol}",
                cache_ttl=ttl,
                cache_list_max=self._list_max,
                publish_key=None if kind == "open" else self._channel,
            )
        ]

    async def rehydrate(self, cache: Cache) -> None:
        """Restore today's high/low of every symbol from the newest cached alert."""
        today, _ = self.trading_day(time.time())
        for key in await cache.keys(f"{self._prefix}:*"):
            try:
                newest = await cache.get_list(key, 0, 0)
            except redis.ResponseError:
                continue  # not one of our lists (e.g. a key of another kind under the prefix)
            entry = newest[0] if newest else None
            if not isinstance(entry, Mapping) or entry.get("day") != today.isoformat():
                continue
            symbol = entry.get("symbol")
            if not isinstance(symbol, str) or not symbol:
                continue  # not an alert of ours: every alert names its symbol
            try:
                high, low = float(entry["high"]), float(entry["low"])
            except (KeyError, TypeError, ValueError):
                continue
            known = self.ranges.get(symbol)
            if known is None or known[0] != today:
                self.ranges[symbol] = [today, high, low]
            else:  # ticks arrived before rehydration: keep the wider range
                known[1], known[2] = max(known[1], high), min(known[2], low)
