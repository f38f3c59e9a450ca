"""``PriceVolumeSpike``: alert on sudden price moves and volume bursts over a rolling window."""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

from ..checks import check_positive, check_text
from ..errors import ConfigError
from .base import Analyzer, AnalyzerResult
from .ticks import Tick, parse_tick

__all__ = ["PriceVolumeSpike"]


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
    defaults: ClassVar[dict[str, Any] | None] = {
        "window": 20,
        "window_seconds": None,
        "min_periods": 5,
        "price_move_pct": 2.0,
        "volume_factor": 3.0,
        "key_prefix": "mdflow:spike",
        "publish_key": "mdflow:spike:alerts",
        "list_max": 100,
        "ttl": 86400,
    }
    _MAX_TICKS = 100_000  # bound on a time window's memory per symbol

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        where = "PriceVolumeSpike"
        opts = self.options
        self._window = check_positive(opts["window"], where, "option window", integer=True)
        self._seconds = check_positive(
            opts["window_seconds"], where, "option window_seconds", allow_none=True
        )
        self._min_periods = check_positive(
            opts["min_periods"], where, "option min_periods", integer=True
        )
        move = check_positive(
            opts["price_move_pct"], where, "option price_move_pct", allow_none=True
        )
        self._move = None if move is None else move / 100.0
        self._factor = check_positive(
            opts["volume_factor"], where, "option volume_factor", allow_none=True
        )
        if self._move is None and self._factor is None:
            msg = f"{where}: price_move_pct and volume_factor are both None: nothing would alert"
            raise ConfigError(msg)
        if self._seconds is None and self._min_periods > self._window:
            msg = (
                f"{where}: min_periods ({self._min_periods}) cannot exceed window "
                f"({self._window}) ticks"
            )
            raise ConfigError(msg)
        self._prefix = check_text(opts["key_prefix"], where, "option key_prefix")
        self._channel = (
            None
            if opts["publish_key"] is None
            else check_text(opts["publish_key"], where, "option publish_key")
        )
        self._list_max = check_positive(opts["list_max"], where, "option list_max", integer=True)
        self._ttl = check_positive(opts["ttl"], where, "option ttl", allow_none=True) or 0
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
        found: list[dict[str, Any]] = []
        restart = False
        if len(window) >= self._min_periods:
            if self._move is not None:
                low = min(t.price for t in window)
                high = max(t.price for t in window)
                if tick.price > low * (1 + self._move):
                    found.append(
                        self._alert(
                            tick, "price_up", reference=low, change_pct=(tick.price / low - 1) * 100
                        )
                    )
                    restart = True
                elif tick.price < high * (1 - self._move):
                    found.append(
                        self._alert(
                            tick,
                            "price_down",
                            reference=high,
                            change_pct=(tick.price / high - 1) * 100,
                        )
                    )
                    restart = True
            if self._factor is not None and tick.volume > 0:
                mean = sum(t.volume for t in window) / len(window)
                if mean > 0 and tick.volume > self._factor * mean:
                    found.append(
                        self._alert(tick, "volume", reference=mean, ratio=tick.volume / mean)
                    )
        if restart:
            window.clear()
        window.append(tick)
        if not found:
            return None
        key = f"{self._prefix}:{tick.symbol}"
        return [
            AnalyzerResult(
                alert,
                cache_key=key,
                cache_ttl=self._ttl,
                cache_list_max=self._list_max,
                publish_key=self._channel,
            )
            for alert in found
        ]

    def _alert(self, tick: Tick, kind: str, **details: float) -> dict[str, Any]:
        return {
            "symbol": tick.symbol,
            "kind": kind,
            "price": tick.price,
            "volume": tick.volume,
            "ts": tick.ts,
            **details,
        }
