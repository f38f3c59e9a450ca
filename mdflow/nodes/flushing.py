"""What a batch writer does when a flush fails: retry after a backoff, or fail the batch.

Shared by :class:`~mdflow.nodes.Batcher` (on an event loop) and
:class:`~mdflow.nodes.thread_batching.ThreadBatcher` (on a writer thread), so
both treat Redis going away, refused credentials and other errors alike.

Examples
--------
>>> from mdflow.nodes import NodeStatus
>>> from mdflow.nodes.flushing import flush_failed
>>> from mdflow.reservoir import Backoff
>>> status = NodeStatus(("written", "errors", "reconnects"))
>>> status.state = "running"
>>> delay = flush_failed(ConnectionError("gone"), status, Backoff(0.05, 2.0), "example", 3)
>>> 0 <= delay <= 0.1, status.state
(True, 'reconnecting')
>>> flush_failed(ValueError("bad"), status, Backoff(), "example", 3) is None
True
"""

from __future__ import annotations

import logging

from ..reservoir import CONNECTION_ERRORS, Backoff, is_fatal, mask_text
from .status import NodeStatus

__all__ = ["flush_failed", "flush_succeeded"]

logger = logging.getLogger(__name__)


def flush_succeeded(status: NodeStatus, backoff: Backoff) -> None:
    """A flush went through: forget the failures; a reconnecting node is running again."""
    backoff.reset()
    if status.state == "reconnecting":
        status.state = "running"


def flush_failed(
    exc: Exception, status: NodeStatus, backoff: Backoff, name: str, count: int
) -> float | None:
    """What to do after a flush of ``count`` items raised ``exc``.

    Returns the seconds to wait before retrying the whole batch (Redis went
    away: the node is ``reconnecting`` meanwhile), or ``None`` when retrying
    cannot help (refused credentials, any other error): the batch fails.
    """
    status.error(exc)
    if isinstance(exc, CONNECTION_ERRORS) and not is_fatal(exc):
        status.incr("reconnects")
        if status.state == "running":
            status.state = "reconnecting"
        delay = backoff.next_delay()
        logger.warning(
            "%s: Redis unavailable while writing %d item(s) (%s); retry %d in %.2fs",
            name,
            count,
            mask_text(str(exc)),
            backoff.failures,
            delay,
        )
        return delay
    if not isinstance(exc, CONNECTION_ERRORS):
        logger.error("%s: writing %d item(s) failed: %s", name, count, mask_text(str(exc)))
    return None
