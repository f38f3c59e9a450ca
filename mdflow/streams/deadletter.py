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
one Lua script, the XACK only if the XADD succeeded, so an entry is never both
lost and acknowledged. The dead letters of one loop turn (a read full of poison)
go out in one script call: poison costs one round trip per read, not one per
entry. :mod:`.dead_letters` reads them back, replays and purges them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import msgpack
import redis

from ..errors import DecodeError, describe
from ..nodes import Batcher, NodeStatus
from ..nodes.status import sampled_level, sampled_note
from ..reservoir import client
from ..reservoir.pipelines import send_commands_async

__all__ = ["DeadLetters", "Letter", "read_payload"]

logger = logging.getLogger(__name__)


class Letter(NamedTuple):
    """One entry on its way to the dead-letter stream."""

    topic: str
    entry_id: str
    fields: Mapping[bytes, bytes]
    reason: str
    deliveries: int


def read_payload(dead_fields: Mapping[Any, Any]) -> dict[bytes, bytes]:
    """Decode the ``payload`` field of a dead-letter entry back into the original fields.

    ``dead_fields`` is the entry as a client read it: bytes keys, or str keys from a client
    with ``decode_responses=True``.

    Raises
    ------
    DecodeError
        If there is no ``payload`` field or it is not a msgpack map of bytes to bytes (the
        entry was not written by mdflow). Nothing is unpickled.
    """
    raw = dead_fields.get(b"payload", dead_fields.get("payload"))
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        reason = "no 'payload' field" if raw is None else f"'payload' is {describe(raw)}, not bytes"
        raise DecodeError(f"not a dead letter written by mdflow: {reason}")
    try:
        fields = msgpack.unpackb(raw, raw=True, strict_map_key=False)
    except Exception as exc:  # untrusted bytes: any failure is a DecodeError
        raise DecodeError(f"dead-letter 'payload' is not valid msgpack: {exc}") from exc
    if not isinstance(fields, dict) or not all(
        isinstance(k, bytes) and isinstance(v, bytes) for k, v in fields.items()
    ):
        raise DecodeError(f"dead-letter 'payload' is {describe(fields)}, not a map of bytes")
    return fields


# Per letter: XADD it to its dead-letter stream, then XACK the original, only if the XADD
# worked (a failed XADD, e.g. WRONGTYPE or OOM, leaves the entry pending: never lost and acked).
# KEYS: dead stream and origin stream of each letter in turn; ARGV: the group, the consumer,
# then 4 values per letter (id, reason, deliveries, payload). Returns per letter 1 or the error.
_SEND = """
local group, consumer = ARGV[1], ARGV[2]
local out = {}
for i = 1, #KEYS / 2 do
    local dead, topic, a = KEYS[2 * i - 1], KEYS[2 * i], 2 + (i - 1) * 4
    local added = redis.pcall('XADD', dead, '*', 'topic', topic, 'id', ARGV[a + 1],
        'group', group, 'consumer', consumer, 'reason', ARGV[a + 2],
        'deliveries', ARGV[a + 3], 'payload', ARGV[a + 4])
    if type(added) == 'table' and added.err then
        out[i] = added.err
    else
        redis.call('XACK', topic, group, ARGV[a + 1])
        out[i] = 1
    end
end
return out
"""


class DeadLetters:
    """Move entries to ``dead_letter.format(topic=...)`` and acknowledge them, atomically.

    Letters submitted within one loop turn (or while the previous write was in flight) are
    written together, in one script call; connection failures are retried with backoff.
    """

    def __init__(self, url: str, group: str, consumer: str, pattern: str, status: NodeStatus):
        self._url = url
        self._group = group
        self._consumer = consumer
        self._pattern = pattern
        self._status = status
        # (100: one read of poison per call, so a script call stays a few MB even when the
        # entries are large)
        self._batcher = Batcher(self._flush, f"dead letters of {group!r}", status, max_batch=100)

    def stream_for(self, topic: str) -> str:
        return self._pattern.replace("{topic}", topic)

    async def send(
        self, topic: str, entry_id: str, fields: Mapping[bytes, bytes], reason: str, deliveries: int
    ) -> None:
        """Write the dead letter and XACK the original; retried while Redis is away.

        Raises
        ------
        redis.ResponseError
            If Redis refused the dead letter (e.g. the dead-letter key is not a stream);
            the original entry is then not acknowledged.
        """
        result = await self._batcher.submit(Letter(topic, entry_id, fields, reason, deliveries))
        if isinstance(result, BaseException):
            raise result

    def submit(self, letter: Letter, done: Callable[[BaseException | None], None]) -> None:
        """Queue ``letter``; ``done(error)`` runs once it was written and the original acked
        (``error`` None), or Redis refused it (the original stays pending)."""
        self._batcher.submit(letter, lambda result: done(_error(result)))

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every letter submitted so far was written; False on timeout."""
        return await self._batcher.drain(timeout)

    async def _flush(self, letters: Sequence[Letter]) -> list[BaseException | None]:
        keys: list[str] = []
        args: list[str | bytes] = [self._group, self._consumer]
        for letter in letters:
            keys += [self.stream_for(letter.topic), letter.topic]
            payload = msgpack.packb({_b(k): _b(v) for k, v in letter.fields.items()})
            args += [letter.entry_id, letter.reason, str(letter.deliveries), payload]
        command = ("EVAL", _SEND, len(keys), *keys, *args)
        [reply] = await send_commands_async(client(self._url), [command])
        if isinstance(reply, BaseException):  # the whole call refused (e.g. OOM, NOSCRIPT...)
            return [reply] * len(letters)
        results: list[BaseException | None] = []
        for letter, answer in zip(letters, reply, strict=True):
            if answer == 1:
                self._status.incr("dead_lettered")
                self._status.incr("acked")
                buried = self._status.counts["dead_lettered"]
                logger.log(
                    sampled_level(buried, logging.WARNING),
                    "entry %s of %r moved to dead-letter stream %r: %s%s",
                    letter.entry_id,
                    letter.topic,
                    self.stream_for(letter.topic),
                    letter.reason,
                    sampled_note(buried),
                )
                results.append(None)
            else:
                results.append(redis.ResponseError(_text(answer)))
        return results


def _error(result: object) -> BaseException | None:
    return result if isinstance(result, BaseException) else None


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _b(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
