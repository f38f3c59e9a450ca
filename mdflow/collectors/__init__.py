"""Collectors: bring outside market data into the graph and keep the feeds alive.

* :class:`Collector` — subclass it to talk to a feed (connect, subscribe,
  messages, parse, disconnect);
* ``Stream.collector(c, ...)`` — the source node that runs one and supervises
  it (heartbeat, data-silence detection, reconnect with backoff, status);
* :class:`CollectorManager` — restarts failed collectors, publishes status;
* :class:`WebSocketCollector`, :class:`PollingCollector` — ready-made feeds;
* :class:`SimulatedExchange` — a local websocket exchange for demos and tests.

Importing this package registers ``Stream.collector``. It may import
:mod:`mdflow.nodes`, :mod:`mdflow.reservoir` and the bottom modules (errors,
checks, marketdata); never :mod:`mdflow.streams` or :mod:`mdflow.pubsub` (a
collector's output reaches Redis through ``to_redis`` in the user's graph).
"""

from __future__ import annotations

from ..marketdata import OHLCV, DataType, MarketDataPoint
from .collector import Collector, CollectorState, DataSilence, FeedClosed, FeedError
from .manager import STATUS_KEY, CollectorManager, published_status
from .node import collector
from .polling import PollingCollector
from .simulated import SimulatedExchange, SimulatedExchangeCollector
from .websocket import WebSocketCollector

__all__ = [
    "OHLCV",
    "STATUS_KEY",
    "Collector",
    "CollectorManager",
    "CollectorState",
    "DataSilence",
    "DataType",
    "FeedClosed",
    "FeedError",
    "MarketDataPoint",
    "PollingCollector",
    "SimulatedExchange",
    "SimulatedExchangeCollector",
    "WebSocketCollector",
    "collector",
    "published_status",
]
