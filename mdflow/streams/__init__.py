"""Pumps and outlets: the nodes that fill and drain Redis streams.

* :mod:`.engine` — ``Stream.engine``, the pump: calls a function on a schedule, XADDs its result;
* :mod:`.writer` — ``stream.to_redis`` and the pipelined XADD behind both writers;
* :mod:`.outlet` — ``Stream.from_redis``, the outlet: a consumer group drained into the graph;
* :mod:`.acks` — batched, idempotent XACK once every branch finished an entry;
* :mod:`.deadletter` — where entries go that cannot be processed;
* :mod:`.dead_letters` — reading, replaying and purging dead-letter streams.

It may import :mod:`mdflow.nodes`, :mod:`mdflow.codecs`, :mod:`mdflow.reservoir`
and the bottom modules (errors, checks, record); never :mod:`mdflow.pubsub`.
Importing it registers ``engine``, ``from_redis`` and ``to_redis`` on ``streamz.Stream``.
"""

from __future__ import annotations

from .dead_letters import (
    DEFAULT_DEAD_LETTER,
    DeadLetter,
    dead_letter_stream,
    list_dead_letters,
    purge_dead_letters,
    replay_dead_letters,
)
from .deadletter import DeadLetters, read_payload
from .engine import engine
from .outlet import default_consumer_name, from_redis
from .writer import to_redis

__all__ = [
    "DEFAULT_DEAD_LETTER",
    "DeadLetter",
    "DeadLetters",
    "dead_letter_stream",
    "default_consumer_name",
    "engine",
    "from_redis",
    "list_dead_letters",
    "purge_dead_letters",
    "read_payload",
    "replay_dead_letters",
    "to_redis",
]
