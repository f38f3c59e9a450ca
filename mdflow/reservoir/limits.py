"""What a Redis server accepts in a write: how big one value may be, and whether memory is left.

Two refusals that retrying a write cannot fix, or can fix only by waiting:

* **A value too large.** Redis refuses a bulk argument longer than
  ``proto-max-bulk-len`` (512 MB by default), or one that does not fit in
  ``client-query-buffer-limit`` (1 GB): it answers ``Protocol error: invalid bulk
  length`` and *closes the connection*. A client sees a lost connection, not a
  refusal; retried, the write fails the same way for ever, and takes the rest
  of its pipeline with it. Writers therefore ask the limit once
  (:func:`write_limits`: ``CONFIG GET``; Redis' defaults when ``CONFIG`` is
  denied by an ACL or renamed) and refuse an oversized value before sending it.
* **Out of memory.** With ``maxmemory`` reached and nothing to evict, Redis
  answers ``OOM command not allowed...`` to every write that would grow the
  data set (:func:`is_out_of_memory`). The write is fine, the server is full:
  writers pause and retry until memory frees; :func:`memory_report` says how
  full the server is.

Examples
--------
>>> import redis
>>> is_out_of_memory(redis.ResponseError("OOM command not allowed when used memory > "
...                                      "'maxmemory'."))
True
>>> WriteLimits(1048576, "proto-max-bulk-len").max_value
1048576
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis
from redis.exceptions import OutOfMemoryError

from .urls import mask_text, mask_url

__all__ = [
    "DEFAULT_MAX_VALUE",
    "RELEARN_AFTER",
    "WriteLimits",
    "is_out_of_memory",
    "memory_report",
    "write_limits",
]

logger = logging.getLogger(__name__)

#: Redis' default ``proto-max-bulk-len``: the limit assumed when ``CONFIG GET`` is refused.
DEFAULT_MAX_VALUE = 512 * 1024 * 1024
#: Seconds a learned limit is trusted before a refusal asks the server again (it may
#: have been raised with CONFIG SET meanwhile).
RELEARN_AFTER = 30.0


@dataclass(frozen=True, slots=True)
class WriteLimits:
    """The largest value (one bulk argument, in bytes) a server accepts, and why.

    Attributes
    ----------
    max_value : int
        Bytes one argument of a command may have.
    knob : str
        The server setting that imposes it: ``proto-max-bulk-len`` or
        ``client-query-buffer-limit``.
    assumed : bool
        ``CONFIG GET`` was refused (an ACL, a renamed command): Redis' default is assumed.
    learned_at : float
        ``time.monotonic()`` when it was learned.
    """

    max_value: int
    knob: str
    assumed: bool = False
    learned_at: float = 0.0


def write_limits(conn: redis.Redis, url: str) -> WriteLimits:
    """Ask the server at ``url`` the size limit of one value (``CONFIG GET``).

    Blocking: call it from a writer thread, never on an event loop. Writers ask
    once and keep the answer (:class:`~mdflow.nodes.BatchedWriter`), forget it
    when the connection is lost (the server may come back with another
    configuration), and ask again before refusing with an answer older than
    :data:`RELEARN_AFTER` seconds.

    Parameters
    ----------
    conn : redis.Redis
        A synchronous client for ``url``.
    url : str
        The server's URL (shown masked in log lines).

    Returns
    -------
    WriteLimits
        ``min(proto-max-bulk-len, client-query-buffer-limit - 2)``: a value that
        does not fit in the query buffer is refused too (measured on Redis 6.2 and 7.0).
        When ``CONFIG`` is denied (an ACL) or renamed: Redis' default, ``assumed=True``.

    Raises
    ------
    redis.ConnectionError, redis.AuthenticationError
        Redis cannot be reached or refuses the credentials (the caller retries or fails).
    """
    try:
        bulk = _config_bytes(conn, "proto-max-bulk-len")
        query = _config_bytes(conn, "client-query-buffer-limit")
    except redis.ResponseError as exc:  # NOPERM (an ACL), or CONFIG renamed away
        logger.info(
            "CONFIG GET proto-max-bulk-len refused by Redis at %s (%s); assuming its "
            "default of %d bytes per value",
            mask_url(url),
            mask_text(str(exc)),
            DEFAULT_MAX_VALUE,
        )
        return WriteLimits(DEFAULT_MAX_VALUE, "proto-max-bulk-len", True, time.monotonic())
    candidates = [(DEFAULT_MAX_VALUE, "proto-max-bulk-len")] if bulk is None else []
    candidates += [] if bulk is None else [(bulk, "proto-max-bulk-len")]
    candidates += [] if query is None else [(query - 2, "client-query-buffer-limit")]
    value, knob = min(candidates, key=lambda candidate: candidate[0])
    return WriteLimits(value, knob, False, time.monotonic())


def _config_bytes(conn: redis.Redis, name: str) -> int | None:
    reply = conn.execute_command("CONFIG", "GET", name)
    # RESP2: [name, value]; a dict with RESP3 or a response callback
    values = list(reply.values()) if isinstance(reply, dict) else list(reply or ())[1::2]
    if not values:
        return None
    value = values[0].decode() if isinstance(values[0], bytes) else str(values[0])
    try:
        return int(value)
    except ValueError:
        return None


def is_out_of_memory(exc: object) -> bool:
    """True if ``exc`` is Redis' ``OOM`` refusal (``maxmemory`` reached, nothing evictable).

    redis-py raises it as ``OutOfMemoryError`` with the ``OOM`` prefix removed.
    """
    return isinstance(exc, OutOfMemoryError) or (
        isinstance(exc, redis.ResponseError) and str(exc).startswith("OOM")
    )


def memory_report(conn: redis.Redis) -> str:
    """How full the server is, for messages: ``maxmemory 2097152 bytes (2.0 MiB), used
    2.1 MiB, maxmemory-policy noeviction``; ``""`` if ``INFO memory`` cannot be read."""
    try:
        info = conn.info("memory")
    except (redis.RedisError, OSError) as exc:
        logger.debug("INFO memory failed: %s", mask_text(str(exc)))
        return ""
    limit = int(info.get("maxmemory", 0) or 0)
    used = int(info.get("used_memory", 0) or 0)
    policy = info.get("maxmemory_policy", "?")
    mib = 1024 * 1024
    return (
        f"maxmemory {limit} bytes ({limit / mib:.1f} MiB), used {used / mib:.1f} MiB, "
        f"maxmemory-policy {policy}"
    )
