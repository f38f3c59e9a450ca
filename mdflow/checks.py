"""Argument checks shared by every mdflow node, sink and helper.

Each check takes the value, ``where`` (the node or function being configured,
e.g. ``"from_redis"``) and the parameter's name, and either returns the value
(normalised where that is natural) or raises :class:`~mdflow.ConfigError`
with one message shape everywhere::

    {where}: {param} must be {what was expected}; got {value} ({type})

Checks run in ``__init__``, before any I/O, so a wrong argument fails at
construction and never turns into a retry loop.

Examples
--------
>>> check_positive(0.5, "from_redis", "block")
0.5
>>> check_positive(float("nan"), "from_redis", "block")
Traceback (most recent call last):
...
mdflow.errors.ConfigError: from_redis: block must be a positive number; got nan (float)
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

from streamz import Stream

from .errors import ConfigError, describe

__all__ = [
    "check_callable",
    "check_flag",
    "check_keywords",
    "check_list_max",
    "check_maxlen",
    "check_name",
    "check_names",
    "check_node_keywords",
    "check_positive",
    "check_seconds",
    "check_stream_id",
    "check_text",
    "check_topic",
    "check_ttl",
]

T = TypeVar("T")

#: A stream entry id as XGROUP CREATE / XREADGROUP take it: ``ms`` or ``ms-seq``.
_ENTRY_ID = re.compile(r"[0-9]+(-[0-9]+)?")
_MAX_SEQ = 2**64 - 1  # the largest sequence number of a stream id


def _fail(where: str, param: str, expected: str, value: object, hint: str = "") -> ConfigError:
    return ConfigError(f"{where}: {param} must be {expected}; got {describe(value)}{hint}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_text(value: Any, where: str, param: str, what: str = "") -> str:
    """A non-empty str; ``what`` says what it names (``"a Redis stream"``).

    Examples
    --------
    >>> check_text("quotes", "engine", "topic", "a Redis stream")
    'quotes'
    """
    if not isinstance(value, str) or not value:
        expected = f"a non-empty str naming {what}" if what else "a non-empty str"
        raise _fail(where, param, expected, value)
    return value


def check_topic(topic: Any, where: str, param: str = "topic") -> str:
    """A Redis stream name: a non-empty str."""
    return check_text(topic, where, param, "a Redis stream")


def check_names(values: Any, where: str, param: str, example: str = "") -> list[str]:
    """A str or a non-empty list/tuple of non-empty str -> list without duplicates, in order.

    Examples
    --------
    >>> check_names(["quotes", "trades", "quotes"], "from_pubsub", "channels")
    ['quotes', 'trades']
    """
    names = [values] if isinstance(values, str) else values
    if not isinstance(names, (list, tuple)) or not names:
        hint = f". Example: {example}" if example else ""
        raise _fail(where, param, "a str or a list of str", values, hint)
    for name in names:
        if not isinstance(name, str) or not name:
            raise _fail(where, f"every entry of {param}", "a non-empty str", name)
    return list(dict.fromkeys(names))


def check_positive(
    value: Any, where: str, param: str, *, integer: bool = False, allow_none: bool = False
) -> Any:
    """A finite number > 0 (an int > 0 with ``integer=True``); bools, nan and inf are refused.

    Examples
    --------
    >>> check_positive(3, "from_redis", "batch_size", integer=True)
    3
    >>> check_positive(None, "spike", "option ttl", allow_none=True) is None
    True
    """
    if value is None and allow_none:
        return None
    kinds = (int,) if integer else (int, float)
    if (
        not isinstance(value, kinds)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not value > 0
    ):
        kind = "a positive int" if integer else "a positive number"
        raise _fail(where, param, kind + (" or None" if allow_none else ""), value)
    return value


def check_seconds(value: Any, where: str, param: str) -> float:
    """A positive, finite number of seconds -> float."""
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise _fail(where, param, "a positive number of seconds", value)
    return float(value)


def check_flag(value: Any, where: str, param: str) -> bool:
    """A bool (``0``/``1`` accepted): the str ``"false"`` is a mistake, not ``True``.

    Examples
    --------
    >>> check_flag(False, "from_redis", "meta")
    False
    >>> check_flag("no", "from_redis", "meta")
    Traceback (most recent call last):
    ...
    mdflow.errors.ConfigError: from_redis: meta must be True or False; got 'no' (str)
    """
    if isinstance(value, bool):
        return value
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
    if numpy_bool or (isinstance(value, int) and value in (0, 1)):
        return bool(value)  # numpy.bool_ and 0/1 say what they mean
    raise _fail(where, param, "True or False", value)


def check_callable(func: Any, where: str, param: str, nargs: int, takes: str) -> Callable[..., Any]:
    """A callable that accepts ``nargs`` positional arguments (``takes`` describes them).

    A function whose signature cannot be read (some builtins) is accepted.

    Examples
    --------
    >>> check_callable(lambda x: x, "engine", "func", 0, "taking no arguments")
    Traceback (most recent call last):
    ...
    mdflow.errors.ConfigError: engine: func must be a callable taking no arguments; \
got <function <lambda> at 0x...> (function); it requires 1 argument(s): x
    """
    if not callable(func):
        raise _fail(where, param, f"a callable {takes}", func)
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return func  # builtins without a readable signature: trust the caller
    try:
        signature.bind(*range(nargs))
    except TypeError:
        required = [
            p.name
            for p in signature.parameters.values()
            if p.default is p.empty
            and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        detail = (
            f"; it requires {len(required)} argument(s): {', '.join(required)}"
            if len(required) > nargs
            else f"; it does not accept {nargs} argument(s)"
        )
        raise _fail(where, param, f"a callable {takes}", func, detail) from None
    return func


def check_stream_id(value: Any, where: str, param: str) -> str:
    """Where a new consumer group starts: ``"$"``, ``"0"``, an entry id, or a point in time.

    A ``datetime`` (a naive one is local time) or an ISO-8601 string becomes the
    id just before that millisecond, so the group delivers every entry written
    at or after it.

    Examples
    --------
    >>> check_stream_id("1700000000000-0", "from_redis", "start_id")
    '1700000000000-0'
    >>> from datetime import datetime, timezone
    >>> check_stream_id(datetime(2026, 1, 2, tzinfo=timezone.utc), "from_redis", "start_id")
    '1767311999999-18446744073709551615'
    >>> check_stream_id("2026-01-02T00:00:00.001Z", "from_redis", "start_id")
    '1767312000000-18446744073709551615'
    """
    if isinstance(value, str) and (value == "$" or _ENTRY_ID.fullmatch(value)):
        return value
    moment = value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            moment = None
    if isinstance(moment, datetime):
        ms = round(moment.timestamp() * 1000)
        if ms <= 0:
            return "0"
        # the last possible id of the millisecond before: entries at `ms` and later are new
        return f"{ms - 1}-{_MAX_SEQ}"
    raise _fail(
        where,
        param,
        "'$', '0', an entry id, a datetime or an ISO-8601 time",
        value,
        " (an entry id is '<ms>' or '<ms>-<seq>', e.g. '1700000000000-0'; a time is e.g. "
        "'2026-11-25T09:30:00+00:00')",
    )


def check_maxlen(maxlen: Any, where: str) -> int | None:
    """None (keep everything) or a positive int (trim the stream to about that many)."""
    if maxlen is not None and (
        not isinstance(maxlen, int) or isinstance(maxlen, bool) or maxlen < 1
    ):
        raise _fail(where, "maxlen", "None (keep everything) or a positive int", maxlen)
    return maxlen


def check_name(value: Any, where: str, param: str, what: str) -> str | Callable[[Any], str]:
    """A non-empty str, or a function of the element returning one."""
    if callable(value):
        return value
    if not isinstance(value, str) or not value:
        raise _fail(
            where,
            param,
            f"a non-empty str naming a {what}, or a function of the element returning one",
            value,
        )
    return value


def check_ttl(ttl: Any, where: str, param: str = "ttl") -> float | None:
    """None (no expiry) or a positive number of seconds."""
    if ttl is None:
        return None
    if not _is_number(ttl) or not ttl > 0 or not math.isfinite(ttl):
        raise _fail(where, param, "None (no expiry) or a positive number of seconds", ttl)
    return ttl


def check_list_max(list_max: Any, where: str, param: str = "list_max") -> int | None:
    """None (plain value) or a positive int (keep that many list entries)."""
    if list_max is None:
        return None
    if not isinstance(list_max, int) or isinstance(list_max, bool) or list_max < 1:
        raise _fail(
            where,
            param,
            "None (store a plain value) or a positive int (keep the newest N entries of a list)",
            list_max,
        )
    return list_max


def check_keywords(kwargs: dict[str, Any], where: str, accepted: Iterable[str]) -> None:
    """Refuse keywords that neither the node nor streamz's ``Stream`` accepts.

    Otherwise a misspelt keyword (``grup=``) would travel on to
    ``Stream.__init__`` and come back as a ``TypeError`` that does not name
    the node it was given to.

    Examples
    --------
    >>> check_keywords({"grup": "g"}, "from_redis", ["group", "consumer"])
    Traceback (most recent call last):
    ...
    mdflow.errors.ConfigError: from_redis: unexpected keyword argument 'grup'; did you mean 'group'?
    """
    known = set(accepted) | _stream_keywords()
    for name in kwargs:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else (f"; it accepts {', '.join(sorted(known))}")
            )
            raise ConfigError(f"{where}: unexpected keyword argument {name!r}{hint}")


def check_node_keywords(node: object, kwargs: dict[str, Any]) -> None:
    """:func:`check_keywords` for a node, on the ``kwargs`` its ``__init__`` did not take."""
    where = type(node).__name__
    check_keywords(kwargs, where, accepted_keywords(type(node).__init__))


def _stream_keywords() -> set[str]:
    params = inspect.signature(Stream.__init__).parameters.values()
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {
        "self"
    }


def accepted_keywords(func: Callable[..., Any]) -> list[str]:
    """The named parameters of ``func`` (what :func:`check_keywords` accepts besides streamz's)."""
    params = inspect.signature(func).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
