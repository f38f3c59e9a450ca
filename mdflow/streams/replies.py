"""The shapes of the Redis stream replies the outlet reads, named and checked.

The shared client speaks RESP2 with ``decode_responses=False``, so replies are
bytes; redis-py's hints are unions over RESP3 and decoded replies. These
helpers name the real shapes and fail loudly on any other.

Examples
--------
>>> text(b"1700000000000-0")
'1700000000000-0'
>>> claimed_entries([(b"1-0", {b"v": b"1"}), (None, None)])
[('1-0', {b'v': b'1'})]
"""

from __future__ import annotations

from typing import Any

from redis.typing import XClaimResponse, XReadGroupResponse

from ..errors import describe

__all__ = [
    "Fields",
    "RawEntry",
    "claimed_entries",
    "count",
    "raw_read_reply",
    "read_reply",
    "text",
]

#: The fields of one stream entry (``{}`` for a pending entry deleted since it was delivered).
Fields = dict[bytes, bytes]
#: One entry of an XREADGROUP reply: (id, fields).
RawEntry = tuple[bytes, Fields]


def read_reply(reply: XReadGroupResponse) -> list[tuple[str, list[RawEntry]]]:
    """XREADGROUP's ``[[stream, [(id, fields), ...]], ...]``, stream names decoded."""
    if not isinstance(reply, list):  # the dict shapes in redis-py's hint are RESP3's
        msg = f"XREADGROUP: expected a RESP2 reply (a list), got {describe(reply)}"
        raise TypeError(msg)
    return [(stream.decode(), entries) for stream, entries in reply]


def raw_read_reply(reply: Any) -> list[tuple[str, list[Any]]]:
    """XREADGROUP's raw reply (no redis-py callback), RESP2 ``[[stream, entries], ...]`` or
    RESP3 ``{stream: entries}``, stream names decoded; each entry ``[id, [field, value, ...]]``."""
    if not reply:
        return []
    pairs = reply.items() if isinstance(reply, dict) else reply
    return [(stream.decode(), entries) for stream, entries in pairs]


def claimed_entries(reply: XClaimResponse) -> list[tuple[str, Fields]]:
    """The (id, fields) XCLAIM returned for entries not deleted since they were delivered.

    Redis 7 drops deleted entries from the pending list and does not return
    them; older servers answer ``(None, None)`` or nil fields.
    """
    entries = []
    for entry in reply:
        if isinstance(entry, (bytes, str)):  # the JUSTID shape, which is never parsed here
            msg = f"XCLAIM: expected (id, fields) entries, got {describe(entry)}"
            raise TypeError(msg)
        entry_id, fields = entry
        if entry_id is None or fields is None:
            continue
        entries.append((text(entry_id), {_raw(k): _raw(v) for k, v in fields.items()}))
    return entries


def text(value: object) -> str:
    """A bytes reply (an entry id, a consumer name) as str."""
    return _raw(value).decode()


def count(value: object) -> int:
    """An integer reply."""
    if not isinstance(value, int):
        raise TypeError(f"expected an integer from Redis, got {describe(value)}")
    return value


def _raw(value: object) -> bytes:
    if not isinstance(value, bytes):
        msg = f"expected bytes from Redis (decode_responses=False), got {describe(value)}"
        raise TypeError(msg)
    return value
