"""Entries made readable: decoded payloads as rich tables, text or JSON data.

``mdflow tail`` and ``mdflow dead-letters`` print what mdflow wrote (and what other
clients wrote) with these helpers:

* :func:`render` — a rich renderable: DataFrames and Series as tables, dicts and
  dataclasses as a grid of fields, lists of dicts as a table, anything else its
  escaped ``repr`` (no markup is interpreted);
* :func:`jsonable` — the same value as plain JSON data (for ``--json``);
* :func:`summary`, :func:`codec_of`, :func:`local_time`, :func:`short` — the few words
  printed around it;
* :class:`Item` with :func:`stream_item` / :func:`message_item` — one stream entry or
  pub/sub message, decoded as an outlet decodes it (never unpickled), or kept with why
  it did not decode;
* :func:`print_whole` — print on stdout without cutting anything off.

Examples
--------
>>> item = stream_item("quotes", b"1700000000000-0", {b"px": b"101.5", b"qty": b"3"})
>>> item.codec, item.data
('fields', {'px': '101.5', 'qty': '3'})
>>> item.as_json()["data"]
{'px': '101.5', 'qty': '3'}
>>> print_whole(item.renderable(show_source=False))   # doctest: +SKIP
1700000000000-0  2023-11-14 23:13:20.000  fields  dict 2 fields
px   101.5
qty  3
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import math
from collections.abc import Mapping
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..codecs import JSON_FIELD, MSGPACK_FIELD, decode_entry, decode_message
from ..errors import DecodeError
from ..streams.dead_letters import id_time
from .common import console

__all__ = [
    "Item",
    "as_text",
    "codec_of",
    "decoded_json",
    "jsonable",
    "local_time",
    "message_item",
    "print_whole",
    "render",
    "short",
    "stream_item",
    "summary",
]

_MAX_ROWS = 20
_MAX_COLUMNS = 12
_MAX_TEXT = 300
_MAX_JSON_ROWS = 100_000


def local_time(when: datetime.datetime) -> str:
    """``2024-01-02 12:00:00.123`` in the local time zone."""
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def short(text: str, limit: int = _MAX_TEXT) -> str:
    """``text``, cut to ``limit`` characters (the last one an ellipsis) if it is longer.

    Examples
    --------
    >>> short("abcdef", 4)
    'abc…'
    """
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return repr(value)  # escaped: control bytes never reach the terminal raw
    return _shown(value, repr if isinstance(value, (list, tuple, dict, set)) else str)


def _shown(value: Any, how: Any = str) -> str:
    """``str(value)`` (or ``repr``); an object that cannot be shown says so instead of raising
    (a payload from another program may hold one, and one entry must not stop a listing)."""
    try:
        text: str = how(value)
    except Exception as exc:  # noqa: BLE001 - any failure of a foreign object's __str__
        return f"<{type(value).__name__} that cannot be shown: {type(exc).__name__}: {exc}>"
    return text


def _cell(value: Any) -> Text:
    return Text(short(_scalar(value)))


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
        grid.add_row(Text(short(_scalar(key), 60)), render(value, depth + 1))
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
        # A frame without columns may have a RangeIndex of any length (pandas keeps it as
        # start/stop/step: a few bytes on the wire can declare 2**63 rows); JSON gets the first
        # _MAX_JSON_ROWS and says how many there were.
        shown = value.iloc[:_MAX_JSON_ROWS]
        out: dict[str, Any] = {
            "columns": [jsonable(c) for c in value.columns],
            "index": [jsonable(i) for i in shown.index],
            # plain tuples: named ones would be built by eval() from the column names
            "data": [[jsonable(v) for v in row] for row in shown.itertuples(False, None)],
        }
        if len(value) > _MAX_JSON_ROWS:
            out["rows"] = len(value)
        return out
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
    return _shown(value)


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


def as_text(value: Any) -> str:
    """A Redis reply (bytes or not) as text; undecodable bytes as ``\\xNN`` escapes.

    Examples
    --------
    >>> as_text(b"1-0"), as_text(b"\\xc1"), as_text(7)
    ('1-0', '\\\\xc1', '7')
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def decoded_json(data: Any, error: str | None, raw: Any) -> dict[str, Any]:
    """The JSON fields of a payload: ``{"data": ...}``, or ``{"error": ..., "raw": ...}``.

    Examples
    --------
    >>> decoded_json({"px": 1.5}, None, None)
    {'data': {'px': 1.5}}
    >>> decoded_json(None, "not msgpack", b"\\xc1")
    {'error': 'not msgpack', 'raw': '\\\\xc1'}
    """
    if error is None:
        return {"data": jsonable(data)}
    return {"error": error, "raw": jsonable(raw)}


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
        out.update(decoded_json(self.data, self.error, self.raw))
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
            body: list[RenderableType] = [Text("  " + short(self.error, 500), style="red")]
            if isinstance(self.raw, Mapping):
                body.append(_fields_grid({as_text(k): v for k, v in self.raw.items()}, 2))
            else:
                body.append(_cell(self.raw))
            return Group(head, *body)
        head.append(f"  {summary(self.data)}", style="dim")
        return Group(head, render(self.data))


def stream_item(stream: str, entry_id: Any, fields: Mapping[Any, Any]) -> Item:
    """Decode one stream entry (``codec="auto"``); a failure is kept, not raised."""
    entry = as_text(entry_id)
    item = Item({"stream": stream, "id": entry}, id_time(entry), codec_of(fields))
    try:
        item.data = decode_entry(fields, "auto", source=stream, entry_id=entry)
    except DecodeError as exc:
        item.error, item.raw = str(exc), dict(fields)
    return item


def message_item(message: Mapping[str, Any]) -> Item:
    """Decode one pub/sub message (``codec="auto"``); a failure is kept, not raised."""
    channel = as_text(message["channel"])
    pattern = message.get("pattern")
    where = {"channel": channel, "pattern": as_text(pattern) if pattern is not None else None}
    data = message["data"]
    codec = "msgpack" if isinstance(data, bytes) and data.startswith(b"\xc1MDF") else "text"
    item = Item(where, datetime.datetime.now(datetime.timezone.utc), codec)
    try:
        item.data = decode_message(data, "auto", source=channel)
    except DecodeError as exc:
        item.error, item.raw = str(exc), data
    return item
