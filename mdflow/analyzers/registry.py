"""Find analyzers by name: the shipped ones, then the ``mdflow.analyzers`` entry points.

Third-party analyzers register under the ``mdflow.analyzers`` entry-point
group (``name = "package.module:AnalyzerClass"``) and are found by
:func:`get_analyzer`, e.g. ``Stream.scanner("ticks:*", "my_analyzer")``.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from ..errors import ConfigError, describe
from .base import Analyzer
from .high_low import HighLowOfDay
from .spike import PriceVolumeSpike

__all__ = ["BUILTINS", "GROUP", "analyzer_names", "check_analyzer", "get_analyzer"]

GROUP = "mdflow.analyzers"

BUILTINS: dict[str, type[Analyzer]] = {
    HighLowOfDay.name: HighLowOfDay,
    PriceVolumeSpike.name: PriceVolumeSpike,
}


def analyzer_names() -> list[str]:
    """Names :func:`get_analyzer` knows: the built-ins and the ``mdflow.analyzers`` entry points."""
    return sorted(set(BUILTINS) | {ep.name for ep in entry_points(group=GROUP)})


def get_analyzer(name: str, **options: Any) -> Analyzer:
    """Create the analyzer registered as ``name`` with ``options``.

    Built-ins first, then the ``mdflow.analyzers`` entry-point group.

    Examples
    --------
    >>> get_analyzer("spike", window=10)  # doctest: +NORMALIZE_WHITESPACE
    PriceVolumeSpike(window=10, window_seconds=None, min_periods=5, price_move_pct=2.0,
                     volume_factor=3.0, key_prefix='mdflow:spike',
                     publish_key='mdflow:spike:alerts', list_max=100, ttl=86400)
    >>> get_analyzer("nope")
    Traceback (most recent call last):
    ...
    mdflow.errors.ConfigError: unknown analyzer 'nope'; known analyzers: high_low_of_day, spike
    """
    if not isinstance(name, str) or not name:
        msg = f"get_analyzer: name must be a non-empty str; got {describe(name)}"
        raise ConfigError(msg)
    factory: Any = BUILTINS.get(name)
    if factory is None:
        found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
        if not found:
            msg = f"unknown analyzer {name!r}; known analyzers: {', '.join(analyzer_names())}"
            raise ConfigError(msg)
        try:
            factory = found[0].load()
        except Exception as exc:
            msg = f"analyzer {name!r} ({found[0].value}) could not be loaded: {exc}"
            raise ConfigError(msg) from exc
    analyzer = factory(**options)
    if not isinstance(analyzer, Analyzer):
        msg = f"analyzer {name!r} must create an mdflow.Analyzer; got {describe(analyzer)}"
        raise ConfigError(msg)
    return analyzer


def check_analyzer(analyzer: Any, where: str) -> Analyzer:
    """An :class:`Analyzer` instance, or the name of a registered one."""
    if isinstance(analyzer, str):
        return get_analyzer(analyzer)
    if isinstance(analyzer, type) and issubclass(analyzer, Analyzer):
        msg = (
            f"{where}: analyzer must be an Analyzer instance; got the class "
            f"{analyzer.__name__}. Create it with its options: {analyzer.__name__}(...)"
        )
        raise ConfigError(msg)
    if not callable(getattr(analyzer, "analyze", None)):
        msg = (
            f"{where}: analyzer must be an mdflow.Analyzer (with an async analyze(data) "
            f"method) or the name of a registered analyzer; got {describe(analyzer)}"
        )
        raise ConfigError(msg)
    return analyzer
