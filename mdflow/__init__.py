"""mdflow: live dataflow graphs on streamz with Redis as the reservoir.

Pumps (``Stream.engine``) push records into Redis streams; outlets
(``Stream.from_redis``) drain them through consumer groups into a streamz
graph; scanners listen on pub/sub and run analyzers; collectors bring outside
market data in and keep themselves alive.

Importing mdflow registers its nodes on :class:`streamz.Stream`.
"""

from __future__ import annotations

import importlib.metadata as _metadata

from . import codecs
from .collectors import (
    Collector,
    CollectorManager,
    CollectorState,
    PollingCollector,
    SimulatedExchange,
    SimulatedExchangeCollector,
    WebSocketCollector,
    collector,
)
from .connection import Backoff, client, db
from .engine import engine
from .errors import (
    ConfigError,
    DecodeError,
    EncodeError,
    MdflowError,
    RedisUnavailable,
    ValidationError,
)
from .marketdata import OHLCV, DataType, MarketDataPoint
from .outlet import from_redis
from .publish import to_cache, to_pubsub
from .pubsub import from_pubsub
from .record import Record
from .scanner import Analyzer, AnalyzerResult, Cache, scan, scanner
from .urls import mask_url, redis_url
from .writers import to_redis

try:
    __version__ = _metadata.version("mdflow")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "Analyzer",
    "AnalyzerResult",
    "Cache",
    "from_pubsub",
    "scan",
    "scanner",
    "to_cache",
    "to_pubsub",
    "Collector",
    "CollectorManager",
    "CollectorState",
    "DataType",
    "MarketDataPoint",
    "OHLCV",
    "PollingCollector",
    "SimulatedExchange",
    "SimulatedExchangeCollector",
    "WebSocketCollector",
    "collector",
    "Backoff",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "MdflowError",
    "Record",
    "RedisUnavailable",
    "ValidationError",
    "__version__",
    "client",
    "codecs",
    "db",
    "engine",
    "from_redis",
    "mask_url",
    "redis_url",
    "to_redis",
]
