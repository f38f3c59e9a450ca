"""Waiting helpers for tests: poll a condition with a deadline, never sleep and hope."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
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


def path_without(*programs: str, shim_root: str | None = None) -> str:
    """``$PATH`` on which ``programs`` (e.g. Graphviz's ``dot``) cannot be found.

    A directory that holds one of them is replaced by a shim directory of
    symlinks to everything else it holds, so other tools there stay usable.
    """
    import os
    import tempfile

    out = []
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not d:
            continue
        if not any(os.access(os.path.join(d, p), os.X_OK) for p in programs):
            out.append(d)
            continue
        shim = tempfile.mkdtemp(prefix="path-shim-", dir=shim_root)
        for name in os.listdir(d):
            if name not in programs:
                os.symlink(os.path.join(d, name), os.path.join(shim, name))
        out.append(shim)
    return os.pathsep.join(out)


def kill_leftovers(directory: str) -> None:
    """SIGKILL any redis-server a test started in ``directory`` (shared-server tests).

    Such a server runs in that directory (Redis chdirs to ``--dir``) or names its socket
    there in its process title.
    """
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        inside = cwd == directory or cwd.startswith(directory + "/")
        if b"redis" in cmdline and (inside or directory.encode() + b"/" in cmdline):
            try:
                os.kill(int(entry), signal.SIGKILL)
            except ProcessLookupError:
                pass


def finish(process: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    """Wait for a subprocess started with text pipes; (returncode, stdout, stderr).

    Fails the test (after killing it) if it does not exit within ``timeout`` seconds.
    """
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"process did not exit within {timeout}s\nstdout: {out}\nstderr: {err}")
    return process.returncode, out, err
