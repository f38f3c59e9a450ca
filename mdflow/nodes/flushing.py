"""What a batch writer does when a flush fails: retry after a backoff, pause, or fail.

Shared by :class:`~mdflow.nodes.Batcher` (on an event loop) and
:class:`~mdflow.nodes.thread_batching.ThreadBatcher` (on a writer thread), so
both treat Redis going away, Redis running out of memory, refused credentials
and other errors alike:

* a lost connection retries the whole batch after a backoff; the node is
  ``reconnecting`` meanwhile (:func:`flush_failed`);
* ``OOM`` answers (``maxmemory`` reached, nothing evictable): the write is
  fine, the server is full. Only the refused items are retried, after a
  backoff, until memory frees; the node is ``paused`` meanwhile, its
  ``pause_reason`` says why, and one warning is logged per pause, one info
  line when it ends (:func:`out_of_memory`, :func:`flush_succeeded`);
* anything else fails the item (or the batch) at once.

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
import time
from collections.abc import Sequence
from typing import Any

from ..reservoir import CONNECTION_ERRORS, Backoff, is_fatal, mask_text
from ..reservoir.limits import is_out_of_memory
from .status import NodeStatus

__all__ = [
    "PAUSED",
    "Pause",
    "flush_failed",
    "flush_succeeded",
    "out_of_memory",
    "out_of_memory_reason",
    "refused_for_memory",
]

logger = logging.getLogger(__name__)

#: The state of a writer whose writes wait for Redis to free memory.
PAUSED = "paused"
_PAUSE_CAP = 2.0  # seconds: the longest wait between two tries of a paused write


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


def refused_for_memory(results: Sequence[Any]) -> list[int]:
    """The positions of the results that are Redis' ``OOM`` refusal."""
    return [i for i, result in enumerate(results) if is_out_of_memory(result)]


def out_of_memory_reason(exc: BaseException, report: str = "") -> str:
    """The ``pause_reason`` of a writer that met ``OOM`` (``report``: :func:`memory_report`)."""
    where = f" ({report})" if report else ""
    answer = mask_text(str(exc)).removeprefix("OOM ").rstrip(".")
    return (
        f"OOM: Redis is out of memory{where} and refuses writes (OOM {answer}). "
        "Writes wait and are retried until memory frees: trim streams (maxlen=), delete "
        "keys, raise maxmemory or choose an evicting maxmemory-policy"
    )


class Pause:
    """One writer's pause on ``OOM``: its state, its backoff, its log lines.

    Parameters
    ----------
    status : NodeStatus
        The writer's node status (state ``paused`` and ``pause_reason`` while it lasts).
    name : str
        The node, for log lines.
    """

    def __init__(self, status: NodeStatus, name: str):
        self._status = status
        self._name = name
        self._backoff = Backoff(base=0.05, cap=_PAUSE_CAP)
        self.since: float | None = None
        self.retries = 0

    @property
    def active(self) -> bool:
        return self.since is not None

    def begin(self, reason: str, count: int) -> float:
        """``count`` items were refused for memory: pause (once), return the seconds to wait."""
        delay = self._backoff.next_delay()
        if self.since is None:
            self.since = time.monotonic()
            self.retries = 0
            self._status.error(reason)
            logger.warning(
                "%s: paused: %s (%d write(s) wait; retried with backoff up to %.0fs)",
                self._name,
                reason,
                count,
                _PAUSE_CAP,
            )
        else:
            self.retries += 1
            logger.debug(
                "%s: still out of memory; %d write(s) retried in %.2fs", self._name, count, delay
            )
        self._status.pause_reason = reason
        if self._status.state in ("running", "reconnecting"):
            self._status.state = PAUSED
        return delay

    def end(self) -> None:
        """The refused items went through: running again (logged once)."""
        if self.since is None:
            return
        waited = time.monotonic() - self.since
        self.since = None
        self._backoff.reset()
        self._status.pause_reason = None
        if self._status.state == PAUSED:
            self._status.state = "running"
        logger.info(
            "%s: Redis accepts writes again; resumed after %.1fs (%d retries)",
            self._name,
            waited,
            self.retries,
        )


def out_of_memory(results: Sequence[Any]) -> BaseException | None:
    """The first ``OOM`` refusal among ``results``, or None."""
    return next((r for r in results if is_out_of_memory(r)), None)
