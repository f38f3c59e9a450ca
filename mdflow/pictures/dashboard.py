"""Live dashboards: in Jupyter (:func:`dashboard`) and in the browser (:func:`serve_dashboard`).

Both show the same snapshot, taken about once a second without blocking
any loop: the picture with status colours, a table of the mdflow nodes
(state, rate, counts) and one of the streams (length, per group lag,
pending, consumers; dead letters).

* Given a node, the picture is that node's whole graph, its status read on
  the node's own loop, and the streams table is what Redis says about the
  streams it touches.
* Given nothing, it is the system view of one Redis (:func:`.inspect.inspect`):
  every live graph of every process, joined through the streams.

Examples
--------
>>> board = dashboard(outlet)                 # doctest: +SKIP
>>> board.stop()                              # doctest: +SKIP
>>> server = serve_dashboard(port=8799)       # doctest: +SKIP
>>> server.url                                # doctest: +SKIP
'http://127.0.0.1:8799/'
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from streamz import Stream
from tornado.ioloop import IOLoop, PeriodicCallback

from ..errors import ConfigError, RedisAccessDenied, RedisUnavailable
from ..reservoir import mask_url
from ..reservoir import redis_url as resolve_url
from .health import COLOURS, Sampler
from .inspect import SystemView, inspect
from .topology import Topology, connected_nodes, topology
from .web import DashboardServer, serve_in_thread

__all__ = ["Dashboard", "dashboard", "serve_dashboard", "snapshot_provider"]

logger = logging.getLogger(__name__)


def _node_url(node: Stream) -> str | None:
    for each in connected_nodes(node):
        url = getattr(each, "_url", None)
        if url and type(each).__module__.startswith("mdflow."):
            return str(url)
    return None


async def _on_loop_of(node: Stream, work: Callable[[], Topology]) -> Topology:
    """Run ``work`` on ``node``'s loop (its status is only consistent there)."""
    target = getattr(getattr(node, "loop", None), "asyncio_loop", None)
    if target is None or not target.is_running() or target is asyncio.get_running_loop():
        return work()
    done: concurrent.futures.Future[Topology] = concurrent.futures.Future()

    def call() -> None:
        try:
            done.set_result(work())
        except Exception as exc:  # noqa: BLE001 - handed to the waiting side
            done.set_exception(exc)

    target.call_soon_threadsafe(call)
    return await asyncio.wrap_future(done)


def snapshot_provider(
    node: Stream | None = None, redis_url: str | None = None, pattern: str = "*"
) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An async function returning the dashboard snapshot of ``node`` (or of the system).

    Redis is read and the picture rendered in an executor thread; a node's status is
    read on the node's loop.

    Examples
    --------
    >>> provider = snapshot_provider(redis_url="redis://127.0.0.1:6379/0")   # doctest: +SKIP
    >>> sorted(await provider())                                              # doctest: +SKIP
    ['errors', 'graphs', 'nodes', 'streams', 'svg', 'time', 'title']
    """
    url = redis_url or (_node_url(node) if node is not None else None) or resolve_url(None)
    sampler = Sampler()

    async def provide() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        seen = loop.run_in_executor(None, _inspect_quietly, url, pattern)
        own = None
        if node is not None:
            own = await _on_loop_of(node, lambda: topology(node, status=True, sampler=sampler))
        view, error = await seen
        # Rendering the picture takes milliseconds (a second the first time): not on the loop.
        return await loop.run_in_executor(None, _compose, view, own, url, error)

    return provide


def _inspect_quietly(url: str, pattern: str) -> tuple[SystemView | None, str | None]:
    try:
        return inspect(url, pattern), None
    except (RedisUnavailable, RedisAccessDenied) as exc:  # shown on the page, not fatal
        return None, str(exc).splitlines()[0]


def _compose(
    view: SystemView | None, own: Topology | None, url: str, error: str | None
) -> dict[str, Any]:
    base = view or SystemView(
        redis=mask_url(url),
        time=time.time(),
        streams=[],
        graphs=[],
        collectors=[],
        topology=Topology(nodes={}, edges=[]),
    )
    if own is not None:
        system = base.topology["nodes"]
        for node_id, entry in own["nodes"].items():  # reservoirs: what Redis says about them
            if entry.get("reservoir") and node_id in system:
                entry["info"] = system[node_id].get("info", [])
        touched = {entry["name"] for entry in own["nodes"].values() if entry.get("reservoir")}
        base = SystemView(
            {
                **base,
                "topology": own,
                "streams": [s for s in base["streams"] if s["name"] in touched],
            }
        )
    snap = base.snapshot()
    snap["title"] = f"mdflow · {mask_url(url)}"
    if error:
        snap["errors"] = [*snap.get("errors", []), error]
    return snap


def snapshot_html(snap: dict[str, Any]) -> str:
    """The snapshot as one HTML fragment (picture, nodes table, streams table) for Jupyter."""
    rows = []
    for node in snap["nodes"]:
        colour = COLOURS.get(node.get("health") or "", "#9e9e9e")
        rate = node.get("rate")
        counts = ", ".join(f"{k} {v:,}" for k, v in (node.get("counts") or {}).items() if v)
        rows.append(
            f'<tr><td><span style="color:{colour}">●</span> {html.escape(str(node["name"]))}'
            f"</td><td>{html.escape(str(node.get('state')))}</td>"
            f"<td style='text-align:right'>{'' if rate is None else f'{rate:,.0f}/s'}</td>"
            f"<td>{html.escape(counts)}</td></tr>"
        )
    streams = []
    for s in snap["streams"]:
        groups = "; ".join(
            f"{g['name']}: lag {g['lag']}, pending {g['pending']}, {g['consumers']} consumers"
            for g in s["groups"]
        )
        dead = (
            f" · <b style='color:#c62828'>{s['dead_letters']} dead</b>" if s["dead_letters"] else ""
        )
        streams.append(
            f"<tr><td>{html.escape(s['name'])}</td><td style='text-align:right'>"
            f"{s['length']:,}</td><td>{html.escape(groups)}{dead}</td></tr>"
        )
    errors = "".join(
        f"<div style='color:#c62828'>{html.escape(str(e))}</div>" for e in snap["errors"]
    )
    age = time.strftime("%H:%M:%S", time.localtime(snap["time"]))
    return (
        f"<div class='mdflow-dashboard'><div style='font-weight:bold'>"
        f"{html.escape(snap['title'])} <span style='font-weight:normal;color:#757575'>"
        f"at {age}</span></div>{errors}"
        f"<div style='overflow:auto;max-width:100%'>{snap['svg']}</div>"
        "<table><tr><th>node</th><th>state</th><th>rate</th><th>counts</th></tr>"
        f"{''.join(rows)}</table>"
        "<table><tr><th>stream</th><th>length</th><th>groups</th></tr>"
        f"{''.join(streams)}</table></div>"
    )


class Dashboard:
    """A live dashboard in a Jupyter output cell; :meth:`stop` ends the refresh."""

    def __init__(self, provider: Callable[[], Awaitable[dict[str, Any]]], interval: float):
        from IPython.display import HTML, display

        self._provider = provider
        self._html = HTML
        self._handle = display(HTML("<i>mdflow dashboard: first snapshot…</i>"), display_id=True)
        self._busy = False
        self._logged: set[str] = set()
        self.updates = 0
        self.last: dict[str, Any] | None = None
        self._callback = PeriodicCallback(self._refresh, interval * 1000)
        self._callback.start()
        IOLoop.current().add_callback(self._refresh)

    async def _refresh(self) -> None:
        if self._busy:
            return  # the previous snapshot is still being taken: skip a beat
        self._busy = True
        try:
            self.last = await self._provider()
            if self._handle is not None:  # None outside a notebook: keep `last` only
                self._handle.update(self._html(snapshot_html(self.last)))
            self.updates += 1
        except Exception as exc:  # noqa: BLE001 - a dashboard never breaks the kernel
            text = f"{type(exc).__name__}: {exc}"
            if text not in self._logged:  # once per distinct failure, not every second
                self._logged.add(text)
                logger.warning("mdflow dashboard: snapshot failed: %s", text)
        finally:
            self._busy = False

    def stop(self) -> None:
        """Stop refreshing (the last picture stays in the cell)."""
        self._callback.stop()


def dashboard(
    node: Stream | None = None,
    redis_url: str | None = None,
    interval: float = 1.0,
    pattern: str = "*",
) -> Dashboard:
    """Show a live dashboard in the current Jupyter cell, refreshed every ``interval`` s.

    It runs on the kernel's loop between cells and does its Redis reads in a
    thread: the pipeline keeps running while other cells execute.

    Parameters
    ----------
    node : Stream, optional
        Any node of the graph to show; None shows the system view of ``redis_url``.
    redis_url : str, optional
        The Redis to inspect (default: the node's, else :func:`mdflow.redis_url`).
    interval : float
        Seconds between refreshes.
    pattern : str
        Which streams the system view lists (``SCAN MATCH``).

    Examples
    --------
    >>> board = dashboard(outlet, interval=1.0)   # doctest: +SKIP
    >>> board.stop()                              # doctest: +SKIP
    """
    try:
        import IPython.display  # noqa: F401 - only to say clearly what is missing
    except ImportError as exc:
        msg = "dashboard() needs IPython (a Jupyter notebook); in a script use serve_dashboard()"
        raise ConfigError(msg) from exc
    if interval <= 0:
        msg = f"dashboard: interval must be a positive number of seconds; got {interval!r}"
        raise ConfigError(msg)
    return Dashboard(snapshot_provider(node, redis_url, pattern), interval)


def serve_dashboard(
    node: Stream | None = None,
    port: int = 8799,
    host: str = "127.0.0.1",
    redis_url: str | None = None,
    interval: float = 1.0,
    pattern: str = "*",
    **kwargs: Any,
) -> DashboardServer:
    """Serve the live dashboard page at ``http://host:port/`` (in a thread of its own).

    The page works offline (everything it needs ships in the package), is
    bound to 127.0.0.1 unless ``allow_remote=True`` is given, and never
    carries a password.

    Parameters
    ----------
    node : Stream, optional
        Any node of the graph to show; None shows the system view.
    port : int
        TCP port (0 picks a free one; see ``server.url``).
    host : str
        Interface to bind.
    redis_url : str, optional
        The Redis to inspect.
    interval : float
        Seconds between updates pushed to the page.
    **kwargs
        More :class:`~.web.DashboardServer` options (``allow_remote``, ``title``).

    Examples
    --------
    >>> server = serve_dashboard(port=0)      # doctest: +SKIP
    >>> server.url                            # doctest: +SKIP
    'http://127.0.0.1:40123/'
    >>> server.stop()                         # doctest: +SKIP
    """
    provider = snapshot_provider(node, redis_url, pattern)
    return serve_in_thread(provider, host=host, port=port, interval=interval, **kwargs)
