"""A loopback TCP proxy that misbehaves on command, for network fault tests.

:class:`FaultProxy` sits between mdflow and a Redis server and forwards bytes
both ways until told to do otherwise:

* :meth:`~FaultProxy.stall` / :meth:`~FaultProxy.resume` — stop forwarding in
  both directions, connections stay open and silent (a black-holed route, a
  frozen NAT entry); nothing is lost, it is delivered on ``resume()``.
  :meth:`~FaultProxy.stall_when` stalls the moment a client sends some bytes
  (e.g. ``b"SUBSCRIBE"``), before they are forwarded;
* :meth:`~FaultProxy.reset_all` — abort every connection with a TCP RST
  (``SO_LINGER`` 0) on both sides;
* :meth:`~FaultProxy.half_close` — shut down the write side towards the
  client (it reads EOF) or towards the server (Redis reads EOF and hangs up);
  the other direction keeps flowing until its end closes it. End-of-file is
  forwarded as any proxy does: one end's FIN becomes a shutdown of the
  write side towards the other;
* :meth:`~FaultProxy.refuse` — new connections are reset as soon as they are
  accepted (existing ones are left alone);
* :meth:`~FaultProxy.stats` — accepted / refused / active / reset / half-closed
  connection counts.

The proxy runs its own asyncio loop in a daemon thread; every control may be
called from any other thread (or from a coroutine on another loop) and returns
once it is in effect. It listens on 127.0.0.1 only and forwards only to a
loopback address.

Examples
--------
>>> import redis
>>> from faultproxy import FaultProxy
>>> proxy = FaultProxy("redis://127.0.0.1:6379/0").start()      # doctest: +SKIP
>>> r = redis.Redis.from_url(proxy.url(socket_timeout=1))       # doctest: +SKIP
>>> r.ping()                                                    # doctest: +SKIP
True
>>> proxy.stall()                                               # doctest: +SKIP
>>> r.ping()                                                    # doctest: +SKIP
Traceback (most recent call last):
redis.exceptions.TimeoutError: Timeout reading from socket
>>> proxy.resume()                                              # doctest: +SKIP
>>> proxy.reset_all()  # every open connection gets an RST      # doctest: +SKIP
1
>>> r.ping()           # redis-py connects again                # doctest: +SKIP
True
>>> proxy.stats()                                               # doctest: +SKIP
{'accepted': 2, 'refused': 0, 'reset': 1, 'half_closed': 0, 'upstream_failures': 0, 'active': 1}
>>> proxy.close()                                               # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

__all__ = ["FaultProxy"]

logger = logging.getLogger(__name__)

_CHUNK = 65536
_CONTROL_TIMEOUT = 10.0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _linger_zero(writer: asyncio.StreamWriter) -> None:
    """Make the next close of this socket send RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class _Link:
    """One proxied connection: the client's socket, the server's, and a pump each way."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.client_reader, self.client_writer = client
        self.server_reader, self.server_writer = server
        # write side shut down (EOF sent, or half_close): data for that side is discarded
        self.shut = {"client": False, "server": False}
        self.pumps: list[asyncio.Task[None]] = []
        self.closed = False

    def writer(self, side: str) -> asyncio.StreamWriter:
        return self.client_writer if side == "client" else self.server_writer

    def shut_down(self, side: str) -> bool:
        """Send EOF towards ``side`` (once); False if it was shut already."""
        if self.shut[side] or self.closed:
            return False
        self.shut[side] = True
        writer = self.writer(side)
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
        return True

    def abort(self) -> None:
        """RST both sockets now (no FIN, unsent data dropped)."""
        if self.closed:
            return
        self.closed = True
        for writer in (self.client_writer, self.server_writer):
            _linger_zero(writer)
            writer.transport.abort()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in (self.client_writer, self.server_writer):
            writer.close()


class FaultProxy:
    """A TCP proxy on 127.0.0.1 between a client and a loopback Redis, with fault controls.

    Parameters
    ----------
    target : str or (host, port)
        The Redis server: a ``redis://host:port/db`` URL or an address. Must be loopback.
    port : int
        Port to listen on (0: any free port; see :attr:`port`).
    """

    def __init__(self, target: str | tuple[str, int], port: int = 0) -> None:
        if isinstance(target, str):
            parts = urlsplit(target)
            if parts.scheme != "redis" or not parts.hostname or not parts.port:
                msg = f"FaultProxy: target must be redis://host:port[/db]; got {target!r}"
                raise ValueError(msg)
            self.target = (parts.hostname, parts.port)
            self.db = parts.path.lstrip("/") or "0"
        else:
            self.target, self.db = (target[0], int(target[1])), "0"
        if not _is_loopback(self.target[0]):
            msg = f"FaultProxy: only forwards to loopback addresses; got {self.target[0]!r}"
            raise ValueError(msg)
        self._requested_port = port
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._flowing: asyncio.Event | None = None
        self._refusing = False
        self._trigger: bytes | None = None
        self._counts = dict.fromkeys(
            ("accepted", "refused", "reset", "half_closed", "upstream_failures"), 0
        )

    # --- life cycle ------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        """Start listening (in a thread of its own); returns ``self``."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:  # noqa: BLE001 - re-raised by start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name="faultproxy", daemon=True)
        self._thread.start()
        if not ready.wait(_CONTROL_TIMEOUT):
            msg = "FaultProxy did not start listening"
            raise RuntimeError(msg)
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self._requested_port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        """Stop listening, close every connection, stop the thread. Idempotent."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(_CONTROL_TIMEOUT)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(_CONTROL_TIMEOUT)
        self._thread = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._flowing is not None:
            self._flowing.set()
        for link in list(self._links):
            link.abort()
        tasks = [*self._handlers, *(task for link in self._links for task in link.pumps)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._links.clear()
        await asyncio.sleep(0)  # let the aborted transports finish closing

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- where to connect ------------------------------------------------------------------
    def url(self, **options: Any) -> str:
        """``redis://127.0.0.1:<port>/<db>``, with ``options`` as query arguments
        (redis-py reads e.g. ``socket_timeout=1`` from the URL)."""
        query = f"?{urlencode(options)}" if options else ""
        return f"redis://127.0.0.1:{self.port}/{self.db}{query}"

    # --- controls --------------------------------------------------------------------------
    def stall(self) -> None:
        """Stop forwarding bytes (and EOFs) both ways; connections stay open."""
        self._call(self._set_flowing(False))

    def resume(self) -> None:
        """Forward again, starting with whatever waited during the stall."""
        self._call(self._set_flowing(True))

    def stall_when(self, marker: bytes) -> None:
        """Stall as soon as a client sends ``marker`` (which is held back with the rest)."""
        self._trigger = bytes(marker)

    @property
    def stalled(self) -> bool:
        return self._flowing is not None and not self._flowing.is_set()

    def reset_all(self) -> int:
        """Abort every open connection with RST on both sides; how many there were."""
        return self._call(self._reset_all())

    def half_close(self, towards: Literal["client", "server"] = "client") -> int:
        """Shut down the write side towards the client (or the server) of every connection.

        Returns how many connections were half-closed.
        """
        if towards not in ("client", "server"):
            msg = f"half_close: towards must be 'client' or 'server'; got {towards!r}"
            raise ValueError(msg)
        return self._call(self._half_close(towards))

    def refuse(self, refusing: bool = True) -> None:
        """Reset new connections as soon as they are accepted (``False``: accept again)."""
        self._refusing = bool(refusing)

    def stats(self) -> dict[str, int]:
        """Connection counts: accepted, refused, active, reset, half_closed,
        upstream_failures (the server could not be reached)."""
        return {**self._counts, "active": sum(1 for link in self._links if not link.closed)}

    # --- on the proxy's loop ---------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        loop = self._loop
        if loop is None or self._thread is None:
            coro.close()
            msg = "FaultProxy is not running: call start() first"
            raise RuntimeError(msg)
        if threading.current_thread() is self._thread:
            coro.close()
            msg = "FaultProxy controls must not be called from the proxy's own thread"
            raise RuntimeError(msg)
        return asyncio.run_coroutine_threadsafe(coro, loop).result(_CONTROL_TIMEOUT)

    async def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        self._trigger = None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _reset_all(self) -> int:
        links = [link for link in self._links if not link.closed]
        for link in links:
            link.abort()
        self._counts["reset"] += len(links)
        return len(links)

    async def _half_close(self, towards: str) -> int:
        done = sum(link.shut_down(towards) for link in list(self._links))
        self._counts["half_closed"] += done
        return done

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None:  # (always a task: asyncio.start_server runs each handler in one)
            return
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # close() cancelled it: end normally (asyncio's stream callback calls
            # task.exception(), which raises on a cancelled task)
            writer.transport.abort()
        finally:
            self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self._counts["refused"] += 1
            _linger_zero(writer)
            writer.transport.abort()
            return
        self._counts["accepted"] += 1
        try:
            upstream = await asyncio.wait_for(asyncio.open_connection(*self.target), 5.0)
        except BaseException as exc:
            _linger_zero(writer)
            writer.transport.abort()
            if not isinstance(exc, (OSError, asyncio.TimeoutError)):
                raise  # (cancelled: the proxy is closing)
            self._counts["upstream_failures"] += 1
            logger.warning("FaultProxy: cannot reach %s:%d: %s", *self.target, exc)
            return
        link = _Link((reader, writer), upstream)
        self._links.add(link)
        link.pumps = [
            asyncio.ensure_future(self._pump(link, link.client_reader, "server")),
            asyncio.ensure_future(self._pump(link, link.server_reader, "client")),
        ]
        try:
            await asyncio.gather(*link.pumps, return_exceptions=True)
        finally:
            link.close()
            self._links.discard(link)

    async def _pump(self, link: _Link, source: asyncio.StreamReader, to: str) -> None:
        """Copy ``source`` to side ``to`` until EOF; honour stalls and half-closes."""
        flowing = self._flowing
        assert flowing is not None
        destination = link.writer(to)
        try:
            while not link.closed:
                await flowing.wait()  # stalled: read nothing, so the sender's buffers fill
                data = await source.read(_CHUNK)
                if to == "server" and self._trigger is not None and self._trigger in data:
                    self._trigger = None
                    flowing.clear()  # stall_when: this chunk is the first to be held
                await flowing.wait()  # what was read when the stall began waits too
                if link.closed:
                    return
                if not data:  # EOF from the other end: pass it on
                    link.shut_down(to)
                    return
                if link.shut[to]:
                    continue  # that way is shut (half_close): drop, as a dead peer would
                destination.write(data)
                await destination.drain()
        except (OSError, RuntimeError):
            link.abort()  # one end reset or vanished: so does the other
