"""Analyzers: what turns a market-data message into findings, and the ones mdflow ships.

* :mod:`.base` — :class:`Analyzer`, :class:`AnalyzerResult`, :class:`Cache`;
* :mod:`.ticks` — :func:`parse_tick`, the tick the shipped analyzers read;
* :mod:`.high_low`, :mod:`.spike` — :class:`HighLowOfDay`, :class:`PriceVolumeSpike`;
* :mod:`.registry` — :func:`get_analyzer` by name, the ``mdflow.analyzers`` entry points.

Analyzers know nothing of pub/sub or streams: the nodes that run them
(``Stream.scanner``, ``stream.scan``) live in :mod:`mdflow.pubsub`. This room
may import ``mdflow.errors``, ``mdflow.checks``, ``mdflow.record``,
:mod:`mdflow.reservoir` and :mod:`mdflow.codecs`, nothing above them.
"""

from __future__ import annotations

from .base import Analyzer, AnalyzerResult, Cache
from .high_low import HighLowOfDay
from .registry import GROUP, analyzer_names, get_analyzer
from .spike import PriceVolumeSpike
from .ticks import Tick, parse_tick

__all__ = [
    "GROUP",
    "Analyzer",
    "AnalyzerResult",
    "Cache",
    "HighLowOfDay",
    "PriceVolumeSpike",
    "Tick",
    "analyzer_names",
    "get_analyzer",
    "parse_tick",
]
