"""The exceptions mdflow raises.

Every mdflow error derives from :class:`MdflowError`, so one ``except`` catches
them all; errors in how mdflow was *configured* also derive from ``ValueError``
so that code which validates arguments the usual way keeps working::

    MdflowError
    ├── ConfigError (+ ValueError)      bad argument, bad URL, bad environment
    ├── ValidationError (+ ValueError)  a data record breaks its own rules
    ├── DecodeError (+ ValueError)      bytes from Redis that cannot be decoded
    ├── EncodeError (+ TypeError)       an object the chosen codec cannot carry
    ├── RedisUnavailable (+ ConnectionError)
    │   │                               Redis could not be reached before the deadline
    │   └── RedisAccessDenied           Redis refused: wrong/missing password, ACL (NOPERM)
    ├── NodeFailed (+ RuntimeError)     a node stopped for good on an error retrying cannot
    │                                   fix (mdflow.run raises it; the node's state is "failed")
    └── FeedError (+ ConnectionError)   a collector's outside feed failed
        ├── DataSilence                 no data for max_silence seconds
        └── FeedClosed                  the feed ended or dropped the connection
                                        (these three live in mdflow.collectors.collector)

Messages say what was wrong, what was received, and a hint.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "MdflowError",
    "NodeFailed",
    "RedisAccessDenied",
    "RedisUnavailable",
    "ValidationError",
]


def describe(value: object, limit: int = 60) -> str:
    """Render ``value`` for an error message: a short repr and its type.

    Examples
    --------
    >>> describe(42)
    '42 (int)'
    """
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{text} ({type(value).__name__})"


class MdflowError(Exception):
    """Root of every error raised by mdflow."""


class ConfigError(MdflowError, ValueError):
    """An argument, URL or environment variable is not what mdflow expects."""


class ValidationError(MdflowError, ValueError):
    """A data record (e.g. an OHLCV candle) breaks its own rules.

    Attributes
    ----------
    field : str
        The offending field.
    value : object
        The value it had.
    """

    def __init__(self, message: str, field: str | None = None, value: object = None):
        super().__init__(message)
        self.field = field
        self.value = value


class DecodeError(MdflowError, ValueError):
    """Bytes read from Redis could not be turned back into an object.

    Attributes
    ----------
    source : str or None
        The stream or channel the bytes came from.
    entry_id : str or None
        The stream entry id (None for pub/sub messages).
    reason : str
        Why decoding failed.
    """

    def __init__(self, reason: str, source: str | None = None, entry_id: str | None = None):
        self.reason = reason
        self.source = source
        self.entry_id = entry_id
        where = []
        if source is not None:
            where.append(f"from {source!r}")
        if entry_id is not None:
            where.append(f"entry {entry_id}")
        prefix = "cannot decode " + (" ".join(where) if where else "payload")
        super().__init__(f"{prefix}: {reason}")

    def at(self, source: str | None, entry_id: str | None = None) -> DecodeError:
        """Return a copy of this error that names where the bytes came from."""
        err = DecodeError(self.reason, source=source, entry_id=entry_id)
        err.__cause__ = self.__cause__
        return err


class EncodeError(MdflowError, TypeError):
    """An object cannot be written with the chosen codec."""


class RedisUnavailable(MdflowError, ConnectionError):
    """Redis could not be reached before the connection deadline.

    The message names the (password-masked) URL and what to check.
    """


class RedisAccessDenied(RedisUnavailable):
    """Redis answered but refused: a wrong or missing password, or an ACL denial (``NOPERM``).

    Retrying cannot fix it, so nodes that meet it stop in the ``failed`` state
    at once. The message names the (password-masked) URL and what to change.
    """


class NodeFailed(MdflowError, RuntimeError):
    """One or more nodes stopped for good (state ``failed``).

    Raised by :func:`mdflow.run` when a node meets an error retrying cannot fix
    (authentication, ACL, an invalid ``start_id``, a key of the wrong type).

    Attributes
    ----------
    failures : dict
        ``{node name: reason}`` for every failed node.
    """

    def __init__(self, failures: dict[str, str]):
        self.failures = dict(failures)
        lines = "; ".join(f"{name}: {reason}" for name, reason in self.failures.items())
        super().__init__(f"{len(self.failures)} node(s) failed: {lines}")
