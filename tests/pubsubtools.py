"""Helpers for pub/sub tests: a plain async client, and waiting for subscriptions to exist."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import redis.asyncio
from streamtools import async_wait_for

__all__ = ["connect", "wait_numpat", "wait_numsub"]


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain redis-py async client (as any other program would use), closed afterwards."""
    conn = redis.asyncio.Redis.from_url(url)
    try:
        yield conn
    finally:
        await conn.aclose()


async def wait_numsub(
    conn: redis.asyncio.Redis, channel: str, n: int = 1, timeout: float = 10.0
) -> None:
    """Wait until ``channel`` has ``n`` subscribers (PUBSUB NUMSUB): publish only after that."""

    async def enough():
        return dict(await conn.pubsub_numsub(channel)).get(channel.encode(), 0) >= n

    await async_wait_for(enough, timeout, message=f"{n} subscriber(s) on {channel!r}")


async def wait_numpat(conn: redis.asyncio.Redis, n: int = 1, timeout: float = 10.0) -> None:
    """Wait until the server has ``n`` pattern subscriptions (PUBSUB NUMPAT).

    NUMPAT counts the whole server: use it on a server of the test's own.
    """

    async def enough():
        return await conn.pubsub_numpat() >= n

    await async_wait_for(enough, timeout, message=f"{n} pattern subscription(s)")
