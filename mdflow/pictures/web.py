"""A live web dashboard: one page that shows snapshots of running graphs as they change.

The server knows nothing about graphs or Redis. It calls a *snapshot provider* — an
async function returning a JSON-serialisable dict — every ``interval`` seconds while
at least one browser is watching, and sends each snapshot to every watching page over
Server-Sent Events. A snapshot looks like this (every key is optional for the page)::

    {"time": 1764068000.123,                  # unix seconds when taken
     "title": "mdflow · 127.0.0.1:6379/0",     # masked: never a password
     "svg": "<svg ...>...</svg>",              # the topology picture, inline SVG
     "nodes": [{"id": "n1", "name": "from_redis<ticks>", "kind": "outlet",
                "state": "running", "health": "ok", "rate": 812.5,
                "counts": {"read": 100, "acked": 98, "errors": 0}, "text": "812/s · lag 3"}],
     "streams": [{"name": "ticks", "length": 1000, "last_id": "...", "dead_letters": 0,
                  "groups": [{"name": "g", "lag": 3, "pending": 5, "consumers": 1}]}],
     "graphs": [{"id": "host:1234:ab12", "host": "vm", "pid": 1234, "nodes": 5, "age": 0.4}],
     "errors": ["Redis unreachable at redis://127.0.0.1:1"]}

Routes:

* ``GET /`` — the page (HTML, JavaScript and CSS shipped in ``mdflow/pictures/static``;
  nothing is fetched from the internet, the page works offline);
* ``GET /snapshot.json`` — the latest snapshot (taken afresh if older than ``interval``);
* ``GET /events`` — ``text/event-stream``: one ``data:`` line of JSON per snapshot and a
  ``: ping`` comment when nothing was sent for ``ping_interval`` seconds.

The server only reads: every route answers GET and HEAD (HEAD: the headers alone, no
snapshot taken); other methods get 405 with ``Allow: GET, HEAD``, other paths 404. Every
string of every snapshot is sent with its passwords masked, whatever the provider returned.

A provider that raises (or returns something that is not a dict) does not stop the
server: the failure is logged once per distinct message and shown on the page as an
``errors`` entry beside the last good snapshot.

The dashboard has no authentication, so it listens on 127.0.0.1 by default and refuses
other addresses unless ``allow_remote=True``; requests naming another host in their
``Host`` header are refused too (a guard against DNS rebinding).

Examples
--------
From a script (the server runs its own event loop in a daemon thread):

>>> import time
>>> async def provider():
...     return {"time": time.time(), "title": "demo", "nodes": [], "streams": []}
>>> server = serve_in_thread(provider, interval=1.0)  # doctest: +SKIP
>>> server.url  # doctest: +SKIP
'http://127.0.0.1:41523/'
>>> server.stop()  # doctest: +SKIP

On a running asyncio loop (``start`` must be called on that loop):

>>> async def main():
...     server = DashboardServer(provider).start()
...     try:
...         await asyncio.sleep(3600)
...     finally:
...         server.stop()
...         await server.wait_closed()
>>> asyncio.run(main())  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import html
import importlib.resources
import ipaddress
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web

from ..reservoir import mask_text
from .web_routes import STATIC, Client, routes, to_json

__all__ = [
    "HEADLESS_CHROMIUM_FLAGS",
    "DashboardServer",
    "Provider",
    "is_loopback",
    "serve_in_thread",
]

logger = logging.getLogger(__name__)

Provider = Callable[[], Awaitable[dict[str, Any]]]

#: Flags for photographing or testing the page in headless Chromium (add ``--window-size``
#: and a fresh ``--user-data-dir``). Without the background-networking ones, Chromium on a
#: closed network keeps trying to reach Google's hosts.
HEADLESS_CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
"""An async function returning a snapshot dict; it must not block the event loop."""

# Only this page's own files: scripts from 'self'; styles may be inline because the
# topology SVG (inserted as markup) may carry style attributes or a <style> element.
_LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}
_MAX_ERROR_TEXT = 300
_MAX_LOGGED_MESSAGES = 256


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 possibly in brackets) is this machine.

    Only names and addresses that are loopback for sure count: ``0.0.0.0``, ``::``,
    an empty host (all interfaces) and names that merely resolve to this machine do not.

    Examples
    --------
    >>> [is_loopback(h) for h in ("127.0.0.1", "localhost", "[::1]", "0.0.0.0", "", "10.0.0.5")]
    [True, True, True, False, False, False]
    """
    host = host.strip().lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_is_loopback = is_loopback  # the name tests/pictures/test_web.py uses


def _read_static() -> dict[str, bytes]:
    """The page's files, read from the package (they are package data)."""
    folder = importlib.resources.files("mdflow.pictures") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC}


class DashboardServer:
    """A web server that shows live snapshots from ``provider`` on one page.

    Parameters
    ----------
    provider : Callable[[], Awaitable[dict]]
        Async function returning a snapshot (see the module docstring). It is called
        on the server's loop, at most once at a time, every ``interval`` seconds while
        a page is connected (and once at start).
    host : str
        Address to listen on; loopback (127.0.0.1) by default.
    port : int
        Port to listen on; 0 picks a free one (read it back from :attr:`port`).
    interval : float
        Seconds between snapshots.
    title : str, optional
        Title of the page; by default the snapshot's own ``title``.
    allow_remote : bool
        Allow a ``host`` that is not a loopback address. The dashboard has no
        authentication: anybody who can reach the port sees the snapshots.
    ping_interval : float
        Seconds of silence after which an event stream gets a ``: ping`` comment.
    max_queue : int
        Snapshots kept for a slow page; older ones are dropped.
    provider_timeout : float
        Seconds a provider call may take before it counts as failed.

    Raises
    ------
    ValueError
        If ``host`` is not a loopback address and ``allow_remote`` is false, or a
        number is out of range.

    Examples
    --------
    >>> import time
    >>> async def provider():
    ...     return {"time": time.time(), "nodes": []}
    >>> async def main():
    ...     server = DashboardServer(provider, interval=0.5).start()
    ...     print(server.url)
    ...     server.stop()
    ...     await server.wait_closed()
    >>> asyncio.run(main())  # doctest: +SKIP
    http://127.0.0.1:40321/
    >>> DashboardServer(provider, host="0.0.0.0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: host '0.0.0.0' is not a loopback address: pass allow_remote=True ...
    """

    def __init__(
        self,
        provider: Provider,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        interval: float = 1.0,
        title: str | None = None,
        allow_remote: bool = False,
        ping_interval: float = 15.0,
        max_queue: int = 8,
        provider_timeout: float = 30.0,
    ) -> None:
        if not allow_remote and not is_loopback(host):
            raise ValueError(
                f"host {host!r} is not a loopback address: pass allow_remote=True to serve "
                "other machines (the dashboard has no authentication)"
            )
        if not (interval > 0 and ping_interval > 0 and provider_timeout > 0):
            raise ValueError("interval, ping_interval and provider_timeout must be positive")
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        self.provider = provider
        self.host = host
        self.interval = float(interval)
        self.title = title
        self.allow_remote = allow_remote
        self.ping_interval = float(ping_interval)
        self.max_queue = max_queue
        self.provider_timeout = float(provider_timeout)
        self._port = port
        self._files = _read_static()
        self._page = self._render_page()

        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: tornado.httpserver.HTTPServer | None = None
        self._clients: set[Client] = set()
        self._wake: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._closing_task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[str] | None = None
        self._stopping = False
        self._stop_done = threading.Event()
        self._thread: threading.Thread | None = None

        self._latest: dict[str, Any] | None = None
        self._latest_json: str | None = None
        self._latest_at = -math.inf  # monotonic time of the latest provider call
        self._last_good: dict[str, Any] | None = None
        self._logged: set[str] = set()

    # -- public -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port listened on (the chosen one once started with ``port=0``)."""
        return self._port

    @property
    def url(self) -> str:
        """The page's address, e.g. ``http://127.0.0.1:41523/``."""
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self._port}/"

    @property
    def clients(self) -> int:
        """How many pages are connected to the event stream."""
        return len(self._clients)

    @property
    def latest(self) -> dict[str, Any] | None:
        """The latest snapshot sent to pages (None before the first)."""
        return self._latest

    def start(self) -> DashboardServer:
        """Listen and start taking snapshots; call this on the running asyncio loop.

        Returns
        -------
        DashboardServer
            ``self``, so that ``server = DashboardServer(provider).start()`` works.

        Raises
        ------
        RuntimeError
            If no asyncio loop runs in this thread (use :func:`serve_in_thread`) or
            the server was started before.
        OSError
            If the address cannot be bound.

        Examples
        --------
        >>> async def main(provider):
        ...     server = DashboardServer(provider).start()
        ...     await asyncio.sleep(10)
        ...     server.stop()
        ...     await server.wait_closed()
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "DashboardServer.start() must be called on a running asyncio loop; "
                "use serve_in_thread() from plain synchronous code"
            ) from None
        if self._loop is not None:
            raise RuntimeError("this DashboardServer was started before")
        sockets = tornado.netutil.bind_sockets(self._port, address=self.host)
        self._loop = loop
        self._port = sockets[0].getsockname()[1]
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        app = tornado.web.Application(
            routes(self),
            log_function=self._log_request,
            compress_response=False,  # compression would buffer the event stream
        )
        self._http = tornado.httpserver.HTTPServer(
            app, max_buffer_size=1 << 20, idle_connection_timeout=120
        )
        self._http.add_sockets(sockets)
        self._poll_task = loop.create_task(self._poll(), name=f"mdflow-dashboard:{self._port}")
        logger.info("dashboard at %s", self.url)
        return self

    def stop(self) -> None:
        """Stop listening (the port is free when this returns) and end every page's stream.

        Safe to call more than once, and from any thread: from another thread it waits
        until the server's loop has stopped listening (and, for a server made by
        :func:`serve_in_thread`, until its thread has ended).

        Examples
        --------
        >>> server = serve_in_thread(provider)  # doctest: +SKIP
        >>> server.stop()  # doctest: +SKIP
        """
        loop = self._loop
        if loop is None:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._stop_on_loop()
            return
        try:
            loop.call_soon_threadsafe(self._stop_on_loop)
        except RuntimeError:  # the loop is closed: nothing is left to stop
            return
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=15)
            if self._thread.is_alive():
                logger.warning("dashboard thread did not end within 15 s")
        elif not self._stop_done.wait(timeout=15):
            logger.warning("dashboard loop did not stop the server within 15 s")

    async def wait_closed(self) -> None:
        """Wait until :meth:`stop` has closed every connection and the polling task.

        Examples
        --------
        >>> server.stop()  # doctest: +SKIP
        >>> await server.wait_closed()  # doctest: +SKIP
        """
        if self._stopped is None:
            return
        await self._stopped.wait()
        if self._closing_task is not None:
            await asyncio.shield(self._closing_task)

    def __enter__(self) -> DashboardServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopping else "running" if self._loop else "new"
        return f"<DashboardServer {self.url} {state}, {len(self._clients)} client(s)>"

    # -- snapshots ----------------------------------------------------------------------

    async def _poll(self) -> None:
        """Take a snapshot at start, then every ``interval`` s while a page is connected."""
        assert self._wake is not None
        try:
            await self._take()
            while not self._stopping:
                if not self._clients:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                delay = self._latest_at + self.interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self._clients and not self._stopping:
                    await self._take()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must be seen, not end polling silently
            logger.exception("dashboard polling ended by an unexpected error")

    async def _fresh_json(self) -> str:
        """The latest snapshot as JSON, taken afresh when older than ``interval``."""
        if self._latest_json is not None and (
            time.monotonic() - self._latest_at < self.interval or self._stopping
        ):
            return self._latest_json
        return await self._take()

    async def _take(self) -> str:
        """Call the provider (one call at a time, shared by all callers) and fan out."""
        if self._inflight is None:
            inflight = asyncio.ensure_future(self._call_provider())
            self._inflight = inflight

            def forget(future: asyncio.Future[str]) -> None:
                if self._inflight is future:
                    self._inflight = None

            inflight.add_done_callback(forget)
        return await asyncio.shield(self._inflight)

    async def _call_provider(self) -> str:
        self._latest_at = time.monotonic()
        try:
            result = await asyncio.wait_for(self.provider(), self.provider_timeout)
            if not isinstance(result, dict):
                raise TypeError(f"snapshot provider returned {type(result).__name__}, not a dict")
            snapshot = dict(result)
            snapshot.setdefault("time", time.time())
            data = to_json(snapshot)
            self._last_good = snapshot
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the provider's failure is shown, not fatal
            snapshot = self._failure_snapshot(exc)
            data = to_json(snapshot)
        self._latest, self._latest_json = snapshot, data
        for client in list(self._clients):
            client.push(data)
        return data

    def _failure_snapshot(self, exc: BaseException) -> dict[str, Any]:
        """The last good snapshot (its own time, so the page shows its age) plus the error."""
        if isinstance(exc, asyncio.TimeoutError):
            text = f"snapshot provider took longer than {self.provider_timeout:g} s"
        else:
            text = f"snapshot provider failed: {type(exc).__name__}: {exc}"
        if len(text) > _MAX_ERROR_TEXT:
            text = text[: _MAX_ERROR_TEXT - 1] + "…"
        if text not in self._logged:
            if len(self._logged) >= _MAX_LOGGED_MESSAGES:
                self._logged.clear()
            self._logged.add(text)
            logger.warning("dashboard: %s", text, exc_info=exc)
        base = self._last_good or {
            "time": time.time(),
            "title": self.title or "",
            "svg": "",
            "nodes": [],
            "streams": [],
            "graphs": [],
            "errors": [],
        }
        errors = base.get("errors")
        errors = [str(e) for e in errors] if isinstance(errors, list) else []
        return {**base, "errors": [*errors, text]}

    # -- clients ------------------------------------------------------------------------

    def _connect(self) -> Client:
        client = Client(self.max_queue)
        self._clients.add(client)
        if self._wake is not None:
            self._wake.set()
        return client

    def _disconnect(self, client: Client) -> None:
        self._clients.discard(client)
        if client.dropped:
            logger.debug("a slow page missed %d snapshot(s)", client.dropped)

    # -- stopping -----------------------------------------------------------------------

    def _stop_on_loop(self) -> None:
        if self._stopping:
            self._stop_done.set()
            return
        self._stopping = True
        assert self._loop is not None and self._stopped is not None
        if self._http is not None:
            self._http.stop()  # closes the listening sockets: the port is free
        if self._poll_task is not None:
            self._poll_task.cancel()
        if self._inflight is not None:
            self._inflight.cancel()
        for client in list(self._clients):
            client.close()
        self._closing_task = self._loop.create_task(self._close_connections())
        self._stopped.set()
        self._stop_done.set()
        logger.info("dashboard at %s stopped", self.url)

    async def _close_connections(self) -> None:
        tasks = [t for t in (self._poll_task, self._inflight) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        # Let event streams write their last chunk, then close what is still open.
        await asyncio.sleep(0.05)
        if self._http is not None:
            try:
                await asyncio.wait_for(self._http.close_all_connections(), 5)
            except asyncio.TimeoutError:
                logger.warning("dashboard connections did not close within 5 s")

    # -- pages --------------------------------------------------------------------------

    def _render_page(self) -> bytes:
        page = self._files["dashboard.html"].decode("utf-8")
        title = html.escape(mask_text(self.title or ""), quote=True)
        page = page.replace("{{title}}", title or "mdflow dashboard")
        page = page.replace("{{data_title}}", title)
        page = page.replace("{{interval}}", f"{self.interval:g}")
        return page.encode("utf-8")

    def _check_host(self, handler: tornado.web.RequestHandler) -> bool:
        """Refuse a Host header naming another machine (DNS rebinding) unless remote is allowed."""
        if self.allow_remote:
            return True
        name = handler.request.host_name
        return is_loopback(name) or name == self.host.lower()

    @staticmethod
    def _log_request(handler: tornado.web.RequestHandler) -> None:
        status = handler.get_status()
        level = logging.WARNING if status >= 500 else logging.DEBUG
        logger.log(
            level,
            "%d %s %s %.1f ms",
            status,
            handler.request.method,
            handler.request.uri,
            1000.0 * handler.request.request_time(),
        )


def serve_in_thread(provider: Provider, **kwargs: Any) -> DashboardServer:
    """Start a :class:`DashboardServer` on an event loop of its own, in a daemon thread.

    For scripts and the command line, which have no asyncio loop of their own. The
    provider runs on the server's loop (in that thread), so it must not use clients
    bound to another loop.

    Parameters
    ----------
    provider : Callable[[], Awaitable[dict]]
        Async function returning a snapshot.
    **kwargs
        Keyword arguments of :class:`DashboardServer` (``host``, ``port``,
        ``interval``, ``title``, ``allow_remote``, ...).

    Returns
    -------
    DashboardServer
        The started server; :meth:`DashboardServer.stop` ends the thread too.

    Raises
    ------
    ValueError
        For arguments :class:`DashboardServer` refuses.
    OSError
        If the address cannot be bound.

    Examples
    --------
    >>> import time
    >>> async def provider():
    ...     return {"time": time.time(), "title": "demo"}
    >>> with serve_in_thread(provider, port=8050) as server:  # doctest: +SKIP
    ...     input(f"dashboard at {server.url}; press Enter to stop")
    """
    server = DashboardServer(provider, **kwargs)
    ready = threading.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        try:
            server.start()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)
            return
        finally:
            ready.set()
        await server.wait_closed()

    def run() -> None:
        try:
            asyncio.run(main())
        except Exception:  # the thread's last word goes to the log
            logger.exception("dashboard thread ended by an unexpected error")
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="mdflow-dashboard", daemon=True)
    server._thread = thread
    thread.start()
    if not ready.wait(timeout=30):
        raise RuntimeError("the dashboard thread did not start within 30 s")
    if failure:
        thread.join(timeout=5)
        raise failure[0]
    return server
