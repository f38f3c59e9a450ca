"""Waiting helpers for tests: poll a condition with a deadline, never sleep and hope."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest


def wait_for(
    condition: Callable[[], object],
    timeout: float = 10.0,
    interval: float = 0.01,
    message: str = "condition",
) -> object:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


async def async_wait_for(
    condition: Callable[[], object],
    timeout: float = 10.0,
    interval: float = 0.01,
    message: str = "condition",
) -> object:
    """Like :func:`wait_for`, but yields to the event loop while waiting."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)
