"""mdflow: live dataflow graphs on streamz with Redis as the reservoir.

Pumps (``Stream.engine``) push records into Redis streams; outlets
(``Stream.from_redis``) drain them through consumer groups into a streamz
graph; scanners listen on pub/sub and run analyzers; collectors bring outside
market data in and keep themselves alive.

Importing mdflow registers its nodes on :class:`streamz.Stream`.

The package is laid out along the water model, one room (subpackage) per
part, imports pointing downwards only::

    cli/         the ``mdflow`` command (top: may import every room)
    pictures/    pictures of topologies, live status, the system view, dashboards
    streams/     pumps and outlets: engine, from_redis (acks, dead letters), to_redis
    pubsub/      from_pubsub, to_pubsub/to_cache, scanner/scan
    collectors/  outside feeds brought in and kept alive
    analyzers/   what turns a message into findings; the shipped analyzers
    nodes/       what every node shares: supervision, status, emits, batched writes, run()
    codecs/      the wire format
    reservoir/   where Redis is and how to talk to it
    errors, checks, record, marketdata   the bottom: no other mdflow imports
"""

from __future__ import annotations

import importlib.metadata as _metadata

from . import codecs
from .analyzers import Analyzer, AnalyzerResult, Cache
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
from .errors import (
    ConfigError,
    DecodeError,
    ElementTooLarge,
    EncodeError,
    MdflowError,
    NodeFailed,
    RedisAccessDenied,
    RedisUnavailable,
    ValidationError,
    WriteRefused,
)
from .marketdata import OHLCV, DataType, MarketDataPoint
from .nodes.runner import Runner, run
from .pictures import (
    RenderUnavailable,
    SystemView,
    dashboard,
    inspect,
    serve_dashboard,
    to_dot,
    to_mermaid,
    visualize,
)
from .pubsub import from_pubsub, scan, scanner, to_cache, to_pubsub
from .record import Record
from .reservoir import Backoff, client, db, mask_url, redis_url
from .streams import (
    DeadLetter,
    engine,
    from_redis,
    list_dead_letters,
    purge_dead_letters,
    replay_dead_letters,
    to_redis,
)

try:
    __version__ = _metadata.version("mdflow")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "OHLCV",
    "Analyzer",
    "AnalyzerResult",
    "Backoff",
    "Cache",
    "Collector",
    "CollectorManager",
    "CollectorState",
    "ConfigError",
    "DataType",
    "DeadLetter",
    "DecodeError",
    "ElementTooLarge",
    "EncodeError",
    "MarketDataPoint",
    "MdflowError",
    "NodeFailed",
    "PollingCollector",
    "Record",
    "RedisAccessDenied",
    "RedisUnavailable",
    "RenderUnavailable",
    "Runner",
    "SimulatedExchange",
    "SimulatedExchangeCollector",
    "SystemView",
    "ValidationError",
    "WebSocketCollector",
    "WriteRefused",
    "__version__",
    "client",
    "codecs",
    "collector",
    "dashboard",
    "db",
    "engine",
    "from_pubsub",
    "from_redis",
    "inspect",
    "list_dead_letters",
    "mask_url",
    "purge_dead_letters",
    "redis_url",
    "replay_dead_letters",
    "run",
    "scan",
    "scanner",
    "serve_dashboard",
    "to_cache",
    "to_dot",
    "to_mermaid",
    "to_pubsub",
    "to_redis",
    "visualize",
]
