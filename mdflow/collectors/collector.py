"""What a collector is: the abstract :class:`Collector` and the :class:`CollectorState` enum.

A :class:`Collector` knows *how to talk to one feed*: connect, subscribe,
yield raw messages, parse them, disconnect. It knows nothing about retries,
heartbeats or restarts: :class:`~mdflow.collectors.node.collector` (the
``Stream.collector`` node) supervises it, so every collector gets the same
health monitoring and recovery.

Examples
--------
>>> class Clock(Collector):                                    # doctest: +SKIP
...     async def connect(self): pass
...     async def disconnect(self): pass
...     async def subscribe(self, symbols, data_types): pass
...     async def messages(self):
...         while True:
...             await asyncio.sleep(1)
...             yield time.time()
...     def parse(self, raw):
...         return MarketDataPoint(self.exchange, "CLOCK", raw, "ticker", {"t": raw})
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator, Iterable
from typing import Any

from ..errors import ConfigError, MdflowError, describe
from ..marketdata import DataType, MarketDataPoint

__all__ = [
    "Collector",
    "CollectorState",
    "DataSilence",
    "FeedClosed",
    "FeedError",
    "check_data_types",
    "check_symbols",
]


class CollectorState(str, enum.Enum):
    """Where a supervised collector is in its life (``status()["status"]``).

    ``RUNNING``
        connected, subscribed and receiving;
    ``UNHEALTHY``
        connected but silent for longer than ``max_silence`` (a restart
        follows at once when ``auto_restart`` is on);
    ``RESTARTING``
        a failure happened; backing off before reconnecting;
    ``ERROR``
        a failure happened and ``auto_restart`` is off: the loop ended;
    ``FAILED``
        ``max_restarts`` restarts in a row failed: the loop ended until
        someone (or a :class:`~mdflow.collectors.CollectorManager`) restarts it;
    ``STARTING`` / ``STOPPING`` / ``STOPPED``
        on the way up, on the way down, not running.

    The values are the lowercase names, so ``state == "running"`` works.

    Examples
    --------
    >>> CollectorState.RUNNING == "running"
    True
    """

    STARTING = "starting"
    RUNNING = "running"
    UNHEALTHY = "unhealthy"
    RESTARTING = "restarting"
    ERROR = "error"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


def check_symbols(symbols: Any, where: str) -> list[str]:
    """A str or a non-empty sequence of non-empty str -> list without duplicates."""
    if isinstance(symbols, str):
        symbols = [symbols]
    ok = isinstance(symbols, Iterable) and not isinstance(symbols, (bytes, dict))
    items = list(symbols) if ok else []
    if not items or not all(isinstance(s, str) and s.strip() for s in items):
        msg = (
            f"{where}: symbols must be a non-empty str or a non-empty list of non-empty str "
            f"like ['BTC-USDT']; got {describe(symbols)}"
        )
        raise ConfigError(msg)
    return list(dict.fromkeys(items))


def check_data_types(data_types: Any, where: str) -> list[DataType]:
    """None (ticker), a DataType/str or a sequence of them -> list of DataType."""
    if data_types is None:
        return [DataType.TICKER]
    if isinstance(data_types, (str, DataType)):
        data_types = [data_types]
    choices = ", ".join(repr(d.value) for d in DataType)
    ok = isinstance(data_types, Iterable) and not isinstance(data_types, (bytes, dict))
    items = list(data_types) if ok else []
    if not items:
        msg = f"{where}: data_types must name at least one of {choices}; got {describe(data_types)}"
        raise ConfigError(msg)
    out = []
    for item in items:
        try:
            out.append(DataType(item))
        except ValueError:
            msg = f"{where}: unknown data type {describe(item)}; choose from {choices}"
            raise ConfigError(msg) from None
    return list(dict.fromkeys(out))


class Collector(abc.ABC):
    """Base class for a feed of outside market data.

    Subclasses implement the five methods below. They are called by the
    ``Stream.collector`` node on its event loop, in this order, once per
    connection: ``connect`` -> ``subscribe`` -> iterate ``messages()``, each
    raw message through ``parse`` -> ``disconnect`` (also after a failure).

    * Raising from ``connect``, ``subscribe`` or ``messages()`` (or
      ``messages()`` ending) is a *connection-level* failure: the node
      disconnects, backs off and reconnects.
    * Raising from ``parse`` only skips that message (it is counted).

    ``parse`` runs on the event loop like a streamz ``map``: keep it quick
    and never block in it (no network, no sleeping).

    Parameters
    ----------
    exchange : str
        Name of the feed, used in points, logs and status.
    symbols : str or list of str
        Instruments to subscribe to.
    data_types : DataType, str or list of them, optional
        What to subscribe to (default: tickers).

    Examples
    --------
    >>> class Replay(Collector):
    ...     def __init__(self, rows):
    ...         super().__init__("replay", ["BTC-USDT"], ["trade"])
    ...         self.rows = rows
    ...     async def connect(self): pass
    ...     async def disconnect(self): pass
    ...     async def subscribe(self, symbols, data_types): pass
    ...     async def messages(self):
    ...         for row in self.rows:
    ...             yield row
    ...     def parse(self, raw):
    ...         return MarketDataPoint(self.exchange, raw["s"], raw["t"], "trade", raw)
    >>> Replay([]).symbols
    ['BTC-USDT']
    """

    def __init__(
        self,
        exchange: str,
        symbols: str | Iterable[str],
        data_types: DataType | str | Iterable[DataType | str] | None = None,
    ):
        where = type(self).__name__
        if not isinstance(exchange, str) or not exchange.strip():
            msg = f"{where}: exchange must be a non-empty str like 'okx'; got {describe(exchange)}"
            raise ConfigError(msg)
        self.exchange = exchange
        self.symbols = check_symbols(symbols, where)
        self.data_types = check_data_types(data_types, where)

    @property
    def name(self) -> str:
        """A short label for logs and the manager: the exchange name."""
        return self.exchange

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection (raise on failure)."""

    @abc.abstractmethod
    async def disconnect(self) -> None:
        """Close the connection; must not fail if it is already closed or was never opened."""

    @abc.abstractmethod
    async def subscribe(self, symbols: list[str], data_types: list[DataType]) -> None:
        """Ask the feed for ``data_types`` of ``symbols`` (raise on failure)."""

    @abc.abstractmethod
    def messages(self) -> AsyncIterator[Any]:
        """Yield raw messages until the connection ends (an ``async def`` generator)."""

    @abc.abstractmethod
    def parse(self, raw: Any) -> MarketDataPoint | Any | list | None:
        """Turn one raw message into a point, a list of points, or None (nothing to emit)."""

    def __repr__(self) -> str:
        kinds = ",".join(d.value for d in self.data_types)
        return f"<{type(self).__name__} {self.exchange} {','.join(self.symbols)} [{kinds}]>"


class FeedError(MdflowError, ConnectionError):
    """A feed stopped behaving: it went silent or closed the connection.

    Raised inside the ``Stream.collector`` node's supervisor and recorded as
    ``last_error``; it triggers a reconnect like any connection failure.
    """


class DataSilence(FeedError):
    """No data arrived for longer than ``max_silence`` seconds."""


class FeedClosed(FeedError):
    """``messages()`` ended: the other side closed the connection."""
