"""``Stream.collector``: a source node that runs a :class:`Collector` and keeps it alive.

Supervision lives in the node's own run loop (a streamz ``Source`` whose ``run()``
raised cannot be restarted). A session is connect -> subscribe -> read; a heartbeat
wakes the supervisor every ``heartbeat_interval`` s to stamp the heartbeat and check
for data silence. A connection failure, an exception from ``messages()``, the feed
closing, or ``max_silence`` s without data end the session: disconnect, wait a
jittered exponential delay (redis-py's ``EqualJitterBackoff``: the n-th delay lies in
``[c/2, c]`` with ``c = min(max, initial * 2**(n-1))``), reconnect. After
``max_restarts`` restarts in a row without data the state is ``FAILED`` until
:meth:`collector.restart` (or a ``CollectorManager``). Messages ``parse`` rejects are
counted and skipped; they never restart the feed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable
from datetime import datetime, timezone
from typing import Any, ClassVar

from redis.backoff import EqualJitterBackoff
from streamz import Stream
from streamz.sources import Source
from websockets.exceptions import WebSocketException

from ..checks import check_flag, check_node_keywords, check_seconds
from ..errors import ConfigError, describe
from ..nodes import node_name, on_current_loop
from ..nodes.lifecycle import source_started
from ..reservoir import CONNECTION_ERRORS, mask_text
from .collector import (
    Collector,
    CollectorState,
    DataSilence,
    FeedClosed,
    FeedError,
)

__all__ = ["collector"]

logger = logging.getLogger(__name__)

# Failures that are "the network did it": logged without a traceback.
_EXPECTED = (*CONNECTION_ERRORS, FeedError, WebSocketException, TimeoutError)
_HISTORY = 32


class _Interrupt(Exception):
    """Unwinds a session when the node is stopped or asked to restart (never escapes)."""

    def __init__(self, restart: bool):
        super().__init__("restart requested" if restart else "stop requested")
        self.restart = restart


_Stamp = tuple[float, float]  # (time.time(), time.monotonic()) of one event


def _now() -> _Stamp:
    return (time.time(), time.monotonic())


def _iso(stamp: _Stamp | None) -> str | None:
    return None if stamp is None else datetime.fromtimestamp(stamp[0], tz=timezone.utc).isoformat()


def _age(stamp: _Stamp | None) -> float | None:
    return None if stamp is None else round(time.monotonic() - stamp[1], 3)


@Stream.register_api(staticmethod)
class collector(Source):
    """Source node: run a :class:`~mdflow.collectors.Collector`, emit what it parses, keep it alive.

    Each parsed point (or each item of a parsed list) is emitted downstream
    and awaited, so a slow graph slows the collector. See the module docs
    for the supervision rules and :meth:`get_status` for what it reports.

    Parameters
    ----------
    collector : Collector
        The feed to run.
    start : bool
        Start at once.
    heartbeat_interval : float
        Seconds between heartbeats (and data-silence checks).
    max_silence : float
        Seconds without data after which the connection is considered dead.
    auto_restart : bool
        Reconnect after a failure. If False the node stops in state ``ERROR``
        at the first connection-level failure; silence only marks it ``UNHEALTHY``.
    max_restarts : int
        Restarts in a row (without data in between) before giving up (``FAILED``).
    backoff : (float, float)
        ``(initial, max)`` seconds: ceiling of the first delay, and of all delays.
    connect_timeout : float
        Limit for ``connect``, ``subscribe`` and ``disconnect`` each.
    **kwargs
        Passed to :class:`streamz.Stream` (``stream_name``, ``loop``, ``asynchronous``).

    Examples
    --------
    >>> from streamz import Stream
    >>> from mdflow.collectors import SimulatedExchange
    >>> ex = SimulatedExchange(["BTC-USDT"])
    >>> url = ex.start_in_thread()                                       # doctest: +SKIP
    >>> node = Stream.collector(ex.collector(), max_silence=5)           # doctest: +SKIP
    >>> ticks = node.filter(lambda p: p.data_type == "ticker")          # doctest: +SKIP
    >>> out = ticks.map(lambda p: p.data["price"]).sink_to_list()        # doctest: +SKIP
    >>> node.start()                                                     # doctest: +SKIP
    >>> node.get_status()["status"]                                      # doctest: +SKIP
    'running'
    """

    _graphviz_shape = "doubleoctagon"
    str_list: ClassVar[list[str]] = ["exchange", "symbols"]
    # Set by streamz's Source.__init__ (untyped) and by this node's start/stop.
    stopped: bool
    started: bool

    def __init__(
        self,
        collector: Collector,
        start: bool = False,
        heartbeat_interval: float = 1.0,
        max_silence: float = 60.0,
        auto_restart: bool = True,
        max_restarts: int = 5,
        backoff: tuple[float, float] = (1.0, 60.0),
        connect_timeout: float = 10.0,
        **kwargs: Any,
    ) -> None:
        if not isinstance(collector, Collector):
            msg = (
                "collector: the first argument must be a mdflow Collector (subclass "
                "mdflow.collectors.Collector, or use WebSocketCollector / PollingCollector); "
                f"got {describe(collector)}"
            )
            raise ConfigError(msg)
        where = "collector"
        self.heartbeat_interval = check_seconds(heartbeat_interval, where, "heartbeat_interval")
        self.max_silence = check_seconds(max_silence, where, "max_silence")
        self.connect_timeout = check_seconds(connect_timeout, where, "connect_timeout")
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            msg = f"collector: max_restarts must be an int >= 0; got {describe(max_restarts)}"
            raise ConfigError(msg)
        if not isinstance(backoff, (tuple, list)) or len(backoff) != 2:
            msg = (
                f"collector: backoff must be a pair (initial, max) of seconds; "
                f"got {describe(backoff)}"
            )
            raise ConfigError(msg)
        initial, cap = (check_seconds(v, where, "backoff") for v in backoff)
        if initial > cap:
            msg = f"collector: backoff initial ({initial:g}s) must not exceed max ({cap:g}s)"
            raise ConfigError(msg)
        self.collector = collector
        self.auto_restart = check_flag(auto_restart, where, "auto_restart")
        self.max_restarts = max_restarts
        self.backoff = (initial, cap)
        self._backoff = EqualJitterBackoff(cap=cap, base=initial)
        self._label = collector.name

        self._state = CollectorState.STOPPED
        self._should_run = False
        self._generation = 0
        self._task: asyncio.Future[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None  # made by run(), before any session
        self._restart_requested = False
        self._failures = 0  # consecutive connection-level failures
        self._emitting = False
        self._counts = dict.fromkeys(
            (
                "messages_received",
                "messages_processed",
                "points_emitted",
                "parse_errors",
                "emit_errors",
                "connection_errors",
                "silences",
                "errors",
                "restarts",
            ),
            0,
        )
        self._delays: deque[float] = deque(maxlen=_HISTORY)
        self._last_delay: float | None = None
        self._last_error: str | None = None
        # when the loop started, last beat, connection, data, message, error, restart
        self._started: _Stamp | None = None
        self._heartbeat: _Stamp | None = None
        self._connected: _Stamp | None = None
        self._data: _Stamp | None = None
        self._last_message: _Stamp | None = None
        self._last_error_at: _Stamp | None = None
        self._last_restart: _Stamp | None = None
        # monotonic times the silence clock starts from (session start, end of a slow emit)
        self._session_mono: float | None = None
        self._emit_done_mono: float | None = None
        check_node_keywords(self, kwargs)
        super().__init__(start=False, **on_current_loop(kwargs))
        if check_flag(start, type(self).__name__, "start"):
            self.start()

    # --- public surface ---------------------------------------------------------------------
    @property
    def exchange(self) -> str:
        return self.collector.exchange

    @property
    def symbols(self) -> list[str]:
        return list(self.collector.symbols)

    @property
    def should_be_running(self) -> bool:
        """True between :meth:`start` (or :meth:`restart`) and :meth:`stop`, even if FAILED."""
        return self._should_run

    @property
    def state(self) -> CollectorState:
        """The current :class:`CollectorState`."""
        return self._state

    def start(self) -> None:
        """Start the supervised loop (no-op if it runs). Thread-safe."""
        if not self.stopped:
            return
        self.stopped = False
        self.started = True
        self._should_run = True
        self._generation += 1
        self._state = CollectorState.STARTING
        source_started(self)
        self.loop.add_callback(self._launch, self._generation)

    def stop(self) -> None:
        """Disconnect and end the loop; prompt even mid-backoff. Thread-safe."""
        self._should_run = False
        if self.stopped:  # the loop ended (FAILED / ERROR), never ran, or is already stopping
            if self._state is not CollectorState.STOPPING:
                self._state = CollectorState.STOPPED
            return
        self.stopped = True
        self._state = CollectorState.STOPPING
        self.loop.add_callback(self._signal)

    def restart(self) -> None:
        """Reconnect now, forgetting past failures; start again if the loop ended. Thread-safe."""
        if self.stopped:
            self.start()
            return
        self._should_run = True
        self._restart_requested = True
        self.loop.add_callback(self._signal)

    async def emit_and_wait(self, x: Any) -> None:
        """Emit ``x`` and wait for the graph's futures (backpressure).

        The wait is shielded: stopping the node does not cancel writes already
        handed to downstream nodes (e.g. a pending ``to_redis`` XADD).
        """
        self._emitting = True
        try:
            futures = self._emit(x)
            if futures:
                gathered = asyncio.gather(*futures)
                try:
                    await asyncio.shield(gathered)
                except asyncio.CancelledError:
                    gathered.add_done_callback(self._late_result)
                    raise
            self._counts["points_emitted"] += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._counts["emit_errors"] += 1
            self._record_error(exc)
            logger.error(
                "%s: downstream raised while handling %.200r", node_name(self), x, exc_info=exc
            )
        finally:
            self._emitting = False
            self._emit_done_mono = time.monotonic()

    def _late_result(self, gathered: asyncio.Future[list[Any]]) -> None:
        """Report downstream work that failed after the node stopped waiting for it."""
        exc = None if gathered.cancelled() else gathered.exception()
        if exc is not None:
            self._counts["emit_errors"] += 1
            self._record_error(exc)
            logger.error(
                "%s: downstream failed after the collector stopped", node_name(self), exc_info=exc
            )

    # --- supervision ------------------------------------------------------------------------
    def _launch(self, generation: int) -> None:
        if generation != self._generation:
            return  # started again before this callback ran: that launch wins
        previous = self._task  # run() notices a stop that came before it got going
        self._task = asyncio.ensure_future(self.run(generation, previous))

    def _signal(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _rearm(self) -> None:
        """Replace a wake-up future that fired without a stop/restart (a late signal)."""
        if self._wakeup is None or self._wakeup.done():
            self._wakeup = asyncio.get_running_loop().create_future()

    def _wakeup_future(self) -> asyncio.Future[None]:
        """The future :meth:`stop` / :meth:`restart` resolve to wake the running loop."""
        if self._wakeup is None:  # run() makes it before the first session
            msg = f"{node_name(self)}: the supervised loop is not running (call start())"
            raise RuntimeError(msg)
        return self._wakeup

    def _current(self, generation: int) -> bool:
        return not self.stopped and generation == self._generation

    def _check(self, generation: int) -> None:
        """Raise :class:`_Interrupt` if the node was stopped or a restart was asked for."""
        if not self._current(generation):
            raise _Interrupt(restart=False)
        if self._restart_requested:
            raise _Interrupt(restart=True)
        self._rearm()

    def _beat(self) -> None:
        self._heartbeat = _now()

    async def run(
        self, generation: int | None = None, previous: asyncio.Future[None] | None = None
    ) -> None:
        """The supervised loop (started by :meth:`start`; do not call directly)."""
        generation = self._generation if generation is None else generation
        if previous is not None and not previous.done():
            await asyncio.wait({previous})  # the last loop must have disconnected first
        if not self._current(generation):
            if generation == self._generation:
                self._state = CollectorState.STOPPED
            return
        self._wakeup = None
        self._rearm()
        self._failures = 0
        self._restart_requested = False
        self._started = _now()
        self._beat()
        try:
            while self._current(generation):
                try:
                    await self._session(generation)
                except _Interrupt as interrupt:
                    if not interrupt.restart:
                        break
                    self._restarted(manual=True)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - supervision: record, back off, retry
                    if not self._current(generation) or not await self._recover(exc, generation):
                        break
        finally:
            self._session_mono = None
            self._connected = None
            if generation == self._generation:
                self._started = None
                ended = (CollectorState.FAILED, CollectorState.ERROR)
                if self.stopped and self._state not in ended:
                    self._state = CollectorState.STOPPED
                    logger.info("%s: stopped", node_name(self))

    async def _session(self, generation: int) -> None:
        """Connect, subscribe, read until something goes wrong; always disconnect."""
        try:
            await self._guarded(self.collector.connect(), "connect", generation)
            subscription = self.collector.subscribe(self.symbols, list(self.collector.data_types))
            await self._guarded(subscription, "subscribe", generation)
            self._check(generation)
            self._connected = _now()
            self._session_mono = time.monotonic()
            self._state = CollectorState.RUNNING
            logger.info(
                "%s: connected, subscribed to %s",
                node_name(self),
                ", ".join(self.collector.symbols),
            )
            reader = asyncio.ensure_future(self._read())
            try:
                await self._monitor(reader, generation)
            finally:
                if not reader.done():
                    reader.cancel()
                await asyncio.wait({reader})
                if not reader.cancelled():
                    reader.exception()  # retrieved here; _monitor re-raised it if it mattered
        finally:
            self._session_mono = None
            self._connected = None
            await self._disconnect()

    async def _guarded(self, coro: Awaitable[None], what: str, generation: int) -> None:
        """Await ``coro`` with a deadline, beating the heart and obeying stop/restart meanwhile."""
        task = asyncio.ensure_future(coro)
        deadline = time.monotonic() + self.connect_timeout
        try:
            while not task.done():
                left = deadline - time.monotonic()
                if left <= 0:
                    msg = f"{what} took longer than {self.connect_timeout:g}s (connect_timeout)"
                    raise TimeoutError(msg)
                await asyncio.wait(
                    {task, self._wakeup_future()},
                    timeout=min(self.heartbeat_interval, left),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                self._beat()
                if not task.done():
                    self._check(generation)
            task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
            if task.done() and not task.cancelled():
                task.exception()

    async def _monitor(self, reader: asyncio.Future[None], generation: int) -> None:
        """Heartbeat and silence watch while ``reader`` runs; raise when the session must end."""
        while True:
            left = self.max_silence - self._silence()
            timeout = (
                self.heartbeat_interval if left <= 0 else min(self.heartbeat_interval, left + 0.005)
            )
            await asyncio.wait(
                {reader, self._wakeup_future()},
                timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            self._beat()
            self._check(generation)
            if reader.done():
                exc = None if reader.cancelled() else reader.exception()
                if exc is not None:
                    raise exc
                raise FeedClosed("messages() ended: the feed closed the connection")
            silent = self._silence()
            if silent >= self.max_silence:
                if self._state is not CollectorState.UNHEALTHY:
                    self._counts["silences"] += 1
                    logger.warning(
                        "%s: no data for %.1fs (max_silence=%gs)",
                        node_name(self),
                        silent,
                        self.max_silence,
                    )
                self._state = CollectorState.UNHEALTHY
                if self.auto_restart:
                    msg = f"no data for {silent:.1f}s (max_silence={self.max_silence:g}s)"
                    raise DataSilence(msg)
            elif self._state is CollectorState.UNHEALTHY:
                self._state = CollectorState.RUNNING
                logger.info("%s: data flows again", node_name(self))

    def _silence(self) -> float:
        if self._emitting or self._session_mono is None:
            return 0.0  # waiting on a slow graph is not a silent feed
        marks = [self._session_mono, self._emit_done_mono, self._data[1] if self._data else None]
        return time.monotonic() - max(m for m in marks if m is not None)

    async def _recover(self, exc: BaseException, generation: int) -> bool:
        """Record a connection-level failure; back off. False when the loop must end."""
        self._record_error(exc)
        self._counts["connection_errors"] += 1
        self._failures += 1
        name, why = node_name(self), self._last_error
        trace = None if isinstance(exc, _EXPECTED) else exc
        if not self.auto_restart:
            self._state = CollectorState.ERROR
            self.stopped = True
            logger.error(
                "%s: %s; auto_restart is off, collector stopped (ERROR)", name, why, exc_info=trace
            )
            return False
        if self._failures > self.max_restarts:
            self._state = CollectorState.FAILED
            self.stopped = True
            logger.error(
                "%s: giving up after %d restarts in a row (FAILED); last error: %s",
                name,
                self.max_restarts,
                why,
                exc_info=trace,
            )
            return False
        self._state = CollectorState.RESTARTING
        delay = self._backoff.compute(self._failures - 1)
        self._last_delay = delay
        self._delays.append(round(delay, 4))
        logger.warning(
            "%s: %s; restart %d/%d in %.2fs",
            name,
            why,
            self._failures,
            self.max_restarts,
            delay,
            exc_info=trace,
        )
        end = time.monotonic() + delay
        try:
            while (left := end - time.monotonic()) > 0:
                await asyncio.wait(
                    {self._wakeup_future()}, timeout=min(self.heartbeat_interval, left)
                )
                self._beat()
                self._check(generation)
        except _Interrupt as interrupt:
            if not interrupt.restart:
                return False
            self._restarted(manual=True)
            return True
        self._restarted(manual=False)
        return True

    def _restarted(self, manual: bool) -> None:
        if manual:
            self._restart_requested = False
            self._failures = 0
            self._rearm()
            logger.info("%s: restarting on request", node_name(self))
        self._counts["restarts"] += 1
        self._last_restart = _now()
        self._state = CollectorState.RESTARTING

    async def _disconnect(self) -> None:
        try:
            await asyncio.wait_for(self.collector.disconnect(), self.connect_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the connection is being abandoned anyway
            logger.warning(
                "%s: disconnect failed: %s",
                node_name(self),
                mask_text(f"{type(exc).__name__}: {exc}"),
            )

    # --- reading ----------------------------------------------------------------------------
    async def _read(self) -> None:
        stream = self.collector.messages()
        try:
            async for raw in stream:
                self._counts["messages_received"] += 1
                self._last_message = _now()
                try:
                    parsed = self.collector.parse(raw)
                    if inspect.isawaitable(parsed):
                        parsed = await parsed
                except Exception as exc:  # noqa: BLE001 - one bad message is skipped, not fatal
                    self._parse_failed(exc, raw)
                    continue
                self._counts["messages_processed"] += 1
                points = parsed if isinstance(parsed, (list, tuple)) else [parsed]
                points = [p for p in points if p is not None]
                if not points:
                    continue
                self._data = _now()
                if self._failures:
                    logger.info(
                        "%s: data flows again after %d failure(s)", node_name(self), self._failures
                    )
                    self._failures = 0
                for point in points:
                    await self.emit_and_wait(point)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception as exc:  # noqa: BLE001 - closing a broken generator
                    logger.warning("%s: closing messages() failed: %s", node_name(self), exc)

    def _parse_failed(self, exc: BaseException, raw: Any) -> None:
        self._counts["parse_errors"] += 1
        self._record_error(exc)
        n = self._counts["parse_errors"]
        level = logging.WARNING if n <= 10 or n % 1000 == 0 else logging.DEBUG
        logger.log(
            level,
            "%s: cannot parse a message (%s); skipped (%d so far): %s",
            node_name(self),
            self._last_error,
            n,
            mask_text(repr(raw)[:200]),
        )

    def _record_error(self, exc: BaseException) -> None:
        self._counts["errors"] += 1
        self._last_error = mask_text(f"{type(exc).__name__}: {exc}")
        self._last_error_at = _now()

    # --- status -----------------------------------------------------------------------------
    def get_status(self) -> dict[str, Any]:
        """Everything about this collector as plain JSON-ready values.

        Keys: ``name``, ``exchange``, ``status`` (a :class:`CollectorState`
        value; ``state`` is the same), ``should_be_running``, ``is_running``,
        ``symbols``, ``data_types``, ``auto_restart``, ``health``
        (``time_since_heartbeat``, ``time_since_data``, ``max_silence_duration``,
        ``heartbeat_interval``), ``statistics`` (message, error and restart
        counters, ``uptime_seconds``, ``connection_uptime``,
        ``reconnect_attempts``, ``last_error`` and ISO times) and ``backoff``
        (``initial``, ``max``, ``max_restarts``, ``last_delay``, ``history``).
        """
        state = self._state.value
        stats: dict[str, Any] = dict(self._counts)
        stats.update(
            uptime_seconds=_age(self._started) or 0.0,
            connection_uptime=_age(self._connected),
            connected_since=_iso(self._connected),
            reconnect_attempts=self._failures,
            last_message_time=_iso(self._last_message),
            last_data_time=_iso(self._data),
            last_error=self._last_error,
            last_error_time=_iso(self._last_error_at),
            last_restart_time=_iso(self._last_restart),
        )
        last_delay = None if self._last_delay is None else round(self._last_delay, 4)
        return {
            "name": self.name or self.collector.name,
            "exchange": self.collector.exchange,
            "status": state,
            "state": state,
            "should_be_running": self._should_run,
            "is_running": not self.stopped,
            "symbols": self.symbols,
            "data_types": [d.value for d in self.collector.data_types],
            "auto_restart": self.auto_restart,
            "health": {
                "time_since_heartbeat": _age(self._heartbeat),
                "time_since_data": _age(self._data),
                "max_silence_duration": self.max_silence,
                "heartbeat_interval": self.heartbeat_interval,
            },
            "statistics": stats,
            "backoff": {
                "initial": self.backoff[0],
                "max": self.backoff[1],
                "max_restarts": self.max_restarts,
                "last_delay": last_delay,
                "history": list(self._delays),
            },
        }

    def status(self) -> dict[str, Any]:
        """Same as :meth:`get_status` (every mdflow node has ``status()``)."""
        return self.get_status()

    def get_health_status(self) -> dict[str, Any]:
        """``is_healthy`` and the list of ``issues`` behind it, with the times they rest on."""
        state, running = self._state, not self.stopped
        hb_age = _age(self._heartbeat)
        issues: list[str] = []
        if state in (CollectorState.FAILED, CollectorState.ERROR):
            issues.append(f"collector is {state.value}: {self._last_error}")
        elif self._should_run and not running:
            issues.append("collector should be running but its loop is not")
        if running and state is not CollectorState.STOPPING:
            stale = max(3 * self.heartbeat_interval, self.heartbeat_interval + 2.0)
            if hb_age is not None and hb_age > stale:
                issues.append(f"no heartbeat for {hb_age:.1f}s (is the event loop blocked?)")
            if state is CollectorState.UNHEALTHY:
                issues.append(
                    f"no data for {self._silence():.1f}s (max_silence {self.max_silence:g}s)"
                )
            if state is CollectorState.RESTARTING:
                issues.append(
                    f"restarting ({self._failures}/{self.max_restarts} in a row) "
                    f"after: {self._last_error}"
                )
        return {
            "is_healthy": not issues,
            "issues": issues,
            "status": state.value,
            "last_heartbeat": _iso(self._heartbeat),
            "last_data_received": _iso(self._data),
            "time_since_heartbeat": hb_age,
            "time_since_data": _age(self._data),
            "should_be_running": self._should_run,
            "is_running": running,
        }
