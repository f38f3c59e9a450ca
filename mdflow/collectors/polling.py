"""A collector that calls a function on a fixed interval (REST pollers and the like)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..checks import check_callable, check_seconds
from ..marketdata import DataType
from .collector import Collector

__all__ = ["PollingCollector"]


class PollingCollector(Collector):
    """Call ``fetch()`` every ``interval`` seconds and emit what ``parse`` makes of the result.

    ``async def`` functions are awaited; plain functions run in a thread of
    the collector's own pool (never on the event loop), so a blocking HTTP
    client is fine. Calls keep a fixed rate without drift; when a call takes
    longer than ``interval`` the missed ticks are skipped, not queued. A
    ``None`` result means "nothing this time". An exception from ``fetch`` is
    a connection-level failure: the node backs off and "reconnects" (a new
    thread pool), exactly as for a websocket.

    Parameters
    ----------
    fetch : callable
        Called with no arguments (use :func:`functools.partial` to bind some).
    symbols : str or list of str
        Instruments this poller covers (reported in status; bind them into ``fetch``).
    data_types : DataType, str or list, optional
        What it produces (default: tickers).
    interval : float
        Seconds between calls.
    parse : callable, optional
        ``parse(result) -> point | list | None``; default: the result is
        emitted as is (so ``fetch`` may return points directly).
    exchange : str
        Name used in points and logs.

    Examples
    --------
    >>> import time
    >>> from mdflow.marketdata import MarketDataPoint
    >>> def fetch():
    ...     return {"symbol": "BTC-USDT", "price": "42000.1"}   # e.g. requests.get(...).json()
    >>> poller = PollingCollector(fetch, "BTC-USDT", interval=5, exchange="rest",
    ...     parse=lambda r: MarketDataPoint("rest", r["symbol"], time.time(), "ticker", r))
    >>> poller.interval
    5.0
    """

    def __init__(
        self,
        fetch: Callable[[], Any],
        symbols: str | Iterable[str],
        data_types: DataType | str | Iterable[DataType | str] | None = None,
        *,
        interval: float = 1.0,
        parse: Callable[[Any], Any] | None = None,
        exchange: str = "polling",
    ):
        where = type(self).__name__
        check_callable(fetch, where, "fetch", 0, "taking no arguments")
        if parse is not None:
            check_callable(parse, where, "parse", 1, "taking one result")
        super().__init__(exchange, symbols, data_types)
        self.fetch = fetch
        self.interval = check_seconds(interval, where, "interval")
        self._parse = parse
        self._is_async = inspect.iscoroutinefunction(fetch)
        self._executor: ThreadPoolExecutor | None = None
        self.calls = 0

    async def connect(self) -> None:
        """Create the thread pool for a synchronous ``fetch``."""
        if not self._is_async and self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"poll-{self.exchange}")

    async def disconnect(self) -> None:
        """Drop the thread pool (a call still running finishes in the background)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    async def subscribe(self, symbols: list[str], data_types: list[DataType]) -> None:
        """Nothing to subscribe to: ``fetch`` knows what to ask for."""

    async def messages(self) -> AsyncIterator[Any]:
        """Call ``fetch`` on schedule and yield every non-None result."""
        loop = asyncio.get_running_loop()
        next_at = time.monotonic()
        while True:
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.calls += 1
            if self._is_async:
                result = await self.fetch()
            else:
                if self._executor is None:
                    await self.connect()
                result = await loop.run_in_executor(self._executor, self.fetch)
            next_at = max(next_at + self.interval, time.monotonic())
            if result is not None:
                yield result

    def parse(self, raw: Any) -> Any:
        """Apply the ``parse`` argument, or pass the result through."""
        return raw if self._parse is None else self._parse(raw)
