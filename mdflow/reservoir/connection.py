"""Redis clients: shared ``redis.asyncio`` clients on the loop, walrus for inspection.

The hot path (nodes on the tornado/asyncio loop) uses :func:`client`, which
returns one shared ``redis.asyncio.Redis`` per (URL, running event loop). Its
connection pool hands every concurrent command its own connection, so a
blocking ``XREADGROUP BLOCK`` does not hold up an ``XACK``.

Transient connection failures are retried by redis-py itself (its ``Retry``
with exponential backoff and jitter); nodes that must survive a Redis restart
loop with :class:`Backoff`, built on the same redis-py backoff class.

Every client has a socket timeout (:data:`SOCKET_TIMEOUT`, 5 s, whatever the
redis-py version's default): a connection that stays open but silent (a
stalled route, a frozen NAT entry, a paused server) fails the command with
``redis.TimeoutError`` instead of hanging the node, and the node reconnects.
Blocking reads wait their BLOCK time on top of it; pub/sub reads, which wait
for messages without a limit, are watched by PINGs instead
(:mod:`mdflow.pubsub.listener`). The URL's query arguments tune it, as redis-py
reads them: ``redis://host:6379/0?socket_timeout=2&socket_connect_timeout=2``.

Examples
--------
>>> async def count(stream):                      # doctest: +SKIP
...     return await client().xlen(stream)
>>> db().Stream("ticks").length()                 # synchronous, for notebooks  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import redis
import redis.asyncio
import walrus
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from ..errors import RedisAccessDenied, RedisUnavailable
from .fatal import fatal_reason, tls_verification_failure, with_command
from .urls import mask_text, mask_url, redis_url

__all__ = [
    "CONNECTION_ERRORS",
    "SOCKET_TIMEOUT",
    "Backoff",
    "Database",
    "client",
    "db",
    "ensure_available",
    "new_client",
    "socket_timeout_of",
    "sync_client",
    "translate_error",
    "wait_available",
]

logger = logging.getLogger(__name__)

#: Exceptions that mean "Redis is (temporarily) unreachable", not "the command was wrong".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionError,
    OSError,
)
# What `wait_available`/`ensure_available` catch: connection errors are retried until the
# deadline; an AuthenticationError ends the wait at once (see `_Deadline.delay_after`).
_AVAILABILITY_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    redis.AuthenticationError,
)

_RETRIES = 3
#: Seconds a command waits for its reply before its connection counts as dead (redis-py's
#: ``socket_timeout``). redis-py < 8 had none, so a silent connection hung its node forever.
SOCKET_TIMEOUT = 5.0
_SOCKET_CONNECT_TIMEOUT = 5.0
_HEALTH_CHECK_INTERVAL = 30

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, redis.asyncio.Redis]] = (
    weakref.WeakKeyDictionary()
)


class _Refused(Exception):
    """Carries a refused-credentials error (or a TLS certificate that does not verify) through
    redis-py's Retry, which would retry it."""

    def __init__(self, error: redis.ConnectionError):
        super().__init__(str(error))
        self.error = error


# A refused password is a ConnectionError to redis-py, so its Retry would try again (and again
# for every reconnect of every retried command): that never helps, and takes seconds. These
# Retry classes let it through at once (works with every redis-py version's call_with_retry).
class _AsyncRetry(AsyncRetry):
    """redis-py's asyncio ``Retry``, except that refused credentials are not retried."""

    async def call_with_retry(self, do: Callable[[], Awaitable[Any]], *args: Any, **kw: Any) -> Any:
        async def once() -> Any:
            try:
                return await do()
            except redis.ConnectionError as exc:
                if _retryable(exc):
                    raise
                raise _Refused(exc) from exc

        try:
            return await super().call_with_retry(once, *args, **kw)
        except _Refused as refused:
            raise refused.error from None


class _Retry(Retry):
    """redis-py's ``Retry``, except that refused credentials are not retried."""

    def call_with_retry(self, do: Callable[[], Any], *args: Any, **kw: Any) -> Any:
        def once() -> Any:
            try:
                return do()
            except redis.ConnectionError as exc:
                if _retryable(exc):
                    raise
                raise _Refused(exc) from exc

        try:
            return super().call_with_retry(once, *args, **kw)
        except _Refused as refused:
            raise refused.error from None


def _retryable(exc: redis.ConnectionError) -> bool:
    """Refused credentials and certificates that do not verify are not worth another try."""
    return not isinstance(exc, redis.AuthenticationError) and tls_verification_failure(exc) is None


def _client_kwargs() -> dict[str, Any]:
    # (the URL's query arguments, e.g. ?socket_timeout=2, override these: redis-py's from_url)
    return dict(
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=_SOCKET_CONNECT_TIMEOUT,
        health_check_interval=_HEALTH_CHECK_INTERVAL,
        client_name="mdflow",
    )


def translate_error(exc: BaseException, url: str, command: Sequence[object] = ()) -> BaseException:
    """The mdflow error for a failed command: refusals and lost connections say what to check.

    Authentication and ACL refusals become :class:`~mdflow.RedisAccessDenied`
    (an ACL refusal names ``command`` and its keys); a connection that cannot
    be made becomes :class:`~mdflow.RedisUnavailable`, which says so when the
    server's TLS certificate does not verify (all name the password-masked
    URL); anything else is returned unchanged.
    """
    if isinstance(exc, RedisUnavailable):
        return exc
    if isinstance(exc, redis.exceptions.NoPermissionError) and command:
        exc = with_command(exc, command)
    if isinstance(exc, (redis.AuthenticationError, redis.exceptions.NoPermissionError)):
        return RedisAccessDenied(fatal_reason(exc, url) or mask_text(str(exc)))
    if isinstance(exc, redis.ConnectionError) and tls_verification_failure(exc) is not None:
        return RedisUnavailable(fatal_reason(exc, url) or mask_text(str(exc)))
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return _unavailable(url, None, exc)
    return exc


_TRANSLATED = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.NoPermissionError)


class _TranslatingRedis(redis.asyncio.Redis):
    """``redis.asyncio.Redis`` whose commands raise mdflow's connection errors."""

    mdflow_url = ""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().execute_command(*args, **options)
        except _TRANSLATED as exc:
            raise translate_error(exc, self.mdflow_url, args) from exc


class Database(walrus.Database):
    """walrus ``Database`` whose commands raise mdflow's connection errors.

    A Redis that cannot be reached raises :class:`~mdflow.RedisUnavailable`, a
    refused password or ACL raises :class:`~mdflow.RedisAccessDenied` (both
    ``ConnectionError``); the message names the masked URL and what to check.
    """

    mdflow_url = ""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute_command(*args, **options)
        except _TRANSLATED as exc:
            raise translate_error(exc, self.mdflow_url, args) from exc


def new_client(url: str | None = None, **kwargs: Any) -> redis.asyncio.Redis:
    """Create a dedicated ``redis.asyncio.Redis`` (bytes in, bytes out).

    Prefer :func:`client`; use this when a connection must not be shared
    (e.g. a pub/sub subscription). Commands that cannot reach Redis raise
    :class:`~mdflow.RedisUnavailable`; refused credentials/ACLs raise
    :class:`~mdflow.RedisAccessDenied`.
    """
    resolved = redis_url(url)
    options = _client_kwargs()
    options["retry"] = _AsyncRetry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), _RETRIES)
    options.update(kwargs)
    conn = cast("_TranslatingRedis", _TranslatingRedis.from_url(resolved, **options))
    conn.mdflow_url = resolved
    return conn


def socket_timeout_of(conn: redis.Redis | redis.asyncio.Redis) -> float | None:
    """The socket timeout ``conn``'s connections use (the URL may set it); None: no timeout.

    Examples
    --------
    >>> socket_timeout_of(redis.Redis.from_url("redis://localhost/0?socket_timeout=2"))
    2.0
    """
    value = conn.connection_pool.connection_kwargs.get("socket_timeout")
    return float(value) if value else None


def client(url: str | None = None) -> redis.asyncio.Redis:
    """Return the shared async client for ``url`` on the running event loop.

    Must be called from a coroutine running on the loop that will use it.
    """
    loop = asyncio.get_running_loop()
    resolved = redis_url(url)
    per_loop = _clients.setdefault(loop, {})
    found = per_loop.get(resolved)
    if found is None:
        found = per_loop[resolved] = new_client(resolved)
    return found


_sync_clients: dict[str, redis.Redis] = {}


def sync_client(url: str | None = None) -> redis.Redis:
    """The shared synchronous client for ``url``, for writer threads (never on a loop).

    redis-py's synchronous client is thread-safe (a connection pool) and its
    pipelines cost about half of the asyncio client's per command: mdflow's
    writers use it where no event loop runs. Connection errors are retried by
    redis-py's ``Retry``; refused credentials are not.
    """
    resolved = redis_url(url)
    found = _sync_clients.get(resolved)
    if found is None:
        options = _client_kwargs()
        options["retry"] = _Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), _RETRIES)
        found = _sync_clients.setdefault(resolved, redis.Redis.from_url(resolved, **options))
    return found


def db(url: str | None = None) -> walrus.Database:
    """A synchronous walrus ``Database`` for inspection helpers and notebooks.

    Never call it from a coroutine on the loop: it blocks. Commands raise
    :class:`~mdflow.RedisUnavailable` when Redis cannot be reached and
    :class:`~mdflow.RedisAccessDenied` when it refuses the password or an ACL.

    Examples
    --------
    >>> mdb = db()                                  # doctest: +SKIP
    >>> mdb.Stream("quotes").length()               # doctest: +SKIP
    """
    resolved = redis_url(url)
    options = _client_kwargs()
    options["retry"] = _Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), _RETRIES)
    database = Database.from_url(resolved, **options)
    database.mdflow_url = resolved
    return database


class Backoff:
    """Exponential backoff with full jitter, for reconnect loops in nodes.

    Wraps redis-py's :class:`redis.backoff.ExponentialWithJitterBackoff`.

    Examples
    --------
    >>> b = Backoff(base=0.1, cap=2.0)
    >>> 0 <= b.next_delay() <= 0.2
    True
    >>> b.failures
    1
    """

    def __init__(self, base: float = 0.05, cap: float = 5.0):
        self._backoff = ExponentialWithJitterBackoff(cap=cap, base=base)
        self.failures = 0

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before the next try."""
        self.failures += 1
        return self._backoff.compute(self.failures)

    def reset(self) -> None:
        """Forget the failures (call after a success)."""
        self.failures = 0


def _unavailable(url: str, deadline: float | None, error: BaseException | None) -> RedisUnavailable:
    why = mask_text(str(error)) if error is not None else "no answer"
    if isinstance(error, RedisUnavailable):
        why = mask_text(str(error.__cause__ or error))
    said = f"did not answer within {deadline:g}s" if deadline is not None else "is not reachable"
    msg = (
        f"Redis at {mask_url(url)} {said} ({why}). "
        "Check that redis-server is running and reachable from here, that the host, port "
        "or socket path is right, and the username/password if it uses ACLs; or unset "
        "MDFLOW_REDIS_URL/REDIS_URL to use the embedded server."
    )
    return RedisUnavailable(msg)


class _Deadline:
    """Backoff delays until a deadline; then :class:`RedisUnavailable`."""

    def __init__(self, url: str, deadline: float):
        self.url, self.deadline = url, deadline
        self._end = time.monotonic() + deadline
        self._backoff = Backoff(base=0.05, cap=1.0)

    def delay_after(self, error: BaseException) -> float:
        refused = fatal_reason(error, self.url)
        if refused is not None:
            denied = tls_verification_failure(error) is None
            raise (RedisAccessDenied if denied else RedisUnavailable)(refused) from error
        delay = self._backoff.next_delay()
        if time.monotonic() + delay > self._end:
            raise _unavailable(self.url, self.deadline, error) from error
        logger.debug(
            "Redis at %s not ready (%s); retrying in %.2fs",
            mask_url(self.url),
            mask_text(str(error)),
            delay,
        )
        return delay


async def wait_available(url: str | None = None, deadline: float = 10.0) -> redis.asyncio.Redis:
    """PING until Redis answers; raise :class:`RedisUnavailable` after ``deadline`` seconds."""
    resolved = redis_url(url)
    conn = client(resolved)
    retry = _Deadline(resolved, deadline)
    while True:
        try:
            await conn.ping()
            return conn
        except _AVAILABILITY_ERRORS as exc:
            await asyncio.sleep(retry.delay_after(exc))


def ensure_available(url: str | None = None, deadline: float = 10.0) -> walrus.Database:
    """Synchronous twin of :func:`wait_available`; returns a walrus ``Database``."""
    resolved = redis_url(url)
    database = db(resolved)
    retry = _Deadline(resolved, deadline)
    while True:
        try:
            database.ping()
            return database
        except _AVAILABILITY_ERRORS as exc:
            time.sleep(retry.delay_after(exc))
