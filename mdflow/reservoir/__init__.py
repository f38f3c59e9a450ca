"""The reservoir: where Redis is and how to talk to it.

* :mod:`.urls` — :func:`redis_url` resolves the URL (argument, environment,
  embedded default) and :func:`mask_url` / :func:`mask_text` hide passwords;
* :mod:`.logmask` — passwords in log records of mdflow's loggers (and of streamz,
  tornado, asyncio, websockets) are masked, tracebacks included (installed on import);
* :mod:`.server` — :class:`RedisServer`, a real ``redis-server`` process (the
  embedded default, and the test harness's servers);
* :mod:`.connection` — shared ``redis.asyncio`` clients, walrus databases,
  availability deadlines and :class:`Backoff`;
* :mod:`.fatal` — which errors retrying cannot fix (auth, ACL, WRONGTYPE, bad ids);
* :mod:`.shared` — a server that outlives the process that started it (``mdflow server``,
  the embedded default under ``MDFLOW_EMBEDDED_DIR``): its record and lock;
* :mod:`.processes` — that server as an OS process: alive or not, launched detached or
  as a child, waited for, terminated.

This is the bottom room: it may import ``mdflow.errors`` and nothing else of mdflow.
"""

from __future__ import annotations

from .connection import (
    CONNECTION_ERRORS,
    Backoff,
    Database,
    client,
    db,
    ensure_available,
    new_client,
    sync_client,
    translate_error,
    wait_available,
)
from .fatal import fatal_reason, is_auth_failure, is_fatal
from .logmask import install as _install_log_masking
from .server import (
    RedisServer,
    TlsFiles,
    binary_version,
    find_redis_server,
    free_port,
    supports_tls,
)
from .shared import (
    SharedServer,
    SharedServerStatus,
    default_server_dir,
    shared_server_status,
    start_shared_server,
    stop_shared_server,
)
from .urls import embedded_server, mask_text, mask_url, redis_url

_install_log_masking()

__all__ = [
    "CONNECTION_ERRORS",
    "Backoff",
    "Database",
    "RedisServer",
    "SharedServer",
    "SharedServerStatus",
    "TlsFiles",
    "binary_version",
    "client",
    "db",
    "default_server_dir",
    "embedded_server",
    "ensure_available",
    "fatal_reason",
    "find_redis_server",
    "free_port",
    "is_auth_failure",
    "is_fatal",
    "mask_text",
    "mask_url",
    "new_client",
    "redis_url",
    "shared_server_status",
    "start_shared_server",
    "stop_shared_server",
    "supports_tls",
    "sync_client",
    "translate_error",
    "wait_available",
]
