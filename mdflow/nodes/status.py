"""What a node reports: :class:`NodeStatus` (state, counters, last error) and its name in logs.

Examples
--------
>>> status = NodeStatus(("read", "errors"))
>>> status.incr("read", 3)
>>> status.error(ConnectionError("redis://u:secret@host:6379 refused"))
>>> {k: status.as_dict()[k] for k in ("state", "read", "errors")}
{'state': 'stopped', 'read': 3, 'errors': 1}
>>> status.last_error
'ConnectionError: redis://u:***@host:6379 refused'
"""

from __future__ import annotations

import logging
import time
from typing import Any

from streamz import Stream

from ..reservoir import mask_text

__all__ = ["NodeStatus", "node_name", "sampled_level", "sampled_note"]

#: Events per entry (a failure, a dead letter) logged in full before sampling starts.
LOUD_FIRST = 10
#: After that, one in this many is logged at the full level; the rest at DEBUG.
LOUD_EVERY = 1000


def node_name(node: Stream) -> str:
    """A short, human name for a node in log lines: ``from_redis<quotes>``."""
    label = node.name if getattr(node, "name", None) else type(node).__name__
    detail = getattr(node, "_label", None)
    return f"{label}<{detail}>" if detail else str(label)


def sampled_level(count: int, level: int) -> int:
    """The level to log the ``count``-th event of a kind (1-based) that happens per entry.

    ``level`` for the first :data:`LOUD_FIRST` and every :data:`LOUD_EVERY`-th, ``DEBUG``
    for the rest: a flood of poison entries must not flood the log, nor slow the node
    down formatting tracebacks (the dead-letter stream keeps every reason).

    Examples
    --------
    >>> [sampled_level(n, logging.ERROR) == logging.ERROR for n in (1, 10, 11, 1000)]
    [True, True, False, True]
    """
    return level if count <= LOUD_FIRST or count % LOUD_EVERY == 0 else logging.DEBUG


def sampled_note(count: int) -> str:
    """What to append to the last event logged in full before sampling starts (else "")."""
    if count != LOUD_FIRST:
        return ""
    return f" (more of these are logged one in {LOUD_EVERY}, the others at DEBUG)"


class NodeStatus:
    """Counters, state and last error of one node, rendered by ``status()``.

    Parameters
    ----------
    counters : iterable of str
        The counters this node reports (all start at 0).
    """

    def __init__(self, counters: tuple[str, ...]):
        self.state = "stopped"
        self.counts: dict[str, int] = dict.fromkeys(counters, 0)
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.started_at: float | None = None
        self.waited = 0.0  # seconds a source spent waiting on its graph (back-pressure)
        self.failure: str | None = None  # why the node stopped for good (state "failed")
        self.pause_reason: str | None = None  # why its writes wait (state "paused": Redis OOM)

    def incr(self, counter: str, n: int = 1) -> None:
        self.counts[counter] = self.counts.get(counter, 0) + n

    def error(self, exc: BaseException | str) -> None:
        """Record an error (passwords in any URL it mentions are masked)."""
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self.last_error = mask_text(text)
        self.last_error_at = time.time()
        self.incr("errors")

    def as_dict(self, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, **self.counts}
        out["uptime"] = (time.time() - self.started_at) if self.started_at else 0.0
        out["last_error"] = self.last_error
        out["last_error_at"] = self.last_error_at
        out["waited"] = round(self.waited, 6)
        out["failure"] = self.failure
        out["pause_reason"] = self.pause_reason
        out.update(extra)
        return out
