"""``mdflow inspect [PATTERN]``: what one Redis holds of an mdflow system, as tables.

Reads :func:`mdflow.pictures.inspect` (streams, consumer groups, consumers, dead
letters, live graphs and their nodes, collector managers) and shows it as rich
tables, once or refreshed about once a second (``--watch``), or prints it as JSON.

Examples
--------
.. code-block:: console

    $ mdflow inspect 'ticks*'
    $ mdflow inspect --watch
    $ mdflow inspect --json | jq '.streams[].groups'
"""

from __future__ import annotations

import time
from typing import Any

import click
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..errors import RedisUnavailable
from ..reservoir import mask_text
from .common import (
    console,
    handle_errors,
    json_option,
    print_json,
    resolve,
    until_stopped,
    url_option,
)

__all__ = ["inspect_command", "render_view"]

_HEALTH_STYLE = {"ok": "green", "lagging": "yellow", "failing": "red", "stopped": "dim"}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def _num(value: Any) -> str:
    if value is None:
        return "?"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", expand=False)
    for column in columns:
        numeric = column in {"length", "pending", "lag", "consumers", "nodes", "pid", "messages"}
        ids = column.endswith(" id") or column == "last delivered"
        table.add_column(
            column,
            justify="right" if numeric else "left",
            overflow="fold",
            no_wrap=numeric or ids,  # an id cut in two cannot be copied
        )
    return table


def _streams(view: dict[str, Any]) -> Table:
    table = _table("streams", "stream", "length", "first id", "last id", "last entry", "groups")
    for s in view["streams"]:
        if s["dead_letter_of"] is not None:
            continue  # in the dead letters table
        dead = f" [red]({s['dead_letters']:,} dead)[/red]" if s["dead_letters"] else ""
        table.add_row(
            Text(s["name"]),
            _num(s["length"]),
            s["first_id"] or "-",
            s["last_id"] or "-",
            _age(s["last_age"]) + " ago" if s["last_age"] is not None else "-",
            f"{len(s['groups'])}{dead}",
        )
    return table


def _groups(view: dict[str, Any]) -> Table:
    table = _table(
        "consumer groups", "stream", "group", "consumers", "pending", "lag", "last delivered"
    )
    for s in view["streams"]:
        for g in s["groups"]:
            table.add_row(
                Text(s["name"]),
                Text(g["name"]),
                _num(g["consumers"]),
                _num(g["pending"]),
                _num(g["lag"]),
                g["last_delivered_id"] or "-",
            )
    return table


def _consumers(view: dict[str, Any]) -> Table:
    table = _table("consumers", "stream", "group", "consumer", "pending", "idle")
    for s in view["streams"]:
        for g in s["groups"]:
            for c in g["consumer_list"]:
                idle = c["idle_ms"]
                table.add_row(
                    Text(s["name"]),
                    Text(g["name"]),
                    Text(c["name"]),
                    _num(c["pending"]),
                    _age(None if idle is None else idle / 1000),
                )
    return table


def _dead_letters(view: dict[str, Any]) -> Table:
    table = _table("dead letters", "stream", "dead letters of", "length", "last entry")
    for s in view["streams"]:
        if s["dead_letter_of"] is None:
            continue
        table.add_row(
            Text(s["name"]),
            Text(s["dead_letter_of"]),
            _num(s["length"]),
            _age(s["last_age"]) + " ago" if s["last_age"] is not None else "-",
        )
    return table


def _graphs(view: dict[str, Any]) -> Table:
    table = _table("live graphs", "graph", "host", "pid", "program", "nodes", "published")
    for g in view["graphs"]:
        table.add_row(
            Text(g["id"]),
            Text(str(g.get("host") or "-")),
            str(g.get("pid") or "-"),
            Text(str(g.get("program") or "-")),
            _num(g["nodes"]),
            _age(g.get("age")) + " ago",
        )
    return table


def _nodes(view: dict[str, Any]) -> Table:
    table = _table("live nodes", "node", "kind", "state", "health", "rate", "status")
    topo = view["topology"]
    for node in topo["nodes"].values():
        status = node.get("status")
        if status is None:
            continue
        overlay = node.get("overlay") or {}
        health = overlay.get("health") or "-"
        rate = overlay.get("rate")
        table.add_row(
            Text(str(node.get("name"))),
            str(node.get("kind") or "-"),
            str(status.get("state") or "-"),
            Text(health, style=_HEALTH_STYLE.get(health, "")),
            "-" if rate is None else f"{rate:,.0f}/s",
            Text(str(overlay.get("text") or "")),
        )
    return table


def _collectors(view: dict[str, Any]) -> Table:
    table = _table(
        "collectors", "manager", "collector", "exchange", "state", "messages", "restarts", "updated"
    )
    for manager in view["collectors"]:
        for name, status in sorted(manager.get("collectors", {}).items()):
            status = status if isinstance(status, dict) else {}
            stats = status.get("statistics") or {}
            table.add_row(
                Text(manager["name"]),
                Text(name),
                Text(str(status.get("exchange") or "-")),
                str(status.get("state") or "-")
                + ("" if status.get("enabled", True) else " (disabled)"),
                _num(stats.get("messages_received")),
                _num(stats.get("restarts")),
                str(manager.get("updated_at") or "-"),
            )
    return table


def render_view(view: dict[str, Any], pattern: str = "*") -> RenderableType:
    """The tables of a :class:`~mdflow.pictures.SystemView`, as one rich renderable.

    Tables with no rows are left out; a line says what was looked at.

    Examples
    --------
    >>> from mdflow.pictures import SystemView
    >>> from mdflow.pictures.topology import Topology
    >>> view = SystemView(redis="redis://h:6379/0", time=0.0, streams=[], graphs=[],
    ...                   collectors=[], topology=Topology(nodes={}, edges=[]))
    >>> from rich.console import Console
    >>> Console(width=100).print(render_view(view))
    redis://h:6379/0 · streams matching '*' · 0 streams, 0 live graphs, 0 collector managers
    no streams match '*'
    """
    when = time.strftime("%H:%M:%S", time.localtime(view["time"])) if view.get("time") else ""
    header = Text(
        f"{view['redis']} · streams matching {pattern!r} · {len(view['streams'])} streams, "
        f"{len(view['graphs'])} live graphs, {len(view['collectors'])} collector managers"
        + (f" · at {when}" if when else ""),
    )
    parts: list[RenderableType] = [header]
    for error in view.get("errors", []):
        parts.append(Text(mask_text(str(error)), style="red"))
    tables = [
        _streams(view),
        _groups(view),
        _consumers(view),
        _dead_letters(view),
        _graphs(view),
        _nodes(view),
        _collectors(view),
    ]
    if not view["streams"]:
        parts.append(Text(f"no streams match {pattern!r}", style="dim"))
    parts.extend(table for table in tables if table.row_count)
    return Group(*parts)


def _watch(url: str, pattern: str, interval: float, as_json: bool) -> None:
    """Show the view every ``interval`` s until Ctrl-C or SIGTERM (KeyboardInterrupt)."""
    from rich.live import Live

    from ..pictures import inspect

    view = inspect(url, pattern)  # unreachable at the start: one line and exit 1

    def show(view: dict[str, Any] | None, error: str | None) -> RenderableType:
        if view is not None:
            return render_view(view, pattern)
        return Group(Text(time.strftime("%H:%M:%S")), Text(error or "", style="red"))

    def take() -> tuple[dict[str, Any] | None, str | None]:
        try:
            return inspect(url, pattern), None
        except RedisUnavailable as exc:  # keep watching: Redis may come back
            return None, str(exc).splitlines()[0]

    if as_json or not console.is_terminal:  # pipes and files get one view after another
        current: tuple[dict[str, Any] | None, str | None] = (view, None)
        while True:
            shown, error = current
            if as_json:
                print_json(dict(shown) if shown is not None else {"error": error})
            else:
                console.print(show(shown, error))
                console.print()
            time.sleep(interval)
            current = take()
    with Live(show(view, None), console=console, auto_refresh=False) as live:
        while True:
            time.sleep(interval)
            live.update(show(*take()), refresh=True)


@click.command("inspect", short_help="Tables of streams, groups, consumers, live graphs.")
@click.argument("pattern", default="*", metavar="[PATTERN]")
@click.option("-w", "--watch", is_flag=True, help="Refresh about once a second until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
@url_option
@json_option
@handle_errors("inspect")
def inspect_command(
    pattern: str, watch: bool, interval: float, url: str | None, as_json: bool
) -> None:
    """Show streams, consumer groups, consumers, dead letters, live graphs and collectors.

    PATTERN (a Redis SCAN MATCH pattern, default '*') selects the streams;
    live graphs and collector managers are always all listed. --json prints
    what was seen as one JSON document (with --watch: one per line).

    \b
    Examples:
      mdflow inspect
      mdflow inspect 'ticks*' --url redis://localhost:6379/0
      mdflow inspect --watch
      mdflow inspect --json
    """
    from ..pictures import inspect

    resolved = resolve(url)
    if watch:
        with until_stopped():  # Ctrl-C / SIGTERM is how --watch ends: exit 0
            _watch(resolved, pattern, interval, as_json)
        return
    view = inspect(resolved, pattern)
    if as_json:
        print_json(dict(view))
    else:
        console.print(render_view(view, pattern))
