"""The element emitted by sources with ``meta=True``: payload plus where it came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Record"]


@dataclass(frozen=True, slots=True)
class Record:
    """A decoded payload with its origin.

    Attributes
    ----------
    topic : str
        The Redis stream (or pub/sub channel) it was read from.
    data : Any
        The decoded payload.
    id : str or None
        The stream entry id (None for pub/sub messages).
    deliveries : int or None
        How many times the consumer group has delivered this entry (1 the first time).
    pattern : str or None
        The pattern subscription that matched (pub/sub only).

    Examples
    --------
    >>> Record("quotes", {"px": 1.5}, id="1700000000000-0", deliveries=1)
    Record(topic='quotes', data={'px': 1.5}, id='1700000000000-0', deliveries=1, pattern=None)
    """

    topic: str
    data: Any
    id: str | None = None
    deliveries: int | None = None
    pattern: str | None = None
