"""Helpers for tests that run mdflow nodes on an event loop of their own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import redis.asyncio
from helpers import async_wait_for

__all__ = ["async_wait_for", "pending_count", "run", "stop_and_wait"]


def run(body: Callable[[], Awaitable], timeout: float = 60.0):
    """Run an async test body on a fresh loop; nodes created inside use ``asynchronous=True``."""

    async def main():
        try:
            return await asyncio.wait_for(body(), timeout)
        finally:
            await asyncio.sleep(0.05)  # let finished nodes tear down before the loop closes

    return asyncio.run(main())


async def stop_and_wait(*nodes, timeout: float = 10.0) -> None:
    """Stop sources and wait until their loops have ended."""
    for node in nodes:
        node.stop()
    for node in nodes:
        await async_wait_for(
            lambda n=node: n.status()["state"] == "stopped", timeout, message=f"{node} to stop"
        )


async def pending_count(url: str, topic: str, group: str) -> int:
    conn = redis.asyncio.Redis.from_url(url)
    try:
        return (await conn.xpending(topic, group))["pending"]
    finally:
        await conn.aclose()
