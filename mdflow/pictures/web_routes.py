"""The dashboard server's HTTP side: its routes, the page's files and one connected page.

:class:`~.web.DashboardServer` owns the snapshots; this module answers
requests for them: ``/`` (the page), ``/static/<file>``, ``/snapshot.json``
and ``/events`` (server-sent events), every answer with security headers. Only GET
and HEAD are answered (405 and ``Allow: GET, HEAD`` for the rest; 404 for other paths),
and no password leaves in a snapshot (:func:`to_json` masks every string).

Examples
--------
>>> to_json({"rate": float("nan"), "n": 1})
'{"rate": null, "n": 1}'
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
from typing import Any, Protocol

import tornado.web
from tornado.iostream import StreamClosedError

from ..reservoir import mask_text

__all__ = ["CONTENT_SECURITY_POLICY", "STATIC", "Client", "Serving", "routes", "to_json"]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

STATIC = {
    "dashboard.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


class Serving(Protocol):
    """What the handlers need of the server (see :class:`~.web.DashboardServer`)."""

    interval: float
    ping_interval: float
    _page: bytes
    _files: dict[str, bytes]
    _latest_json: str | None

    def _check_host(self, handler: tornado.web.RequestHandler) -> bool: ...

    async def _fresh_json(self) -> str: ...

    def _connect(self) -> Client: ...

    def _disconnect(self, client: Client) -> None: ...


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _masked(value: Any) -> Any:
    """``value`` with every password in every string (keys too) masked."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {_masked(key): _masked(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(item) for item in value]
    return value


def to_json(snapshot: dict[str, Any]) -> str:
    """One line of JSON (``json.dumps`` escapes newlines inside strings), passwords masked.

    Everything a page receives passes here: whatever a provider returns (a stream or
    consumer name, an error text, a status another process published), no password
    in it reaches the page.
    """
    snapshot = _masked(snapshot)
    try:
        return json.dumps(snapshot, allow_nan=False, ensure_ascii=False)
    except ValueError:
        return json.dumps(_finite(snapshot), allow_nan=False, ensure_ascii=False)


class Client:
    """One connected page: a bounded queue of JSON texts; the oldest go first when full."""

    def __init__(self, maxlen: int) -> None:
        self.queue: collections.deque[str] = collections.deque(maxlen=maxlen)
        self.event = asyncio.Event()
        self.closed = False
        self.dropped = 0

    def push(self, data: str) -> None:
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append(data)
        self.event.set()

    def close(self) -> None:
        self.closed = True
        self.event.set()


class _Handler(tornado.web.RequestHandler):
    # Read-only: nothing served here changes anything (in Redis or in the server), so only
    # GET and HEAD are answered; tornado refuses the other methods with 405 before prepare()
    # and the Allow header says what is allowed (RFC 9110).
    SUPPORTED_METHODS = ("GET", "HEAD")
    server: Serving

    def initialize(self, server: Serving) -> None:
        self.server = server

    def set_default_headers(self) -> None:
        self.clear_header("Server")
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cross-Origin-Resource-Policy", "same-origin")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Allow", "GET, HEAD")

    def prepare(self) -> None:
        if not self.server._check_host(self):
            raise tornado.web.HTTPError(403, reason="Host not allowed")


class _PageHandler(_Handler):
    def get(self) -> None:
        self.set_header("Content-Type", STATIC["dashboard.html"])
        self.finish(self.server._page)

    head = get  # tornado sends the headers (and Content-Length) without the body


class _StaticHandler(_Handler):
    def get(self, name: str) -> None:
        self.set_header("Content-Type", STATIC[name])
        self.finish(self.server._files[name])

    head = get


class _SnapshotHandler(_Handler):
    async def get(self) -> None:
        data = await self.server._fresh_json()
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(data)

    def head(self) -> None:  # the headers only: no snapshot is taken for them
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish()


class _EventsHandler(_Handler):
    """Server-Sent Events: the latest snapshot at once, then every new one."""

    client: Client | None = None

    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")
        server = self.server
        client = self.client = server._connect()
        try:
            self.write(f"retry: {max(1000, int(server.interval * 2000))}\n\n")
            if server._latest_json is not None:
                self.write(f"data: {server._latest_json}\n\n")
            await self.flush()
            while not client.closed:
                try:
                    await asyncio.wait_for(client.event.wait(), server.ping_interval)
                except asyncio.TimeoutError:
                    self.write(": ping\n\n")
                    await self.flush()
                    continue
                client.event.clear()
                if client.closed:
                    break
                while client.queue:
                    self.write(f"data: {client.queue.popleft()}\n\n")
                await self.flush()
        except StreamClosedError:
            pass  # the page went away while we wrote: nothing to report
        finally:
            server._disconnect(client)

    def head(self) -> None:  # the headers only: no page is connected by them
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish()

    def on_connection_close(self) -> None:
        if self.client is not None:
            self.client.close()


class _NotFoundHandler(_Handler):
    """Any other path: 404 (405 for other methods), with the same headers and Host check."""

    def get(self, path: str) -> None:
        raise tornado.web.HTTPError(404)

    head = get


def routes(server: Serving) -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]:
    """The URL table of one server."""
    args = {"server": server}
    return [
        (r"/", _PageHandler, args),
        (r"/static/(dashboard\.js|dashboard\.css)", _StaticHandler, args),
        (r"/snapshot\.json", _SnapshotHandler, args),
        (r"/events", _EventsHandler, args),
        (r"(.*)", _NotFoundHandler, args),
    ]
