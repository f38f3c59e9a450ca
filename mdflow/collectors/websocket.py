"""A generic JSON websocket collector."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect

from ..checks import check_callable, check_flag
from ..errors import ConfigError, describe
from ..marketdata import DataType
from .collector import Collector, FeedClosed

__all__ = ["WebSocketCollector"]

SubscribeMessage = Mapping | str | list | Callable[[list[str], list[DataType]], Any] | None


class WebSocketCollector(Collector):
    """Collect from a websocket feed that speaks JSON.

    On each connection the collector sends the subscribe message(s), then
    every text frame is decoded with ``json.loads`` and handed to ``parse``.
    A frame that is not JSON, or that ``parse`` rejects, is counted and
    skipped by the node; a closed connection makes the node reconnect.

    Parameters
    ----------
    url : str
        ``ws://`` or ``wss://`` address of the feed.
    symbols : str or list of str
        Instruments to subscribe to.
    data_types : DataType, str or list, optional
        What to subscribe to (default: tickers).
    parse : callable, optional
        ``parse(message) -> MarketDataPoint | OHLCV | list | None`` for one
        decoded JSON message (None: nothing to emit, e.g. an acknowledgement).
        Required unless a subclass overrides :meth:`parse_message`.
    subscribe_message : dict, str, list or callable, optional
        What to send after connecting: a JSON-able dict, a raw str, a list of
        those, or ``f(symbols, data_types)`` returning one of them.
    exchange : str, optional
        Name used in points and logs (default: the URL's host name).
    decode_json : bool
        Decode frames with ``json.loads`` before ``parse`` (default True).
    open_timeout, ping_interval, close_timeout : float
        Passed to :func:`websockets.asyncio.client.connect`; protocol pings
        catch dead TCP connections, ``max_silence`` on the node catches live
        ones that stopped sending data. ``close_timeout`` is short because a
        backpressured client may not read the server's close frame in time;
        the socket is then aborted.
    connect_options : dict, optional
        More keyword arguments for :func:`websockets.asyncio.client.connect`.

    Examples
    --------
    >>> from mdflow.marketdata import MarketDataPoint
    >>> feed = WebSocketCollector(
    ...     "wss://stream.example.com/ws", ["BTC-USDT"], ["trade"],
    ...     subscribe_message=lambda symbols, types: {"op": "subscribe", "args": symbols},
    ...     parse=lambda m: MarketDataPoint("example", m["s"], m["T"] / 1000, "trade", m),
    ... )
    >>> feed.exchange
    'stream.example.com'
    """

    def __init__(
        self,
        url: str,
        symbols: str | Iterable[str],
        data_types: DataType | str | Iterable[DataType | str] | None = None,
        *,
        parse: Callable[[Any], Any] | None = None,
        subscribe_message: SubscribeMessage = None,
        exchange: str | None = None,
        decode_json: bool = True,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        close_timeout: float = 2.0,
        connect_options: Mapping[str, Any] | None = None,
    ):
        where = type(self).__name__
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("ws", "wss") or not parts.hostname:
            msg = (
                f"{where}: url must be a ws:// or wss:// address like "
                f"'wss://stream.example.com/ws'; got {describe(url)}"
            )
            raise ConfigError(msg)
        if parse is not None:
            check_callable(parse, where, "parse", 1, "taking one decoded message")
        if parse is None and type(self).parse_message is WebSocketCollector.parse_message:
            msg = (
                f"{where}: give parse=f(message) returning a MarketDataPoint/OHLCV/list/None, "
                "or subclass and override parse_message"
            )
            raise ConfigError(msg)
        if not (
            subscribe_message is None
            or callable(subscribe_message)
            or isinstance(subscribe_message, (Mapping, str, list))
        ):
            msg = (
                f"{where}: subscribe_message must be a dict, str, list or "
                f"f(symbols, data_types); got {describe(subscribe_message)}"
            )
            raise ConfigError(msg)
        super().__init__(exchange or parts.hostname, symbols, data_types)
        self.url = url
        self.decode_json = check_flag(decode_json, where, "decode_json")
        self._parse = parse
        self._subscribe_message = subscribe_message
        self._options: dict[str, Any] = {
            "open_timeout": open_timeout,
            "ping_interval": ping_interval,
            "close_timeout": close_timeout,
        }
        self._options.update(connect_options or {})
        self._ws: ClientConnection | None = None

    async def connect(self) -> None:
        """Open the websocket."""
        await self.disconnect()
        self._ws = await connect(self.url, **self._options)

    async def disconnect(self) -> None:
        """Close the websocket (a no-op when it is not open)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    def subscription_messages(self, symbols: list[str], data_types: list[DataType]) -> list[Any]:
        """The frames :meth:`subscribe` sends (dicts and lists are JSON-encoded)."""
        spec = self._subscribe_message
        if callable(spec):
            spec = spec(list(symbols), list(data_types))
        if spec is None:
            return []
        return list(spec) if isinstance(spec, list) else [spec]

    async def subscribe(self, symbols: list[str], data_types: list[DataType]) -> None:
        """Send the subscribe message(s)."""
        ws = self._connection()
        for frame in self.subscription_messages(symbols, data_types):
            await ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    async def send(self, message: Any) -> None:
        """Send one more frame (a dict is JSON-encoded), e.g. from a subclass."""
        await self._connection().send(
            message if isinstance(message, (str, bytes)) else json.dumps(message)
        )

    async def messages(self) -> AsyncIterator[Any]:
        """Yield frames until the connection closes."""
        async for frame in self._connection():
            yield frame

    def parse(self, raw: Any) -> Any:
        """Decode JSON (if ``decode_json``) and hand the message to :meth:`parse_message`."""
        message = json.loads(raw) if self.decode_json and isinstance(raw, (str, bytes)) else raw
        return self.parse_message(message)

    def parse_message(self, message: Any) -> Any:
        """Turn one decoded message into points (calls the ``parse`` argument)."""
        if self._parse is None:  # a subclass that overrides this method may still call it
            msg = (
                f"{type(self).__name__}: no parse function; give parse=f(message) or "
                "override parse_message without calling WebSocketCollector.parse_message"
            )
            raise ConfigError(msg)
        return self._parse(message)

    def _connection(self) -> ClientConnection:
        if self._ws is None:
            raise FeedClosed(f"{self.exchange}: the websocket is not connected")
        return self._ws
