"""Batched, idempotent XACK for ``from_redis``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..nodes import Batcher, NodeStatus
from ..reservoir import client
from ..reservoir.pipelines import send_commands_async

__all__ = ["Acker"]

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (stream, entry id)


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
        future = self._batcher.submit([(topic, entry_id)])
        future.add_done_callback(self._check)
        return future

    def ack_many(self, keys: list[Key], done: Callable[[BaseException | None], None]) -> None:
        """Queue the XACK of several entries; ``done(error)`` runs once Redis answered.

        No future and no callback per entry: what a read of many finished entries needs.
        """

        def answered(result: Any) -> None:
            error = result if isinstance(result, BaseException) else None
            if error is not None:
                self._log_failure(error)
            done(error)

        self._batcher.submit(keys, answered)

    def _check(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self._log_failure(future.exception())

    def _log_failure(self, error: BaseException | None) -> None:
        logger.error(
            "%s: XACK failed: %s (the entry stays pending and will be redelivered)",
            self._name,
            error,
        )

    async def _flush(self, items: Sequence[list[Key]]) -> list[BaseException | None]:
        by_topic: dict[str, list[str]] = {}
        for keys in items:
            for topic, entry_id in keys:
                by_topic.setdefault(topic, []).append(entry_id)
        commands = [("XACK", topic, self._group, *ids) for topic, ids in by_topic.items()]
        results = await send_commands_async(client(self._url), commands)
        errors = {
            t: r for t, r in zip(by_topic, results, strict=True) if isinstance(r, BaseException)
        }
        acked = sum(r for r in results if isinstance(r, int))
        self._status.incr("acked", acked)
        if not errors:
            return [None] * len(items)
        return [next((errors[t] for t, _ in keys if t in errors), None) for keys in items]

    async def drain(self, timeout: float | None = None) -> bool:
        return await self._batcher.drain(timeout)
