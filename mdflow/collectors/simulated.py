"""A simulated exchange: a real websocket server with synthetic market data, and its collector.

It lets the demo, notebooks and tests exercise collectors over a real
socket, offline, and misbehave on command.

Protocol (JSON text frames)
---------------------------
Client -> server::

    {"op": "subscribe", "symbols": ["BTC-USDT"], "channels": ["ticker", "trade", "candle"]}
    {"op": "unsubscribe", "symbols": [...], "channels": [...]}
    {"op": "ping"}

Server -> client (decimals are strings, ``ts`` is epoch milliseconds)::

    {"type": "subscribed", "symbols": [...], "channels": [...]}
    {"type": "ticker", "symbol": "BTC-USDT", "ts": 1700000000000,
     "price": "42000.10", "bid": "41995.90", "ask": "42004.30", "volume": "12.3456"}
    {"type": "trade", "symbol": "BTC-USDT", "ts": ..., "id": 17, "price": "42000.10",
     "qty": "0.0123", "side": "buy"}
    {"type": "candle", "symbol": "BTC-USDT", "ts": <minute start>, "timeframe": "1m",
     "open": "...", "high": "...", "low": "...", "close": "...", "volume": "...",
     "trades": 12, "closed": false}
    {"type": "pong"}  /  {"type": "error", "message": "..."}

Every ``interval`` seconds each symbol's price takes a seeded random-walk
step; a ticker and the forming 1-minute candle are sent, and most ticks a
trade. When a minute ends its candle is sent once more with ``"closed": true``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from ..checks import check_seconds
from ..errors import ConfigError, describe
from ..marketdata import OHLCV, DataType, MarketDataPoint
from .collector import check_symbols
from .websocket import WebSocketCollector

__all__ = ["SimulatedExchange", "SimulatedExchangeCollector"]

logger = logging.getLogger(__name__)

CHANNELS = ("ticker", "trade", "candle")
_START_PRICES = {"BTC": 42000.0, "ETH": 2500.0, "SOL": 100.0, "XRP": 0.6, "DOGE": 0.08}
_GARBAGE = (
    "}{ this is not json",
    '{"type": "ticker", "symbol": "BTC-USDT"}',
    "[1, 2, 3]",
    '{"type": "mystery"}',
    '{"type": "trade", "symbol": "BTC-USDT", "ts": 1, "price": "abc"}',
)
_QUEUE = 1000
_NOT_RUNNING = "SimulatedExchange is not running; call start() or start_in_thread()"


class _Instrument:
    """One symbol's random walk and its forming 1-minute candle."""

    def __init__(self, symbol: str, seed: int):
        self.symbol = symbol
        self.rng = random.Random(f"{seed}:{symbol}")
        self.price = _START_PRICES.get(symbol.split("-")[0].upper(), self.rng.uniform(5, 500))
        self.places = 2 if self.price >= 1 else 6
        self.volume = Decimal(0)
        self.trade_id = 0
        self.candle: dict[str, Any] | None = None

    def _fmt(self, value: float) -> str:
        return f"{value:.{self.places}f}"

    def step(self, now: float) -> list[tuple[str, dict]]:
        floor = 10.0**-self.places
        self.price = max(floor, self.price * math.exp(self.rng.gauss(0, 0.0008)))
        price = self._fmt(self.price)
        spread = max(floor, self.price * 0.0001)
        ts = int(now * 1000)
        out: list[tuple[str, dict]] = []
        qty = Decimal(0)
        if self.rng.random() < 0.7:
            self.trade_id += 1
            qty = Decimal(f"{self.rng.expovariate(2.0) + 0.0001:.4f}")
            self.volume += qty
            out.append(
                (
                    "trade",
                    {
                        "type": "trade",
                        "symbol": self.symbol,
                        "ts": ts,
                        "id": self.trade_id,
                        "price": price,
                        "qty": str(qty),
                        "side": self.rng.choice(("buy", "sell")),
                    },
                )
            )
        out.append(
            (
                "ticker",
                {
                    "type": "ticker",
                    "symbol": self.symbol,
                    "ts": ts,
                    "price": price,
                    "bid": self._fmt(self.price - spread),
                    "ask": self._fmt(self.price + spread),
                    "volume": str(self.volume),
                },
            )
        )
        out.extend(self._candle(ts, Decimal(price), qty))
        return out

    def _candle(self, ts: int, price: Decimal, qty: Decimal) -> list[tuple[str, dict]]:
        minute = ts - ts % 60_000
        out = []
        candle = self.candle
        if candle is not None and candle["ts"] != minute:
            out.append(("candle", self._render(candle, closed=True)))
            candle = None
        if candle is None:
            candle = self.candle = {
                "ts": minute,
                "open": price,
                "high": price,
                "low": price,
                "close": price,
                "volume": Decimal(0),
                "trades": 0,
            }
        candle["high"] = max(candle["high"], price)
        candle["low"] = min(candle["low"], price)
        candle["close"] = price
        if qty:
            candle["volume"] += qty
            candle["trades"] += 1
        out.append(("candle", self._render(candle, closed=False)))
        return out

    def _render(self, candle: dict, closed: bool) -> dict:
        return {
            "type": "candle",
            "symbol": self.symbol,
            "ts": candle["ts"],
            "timeframe": "1m",
            **{k: str(candle[k]) for k in ("open", "high", "low", "close", "volume")},
            "trades": candle["trades"],
            "closed": closed,
        }


class _Client:
    def __init__(self, ws: ServerConnection):
        self.ws = ws
        self.symbols: set[str] = set()
        self.channels: set[str] = set()
        self.queue: deque[str] = deque(maxlen=_QUEUE)  # full: the oldest frame is dropped
        self.ready = asyncio.Event()

    def put(self, frame: str) -> None:
        self.queue.append(frame)
        self.ready.set()


class SimulatedExchange:
    """A local websocket exchange that streams synthetic tickers, trades and 1-minute candles.

    Start it inside a running event loop (``await ex.start()`` /
    ``await ex.stop()``, or ``async with``) or, from plain scripts and
    notebooks, on a background thread (``ex.start_in_thread()`` /
    ``ex.stop_thread()``, or ``with``). It listens on ``host`` at a free
    port unless ``port`` is given; :attr:`url` says where. The protocol is
    in the module docs. Faults on command, callable from any thread:
    :meth:`stall`, :meth:`drop_connections`, :meth:`send_garbage`. To go away
    for good, stop it (:meth:`stop` / :meth:`stop_thread`): open connections
    are closed and new ones refused until it starts again.

    Parameters
    ----------
    symbols : str or list of str
        Instruments it trades.
    interval : float
        Seconds between market ticks (every symbol moves each tick).
    seed : int
        Seed of the random walks (same seed, same prices).
    host : str
        Interface to listen on.
    port : int
        Port to listen on; 0 picks a free one.

    Examples
    --------
    >>> ex = SimulatedExchange(["BTC-USDT", "ETH-USDT"], interval=0.05)
    >>> url = ex.start_in_thread()                  # doctest: +SKIP
    >>> url                                         # doctest: +SKIP
    'ws://127.0.0.1:50321'
    >>> ex.stall(2.0)                               # doctest: +SKIP
    >>> ex.stop_thread()                            # doctest: +SKIP
    """

    def __init__(
        self,
        symbols: str | Iterable[str] = ("BTC-USDT", "ETH-USDT"),
        *,
        interval: float = 0.02,
        seed: int = 7,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        where = "SimulatedExchange"
        self.symbols = check_symbols(symbols, where)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            msg = (
                f"{where}: port must be an int in 0..65535 (0: pick a free one); "
                f"got {describe(port)}"
            )
            raise ConfigError(msg)
        self.interval = check_seconds(interval, where, "interval")
        self.seed = seed
        self.host = host
        self.port = port
        self._instruments = {s: _Instrument(s, seed) for s in self.symbols}
        self._clients: set[_Client] = set()
        self._server: Server | None = None
        self._market: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stalled_until = 0.0
        self._stats = dict.fromkeys(
            (
                "connections_total",
                "subscriptions",
                "messages_sent",
                "garbage_sent",
                "dropped_connections",
                "ticks",
            ),
            0,
        )

    # --- lifecycle --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``ws://host:port`` of the running server."""
        if self._server is None:
            raise RuntimeError(_NOT_RUNNING)
        return f"ws://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> str:
        """Start serving on the running loop; return the URL."""
        if self._server is not None:
            return self.url
        self._loop = asyncio.get_running_loop()
        self._server = await serve(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._market = asyncio.ensure_future(self._run_market())
        logger.info("simulated exchange listening on %s (%s)", self.url, ", ".join(self.symbols))
        return self.url

    async def stop(self) -> None:
        """Close every connection and stop serving."""
        server, self._server = self._server, None
        if server is None:
            return
        if self._market is not None:
            self._market.cancel()
            await asyncio.wait({self._market})
            self._market = None
        server.close()
        await server.wait_closed()
        logger.info("simulated exchange on port %d stopped", self.port)

    def start_in_thread(self, timeout: float = 10.0) -> str:
        """Run the server on an event loop in a daemon thread; return the URL once it listens."""
        if self._thread is not None:
            return self.url
        loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[str] = concurrent.futures.Future()

        def main() -> None:
            asyncio.set_event_loop(loop)
            try:
                ready.set_result(loop.run_until_complete(self.start()))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller of start_in_thread
                ready.set_exception(exc)
                loop.close()
                return
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name="mdflow-simulated-exchange", daemon=True)
        self._thread.start()
        try:
            return ready.result(timeout)
        except BaseException:
            self._thread = None
            raise

    def stop_thread(self, timeout: float = 10.0) -> None:
        """Stop a server started with :meth:`start_in_thread` and join its thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

    async def __aenter__(self) -> SimulatedExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __enter__(self) -> SimulatedExchange:
        self.start_in_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_thread()

    # --- faults on command ------------------------------------------------------------------
    def stall(self, seconds: float) -> None:
        """Send no market data for ``seconds`` (connections stay open and answer pings)."""
        seconds = check_seconds(seconds, "SimulatedExchange.stall", "seconds")
        self._stalled_until = time.monotonic() + seconds

    def drop_connections(self) -> None:
        """Abort every client connection (TCP reset, no close handshake)."""
        self._soon(self._drop)

    def send_garbage(self, n: int = 1) -> None:
        """Send ``n`` malformed frames to every client (bad JSON, unknown types, bad fields).

        They are queued behind the frames already waiting, in this order, repeated:
        text that is not JSON, a ticker without its fields, a JSON array, an unknown
        ``type``, a trade with fields missing and a price that is not a number. A
        collector counts each in ``parse_errors`` and carries on.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            msg = f"SimulatedExchange.send_garbage: n must be an int >= 1; got {describe(n)}"
            raise ConfigError(msg)
        self._soon(self._garbage, n)

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: connections (open), connections_total, subscriptions, messages_sent, ..."""
        return {
            **self._stats,
            "connections": len(self._clients),
            "stalled": time.monotonic() < self._stalled_until,
        }

    def collector(self, **kwargs: Any) -> SimulatedExchangeCollector:
        """A :class:`SimulatedExchangeCollector` for this exchange's URL and symbols."""
        kwargs.setdefault("symbols", self.symbols)
        return SimulatedExchangeCollector(self.url, **kwargs)

    def _soon(self, func: Any, *args: Any) -> None:
        loop = self._loop
        if self._server is None or loop is None:
            raise RuntimeError(_NOT_RUNNING)
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if current is loop:
            func(*args)
        else:
            loop.call_soon_threadsafe(func, *args)

    def _drop(self) -> None:
        for client in list(self._clients):
            self._stats["dropped_connections"] += 1
            client.ws.transport.abort()

    def _garbage(self, n: int) -> None:
        for client in list(self._clients):
            for i in range(n):
                client.put(_GARBAGE[i % len(_GARBAGE)])
            self._stats["garbage_sent"] += n

    # --- serving ----------------------------------------------------------------------------
    async def _run_market(self) -> None:
        next_at = time.monotonic()
        while True:
            next_at = max(next_at + self.interval, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())
            now = time.time()
            self._stats["ticks"] += 1
            frames = [
                (symbol, channel, json.dumps(message))
                for symbol, inst in self._instruments.items()
                for channel, message in inst.step(now)
            ]
            if time.monotonic() < self._stalled_until:
                continue  # the market moves on, nobody hears about it
            for client in list(self._clients):
                for symbol, channel, frame in frames:
                    if symbol in client.symbols and channel in client.channels:
                        client.put(frame)

    async def _handle(self, ws: ServerConnection) -> None:
        client = _Client(ws)
        self._clients.add(client)
        self._stats["connections_total"] += 1
        sender = asyncio.ensure_future(self._send(client))
        try:
            async for frame in ws:
                self._request(client, frame)
        except ConnectionClosed as exc:  # dropped on purpose, or the client went away
            logger.debug("simulated exchange: client %s gone: %s", ws.remote_address, exc)
        finally:
            self._clients.discard(client)
            sender.cancel()
            await asyncio.wait({sender})

    async def _send(self, client: _Client) -> None:
        try:
            while True:
                await client.ready.wait()
                while client.queue:
                    await client.ws.send(client.queue.popleft())
                    self._stats["messages_sent"] += 1
                client.ready.clear()
        except ConnectionClosed:
            return

    def _request(self, client: _Client, frame: str | bytes) -> None:
        try:
            request = json.loads(frame)
            op = request["op"]
        except (ValueError, TypeError, KeyError):
            client.put(json.dumps({"type": "error", "message": f"bad request: {str(frame)[:80]}"}))
            return
        if op == "ping":
            client.put(json.dumps({"type": "pong"}))
            return
        if op not in ("subscribe", "unsubscribe"):
            client.put(json.dumps({"type": "error", "message": f"unknown op {op!r}"}))
            return
        symbols = {s for s in request.get("symbols", []) if s in self._instruments}
        channels = {c for c in request.get("channels", CHANNELS) if c in CHANNELS}
        if op == "subscribe":
            client.symbols |= symbols
            client.channels |= channels
            self._stats["subscriptions"] += 1
        else:
            client.symbols -= symbols
            client.channels -= channels
        client.put(
            json.dumps(
                {
                    "type": f"{op}d",
                    "symbols": sorted(client.symbols),
                    "channels": sorted(client.channels),
                }
            )
        )


def _from_ms(ms: int) -> datetime:
    """Epoch milliseconds -> aware UTC datetime, exactly (no float rounding)."""
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=int(ms))


class SimulatedExchangeCollector(WebSocketCollector):
    """A :class:`WebSocketCollector` preset for :class:`SimulatedExchange`.

    Tickers and trades become :class:`~mdflow.marketdata.MarketDataPoint`
    (prices as ``Decimal``); candles become :class:`~mdflow.marketdata.OHLCV`
    (timeframe ``1m``, forming candles included: ``closed`` is dropped).

    Parameters
    ----------
    url : str
        The exchange's :attr:`SimulatedExchange.url`.
    symbols : str or list of str
        Instruments to subscribe to.
    data_types : list, optional
        Any of ``ticker``, ``trade``, ``candle`` (default: all three).
    exchange : str
        Name put in the points.
    **kwargs
        More :class:`WebSocketCollector` options.

    Examples
    --------
    >>> c = SimulatedExchangeCollector("ws://127.0.0.1:9", ["BTC-USDT"], ["ticker"])
    >>> c.parse('{"type": "ticker", "symbol": "BTC-USDT", "ts": 0, "price": "1.5", '
    ...         '"bid": "1.4", "ask": "1.6", "volume": "0"}').data["price"]
    Decimal('1.5')
    """

    def __init__(
        self,
        url: str,
        symbols: str | Iterable[str] = ("BTC-USDT",),
        data_types: Iterable[DataType | str] | None = CHANNELS,
        *,
        exchange: str = "simulated",
        **kwargs: Any,
    ):
        kwargs.setdefault("connect_options", {"proxy": None})  # always local: never via a proxy
        super().__init__(
            url,
            symbols,
            data_types,
            exchange=exchange,
            subscribe_message=self._subscription,
            **kwargs,
        )
        unsupported = [d.value for d in self.data_types if d.value not in CHANNELS]
        if unsupported:
            msg = (
                f"SimulatedExchangeCollector: the simulated exchange has no {unsupported} "
                f"channel; choose from {list(CHANNELS)}"
            )
            raise ConfigError(msg)

    @staticmethod
    def _subscription(symbols: list[str], data_types: list[DataType]) -> dict:
        return {"op": "subscribe", "symbols": symbols, "channels": [d.value for d in data_types]}

    def parse_message(self, message: Any) -> MarketDataPoint | OHLCV | None:
        if not isinstance(message, dict):
            raise ValueError(f"expected a JSON object; got {describe(message)}")
        kind = message.get("type")
        if kind in ("subscribed", "unsubscribed", "pong"):
            return None
        if kind == "error":
            raise ValueError(f"exchange says: {message.get('message')}")
        if kind == "ticker":
            data = {k: Decimal(message[k]) for k in ("price", "bid", "ask", "volume")}
            return MarketDataPoint(
                self.exchange, message["symbol"], _from_ms(message["ts"]), DataType.TICKER, data
            )
        if kind == "trade":
            trade: dict[str, int | Decimal | str] = {
                "id": int(message["id"]),
                "price": Decimal(message["price"]),
                "qty": Decimal(message["qty"]),
                "side": str(message["side"]),
            }
            return MarketDataPoint(
                self.exchange, message["symbol"], _from_ms(message["ts"]), DataType.TRADE, trade
            )
        if kind == "candle":
            return OHLCV(
                message["symbol"],
                message["timeframe"],
                _from_ms(message["ts"]),
                message["open"],
                message["high"],
                message["low"],
                message["close"],
                message["volume"],
                message.get("trades"),
            )
        raise ValueError(f"unknown message type {kind!r}")
