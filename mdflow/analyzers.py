"""Built-in analyzers and the ``mdflow.analyzers`` entry-point registry.

Both analyzers read market-data *ticks*: mappings with

==========  ========================================================  ==========
field       meaning                                                   required
==========  ========================================================  ==========
``symbol``  instrument, e.g. ``"BTC-USD"``                            yes
``price``   last price (number, or a numeric str as JSON publishers   yes
            often send)
``volume``  traded quantity of this tick (number or numeric str)      no (0)
``ts``      epoch seconds (ms/µs/ns are recognised by magnitude) or   no (now)
            an ISO-8601 str
==========  ========================================================  ==========

A message that is not such a tick raises :class:`~mdflow.DecodeError`
(counted as a decoding error by the scanner).

Third-party analyzers register under the ``mdflow.analyzers`` entry-point
group (``name = "package.module:AnalyzerClass"``) and are found by
:func:`get_analyzer`, e.g. ``Stream.scanner("ticks:*", "my_analyzer")``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from importlib.metadata import entry_points
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis

from .errors import ConfigError, DecodeError, describe
from .record import Record
from .scanner import Analyzer, AnalyzerResult, Cache

__all__ = ["HighLowOfDay", "PriceVolumeSpike", "Tick", "analyzer_names", "get_analyzer",
           "parse_tick"]

GROUP = "mdflow.analyzers"


# --- ticks ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Tick:
    symbol: str
    price: float
    volume: float
    ts: float


def _number(value: Any, field: str, data: Any) -> float:
    try:
        number = float(value.decode() if isinstance(value, bytes) else value)
    except (TypeError, ValueError) as exc:
        msg = (f"tick field {field!r} must be a number or a numeric str; got {describe(value)} "
               f"in {describe(data)}")
        raise DecodeError(msg) from exc
    if not math.isfinite(number) or isinstance(value, bool):
        msg = f"tick field {field!r} must be a finite number; got {describe(value)}"
        raise DecodeError(msg)
    return number


def _timestamp(value: Any, data: Any) -> float:
    if value is None:
        return time.time()
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError as exc:
                msg = f"tick field 'ts' must be epoch seconds or ISO-8601; got {describe(value)}"
                raise DecodeError(msg) from exc
    ts = _number(value, "ts", data)
    while ts > 1e11:  # milliseconds, microseconds or nanoseconds since the epoch
        ts /= 1000.0
    return ts


def parse_tick(data: Any) -> Tick:
    """Read a tick from a decoded message (a mapping, or a Record holding one).

    Examples
    --------
    >>> parse_tick({"symbol": "BTC-USD", "price": "101.5", "volume": 2, "ts": 1700000000000})
    Tick(symbol='BTC-USD', price=101.5, volume=2.0, ts=1700000000.0)
    """
    if isinstance(data, Record):
        data = data.data
    if not isinstance(data, Mapping):
        msg = (f"expected a tick like {{'symbol': 'BTC-USD', 'price': 101.5, 'volume': 3.2}}; "
               f"got {describe(data)}")
        raise DecodeError(msg)
    symbol = data.get("symbol")
    if isinstance(symbol, bytes):
        symbol = symbol.decode("utf-8", errors="backslashreplace")
    if not isinstance(symbol, str) or not symbol:
        msg = (f"tick field 'symbol' must be a non-empty str; got {describe(symbol)} "
               f"in {describe(data)}")
        raise DecodeError(msg)
    if data.get("price") is None:
        msg = f"tick has no 'price'; got {describe(data)}"
        raise DecodeError(msg)
    price = _number(data["price"], "price", data)
    if price <= 0:
        msg = f"tick field 'price' must be positive; got {describe(data['price'])} for {symbol}"
        raise DecodeError(msg)
    raw_volume = data.get("volume")
    volume = 0.0 if raw_volume is None else _number(raw_volume, "volume", data)
    return Tick(symbol, price, volume, _timestamp(data.get("ts"), data))


# --- option checks -------------------------------------------------------------------------
def _positive(options: dict, name: str, where: str, integer: bool = False,
              allow_none: bool = False) -> Any:
    value = options[name]
    if value is None and allow_none:
        return None
    kinds = (int,) if integer else (int, float)
    if not isinstance(value, kinds) or isinstance(value, bool) or not value > 0:
        kind = "a positive int" if integer else "a positive number"
        msg = (f"{where}: option {name} must be {kind}{' or None' if allow_none else ''}; "
               f"got {describe(value)}")
        raise ConfigError(msg)
    return value


def _name(options: dict, name: str, where: str, allow_none: bool = False) -> str | None:
    value = options[name]
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        msg = f"{where}: option {name} must be a non-empty str; got {describe(value)}"
        raise ConfigError(msg)
    return value


# --- high / low of the day -----------------------------------------------------------------
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
    defaults = {"tz": "UTC", "day_end": "00:00", "key_prefix": "mdflow:hod",
                "publish_key": "mdflow:hod:alerts", "list_max": 100, "min_change_pct": 0.0}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        where = "HighLowOfDay"
        opts = self.options
        try:
            self._tz = ZoneInfo(_name(opts, "tz", where))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            msg = (f"{where}: option tz must be an IANA time zone like 'America/New_York'; "
                   f"got {opts['tz']!r}")
            raise ConfigError(msg) from exc
        try:
            self._day_end = dtime.fromisoformat(_name(opts, "day_end", where))
        except ValueError as exc:
            msg = (f"{where}: option day_end must be a local time 'HH:MM' like '20:00'; "
                   f"got {opts['day_end']!r}")
            raise ConfigError(msg) from exc
        self._prefix = _name(opts, "key_prefix", where)
        self._channel = _name(opts, "publish_key", where, allow_none=True)
        self._list_max = _positive(opts, "list_max", where, integer=True)
        change = opts["min_change_pct"]
        if not isinstance(change, (int, float)) or isinstance(change, bool) or change < 0:
            msg = f"{where}: option min_change_pct must be a number >= 0; got {describe(change)}"
            raise ConfigError(msg)
        self._min_change = change / 100.0
        #: symbol -> [day, high, low]
        self.ranges: dict[str, list] = {}

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
        alert = {"symbol": tick.symbol, "kind": kind, "price": tick.price, "previous": previous,
                 "high": high, "low": low, "day": day.isoformat(), "ts": tick.ts}
        ttl = max(1, math.ceil(day_ends - time.time()))
        return [AnalyzerResult(alert, cache_key=f"{self._prefix}:{tick.symbol}", cache_ttl=ttl,
                               cache_list_max=self._list_max,
                               publish_key=None if kind == "open" else self._channel)]

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
            try:
                high, low = float(entry["high"]), float(entry["low"])
            except (KeyError, TypeError, ValueError):
                continue
            known = self.ranges.get(symbol)
            if known is None or known[0] != today:
                self.ranges[symbol] = [today, high, low]
            else:  # ticks arrived before rehydration: keep the wider range
                known[1], known[2] = max(known[1], high), min(known[2], low)


# --- price / volume spikes -----------------------------------------------------------------
class PriceVolumeSpike(Analyzer):
    """Alert on sudden price moves and volume bursts over a rolling window.

    For each symbol the analyzer keeps the last ``window`` ticks (or the
    ticks of the last ``window_seconds`` seconds). Once it holds
    ``min_periods`` ticks, a new tick alerts

    * ``"price_up"`` / ``"price_down"`` when its price is more than
      ``price_move_pct`` percent above the window's low / below its high
      (the window then restarts from this tick, so one move alerts once);
    * ``"volume"`` when its volume exceeds ``volume_factor`` times the
      window's mean volume.

    Alerts are cached on ``{key_prefix}:{symbol}`` (newest first, at most
    ``list_max``, expiring after ``ttl`` seconds) and published on
    ``publish_key``.

    Options
    -------
    window : int
        Ticks in the rolling window (default 20).
    window_seconds : float or None
        Use a time window of this many seconds instead (by tick ``ts``).
    min_periods : int
        Ticks needed before anything alerts (default 5).
    price_move_pct : float or None
        Price-move threshold in percent (default 2.0; None disables).
    volume_factor : float or None
        Volume threshold as a multiple of the mean (default 3.0; None disables).
    key_prefix, publish_key, list_max, ttl
        Where alerts go (defaults ``"mdflow:spike"``, ``"mdflow:spike:alerts"``,
        100, 86400).

    Examples
    --------
    >>> import asyncio
    >>> spike = PriceVolumeSpike(window=5, min_periods=3, price_move_pct=5)
    >>> async def feed(ticks):
    ...     out = []
    ...     for price, volume in ticks:
    ...         found = await spike.analyze({"symbol": "ETH", "price": price, "volume": volume})
    ...         out += [r.data["kind"] for r in found or []]
    ...     return out
    >>> asyncio.run(feed([(100, 1), (100, 1), (101, 1), (101, 9), (107, 1)]))
    ['volume', 'price_up']
    """

    name = "spike"
    defaults = {"window": 20, "window_seconds": None, "min_periods": 5, "price_move_pct": 2.0,
                "volume_factor": 3.0, "key_prefix": "mdflow:spike",
                "publish_key": "mdflow:spike:alerts", "list_max": 100, "ttl": 86400}
    _MAX_TICKS = 100_000  # bound on a time window's memory per symbol

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        where = "PriceVolumeSpike"
        opts = self.options
        self._window = _positive(opts, "window", where, integer=True)
        self._seconds = _positive(opts, "window_seconds", where, allow_none=True)
        self._min_periods = _positive(opts, "min_periods", where, integer=True)
        move = _positive(opts, "price_move_pct", where, allow_none=True)
        self._move = None if move is None else move / 100.0
        self._factor = _positive(opts, "volume_factor", where, allow_none=True)
        if self._move is None and self._factor is None:
            msg = f"{where}: price_move_pct and volume_factor are both None: nothing would alert"
            raise ConfigError(msg)
        if self._seconds is None and self._min_periods > self._window:
            msg = (f"{where}: min_periods ({self._min_periods}) cannot exceed window "
                   f"({self._window}) ticks")
            raise ConfigError(msg)
        self._prefix = _name(opts, "key_prefix", where)
        self._channel = _name(opts, "publish_key", where, allow_none=True)
        self._list_max = _positive(opts, "list_max", where, integer=True)
        self._ttl = _positive(opts, "ttl", where, allow_none=True) or 0
        self._ticks: dict[str, deque[Tick]] = {}

    def _window_of(self, tick: Tick) -> deque[Tick]:
        window = self._ticks.get(tick.symbol)
        if window is None:
            size = self._MAX_TICKS if self._seconds is not None else self._window
            window = self._ticks[tick.symbol] = deque(maxlen=size)
        if self._seconds is not None:
            while window and window[0].ts < tick.ts - self._seconds:
                window.popleft()
        return window

    async def analyze(self, data: Any) -> list[AnalyzerResult] | None:
        tick = parse_tick(data)
        window = self._window_of(tick)
        found: list[dict] = []
        restart = False
        if len(window) >= self._min_periods:
            if self._move is not None:
                low = min(t.price for t in window)
                high = max(t.price for t in window)
                if tick.price > low * (1 + self._move):
                    found.append(self._alert(tick, "price_up", reference=low,
                                             change_pct=(tick.price / low - 1) * 100))
                    restart = True
                elif tick.price < high * (1 - self._move):
                    found.append(self._alert(tick, "price_down", reference=high,
                                             change_pct=(tick.price / high - 1) * 100))
                    restart = True
            if self._factor is not None and tick.volume > 0:
                mean = sum(t.volume for t in window) / len(window)
                if mean > 0 and tick.volume > self._factor * mean:
                    found.append(self._alert(tick, "volume", reference=mean,
                                             ratio=tick.volume / mean))
        if restart:
            window.clear()
        window.append(tick)
        if not found:
            return None
        key = f"{self._prefix}:{tick.symbol}"
        return [AnalyzerResult(alert, cache_key=key, cache_ttl=self._ttl,
                               cache_list_max=self._list_max, publish_key=self._channel)
                for alert in found]

    def _alert(self, tick: Tick, kind: str, **details: float) -> dict:
        return {"symbol": tick.symbol, "kind": kind, "price": tick.price, "volume": tick.volume,
                "ts": tick.ts, **details}


# --- registry ------------------------------------------------------------------------------
BUILTINS: dict[str, type[Analyzer]] = {
    HighLowOfDay.name: HighLowOfDay,
    PriceVolumeSpike.name: PriceVolumeSpike,
}


def analyzer_names() -> list[str]:
    """Names :func:`get_analyzer` knows: the built-ins and the ``mdflow.analyzers`` entry points."""
    return sorted(set(BUILTINS) | {ep.name for ep in entry_points(group=GROUP)})


def get_analyzer(name: str, **options: Any) -> Analyzer:
    """Create the analyzer registered as ``name`` with ``options``.

    Built-ins first, then the ``mdflow.analyzers`` entry-point group.

    Examples
    --------
    >>> get_analyzer("spike", window=10)  # doctest: +NORMALIZE_WHITESPACE
    PriceVolumeSpike(window=10, window_seconds=None, min_periods=5, price_move_pct=2.0,
                     volume_factor=3.0, key_prefix='mdflow:spike',
                     publish_key='mdflow:spike:alerts', list_max=100, ttl=86400)
    >>> get_analyzer("nope")
    Traceback (most recent call last):
    ...
    mdflow.errors.ConfigError: unknown analyzer 'nope'; known analyzers: high_low_of_day, spike
    """
    if not isinstance(name, str) or not name:
        msg = f"get_analyzer: name must be a non-empty str; got {describe(name)}"
        raise ConfigError(msg)
    factory: Any = BUILTINS.get(name)
    if factory is None:
        found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
        if not found:
            msg = f"unknown analyzer {name!r}; known analyzers: {', '.join(analyzer_names())}"
            raise ConfigError(msg)
        try:
            factory = found[0].load()
        except Exception as exc:
            msg = f"analyzer {name!r} ({found[0].value}) could not be loaded: {exc}"
            raise ConfigError(msg) from exc
    analyzer = factory(**options)
    if not isinstance(analyzer, Analyzer):
        msg = f"analyzer {name!r} must create an mdflow.Analyzer; got {describe(analyzer)}"
        raise ConfigError(msg)
    return analyzer
