"""mdflow: live dataflow graphs on streamz with Redis as the reservoir.

Pumps (``Stream.engine``) push records into Redis streams; outlets
(``Stream.from_redis``) drain them through consumer groups into a streamz
graph; scanners listen on pub/sub and run analyzers; collectors bring outside
market data in and keep themselves alive.

Importing mdflow registers its nodes on :class:`streamz.Stream`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

from .connection import Backoff, client, db
from .errors import (
    ConfigError,
    DecodeError,
    EncodeError,
    MdflowError,
    RedisUnavailable,
    ValidationError,
)
from .urls import mask_url, redis_url

try:
    __version__ = _version("mdflow")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "Backoff",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "MdflowError",
    "RedisUnavailable",
    "ValidationError",
    "__version__",
    "client",
    "db",
    "mask_url",
    "redis_url",
]
