"""Batched, idempotent XACK for ``from_redis``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from ..nodes import Batcher, NodeStatus
from ..reservoir import client

__all__ = ["Acker"]

logger = logging.getLogger(__name__)


class Acker:
    """Acknowledge finished entries: one XACK per stream per batch, one round trip per batch.

    Ids finished within one loop turn (or while the previous XACK was in
    flight) go out together, so no ack waits longer than one round trip.
    Acks that fail because Redis went away are retried until they succeed.
    """

    def __init__(self, url: str, group: str, name: str, status: NodeStatus):
        self._url = url
        self._group = group
        self._name = name
        self._status = status
        self._batcher = Batcher(self._flush, name, status, max_batch=10_000)

    def ack(self, topic: str, entry_id: str) -> asyncio.Future[Any]:
        """Queue one XACK; the future is done when Redis answered (or the ack failed for good)."""
        future = self._batcher.submit((topic, entry_id))
        future.add_done_callback(self._check)
        return future

    def _check(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            logger.error(
                "%s: XACK failed: %s (the entry stays pending and will be redelivered)",
                self._name,
                future.exception(),
            )

    async def _flush(self, items: Sequence[tuple[str, str]]) -> list[BaseException | None]:
        by_topic: dict[str, list[str]] = {}
        for topic, entry_id in items:
            by_topic.setdefault(topic, []).append(entry_id)
        pipe = client(self._url).pipeline(transaction=False)
        for topic, ids in by_topic.items():
            pipe.xack(topic, self._group, *ids)
        results = await pipe.execute(raise_on_error=False)
        errors = {
            t: r for t, r in zip(by_topic, results, strict=True) if isinstance(r, BaseException)
        }
        acked = sum(r for r in results if isinstance(r, int))
        self._status.incr("acked", acked)
        return [errors.get(topic) for topic, _ in items]

    async def drain(self, timeout: float | None = None) -> bool:
        return await self._batcher.drain(timeout)
