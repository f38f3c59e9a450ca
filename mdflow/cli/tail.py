"""``mdflow tail``: watch a stream or a pub/sub channel, decoded and readable.

``redis-cli`` shows mdflow entries as msgpack bytes; ``mdflow tail`` decodes them as an outlet
would (never unpickling anything) and prints each one with its id and time: DataFrames as
tables, dicts and records as fields, entries written by other clients (``XADD s * a 1``) as
their fields, and bytes that do not decode as escaped text with the reason.

This module reads (XREAD, XREADGROUP, SUBSCRIBE/PSUBSCRIBE) and prints; :mod:`.entries`
decodes and renders each entry (shared with ``mdflow dead-letters``).

Examples
--------
.. code-block:: console

    $ mdflow tail quotes                  # new entries, until Ctrl-C
    $ mdflow tail quotes -n 5 --max 5     # the last 5, then stop
    $ mdflow tail 'ticks:*' --json        # a pub/sub pattern, one JSON object per line
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any, cast

import click
import redis
from rich.text import Text

from ..errors import ConfigError, MdflowError, RedisUnavailable
from ..pubsub.listener import is_pattern
from ..reservoir import ensure_available, mask_text
from .common import err_console, handle_errors, resolve, url_option
from .entries import Item, as_text, message_item, print_whole, stream_item

__all__ = ["tail_command"]

_BLOCK_MS = 1000
_READ_COUNT = 100
_CONNECT_DEADLINE = 5.0
_RECONNECT_DEADLINE = 30.0


# --- printing -----------------------------------------------------------------------------------
class Printer:
    """Prints items (rich or JSON lines) and counts them against ``--max``."""

    def __init__(self, as_json: bool, limit: int | None, show_source: bool):
        self.as_json, self.limit, self.show_source = as_json, limit, show_source
        self.printed = 0

    @property
    def done(self) -> bool:
        return self.limit is not None and self.printed >= self.limit

    @property
    def room(self) -> int:
        """How many entries to read next: never more than ``--max`` still allows."""
        if self.limit is None:
            return _READ_COUNT
        return max(1, min(_READ_COUNT, self.limit - self.printed))

    def show(self, item: Item) -> None:
        if self.done:
            return
        if self.as_json:
            click.echo(json.dumps(item.as_json(), default=str))
        else:
            print_whole(item.renderable(self.show_source))
        self.printed += 1


# --- reading ------------------------------------------------------------------------------------
def _note(message: str) -> None:
    err_console.print(Text(f"mdflow tail: {mask_text(message)}", style="dim"), soft_wrap=True)


def _connect(url: str, deadline: float = _CONNECT_DEADLINE) -> redis.Redis:
    conn: redis.Redis = ensure_available(url, deadline=deadline)
    return conn


def _resilient(url: str, conn: redis.Redis) -> Iterator[redis.Redis]:
    """Yield a connection; after a lost connection, the next one (or RedisUnavailable)."""
    while True:
        yield conn
        _note("connection lost; reconnecting")
        conn = _connect(url, _RECONNECT_DEADLINE)


_LOST = (redis.ConnectionError, redis.TimeoutError)


def _last_id(conn: redis.Redis, stream: str) -> str:
    newest = conn.xrevrange(stream, count=1)
    return as_text(newest[0][0]) if newest else "0-0"


def _follow_stream(
    url: str, conn: redis.Redis, stream: str, start: str, history: int, printer: Printer
) -> None:
    if history:
        newest: list[tuple[bytes, dict[bytes, bytes]]] = cast(
            Any, conn.xrevrange(stream, count=history) or []
        )
        for entry_id, fields in reversed(newest):
            printer.show(stream_item(stream, entry_id, fields))
        last = as_text(newest[0][0]) if newest else _last_id(conn, stream)
    else:
        last = "0-0" if start == "0" else _last_id(conn, stream)
    what = "from the start" if start == "0" else "new entries"
    if history:
        what = f"the last {history} entries, then new ones"
    _note(f"{stream!r} is a stream: reading {what} with XREAD (no group joined); Ctrl-C stops")
    for live in _resilient(url, conn):
        try:
            while not printer.done:
                reply = live.xread({stream: last}, count=printer.room, block=_BLOCK_MS)
                for entry_id, fields in _stream_entries(reply):
                    printer.show(stream_item(stream, entry_id, fields))
                    last = as_text(entry_id)
            return
        except _LOST:
            continue


def _stream_entries(reply: Any) -> list[tuple[Any, Any]]:
    """The entries of an XREAD/XREADGROUP reply for one stream (RESP2 list or RESP3 dict)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        for entries in reply.values():
            return list(entries[0] if entries and isinstance(entries[0], list) else entries)
        return []
    return list(reply[0][1])


def _follow_group(
    url: str, conn: redis.Redis, stream: str, group: str, start: str, printer: Printer
) -> None:
    consumer = f"mdflow-tail:{socket.gethostname()}:{os.getpid()}"
    try:
        conn.xgroup_create(stream, group, id=start if start == "0" else "$")
        _note(f"created consumer group {group!r} on {stream!r}")
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    _note(
        f"{stream!r} is a stream: reading through group {group!r} as consumer {consumer!r}; "
        "entries read here are NOT acknowledged (the group's outlets claim them after their "
        "claim_idle); Ctrl-C stops"
    )
    try:
        for live in _resilient(url, conn):
            conn = live  # the `finally` below leaves the group with the last connection
            try:
                while not printer.done:
                    reply = conn.xreadgroup(
                        group, consumer, {stream: ">"}, count=printer.room, block=_BLOCK_MS
                    )
                    for entry_id, fields in _stream_entries(reply):
                        printer.show(stream_item(stream, entry_id, fields))
                return
            except _LOST:
                continue
    finally:
        _leave_group(conn, stream, group, consumer)


def _leave_group(conn: redis.Redis, stream: str, group: str, consumer: str) -> None:
    """Remove our consumer if it holds nothing; else leave its entries for the group to claim."""
    try:
        held = conn.xpending_range(stream, group, min="-", max="+", count=1, consumername=consumer)
        if not held:
            conn.xgroup_delconsumer(stream, group, consumer)
            return
        summary = conn.xpending(stream, group)
        mine = sum(
            int(c["pending"]) for c in summary["consumers"] if as_text(c["name"]) == consumer
        )
        _note(
            f"consumer {consumer!r} of group {group!r} keeps its {mine} pending entries, "
            "unacknowledged: the group's outlets claim them after their claim_idle"
        )
    except (redis.RedisError, KeyboardInterrupt):
        pass  # best effort: the consumer stays listed in XINFO CONSUMERS


def _follow_channel(url: str, conn: redis.Redis, name: str, kind: str, printer: Printer) -> None:
    pattern = is_pattern(name)
    verb = "PSUBSCRIBE" if pattern else "SUBSCRIBE"
    why = "no key" if kind == "none" else f"a {kind}"
    first = True
    for live in _resilient(url, conn):
        pubsub = live.pubsub(ignore_subscribe_messages=True)
        try:
            (pubsub.psubscribe if pattern else pubsub.subscribe)(name)
            if first:
                _note(
                    f"{name!r} is not a stream ({why}): listening to it as a pub/sub "
                    f"{'pattern' if pattern else 'channel'} ({verb}); Ctrl-C stops"
                )
                first = False
            while not printer.done:
                message = pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message.get("type") in ("message", "pmessage"):
                    printer.show(message_item(message))
            return
        except _LOST:
            continue
        finally:
            try:
                pubsub.close()
            except redis.RedisError:
                pass


def _run_tail(
    url: str,
    name: str,
    group: str | None,
    from_start: bool,
    last: int,
    limit: int | None,
    as_json: bool,
) -> None:
    conn = _connect(url)
    kind = as_text(conn.type(name))
    if kind != "stream":
        needs = [
            option
            for option, given in (("--group", group), ("--from-start", from_start), ("-n", last))
            if given
        ]
        if needs:
            msg = (
                f"{name!r} is not a stream ({'no such key' if kind == 'none' else 'a ' + kind}); "
                f"{'/'.join(needs)} need{'s' if len(needs) == 1 else ''} a stream. Without "
                f"{'it' if len(needs) == 1 else 'them'}, tail listens to the name as a pub/sub "
                "channel."
            )
            raise ConfigError(msg)
        printer = Printer(as_json, limit, show_source=is_pattern(name))
        _follow_channel(url, conn, name, kind, printer)
        return
    printer = Printer(as_json, limit, show_source=False)
    start = "0" if from_start else "$"
    if group is not None:
        _follow_group(url, conn, name, group, start, printer)
    else:
        _follow_stream(url, conn, name, start, last, printer)


def _quiet_broken_pipe(func: Callable[[], None]) -> None:
    try:
        func()
    except BrokenPipeError:
        # the reader went away (`mdflow tail s | head`): stop quietly, no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


@click.command("tail")
@click.argument("name", metavar="STREAM_OR_CHANNEL")
@click.option(
    "--group",
    "-g",
    default=None,
    metavar="G",
    help=(
        "Read through consumer group G as a consumer of its own (created if missing). "
        "WARNING: it then takes a share of the group's entries away from the group's other "
        "consumers. It does not acknowledge them: they stay pending and the group's outlets "
        "claim and process them after their claim_idle (late, counted as one more delivery)."
    ),
)
@click.option(
    "--from-start", is_flag=True, help="Start at the first entry of the stream (default: new ones)."
)
@click.option(
    "-n",
    "last",
    type=click.IntRange(min=0),
    default=0,
    metavar="N",
    help="Show the last N entries first, then follow.",
)
@click.option(
    "--max",
    "--count",
    "limit",
    type=click.IntRange(min=1),
    default=None,
    metavar="M",
    help="Stop after M entries (or messages) and exit 0.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per line (JSON Lines) instead of text."
)
@url_option
@handle_errors("tail")
def tail_command(
    name: str,
    group: str | None,
    from_start: bool,
    last: int,
    limit: int | None,
    as_json: bool,
    url: str | None,
) -> None:
    """Print the entries of a stream, or the messages of a pub/sub channel, as they arrive.

    Entries are decoded as an outlet decodes them (nothing is ever unpickled): DataFrames as
    tables, dicts and records as fields, entries written by other clients
    (`XADD s * a 1`) as their fields; bytes that do not decode are shown escaped, with why.
    Each comes with its id and time. A stream is read with plain XREAD (no consumer group
    joined, nothing acknowledged): new entries by default, all with --from-start, the
    last N then new ones with -n N. A name that is not a stream is a pub/sub channel (glob
    characters * ? [ make a PSUBSCRIBE pattern); stderr says which. Ctrl-C stops (exit 0).
    """
    if from_start and last:
        raise click.UsageError("--from-start and -n N cannot be used together")
    if group is not None and last:
        raise click.UsageError("-n N cannot be used with --group (a group reads what it is due)")
    if group is not None and not group:
        raise click.UsageError("--group needs a name")
    resolved = resolve(url)

    def work() -> None:
        try:
            _run_tail(resolved, name, group, from_start, last, limit, as_json)
        except KeyboardInterrupt:
            return
        except redis.RedisError as exc:
            if isinstance(exc, _LOST):
                raise RedisUnavailable(f"lost Redis: {exc}") from exc
            raise MdflowError(f"Redis refused: {exc}") from exc

    _quiet_broken_pipe(work)
