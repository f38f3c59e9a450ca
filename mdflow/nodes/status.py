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

import time
from typing import Any

from streamz import Stream

from ..reservoir import mask_text

__all__ = ["NodeStatus", "node_name"]


def node_name(node: Stream) -> str:
    """A short, human name for a node in log lines: ``from_redis<quotes>``."""
    label = node.name if getattr(node, "name", None) else type(node).__name__
    detail = getattr(node, "_label", None)
    return f"{label}<{detail}>" if detail else str(label)


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
        out.update(extra)
        return out
