"""Errors retrying cannot fix: tell them apart from a lost connection, and say what to change.

A node that loses its connection reconnects with backoff; a node that meets
one of these stops at once in the ``failed`` state (``fatal_reason`` says
why, in one line, with the password masked):

* authentication: a wrong password (``WRONGPASS``), a missing one (``NOAUTH``),
  or a password sent to a server that has none;
* ACL denials (``NOPERM``): the user may not run a command or touch a key;
* ``WRONGTYPE``: the key is not a stream (or not what the command needs);
* an invalid stream id (e.g. a ``start_id`` Redis rejects);
* a TLS server certificate that does not verify (signed by a CA the client
  does not trust, or made out for another host name).

Redis names the command of an ACL denial, not the key or channel it refused:
:func:`with_command` adds them where mdflow knows the command.

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

import ssl
from collections.abc import Sequence
from urllib.parse import urlsplit

import redis
from redis.exceptions import NoPermissionError

from ..errors import RedisAccessDenied
from .urls import mask_text, mask_url

__all__ = [
    "command_label",
    "fatal_reason",
    "is_auth_failure",
    "is_fatal",
    "tls_verification_failure",
    "with_command",
]

_VERIFY_FAILED = "CERTIFICATE_VERIFY_FAILED"
# commands whose first argument is a subcommand (XGROUP CREATE key ...)
_SUBCOMMANDS = frozenset(
    {"ACL", "CLIENT", "CONFIG", "FUNCTION", "MEMORY", "OBJECT", "PUBSUB", "SCRIPT", "XGROUP",
     "XINFO"}
)  # fmt: skip
# commands whose arguments are all keys or channels
_ALL_NAMES = frozenset(
    {"DEL", "EXISTS", "MGET", "PSUBSCRIBE", "SSUBSCRIBE", "SUBSCRIBE", "TOUCH", "UNLINK", "WATCH"}
)
# commands without a key or channel, or whose arguments may be secrets: shown by name only
_NAME_ONLY = frozenset(
    {"ACL", "AUTH", "CLIENT", "CONFIG", "DISCARD", "ECHO", "EXEC", "HELLO", "INFO", "MIGRATE",
     "MULTI", "PING", "SCAN", "TIME"}
)  # fmt: skip
_SHOWN = 3  # keys named at most


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


def command_label(command: Sequence[object]) -> str:
    """A command by its name and the keys or channels it names, never its values.

    Examples
    --------
    >>> command_label(("XADD", "ticks:a", "*", "px", "1.5"))
    "XADD 'ticks:a'"
    >>> command_label(("XREADGROUP", "GROUP", "g", "c", "COUNT", 10, "STREAMS", "a", "b", ">", ">"))
    "XREADGROUP 'a', 'b'"
    >>> command_label(("XGROUP", "CREATE", "ticks", "g", "$"))
    "XGROUP CREATE 'ticks'"
    >>> command_label(("EVAL", "return 1", 2, "ticks", "ticks:dead", "g"))
    "EVAL 'ticks', 'ticks:dead'"
    """
    if not command:
        return ""
    words = [_text(word) for word in command]
    name, rest = words[0].upper(), words[1:]
    first = name
    if name in _SUBCOMMANDS and rest:
        name, rest = f"{name} {rest[0].upper()}", rest[1:]
    if first in _NAME_ONLY:
        names: list[str] = []
    elif first in ("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"):
        count = int(rest[1]) if len(rest) > 1 and rest[1].isdigit() else 0
        names = rest[2 : 2 + count]  # (never the script: it is long, and not what was refused)
    elif first in ("XREAD", "XREADGROUP"):
        upper = [word.upper() for word in rest]
        after = rest[upper.index("STREAMS") + 1 :] if "STREAMS" in upper else []
        names = after[: len(after) // 2]
    elif first in _ALL_NAMES:
        names = rest
    else:
        names = rest[:1]
    shown = ", ".join(repr(n if len(n) <= 60 else n[:57] + "...") for n in names[:_SHOWN])
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"{name} {shown}{more}" if shown else name


def with_command(exc: NoPermissionError, command: Sequence[object]) -> NoPermissionError:
    """The same ACL refusal, naming the command and the keys or channels it was about.

    Redis says "no permissions to access one of the keys used as arguments"
    without saying which; mdflow, which knows the command it sent, adds it.

    Examples
    --------
    >>> from redis.exceptions import NoPermissionError
    >>> refused = NoPermissionError("no permissions to access one of the keys used as arguments")
    >>> str(with_command(refused, ("XADD", "other", "*", "px", "1")))
    "no permissions to access one of the keys used as arguments; command: XADD 'other'"
    """
    label = command_label(command)
    if not label or "; command: " in str(exc):
        return exc
    named = type(exc)(f"{exc}; command: {label}")
    named.__cause__ = exc
    return named


def tls_verification_failure(exc: BaseException) -> str | None:
    """What failed if ``exc`` (or what caused it) is a TLS certificate verification, else None.

    Examples
    --------
    >>> tls_verification_failure(redis.ConnectionError("Connection refused")) is None
    True
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:  # (both links: a re-raise inside an except replaces __context__)
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current.verify_message or str(current)
        text = str(current)
        if _VERIFY_FAILED in text:  # redis-py re-raised it as a ConnectionError's text
            detail = text.split("certificate verify failed:", 1)[-1]
            return detail.split("(_ssl.c", 1)[0].strip(" .") or _VERIFY_FAILED
        todo += [current.__cause__, current.__context__]
    return None


def _tls_reason(where: str, detail: str) -> str:
    if "mismatch" in detail.lower():  # "Hostname mismatch" / "IP address mismatch"
        hint = (
            "connect with a host name or IP address that the server's certificate names "
            "(the host part of the URL)"
        )
    else:
        hint = (
            "the server's certificate is not signed by a CA this client trusts; name the CA "
            "that signed it in the URL, rediss://HOST:PORT/DB?ssl_ca_certs=/path/to/ca.pem"
        )
    return f"TLS certificate verification failed for {where} ({detail}): {hint}"


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
    tls = tls_verification_failure(exc)
    if tls is not None:
        return _tls_reason(where, mask_text(tls))
    if isinstance(exc, NoPermissionError) or text.startswith("NOPERM"):
        user = (urlsplit(url).username or "default") if url else None
        by = f"; user {user!r}" if user else ""
        return (
            f"{where} denied a command by ACL (NOPERM: {text.removeprefix('NOPERM ')}{by}): "
            "grant the user that command on that key or channel, ACL SETUSER <user> +<command> "
            "~<key pattern> &<channel pattern> (README, 'ACL: least privilege', lists what "
            "each mdflow role needs)"
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
    """True if the whole connection is refused, not one command or key: Redis refused the
    credentials, or the server's TLS certificate does not verify.

    Examples
    --------
    >>> import redis
    >>> is_auth_failure(redis.AuthenticationError("WRONGPASS"))
    True
    >>> is_auth_failure(redis.ResponseError("WRONGTYPE"))
    False
    """
    cause = exc.__cause__ if isinstance(exc, RedisAccessDenied) else exc
    return isinstance(cause, redis.AuthenticationError) or tls_verification_failure(exc) is not None
