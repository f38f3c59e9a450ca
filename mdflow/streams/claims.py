"""Who owns a pending entry: claim only what is abandoned, keep what we hold fresh.

A consumer group remembers, for every delivered but unacknowledged entry, its
owner and how long it has been idle. Two rules keep ownership honest:

* :func:`claim_abandoned` takes entries that *another* consumer has left idle
  longer than ``claim_idle`` (it died, or stopped without finishing them), and
  the caller's own entries that it does not hold: a read whose reply was lost
  with its connection (or that a stalled network delivered late, after the
  outlet had reconnected) left them in the caller's pending list, unseen. It
  never takes what the caller holds (``skip``), so an outlet does not
  re-deliver what is still in its graph, and each claim counts one real delivery.
* :func:`keep_fresh` resets the idle time of entries the outlet still holds
  (a long window, a slow sink) with ``XCLAIM ... JUSTID``, which does not count
  a delivery. Done more often than ``claim_idle``, it keeps other live
  consumers from taking them.

Examples
--------
>>> claimed = await claim_abandoned(conn, "quotes", "g", "me", 60_000, 100)  # doctest: +SKIP
>>> await keep_fresh(conn, "quotes", "g", "me", ["1700000000000-0"])         # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio
from redis.typing import StreamIdT

from .replies import claimed_entries, text
from .replies import count as int_reply

__all__ = ["Claimed", "claim_abandoned", "keep_fresh"]

_PAGES = 10  # XPENDING pages looked at per call, at most
_FRESH_CHUNK = 500  # ids per XCLAIM JUSTID


@dataclass
class Claimed:
    """An entry taken from a consumer that abandoned it."""

    id: str
    fields: dict[bytes, bytes]
    deliveries: int  # counting this claim
    previous_owner: str


async def claim_abandoned(
    conn: redis.asyncio.Redis,
    topic: str,
    group: str,
    consumer: str,
    min_idle_ms: int,
    count: int,
    skip: Sequence[str] = (),
) -> list[Claimed]:
    """Claim up to ``count`` entries left idle for ``min_idle_ms`` or longer, except ``skip``.

    ``skip`` must list every entry the caller holds: its other pending entries were
    delivered by a read whose reply it never saw, and are claimed like those of a dead
    consumer. ``XPENDING ... IDLE`` finds the candidates with their owners; ``XCLAIM`` with the same
    ``min-idle-time`` takes the rest, atomically: an entry another consumer
    claimed or touched meanwhile is left alone. Entries deleted from the
    stream since they were delivered are dropped from the pending list by
    Redis 7 and are not returned.
    """
    skipped = set(skip)
    candidates: dict[str, tuple[str, int]] = {}
    start = "-"
    for _ in range(_PAGES):
        rows = await conn.xpending_range(
            topic, group, min=start, max="+", count=max(count, 100), idle=min_idle_ms
        )
        for row in rows:
            entry_id = text(row["message_id"])
            owner = text(row["consumer"])
            if entry_id not in skipped:
                candidates[entry_id] = (owner, int_reply(row["times_delivered"]))
        if len(rows) < max(count, 100) or len(candidates) >= count:
            break
        start = "(" + text(rows[-1]["message_id"])
    if not candidates:
        return []
    ids = list[StreamIdT](candidates)[:count]
    reply = await conn.xclaim(topic, group, consumer, min_idle_ms, ids)
    claimed = []
    for entry_id, fields in claimed_entries(reply):
        owner, delivered = candidates[entry_id]
        claimed.append(Claimed(entry_id, fields, delivered + 1, owner))
    return claimed


async def keep_fresh(
    conn: redis.asyncio.Redis, topic: str, group: str, consumer: str, ids: Sequence[str]
) -> None:
    """Reset the idle time of entries this consumer holds, without counting a delivery."""
    for start in range(0, len(ids), _FRESH_CHUNK):
        chunk: list[StreamIdT] = list(ids[start : start + _FRESH_CHUNK])
        await conn.xclaim(topic, group, consumer, 0, chunk, justid=True)
