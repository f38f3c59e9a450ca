"""``mdflow tail``: watch a stream or a pub/sub channel, decoded and readable.

``redis-cli`` shows mdflow entries as msgpack bytes; ``mdflow tail`` decodes them as an outlet
would (never unpickling anything) and prints each one with its id and time: DataFrames as
tables, dicts and records as fields, entries written by other clients (``XADD s * a 1``) as
their fields, and bytes that do not decode as escaped text with the reason.

The rendering helpers (:func:`render`, :func:`jsonable`, :func:`local_time`) are shared with
``mdflow dead-letters``.

Examples
--------
.. code-block:: console

    $ mdflow tail quotes                  # new entries, until Ctrl-C
    $ mdflow tail quotes -n 5 --max 5     # the last 5, then stop
    $ mdflow tail 'ticks:*' --json        # a pub/sub pattern, one JSON object per line
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
import math
import os
import socket
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

import click
import redis
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..codecs import JSON_FIELD, MSGPACK_FIELD, decode_entry, decode_message
from ..errors import ConfigError, DecodeError, MdflowError, RedisUnavailable
from ..pubsub.listener import is_pattern
from ..reservoir import ensure_available, mask_text
from ..streams.dead_letters import id_time
from .common import console, err_console, handle_errors, resolve, url_option

__all__ = ["jsonable", "local_time", "print_whole", "render", "tail_command"]

_BLOCK_MS = 1000
_READ_COUNT = 100
_CONNECT_DEADLINE = 5.0
_RECONNECT_DEADLINE = 30.0
_MAX_ROWS = 20
_MAX_COLUMNS = 12
_MAX_TEXT = 300


# --- rendering (shared with dead-letters) -------------------------------------------------------
def local_time(when: datetime.datetime) -> str:
    """``2024-01-02 12:00:00.123`` in the local time zone."""
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _short(text: str, limit: int = _MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return repr(value)  # escaped: control bytes never reach the terminal raw
    return repr(value) if isinstance(value, (list, tuple, dict, set)) else str(value)


def _cell(value: Any) -> Text:
    return Text(_short(_scalar(value)))


def summary(value: Any) -> str:
    """What a decoded value is, in a few words: ``DataFrame 2x3``, ``dict 4 fields``, ``int``."""
    kind = type(value).__name__
    shape = getattr(value, "shape", None)
    if kind == "DataFrame" and shape is not None:
        return f"DataFrame {shape[0]}x{shape[1]}"
    if kind in ("Series", "ndarray") and shape is not None:
        return f"{kind} {'x'.join(str(n) for n in shape)}"
    if isinstance(value, dict):
        return f"dict {len(value)} field{'s' if len(value) != 1 else ''}"
    if isinstance(value, list):
        return f"list {len(value)}"
    return kind


def _frame_table(frame: Any) -> Table:
    columns = list(frame.columns)[:_MAX_COLUMNS]
    index_name = frame.index.name if frame.index.name is not None else ""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column(Text(_scalar(index_name)), style="bold")
    for column in columns:
        table.add_column(Text(_scalar(column)), justify="right")
    shown = frame.iloc[:_MAX_ROWS, : len(columns)]
    # column by column, so each keeps its dtype (a row of mixed columns would be upcast)
    values = [shown.iloc[:, j].tolist() for j in range(len(columns))]
    for position, label in enumerate(shown.index):
        table.add_row(_cell(label), *(_cell(column[position]) for column in values))
    more = []
    if len(frame) > _MAX_ROWS:
        more.append(f"{len(frame) - _MAX_ROWS} more rows")
    if len(frame.columns) > len(columns):
        more.append(f"{len(frame.columns) - len(columns)} more columns")
    if more:
        table.caption = "… " + ", ".join(more)
    return table


def _series_table(series: Any) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column(Text(_scalar(series.index.name or "")), style="bold")
    table.add_column(Text(_scalar(series.name if series.name is not None else "")), justify="right")
    for label, value in zip(series.index[:_MAX_ROWS], series.tolist()[:_MAX_ROWS], strict=True):
        table.add_row(_cell(label), _cell(value))
    if len(series) > _MAX_ROWS:
        table.caption = f"… {len(series) - _MAX_ROWS} more rows"
    return table


def _fields_grid(items: Mapping[Any, Any], depth: int) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan")
    grid.add_column()
    for key, value in items.items():
        grid.add_row(Text(_short(_scalar(key), 60)), render(value, depth + 1))
    return grid


def _records_table(rows: list[dict[Any, Any]]) -> Table:
    keys: list[Any] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for key in keys[:_MAX_COLUMNS]:
        table.add_column(Text(_scalar(key)))
    for row in rows[:_MAX_ROWS]:
        table.add_row(*(_cell(row.get(k, "")) for k in keys[:_MAX_COLUMNS]))
    if len(rows) > _MAX_ROWS:
        table.caption = f"… {len(rows) - _MAX_ROWS} more rows"
    return table


def render(value: Any, depth: int = 0) -> RenderableType:
    """A rich renderable for a decoded value.

    DataFrames and Series become tables, dicts and dataclasses (``MarketDataPoint``,
    ``Record``) a grid of their fields, lists of dicts a table; anything else its ``repr``,
    shortened. Text goes through :class:`rich.text.Text`: no markup is interpreted.
    """
    kind = type(value).__name__
    if depth > 2:
        return _cell(value)
    if kind == "DataFrame" and hasattr(value, "iloc"):
        return _frame_table(value)
    if kind == "Series" and hasattr(value, "index"):
        return _series_table(value)
    if isinstance(value, Mapping) and value:
        return _fields_grid(value, depth)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return Group(Text(kind, style="italic"), _fields_grid(items, depth))
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return _records_table(value)
    return _cell(value)


def print_whole(renderable: RenderableType) -> None:
    """Print on stdout, wider than the terminal if that is what it takes to print it whole.

    Rich drops or elides what does not fit; a stream name longer than the terminal is
    narrow must still be printed (the terminal wraps the line instead).
    """
    need = console.measure(renderable).minimum
    if need <= console.width:
        console.print(renderable)
    else:
        wide = Console(
            file=console.file,
            width=need,
            highlight=False,
            force_terminal=console.is_terminal,
            color_system=console.color_system,  # type: ignore[arg-type]
        )
        wide.print(renderable)
    console.file.flush()


def _plain(value: Any) -> Any:
    """numpy/pandas scalars to Python ones (``.item()``); others unchanged."""
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        try:
            return item()
        except (ValueError, TypeError):
            return value
    return value


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data.

    DataFrame -> ``{"columns", "index", "data"}`` (rows), Series -> ``{"name", "index",
    "data"}``, ndarray -> nested lists, datetimes -> ISO 8601 text, Decimal and Timedelta ->
    text, bytes -> text (undecodable bytes as ``\\xNN`` escapes), NaN/inf/NaT/NA -> null,
    dataclasses -> their fields, anything else -> ``str``.

    Examples
    --------
    >>> jsonable({"px": float("nan"), "t": datetime.date(2024, 1, 2), 1: b"\\xc1"})
    {'px': None, 't': '2024-01-02', '1': '\\\\xc1'}
    """
    value = _plain(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, Mapping):
        return {_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    kind = type(value).__name__
    if kind in ("NaTType", "NAType"):
        return None
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if kind == "DataFrame":
        return {
            "columns": [jsonable(c) for c in value.columns],
            "index": [jsonable(i) for i in value.index],
            "data": [[jsonable(v) for v in row] for row in value.itertuples(index=False)],
        }
    if kind == "Series":
        return {
            "name": jsonable(value.name),
            "index": [jsonable(i) for i in value.index],
            "data": [jsonable(v) for v in value.tolist()],
        }
    if kind == "ndarray":
        return jsonable(value.tolist())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return str(value)


def _key(key: Any) -> str:
    key = jsonable(key)
    return key if isinstance(key, str) else str(key)


def codec_of(fields: Mapping[Any, Any]) -> str:
    """How a stream entry was written: ``msgpack``, ``json`` or plain ``fields``."""
    if len(fields) == 1:
        name = next(iter(fields))
        name = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        if name == MSGPACK_FIELD:
            return "msgpack"
        if name == JSON_FIELD:
            return "json"
    return "fields"


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


# --- one printed item ---------------------------------------------------------------------------
@dataclasses.dataclass
class Item:
    """One entry or message, decoded (or not), ready to print."""

    where: dict[str, Any]  # {"stream": s, "id": i} or {"channel": c, "pattern": p}
    when: datetime.datetime
    codec: str
    data: Any = None
    error: str | None = None
    raw: Any = None  # the undecodable fields or bytes

    def as_json(self) -> dict[str, Any]:
        out = dict(self.where)
        out["time"] = self.when.isoformat()
        out["codec"] = self.codec
        if self.error is None:
            out["data"] = jsonable(self.data)
        else:
            out["error"] = self.error
            out["raw"] = jsonable(self.raw)
        return out

    def renderable(self, show_source: bool) -> RenderableType:
        head = Text()
        if "id" in self.where:
            head.append(self.where["id"], style="bold")
            head.append("  ")
        head.append(local_time(self.when), style="dim")
        if show_source:
            source = self.where.get("channel") or self.where.get("stream")
            head.append("  ")
            head.append(str(source), style="magenta")
        head.append(f"  {self.codec}", style="dim")
        if self.error is not None:
            head.append("  undecodable", style="bold red")
            body: list[RenderableType] = [Text("  " + _short(self.error, 500), style="red")]
            if isinstance(self.raw, Mapping):
                body.append(_fields_grid({_text(k): v for k, v in self.raw.items()}, 2))
            else:
                body.append(_cell(self.raw))
            return Group(head, *body)
        head.append(f"  {summary(self.data)}", style="dim")
        return Group(head, render(self.data))


def stream_item(stream: str, entry_id: Any, fields: Mapping[Any, Any]) -> Item:
    """Decode one stream entry (``codec="auto"``); a failure is kept, not raised."""
    entry = _text(entry_id)
    item = Item({"stream": stream, "id": entry}, id_time(entry), codec_of(fields))
    try:
        item.data = decode_entry(fields, "auto", source=stream, entry_id=entry)
    except DecodeError as exc:
        item.error, item.raw = str(exc), dict(fields)
    return item


def message_item(message: Mapping[str, Any]) -> Item:
    """Decode one pub/sub message (``codec="auto"``); a failure is kept, not raised."""
    channel = _text(message["channel"])
    pattern = message.get("pattern")
    where = {"channel": channel, "pattern": _text(pattern) if pattern is not None else None}
    data = message["data"]
    codec = "msgpack" if isinstance(data, bytes) and data.startswith(b"\xc1MDF") else "text"
    item = Item(where, datetime.datetime.now(datetime.timezone.utc), codec)
    try:
        item.data = decode_message(data, "auto", source=channel)
    except DecodeError as exc:
        item.error, item.raw = str(exc), data
    return item


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
    return _text(newest[0][0]) if newest else "0-0"


def _follow_stream(
    url: str, conn: redis.Redis, stream: str, start: str, history: int, printer: Printer
) -> None:
    if history:
        newest: list[tuple[bytes, dict[bytes, bytes]]] = cast(
            Any, conn.xrevrange(stream, count=history) or []
        )
        for entry_id, fields in reversed(newest):
            printer.show(stream_item(stream, entry_id, fields))
        last = _text(newest[0][0]) if newest else _last_id(conn, stream)
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
                    last = _text(entry_id)
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
        mine = sum(int(c["pending"]) for c in summary["consumers"] if _text(c["name"]) == consumer)
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
    kind = _text(conn.type(name))
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
