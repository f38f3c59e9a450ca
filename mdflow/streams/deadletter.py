"""Dead-letter streams: where entries go that cannot be processed.

A dead-letter entry is written as plain fields, readable by any client:

======================  ==========================================================
field                   meaning
======================  ==========================================================
``topic``               the stream the entry came from
``id``                  its entry id there
``group``, ``consumer`` who gave up on it
``reason``              why (decode error, or delivered more than max_deliveries)
``deliveries``          how many times it was delivered
``payload``             the original fields, msgpack-encoded as a map bytes -> bytes
======================  ==========================================================

The XADD to the dead-letter stream and the XACK of the original entry run in
one MULTI/EXEC transaction, so an entry is never both lost and acknowledged.
:mod:`.dead_letters` reads them back, replays and purges them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import msgpack
from redis.typing import EncodableT, FieldT

from ..nodes import NodeStatus
from ..reservoir import CONNECTION_ERRORS, Backoff, client, mask_text

__all__ = ["DeadLetters", "read_payload"]

logger = logging.getLogger(__name__)


def read_payload(dead_fields: Mapping[Any, bytes]) -> dict[bytes, bytes]:
    """Decode the ``payload`` field of a dead-letter entry back into the original fields.

    ``dead_fields`` is the entry as a client read it: bytes keys, or str keys from a client
    with ``decode_responses=True``.
    """
    raw = dead_fields.get(b"payload", dead_fields.get("payload"))
    fields: dict[bytes, bytes] = msgpack.unpackb(raw, raw=True, strict_map_key=False)
    return fields


class DeadLetters:
    """Move entries to ``dead_letter.format(topic=...)`` and acknowledge them, atomically."""

    def __init__(self, url: str, group: str, consumer: str, pattern: str, status: NodeStatus):
        self._url = url
        self._group = group
        self._consumer = consumer
        self._pattern = pattern
        self._status = status

    def stream_for(self, topic: str) -> str:
        return self._pattern.replace("{topic}", topic)

    async def send(
        self, topic: str, entry_id: str, fields: Mapping[bytes, bytes], reason: str, deliveries: int
    ) -> None:
        """Write the dead letter and XACK the original; retried while Redis is away."""
        target = self.stream_for(topic)
        record: dict[FieldT, EncodableT] = {
            "topic": topic,
            "id": entry_id,
            "group": self._group,
            "consumer": self._consumer,
            "reason": reason,
            "deliveries": str(deliveries),
            "payload": msgpack.packb({_b(k): _b(v) for k, v in fields.items()}),
        }
        backoff = Backoff(base=0.05, cap=2.0)
        while True:
            try:
                pipe = client(self._url).pipeline(transaction=True)
                pipe.xadd(target, record)
                pipe.xack(topic, self._group, entry_id)
                await pipe.execute()
                break
            except CONNECTION_ERRORS as exc:
                self._status.incr("reconnects")
                self._status.error(exc)
                delay = backoff.next_delay()
                logger.warning(
                    "dead-letter write to %r failed (%s); retry in %.2fs",
                    target,
                    mask_text(str(exc)),
                    delay,
                )
                await asyncio.sleep(delay)
        self._status.incr("dead_lettered")
        self._status.incr("acked")
        logger.warning(
            "entry %s of %r moved to dead-letter stream %r: %s", entry_id, topic, target, reason
        )


def _b(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
