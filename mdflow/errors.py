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
    ├── WriteRefused                    Redis refused writes for good (a key of another type,
    │   │                               an ACL...): raised to the code that emits when no
    │   │                               upstream source is there to retry them
    │   └── ElementTooLarge (+ ValueError)
    │                                   an element has a value larger than Redis accepts
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
    "ElementTooLarge",
    "EncodeError",
    "MdflowError",
    "NodeFailed",
    "RedisAccessDenied",
    "RedisUnavailable",
    "ValidationError",
    "WriteRefused",
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


class WriteRefused(MdflowError):
    """Redis refused one or more writes of a sink for good; retrying cannot help.

    Downstream of ``from_redis``, a refused write is reported to the outlet,
    which retries the entry and dead-letters it with the reason. With no
    upstream source to tell (a plain ``Stream()``), the refusal is raised to
    the code that emits: by the next ``emit`` into the sink, by ``flush()`` or
    by ``wait_written()``.

    Attributes
    ----------
    node : str
        The sink that wrote (``to_redis<prices>``).
    errors : list of BaseException
        What Redis (or the size check) answered, one per refused write.
    """

    def __init__(self, message: str, node: str = "", errors: list[BaseException] | None = None):
        super().__init__(message)
        self.node = node
        self.errors = list(errors or ())


class ElementTooLarge(WriteRefused, ValueError):
    """An element holds a value larger than the Redis server accepts in one argument.

    Redis would answer ``Protocol error: invalid bulk length`` and close the
    connection; the element is refused before it is sent, and the other
    elements of its batch are written.

    Attributes
    ----------
    target : str
        Where it was to be written (``stream 'prices'``).
    size : int
        The element's encoded size, in bytes.
    largest : int
        Its largest single value, in bytes (what the limit applies to).
    limit : int
        The largest value the server accepts, in bytes.
    knob : str
        The server setting that imposes the limit (``proto-max-bulk-len``).
    """

    def __init__(
        self, message: str, node: str, target: str, size: int, largest: int, limit: int, knob: str
    ):
        super().__init__(message, node)
        self.target = target
        self.size = size
        self.largest = largest
        self.limit = limit
        self.knob = knob
