"""Live status for pictures: a node's health, rate and short text, an outlet edge's fill.

The numbers come from the nodes' own ``status()`` (and XINFO, through the
outlet's ``pending``/``lag``), never from estimates. Rates and the share of
each second a source spent waiting on its graph (back-pressure) are the
difference between two samples of the node's counters; :class:`Sampler`
keeps the previous sample of each node.

Health, as Node-RED's status dots:

===========  ===========  ===================================================
health       colour       when
===========  ===========  ===================================================
``ok``       green        running, no recent error
``lagging``  amber        (re)connecting, restarting, unhealthy; an outlet's
                          lag + pending at 85 % of ``max_inflight`` or more;
                          waiting on its graph more than half of the time
``failing``  red          failed, or an error in the last 10 seconds
``stopped``  grey         stopped or stopping
===========  ===========  ===================================================

Edge fill (NiFi's back-pressure bar): lag + pending relative to the outlet's
``max_inflight``: green below 60 %, amber to 85 %, red above.

Examples
--------
>>> health_of({"state": "running", "errors": 0})
'ok'
>>> fill_colour(0.7)
'#f9a825'
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from streamz import Stream

__all__ = [
    "COLOURS",
    "RATE_COUNTER",
    "Sampler",
    "fill_bar",
    "fill_colour",
    "health_of",
    "node_status",
    "overlay",
]

COLOURS = {"ok": "#2e7d32", "lagging": "#f9a825", "failing": "#c62828", "stopped": "#9e9e9e"}

#: The counter whose rate a node of each kind shows.
RATE_COUNTER = {
    "outlet": "acked",
    "engine": "written",
    "pubsub": "emitted",
    "scanner": "processed",
    "scan": "processed",
    "writer": "written",
    "publisher": "written",
    "cacher": "written",
    "collector": "points_emitted",
}

_RECENT_ERROR = 10.0  # seconds: an error this recent makes a node "failing"
_LAGGING_STATES = {"starting", "reconnecting", "restarting", "unhealthy", "connecting", "paused"}
_FAILING_STATES = {"failed", "error"}
_STOPPED_STATES = {"stopped", "stopping"}


def node_status(node: Stream) -> dict[str, Any] | None:
    """The node's own ``status()`` as a flat dict (collectors' statistics folded in)."""
    status = getattr(node, "status", None)
    if not callable(status):
        return None
    out = dict(status())
    stats = out.pop("statistics", None)
    if isinstance(stats, dict):  # a collector: counters live under "statistics"
        out.update({k: v for k, v in stats.items() if isinstance(v, (int, float))})
        out.setdefault("last_error", stats.get("last_error"))
    out.pop("backoff", None)
    out.pop("health", None)
    return out


def fill_colour(fraction: float) -> str:
    """Green below 60 %, amber to 85 %, red above (NiFi's thresholds)."""
    if fraction < 0.6:
        return COLOURS["ok"]
    return COLOURS["lagging"] if fraction < 0.85 else COLOURS["failing"]


def fill_bar(fraction: float, width: int = 5) -> str:
    """A text bar: ``fill_bar(0.4) == '▮▮▯▯▯'``."""
    full = min(width, max(0, round(fraction * width)))
    return "▮" * full + "▯" * (width - full)


def health_of(status: dict[str, Any], waiting: float = 0.0, fill: float = 0.0) -> str:
    """``ok``, ``lagging``, ``failing`` or ``stopped`` (see the module docs)."""
    state = str(status.get("state", "running")).lower()
    if state in _STOPPED_STATES:
        return "stopped"
    if state in _FAILING_STATES:
        return "failing"
    last_error_at = status.get("last_error_at")
    if isinstance(last_error_at, (int, float)) and time.time() - last_error_at < _RECENT_ERROR:
        return "failing"
    if state in _LAGGING_STATES or fill >= 0.85 or waiting > 0.5:
        return "lagging"
    return "ok"


class Sampler:
    """Previous counter samples per node, for rates and back-pressure between two looks."""

    def __init__(self) -> None:
        self._last: weakref.WeakKeyDictionary[Stream, tuple[float, float, float]] = (
            weakref.WeakKeyDictionary()
        )

    def rates(self, node: Stream, count: float, waited: float) -> tuple[float | None, float]:
        """(elements per second, share of time waiting) since the previous sample.

        On the first sample: the lifetime average is not known, so the rate is
        ``None`` and waiting 0.
        """
        now = time.monotonic()
        previous = self._last.get(node)
        self._last[node] = (now, count, waited)
        if previous is None or now - previous[0] < 0.05:
            return None, 0.0
        dt = now - previous[0]
        rate = max(0.0, (count - previous[1]) / dt)
        waiting = min(1.0, max(0.0, (waited - previous[2]) / dt))
        return rate, waiting


_default_sampler = Sampler()


def overlay(
    node: Stream, kind: str, status: dict[str, Any], sampler: Sampler | None = None
) -> dict[str, Any]:
    """Health, rate, waiting share, short text and (outlets) the edge fill of one node."""
    sampler = sampler or _default_sampler
    counter = RATE_COUNTER.get(kind, "emitted")
    count = float(status.get(counter) or 0)
    rate, waiting = sampler.rates(node, count, float(status.get("waited") or 0.0))
    fill = 0.0
    max_inflight = status.get("max_inflight") or getattr(node, "max_inflight", None)
    lag, pending = status.get("lag"), status.get("pending")
    if kind == "outlet" and max_inflight:
        fill = min(1.0, ((lag or 0) + (pending or 0)) / max_inflight)
    health = health_of(status, waiting, fill)
    parts = []
    if health == "stopped":
        parts.append(str(status.get("state", "stopped")))
    elif rate is not None:
        parts.append(f"{rate:,.0f}/s")
    else:
        parts.append(f"{counter} {int(count):,}")
    if kind == "outlet" and lag is not None:
        parts.append(f"lag {lag:,}")
    if waiting >= 0.05:
        parts.append(f"wait {waiting:.0%}")
    errors = status.get("errors") or 0
    if errors:
        parts.append(f"{errors} err")
    return {
        "health": health,
        "colour": COLOURS[health],
        "rate": rate,
        "waiting": waiting,
        "fill": fill,
        "text": " · ".join(parts),
        "counts": {
            k: v for k, v in status.items() if isinstance(v, int) and not isinstance(v, bool)
        },
    }
