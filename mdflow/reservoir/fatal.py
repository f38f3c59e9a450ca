"""Errors retrying cannot fix: tell them apart from a lost connection, and say what to change.

A node that loses its connection reconnects with backoff; a node that meets
one of these stops at once in the ``failed`` state (``fatal_reason`` says
why, in one line, with the password masked):

* authentication: a wrong password (``WRONGPASS``), a missing one (``NOAUTH``),
  or a password sent to a server that has none;
* ACL denials (``NOPERM``): the user may not run a command or touch a key;
* ``WRONGTYPE``: the key is not a stream (or not what the command needs);
* an invalid stream id (e.g. a ``start_id`` Redis rejects).

Examples
--------
>>> import redis
>>> fatal_reason(redis.ConnectionError("Connection refused")) is None
True
>>> print(fatal_reason(redis.AuthenticationError("invalid username-password pair"),
...                    "redis://alice:secret@db:6379/0"))
Redis at redis://alice:***@db:6379/0 refused the credentials (invalid username-password pair): \
check the username and password in the URL
"""

from __future__ import annotations

import redis
from redis.exceptions import NoPermissionError

from ..errors import RedisAccessDenied
from .urls import mask_text, mask_url

__all__ = ["fatal_reason", "is_auth_failure", "is_fatal"]


def fatal_reason(exc: BaseException, url: str | None = None) -> str | None:
    """One line saying why ``exc`` cannot be fixed by retrying, or None if it can.

    Parameters
    ----------
    exc : BaseException
        What a Redis command raised.
    url : str, optional
        The Redis URL the command went to (shown with its password masked).

    Returns
    -------
    str or None
        The reason, or None for errors worth retrying (connection loss, timeouts...).

    Examples
    --------
    >>> import redis
    >>> fatal_reason(redis.ResponseError("WRONGTYPE Operation against a key holding the wrong "
    ...                                  "kind of value"))[:40]
    'WRONGTYPE: the key holds another type of'
    """
    where = f"Redis at {mask_url(url)}" if url else "Redis"
    text = mask_text(str(exc))
    if isinstance(exc, RedisAccessDenied):
        return text
    if isinstance(exc, NoPermissionError) or text.startswith("NOPERM"):
        return (
            f"{where} denied a command by ACL (NOPERM: {text.removeprefix('NOPERM ')}): grant "
            "the user what mdflow needs, e.g. ACL SETUSER <user> +@stream +@pubsub +ping +type "
            "+client|setname ~<key pattern> &<channel pattern>"
        )
    if isinstance(exc, redis.AuthenticationError):
        lowered = text.lower()
        if (
            "authentication required" in lowered
            or "noauth" in lowered
            or "already authenticated" in lowered  # HELLO sent without a password
        ):
            return (
                f"{where} requires a password and none was given ({text}): put it in the URL, "
                "redis://:PASSWORD@host:port/db or redis://USER:PASSWORD@host:port/db"
            )
        if "without any password configured" in lowered:
            return f"{where} has no password but one was given ({text}): remove it from the URL"
        return (
            f"{where} refused the credentials ({text}): check the username and password in the URL"
        )
    if isinstance(exc, redis.ResponseError):
        if text.startswith("WRONGTYPE"):
            return (
                "WRONGTYPE: the key holds another type of value than the command needs "
                f"({text}); use another stream/key name or delete the key"
            )
        if "invalid stream id" in text.lower():
            return (
                f"Redis rejected a stream id ({text}): an id is '<ms>' or '<ms>-<seq>' with "
                "64-bit numbers, '$' or '0'"
            )
    return None


def is_fatal(exc: BaseException) -> bool:
    """True if retrying cannot fix ``exc`` (see :func:`fatal_reason`).

    Examples
    --------
    >>> import redis
    >>> is_fatal(redis.TimeoutError("timed out"))
    False
    """
    return fatal_reason(exc) is not None


def is_auth_failure(exc: BaseException) -> bool:
    """True if Redis refused the credentials (not one command or key: the whole connection).

    Examples
    --------
    >>> import redis
    >>> is_auth_failure(redis.AuthenticationError("WRONGPASS"))
    True
    >>> is_auth_failure(redis.ResponseError("WRONGTYPE"))
    False
    """
    cause = exc.__cause__ if isinstance(exc, RedisAccessDenied) else exc
    return isinstance(cause, redis.AuthenticationError)
