"""Pub/sub: listening, publishing, caching, and the scanners that run analyzers.

* :mod:`.listener` — ``Stream.from_pubsub`` (channels and patterns, resubscribing);
* :mod:`.publish` — ``stream.to_pubsub`` and ``stream.to_cache``, pipelined writes;
* :mod:`.scanner` — ``Stream.scanner`` and ``stream.scan``: run an
  :class:`~mdflow.analyzers.Analyzer`, cache and publish its findings.

Pub/sub is at-most-once; ``from_redis(...).scan(...)`` is the reliable path.
It may import :mod:`mdflow.analyzers`, :mod:`mdflow.nodes`, :mod:`mdflow.codecs`,
:mod:`mdflow.reservoir` and the bottom modules; never :mod:`mdflow.streams`.
Importing it registers ``from_pubsub``, ``to_pubsub``, ``to_cache``, ``scanner`` and ``scan``.
"""

from __future__ import annotations

from .listener import from_pubsub
from .publish import to_cache, to_pubsub
from .scanner import scan, scanner

__all__ = ["from_pubsub", "scan", "scanner", "to_cache", "to_pubsub"]
