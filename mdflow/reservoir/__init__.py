"""The reservoir: where Redis is and how to talk to it.

* :mod:`.urls` — :func:`redis_url` resolves the URL (argument, environment,
  embedded default) and :func:`mask_url` / :func:`mask_text` hide passwords;
* :mod:`.server` — :class:`RedisServer`, a real ``redis-server`` process (the
  embedded default, and the test harness's servers);
* :mod:`.connection` — shared ``redis.asyncio`` clients, walrus databases,
  availability deadlines and :class:`Backoff`.

This is the bottom room: it may import ``mdflow.errors`` and nothing else of mdflow.
"""

from __future__ import annotations

from .connection import (
    CONNECTION_ERRORS,
    Backoff,
    client,
    db,
    ensure_available,
    new_client,
    wait_available,
)
from .server import RedisServer, find_redis_server, free_port
from .urls import embedded_server, mask_text, mask_url, redis_url

__all__ = [
    "CONNECTION_ERRORS",
    "Backoff",
    "RedisServer",
    "client",
    "db",
    "embedded_server",
    "ensure_available",
    "find_redis_server",
    "free_port",
    "mask_text",
    "mask_url",
    "new_client",
    "redis_url",
    "wait_available",
]
