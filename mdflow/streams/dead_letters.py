"""Look into dead-letter streams, replay their entries, purge them.

``Stream.from_redis`` parks the entries it gives up on in a dead-letter stream
(``{topic}:dead`` by default; :mod:`.deadletter` writes them). These functions
are the other half: :func:`list_dead_letters` reads them back as
:class:`DeadLetter` objects (reason, deliveries, origin, the decoded payload),
:func:`replay_dead_letters` puts them back into their stream, byte for byte as
they were first written, and :func:`purge_dead_letters` deletes them.

Every function takes the origin stream (``"quotes"``) or the dead-letter stream
itself (``"quotes:dead"``): see :func:`dead_letter_stream`.

They are synchronous (they block): use them from scripts, notebooks and the
``mdflow dead-letters`` command, not from a coroutine on a node's loop.

Examples
--------
>>> from mdflow.streams import list_dead_letters, replay_dead_letters
>>> for letter in list_dead_letters("quotes"):                  # doctest: +SKIP
...     print(letter.origin_id, letter.reason, letter.payload())
>>> replay_dead_letters("quotes")                               # doctest: +SKIP
{'1700000000123-0': '1700000000456-0'}
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import msgpack
import redis

from ..codecs import decode_entry
from ..errors import ConfigError, DecodeError, MdflowError, describe
from ..reservoir import ensure_available, mask_text

__all__ = [
    "DEFAULT_DEAD_LETTER",
    "DeadLetter",
    "dead_letter_stream",
    "id_time",
    "list_dead_letters",
    "purge_dead_letters",
    "replay_dead_letters",
]

logger = logging.getLogger(__name__)

#: Where ``Stream.from_redis`` puts dead letters unless told otherwise.
DEFAULT_DEAD_LETTER = "{topic}:dead"

_PAGE = 500
_CONNECT_DEADLINE = 5.0

# Put the original fields back and remove the dead letter, in one atomic step, only if the dead
# letter is still there (a concurrent replay or purge got it first: nothing happens). If the
# XADD fails (e.g. the target is not a stream), the script stops before the XDEL.
_REPLAY_ONE = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
    return false
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
"""


@dataclass(frozen=True)
class DeadLetter:
    """One entry of a dead-letter stream.

    Attributes
    ----------
    id : str
        Its id in the dead-letter stream (what ``ids=`` of replay and purge take).
    stream : str
        The dead-letter stream.
    origin : str
        The stream the entry came from.
    origin_id : str
        Its id there.
    group, consumer : str
        The consumer group and consumer that gave up on it.
    reason : str
        Why: a decode error, or ``delivered N times, more than max_deliveries=M``.
    deliveries : int
        How many times it had been delivered.
    fields : dict of bytes to bytes
        The original fields of the entry, exactly as they were written.

    Examples
    --------
    >>> letter = DeadLetter("1700000000000-0", "quotes:dead", "quotes", "1699999999000-0",
    ...                     "g", "c1", "boom", 6, {b"sym": b"BTC"})
    >>> letter.payload()
    {'sym': 'BTC'}
    >>> letter.time.isoformat()
    '2023-11-14T22:13:20+00:00'
    """

    id: str
    stream: str
    origin: str
    origin_id: str
    group: str
    consumer: str
    reason: str
    deliveries: int
    fields: dict[bytes, bytes] = field(repr=False)

    @property
    def time(self) -> datetime.datetime:
        """When it was dead-lettered (the time in its id), UTC."""
        return id_time(self.id)

    def payload(self, codec: str = "auto") -> object:
        """The original entry decoded as an outlet would decode it.

        Raises
        ------
        DecodeError
            If it cannot be decoded (often why it was dead-lettered). Nothing is unpickled.
        """
        return decode_entry(self.fields, codec, source=self.origin, entry_id=self.origin_id)


def id_time(entry_id: str) -> datetime.datetime:
    """The time in a stream entry id (its milliseconds part), as an aware UTC datetime.

    Examples
    --------
    >>> id_time("1700000000000-3").isoformat()
    '2023-11-14T22:13:20+00:00'
    """
    millis = int(entry_id.split("-", 1)[0])
    return datetime.datetime.fromtimestamp(millis / 1000, tz=datetime.timezone.utc)


def dead_letter_stream(name: str, dead_letter: str = DEFAULT_DEAD_LETTER) -> str:
    """The dead-letter stream that ``name`` refers to.

    ``name`` may be the dead-letter stream itself (it fits ``dead_letter``, e.g. ends with
    ``:dead``) or the origin stream (then ``dead_letter`` is filled in with it).

    Parameters
    ----------
    name : str
        ``"quotes"`` or ``"quotes:dead"``.
    dead_letter : str
        The pattern the outlet was given (its ``dead_letter=``), with ``{topic}``.

    Examples
    --------
    >>> dead_letter_stream("quotes"), dead_letter_stream("quotes:dead")
    ('quotes:dead', 'quotes:dead')
    >>> dead_letter_stream("quotes", dead_letter="dlq:{topic}")
    'dlq:quotes'
    """
    where = "dead_letter_stream"
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: name must be a non-empty stream name; got {describe(name)}")
    if not isinstance(dead_letter, str) or "{topic}" not in dead_letter:
        msg = (
            f"{where}: dead_letter must be a stream name pattern containing {{topic}} "
            f"(e.g. '{{topic}}:dead'); got {describe(dead_letter)}"
        )
        raise ConfigError(msg)
    head, _, tail = dead_letter.partition("{topic}")
    if len(name) > len(head) + len(tail) and name.startswith(head) and name.endswith(tail):
        return name
    return dead_letter.replace("{topic}", name)


def list_dead_letters(
    stream: str,
    *,
    count: int | None = None,
    dead_letter: str = DEFAULT_DEAD_LETTER,
    redis_url: str | None = None,
) -> list[DeadLetter]:
    """The entries of a dead-letter stream, oldest first.

    Parameters
    ----------
    stream : str
        The origin stream or its dead-letter stream (see :func:`dead_letter_stream`).
    count : int, optional
        At most this many (the oldest); all by default.
    dead_letter : str
        The outlet's ``dead_letter=`` pattern.
    redis_url : str, optional
        Where Redis is (default: see :func:`mdflow.redis_url`).

    Returns
    -------
    list of DeadLetter
        Empty if the dead-letter stream does not exist. Entries that are not dead letters
        (no ``payload`` field) are skipped and logged.

    Raises
    ------
    RedisUnavailable
        If Redis does not answer.
    ConfigError
        If the dead-letter key exists but is not a stream.

    Examples
    --------
    >>> letters = list_dead_letters("quotes")                       # doctest: +SKIP
    >>> [(d.origin_id, d.deliveries, d.reason) for d in letters]    # doctest: +SKIP
    [('1700000000000-0', 6, 'delivered 6 times, more than max_deliveries=5')]
    """
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        msg = f"list_dead_letters: count must be a positive int or None; got {describe(count)}"
        raise ConfigError(msg)
    dead = dead_letter_stream(stream, dead_letter)
    conn = _connect(redis_url)
    letters = []
    for entry_id, fields in _entries(conn, dead):
        letter = _parse(dead, entry_id, fields)
        if letter is not None:
            letters.append(letter)
            if count is not None and len(letters) >= count:
                break
    return letters


def replay_dead_letters(
    stream: str,
    *,
    to: str | None = None,
    ids: Iterable[str] | None = None,
    dead_letter: str = DEFAULT_DEAD_LETTER,
    redis_url: str | None = None,
) -> dict[str, str]:
    """Put dead letters back into their stream and remove them from the dead-letter stream.

    Each entry is written with its original fields, byte for byte, so it decodes as it did
    the first time; it gets a new id (at the end of the stream), which the consumer groups
    reading that stream deliver as a new entry. The XADD and the XDEL of the dead letter run
    in one atomic step (a Lua script): a dead letter is removed only if it was written back,
    and one that another process replayed or purged meanwhile is skipped.

    Parameters
    ----------
    stream : str
        The origin stream or its dead-letter stream (see :func:`dead_letter_stream`).
    to : str, optional
        Write them all to this stream instead of each one's origin.
    ids : iterable of str, optional
        Only these dead letters (their ids in the dead-letter stream); all by default.
    dead_letter : str
        The outlet's ``dead_letter=`` pattern.
    redis_url : str, optional
        Where Redis is.

    Returns
    -------
    dict of str to str
        The id of each replayed dead letter -> the id of its new entry, in replay order.

    Raises
    ------
    RedisUnavailable
        If Redis does not answer.
    ConfigError
        If ``to`` is the dead-letter stream itself, or a key is not a stream.
    MdflowError
        If Redis refused a write; the dead letters not replayed yet stay where they are.

    Examples
    --------
    >>> replay_dead_letters("quotes")                               # doctest: +SKIP
    {'1700000000123-0': '1700000000456-0'}
    >>> replay_dead_letters("quotes:dead", to="quotes-retry")       # doctest: +SKIP
    {'1700000000124-0': '1700000000457-0'}
    """
    dead = dead_letter_stream(stream, dead_letter)
    if to is not None and (not isinstance(to, str) or not to):
        raise ConfigError(f"replay_dead_letters: to must be a stream name; got {describe(to)}")
    if to == dead:
        msg = f"replay_dead_letters: to is the dead-letter stream itself ({dead!r}); pick another"
        raise ConfigError(msg)
    wanted = _id_set(ids)
    conn = _connect(redis_url)
    letters = [
        letter
        for entry_id, fields in _entries(conn, dead)
        if wanted is None or entry_id in wanted
        if (letter := _parse(dead, entry_id, fields)) is not None
    ]
    script = conn.register_script(_REPLAY_ONE)
    replayed: dict[str, str] = {}
    for letter in letters:
        target = to if to is not None else letter.origin
        if not target:
            msg = (
                f"dead letter {letter.id} of {dead!r} does not name its origin stream "
                "(no 'topic' field); replay it with to=<stream>"
            )
            raise MdflowError(msg)
        args: list[Any] = [letter.id]
        for name, value in letter.fields.items():
            args += [name, value]
        try:
            new_id = script(keys=[dead, target], args=args)
        except redis.ResponseError as exc:
            msg = (
                f"replaying dead letter {letter.id} of {dead!r} to {target!r} failed: "
                f"{mask_text(str(exc))}; {len(replayed)} were replayed before it, it and "
                f"the ones after it stay in {dead!r}"
            )
            raise MdflowError(msg) from exc
        if new_id is None:
            logger.info(
                "dead letter %s of %r is gone (replayed or purged meanwhile)", letter.id, dead
            )
            continue
        replayed[letter.id] = _text(new_id)
        logger.info(
            "dead letter %s (entry %s of %r) replayed to %r as %s",
            letter.id,
            letter.origin_id,
            letter.origin,
            target,
            replayed[letter.id],
        )
    return replayed


def purge_dead_letters(
    stream: str,
    *,
    ids: Iterable[str] | None = None,
    dead_letter: str = DEFAULT_DEAD_LETTER,
    redis_url: str | None = None,
) -> int:
    """Delete dead letters for good.

    Only entries that were there when the purge read the stream are deleted (XDEL by id),
    so a dead letter written meanwhile is kept.

    Parameters
    ----------
    stream : str
        The origin stream or its dead-letter stream (see :func:`dead_letter_stream`).
    ids : iterable of str, optional
        Only these (their ids in the dead-letter stream); all by default.
    dead_letter : str
        The outlet's ``dead_letter=`` pattern.
    redis_url : str, optional
        Where Redis is.

    Returns
    -------
    int
        How many were deleted.

    Examples
    --------
    >>> purge_dead_letters("quotes")                                # doctest: +SKIP
    3
    """
    dead = dead_letter_stream(stream, dead_letter)
    wanted = _id_set(ids)
    conn = _connect(redis_url)
    doomed = [
        entry_id for entry_id, _ in _entries(conn, dead) if wanted is None or entry_id in wanted
    ]
    deleted = 0
    for start in range(0, len(doomed), _PAGE):
        deleted += int(conn.xdel(dead, *doomed[start : start + _PAGE]))
    if deleted:
        logger.info("purged %d dead letters from %r", deleted, dead)
    return deleted


# --- helpers -----------------------------------------------------------------------------------
def _connect(url: str | None) -> redis.Redis:
    conn: redis.Redis = ensure_available(url, deadline=_CONNECT_DEADLINE)
    return conn


def _id_set(ids: Iterable[str] | str | None) -> set[str] | None:
    if ids is None:
        return None
    if isinstance(ids, str):
        return {ids}
    return {_text(i) for i in ids}


def _entries(conn: redis.Redis, key: str) -> Iterator[tuple[str, dict[bytes, bytes]]]:
    """Every entry of stream ``key`` (none if it does not exist), oldest first, paged."""
    kind = _text(conn.type(key))
    if kind == "none":
        return
    if kind != "stream":
        raise ConfigError(f"{key!r} is a Redis {kind}, not a stream of dead letters")
    start = "-"
    while True:
        page: list[tuple[bytes, dict[bytes, bytes]]] = cast(
            Any, conn.xrange(key, min=start, max="+", count=_PAGE) or []
        )
        for raw_id, fields in page:
            yield _text(raw_id), fields
        if len(page) < _PAGE:
            return
        ms, seq = _text(page[-1][0]).split("-")
        start = f"{ms}-{int(seq) + 1}"


def _parse(stream: str, entry_id: str, fields: Mapping[bytes, bytes]) -> DeadLetter | None:
    try:
        raw = fields[b"payload"]
        original = msgpack.unpackb(raw, raw=True, strict_map_key=False)
        if not isinstance(original, dict) or not all(
            isinstance(k, bytes) and isinstance(v, bytes) for k, v in original.items()
        ):
            raise DecodeError(f"payload is {describe(original)}, not a map of bytes to bytes")
        deliveries = int(fields.get(b"deliveries", b"0"))
    except (KeyError, ValueError, TypeError, msgpack.UnpackException) as exc:
        logger.warning(
            "entry %s of %r is not a dead letter written by mdflow (%s); skipped",
            entry_id,
            stream,
            exc if not isinstance(exc, KeyError) else "no 'payload' field",
        )
        return None
    return DeadLetter(
        id=entry_id,
        stream=stream,
        origin=_text(fields.get(b"topic", b"")),
        origin_id=_text(fields.get(b"id", b"")),
        group=_text(fields.get(b"group", b"")),
        consumer=_text(fields.get(b"consumer", b"")),
        reason=_text(fields.get(b"reason", b"")),
        deliveries=deliveries,
        fields=original,
    )


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)
